"""Telling the service manager how the watcher is doing: sd_notify(3) and the watchdog."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def sd_notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Gives True when the service manager was sent `state` over NOTIFY_SOCKET (sd_notify(3))."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address  # "@": abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), target)
    except OSError:
        return False
    return True


def watchdog_interval() -> float:
    """Gives half the service manager's watchdog timeout in seconds, or 0 when none is set."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return 0.0
    return int(usec) / 2e6
