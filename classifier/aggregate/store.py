"""The report store: rows appended at delivery, read back by `authsieve dmarc-report`.

Two backends behind one interface, chosen by the URL in ``[reports] store``:
SQLite in WAL mode (the default, ``sqlite:/var/lib/authsieve/reports.db``), so
`authsieve pipe` processes, the daemon and the watcher can append while a
report is being built; and PostgreSQL (``postgresql://…``, `store_pg`) for
several MX or backends reporting for one organisation, each row carrying the
``host`` that wrote it.  Appending never delays or fails a delivery:
`record_rows` waits at most `WRITE_TIMEOUT` for a lock or a statement, and a
store that cannot be written is logged (its password redacted) and skipped.
Rows older than ``retention_days`` are purged, at most once an hour per
process and whenever a report is built.  One-shot processes (pipe, filter)
with a SQLite store spool their rows instead (`spool`), taken in when a
report is built and hourly by a process that keeps the store open.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classifier.aggregate.hints import store_hint
from classifier.aggregate.rows import DkimEntry, Override, ReportRow, rows_from
from classifier.aggregate.spool import (
    BACKGROUND_LIMIT,
    BACKGROUND_SECONDS,
    Intake,
    immediate,
    in_background,
    spool_dir,
    spool_rows,
    take_in,
)
from classifier.config import (
    DEFAULT_REPORT_STORE,
    ReportsConfig,
    redact_store_url,
    report_store_kind,
)
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

SCHEMA_VERSION = 2  # 2: the host column (which MX wrote the row)
_SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS report_rows (
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
    reasons TEXT NOT NULL,
    host TEXT NOT NULL DEFAULT ''
)""",
    "CREATE INDEX IF NOT EXISTS report_rows_time ON report_rows (received_at, policy_domain)",
    "CREATE TABLE IF NOT EXISTS report_schema (version INTEGER NOT NULL)",
)
_COLUMNS = (
    "received_at", "source_ip", "header_from", "envelope_from", "envelope_to", "spf_domain",
    "spf_scope", "spf_result", "dkim", "dmarc_result", "dkim_aligned", "spf_aligned",
    "policy_domain", "discovery_method", "p", "sp", "np", "adkim", "aspf", "testing",
    "policy_applied", "disposition", "reasons",
)  # fmt: skip


_MARKS = ", ".join("?" for _ in (*_COLUMNS, "host"))
_SPOOL_DONE = "report_spool_done"  # the ids of the spooled files taken in (spool.take_in)


class StoreError(Exception):
    """A store that cannot be used: one line naming it (its password never shown)."""


def sqlite_path(url: str) -> Path:
    """Gives the database file of a ``sqlite:PATH`` store URL; raises StoreError otherwise."""
    scheme, _, rest = url.partition(":")
    if scheme == "sqlite" and rest.removeprefix("//"):
        return Path(rest.removeprefix("//"))
    raise StoreError(f"{redact_store_url(url)}: expected sqlite:PATH")


