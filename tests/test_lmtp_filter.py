"""Dovecot LMTP + authsieve-filter against pipe + dovecot-lda: the same folders, the same headers.

Issue 18.  A private Dovecot (its own base_dir, LMTP on a loopback port) runs the
``sieve_before`` script of ``authsieve sieve generate --filter``, which filters each
message through the program ``authsieve sieve install --filter-dir`` wrote
(Pigeonhole's extprograms, ``vnd.dovecot.filter``), then files it.  The same
messages go through ``authsieve pipe --deliver dovecot-lda`` into a second Maildir
whose sieve_before holds pipe mode's global script.  The demo corpus and the forged
cases of the trust issue (tests/test_forgery_lmtp.py) must land in the same folder
with the same authsieve headers both ways, the DNS answered by a loopback server.

A third way in has a real Postfix in front (tests/mta.py): swaks plays the client with
XCLIENT, and Postfix, whose transport is ``lmtp:unix:`` Dovecot's own LMTP socket (the
``virtual_transport`` line a server already has), delivers through the same filter.  The
message then carries Postfix's own Received line on top instead of the one the corpus
recorded, and lands as the other two do.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from classifier.annotate import authserv_id_of
from classifier.auth.facts import parse_header_value
from classifier.message import Message
from tests.dnsserver import DnsTestServer
from tests.dovecot_conf import DovecotSyntax
from tests.helpers import wait_for
from tests.mta import DOVECOT_LDA, REPO, Mta, run_as, throwaway_mta
from tests.test_forgery_lmtp import ATTACKS, DOVECOT, RCPT, STRANGER, Lmtp, message, postfix_hop

pytestmark = pytest.mark.integration

DEMO = REPO / "examples" / "maildir"
AUTHSERV = "mx.family.example"
ATTACK_ZONE = """
reject.example.        TXT "v=spf1 ip4:192.0.2.7 -all"
_dmarc.reject.example. TXT "v=DMARC1; p=reject"
"""
# The README's conf.d file for the installed Dovecot (DovecotSyntax.lmtp_filter moves its
# paths into the temp dir).
EXAMPLES = REPO / "examples" / "dovecot"


LDA_CONF = """\
protocols =
ssl = no
base_dir = {root}/lda-run
state_dir = {root}/lda-state
log_path = {root}/lda.log
stats_writer_socket_path =
mail_home = {root}/lda-home
postmaster_address = postmaster@family.example
hostname = {host}
lda_mailbox_autocreate = yes
"""
# dovecot-lda without a Dovecot server has no userdb: drop authsieve's -d USER, deliver as
# the calling user (nobody) into the private mail_home.
LDA_STAND_IN = """\
#!/bin/sh
take=
for arg do
  shift
  if [ "$take" = d ]; then take=; continue; fi
  if [ "$arg" = -d ]; then take=d; continue; fi
  set -- "$@" "$arg"
