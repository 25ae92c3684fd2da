"""The pipe side of the resident daemon: hand one message over a UNIX socket, get it back checked.

Standard library only, so that a pipe process talking to `authsieve serve`
starts as fast as Python can.  Any trouble reaching the daemon gives None and
the caller checks the message in-process instead: the daemon is an
optimisation, never a point of failure.

Wire format (one request per connection), both directions:
    one line of JSON with "size", then exactly that many octets of message.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping

from classifier.pipe import PipeOutcome

PROTOCOL = 1
MAX_LINE = 1 << 20


def read_frame(sock: socket.socket) -> tuple[dict[str, object], bytes]:
    """Gives the JSON head and the payload of one frame; raises OSError/ValueError when broken."""
    stream = sock.makefile("rb")
    head = stream.readline(MAX_LINE)
    if not head.endswith(b"\n"):
        raise ValueError("no frame head")
    meta = json.loads(head)
    if not isinstance(meta, dict) or meta.get("v") != PROTOCOL:
        raise ValueError("unknown protocol version")
    size = meta.get("size")
    if not isinstance(size, int) or size < 0:
        raise ValueError("bad frame size")
    payload = stream.read(size)
    if len(payload) != size:
        raise ValueError("short frame")
    return meta, payload


def write_frame(sock: socket.socket, meta: Mapping[str, object], payload: bytes) -> None:
    """Sends one frame: the JSON head with the payload's size, then the payload."""
    head = json.dumps({**meta, "v": PROTOCOL, "size": len(payload)}).encode() + b"\n"
    sock.sendall(head + payload)


def ask_daemon(
    path: str, data: bytes, hints: dict[str, str | None], user: str | None, timeout: float
) -> PipeOutcome | None:
    """Gives the daemon's outcome for the message, or None when the daemon cannot be used."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            write_frame(sock, {"hints": hints, "user": user}, data)
            sock.shutdown(socket.SHUT_WR)
            meta, payload = read_frame(sock)
    except (OSError, ValueError):
        return None
    action = meta.get("action")
    if action not in ("inbox", "junk", "quarantine"):
        return None
    return PipeOutcome(
        payload, str(action), str(meta.get("summary", "")), str(meta.get("error", ""))
    )
