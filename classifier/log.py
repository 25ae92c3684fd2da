"""The one logger of authsieve, sent to a configured file, else syslog's mail facility.

Logging never holds mail.  When ``log_file`` cannot be opened (a permission,
a read-only /var/log) or no syslog socket answers, the records go to the
next place in line, and the first record there says why, once:

- ``log_file`` → syslog (``/dev/log``, else journald's ``dev-log``) →
- the services and commands (`watch`, `serve`, `check` …): stderr, which
  the service manager keeps (the journal);
- `pipe`: nowhere.  In pipe mode nothing may reach stderr unless delivery
  failed (Postfix mails stderr back in bounces), so the records are dropped
  and counted (`dropped`); a delivery that fails anyway says how many.

One event is one line: every record is escaped by `escape_record` before any
handler sees it, so a value a sender or mailbox owner chose (a Return-Path
with NUL or ESC, a Maildir file name with a line break) can neither forge a
log line nor reach the terminal of whoever reads the log.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from classifier.config import Settings

log = logging.getLogger("authsieve")


def log_value(text: str, keep: str = "") -> str:
    """Gives text with every non-printable character (line breaks, NUL, ESC, C1, bidi) escaped.

    `keep` names control characters left as they are (a terminal's line breaks and tabs).
    """
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch.isprintable() or ch in keep
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


SYSLOG_SOCKETS = ("/dev/log", "/run/systemd/journal/dev-log")
_FILE_FORMAT = "%(asctime)s authsieve[%(process)d]: %(message)s"


class DroppedRecords(logging.Handler):
    """The last place in pipe mode: each record is counted, none is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def dropped() -> int:
    """Gives how many records were dropped for want of a log file or syslog (pipe mode)."""
    return sum(h.count for h in log.handlers if isinstance(h, DroppedRecords))


def _syslog(paths: tuple[str, ...]) -> tuple[logging.Handler | None, str]:
    """Gives a handler for the first syslog socket that takes a connection, or None and why."""
    why = f"no syslog at {', '.join(paths)}"
    for path in paths:
        if not os.path.exists(path):
            continue
        # Imported only when a socket is there: it costs start-up time in every pipe process.
        from logging.handlers import SysLogHandler

        try:
            handler = SysLogHandler(path, facility=SysLogHandler.LOG_MAIL)
        except OSError as exc:
            why = f"syslog {path}: {exc.strerror or exc}"
            continue
        handler.setFormatter(logging.Formatter("authsieve[%(process)d]: %(message)s"))
        return handler, ""
    return None, why


def open_handler(
    log_file: str | None, stderr: bool, syslog: tuple[str, ...] = SYSLOG_SOCKETS
) -> tuple[logging.Handler, str]:
    """Gives the handler records go to, and why it is not the one configured ("" when it is).

    `stderr`: may records end on stderr when nothing else takes them (not in pipe mode).
    """
    problems = []
    if log_file:
        try:
            handler: logging.Handler = logging.FileHandler(log_file)
            handler.setFormatter(logging.Formatter(_FILE_FORMAT))
            return handler, ""
        except OSError as exc:
            problems.append(f"log_file {log_file}: cannot write: {exc.strerror or exc}")
    found, why = _syslog(syslog)
    if found is not None:
        return found, "; ".join([*problems, "logging to syslog"]) if problems else ""
    problems.append(why)
    if stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("authsieve: %(message)s"))
        return handler, "; ".join([*problems, "logging to stderr"])
    return DroppedRecords(), "; ".join([*problems, "log lines are dropped"])


def configure_logging(
    settings: Settings,
    debug: bool = False,
    stderr: bool = True,
    syslog: tuple[str, ...] = SYSLOG_SOCKETS,
) -> None:
    """Sends log records to the configured file, else to syslog's mail facility, else onwards.

    `stderr=False` in pipe mode: records that find no file and no syslog are
    dropped (and counted) rather than printed.  Never raises for want of a
    place to log: a warning, once, in the place found says what went wrong.
    """
    if log.handlers:
        return
    handler, problem = open_handler(settings.log_file, stderr, syslog)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
    if not stderr:
        # A write that fails later (a full disk) must not print logging's own report either.
        logging.raiseExceptions = False
    if problem:
        log.warning("%s", problem)


def reopen_logging(settings: Settings) -> None:
    """Opens the log anew, as configure_logging would (SIGHUP, after a config reload).

    The file a log rotation moved away is let go, and a log_file that has become
    writable (its directory made since the start) is taken up; the level is kept.
    """
    level = log.level
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    configure_logging(settings)
    log.setLevel(level)
