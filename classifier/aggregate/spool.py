"""The spool of one-shot writers: rows waiting to go into a SQLite store.

An `authsieve pipe` or `authsieve filter` process records one message and
exits.  Written straight into SQLite, that costs ~25 ms a message: being the
only connection, the process recreates the WAL (with its syncs) and
checkpoints it at close.  Such a process instead writes its rows as one small
file here, ``<store>.spool/<id>.json``; whoever holds the store open ingests
the files and unlinks them (`take_in`).  Two stores use it: the report store
(report rows; taken in by `dmarc-report` before it reads, `serve` and the
watcher now and then, in a thread: `in_background`) and the learning store
(delivery records; taken in by `learn` before it looks a delivery up,
`suggest`, `serve` and the watcher).

Each file carries a unique id; the store remembers the ids it took in, in the
same transaction as the rows, so a file ingested and not yet unlinked (a crash
between the two), or a copy of one put back, is never counted twice.  A file
is written under a dot name and renamed to its final name once whole: a
reader never sees half a file.
Nothing is fsynced: like the store's ``synchronous=NORMAL``, a process crash
loses nothing, a power cut may lose the last deliveries' rows (or leave an
empty or partial file, refused and removed once like any other refused file).

A reader takes in at most a bounded number of files in bounded time
(`take_in`'s ``limit`` and ``seconds``): every file it took in, or refused, is
gone from the spool afterwards, so the next reader goes on where it stopped.
A learning record's file is named by its delivery id, so that `learn` finds
the record of the moved message first, whatever the backlog (``first``).

Files are created ``O_CREAT|O_EXCL|O_NOFOLLOW`` mode 0600 through the
directory's descriptor; the reader refuses a symlink, anything not a regular
file, a file with more than one link, one owned by another user than the
directory or one that group or others may read or write (`SpoolFile`), and
a directory others may write.  The writer refuses the directories the reader
refuses (`open_spool_dir`): its rows would be lost there, and read by others.
A writer running as root refuses a store directory another user owns: it
neither writes there nor makes a spool the owner could not read.
A refused file is logged once and removed (unlink does not follow a symlink;
the directory is its owner's alone); a dot file a writer left is removed once
it is `STALE_TMP` old.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from classifier.files import CREATE_FLAGS, DIR_FLAGS, READ_FLAGS, write_all
from classifier.log import log, log_value

SUFFIX = ".json"
MAX_FILE = 1 << 20  # bytes: one delivery's rows are a few kB
INGEST_BATCH = 500  # spooled files a transaction
BACKGROUND_LIMIT = 20000  # files one background take-in (serve, the watcher) handles at most
BACKGROUND_SECONDS = 30.0  # and for at most this long
INGEST_EVERY = 3600.0  # seconds: how often serve and the watcher take a spool in
INGEST_AGAIN = 60.0  # seconds: sooner while a backlog is left
STALE_TMP = 600.0  # seconds: a dot file this old was left by a writer that died


def spool_dir(db_path: Path) -> Path:
    """Gives the spool directory of a SQLite store file: beside it, ``<name>.spool``."""
    return db_path.with_name(db_path.name + ".spool")


class SpoolRefused(PermissionError):
    """A spool directory refused: a symlink, or one others may write; the message says which."""


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _open_dir(directory: Path) -> int:
    """Opens the directory without following a symlink.

    SpoolRefused names a symlink, or a directory of another user we may not
    open (a root-run pipe made it): its owner and the fix, not the store's.
    """
    try:
        return os.open(directory, DIR_FLAGS)
    except PermissionError:
        try:
            st = os.lstat(directory)
        except OSError:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(directory)) from None
        if st.st_uid != os.geteuid():
            me = _user(os.geteuid())
            raise SpoolRefused(
                f"spool directory {directory}: owned by {_user(st.st_uid)}, not {me}:"
                f" not readable (chown -R {me}: {directory}, or remove it when empty)"
            ) from None
        raise
    except OSError as exc:
        # Linux gives ENOTDIR for O_NOFOLLOW|O_DIRECTORY on a symlink, others ELOOP.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and directory.is_symlink():
            raise SpoolRefused(
                f"{directory}: a symlink, refused (the spool must be a directory of the"
                " store's owner)"
            ) from None
        raise


def open_spool_dir(directory: Path, owner: int) -> int:
    """Opens a spool directory as its reader will accept it; gives its descriptor.

    Raises OSError: not a directory, or SpoolRefused (a PermissionError) when it
    is a symlink, not `owner`'s, or group or others may write it.
    """
    fd = _open_dir(directory)
    st = os.fstat(fd)
    if st.st_uid != owner or st.st_mode & 0o022:
        os.close(fd)
        raise SpoolRefused(
            f"{directory}: owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}:"
            f" refused (must be uid {owner}'s and not writable by group or others)"
        )
    return fd


def spool_rows(directory: Path, rows: Sequence[Sequence[object]], name: str = "") -> str:
    """Writes one delivery's rows (store column values) as one new file; gives its id.

    `name`: the file's name (without `SUFFIX`) when the rows are to be found by
    it (a delivery id: random, so never one already there); else the id.
    Raises OSError when the directory cannot be made or written, or is one the
    reader would refuse (`open_spool_dir`).
    """
    if os.geteuid() == 0:
        # Root never writes into another user's directory (the symlink races
        # classifier/files.py avoids), nor leaves a root-owned spool there that
        # the store's owner could never take in: refused, not chowned.
        with suppress(FileNotFoundError):
            owner = os.stat(directory.parent).st_uid
            if owner != 0:
                raise SpoolRefused(
                    f"running as root; the store belongs to {_user(owner)}"
                    " (run the pipe as that user)"
                )
    directory.parent.mkdir(mode=0o750, parents=True, exist_ok=True)  # as the store makes it
    directory.mkdir(mode=0o700, exist_ok=True)
    ident = f"{time.time_ns()}.{os.getpid()}.{secrets.token_hex(8)}"
    data = json.dumps({"id": ident, "rows": rows}, separators=(",", ":")).encode()
    dfd = open_spool_dir(directory, os.geteuid())
    try:
        tmp = f".{ident}"
        fd = os.open(tmp, CREATE_FLAGS, 0o600, dir_fd=dfd)
        try:
            write_all(fd, data)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dfd)
            raise
        os.close(fd)
        os.rename(tmp, (name or ident) + SUFFIX, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)
    return ident


@dataclass(frozen=True)
class SpoolFile:
    """One spooled file as read: its name, id and rows, or why it was refused."""

    name: str
    ident: str = ""
    rows: tuple[tuple[object, ...], ...] = ()
    refused: str = ""  # non-empty: never ingested, removed


class Spool:
    """An open spool directory, read by the process that holds the store."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # A symlink (SpoolRefused) or not a directory raise OSError here: the caller logs it.
        self.fd = _open_dir(directory)
        st = os.fstat(self.fd)
        self.owner = st.st_uid
        if st.st_mode & 0o022:
            os.close(self.fd)
            raise SpoolRefused(
                f"{directory}: mode {stat.S_IMODE(st.st_mode):04o}, writable by group or"
                f" others, not read (chmod 700 {directory})"
            )

    def close(self) -> None:
        os.close(self.fd)

    def files(self, width: int, first: Iterable[str] = ()) -> Iterator[SpoolFile]:
        """Gives the whole files: those named `first` (when there), then the rest by name.

        `width` is the number of values a row has.
        """
        asked = {name for name in first if _plain_name(name)}
        for name in asked:
            if (got := self._read(name, width)) is not None:
                yield got
        now = time.time()
        for name in sorted(os.listdir(self.fd)):
            if name in asked:
                continue
            if name.startswith("."):
                self._drop_stale(name, now)
            elif name.endswith(SUFFIX) and (got := self._read(name, width)) is not None:
                yield got

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def drop_refused(self, got: SpoolFile) -> None:
        """Logs a refused file, once: it is removed (a symlink itself, not what it names)."""
        shown = log_value(got.name)  # a name in the spool: whoever planted it chose it
        try:
            os.unlink(got.name, dir_fd=self.fd)
            gone = "removed"
        except FileNotFoundError:
            return  # another reader dropped it
        except OSError as exc:  # a directory: left, and logged again next time
            gone = f"not removed: {exc.strerror}"
        log.warning("spool %s/%s refused: %s (%s)", self.directory, shown, got.refused, gone)

    def _drop_stale(self, name: str, now: float) -> None:
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > STALE_TMP:
                os.unlink(name, dir_fd=self.fd)
        except OSError:
            pass  # gone meanwhile, or not ours to remove: left alone

    def _read(self, name: str, width: int) -> SpoolFile | None:
        """Gives the file as read, or None when another reader took it in meanwhile."""
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:  # several learn processes at once (a user moved many)
            return None
        except OSError as exc:  # ELOOP: a symlink
            return SpoolFile(name, refused=f"cannot open: {exc.strerror}")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                return SpoolFile(name, refused="not a plain file with one link")
            if st.st_uid != self.owner:
                return SpoolFile(name, refused=f"owned by uid {st.st_uid}, not the spool's owner")
            if st.st_mode & 0o077:  # the writer makes 0600: this one it did not write
                return SpoolFile(name, refused=f"mode {stat.S_IMODE(st.st_mode):04o}, not 0600")
            if st.st_size > MAX_FILE:
                return SpoolFile(name, refused="too large")
            data = os.read(fd, MAX_FILE + 1)
        finally:
            os.close(fd)
        try:
            doc = json.loads(data)
            ident, rows = doc["id"], doc["rows"]
            ok = isinstance(ident, str) and ident and isinstance(rows, list)
            ok = ok and all(isinstance(r, list) and len(r) == width for r in rows)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            return SpoolFile(name, refused="not a spooled delivery")
        return SpoolFile(name, ident, tuple(tuple(r) for r in rows))