def refuse_symlink(path: Path) -> None:
    """Raises StoreError when the store file is a symlink, before SQLite opens what it names.

    The store's directory belongs to the mail user; root (suggest, dmarc-report)
    must never open the file such a link points at.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise StoreError(f"{path}: a symlink, refused (the store must be a regular file)")


def open_sqlite(url: str, schema: str, timeout: float = 5.0) -> sqlite3.Connection:
    """Gives a connection to the ``sqlite:PATH`` store, its directory and tables made.

    WAL, so that short-lived writers (pipe, learn) and a reader (a report, suggest)
    never wait on each other; autocommit, each writer opens its own transaction.
    Shared by the stores of authsieve (the learning store; the report store's
    SQLite backend adds a schema version and a lock around making its tables).
    """
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    refuse_symlink(path)
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


def _values(row: ReportRow, host: str) -> tuple[object, ...]:
    dkim = json.dumps([[d.domain, d.selector, d.result] for d in row.dkim])
    reasons = json.dumps([[r.type, r.comment] for r in row.reasons])
    d = row.to_dict()
    d.update(dkim=dkim, reasons=reasons, dkim_aligned=int(row.dkim_aligned))
    d["spf_aligned"] = int(row.spf_aligned)
    return (*(d[c] for c in _COLUMNS), host)


def _row(values: Sequence[object]) -> ReportRow:
    d: dict[str, Any] = dict(zip(_COLUMNS, tuple(values), strict=True))
    d["dkim"] = tuple(DkimEntry(*x) for x in json.loads(d["dkim"]))
    d["reasons"] = tuple(Override(*x) for x in json.loads(d["reasons"]))
    d["dkim_aligned"], d["spf_aligned"] = bool(d["dkim_aligned"]), bool(d["spf_aligned"])
    return ReportRow(**d)


class ReportStore:
    """One report store: `open` picks the backend from the URL (SQLite or PostgreSQL).

    The backends share the SQL below; each says how it marks a parameter, which
    column orders rows written in the same second, and how it makes its schema.
    """

    mark = "?"
    order = "rowid"

    def __init__(self, connection: Any, host: str = "") -> None:
        self.db = connection
        self.host = host  # written with every row: which MX saw the message

    @classmethod
    def open(cls, url: str, timeout: float = 30.0, host: str = "") -> ReportStore:
        """Gives the store at `url`, its schema made or brought up to date.

        `timeout` bounds the wait for a lock (SQLite) or for the connection and
        any one statement (PostgreSQL).  Raises StoreError for a store that
        cannot be opened.
        """
        kind = report_store_kind(url)
        if kind == "postgresql":
            from classifier.aggregate.store_pg import PostgresStore  # psycopg only when used

            return PostgresStore.connect(url, timeout, host)
        if kind is None:
            raise StoreError(
                f"{redact_store_url(url)}: expected sqlite:PATH or postgresql://…/DBNAME"
            )
        return SqliteStore.connect(url, timeout, host)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ReportStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sql(self, text: str) -> str:
        return text.replace("?", self.mark)

    def _transaction(self) -> AbstractContextManager[object]:
        raise NotImplementedError

    def ingest_spool(
        self, forget_before: int, limit: int | None = None, seconds: float | None = None
    ) -> int:
        """Moves spooled rows into the store (SQLite only: one-shot writers spool for it)."""
        return self.take_in_spool(forget_before, limit, seconds).added

    def take_in_spool(
        self, forget_before: int, limit: int | None = None, seconds: float | None = None
    ) -> Intake:
        """As `ingest_spool`, bounded (`spool.take_in`): says whether files are left."""
        return Intake(0, 0, False)

    def append(self, rows: Iterable[ReportRow]) -> int:
        """Appends rows in one transaction; gives how many."""
        values = [_values(r, self.host) for r in rows]
        insert = f"INSERT INTO report_rows ({', '.join(_COLUMNS)}, host) VALUES ({_MARKS})"
        with self._transaction():
            self.db.cursor().executemany(self._sql(insert), values)
        return len(values)

    def rows_between(self, begin: int, end: int) -> Iterator[ReportRow]:
        """Gives the rows received in [begin, end), oldest first, from every host."""
        cursor = self.db.execute(
            self._sql(
                f"SELECT {', '.join(_COLUMNS)} FROM report_rows"
                f" WHERE received_at >= ? AND received_at < ? ORDER BY received_at, {self.order}"
            ),
            (begin, end),
        )
        for values in cursor:
            yield _row(values)

    def hosts_between(self, begin: int, end: int) -> dict[str, int]:
        """Gives how many rows each host wrote in [begin, end), by host name."""
        cursor = self.db.execute(
            self._sql(
                "SELECT host, count(*) FROM report_rows"
                " WHERE received_at >= ? AND received_at < ? GROUP BY host ORDER BY host"
            ),
            (begin, end),
        )
        return {str(host): int(n) for host, n in cursor}

    def purge(self, before: int) -> int:
        """Deletes rows received before `before`; gives how many."""
        with self._transaction():
            cursor = self.db.execute(
                self._sql("DELETE FROM report_rows WHERE received_at < ?"), (before,)
            )
            return int(cursor.rowcount)


class SqliteStore(ReportStore):
    """The default store: one SQLite file in WAL mode, written by every local process."""

    db_file: Path

    @classmethod
    def connect(cls, url: str, timeout: float, host: str) -> SqliteStore:
        """Gives the open store; OSError or sqlite3.Error for a file we may not write."""
        path = sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        refuse_symlink(path)
        # serve's threads share the kept store, one at a time (_kept_lock)
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        store = cls(db, host)
        store.db_file = path
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if store._version() != SCHEMA_VERSION:
                store._make_schema()
        except BaseException:
            db.close()
            raise
        return store

    def _transaction(self) -> AbstractContextManager[object]:
        return immediate(self.db)

    def _version(self) -> int | None:
        try:
            found = self.db.execute("SELECT max(version) FROM report_schema").fetchone()
        except sqlite3.OperationalError:
            return None  # no such table: a new store, or one from before the version table
        return None if found[0] is None else int(found[0])

    def _make_schema(self) -> None:
        with self._transaction():
            version = self._version()  # again, under the lock: another process may have made it
            if version == SCHEMA_VERSION:
                return
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(_too_new(version))
            for statement in _SQLITE_SCHEMA:
                self.db.execute(statement)
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(report_rows)")}
            if "host" not in columns:  # a store written before report_host (schema 1)
                self.db.execute("ALTER TABLE report_rows ADD COLUMN host TEXT NOT NULL DEFAULT ''")
            self.db.execute("DELETE FROM report_schema")
            self.db.execute("INSERT INTO report_schema (version) VALUES (?)", (SCHEMA_VERSION,))

    def take_in_spool(
        self, forget_before: int, limit: int | None = None, seconds: float | None = None
    ) -> Intake:
        """Moves the rows one-shot writers spooled (`spool`) into the store.

        Each file counts once (`spool.take_in`), at most `limit` files for at most
        `seconds`; ids ingested before `forget_before` are forgotten.  Raises
        OSError or sqlite3.Error; a refused file is logged and removed.
        """
        insert = f"INSERT INTO report_rows ({', '.join(_COLUMNS)}, host) VALUES ({_MARKS})"
        return take_in(
            self.db, spool_dir(self.db_file), len(_COLUMNS) + 1, _SPOOL_DONE, insert,
            forget_before, first=(), limit=limit, seconds=seconds,
        )  # fmt: skip


def _too_new(version: int) -> str:
    return f"schema version {version} is newer than this authsieve's ({SCHEMA_VERSION}): upgrade"


# One open store per process, reused by the next delivery (serve's threads, the watcher):
# a PostgreSQL connection costs milliseconds, an insert a fraction of one.
_kept: dict[tuple[str, str, int], ReportStore] = {}
_kept_lock = threading.Lock()


def _drop_kept() -> None:
    for (_, _, pid), store in _kept.items():
        if pid == os.getpid():  # a connection inherited over fork() is the parent's to close
            with suppress(Exception):
                store.close()
    _kept.clear()


def _line(url: str, exc: BaseException) -> str:
    """Gives the first line of an error, without the store URL it may begin with."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first.removeprefix(f"{redact_store_url(url)}: ").removeprefix(f"{url}: ")


