"""A delivered message as bytes: its header fields in order, and its body untouched.

authsieve must never change a byte it does not mean to (DKIM signatures of
the original must still verify after annotation), so the message is not
parsed with `email`: the header block is split into fields that keep their
exact bytes, and the body is kept as it came.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from functools import lru_cache
from itertools import compress, repeat
from operator import add
from typing import NamedTuple

from classifier.lazyre import lazy

# The one field-name rule of authsieve, for every step that reads the header block
# (the checks, DKIM and ARC through dkimpy, annotate, the report): a name is 1*ftext,
# printable US-ASCII but ":" (RFC 5322 §2.2, §3.6.8), and white space between the name
# and the colon is read as the obsolete syntax allows (RFC 5322 §4.5, obs-optional:
# field-name *WSP ":"); DKIM's relaxed canonicalisation removes it (RFC 6376 §3.4.2).
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# The empty line that ends the header block (RFC 5322 §2.1), found where a line starts.
_EMPTY_LINE = re.compile(rb"\n\r?\n")
# A line break followed by a field name starts a new field; any other line (folding, or
# junk RFC 5322 §2.2 has no place for) stays with the field above, bytes intact.
_FIELD_BREAK = re.compile(rb"\n(?=([\x21-\x39\x3b-\x7e]+)[ \t]*:)")
# The same, and also before a line that is neither a field nor folding (its name None).
_LINE_BREAK = re.compile(rb"\n(?:(?=([\x21-\x39\x3b-\x7e]+)[ \t]*:)|(?![ \t]))")
_LINE_END = lazy(rb"\r?\n")
_COLONS = repeat(b":")  # the separator map() hands to bytes.partition, field after field


class HeaderField(NamedTuple):
    """One header field: its name as written, and its raw bytes including folding and line end."""

    name: str
    raw: bytes
    key: str  # the name in lower case, for comparisons

    def value(self) -> str:
        """Gives the unfolded value after the colon (8-bit bytes kept via surrogateescape)."""
        return unfolded_value(self.raw)


def unfolded_value(raw: bytes) -> str:
    """Gives the unfolded value after the colon of a field's raw bytes (RFC 5322 §2.2.3)."""
    _, _, rest = raw.partition(b":")
    text = rest.decode("utf-8", "surrogateescape")
    flat = text.strip()
    if "\n" not in text and "\r" not in text:
        return flat
    # Printable text with single spaces is already unfolded (every whitespace character
    # but the space is unprintable): looking costs a fraction of splitting and joining.
    return flat if flat.isprintable() and "  " not in flat else " ".join(flat.split())


class _Split(NamedTuple):
    """What Message.parse cut from a message's bytes, for Message to keep."""

    names: list[str]  # as written, top first
    keys: list[str]  # the names in lower case
    bare: list[bytes] | None  # each field without its line break, when every field had one
    raws: list[bytes] | None  # each whole field, when the last one had no line break
    end: int  # where the header block ends: the empty line and the body follow
    body: int  # where the body starts, after the empty line (len(data) without one)
    clean: bool  # every line of the header block is a field or folds one


