"""The clauses of one Received line, cut before its from part is read (RFC 5321 §4.4).

``from`` … ``by`` … ``with`` … ``via`` … ``id`` … ``for`` … ``;`` date: a well-formed line
is cut in one regex match (read_frame); any other line has its comments masked first, so
that the ``with`` in ``(using TLSv1.3 with cipher …)`` never starts a clause, and is then
cut at the keywords (read_clauses).  Quoted strings are masked before either
(mask_quotes) and put back in the values read (unmask).
"""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

import re
from typing import NamedTuple

from classifier.lazyre import lazy

# The cap bounds every regex below on hostile input (each is linear: possessive runs).  It
# must hold the longest line our own MTA writes: a from part cut shorter lost the client
# of a sender whose HELO and reverse name were long (attacker review, issue 15), and with
# it SPF.  Postfix reads a HELO of up to line_length_limit (2048) octets; with a 255-octet
# name, the by host, the id, the recipient and the date, a line stays well under this.
MAX_CHARS = 8192
MAX_FROM_CHARS = MAX_CHARS  # the from part is not cut on its own: its end holds the client
# The comments after the client comment whose opening words tell the MTA family; the rest
# of such a comment, and every other one there, never does (received._mta_words).
FROM_NOTE_MARKERS = ("(authenticated sender:", "(auth: ")

# A comment, up to three levels deep; possessive quantifiers keep it linear on junk.
COMMENT = re.compile(r"\((?:[^()]++|\((?:[^()]++|\([^()]*+\))*+\))*+\)")
# The usual line in one match: "from X (…) by Y (…) with P id I for <R>; date".  Comments
# nest two deep; possessive quantifiers keep the match linear.  The clauses after the by
# host are matched as one run and then read one by one (_CLAUSE): a repeated group keeps
# its last value, and the first "with" is the one the MTA wrote.
_FRAME = lazy(
    r"from ([^\s();]*(?: ?\((?:[^()]++|\((?:[^()]++|\([^()]*+\))*+\))*+\))*+)"
    r" by ([^\s();]+)"
    r"((?: (?:\((?:[^()]++|\([^()]*+\))*+\)|with [^\s();]+|via [^\s();]+|id [^\s();]+"
    r"|for [^\s();]+))*)"
    r" ?;(.*)"
)
_CLAUSE = lazy(r" (?:(\((?:[^()]++|\([^()]*+\))*+\))|(with|via|id|for) ([^\s();]+))")
# A quoted string (RFC 5321 §4.1.2 Quoted-string), as in a local part: masked before a
# line is cut, so that "x) with ESMTPSA (" inside an address never reads as clauses.
_QUOTED = lazy(r'"(?:[^"\\]++|\\.)*+"')
_MASKED = lazy(r"\x03(\d+)\x03")
# Run on lower-cased text; the character before a keyword is checked in Python.
_KEYWORD = lazy(r"(?:from|by|with|id|for|via)(?![^ \x01<\[;])")
COMMON_PROTOCOLS = frozenset(("SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", "LMTP", "LMTPA",
                               "LOCAL", "HTTP", "UTF8SMTP", "UTF8SMTPS"))  # fmt: skip


class Frame(NamedTuple):
    """The clauses of one header, before the ``from`` part is read (RFC 5321 §4.4)."""

    from_text: str | None  # None: no from clause at all
    by_value: str
    by_comment: str  # the first comment after the by host: "(Postfix)", "(8.17.1/8.17.1)"
    with_value: str
    via_value: str
    id_value: str
    for_value: str
    second_from: str | None  # XMail/IBM: "for <rcpt> from <sender>"
    date_text: str | None
    by_notes: tuple[str, ...] = ()  # every comment from the by host to the date