def _plain_name(name: str) -> bool:
    """Tells whether a name names a spooled file in the directory itself."""
    return bool(name) and "/" not in name and not name.startswith(".") and name.endswith(SUFFIX)


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Runs the block in one transaction that holds the write lock from its start.

    The lock now, not at the first write: no deadlock upgrading a read lock later.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Intake(NamedTuple):
    """What one `take_in` did: rows added, files handled, and whether files are left."""

    added: int
    files: int
    left: bool


def take_in(
    db: sqlite3.Connection,
    directory: Path,
    width: int,
    done_table: str,
    insert: str,
    forget_before: int,
    valid: Callable[[tuple[object, ...]], bool] = lambda row: True,
    first: Sequence[str] = (),
    limit: int | None = None,
    seconds: float | None = None,
) -> Intake:
    """Moves rows spooled in `directory` into the store.

    `insert` is the statement for one row of `width` values; `done_table` the
    table of the ids taken in (``id TEXT PRIMARY KEY, at INTEGER``, made here
    when missing).  Each file's id goes into it in the rows' transaction, so a
    file ingested twice (a crash before its unlink, a copy put back, a reader
    that may not unlink) counts once.  Ids taken in before `forget_before` are
    forgotten.  A refused file, or one with a row `valid` rejects, is logged and
    removed.  The files named in `first` (names in the directory) go first;
    then at most `limit` files in all, for at most `seconds`, in batches, each
    committed and its files unlinked before the next: a reader stopped by the
    bound, or killed, leaves only what it did not take in.  Raises OSError (no
    spool: nothing) or sqlite3.Error.
    """
    try:
        spool = Spool(directory)
    except FileNotFoundError:
        return Intake(0, 0, False)
    stop = None if seconds is None else time.monotonic() + seconds
    added = handled = again = 0
    left = False
    make_done = (
        f"CREATE TABLE IF NOT EXISTS {done_table} (id TEXT PRIMARY KEY, at INTEGER NOT NULL)"
    )
    # The files asked for come in a batch of their own: committed before any other.
    batch_size = len(first) or INGEST_BATCH
    try:
        batch: list[SpoolFile] = []
        for got in spool.files(width, first):
            if (limit is not None and handled >= limit) or (
                stop is not None and time.monotonic() >= stop
            ):
                left = True  # bounded: the next reader goes on from here
                break
            handled += 1
            if not got.refused and not all(valid(r) for r in got.rows):
                got = SpoolFile(got.name, refused="a row that is not one of this store's")
            if got.refused:
                spool.drop_refused(got)
                continue
            batch.append(got)
            if len(batch) >= batch_size:
                rows, dropped = _commit(db, spool, batch, make_done, done_table, insert)
                added, again = added + rows, again + dropped
                batch, batch_size = [], INGEST_BATCH
        if batch:
            rows, dropped = _commit(db, spool, batch, make_done, done_table, insert)
            added, again = added + rows, again + dropped
        if added:
            with immediate(db):
                db.execute(make_done)
                db.execute(f"DELETE FROM {done_table} WHERE at < ?", (forget_before,))
    finally:
        spool.close()
    if again:  # one line a run: readers racing on a backlog would log each file (N2)
        log.info("spool %s: %d file(s) taken in before, dropped", directory, again)
    return Intake(added, handled, left)


