"""The installed global script as Dovecot runs it: real dovecot-lda, as an unprivileged user.

`sieve install --dir` runs as root (often with umask 077); dovecot-lda runs
the sieve_before script as the mail user.  Any Sieve error Dovecot logs
(an unreadable script or binary, a recompile it cannot save) fails the test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier.annotate import fold
from classifier.auth.facts import AuthFacts, render_header_value
from classifier.config import config_from_dict, load_config
from classifier.mailstore.quarantine import allow_sender_in_config
from classifier.policy.verdict import decide
from sieve.generate import generate_global_script
from sieve.install import install_to_dir
from tests.dovecot_conf import DovecotSyntax
from tests.mta import DOVECOT_LDA, run_as

AUTHSERV = "mx.example.org"
NOBODY = "nobody"
needs_lda = pytest.mark.skipif(
    not (os.path.exists(DOVECOT_LDA) and shutil.which("sievec") and os.geteuid() == 0),
    reason="needs root, dovecot-lda and sievec (Debian dovecot-core, dovecot-sieve)",
)

CONF = """\
protocols =
ssl = no
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
stats_writer_socket_path =
mail_home = {root}/home
postmaster_address = postmaster@example.org
hostname = {host}
recipient_delimiter = +
lda_mailbox_autocreate = yes
namespace inbox {{
  inbox = yes
}}
"""


def dovecot_conf(root: Path, syntax: DovecotSyntax) -> str:
    """Gives the dovecot.conf of the test, in the syntax of the installed Dovecot."""
    home = f"{root}/home"
    return (
        syntax.header()
        + CONF.format(root=root, host=AUTHSERV)
        + syntax.maildir(f"{home}/Maildir")
        + syntax.sieve_plugin("lda")
        + syntax.sieve_scripts(f"{home}/sieve", f"{home}/.dovecot.sieve", f"{root}/sieve-before.d/")
    )


class Lda:
    """A dovecot.conf with a root-owned sieve_before directory, and a mail user's home."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.user = pwd.getpwnam(NOBODY)
        self.before = root / "sieve-before.d"
        self.before.mkdir(mode=0o755)
        for sub in ("run", "state", "home"):
            (root / sub).mkdir()
            os.chown(root / sub, self.user.pw_uid, self.user.pw_gid)
        self.log = root / "dovecot.log"
        self.log.touch()
        os.chown(self.log, self.user.pw_uid, self.user.pw_gid)
        self.conf = root / "dovecot.conf"
        self.syntax = DovecotSyntax()
        self.conf.write_text(dovecot_conf(root, self.syntax))
        self.conf.chmod(0o644)

    def install(self, script: str) -> None:
        """Installs script into sieve_before as root under umask 077, as an admin's shell may."""
        old = os.umask(0o077)
        try:
            install_to_dir(script, self.before)
        finally:
            os.umask(old)

    def deliver(self, message: bytes, address: str) -> str:
        """Gives the folder dovecot-lda, run as the mail user, filed message into (-a address).

        Without -d, dovecot-lda delivers as the calling user (no userdb needed).
        """
        argv = [DOVECOT_LDA, "-c", str(self.conf), "-e", "-f", "x@sender.example", "-a", address]
        argv += self.syntax.lda_home_args(str(self.root / "home"))
        env = {"USER": NOBODY, "HOME": str(self.root / "home")}
        proc = run_as(self.user, argv, env, message)
        assert proc.returncode == 0, proc.stderr.decode()
        maildir = self.root / "home" / "Maildir"
        # A message with keywords ($Junk) goes to cur/, others to new/.
        folders = [maildir, *(d for d in maildir.iterdir() if d.name.startswith("."))]
        found = [f for d in folders for sub in ("new", "cur") for f in d.glob(f"{sub}/*")]
        assert len(found) == 1, found
        found[0].unlink()
        folder = found[0].parent.parent
        return "INBOX" if folder == maildir else folder.name.lstrip(".")

    def sieve_errors(self) -> list[str]:
        """Gives every line of Dovecot's log that reports an error or a warning of Sieve."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [
            line
            for line in lines
            if ("sieve" in line.lower() or "svbin" in line)
            and any(w in line for w in ("Error", "Warning", "Panic", "Fatal"))
        ]


@pytest.fixture()
def lda() -> Iterator[Lda]:
    root = Path(tempfile.mkdtemp(prefix="authsieve-lda-"))
    root.chmod(0o755)
    try:
        yield Lda(root)
    finally:
        if not os.environ.get("AUTHSIEVE_KEEP_LDA"):
            shutil.rmtree(root, ignore_errors=True)


def message(value: str) -> bytes:
    return (
        fold("X-Authsieve", value, b"\n")
        + b"From: Bank <alert@bank.example>\nTo: you@example.org\nSubject: hi\n\nHello.\n"
    )


@needs_lda
def test_installed_script_is_run_by_dovecot_lda_as_the_mail_user_without_errors(
    lda: Lda,
) -> None:
    policies = config_from_dict({}, source="test.toml").policies
    lda.install(generate_global_script(policies, AUTHSERV))
    for name in ("authsieve.sieve", "authsieve.svbin"):
        mode = stat.S_IMODE((lda.before / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))
    facts = AuthFacts(spf="fail", dmarc="fail", dmarc_policy="reject", from_domain="bank.example")
    verdict = decide(facts, policies.default)
    assert verdict.action == "quarantine"
    value = render_header_value(facts, AUTHSERV, verdict.action, "enforce")
    for _ in range(2):
        assert lda.deliver(message(value), "you@example.org") == "Quarantine"
    assert lda.sieve_errors() == []
    # Dovecot used the installed binary: it did not write one of its own next to it.
    assert sorted(p.name for p in lda.before.iterdir()) == ["authsieve.sieve", "authsieve.svbin"]


CONFIG = """\
[classifier]
authserv_id = "mx.example.org"

[policy]
blocked_domain_suffixes = [".cyou"]

[users."you@example.org"]
blocked_action = "quarantine"
"""


@needs_lda
def test_users_table_and_release_allow_reach_the_sieve_dovecot_runs(lda: Lda) -> None:
    """The issue's case, delivered by dovecot-lda: header verdict and folder never disagree."""
    config = lda.root / "config.toml"
    config.write_text(CONFIG)
    policies = load_config(config).policies
    lda.install(generate_global_script(policies, AUTHSERV))
    shop = AuthFacts(
        spf="pass",
        dkim="pass",
        dmarc="pass",
        from_domain="shop.cyou",
        from_address="boss@shop.cyou",
        from_authenticated=True,
    )

    def deliver(user: str) -> tuple[str, str]:
        policy = load_config(config).policies.for_user(user)
        verdict = decide(shop, policy)
        value = render_header_value(
            shop,
            AUTHSERV,
            verdict.action,
            policy.mode,
            allowed=bool(verdict.allowed),
            user=policy.user,
        )
        # The plus address is what Sieve's envelope "to" sees; the table is the mailbox's.
        return verdict.action, lda.deliver(message(value), "you+shop@example.org")

    assert deliver("you@example.org") == ("quarantine", "Quarantine")
    assert deliver("other@example.org") == ("junk", "Junk")
    # `quarantine release --allow` edits the config; the installed script stays as it was.
    assert allow_sender_in_config(config, "you@example.org", "boss@shop.cyou", ())
    assert deliver("you@example.org") == ("inbox", "INBOX")
    assert deliver("other@example.org") == ("junk", "Junk")
    assert lda.sieve_errors() == []
