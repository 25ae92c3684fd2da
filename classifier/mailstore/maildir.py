"""Maildir on disk: names, and moves that survive SIGKILL (folders: mailstore/folders.py).

Every copy authsieve writes gets a name derived from the original's: the
original's unique part without its ``,S=`` / ``,W=`` sizes, then the field
``,authsieve``, then the new sizes (Dovecot reads the first ``,S=`` it finds,
so the old one must go).  That name is the recorded link between the two
files: a restart that finds an original next to a processed copy of the same
core knows the copy was already renamed into place and removes the original
instead of filing it twice.

The order of work in `commit` (Maildir spec, docs/design.md "The failure rules"):
write to ``tmp/``, fsync, link into ``new/`` (or ``cur/`` with the flags
kept), fsync the directory, and only then unlink the original.  A kill
between any two steps leaves one of these states, each repaired by
`recover`: a stale file in ``tmp/`` (removed), or the original and its copy
both present (the original removed once both are shown to be the same
message by Message-ID and body hash).

A Maildir belongs to its user, who can put a symlink under any name in it;
the watcher often runs as root.  So every open, mkdir, rename and unlink
below the Maildir goes through a directory descriptor of `files.DirTree`, each
directory opened with O_NOFOLLOW from its parent: a planted link fails the
operation (ELOOP) instead of sending root's writes, or reads, where it points.
New files and folders are given to the Maildir's owner through their
descriptors.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from classifier.delivery.targets import maildir_name
from classifier.files import (
    DirTree,
    create_file,
    fsync_dir,
    read_regular,
    tree_for,
    write_all,
)
from classifier.mailstore.folders import folder_path, owner_of
from classifier.mailstore.keywords import carried_info
from classifier.message import Message

MARK = "authsieve"
INFO_SEP = ":"
_SIZE_FIELD = re.compile(r",[SW]=\d*")


@dataclass(frozen=True)
class MaildirName:
    """A Maildir file name split into its unique part and its info (``2,FS``)."""

    base: str
    info: str = ""

    @classmethod
    def parse(cls, name: str) -> MaildirName:
        base, sep, info = name.partition(INFO_SEP)
        return cls(base, info if sep else "")

    @property
    def marked(self) -> bool:
        """Tells whether authsieve wrote this file (its name carries the ``,authsieve`` field)."""
        return MARK in self.base.split(",")[1:]

    @property
    def core(self) -> str:
        """Gives the unique part without sizes and without our mark: the link between copies."""
        fields = _SIZE_FIELD.sub("", self.base).split(",")
        return ",".join(f for f in fields if f != MARK)

    def to_dict(self) -> dict[str, object]:
        return {"base": self.base, "info": self.info, "core": self.core, "marked": self.marked}


def virtual_size(data: bytes) -> int:
    """Gives the size with CRLF line ends, Dovecot's ``W=`` (the RFC 3501 §2.3.4 size)."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def processed_name(original: str, data: bytes, info: str = "") -> str:
    """Gives the name of the processed copy of `original` holding `data`, with `info` kept."""
    name = f"{MaildirName.parse(original).core},{MARK},S={len(data)},W={virtual_size(data)}"
    return f"{name}{INFO_SEP}{info}" if info else name


def is_message_name(name: str) -> bool:
    """Tells whether a directory entry can be a message (Maildir names never start with a dot)."""
    return bool(name) and not name.startswith(".")


def is_unfiled(name: str) -> bool:
    """Tells whether a name in new/ can be a message that still waits for us (not one we wrote)."""
    return is_message_name(name) and not MaildirName.parse(name).marked


@lru_cache(maxsize=64)
def _template_patterns(template: str) -> tuple[re.Pattern[str], ...]:
    parts = [p for p in template.strip("/").split("/") if p]
    return tuple(
        re.compile(re.sub(r"\\\{(user|local|domain)\\\}", r"(?P<\1>[^/]+)", re.escape(part)))
        for part in parts
    )


@lru_cache(maxsize=4096)
def user_from_path(maildir: Path, template: str) -> str | None:
    """Gives the user a Maildir belongs to by the path template, or None when it does not match.

    ``{domain}/{local}/Maildir`` reads ``/var/vmail/family.example/alice/Maildir``
    as alice@family.example; ``{user}`` stands for a whole address.
    """
    patterns = _template_patterns(template)
    path_parts = [p for p in str(maildir).rstrip("/").split("/") if p]
    if not patterns or len(path_parts) < len(patterns):
        return None
    found: dict[str, str] = {}
    for pattern, actual in zip(patterns, path_parts[-len(patterns) :], strict=True):
        m = pattern.fullmatch(actual)
        if m is None:
            return None
        found.update(m.groupdict())
    if "user" in found:
        return found["user"].lower()
    if "local" in found and "domain" in found:
        return f"{found['local']}@{found['domain']}".lower()
    return found.get("local", "").lower() or None


def expand_roots(patterns: tuple[str, ...] | list[str]) -> list[Path]:
    """Gives every Maildir (a directory with ``new/``) named by the paths or globs, sorted."""
    found: set[Path] = set()
    for pattern in patterns:
        names = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
        for name in names:
            path = Path(os.path.abspath(name))
            if (path / "new").is_dir():
                found.add(path)
    return sorted(found)


