"""A delivered message as bytes: its header fields in order, and its body untouched.

authsieve must never change a byte it does not mean to (DKIM signatures of
the original must still verify after annotation), so the message is not
parsed with `email`: the header block is split into fields that keep their
exact bytes, and the body is kept as it came.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# The empty line that ends the header block (RFC 5322 §2.1), found where a line starts.
_EMPTY_LINE = re.compile(rb"\n\r?\n")
# A line break followed by a field name starts a new field; any other line (folding, or
# junk RFC 5322 §2.2 has no place for) stays with the field above, bytes intact.
_FIELD_BREAK = re.compile(rb"\n(?=([\x21-\x39\x3b-\x7e]+)[ \t]*:)")


@dataclass(frozen=True)
class HeaderField:
    """One header field: its name as written, and its raw bytes including folding and line end."""

    name: str
    raw: bytes
    key: str = ""  # the name in lower case, for comparisons (filled in when not given)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name.lower())

    def value(self) -> str:
        """Gives the unfolded value after the colon (8-bit bytes kept via surrogateescape)."""
        _, _, rest = self.raw.partition(b":")
        text = rest.decode("utf-8", "surrogateescape")
        flat = text.strip()
        if "\n" not in text and "\r" not in text:
            return flat
        # One line of printable ASCII with single spaces is already unfolded; splitting and
        # joining it again would cost more than reading the rest of the field.
        if flat.isascii() and flat.isprintable() and "  " not in flat:
            return flat
        return " ".join(flat.split())


_new = object.__new__
_set = object.__setattr__


def _field(name: bytes, raw: bytes) -> HeaderField:
    # A message has dozens of fields and every delivery splits them: the frozen
    # dataclass's __init__ and __post_init__ would cost more than the split itself.
    f = _new(HeaderField)
    text = name.decode("ascii")
    _set(f, "__dict__", {"name": text, "raw": raw, "key": text.lower()})
    return f


@dataclass(frozen=True)
class Message:
    """A message split into header fields and the bytes that follow them (separator and body)."""

    fields: tuple[HeaderField, ...]
    rest: bytes  # the empty line and the body, or b"" when there is no body
    eol: bytes = b"\r\n"  # the line ending the header block uses

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Gives the message's fields; never raises (garbage lines join the previous field)."""
        eol = b"\r\n" if b"\r\n" in data[:4096] else b"\n"
        first = _FIELD_NAME.match(data)
        if first is None:
            # No header block at all (or an empty one): everything is body.
            return cls((), data, eol)
        empty = _EMPTY_LINE.search(data)
        end = empty.start() + 1 if empty is not None else len(data)
        # One C-level split instead of a Python loop per line: [raw, name, raw, name, …, raw],
        # each raw but the last without the line break the split consumed.
        parts = _FIELD_BREAK.split(data[:end])
        last = len(parts) - 1
        fields = [_field(first.group(1), parts[0] + b"\n" if last else parts[0])]
        for i in range(1, last, 2):
            raw = parts[i + 1]
            fields.append(_field(parts[i], raw + b"\n" if i + 1 < last else raw))
        return cls(tuple(fields), data[end:], eol)

    def _by_key(self) -> dict[str, list[HeaderField]]:
        """Gives the fields grouped by lower-cased name, top first (built once per message)."""
        index: dict[str, list[HeaderField]] | None = self.__dict__.get("_index")
        if index is None:
            index = {}
            for f in self.fields:
                same = index.get(f.key)
                if same is None:
                    index[f.key] = [f]
                else:
                    same.append(f)
            self.__dict__["_index"] = index
        return index

    def get_all(self, name: str) -> list[str]:
        """Gives the unfolded values of every field with this name, top first."""
        return [f.value() for f in self._by_key().get(name.lower(), ())]

    def get(self, name: str) -> str | None:
        """Gives the unfolded value of the topmost field with this name, or None."""
        same = self._by_key().get(name.lower())
        return same[0].value() if same else None

    def to_bytes(self) -> bytes:
        """Gives the message's bytes back exactly."""
        return b"".join(f.raw for f in self.fields) + self.rest
