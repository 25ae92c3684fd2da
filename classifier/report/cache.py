"""What a report needs to know about each message: checked in parallel, then cached in SQLite.

A report judges the same messages under several policies.  The checks (and so
every DNS query) depend only on the message bytes and the ``[classifier]``
settings that shape the trust path; the verdict depends on the policy.  So the
cache holds one `CheckRecord` per message, keyed by Message-ID, the SHA-256 of
its bytes and a fingerprint of those settings, and each policy is only a
`classifier.policy.verdict.decide` over the record.

``AuthFacts.arc_trusted`` depends on a policy's ``trusted_arc_sealers``: the
record keeps it as computed with no trusted sealer, and `with_arc_trust`
recomputes it per policy from the cached sealers.

The cache lives under ``$XDG_CACHE_HOME/authsieve/`` (``~/.cache/authsieve/``
when unset); it is a cache: a file of another schema version is emptied.
`scan` fills it: messages not in it are checked in a thread pool sharing one
`Resolver` and so one DNS cache (DNS waits release the GIL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classifier.auth.facts import (
    HEADER_NAME,
    RELEASED_HEADER,
    AuthFacts,
    parse_header_value,
    safe_domain,
)
from classifier.config import Settings
from classifier.display import display_text
from classifier.errors import UsageError
from classifier.lookup.resolver import Resolver
from classifier.message import Message
from classifier.trusted import TrustMatcher

if TYPE_CHECKING:
    from classifier.auth.checks import CheckReport

SCHEMA_VERSION = 3  # 3: CheckRecord.delivery
CACHE_NAME = "report.sqlite3"
_COMMIT_EVERY = 500
_BATCH = 500  # keys per SELECT
_HEADER_WINDOW = 65_536  # a header block is read from the first 64 KiB only
_TEMP_CHECKS = ("spf", "helo_spf", "dkim", "arc", "dmarc")


class CacheError(UsageError):
    """The cache file cannot be opened or is not an authsieve cache (exit 2)."""


@dataclass(frozen=True, kw_only=True)
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
    # How the file came to be where it is: "enforce" or "observe" (our X-Authsieve's mode),
    # "released" (X-Authsieve-Released: a person took it out of quarantine), "" (authsieve
    # never filed it: the watcher missed it, or it predates authsieve).
    delivery: str = ""

    @property
    def placed_by_a_person(self) -> bool:
        """Tells whether where the message is now is a person's choice, not only authsieve's.

        Filed in enforce mode, the message was where the policy put it and a
        person left it there or moved it; a release is a person's act.  Observe
        mode delivers everything to the inbox, and mail authsieve never filed
        was judged by nobody.
        """
        return self.delivery in ("enforce", "released")

    @property
    def temperror(self) -> bool:
        """Tells whether any check failed temporarily (a DNS timeout or SERVFAIL)."""
        facts = self.facts
        return any(getattr(facts, n) == "temperror" for n in _TEMP_CHECKS) or any(
            r == "temperror" for r, _ in self.dkim
        )

    def to_dict(self) -> dict[str, object]:
        # Field by field rather than dataclasses.asdict: the cache writes one per message.
        facts = self.facts
        d: dict[str, object] = {k: getattr(self, k) for k in _TEXT_FIELDS}
        d["facts"] = {**facts.__dict__, "arc_sealers": list(facts.arc_sealers)}
        d["dkim"] = [list(p) for p in self.dkim]
        d["dns_queries"] = self.dns_queries
        d["delivery"] = self.delivery
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckRecord:
        """Gives the record back from `to_dict` output (raises KeyError/TypeError when foreign)."""
        facts = {**d["facts"], "arc_sealers": tuple(d["facts"].get("arc_sealers", ()))}
        return cls(
            **{k: d[k] for k in _TEXT_FIELDS},
            facts=AuthFacts(**facts),
            dkim=tuple((str(r), str(dom)) for r, dom in d["dkim"]),
            dns_queries=int(d["dns_queries"]),
            delivery=str(d["delivery"]),
        )


_TEXT_FIELDS = (
    "message_id",
    "subject",
    "from_header",
    "date",
    "list_id",
    "rcpt",
    "client_ip",
    "client_name",
)


def _json(record: CheckRecord) -> str:
    return json.dumps(record.to_dict(), ensure_ascii=True, separators=(",", ":"))


def delivery_of(message: Message, authserv_id: str) -> str:
    """Gives how authsieve filed message (`CheckRecord.delivery`), from the headers it wrote.

    Only the topmost X-Authsieve counts, and only with our id= (RFC 8601 §5:
    a copy the sender wrote is renamed at delivery, or was never ours).
    """
    ours = parse_header_value(message.get(HEADER_NAME) or "")
    if ours.get("v") != "1" or ours.get("id", "").lower() != (
        safe_domain(authserv_id) or "localhost"
    ):
        return ""
    if message.get(RELEASED_HEADER) is not None:
        return "released"
    return "observe" if ours.get("mode") == "observe" else "enforce"


def record_from(report: CheckReport, message: Message, authserv_id: str) -> CheckRecord:
    """Gives the record of one checked message (the facts as `checks.facts_from` makes them)."""
    from classifier.auth.checks import facts_from

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
        delivery=delivery_of(message, authserv_id),
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


def message_key(data: bytes) -> tuple[str, str]:
    """Gives (Message-ID, SHA-256 of the bytes): the identity of a message in the cache.

    The Message-ID is the first line of the first such field of the header
    block, lower-cased: the key must be cheap and stable, and the hash alone
    already tells messages apart.
    """
    window = data[:_HEADER_WINDOW]
    ends = [i for i in (window.find(b"\n\r\n"), window.find(b"\n\n")) if i >= 0]
    head = b"\n" + window[: min(ends)].lower() if ends else b"\n" + window.lower()
    at = head.find(b"\nmessage-id:")
    mid = b""
    if at >= 0:
        stop = head.find(b"\n", at + 1)
        mid = head[at + 12 : stop if stop >= 0 else len(head)].strip()
    return mid.decode("utf-8", "replace"), hashlib.sha256(data).hexdigest()


def checks_fingerprint(settings: Settings, trust: TrustMatcher) -> str:
    """Gives a short digest of the settings that change check results (trust path, DMARC mode)."""
    shape = {
        "schema": SCHEMA_VERSION,
        "authserv_id": settings.authserv_id.lower(),
        "trusted_networks": sorted(str(n) for n in trust.networks),
        "trusted_forwarders": sorted(str(f) for f in trust.forwarders),
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
        # A cache may lose its last writes on a power cut, never its consistency: WAL keeps
        # commits cheap (no fsync each) on a file of tens of megabytes.
        if self.path != ":memory:":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            db.execute("DROP TABLE IF EXISTS checks")
        db.execute(
            "CREATE TABLE IF NOT EXISTS checks ("
            " message_id TEXT NOT NULL, sha256 TEXT NOT NULL, settings TEXT NOT NULL,"
            " checked REAL NOT NULL, temperror INTEGER NOT NULL, record TEXT NOT NULL,"
            " PRIMARY KEY (sha256, settings, message_id))"
        )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.commit()

    def get(self, message_id: str, digest: str, settings: str) -> CheckRecord | None:
        """Gives the cached record of this message under these settings, or None."""
        return self.get_many([(message_id, digest)], settings).get((message_id, digest))

    def get_many(
        self, keys: Sequence[tuple[str, str]], settings: str
    ) -> dict[tuple[str, str], CheckRecord]:
        """Gives the cached records of these (Message-ID, SHA-256) keys under these settings."""
        found: dict[tuple[str, str], CheckRecord] = {}
        wanted = set(keys)
        for start in range(0, len(keys), _BATCH):
            digests = [digest for _, digest in keys[start : start + _BATCH]]
            rows = self._db.execute(
                "SELECT message_id, sha256, record FROM checks WHERE settings = ? AND sha256 IN"
                f" ({','.join('?' * len(digests))})",
                (settings, *digests),
            )
            for mid, digest, text in rows:
                if (mid, digest) not in wanted:
                    continue
                try:
                    found[(mid, digest)] = CheckRecord.from_dict(json.loads(text))
                except (ValueError, KeyError, TypeError):
                    continue  # written by another version: check again
        self.hits += len(found)
        return found

    def put(self, message_id: str, digest: str, settings: str, record: CheckRecord) -> None:
        """Stores (or replaces) one record; committed in batches and by `flush`."""
        self.put_many([(message_id, digest, settings, record)])

    def put_many(self, rows: Sequence[tuple[str, str, str, CheckRecord]]) -> None:
        """Stores (or replaces) records; committed in batches and by `flush`."""
        now = time.time()
        self._db.executemany(
            "INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?, ?)",
            (
                (mid, digest, settings, now, int(record.temperror), _json(record))
                for mid, digest, settings, record in rows
            ),
        )
        self._pending += len(rows)
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


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """Gives a function that advances a rich progress bar on stderr (a no-op when disabled)."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("scan", total=total)
        yield lambda: bar.advance(task)


