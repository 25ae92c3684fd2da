"""Small helpers the tests of the watcher, the Maildir code and the HTML report share."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Headless Chromium as the report tests and docs/make_screenshot.py run it: no network
# of its own, no first-run work, nothing that differs between machines.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def make_maildir(path: Path) -> Path:
    """Gives path with the tmp/, new/ and cur/ of a Maildir made."""
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "it") -> None:
    """Returns once condition() holds; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def group_processes(pgid: int) -> list[int]:
    """Gives the live processes of a process group (a watcher and its workers; no zombies)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


NOBODY = (65534, 65534)  # nobody:nogroup, the unprivileged local user of the security tests


def as_nobody(fn: Callable[[], object]) -> None:
    """Runs fn in a forked child as nobody:nogroup (tests run as root); fails if fn raised.

    The child sheds root the way a login would: no supplementary groups,
    then the group, then the user.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY[1])
            os.setuid(NOBODY[0])
            fn()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed"


def give_to_nobody(*paths: Path) -> None:
    """Hands paths to nobody:nogroup, each reachable by it (mode 0755 for directories)."""
    for p in paths:
        os.chown(p, *NOBODY)
        if p.is_dir():
            p.chmod(0o755)


@contextmanager
def stranger_socket() -> Iterator[Path]:
    """Gives a socket path where nobody (no daemon_user of any config here) listens and holds.

    It accepts one connection and keeps it 30 s: what a local user who got to the
    daemon's socket path first would do with the messages handed to it.  Needs root.
    """
    # Not pytest's tmp_path: nobody cannot reach into root's 0700 directory.
    where = Path(tempfile.mkdtemp(prefix="authsieve-stranger-"))
    where.chmod(0o777)
    path = where / "stranger.sock"
    code = (
        "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]);"
        " s.listen(1); c, _ = s.accept(); time.sleep(30)"
    )
    stranger = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], user="nobody", group="nogroup", cwd="/"
    )
    try:
        wait_for(path.exists, 10, "the stranger's socket")
        yield path
    finally:
        stranger.kill()
        stranger.wait()
        shutil.rmtree(where, ignore_errors=True)


# Why a daemon was not used, as the fallback lines say it, by what is left at its socket path.
FALLBACK_CAUSES = [
    ("none", "no socket (the daemon is not running)"),
    ("stale", "nothing listens on the socket (a daemon that stopped left it)"),
    ("mute", "it closed the connection without an answer"),
]


def unusable_socket(path: Path, kind: str) -> socket.socket:
    """Gives what a daemon leaves at path: not running ("none"), dead ("stale"), busy ("mute").

    A stale socket is bound and not listening; a busy one accepts once and closes the
    connection unanswered.  The caller closes the socket returned.
    """
    held = socket.socket(socket.AF_UNIX)
    if kind != "none":
        held.bind(str(path))
    if kind == "mute":
        held.listen(1)
        threading.Thread(target=lambda: held.accept()[0].close(), daemon=True).start()
    return held