done
exec {lda} "$@"
"""
NOBODY = pwd.getpwnam("nobody")
HEADERS = ("X-Authsieve", "Authentication-Results", "Received-SPF")


def authsieve(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", *args],
        cwd=REPO, input=data, capture_output=True, timeout=120, check=False,
    )  # fmt: skip


class FilterSetup:
    """LMTP with the filter script and program, and a dovecot-lda with pipe mode's script."""

    def __init__(self, root: Path, dns: DnsTestServer) -> None:
        self.root = root
        self.lmtp = Lmtp(root)
        for sub in ("before-lmtp", "before-lda", "filter-bin"):
            (root / sub).mkdir(mode=0o755)
        for sub in ("lda-run", "lda-state", "lda-home"):
            (root / sub).mkdir()
            os.chown(root / sub, NOBODY.pw_uid, NOBODY.pw_gid)
        self.log = root / "authsieve.log"
        self.log.touch()
        os.chown(self.log, NOBODY.pw_uid, NOBODY.pw_gid)
        demo = (REPO / "examples" / "config.toml").read_text()
        line = f'authserv_id = "{AUTHSERV}"\n'
        assert line in demo
        extra = f'dns_server = "{dns.address}"\nlog_file = "{self.log}"\n'
        self.config = root / "authsieve.toml"
        self.config.write_text(demo.replace(line, line + extra, 1))
        self.config.chmod(0o644)
        syntax = DovecotSyntax()
        self.lmtp.config.write_text(self.lmtp.config.read_text() + syntax.lmtp_filter(str(root)))
        self.lda_args = syntax.lda_home_args(f"{root}/lda-home")
        self.lda_conf = root / "lda.conf"
        self.lda_conf.write_text(
            syntax.header()
            + LDA_CONF.format(root=root, host=AUTHSERV)
            + syntax.maildir(f"{root}/lda-home/Maildir")
            + syntax.sieve_plugin("lda")
            + syntax.sieve_scripts(
                f"{root}/lda-home/sieve", f"{root}/lda-home/.dovecot.sieve", f"{root}/before-lda/"
            )
        )
        self.lda = root / "dovecot-lda"
        self.lda.write_text(LDA_STAND_IN.format(lda=DOVECOT_LDA))
        self.lda.chmod(0o755)
        self.lda_log = root / "lda.log"
        self.lda_log.touch()
        os.chown(self.lda_log, NOBODY.pw_uid, NOBODY.pw_gid)
        conf = ("--config", str(self.config))
        for argv in (
            ("sieve", "install", "--dir", str(root / "before-lda"), *conf),
            ("sieve", "install", "--filter-dir", str(root / "filter-bin"), "--deadline=5", *conf),
        ):
            done = authsieve(*argv)
            assert done.returncode == 0, done.stderr
        script = authsieve("sieve", "generate", "--filter", *conf)
        assert script.returncode == 0, script.stderr
        # Dovecot compiles it as the mail user: sievec's default config lacks extprograms.
        (root / "before-lmtp" / "authsieve.sieve").write_bytes(script.stdout)
        os.chown(root / "before-lmtp", NOBODY.pw_uid, NOBODY.pw_gid)

    def via_lmtp(self, mail_from: str, data: bytes) -> tuple[str, bytes]:
        """Gives the folder and stored bytes of data delivered over LMTP through the filter."""
        self.lmtp.send(mail_from, data)
        return take_one(self.lmtp.maildir())

    def via_pipe(self, mail_from: str, data: bytes) -> tuple[str, bytes]:
        """Gives the folder and stored bytes of data piped to authsieve, then to dovecot-lda."""
        argv = [sys.executable, "-m", "classifier.commands.main", "pipe", "--config",
                str(self.config), "--sender", mail_from, "--recipient", RCPT,
                "--deliver", "dovecot-lda", "--lda-path", str(self.lda),
                "--lda-arg=-c", f"--lda-arg={self.lda_conf}",
                *(f"--lda-arg={a}" for a in self.lda_args)]  # fmt: skip
        env = {"USER": "nobody", "HOME": str(self.root / "lda-home")}
        proc = run_as(NOBODY, argv, env, data)
        assert proc.returncode == 0, proc.stderr.decode()
        return take_one(self.root / "lda-home" / "Maildir")


def take_one(maildir: Path) -> tuple[str, bytes]:
    """Gives the folder and bytes of the one message in maildir, removing it."""
    folders = [maildir, *(d for d in maildir.iterdir() if d.name.startswith("."))]
    found = [f for d in folders for sub in ("new", "cur") for f in d.glob(f"{sub}/*")]
    assert len(found) == 1, found
    data = found[0].read_bytes()
    found[0].unlink()
    folder = found[0].parent.parent
    return ("INBOX" if folder == maildir else folder.name.lstrip(".")), data


