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

The log file is opened without following a symlink, through its directory
(``O_NOFOLLOW``): its directory belongs to the mail user in most set-ups, and
a link planted there must not make a root process append to a file of root's
choosing.  As root, in a directory another user may write, a hard link (a
second name of some other file) is refused, and a new file is given to the
directory's owner, so that a run by hand as root cannot lock the mail user
out of its own log.  `authsieve serve` started as root opens the file only
after it became ``daemon_user``.

One event is one line: every record is escaped by `escape_record` before any
handler sees it, so a value a sender or mailbox owner chose (a Return-Path
with NUL or ESC, a Maildir file name with a line break) can neither forge a
log line nor reach the terminal of whoever reads the log.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
import traceback
from io import TextIOWrapper

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


# O_NONBLOCK: a FIFO planted at the name fails (ENXIO) rather than hanging the open.
_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _others_may_write(st: os.stat_result) -> bool:
    """Can a user other than root add, remove or rename names in a directory with this status?"""
    return bool(
        (st.st_uid != 0 and st.st_mode & stat.S_IWUSR)
        or (st.st_gid != 0 and st.st_mode & stat.S_IWGRP)
        or st.st_mode & stat.S_IWOTH
    )


def open_log_file(path: str) -> int:
    """Gives a descriptor to append to the log file path; OSError when it is not safe to.

    The last component is opened with O_NOFOLLOW from its directory's
    descriptor (a symlink there fails with ELOOP) and must be a regular file.
    As root in a directory others may write: a file with a second name (a
    hard link to someone else's file) is refused, and a new file is given,
    through its descriptor, to the directory's owner.
    """
    from classifier.files import open_dir

    head, name = os.path.split(path)
    dir_fd = open_dir(head or ".", follow=True)  # the administrator's own path
    try:
        created = False
        try:
            fd = os.open(name, _LOG_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            # O_EXCL: never follows a symlink at the name, open(2).
            fd = os.open(name, _LOG_FLAGS | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=dir_fd)
            created = True
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            dir_st = os.fstat(dir_fd)
            if os.geteuid() == 0 and _others_may_write(dir_st):
                if st.st_nlink > 1:
                    raise OSError(errno.EPERM, "a hard link in a directory others may write")
                if created:
                    os.fchown(fd, dir_st.st_uid, dir_st.st_gid)
        except BaseException:
            os.close(fd)
            if created:
                os.unlink(name, dir_fd=dir_fd)
            raise
        return fd
    finally:
        os.close(dir_fd)


class LogFile(logging.FileHandler):
    """logging's FileHandler, opening its file through `open_log_file`."""

    def _open(self) -> TextIOWrapper:
        return open(
            open_log_file(self.baseFilename), "a", encoding=self.encoding, errors=self.errors
        )


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
            handler: logging.Handler = LogFile(log_file)
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
