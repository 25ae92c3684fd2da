"""`authsieve serve`: a resident checker on a UNIX socket for the Postfix pipe transport.

Postfix starts one process per delivery; most of its cost is importing the
libraries and asking DNS with a cold cache.  The daemon pays both once: it
keeps the engine imported, the config and policies loaded and one DNS cache
warm, and answers `authsieve pipe --daemon SOCKET` with the annotated
message and its verdict.  Delivery stays in the pipe process, as the user
Postfix runs it as.

Any local user who can connect is a client, so the daemon bounds what one
can cost it: a frame's size (`max_size`, Postfix's message_size_limit by
default), the time a request may take to arrive (`idle_timeout`), and the
number of connections served at once (more are closed at once; the pipe
process then checks in-process).  The socket is created 0600 and given to
``socket_user`` with ``socket_mode``; started as root with ``daemon_user``
set, the daemon then runs as that user.  Errors are one log line each.

SIGHUP re-reads the config and its policies (and the resolver they name);
a config that fails to load is one log line and the old one stays.  The
socket, its owner and mode, the user and the limits stay as started.

A daemon does not take the socket of one that still answers on it, and at exit
removes the socket file only if it is still the one it bound.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import select
import shutil
import signal
import socket
import socketserver
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifier.aggregate.deliveries import HeldNote, delivery_recorder
from classifier.aggregate.store import recorder
from classifier.auth.checks import CheckAbandoned, Deadline
from classifier.config import Config, Settings
from classifier.delivery.daemon_client import (
    DEFAULT_WAIT,
    LOGGED,
    FrameError,
    decode_head,
    read_frame,
    read_line,
    write_frame,
)
from classifier.envelope.trust import Hints
from classifier.errors import UsageError
from classifier.evaluate import Evaluation, HeldRecord, check_and_annotate
from classifier.log import log, reopen_logging
from classifier.logwords import delivery_line, failure_line
from classifier.lookup.resolver import Resolver

POSTFIX_DEFAULT_SIZE = 10_240_000  # postconf(5) message_size_limit default


class DaemonSetupError(UsageError):
    """The daemon cannot start as configured: one line for the user (exit 2)."""


@dataclass(frozen=True)
class Engine:
    """What the daemon checks with: swapped whole on SIGHUP, read once per request.

    The config was validated whole when it was loaded (at start or on SIGHUP), so a
    bad policy stops the start or the reload, never a message.
    """

    config: Config
    resolver: Resolver
    record: Callable[[Evaluation], object] | None  # the DMARC report rows, when [reports] is on


def engine_for(config: Config, resolver: Resolver) -> Engine:
    """Gives the engine for this config."""
    return Engine(config, resolver, recorder(config.reports))


@dataclass(frozen=True)
class Limits:
    """What one client may cost the daemon."""

    max_size: int = POSTFIX_DEFAULT_SIZE
    idle_timeout: float = 10.0
    max_connections: int = 64


def postfix_size_limit() -> int:
    """Gives Postfix's message_size_limit (postconf -h), else its default; 0 (no limit) too."""
    postconf = shutil.which("postconf") or (
        "/usr/sbin/postconf" if Path("/usr/sbin/postconf").exists() else None
    )
    if postconf:
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            out = subprocess.run(
                [postconf, "-h", "message_size_limit"],
                capture_output=True,
                timeout=10,
                check=True,
            ).stdout
            value = int(out.strip())
            if value > 0:
                return value
    return POSTFIX_DEFAULT_SIZE


def limits_from(settings: Settings) -> Limits:
    """Gives the daemon's limits from the [classifier] daemon_* keys."""
    return Limits(
        max_size=settings.daemon_max_message_size or postfix_size_limit(),
        idle_timeout=settings.daemon_idle_timeout,
        max_connections=settings.daemon_max_connections,
    )


