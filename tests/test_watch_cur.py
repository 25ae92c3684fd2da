"""The watcher and mail a client already saw: unfiled messages in cur/, flags, and $Junk.

A client that opens INBOX while the watcher is down makes Dovecot move the
waiting mail from new/ to cur/; the watcher must still check and file it,
with its flags, and never twice.  Junk gets the ``$Junk`` keyword that Sieve
filing gives, checked here by the real Dovecot (doveadm) reading the folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from classifier.config import load_config
from classifier.mailstore.filing import Job
from classifier.mailstore.keywords import parse_keywords, render_keywords
from classifier.mailstore.maildir import MaildirName, list_folder
from classifier.mailstore.watch import Watcher, WatchOptions
from tests.conftest import ROOT, resolver_for
from tests.dnsserver import DnsTestServer
from tests.dovecot_conf import DovecotSyntax
from tests.helpers import NOBODY, wait_for

DEMO = ROOT / "examples" / "maildir"
CONFIG = ROOT / "examples" / "config.toml"
# The demo's new/ messages by verdict (examples/maildir/README.md).
JUNK = "1741223639.M729759P10398.mx,S=2049,W=2049"
PHISH = "1741659463.M783163P47153.mx,S=1392,W=1392"  # quarantine
NEWSLETTER = "1741604735.M22778P24753.mx,S=3258,W=3258"  # inbox


@pytest.fixture
def dns(dns_server: Callable[..., DnsTestServer]) -> DnsTestServer:
    return dns_server((DEMO / "zone.txt").read_text())


@pytest.fixture
def maildir(open_tmp: Path) -> Path:
    """Gives alice's copy of the demo Maildir, owned by nobody (as Dovecot's mail user)."""
    target = open_tmp / "vmail" / "family.example" / "alice" / "Maildir"
    shutil.copytree(DEMO, target)
    for path in [target, *target.rglob("*")]:
        os.chown(path, *NOBODY, follow_symlinks=False)
    return target


def own(*paths: Path) -> None:
    """Gives files and folders the test made to nobody, the Maildir's owner."""
    for path in paths:
        os.chown(path, *NOBODY, follow_symlinks=False)


def job_for(dns: DnsTestServer) -> Job:
    return Job(load_config(CONFIG), resolver_for(dns), config_path=str(CONFIG))


def seen_by_a_client(maildir: Path, demo_name: str, info: str) -> Path:
    """Moves a demo message from new/ to cur/ as Dovecot does when a client opens INBOX.

    The name gets this minute's time: the message arrived while the watcher was down.
    """
    base = f"{int(time.time())}{demo_name[demo_name.index('.') :]}"
    target = maildir / "cur" / f"{base}:{info}"
    os.rename(maildir / "new" / demo_name, target)
    return target


def run_once(maildir: Path, dns: DnsTestServer) -> Watcher:
    watcher = Watcher(
        WatchOptions(roots=(str(maildir),), workers=0, once=True), job_for(dns), notify=bool
    )
    assert watcher.run() == 0
    return watcher


def snapshot(maildir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(maildir)): p.read_bytes()
        for p in maildir.rglob("*")
        if p.is_file() and "dovecot" not in p.name
    }


def test_unfiled_mail_a_client_moved_to_cur_is_filed_at_start_with_its_flags(
    maildir: Path, dns: DnsTestServer
) -> None:
    old_cur = sorted(os.listdir(maildir / "cur"))  # last week's mail: the user's already
    for name in os.listdir(maildir / "new"):
        if name not in (JUNK, PHISH, NEWSLETTER):
            os.unlink(maildir / "new" / name)
    junk = seen_by_a_client(maildir, JUNK, "2,S")
    phish = seen_by_a_client(maildir, PHISH, "2,FS")
    news = seen_by_a_client(maildir, NEWSLETTER, "2,")

    watcher = run_once(maildir, dns)

    assert (watcher.counts["filed"], watcher.counts["left-alone"]) == (3, 0)
    assert watcher.counts["action:junk"] == 1 and watcher.counts["action:quarantine"] == 1
    by_core = {
        MaildirName.parse(p.name).core: str(p.relative_to(maildir))
        for f in ("", ".Junk", ".Quarantine")
        for p in list_folder(maildir / f)
        if MaildirName.parse(p.name).marked
    }
    core = {p: MaildirName.parse(p.name).core for p in (junk, phish, news)}
    assert by_core[core[junk]].startswith(".Junk/cur/") and by_core[core[junk]].endswith(":2,Sa")
    assert by_core[core[phish]].startswith(".Quarantine/cur/")
    assert by_core[core[phish]].endswith(":2,FS")
    assert by_core[core[news]].startswith("cur/") and by_core[core[news]].endswith(":2,")
    assert (maildir / ".Junk" / "dovecot-keywords").read_bytes() == b"0 $Junk\n"
    assert not any(p.exists() for p in (junk, phish, news))
    assert sorted(n for n in os.listdir(maildir / "cur") if "authsieve" not in n) == old_cur

    before = snapshot(maildir)
    again = run_once(maildir, dns)  # a restart: nothing is checked or filed twice
    assert again.counts["filed"] == 0 and snapshot(maildir) == before


