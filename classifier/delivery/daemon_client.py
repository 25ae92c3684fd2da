"""The pipe side of the resident daemon: hand one message over a UNIX socket, get it back checked.

Builtin modules only (``_socket``, ``_json``, ``pwd``: no ``socket``, ``json``
or ``re``, which cost a pipe process several milliseconds each), so that a
pipe process talking to `authsieve serve` starts as fast as Python can.  Any
trouble reaching the daemon gives None and the caller checks the message
in-process instead: the daemon is an optimisation, never a point of failure.

Before a message is handed over, the listening peer is asked who it is
(SO_PEERCRED, unix(7)): only root, the configured ``daemon_user`` or this
process's own user may receive it.  Whoever else listens on the socket path
(a local user who got there first while the daemon was down) would
otherwise read every message and decide what is delivered.

Wire format (one request per connection):
    client → daemon: one line of JSON with "size", then exactly that many octets of message;
    daemon → client: the same, the annotated message and its verdict;
    client → daemon: one line of JSON saying how delivery went, which the daemon logs;
    daemon → client: "logged", once the line is written (without it the client writes it).
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from classifier.errors import TempError

TYPE_CHECKING = False  # typing costs a pipe process milliseconds; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping
    from socket import socket


def _no_constant(name: str) -> object:
    # NaN and Infinity are not JSON (RFC 8259 §6); a head that holds one is refused.
    raise ValueError(f"{name} is not JSON")


try:
    import _json

    class _Strict:
        """What the C JSON scanner asks of json.JSONDecoder: json.loads's, without NaN."""

        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = staticmethod(_no_constant)

    _scan = _json.make_scanner(_Strict())  # type: ignore[arg-type]
    _quote = _json.encode_basestring_ascii
except (ImportError, AttributeError):  # not CPython: the json module does the same, slower
    import json

    _scan = json.JSONDecoder(parse_constant=_no_constant).scan_once  # type: ignore[attr-defined]
    _quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]

PROTOCOL = 1
MAX_LINE = 1 << 16  # a frame head is a few hundred octets of JSON
_CHUNK = 1 << 20
_UCRED_SIZE = 12  # struct ucred: int pid, uid, gid
# The daemon bounds its own DNS time (dns_budget, at most 600 s): this only
# catches a daemon that hangs; Postfix's command_time_limit (1000 s) is longer.
DEFAULT_WAIT = 610.0
# How long a pipe waits for the daemon to say it logged the delivery: a daemon killed
# between the report and its log line would leave the delivery unlogged (admin review).
LOGGED_WAIT = 2.0
LOGGED = b"logged\n"


class FrameError(TempError):
    """A frame that breaks the protocol or a limit: the connection is dropped."""


def encode_head(meta: Mapping[str, object]) -> bytes:
    """Gives one line of JSON (ASCII) for a head of strings, numbers, None and such tables."""
    return _encode(meta).encode("ascii") + b"\n"


