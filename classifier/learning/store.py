"""The learning store: the moves `authsieve learn` records, read back by `authsieve suggest`.

SQLite in WAL mode, opened as the report store is (`classifier.aggregate.store.open_sqlite`),
at ``[learn] store`` (default ``sqlite:/var/lib/authsieve/learning/moves.db``).  `learn`
runs as the mail user, inside Dovecot's IMAP process: the directory must be
writable by that user, and by the one delivery runs as (the delivery records,
`classifier.aggregate.deliveries`, share the file).  A move is one row under
its key (delivery id, user): the same message moved twice the same way counts
once, and moved back the other way, the last direction counts (a message
rescued and then put back into Junk was not rescued).  Rows older than ``retention_days`` (default
180) are deleted whenever a move is recorded or proposals are made.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import fields

from classifier.aggregate.store import open_sqlite
from classifier.learning.moves import Move

_COLUMNS = tuple(f.name for f in fields(Move))
_LISTS = ("rules", "dkim_domains", "arc_sealers")
_FLAGS = ("from_auth", "forwarded", "allowed")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS learned_moves ("
    + ", ".join(
        f"{c} {'INTEGER' if c in ('at', *_FLAGS) else 'TEXT'} NOT NULL"
        + (" PRIMARY KEY" if c == "key" else "")
        for c in _COLUMNS
    )
    + ");\nCREATE INDEX IF NOT EXISTS learned_moves_at ON learned_moves (at);\n"
)


def _values(move: Move) -> tuple[object, ...]:
    d = move.to_dict()
    for name in _LISTS:
        d[name] = json.dumps(d[name])
    for name in _FLAGS:
        d[name] = int(bool(d[name]))
    return tuple(d[c] for c in _COLUMNS)


def _move(values: sqlite3.Row | tuple[object, ...]) -> Move:
    d: dict[str, object] = dict(zip(_COLUMNS, tuple(values), strict=True))
    for name in _LISTS:
        d[name] = tuple(json.loads(str(d[name])))
    for name in _FLAGS:
        d[name] = bool(d[name])
    return Move(**d)  # type: ignore[arg-type]


class LearningStore:
    """One SQLite learning store; `open` creates the file, its directory and the table."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    @classmethod
    def open(cls, url: str, timeout: float = 5.0) -> LearningStore:
        return cls(open_sqlite(url, _SCHEMA, timeout))

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