def list_folder(folder: Path) -> Iterator[Path]:
    """Gives the message files of one folder, new/ then cur/, each sorted by name.

    Symlinks are not messages: they are never listed (nor followed).
    """
    for sub in ("new", "cur"):
        try:
            names = sorted(
                e.name for e in os.scandir(folder / sub) if e.is_file(follow_symlinks=False)
            )
        except FileNotFoundError:
            continue
        yield from (folder / sub / n for n in names if is_message_name(n))


def identity(data: bytes) -> tuple[str, str]:
    """Gives (Message-ID, SHA-256 of the body): what stays the same when headers are added."""
    message = Message.parse(data)
    body = message.rest.replace(b"\r\n", b"\n")
    return (message.get("Message-ID") or "").strip(), hashlib.sha256(body).hexdigest()


def _write_synced(
    name: str, data: bytes, like: os.stat_result | None, dir_fd: int, owner: tuple[int, int] | None
) -> None:
    mode = like.st_mode & 0o777 if like is not None else 0o600
    try:
        fd = create_file(name, mode, dir_fd)
    except FileExistsError:
        # A leftover of a killed run: it was never renamed into place, so it is garbage.
        os.unlink(name, dir_fd=dir_fd)
        fd = create_file(name, mode, dir_fd)
    try:
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            # Only root gets here with another owner: the copy must be the mailbox owner's.
            with contextlib.suppress(PermissionError):
                os.fchown(fd, *owner)
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _renameat2() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        fn = ctypes.CDLL(None, use_errno=True).renameat2
        fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        return fn
    return None


_RENAMEAT2 = _renameat2()
_RENAME_NOREPLACE = 1


def _place(tmp_fd: int, name: str, final_fd: int, final_name: str) -> bool:
    """Gives True when tmp/name was moved to final, False when final was already there.

    One renameat2(RENAME_NOREPLACE) where the kernel and file system have it,
    else linkat() + unlinkat(): a plain rename() would replace an existing
    file.  Both work on directory descriptors and never follow a symlink.
    """
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(tmp_fd, name.encode(), final_fd, final_name.encode(), _RENAME_NOREPLACE) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), final_name)
    try:
        os.link(name, final_name, src_dir_fd=tmp_fd, dst_dir_fd=final_fd, follow_symlinks=False)
    except FileExistsError:
        return False
    os.unlink(name, dir_fd=tmp_fd)
    return True


def _unlink_original(original: Path, tree: DirTree) -> str | None:
    """Removes the original; gives its info when a client renamed it meanwhile, else None."""
    try:
        os.unlink(original.name, dir_fd=tree.fd(original.parent))
        return None
    except FileNotFoundError:
        # Dovecot may have moved it from new/ to cur/, or changed its flags in cur/ (a new
        # info after the base), while we worked: the original is then under another name.
        if original.parent.name not in ("new", "cur"):
            return None
    cur_fd = tree.fd(original.parent.parent / "cur")
    prefix = MaildirName.parse(original.name).base + INFO_SEP
    info = None
    for entry in os.scandir(cur_fd):
        if entry.name.startswith(prefix):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.name, dir_fd=cur_fd)
                info = MaildirName.parse(entry.name).info
    return info


def _take_flags(copy: Path, info: str, tree: DirTree) -> None:
    """Gives the copy, in its folder's cur/, the flags a client set on the original meanwhile."""
    name = MaildirName.parse(copy.name)
    target = f"{name.base}{INFO_SEP}{info}"
    if copy.parent.name == "cur" and name.info == info:
        return
    with contextlib.suppress(OSError):  # moved on by Dovecot already: its flags are newer
        cur = copy.parent.parent / "cur"
        os.rename(copy.name, target, src_dir_fd=tree.fd(copy.parent), dst_dir_fd=tree.fd(cur))


