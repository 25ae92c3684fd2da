"""Delivery records: what authsieve found about each message it delivered, for `learn` (issue 17).

With ``[learn]`` on, every delivery (pipe, serve, the watcher, the LMTP filter:
the one step `classifier.evaluate.check_and_annotate`) gets a random delivery
id, written into our X-Authsieve as ``delivery=…``, and a row here under that
id with the facts and the recipient.  `authsieve learn` takes the id from
the moved message and believes only the row: the mailbox is the user's to
write (IMAP APPEND), so no header in it is evidence of what delivery found.

The rows live in the learning store's SQLite file (``[learn] store``): the
delivery paths and `learn` run as the same mail user.  Writing a row never
delays or fails a delivery: it waits at most `WRITE_TIMEOUT` for the lock,
and a store that cannot be written is logged and skipped (as the report store).
A one-shot process (pipe, filter) spools its row instead, as it does its
report rows (`classifier.aggregate.spool`, ``<store>.spool/``): `learn` takes
the spool in before it looks a delivery up, as do `suggest` and, hourly, the
processes that deliver many messages (serve, the watcher).
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from classifier.aggregate.spool import ingest, spool_dir, spool_rows
from classifier.aggregate.store import WRITE_TIMEOUT, StoreError, open_sqlite, sqlite_path
from classifier.auth.facts import safe_domain
from classifier.config import LearnConfig
from classifier.log import log, log_value
from classifier.message import Message
from classifier.policies import normalize_user

if TYPE_CHECKING:
    from classifier.evaluate import Evaluation

_RULE = re.compile(r"\(([a-z_]+) = (?:junk|quarantine)\)")
_ID = re.compile(r"^[a-z2-7]{20}$")
_INGEST_EVERY = 3600.0  # seconds: how often serve and the watcher take the spool in
_last_ingest: dict[str, float] = {}


def valid_delivery_id(text: str) -> bool:
    """Tells whether text has the form of `classifier.evaluate.new_delivery_id`'s ids."""
    return bool(_ID.match(text))


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivered message: the facts found at delivery, and whom it was delivered to."""

    id: str
    at: int  # seconds since the epoch
    user: str  # the recipient, normalised ("" when unknown)
    message_id: str  # sender-written: shown to the admin (escaped), never trusted
    verdict: str  # inbox | junk | quarantine
    rules: tuple[str, ...]  # the policy keys that filed it (spf_fail, blocked_action, …)
    reasons: str
    spf: str
    dkim: str
    dmarc: str
    from_auth: bool
    forwarded: bool
    allowed: bool
    from_address: str
    from_domain: str
    mailfrom: str
    mailfrom_domain: str
    client_ip: str
    client_rdns: str
    client_helo: str
    spf_hop: str  # the client whose SPF failed: reverse name, else IP ("" when SPF did not fail)
    dkim_domains: tuple[str, ...]  # d= of every passing DKIM signature
    arc_sealers: tuple[str, ...]  # sealers of a passing ARC chain

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        for name in _LISTS:
            d[name] = list(d[name])
        return d


COLUMNS = tuple(f.name for f in fields(DeliveryRecord))  # as stored, in this order
_LISTS = ("rules", "dkim_domains", "arc_sealers")
_FLAGS = ("from_auth", "forwarded", "allowed")


def column_type(name: str) -> str:
    """Gives the SQL type of a record's column (lists are JSON text, flags 0 or 1)."""
    return "INTEGER" if name in ("at", *_FLAGS) else "TEXT"


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS deliveries ("
    + ", ".join(
        f"{c} {column_type(c)} NOT NULL" + (" PRIMARY KEY" if c == "id" else "") for c in COLUMNS
    )
    + ");\nCREATE INDEX IF NOT EXISTS deliveries_at ON deliveries (at);\n"
)


def message_id_in(data: bytes) -> str:
    """Gives the Message-ID of the message's header block, on one line, or ""."""
    end = min((i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0), default=-1)
    head = Message.parse(data[: end + 2] if end >= 0 else data[:65536])
    return " ".join((head.get("Message-ID") or "").split())[:300]


def record_of(
    result: Evaluation, delivery_id: str, user: str, now: int, message_id: str = ""
) -> DeliveryRecord:
    """Gives the delivery record of an evaluated message (a pure function of the evaluation)."""
    report, facts, verdict = result.report, result.facts, result.verdict
    env = report.envelope
    reasons = "; ".join(verdict.reasons)
    hop = (env.rdns or env.client_ip or "") if facts.spf in ("fail", "softfail") else ""
    return DeliveryRecord(
        id=delivery_id,
        at=now,
        user=normalize_user(user),
        message_id=message_id,
        verdict=verdict.action,
        rules=tuple(dict.fromkeys(_RULE.findall(reasons))),
        reasons=reasons[:1000],
        spf=facts.spf,
        dkim=facts.dkim,
        dmarc=facts.dmarc,
        from_auth=facts.from_authenticated,
        forwarded=bool(facts.forwarded_by),
        allowed=bool(verdict.allowed),
        from_address=facts.from_address.lower()[:300],
        from_domain=safe_domain(facts.from_domain),
        mailfrom=(env.mail_from or "").lower()[:300],
        mailfrom_domain=safe_domain(facts.mailfrom_domain),
        client_ip=env.client_ip or "",
        client_rdns=safe_domain(env.rdns or ""),
        client_helo=(env.helo or "")[:255],
        spf_hop=safe_domain(hop) or (env.client_ip or "" if hop else ""),
        dkim_domains=tuple(
            sorted({d for s in report.dkim if s.result == "pass" if (d := safe_domain(s.domain))})
        ),
        arc_sealers=tuple(sorted(set(facts.arc_sealers))) if facts.arc == "pass" else (),
    )


