"""Forgeries through a real Dovecot LMTP, judged by check, pipe, the watcher and Sieve (issue 12).

A private Dovecot (its own base_dir, LMTP on a loopback port) stores each message as
a server that delivers with ``virtual_transport = lmtp:…`` would: Dovecot writes its
own Received line on top, the envelope sender in it exactly as the client gave it.
The stored message goes to ``authsieve check``, to ``authsieve pipe`` with every
Postfix macro, to ``authsieve watch --once`` on that Maildir, and its annotated form
to the generated Sieve script run by Pigeonhole's sieve-test.  None may reach INBOX.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sieve.pigeonhole import Pigeonhole, find_tool
from tests.dnsserver import DnsTestServer
from tests.dovecot_conf import DovecotSyntax
from tests.helpers import wait_for
from tests.mta import REPO, free_tcp_port

pytestmark = pytest.mark.integration

DOVECOT = "/usr/sbin/dovecot"
HAVE_PIGEONHOLE = bool(find_tool("sievec") and find_tool("sieve-test"))
STRANGER = "198.51.100.66"
ZONE = """
reject.example.        TXT "v=spf1 ip4:192.0.2.7 -all"
_dmarc.reject.example. TXT "v=DMARC1; p=reject"
"""
USER = "alice"
RCPT = f"{USER}@family.example"
DOVECOT_CONF = """\
protocols = lmtp
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
mail_home = {root}/home/{user}
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
ssl = no
log_path = {root}/dovecot.log
stats_writer_socket_path =
postmaster_address = postmaster@family.example
hostname = mx.family.example
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
service lmtp {{
{listener}}}
"""


def lmtp_conf(root: Path, port: int, syntax: DovecotSyntax | None = None) -> str:
    """Gives the private LMTP server's dovecot.conf, in the installed Dovecot's syntax."""
    syntax = syntax or DovecotSyntax()
    user = syntax.username()
    return (
        syntax.header()
        + DOVECOT_CONF.format(root=root, user=user, listener=syntax.inet_listener("lmtp", port))
        + syntax.maildir(f"{root}/mail/{user}")
        + syntax.static_passdb()
        + syntax.static_userdb("nobody", "nogroup")
    )


class Lmtp:
    """A private Dovecot whose LMTP listens on 127.0.0.1:port and stores under root/mail."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_tcp_port()
        for sub in ("run", "state", "mail", "home"):
            (root / sub).mkdir(parents=True)
        for sub in ("mail", "home"):
            shutil.chown(root / sub, "nobody", "nogroup")
        self.config = root / "dovecot.conf"
        self.config.write_text(lmtp_conf(root, self.port))

    def start(self) -> str:
        """Starts Dovecot; gives why it could not start ("" when it runs)."""
        # Not a pipe: the daemon it leaves behind would hold it open.
        errors = self.root / "start.err"
        with errors.open("wb") as err:
            proc = subprocess.run(
                [DOVECOT, "-c", str(self.config)], stdout=err, stderr=err, check=False
            )
        if proc.returncode != 0:
            return f"dovecot did not start: {errors.read_text().strip()}"
        wait_for(self._listening, 10, "Dovecot's LMTP listener")
        return ""

    def stop(self) -> None:
        subprocess.run(
            [DOVECOT, "-c", str(self.config), "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def deliver(self, mail_from: str, data: bytes) -> Path:
        """Hands data over LMTP (RFC 2033), MAIL FROM exactly as given; gives the stored file."""
        before = set(self.maildir().glob("new/*")) if self.maildir().exists() else set()
        self.send(mail_from, data)
        stored = set(self.maildir().glob("new/*")) - before
        assert len(stored) == 1, stored
        return stored.pop()

    def send(self, mail_from: str, data: bytes) -> None:
        """Hands data over LMTP (RFC 2033), MAIL FROM exactly as given; asserts a 250 for it."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            reader = sock.makefile("rb")

            def reply() -> bytes:
                while True:
                    line = reader.readline()
                    if line[3:4] != b"-":
                        return line

            def command(line: str, want: bytes) -> None:
                sock.sendall(line.encode() + b"\r\n")
                answer = reply()
                assert answer.startswith(want), f"{line!r}: {answer!r}"

            assert reply().startswith(b"220")
            command("LHLO mx.family.example", b"250")
            command(f"MAIL FROM:<{mail_from}>", b"250")
            command(f"RCPT TO:<{RCPT}>", b"250")
            command("DATA", b"354")
            body = data.replace(b"\r\n.", b"\r\n..")
            sock.sendall(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
            assert reply().startswith(b"250")
            command("QUIT", b"221")

    def maildir(self) -> Path:
        return self.root / "mail" / USER


@pytest.fixture(scope="module")
def lmtp() -> Iterator[Lmtp]:
    if not os.access(DOVECOT, os.X_OK) or os.geteuid() != 0:
        pytest.skip("needs root and Dovecot (bash scripts/install-deps --test)")
    root = Path(tempfile.mkdtemp(prefix="authsieve-lmtp-"))
    root.chmod(0o755)
    server = Lmtp(root)
    why = server.start()
    try:
        if why:
            pytest.skip(why)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def config(lmtp: Lmtp) -> Iterator[Path]:
    dns = DnsTestServer(ZONE)
    path = lmtp.root / "authsieve.toml"
    path.write_text(
        f"""\
[classifier]
authserv_id = "mx.family.example"
dns_server = "{dns.address}"
log_file = "{lmtp.root}/authsieve.log"

[policy]
mode = "enforce"
spf_fail = "junk"
dmarc_reject = "quarantine"
"""
    )
    try:
        yield path
    finally:
        dns.stop()


def authsieve(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", *args],
        cwd=REPO,
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )


# What our Postfix wrote for the real client, and a hop the sender wrote whole below it:
# an AUTH login from an address reject.example's SPF permits.
def postfix_hop(rdns: str) -> str:
    return (
        f"Received: from mail.reject.example ({rdns} [{STRANGER}])\r\n"
        "\tby mx.family.example (Postfix) with ESMTP id 4Sg2Va3\r\n"
        f"\tfor <{RCPT}>; Sat, 01 Mar 2025 10:00:00 +0000\r\n"
    )


FORGED_HOP = (
    "Received: from laptop (dsl.reject.example [192.0.2.7]) (Authenticated sender: ceo)\r\n"
    "\tby smtp.reject.example (Postfix) with ESMTPSA id 1\r\n"
    f"\tfor <{RCPT}>; Sat, 01 Mar 2025 09:59:00 +0000\r\n"
)


CEO = "From: The CEO <ceo@reject.example>\r\n"
# issue 12, 3: the bank's address first, five more Author Domains after it
SIX_DOMAINS = (
    'From: "Bank" <ceo@reject.example>, '
    + ", ".join(f"<a@x{i}.example>" for i in range(1, 6))
    + "\r\n"
)
# issue 12, 4: results under our authserv-id, written as RFC 8601 allows
FORGED_RESULTS = "".join(
    f"Authentication-Results: {aid}; spf=pass; dkim=pass; dmarc=pass header.from=reject.example\r\n"
    f"X-Authsieve: v=1; id={aid}; verdict=inbox; mode=enforce\r\n"
    for aid in ("mx.family.example.", '"mx.family.example"', "(a (b) c) MX.family.example")
)


def message(top: str, token: str, from_field: str = CEO, extra: str = "") -> bytes:
    return (
        top + FORGED_HOP + extra + from_field
        + f"To: {RCPT}\r\nSubject: {token}\r\nMessage-ID: <{token}@reject.example>\r\n"
        "Date: Sat, 01 Mar 2025 09:58:00 +0000\r\n\r\nPlease pay.\r\n"
    ).encode()  # fmt: skip


ATTACKS = [
    # issue 12, 1: Dovecot writes the quoted local part into its own Received line
    pytest.param('"x (Authenticated sender: bob) y"@reject.example', "unknown", CEO, "",
                 id="auth-sender"),
    pytest.param('"x) with ESMTPSA id y ("@reject.example', "unknown", CEO, "", id="with-esmtpsa"),
    pytest.param('"x) (auth: PLAIN bob, "@reject.example', "unknown", CEO, "", id="courier-auth"),
    pytest.param('"x) (account bob) ("@reject.example', "unknown", CEO, "",
                 id="communigate-account"),
    # issue 12, 2: a reverse name that reads as a local re-queue
    pytest.param("ceo@reject.example", "qmail-scanner.reject.example", CEO, "",
                 id="qmail-scanner-rdns"),
    pytest.param("ceo@reject.example", "unknown", SIX_DOMAINS, "", id="six-from-domains"),
    pytest.param("ceo@reject.example", "unknown", CEO, FORGED_RESULTS, id="forged-results"),
]  # fmt: skip


def our_results(data: bytes) -> list[str]:
    """Gives every Authentication-Results and X-Authsieve value that carries our id."""
    from classifier.annotate import authserv_id_of
    from classifier.message import Message

    parsed = Message.parse(data)
    values = [v for v in parsed.get_all("Authentication-Results") if
              authserv_id_of(v) == "mx.family.example"]  # fmt: skip
    return values + parsed.get_all("X-Authsieve")


@pytest.mark.parametrize("mail_from, rdns, from_field, extra", ATTACKS)
def test_forgery_stored_by_dovecot_lmtp_is_quarantined_everywhere(
    lmtp: Lmtp, config: Path, mail_from: str, rdns: str, from_field: str, extra: str
) -> None:
    token = f"t{uuid.uuid4().hex[:12]}"
    stored = lmtp.deliver(mail_from, message(postfix_hop(rdns), token, from_field, extra))
    data = stored.read_bytes()
    assert b"with LMTP" in data and mail_from.encode() in data  # Dovecot wrote it verbatim

    checked = authsieve("check", "--json", "--config", str(config), str(stored))
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout)
    assert result["verdict"]["action"] == "quarantine", result["verdict"]
    assert (result["envelope"]["client_ip"], result["envelope"]["authenticated"]) == (
        STRANGER,
        False,
    )

    macros = ["--sender", mail_from, "--recipient", RCPT, "--client-address", STRANGER]
    macros += ["--client-helo", "mail.reject.example", "--client-hostname", rdns]
    macros += ["--sasl-username", ""]
    piped = authsieve("pipe", "--config", str(config), "--deliver", "stdout", *macros, data=data)
    assert piped.returncode == 0, piped.stderr
    assert b"verdict=quarantine" in piped.stdout and b"submission=no" in piped.stdout
    # Exactly one result header of each kind under our id: the one we wrote.
    mine = our_results(piped.stdout)
    assert len(mine) == 2 and all("dmarc=fail" in " ".join(v.split()) for v in mine), mine

    # pipe without Postfix's macros (a transport that passes none): the headers alone
    bare = authsieve("pipe", "--config", str(config), "--deliver", "stdout", data=data)
    assert bare.returncode == 0, bare.stderr
    assert b"verdict=quarantine" in bare.stdout and b"submission=no" in bare.stdout

    with Pigeonhole() as ph:
        script = authsieve("sieve", "generate", "--config", str(config), "--user", RCPT)
        assert script.returncode == 0, script.stderr
        assert ph.compile(script.stdout.decode(), "authsieve").ok
        run = ph.run("authsieve", piped.stdout, sender=mail_from, recipient=RCPT)
        assert run.folder == "Quarantine", run


def test_the_watcher_files_lmtp_forgeries_out_of_inbox(lmtp: Lmtp, config: Path) -> None:
    if not HAVE_PIGEONHOLE:
        pytest.skip("Pigeonhole not installed")
    tokens = []
    for param in ATTACKS:
        mail_from, rdns, from_field, extra = (str(v) for v in param.values)
        token = f"t{uuid.uuid4().hex[:12]}"
        tokens.append(token)
        lmtp.deliver(mail_from, message(postfix_hop(rdns), token, from_field, extra))
    watched = authsieve(
        "watch", "--config", str(config), "--once", "--json", "--workers", "1",
        "--path-template", "{local}", str(lmtp.maildir()),
    )  # fmt: skip
    assert watched.returncode == 0, watched.stderr
    inbox = b"".join(p.read_bytes() for p in (lmtp.maildir() / "new").glob("*"))
    inbox += b"".join(p.read_bytes() for p in (lmtp.maildir() / "cur").glob("*"))
    quarantined = b"".join(
        p.read_bytes() for p in lmtp.maildir().glob(".Quarantine/*/*") if p.is_file()
    )
    for token in tokens:
        assert token.encode() not in inbox
        assert token.encode() in quarantined
    for path in lmtp.maildir().glob(".Quarantine/*/*"):
        mine = our_results(path.read_bytes())
        assert len(mine) == 2 and all("dmarc=fail" in " ".join(v.split()) for v in mine), mine