def _commit(
    db: sqlite3.Connection,
    spool: Spool,
    batch: list[SpoolFile],
    make_done: str,
    done_table: str,
    insert: str,
) -> tuple[int, int]:
    """Takes one batch of files in, in one transaction, then unlinks them.

    Gives the rows added and the number of files whose id was taken in before
    (a crash between commit and unlink left them, or a copy was put back).
    """
    added = again = 0
    with immediate(db):  # one commit for many files
        db.execute(make_done)
        for done in batch:
            new = db.execute(
                f"INSERT OR IGNORE INTO {done_table} (id, at) VALUES (?, ?)",
                (done.ident, int(time.time())),
            ).rowcount
            if new:
                db.executemany(insert, done.rows)
                added += len(done.rows)
            else:
                again += 1
    for done in batch:
        with suppress(FileNotFoundError):
            spool.unlink(done.name)
    return added, again


_next_run: dict[object, float] = {}
_running: set[object] = set()
_run_lock = threading.Lock()


def in_background(key: object, work: Callable[[], bool]) -> threading.Thread | None:
    """Runs `work` (a bounded take-in; gives whether files are left) in a thread, now and then.

    For serve and the watcher: a delivery never waits for a spool.  At most one
    run per `key` at a time, hourly, or a minute after one that left files.
    Gives the thread started, if one was.  `work` must log, not raise.
    """
    now = time.monotonic()
    with _run_lock:
        if key in _running or now < _next_run.get(key, 0.0):
            return None
        _running.add(key)
        _next_run[key] = now + INGEST_EVERY

    def run() -> None:
        left = False
        try:
            left = work()
        except Exception:  # a thread of serve: logged, never raised
            log.exception("spool not taken in")
        finally:
            with _run_lock:
                _running.discard(key)
                if left:
                    _next_run[key] = time.monotonic() + INGEST_AGAIN

    thread = threading.Thread(target=run, name="spool-take-in", daemon=True)
    thread.start()
    return thread
