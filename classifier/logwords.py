"""The delivery lines of the log, each value one word whatever a sender put into it.

A delivery line is read as ``key=value`` words (by grep, by a log parser, by an
admin's eye).  A recipient's extension or a MAIL FROM may hold spaces and
``verdict=inbox``: written as it came, such a value adds words of the sender's
before ours (attacker review, issue 15).  Standard library only, no ``re``: the
pipe's fast path writes these lines too.
"""

_SPECIAL = frozenset('="\\,<>')


def log_word(text: str) -> str:
    """Gives text as one word: as it is, or quoted with \\ and " escaped when it could split."""
    if text and not any(ch.isspace() or ch in _SPECIAL for ch in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def queue_word(queue_id: object) -> str:
    """Gives " queue=ID" for Postfix's queue id (``${queue_id}``), "" when absent or odd.

    It lets an admin find the message in Postfix's log; only what a queue id can be
    (letters and digits, postconf(5) enable_long_queue_ids) is written into our log.
    """
    if not isinstance(queue_id, str) or not 0 < len(queue_id) <= 32:
        return ""
    return f" queue={queue_id}" if queue_id.isascii() and queue_id.isalnum() else ""


def delivery_line(recipients: list[str], summary: str, ms: float, queue_id: object = None) -> str:
    """Gives the log line of a message delivered (the same for the pipe and the daemon)."""
    return f"delivered to={_to(recipients)}{queue_word(queue_id)} {summary} ({ms:.0f} ms)"


def _to(recipients: list[str]) -> str:
    # A recipient's +extension is the sender's to choose: one word each, whatever it holds.
    return ",".join(log_word(r) for r in recipients) or "-"


def failure_line(
    recipients: list[str], code: object, reason: object, queue_id: object = None
) -> str:
    """Gives the log line of a delivery that failed: the exit code Postfix got, and why."""
    return f"delivery failed to={_to(recipients)}{queue_word(queue_id)} (exit {code}): {reason}"