def ours(data: bytes) -> list[tuple[str, str]]:
    """Gives our result headers, unfolded, in order: the ones a differential compares."""
    parsed = Message.parse(data)
    out = []
    for name in HEADERS:
        for value in parsed.get_all(name):
            if name == "Authentication-Results" and authserv_id_of(value) != AUTHSERV:
                continue
            out.append((name, " ".join(value.split())))
    return out


@pytest.fixture(scope="module")
def setup() -> Iterator[FilterSetup]:
    if not (os.access(DOVECOT, os.X_OK) and os.path.exists(DOVECOT_LDA)) or os.geteuid() != 0:
        pytest.skip("needs root, Dovecot and dovecot-lda (bash scripts/install-deps --test)")
    if not any(Path("/usr/lib/dovecot/modules/sieve").glob("lib90_sieve_extprograms_plugin.*")):
        pytest.skip("Pigeonhole's extprograms plugin is not installed (Debian dovecot-sieve)")
    root = Path(tempfile.mkdtemp(prefix="authsieve-lmtpfilter-"))
    root.chmod(0o755)
    dns = DnsTestServer((DEMO / "zone.txt").read_text() + ATTACK_ZONE)
    setup = FilterSetup(root, dns)
    why = setup.lmtp.start()
    try:
        if why:
            pytest.skip(why)
        yield setup
    finally:
        setup.lmtp.stop()
        dns.stop()
        if not os.environ.get("AUTHSIEVE_KEEP_LDA"):
            shutil.rmtree(root, ignore_errors=True)


# The socket Dovecot's LMTP service listens on by default, in its base_dir.
LMTP_SOCKET = "run/lmtp"


@pytest.fixture(scope="module")
def postfix(setup: FilterSetup) -> Iterator[Mta]:
    """A private Postfix that delivers family.example over LMTP to the filter's Dovecot."""
    socket_path = setup.root / LMTP_SOCKET
    if not socket_path.is_socket():
        pytest.skip(f"Dovecot's LMTP socket is not at {socket_path}")
    transport = readme_transport().replace("private/dovecot-lmtp", str(socket_path))
    with throwaway_mta(domain="family.example", transport=transport) as mta:
        if isinstance(mta, str):
            pytest.skip(mta)
        yield mta


def readme_transport() -> str:
    """Gives the transport of the README's main.cf line, the one a server already has."""
    from tests.test_readme import readme_blocks

    name, _, value = readme_blocks()["lmtp-filter main.cf"].strip().partition(" = ")
    assert name == "virtual_transport" and value.startswith("lmtp:unix:"), value
    return value


class Client(NamedTuple):
    """The SMTP client our Postfix recorded, to be played again with XCLIENT."""

    ip: str
    helo: str
    name: str  # the reverse DNS name, or Postfix's "[UNAVAILABLE]" for "unknown"
    login: str | None


# What Postfix writes for its client: from HELO (NAME [IP]) … (Authenticated sender: U) by
_POSTFIX_FROM = re.compile(r"^from (\S+) \((\S+) \[(?:IPv6:)?([^\]]+)\]\)")
_AUTH = re.compile(r"\(Authenticated sender: ([^)\s]+)\)")


def recorded_client(data: bytes) -> tuple[Client, bytes]:
    """Gives the client of the corpus's own Postfix hop and the message without our hops.

    The corpus holds what our server stored: Dovecot's LMTP line, then our Postfix's.
    The test's Postfix writes its own in their place.
    """
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    received = [i for i, f in enumerate(fields) if f[0].lower().startswith(b"received:")]
    ours = fields[received[1]]
    text = " ".join(b" ".join(ours).decode().split()).split(":", 1)[1].strip()
    found = _POSTFIX_FROM.match(text)
    assert found and "by mx.family.example (Postfix)" in text, text
    helo, name, ip = found.groups()
    auth = _AUTH.search(text)
    client = Client(ip, helo, "[UNAVAILABLE]" if name == "unknown" else name,
                    auth[1] if auth else None)  # fmt: skip
    kept = [f for i, f in enumerate(fields) if i not in received[:2]]
    return client, b"\r\n".join(b"\r\n".join(f) for f in kept) + sep + body


