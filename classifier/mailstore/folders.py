"""Maildir++ folders and Dovecot's subscriptions file, created the way Dovecot does.

A folder is ``maildir/.Name`` with tmp/new/cur and a ``maildirfolder`` file, subscribed
in ``subscriptions`` (Dovecot's version 2 format, written under its dotlock) so that mail
clients show it.  Like every write below a Maildir (classifier/mailstore/maildir.py),
each goes through a directory descriptor of `files.DirTree`: a planted symlink fails the
operation (ELOOP), and new files and folders are given to the Maildir's owner.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from classifier.delivery.targets import FOLDERS
from classifier.files import DirTree, create_file, open_dir, read_regular, take_dotlock, write_all

SUBSCRIPTIONS = "subscriptions"
_V2_HEADER = "V\t2\n\n"


def folder_path(maildir: Path, action: str) -> Path:
    """Gives the Maildir++ folder a verdict files into (the Maildir itself for inbox)."""
    folder = FOLDERS.get(action, "")
    return maildir / folder if folder else maildir


def owner_of(tree: DirTree) -> tuple[int, int] | None:
    """Gives (uid, gid) to hand new files to: only root can, and must, so Dovecot can write them."""
    return tree.owner() if os.geteuid() == 0 else None


def _mkdir_owned(name: str, parent_fd: int, mode: int, owner: tuple[int, int] | None) -> None:
    """Makes directory name under parent_fd, owned by owner; an existing one is left as it is."""
    try:
        os.mkdir(name, mode, dir_fd=parent_fd)
    except FileExistsError:
        return
    if owner:
        # Through a descriptor opened without following: a link swapped in meanwhile fails.
        fd = open_dir(name, dir_fd=parent_fd)
        try:
            os.fchown(fd, *owner)
        finally:
            os.close(fd)


def ensure_folder(maildir: Path, folder: str, tree: DirTree | None = None) -> Path:
    """Gives ``maildir/.Folder``, created with tmp/new/cur, a subscription and ``maildirfolder``.

    ``maildirfolder`` comes last, so a creation cut short (a full disk) is
    completed, subscription included, by the next call.  A symlink anywhere
    on the way (``.Quarantine`` or its ``new``) raises OSError (ELOOP).
    """
    if not folder:
        return maildir
    own = tree is None
    tree = tree or DirTree(maildir)
    try:
        base = maildir / folder
        root_fd = tree.fd(maildir)
        try:
            os.stat("maildirfolder", dir_fd=tree.fd(base), follow_symlinks=False)
            return base
        except FileNotFoundError:
            pass
        owner = owner_of(tree)
        mode = stat.S_IMODE(os.fstat(root_fd).st_mode)
        _mkdir_owned(folder, root_fd, mode, owner)
        base_fd = tree.fd(base)
        for sub in ("tmp", "new", "cur"):
            _mkdir_owned(sub, base_fd, mode, owner)
        subscribe(maildir, folder.lstrip("."), tree=tree)
        try:
            fd = create_file("maildirfolder", 0o600, base_fd)
        except FileExistsError:
            return base
        try:
            if owner:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
        return base
    finally:
        if own:
            tree.close()


def _tab_escape(text: str) -> str:
    """Gives text escaped the way Dovecot's subscriptions v2 lines are (\\001 escapes)."""
    return (text.replace("\x01", "\x011").replace("\t", "\x01t").replace("\r", "\x01r")).replace(
        "\n", "\x01n"
    )


def read_subscriptions(maildir: Path, dir_fd: int | None = None) -> tuple[int, list[str]]:
    """Gives the subscriptions file's version (2 when absent) and its lines as stored.

    With dir_fd (the Maildir's descriptor) the file is read from there, and a
    symlink in its place raises OSError instead of being read.
    """
    try:
        if dir_fd is None:
            raw = (maildir / SUBSCRIPTIONS).read_bytes()
        else:
            raw, _ = read_regular(SUBSCRIPTIONS, dir_fd)
    except FileNotFoundError:
        return 2, []
    text = raw.decode("utf-8", errors="surrogateescape")
    if text.startswith(_V2_HEADER):
        return 2, [line for line in text[len(_V2_HEADER) :].split("\n") if line]
    return 1, [line for line in text.split("\n") if line]


def subscribe(
    maildir: Path, mailbox: str, timeout: float = 10.0, tree: DirTree | None = None
) -> bool:
    """Gives True when `mailbox` was added to Dovecot's ``subscriptions``, False if already there.

    Written the way Dovecot writes it: the dotlock ``subscriptions.lock`` is
    created exclusively, filled, fsynced and renamed over the file; the
    version 2 header (``V<TAB>2``) is kept, or used for a new file.
    """
    own = tree is None
    tree = tree or DirTree(maildir)
    try:
        return _subscribe(tree, maildir, mailbox, timeout)
    finally:
        if own:
            tree.close()


def _subscribe(tree: DirTree, maildir: Path, mailbox: str, timeout: float) -> bool:
    dir_fd = tree.fd(maildir)
    lock = SUBSCRIPTIONS + ".lock"
    fd = take_dotlock(SUBSCRIPTIONS, dir_fd, timeout)
    try:
        version, lines = read_subscriptions(maildir, dir_fd)
        entry = _tab_escape(mailbox) if version >= 2 else mailbox
        if entry in lines:
            os.close(fd)
            os.unlink(lock, dir_fd=dir_fd)
            return False
        text = (_V2_HEADER if version >= 2 else "") + "".join(f"{x}\n" for x in [*lines, entry])
        write_all(fd, text.encode("utf-8", "surrogateescape"))
        os.fsync(fd)
        owner = owner_of(tree)
        if owner:
            os.fchown(fd, *owner)
        os.close(fd)
        os.rename(lock, SUBSCRIPTIONS, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return True
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(lock, dir_fd=dir_fd)
        raise
