"""Writes that survive a crash: the whole data, fsynced, before any rename makes it visible.

Every writer in authsieve (Maildir copies, deliveries, the config file on
release, installed Sieve scripts) follows the same order: write the data to a
file nobody reads yet, fsync it, rename it into place, fsync the directory
(a rename is durable only once its directory is).  These are the shared steps.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """Writes every byte of data to fd: os.write may write less than it was given."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_synced(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Creates path (it must not exist) with data, fsynced; removes it again on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Makes a directory's entries durable (a rename is only safe once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