def via_postfix(setup: FilterSetup, mta: Mta, mail_from: str, data: bytes,
                client: Client) -> tuple[str, bytes]:  # fmt: skip
    """Gives the folder and bytes of data sent over SMTP to Postfix, then LMTP + filter."""
    token = f"p{uuid.uuid4().hex[:12]}"
    ip = f"IPV6:{client.ip}" if ":" in client.ip else client.ip
    mta.send(data, token=token, mail_from=mail_from or "<>", rcpt=RCPT, client_ip=ip,
             helo=client.helo, client_name=client.name, login=client.login)  # fmt: skip
    maildir = setup.lmtp.maildir()

    def stored() -> bool:
        if not maildir.exists():
            return False
        folders = [maildir, *(d for d in maildir.iterdir() if d.name.startswith("."))]
        return any(f for d in folders for sub in ("new", "cur") for f in d.glob(f"{sub}/*"))

    try:
        wait_for(stored, 30, "Postfix's LMTP delivery")
    except Exception:
        raise AssertionError(mta.logs()) from None
    return take_one(maildir)


def demo_messages() -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (DEMO / sub).glob("*"))


def envelope_sender(data: bytes) -> str:
    path = Message.parse(data).get_all("Return-Path")
    return path[0].strip().strip("<>") if path else "sender@example.com"


@pytest.mark.parametrize("path", demo_messages(), ids=lambda p: p.name.split(".")[0])
def test_demo_message_lands_alike_through_lmtp_filter_and_pipe(
    setup: FilterSetup, path: Path
) -> None:
    data = path.read_bytes()
    sender = envelope_sender(data)
    lmtp_folder, lmtp_data = setup.via_lmtp(sender, data)
    pipe_folder, pipe_data = setup.via_pipe(sender, data)
    assert (lmtp_folder, ours(lmtp_data)) == (pipe_folder, ours(pipe_data))
    assert "error=" not in ours(lmtp_data)[0][1]


@pytest.mark.parametrize("path", demo_messages(), ids=lambda p: p.name.split(".")[0])
def test_demo_message_lands_alike_through_postfix_lmtp_filter_and_pipe(
    setup: FilterSetup, postfix: Mta, path: Path
) -> None:
    data = path.read_bytes()
    sender = envelope_sender(data)
    client, resent = recorded_client(data)
    folder, stored = via_postfix(setup, postfix, sender, resent, client)
    pipe_folder, pipe_data = setup.via_pipe(sender, data)
    assert (folder, ours(stored)) == (pipe_folder, ours(pipe_data))
    top = Message.parse(stored).get_all("Received")
    assert "by mx.test.example (Postfix)" in " ".join(top[1].split())  # Postfix delivered it


@pytest.mark.parametrize("mail_from, rdns, from_field, extra", ATTACKS)
def test_forgery_lands_alike_through_postfix_lmtp_filter_and_pipe(
    setup: FilterSetup, postfix: Mta, mail_from: str, rdns: str, from_field: str, extra: str
) -> None:
    token = f"t{uuid.uuid4().hex[:12]}"
    client = Client(STRANGER, "mail.reject.example",
                    "[UNAVAILABLE]" if rdns == "unknown" else rdns, None)  # fmt: skip
    folder, stored = via_postfix(setup, postfix, mail_from, message("", token, from_field, extra),
                                 client)  # fmt: skip
    pipe_folder, pipe_data = setup.via_pipe(
        mail_from, message(postfix_hop(rdns), token, from_field, extra)
    )
    assert folder == pipe_folder == "Quarantine"
    assert ours(stored) == ours(pipe_data)


