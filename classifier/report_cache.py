"""What a report needs to know about each message, cached in SQLite so a later run asks no DNS.

A report judges the same messages under several policies.  The checks (and so
every DNS query) depend only on the message bytes and the ``[classifier]``
settings that shape the trust path; the verdict depends on the policy.  So the
cache holds one `CheckRecord` per message, keyed by Message-ID, the SHA-256 of
its bytes and a fingerprint of those settings, and each policy is only a
`classifier.verdict.decide` over the record.

``AuthFacts.arc_trusted`` depends on a policy's ``trusted_arc_sealers``: the
record keeps it as computed with no trusted sealer, and `with_arc_trust`
recomputes it per policy from the cached sealers.

The cache lives under ``$XDG_CACHE_HOME/authsieve/`` (``~/.cache/authsieve/``
when unset); it is a cache: a file of another schema version is emptied.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, replace
from email.header import decode_header, make_header
from pathlib import Path

from classifier.checks import CheckReport, facts_from
from classifier.config import Settings
from classifier.facts import AuthFacts
from classifier.message import Message

SCHEMA_VERSION = 1
CACHE_NAME = "report.sqlite3"
_COMMIT_EVERY = 500
_TEMP_CHECKS = ("spf", "helo_spf", "dkim", "arc", "dmarc")


class CacheError(Exception):
    """The cache file cannot be opened or is not an authsieve cache."""


def display_text(value: str | None, limit: int = 200) -> str:
    """Gives a header value as a person reads it: RFC 2047 words decoded, one printable line."""
    if not value:
        return ""
    raw = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        text = str(make_header(decode_header(raw)))
    except Exception:  # RFC 2047 decoding raises on malformed words: show them as written
        text = raw
    # Control characters from a sender must never reach a terminal (escape sequences).
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())[:limit]


@dataclass(frozen=True)
class CheckRecord:
    """One message's check results and the header fields a report shows, policy-independent."""

    message_id: str
    subject: str
    from_header: str  # the From field as a person reads it
    date: str  # the Date field as written
    list_id: str  # List-Id (RFC 2919), "" when absent
    rcpt: str  # the recipient whose policy decides
    client_ip: str
    client_name: str  # the reverse DNS name our server recorded, else the HELO name
    facts: AuthFacts  # arc_trusted as for no trusted sealer: see with_arc_trust
    dkim: tuple[tuple[str, str], ...]  # (result, d=) of every signature, top first
    dns_queries: int

    @property
    def temperror(self) -> bool:
        """Tells whether any check failed temporarily (a DNS timeout or SERVFAIL)."""
        facts = self.facts
        return any(getattr(facts, n) == "temperror" for n in _TEMP_CHECKS) or any(
            r == "temperror" for r, _ in self.dkim
        )

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["facts"] = self.facts.to_dict()
        d["dkim"] = [list(p) for p in self.dkim]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> CheckRecord:
        """Gives the record back from `to_dict` output (raises KeyError/TypeError when foreign)."""
        facts = dict(d["facts"])  # type: ignore[call-overload]
        facts["arc_sealers"] = tuple(facts.get("arc_sealers", ()))
        values = {**d, "facts": AuthFacts(**facts)}
        values["dkim"] = tuple((str(r), str(dom)) for r, dom in d["dkim"])  # type: ignore[attr-defined]
        return cls(**values)  # type: ignore[arg-type]


def record_from(report: CheckReport, message: Message) -> CheckRecord:
    """Gives the record of one checked message (the facts as `classifier.checks.facts_from`)."""
    env = report.envelope
    return CheckRecord(
        message_id=(message.get("Message-ID") or "").strip(),
        subject=display_text(message.get("Subject")),
        from_header=display_text(message.get("From")),
        date=display_text(message.get("Date"), 80),
        list_id=display_text(message.get("List-Id"), 120),
        rcpt=(env.rcpt or "").lower(),
        client_ip=env.client_ip or "",
        client_name=(env.rdns or env.helo or "").rstrip(".").lower(),
        facts=facts_from(report, ()),
        dkim=tuple((d.result, d.domain) for d in report.dkim),
        dns_queries=report.dns_queries,
    )


