"""What each policy would do to the mail a user already has: counts, moves and tables.

`build_report` is a function of values: the scanned messages (where each
sits now and its cached `CheckRecord`) and the policies to compare.  Each
policy's verdict is `classifier.policy.verdict.decide` on the same facts that
delivery uses, so the report predicts exactly what authsieve would file.

A policy in observe mode is counted by its enforce answer (``would_be``):
the report answers "what if I enforced this?".  Messages submitted by our own
users (SMTP AUTH) are never counted as failing: no policy judges them.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from classifier.auth.dmarc_discovery import public_suffix_list
from classifier.auth.facts import AuthFacts
from classifier.policies import Policies, Policy
from classifier.policy.verdict import Verdict, decide
from classifier.report.cache import CheckRecord, with_arc_trust

PLACES = ("inbox", "junk", "quarantine")
CHECK_WORDS = {
    "spf": ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"),
    "dkim": ("pass", "fail", "neutral", "policy", "none", "permerror", "temperror"),
    "arc": ("pass", "fail", "none", "temperror"),
    "dmarc": ("pass", "fail", "none", "permerror", "temperror"),
}
TIMELINE_KEYS = ("pass", "fail", "none", "error")  # DMARC result; error: temperror or permerror
SPF_FAILURES = frozenset({"fail", "softfail", "permerror"})
DKIM_FAILURES = frozenset({"fail", "permerror"})
_FOLDER_PLACES = {"junk": "junk", "spam": "junk", "quarantine": "quarantine"}
LIKELY_FALSE_POSITIVE_MEANS = (
    "likely false positive: a message a person kept in the inbox (authsieve filed it in"
    " enforce mode and it was left there or moved back, or it was released from quarantine)"
    " that this policy would file away; observe-mode deliveries and mail authsieve never"
    " filed are not counted"
)


@functools.lru_cache(maxsize=1024)
def place_of(folder: str) -> str:
    """Gives where a Maildir folder files mail: junk (Junk, Spam), quarantine, else inbox."""
    return _FOLDER_PLACES.get(folder.rsplit(".", 1)[-1].lower(), "inbox")


@dataclass(frozen=True)
class ScannedMessage:
    """One message file: where it is, when it was delivered, and its check record."""

    path: str
    folder: str  # "INBOX" or the Maildir++ folder (".Junk")
    delivered: float  # seconds since the epoch (Maildir name, else the file's mtime)
    record: CheckRecord

    @property
    def place(self) -> str:
        return place_of(self.folder)


@dataclass(frozen=True)
class PolicyRun:
    """A policy set to judge, and the messages as checked under its trust path."""

    name: str
    source: str
    policies: Policies
    messages: tuple[ScannedMessage, ...]


@dataclass(frozen=True)
class Move:
    """A message the policy would file elsewhere than where it is now, and why."""

    path: str
    folder: str
    now: str
    would: str
    date: str
    sender: str
    subject: str
    reasons: tuple[str, ...]
    # In the inbox because a person kept it there (`CheckRecord.placed_by_a_person`),
    # and the policy would file it away.
    likely_false_positive: bool

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "reasons": list(self.reasons)}


@dataclass(frozen=True)
class PolicyOutcome:
    """How many messages one policy sends where, and which it would move."""

    name: str
    source: str
    mode: str
    counts: dict[str, int]  # inbox / junk / quarantine
    moves: tuple[Move, ...]  # likely false positives first, then the rest; newest first

    @property
    def likely_false_positives(self) -> int:
        return sum(m.likely_false_positive for m in self.moves)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "mode": self.mode,
            "counts": dict(self.counts),
            "moves_total": len(self.moves),
            "likely_false_positives": self.likely_false_positives,
            "moves": [m.to_dict() for m in self.moves],
        }


@dataclass(frozen=True)
class DomainRow:
    """A From domain and how much of its mail fails which check."""

    domain: str
    messages: int
    failing: int
    spf_fail: int
    dkim_fail: int
    dmarc_fail: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SuffixRow:
    """A public suffix of From domains (the .cyou question), and what each policy files of it."""

    suffix: str
    messages: int
    failing: int
    dmarc_pass: int
    filed_now: int  # in Junk or Quarantine now
    filed: dict[str, int]  # policy name → messages it would not deliver to the inbox

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "filed": dict(self.filed)}


@dataclass(frozen=True)
class ForwardRow:
    """Forwarded or list mail that fails SPF but passes DKIM or ARC, grouped by the relay."""

    via: str  # the host that handed the messages to us (reverse DNS, else HELO, else IP)
    messages: int
    dkim_pass: int
    arc_pass: int
    arc_sealer: str  # the newest ARC sealer when the chain passed
    list_id: str
    fix: str  # the config line that would let them through
    already_trusted: bool  # the first policy trusts the ARC sealer already

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Period:
    """DMARC results of the messages delivered in one day or month."""

    label: str
    counts: dict[str, int]  # TIMELINE_KEYS

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "counts": dict(self.counts)}


@dataclass(frozen=True)
class Report:
    """Everything `authsieve report` shows, in every output format."""

    messages: int
    first: str
    last: str
    since: str
    results: dict[str, dict[str, int]]
    spf_none_rate: float  # percent, one decimal
    now: dict[str, int]  # place → messages there now
    policies: tuple[PolicyOutcome, ...]
    domains: tuple[DomainRow, ...]
    suffixes: tuple[SuffixRow, ...]
    forwarded: tuple[ForwardRow, ...]
    granularity: str  # "day" or "month"
    timeline: tuple[Period, ...]
    scan: dict[str, float | int]

    def to_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "first": self.first,
            "last": self.last,
            "since": self.since,
            "results": {k: dict(v) for k, v in self.results.items()},
            "spf_none_rate": self.spf_none_rate,
            "now": dict(self.now),
            "policies": [p.to_dict() for p in self.policies],
            "domains": [d.to_dict() for d in self.domains],
            "suffixes": [s.to_dict() for s in self.suffixes],
            "forwarded": [f.to_dict() for f in self.forwarded],
            "granularity": self.granularity,
            "timeline": [p.to_dict() for p in self.timeline],
            "scan": dict(self.scan),
        }


def day(ts: float) -> str:
    """Gives the UTC date of a timestamp as YYYY-MM-DD."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def verdict_for(msg: ScannedMessage, policies: Policies, user: str | None) -> Verdict:
    """Gives the verdict of the recipient's policy (or user's) on one message, as delivery does."""
    policy: Policy = policies.for_user(user or msg.record.rcpt)
    return decide(with_arc_trust(msg.record.facts, policy.trusted_arc_sealers), policy)


