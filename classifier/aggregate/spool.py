"""The spool of one-shot writers: rows waiting to go into a SQLite store.

An `authsieve pipe` or `authsieve filter` process records one message and
exits.  Written straight into SQLite, that costs ~25 ms a message: being the
only connection, the process recreates the WAL (with its syncs) and
checkpoints it at close.  Such a process instead writes its rows as one small
file here, ``<store>.spool/<id>.json``; whoever holds the store open ingests
the files and unlinks them (`ingest`).  Two stores use it: the report store
(report rows; taken in by `dmarc-report` before it reads, `serve` and the
watcher now and then) and the learning store (delivery records; taken in by
`learn` before it looks a delivery up, `suggest`, `serve` and the watcher).

Each file carries a unique id; the store remembers the ids it took in, in the
same transaction as the rows, so a file ingested and not yet unlinked (a crash
between the two), or a copy of one put back, is never counted twice.  A file
is written under a dot name and renamed to its final name once whole: a
reader never sees half a file.
Nothing is fsynced: like the store's ``synchronous=NORMAL``, a process crash
loses nothing, a power cut may lose the last deliveries' rows.

Files are created ``O_CREAT|O_EXCL|O_NOFOLLOW`` mode 0600 through the
directory's descriptor; the reader refuses a symlink, anything not a regular
file, a file with more than one link, one owned by another user than the
directory or one that group or others may read or write (`SpoolFile`), and
a directory others may write.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from classifier.files import CREATE_FLAGS, DIR_FLAGS, READ_FLAGS, write_all
from classifier.log import log, log_value

SUFFIX = ".json"
MAX_FILE = 1 << 20  # bytes: one delivery's rows are a few kB
INGEST_BATCH = 500  # spooled files a transaction
STALE_TMP = 3600.0  # seconds: a dot file this old was left by a writer that died


def spool_dir(db_path: Path) -> Path:
    """Gives the spool directory of a SQLite store file: beside it, ``<name>.spool``."""
    return db_path.with_name(db_path.name + ".spool")


def spool_rows(directory: Path, rows: Sequence[Sequence[object]]) -> str:
    """Writes one delivery's rows (store column values) as one new file; gives its id.

    Raises OSError when the directory cannot be made or written.
    """
    directory.parent.mkdir(mode=0o750, parents=True, exist_ok=True)  # as the store makes it
    directory.mkdir(mode=0o700, exist_ok=True)
    ident = f"{time.time_ns()}.{os.getpid()}.{secrets.token_hex(8)}"
    data = json.dumps({"id": ident, "rows": rows}, separators=(",", ":")).encode()
    dfd = os.open(directory, DIR_FLAGS)
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
        os.rename(tmp, ident + SUFFIX, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)
    return ident


@dataclass(frozen=True)
class SpoolFile:
    """One spooled file as read: its name, id and rows, or why it was refused."""

    name: str
    ident: str = ""
    rows: tuple[tuple[object, ...], ...] = ()
    refused: str = ""  # non-empty: left in place, never ingested


class Spool:
    """An open spool directory, read by the process that holds the store."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # ELOOP (a symlink) or ENOTDIR raise OSError here: the caller logs it.
        self.fd = os.open(directory, DIR_FLAGS)
        st = os.fstat(self.fd)
        self.owner = st.st_uid
        if st.st_mode & 0o022:
            os.close(self.fd)
            raise PermissionError(f"{directory}: writable by group or others, not read")

    def close(self) -> None:
        os.close(self.fd)

    def files(self, width: int) -> Iterator[SpoolFile]:
        """Gives the whole files, oldest first; `width` is the number of values a row has."""
        now = time.time()
        for name in sorted(os.listdir(self.fd)):
            if name.startswith("."):
                self._drop_stale(name, now)
            elif name.endswith(SUFFIX) and (got := self._read(name, width)) is not None:
                yield got

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

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
                return SpoolFile(name, refused=f"mode {st.st_mode & 0o777:04o}, not 0600")
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


def ingest(
    db: sqlite3.Connection,
    directory: Path,
    width: int,
    done_table: str,
    insert: str,
    forget_before: int,
    valid: Callable[[tuple[object, ...]], bool] = lambda row: True,
) -> int:
    """Moves the rows spooled in `directory` into the store; gives how many.

    `insert` is the statement for one row of `width` values; `done_table` the
    table of the ids taken in (``id TEXT PRIMARY KEY, at INTEGER``, made here
    when missing).  Each file's id goes into it in the rows' transaction, so a
    file ingested twice (a crash before its unlink, a copy put back, a reader
    that may not unlink) counts once.  Ids taken in before `forget_before` are
    forgotten.  A refused file, or one with a row `valid` rejects, is logged and
    left in place.  Raises OSError (no spool: 0) or sqlite3.Error.
    """
    try:
        spool = Spool(directory)
    except FileNotFoundError:
        return 0
    added = 0
    make_done = (
        f"CREATE TABLE IF NOT EXISTS {done_table} (id TEXT PRIMARY KEY, at INTEGER NOT NULL)"
    )
    try:
        batch: list[SpoolFile] = []
        for got in itertools.chain(spool.files(width), (None,)):
            if got is not None and not got.refused and not all(valid(r) for r in got.rows):
                got = SpoolFile(got.name, refused="a row that is not one of this store's")
            if got is not None and got.refused:
                shown = log_value(got.name)  # a name in the spool: whoever planted it chose it
                log.warning("spool %s/%s refused: %s", spool.directory, shown, got.refused)
                continue
            if got is not None:
                batch.append(got)
            if batch and (got is None or len(batch) >= INGEST_BATCH):
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
                        else:  # a crash between commit and unlink left it, or a replay
                            shown = log_value(done.name)
                            log.info("spool %s/%s: taken in before, dropped", directory, shown)
                for done in batch:
                    with suppress(FileNotFoundError):
                        spool.unlink(done.name)
                batch = []
        if added:
            with immediate(db):
                db.execute(make_done)
                db.execute(f"DELETE FROM {done_table} WHERE at < ?", (forget_before,))
    finally:
        spool.close()
    return added