def place(
    original: Path,
    data: bytes,
    dest: Path,
    like: os.stat_result | None = None,
    tree: DirTree | None = None,
    keywords: tuple[str, ...] = (),
) -> Path:
    """Gives the path where `data`, the new version of `original`, now sits in folder `dest`.

    tmp/, fsync, then a no-replace rename into new/, or into cur/ when the
    copy has flags: those of an original in cur/ (its keyword letters
    translated for dest, `keywords.carried_info`) and the `keywords` given
    (``$Junk``, as Dovecot files a Sieve ``addflag``).  The original is
    still there: `finish` removes it.  Raises OSError (the original
    untouched, nothing left in tmp/) when a write fails, or when a directory
    on the way is a symlink.  `tree` holds the Maildir's directory
    descriptors (one is made otherwise).
    """
    if tree is None:
        with tree_for(original.parent.parent, dest) as own:
            return place(original, data, dest, like, own, keywords)
    source = original.parent.parent
    info = MaildirName.parse(original.name).info if original.parent.name == "cur" else ""
    if like is None:
        with contextlib.suppress(FileNotFoundError):
            like = os.stat(original.name, dir_fd=tree.fd(original.parent), follow_symlinks=False)
    owner = owner_of(tree)
    if keywords or (info and source != dest):
        source_fd = None if source == dest else tree.fd(source)
        info = carried_info(info, source_fd, tree.fd(dest), keywords, owner)
    tmp_fd = tree.fd(dest / "tmp")
    final_dir = dest / ("cur" if info else "new")
    final_fd = tree.fd(final_dir)
    # The derived name first; a fresh one only if a different message already holds it.
    for attempt in range(2):
        name = processed_name(maildir_name() if attempt else original.name, data, info)
        tmp = name.partition(INFO_SEP)[0]
        try:
            _write_synced(tmp, data, like, tmp_fd, owner)
            placed = _place(tmp_fd, tmp, final_fd, name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=tmp_fd)
            raise
        if placed:
            return final_dir / name
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=tmp_fd)
        try:
            if identity(read_regular(name, final_fd)[0]) == identity(data):
                return final_dir / name  # an earlier, killed run filed it already
        except FileNotFoundError:
            return final_dir / name  # it was there a moment ago under our name: moved on by Dovecot
    return final_dir / name


def finish(placed: list[tuple[Path, Path]], tree: DirTree | None = None) -> None:
    """Removes each original once the directories holding the new copies are synced.

    `placed` holds (original, copy) pairs; one fsync per directory serves
    them all, so a batch costs one directory sync, not one per message.
    """
    if tree is None:
        if not placed:
            return
        folders = [p.parent.parent for pair in placed for p in pair]
        with tree_for(*folders) as own:
            return finish(placed, own)
    for directory in {copy.parent for _, copy in placed}:
        fsync_dir(tree.fd(directory))
    for original, copy in placed:
        info = _unlink_original(original, tree)
        # Letters mean the same only within one folder: elsewhere the flags read stay.
        if info is not None and copy.parent.parent == original.parent.parent:
            _take_flags(copy, info, tree)


def commit(
    original: Path,
    data: bytes,
    dest: Path,
    like: os.stat_result | None = None,
    tree: DirTree | None = None,
) -> Path:
    """Gives the path of `data` filed into folder `dest` in place of `original`, which is removed.

    `place` then `finish` for one message: tmp/, fsync, rename, directory
    fsync, unlink of the original.
    """
    if tree is None:
        with tree_for(original.parent.parent, dest) as own:
            return commit(original, data, dest, like, own)
    final = place(original, data, dest, like, tree)
    finish([(original, final)], tree)
    return final


@dataclass(frozen=True)
class Recovery:
    """What a start-up repair of one Maildir found: stale tmp files and originals already filed."""

    stale_tmp: tuple[str, ...] = ()
    orphans_removed: tuple[str, ...] = ()
    orphans_kept: tuple[str, ...] = ()  # same core, different message: left for a person

    def to_dict(self) -> dict[str, object]:
        return {
            "stale_tmp": list(self.stale_tmp),
            "orphans_removed": list(self.orphans_removed),
            "orphans_kept": list(self.orphans_kept),
        }


def processed_index(maildir: Path) -> dict[str, Path]:
    """Gives core → path of every processed copy in INBOX, Junk and Quarantine (new/ and cur/)."""
    index: dict[str, Path] = {}
    for action in ("inbox", "junk", "quarantine"):
        for path in list_folder(folder_path(maildir, action)):
            name = MaildirName.parse(path.name)
            if name.marked:
                index.setdefault(name.core, path)
    return index


def recover(maildir: Path) -> Recovery:
    """Gives what was repaired after a kill: our stale tmp/ files removed, filed originals removed.

    Run before anything else touches this Maildir: a tmp/ file of ours is
    then never one in progress.  A folder reached through a symlink is
    skipped, never read or cleaned.
    """
    with DirTree(maildir) as tree:
        return _recover(maildir, tree)


def _recover(maildir: Path, tree: DirTree) -> Recovery:
    stale: list[str] = []
    for action in ("inbox", "junk", "quarantine"):
        tmp = folder_path(maildir, action) / "tmp"
        try:
            tmp_fd = tree.fd(tmp)
            entries = [e.name for e in os.scandir(tmp_fd)]
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                continue
            raise
        for name in entries:
            if MaildirName.parse(name).marked:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=tmp_fd)
                stale.append(str(tmp / name))
    originals = [p for p in list_folder(maildir) if not MaildirName.parse(p.name).marked]
    if not originals:
        return Recovery(tuple(stale))
    index = processed_index(maildir)
    removed: list[str] = []
    kept: list[str] = []
    for path in originals:
        copy = index.get(MaildirName.parse(path.name).core)
        if copy is None:
            continue
        try:
            same = identity(tree.read(path)[0]) == identity(tree.read(copy)[0])
        except OSError:  # gone meanwhile, or not a file we may read: left alone
            continue
        if same:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.name, dir_fd=tree.fd(path.parent))
            removed.append(str(path))
        else:
            kept.append(str(path))
    return Recovery(tuple(stale), tuple(removed), tuple(kept))
