"""`authsieve watch`: classify mail as it lands in Maildirs, and never lose or duplicate it.

For servers where nothing can sit between Postfix and the mailbox: files
hard-linked (Postfix virtual/local) or renamed (Dovecot, getmail) into a
Maildir's ``new/`` are checked, then rewritten in place with our headers or
moved to ``.Junk`` / ``.Quarantine`` by the user's policy (`maildir.commit`).

Shape: inotify events (watchdog) and a periodic rescan feed one queue; the
main thread hands paths to a pool of worker processes (the checks are pure
Python, so threads cannot use a second core) and collects the outcomes.  At
start-up every Maildir is repaired (`maildir.recover`) before its first
message is touched.  SIGTERM finishes the messages in hand and exits;
SIGHUP (or a changed config file, seen at the next rescan) reloads the
policy.  With ``NOTIFY_SOCKET`` set the service manager hears READY=1,
STOPPING=1 and watchdog pings (sd_notify(3)).
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifier.config import Config, ConfigError
from classifier.errors import EX_SOFTWARE
from classifier.log import log, reopen_logging
from classifier.mailstore.filing import DEFAULT_TEMPLATE, Job, Outcome, file_batch
from classifier.mailstore.maildir import (
    MaildirName,
    expand_roots,
    is_message_name,
    is_unfiled,
    recover,
)
from classifier.mailstore.sd_notify import sd_notify, watchdog_interval
from classifier.mailstore.workers import init_worker, ping, work_in_process

DEFAULT_RESCAN = 60.0
DEFAULT_CUR_MAX_AGE = 7 * 86400.0


@dataclass(frozen=True)
class WatchOptions:
    """What to watch and how: the ``[watch]`` settings, or their command-line stand-ins."""

    roots: tuple[str, ...]
    path_template: str = DEFAULT_TEMPLATE
    rescan_interval: float = DEFAULT_RESCAN
    workers: int = 2  # 0: every message in the main process
    pool: str = "process"  # or "thread" (one shared resolver, one core)
    once: bool = False  # process what is waiting, then exit
    # Unfiled mail a client moved to cur/ is filed when it arrived this many seconds ago
    # or less (0: never): older mail there was the user's before the watcher came.
    cur_max_age: float = DEFAULT_CUR_MAX_AGE

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "roots": list(self.roots)}


# One Job per worker process, set once by init_worker: worker processes are forked with
# it (no pickling of the resolver's zone), and each task then only carries a path.


@dataclass
class _MaildirState:
    lock_fd: int  # flock on the Maildir: one watcher per Maildir, never two
    left_alone: set[str] = field(default_factory=set)
    cur_seen: set[str] = field(default_factory=set)  # cur/ bases not ours to file: never reread
    watch: Any = None


class _Events:
    """watchdog handler: a message name appearing in new/ goes on the queue, ours do not."""

    def __init__(self, put: Callable[[tuple[str, Any]], None]) -> None:
        self.put = put

    def dispatch(self, event: Any) -> None:
        if event.is_directory or event.event_type not in ("created", "moved"):
            return
        raw = event.dest_path if event.event_type == "moved" else event.src_path
        path = Path(os.fsdecode(raw))
        if path.parent.name == "new" and is_unfiled(path.name):
            self.put(("path", str(path)))


class Watcher:
    """The watch loop: events and rescans in, outcomes out, one Maildir state per root."""

    def __init__(
        self,
        options: WatchOptions,
        job: Job,
        reload: Callable[[], Config] | None = None,
        notify: Callable[[str], bool] = sd_notify,
    ) -> None:
        self.options = options
        self.job = job
        self.reload = reload
        self.notify = notify
        self.inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.maildirs: dict[Path, _MaildirState] = {}
        self.pending: set[str] = set()
        self.backlog: deque[str] = deque()
        self.futures: dict[Future[list[Outcome]], list[str]] = {}
        self.counts: Counter[str] = Counter()
        self.stop = threading.Event()
        self.elapsed = 0.0
        self.generation = 0
        self._config_mtime = self._mtime()
        self._hup = False

    def _mtime(self) -> float:
        try:
            return os.stat(self.job.config_path).st_mtime if self.job.config_path else 0.0
        except OSError:
            return 0.0

    def request_stop(self, *_: object) -> None:
        self.stop.set()
        self.inbox.put(("wake", None))

    def _request_reload(self, *_: object) -> None:
        self._hup = True
        self.inbox.put(("wake", None))

    def _start_pool(self) -> Executor | None:
        opts = self.options
        if opts.workers <= 0:
            return None
        if opts.pool == "thread":
            return ThreadPoolExecutor(opts.workers, thread_name_prefix="authsieve-watch")
        pool = ProcessPoolExecutor(
            opts.workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=init_worker,
            initargs=(self.job, os.getpid()),
        )
        # Fork every worker now, before watchdog starts its threads (fork copies no threads).
        for f in [pool.submit(ping) for _ in range(opts.workers)]:
            f.result()
        return pool

    def _enqueue(self, path: str) -> None:
        if path not in self.pending:
            self.pending.add(path)
            self.backlog.append(path)

    def _finish(self, path: str, outcome: Outcome) -> None:
        self.pending.discard(path)
        self.counts[outcome.status] += 1
        if outcome.status == "filed":
            self.counts["action:" + (outcome.action or "inbox")] += 1
        if outcome.status == "left-alone":
            p = Path(path)
            state = self.maildirs.get(p.parent.parent)
            if state is not None and p.parent.name == "cur":
                state.cur_seen.add(MaildirName.parse(p.name).base)
            elif state is not None:
                state.left_alone.add(p.name)

    def _dispatch(self, pool: Executor | None) -> None:
        workers = max(1, self.options.workers)
        if pool is None:
            if self.backlog and not self.stop.is_set():
                batch = [self.backlog.popleft() for _ in range(min(len(self.backlog), 16))]
                for path, outcome in zip(batch, file_batch(batch, self.job), strict=True):
                    self._finish(path, outcome)
            return
        while self.backlog and len(self.futures) < 2 * workers and not self.stop.is_set():
            # Small batches when little waits (latency), up to 16 when much does (throughput).
            size = max(1, min(16, len(self.backlog) // (2 * workers)))
            batch = [self.backlog.popleft() for _ in range(size)]
            if isinstance(pool, ProcessPoolExecutor):
                fut = pool.submit(work_in_process, batch, self.generation)
            else:
                fut = pool.submit(file_batch, batch, self.job)
            self.futures[fut] = batch
            fut.add_done_callback(lambda f: self.inbox.put(("done", f)))

    def _handle(self, item: tuple[str, Any]) -> None:
        kind, value = item
        if kind == "path":
            self._enqueue(value)
        elif kind == "done":
            batch = self.futures.pop(value)
            if value.cancelled():
                self.pending.difference_update(batch)
                return
            exc = value.exception()
            if isinstance(exc, BrokenProcessPool):
                raise exc
            outcomes = value.result() if exc is None else [Outcome(p, "error") for p in batch]
            for path, outcome in zip(batch, outcomes, strict=True):
                self._finish(path, outcome)

    def _maybe_reload(self) -> None:
        mtime = self._mtime()
        if not (self._hup or mtime != self._config_mtime) or self.reload is None:
            return
        hup, self._hup, self._config_mtime = self._hup, False, mtime
        try:
            config = self.reload()
        except ConfigError as exc:
            log.error("config reload failed, keeping the old policy: %s", exc)
            return
        self.job = self.job.reloaded(config)
        self.generation += 1
        if hup:
            reopen_logging(config.engine)  # a rotated log file is let go (workers: next batch)
        log.info("config reloaded")

    def _adopt(self, maildir: Path, observer: Any) -> _MaildirState | None:
        """Gives the state of a Maildir seen for the first time: locked, repaired, then watched."""
        try:
            fd = os.open(maildir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            log.error("%s: cannot open: %s", maildir, exc.strerror)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            repaired = recover(maildir)
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                exc = OSError("another authsieve watch is filing it")
            log.error("%s: skipped until the next rescan: %s", maildir, exc)
            return None
        if repaired.stale_tmp or repaired.orphans_removed or repaired.orphans_kept:
            log.warning(
                "%s: repaired after an interruption: %d unfinished copies removed from tmp/,"
                " %d originals removed (already filed), %d kept (name clash)",
                maildir,
                len(repaired.stale_tmp),
                len(repaired.orphans_removed),
                len(repaired.orphans_kept),
            )
        state = self.maildirs[maildir] = _MaildirState(fd)
        if observer is not None:
            try:
                state.watch = observer.schedule(
                    _Events(self.inbox.put), str(maildir / "new"), recursive=False
                )
            except OSError as exc:  # fs.inotify.max_user_watches reached, most likely
                log.error("%s: not watched (%s); found by rescans only", maildir, exc)
        return state

    def rescan(self, observer: Any) -> None:
        """Finds Maildirs (new ones repaired, then watched) and queues every unfiled message."""
        self._maybe_reload()
        found = expand_roots(self.options.roots)
        if not found and not self.maildirs:
            log.warning("no Maildir found under %s", ", ".join(self.options.roots))
        # A message in hand (from new/) must not be taken again from cur/, where Dovecot
        # may have moved it meanwhile: two copies would be filed.
        busy = {MaildirName.parse(Path(p).name).base for p in self.pending}
        for maildir in found:
            state = self.maildirs.get(maildir) or self._adopt(maildir, observer)
            if state is None:
                continue
            try:
                entries = [
                    e.name for e in os.scandir(maildir / "new") if e.is_file(follow_symlinks=False)
                ]
            except OSError as exc:
                log.error("%s: cannot list new/: %s", maildir, exc.strerror)
                continue
            state.left_alone.intersection_update(entries)
            for name in entries:
                if name not in state.left_alone and is_unfiled(name):
                    self._enqueue(str(maildir / "new" / name))
            if self.options.cur_max_age > 0:
                self._queue_cur(maildir, state, busy)
        for maildir in set(self.maildirs) - set(found):
            self._release(self.maildirs.pop(maildir), observer)

    def _queue_cur(self, maildir: Path, state: _MaildirState, busy: set[str]) -> None:
        """Queues the unfiled mail in cur/: moved there by a client while we were not running.

        Names alone tell our copies (``,authsieve``); any other recent name is
        read once by the filing step, which leaves alone a message carrying our
        X-Authsieve (delivered through `authsieve pipe`, moved back from Junk by
        the user), and then never again: its base stays in `cur_seen`.
        """
        oldest = time.time() - self.options.cur_max_age
        try:
            entries = [e for e in os.scandir(maildir / "cur") if e.is_file(follow_symlinks=False)]
        except OSError as exc:
            log.error("%s: cannot list cur/: %s", maildir, exc.strerror)
            return
        bases: set[str] = set()
        for entry in entries:
            name = MaildirName.parse(entry.name)
            bases.add(name.base)
            if name.marked or not is_message_name(entry.name) or name.base in busy:
                continue
            if name.base in state.cur_seen:
                continue
            try:
                arrived = _arrival(entry)
            except OSError:
                continue
            if arrived < oldest:
                state.cur_seen.add(name.base)
                continue
            self._enqueue(str(maildir / "cur" / entry.name))
        state.cur_seen.intersection_update(bases)

    @staticmethod
    def _release(state: _MaildirState, observer: Any) -> None:
        if observer is not None and state.watch is not None:
            with contextlib.suppress(KeyError):
                observer.unschedule(state.watch)
        os.close(state.lock_fd)

    def run(self) -> int:
        """Runs until SIGTERM (or, with `once`, until nothing waits); gives the exit code."""
        started = time.monotonic()
        previous = self._install_signals()
        pool = self._start_pool()
        observer = None
        if not self.options.once:
            from watchdog.observers import Observer

            observer = Observer()
            observer.start()
        try:
            self.rescan(observer)
            self.notify(f"READY=1\nSTATUS=watching {len(self.maildirs)} Maildir(s)")
            self._loop(pool, observer)
            self.notify("STOPPING=1")
            for fut in list(self.futures):
                fut.cancel()  # not started yet: left for the next start
            while self.futures:
                self._handle(self.inbox.get())
        except BrokenProcessPool:
            log.critical("a worker process died; exiting so the service manager restarts us")
            return EX_SOFTWARE
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if observer is not None:
                observer.stop()
                observer.join()
            for state in self.maildirs.values():
                os.close(state.lock_fd)
            self.maildirs.clear()
            self._restore_signals(previous)
        self.elapsed = time.monotonic() - started
        return 0

    def _loop(self, pool: Executor | None, observer: Any) -> None:
        interval = max(0.05, self.options.rescan_interval)
        workers = max(1, self.options.workers)
        next_rescan = time.monotonic() + interval
        ping = watchdog_interval()
        next_ping = time.monotonic()
        while not self.stop.is_set():
            self._dispatch(pool)
            if self.options.once and not self.backlog and not self.futures:
                return
            now = time.monotonic()
            # Sleep only when nothing waits to be handed out, or every worker has its share.
            idle = not self.backlog or (pool is not None and len(self.futures) >= 2 * workers)
            timeout = max(0.0, min(next_rescan - now, 1.0)) if idle else 0.0
            with contextlib.suppress(queue.Empty):
                self._handle(
                    self.inbox.get(timeout=timeout) if timeout else self.inbox.get_nowait()
                )
                while True:
                    self._handle(self.inbox.get_nowait())
            if self._hup:
                self._maybe_reload()
            now = time.monotonic()
            if now >= next_rescan and not self.options.once:
                self.rescan(observer)
                next_rescan = now + interval
            if ping and now >= next_ping:
                self.notify("WATCHDOG=1")
                next_ping = now + ping

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        # A file-size limit must fail one write (EFBIG), not kill the watcher.
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self.request_stop)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, self.request_stop)
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._request_reload)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _arrival(entry: os.DirEntry[str]) -> float:
    """Gives when a message arrived: the earlier of its name's time and its mtime.

    Maildir names begin with the delivery time; Dovecot sets the mtime to the
    IMAP INTERNALDATE, which an APPENDed copy of old mail keeps.
    """
    mtime = entry.stat(follow_symlinks=False).st_mtime
    head = entry.name.partition(".")[0]
    return min(mtime, float(head)) if head.isdigit() else mtime
