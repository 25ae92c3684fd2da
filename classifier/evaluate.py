"""One message from bytes to verdict: checks, facts, the recipient's policy and its decision.

The command line, the pipe transport, the daemon and the watcher all go
through `evaluate`, so a message gets the same verdict whichever way it
comes in; the last three through `check_and_annotate`, so the failure rule
for an internal error (docs/design.md, "Failure rules") lives in one place.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from classifier.annotate import annotate, fold
from classifier.auth.checks import CheckAbandoned, CheckReport, Deadline, facts_from, run_checks
from classifier.auth.facts import (
    HEADER_NAME,
    AuthFacts,
    render_header_fields,
)
from classifier.config import Settings
from classifier.envelope.trust import Hints
from classifier.log import log
from classifier.logwords import log_word
from classifier.lookup.resolver import Resolver
from classifier.policies import Policies, Policy
from classifier.policy.verdict import (
    EffectiveResults,
    Verdict,
    decide,
    effective_results,
    failed_checks,
)


@dataclass(frozen=True)
class Evaluation:
    """Everything known about one message, and what to do with it."""

    report: CheckReport
    facts: AuthFacts
    policy: Policy
    verdict: Verdict
    delivery_id: str = ""  # with [learn] on: names the delivery record (`delivery=`)

    def header_value(self, authserv_id: str, domains: tuple[str, str] | None = None) -> str:
        """Gives the X-Authsieve value for this evaluation.

        `domains` are the policy's (From, MAIL FROM) domains for these facts
        (`EffectiveResults`), when the caller has them: they are not worked out again.
        """
        return "; ".join(self.header_fields(authserv_id, domains))

    def header_fields(self, authserv_id: str, domains: tuple[str, str] | None = None) -> list[str]:
        """Gives `header_value` in its fields (`render_header_fields`), as `annotate` folds it."""
        return render_header_fields(
            self.facts,
            authserv_id,
            self.verdict.action,
            self.policy.mode,
            "; ".join(self.verdict.reasons),
            allowed=bool(self.verdict.allowed),
            user=self.policy.user,
            delivery_id=self.delivery_id,
            domains=domains,
        )

    def to_dict(self) -> dict[str, object]:
        return {**self.report.to_dict(), "verdict": self.verdict.to_dict()}


def evaluate(
    data: bytes,
    settings: Settings,
    resolver: Resolver,
    policies: Policies,
    hints: Hints | None = None,
    user: str | None = None,
    deadline: Deadline | None = None,
) -> Evaluation:
    """Gives the evaluation of one message for `user` (default: the recipient it was sent to).

    The policy's trusted_forwarders join [classifier].trusted_forwarders for
    the trust path; when the user is not known in advance, the global
    policy's list is used and the recipient's policy decides.
    """
    return _evaluate(data, settings, resolver, policies, hints, user, deadline)[0]


def _evaluate(
    data: bytes,
    settings: Settings,
    resolver: Resolver,
    policies: Policies,
    hints: Hints | None,
    user: str | None,
    deadline: Deadline | None,
) -> tuple[Evaluation, EffectiveResults]:
    """Gives `evaluate`'s evaluation and the results its verdict judged."""
    known = policies.for_user(user) if user else None
    forwarders = (known or policies.default).trusted_forwarders
    trust = settings.trust_for(forwarders)
    report = run_checks(data, settings, resolver, hints, trust, deadline)
    policy = known or policies.for_user(report.envelope.rcpt or "")
    facts = facts_from(report, policy.trusted_arc_sealers)
    eff = effective_results(facts)
    return Evaluation(report, facts, policy, decide(facts, policy, eff)), eff


def new_delivery_id() -> str:
    """Gives a fresh delivery id: 100 random bits in lower-case base32 (20 characters)."""
    # os.urandom is what secrets.token_bytes gives; the secrets module is one import less.
    return base64.b32encode(os.urandom(15)).decode().lower()[:20]


@dataclass(frozen=True)
class Annotated:
    """One message checked and annotated: the bytes to deliver or file, where, and why."""

    data: bytes
    action: str
    summary: str
    error: str = ""


