"""Report rows recorded at delivery (issue 16, RFC 9990): the real pipe path, the store."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from classifier.aggregate.rows import DkimEntry, Override, ReportRow, disposition_of
from classifier.aggregate.store import ReportStore, StoreError, record_rows, sqlite_path
from classifier.config import DEFAULT_REPORT_STORE, ConfigError, config_from_dict, load_config
from classifier.delivery.daemon import make_server
from classifier.lookup.resolver import make_resolver

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "maildir"
ZONE = DEMO / "zone.txt"
MESSAGES = sorted([*(DEMO / "new").iterdir(), *(DEMO / "cur").iterdir()])

# What the demo Maildir gives, one row per message with a DMARC verdict (its README's table):
# source IP, Author Domain, envelope domain, SPF, DMARC, Policy Domain, disposition, override types.
EXPECTED = {
    ("198.51.100.180", "booking.travel.example", "esp-mailer.example", "pass", "fail",
     "travel.example", "quarantine", ()),
    ("198.51.100.201", "lucky-winner.cyou", "lucky-winner.cyou", "pass", "pass",
     "lucky-winner.cyou", "quarantine", ("local_policy",)),
    ("192.0.2.120", "smtp.isp.example", "", "pass", "pass", "isp.example", "none", ()),
    ("192.0.2.66", "bank.example", "bank.example", "fail", "fail", "bank.example",
     "quarantine", ("local_policy",)),
    ("198.51.100.40", "news.shop.example", "bounces.news.shop.example", "pass", "pass",
     "shop.example", "pass", ()),
    ("198.51.100.71", "chess-club.example", "chess-club.example", "softfail", "fail",
     "chess-club.example", "none", ()),
    ("192.0.2.45", "riverside.example", "riverside.example", "pass", "pass",
     "riverside.example", "pass", ()),
    ("192.0.2.150", "school.example", "school.example", "neutral", "pass", "school.example",
     "none", ()),
    ("192.0.2.50", "frank.example", "frank.example", "pass", "pass", "frank.example", "pass", ()),
    ("192.0.2.77", "rowing-club.example", "rowing-club.example", "pass", "pass",
     "rowing-club.example", "pass", ()),
    ("2001:db8:4860:4864:20::32e", "mailbox.example.net", "mailbox.example.net", "pass", "pass",
     "mailbox.example.net", "none", ()),
    ("203.0.113.150", "photo.example", "photo.example", "fail", "fail", "photo.example", "none",
     ("local_policy",)),
    ("198.51.100.101", "plumbing.example", "plumbing.example", "pass", "pass",
     "plumbing.example", "pass", ()),
}  # fmt: skip


def config_with_store(tmp_path: Path, store: str) -> Path:
    config = tmp_path / "config.toml"
    text = (ROOT / "examples" / "config.toml").read_text()
    config.write_text(
        text + f'\n[reports]\nstore = "{store}"\norg_name = "Family Mail"\n'
        'email = "dmarc-reports@family.example"\n'
    )
    return config


def pipe(
    config: Path, message: Path, extra: list[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    argv = [
        sys.executable, "-m", "classifier.commands.main", "pipe", "--config", str(config),
        "--dns-zone", str(ZONE), "--recipient", "alice@family.example", *(extra or []),
    ]  # fmt: skip
    return subprocess.run(
        argv, input=message.read_bytes(), capture_output=True, cwd=ROOT, check=False, timeout=60
    )


def deliver_demo(tmp_path: Path) -> Path:
    """Pipes every demo message with a report store; gives the database file."""
    db = tmp_path / "lib" / "reports.db"
    config = config_with_store(tmp_path, f"sqlite:{db}")
    for message in MESSAGES:
        proc = pipe(config, message)
        assert proc.returncode == 0, proc.stderr
    return db


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return deliver_demo(tmp_path_factory.mktemp("demo"))


def test_pipe_records_one_row_per_message_with_a_dmarc_verdict(demo_store: Path) -> None:
    with ReportStore.open(f"sqlite:{demo_store}") as store:
        rows = list(store.rows_between(0, 2**40))
    got = {
        (r.source_ip, r.header_from, r.envelope_from, r.spf_result, r.dmarc_result,
         r.policy_domain, r.disposition, tuple(o.type for o in r.reasons))
        for r in rows
    }  # fmt: skip
    assert len(rows) == len(EXPECTED) == 13  # 15 messages: two gave no DMARC verdict
    assert got == EXPECTED


def test_a_row_keeps_dkim_selectors_and_the_published_policy(demo_store: Path) -> None:
    with ReportStore.open(f"sqlite:{demo_store}") as store:
        rows = {r.header_from: r for r in store.rows_between(0, 2**40)}
    news = rows["news.shop.example"]
    assert news.dkim == (
        DkimEntry("news.shop.example", "ed2024", "pass"),
        DkimEntry("news.shop.example", "rsa2024", "pass"),
    )
    assert (news.p, news.policy_applied, news.discovery_method) == ("reject", "reject", "treewalk")
    assert news.envelope_to == "family.example"
    photo = rows["photo.example"]
    assert photo.reasons == (Override("local_policy", "trusted ARC sealer lists.example"),)


def test_a_row_holds_no_local_part(demo_store: Path) -> None:
    with sqlite3.connect(demo_store) as db:
        text = repr(db.execute("SELECT * FROM report_rows").fetchall())
    assert "@" not in text and "alice" not in text


def test_an_unwritable_store_is_skipped_and_the_message_delivered(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = config_with_store(tmp_path, f"sqlite:{blocker}/sub/reports.db")
    proc = pipe(config, MESSAGES[0])
    assert proc.returncode == 0 and proc.stderr == b""
    assert proc.stdout.endswith(MESSAGES[0].read_bytes())
    assert b"X-Authsieve: v=1;" in proc.stdout and b"error=" not in proc.stdout


def _row(at: int, ip: str = "192.0.2.1") -> ReportRow:
    return ReportRow(
        received_at=at,
        source_ip=ip,
        header_from="example.com",
        envelope_from="example.com",
        envelope_to="example.org",
        spf_domain="example.com",
        spf_scope="mfrom",
        spf_result="pass",
        dkim=(DkimEntry("example.com", "s1", "pass"),),
        dmarc_result="pass",
        dkim_aligned=True,
        spf_aligned=True,
        policy_domain="example.com",
        discovery_method="treewalk",
        p="reject",
        sp="reject",
        np="",
        adkim="r",
        aspf="r",
        testing="n",
        policy_applied="reject",
        disposition="pass",
        reasons=(),
    )


def test_rows_come_back_as_written_and_old_ones_are_purged(tmp_path: Path) -> None:
    reports = config_from_dict(
        {"reports": {"store": f"sqlite:{tmp_path}/r.db", "retention_days": 1}}
    ).reports
    assert reports is not None
    rows = (_row(1000), _row(100_000, "2001:db8::1"))
    assert record_rows(reports, rows, now=100_000.0)  # purges before 100000 - 86400
    with ReportStore.open(f"sqlite:{tmp_path}/r.db") as store:
        assert list(store.rows_between(0, 200_000)) == [rows[1]]
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_reports_table_turns_recording_on_with_the_default_store() -> None:
    assert config_from_dict({}).reports is None
    on = config_from_dict({"reports": {}}).reports
    assert on is not None and on.store == DEFAULT_REPORT_STORE
    assert sqlite_path(DEFAULT_REPORT_STORE) == Path("/var/lib/authsieve/reports.db")
    with pytest.raises(ConfigError, match=r"reports\.store"):
        config_from_dict({"reports": {"store": "mysql://x"}})
    with pytest.raises(StoreError, match="not supported yet"):
        sqlite_path("postgresql://db/reports")


@pytest.mark.parametrize(
    ("action", "dmarc", "policy", "expected"),
    [
        ("inbox", "pass", "reject", "pass"),
        ("inbox", "pass", "none", "none"),
        ("inbox", "fail", "reject", "none"),
        ("junk", "fail", "reject", "quarantine"),
        ("quarantine", "fail", "quarantine", "quarantine"),
        ("junk", "pass", "none", "quarantine"),
    ],
)
def test_our_verdict_maps_to_an_rfc9990_disposition(
    action: str, dmarc: str, policy: str, expected: str
) -> None:
    assert disposition_of(action, dmarc, policy) == expected


def test_a_from_with_two_author_domains_gives_a_row_for_each(tmp_path: Path) -> None:
    # RFC 9990 §2.1: one report per Policy Domain, so each Author Domain evaluated gets its
    # row in its own Policy Domain's report, not only the most severe one.
    demo = next(m for m in MESSAGES if b"Return-Path: <carol@riverside.example>" in m.read_bytes())
    head, sep, body = demo.read_bytes().partition(b"\nFrom: ")
    line_end = body.index(b"\n")
    two = head + sep + b"carol@riverside.example, alarm@bank.example" + body[line_end:]
    message = tmp_path / "two-authors.eml"
    message.write_bytes(two)
    db = tmp_path / "reports.db"
    proc = pipe(config_with_store(tmp_path, f"sqlite:{db}"), message)
    assert proc.returncode == 0, proc.stderr
    with ReportStore.open(f"sqlite:{db}") as store:
        rows = sorted(store.rows_between(0, 2**40), key=lambda r: r.header_from)
    got = [(r.source_ip, r.header_from, r.policy_domain, r.dmarc_result, r.p) for r in rows]
    assert got == [
        ("192.0.2.45", "bank.example", "bank.example", "fail", "reject"),
        ("192.0.2.45", "riverside.example", "riverside.example", "pass", "quarantine"),
    ]
    # One message, one action: both rows say what was done with it.
    assert {r.disposition for r in rows} == {"quarantine"}


LDA = """\
#!/bin/sh
cat > /dev/null
if [ -e "{flag}" ]; then echo "mailbox locked" >&2; exit 75; fi
exit 0
"""


def test_a_failed_delivery_records_no_row_its_retry_one(tmp_path: Path) -> None:
    # dovecot-lda exits 75: Postfix keeps the message and retries; only the
    # delivery that succeeds may count in the report.
    flag, lda = tmp_path / "fail", tmp_path / "dovecot-lda"
    lda.write_text(LDA.format(flag=flag))
    lda.chmod(0o755)
    db = tmp_path / "reports.db"
    config = config_with_store(tmp_path, f"sqlite:{db}")
    news = next(
        m for m in MESSAGES if b"From: Shop Example <news@news.shop.example>" in m.read_bytes()
    )
    extra = ["--deliver", "dovecot-lda", "--lda-path", str(lda)]

    def rows() -> list[ReportRow]:
        with ReportStore.open(f"sqlite:{db}") as store:
            return list(store.rows_between(0, 2**40))

    flag.touch()
    proc = pipe(config, news, extra)
    assert proc.returncode == 75, proc.stderr
    assert rows() == []
    flag.unlink()
    proc = pipe(config, news, extra)
    assert proc.returncode == 0, proc.stderr
    assert len(rows()) == 1


def test_through_the_daemon_a_row_is_recorded_once_the_pipe_delivered(tmp_path: Path) -> None:
    flag, lda = tmp_path / "fail", tmp_path / "dovecot-lda"
    lda.write_text(LDA.format(flag=flag))
    lda.chmod(0o755)
    db = tmp_path / "reports.db"
    config = config_with_store(tmp_path, f"sqlite:{db}")
    socket = str(tmp_path / "authsieve.sock")
    server = make_server(socket, load_config(config), make_resolver(dns_zone=ZONE))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    news = next(
        m for m in MESSAGES if b"From: Shop Example <news@news.shop.example>" in m.read_bytes()
    )
    extra = ["--daemon", socket, "--deliver", "dovecot-lda", "--lda-path", str(lda)]

    def count() -> int:
        with ReportStore.open(f"sqlite:{db}") as store:
            return len(list(store.rows_between(0, 2**40)))

    try:
        flag.touch()
        assert pipe(config, news, extra).returncode == 75
        flag.unlink()
        assert pipe(config, news, extra).returncode == 0
        deadline = time.monotonic() + 10
        while count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the daemon handles each report line on its own thread
        assert count() == 1
    finally:
        server.shutdown()
        server.server_close()