def read_frame(work: str) -> Frame | None:
    """Gives the clauses of a well-formed ``from … by … with … id … for …; date`` line."""
    m = _FRAME.match(work)
    if m is None:
        return None
    from_text, by, tail, date = m.groups()
    if " id " in date or " for " in date:
        return None  # clauses after the date: the clause reader takes them
    values: dict[str, str] = {}
    notes: list[str] = []
    for clause in _CLAUSE.finditer(tail):
        note, kw, value = clause.groups()
        if note is not None:
            notes.append(note)
        elif kw not in values:
            values[kw] = value
    by_comment = notes[0] if tail.startswith(" (") else ""
    if "(" in date:
        notes += COMMENT.findall(date)  # "; date (envelope-from x)": ISC's Postfix
    return Frame(
        from_text, by, by_comment, values.get("with", ""), values.get("via", ""),
        values.get("id", ""), values.get("for", ""), None, date, tuple(notes),
    )  # fmt: skip


def read_clauses(work: str) -> Frame:
    """Gives the clauses of any line: comments masked, cut at the keywords (RFC 5321 §4.4)."""
    comments: list[str] = []

    def mask(m: re.Match[str]) -> str:
        comments.append(m.group())
        return "\x01"

    masked = COMMENT.sub(mask, work) if "(" in work else work
    low = masked.lower()
    values: dict[str, str] = {}
    starts: dict[str, int] = {}
    second_from = None
    marks = [
        (m.group(), m.start(), m.end())
        for m in _KEYWORD.finditer(low)
        # "by" inside "ruby" or "_by_" is no keyword
        if not m.start() or low[m.start() - 1] in " \x01;,"
    ]
    marks.append(("", len(masked), 0))
    for i in range(len(marks) - 1):
        kw, _, begin = marks[i]
        value = masked[begin : marks[i + 1][1]]
        semi = value.find(";")
        if semi >= 0:
            value = value[:semi]
        if kw not in values:
            values[kw] = value
            starts[kw] = begin
        elif kw == "from" and second_from is None:
            second_from = value
    by_value = values.get("by", "")
    by_comment = ""
    if "\x01" in by_value:
        by_comment = comments[masked.count("\x01", 0, starts["by"] + by_value.index("\x01"))]
    from_text = values.get("from")
    if from_text is not None and comments:
        from_text = _restore(from_text, comments, masked.count("\x01", 0, starts["from"]))
    semi = masked.rfind(";")
    by_notes: tuple[str, ...] = ()
    if "by" in starts and comments:
        by_notes = tuple(comments[masked.count("\x01", 0, starts["by"]) :])
    return Frame(
        from_text.strip() if from_text is not None else None,
        by_value,
        by_comment,
        values.get("with", ""),
        values.get("via", ""),
        values.get("id", ""),
        values.get("for", ""),
        second_from,
        masked[semi + 1 :].replace("\x01", " ") if semi >= 0 else None,
        by_notes,
    )


def mask_quotes(work: str) -> tuple[str, tuple[str, ...]]:
    """Gives the line with each quoted string replaced by a numbered mark, and the strings."""
    quoted: list[str] = []

    def mask(m: re.Match[str]) -> str:
        quoted.append(m.group())
        return f"\x03{len(quoted) - 1}\x03"

    return _QUOTED.sub(mask, work), tuple(quoted)


def unmask(value: str | None, quoted: tuple[str, ...]) -> str | None:
    """Gives a value read from a masked line with its quoted strings put back."""
    if value is None or "\x03" not in value:
        return value
    return _MASKED.sub(lambda m: quoted[int(m.group(1))], value)


def _restore(masked: str, comments: list[str], first: int) -> str:
    """Gives a masked slice with its comments put back in place."""
    if "\x01" not in masked:
        return masked
    pieces = masked.split("\x01")
    out = [pieces[0]]
    for i, piece in enumerate(pieces[1:]):
        out.append(comments[first + i] if first + i < len(comments) else "")
        out.append(piece)
    return "".join(out)


def first_token(value: str) -> str | None:
    """Gives the first word of a clause without <>, trailing punctuation or comments."""
    if " " in value or "\x01" in value:
        words = value.replace("\x01", " ").split(None, 1)
        if not words:
            return None
        value = words[0]
    return value.strip("<>,;") or None
