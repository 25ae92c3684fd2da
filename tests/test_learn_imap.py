"""Learning from users' moves with real parts: Dovecot's IMAP with imapsieve and the pipe.

A private Dovecot (imap, imap_sieve, sieve_extprograms' vnd.dovecot.pipe) runs
on 127.0.0.1 with examples/dovecot/<version>/90-authsieve-imapsieve.conf, the
script and program `authsieve sieve install --imapsieve/--pipe-dir` wrote.
Python's imaplib logs in as two users and moves annotated demo messages
between INBOX, Junk and Quarantine, by IMAP MOVE (RFC 6851) and by COPY then
EXPUNGE.  The moves are counted from the learning store; `suggest` and
`suggest --apply` run as the command line does; the next delivery goes
through `authsieve pipe` and the reinstalled script through sieve-test.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from classifier.aggregate.deliveries import DeliveryStore, delivery_recorder
from classifier.aggregate.spool import spool_dir
from classifier.commands.learn import as_store_owner
from classifier.commands.main import main
from classifier.config import config_from_dict
from classifier.evaluate import check_and_annotate
from classifier.learning.store import LearningStore
from sieve.commands import cmd_sieve_install, filter_command
from sieve.pigeonhole import Pigeonhole, find_tool
from tests.conftest import ROOT, resolver_for
from tests.dnsserver import DnsTestServer
from tests.dovecot_conf import DovecotSyntax
from tests.helpers import NOBODY, wait_for

pytestmark = pytest.mark.integration

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
IMAP = Path("/usr/lib/dovecot/imap")
DEMO = ROOT / "examples" / "maildir"
EXAMPLES = ROOT / "examples" / "dovecot"
ALICE, BOB = "alice@family.example", "bob@family.example"
PASSWORD = "learn-from-moves"
# Demo messages (examples/maildir/README.md) and what the test config makes of them.
CYOU = "new/1741223639.M729759P10398.mx,S=2049,W=2049"  # passes everything: inbox
NEWS = "new/1741761007.M511942P25424.mx,S=3733,W=3733"  # authenticated; alice blocks shop.example
PHISH = "new/1741659463.M783163P47153.mx,S=1392,W=1392"  # DMARC reject: quarantine
CONFIG = """\
# authsieve, learning from moves (tests/test_learn_imap.py)
[classifier]
authserv_id = "mx.family.example"
trusted_networks = ["203.0.113.25/32", "2001:db8:25::/64"]
log_file = "{root}/learn.log"

[policy]
spf_fail = "junk"   # kept by suggest --apply

[users."alice@family.example"]
# alice does not want the shop's mail ... until she keeps rescuing it
blocked_domain_suffixes = ["shop.example"]

[learn]
store = "sqlite:{root}/learning/{name}.db"
min_messages = 3
min_users = 2
# The .cyou check below delivers one more to INBOX before --apply: 3 of 4 junked.
block_share = 0.75
sieve_dir = "{root}/sieve-before.d"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER = """
base_dir = {root}/run
state_dir = {root}/state
protocols = imap
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain
auth_failure_delay = 0
log_path = {root}/dovecot.log
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
service imap-login {{
{listener}}}
namespace inbox {{
  inbox = yes
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Quarantine {{
    auto = subscribe
  }}
}}
"""


def imapsieve_snippet(syntax: DovecotSyntax, root: Path) -> str:
    """Gives the example conf.d file with the test's directories in place of /etc and /usr."""
    text = (EXAMPLES / syntax.examples / "90-authsieve-imapsieve.conf").read_text()
    text = text.replace("/etc/dovecot/sieve-imapsieve", f"{root}/sieve-imapsieve")
    return text.replace("/usr/local/lib/authsieve/sieve-pipe", f"{root}/sieve-pipe")