class HeldRecord:
    """Holds a checked message's evaluation until its delivery is known to have succeeded.

    Handed to `check_and_annotate` as its `record`; `delivered()` passes what it
    holds on.  A delivery that fails temporarily (exit 75) is retried by Postfix and
    checked again: recorded at check time, its report rows would count every attempt.
    """

    def __init__(self, record: Callable[[Evaluation], object] | None) -> None:
        self.record = record
        self.held: list[Evaluation] = []

    def __call__(self, evaluation: Evaluation) -> None:
        if self.record is not None:
            self.held.append(evaluation)

    def delivered(self) -> None:
        """Records what is held (the delivery succeeded); never raises (see `record`)."""
        held, self.held = self.held, []
        if self.record is not None:
            for evaluation in held:
                self.record(evaluation)


def check_and_annotate(
    data: bytes,
    settings: Settings,
    resolver: Resolver,
    policies: Policies,
    hints: Hints | None,
    user: str | None,
    record: Callable[[Evaluation], object] | None = None,
    note: Callable[[Evaluation, str, str, bytes], object] | None = None,
    deadline: Deadline | None = None,
) -> Annotated:
    """Gives the annotated message and verdict (on an internal error: original + error header).

    `record` is handed the evaluation of a message that was checked (the DMARC
    aggregate report rows, `classifier.aggregate.store.recorder`); it must not raise.
    `note` (with [learn] on, `classifier.aggregate.deliveries.delivery_recorder`) is
    handed the evaluation, a fresh delivery id that the X-Authsieve carries, the
    recipient and the message: the delivery record `learn` believes.  It must not raise either.

    An internal error still gives the message, unchanged but for an
    ``X-Authsieve: …; spf=internal; …; error=…`` header, and logs the
    traceback; it is filed as the recipient's ``internal_error`` says (inbox
    by default), never as a temperror.  Checks stopped by `deadline` raise
    CheckAbandoned: nobody waits for the answer any more.
    """
    try:
        result, eff = _evaluate(data, settings, resolver, policies, hints, user, deadline)
        if note is not None:
            result = replace(result, delivery_id=new_delivery_id())
        fields = result.header_fields(settings.authserv_id, (eff.from_domain, eff.mailfrom_domain))
        out = annotate(data, result.report, settings.authserv_id, fields)
        env, facts, verdict = result.report.envelope, result.facts, result.verdict
        # One word of the log line, whatever the sender put into it: <a@b>, or quoted.
        sender = f"<{env.mail_from or ''}>"
        if env.mail_from and log_word(env.mail_from) != env.mail_from:
            sender = log_word(sender)
        summary = (
            f"client={env.client_ip or '-'} from={sender}"
            f" spf={facts.spf} dkim={facts.dkim} dmarc={facts.dmarc} verdict={verdict.action}"
            + (f" would={verdict.would_be}" if verdict.observe else "")
            + (f" reasons={'; '.join(verdict.reasons)}" if verdict.reasons else "")
        )
        if record is not None:
            record(result)  # DMARC aggregate report rows (classifier.aggregate); never raises
        if note is not None:  # the delivery record learn believes; never raises
            rcpt = user or (hints.recipient if hints else None) or env.rcpt or ""
            note(result, result.delivery_id, rcpt, data)
        return Annotated(out, verdict.action, summary)
    except CheckAbandoned:
        raise
    except Exception as exc:
        log.exception("internal error while checking; delivering unchanged")
        user = user or (hints.recipient if hints else None) or ""
        return failed_annotation(
            data, settings.authserv_id, policies, user, f"internal error: {type(exc).__name__}"
        )


def failed_annotation(
    data: bytes, authserv_id: str, policies: Policies | None, user: str, error: str
) -> Annotated:
    """Gives the original message under one X-Authsieve header saying the checks failed.

    Not a temperror (which files nothing): the recipient's ``internal_error`` decides,
    and the Sieve script reads the same words from the header.  `policies` None (they
    could not be loaded) takes the built-in global policy.
    """
    policy = (policies or Policies(Policy())).for_user(user)
    verdict, value = failed_checks(policy, authserv_id, error)
    eol = b"\r\n" if b"\r\n" in data[:4096] else b"\n"
    return Annotated(fold(HEADER_NAME, value, eol) + data, verdict.action, "error", error)
