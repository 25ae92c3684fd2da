"""The report store: rows appended at delivery, read back by `authsieve dmarc-report`.

SQLite in WAL mode (``[reports] store = "sqlite:/var/lib/authsieve/reports.db"``),
so `authsieve pipe` processes, the daemon and the watcher can append while a
report is being built.  Appending never delays or fails a delivery:
`record_rows` waits at most `WRITE_TIMEOUT` for the lock, and a store that
cannot be written is logged and skipped.  Rows older than
``retention_days`` are purged, at most once an hour per process and whenever a
report is built.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from classifier.aggregate.hints import store_hint
from classifier.aggregate.rows import DkimEntry, Override, ReportRow, rows_from
from classifier.config import DEFAULT_REPORT_STORE, ReportsConfig
from classifier.log import log

if TYPE_CHECKING:
    from classifier.evaluate import Evaluation

DEFAULT_STORE = DEFAULT_REPORT_STORE
WRITE_TIMEOUT = 0.5  # seconds: a delivery waits no longer than this for the store
_PURGE_EVERY = 3600.0
# What the README's "DMARC aggregate reports" section has the admin do: the pipe, the
# watcher, the daemon and dmarc-report all open the store, as one user (vmail).
STORE_HINT = (
    "the store must be writable by the user authsieve pipe, watch, serve and dmarc-report run"
    " as (vmail in the examples): install -d -o vmail -g vmail -m 750 /var/lib/authsieve"
    " (README: DMARC aggregate reports)"
)
_last_purge: dict[str, float] = {}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS report_rows (
    received_at INTEGER NOT NULL,
    source_ip TEXT NOT NULL,
    header_from TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    envelope_to TEXT NOT NULL,
    spf_domain TEXT NOT NULL,
    spf_scope TEXT NOT NULL,
    spf_result TEXT NOT NULL,
    dkim TEXT NOT NULL,
    dmarc_result TEXT NOT NULL,
    dkim_aligned INTEGER NOT NULL,
    spf_aligned INTEGER NOT NULL,
    policy_domain TEXT NOT NULL,
    discovery_method TEXT NOT NULL,
    p TEXT NOT NULL,
    sp TEXT NOT NULL,
    np TEXT NOT NULL,
    adkim TEXT NOT NULL,
    aspf TEXT NOT NULL,
    testing TEXT NOT NULL,
    policy_applied TEXT NOT NULL,
    disposition TEXT NOT NULL,
    reasons TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS report_rows_time ON report_rows (received_at, policy_domain);
"""
_COLUMNS = (
    "received_at", "source_ip", "header_from", "envelope_from", "envelope_to", "spf_domain",
    "spf_scope", "spf_result", "dkim", "dmarc_result", "dkim_aligned", "spf_aligned",
    "policy_domain", "discovery_method", "p", "sp", "np", "adkim", "aspf", "testing",
    "policy_applied", "disposition", "reasons",
)  # fmt: skip


class StoreError(Exception):
    """A store URL that names no store we can use: one line naming it."""


def sqlite_path(url: str) -> Path:
    """Gives the database file of a ``sqlite:PATH`` store URL; raises StoreError otherwise."""
    scheme, _, rest = url.partition(":")
    if scheme == "sqlite" and rest:
        return Path(rest.removeprefix("//"))
    if scheme in ("postgresql", "postgres"):
        raise StoreError(f"{url}: a PostgreSQL store is not supported yet (use sqlite:PATH)")
    raise StoreError(f"{url}: expected sqlite:PATH")


def open_sqlite(url: str, schema: str, timeout: float = 5.0) -> sqlite3.Connection:
    """Gives a connection to the ``sqlite:PATH`` store, its directory and tables made.

    WAL, so that short-lived writers (pipe, learn) and a reader (a report, suggest)
    never wait on each other; autocommit, each writer opens its own transaction.
    Shared by every store of authsieve (reports, learning).
    """
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


