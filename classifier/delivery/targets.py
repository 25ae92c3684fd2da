"""Where an annotated message goes: one small delivery object per target.

A target is an object with ``deliver(data, sender, recipients, action)``:
stdout, dovecot-lda, sendmail (re-injection) or ``maildir:PATH``.
`delivery_from_spec` turns the ``--deliver`` value into one; adding a target
is a class and a line there, and never touches the checks.  `deliver`
returns nothing when the message was delivered and raises DeliveryError,
carrying the sysexits code to exit with, when it was not: 75 (EX_TEMPFAIL)
when the next stage failed temporarily, so that Postfix keeps the message and
retries, or the next stage's own code.  Processes are started with an
argument list, never through a shell.

This module is on the path of every `authsieve pipe --daemon` process
(`classifier.delivery.handover`), which must start in about the time Python itself
does: it imports only builtin modules and `classifier.errors` at its top
(dataclasses, subprocess and pathlib cost several milliseconds each) and the
rest where a target uses it.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from itertools import count

from classifier.errors import EX_TEMPFAIL, AuthsieveError, UsageError

TYPE_CHECKING = False  # typing costs a pipe process milliseconds; mypy reads this as True
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Protocol

    class Delivery(Protocol):
        """A delivery target."""

        def deliver(self, data: bytes, sender: str, recipients: list[str], action: str) -> None:
            """Delivers the message or raises DeliveryError."""


FOLDERS = {"inbox": "", "junk": ".Junk", "quarantine": ".Quarantine"}
DEFAULT_LDA = "/usr/lib/dovecot/dovecot-lda"
DEFAULT_SENDMAIL = "/usr/sbin/sendmail"
_SEQUENCE = count()


class DeliveryError(AuthsieveError):
    """Delivery failed; `exit_code` is the sysexits code to exit with (the next stage's own)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = code


class StdoutDelivery:
    """Filter mode: the annotated message on stdout (also fits Pigeonhole's extprograms filter)."""

    def deliver(self, data: bytes, sender: str, recipients: list[str], action: str) -> None:
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as exc:
            raise DeliveryError(EX_TEMPFAIL, f"cannot write to stdout: {exc.strerror}") from None


REASON_LIMIT = 300  # characters of the next stage's own words in Postfix's queue and bounces
# Options authsieve itself gives dovecot-lda, from the envelope: not for --lda-arg.
LDA_OWN_OPTIONS = ("-a", "-d", "-e", "-f")


def stage_reason(stderr: bytes) -> str:
    """Gives the line of a failed program's stderr that says why, printable and bounded.

    Dovecot ends an error with "Internal error occurred. Refer to server log…"
    after the line that names the cause (when it logs to stderr): the last
    ``Error:``/``Fatal:`` line that is more than that wins, else the last line.
    """
    text = stderr.decode("utf-8", "replace")
    lines = [
        "".join(c if c.isprintable() else " " for c in line).strip() for line in text.splitlines()
    ]
    lines = [line for line in lines if line]
    if not lines:
        return "nothing on stderr (see its own log)"
    causes = [
        line
        for line in lines
        if ("Error:" in line or "Fatal:" in line) and "Refer to server log" not in line
    ]
    line = (causes or lines)[-1]
    return line if len(line) <= REASON_LIMIT else line[: REASON_LIMIT - 3] + "..."


def _run(argv: list[str], data: bytes, timeout: float) -> None:
    import subprocess

    try:
        proc = subprocess.run(argv, input=data, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise DeliveryError(EX_TEMPFAIL, f"{argv[0]}: not found") from None
    except PermissionError:
        raise DeliveryError(EX_TEMPFAIL, f"{argv[0]}: permission denied") from None
    except subprocess.TimeoutExpired:
        raise DeliveryError(EX_TEMPFAIL, f"{argv[0]}: no answer after {timeout:g}s") from None
    if proc.returncode != 0:
        # A signal (negative code) is temporary too: Postfix must keep the message.
        code = proc.returncode if proc.returncode > 0 else EX_TEMPFAIL
        name = os.path.basename(argv[0])
        raise DeliveryError(code, f"{name} exited {proc.returncode}: {stage_reason(proc.stderr)}")


class DovecotLdaDelivery:
    """Hands the message to dovecot-lda, which runs the user's Sieve (and so files it).

    `user` is the Dovecot user whose mailbox and Sieve script take the message
    (``-d``; pipe(8)'s ``${user}@${domain}``: the recipient without its
    ``+detail``), `original_recipient` the address Sieve's ``envelope "to"``
    sees (``-a``; ``${original_recipient}``), as Postfix's LMTP client gives
    Dovecot's LMTP server the address and its ORCPT.  Without them, the
    recipient is both.  `extra_args` go to dovecot-lda before authsieve's own
    (``-c FILE``, ``-o setting=value``).
    """

    def __init__(
        self,
        path: str = DEFAULT_LDA,
        extra_args: tuple[str, ...] = (),
        user: str | None = None,
        original_recipient: str | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.path = path
        self.extra_args = extra_args
        self.user = user
        self.original_recipient = original_recipient
        self.timeout = timeout

    def deliver(self, data: bytes, sender: str, recipients: list[str], action: str) -> None:
        alone = len(recipients) == 1
        for rcpt in recipients or [""]:
            argv = [self.path, *self.extra_args, "-e", "-f", sender or "<>"]
            if rcpt:
                # -d: whose mailbox and Sieve (Dovecot userdb); pipe(8) runs every delivery
                # as one user, so without it all mail would land in that user's mailbox.
                user = (alone and self.user) or rcpt
                argv += ["-d", user, "-a", (alone and self.original_recipient) or rcpt]
            _run(argv, data, self.timeout)


class SendmailDelivery:
    """Re-injects the message for an after-queue content filter (``sendmail -G -i -f S -- R…``)."""

    def __init__(self, path: str = DEFAULT_SENDMAIL, timeout: float = 300.0) -> None:
        self.path = path
        self.timeout = timeout

    def deliver(self, data: bytes, sender: str, recipients: list[str], action: str) -> None:
        if not recipients:
            raise DeliveryError(EX_TEMPFAIL, "sendmail delivery needs --recipient")
        _run([self.path, "-G", "-i", "-f", sender, "--", *recipients], data, self.timeout)


def maildir_name() -> str:
    """Gives a unique Maildir file name (the time.MusecPpidQn.host form Dovecot uses)."""
    import socket

    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_SEQUENCE)}.{host}"


def write_maildir(root: Path, folder: str, data: bytes, name: str | None = None) -> Path:
    """Gives the path of data written into ROOT/FOLDER/new: tmp/, fsync, rename (Maildir spec).

    The folder (a Maildir++ sub-folder such as ``.Junk``) is created when missing.
    """
    from classifier.files import fsync_dir, write_synced

    base = root / folder if folder else root
    # A Maildir++ folder lives inside a Maildir: make sure both are whole.
    for d in {root, base}:
        for sub in ("tmp", "new", "cur"):
            (d / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder:
        (base / "maildirfolder").touch(exist_ok=True)
    name = name or maildir_name()
    tmp = base / "tmp" / name
    final = base / "new" / name
    write_synced(tmp, data)
    try:
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(base / "new")
    return final


class MaildirDelivery:
    """Writes into a Maildir itself and files by the verdict: INBOX, .Junk, .Quarantine."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def deliver(self, data: bytes, sender: str, recipients: list[str], action: str) -> None:
        try:
            write_maildir(self.root, FOLDERS.get(action, ""), data)
        except OSError as exc:
            # Full disk, quota, permissions: all worth a retry; Postfix keeps the message.
            reason = errno.errorcode.get(exc.errno or 0, "error")
            raise DeliveryError(
                EX_TEMPFAIL, f"{self.root}: cannot write ({reason}: {exc.strerror})"
            ) from None


def delivery_from_spec(
    spec: str,
    lda_path: str = DEFAULT_LDA,
    sendmail_path: str = DEFAULT_SENDMAIL,
    lda_args: tuple[str, ...] = (),
    user: str | None = None,
    original_recipient: str | None = None,
) -> Delivery:
    """Gives the delivery for ``stdout``, ``dovecot-lda``, ``sendmail`` or ``maildir:PATH``.

    `lda_args`, `user` and `original_recipient` are dovecot-lda's (see
    DovecotLdaDelivery); an lda_arg that is one of the options authsieve sets
    from the envelope (``-d``, ``-a``, ``-f``, ``-e``) is refused.
    """
    if spec == "stdout":
        return StdoutDelivery()
    if spec == "dovecot-lda":
        for arg in lda_args:
            if arg[:2] in LDA_OWN_OPTIONS:
                raise UsageError(f"--lda-arg {arg}: authsieve sets {arg[:2]} from the envelope")
        return DovecotLdaDelivery(lda_path, tuple(lda_args), user, original_recipient)
    if spec == "sendmail":
        return SendmailDelivery(sendmail_path)
    if spec.startswith("maildir:") and len(spec) > len("maildir:"):
        from pathlib import Path

        return MaildirDelivery(Path(spec[len("maildir:") :]))
    raise UsageError(f"unknown delivery {spec!r} (stdout, dovecot-lda, sendmail, maildir:PATH)")