def _write(
    url: str, host: str, rows: tuple[ReportRow, ...], purge_before: int | None, forget_before: int
) -> None:
    """Appends through the kept store; with purge_before (hourly) purges, and takes the
    spool in in a thread of its own (never on a delivery's path: a backlog may be large)."""
    key = (url, host, os.getpid())
    with _kept_lock:
        store = _kept.get(key)
        if store is not None:
            try:
                store.append(rows)
            except (OSError, sqlite3.Error, StoreError):
                store = None  # a kept connection the server has since closed: once more, anew
        if store is None:
            _drop_kept()
            store = ReportStore.open(url, timeout=WRITE_TIMEOUT, host=host)
            _kept[key] = store
            try:
                store.append(rows)
            except (OSError, sqlite3.Error, StoreError) as exc:
                _drop_kept()
                raise StoreError(str(exc)) from None
        if purge_before is not None:
            try:
                store.purge(purge_before)
            except (OSError, sqlite3.Error, StoreError) as exc:  # the rows are in: not again
                shown = redact_store_url(url)
                log.warning("report store %s: old rows not purged: %s", shown, _line(url, exc))
    if url.startswith("sqlite:"):  # what pipe processes left (spool.py)
        in_background(("reports", url), lambda: _take_in_quietly(url, host, forget_before))