@pytest.mark.parametrize("mail_from, rdns, from_field, extra", ATTACKS)
def test_forgery_lands_alike_through_lmtp_filter_and_pipe(
    setup: FilterSetup, mail_from: str, rdns: str, from_field: str, extra: str
) -> None:
    data = message(postfix_hop(rdns), f"t{uuid.uuid4().hex[:12]}", from_field, extra)
    lmtp_folder, lmtp_data = setup.via_lmtp(mail_from, data)
    pipe_folder, pipe_data = setup.via_pipe(mail_from, data)
    assert lmtp_folder == pipe_folder == "Quarantine"
    assert ours(lmtp_data) == ours(pipe_data)


CRASHING = "#!/bin/sh\ncat >/dev/null\nkill -9 $$\n"


def swap_program(setup: FilterSetup, text: str) -> str:
    """Puts text in place of the installed authsieve-filter; gives the old text."""
    program = setup.root / "filter-bin" / "authsieve-filter"
    old = program.read_text()
    program.write_text(text)
    return old


def test_a_crashing_filter_still_delivers_once_under_the_failure_header(
    setup: FilterSetup,
) -> None:
    from tests.test_forgery_lmtp import CEO, FORGED_RESULTS

    token = f"t{uuid.uuid4().hex[:12]}"
    data = message(postfix_hop("unknown"), token, CEO, FORGED_RESULTS)
    old = swap_program(setup, CRASHING)
    try:
        folder, stored = setup.via_lmtp("ceo@reject.example", data)
    finally:
        swap_program(setup, old)
    assert folder == "INBOX"  # internal_error = inbox: the checks did not run
    assert stored.count(token.encode()) == 2  # Subject and Message-ID, once
    assert stored.endswith(data.replace(b"\r\n", b"\n"))  # the original, under headers
    top = Message.parse(stored).get_all("X-Authsieve")[0]
    fields = parse_header_value(top)
    assert (fields["id"], fields["spf"], fields["error"]) == (
        AUTHSERV,
        "internal",
        "filter program failed",
    )


def test_dns_that_hangs_gives_temperror_before_dovecot_kills_the_filter(
    setup: FilterSetup,
) -> None:
    import socket
    import time

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    slow = setup.root / "slow.toml"
    slow.write_text(
        f'[classifier]\nauthserv_id = "{AUTHSERV}"\n'
        f'dns_server = "127.0.0.1:{silent.getsockname()[1]}"\ndns_timeout = 30\ndns_budget = 60\n'
    )
    slow.chmod(0o644)
    program = setup.root / "filter-bin" / "authsieve-filter"
    hanging = program.read_text().replace(str(setup.config), str(slow))
    hanging = hanging.replace("--deadline 5", "--deadline 3")
    assert str(slow) in hanging and "--deadline 3" in hanging
    data = message(postfix_hop("unknown"), f"t{uuid.uuid4().hex[:12]}")
    old = swap_program(setup, hanging)
    started = time.monotonic()
    try:
        folder, stored = setup.via_lmtp("ceo@reject.example", data)
    finally:
        swap_program(setup, old)
        silent.close()
    assert time.monotonic() - started < 9  # before sieve_filter_exec_timeout (10 s)
    assert folder == "INBOX" and stored.endswith(data.replace(b"\r\n", b"\n"))
    fields = parse_header_value(Message.parse(stored).get_all("X-Authsieve")[0])
    # The DNS budget ends before the deadline: temperror, not the watchdog's internal.
    assert fields["spf"] == "temperror" and "error" not in fields


@pytest.mark.parametrize("version", ["2.3", "2.4"])
def test_readme_block_is_the_example_conf_d_file_the_test_runs(version: str) -> None:
    from tests.test_readme import readme_blocks, settings_lines

    shown = readme_blocks()[f"lmtp-filter {version} 90-authsieve-filter.conf"]
    example = (EXAMPLES / version / "90-authsieve-filter.conf").read_text()
    assert settings_lines(shown) == settings_lines(example)
