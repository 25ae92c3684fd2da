"""The PostgreSQL report store (issue 16): a real server the test starts, two MX writing.

The server is Debian's `postgresql` (scripts/install-deps --test), started by
`tests.pgserver` on a private Unix socket, no TCP.  Two "hosts" are two
sets of `authsieve pipe` processes with different ``[reports] host``, running
at once; one `authsieve dmarc-report --dry-run` covers both and parsedmarc
reads back the counts.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import parsedmarc
import psycopg
import pytest

from classifier.aggregate.store import ReportStore, StoreError, record_rows
from classifier.config import ReportsConfig, config_from_dict, report_store_kind
from tests.pgserver import PostgresServer, pg_bin
from tests.test_aggregate_store import EXPECTED, MESSAGES, ROOT, ZONE, _row
from tests.test_readme import readme_blocks

pytestmark = pytest.mark.skipif(
    pg_bin() is None, reason="needs Debian's postgresql (scripts/install-deps --test)"
)


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


def write_config(tmp_path: Path, name: str, store: str, host: str) -> Path:
    config = tmp_path / f"{name}.toml"
    text = (ROOT / "examples" / "config.toml").read_text()
    text = text.replace("[classifier]\n", f'[classifier]\nlog_file = "{tmp_path}/{name}.log"\n', 1)
    config.write_text(
        text + f'\n[reports]\nstore = "{store}"\nhost = "{host}"\norg_name = "Family Mail"\n'
        'email = "dmarc-reports@family.example"\n'
    )
    return config


def pipe(config: Path, message: Path) -> subprocess.CompletedProcess[bytes]:
    argv = [
        sys.executable, "-m", "classifier.commands.main", "pipe", "--config", str(config),
        "--dns-zone", str(ZONE), "--recipient", "alice@family.example", "--deliver", "stdout",
    ]  # fmt: skip
    return subprocess.run(
        argv, input=message.read_bytes(), capture_output=True, cwd=ROOT, check=False, timeout=60
    )


def deliver_all(config: Path) -> list[int]:
    return [pipe(config, m).returncode for m in MESSAGES]


def test_two_hosts_write_at_once_and_one_report_covers_both(
    pg: PostgresServer, tmp_path: Path
) -> None:
    url = pg.create_database("two_hosts")  # empty: both hosts race to make the schema
    configs = [write_config(tmp_path, h, url, f"{h}.family.example") for h in ("mx1", "mx2")]
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(deliver_all, configs))
    assert codes == [[0] * len(MESSAGES)] * 2
    by_host = pg.psql("SELECT host, count(*) FROM report_rows GROUP BY host ORDER BY host",
                      "two_hosts")  # fmt: skip
    assert by_host.split() == ["mx1.family.example|13", "mx2.family.example|13"]
    assert pg.psql("SELECT version FROM report_schema", "two_hosts").split() == ["2"]

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "dmarc-report", "--config",
         str(configs[0]), "--day", day, "--dry-run", str(out), "--dns-zone", str(ZONE)],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    begin = int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
    with ReportStore.open(url) as store:  # what the run read: both hosts' rows
        assert store.hosts_between(begin, begin + 86400) == {
            "mx1.family.example": 13,
            "mx2.family.example": 13,
        }
    seen: Counter[tuple[str, str, str]] = Counter()
    for path in sorted(out.glob("*.xml.gz")):
        report = parsedmarc.parse_report_file(str(path), offline=True)["report"]
        assert report["report_metadata"]["org_name"] == "Family Mail"
        for record in report["records"]:
            key = (record["source"]["ip_address"], record["identifiers"]["header_from"],
                   record["policy_evaluated"]["disposition"])  # fmt: skip
            seen[key] += record["count"]
    # Every message was seen by both hosts: each record counts it twice.
    assert seen == Counter({(e[0], e[1], e[6]): 2 for e in EXPECTED})
    assert sum(seen.values()) == 26


def test_old_rows_are_purged_from_postgresql(pg: PostgresServer) -> None:
    url = pg.create_database("purge")
    reports = ReportsConfig(store=url, retention_days=1, host="mx1")
    rows = (_row(1000), _row(100_000, "2001:db8::1"), _row(100_001, "192.0.2.9"))
    assert record_rows(reports, rows, now=100_000.0)  # purges before 100000 - 86400
    with ReportStore.open(url) as store:
        assert list(store.rows_between(0, 200_000)) == list(rows[1:])
        assert store.hosts_between(0, 200_000) == {"mx1": 2}
        assert store.purge(100_001) == 1
        assert list(store.rows_between(0, 200_000)) == [rows[2]]


def test_a_down_postgresql_leaves_delivery_alone_with_one_log_line(
    pg: PostgresServer, tmp_path: Path
) -> None:
    # The same cluster's URL form, on a socket directory where no server listens.
    secret = "s3cret-pw"
    url = f"postgresql://authsieve:{secret}@/reports?host={tmp_path}/nowhere&port={pg.port}"
    config = write_config(tmp_path, "down", url, "mx1.family.example")
    message = next(m for m in MESSAGES if b"@riverside.example" in m.read_bytes())  # one row
    started = time.monotonic()
    proc = pipe(config, message)
    assert time.monotonic() - started < 20
    assert proc.returncode == 0 and proc.stderr == b""
    assert proc.stdout.endswith(message.read_bytes())
    assert b"X-Authsieve: v=1;" in proc.stdout
    lines = [ln for ln in (tmp_path / "down.log").read_text().splitlines() if "report store" in ln]
    assert len(lines) == 1, lines
    assert "row(s) skipped" in lines[0] and "authsieve:***@" in lines[0]
    assert secret not in (tmp_path / "down.log").read_text()


def test_a_kept_connection_the_server_cut_is_replaced_once(pg: PostgresServer) -> None:
    url = pg.create_database("kept")
    reports = ReportsConfig(store=url, host="mx1")
    assert record_rows(reports, (_row(1000),), now=2000.0)  # the connection is kept
    pg.restart()
    assert record_rows(reports, (_row(1001),), now=2001.0)  # refused on it, written on a new one
    with ReportStore.open(url) as store:
        assert [r.received_at for r in store.rows_between(0, 5000)] == [1000, 1001]


def test_a_store_newer_than_this_authsieve_is_refused(pg: PostgresServer) -> None:
    url = pg.create_database("future")
    ReportStore.open(url).close()
    pg.psql("UPDATE report_schema SET version = 99", "future")
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        ReportStore.open(url)


def test_an_unreachable_store_makes_dmarc_report_exit_2(tmp_path: Path) -> None:
    url = f"postgresql://authsieve:pw@/reports?host={tmp_path}/nowhere"
    config = write_config(tmp_path, "cmd", url, "mx1")
    proc = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "dmarc-report", "--config",
         str(config), "--dry-run", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "reports.store" in proc.stderr and ":pw@" not in proc.stderr
    assert "authsieve:***@" in proc.stderr


def test_the_readme_setup_and_writer_role_work_as_written(pg: PostgresServer) -> None:
    blocks = readme_blocks()
    pg.psql(blocks["postgresql setup"])
    owner = pg.url("authsieve_reports", user="authsieve")
    ReportStore.open(owner).close()  # the owner's first connection makes the tables
    pg.psql(blocks["postgresql writer role"])
    writer = pg.url("authsieve_reports", user="authsieve_mx")
    reports = ReportsConfig(store=writer, retention_days=1)
    rows = (_row(1000), _row(100_000, "2001:db8::1"))
    assert record_rows(reports, rows, now=100_000.0)  # insert, read the version, purge
    with ReportStore.open(owner) as store:
        assert list(store.rows_between(0, 200_000)) == [rows[1]]
    with ReportStore.open(writer) as store, pytest.raises(psycopg.errors.InsufficientPrivilege):
        store.db.execute("DROP TABLE report_rows")  # adds and purges rows, nothing more


def test_the_readme_reports_block_is_a_postgresql_store_config() -> None:
    reports = config_from_dict(tomllib.loads(readme_blocks()["reports postgresql"])).reports
    assert reports is not None and report_store_kind(reports.store) == "postgresql"
    assert "passfile=/etc/authsieve/pgpass" in reports.store
    assert reports.host == "mx1.family.example"
