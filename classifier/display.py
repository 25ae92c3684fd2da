"""Text a sender wrote, made safe to show: on a terminal, in a mail body, in a CSV cell.

A Subject, a From or a reason can carry ESC (ANSI and OSC sequences that
recolour, retitle or rewrite a terminal), other control characters, line
breaks that forge a line of output, or bidirectional overrides.  Everything
that shows such text to a person goes through `printable` (or
`display_text`, which first decodes RFC 2047 encoded-words).
"""

from __future__ import annotations

import contextlib
from email.header import decode_header, make_header

from classifier.log import log_value

# OWASP "CSV Injection": a cell starting with one of these is read as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """Gives text on one line with every non-printable character (C0, C1, DEL, bidi) a space."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())


def display_text(value: str | None, limit: int | None = 200) -> str:
    """Gives a header value as a person reads it: RFC 2047 words decoded, one printable line."""
    if not value:
        return ""
    text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    # RFC 2047 §2: only "=?" starts an encoded-word; malformed ones raise and stay as written.
    if "=?" in text:
        with contextlib.suppress(Exception):
            text = str(make_header(decode_header(text)))
    text = printable(text)
    return text if limit is None else text[:limit]


def csv_cell(value: object) -> object:
    """Gives a CSV cell a spreadsheet shows as text, never runs as a formula (OWASP CSV Injection).

    A text cell starting with ``=``, ``+``, ``-``, ``@``, tab or CR gets a
    leading single quote; numbers stay numbers.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def terminal_text(data: bytes) -> str:
    """Gives a message as lines a terminal shows as they are: every control but tab escaped.

    ESC, BEL, CR and the like from a sender would otherwise act on the terminal of the
    admin who reads the message (``quarantine show``); ``--raw`` gives the bytes.
    """
    return log_value(data.decode("utf-8", "replace").replace("\r\n", "\n"), keep="\n\t")