def _take_in_quietly(url: str, host: str, forget_before: int) -> bool:
    """Takes the spool in, bounded, on a connection of its own; gives whether files are left."""
    try:
        with ReportStore.open(url, timeout=WRITE_TIMEOUT, host=host) as store:
            return store.take_in_spool(forget_before, BACKGROUND_LIMIT, BACKGROUND_SECONDS).left
    except (OSError, sqlite3.Error, StoreError) as exc:
        log.warning(
            "report store %s: spool not taken in: %s", redact_store_url(url), _line(url, exc)
        )
    return False


def _spool(url: str, host: str, rows: tuple[ReportRow, ...]) -> None:
    spool_rows(spool_dir(sqlite_path(url)), [_values(r, host) for r in rows])


def record_rows(
    reports: ReportsConfig,
    rows: tuple[ReportRow, ...],
    now: float | None = None,
    one_shot: bool = False,
) -> bool:
    """Appends rows to the configured store; gives whether they were written.

    `one_shot`: the process records one message and exits (pipe, filter); with
    a SQLite store the rows go to its spool (spool.py), which costs a file
    instead of a WAL's making and checkpoint.  Never raises: a store that
    cannot be opened or written is logged and the rows are dropped, so the
    delivery goes on (issue 16: reports are best effort).
    """
    url = reports.store
    if not rows:
        return False
    now = time.time() if now is None else now
    try:
        if one_shot and url.startswith("sqlite:"):
            _spool(url, reports.host, rows)
            return True
        purge_before = None
        if now - _last_purge.get(url, 0.0) >= _PURGE_EVERY:
            _last_purge[url] = now
            purge_before = int(now - retention_seconds(reports))
        _write(url, reports.host, rows, purge_before, int(now - retention_seconds(reports)))
        return True
    except (OSError, sqlite3.Error, StoreError, ValueError) as exc:
        shown = redact_store_url(url)
        # a file (or the spool beside it) we cannot write: who must own what
        hint = f"; {store_hint(sqlite_path(url))}" if url.startswith("sqlite:") else ""
        log.warning(
            "report store %s not written, %d row(s) skipped: %s%s",
            shown,
            len(rows),
            _line(url, exc),
            hint,
        )
        return False


def retention_seconds(reports: ReportsConfig) -> float:
    """Gives how long rows are kept, in seconds."""
    return reports.retention_days * 86400


def record_delivery(
    reports: ReportsConfig,
    evaluation: Evaluation,
    now: float | None = None,
    one_shot: bool = False,
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
    return record_rows(reports, rows, now, one_shot)


def recorder(
    reports: ReportsConfig | None, one_shot: bool = False
) -> Callable[[Evaluation], bool] | None:
    """Gives what records a delivered message's rows into the [reports] store, or None when off.

    `one_shot`: for a process that records one message and exits (record_rows).
    """
    if reports is None:
        return None
    return functools.partial(record_delivery, reports, one_shot=one_shot)
