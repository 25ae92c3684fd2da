"""`authsieve pipe`: one message from Postfix's pipe(8) on stdin, checked, annotated, delivered.

Failure rules (DESIGN.md): exit 0 only when the message was delivered; 75
when the next stage failed temporarily, so Postfix keeps it and retries.  An
internal error in the checks still delivers the message, unchanged but for an
``X-Authsieve: …; verdict=inbox; error=…`` header, and the traceback goes to
the log.  Nothing reaches stderr unless delivery failed: Postfix mails stderr
back to the sender in bounces.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from classifier.config import Settings
from classifier.deliver import Delivery, DeliveryError
from classifier.envelope import Hints, strip_angle

if TYPE_CHECKING:
    from classifier.dns import Resolver

log = logging.getLogger("authsieve")


def configure_logging(settings: Settings, debug: bool = False) -> None:
    """Sends log records to the configured file, else to syslog's mail facility."""
    if log.handlers:
        return
    handler: logging.Handler
    if settings.log_file:
        handler = logging.FileHandler(settings.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s authsieve[%(process)d]: %(message)s"))
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(
            "/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL
        )
        handler.setFormatter(logging.Formatter("authsieve[%(process)d]: %(message)s"))
    else:
        handler = logging.NullHandler()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False


@dataclass(frozen=True)
class PipeOutcome:
    """What happened to one message: the bytes delivered, where, and why."""

    data: bytes
    action: str
    summary: str
    error: str = ""


def process(
    data: bytes, settings: Settings, resolver: Resolver, hints: Hints, user: str | None
) -> PipeOutcome:
    """Gives the annotated message and verdict (on an internal error: original + error header)."""
    from classifier.annotate import annotate
    from classifier.evaluate import evaluate
    from classifier.facts import AuthFacts, render_header_value
    from classifier.policy import load_policies

    policies = load_policies(settings)
    try:
        result = evaluate(data, settings, resolver, hints, user, policies)
        out = annotate(
            data, result.report, settings.authserv_id, result.header_value(settings.authserv_id)
        )
        env, facts, verdict = result.report.envelope, result.facts, result.verdict
        summary = (
            f"client={env.client_ip} from=<{env.mail_from or ''}>"
            f" spf={facts.spf} dkim={facts.dkim} dmarc={facts.dmarc} verdict={verdict.action}"
            + (f" would={verdict.would_be}" if verdict.observe else "")
            + (f" reasons={'; '.join(verdict.reasons)}" if verdict.reasons else "")
        )
        return PipeOutcome(out, verdict.action, summary)
    except Exception as exc:
        log.exception("internal error while checking; delivering unchanged")
        error = f"internal error: {type(exc).__name__}"
        temp = AuthFacts(spf="temperror", dkim="temperror", arc="none", dmarc="temperror")
        value = render_header_value(temp, settings.authserv_id, "inbox", "enforce", error=error)
        eol = b"\r\n" if b"\r\n" in data[:4096] else b"\n"
        header = f"X-Authsieve: {value}".encode() + eol
        return PipeOutcome(header + data, "inbox", "error", error)


def run_pipe(
    data: bytes,
    settings: Settings,
    resolver: Resolver,
    delivery: Delivery,
    hints: Hints,
    recipients: list[str],
) -> int:
    """Checks, annotates and delivers one message; gives the sysexits code for Postfix."""
    started = time.monotonic()
    user = recipients[0] if recipients else None
    outcome = process(data, settings, resolver, hints, user)
    sender = strip_angle(hints.sender) if hints.sender is not None else ""
    try:
        delivery.deliver(outcome.data, sender, recipients, outcome.action)
    except DeliveryError as exc:
        log.error("delivery failed (exit %d): %s", exc.code, exc)
        print(f"authsieve: delivery failed: {exc}", file=sys.stderr)
        return exc.code
    log.info(
        "delivered to=%s %s (%.0f ms)",
        ",".join(recipients) or "-",
        outcome.summary,
        (time.monotonic() - started) * 1000,
    )
    return 0
