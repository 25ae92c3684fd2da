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

import os
import secrets
import stat
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
) -> None:
    """Creates path (it must not exist) with data, fsynced; removes it again on failure.

    `owner` (uid, gid) is given to the file through its descriptor, never by name.
    """
    fd = create_file(path, mode, dir_fd)
    try:
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        try:
            os.unlink(path, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise


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
