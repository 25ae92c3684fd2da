"""Dovecot LMTP + authsieve-filter against pipe + dovecot-lda: the same folders, the same headers.

Issue 18.  A private Dovecot (its own base_dir, LMTP on a loopback port) runs the
``sieve_before`` script of ``authsieve sieve generate --filter``, which filters each
message through the program ``authsieve sieve install --filter-dir`` wrote
(Pigeonhole's extprograms, ``vnd.dovecot.filter``), then files it.  The same
messages go through ``authsieve pipe --deliver dovecot-lda`` into a second Maildir
whose sieve_before holds pipe mode's global script.  The demo corpus and the forged
cases of the trust issue (tests/test_forgery_lmtp.py) must land in the same folder
with the same authsieve headers both ways, the DNS answered by a loopback server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier.annotate import authserv_id_of
from classifier.auth.facts import parse_header_value
from classifier.message import Message
from tests.dnsserver import DnsTestServer
from tests.dovecot_conf import DovecotSyntax, settings_text
from tests.mta import DOVECOT_LDA, REPO, run_as
from tests.test_forgery_lmtp import ATTACKS, DOVECOT, RCPT, Lmtp, message, postfix_hop

pytestmark = pytest.mark.integration

DEMO = REPO / "examples" / "maildir"
AUTHSERV = "mx.family.example"
ATTACK_ZONE = """
reject.example.        TXT "v=spf1 ip4:192.0.2.7 -all"
_dmarc.reject.example. TXT "v=DMARC1; p=reject"
"""
# The README's conf.d file for the installed Dovecot, its paths moved into the temp dir.
EXAMPLES = REPO / "examples" / "dovecot"
EXAMPLE = EXAMPLES / DovecotSyntax().examples / "90-authsieve-filter.conf"
PATHS = {
    "/etc/dovecot/sieve-before.d/": "{root}/before-lmtp/",
    "/usr/local/lib/authsieve/sieve-filter": "{root}/filter-bin",
    # 2.3 names the personal scripts in one setting, 2.4 in a sieve_script block.
    "file:~/sieve;active=~/.dovecot.sieve": "file:{root}/home/sieve;active={root}/home/.dovecot."
    + "sieve",
    "path = ~/sieve\n": "path = {root}/home/sieve\n",
    "active_path = ~/.dovecot.sieve": "active_path = {root}/home/.dovecot.sieve",
}


def example_conf(root: Path, example: Path = EXAMPLE) -> str:
    """Gives examples/dovecot/2.x/90-authsieve-filter.conf with the test's paths."""
    text = example.read_text()
    for path, ours in PATHS.items():
        assert path in text or "~" in path, path  # the version's own personal-script lines
        text = text.replace(path, ours.format(root=root))
    assert "~" not in settings_text(text), text
    return text


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
        self.lmtp.config.write_text(self.lmtp.config.read_text() + example_conf(root))
        syntax = DovecotSyntax()
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
                "--lda-arg=-c", f"--lda-arg={self.lda_conf}"]  # fmt: skip
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
    if not os.path.exists("/usr/lib/dovecot/modules/sieve/lib90_sieve_extprograms_plugin.so"):
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


def test_checks_that_hang_are_given_up_before_dovecot_kills_the_filter(
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
    assert fields["spf"] == "internal" and fields["error"].startswith("timeout")


@pytest.mark.parametrize("version", ("2.3", "2.4"))
def test_readme_block_is_the_example_conf_d_file_the_test_runs(version: str) -> None:
    from tests.test_readme import readme_blocks, settings_lines

    shown = readme_blocks()[f"lmtp-filter {version} 90-authsieve-filter.conf"]
    example = EXAMPLES / version / "90-authsieve-filter.conf"
    assert settings_lines(shown) == settings_lines(example.read_text())
    assert "~" not in settings_text(example_conf(Path("/tmp/x"), example))
