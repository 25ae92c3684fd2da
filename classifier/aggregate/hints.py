"""What to do about a report store that cannot be opened: one clause naming the real file.

The store file, its ``-wal`` and ``-shm`` files and its directory must all be
writable by the one user the pipe, the watcher, the daemon and ``dmarc-report``
run as.  The hint names the path that is in the way and the user this process
runs as, so that the command it suggests is the one to type.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path


def _who() -> tuple[str, str]:
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    try:
        group = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        group = str(os.getegid())
    return user, group


def _writable(path: Path) -> bool:
    return os.access(path, os.R_OK | os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def store_hint(path: Path) -> str:
    """Gives what to do about the SQLite store at `path` that could not be opened."""
    user, group = _who()
    files = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
    if any(not _writable(p) for p in files):
        names = " ".join(str(p) for p in files)
        return (
            f"{path} is not writable by {user}, who runs this (a store file created by"
            f" another user, such as root): chown {user}:{group} {names}"
            " (README: DMARC aggregate reports)"
        )
    directory = path.parent
    return (
        f"its directory must be writable by {user}, who runs this (the pipe, watch, serve"
        f" and dmarc-report run as one user): install -d -o {user} -g {group} -m 750"
        f" {directory} (README: DMARC aggregate reports)"
    )