def _values(row: ReportRow) -> tuple[object, ...]:
    dkim = json.dumps([[d.domain, d.selector, d.result] for d in row.dkim])
    reasons = json.dumps([[r.type, r.comment] for r in row.reasons])
    d = row.to_dict()
    d.update(dkim=dkim, reasons=reasons, dkim_aligned=int(row.dkim_aligned))
    d["spf_aligned"] = int(row.spf_aligned)
    return tuple(d[c] for c in _COLUMNS)


def _row(values: sqlite3.Row) -> ReportRow:
    d = dict(zip(_COLUMNS, tuple(values), strict=True))
    d["dkim"] = tuple(DkimEntry(*x) for x in json.loads(d["dkim"]))
    d["reasons"] = tuple(Override(*x) for x in json.loads(d["reasons"]))
    d["dkim_aligned"], d["spf_aligned"] = bool(d["dkim_aligned"]), bool(d["spf_aligned"])
    return ReportRow(**d)


class ReportStore:
    """One SQLite report store; `open` creates the file, its directory and the table."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    @classmethod
    def open(cls, url: str, timeout: float = 5.0) -> ReportStore:
        return cls(open_sqlite(url, _SCHEMA, timeout))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ReportStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, rows: Iterable[ReportRow]) -> int:
        """Appends rows in one transaction; gives how many."""
        values = [_values(r) for r in rows]
        marks = ", ".join("?" for _ in _COLUMNS)
        with self.db:
            self.db.executemany(
                f"INSERT INTO report_rows ({', '.join(_COLUMNS)}) VALUES ({marks})", values
            )
        return len(values)

    def rows_between(self, begin: int, end: int) -> Iterator[ReportRow]:
        """Gives the rows received in [begin, end), oldest first."""
        cursor = self.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM report_rows"
            " WHERE received_at >= ? AND received_at < ? ORDER BY received_at, rowid",
            (begin, end),
        )
        for values in cursor:
            yield _row(values)

    def purge(self, before: int) -> int:
        """Deletes rows received before `before`; gives how many."""
        with self.db:
            return self.db.execute(
                "DELETE FROM report_rows WHERE received_at < ?", (before,)
            ).rowcount


def record_rows(
    reports: ReportsConfig, rows: tuple[ReportRow, ...], now: float | None = None
) -> bool:
    """Appends rows to the configured store; gives whether they were written.

    Never raises: a store that cannot be opened or written is logged and the
    rows are dropped, so the delivery goes on (issue 16: reports are best effort).
    """
    url = reports.store
    if not rows:
        return False
    now = time.time() if now is None else now
    try:
        with ReportStore.open(url, timeout=WRITE_TIMEOUT) as store:
            store.append(rows)
            if now - _last_purge.get(url, 0.0) >= _PURGE_EVERY:
                _last_purge[url] = now
                store.purge(int(now - retention_seconds(reports)))
        return True
    except (OSError, sqlite3.Error, StoreError, ValueError) as exc:
        log.warning(
            "report store %s not written, %d row(s) skipped: %s; %s",
            url,
            len(rows),
            exc,
            store_hint(sqlite_path(url)) if url.startswith("sqlite:") else STORE_HINT,
        )
        return False


def retention_seconds(reports: ReportsConfig) -> float:
    """Gives how long rows are kept, in seconds."""
    return reports.retention_days * 86400


def record_delivery(
    reports: ReportsConfig, evaluation: Evaluation, now: float | None = None
) -> bool:
    """Records the report rows of one delivered message; gives whether any were written.

    The one hook of the delivery paths: `recorder(config.reports)` is handed to
    `classifier.evaluate.check_and_annotate`, which pipe, serve and the watcher
    share.  Never raises: whatever goes wrong here is logged, and the message is
    delivered as decided.
    """
    now = time.time() if now is None else now
    try:
        rows = rows_from(evaluation, int(now))
    except Exception:
        log.exception("report rows not computed; delivery goes on")
        return False
    return record_rows(reports, rows, now)


def recorder(reports: ReportsConfig | None) -> Callable[[Evaluation], bool] | None:
    """Gives what records a delivered message's rows into the [reports] store, or None when off."""
    if reports is None:
        return None
    return functools.partial(record_delivery, reports)
