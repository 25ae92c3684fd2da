"""`authsieve pipe`: deliver one message that Postfix's pipe(8) gave and that was checked.

Failure rules (docs/design.md): exit 0 only when the message was delivered;
the next stage's code (75 when it failed temporarily, so Postfix keeps the
message and retries) otherwise.  Nothing reaches stderr unless delivery
failed: Postfix mails stderr back to the sender in bounces.  The checks
themselves, and what an internal error in them gives, are
`classifier.evaluate.check_and_annotate`'s.

This module's top level stays light: a pipe process that hands the checks to
the resident daemon (`classifier.delivery.daemon`) never imports the engine.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from classifier.delivery.targets import DeliveryError
from classifier.log import log
from classifier.logwords import delivery_line, failure_line

if TYPE_CHECKING:
    from classifier.delivery.targets import Delivery


def deliver_outcome(
    data: bytes,
    action: str,
    summary: str,
    delivery: Delivery,
    sender: str | None,
    recipients: list[str],
    started: float,
    log_it: bool = True,
    queue_id: str | None = None,
) -> int:
    """Delivers the checked message; gives the sysexits code for Postfix (stderr only on failure).

    `data`, `action` and `summary` come from `classifier.evaluate.check_and_annotate`,
    here or in the daemon.  `log_it` False leaves the delivery line to the daemon that
    checked the message.
    """
    envelope_sender = (sender or "").strip().strip("<>").strip()
    try:
        delivery.deliver(data, envelope_sender, recipients, action)
    except DeliveryError as exc:
        if log_it:
            log.error("%s", failure_line(recipients, exc.exit_code, exc, queue_id))
        print(f"authsieve: delivery failed: {exc}", file=sys.stderr)
        return exc.exit_code
    if not log_it:
        return 0
    ms = (time.monotonic() - started) * 1000
    log.info("%s", delivery_line(recipients, summary, ms, queue_id))
    return 0
