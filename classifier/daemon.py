"""`authsieve serve`: a resident checker on a UNIX socket for the Postfix pipe transport.

Postfix starts one process per delivery; most of its cost is importing the
libraries and asking DNS with a cold cache.  The daemon pays both once: it
keeps the engine imported, the config and policies loaded and one DNS cache
warm, and answers `authsieve pipe --daemon SOCKET` with the annotated
message and its verdict.  Delivery stays in the pipe process, as the user
Postfix runs it as.
"""

from __future__ import annotations

import os
import signal
import socketserver
import stat
from pathlib import Path

from classifier.config import Settings
from classifier.daemon_client import read_frame, write_frame
from classifier.dns import Resolver
from classifier.log import log
from classifier.pipe import HINT_KEYS, process


def _hints(value: object) -> dict[str, str | None]:
    raw = value if isinstance(value, dict) else {}
    return {k: (str(raw[k]) if raw.get(k) is not None else None) for k in HINT_KEYS}


def make_server(
    path: str, settings: Settings, resolver: Resolver, mode: int = 0o666
) -> socketserver.ThreadingUnixStreamServer:
    """Gives a server bound to the socket path (a stale socket file is replaced)."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                meta, data = read_frame(self.request)
            except (OSError, ValueError) as exc:
                log.warning("daemon: bad request: %s", exc)
                return
            user = meta.get("user")
            outcome = process(
                data, settings, resolver, _hints(meta.get("hints")), str(user) if user else None
            )
            meta_out = {
                "action": outcome.action,
                "summary": outcome.summary,
                "error": outcome.error,
            }
            try:
                write_frame(self.request, meta_out, outcome.data)
            except OSError as exc:
                log.warning("daemon: client went away: %s", exc)

    target = Path(path)
    if target.exists() and stat.S_ISSOCK(target.stat().st_mode):
        target.unlink()
    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    server.daemon_threads = True
    os.chmod(path, mode)
    return server


def serve(path: str, settings: Settings, resolver: Resolver, mode: int = 0o666) -> int:
    """Answers pipe processes until SIGTERM or SIGINT; gives the exit code."""
    server = make_server(path, settings, resolver, mode)

    def stop(signum: int, _frame: object) -> None:
        log.info("daemon: signal %d, stopping", signum)
        # shutdown() waits for serve_forever, which runs in this thread: ask from another.
        import threading

        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("daemon: listening on %s", path)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        Path(path).unlink(missing_ok=True)
    return 0
