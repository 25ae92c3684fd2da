"""Results worked out from DNS answers alone, kept while those answers stand.

A check whose result depends on nothing but a few exact inputs and the DNS
answers it reads (SPF's check_host() for one client IP, MAIL FROM and HELO)
does the same work for every message from the same sender.  `DnsMemo` keeps
such a result beside the questions it asked and the answers it got:

- a result is kept only when every question was answered (no temporary
  failure, no spent time budget, no exception) and the caller says it may be
  (a result that reads the clock, say, may not);
- it is kept at most until the smallest TTL of those answers, negative
  answers included (RFC 1035 §3.2.1, RFC 2308 §5), and at most
  `max_entries` results are kept, the least recently used dropped first;
- using it *replays* the questions through the message's `DnsSession`, in the
  order they were first asked: the session counts them, remembers them and
  spends its budget on them exactly as the computation would have.  If any
  answer is not the one the result was worked out from (the cache expired and
  the record changed, the budget is spent, the server failed), the result is
  worked out afresh.  Given the same answers the computation takes the same
  path, so a replayed result is the one a fresh evaluation would give.

Keys are the caller's exact inputs, as a tuple: nothing a sender writes can
make one identity's key equal another's.  Never keep anything that depends on
message content beyond those inputs (signatures, body hashes, header fields).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from classifier.lookup.resolver import Answer, DnsSession

T = TypeVar("T")


class _Kept(Generic[T]):
    """One kept result: the value, the questions in the order asked, their answers, the expiry."""

    __slots__ = ("answers", "expires", "questions", "value")

    def __init__(
        self,
        value: T,
        questions: tuple[tuple[str, str], ...],
        answers: tuple[Answer, ...],
        expires: float,
    ) -> None:
        self.value = value
        self.questions = questions
        self.answers = answers
        self.expires = expires


class DnsMemo:
    """Results derived only from DNS answers and exact inputs, bound to the answers' TTLs.

    Thread-safe: a parallel scan shares one resolver, and so one memo.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._kept: OrderedDict[Hashable, _Kept] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    def clear(self) -> None:
        """Forgets every kept result."""
        with self._lock:
            self._kept.clear()

    def compute(self, dns: DnsSession, key: Hashable, work: Callable[[], tuple[T, bool]]) -> T:
        """Gives `work()`'s value for `key`: a kept one whose answers still stand, or a fresh one.

        `work` gives (value, keepable); it must read DNS through `dns` only and
        depend on nothing but `key` and those answers.  An exception from it
        propagates and nothing is kept.
        """
        now = dns.resolver.clock()
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                if kept.expires > now:
                    self._kept.move_to_end(key)
                else:
                    del self._kept[key]
                    kept = None
        if kept is not None and _replay(dns, kept):
            self.hits += 1
            return kept.value
        self.misses += 1
        start = len(dns.asked)
        value, keepable = work()
        if keepable:
            self._keep(key, value, dns.asked[start:], now)
        return value

    def _keep(
        self,
        key: Hashable,
        value: object,
        asked: list[tuple[tuple[str, str], Answer | None]],
        now: float,
    ) -> None:
        answers: dict[tuple[str, str], Answer] = {}
        for question, answer in asked:
            if answer is None:
                return  # a failed lookup (temperror, spent budget, a name it cannot ask)
            answers.setdefault(question, answer)
        if not answers:
            return  # nothing from DNS: nothing to bind a lifetime to
        expires = now + min(a.ttl for a in answers.values())
        kept = _Kept(value, tuple(answers), tuple(answers.values()), expires)
        with self._lock:
            self._kept[key] = kept
            self._kept.move_to_end(key)
            while len(self._kept) > self.max_entries:
                self._kept.popitem(last=False)


def _replay(dns: DnsSession, kept: _Kept) -> bool:
    """Asks the kept questions again through the session; tells whether each answer is the same."""
    for question, answer in zip(kept.questions, kept.answers, strict=True):
        try:
            got = dns.ask(question)  # as normalised when it was first asked
        except Exception:  # the fresh evaluation meets the same failure and reports it
            return False
        if got is not answer and got != answer:
            return False
    return True
