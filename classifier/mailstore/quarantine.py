"""Per-user quarantine: list, show, release, purge and a digest, plus the allow-list edit.

The quarantine is the user's ``.Quarantine`` Maildir++ folder.  A message is
named by a short id (the first 12 hex digits of SHA-1 over its name's core,
which stays the same across our renames).  Releasing moves it back to INBOX
through the same crash-safe `maildir.commit` the watcher uses, with an
``X-Authsieve-Released: <date>; by=<who>`` header on top; our X-Authsieve
stays, so the watcher leaves the released copy alone.

``--allow`` edits the TOML config in place: the From address is appended to
``[users."addr"].allow_senders`` (comments and layout kept), the result is
parsed back and must differ from the old document in that one list only,
and it replaces the file atomically.  A user's list replaces the global
list (`classifier.policies`), so a new user list starts with the global
entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from classifier.auth.checks import first_from_address
from classifier.auth.facts import HEADER_NAME, RELEASED_HEADER, parse_header_value, quote
from classifier.display import display_text, printable
from classifier.files import (
    READ_FLAGS,
    DirTree,
)
from classifier.mailstore.configedit import ConfigEditError, add_list_entry, edit_config
from classifier.mailstore.folders import folder_path
from classifier.mailstore.maildir import (
    MaildirName,
    commit,
    identity,
    list_folder,
    user_from_path,
)
from classifier.message import Message

_HEAD_LIMIT = 65536
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~@]+$")


class QuarantineError(ConfigEditError):
    """A request that cannot be done as asked: one line for the user (exit 2)."""


@dataclass(frozen=True)
class QuarantinedMessage:
    """One message held in a user's quarantine, with what the checks said about it."""

    id: str
    path: str
    user: str
    arrived: float  # when it was filed (the file's mtime), seconds since the epoch
    date: str  # the Date header as written
    sender: str  # the From header, decoded for display
    sender_address: str  # the first From address, lower case
    subject: str
    verdict: str
    reasons: str
    from_authenticated: bool
    size: int

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def short_id(path: Path) -> str:
    """Gives the short id of a quarantined file (stable across our renames: hashed core)."""
    return hashlib.sha1(MaildirName.parse(path.name).core.encode()).hexdigest()[:12]


def describe(path: Path, user: str, data: bytes) -> QuarantinedMessage:
    """Gives what list/show/digest tell about one quarantined message (never raises on content)."""
    message = Message.parse(data)
    ours = parse_header_value(message.get(HEADER_NAME) or "")
    try:
        st = path.stat()
        arrived, size = st.st_mtime, st.st_size
    except OSError:
        arrived, size = 0.0, len(data)
    return QuarantinedMessage(
        id=short_id(path),
        path=str(path),
        user=user,
        arrived=arrived,
        date=display_text(message.get("Date"), None),
        sender=display_text(message.get("From"), None),
        sender_address=first_from_address(message),
        subject=display_text(message.get("Subject"), None),
        verdict=printable(ours.get("verdict", "")),
        reasons=printable(ours.get("reason", "")),
        from_authenticated=ours.get("from-auth") == "yes",
        size=size,
    )


def _read_head(path: Path, tree: DirTree) -> bytes:
    fd = os.open(path.name, READ_FLAGS, dir_fd=tree.fd(path.parent))
    try:
        return os.read(fd, _HEAD_LIMIT)
    finally:
        os.close(fd)


def list_quarantine(
    maildir: Path, template: str, user: str | None = None
) -> list[QuarantinedMessage]:
    """Gives the messages in a Maildir's quarantine, oldest first.

    A quarantine folder reached through a symlink the mailbox owner planted
    is not read (OSError ELOOP is taken as "nothing there").
    """
    owner = user or user_from_path(maildir, template) or str(maildir)
    entries = []
    with DirTree(maildir) as tree:
        for path in list_folder(folder_path(maildir, "quarantine")):
            try:
                entries.append(describe(path, owner, _read_head(path, tree)))
            except OSError:
                continue
    return sorted(entries, key=lambda e: (e.arrived, e.id))


MIN_ID_PREFIX = 6  # characters of an id that name a message (ids have 12)


def find(entries: list[QuarantinedMessage], wanted: str) -> QuarantinedMessage:
    """Gives the entry named by id, id prefix (MIN_ID_PREFIX+ characters) or file name.

    Raises QuarantineError when none or several match, or when an id is too
    short to name one (rather than saying there is no such message).
    """
    wanted = wanted.strip()
    hits = [
        e
        for e in entries
        if wanted in (e.id, Path(e.path).name)
        or (len(wanted) >= MIN_ID_PREFIX and e.id.startswith(wanted))
    ]
    if not hits and len(wanted) < MIN_ID_PREFIX:
        raise QuarantineError(
            f"{wanted or '(empty)'}: too short; give at least {MIN_ID_PREFIX} characters"
            " of the id (`authsieve quarantine list` shows them)"
        )
    if not hits:
        raise QuarantineError(f"{wanted}: no such message in quarantine")
    if len(hits) > 1:
        raise QuarantineError(f"{wanted}: matches {len(hits)} messages; give more of the id")
    return hits[0]


def released_header(when: datetime, by: str, eol: bytes) -> bytes:
    """Gives the X-Authsieve-Released header line: the release date (RFC 5322 §3.3) and who."""
    who = by if _TOKEN.match(by) else quote(by)
    return f"{RELEASED_HEADER}: {format_datetime(when)}; by={who}".encode() + eol


