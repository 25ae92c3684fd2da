"""The rewritten header renderers and verdict steps give what the old ones gave (issue 15).

Each old implementation is kept here, as it stood before the rewrite, and
hypothesis compares both on hostile input: everything below comes from the
sender (From, MAIL FROM, HELO, reasons): quotes, ";", "(", "@", control
characters, 8-bit, long values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from authres import (
    AuthenticationResultProperty,
    AuthenticationResultsHeader,
    DKIMAuthenticationResult,
    SPFAuthenticationResult,
)
from authres.arc import ARCAuthenticationResult
from authres.core import AuthenticationResult
from authres.dmarc import DMARCAuthenticationResult
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.annotate import (
    _split_outside_quotes,
    ar_comment,
    ar_reason,
    ar_value,
    authentication_results,
    fold,
    fold_fields,
)
from classifier.auth.arc import ArcResult
from classifier.auth.checks import CheckReport, facts_from
from classifier.auth.dkim import DkimSignatureResult
from classifier.auth.dmarc import DmarcResult, from_domains
from classifier.auth.facts import (
    AAR_RESULTS,
    INTERNAL,
    POLICIES,
    RESULTS,
    AuthFacts,
    quote,
    render_header_fields,
    render_header_value,
)
from classifier.auth.spf import (
    _HEADER_TAGS,
    SpfResult,
    _check_domain,
    _domain_problem,
    _header_value,
    received_spf_fields,
    received_spf_header,
)
from classifier.envelope.trust import Envelope
from classifier.names import safe_domain
from classifier.policies import Policy, normalize_suffix, split_sender
from classifier.policy.verdict import (
    EffectiveResults,
    Verdict,
    _context,
    _finish,
    _safe_domain,
    decide,
    effective_results,
    fired_rules,
    internal_errors,
)
from classifier.vocab import DMARC_POLICY_OF, Action, DmarcPolicy, Mode, Result

_WRITTEN_POLICIES = POLICIES - {""}

# ---- the old implementations ---------------------------------------------------------


def _old_token(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "none"


def old_render_header_value(
    facts: AuthFacts,
    authserv_id: str,
    verdict: str,
    mode: str,
    reason: str = "",
    error: str = "",
    allowed: bool = False,
    user: str = "",
    delivery_id: str = "",
) -> str:
    from_domain, mailfrom_domain = (
        safe_domain(facts.from_domain),
        safe_domain(facts.mailfrom_domain),
    )
    parts = [
        "v=1",
        f"id={safe_domain(authserv_id) or 'localhost'}",
        f"verdict={verdict if verdict in ('inbox', 'junk', 'quarantine') else 'inbox'}",
        f"mode={'observe' if mode == 'observe' else 'enforce'}",
        f"spf={_old_token(facts.spf, RESULTS)}",
        f"helo-spf={_old_token(facts.helo_spf, RESULTS)}",
        f"dkim={_old_token(facts.dkim, RESULTS)}",
        f"arc={_old_token(facts.arc, RESULTS)}",
        f"dmarc={_old_token(facts.dmarc, RESULTS)}",
        f"policy={facts.dmarc_policy if facts.dmarc_policy in _WRITTEN_POLICIES else 'none'}",
        f"from-domain={from_domain or 'none'}",
        f"mailfrom-domain={mailfrom_domain or 'none'}",
        f"from-auth={'yes' if facts.from_authenticated else 'no'}",
        f"submission={'yes' if facts.submission else 'no'}",
        f"forwarded={'yes' if facts.forwarded_by else 'no'}",
        f"arc-trusted={'yes' if facts.arc_trusted else 'no'}",
        f"arc-spf={facts.arc_oldest_spf if facts.arc_oldest_spf in AAR_RESULTS else ''}",
        f"arc-dkim={facts.arc_oldest_dkim if facts.arc_oldest_dkim in AAR_RESULTS else ''}",
        f"arc-dmarc={facts.arc_oldest_dmarc if facts.arc_oldest_dmarc in AAR_RESULTS else ''}",
        f"allowed={'yes' if allowed else 'no'}",
    ]
    if user:
        parts.append(f"user={quote(user)}")
    if delivery_id.isalnum() and delivery_id.isascii():
        parts.append(f"delivery={delivery_id}")
    if error:
        parts.append(f"error={quote(error)}")
    if reason:
        parts.append(f"reason={quote(reason)}")
    return "; ".join(parts)


def old_received_spf_header(result: SpfResult, receiver: str) -> str:
    pairs = [("identity", result.identity), ("client-ip", result.client_ip)]
    if result.helo:
        pairs.append(("helo", result.helo))
    if result.identity == "mailfrom" and result.sender:
        pairs.append(("envelope-from", result.sender))
    if receiver:
        pairs.append(("receiver", receiver))
    if result.mechanism:
        pairs.append(("mechanism", result.mechanism))
    if result.result in ("permerror", "temperror"):
        pairs.append(("problem", result.reason))
    tag = _HEADER_TAGS.get(result.result, "None")
    identity = "helo" if result.identity == "helo" else "mailfrom"
    body = "; ".join(f"{key}={_header_value(value)}" for key, value in pairs)
    return f"{tag} ({identity}) {body}"


def old_effective_results(facts: AuthFacts) -> EffectiveResults:
    def tok(value: str) -> str:
        return value if value in RESULTS else "none"

    local = {"spf": tok(facts.spf), "dkim": tok(facts.dkim), "dmarc": tok(facts.dmarc)}
    used: list[str] = []
    if facts.arc_trusted:
        oldest = {
            "spf": facts.arc_oldest_spf,
            "dkim": facts.arc_oldest_dkim,
            "dmarc": facts.arc_oldest_dmarc,
        }
        for name, value in oldest.items():
            if value in AAR_RESULTS:
                local[name] = value
                used.append(name)
    known = facts.dmarc_policy in POLICIES and facts.dmarc_policy
    policy = DMARC_POLICY_OF[facts.dmarc_policy] if known else DmarcPolicy.NONE
    return EffectiveResults(
        spf=local["spf"],
        dkim=local["dkim"],
        dmarc=local["dmarc"],
        dmarc_policy=policy,
        from_domain=safe_domain(facts.from_domain),
        mailfrom_domain=safe_domain(facts.mailfrom_domain),
        from_authenticated=facts.from_authenticated
        or (facts.arc_trusted and facts.arc_oldest_dmarc == "pass"),
        arc_used=tuple(used),
    )


def old_internal_errors(facts: AuthFacts, eff: EffectiveResults) -> list[str]:
    tok = facts.arc if facts.arc in RESULTS else "none"
    judged = {"spf": eff.spf, "dkim": eff.dkim, "arc": tok, "dmarc": eff.dmarc}
    return [name for name, word in judged.items() if word == INTERNAL]


# ---- hostile input ------------------------------------------------------------------

# What a sender writes: the characters that end or open things in our headers, controls,
# 8-bit and non-ASCII text, and long runs.
_HOSTILE = (
    st.text(alphabet='ab.-@;:"\\()<>=, \t\r\n\x00\x1b\x7f\x85\xa0é\u2028\U0001f600', max_size=80)
    | st.text(max_size=40)
    | st.builds(lambda n, c: c * n, st.integers(200, 3000), st.sampled_from(["a", '"', "; "]))
)
_WORDS = [*sorted(RESULTS), "", "PASS", "internal ", "x"]
_WORD = st.sampled_from(_WORDS) | _HOSTILE
_AAR = st.sampled_from([*sorted(AAR_RESULTS), "", "internal", "Pass"]) | _HOSTILE
_DOMAIN = st.sampled_from(["example.org", "EXAMPLE.org.", "élan.cyou", "_a.cyou", ""]) | _HOSTILE

_FACTS = st.builds(
    AuthFacts,
    spf=_WORD,
    helo_spf=_WORD,
    dkim=_WORD,
    arc=_WORD,
    dmarc=_WORD,
    dmarc_policy=st.sampled_from([*sorted(POLICIES), "REJECT", "x"]) | _HOSTILE,
    from_domain=_DOMAIN,
    mailfrom_domain=_DOMAIN,
    from_authenticated=st.booleans(),
    submission=st.booleans(),
    forwarded_by=st.sampled_from(["", "fwd.example"]),
    arc_trusted=st.booleans(),
    arc_oldest_spf=_AAR,
    arc_oldest_dkim=_AAR,
    arc_oldest_dmarc=_AAR,
)


# ---- the properties -------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(
    facts=_FACTS,
    authserv_id=_DOMAIN,
    verdict=st.sampled_from(["inbox", "junk", "quarantine", "", "Junk"]) | _HOSTILE,
    mode=st.sampled_from(["observe", "enforce", ""]) | _HOSTILE,
    reason=_HOSTILE,
    error=_HOSTILE,
    allowed=st.booleans(),
    user=_HOSTILE,
    delivery_id=st.sampled_from(["", "abc123", "ab c", "é1"]) | _HOSTILE,
    eol=st.sampled_from([b"\n", b"\r\n"]),
)
def test_x_authsieve_fields_as_before(
    facts: AuthFacts,
    authserv_id: str,
    verdict: str,
    mode: str,
    reason: str,
    error: str,
    allowed: bool,
    user: str,
    delivery_id: str,
    eol: bytes,
) -> None:
    args = (facts, authserv_id, verdict, mode, reason, error, allowed, user, delivery_id)
    old = old_render_header_value(*args)
    fields = render_header_fields(*args)
    assert render_header_value(*args) == old
    assert "; ".join(fields) == old
    # Folded from its fields, the header is byte for byte the old value folded.
    assert _split_outside_quotes(old) == fields
    assert fold_fields("X-Authsieve", fields, eol) == fold("X-Authsieve", old, eol)


_SPF_WORDS = st.sampled_from(
    ["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror", "internal", "x"]
)


@settings(max_examples=1500, deadline=None)
@given(
    result=st.builds(
        SpfResult,
        result=_SPF_WORDS,
        identity=st.sampled_from(["mailfrom", "helo", ""]) | _HOSTILE,
        domain=_DOMAIN,
        sender=_HOSTILE,
        client_ip=st.sampled_from(["192.0.2.1", "2001:db8::1", ""]) | _HOSTILE,
        helo=_HOSTILE,
        mechanism=st.sampled_from(["", "ip4:192.0.2.0/24", "-all"]) | _HOSTILE,
        explanation=_HOSTILE,
        reason=_HOSTILE,
    ),
    receiver=_DOMAIN,
    eol=st.sampled_from([b"\n", b"\r\n"]),
)
def test_received_spf_fields_as_before(result: SpfResult, receiver: str, eol: bytes) -> None:
    old = old_received_spf_header(result, receiver)
    fields = received_spf_fields(result, receiver)
    assert received_spf_header(result, receiver) == old
    assert _split_outside_quotes(old) == fields
    assert fold_fields("Received-SPF", fields, eol) == fold("Received-SPF", old, eol)


@settings(max_examples=1500, deadline=None)
@given(
    facts=_FACTS,
    suffixes=st.lists(
        st.sampled_from([".cyou", "CYOU.", "example", "", " a b"]) | _HOSTILE, max_size=3
    ),
)
def test_verdict_steps_as_before(facts: AuthFacts, suffixes: list[str]) -> None:
    eff = effective_results(facts)
    assert eff == old_effective_results(facts)
    assert internal_errors(facts, eff) == old_internal_errors(facts, eff)
    policy = Policy(blocked_domain_suffixes=tuple(suffixes))
    # The suffixes are normalised once per policy list now: the rules fire as they did.
    fired = fired_rules(facts, policy, eff)
    blocked = [r for r in fired if r[0] == "blocked_action"]
    expected = 0
    for domain in (eff.from_domain, eff.mailfrom_domain):
        norms = [normalize_suffix(s) for s in suffixes]
        if any(n and domain and (domain == n or domain.endswith("." + n)) for n in norms):
            expected += 1
    assert len(blocked) == expected


# ---- Authentication-Results ---------------------------------------------------------


def _old_spf_ar(report: CheckReport) -> AuthenticationResult:
    spf, env = report.spf, report.envelope
    if spf.identity == "helo" or not env.mail_from:
        name, value = "helo", env.helo
    else:
        name, value = "mailfrom", env.mail_from
    properties = [AuthenticationResultProperty("smtp", name, ar_value(value))] if value else []
    comment = ar_comment(f"domain of {spf.domain}") if spf.domain else None
    return SPFAuthenticationResult(result=spf.result, result_comment=comment, properties=properties)


def _old_dmarc_ar(report: CheckReport) -> AuthenticationResult:
    dm = report.dmarc
    not_evaluated = report.envelope.authenticated and dm.result == "none"
    properties = (
        [AuthenticationResultProperty("header", "from", ar_value(dm.from_domain))]
        if dm.from_domain
        else []
    )
    comment = None
    if dm.internal_error:
        comment = "internal error"
    if dm.policy:
        properties.append(AuthenticationResultProperty("policy", "dmarc", ar_value(dm.policy)))
        comment = ar_comment(
            f"p={dm.policy}" + (" testing" if dm.testing else "") + f" mode={dm.mode}"
        )
    return DMARCAuthenticationResult(
        result=dm.result,
        result_comment=comment,
        reason=(dm.reason or None) if not_evaluated else None,
        properties=properties,
    )


def old_authentication_results(report: CheckReport, authserv_id: str) -> str:
    results: list[AuthenticationResult] = []
    if report.envelope.authenticated:
        results.append(AuthenticationResult(method="auth", result="pass"))
    else:
        results.append(_old_spf_ar(report))
    for sig in report.dkim:
        # As since the attacker review: a reason with an "@" is quoted (annotate.ar_reason).
        reason = ar_reason(sig.reason) if sig.result != "pass" and sig.reason else None
        properties = []
        for name, value in (("d", sig.domain), ("s", sig.selector)):
            written = ar_value(value) if value else None
            if written:
                properties.append(AuthenticationResultProperty("header", name, written))
        for name, value in (("i", sig.identity), ("b", sig.b), ("a", sig.algorithm)):
            if value:
                properties.append(AuthenticationResultProperty("header", name, ar_value(value)))
        results.append(
            DKIMAuthenticationResult(result=sig.result, reason=reason, properties=properties)
        )
    if not report.dkim:
        results.append(DKIMAuthenticationResult(result="none"))
    arc_comment = None
    if report.arc.internal_error:
        arc_comment = "internal error"
    elif report.arc.sealers:
        arc_comment = ar_comment("sealed by " + ", ".join(report.arc.sealers))
    results.append(ARCAuthenticationResult(result=report.arc.result, result_comment=arc_comment))
    results.append(_old_dmarc_ar(report))
    header = AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    return header.header_value().strip()


# Few distinct domains, selectors and policies, so that kept clauses are met again with
# other values around them; and hostile ones.
_SMALL = st.sampled_from(["example.org", "Example.ORG", "sel1", "a b", "x@y", ""]) | _HOSTILE
_RESULT = st.sampled_from(["pass", "fail", "none", "permerror", "temperror", "neutral"])
_SIG = st.builds(
    DkimSignatureResult,
    result=_RESULT,
    domain=_SMALL,
    selector=_SMALL,
    # a= as the DKIM parser gives it: a word (a blank one authres cannot write at all)
    algorithm=st.sampled_from(["rsa-sha256", "ed25519-sha256", "", "RSA-SHA1", "x;y", "é"]),
    b=st.text(alphabet="AZaz09+/", max_size=8),
    identity=st.sampled_from(["@example.org", "@Example.ORG", "@x y", "@", '@"a;']) | _SMALL,
    bits=st.none(),
    reason=_HOSTILE,
    index=st.just(0),
)
_ENVELOPE = st.builds(
    Envelope,
    client_ip=st.sampled_from(["192.0.2.1", None]),
    helo=st.none() | _HOSTILE,
    rdns=st.none(),
    mail_from=st.none() | _HOSTILE,
    rcpt=st.none(),
    authenticated=st.booleans(),
    forwarded_by=st.none(),
    hop_index=st.none(),
    evidence=st.just(()),
)
_SPF = st.builds(
    SpfResult,
    result=_RESULT,
    identity=st.sampled_from(["mailfrom", "helo"]),
    domain=_SMALL,
    sender=st.just(""),
    client_ip=st.just(""),
    helo=st.just(""),
    mechanism=st.just(""),
    explanation=st.just(""),
    reason=st.just(""),
)
_ARC_RESULT = st.builds(
    ArcResult,
    result=_RESULT,
    instances=st.just(0),
    sealers=st.lists(_SMALL, max_size=3).map(tuple),
    oldest_results=st.just(""),
    oldest_spf=st.just(""),
    oldest_dkim=st.just(""),
    oldest_dmarc=st.just(""),
    reason=st.just(""),
    internal_error=st.booleans(),
)
_DMARC = st.builds(
    DmarcResult,
    result=st.sampled_from([Result.PASS, Result.FAIL, Result.NONE, "none", "permerror"]),
    policy=st.sampled_from(["", DmarcPolicy.REJECT, "quarantine", "none"]),
    from_domain=_SMALL,
    mode=st.sampled_from(["rfc9989", "rfc7489", "x (y)"]),
    testing=st.booleans(),
    reason=st.sampled_from(["", "not evaluated: x"]) | _HOSTILE,
    internal_error=st.booleans(),
)
_REPORT = st.builds(
    CheckReport,
    envelope=_ENVELOPE,
    spf=_SPF,
    helo_spf=_SPF,
    dkim=st.lists(_SIG, max_size=3).map(tuple),
    arc=_ARC_RESULT,
    dmarc=_DMARC,
    from_address=st.just(""),
    dns_queries=st.just(0),
)


def _outcome(write: Callable[[], str]) -> str:
    try:
        return write()
    except Exception as exc:  # a value authres cannot write fails as it failed before
        return f"raised {type(exc).__name__}"


@settings(max_examples=2000, deadline=None)
@given(report=_REPORT, authserv_id=st.sampled_from(["mx.example.org", "MX.Example.ORG."]))
def test_authentication_results_as_before(report: CheckReport, authserv_id: str) -> None:
    old = _outcome(lambda: old_authentication_results(report, authserv_id))
    # Twice: the second time from the kept clauses.
    assert _outcome(lambda: authentication_results(report, authserv_id)) == old
    assert _outcome(lambda: authentication_results(report, authserv_id)) == old


def old_fold(name: str, value: str, eol: bytes) -> bytes:
    parts = _split_outside_quotes(value)
    lines: list[str] = []
    line = f"{name}: {parts[0]}"
    for part in parts[1:]:
        if len(line) + len(part) > 74:
            lines.append(line)
            line = "\t" + part
        else:
            line = f"{line}; {part}"
    lines.append(line)
    end = eol.decode("utf-8", "surrogateescape")
    return (f";{end}".join(lines) + end).encode("utf-8", "surrogateescape")


@settings(max_examples=2000, deadline=None)
@given(
    name=st.sampled_from(["X-Authsieve", "Authentication-Results", "Received-SPF", ""]),
    value=st.text(alphabet='ab; "\\\t\r\n()=é\udc80', max_size=400)
    | st.lists(st.text(alphabet='ab "\\=é\udcff', max_size=90), min_size=1, max_size=30).map(
        "; ".join
    ),
    eol=st.sampled_from([b"\n", b"\r\n"]),
)
def test_fold_as_before(name: str, value: str, eol: bytes) -> None:
    assert fold(name, value, eol) == old_fold(name, value, eol)


# ---- facts_from -----------------------------------------------------------------------


def old_facts_from(report: CheckReport, trusted_arc_sealers: tuple[str, ...] = ()) -> AuthFacts:
    env = report.envelope
    dmarc = report.dmarc
    from_domain = dmarc.from_domain
    if not from_domain and report.from_address:
        domains, _ = from_domains([report.from_address])
        from_domain = domains[0] if domains else ""
    sealers = tuple(s.lower() for s in report.arc.sealers)
    arc_trusted = report.arc.result == "pass" and bool(sealers)
    if arc_trusted:
        trusted = {s.lower().rstrip(".") for s in trusted_arc_sealers}
        arc_trusted = all(s in trusted for s in sealers)
    passing = [d for d in report.dkim if d.result == "pass"]
    dkim_evidence = "; ".join(
        f"{d.result} d={d.domain} s={d.selector}" + (f" ({d.reason})" if d.reason else "")
        for d in report.dkim
    )
    dkim_word = report.dkim_result
    if dkim_word != "pass" and any(d.internal_error for d in report.dkim):
        dkim_word = INTERNAL
    return AuthFacts(
        spf=report.spf.result,
        helo_spf=report.helo_spf.result,
        dkim=dkim_word,
        arc=INTERNAL if report.arc.internal_error else report.arc.result,
        dmarc=INTERNAL if dmarc.internal_error else dmarc.result,
        dmarc_policy=dmarc.policy if dmarc.result == "fail" else (dmarc.policy or ""),
        from_domain=from_domain,
        mailfrom_domain=env.mail_from_domain,
        from_address=report.from_address,
        mailfrom=env.mail_from or "",
        from_authenticated=not dmarc.internal_error
        and (dmarc.result == "pass" or dmarc.spf_aligned or dmarc.dkim_aligned),
        submission=env.authenticated,
        forwarded_by=env.forwarded_by or "",
        arc_trusted=arc_trusted,
        arc_oldest_spf=report.arc.oldest_spf,
        arc_oldest_dkim=report.arc.oldest_dkim,
        arc_oldest_dmarc=report.arc.oldest_dmarc,
        arc_sealers=sealers,
        evidence={
            "envelope": env.evidence[-1] if env.evidence else "",
            "spf": report.spf.reason,
            "helo_spf": report.helo_spf.reason,
            "dkim": dkim_evidence or "no DKIM signature",
            "dkim_pass": ", ".join(d.domain for d in passing),
            "arc": report.arc.reason,
            "dmarc": dmarc.reason,
        },
    )


@settings(max_examples=1500, deadline=None)
@given(
    report=_REPORT.flatmap(
        lambda r: st.builds(
            lambda a, d, addr, ie: replace(
                r,
                arc=replace(r.arc, result=a),
                dkim=tuple(replace(s, internal_error=ie) for s in r.dkim),
                from_address=addr,
                dmarc=replace(r.dmarc, from_domain=d),
            ),
            st.sampled_from(["pass", "fail", "none"]),
            st.sampled_from(["", "example.org"]) | _HOSTILE,
            st.sampled_from(["", "ann@example.org", "x@élan.cyou"]) | _HOSTILE,
            st.booleans(),
        )
    ),
    sealers=st.lists(_SMALL, max_size=3).map(tuple),
)
def test_facts_from_as_before(report: CheckReport, sealers: tuple[str, ...]) -> None:
    new, old = facts_from(report, sealers), old_facts_from(report, sealers)
    assert new == old
    assert new.evidence == old.evidence


def _old_allowed_entry(facts: AuthFacts, policy: Policy, eff: EffectiveResults) -> str:
    if not eff.from_authenticated or not eff.from_domain:
        return ""
    address = facts.from_address.strip().lower()
    _, _, addr_domain = address.rpartition("@")
    for entry in policy.allow_senders:
        parts = split_sender(entry)
        if parts is None:
            continue
        local, domain = parts
        if domain != eff.from_domain or addr_domain != domain:
            continue
        if not local or address == f"{local}@{domain}":
            return entry
    return ""


def old_decide(facts: AuthFacts, policy: Policy) -> Verdict:
    eff = effective_results(facts)
    reasons = _context(facts, eff)
    if facts.submission:
        reasons.append("Submitted by our own user (SMTP AUTH): not judged by SPF, DKIM or DMARC")
        return _finish(policy, Action.INBOX, reasons)
    entry = _old_allowed_entry(facts, policy, eff)
    if entry:
        reasons.append(f"Allowed sender {entry}: From {facts.from_address} is authenticated")
        return _finish(policy, Action.INBOX, reasons, allowed=entry)
    rules = fired_rules(facts, policy, eff)
    filing = sorted((r for r in rules if r[1] != Action.INBOX), key=lambda r: -r[1].severity)
    would_be = filing[0][1] if filing else Action.INBOX
    reasons.extend(f"{text} ({key} = {action})" for key, action, text in filing)
    if not filing:
        temp = [n for n in ("spf", "dkim", "dmarc") if getattr(eff, n) == "temperror"]
        summary = f"SPF {eff.spf}, DKIM {eff.dkim}, DMARC {eff.dmarc}"
        failed = internal_errors(facts, eff)
        if failed:
            reasons.append(
                f"{summary}: an internal error ({', '.join(failed)}) files no mail under "
                "internal_error = inbox, and no other rule files this message"
            )
        elif temp:
            reasons.append(
                f"{summary}: a temporary DNS failure ({', '.join(temp)}) "
                "never files mail on its own"
            )
        else:
            reasons.append(f"{summary}: no rule files this message")
    return _finish(policy, would_be, reasons)


_ACTION = st.sampled_from(list(Action))


@settings(max_examples=1500, deadline=None)
@given(
    facts=_FACTS,
    evidence=st.dictionaries(
        st.sampled_from(["spf", "dkim", "dmarc", "arc", "envelope"]), _HOSTILE, max_size=5
    ),
    from_address=st.sampled_from(["", "ann@example.org", "bob@EXAMPLE.org"]) | _HOSTILE,
    allow=st.lists(st.sampled_from(["@example.org", "ann@example.org", "x", " "]), max_size=3),
    actions=st.tuples(_ACTION, _ACTION, _ACTION, _ACTION, _ACTION, _ACTION, _ACTION),
    mode=st.sampled_from(["enforce", "observe"]),
)
def test_decide_as_before(
    facts: AuthFacts,
    evidence: dict[str, str],
    from_address: str,
    allow: list[str],
    actions: tuple[Action, ...],
    mode: str,
) -> None:
    facts = replace(facts, evidence=evidence, from_address=from_address)
    keys = (
        "spf_fail",
        "spf_softfail",
        "dkim_fail",
        "dmarc_reject",
        "dmarc_quarantine",
        "dmarc_permerror",
        "internal_error",
    )
    policy = Policy(
        mode=Mode(mode),
        allow_senders=tuple(allow),
        blocked_domain_suffixes=(".cyou", "org"),
        **dict(zip(keys, actions, strict=True)),
    )
    assert decide(facts, policy) == old_decide(facts, policy)


@settings(max_examples=300, deadline=None)
@given(name=_DOMAIN, pad=st.integers(0, 400))
def test_long_names_are_not_kept_and_judged_the_same(name: str, pad: int) -> None:
    # A name longer than any DNS name is worked out each time, with the same answer.
    long = "a" * pad + name
    assert _domain_problem(long) == _check_domain(long)
    assert _safe_domain(long) == safe_domain(long)
    assert _safe_domain(long) == _safe_domain(long)
