"""A delivered message as bytes: its header fields in order, and its body untouched.

authsieve must never change a byte it does not mean to (DKIM signatures of
the original must still verify after annotation), so the message is not
parsed with `email`: the header block is split into fields that keep their
exact bytes, and the body is kept as it came.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


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
        return " ".join(text.split()) if "\n" in text or "\r" in text else text.strip()


@dataclass(frozen=True)
class Message:
    """A message split into header fields and the bytes that follow them (separator and body)."""

    fields: tuple[HeaderField, ...]
    rest: bytes  # the empty line and the body, or b"" when there is no body
    eol: bytes = b"\r\n"  # the line ending the header block uses

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Gives the message's fields; never raises (garbage lines join the previous field)."""
        fields: list[HeaderField] = []
        eol = b"\r\n" if b"\r\n" in data[:4096] else b"\n"
        pos = 0
        size = len(data)
        current: list[bytes] = []
        name = ""

        def flush() -> None:
            if current:
                fields.append(HeaderField(name, b"".join(current)))

        while pos < size:
            end = data.find(b"\n", pos)
            end = size if end < 0 else end + 1
            line = data[pos:end]
            if line in (b"\r\n", b"\n"):
                break
            if line[:1] in (b" ", b"\t") and current:
                current.append(line)
            else:
                m = _FIELD_NAME.match(line)
                if m is None:
                    if current:
                        # RFC 5322 §2.2 has no place for it; keep its bytes with the previous field.
                        current.append(line)
                        pos = end
                        continue
                    # No header block at all: everything is body.
                    return cls((), data, eol)
                flush()
                name = m.group(1).decode("ascii")
                current = [line]
            pos = end
        flush()
        return cls(tuple(fields), data[pos:], eol)

    def get_all(self, name: str) -> list[str]:
        """Gives the unfolded values of every field with this name, top first."""
        key = name.lower()
        return [f.value() for f in self.fields if f.key == key]

    def get(self, name: str) -> str | None:
        """Gives the unfolded value of the topmost field with this name, or None."""
        key = name.lower()
        for f in self.fields:
            if f.key == key:
                return f.value()
        return None

    def to_bytes(self) -> bytes:
        """Gives the message's bytes back exactly."""
        return b"".join(f.raw for f in self.fields) + self.rest