def release(maildir: Path, entry: QuarantinedMessage, by: str, when: datetime) -> Path:
    """Gives the INBOX path of a quarantined message moved back with X-Authsieve-Released on top."""
    path = Path(entry.path)
    data = path.read_bytes()
    core = MaildirName.parse(path.name).core
    for existing in list_folder(maildir):
        name = MaildirName.parse(existing.name)
        # An earlier release killed after its copy was in place: finish it, do not copy twice.
        if name.marked and name.core == core and identity(existing.read_bytes()) == identity(data):
            path.unlink(missing_ok=True)
            return existing
    eol = Message.parse(data).eol
    return commit(path, released_header(when, by, eol) + data, maildir)


def purge(
    entries: list[QuarantinedMessage], retention_days: float, now: float, dry_run: bool = False
) -> list[QuarantinedMessage]:
    """Gives the entries older than the retention, deleted unless dry_run."""
    cutoff = now - retention_days * 86400
    old = [e for e in entries if e.arrived < cutoff]
    if not dry_run:
        for e in old:
            path = Path(e.path)
            # Through the Maildir's descriptors: a .Quarantine the user linked elsewhere
            # must not make root delete files there.
            with DirTree(path.parents[2]) as tree, contextlib.suppress(FileNotFoundError):
                os.unlink(path.name, dir_fd=tree.fd(path.parent))
    return old


def date_text(entry: QuarantinedMessage) -> str:
    """Gives when the message arrived, as YYYY-MM-DD HH:MM UTC.

    Not its Date header: the sender writes that, and purge goes by arrival, so a
    list that showed it would not say which messages purge deletes next.
    """
    return datetime.fromtimestamp(entry.arrived, UTC).strftime("%Y-%m-%d %H:%M")


def digest(
    user: str,
    entries: list[QuarantinedMessage],
    retention_days: float,
    now: datetime,
    sender: str = "",
    appendix: str = "",
) -> str:
    """Gives a plain-text summary of a user's quarantine, fit to mail (whole message if sender).

    `appendix` is added at the end under a line of its own: the policy proposals
    for the administrator (`quarantine digest --proposals`).

    Raises QuarantineError for a user or sender with control characters: they
    go into header lines, where a line break would start a header of its own.
    """
    for what, value in (("user", user), ("sender", sender)):
        if not value.isprintable():
            raise QuarantineError(f"{what} {value!r}: control characters are not allowed")
    lines: list[str] = []
    count = len(entries)
    if sender:
        lines += [
            f"From: {sender}",
            f"To: {user}",
            f"Subject: Quarantine: {count} message{'s' if count != 1 else ''} held for you",
            f"Date: {format_datetime(now)}",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
            "Auto-Submitted: auto-generated",
            "",
        ]
    tail = ["", "-- ", *appendix.rstrip("\n").splitlines()] if appendix else []
    if not entries:
        lines.append(f"No messages for {user} are held in quarantine.")
        return "\n".join(w for line in lines + tail for w in wrap_octets(line)) + "\n"
    lines += [
        f"{count} message{'s are' if count != 1 else ' is'} held in quarantine for {user}.",
        "They were kept out of your inbox for the reason shown with each: most did not",
        "prove who sent them (SPF, DKIM, DMARC), some come from senders the policy blocks.",
        f"Each is deleted {retention_days:g} days after it arrived (the date shown).",
        "",
    ]
    for e in entries:
        lines.append(f"{date_text(e)}  {e.sender or '(no From)'}")
        lines.append(f"    Subject: {e.subject or '(no subject)'}")
        if e.reasons:
            lines.append(f"    Why: {e.reasons}")
        lines.append(f"    Id: {e.id}")
        lines.append("")
    lines += [
        "If one of them is mail you wanted, ask your mail administrator to release it:",
        f"    authsieve quarantine release --user {user} ID",
        *tail,
    ]
    return "\n".join(w for line in lines for w in wrap_octets(line)) + "\n"


def wrap_octets(line: str, limit: int = 998, indent: str = "    ") -> list[str]:
    """Gives line cut into lines of at most `limit` octets in UTF-8 (RFC 5322 §2.1.1).

    Cuts fall between characters, never inside one; later pieces are indented.
    """
    if len(line.encode("utf-8", "surrogateescape")) <= limit:
        return [line]
    out: list[str] = []
    piece, size = "", 0
    for ch in line:
        n = len(ch.encode("utf-8", "surrogateescape"))
        if size + n > limit:
            out.append(piece)
            piece, size = indent, len(indent)
        piece += ch
        size += n
    out.append(piece)
    return out


def add_allowed_sender(text: str, user: str, entry: str, inherited: tuple[str, ...] = ()) -> str:
    """Gives the config text with `entry` in the user's allow_senders, everything else as it was.

    Raises ConfigEditError when the file is laid out so that a safe edit is
    not possible (then the line to add by hand is named).
    """
    try:
        return add_list_entry(text, user, "allow_senders", entry, inherited)
    except ConfigEditError as exc:
        raise QuarantineError(str(exc)) from None


def allow_sender_in_config(config: Path, user: str, entry: str, inherited: tuple[str, ...]) -> bool:
    """Gives True when `entry` was added to the user's allow list in the config file.

    Raises ConfigEditError, naming the file, when it cannot be edited safely.
    """
    try:
        return edit_config(config, lambda text: add_allowed_sender(text, user, entry, inherited))
    except ConfigEditError as exc:
        raise QuarantineError(str(exc)) from None
