"""Report rows recorded at delivery (issue 16, RFC 9990): the real pipe path, the store."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import classifier.aggregate.store as store_module
from classifier.aggregate.rows import DkimEntry, Override, ReportRow, disposition_of
from classifier.aggregate.store import (
    _COLUMNS,
    SCHEMA_VERSION,
    ReportStore,
    StoreError,
    _values,
    record_rows,
    sqlite_path,
)
from classifier.config import (
    DEFAULT_REPORT_STORE,
    ConfigError,
    ReportsConfig,
    config_from_dict,
    load_config,
    redact_store_url,
    report_store_kind,
)
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
        "--dns-zone", str(ZONE), "--recipient", "alice@family.example", "--deliver", "stdout",
        *(extra or []),
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
    with ReportStore.open(f"sqlite:{db}") as store:  # pipe spools its rows (aggregate/spool.py)
        assert store.ingest_spool(0) >= len(MESSAGES) - 2
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


def reports_of(table: dict[str, object]) -> ReportsConfig:
    got = config_from_dict({"reports": table}).reports
    assert got is not None
    return got


def test_a_reports_table_turns_recording_on_with_the_default_store() -> None:
    assert config_from_dict({}).reports is None
    on = config_from_dict({"reports": {}}).reports
    assert on is not None and on.store == DEFAULT_REPORT_STORE
    assert sqlite_path(DEFAULT_REPORT_STORE) == Path("/var/lib/authsieve/reports.db")
    with pytest.raises(ConfigError, match=r"reports\.store"):
        config_from_dict({"reports": {"store": "mysql://x"}})
    with pytest.raises(StoreError, match="expected sqlite:PATH"):
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


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:/var/lib/authsieve/reports.db", "sqlite"),
        ("postgresql://authsieve@db.example.org:5432/reports", "postgresql"),
        ("postgresql:///reports?host=/run/postgresql", "postgresql"),
        ("postgres://[2001:db8::5]/reports?sslmode=verify-full", "postgresql"),
        ("postgresql://db.example.org?dbname=reports", "postgresql"),
        ("postgresql://db.example.org/", None),  # no database named
        ("postgresql://db.example.org:port/reports", None),
        ("postgresql:reports", None),
        ("sqlite:", None),
        ("mysql://db/reports", None),
        ("postgresql://db/reports with space", None),
    ],
)
def test_the_store_url_picks_the_backend_at_config_load(url: str, kind: str | None) -> None:
    assert report_store_kind(url) == kind
    if kind is None:
        with pytest.raises(ConfigError, match=r"reports\.store: expected sqlite:PATH or post"):
            config_from_dict({"reports": {"store": url}})
    else:
        assert reports_of({"store": url}).store == url


def test_a_bad_store_url_is_exit_2_from_the_command_line(tmp_path: Path) -> None:
    config = config_with_store(tmp_path, "postgresql://db.example.org:x/reports")
    argv = [sys.executable, "-m", "classifier.commands.main", "dmarc-report", "--config",
            str(config), "--dry-run", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, cwd=ROOT, check=False, timeout=60)
    assert proc.returncode == 2
    assert b"reports.store: expected" in proc.stderr and b"Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://mx:pa%3Ass@db.example.org/r", "postgresql://mx:***@db.example.org/r"),
        ("postgresql:///r?host=/run/pg&password=pw", "postgresql:///r?host=/run/pg&password=***"),
        ("postgresql://mx@db/r?passfile=/etc/authsieve/pgpass",
         "postgresql://mx@db/r?passfile=/etc/authsieve/pgpass"),
        ("sqlite:/var/lib/authsieve/reports.db", "sqlite:/var/lib/authsieve/reports.db"),
    ],
)  # fmt: skip
def test_a_store_password_is_never_shown(url: str, shown: str) -> None:
    assert redact_store_url(url) == shown


def test_the_report_host_defaults_to_the_fqdn() -> None:
    assert reports_of({}).host == socket.getfqdn()
    assert reports_of({"host": "mx2.example.org"}).host == "mx2.example.org"
    assert config_from_dict({}).reports is None
    with pytest.raises(ConfigError, match=r"reports\.host"):
        config_from_dict({"reports": {"host": "mx 2"}})


def test_rows_carry_the_host_and_one_read_covers_every_host(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path}/r.db"
    for host, at in (("mx1", 1000), ("mx2", 1001), ("mx1", 1002)):
        reports = reports_of({"store": url, "host": host})
        assert record_rows(reports, (_row(at),), now=2000.0)
    with ReportStore.open(url) as store:
        assert [r.received_at for r in store.rows_between(0, 5000)] == [1000, 1001, 1002]
        assert store.hosts_between(0, 5000) == {"mx1": 2, "mx2": 1}
        assert store.hosts_between(1001, 1002) == {"mx2": 1}


def test_a_store_from_before_the_host_column_is_brought_up_to_date(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    ints = {"received_at", "dkim_aligned", "spf_aligned"}
    columns = ", ".join(f"{c} {'INTEGER' if c in ints else 'TEXT'} NOT NULL" for c in _COLUMNS)
    with sqlite3.connect(db) as old:  # schema 1: no host column, no version table
        old.execute(f"CREATE TABLE report_rows ({columns})")
        old.execute(
            f"INSERT INTO report_rows VALUES ({', '.join('?' for _ in _COLUMNS)})",
            _values(_row(1000), "")[:-1],
        )
    old.close()
    with ReportStore.open(f"sqlite:{db}", host="mx1") as store:
        store.append([_row(1001)])
        assert [r.received_at for r in store.rows_between(0, 5000)] == [1000, 1001]
        assert store.hosts_between(0, 5000) == {"": 1, "mx1": 1}
        assert store.db.execute("SELECT version FROM report_schema").fetchall() == [
            (SCHEMA_VERSION,)
        ]


def test_serves_threads_share_one_kept_store(tmp_path: Path) -> None:
    reports = reports_of({"store": f"sqlite:{tmp_path}/r.db", "host": "mx1"})
    kept: list[object] = []
    first_done, second_done = threading.Event(), threading.Event()

    def deliver(at: int, then: threading.Event, wait: threading.Event | None) -> None:
        assert record_rows(reports, (_row(at),), now=2000.0)
        kept.extend(store_module._kept.values())
        then.set()
        if wait is not None:
            wait.wait(10)  # alive until the other is done: no thread id reused

    # Two of the daemon's connection threads, both alive, one after the other.
    first = threading.Thread(target=deliver, args=(1000, first_done, second_done))
    first.start()
    assert first_done.wait(10)
    second = threading.Thread(target=deliver, args=(1001, second_done, None))
    second.start()
    second.join()
    first.join()
    assert len(kept) == 2 and kept[0] is kept[1]  # not reopened for the second thread
    with ReportStore.open(f"sqlite:{tmp_path}/r.db") as store:
        assert [r.received_at for r in store.rows_between(0, 5000)] == [1000, 1001]


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
        assert store.ingest_spool(0) == 2
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
            store.ingest_spool(0)  # the pipe spooled what it recorded
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


def test_a_symlinked_report_store_file_is_refused_before_sqlite_opens_it(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    (tmp_path / "reports.db").symlink_to(target)
    with pytest.raises(StoreError, match="a symlink, refused"):
        ReportStore.open(f"sqlite:{tmp_path}/reports.db")
    assert target.read_bytes() == b""  # SQLite never made its tables there