def failures(record: CheckRecord) -> tuple[bool, bool, bool]:
    """Gives (SPF failed, DKIM failed, DMARC failed); our own users' submissions never fail."""
    f = record.facts
    if f.submission:
        return False, False, False
    return f.spf in SPF_FAILURES, f.dkim in DKIM_FAILURES, f.dmarc == "fail"


def _outcome(run: PolicyRun, user: str | None) -> tuple[PolicyOutcome, dict[str, str]]:
    counts = dict.fromkeys(PLACES, 0)
    moves: list[tuple[int, float, str, Move]] = []
    would_by_path: dict[str, str] = {}
    # Facts compare without their evidence, which only words the reasons, and decide() never
    # reads the envelope sender (often unique: VERP): so messages share decisions, and only
    # the ones that move need their own sentences.
    memo: dict[tuple[AuthFacts, Policy], str] = {}
    for msg in run.messages:
        rec = msg.record
        policy = run.policies.for_user(user or rec.rcpt)
        facts = with_arc_trust(rec.facts, policy.trusted_arc_sealers)
        key = (replace(facts, mailfrom=""), policy)
        would = memo.get(key) or ""
        if not would:
            would = memo[key] = decide(facts, policy).would_be
        counts[would] = counts.get(would, 0) + 1
        would_by_path[msg.path] = would
        if would == msg.place:
            continue
        verdict = decide(facts, policy)
        fp = msg.place == "inbox" and rec.placed_by_a_person
        move = Move(
            path=msg.path,
            folder=msg.folder,
            now=msg.place,
            would=would,
            date=day(msg.delivered),
            sender=rec.from_header,
            subject=rec.subject,
            reasons=verdict.reasons,
            likely_false_positive=fp,
        )
        group = 0 if fp else (1 if would == "inbox" else 2)
        moves.append((group, -msg.delivered, msg.path, move))
    moves.sort(key=lambda t: t[:3])
    outcome = PolicyOutcome(
        run.name, run.source, run.policies.default.mode, counts, tuple(m for *_, m in moves)
    )
    return outcome, would_by_path