def values_of(record: DeliveryRecord) -> tuple[object, ...]:
    """Gives the record's column values (`COLUMNS`), as stored and spooled."""
    d = record.to_dict()
    for name in _LISTS:
        d[name] = json.dumps(d[name])
    for name in _FLAGS:
        d[name] = int(bool(d[name]))
    return tuple(d[c] for c in COLUMNS)


def record_from(values: sqlite3.Row | tuple[object, ...]) -> DeliveryRecord:
    """Gives the record of stored column values (`COLUMNS`)."""
    d: dict[str, object] = dict(zip(COLUMNS, tuple(values), strict=True))
    for name in _LISTS:
        d[name] = tuple(json.loads(str(d[name])))
    for name in _FLAGS:
        d[name] = bool(d[name])
    return DeliveryRecord(**d)  # type: ignore[arg-type]


def _spoolable(values: tuple[object, ...]) -> bool:
    """Tells whether spooled values are a delivery record as `values_of` writes one."""
    d = dict(zip(COLUMNS, values, strict=True))
    try:
        lists = [json.loads(str(d[name])) for name in _LISTS]
    except ValueError:
        return False
    return (
        valid_delivery_id(str(d["id"]))
        and all(type(d[name]) is int for name in ("at", *_FLAGS))
        and all(isinstance(d[c], str) for c in COLUMNS if c not in ("at", *_FLAGS, *_LISTS))
        and all(isinstance(x, list) and all(isinstance(v, str) for v in x) for x in lists)
    )


class DeliveryStore:
    """The deliveries table of the learning store."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    @classmethod
    def open(cls, url: str, timeout: float = 5.0) -> DeliveryStore:
        return cls(open_sqlite(url, SCHEMA, timeout), sqlite_path(url))

    def __enter__(self) -> DeliveryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()

    def add(self, record: DeliveryRecord) -> None:
        marks = ", ".join("?" for _ in COLUMNS)
        with self.db:
            self.db.execute(
                f"INSERT OR IGNORE INTO deliveries ({', '.join(COLUMNS)}) VALUES ({marks})",
                values_of(record),
            )

    def get(self, delivery_id: str) -> DeliveryRecord | None:
        row = self.db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        return record_from(row) if row else None

    def records(self, since: int = 0) -> Iterator[DeliveryRecord]:
        cursor = self.db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM deliveries WHERE at >= ? ORDER BY at, id", (since,)
        )
        for values in cursor:
            yield record_from(values)

    def purge(self, before: int) -> int:
        with self.db:
            return self.db.execute("DELETE FROM deliveries WHERE at < ?", (before,)).rowcount

    def ingest_spool(self, forget_before: int) -> int:
        """Takes in the records one-shot processes spooled; gives how many.

        Each file counts once, and a record whose id is here already is not
        replaced.  Raises OSError (a spool refused as a whole) or sqlite3.Error.
        """
        insert = (
            f"INSERT OR IGNORE INTO deliveries ({', '.join(COLUMNS)})"
            f" VALUES ({', '.join('?' for _ in COLUMNS)})"
        )
        return ingest(
            self.db, spool_dir(self.path), len(COLUMNS), "deliveries_spool_done", insert,
            forget_before, _spoolable,
        )  # fmt: skip


def record_delivery(
    learn: LearnConfig,
    result: Evaluation,
    delivery_id: str,
    user: str,
    data: bytes,
    one_shot: bool = False,
) -> bool:
    """Records one delivery; gives False (logged) when the store could not be written.

    `one_shot`: the process records one message and exits (pipe, filter): the
    record goes to the store's spool, a file instead of a WAL's making and checkpoint.
    """
    url = learn.store
    try:
        now = int(time.time())
        record = record_of(result, delivery_id, user, now, message_id_in(data))
        if one_shot:
            spool_rows(spool_dir(sqlite_path(url)), [values_of(record)])
            return True
        with DeliveryStore.open(url, WRITE_TIMEOUT) as store:
            store.add(record)
            if now - _last_ingest.get(url, 0.0) >= _INGEST_EVERY:
                _last_ingest[url] = now
                _ingest_quietly(store, url, int(now - retention_seconds(learn)))
        return True
    except (OSError, sqlite3.Error, StoreError) as exc:
        log.warning(
            "learn store %s: delivery %s not recorded: %s (the store must be writable by the"
            " user authsieve delivers as; README: Learning from users' moves)",
            log_value(url), delivery_id, log_value(str(exc)),
        )  # fmt: skip
    except Exception:  # never fail a delivery on a bug here
        log.exception("learn store %s: delivery %s not recorded", log_value(url), delivery_id)
    return False


def retention_seconds(learn: LearnConfig) -> float:
    """Gives how long records, moves and spooled ids are kept ([learn] retention_days), in s."""
    return learn.retention_days * 86400


def _ingest_quietly(store: DeliveryStore, url: str, forget_before: int) -> None:
    """Takes the spool in; what fails is logged (this delivery's record is in already)."""
    try:
        store.ingest_spool(forget_before)
    except (OSError, sqlite3.Error) as exc:
        log.warning("learn store %s: spool not taken in: %s", log_value(url), log_value(str(exc)))


def delivery_recorder(
    learn: LearnConfig | None, one_shot: bool = False
) -> Callable[[Evaluation, str, str, bytes], bool] | None:
    """Gives the delivery-record hook of `check_and_annotate`, or None when [learn] is off.

    `one_shot`: for a process that records one message and exits (record_delivery).
    """
    if learn is None:
        return None
    return functools.partial(record_delivery, learn, one_shot=one_shot)
