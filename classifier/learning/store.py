"""The learning store: the moves `authsieve learn` records, read back by `authsieve suggest`.

SQLite in WAL mode, opened as the report store is (`classifier.aggregate.store.open_sqlite`),
at ``[learn] store`` (default ``sqlite:/var/lib/authsieve/learning/moves.db``).  `learn`
runs as the mail user, inside Dovecot's IMAP process: the directory must be
writable by that user, and by the one delivery runs as (the delivery records,
`classifier.aggregate.deliveries`, share the file).  A move is one row under
its key (delivery id, user): the same message moved twice the same way counts
once, and moved back the other way, the last direction counts (a message
rescued and then put back into Junk was not rescued).  A row is the move's
own columns and its delivery record's (`classifier.aggregate.deliveries`).
Rows older than ``retention_days`` (default 180) are deleted whenever a move
is recorded or proposals are made.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from classifier.aggregate.deliveries import COLUMNS, column_type, record_from, values_of
from classifier.aggregate.store import open_sqlite
from classifier.learning.moves import Move

# A move's own columns, then its delivery record's, as the deliveries table has them
# (the record's id and time under names of their own).
_MOVE = ("key", "at", "from_folder", "to_folder", "direction")
_RECORD = tuple({"id": "delivery_id", "at": "delivered_at"}.get(c, c) for c in COLUMNS)
_COLUMNS = (*_MOVE, *_RECORD)


def _column(name: str, record_column: str) -> str:
    # delivered_at came later: a store from before gets it, 0 for its moves (LearningStore.open)
    return f"{name} {column_type(record_column)} NOT NULL" + (
        " DEFAULT 0" if name == "delivered_at" else ""
    )


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS learned_moves (key TEXT NOT NULL PRIMARY KEY, at INTEGER NOT NULL,"
    " from_folder TEXT NOT NULL, to_folder TEXT NOT NULL, direction TEXT NOT NULL, "
    + ", ".join(_column(n, c) for n, c in zip(_RECORD, COLUMNS, strict=True))
    + ");\nCREATE INDEX IF NOT EXISTS learned_moves_at ON learned_moves (at);\n"
)
_ADD_DELIVERED_AT = f"ALTER TABLE learned_moves ADD COLUMN {_column('delivered_at', 'at')}"


def _values(move: Move) -> tuple[object, ...]:
    return (move.key, move.at, move.from_folder, move.to_folder, move.direction,
            *values_of(move.record))  # fmt: skip


def _move(values: sqlite3.Row | tuple[object, ...]) -> Move:
    row = tuple(values)
    at = row[1]
    assert isinstance(at, int)  # an INTEGER NOT NULL column
    return Move(
        key=str(row[0]),
        at=at,
        from_folder=str(row[2]),
        to_folder=str(row[3]),
        direction=str(row[4]),
        record=record_from(row[len(_MOVE) :]),
    )


class LearningStore:
    """One SQLite learning store; `open` creates the file, its directory and the table."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    @classmethod
    def open(cls, url: str, timeout: float = 5.0) -> LearningStore:
        db = open_sqlite(url, _SCHEMA, timeout)
        try:
            if "delivered_at" not in {r[1] for r in db.execute("PRAGMA table_info(learned_moves)")}:
                db.execute(_ADD_DELIVERED_AT)
        except sqlite3.OperationalError as exc:  # another process added it meanwhile
            if "duplicate column" not in str(exc):
                db.close()
                raise
        return cls(db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> LearningStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, move: Move) -> bool:
        """Records a move; gives False when the same message went the same way before.

        A move the other way replaces the earlier one: the last direction counts.
        """
        marks = ", ".join("?" for _ in _COLUMNS)
        changed = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "key")
        with self.db:
            cursor = self.db.execute(
                f"INSERT INTO learned_moves ({', '.join(_COLUMNS)}) VALUES ({marks})"
                f" ON CONFLICT(key) DO UPDATE SET {changed}"
                " WHERE learned_moves.direction != excluded.direction",
                _values(move),
            )
        return cursor.rowcount == 1

    def moves(self, since: int = 0) -> Iterator[Move]:
        """Gives the moves made at or after `since`, oldest first."""
        cursor = self.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM learned_moves WHERE at >= ? ORDER BY at, key",
            (since,),
        )
        for values in cursor:
            yield _move(values)

    def purge(self, before: int) -> int:
        """Deletes moves made before `before`; gives how many."""
        with self.db:
            return self.db.execute("DELETE FROM learned_moves WHERE at < ?", (before,)).rowcount
