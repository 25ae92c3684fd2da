"""The pipe side of the resident daemon: hand one message over a UNIX socket, get it back checked.

Standard library only, so that a pipe process talking to `authsieve serve`
starts as fast as Python can.  Any trouble reaching the daemon gives None and
the caller checks the message in-process instead: the daemon is an
optimisation, never a point of failure.

Before a message is handed over, the listening peer is asked who it is
(SO_PEERCRED, unix(7)): only root, the configured ``daemon_user`` or this
process's own user may receive it.  Whoever else listens on the socket path
(a local user who got there first while the daemon was down) would
otherwise read every message and decide what is delivered.

Wire format (one request per connection), both directions:
    one line of JSON with "size", then exactly that many octets of message.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import time
from collections.abc import Collection, Mapping

from classifier.pipe import PipeOutcome

PROTOCOL = 1
MAX_LINE = 1 << 16  # a frame head is a few hundred octets of JSON
_CHUNK = 1 << 20
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

log = logging.getLogger("authsieve")


class FrameError(ValueError):
    """A frame that breaks the protocol or a limit: the connection is dropped."""


def _recv(sock: socket.socket, size: int, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no complete frame in time")
    sock.settimeout(remaining)
    return sock.recv(size)


def read_frame(
    sock: socket.socket, max_size: int, timeout: float
) -> tuple[dict[str, object], bytes]:
    """Gives the JSON head and the payload of one frame; raises OSError/FrameError when broken.

    The whole frame must arrive within `timeout` seconds and its payload be
    at most `max_size` octets: a frame announcing more is refused before any
    of it is read, so a local user cannot make the reader grow without bound.
    """
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        if len(buf) > MAX_LINE:
            raise FrameError("frame head too long")
        chunk = _recv(sock, MAX_LINE, deadline)
        if not chunk:
            raise FrameError("no frame head")
        buf += chunk
    head, _, rest = buf.partition(b"\n")
    try:
        meta = json.loads(head)
    except (ValueError, RecursionError):
        raise FrameError("frame head is not JSON") from None
    if not isinstance(meta, dict) or meta.get("v") != PROTOCOL:
        raise FrameError("unknown protocol version")
    size = meta.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise FrameError("bad frame size")
    if size > max_size:
        raise FrameError(f"frame of {size} octets is over the limit of {max_size}")
    if len(rest) > size:
        raise FrameError("data after the frame")
    payload = bytearray(rest)
    while len(payload) < size:
        chunk = _recv(sock, min(_CHUNK, size - len(payload)), deadline)
        if not chunk:
            raise FrameError("short frame")
        payload += chunk
    return meta, bytes(payload)


def write_frame(sock: socket.socket, meta: Mapping[str, object], payload: bytes) -> None:
    """Sends one frame: the JSON head with the payload's size, then the payload."""
    head = json.dumps({**meta, "v": PROTOCOL, "size": len(payload)}).encode() + b"\n"
    sock.sendall(head)
    sock.sendall(payload)


def peer_uid(sock: socket.socket) -> int:
    """Gives the uid of the process at the other end of a connected UNIX socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])


def trusted_uids(daemon_user: str | None) -> frozenset[int]:
    """Gives the uids a pipe process may hand mail to: root, itself, and daemon_user."""
    uids = {0, os.geteuid()}
    if daemon_user:
        import pwd

        try:
            uids.add(pwd.getpwnam(daemon_user).pw_uid)
        except KeyError:
            log.warning("daemon_user %s: no such user; only root is trusted", daemon_user)
    return frozenset(uids)


def ask_daemon(
    path: str,
    data: bytes,
    hints: dict[str, str | None],
    user: str | None,
    timeout: float,
    trusted: Collection[int] = (0,),
) -> PipeOutcome | None:
    """Gives the daemon's outcome for the message, or None when the daemon cannot be used.

    None, without a byte of the message sent, also when the peer listening
    on `path` runs as a uid not in `trusted`.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            uid = peer_uid(sock)
            if uid not in trusted:
                log.warning("daemon at %s runs as uid %d, not a trusted user: not used", path, uid)
                return None
            write_frame(sock, {"hints": hints, "user": user}, data)
            sock.shutdown(socket.SHUT_WR)
            # Our headers add a few KiB; anything much larger is not our daemon's answer.
            meta, payload = read_frame(sock, len(data) + (1 << 20), timeout)
    except (OSError, ValueError):
        return None
    action = meta.get("action")
    if action not in ("inbox", "junk", "quarantine"):
        return None
    return PipeOutcome(
        payload, str(action), str(meta.get("summary", "")), str(meta.get("error", ""))
    )