def _hints(value: object) -> Hints:
    """Gives the Hints a pipe process sent as JSON; keys it does not know are dropped."""
    raw = value if isinstance(value, dict) else {}
    return Hints(**{name: _text(raw.get(name)) for name in Hints._fields})


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _user(name: str, key: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise DaemonSetupError(f"classifier.{key} {name!r}: no such user") from None


class DaemonServer(socketserver.ThreadingUnixStreamServer):
    """A threading UNIX-socket server that serves at most `limits.max_connections` at once."""

    daemon_threads = True

    def __init__(self, path: str, handler: Any, limits: Limits, engine: Engine) -> None:
        self.limits = limits
        self.engine = engine
        self.slots = threading.BoundedSemaphore(limits.max_connections)
        self.socket_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file bound
        super().__init__(path, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            log.warning("daemon: %d connections busy, one refused", self.limits.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        log.error("daemon: request failed: %s: %s", type(exc).__name__, exc)


def make_server(
    path: str,
    config: Config,
    resolver: Resolver,
    mode: int | None = None,
    limits: Limits | None = None,
) -> DaemonServer:
    """Gives a server bound to the socket path (a stale socket file is replaced).

    The socket is born with its mode (0600 or 0660, owned by the daemon's user) and only
    then given its owner (``socket_user``, when root), so no one else can connect in between.
    """
    settings = config.engine
    lim = limits or limits_from(settings)
    mode = settings.socket_mode if mode is None else mode
    engine = engine_for(config, resolver)

    class Handler(socketserver.BaseRequestHandler):
        server: DaemonServer

        def handle(self) -> None:
            try:
                meta, data = read_frame(self.request, lim.max_size, lim.idle_timeout)
            except (OSError, FrameError) as exc:
                log.warning("daemon: bad request: %s", exc)
                return
            user = meta.get("user")
            engine = self.server.engine
            # Report rows only when the pipe process says the delivery succeeded.
            record = HeldRecord(engine.record)
            # The learning record too; none (no delivery id) when [learn] is off.
            learning = delivery_recorder(engine.config.learn)
            note = HeldNote(learning) if learning is not None else None
            try:
                outcome = check_and_annotate(
                    data,
                    engine.config.engine,
                    engine.resolver,
                    engine.config.policies,
                    _hints(meta.get("hints")),
                    str(user) if user else None,
                    record,
                    note,
                    request_deadline(meta, self.request),
                )
            except CheckAbandoned as exc:
                # The client delivers without us (or already did): the work is wasted.
                log.warning("daemon: check abandoned: %s", exc)
                return
            meta_out = {
                "action": outcome.action,
                "summary": outcome.summary,
                "error": outcome.error,
            }
            try:
                self.request.settimeout(lim.idle_timeout)
                write_frame(self.request, meta_out, outcome.data)
                report = decode_head(read_line(self.request, lim.idle_timeout))
            except (OSError, FrameError) as exc:
                # The client delivers all the same; it logs the delivery itself.
                log.info("daemon: no delivery report: %s", exc)
                return
            log_delivery(report, outcome.summary)
            if report.get("delivered") == 0:
                record.delivered()
                if note is not None:
                    note.delivered()
            # Only now: a client that hears nothing writes the delivery line itself.
            with contextlib.suppress(OSError):
                self.request.sendall(LOGGED)

    target = Path(path)
    if _answering(path):
        # Taking its name would leave it running with no socket, and our exit would then
        # remove the name, so every delivery would check in-process until a restart.
        raise DaemonSetupError(f"{path}: another daemon answers on this socket; stop it first")
    owner = None
    if settings.socket_user and os.geteuid() == 0:
        pw = _user(settings.socket_user, "socket_user")
        owner = (pw.pw_uid, pw.pw_gid)
    # Bound under a name of its own, given its owner and mode, then renamed into place:
    # whoever finds the socket at `path` finds it finished (a client, or a test).
    temp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}")
    # Born with its mode, from the umask: a chmod() by name would follow a link that the
    # socket directory's owner (the pipe user) swapped in for the name, and change the
    # mode of any file as root (attacker review, issue 15).  lchown() changes a link only.
    old = os.umask(0o777 & ~mode)
    try:
        server = DaemonServer(str(temp), Handler, lim, engine)
    finally:
        os.umask(old)
    try:
        if owner:
            os.chown(temp, *owner, follow_symlinks=False)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                # rename() would replace it: a mistyped path must not cost a file
                raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
        bound = os.lstat(temp)
        os.rename(temp, path)  # a stale socket file left by a daemon that died is replaced
    except OSError:
        server.server_close()
        temp.unlink(missing_ok=True)
        raise
    server.socket_id = (bound.st_dev, bound.st_ino)
    return server


def _answering(path: str) -> bool:
    """Tells whether a process accepts connections on the socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(path)
        except OSError:  # none there, a stale file (ECONNREFUSED), or not ours to use
            return False
    return True


def remove_socket(path: str, server: DaemonServer) -> None:
    """Removes the socket file at `path` if it is still the one `server` bound."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == server.socket_id:
            os.unlink(path)


def request_deadline(meta: dict[str, object], sock: socket.socket) -> Deadline:
    """Gives the deadline of a request: the client's wait ("timeout" seconds), or its default.

    The client stops waiting then and checks in-process (or files the message
    as its own deadline says): computing on would only keep others' mail
    waiting.  A client that closes its end before is gone too.
    """
    wait = meta.get("timeout")
    seconds = DEFAULT_WAIT
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait < DEFAULT_WAIT:
        seconds = float(wait)
    return Deadline(time.monotonic() + seconds, lambda: client_gone(sock))


def client_gone(sock: socket.socket) -> bool:
    """Tells whether the client closed its end: it sends nothing while it waits for the answer."""
    # Polled first: a socket with a timeout would wait that long in recv, MSG_DONTWAIT or not.
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP)
    try:
        if not poller.poll(0):
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError, TimeoutError):
        return False
    except OSError:
        return True


