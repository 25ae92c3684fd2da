"""`dmarc-report`: only complete days, catch-up of unsent days, DNS failures left for later.

A sendmail stand-in writes each message it is handed into a directory (or
refuses, exit 75, while a flag file exists); the loopback DNS server publishes
the records, and answers SERVFAIL where a test needs a temporary failure.
"""

from __future__ import annotations

import email
import email.policy
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from classifier.aggregate.feedback import DAY, AggregateReport
from classifier.aggregate.rows import DkimEntry, ReportRow
from classifier.aggregate.store import ReportStore
from classifier.commands.dmarc_report import _in_turn
from classifier.commands.main import main
from tests.dnsserver import DnsTestServer

ROOT = Path(__file__).resolve().parent.parent
ZONE = """\
_dmarc.own.example. TXT "v=DMARC1; p=none; rua=mailto:agg@own.example"
_dmarc.ext.example. TXT "v=DMARC1; p=none; rua=mailto:agg@own.example"
_dmarc.flaky.example. TXT "v=DMARC1; p=none; rua=mailto:agg@own.example"
"""
# SERVFAIL: a temporary failure of the record, and of the external destination's consent.
SERVFAIL = ("_dmarc.flaky.example.", "ext.example._report._dmarc.own.example.")

SENDMAIL = """\
#!/bin/sh
if [ -e "{root}/refuse" ]; then echo "refused" >&2; exit 75; fi
n=$(ls "{root}/out" | wc -l)
cat > "{root}/out/$n.eml"
"""


def row(domain: str, at: int) -> ReportRow:
    return ReportRow(
        received_at=at,
        source_ip="192.0.2.7",
        header_from=domain,
        envelope_from=domain,
        envelope_to="family.example",
        spf_domain=domain,
        spf_scope="mfrom",
        spf_result="pass",
        dkim=(DkimEntry(domain, "s1", "pass"),),
        dmarc_result="pass",
        dkim_aligned=True,
        spf_aligned=True,
        policy_domain=domain,
        discovery_method="treewalk",
        p="none",
        sp="none",
        np="",
        adkim="r",
        aspf="r",
        testing="n",
        policy_applied="none",
        disposition="none",
        reasons=(),
    )


class Setup:
    def __init__(self, root: Path, dns: str, extra: str = "") -> None:
        self.root, self.dns = root, dns
        (root / "out").mkdir()
        sendmail = root / "sendmail"
        sendmail.write_text(SENDMAIL.format(root=root))
        sendmail.chmod(0o755)
        self.config = root / "config.toml"
        self.config.write_text(
            f'[classifier]\nauthserv_id = "mx.family.example"\ndns_timeout = 1\n'
            f'[reports]\nstore = "sqlite:{root / "reports.db"}"\n'
            'email = "dmarc-reports@family.example"\n'
            f'sendmail = "{sendmail}"\n{extra}'
        )

    def add(self, *rows: ReportRow) -> None:
        with ReportStore.open(f"sqlite:{self.root / 'reports.db'}") as store:
            store.append(rows)

    def run(self, *extra: str) -> int:
        argv = ["dmarc-report", "--config", str(self.config), "--dns-server", self.dns]
        return main([*argv, *extra])

    def sent(self) -> list[EmailMessage]:
        parse = email.message_from_bytes
        files = sorted((self.root / "out").iterdir(), key=lambda p: int(p.stem))
        return [parse(p.read_bytes(), policy=email.policy.default) for p in files]  # type: ignore[misc]


@pytest.fixture(scope="module")
def dns() -> Iterator[str]:
    server = DnsTestServer(ZONE, servfail=SERVFAIL)
    try:
        yield server.address
    finally:
        server.stop()


def today() -> int:
    return int(time.time()) // DAY * DAY


def iso(begin: int) -> str:
    return datetime.fromtimestamp(begin, UTC).strftime("%Y-%m-%d")


def test_an_incomplete_day_is_refused(
    tmp_path: Path, dns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = Setup(tmp_path, dns)
    setup.add(row("own.example", today() + 1))
    for day in (today(), today() + 3 * DAY):
        assert setup.run("--send", "--day", iso(day)) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"--day {iso(day)}: not a complete UTC day yet (the last one is"
                            f" {iso(today() - DAY)})")  # fmt: skip
        assert "\n" not in err
    assert setup.sent() == []
    out = tmp_path / "preview"
    assert setup.run("--dry-run", str(out), "--day", iso(today() + DAY)) == 2
    assert "not a complete UTC day yet" in capsys.readouterr().err


