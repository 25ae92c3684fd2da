"""One DNS layer for every check: sources, a TTL cache, timeouts and a per-message budget.

Every query authsieve makes (SPF, DKIM keys, ARC keys, DMARC records, reverse
DNS) goes through a `Resolver`.  A resolver has exactly one `Source`:

- `ServerSource`: one or more nameservers (``--dns-server HOST:PORT`` or the
  system's resolv.conf), queried over UDP with TCP fallback on truncation
  (`wire` reads the common reply, dnspython's exchange the rest);
- `ZoneSource`: a zone file held in memory (``--dns-zone FILE``), answering
  authoritatively, so the demo and the tests run without any network.

Both live in classifier/lookup/sources.py; this module holds what they answer
(`Answer`, `DnsTempError`), the cache and the per-message sessions.

Per message, `Resolver.session(budget)` gives a `DnsSession`: it remembers
every answer of that message (no query twice within one message), counts
queries, and turns the time budget into `DnsTempError` once it is spent.

Answers distinguish the three outcomes that SPF and DMARC care about
(RFC 7208 §4.4, §5; RFC 7489 §6.6.3): records, no records (NXDOMAIN or
NODATA: `Answer.records == ()`), and a temporary failure (`DnsTempError`).
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple, Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

from classifier.errors import TempError, UsageError
from classifier.lookup import wire
from classifier.lookup.memo import DnsMemo

# A record's value: A/AAAA → address text; TXT → tuple of the character-strings
# (bytes, unjoined, as SPF needs them); MX → (preference, host); PTR, CNAME,
# NS → host name without the trailing dot.
Record = str | tuple[bytes, ...] | tuple[int, str]

# Names that need no IDNA or escaping work: the usual case, kept off the slow path.
_PLAIN_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
SUPPORTED_TYPES = frozenset({"A", "AAAA", "TXT", "MX", "PTR", "CNAME", "NS", "SPF"})
MAX_CNAME_CHAIN = 8
NEGATIVE_TTL = 300


class DnsError(TempError):
    """Base of the errors this layer raises (exit 75 when one reaches the top)."""


class DnsTempError(DnsError):
    """A temporary failure: timeout, SERVFAIL, refused, or the time budget is spent."""

    def __init__(self, qname: str, rdtype: str, reason: str) -> None:
        super().__init__(f"{qname}/{rdtype}: {reason}")
        self.qname = qname
        self.rdtype = rdtype
        self.reason = reason


class Answer(NamedTuple):
    """The records for (qname, rdtype); empty for NXDOMAIN or NODATA."""

    qname: str
    rdtype: str
    records: tuple[Record, ...]
    nxdomain: bool = False
    ttl: int = NEGATIVE_TTL

    def txt_strings(self) -> list[str]:
        """Gives each TXT record as one string, its character-strings joined (RFC 7208 §3.3)."""
        out = []
        for rec in self.records:
            if isinstance(rec, tuple) and all(isinstance(p, bytes) for p in rec):
                out.append(b"".join(rec).decode("utf-8", "replace"))  # type: ignore[arg-type]
        return out


def normalize_name(name: str) -> str:
    """Gives the query name in lower case without the trailing dot."""
    return name.strip().rstrip(".").lower()


class Source(Protocol):
    """Where answers come from."""

    def lookup(
        self, qname: str, rdtype: str, timeout: float, sent: wire.Pending | None = None
    ) -> Answer: ...

    def send(self, qname: str, rdtype: str, timeout: float) -> wire.Pending | None:
        """Sends the query ahead for `lookup` to read (None: this source answers at once)."""
        ...


Key = tuple[str, str]  # (normalized name, type), as the cache keeps them


def _key(qname: str, rdtype: str) -> Key:
    """Gives the cache key of a question; raises ValueError for an unsupported type."""
    qname = normalize_name(qname)
    rdtype = rdtype.upper()
    if rdtype not in SUPPORTED_TYPES:
        raise ValueError(f"unsupported query type {rdtype}")
    if not _PLAIN_NAME.match(qname):
        try:
            # One spelling for every source: A-labels, odd octets as \DDD (as ZoneSource).
            qname = normalize_name(dns.name.from_text(qname + ".").to_text()) if qname else ""
        except (dns.exception.DNSException, UnicodeError, ValueError):
            qname = ""  # not a name the DNS can hold
    return qname, rdtype


def _holdable(qname: str) -> bool:
    """Tells whether the DNS can hold the name (RFC 1035 §2.3.4); elsewhere nothing exists."""
    return bool(qname) and len(qname) <= 253 and all(0 < len(x) <= 63 for x in qname.split("."))


class Resolver:
    """Answers DNS queries from one source through a TTL cache shared by all messages.

    Thread-safe: a parallel scan shares one resolver and so one cache.
    """

    def __init__(
        self,
        source: Source,
        timeout: float = 5.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.timeout = timeout
        self.max_entries = max_entries
        self.clock = clock
        self.queries_sent = 0
        self._cache: OrderedDict[Key, tuple[float, Answer]] = OrderedDict()
        self._lock = threading.Lock()
        self._inflight: dict[Key, threading.Event] = {}
        self._sent: dict[Key, wire.Pending] = {}
        # Results worked out from this resolver's answers (SPF, DMARC discovery), bound to
        # their TTLs.
        self.memo = DnsMemo()

    def __repr__(self) -> str:
        return f"Resolver(source={self.source!r}, timeout={self.timeout!r})"

    def query(self, qname: str, rdtype: str, timeout: float | None = None) -> Answer:
        """Gives the answer for (qname, rdtype); raises DnsTempError on a temporary failure."""
        return self.answer((qname, rdtype), self.clock(), timeout)

    def answer(self, question: tuple[str, str], now: float, timeout: float | None) -> Answer:
        """Gives `query`'s answer for a (qname, rdtype) asked at `now`, a reading of `clock`.

        A session passes the reading it took for its budget: the clock is read once.
        """
        # A question asked in the cache's own spelling (a session's, a memo's replay) is found
        # without normalising it again: `_key` gives a cache key back unchanged.
        with self._lock:
            hit = self._cache.get(question)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(question)
                return hit[1]
        qname, rdtype = question
        key = _key(qname, rdtype)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(key)
                return hit[1]
        if not _holdable(key[0]):
            # Not a name the DNS can hold: nothing exists there.
            return Answer(key[0] or normalize_name(qname), key[1], (), nxdomain=True)
        wait = self.timeout if timeout is None else timeout
        with self._lock:
            sent = self._sent.pop(key, None)
            pending = None if sent is not None else self._inflight.get(key)
            if sent is None and pending is None:
                self._inflight[key] = threading.Event()
        if pending is not None:
            # Another thread is asking the same question (a burst from one sender in a
            # parallel scan): wait for its answer instead of asking the server again.
            pending.wait(wait)
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None:
                return hit[1]
            return self._ask(key, wait, now, owner=False)  # it failed: ask ourselves
        return self._ask(key, wait, now, owner=True, sent=sent)

    def send_ahead(self, questions: Iterable[tuple[str, str]], timeout: float) -> list[Key]:
        """Sends the queries of questions not cached nor on their way; gives their keys.

        The first `query` for such a question reads its reply, whichever thread
        asks; `forget` closes those that no one asked for.
        """
        sent = []
        now = self.clock()
        with self._lock:
            # Those cached in their own spelling (see `query`), most of them, are left out at
            # one look under the lock.
            unseen = [q for q in questions if (hit := self._cache.get(q)) is None or hit[0] <= now]
        for qname, rdtype in unseen:
            try:
                key = _key(qname, rdtype)
            except ValueError:
                continue
            with self._lock:
                hit = self._cache.get(key)
                if (hit is not None and hit[0] > now) or key in self._inflight:
                    continue
                if not _holdable(key[0]):
                    continue
                self._inflight[key] = threading.Event()
            try:
                pending = self.source.send(key[0], key[1], timeout)
            except Exception:  # the question is asked again in `query`, which says what failed
                pending = None
            with self._lock:
                if pending is None:
                    self._inflight.pop(key).set()
                    continue
                self.queries_sent += 1
                self._sent[key] = pending
            sent.append(key)
        return sent

    def forget(self, keys: Iterable[Key]) -> None:
        """Closes the queries sent ahead for these keys that no one has read."""
        for key in keys:
            with self._lock:
                pending = self._sent.pop(key, None)
                if pending is not None:
                    self._inflight.pop(key).set()
            if pending is not None:
                pending.close()

    def _ask(
        self,
        key: Key,
        timeout: float,
        now: float,
        owner: bool,
        sent: wire.Pending | None = None,
    ) -> Answer:
        try:
            if sent is None:
                with self._lock:
                    self.queries_sent += 1
            answer = self.source.lookup(key[0], key[1], timeout, sent)
            with self._lock:
                self._cache[key] = (now + answer.ttl, answer)
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
            return answer
        finally:
            if owner:
                with self._lock:
                    self._inflight.pop(key).set()

    def session(self, budget: float = 20.0) -> DnsSession:
        """Gives a per-message view with its own memo, query count and time budget."""
        return DnsSession(self, budget)


class DnsSession:
    """The DNS view of one message: no query twice, and a time budget for all of them."""

    def __init__(self, resolver: Resolver, budget: float) -> None:
        self.resolver = resolver
        self.budget = budget
        self.queries = 0
        self._started: float | None = None
        self._memo: dict[tuple[str, str], Answer | DnsTempError] = {}
        # Every question in the order asked, with its answer (None: it raised), for `DnsMemo`.
        self.asked: list[tuple[tuple[str, str], Answer | None]] = []
        self._ahead: list[Key] = []

    def __repr__(self) -> str:
        return f"DnsSession(budget={self.budget!r}, queries={self.queries!r})"

    def query(self, qname: str, rdtype: str) -> Answer:
        """Gives the answer for (qname, rdtype); DnsTempError also once the budget is spent."""
        return self.ask((normalize_name(qname), rdtype.upper()))

    def ask(self, key: tuple[str, str]) -> Answer:
        """Gives `query`'s answer for a question in the session's spelling, as `asked` holds them.

        A `DnsMemo` replay asks its kept questions so: they were normalised when first asked.
        """
        try:
            answer = self._answer(key)
        except BaseException:
            self.asked.append((key, None))
            raise
        self.asked.append((key, answer))
        return answer

    def _answer(self, key: tuple[str, str]) -> Answer:
        memo = self._memo.get(key)
        if memo is not None:
            if isinstance(memo, DnsTempError):
                raise memo
            return memo
        resolver = self.resolver
        now = resolver.clock()
        if self._started is None:
            self._started = now
        remaining = self.budget - (now - self._started)
        if remaining <= 0:
            raise DnsTempError(key[0], key[1], f"DNS time budget of {self.budget:g}s spent")
        self.queries += 1
        try:
            answer = resolver.answer(key, now, min(resolver.timeout, remaining))
        except DnsTempError as exc:
            self._memo[key] = exc
            raise
        self._memo[key] = answer
        return answer

    def send_ahead(self, questions: Iterable[tuple[str, str]]) -> None:
        """Sends the queries the checks will ask first, so that their round trips overlap.

        Nothing is counted or remembered until a check asks (`query`); `close`
        stops waiting for those that no check asked.
        """
        clock = self.resolver.clock
        if self._started is None:
            self._started = clock()
        remaining = self.budget - (clock() - self._started)
        if remaining > 0:
            memo = self._memo  # empty before the checks ask anything: the usual case here
            fresh = (
                [q for q in questions if (normalize_name(q[0]), q[1].upper()) not in memo]
                if memo
                else questions
            )
            timeout = min(self.resolver.timeout, remaining)
            self._ahead.extend(self.resolver.send_ahead(fresh, timeout))

    def close(self) -> None:
        """Ends the session: queries sent ahead that no check asked are no longer waited for."""
        self.resolver.forget(self._ahead)
        self._ahead.clear()

    def txt(self, qname: str) -> list[str]:
        """Gives the TXT records at qname, each joined into one string."""
        return self.query(qname, "TXT").txt_strings()


def make_resolver(
    dns_server: str | None = None, dns_zone: str | Path | None = None, timeout: float = 5.0
) -> Resolver:
    """Gives a resolver for a zone file, a nameserver spec, or the system's resolv.conf.

    A zone file or a nameserver that cannot be used raises UsageError naming it.
    """
    # Imported here: the sources need this module's Answer and errors.
    from classifier.lookup.sources import ServerSource, ZoneSource

    source: Source
    try:
        if dns_zone is not None:
            source = ZoneSource.from_file(dns_zone)
        elif dns_server is not None:
            source = ServerSource.from_spec(dns_server)
        else:
            source = ServerSource.from_resolv_conf()
    except OSError as exc:
        raise UsageError(f"{dns_zone}: cannot read zone file: {exc.strerror}") from None
    except ValueError as exc:
        what = f"--dns-zone {dns_zone}" if dns_zone else f"--dns-server {dns_server}"
        raise UsageError(f"{what}: {exc}") from None
    except Exception as exc:  # dnspython's zone syntax errors share no base we can name
        raise UsageError(f"{dns_zone}: bad zone file: {exc}") from None
    return Resolver(source, timeout=timeout)


def reverse_name(ip: str) -> str:
    """Gives the in-addr.arpa / ip6.arpa name of an address (RFC 1035 §3.5, RFC 3596 §2.5)."""
    return normalize_name(ipaddress.ip_address(ip).reverse_pointer)