def log_delivery(report: dict[str, object], summary: str) -> None:
    """Logs the pipe process's delivery line, as it would itself (classifier.delivery.pipe)."""
    to = report.get("to")
    recipients = [str(r) for r in to] if isinstance(to, list) else []
    code = report.get("delivered")
    ms = report.get("ms")
    ms = ms if isinstance(ms, int | float) else 0.0
    queue = report.get("queue")
    if code == 0:
        log.info("%s", delivery_line(recipients, summary, ms, queue))
    else:
        log.error("%s", failure_line(recipients, code, report.get("reason", ""), queue))


def reload_engine(server: DaemonServer, reload: Callable[[], tuple[Config, Resolver]]) -> None:
    """Swaps in the engine of a freshly read config; a bad one is one log line, the old stays."""
    try:
        config, resolver = reload()
        engine = engine_for(config, resolver)
    except Exception as exc:  # ConfigError, UsageError, a zone that no longer parses
        log.error("daemon: reload failed, keeping the running config: %s", exc)
        return
    server.engine = engine
    reopen_logging(config.engine)  # a rotated log file is let go
    log.info("daemon: reloaded %s", config.source)


def drop_privileges(settings: Settings) -> None:
    """Runs the rest of this process as ``daemon_user`` when started as root with one set."""
    if os.geteuid() != 0 or not settings.daemon_user:
        return
    pw = _user(settings.daemon_user, "daemon_user")
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    # Only now, as daemon_user: the log file is never opened as root (cmd_serve).
    reopen_logging(settings)


def serve(
    path: str,
    config: Config,
    resolver: Resolver,
    mode: int | None = None,
    limits: Limits | None = None,
    reload: Callable[[], tuple[Config, Resolver]] | None = None,
) -> int:
    """Answers pipe processes until SIGTERM or SIGINT (SIGHUP: `reload`); gives the exit code."""
    server = make_server(path, config, resolver, mode, limits)
    # Made by root without socket_user, the socket is root's: no pipe user may connect.
    roots_socket = os.geteuid() == 0 and not config.engine.socket_user
    drop_privileges(config.engine)

    def hup(_signum: int, _frame: object) -> None:
        # Not in the handler itself: it may interrupt a thread that holds the log's lock.
        if reload is not None:
            threading.Thread(target=reload_engine, args=(server, reload), daemon=True).start()

    def stop(signum: int, _frame: object) -> None:
        log.info("daemon: signal %d, stopping", signum)
        # shutdown() waits for serve_forever, which runs in this thread: ask from another.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)
    if os.geteuid() == 0:
        # Allowed (a test, a one-off run), but every message would be parsed as root.
        log.warning(
            "daemon: running as root: set daemon_user (the Postfix pipe user, such as vmail)"
            " so that mail is not read by a root process"
        )
    if roots_socket:
        log.warning(
            "daemon: %s belongs to root: set socket_user (the Postfix pipe user, such as vmail)"
            " or pipe processes cannot connect and check every message themselves",
            path,
        )
    log.info(
        "daemon: listening on %s (uid %d, at most %d connections, %d octets, %gs)",
        path,
        os.geteuid(),
        server.limits.max_connections,
        server.limits.max_size,
        server.limits.idle_timeout,
    )
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        remove_socket(path, server)  # not a newer daemon's, started since on the same path
    return 0
