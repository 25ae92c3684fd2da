"""One move of a message by a user, holding the delivery record the message names.

A message a user drags out of Junk or Quarantine ("rescued") or into Junk
("junked") names its delivery in our X-Authsieve (``delivery=…``, above the
topmost Received: only local software writes there, RFC 5321 §4.4; delivery
renamed every copy from outside, `classifier.annotate.defuse`).  Only the
delivery record counts (`classifier.aggregate.deliveries`): the mailbox is
the user's to write (IMAP APPEND), so every header in it, ours included, may
be forged.  A record names its recipient: a move by anybody else teaches
nothing, nor does a message whose id has no record.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from classifier.aggregate.deliveries import DeliveryRecord, valid_delivery_id
from classifier.auth.facts import HEADER_NAME, parse_header_value, safe_domain
from classifier.message import Message

RESCUED = "rescued"  # out of Junk or Quarantine, into a folder the user reads
JUNKED = "junked"  # into Junk from anywhere else
JUNK = "junk"
QUARANTINE = "quarantine"
# Folders a move into teaches nothing: deleting is not a judgement on the sender.
_IGNORED = frozenset({"trash", "deleted messages", "deleted items"})


@dataclass(frozen=True)
class Move:
    """One message moved by one user: which way, and the delivery record it names."""

    key: str  # digest of delivery id and user: the last direction counts
    at: int  # when it was moved, seconds since the epoch
    from_folder: str
    to_folder: str
    direction: str  # RESCUED | JUNKED
    record: DeliveryRecord  # what delivery found: the only evidence a move carries

    @property
    def user(self) -> str:
        """The recipient the delivery record names, as a login is compared with it."""
        return normalize_login(self.record.user)

    @property
    def delivery_id(self) -> str:
        return self.record.id

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key, "at": self.at, "user": self.user, "from_folder": self.from_folder,
            "to_folder": self.to_folder, "direction": self.direction,
            "record": self.record.to_dict(),
        }  # fmt: skip


def normalize_login(name: str) -> str:
    """Gives a login or address bare, in lower case, without a trailing dot on its domain."""
    text = name.strip().strip("<>").strip().lower()
    local, at, domain = text.rpartition("@")
    return f"{local}@{domain.rstrip('.')}" if at else text.rstrip(".")


def same_user(login: str, recipient: str) -> bool:
    """Tells whether the IMAP login is the recipient a delivery record names.

    A login without a domain (``alice``, Dovecot's plain user names) is the
    recipient's local part; an address must be the recipient.
    """
    a, b = normalize_login(login), normalize_login(recipient)
    if not a or not b:
        return False
    if a == b:
        return True
    return "@" not in a and "@" in b and b.rpartition("@")[0] == a


def folder_kind(name: str) -> str:
    """Gives JUNK, QUARANTINE, "trash" or "" for an IMAP folder name (any case, any prefix)."""
    leaf = re.split(r"[./]", name.strip())[-1].lower() if name.strip() else ""
    if leaf in ("junk", "spam"):
        return JUNK
    if leaf == QUARANTINE:
        return QUARANTINE
    return "trash" if leaf in _IGNORED else ""


def direction_of(from_folder: str, to_folder: str) -> str:
    """Gives RESCUED, JUNKED or "" (a move that teaches nothing)."""
    src, dst = folder_kind(from_folder), folder_kind(to_folder)
    if dst == JUNK and src != JUNK:
        return JUNKED
    if src in (JUNK, QUARANTINE) and dst == "":
        return RESCUED
    return ""


def delivery_id_of(message: Message, authserv_id: str) -> str:
    """Gives the delivery id our topmost X-Authsieve (our id=, above any Received) names, or ""."""
    ours = safe_domain(authserv_id) or "localhost"
    for field in message.fields:
        if field.key == "received":
            break
        if field.key == HEADER_NAME.lower():
            values = parse_header_value(field.value())
            if values.get("id", "").lower() == ours:
                found = values.get("delivery", "")
                return found if valid_delivery_id(found) else ""
    return ""


def move_key(delivery_id: str, user: str) -> str:
    """Gives the digest a move is counted under: delivery id and user (the last way counts)."""
    return hashlib.sha256(f"{delivery_id}\x00{normalize_login(user)}".encode()).hexdigest()


def move_of(
    record: DeliveryRecord, login: str, from_folder: str, to_folder: str, now: int
) -> Move | None:
    """Gives the move, or None when it teaches nothing (a neutral move, or not the recipient)."""
    direction = direction_of(from_folder, to_folder)
    if not direction or not same_user(login, record.user):
        return None
    return Move(
        key=move_key(record.id, record.user),
        at=now,
        from_folder=from_folder[:200],
        to_folder=to_folder[:200],
        direction=direction,
        record=record,
    )