def server_conf(root: Path, port: int, syntax: DovecotSyntax) -> str:
    """Gives the test's dovecot.conf: IMAP on port, two users, the imapsieve example."""
    internal = "dovecot" if shutil.which("dovecot") and _user_exists("dovecot") else "nobody"
    login = "dovenull" if _user_exists("dovenull") else "nobody"
    return (
        syntax.header()
        + SERVER.format(
            root=root, internal=internal, login=login, listener=syntax.inet_listener("imap", port)
        )
        + syntax.allow_cleartext()
        + syntax.maildir("~/Maildir")
        + syntax.passwd_file_passdb(f"{root}/passwd")
        + syntax.static_userdb("nobody", "nogroup", f"{root}/home/{syntax.username()}")
        + imapsieve_snippet(syntax, root)
    )


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class Imap:
    """The running Dovecot, the authsieve config its pipe program reads, and the DNS server."""

    root: Path
    port: int
    config: Path
    dns: DnsTestServer

    def login(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port)
        client.login(user, PASSWORD)
        return client

    def configure(self, name: str) -> Path:
        """Writes a fresh authsieve config (its own store); gives the store's path."""
        self.config.write_text(CONFIG.format(root=self.root, name=name))
        self.config.chmod(0o644)
        return self.root / "learning" / f"{name}.db"

    def learned(self) -> int:
        """Gives how many times `learn` has logged a move it looked at."""
        log = self.root / "learn.log"
        return log.read_text().count(" learn: ") if log.exists() else 0


@pytest.fixture(scope="module")
def imap() -> Iterator[Imap]:
    if not Path(DOVECOT).exists() or not IMAP.exists() or not find_tool("sievec"):
        pytest.skip("needs dovecot-imapd and dovecot-sieve (scripts/install-deps --test)")
    if os.geteuid() != 0:
        pytest.skip("needs root: Dovecot runs the pipe program as the mail user, nobody")
    root = Path(tempfile.mkdtemp(prefix="authsieve-learn-"))
    root.chmod(0o755)
    dns = DnsTestServer((DEMO / "zone.txt").read_text())
    proc = None
    try:
        for sub in ("sieve-imapsieve", "sieve-pipe", "sieve-before.d", "run", "state"):
            (root / sub).mkdir(mode=0o755)
        for sub in ("learning", "home/alice", "home/bob"):
            (root / sub).mkdir(parents=True)
            os.chown(root / sub, *NOBODY)
        (root / "home").chmod(0o755)
        (root / "learn.log").touch()
        os.chown(root / "learn.log", *NOBODY)
        (root / "passwd").write_text("".join(f"{u}:{{PLAIN}}{PASSWORD}\n" for u in (ALICE, BOB)))
        (root / "passwd").chmod(0o644)
        config = root / "authsieve.toml"
        imap = Imap(root, _free_port(), config, dns)
        imap.configure("unused")
        out = io.StringIO()
        for spec in (
            {"imapsieve": str(root / "sieve-imapsieve")},
            {"pipe_dir": str(root / "sieve-pipe"), "config": str(config)},
        ):
            args = _install_args(**spec)
            assert cmd_sieve_install(args, config_from_dict({}), out) == 0
        assert "authsieve-learn.svbin" in out.getvalue()  # compiled where Dovecot runs it
        conf = root / "dovecot.conf"
        conf.write_text(server_conf(root, imap.port, DovecotSyntax()))
        conf.chmod(0o644)
        proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for_port(imap.port, proc, root / "dovecot.log")
        yield imap
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        dns.stop()
        shutil.rmtree(root, ignore_errors=True)


