"""Aggregate-report rows per delivered message and Author Domain: the results in RFC 9990's terms.

`rows_from` is a pure function of an `Evaluation` and the delivery time: the
delivery paths (`authsieve pipe`, `serve`, the Maildir watcher) hand it what
they decided, and `classifier.aggregate.store` writes what it gives back.

Only what RFC 9990 §2.1 lists is kept: the source IP, domains (RFC5322.From,
RFC5321.MailFrom or HELO, RFC5321.RcptTo), DKIM domains and selectors, the
results, the policy published and the disposition applied.  No local part, no
subject, no Message-ID: a row never names a person (RFC 9990 §7.2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from classifier import vocab
from classifier.auth.dmarc_record import DmarcRecord, parse_record
from classifier.names import safe_domain
from classifier.vocab import AAR_RESULTS, Result

if TYPE_CHECKING:
    from classifier.auth.dmarc import DmarcResult
    from classifier.evaluate import Evaluation

# RFC 9990 Appendix A, ActionDispositionType: what the receiver did.
DISPOSITIONS = ("none", "pass", "quarantine", "reject")
# RFC 9990 §2.1.5 (Policy Override Reason), PolicyOverrideType.
OVERRIDE_TYPES = ("local_policy", "mailing_list", "other", "policy_test_mode", "trusted_forwarder")
# RFC 8601 §2.7.1 / §2.7.2 words an aggregate report may carry (RFC 9990 Appendix A,
# DKIMResultType and SPFResultType, which has "policy" too).
DKIM_RESULTS = frozenset(AAR_RESULTS - {Result.SOFTFAIL})
SPF_RESULTS = frozenset({*vocab.SPF_RESULTS, Result.POLICY})


@dataclass(frozen=True, slots=True)
class DkimEntry:
    """One DKIM signature as a report lists it (RFC 9990 Appendix A, DKIMAuthResultType)."""

    domain: str
    selector: str
    result: str


@dataclass(frozen=True, slots=True)
class Override:
    """Why the disposition differs from the published policy (RFC 9990 §2.1.5)."""

    type: str
    comment: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportRow:
    """One message for one Author Domain, as the report store keeps it."""

    received_at: int  # seconds since the epoch, UTC
    source_ip: str
    header_from: str  # the Author Domain (RFC5322.From)
    envelope_from: str  # RFC5321.MailFrom domain; "" for the null reverse-path
    envelope_to: str  # RFC5321.RcptTo domain
    spf_domain: str
    spf_scope: str  # "mfrom" or "helo"
    spf_result: str
    dkim: tuple[DkimEntry, ...]
    dmarc_result: str  # "pass" or "fail"
    dkim_aligned: bool
    spf_aligned: bool
    policy_domain: str  # where the DMARC Policy Record was found, without "_dmarc."
    discovery_method: str  # "treewalk" (RFC 9989) or "psl" (RFC 7489)
    p: str
    sp: str
    np: str  # "" when the record has no np=
    adkim: str
    aspf: str
    testing: str  # "y" or "n"
    policy_applied: str  # the policy that applied to this message after t=y / pct
    disposition: str  # one of DISPOSITIONS
    reasons: tuple[Override, ...]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def disposition_of(action: str, dmarc_result: str, policy_applied: str) -> str:
    """Gives the RFC 9990 disposition for our verdict (Appendix A, ActionDispositionType).

    We never reject: Junk and the Quarantine folder are both "quarantine" (RFC
    9989 §4.7 p=quarantine: treat as suspicious); INBOX is "pass" when the
    message passed DMARC under an enforcing policy, else "none".
    """
    if action in ("junk", "quarantine"):
        return "quarantine"
    if dmarc_result == "pass" and policy_applied in ("quarantine", "reject"):
        return "pass"
    return "none"


def overrides_of(
    evaluation: Evaluation, disposition: str, published: str, dm: DmarcResult | None = None
) -> tuple[Override, ...]:
    """Gives the reasons the disposition differs from what the policy asks (RFC 9990 §2.1.5).

    `dm` is one Author Domain's result (default: the message's).  Comments are
    fixed words and domains only: verdict reasons can quote what a sender
    wrote, so they never reach a report.
    """
    facts, verdict = evaluation.facts, evaluation.verdict
    dm = dm or evaluation.report.dmarc
    asked = published if dm.result == "fail" and published in ("quarantine", "reject") else "none"
    acted = "none" if disposition == "pass" else disposition
    if acted == asked:
        return ()
    if acted == "quarantine" and asked == "none":
        return (Override("local_policy", f"filed to {verdict.action} by local policy"),)
    out: list[Override] = []
    if dm.testing and dm.policy != published:
        out.append(Override("policy_test_mode", "t=y" if dm.pct is None else f"pct={dm.pct}"))
    if facts.forwarded_by:
        out.append(Override("trusted_forwarder", safe_domain(facts.forwarded_by)))
    if facts.arc_trusted:
        sealers = ", ".join(d for d in (safe_domain(s) for s in facts.arc_sealers) if d)
        out.append(Override("local_policy", f"trusted ARC sealer {sealers}".strip()))
    if verdict.observe:
        out.append(Override("local_policy", "observe mode"))
    if verdict.allowed:
        out.append(Override("local_policy", "sender allow list"))
    if not out:
        # Our own policy filed it more gently than asked; a reject becomes at most a folder.
        out.append(Override("local_policy", f"filed to {verdict.action}, never rejected"))
    return tuple(out)


def _policy_domain(record_domain: str) -> str:
    name = record_domain.rstrip(".").lower()
    return safe_domain(name.removeprefix("_dmarc."))


def rows_from(evaluation: Evaluation, received_at: int) -> tuple[ReportRow, ...]:
    """Gives the report rows for one evaluated message: one per Author Domain with a verdict.

    A report is for a Policy Domain (RFC 9990 §2.1): a From naming several
    Author Domains gives a row for each that was evaluated, in the report of
    its own Policy Domain; one whose Author Domain has no DMARC Policy Record,
    whose check ended in temperror or permerror, or a message our own user
    submitted, gives none.
    """
    report = evaluation.report
    if report.envelope.authenticated or not report.envelope.client_ip:
        return ()
    authors = report.dmarc.authors or (report.dmarc,)
    rows = (_row_for(evaluation, dm, received_at) for dm in authors)
    return tuple(r for r in rows if r is not None)


def _row_for(evaluation: Evaluation, dm: DmarcResult, received_at: int) -> ReportRow | None:
    """Gives one Author Domain's row, or None when DMARC reached no verdict for it."""
    report = evaluation.report
    env = report.envelope
    if dm.result not in ("pass", "fail"):
        return None
    record = parse_record(dm.record, dm.mode)
    header_from, policy_domain = safe_domain(dm.from_domain), _policy_domain(dm.record_domain)
    if not isinstance(record, DmarcRecord) or not header_from or not policy_domain:
        return None
    published = dm.published_policy or dm.policy
    disposition = disposition_of(evaluation.verdict.action, dm.result, dm.policy)
    spf = report.spf
    # d= and s= are sender-chosen: only plain DNS names reach a report.
    dkim = tuple(
        DkimEntry(
            safe_domain(s.domain),
            safe_domain(s.selector),
            s.result if s.result in DKIM_RESULTS else "none",
        )
        for s in report.dkim
        if safe_domain(s.domain)
    )
    p = record.p or "none"
    return ReportRow(
        received_at=received_at,
        source_ip=env.client_ip or "",
        header_from=header_from,
        envelope_from=safe_domain(env.mail_from_domain),
        envelope_to=safe_domain((env.rcpt or "").rpartition("@")[2]),
        spf_domain=safe_domain(spf.domain),
        spf_scope="helo" if spf.identity == "helo" else "mfrom",
        spf_result=spf.result if spf.result in SPF_RESULTS else "temperror",
        dkim=dkim,
        dmarc_result=dm.result,
        dkim_aligned=dm.dkim_aligned,
        spf_aligned=dm.spf_aligned,
        policy_domain=policy_domain,
        discovery_method="psl" if dm.mode == "rfc7489" else "treewalk",
        p=p,
        sp=record.sp or p,
        np=record.np or "",
        adkim=record.adkim,
        aspf=record.aspf,
        testing="y" if record.testing else "n",
        policy_applied=dm.policy or "none",
        disposition=disposition,
        reasons=overrides_of(evaluation, disposition, published, dm),
    )
