"""The one logger of authsieve, sent to syslog's mail facility or a configured file.

In pipe mode nothing may reach stderr unless delivery failed (Postfix mails
stderr back in bounces), so everything else goes here.

One event is one line: every record is escaped by `escape_record` before any
handler sees it, so a value a sender or mailbox owner chose (a Return-Path
with NUL or ESC, a Maildir file name with a line break) can neither forge a
log line nor reach the terminal of whoever reads the log.
"""

from __future__ import annotations

import logging
import os
import traceback

from classifier.config import Settings

log = logging.getLogger("authsieve")


def log_value(text: str) -> str:
    """Gives text with every non-printable character (line breaks, NUL, ESC, C1, bidi) escaped."""
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch.isprintable()
        else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def escape_record(record: logging.LogRecord) -> bool:
    """Makes a record one escaped line: its values, and its traceback if any, escaped in place."""
    text = log_value(record.getMessage())
    if record.exc_info:
        trace = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        text += " | " + log_value(trace)
        record.exc_info = None
        record.exc_text = None
    record.msg, record.args = text, None
    return True


log.addFilter(escape_record)


def configure_logging(settings: Settings, debug: bool = False) -> None:
    """Sends log records to the configured file, else to syslog's mail facility."""
    if log.handlers:
        return
    handler: logging.Handler
    if settings.log_file:
        handler = logging.FileHandler(settings.log_file)
        fmt = "%(asctime)s authsieve[%(process)d]: %(message)s"
        handler.setFormatter(logging.Formatter(fmt))
    elif os.path.exists("/dev/log"):
        # Imported only when used: it costs start-up time in every pipe process.
        from logging.handlers import SysLogHandler

        handler = SysLogHandler("/dev/log", facility=SysLogHandler.LOG_MAIL)
        handler.setFormatter(logging.Formatter("authsieve[%(process)d]: %(message)s"))
    else:
        handler = logging.NullHandler()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