def _install_args(**given: str) -> argparse.Namespace:

    values = {
        "name": "authsieve",
        "dir": None,
        "managesieve": None,
        "filter_dir": None,
        "imapsieve": None,
        "pipe_dir": None,
        "config": None,
        "user": None,
        "filter": False,
    }
    values.update(given)
    return argparse.Namespace(**values)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dovecot exited: {log.read_text() if log.exists() else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            if s.recv(64).startswith(b"* OK"):
                return
        time.sleep(0.1)
    pytest.fail("dovecot did not open its IMAP port")


# --- messages --------------------------------------------------------------------------------


def variant(name: str, n: int) -> bytes:
    """Gives a demo message with its own Message-ID (the n-th copy a sender sent)."""
    data = (DEMO / name).read_bytes()
    return re.sub(
        rb"(?im)^Message-ID:[^\r\n]*", f"Message-ID: <learn-{n}@test>".encode(), data, count=1
    )


def delivered(imap: Imap, data: bytes, user: str) -> bytes:
    """Gives the message as delivery annotated it for user (our headers on top)."""
    config = config_from_dict(
        __import__("tomllib").loads(imap.config.read_text()), str(imap.config)
    )
    assert config.learn is not None
    # The delivery record learn believes, spooled as a pipe process does: learn takes it in.
    note = delivery_recorder(config.learn, one_shot=True)
    resolver = resolver_for(imap.dns)
    # Delivery runs as the mail user, as learn does (the store is that user's).
    with as_store_owner(config.learn.store):
        out = check_and_annotate(
            data, config.engine, resolver, config.policies, None, user, None, note
        )
    return out.data


FORGED = (
    b"Received: from mail.forged.example (mail.forged.example [192.0.2.99])\r\n"
    b"\tby mx.family.example (Postfix) with ESMTP id 4AB12\r\n"
    b"\tfor <alice@family.example>; Mon, 10 Mar 2025 10:00:00 +0000\r\n"
    b"X-Authsieve: v=1; id=mx.family.example; verdict=inbox; mode=enforce; spf=pass;"
    b" helo-spf=pass; dkim=pass; arc=none; dmarc=pass; policy=reject;"
    b" from-domain=forged.example; mailfrom-domain=forged.example; from-auth=yes;"
    b" submission=no; forwarded=no; arc-trusted=no; arc-spf=; arc-dkim=; arc-dmarc=;"
    b" allowed=no\r\n"
    b"From: Someone <boss@forged.example>\r\n"
    b"To: alice@family.example\r\n"
    b"Subject: trust me\r\n"
    b"Message-ID: <forged-N@forged.example>\r\n"
    b"\r\n"
    b"I wrote the header myself.\r\n"
)


def forged(n: int) -> bytes:
    return FORGED.replace(b"forged-N", f"forged-{n}".encode())


# --- IMAP --------------------------------------------------------------------------------------


def append(client: imaplib.IMAP4, folder: str, data: bytes) -> None:
    typ, _ = client.append(folder, None, None, data)
    assert typ == "OK"


def move(client: imaplib.IMAP4, src: str, dst: str, message_id: str, how: str = "MOVE") -> None:
    """Moves every message with this Message-ID from src to dst: MOVE, or COPY then EXPUNGE."""
    assert client.select(src)[0] == "OK"
    typ, found = client.uid("SEARCH", "HEADER", "Message-ID", message_id)
    uids = found[0].decode().split()
    assert typ == "OK" and uids, f"{message_id} not in {src}"
    for uid in uids:
        if how == "MOVE":
            assert client.uid("MOVE", uid, dst)[0] == "OK"
        else:
            assert client.uid("COPY", uid, dst)[0] == "OK"
            assert client.uid("STORE", uid, "+FLAGS", "(\\Deleted)")[0] == "OK"
            assert client.expunge()[0] == "OK"
    client.close()


def count(client: imaplib.IMAP4, folder: str) -> int:
    """Gives how many messages not marked deleted are in the folder."""
    typ, data = client.status(folder, "(MESSAGES)")
    assert typ == "OK"
    return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))  # type: ignore[union-attr]


def rows(store: Path) -> list[tuple[str, str, str, str]]:
    """Gives (user, direction, Message-ID, From domain) of every recorded move, sorted."""
    if not store.exists():
        return []
    with LearningStore.open(f"sqlite:{store}") as s:
        return sorted(
            (m.user, m.direction, m.record.message_id, m.record.from_domain) for m in s.moves()
        )