def check_record(
    path: Path, settings: Settings, trust: TrustMatcher, resolver: Resolver
) -> CheckRecord:
    """Gives the check record of one message file (runs in a worker thread)."""
    from classifier.auth.checks import run_checks

    data = path.read_bytes()
    report = run_checks(data, settings, resolver, trust=trust)
    # The message the checks parsed, not cut up again.
    message = report.message or Message.parse(data)
    return record_from(report, message, settings.authserv_id)


def scan(
    paths: Sequence[Path],
    settings: Settings,
    trust: TrustMatcher,
    resolver: Resolver,
    cache: ReportCache,
    warn: Callable[[str], None],
    fresh: bool = False,
    jobs: int = 8,
    show_progress: bool = False,
) -> tuple[list[CheckRecord | None], dict[str, int]]:
    """Gives each file's record (cached, else checked; None if unreadable) and the counts.

    First the cache is read for every file, then the rest is checked by the
    workers, each reading its own file, and the new records are written at
    the end: a main thread busy with files or SQLite while the workers
    compute would trade the GIL with them at every step (the convoy effect).
    Only the main thread touches the cache.
    """
    fp = checks_fingerprint(settings, trust)
    found: list[CheckRecord | None] = [None] * len(paths)
    counts = {"checked": 0, "cached": 0, "unreadable": 0}
    keys: list[tuple[str, str] | None] = []
    with progress_bar(show_progress, len(paths)) as advance:
        for path in paths:
            try:
                keys.append(message_key(path.read_bytes()))
            except OSError as exc:
                warn(f"{path}: cannot read: {exc.strerror}")
                keys.append(None)
                counts["unreadable"] += 1
                advance()
        readable = [k for k in keys if k is not None]
        cached = {} if fresh else cache.get_many(readable, fp)
        missing: list[tuple[int, str, str]] = []
        for i, key in enumerate(keys):
            if key is None:
                continue
            found[i] = cached.get(key)
            if found[i] is None:
                missing.append((i, *key))
            else:
                counts["cached"] += 1
                advance()
        fresh_rows = []
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="authsieve-scan") as pool:
            futures = {
                pool.submit(check_record, paths[m[0]], settings, trust, resolver): m
                for m in missing
            }
            for fut in as_completed(futures):
                i, mid, digest = futures[fut]
                try:
                    record = fut.result()
                except Exception as exc:  # one message the engine cannot handle is not fatal
                    warn(f"{paths[i]}: checks failed: {type(exc).__name__}: {exc}")
                    counts["unreadable"] += 1
                else:
                    found[i] = record
                    fresh_rows.append((mid, digest, fp, record))
                    counts["checked"] += 1
                advance()
    # Written once the workers are done: the main thread stays off the GIL meanwhile.
    cache.put_many(fresh_rows)
    cache.flush()
    return found, counts