class Message:
    """A message split into header fields and the bytes that follow them (separator and body).

    A value, like a frozen dataclass: ``Message(fields, rest, eol)``.  ``parse`` cuts the
    header block with one regex split and keeps the pieces; the HeaderField objects are
    made on first use of ``fields``, and ``raws``/``values``/``get_all`` read the pieces,
    because a delivery asks for a few names out of dozens of fields.
    """

    # A parsed message keeps its fields as the split gives them, without the line break
    # each one ends with (``_bare``): a field gets it back only when read.  ``_raws``, the
    # whole fields, is made on first need, or kept from the start when not every field
    # ends with a line break.
    __slots__ = (
        "_bare",
        "_body",
        "_clean",
        "_data",
        "_dkim",
        "_eol",
        "_fields",
        "_keys",
        "_keyset",
        "_names",
        "_raws",
        "_start",
    )
    _fields: tuple[HeaderField, ...] | None
    _raws: list[bytes] | None
    _bare: list[bytes] | None

    def __init__(
        self,
        fields: Iterable[HeaderField],
        rest: bytes,
        eol: bytes = b"\r\n",
        *,
        split: _Split | None = None,
    ) -> None:
        """Makes the message of these fields and rest; ``split`` is for Message.parse alone.

        Given ``split``, the fields are what parse cut and ``rest`` is the whole message.
        """
        if split is None:
            self._fields = tuple(fields)
            self._names = [f.name for f in self._fields]
            self._keys = [f.key for f in self._fields]
            self._raws, self._bare, self._start = [f.raw for f in self._fields], None, 0
            self._body, self._clean = -1, False
        else:
            self._fields = None
            self._names, self._keys, self._bare, self._raws, self._start = split[:5]
            self._body, self._clean = split.body, split.clean
        self._dkim: list[list[bytes]] | None = None
        self._keyset: frozenset[str] | None = None
        # The rest is kept where it lies in the data given (a parsed message: the whole
        # message), and cut out only when asked for: a 50 MB body is not copied to be read.
        self._data = rest
        self._eol = eol

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Gives the message's fields; never raises (garbage lines join the previous field)."""
        eol = b"\r\n" if data.find(b"\r\n", 0, 4096) >= 0 else b"\n"
        first = _FIELD_NAME.match(data)
        if first is None:
            # No header block at all (or an empty one): all body.  It is "clean" when it
            # starts with the empty line: there is no line dkimpy would read differently.
            at = 1 if data[:1] == b"\n" else 2 if data[:2] == b"\r\n" else 0
            split = _Split([], [], [], None, 0, at or len(data), at > 0 or not data)
            return cls((), data, eol, split=split)
        empty = _EMPTY_LINE.search(data)
        end = empty.start() + 1 if empty is not None else len(data)
        body = empty.end() if empty is not None else len(data)
        last = end - 1 if data[end - 1 : end] == b"\n" else end
        # One split instead of a Python loop per line: [raw, name, raw, name, …, raw].  It
        # also cuts before a line that is neither a field nor folding (RFC 5322 §2.2), with
        # the name None: such a block is not clean (dkimpy refuses it; an mbox "From " line
        # it skips), and is cut again where only fields start, its junk lines staying
        # with the field above.
        parts = _LINE_BREAK.split(data[:last])
        clean = None not in parts[1::2]
        if not clean:
            parts = _FIELD_BREAK.split(data[:last])
        # A name holds no line break: joined, all names are decoded and lowered at once.
        names = b"\n".join([first.group(1), *parts[1::2]]).decode("ascii")
        fields = parts[0::2]  # the split took the line break of all but the last
        bare: list[bytes] | None = None
        raws: list[bytes] | None = None
        if last < end:  # the last field's line break was left out of the split
            bare = fields
        else:
            raws = [raw + b"\n" for raw in fields[:-1]] + fields[-1:]
        split = _Split(names.split("\n"), names.lower().split("\n"), bare, raws, end, body, clean)
        return cls((), data, eol, split=split)

    def _raw(self, at: int) -> bytes:
        if self._raws is None and self._bare is not None:
            return self._bare[at] + b"\n"
        return self._raw_list()[at]

    def _raw_list(self) -> list[bytes]:
        if self._raws is None:
            self._raws = [raw + b"\n" for raw in self._bare or ()]
        return self._raws

    @property
    def fields(self) -> tuple[HeaderField, ...]:
        """Gives the header fields, top first."""
        if self._fields is None:
            self._fields = tuple(map(HeaderField, self._names, self._raw_list(), self._keys))
        return self._fields

    @property
    def data(self) -> bytes:
        """Gives the whole message's bytes (a parsed message: the bytes it was parsed from)."""
        return self._data if self._body >= 0 else self.to_bytes()

    @property
    def header_end(self) -> tuple[int, int] | None:
        """Gives the span of the empty line that ends the header block in `data`, or None.

        The span starts at the line break of the last field, or at 0 when the message
        starts with the empty line; a message without an empty line has None.
        """
        if self._clean and self._body < len(self._data):
            return (self._start - 1 if self._start else 0), self._body
        data = self.data  # as auth.header_block.header_end reads it
        if data[:1] == b"\n":
            return 0, 1
        if data[:2] == b"\r\n":
            return 0, 2
        empty = _EMPTY_LINE.search(data)
        return empty.span() if empty else None

    @property
    def clean(self) -> bool:
        """Tells whether every line of the header block is a field or folds one (§2.2).

        False for a message that was not parsed, or whose header block holds a line
        that is no field: an mbox "From " line, junk, or folding before the first field.
        """
        return self._clean

    def field_keys(self) -> list[str]:
        """Gives the field names in lower case, top first (shared: do not change it)."""
        return self._keys

    def has(self, *names: str) -> bool:
        """Tells whether a field with one of these lower-case names is in the header."""
        # A set, made at the first question: each name compared with every field's cost
        # more than hashing the names once (the checks ask for a few names, twice).
        if self._keyset is None:
            self._keyset = frozenset(self._keys)
        return not self._keyset.isdisjoint(names)

    def dkim_fields(self) -> list[list[bytes]]:
        """Gives the fields as dkimpy's parser would, [name, value], for its hashing.

        The name is the bytes before the colon (white space the obsolete syntax allows
        there included: simple canonicalisation keeps it, relaxed drops it, RFC 6376
        §3.4.2); the value is what follows the colon, each line ended by CRLF.  Made
        once per message and shared by every DKIM and ARC signature (do not change it).
        """
        if self._dkim is None:
            bare, data, end = self._bare, self._data, self._start
            if bare is not None and data.count(b"\n", 0, end) == data.count(b"\r\n", 0, end):
                # Every line ends with CRLF: a field's value needs only the "\n" the split took.
                self._dkim = [[n, v + b"\n"] for n, _, v in map(bytes.partition, bare, _COLONS)]
                return self._dkim
            if bare is not None and data.find(b"\r", 0, end) < 0:
                # Every line ends with a bare LF: each becomes CRLF (what _LINE_END.sub does).
                self._dkim = [
                    [n, v.replace(b"\n", b"\r\n") + b"\r\n"]
                    for n, _, v in map(bytes.partition, bare, _COLONS)
                ]
                return self._dkim
            out = []
            for raw in self._raw_list():
                name, _, value = raw.partition(b":")
                if value[-1:] == b"\n":
                    value = value[:-2] if value[-2:] == b"\r\n" else value[:-1]
                if b"\n" in value and value.count(b"\n") != value.count(b"\r\n"):
                    value = _LINE_END.sub(b"\r\n", value)  # folded with bare LF
                out.append([name, value + b"\r\n"])
            self._dkim = out
        return self._dkim

    @property
    def rest(self) -> bytes:
        """Gives the empty line and the body, or b"" when there is no body.

        A parsed message cuts it from the message here, on each call.
        """
        return self._data[self._start :] if self._start else self._data

    @property
    def eol(self) -> bytes:
        """Gives the line ending the header block uses."""
        return self._eol

    def raws(self, name: str) -> Iterator[bytes]:
        """Gives the raw bytes of the fields with this name, top first, as they are read."""
        # Iterators written in C pick the fields: no Python loop over the header.
        chosen = map(name.lower().__eq__, self._keys)
        if self._raws is None and self._bare is not None:
            return map(add, compress(self._bare, chosen), repeat(b"\n"))
        return compress(self._raw_list(), chosen)

    def values(self, name: str) -> Iterator[str]:
        """Gives the unfolded values of the fields with this name, top first, as they are read."""
        return map(unfolded_value, self.raws(name))

    def get_all(self, name: str) -> list[str]:
        """Gives the unfolded values of every field with this name, top first."""
        key, keys = name.lower(), self._keys
        if keys.count(key) != 1:
            return list(self.values(name))
        # The usual case, found without a loop in Python.
        return [unfolded_value(self._raw(keys.index(key)))]

    def get(self, name: str) -> str | None:
        """Gives the unfolded value of the topmost field with this name, or None."""
        return next(self.values(name), None)

    def to_bytes(self) -> bytes:
        """Gives the message's bytes back exactly."""
        return b"".join([*self._raw_list(), memoryview(self._data)[self._start :]])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self._raw_list(), self._names, self._keys, self.rest, self._eol) == (
            other._raw_list(),
            other._names,
            other._keys,
            other.rest,
            other._eol,
        )

    def __hash__(self) -> int:
        return hash((tuple(self._raw_list()), self.rest, self._eol))

    def __repr__(self) -> str:
        return f"Message(fields={self.fields!r}, rest={self.rest!r}, eol={self._eol!r})"