def with_arc_trust(facts: AuthFacts, trusted_arc_sealers: tuple[str, ...]) -> AuthFacts:
    """Gives the facts with arc_trusted for these sealers, as `facts_from` computes it.

    RFC 8617 §9.4: the oldest results are only as good as every sealer that
    carried them, so every sealer of a passing chain must be trusted.
    """
    trusted = {s.lower().rstrip(".") for s in trusted_arc_sealers}
    ok = (
        facts.arc == "pass"
        and bool(facts.arc_sealers)
        and all(s in trusted for s in facts.arc_sealers)
    )
    return facts if ok == facts.arc_trusted else replace(facts, arc_trusted=ok)


def message_key(data: bytes, message: Message) -> tuple[str, str]:
    """Gives (Message-ID, SHA-256 of the bytes): the identity of a message in the cache."""
    return (message.get("Message-ID") or "").strip(), hashlib.sha256(data).hexdigest()


def checks_fingerprint(settings: Settings) -> str:
    """Gives a short digest of the settings that change check results (trust path, DMARC mode)."""
    shape = {
        "schema": SCHEMA_VERSION,
        "authserv_id": settings.authserv_id.lower(),
        "trusted_networks": sorted(str(n) for n in settings.trusted_networks),
        "trusted_forwarders": sorted(str(f) for f in settings.trusted_forwarders),
        "dmarc_mode": settings.dmarc_mode,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:20]


def default_cache_path(environ: dict[str, str] | None = None) -> Path:
    """Gives $XDG_CACHE_HOME/authsieve/report.sqlite3 (XDG Base Directory: absolute paths only)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "authsieve" / CACHE_NAME


class ReportCache:
    """CheckRecords in one SQLite file; use from one thread (the scan's main thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.hits = 0
        self._pending = 0
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(self.path)
            self._prepare()
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(f"{self.path}: cannot use as report cache: {exc}") from None

    def _prepare(self) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            db.execute("DROP TABLE IF EXISTS checks")
        db.execute(
            "CREATE TABLE IF NOT EXISTS checks ("
            " message_id TEXT NOT NULL, sha256 TEXT NOT NULL, settings TEXT NOT NULL,"
            " checked REAL NOT NULL, temperror INTEGER NOT NULL, record TEXT NOT NULL,"
            " PRIMARY KEY (message_id, sha256, settings)) WITHOUT ROWID"
        )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.commit()

    def get(self, message_id: str, digest: str, settings: str) -> CheckRecord | None:
        """Gives the cached record of this message under these settings, or None."""
        row = self._db.execute(
            "SELECT record FROM checks WHERE message_id = ? AND sha256 = ? AND settings = ?",
            (message_id, digest, settings),
        ).fetchone()
        if row is None:
            return None
        try:
            record = CheckRecord.from_dict(json.loads(row[0]))
        except (ValueError, KeyError, TypeError):
            return None  # written by another version: check again
        self.hits += 1
        return record

    def put(self, message_id: str, digest: str, settings: str, record: CheckRecord) -> None:
        """Stores (or replaces) a record; committed in batches and by `close`."""
        self._db.execute(
            "INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?, ?)",
            (
                message_id,
                digest,
                settings,
                time.time(),
                int(record.temperror),
                json.dumps(record.to_dict(), ensure_ascii=True, separators=(",", ":")),
            ),
        )
        self._pending += 1
        if self._pending >= _COMMIT_EVERY:
            self.flush()

    def flush(self) -> None:
        """Commits what `put` stored."""
        self._db.commit()
        self._pending = 0

    def close(self) -> None:
        """Commits and closes the file."""
        self.flush()
        self._db.close()
