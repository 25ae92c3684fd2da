"""DMARC: does the owner of the From domain vouch for this message, and what does it ask if not.

Two modes, chosen by the caller:

- ``rfc9989`` (default, DMARCbis): policy and Organizational Domain come from
  the DNS Tree Walk (RFC 9989 §4.10), with ``psd=``, ``np=`` and ``t=y``;
  ``pct``, ``rf`` and ``ri`` are unknown tags.
- ``rfc7489``: the Organizational Domain comes from the Public Suffix List
  (RFC 7489 §3.2, offline copy of the `publicsuffixlist` package, built at
  first use), policy discovery asks the From domain then the Organizational
  Domain (§6.6.3), ``pct=`` samples with the caller's random draw (§6.6.4).
  ``np=`` is honoured here too: RFC 9091 registered it as an extension of RFC
  7489, and ignoring it would let a non-existent subdomain escape it.

Choices where the RFCs leave room, each stated where it is made: several From
domains are evaluated and the most severe result wins (RFC 7489 §6.6.1,
RFC 9989 §11.5); beyond the first five, a fail among those is the result and
otherwise ``fail`` under ``reject`` (the unevaluated ones may publish it), never
``pass``; a From without a usable domain is
``permerror``; a temporary DNS failure on a query the answer depends on is
``temperror`` (RFC 9989 §5.3.6), and an internal error is never one: it is
logged and reported as ``permerror`` with ``internal_error`` set.

A query the answer depends on is one of the policy discovery, or one that
decides whether a passing identifier aligns.  A DKIM key, MAIL FROM or HELO
lookup that fails temporarily leaves that identifier without a pass, and an
identifier that cannot align could not make DMARC pass even on retry: the
message fails unless another aligned identifier passes (RFC 7489 §6.6.2 step
4: every other condition, identifier mismatch included, is a DMARC mechanism
check failure; RFC 9989 §5.3.4-§5.3.5).  The sender picks those domains and
can make their nameservers never answer, so neither their results nor the
time they spend may turn a forged From into ``temperror``: `discover_first`
reads the policy before the other checks, and an Organizational Domain lookup
is asked only for a name that could share the Author Domain's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Literal, NamedTuple

from classifier.auth.dmarc_discovery import (
    Discovery,
    OrgDomains,
    author_exists,
    discover,
)
from classifier.auth.dmarc_record import MODES, DmarcRecord
from classifier.auth.fromheader import from_domains, normalize_domain
from classifier.log import log
from classifier.lookup.resolver import DnsSession, DnsTempError
from classifier.vocab import DMARC_POLICY_OF, DmarcPolicy, Result

__all__ = [
    "DmarcResult",
    "alignment_kind",
    "check_dmarc",
    "discover_first",
    "from_domains",
]

MAX_AUTHOR_DOMAINS = 5  # RFC 9989 §11.5: limit the Author Domains evaluated
_DOWNGRADE = {"reject": "quarantine", "quarantine": "none", "none": "none"}
_ALIGNED = {
    "strict": "aligned (strict)",
    "relaxed": "aligned (relaxed)",
    "": "not aligned",
    "unknown": "alignment unknown (DNS failure)",
}


@dataclass(frozen=True, kw_only=True)
class DmarcResult:
    """The DMARC outcome for one message, with the record and the reasoning behind it."""

    result: Result  # pass fail none temperror permerror (RFC 8601 §2.7.1)
    # The defaults are those of a message no record was evaluated for.
    policy: DmarcPolicy | Literal[""] = ""  # the policy that applies to the message ("": none)
    from_domain: str
    org_domain: str = ""  # "" when nothing needed it (the author's own record, same identifiers)
    spf_aligned: bool = False
    dkim_aligned: bool = False
    aligned_by: str = ""  # "dkim:<d>", "spf" or ""
    mode: str
    record: str = ""
    record_domain: str = ""  # the name the record was found at, e.g. "_dmarc.example.com"
    testing: bool = False  # t=y, or pct below 100 in rfc7489 mode
    reason: str
    published_policy: DmarcPolicy | Literal[""] = ""  # as published, before t=y / pct sampling
    pct: int | None = None  # rfc7489 mode only
    internal_error: bool = False  # the check raised: result permerror, reason and log say why
    # Each evaluated Author Domain's own result when From names several (the aggregate
    # report has a row for each, RFC 9990 §2.1); () for one Author Domain.
    authors: tuple[DmarcResult, ...] = ()

    @property
    def disposition(self) -> str:
        """Gives what the Domain Owner asks for this message: its policy on fail, else none."""
        return self.policy if self.result == "fail" else "none"

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["disposition"] = self.disposition
        if not self.authors:
            del out["authors"]
        return out


def _alignment(
    author: str, identifier: str, orgs: OrgDomains, strict: bool, lookup: bool = True
) -> str:
    """Gives "strict", "relaxed", "" or "unknown"; without `lookup`, "later" where DNS must tell."""
    ident = normalize_domain(identifier)
    if not ident:
        return ""
    if ident == author:
        return "strict"
    # Organizational Domains are the name or an ancestor: without a shared top label they differ.
    if strict or ident.rsplit(".", 1)[-1] != author.rsplit(".", 1)[-1]:
        return ""
    if not lookup:
        return "later"
    # An Organizational Domain is its name or an ancestor of it: once one side's is known,
    # a name outside it cannot align, whatever a lookup of the other side would say.  So
    # a sender's own domain whose DNS never answers cannot make alignment "unknown" (and
    # DMARC temperror) for an Author Domain it has nothing to do with.
    ours = orgs.of(author)
    if ours is not None and not _at_or_below(ident, ours):
        return ""
    theirs = orgs.of(ident)
    if theirs is not None and not _at_or_below(author, theirs):
        return ""
    if ours is None or theirs is None:
        return "unknown"
    return "relaxed" if ours == theirs else ""


def _at_or_below(name: str, ancestor: str) -> bool:
    return name == ancestor or name.endswith("." + ancestor)


def alignment_kind(
    author: str, identifier: str, dns: DnsSession | None, mode: str = "rfc9989"
) -> str:
    """Gives how an identifier aligns with the Author Domain (RFC 9989 §3.2.10, RFC 7489 §3.1).

    "strict" (identical), "relaxed" (same Organizational Domain), "" (not
    aligned) or "unknown" (a temporary DNS failure hid an Organizational Domain).
    """
    name = normalize_domain(author)
    return _alignment(name, identifier, OrgDomains(dns, mode), False) if name else ""


# Result words and DMARC policies by their text: the usual input is already one, and the
# lookup costs a fraction of the string work below or of an Enum call.
_WORDS = {str(r): str(r) for r in Result}


def _word(result: object) -> str:
    word = _WORDS.get(result) if isinstance(result, str) else None
    if word is not None:
        return word
    return str(result or "").strip().split(" ", 1)[0].split("(", 1)[0].lower()


def _policy(word: str) -> DmarcPolicy:
    return DMARC_POLICY_OF.get(word) or DmarcPolicy(word)  # an unknown word raises as the call does


class _Alignment(NamedTuple):
    spf: bool
    dkim: bool
    by: str  # "dkim:<d>", "spf" or ""
    unknown: bool  # a temporary DNS failure hid an Organizational Domain
    notes: tuple[str, ...]


def _align(
    author: str,
    spf: tuple[str, str],
    dkim: list[tuple[str, str]],
    record: DmarcRecord,
    orgs: OrgDomains,
) -> _Alignment:
    """Gives which passing identifiers align (RFC 9989 §4.4, §5.3.4; RFC 7489 §3.1).

    Every passing DKIM signature counts; SPF counts only as a pass of the MAIL
    FROM identity the caller checked.  A DKIM alignment is preferred as the
    evidence, since it survives forwarding.
    """
    notes: list[str] = []
    by, unknown, dkim_ok = "", False, False
    later: list[tuple[int, str]] = []  # (note index, d=) where relaxed alignment needs DNS
    for res, d in dkim:
        if _word(res) != "pass":
            notes.append(f"DKIM {d or '(no d=)'}: {_word(res) or 'none'}")
            continue
        kind = _alignment(author, d, orgs, record.adkim == "s", lookup=False)
        if kind == "later":
            later.append((len(notes), d))
            notes.append("")
            continue
        notes.append(f"DKIM {d}: pass, {_ALIGNED[kind]}")
        if kind == "strict" and not dkim_ok:
            dkim_ok, by = True, f"dkim:{normalize_domain(d)}"
    for at, d in later:
        if dkim_ok:
            # One aligned signature is enough (RFC 7489 §3.1.1, RFC 9989 §4.4): no walk for more.
            notes[at] = f"DKIM {d}: pass, alignment not looked up (another signature aligns)"
            continue
        kind = _alignment(author, d, orgs, record.adkim == "s")
        unknown |= kind == "unknown"
        notes[at] = f"DKIM {d}: pass, {_ALIGNED[kind]}"
        if kind == "relaxed":
            dkim_ok, by = True, f"dkim:{normalize_domain(d)}"
    spf_result, spf_domain = spf
    spf_ok = False
    if _word(spf_result) == "pass" and spf_domain:
        kind = _alignment(author, spf_domain, orgs, record.aspf == "s")
        unknown |= kind == "unknown"
        spf_ok = kind in ("strict", "relaxed")
        notes.append(f"SPF {spf_domain}: pass, {_ALIGNED[kind]}")
        by = by or ("spf" if spf_ok else "")
    else:
        notes.append(f"SPF {spf_domain or '(no domain)'}: {_word(spf_result) or 'none'}")
    return _Alignment(spf_ok, dkim_ok, by, unknown, tuple(notes))


def _choose_policy(
    author: str, org: str | None, found: Discovery, record: DmarcRecord, dns: DnsSession
) -> tuple[str, str]:
    """Gives (the tag it comes from, the policy) for the Author Domain; raises DnsTempError.

    RFC 9989 §4.7: p= for the domain itself, sp= for existing and np= for
    non-existent subdomains of the Organizational Domain (each falling back to
    p=).  The sp/np definitions speak of subdomains of the Organizational
    Domain, so an Author Domain that is its own Organizational Domain under a
    PSD record gets p= (as RFC 9091 did).  Existence is asked only when np=
    would change the answer.
    """
    problem = record.policy_problem()
    if problem:
        return f"{problem}, so p=none as rua= is present (RFC 9989 §4.10.1),", "none"
    p = record.p or "none"
    if found.kind == "author" or author == org:
        return "p", p
    tag, policy = ("sp", record.sp) if record.sp else ("p", p)
    if record.np and record.np != policy and not author_exists(author, dns):
        return "np", record.np
    return tag, policy


def _evaluate(
    author: str,
    spf: tuple[str, str],
    dkim: list[tuple[str, str]],
    dns: DnsSession,
    mode: str,
    sample: float | None,
    orgs: OrgDomains,
    discovered: Discovery | Exception | None = None,
) -> DmarcResult:
    """Gives the DMARC result for one Author Domain (RFC 9989 §5.3.2-5.3.6, RFC 7489 §6.6).

    `discovered` is `discover_first`'s outcome for this author and mode, if it ran.
    """
    org: str | None = None

    def early(word: Result, reason: str, record: str = "", where: str = "") -> DmarcResult:
        return DmarcResult(
            result=word,
            from_domain=author,
            org_domain=org or "",
            mode=mode,
            record=record,
            record_domain=where,
            reason=reason,
        )

    try:
        if discovered is None:
            found = discover(author, dns, mode)
        elif isinstance(discovered, Exception):
            raise discovered
        else:
            found = discovered
    except DnsTempError as exc:
        return early(Result.TEMPERROR, f"DNS temporary failure at {exc.qname}: {exc.reason}")
    org = found.org_domain
    if found.temp:
        return early(
            Result.TEMPERROR, f"DNS temporary failure during policy discovery: {found.temp}"
        )
    record = found.record
    if record is None:
        return early(Result.NONE, f"{found.problem}: DMARC does not apply to {author}")
    where = f"_dmarc.{found.record_domain}"
    if record.policy_problem() and not record.rua:
        return early(
            Result.NONE,
            f"record at {where} has {record.policy_problem()} and no usable rua=:"
            " no DMARC processing (RFC 9989 §4.10.1, RFC 7489 §6.6.3 step 6)",
            record.text,
            where,
        )
    if org is not None:
        orgs.known.setdefault(author, org)
    aligned = _align(author, spf, dkim, record, orgs)
    passed = aligned.spf or aligned.dkim
    org = orgs.known.get(author, org)
    summary = "; ".join(aligned.notes)
    if not passed and aligned.unknown:
        reason = (
            f"a temporary DNS failure hid an Organizational Domain needed for alignment: {summary}"
        )
        return early(Result.TEMPERROR, reason, record.text, where)
    try:
        tag, published = _choose_policy(author, org, found, record, dns)
    except DnsTempError as exc:
        if not passed:
            return early(Result.TEMPERROR, f"DNS temporary failure at {exc.qname}: {exc.reason}")
        # the message passes whatever np= says: report the existing-subdomain policy
        tag, published = ("sp", record.sp) if record.sp else ("p", record.p or "none")

    # Testing (RFC 9989 §4.7 t=y) or sampling (RFC 7489 §6.6.4 pct=): one level lower.
    policy, pct = published, (record.pct if mode == "rfc7489" else None)
    testing = record.testing if pct is None else pct < 100
    how = "t=y" if pct is None else f"pct={pct}"
    detail = f"policy {published} ({tag} of {where})"
    sampled_out = pct is None or (sample is not None and sample >= pct / 100)
    if testing and sampled_out and _DOWNGRADE[published] != published:
        policy = _DOWNGRADE[published]
        detail += f", applied as {policy} ({how})"
    elif testing:
        detail += f", {how}" + (" (sampling left to the receiver)" if sample is None else "")
    lead = f"aligned by {aligned.by}" if passed else "no aligned SPF or DKIM pass"
    return DmarcResult(
        result=Result.PASS if passed else Result.FAIL,
        policy=_policy(policy),
        from_domain=author,
        org_domain=org or "",
        spf_aligned=aligned.spf,
        dkim_aligned=aligned.dkim,
        aligned_by=aligned.by,
        mode=mode,
        record=record.text,
        record_domain=where,
        testing=testing,
        reason=f"{lead} for {author} ({summary}); {detail}",
        published_policy=_policy(published),
        pct=pct,
    )


def _evaluate_kept(
    author: str,
    spf: tuple[str, str],
    dkim: list[tuple[str, str]],
    dns: DnsSession,
    mode: str,
    orgs: OrgDomains,
) -> DmarcResult:
    """Gives `_evaluate`'s result for a message's one Author Domain, kept while its answers stand.

    With one Author Domain and no pct= draw the result reads nothing but the
    domain, the SPF and DKIM (result, domain) pairs, the mode and DNS answers:
    discovery is asked for again inside (the DNS memo gives it), so its
    questions are among those a kept result replays (classifier/lookup/memo.py).
    Keyed on those values: domains and result words that come back with a
    sender's mail, never an address or message text.
    """

    def work() -> tuple[DmarcResult, bool]:
        result = _evaluate(author, spf, dkim, dns, mode, None, orgs)
        return result, result.result != Result.TEMPERROR

    key = ("dmarc-result", mode, author, spf, tuple(dkim))
    result: DmarcResult = dns.resolver.memo.compute(dns, key, work)
    return result


def _severity(r: DmarcResult) -> int:
    if r.result == "fail":
        return {"reject": 6, "quarantine": 5}.get(r.policy, 3)
    return {"temperror": 4, "permerror": 2, "none": 1}.get(r.result, 0)


def _failed(
    word: Result, mode: str, reason: str, from_domain: str = "", internal: bool = False
) -> DmarcResult:
    return DmarcResult(
        result=word, from_domain=from_domain, mode=mode, reason=reason, internal_error=internal
    )


def record_names(from_header_values: Iterable[object] | None) -> list[str]:
    """Gives the names whose records the check reads first: _dmarc of each Author Domain."""
    domains, error = from_domains(from_header_values)  # it leaves out None itself
    if error:
        return []  # the check ends before any lookup
    return [f"_dmarc.{d}" for d in list(dict.fromkeys(domains))[:MAX_AUTHOR_DOMAINS]]


def discover_first(
    from_header_values: Iterable[object] | None, dns: DnsSession, mode: str = "rfc9989"
) -> dict[str, Discovery | Exception]:
    """Looks up each Author Domain's DMARC record before the other checks ask anything.

    Only a temporary failure of the policy discovery itself, or of an identifier
    that can align, may make DMARC temperror (RFC 9989 §5.3.6; RFC 7489 §6.6.2:
    without an aligned pass the message fails).  Every other lookup is the
    sender's to choose -- a DKIM d= or MAIL FROM domain whose nameserver never
    answers -- and would otherwise spend the message's DNS time budget before
    the record is read.  The answers stay in the session; `check_dmarc` reads
    them from there and reports whatever went wrong.

    Gives each Author Domain's outcome (the Discovery, or what it raised), for
    `check_dmarc` of the same message and mode: asked again, the session would
    give the same answers and failures, so discovery would end the same way.
    """
    outcomes: dict[str, Discovery | Exception] = {}
    if mode not in MODES:
        return outcomes
    domains, error = from_domains(from_header_values)  # it leaves out None itself
    if error:
        return outcomes
    for author in list(dict.fromkeys(domains))[:MAX_AUTHOR_DOMAINS]:
        try:
            outcomes[author] = discover(author, dns, mode)
        except Exception as exc:  # check_dmarc meets it again and reports it
            outcomes[author] = exc
    return outcomes


def check_dmarc(
    from_header_values: Iterable[object] | None,
    spf_result: str,
    spf_domain: str,
    dkim: Iterable[tuple[str, str]],
    dns: DnsSession,
    mode: str = "rfc9989",
    sample: float | None = None,
    discovered: Mapping[str, Discovery | Exception] | None = None,
) -> DmarcResult:
    """Gives the DMARC result of a message (RFC 9989 §5.3, or RFC 7489 §6.6 in rfc7489 mode).

    `spf_result`/`spf_domain` are the SPF check of the MAIL FROM identity (for a
    null reverse-path, postmaster@HELO, RFC 7208 §2.4); a HELO-only check never
    counts (RFC 9989 §4.4.2).  `dkim` is (result, d=) per signature.  `sample`
    is a random draw in [0, 1) for pct= in rfc7489 mode (None: pct is recorded,
    not applied).  Never raises: an internal error is logged with its traceback and
    gives permerror with ``internal_error`` set, never temperror (a temperror files
    nothing, so an input that made this code raise would switch DMARC off).
    `discovered` is what `discover_first` gave for the same message, DNS session and mode.
    """
    try:
        return _check(
            from_header_values, spf_result, spf_domain, dkim, dns, mode, sample, discovered or {}
        )
    except Exception as exc:  # never let a message's content break delivery (docs/design.md)
        log.exception("internal error in the DMARC check")
        reason = f"internal error in the DMARC check: {type(exc).__name__}: {exc}"[:300]
        return _failed(Result.PERMERROR, str(mode), reason, internal=True)


def _check(
    from_header_values: Iterable[object] | None,
    spf_result: str,
    spf_domain: str,
    dkim: Iterable[tuple[str, str]],
    dns: DnsSession,
    mode: str,
    sample: float | None,
    discovered: Mapping[str, Discovery | Exception],
) -> DmarcResult:
    if mode not in MODES:
        return _failed(Result.PERMERROR, str(mode), f"unknown DMARC mode {mode!r}")
    values = [v for v in (from_header_values or []) if v is not None]
    domains, error = from_domains(values)
    if error:
        return _failed(Result.PERMERROR, mode, f"{error}: no Author Domain (RFC 9989 §5.3.1)")
    distinct = list(dict.fromkeys(domains))
    evaluated = distinct[:MAX_AUTHOR_DOMAINS]
    spf = (str(spf_result or ""), str(spf_domain or ""))
    signatures = [(str(r or ""), str(d or "")) for r, d in (dkim or [])]
    orgs = OrgDomains(dns, mode)
    if (
        len(evaluated) == 1
        and sample is None
        and not isinstance(discovered.get(author := evaluated[0]), Exception)
    ):
        results = [_evaluate_kept(author, spf, signatures, dns, mode, orgs)]
    else:
        results = [
            _evaluate(d, spf, signatures, dns, mode, sample, orgs, discovered.get(d))
            for d in evaluated
        ]
    worst = results[0] if len(results) == 1 else max(results, key=_severity)
    if len(distinct) > MAX_AUTHOR_DOMAINS:
        return _beyond_the_cap(distinct, results)
    if len(results) == 1 and len(values) <= 1:
        return worst
    fields = f" in {len(values)} From fields" if len(values) > 1 else ""
    note = (
        f"From holds {len(distinct)} domain(s) ({', '.join(distinct)}){fields}; each is"
        " evaluated and the most severe result given (RFC 7489 §6.6.1, RFC 9989 §11.5)"
    )
    return replace(worst, reason=f"{note}: {worst.reason}", authors=tuple(results))


def _beyond_the_cap(distinct: list[str], results: list[DmarcResult]) -> DmarcResult:
    """Gives the result for a From naming more Author Domains than are evaluated.

    RFC 9989 §11.5 lets a receiver limit the Author Domains it evaluates, and
    RFC 7489 §6.6.1 asks for the most severe policy when several are; the
    extra domains must not make a message more welcome than any one of them
    alone.  The first MAX_AUTHOR_DOMAINS are evaluated: a fail among them is
    the result, with the most severe policy seen.  Otherwise a domain left
    unevaluated -- the bank's, put sixth -- may publish p=reject and is not
    authenticated: the message fails under ``reject``, the most severe policy
    any of them could publish (policy key ``dmarc_reject``).
    """
    shown = ", ".join(distinct[:MAX_AUTHOR_DOMAINS]) + ", …"
    note = (
        f"From names {len(distinct)} domains ({shown}); the first {MAX_AUTHOR_DOMAINS} are"
        " evaluated (RFC 9989 §11.5)"
    )
    failed = [r for r in results if r.result == "fail"]
    if failed:
        worst = max(failed, key=_severity)
        return replace(
            worst,
            reason=f"{note} and the most severe failure given (RFC 7489 §6.6.1): {worst.reason}",
            authors=tuple(results),
        )
    first = results[0]
    return replace(
        first,
        result=Result.FAIL,
        policy=DmarcPolicy.REJECT,
        spf_aligned=False,
        dkim_aligned=False,
        aligned_by="",
        reason=f"{note}; {len(distinct) - MAX_AUTHOR_DOMAINS} more are not authenticated and"
        " may publish p=reject: judged as failing under reject (RFC 7489 §6.6.1)",
        authors=tuple(results),
    )