def test_mail_in_cur_carrying_our_header_is_read_once_and_left_alone(
    maildir: Path, dns: DnsTestServer
) -> None:
    """Delivered by `authsieve pipe` (our header, a plain name), or moved back from Junk."""
    for name in os.listdir(maildir / "new"):
        os.unlink(maildir / "new" / name)
    options = WatchOptions(roots=(str(maildir),), workers=0, once=True)
    first = Watcher(options, job_for(dns), notify=bool)
    (maildir / "new" / JUNK).write_bytes((DEMO / "new" / JUNK).read_bytes())
    own(maildir / "new" / JUNK)
    assert first.run() == 0 and first.counts["action:junk"] == 1
    [filed] = (maildir / ".Junk" / "cur").glob("*,authsieve,*")
    back = maildir / "cur" / f"{int(time.time())}.M1P2.mx:2,S"  # the user: "not junk"
    os.rename(filed, back)

    watcher = Watcher(
        WatchOptions(roots=(str(maildir),), rescan_interval=0.05, workers=0),
        job_for(dns),
        notify=bool,
    )
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        wait_for(lambda: watcher.counts["left-alone"] == 1, 3)
        time.sleep(0.5)  # ten rescans
    finally:
        watcher.request_stop()
        thread.join(10)
    assert watcher.counts["left-alone"] == 1 and watcher.counts["filed"] == 0
    assert os.listdir(maildir / "cur").count(back.name) == 1


def test_cur_is_not_checked_when_cur_max_age_is_zero(maildir: Path, dns: DnsTestServer) -> None:
    news = seen_by_a_client(maildir, NEWSLETTER, "2,S")
    options = WatchOptions(roots=(str(maildir),), workers=0, once=True, cur_max_age=0)
    watcher = Watcher(options, job_for(dns), notify=bool)
    assert watcher.run() == 0 and news.exists() and watcher.counts["filed"] == 4


def test_keywords_are_translated_into_the_junk_folder(maildir: Path, dns: DnsTestServer) -> None:
    """INBOX's letter a is $Forwarded; in Junk, with $Junk added, both get letters of Junk's own."""
    (maildir / "dovecot-keywords").write_bytes(b"0 $Forwarded\n1 $label1\n")
    (maildir / ".Junk" / "dovecot-keywords").write_bytes(b"0 $label1\n")
    own(maildir / "dovecot-keywords", maildir / ".Junk" / "dovecot-keywords")
    junk = seen_by_a_client(maildir, JUNK, "2,RSa")
    run_once(maildir, dns)
    [filed] = (maildir / ".Junk" / "cur").glob(junk.name.partition(",")[0] + ",authsieve,*")
    assert filed.name.endswith(":2,RSbc")
    keywords = parse_keywords((maildir / ".Junk" / "dovecot-keywords").read_bytes())
    assert keywords == {0: "$label1", 1: "$Forwarded", 2: "$Junk"}


def test_dovecot_keywords_file_round_trips_and_skips_bad_lines() -> None:
    raw = b"0 $Junk\n1 $Forwarded\nx bad\n27 toobig\n3 NonJunk\n"
    assert parse_keywords(raw) == {0: "$Junk", 1: "$Forwarded", 3: "NonJunk"}
    assert render_keywords(parse_keywords(raw)) == b"0 $Junk\n1 $Forwarded\n3 NonJunk\n"


DOVECOT_CONF = """\
mail_home = {home}
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
ssl = no
log_path = /dev/stderr
stats_writer_socket_path =
base_dir = {home}/run
"""


@pytest.mark.skipif(shutil.which("doveadm") is None, reason="needs Dovecot (doveadm)")
def test_dovecot_reads_the_junk_keyword_and_the_flags_the_watcher_filed(
    maildir: Path, dns: DnsTestServer
) -> None:
    """The real Dovecot, reading the folders as the mail user: what a client would see."""
    (maildir / "dovecot-keywords").write_bytes(b"0 $Forwarded\n")
    own(maildir / "dovecot-keywords")
    seen_by_a_client(maildir, JUNK, "2,Sa")
    run_once(maildir, dns)  # as root: every file it made goes to nobody, the Maildir's owner

    home = maildir.parent
    conf = home / "dovecot.conf"
    syntax = DovecotSyntax()
    conf.write_text(syntax.header() + syntax.maildir(str(maildir)) + DOVECOT_CONF.format(home=home))
    (home / "run").mkdir()
    for path in (conf, home / "run", home):
        os.chown(path, *NOBODY)

    def fetch(mailbox: str) -> list[str]:
        argv = ["doveadm", "-c", str(conf), "fetch", *syntax.doveadm_mail_args()]
        run = subprocess.run(
            [*argv, "flags", "mailbox", mailbox, "all"],
            env={"USER": "nobody", "HOME": str(home), "PATH": os.environ["PATH"]},
            user=NOBODY[0],
            group=NOBODY[1],
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 0, run.stderr
        return sorted(line for line in run.stdout.splitlines() if line.startswith("flags:"))

    # The demo's own two Junk messages, and ours: read by a client, forwarded, now junk.
    assert fetch("Junk") == [
        "flags: \\Seen \\Recent",
        "flags: \\Seen \\Recent",
        "flags: \\Seen \\Recent $Forwarded $Junk",
    ]
