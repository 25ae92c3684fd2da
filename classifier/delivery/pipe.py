"""`authsieve pipe`: one message from Postfix's pipe(8) on stdin, checked, annotated, delivered.

Failure rules (DESIGN.md): exit 0 only when the message was delivered; 75
when the next stage failed temporarily, so Postfix keeps it and retries.  An
internal error in the checks still delivers the message, unchanged but for an
``X-Authsieve: …; spf=internal; …; error=…`` header, and the traceback goes to
the log; it is filed as the recipient's ``internal_error`` says (inbox by
default), never as a temperror.  Nothing reaches stderr unless delivery failed: Postfix mails stderr
back to the sender in bounces.

This module's top level stays light: a pipe process that hands the checks to
the resident daemon (`classifier.delivery.daemon`) never imports the engine.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from classifier.config import Settings
from classifier.delivery.targets import DeliveryError
from classifier.log import log

if TYPE_CHECKING:
    from classifier.delivery.targets import Delivery
    from classifier.lookup.resolver import Resolver
    from classifier.policy.rules import Policies

HINT_KEYS = (
    "sender", "recipient", "client_address", "client_helo", "client_hostname", "sasl_username"
)  # fmt: skip


@dataclass(frozen=True)
class PipeOutcome:
    """What happened to one message: the bytes to deliver or file, where, and why.

    Pipe delivery, the daemon and the Maildir watcher (`classifier.mailstore.filing`) all
    get it from `process`, so the failure rule lives in one place.
    """

    data: bytes
    action: str
    summary: str
    error: str = ""


def process(
    data: bytes,
    settings: Settings,
    resolver: Resolver,
    hints: dict[str, str | None],
    user: str | None,
    policies: Policies | None = None,
) -> PipeOutcome:
    """Gives the annotated message and verdict (on an internal error: original + error header).

    `policies` are those of `settings`, loaded once by a caller that files many
    messages; None loads them here (a bad policy raises ConfigError).
    """
    from classifier.annotate import annotate
    from classifier.envelope.trust import Hints
    from classifier.evaluate import evaluate
    from classifier.policy.rules import load_policies

    policies = policies or load_policies(settings)
    try:
        hinted = Hints(**{k: hints.get(k) for k in HINT_KEYS})
        result = evaluate(data, settings, resolver, hinted, user, policies)
        value = result.header_value(settings.authserv_id)
        out = annotate(data, result.report, settings.authserv_id, value)
        env, facts, verdict = result.report.envelope, result.facts, result.verdict
        summary = (
            f"client={env.client_ip or '-'} from=<{env.mail_from or ''}>"
            f" spf={facts.spf} dkim={facts.dkim} dmarc={facts.dmarc} verdict={verdict.action}"
            + (f" would={verdict.would_be}" if verdict.observe else "")
            + (f" reasons={'; '.join(verdict.reasons)}" if verdict.reasons else "")
        )
        return PipeOutcome(out, verdict.action, summary)
    except Exception as exc:
        log.exception("internal error while checking; delivering unchanged")
        return failed_outcome(
            data, settings, policies, user or hints.get("recipient") or "",
            f"internal error: {type(exc).__name__}",
        )  # fmt: skip


def failed_outcome(
    data: bytes, settings: Settings, policies: Policies | None, user: str, error: str
) -> PipeOutcome:
    """Gives the original message under one X-Authsieve header saying the checks failed.

    Not a temperror (which files nothing): the recipient's ``internal_error`` decides, and
    the Sieve script reads the same words from the header.  `policies` None (they could
    not be loaded) takes the built-in global policy.
    """
    from classifier.auth.facts import HEADER_NAME, INTERNAL, AuthFacts, render_header_value
    from classifier.policy.rules import Policies, Policy
    from classifier.policy.verdict import decide

    failed = AuthFacts(spf=INTERNAL, dkim=INTERNAL, arc=INTERNAL, dmarc=INTERNAL)
    policy = (policies or Policies(Policy())).for_user(user)
    verdict = decide(failed, policy)
    value = render_header_value(
        failed,
        settings.authserv_id,
        verdict.action,
        policy.mode,
        "; ".join(verdict.reasons),
        error=error,
        user=policy.user,
    )
    eol = b"\r\n" if b"\r\n" in data[:4096] else b"\n"
    header = f"{HEADER_NAME}: {value}".encode() + eol
    return PipeOutcome(header + data, verdict.action, "error", error)


def deliver_outcome(
    outcome: PipeOutcome,
    delivery: Delivery,
    sender: str | None,
    recipients: list[str],
    started: float,
    log_it: bool = True,
) -> int:
    """Delivers the outcome; gives the sysexits code for Postfix (stderr only on failure).

    `log_it` False leaves the delivery line to the daemon that checked the message.
    """
    envelope_sender = (sender or "").strip().strip("<>").strip()
    try:
        delivery.deliver(outcome.data, envelope_sender, recipients, outcome.action)
    except DeliveryError as exc:
        if log_it:
            log.error("delivery failed (exit %d): %s", exc.code, exc)
        print(f"authsieve: delivery failed: {exc}", file=sys.stderr)
        return exc.code
    if not log_it:
        return 0
    log.info(
        "delivered to=%s %s (%.0f ms)",
        ",".join(recipients) or "-",
        outcome.summary,
        (time.monotonic() - started) * 1000,
    )
    return 0


def run_pipe(
    data: bytes,
    settings: Settings,
    resolver: Resolver,
    delivery: Delivery,
    hints: dict[str, str | None],
    recipients: list[str],
) -> int:
    """Checks, annotates and delivers one message in this process; gives the sysexits code."""
    started = time.monotonic()
    user = recipients[0] if recipients else None
    outcome = process(data, settings, resolver, hints, user)
    return deliver_outcome(outcome, delivery, hints.get("sender"), recipients, started)
