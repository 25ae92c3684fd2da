"""The verdict for one message: inbox, junk or quarantine, with the reasons a person reads.

`decide` is the one place where results meet policy.  It reads only what the
X-Authsieve header carries (`classifier.auth.facts.render_header_value`), in the
same normalised form, because the Sieve script compiled from the same policy
(`sieve.generate`) recomputes the verdict from that header and both must
reach the same folder.  Precedence, most decisive first:

1. a message submitted by our own user (SMTP AUTH) goes to the inbox;
2. an allow-listed sender goes to the inbox, but only when the From domain is
   authenticated (DMARC pass, or SPF/DKIM pass aligned with From; or, under
   a trusted ARC chain, DMARC pass in the oldest ARC Authentication-Results);
3. otherwise every rule that fires proposes an action and the most severe wins
   (quarantine > junk > inbox).  A temperror fires no rule.  An internal error
   (the result word ``internal``) fires ``internal_error``, and never hides
   another rule: a check that raised is not a temperror.

Under a trusted ARC chain (`AuthFacts.arc_trusted`: the chain passed and its
sealers are in ``trusted_arc_sealers``) the SPF, DKIM and DMARC results are
those of the oldest ARC Authentication-Results, i.e. what the first sealer
saw before forwarding broke them; a result absent there keeps the local one.
A trusted forwarder is stepped over by the envelope step, so the results
already describe the hop that handed the message to it; the reasons say so.
In observe mode the action is inbox and `would_be` holds the enforce answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from classifier.auth.facts import (
    AAR_RESULTS,
    INTERNAL,
    POLICIES,
    RESULTS,
    AuthFacts,
    render_header_value,
)
from classifier.names import safe_domain
from classifier.policies import (
    SPF_RULES,
    Policy,
    normalize_suffix,
    split_sender,
    suffix_matches,
)
from classifier.vocab import DMARC_POLICY_OF, Action, DmarcPolicy, Mode


@dataclass(frozen=True)
class Verdict:
    """Where the message goes, what enforce mode would do, and why."""

    action: Action  # what happens now
    would_be: Action  # the enforce-mode action (equals action unless observe)
    observe: bool
    reasons: tuple[str, ...]
    allowed: str = ""  # the allow_senders entry that let the message through, or ""

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "reasons": list(self.reasons),
            "observe": self.observe,
            "would_be": self.would_be,
            "allowed": self.allowed,
        }


@dataclass(frozen=True)
class EffectiveResults:
    """The results a policy judges, after a trusted ARC chain replaced the local ones."""

    spf: str
    dkim: str
    dmarc: str
    dmarc_policy: DmarcPolicy
    from_domain: str
    mailfrom_domain: str
    from_authenticated: bool
    arc_used: tuple[str, ...]  # which results came from the oldest ARC Authentication-Results

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "arc_used": list(self.arc_used)}


# Keyed on a From or MAIL FROM domain: the domains that send mail recur.  A text longer
# than any domain is not kept (it is no domain: "").
_safe_domain_of = lru_cache(maxsize=4096)(safe_domain)


def _safe_domain(text: str) -> str:
    return _safe_domain_of(text) if len(text) <= 320 else safe_domain(text)


def _token(value: str) -> str:
    # Exactly what render_header_value writes, so Python and Sieve judge the same word.
    return value if value in RESULTS else "none"


def effective_results(facts: AuthFacts) -> EffectiveResults:
    """Gives the results to judge: local ones, or the oldest ARC ones under a trusted chain.

    RFC 8617 §7.2: a receiver may use the Authentication-Results recorded by
    a sealer it trusts to override its own local failures.
    """
    spf, dkim, dmarc = _token(facts.spf), _token(facts.dkim), _token(facts.dmarc)
    used: tuple[str, ...] = ()
    if facts.arc_trusted:
        oldest = (
            ("spf", facts.arc_oldest_spf),
            ("dkim", facts.arc_oldest_dkim),
            ("dmarc", facts.arc_oldest_dmarc),
        )
        used = tuple(name for name, value in oldest if value in AAR_RESULTS)
        spf = facts.arc_oldest_spf if "spf" in used else spf
        dkim = facts.arc_oldest_dkim if "dkim" in used else dkim
        dmarc = facts.arc_oldest_dmarc if "dmarc" in used else dmarc
    known = facts.dmarc_policy in POLICIES and facts.dmarc_policy
    policy = DMARC_POLICY_OF[facts.dmarc_policy] if known else DmarcPolicy.NONE
    return EffectiveResults(
        spf=spf,
        dkim=dkim,
        dmarc=dmarc,
        dmarc_policy=policy,
        from_domain=_safe_domain(facts.from_domain),
        mailfrom_domain=_safe_domain(facts.mailfrom_domain),
        from_authenticated=facts.from_authenticated
        or (facts.arc_trusted and facts.arc_oldest_dmarc == "pass"),
        arc_used=used,
    )


def allowed_entry(facts: AuthFacts, policy: Policy, eff: EffectiveResults) -> str:
    """Gives the allow_senders entry that lets this message through, or "".

    The entry must name the From address (or its domain), that domain must be
    the From domain the checks authenticated, and it must be authenticated:
    a forged allow-listed From gets no free pass (RFC 7489 §3.1 alignment).
    """
    if not policy.allow_senders or not eff.from_authenticated or not eff.from_domain:
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


def _sentence(prefix: str, evidence: str) -> str:
    evidence = " ".join(evidence.split())
    if not evidence:
        return prefix
    if evidence.lower().startswith(prefix.lower()):
        return evidence
    return f"{prefix}: {evidence}"


def fired_rules(
    facts: AuthFacts, policy: Policy, eff: EffectiveResults
) -> list[tuple[str, Action, str]]:
    """Gives (policy key, action, sentence) for every rule that fires on these results."""
    ev = facts.evidence
    arc_note = " (oldest ARC Authentication-Results)"
    out: list[tuple[str, Action, str]] = []
    if eff.spf in SPF_RULES:
        key = f"spf_{eff.spf}"
        if "spf" in eff.arc_used:
            text = f"SPF {eff.spf}{arc_note}"
        else:
            text = _sentence(f"SPF {eff.spf}", ev.get("spf", ""))
        out.append((key, policy.action_for(key), text))
    if eff.dkim == "fail":
        if "dkim" in eff.arc_used:
            text = f"DKIM fail{arc_note}"
        else:
            text = _sentence("DKIM fail, no signature passed", ev.get("dkim", ""))
        out.append(("dkim_fail", policy.action_for("dkim_fail"), text))
    if eff.dmarc == "fail":
        key = f"dmarc_{eff.dmarc_policy}"
        prefix = f"DMARC fail under p={eff.dmarc_policy}"
        if "dmarc" in eff.arc_used:
            text = prefix + arc_note
        else:
            text = _sentence(prefix, ev.get("dmarc", ""))
        out.append((key, policy.action_for(key), text))
    if eff.dmarc == "permerror":
        prefix = "DMARC permerror"
        if "dmarc" in eff.arc_used:
            text = prefix + arc_note
        else:
            text = _sentence(prefix, ev.get("dmarc", ""))
        out.append(("dmarc_permerror", policy.action_for("dmarc_permerror"), text))
    failed = internal_errors(facts, eff)
    if failed:
        details = "; ".join(ev.get(name, "") for name in failed if ev.get(name))
        text = _sentence(f"Internal error in the {', '.join(failed)} check", details)
        out.append(("internal_error", policy.action_for("internal_error"), text))
    suffixes = _normalized_suffixes(tuple(policy.blocked_domain_suffixes))
    for label, domain in (("From", eff.from_domain), ("Envelope sender", eff.mailfrom_domain)):
        for norm in suffixes:
            if suffix_matches(domain, norm):
                text = f"{label} domain {domain} ends in .{norm} (blocked)"
                out.append(("blocked_action", policy.action_for("blocked_action"), text))
                break
    return out


@lru_cache(maxsize=64)  # keyed on a policy's list: a handful of policies, every message
def _normalized_suffixes(suffixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(normalize_suffix(suffix) for suffix in suffixes)


def internal_errors(facts: AuthFacts, eff: EffectiveResults) -> list[str]:
    """Gives the checks whose judged result is an internal error (spf, dkim, arc, dmarc)."""
    if INTERNAL not in (eff.spf, eff.dkim, eff.dmarc, facts.arc):
        return []  # the usual case, told without building the table
    judged = {"spf": eff.spf, "dkim": eff.dkim, "arc": _token(facts.arc), "dmarc": eff.dmarc}
    return [name for name, word in judged.items() if word == INTERNAL]


def _context(facts: AuthFacts, eff: EffectiveResults) -> list[str]:
    notes: list[str] = []
    if facts.forwarded_by:
        notes.append(
            f"Forwarded by {facts.forwarded_by} (trusted forwarder): judged on the hop "
            "that handed the message to it"
        )
    if eff.arc_used:
        sealers = ", ".join(facts.arc_sealers) or "trusted sealers"
        used = ", ".join(eff.arc_used)
        notes.append(
            f"ARC chain sealed by {sealers} (trusted): {used} judged on the oldest ARC "
            "Authentication-Results"
        )
    return notes


def _finish(policy: Policy, would_be: Action, reasons: list[str], allowed: str = "") -> Verdict:
    observe = policy.mode == Mode.OBSERVE
    if observe and would_be != Action.INBOX:
        reasons = [*reasons, f"Observe mode: delivered to INBOX, enforce mode would {would_be}"]
    return Verdict(
        action=Action.INBOX if observe else would_be,
        would_be=would_be,
        observe=observe,
        reasons=tuple(reasons),
        allowed=allowed,
    )


def decide(facts: AuthFacts, policy: Policy, eff: EffectiveResults | None = None) -> Verdict:
    """Gives the verdict of policy on these facts (README "Policy"; RFC 7489 §6.6.2).

    `eff` is `effective_results(facts)` when the caller has it already.
    """
    if eff is None:
        eff = effective_results(facts)
    reasons = _context(facts, eff)
    if facts.submission:
        reasons.append("Submitted by our own user (SMTP AUTH): not judged by SPF, DKIM or DMARC")
        return _finish(policy, Action.INBOX, reasons)
    entry = allowed_entry(facts, policy, eff)
    if entry:
        reasons.append(f"Allowed sender {entry}: From {facts.from_address} is authenticated")
        return _finish(policy, Action.INBOX, reasons, allowed=entry)
    rules = fired_rules(facts, policy, eff)
    filing = [r for r in rules if r[1] != Action.INBOX]
    if len(filing) > 1:  # most severe first; the sort is stable: rule order among equals
        filing.sort(key=lambda r: -r[1].severity)
    would_be = filing[0][1] if filing else Action.INBOX  # the most severe action that fired
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


def failed_checks(policy: Policy, authserv_id: str, error: str) -> tuple[Verdict, str]:
    """Gives the verdict and X-Authsieve value of a message whose checks could not run.

    Not a temperror (which files nothing): the policy's ``internal_error``
    decides, and the Sieve script reads the same words from the header.
    """
    failed = AuthFacts(spf=INTERNAL, dkim=INTERNAL, arc=INTERNAL, dmarc=INTERNAL)
    verdict = decide(failed, policy)
    reasons = "; ".join(verdict.reasons)
    value = render_header_value(
        failed, authserv_id, verdict.action, policy.mode, reasons, error=error, user=policy.user
    )
    return verdict, value