def authsieve(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def suggestions(imap: Imap) -> list[dict[str, object]]:
    code, out = authsieve("suggest", "--json", "--config", str(imap.config))
    assert code == 0
    return list(json.loads(out)["proposals"])


def settle(imap: Imap, before: int, moves: int) -> None:
    """Waits until learn has looked at `moves` more moves (it works detached)."""
    wait_for(lambda: imap.learned() >= before + moves, 30, f"{moves} moves seen by learn")


# --- the scenario -------------------------------------------------------------------------------


def test_moves_are_recorded_once_proposed_applied_and_change_the_next_delivery(
    imap: Imap,
) -> None:
    store = imap.configure("scenario")
    alice, bob = imap.login(ALICE), imap.login(BOB)
    seen = imap.learned()
    try:
        # Three .cyou messages in two INBOXes, one of them twice in alice's: moved into Junk
        # by MOVE and by COPY+EXPUNGE.  The second copy is the same delivery: counted once.
        first = delivered(imap, variant(CYOU, 1), ALICE)
        append(alice, "INBOX", first)
        for n, (client, user) in enumerate(((alice, ALICE), (bob, BOB)), 2):
            append(client, "INBOX", delivered(imap, variant(CYOU, n), user))
        append(alice, "INBOX", first)
        spool = spool_dir(store)
        assert len(list(spool.glob("*.json"))) == 3  # no record in the store yet: learn takes
        move(alice, "INBOX", "Junk", "<learn-1@test>")  # both copies: two moves, one count
        move(alice, "INBOX", "Junk", "<learn-2@test>", how="COPY")
        move(bob, "INBOX", "Junk", "<learn-3@test>")
        # The phishing message, rescued from Quarantine three times by both users: never
        # authenticated, so it teaches no allow entry.
        for n, (client, user) in enumerate(((alice, ALICE), (alice, ALICE), (bob, BOB)), 11):
            append(client, "Quarantine", delivered(imap, variant(PHISH, n), user))
            move(
                client, "Quarantine", "INBOX", f"<learn-{n}@test>", how="MOVE" if n % 2 else "COPY"
            )
        # A forged X-Authsieve (no delivery record of ours names it): moved into Junk three
        # times by two users, it teaches nothing.
        for n, client in ((1, alice), (2, alice), (3, bob)):
            append(client, "INBOX", forged(n))
            move(client, "INBOX", "Junk", f"<forged-{n}@forged.example>")
        # The shop's newsletter, junked for alice by her own blocked suffix, rescued twice.
        for n in (21, 22):
            append(alice, "Junk", delivered(imap, variant(NEWS, n), ALICE))
            move(alice, "Junk", "INBOX", f"<learn-{n}@test>", how="MOVE" if n % 2 else "COPY")
        settle(imap, seen, 4 + 3 + 3 + 2)
        assert list(spool.glob("*.json")) == []  # each learn took in what the spool held

        recorded = rows(store)
        assert [r for r in recorded if r[1] == "junked"] == [
            (ALICE, "junked", "<learn-1@test>", "lucky-winner.cyou"),
            (ALICE, "junked", "<learn-2@test>", "lucky-winner.cyou"),
            (BOB, "junked", "<learn-3@test>", "lucky-winner.cyou"),
        ]
        assert sorted(r[2] for r in recorded if r[1] == "rescued") == [
            "<learn-11@test>", "<learn-12@test>", "<learn-13@test>",
            "<learn-21@test>", "<learn-22@test>",
        ]  # fmt: skip
        assert not any("forged" in r[2] or r[3] == "forged.example" for r in recorded)
        # Every message stayed where its user put it (pipe :copy), and Dovecot logged no error.
        assert count(alice, "Junk") == 3 + 2 and count(bob, "Junk") == 1 + 1
        assert count(alice, "INBOX") == 2 + 2 and count(alice, "Quarantine") == 0
        assert "rror" not in (imap.root / "dovecot.log").read_text()

        # Two rescues are below min_messages = 3: no allow entry yet.
        proposals = suggestions(imap)
        assert [(p["kind"], p["value"], p["users"]) for p in proposals] == [
            ("block_domain", "lucky-winner.cyou", [ALICE, BOB])
        ]
        assert proposals[0]["messages"] == 3

        seen = imap.learned()
        append(alice, "Junk", delivered(imap, variant(NEWS, 23), ALICE))
        move(alice, "Junk", "INBOX", "<learn-23@test>")
        settle(imap, seen, 1)
    finally:
        alice.logout()
        bob.logout()

    proposals = suggestions(imap)
    kinds = [(p["kind"], p["table"], p["value"]) for p in proposals]
    assert kinds == [
        ("allow_sender", f'users."{ALICE}"', "news@news.shop.example"),
        ("block_domain", "policy", "lucky-winner.cyou"),
    ]
    assert "every time authenticated" in str(proposals[0]["summary"])
    code, text = authsieve("suggest", "--config", str(imap.config))
    assert code == 0 and text.startswith("1. allow sender news@news.shop.example for alice")
    # The administrator's weekly digest carries the same proposals, numbered alike.
    maildir = imap.root / "home" / "alice" / "Maildir"
    code, mail = authsieve(
        "quarantine", "digest", "--config", str(imap.config), "--maildir", str(maildir),
        "--user", ALICE, "--mail-from", "postmaster@family.example", "--proposals",
    )  # fmt: skip
    assert code == 0 and mail.startswith("From: postmaster@family.example\n")
    assert mail.endswith("\n-- \n" + PROPOSALS_HEAD + text)
    code, mail = authsieve(
        "quarantine", "digest", "--config", str(imap.config), "--maildir", str(maildir),
        "--user", ALICE,
    )  # fmt: skip
    assert code == 0 and "allow sender" not in mail

    # Before --apply: the next .cyou message goes to INBOX, the newsletter to alice's Junk.
    before_d = str(imap.root / "sieve-before.d")
    code, said = authsieve("sieve", "install", "--dir", before_d, "--config", str(imap.config))
    assert code == 0, said
    assert next_delivery(imap, variant(CYOU, 31), ALICE) == ("inbox", "INBOX")
    assert next_delivery(imap, variant(NEWS, 32), ALICE) == ("junk", "Junk")
    for n in (2, 1):  # numbers as `suggest` shows them now: the last first
        code, said = authsieve("suggest", "--apply", str(n), "--config", str(imap.config))
        assert code == 0 and "installed" in said, said
    text = imap.config.read_text()
    assert 'spf_fail = "junk"   # kept by suggest --apply' in text
    assert "# alice does not want the shop's mail" in text
    assert next_delivery(imap, variant(CYOU, 33), ALICE) == ("junk", "Junk")
    assert next_delivery(imap, variant(NEWS, 34), ALICE) == ("inbox", "INBOX")
    assert suggestions(imap) == []  # what the policy now does is not proposed again
    # suggest ran as root on the mail user's store: it left no file the mail user cannot write.
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in store.parent.iterdir()}
    assert owners and set(owners.values()) == {NOBODY}, owners


