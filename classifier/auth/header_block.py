"""The header block of a raw message, as DKIM and ARC read it: where it ends, its fields.

Both checks look for their fields before any parsing (one search answers for the
many messages that carry none), and both need every field even when dkimpy refuses
the header block, so each signature or ARC set still gets a result.
"""

from __future__ import annotations

import re

from classifier.lazyre import lazy

# A field name: printable ASCII but ":" (RFC 5322 §2.2, §3.6.8).
_FIELD_NAME = lazy(rb"([\x21-\x39\x3b-\x7e]+):")
_EMPTY_LINE = lazy(rb"\n\r?\n")


def header_end(message: bytes) -> tuple[int, int] | None:
    """Gives the span of the empty line that ends the header block (RFC 5322 §2.1), or None.

    The span starts at the line break of the last field; a message that starts
    with an empty line has an empty header block.  (One regex with "^|" in it
    is ten times slower: it loses the scan for a literal line break.)
    """
    if message[:1] == b"\n":
        return 0, 1
    if message[:2] == b"\r\n":
        return 0, 2
    match = _EMPTY_LINE.search(message)
    return match.span() if match else None


def field_in_header(message: bytes, field: re.Pattern[bytes], end: tuple[int, int] | None) -> bool:
    """Tells whether a field matching `field` (anchored at a line start) is in the header block.

    `end` is `header_end(message)`; one search answers for the many messages
    that carry no such field, before any parsing.
    """
    return field.search(message, 0, end[1] if end else len(message)) is not None


def header_fields(message: bytes) -> list[tuple[bytes, bytes]]:
    """Gives (name, raw value) of each header field, skipping lines that are not fields.

    Lenient on purpose (RFC 5322 §2.2): used to find signatures even when
    dkimpy refuses the header block, so each one still gets a result.
    """
    fields: list[tuple[bytes, bytes]] = []
    name: bytes | None = None
    value = b""
    end = header_end(message)
    for line in re.split(rb"\r?\n", message[: end[0]] if end else message):
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value += b"\r\n" + line
            continue
        if name is not None:
            fields.append((name, value))
        match = _FIELD_NAME.match(line)
        name, value = (match.group(1), line[match.end() :]) if match else (None, b"")
    if name is not None:
        fields.append((name, value))
    return fields
