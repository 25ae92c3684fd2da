"""Writes that survive a crash and never follow a symlink someone else planted.

Every writer in authsieve (Maildir copies, deliveries, the config file on
release, installed Sieve scripts) follows the same order: write the data to a
file nobody reads yet, fsync it, rename it into place, fsync the directory
(a rename is durable only once its directory is).  These are the shared steps.

Directories a mail user owns (a Maildir, a per-user Sieve directory) are
worked on through a directory descriptor (``dir_fd``) and with ``O_NOFOLLOW``:
a name the user swapped for a symlink then fails (ELOOP) instead of making a
process that runs as root read or write where the link points.  New files are
created with ``O_EXCL`` (which never follows a symlink at the name, open(2)).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading
import time
from pathlib import Path

# open(2): O_NOFOLLOW fails with ELOOP on a symlink; O_DIRECTORY with ENOTDIR on a file.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted under a message name must not hang the reader.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Name = str | Path


def write_all(fd: int, data: bytes) -> None:
    """Writes every byte of data to fd: os.write may write less than it was given."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def open_dir(path: Name, dir_fd: int | None = None, follow: bool = False) -> int:
    """Gives a descriptor of the directory path; a symlink there fails (ELOOP) unless follow."""
    flags = DIR_FLAGS & ~os.O_NOFOLLOW if follow else DIR_FLAGS
    return os.open(path, flags, dir_fd=dir_fd)


def create_file(name: Name, mode: int = 0o600, dir_fd: int | None = None) -> int:
    """Gives a descriptor of a new file: an existing file or symlink at name fails (EEXIST)."""
    return os.open(name, CREATE_FLAGS, mode, dir_fd=dir_fd)


def read_regular(name: Name, dir_fd: int | None = None) -> tuple[bytes, os.stat_result]:
    """Gives the bytes and the status of a regular file; a symlink, FIFO or device fails."""
    fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{name}: not a regular file")
        chunks = []
        while chunk := os.read(fd, max(st.st_size + 1, 65536)):
            chunks.append(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def temp_name(prefix: str, suffix: str = "") -> str:
    """Gives a file name nobody can predict (a planted file or link cannot wait for it)."""
    return f"{prefix}{secrets.token_hex(8)}{suffix}"


def write_synced(
    path: Name,
    data: bytes,
    mode: int = 0o600,
    dir_fd: int | None = None,
    owner: tuple[int, int] | None = None,
    exact_mode: bool = False,
) -> None:
    """Creates path (it must not exist) with data, fsynced; removes it again on failure.

    `owner` (uid, gid) is given to the file through its descriptor, never by name.
    `exact_mode` sets `mode` through the descriptor too, so that the umask (077
    in many root shells) cannot take away what another user must read.
    """
    fd = create_file(path, mode, dir_fd)
    try:
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            if exact_mode:
                os.fchmod(fd, mode)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path, dir_fd=dir_fd)
        raise


def replace_file(path: Path, data: bytes) -> None:
    """Replaces an existing file's content: a sibling temp file with its owner and mode,
    fsynced, renamed over it, then the directory fsynced."""
    st = path.stat()
    tmp = path.with_name(temp_name(f".{path.name}.authsieve-"))
    owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
    write_synced(tmp, data, st.st_mode & 0o777, owner=owner, exact_mode=True)
    try:
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


DOTLOCK_STALE = 30.0  # seconds: Dovecot's SUBSCRIPTION_FILE_CHANGE_TIMEOUT


def take_dotlock(
    name: str, dir_fd: int, timeout: float = 10.0, stale: float = DOTLOCK_STALE
) -> int:
    """Gives a descriptor of ``name.lock``, created exclusively: Dovecot's dotlock on `name`.

    The lock file is also the new version of the file (filled, fsynced and
    renamed over `name` by the caller, as Dovecot's file_dotlock_replace
    does).  A lock older than `stale` seconds is a crashed writer's and is
    removed; waiting longer than `timeout` raises OSError (EAGAIN).
    """
    lock = name + ".lock"
    deadline = time.monotonic() + timeout
    while True:
        try:
            return create_file(lock, 0o600, dir_fd)
        except FileExistsError:
            try:
                st = os.stat(lock, dir_fd=dir_fd, follow_symlinks=False)
                if time.time() - st.st_mtime > stale:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock, dir_fd=dir_fd)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() > deadline:
                raise OSError(errno.EAGAIN, "timeout waiting for the lock", lock) from None
            time.sleep(0.05)


def fsync_dir(path: Name | int) -> None:
    """Makes a directory's entries durable (a rename is only safe once its directory is synced).

    Takes a path or an open directory descriptor (which stays open).
    """
    if isinstance(path, int):
        os.fsync(path)
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirTree:
    """Open descriptors of the directories under one root (a Maildir), none reached by a symlink.

    `fd(path)` opens each component below the Maildir with O_NOFOLLOW from
    its parent's descriptor and keeps it for the next call: a batch of
    messages costs a few opens, not several per message.  The Maildir itself
    is opened as named (the administrator's path).  Paths are those the
    caller built from the root, not resolved ones.  Safe to share between
    the threads of one batch; `close` (or ``with``) releases every descriptor.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._owner: tuple[int, int] | None = None

    def __enter__(self) -> DirTree:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def fd(self, path: Path) -> int:
        """Gives a descriptor of directory path (the root or below it); ELOOP for a symlink."""
        with self._lock:
            return self._open(path)

    def _open(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            return fd
        if path == self.root:
            fd = open_dir(path, follow=True)
        elif self.root in path.parents:
            fd = open_dir(path.name, dir_fd=self._open(path.parent))
        else:  # not below this Maildir (a caller's own folder): its last component at least
            fd = open_dir(path)
        self._fds[path] = fd
        return fd

    def owner(self) -> tuple[int, int]:
        """Gives the (uid, gid) of the root: whom every file and folder written below belongs to."""
        if self._owner is None:
            st = os.fstat(self.fd(self.root))
            self._owner = (st.st_uid, st.st_gid)
        return self._owner

    def read(self, path: Path) -> tuple[bytes, os.stat_result]:
        """Gives the bytes and status of a regular file; a symlink, FIFO or device: OSError."""
        return read_regular(path.name, self.fd(path.parent))

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def tree_for(*paths: Path) -> DirTree:
    """Gives a DirTree rooted where the given directories meet (the Maildir in every real use)."""
    return DirTree(Path(os.path.commonpath([str(p) for p in paths])))