PROPOSALS_HEAD = (
    "Policy proposals from what users moved in and out of Junk and Quarantine\n"
    "(authsieve suggest; apply one with: authsieve suggest --apply N):\n\n"
)


def next_delivery(imap: Imap, data: bytes, user: str) -> tuple[str, str]:
    """Gives (X-Authsieve verdict, the folder the installed global script picks) for a message.

    The message goes through `authsieve pipe --deliver stdout` (a subprocess, as Postfix
    runs it), then sieve-test runs the script `suggest --apply` reinstalled.
    """
    proc = subprocess.run(
        [
            *filter_command(), "pipe", "--config", str(imap.config),
            "--dns-server", imap.dns.address, "--recipient", user, "--deliver", "stdout",
        ],
        input=data, capture_output=True, timeout=60, check=False,
        user=NOBODY[0], group=NOBODY[1],  # as Postfix runs it: the mail user, whose store it is
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    verdict = re.search(rb"X-Authsieve: [^\r\n]*verdict=(\w+)", proc.stdout)
    assert verdict is not None
    # The pipe recorded the delivery its X-Authsieve names (what learn will believe).
    named = re.search(rb";\s+delivery=([a-z2-7]+)", proc.stdout)
    store = str(config_from_dict(tomllib.loads(imap.config.read_text())).learn.store)  # type: ignore[union-attr]
    with as_store_owner(store), DeliveryStore.open(store) as records:
        records.ingest_spool(0)  # the pipe spooled it (a one-shot process)
        assert named is not None and records.get(named.group(1).decode()) is not None
    script = (imap.root / "sieve-before.d" / "authsieve.sieve").read_text()
    with Pigeonhole() as ph:
        assert ph.compile(script, "global").ok
        run = ph.run("global", proc.stdout, sender="x@example.net", recipient=user)
    return verdict.group(1).decode(), run.folder