def test_send_catches_up_on_the_days_a_failed_run_left(
    tmp_path: Path, dns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = Setup(tmp_path, dns)
    two_ago, yesterday = today() - 2 * DAY, today() - DAY
    setup.add(row("own.example", two_ago + 60), row("own.example", yesterday + 60))
    setup.add(row("own.example", today() - 30 * DAY))  # beyond catch_up_days: not sent
    # The run of two days ago failed; the retry runs after midnight, as the timer would.
    (tmp_path / "refuse").touch()
    assert setup.run("--send") == 75
    (tmp_path / "refuse").unlink()
    assert setup.run("--send") == 0
    subjects = sorted(m["Subject"] for m in setup.sent())
    assert len(subjects) == 2
    assert f"Report-ID: <{two_ago}.own.example@mx.family.example>" in subjects[0]
    assert f"Report-ID: <{yesterday}.own.example@mx.family.example>" in subjects[1]
    # Nothing twice, and a catch-up run does not list what earlier runs sent.
    capsys.readouterr()
    assert setup.run("--send") == 0
    assert len(setup.sent()) == 2
    assert "already sent" not in capsys.readouterr().out

    # --force sends the day again as another report (RFC 9990 §3.2.1: Report-ID unique).
    assert setup.run("--send", "--force", "--day", iso(yesterday)) == 0
    again = setup.sent()[-1]
    assert len(setup.sent()) == 3
    first_id = f"<{yesterday}.own.example@mx.family.example>"
    assert first_id not in again["Subject"] and again["Message-ID"] != first_id
    (part,) = [p for p in again.iter_attachments()]
    assert part.get_filename() != f"mx.family.example!own.example!{yesterday}!{today() - 1}.xml.gz"


def test_a_temporary_dns_failure_leaves_the_report_for_the_next_run(
    tmp_path: Path, dns: str, caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(tmp_path, dns)
    yesterday = today() - DAY
    for domain in ("own.example", "ext.example", "flaky.example"):
        setup.add(row(domain, yesterday + 60))
    assert setup.run("--send") == 75
    (sent,) = setup.sent()
    assert "Report Domain: own.example " in sent["Subject"]
    log = caplog.text
    assert "flaky.example: not sent now, left for the next run: _dmarc.flaky.example" in log
    assert "ext.example: mailto:agg@own.example skipped for now, left for the next run" in log
    assert "not authorised" not in log and "no DMARC record" not in log


def test_the_run_time_limit_leaves_the_rest_for_the_next_run(
    tmp_path: Path, dns: str, caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(tmp_path, dns, "run_time_limit = 0.000001\n")
    setup.add(row("own.example", today() - DAY + 60))
    assert setup.run("--send") == 75
    assert setup.sent() == []
    assert "own.example: not sent: reports.run_time_limit (1e-06 s) spent" in caplog.text


def test_reports_go_most_messages_first_so_made_up_domains_cannot_starve_the_rest() -> None:
    def report(domain: str, messages: int) -> AggregateReport:
        return AggregateReport(domain, f"{domain}.xml.gz", domain, b"", 1, messages)

    many = [report(f"a{n}.example", 1) for n in range(3)]
    built = [(0, DAY, [*many, report("zz.example", 40), report("b.example", 40)])]
    order = [r.policy_domain for _, _, r in _in_turn(built)]
    assert order == ["b.example", "zz.example", "a0.example", "a1.example", "a2.example"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the owner check is root's")
def test_dry_run_writes_only_into_a_private_directory(
    tmp_path: Path, dns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = Setup(tmp_path, dns)
    setup.add(row("own.example", today() - DAY + 60))
    planted = tmp_path / "planted"  # where a local user's symlink points
    planted.mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    link = tmp_path / "link"
    link.symlink_to(planted)
    for out, why in ((link, "a symlink"), (shared, "writable by other users"),
                     (theirs, "owned by uid 65534, not root")):  # fmt: skip
        assert setup.run("--dry-run", str(out)) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"--dry-run {out}: {why}" + (
            "; give a directory of your own" if why == "a symlink"
            else "; use a private directory (install -d -m 700 DIR)")), err  # fmt: skip
    assert list(planted.iterdir()) == list(shared.iterdir()) == list(theirs.iterdir()) == []
    # A missing directory is made 0700; a sticky shared one (as /tmp) is fine.
    fresh = tmp_path / "fresh"
    assert setup.run("--dry-run", str(fresh)) == 0
    assert fresh.stat().st_mode & 0o777 == 0o700 and len(list(fresh.iterdir())) == 2
    shared.chmod(0o1777)
    assert setup.run("--dry-run", str(shared)) == 0
    assert len(list(shared.iterdir())) == 2


def test_no_rows_names_the_days_and_a_problem_is_told_once(
    tmp_path: Path, dns: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(tmp_path, dns)
    day = today() - 3 * DAY
    assert setup.run("--send", "--day", iso(day)) == 0
    assert capsys.readouterr().out == f"no rows for {iso(day)} (UTC): no report\n"
    setup.add(row("flaky.example", today() - DAY + 60))
    out = tmp_path / "out"
    assert setup.run("--dry-run", str(out)) == 75
    printed = capsys.readouterr()
    assert "_dmarc.flaky.example" not in printed.out + printed.err
    assert caplog.text.count("flaky.example: not sent now") == 1
    assert "would send to no one (see the log)" in printed.out


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a root-owned store")
def test_a_store_file_root_created_names_the_file_and_the_user_to_chown_it_to(
    tmp_path: Path,
) -> None:
    lib = Path(tempfile.mkdtemp(prefix="authsieve-lib-"))
    try:
        lib.chmod(0o777)
        db = lib / "reports.db"
        with ReportStore.open(f"sqlite:{db}") as store:
            store.append([row("own.example", today() - DAY + 60)])
        config = lib / "config.toml"
        config.write_text(f'[reports]\nstore = "sqlite:{db}"\nemail = "d@family.example"\n')
        config.chmod(0o644)
        argv = ["runuser", "-u", "nobody", "--", sys.executable, "-m", "classifier.commands.main"]
        argv += ["dmarc-report", "--config", str(config), "--send"]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 2, done.stderr
        group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
        existing = " ".join(str(p) for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
                            if p.exists())  # fmt: skip
        assert f"{db} is not writable by nobody" in done.stderr
        assert f"chown nobody:{group} {existing} (README" in done.stderr
        assert "install -d" not in done.stderr and done.stderr.count("\n") == 1
    finally:
        shutil.rmtree(lib)