def _results(messages: Sequence[ScannedMessage]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for check, words in CHECK_WORDS.items():
        seen = Counter(getattr(m.record.facts, check) for m in messages)
        out[check] = {w: seen.get(w, 0) for w in words}
        out[check].update({w: n for w, n in sorted(seen.items()) if w not in words})
    return out


def _domains(messages: Sequence[ScannedMessage], top: int) -> tuple[DomainRow, ...]:
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for m in messages:
        spf, dkim, dmarc = failures(m.record)
        row = rows[m.record.facts.from_domain or "(no From domain)"]
        for i, hit in enumerate((True, spf or dkim or dmarc, spf, dkim, dmarc)):
            row[i] += hit
    ranked = sorted((r for r in rows.items() if r[1][1]), key=lambda r: (-r[1][1], -r[1][0], r[0]))
    return tuple(DomainRow(d, *v) for d, v in ranked[:top])


@functools.lru_cache(maxsize=65536)
def public_suffix(domain: str) -> str:
    """Gives the public suffix of a domain by the offline Public Suffix List ("." + suffix)."""
    if not domain:
        return "(none)"
    try:
        suffix = public_suffix_list().publicsuffix(domain) or domain.rsplit(".", 1)[-1]
    except (ValueError, TypeError):
        suffix = domain.rsplit(".", 1)[-1]
    return "." + suffix


def _suffixes(
    messages: Sequence[ScannedMessage], filed: dict[str, dict[str, str]]
) -> tuple[SuffixRow, ...]:
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    per_policy: dict[str, Counter[str]] = defaultdict(Counter)
    for m in messages:
        suffix = public_suffix(m.record.facts.from_domain)
        row = rows[suffix]
        row[0] += 1
        row[1] += any(failures(m.record))
        row[2] += m.record.facts.dmarc == "pass"
        row[3] += m.place != "inbox"
        for name, would in filed.items():
            per_policy[suffix][name] += would.get(m.path, "inbox") != "inbox"
    ranked = sorted(rows.items(), key=lambda r: (-r[1][0], r[0]))
    return tuple(
        SuffixRow(s, v[0], v[1], v[2], v[3], {n: per_policy[s][n] for n in filed})
        for s, v in ranked
    )


def _forwarded(
    messages: Sequence[ScannedMessage], first: Policies | None
) -> tuple[ForwardRow, ...]:
    groups: dict[str, list[ScannedMessage]] = defaultdict(list)
    for m in messages:
        f = m.record.facts
        dkim_pass = any(r == "pass" for r, _ in m.record.dkim)
        if not f.submission and f.spf in ("fail", "softfail") and (dkim_pass or f.arc == "pass"):
            groups[m.record.client_name or m.record.client_ip or "(unknown)"].append(m)
    rows = []
    for via, msgs in groups.items():
        sealers = [m.record.facts.arc_sealers[-1] for m in msgs if m.record.facts.arc == "pass"]
        sealer = Counter(sealers).most_common(1)[0][0] if sealers else ""
        trusted = bool(sealer) and first is not None and sealer in first.default.trusted_arc_sealers
        fix = f'trusted_arc_sealers = ["{sealer}"]' if sealer else f'trusted_forwarders = ["{via}"]'
        rows.append(
            ForwardRow(
                via=via,
                messages=len(msgs),
                dkim_pass=sum(any(r == "pass" for r, _ in m.record.dkim) for m in msgs),
                arc_pass=len(sealers),
                arc_sealer=sealer,
                list_id=next((m.record.list_id for m in msgs if m.record.list_id), ""),
                fix=fix,
                already_trusted=trusted,
            )
        )
    return tuple(sorted(rows, key=lambda r: (-r.messages, r.via)))


def _period_labels(times: Iterable[float]) -> tuple[str, list[str]]:
    stamps = sorted(times)
    if not stamps:
        return "day", []
    start = datetime.fromtimestamp(stamps[0], UTC)
    end = datetime.fromtimestamp(stamps[-1], UTC)
    if (end - start).days <= 62:
        labels, d = [], start.date()
        while d <= end.date():
            labels.append(d.isoformat())
            d = d.fromordinal(d.toordinal() + 1)
        return "day", labels
    labels, (y, mo) = [], (start.year, start.month)
    while (y, mo) <= (end.year, end.month):
        labels.append(f"{y:04d}-{mo:02d}")
        y, mo = (y + 1, 1) if mo == 12 else (y, mo + 1)
    return "month", labels


def _timeline(messages: Sequence[ScannedMessage]) -> tuple[str, tuple[Period, ...]]:
    granularity, labels = _period_labels(m.delivered for m in messages)
    width = 10 if granularity == "day" else 7
    counts = {label: dict.fromkeys(TIMELINE_KEYS, 0) for label in labels}
    for m in messages:
        word = m.record.facts.dmarc
        key = word if word in ("pass", "fail", "none") else "error"
        counts[day(m.delivered)[:width]][key] += 1
    return granularity, tuple(Period(label, counts[label]) for label in labels)


def build_report(
    runs: Sequence[PolicyRun],
    user: str | None = None,
    since: str = "",
    top: int = 10,
    scan: dict[str, float | int] | None = None,
) -> Report:
    """Gives the report of these messages under each policy (results as RFC 8601 §2.7 words).

    The counts, tables and timeline come from the first run's messages; each
    run's policy decides over its own (they differ only when policies trust
    different forwarders, which changes the trust path).
    """
    messages = runs[0].messages if runs else ()
    outcomes, filed = [], {}
    for run in runs:
        outcome, would = _outcome(run, user)
        outcomes.append(outcome)
        filed[run.name] = would
    results = _results(messages)
    total = len(messages)
    none_rate = round(100.0 * results["spf"]["none"] / total, 1) if total else 0.0
    now = Counter(m.place for m in messages)
    granularity, timeline = _timeline(messages)
    stamps = [m.delivered for m in messages]
    return Report(
        messages=total,
        first=day(min(stamps)) if stamps else "",
        last=day(max(stamps)) if stamps else "",
        since=since,
        results=results,
        spf_none_rate=none_rate,
        now={p: now.get(p, 0) for p in PLACES},
        policies=tuple(outcomes),
        domains=_domains(messages, top),
        suffixes=_suffixes(messages, filed),
        forwarded=_forwarded(messages, runs[0].policies if runs else None),
        granularity=granularity,
        timeline=timeline,
        scan=dict(scan or {}),
    )