_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_ZONES = {"ut": 0, "utc": 0, "gmt": 0, "z": 0, "est": -300, "edt": -240, "cst": -360}
_ZONES |= {"cdt": -300, "mst": -420, "mdt": -360, "pst": -480, "pdt": -420}
_DATE = lazy(
    r"(?:[A-Za-z]{3}[a-z]*,? ?)?(\d{1,2})[ -]([A-Za-z]{3})[a-z]*\.?[ -](\d{2,4}) "
    r"(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)? ?(?:([+-])(\d\d)(\d\d)|([A-Za-z]{1,5})\b)?"
)


def parse_date(text: str | None) -> datetime | None:
    """Gives a date-time as an aware datetime, or None (RFC 5322 §3.3, obsolete forms §4.3)."""
    if not text:
        return None
    text = text.strip(" _-.,;")[:120]
    m = _DATE.match(text)
    if m is not None:
        day, mon, year, hour, minute, second, sign, tzh, tzm, zone = m.groups()
        month = _MONTHS.get(mon.lower())
        if month is not None:
            y = int(year)
            if y < 100:
                y += 2000 if y < 50 else 1900  # RFC 5322 §4.3
            elif y < 1000:
                y += 1900
            if sign:
                offset = (int(tzh) * 60 + int(tzm)) * (-1 if sign == "-" else 1)
            else:
                # RFC 5322 §4.3: an unknown zone name carries no information, i.e. -0000.
                offset = _ZONES.get(zone.lower(), 0) if zone else 0
            try:
                return datetime(
                    y, month, int(day), int(hour), int(minute), int(second or 0), 0, _tz(offset)
                )
            except (ValueError, OverflowError):
                pass
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@lru_cache(maxsize=64)
def _tz(offset_minutes: int) -> timezone:
    return UTC if offset_minutes == 0 else timezone(timedelta(minutes=offset_minutes))
