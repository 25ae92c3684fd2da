"""The message files of Maildirs, for `authsieve report` and `authsieve recheck` to read.

Only walks: each Maildir's INBOX and .Folders, new/ and cur/, oldest name
first; nothing is opened or written here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from classifier.errors import UsageError

_STAMP = re.compile(r"(\d{9,11})[.]")
# Folders of mail the user wrote or threw away (RFC 6154 \Sent, \Drafts, \Trash): not
# received mail a policy could misfile, and their "SPF none" would only skew the counts.
SKIPPED_FOLDERS = frozenset(
    {
        "sent",
        "sent messages",
        "sent items",
        "drafts",
        "templates",
        "outbox",
        "trash",
        "deleted messages",
        "deleted items",
    }
)


@dataclass(frozen=True)
class MailFile:
    """A message file in a Maildir: the Maildir it belongs to, its folder, its delivery time."""

    path: Path
    root: Path
    folder: str  # "INBOX" or the Maildir++ folder name (".Junk")
    delivered: float


def _delivered(entry: os.DirEntry[str]) -> float:
    # A Maildir name starts with the delivery time; else the mtime (Dovecot's received date).
    m = _STAMP.match(entry.name)
    return float(m.group(1)) if m else entry.stat().st_mtime


def maildir_files(paths: Sequence[str], since: float | None = None) -> list[MailFile]:
    """Gives the message files of each Maildir (INBOX and each .Folder) delivered since `since`.

    Sent, Drafts, Trash and their like are left out (SKIPPED_FOLDERS).
    """
    out: list[MailFile] = []
    for name in paths:
        root = Path(name)
        if not root.is_dir() or not any((root / sub).is_dir() for sub in ("new", "cur")):
            raise UsageError(f"{root}: not a Maildir (no new/ or cur/)")
        subfolders = sorted(
            d
            for d in root.iterdir()
            if d.name.startswith(".")
            and d.name.rsplit(".", 1)[-1].lower() not in SKIPPED_FOLDERS
            and d.is_dir()
        )
        for folder_dir, folder in [(root, "INBOX"), *((d, d.name) for d in subfolders)]:
            for sub in ("new", "cur"):
                if not (folder_dir / sub).is_dir():
                    continue
                with os.scandir(folder_dir / sub) as it:
                    # Maildir names never start with a dot (.keep and the like are not mail).
                    entries = sorted(
                        (e for e in it if not e.name.startswith(".") and e.is_file()),
                        key=lambda e: e.name,
                    )
                for e in entries:
                    when = _delivered(e)
                    if since is None or when >= since:
                        out.append(MailFile(Path(e.path), root, folder, when))
    return out
