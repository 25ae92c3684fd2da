"""Small helpers the tests of the watcher, the Maildir code and the HTML report share."""

from __future__ import annotations

import time
from collections.abc import Callable
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
