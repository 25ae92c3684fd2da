"""The PostgreSQL report store: several MX write rows, one `dmarc-report` reads them all.

psycopg (3) is imported here only, and this module only when the configured
store is a ``postgresql://`` URL: a pipe process with the SQLite store, or
without [reports], never pays for it (issue 15).  Every psycopg error becomes a
`StoreError` whose text carries no password.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from classifier.aggregate.store import SCHEMA_VERSION, ReportStore, StoreError, _too_new
from classifier.config import redact_store_url

# Any constant would do: it keeps two hosts that open a new store at once from both
# creating the table (CREATE ... IF NOT EXISTS is not safe against a concurrent twin).
_SCHEMA_LOCK = 0x61757468_7369  # "authsi"
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS report_rows (
    id BIGINT GENERATED ALWAYS AS IDENTITY,
    received_at BIGINT NOT NULL,
    source_ip TEXT NOT NULL,
    header_from TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    envelope_to TEXT NOT NULL,
    spf_domain TEXT NOT NULL,
    spf_scope TEXT NOT NULL,
    spf_result TEXT NOT NULL,
    dkim TEXT NOT NULL,
    dmarc_result TEXT NOT NULL,
    dkim_aligned SMALLINT NOT NULL,
    spf_aligned SMALLINT NOT NULL,
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
    "ALTER TABLE report_rows ADD COLUMN IF NOT EXISTS host TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX IF NOT EXISTS report_rows_time ON report_rows (received_at, policy_domain)",
    "CREATE TABLE IF NOT EXISTS report_schema (version INTEGER NOT NULL)",
)


def _message(url: str, exc: BaseException) -> str:
    """Gives one line for a psycopg error, without the URL's password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in _passwords(url):
        text = text.replace(secret, "***")
    return f"{redact_store_url(url)}: {text}"


def _passwords(url: str) -> list[str]:
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return []
    secret = params.get("password")
    return [str(secret)] if secret else []


class PostgresStore(ReportStore):
    """A report store in a PostgreSQL database, reached by a libpq connection URI."""

    mark = "%s"
    order = "id"

    @classmethod
    def connect(cls, url: str, timeout: float, host: str) -> PostgresStore:
        millis = max(1, int(timeout * 1000))
        try:
            db = psycopg.connect(
                url,
                autocommit=True,
                # libpq's floor is 2 s; a refused or missing socket fails at once.
                connect_timeout=max(2, math.ceil(timeout)),
                application_name="authsieve",
                # Rows are best effort: a commit need not wait for the server's WAL flush.
                options=f"-c statement_timeout={millis} -c lock_timeout={millis}"
                " -c synchronous_commit=off",
            )
        except (psycopg.Error, ValueError) as exc:
            raise StoreError(_message(url, exc)) from None
        store = cls(db, host)
        store.url = url
        try:
            if store._version() != SCHEMA_VERSION:
                store._make_schema()
        except psycopg.Error as exc:
            db.close()
            raise StoreError(_message(url, exc)) from None
        except StoreError:
            db.close()
            raise
        return store

    url = ""

    @contextmanager
    def _transaction(self) -> Iterator[object]:
        try:
            with self.db.transaction():
                yield self.db
        except psycopg.Error as exc:
            raise StoreError(_message(self.url, exc)) from None

    def rows_between(self, begin: int, end: int) -> Iterator[Any]:
        try:
            yield from super().rows_between(begin, end)
        except psycopg.Error as exc:
            raise StoreError(_message(self.url, exc)) from None

    def hosts_between(self, begin: int, end: int) -> dict[str, int]:
        try:
            return super().hosts_between(begin, end)
        except psycopg.Error as exc:
            raise StoreError(_message(self.url, exc)) from None

    def close(self) -> None:
        try:
            self.db.close()
        except psycopg.Error as exc:
            raise StoreError(_message(self.url, exc)) from None

    def _version(self) -> int | None:
        try:
            found = self.db.execute("SELECT max(version) FROM report_schema").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return None if found is None or found[0] is None else int(found[0])

    def _make_schema(self) -> None:
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            exists = self.db.execute("SELECT to_regclass('report_schema')").fetchone()
            version = None
            if exists and exists[0] is not None:
                found = self.db.execute("SELECT max(version) FROM report_schema").fetchone()
                version = None if found is None or found[0] is None else int(found[0])
            if version == SCHEMA_VERSION:
                return
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(f"{redact_store_url(self.url)}: {_too_new(version)}")
            for statement in _SCHEMA:
                self.db.execute(statement)
            self.db.execute("DELETE FROM report_schema")
            self.db.execute("INSERT INTO report_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