def _encode(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(_quote(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_quote(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    raise TypeError(f"not in a frame head: {type(value).__name__}")


def decode_head(line: bytes) -> dict[str, object]:
    """Gives the JSON object of one head line; raises FrameError when it is not one."""
    try:
        text = line.decode("utf-8").strip()
        value, end = _scan(text, 0)
    except (ValueError, StopIteration, RecursionError):
        raise FrameError("frame head is not JSON") from None
    if end != len(text) or not isinstance(value, dict):
        raise FrameError("frame head is not a JSON object")
    return value


def _recv(sock: socket, size: int, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no complete frame in time")
    sock.settimeout(remaining)
    return sock.recv(size)


def read_line(sock: socket, timeout: float) -> bytes:
    """Gives one line (without more: a line is the last thing its sender writes before waiting)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        if len(buf) > MAX_LINE:
            raise FrameError("frame head too long")
        chunk = _recv(sock, MAX_LINE, deadline)
        if not chunk:
            raise FrameError("no frame head")
        buf += chunk
    return buf


def read_frame(sock: socket, max_size: int, timeout: float) -> tuple[dict[str, object], bytes]:
    """Gives the JSON head and the payload of one frame; raises OSError/FrameError when broken.

    The whole frame must arrive within `timeout` seconds and its payload be
    at most `max_size` octets: a frame announcing more is refused before any
    of it is read, so a local user cannot make the reader grow without bound.
    """
    deadline = time.monotonic() + timeout
    buf = read_line(sock, timeout)
    head, _, rest = buf.partition(b"\n")
    meta = decode_head(head)
    if meta.get("v") != PROTOCOL:
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


def write_frame(sock: socket, meta: Mapping[str, object], payload: bytes) -> None:
    """Sends one frame: the JSON head with the payload's size, then the payload."""
    sock.sendall(encode_head({**meta, "v": PROTOCOL, "size": len(payload)}) + payload)


def peer_uid(sock: socket) -> int:
    """Gives the uid of the process at the other end of a connected UNIX socket (SO_PEERCRED)."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED_SIZE)
    return int.from_bytes(raw[4:8], sys.byteorder, signed=True)


def trusted_uids(
    daemon_user: str | None, warn: Callable[[str], object] | None = None
) -> frozenset[int]:
    """Gives the uids a pipe process may hand mail to: root, itself, and daemon_user.

    `warn` takes what is worth a log line (default: the "authsieve" logger).
    """
    uids = {0, os.geteuid()}
    if daemon_user:
        import pwd

        try:
            uids.add(pwd.getpwnam(daemon_user).pw_uid)
        except KeyError:
            (warn or _warn)(f"daemon_user {daemon_user}: no such user; only root is trusted")
    return frozenset(uids)


def _warn(text: str) -> None:
    import logging

    logging.getLogger("authsieve").warning("%s", text)


class Answer:
    """The daemon's answer: the annotated message, the verdict's action, the log summary."""

    __slots__ = ("action", "data", "error", "summary")

    def __init__(self, data: bytes, action: str, summary: str, error: str) -> None:
        self.data, self.action, self.summary, self.error = data, action, summary, error


class DaemonCall:
    """One message handed to the daemon: `answer`, then `report` how its delivery went."""

    def __init__(self, sock: socket, answer: Answer) -> None:
        self.sock, self.answer = sock, answer

    def report(
        self,
        code: int,
        recipients: list[str],
        ms: float,
        reason: str = "",
        queue_id: str | None = None,
    ) -> bool:
        """Tells the daemon the delivery's exit code, for its log; True once it logged it.

        False when the daemon is gone, or does not say within LOGGED_WAIT that the
        line is written: the caller then writes the delivery line itself.
        """
        try:
            line = {"delivered": code, "to": recipients, "ms": round(ms, 1), "reason": reason}
            if queue_id:
                line["queue"] = queue_id
            self.sock.sendall(encode_head(line))
            self.sock.settimeout(LOGGED_WAIT)
            return _recv(self.sock, len(LOGGED), time.monotonic() + LOGGED_WAIT) == LOGGED
        except (OSError, FrameError):
            return False
        finally:
            self.sock.close()


def call_daemon(
    path: str,
    data: bytes,
    hints: Mapping[str, str | None],
    user: str | None,
    timeout: float = DEFAULT_WAIT,
    trusted: Collection[int] | Callable[[], Collection[int]] = (0,),
    warn: Callable[[str], object] | None = None,
    why: list[str] | None = None,
    wait_option: str = "--daemon-timeout",
) -> DaemonCall | None:
    """Gives the daemon's answer on an open connection, or None when the daemon cannot be used.

    None, without a byte of the message sent, also when the peer listening on
    `path` runs as a uid not in `trusted`; a function there is asked only
    when the peer is neither root nor this process's user (it may read the config).
    `warn` takes what is worth a log line (default: the "authsieve" logger), for a
    caller whose logging is not set up yet.  `why`, when given, gets the reason the
    daemon was not used, for the caller's fallback line, which names `wait_option` as
    the one that sets `timeout`.
    """
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        uid = peer_uid(sock)  # type: ignore[arg-type]
        if callable(trusted):
            trusted = (0, os.geteuid()) if uid in (0, os.geteuid()) else trusted()
        if uid not in trusted:
            (warn or _warn)(f"daemon at {path} runs as uid {uid}, not a trusted user: not used")
            sock.close()
            if why is not None:
                why.append(f"it runs as uid {uid}, not a trusted user")
            return None
        # "timeout": how long we wait; the daemon stops the checks then (nobody waits after).
        head = {"hints": dict(hints), "user": user, "timeout": timeout}
        write_frame(sock, head, data)  # type: ignore[arg-type]
        # Our headers add a few KiB; anything much larger is not our daemon's answer.
        meta, payload = read_frame(sock, len(data) + (1 << 20), timeout)  # type: ignore[arg-type]
    except (OSError, ValueError, FrameError) as exc:
        sock.close()
        if why is not None:
            why.append(_not_used(exc, timeout, wait_option))
        return None
    action = meta.get("action")
    if action not in ("inbox", "junk", "quarantine"):
        sock.close()
        if why is not None:
            why.append("its answer holds no verdict")
        return None
    answer = Answer(payload, str(action), str(meta.get("summary", "")), str(meta.get("error", "")))
    return DaemonCall(sock, answer)  # type: ignore[arg-type]


def _not_used(exc: Exception, timeout: float, wait_option: str) -> str:
    """Gives why a call failed, in an admin's words (each cause asks for another remedy)."""
    if isinstance(exc, FileNotFoundError):
        return "no socket (the daemon is not running)"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens on the socket (a daemon that stopped left it)"
    if isinstance(exc, PermissionError):
        return "not allowed to connect (the socket's owner or mode)"
    if isinstance(exc, TimeoutError):
        return f"no answer within {round(timeout, 1):g} s ({wait_option})"
    if isinstance(exc, ConnectionResetError | BrokenPipeError) or (
        isinstance(exc, FrameError) and str(exc) == "no frame head"
    ):
        return "it closed the connection without an answer (all connections busy, or it stopped)"
    if isinstance(exc, FrameError):
        return f"its answer is not usable: {exc}"
    return f"{type(exc).__name__}: {exc}"


def ask_daemon(
    path: str,
    data: bytes,
    hints: Mapping[str, str | None],
    user: str | None,
    timeout: float,
    trusted: Collection[int] = (0,),
) -> Answer | None:
    """Gives the daemon's answer for the message, or None when the daemon cannot be used."""
    call = call_daemon(path, data, hints, user, timeout, trusted)
    if call is None:
        return None
    call.sock.close()
    return call.answer
