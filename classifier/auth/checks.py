"""All checks of one message, combined: envelope, SPF, HELO SPF, DKIM, ARC and DMARC.

`run_checks` is a function of values (message bytes, settings, hints) whose
only effect is DNS, through the one resolver it is given.  `facts_from`
turns the report into the `AuthFacts` that a policy decides on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from classifier.auth.arc import ArcResult, check_arc
from classifier.auth.arc import key_names as arc_key_names
from classifier.auth.dmarc import (
    DmarcResult,
    check_dmarc,
    discover_first,
    from_domains,
    record_names,
)
from classifier.auth.facts import INTERNAL, AuthFacts
from classifier.auth.fromheader import first_mailbox
from classifier.auth.spf import SpfResult, check_helo_spf, check_spf, record_domains
from classifier.config import Settings
from classifier.envelope.trust import Envelope, Hints, recover_envelope
from classifier.errors import TempError
from classifier.lookup.resolver import DnsSession, Resolver
from classifier.message import Message
from classifier.trusted import TrustMatcher
from classifier.vocab import Result

if TYPE_CHECKING:
    from classifier.auth.dkim import DkimSignatureResult, Signatures


@cache
def _dkim() -> ModuleType:
    """Gives classifier.auth.dkim, imported at the first signed message.

    dkimpy and the cryptography load for a signed message only (most pipe processes
    start for one message).  Kept: an import statement costs a signed message about
    6 k instructions each time, even with the module loaded.
    """
    import classifier.auth.dkim

    return classifier.auth.dkim


class CheckAbandoned(TempError):
    """The checks of a message stopped: its deadline passed, or its client went away."""


def _never() -> bool:
    return False


class Deadline(NamedTuple):
    """When the checks of one message must stop: a `time.monotonic()` value and a hang-up test.

    The checks ask between steps (before each DKIM signature, ARC and DMARC),
    and the DNS budget ends with it, so SPF's lookups stop too: work nobody
    waits for any more stops soon after the deadline instead of running on.
    """

    at: float
    abandoned: Callable[[], bool] = _never  # e.g. the client closed its connection

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self, step: str) -> None:
        """Raises CheckAbandoned when the deadline passed or the client went away."""
        if self.left() <= 0:
            raise CheckAbandoned(f"deadline passed before {step}")
        if self.abandoned():
            raise CheckAbandoned(f"client gone before {step}")


@dataclass(frozen=True)
class CheckReport:
    """Every result for one message, each carrying its own evidence."""

    envelope: Envelope
    spf: SpfResult
    helo_spf: SpfResult
    dkim: tuple[DkimSignatureResult, ...]
    arc: ArcResult
    dmarc: DmarcResult
    from_address: str
    dns_queries: int
    # The message as parsed once for every step (annotate reads it again for nothing).
    message: Message | None = field(default=None, compare=False, repr=False)

    @property
    def dkim_result(self) -> str:
        """Gives the one DKIM word for the message (pass when any signature passed)."""
        if not self.dkim:
            return "none"  # unsigned: the DKIM module need not be loaded to say so
        summary: str = _dkim().dkim_summary(self.dkim)
        return summary

    def to_dict(self) -> dict[str, object]:
        return {
            "envelope": self.envelope.to_dict(),
            "spf": self.spf.to_dict(),
            "helo_spf": self.helo_spf.to_dict(),
            "dkim": [d.to_dict() for d in self.dkim],
            "arc": self.arc.to_dict(),
            "dmarc": self.dmarc.to_dict(),
            "dns_queries": self.dns_queries,
        }


SUBMISSION_NOT_EVALUATED = "not evaluated: submitted by our own authenticated user (SMTP AUTH)"


def _dmarc_not_evaluated(from_values: list[str], mode: str) -> DmarcResult:
    """Gives DMARC "none" for a message our own user submitted: nothing was evaluated.

    DMARC protects receivers from mail that claims a domain it cannot prove;
    a submission is judged by its SMTP AUTH instead (docs/design.md "The trust rule"
    5) and SPF was not applied, so a DMARC "fail" would report checks never
    made.  The From domain is still read, for the header.
    """
    domains, _ = from_domains(from_values)
    return DmarcResult(
        result=Result.NONE,
        from_domain=domains[0] if domains else "",
        mode=mode,
        reason=SUBMISSION_NOT_EVALUATED,
    )


def _not_checked(identity: str, envelope: Envelope, reason: str) -> SpfResult:
    return SpfResult(
        result=Result.NONE,
        identity=identity,
        domain="",
        sender=envelope.mail_from or "",
        client_ip=envelope.client_ip or "",
        helo=envelope.helo or "",
        mechanism="",
        explanation=reason,
        reason=reason,
    )


def first_from_address(message: Message) -> str:
    """Gives the address of the first From mailbox, lower-cased ("" when there is none)."""
    return first_mailbox(message.get_all("From"))


def run_checks(
    data: bytes,
    settings: Settings,
    resolver: Resolver,
    hints: Hints | None = None,
    trust: TrustMatcher | None = None,
    deadline: Deadline | None = None,
) -> CheckReport:
    """Gives every check's result for one delivered message (RFC 7208, 6376, 8617, 7489/9989).

    `trust` is the matcher of the recipient policy's forwarders (`Settings.trust_for`);
    None: the engine's own lists.  `deadline`: raises CheckAbandoned once it passes.
    """
    message = Message.parse(data)
    envelope = recover_envelope(message, trust or settings.trust, hints)
    signatures = None
    # dkimpy and the cryptography load for a signed message only (most pipe processes
    # start for one message); a header block dkimpy reads itself (not clean) may hide one.
    if "dkim-signature" in message.field_keys() or not message.clean:
        signatures = _dkim().read_signatures(message)
    budget = settings.dns_budget
    if deadline is not None:
        deadline.check("the checks")
        budget = min(budget, deadline.left())
    dns = resolver.session(budget)
    try:
        return _run(message, envelope, signatures, settings, dns, deadline)
    finally:
        dns.close()


def _no_step(_step: str) -> None:
    return None


def _run(
    message: Message,
    envelope: Envelope,
    signatures: Signatures | None,
    settings: Settings,
    dns: DnsSession,
    deadline: Deadline | None = None,
) -> CheckReport:
    step = deadline.check if deadline is not None else _no_step
    receiver = settings.authserv_id
    spf_applies = bool(envelope.client_ip) and not envelope.authenticated
    # The first record of every check is known now: asking for all of them at once lets
    # their round trips overlap; each check then reads its reply (or the cache) as before.
    keys = signatures.key_names() if signatures is not None else []
    first = [(name, "TXT") for name in keys + arc_key_names(message)]
    from_values = message.get_all("From")
    if not envelope.authenticated:
        first += [(name, "TXT") for name in record_names(from_values)]
    if spf_applies:
        first += [(d, "TXT") for d in record_domains(envelope.mail_from, envelope.helo or "")]
    dns.send_ahead(first)
    discovered = {}
    if not envelope.authenticated:
        # The policy is read before any lookup the sender chooses can spend the budget.
        discovered = discover_first(from_values, dns, settings.dmarc_mode)

    if envelope.authenticated:
        spf = _not_checked("mailfrom", envelope, "authenticated submission: SPF not applied")
        helo_spf = _not_checked("helo", envelope, "authenticated submission: SPF not applied")
    elif not envelope.client_ip:
        reason = "no SMTP client from outside found in the Received headers"
        spf = _not_checked("mailfrom", envelope, reason)
        helo_spf = _not_checked("helo", envelope, reason)
    else:
        helo = envelope.helo or ""
        helo_spf = check_helo_spf(envelope.client_ip, helo, dns, receiver=receiver)
        if envelope.mail_from is None:
            spf = _not_checked("mailfrom", envelope, "envelope sender unknown")
        elif envelope.mail_from == "":
            # RFC 7208 §2.4: a null reverse-path is checked as postmaster@HELO.
            spf = helo_spf
        else:
            spf = check_spf(envelope.client_ip, envelope.mail_from, helo, dns, receiver=receiver)

    dkim: tuple[DkimSignatureResult, ...] = ()
    if signatures is not None:
        step("DKIM")
        dkim = _dkim().verify_signatures(signatures, dns, step=step)
    step("ARC")
    arc = check_arc(message, dns)
    step("DMARC")
    if envelope.authenticated:
        dmarc = _dmarc_not_evaluated(from_values, settings.dmarc_mode)
    else:
        dmarc = check_dmarc(
            from_values,
            spf.result,
            spf.domain,
            [(d.result, d.domain) for d in dkim],
            dns,
            mode=settings.dmarc_mode,
            discovered=discovered,
        )
    return CheckReport(
        envelope=envelope,
        spf=spf,
        helo_spf=helo_spf,
        dkim=dkim,
        arc=arc,
        dmarc=dmarc,
        from_address=first_mailbox(from_values),  # first_from_address, From read once
        dns_queries=dns.queries,
        message=message,
    )


def facts_from(report: CheckReport, trusted_arc_sealers: tuple[str, ...] = ()) -> AuthFacts:
    """Gives the AuthFacts a policy decides on, with one evidence sentence per check."""
    env = report.envelope
    dmarc = report.dmarc
    from_domain = dmarc.from_domain
    if not from_domain and report.from_address:
        domains, _ = from_domains([report.from_address])
        from_domain = domains[0] if domains else ""
    arc = report.arc
    sealers = tuple([s.lower() for s in arc.sealers]) if arc.sealers else ()
    # The oldest results are only as good as every sealer that carried them (RFC 8617 §9.4).
    arc_trusted = arc.result == "pass" and bool(sealers)
    if arc_trusted:
        trusted = {s.lower().rstrip(".") for s in trusted_arc_sealers}
        arc_trusted = all(s in trusted for s in sealers)
    dkim_word, dkim_evidence, dkim_pass = "none", "no DKIM signature", ""
    if report.dkim:  # unsigned mail, the most of it, has none of this to write
        dkim_evidence = (
            "; ".join(
                [
                    f"{d.result} d={d.domain} s={d.selector}"
                    + (f" ({d.reason})" if d.reason else "")
                    for d in report.dkim
                ]
            )
            or dkim_evidence
        )
        dkim_pass = ", ".join([d.domain for d in report.dkim if d.result == "pass"])
        # An internal error is its own word (facts.INTERNAL), so that neither a permerror
        # rule nor the absence of one decides it: the policy's internal_error does.
        dkim_word = report.dkim_result
        if dkim_word != "pass" and any(d.internal_error for d in report.dkim):
            dkim_word = INTERNAL
    return AuthFacts(
        spf=report.spf.result,
        helo_spf=report.helo_spf.result,
        dkim=dkim_word,
        arc=INTERNAL if arc.internal_error else arc.result,
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
        arc_oldest_spf=arc.oldest_spf,
        arc_oldest_dkim=arc.oldest_dkim,
        arc_oldest_dmarc=arc.oldest_dmarc,
        arc_sealers=sealers,
        evidence={
            "envelope": env.evidence[-1] if env.evidence else "",
            "spf": report.spf.reason,
            "helo_spf": report.helo_spf.reason,
            "dkim": dkim_evidence,
            "dkim_pass": dkim_pass,
            "arc": arc.reason,
            "dmarc": dmarc.reason,
        },
    )
