"""One Received header value, read into a ReceivedHop (RFC 5321 §4.4, RFC 5322 §3.6.7).

The frame is common to every MTA: ``from`` … ``by`` … ``with`` … ``id`` … ``for`` … ``;``
date.  The shapes Postfix, amavis and Dovecot write for nearly every delivery are read in
one match (``_quick``); any other well-formed line is cut in one regex match; any other
line has its comments masked first, so that the ``with`` in ``(using TLSv1.3 with cipher
…)`` never starts a clause, and is then cut at the keywords.  The ``from`` part -- where
MTAs disagree -- is read by the patterns of the recognised family
(classifier/envelope/formats.py).  Nothing here raises on input from a message: a header
that cannot be read comes back with ``parsed=False`` and ``fmt="unparsed"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import NamedTuple

from classifier.envelope.formats import (
    BARE_HELO_READER,
    FALLBACK,
    POSTFIX,
    SENDMAIL_READER,
    FromPart,
    Marks,
    auth_reason,
    clean_name,
    detect_family,
    envelope_from,
    local_reason,
    normalize_ip,
    normalize_ip_text,
    read_from,
)
from classifier.message import parse_date, unfolded_value

__all__ = ["ReceivedHop", "normalize_ip", "parse_received", "parse_received_field"]

# Real Received headers stay under 1 KB; the cap bounds every regex below on hostile input.
_MAX_CHARS = 4096
_MAX_FROM_CHARS = 512

# A comment, up to three levels deep; possessive quantifiers keep it linear on junk.
_COMMENT = re.compile(r"\((?:[^()]++|\((?:[^()]++|\([^()]*+\))*+\))*+\)")
# The usual line in one match: "from X (…) by Y (…) with P id I for <R>; date".  Comments
# nest two deep; possessive quantifiers keep the match linear.  The clauses after the by
# host are matched as one run and then read one by one (_CLAUSE): a repeated group keeps
# its last value, and the first "with" is the one the MTA wrote.
_FRAME = re.compile(
    r"from ([^\s();]*(?: ?\((?:[^()]++|\((?:[^()]++|\([^()]*+\))*+\))*+\))*+)"
    r" by ([^\s();]+)"
    r"((?: (?:\((?:[^()]++|\([^()]*+\))*+\)|with [^\s();]+|via [^\s();]+|id [^\s();]+"
    r"|for [^\s();]+))*)"
    r" ?;(.*)"
)
_CLAUSE = re.compile(r" (?:(\((?:[^()]++|\([^()]*+\))*+\))|(with|via|id|for) ([^\s();]+))")
# A quoted string (RFC 5321 §4.1.2 Quoted-string), as in a local part: masked before a
# line is cut, so that "x) with ESMTPSA (" inside an address never reads as clauses.
_QUOTED = re.compile(r'"(?:[^"\\]++|\\.)*+"')
_MASKED = re.compile(r"\x03(\d+)\x03")
# The shapes nearly every delivery carries -- Postfix and OpenSMTPD relays, amavis, Dovecot
# LMTP -- in one match: "from HELO (RDNS [IPv4]) (…) by HOST (…) with P id I for <R>; date"
# or "from HELO by HOST …".  It is _FRAME with the from part spelled out and plainer words,
# so a line it matches is cut exactly where _FRAME cuts it; any other line is left to the
# general reader.  Only printable ASCII matches: _parse would rewrite anything else.
_HOST = r"[A-Za-z0-9][A-Za-z0-9.-]*"
_NOTE = r"\([ -'*-~]*+(?:\([ -'*-~]*+\)[ -'*-~]*+)*+\)"  # one level of nesting, as _FRAME
_IPV4 = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
_QUICK = re.compile(
    rf"from ({_HOST})(?: \((?:({_HOST}) )?\[({_IPV4})\]\)((?: {_NOTE})*+))?"
    rf" by ({_HOST})(?: ({_NOTE}))?"
    rf"(?: {_NOTE}| with ([A-Za-z0-9]+)| id ([A-Za-z0-9]+)| for (<?[!-'*-:=?-~]+>?))*+"
    r" ?;([ -~]*+)\Z"
)
# After the client comment: the MTA's own comments (TLS, AUTH) and then the by clause.
_AFTER_CLIENT = re.compile(r"(?: \((?:[^()]++|\([^()]*+\))*+\))* by ")
# A HELO made one word: space, "(", ")" and ";" become placeholders, undone when read.
_HELO_MASK = str.maketrans(" ();", "\x02\x04\x05\x06")
# qmail's own "rdns (HELO x)" before its "(ip)": the name and the HELO are two things.
_QMAIL_NAME_HELO = re.compile(r"[^\s()]+ \((?:HELO|EHLO|LHLO)(?: [^()]*)?\)$", re.I)
_HELO_UNMASK = str.maketrans("\x02\x04\x05\x06", " ();")
_NO_PLACEHOLDERS = str.maketrans(dict.fromkeys("\x01\x02\x03\x04\x05\x06", " "))
# "(name [address])" or "([address])": how Postfix and Sendmail name the client.
_CLIENT_COMMENT = re.compile(r"\((?:[^\s()\[\]]+ )?\[[^\s()\[\]]+\]\)")
# Words SENDMAIL's lookahead refuses as a reverse-DNS name: the general reader decides.
_NOT_RDNS = frozenset(("HELO", "EHLO", "LHLO", "ACCOUNT"))
# Run on lower-cased text; the character before a keyword is checked in Python.
# Family markers a from part holds after the client comment: Postfix's and Courier's AUTH.
_FROM_NOTE_MARKERS = ("(authenticated sender:", "(auth: ")
_FIRST_WORD = re.compile(r"[^\s()]*")
_KEYWORD = re.compile(r"(?:from|by|with|id|for|via)(?![^ \x01<\[;])")
_QMAIL_LOCAL = re.compile(r"^\(qmail \d+ (?:messnum \d+ )?invoked (by|from|for) ", re.I)
_KNOWN_PROTOCOL = re.compile(
    r"^(?:(?:UTF8)?(?:E?SMTP|LMTP)S?A?|ESMTPSA|B?SMTP|ASMTP|QMQP|HTTP\w*|IMAPS?|POP3?S?"
    r"|LOCAL(?:-[A-Z0-9]+)?|MAPI|NNFMP|ECSTREAM|TCP|SUBMISSION)$"
)
_COMMON_PROTOCOLS = frozenset(("SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", "LMTP", "LMTPA",
                               "LOCAL", "HTTP", "UTF8SMTP", "UTF8SMTPS"))  # fmt: skip
_PROTOCOL_ALIASES = {"SMTPSVC": "SMTP", "ESMTP-TLS": "ESMTPS"}


@dataclass(frozen=True, slots=True)
class ReceivedHop:
    """What one Received header says about one hop, with the evidence for its flags."""

    raw: str
    helo: str | None
    rdns: str | None
    ip: str | None
    by: str | None
    protocol: str | None
    queue_id: str | None
    for_addr: str | None
    envelope_from: str | None  # "" is the null sender <>
    authenticated: bool
    auth_user: str | None
    ident: str | None
    local: bool
    fmt: str
    parsed: bool
    evidence: tuple[str, ...] = ()
    date_text: str | None = field(default=None, repr=False, compare=False)  # after the ";"
    # False when the MTA says it could not confirm the reverse name (Sendmail's "(may be
    # forged)"): the name is then the sender's own PTR and names no trusted forwarder.
    rdns_confirmed: bool = True

    @property
    def date(self) -> datetime | None:
        """Gives the date after the ";", timezone-aware, or None (RFC 5322 §3.3).

        Read when asked for, not kept: the trust path never needs it, and parsing it is
        a third of the cost of reading a header.
        """
        return parse_date(self.date_text)

    @property
    def network_client(self) -> bool:
        """Gives True when the hop names an SMTP client reached over the network."""
        return self.ip is not None and not self.local

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["evidence"] = list(self.evidence)
        date = self.date
        out["date"] = date.isoformat() if date else None
        return out


def parse_received(value: str) -> ReceivedHop:
    """Gives the ReceivedHop read from one header value; never raises (RFC 5321 §4.4)."""
    raw = ""
    try:
        raw = _unfold(value)
        return _quick(raw) or _parse(raw)
    except Exception as exc:  # the last guard: a message must never crash the reader
        return _unparsed(raw, f"unparsed: {type(exc).__name__}")


def parse_received_field(raw: bytes) -> ReceivedHop:
    """Gives the ReceivedHop of a raw Received field, name to line end; never raises.

    The same hop as parse_received(unfolded_value(raw)) (RFC 5322 §2.2.3).  A line the
    quick path reads is printable ASCII with single spaces, already unfolded: unfolding
    is paid for only by the other lines.
    """
    try:
        line = raw.partition(b":")[2].decode("utf-8", "surrogateescape").strip()
        return _quick(line) or parse_received(unfolded_value(raw))
    except Exception as exc:  # the last guard: a message must never crash the reader
        return _unparsed("", f"unparsed: {type(exc).__name__}")


def _unfold(value: str) -> str:
    """Gives the value with folding line breaks removed (RFC 5322 §2.2.3)."""
    if "\n" in value or "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
        value = value.replace("\n ", " ").replace("\n\t", "\t").replace("\n", " ")
    return value.strip()


def _unparsed(raw: str, why: str, date_text: str | None = None) -> ReceivedHop:
    return ReceivedHop(
        raw, None, None, None, None, None, None, None, None, False, None, None,
        False, "unparsed", False, (why,), date_text,
    )  # fmt: skip


class _Frame(NamedTuple):
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


def _read_frame(work: str) -> _Frame | None:
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
        notes += _COMMENT.findall(date)  # "; date (envelope-from x)": ISC's Postfix
    return _Frame(
        from_text, by, by_comment, values.get("with", ""), values.get("via", ""),
        values.get("id", ""), values.get("for", ""), None, date, tuple(notes),
    )  # fmt: skip


def _read_clauses(work: str) -> _Frame:
    """Gives the clauses of any line: comments masked, cut at the keywords (RFC 5321 §4.4)."""
    comments: list[str] = []

    def mask(m: re.Match[str]) -> str:
        comments.append(m.group())
        return "\x01"

    masked = _COMMENT.sub(mask, work) if "(" in work else work
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
    return _Frame(
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


def _mask_quotes(work: str) -> tuple[str, tuple[str, ...]]:
    """Gives the line with each quoted string replaced by a numbered mark, and the strings."""
    quoted: list[str] = []

    def mask(m: re.Match[str]) -> str:
        quoted.append(m.group())
        return f"\x03{len(quoted) - 1}\x03"

    return _QUOTED.sub(mask, work), tuple(quoted)


def _unmask(value: str | None, quoted: tuple[str, ...]) -> str | None:
    """Gives a value read from a masked line with its quoted strings put back."""
    if value is None or "\x03" not in value:
        return value
    return _MASKED.sub(lambda m: quoted[int(m.group(1))], value)


def _parse(raw: str) -> ReceivedHop:
    work = raw if len(raw) <= _MAX_CHARS else raw[:_MAX_CHARS]
    if "  " in work or "\t" in work or not work.isascii() or not work.isprintable():
        # \x01 to \x06 are the placeholders below
        work = " ".join(work.translate(_NO_PLACEHOLDERS).split())
    quoted: tuple[str, ...] = ()
    if '"' in work:
        work, quoted = _mask_quotes(work)
    low = work.lower()
    if low.startswith("received:"):
        work, low = work[9:].lstrip(), low[9:].lstrip()
    submitted = False
    if low.startswith("(from "):
        # "(from user@localhost) by …" is Sendmail's local submission; NAVGW writes its
        # "(from helo [ip])" the same way.  Either way the from clause sits in a comment.
        close = work.find(")")
        if close > 0:
            submitted = "[" not in work[:close]
            work = work[1:close] + work[close + 1 :]
            low = work.lower()
    elif low.startswith("(qmail "):
        return _qmail_local(raw, work)
    if low.startswith("from "):
        work = _join_helo(work)
        low = work.lower()
    frame = _read_frame(work) if low.startswith("from ") else None
    return _build(raw, work, low, frame or _read_clauses(work), submitted, quoted)


def _join_helo(work: str) -> str:
    """Gives the line with everything before the client comment made one word: the HELO.

    Postfix and Sendmail name the client "(name [address])" right after the HELO, with
    only their own comments (TLS, AUTH) after it up to "by".  A HELO is the client's
    own text: Postfix keeps spaces and brackets in it (it turns only characters such as
    <>()\";:@ into "?", smtpd.c neuter()), and an MTA that writes it verbatim keeps
    "(localhost [127.0.0.1])" too.  So the last such comment before the by clause is
    the MTA's; what stands before it is one HELO, its spaces, parentheses and ";"
    replaced by placeholders until it is read.  The mail_name plays no part.
    """
    start = -1
    for m in _CLIENT_COMMENT.finditer(work, 5):
        if _AFTER_CLIENT.match(work, m.end()):
            start = m.start()
    if start <= 6:
        return work
    helo = work[5:start].rstrip(" ")
    if not any(c in helo for c in " ();"):
        return work
    if work[start + 1] == "[" and _QMAIL_NAME_HELO.match(helo):
        return work  # qmail-ldap: "rdns (HELO x) ([ip])"; Postfix always names the client
    return work[:5] + helo.translate(_HELO_MASK) + " " + work[start:]


def _quick(raw: str) -> ReceivedHop | None:
    """Gives the hop of a line in one of the commonest shapes, or None (the general reader's).

    The same hop as _parse, field for field (tests/test_received.py checks it on every
    suite line), for a fraction of the cost: one match reads the frame and the from part,
    and the family's reader is known from the shape instead of searched for.
    """
    m = _QUICK.match(raw) if len(raw) <= _MAX_CHARS and '"' not in raw else None
    if m is None:
        return None
    name, rdns, ip_text, notes, by, by_comment, with_value, id_value, for_value, date = m.groups()
    if (
        with_value is None
        # the from part, "from " to " by ", is cut to _MAX_FROM_CHARS by the general reader
        or (len(raw) > _MAX_FROM_CHARS and m.start(5) - 9 > _MAX_FROM_CHARS)
        or " id " in date  # clauses after the date: the clause reader takes them
        or " for " in date
        or "  " in raw  # _parse would rewrite it first
    ):
        return None
    protocol = with_value.upper()
    if protocol not in _COMMON_PROTOCOLS or (notes and "[" in notes):
        # "[" after the client comment: the HELO may hold a comment of its own (_join_helo)
        return None
    if by_comment == "(Postfix)":
        family = POSTFIX  # the first marker detect_family looks for: no search needed
    else:
        # the sender's words (HELO, reverse name) never pick the family
        tail = raw[m.end(3) if ip_text is not None else m.end(1) :].lower()
        family = detect_family(tail, by, by_comment or "", protocol)
    if ip_text is not None:
        # "helo (rdns [ip])", "helo ([ip])": SENDMAIL's reading, as _interpret gives it.
        if family.readers[0] != SENDMAIL_READER or (rdns and rdns.upper() in _NOT_RDNS):
            return None
        rdns, ip = (clean_name(rdns) if rdns else None), normalize_ip_text(ip_text)
        part = FromPart(name, rdns, ip, ip_text, None, None, None, "sendmail")
        from_notes: tuple[str, ...] = (raw[raw.rfind("(", 0, m.start(3)) : m.end(3) + 2],)
        if notes:
            from_notes += tuple(_COMMENT.findall(notes))
    elif family.readers[-1] == BARE_HELO_READER and family is not POSTFIX and name[0].isalpha():
        # A HELO name alone.  (Under Postfix, _parse would join "name by host …" into one.)
        part = FromPart(name, None, None, None, None, None, None, "bare")
        from_notes = ()
    else:
        return None
    fmt, ip = family.name, part.ip
    evidence: tuple[str, ...] = (f"{fmt}: from part read as '{part.reader}'",)
    if ip is None and ip_text:
        evidence += (f"no usable address in '{ip_text}'",)
    by_notes: tuple[str, ...] = ()
    if by_comment is not None or "(" in raw[m.end(5) :]:
        by_notes = tuple(_COMMENT.findall(raw, m.end(5)))
    marks = Marks(raw[5 : m.start(5) - 4], from_notes, by, by_comment or "", by_notes, with_value)
    local = local_reason(protocol, fmt, True, False, ip, part, marks)
    if local:
        evidence += (f"local: {local}",)
    auth_user, why_auth = auth_reason(protocol, part, marks)
    if why_auth:
        evidence += (f"authenticated: {why_auth}",)
    return ReceivedHop(
        raw=raw,
        helo=name,
        rdns=rdns,
        ip=ip,
        by=by,
        protocol=protocol,
        queue_id=id_value,
        for_addr=for_value.strip("<>,;") or None if for_value else None,
        envelope_from=envelope_from(marks, None),
        authenticated=why_auth is not None,
        auth_user=auth_user,
        ident=None,
        local=local is not None,
        fmt=fmt,
        parsed=True,
        evidence=evidence,
        date_text=date,
    )


def _build(
    raw: str, work: str, low: str, frame: _Frame, submitted: bool, quoted: tuple[str, ...] = ()
) -> ReceivedHop:
    """Gives the hop: the family's patterns read the from part, then the flags are set.

    Local hand-over and AUTH are read only from what the receiving MTA wrote in fixed
    places (classifier.envelope.formats.Marks); the HELO, names and addresses never count.
    """
    from_text, by_value, by_comment, with_value, via_value, id_value, for_value, _, _, _ = frame
    by = _first_token(by_value)
    protocol = _protocol(with_value) or _protocol(via_value, known_only=True)
    if protocol is None and any(note.lower() == "(via http)" for note in frame.by_notes):
        protocol = "HTTP"  # web.de: "by host (via HTTP)"
    local = None
    if protocol is not None and protocol.startswith("LOCAL-"):
        # Exim's local-esmtp, local-bsmtp…: that dialect, spoken by a local process.
        local, protocol = f"with {protocol.lower()}", protocol[6:] or None
    from_notes: tuple[str, ...] = ()
    whole_from = from_text  # where the from part ends, for _mta_words
    if from_text:
        from_text = from_text[:_MAX_FROM_CHARS]
        if "(" in from_text:
            first = _FIRST_WORD.match(from_text)
            from_notes = tuple(_COMMENT.findall(from_text, first.end() if first else 0))
    family = detect_family(_mta_words(low, whole_from, from_notes), by or "", by_comment, protocol)
    fmt = family.name
    evidence: list[str] = []

    part: FromPart | None = None
    if from_text:
        part = read_from(family, from_text)
        if part is None and family is not FALLBACK:
            part = read_from(FALLBACK, from_text)
            fmt = "fallback"
        if part is not None:
            evidence.append(f"{fmt}: from part read as '{part.reader}'")
    ip = part.ip if part is not None else None
    if ip is None and part is not None and part.ip_text:
        evidence.append(f"no usable address in '{part.ip_text}'")
    rdns_confirmed = not (from_notes and "(may be forged)" in from_notes[0].lower())
    if not rdns_confirmed and part is not None and part.rdns:
        evidence.append(f"reverse name {part.rdns} not confirmed (may be forged)")
    if not (by or (part is not None and (part.helo or part.ip_text or part.rdns))):
        why = "unparsed: no from or by clause could be read"
        return _unparsed(raw, why, frame.date_text)

    marks = Marks(
        from_text or "", from_notes, by or "", by_comment, frame.by_notes, with_value.strip()
    )
    local = local or local_reason(protocol, fmt, from_text is not None, submitted, ip, part, marks)
    if local:
        evidence.append(f"local: {local}")
    auth_user, why_auth = auth_reason(protocol, part, marks)
    if why_auth:
        evidence.append(f"authenticated: {why_auth}")
    helo = part.helo.translate(_HELO_UNMASK) if part and part.helo else None
    if helo and quoted:
        helo = _unmask(helo, quoted)
    if helo and helo[:1] == '"' and part is not None and part.reader == "smap":
        helo = helo[1:-1] or None  # TIS smap: 'claiming to be "x"'
    return ReceivedHop(
        raw=raw,
        helo=helo,
        rdns=part.rdns if part else None,
        ip=ip,
        by=by,
        protocol=protocol,
        queue_id=_unmask(_first_token(id_value), quoted),
        for_addr=_unmask(_first_token(for_value), quoted),
        envelope_from=_unmask(envelope_from(marks, frame.second_from), quoted),
        authenticated=why_auth is not None,
        auth_user=_unmask(auth_user, quoted),
        ident=_unmask(part.ident, quoted) if part else None,
        local=local is not None,
        fmt=fmt,
        parsed=True,
        evidence=tuple(evidence),
        date_text=frame.date_text,
        rdns_confirmed=rdns_confirmed,
    )


def _mta_words(low: str, from_text: str | None, from_notes: tuple[str, ...]) -> str:
    """Gives the lower-cased text the MTA family is told by: the sender's words left out.

    The HELO, the reverse name and the ident of the client comment are the sender's: a
    PTR such as exim-1.evil.example must not make a Postfix line read as Exim's.  Kept:
    everything from the end of the from part on, the comments after the client comment,
    the client comment's address and its opening word when that is a command (qmail's
    "(HELO x)").
    """
    if not from_text or not low.startswith("from "):
        return low
    end = low.find(from_text.lower(), 5)
    rest = low[end + len(from_text) :] if end >= 0 else low
    if not from_notes:
        return rest
    client = from_notes[0].lower()
    words = [rest]
    for note in from_notes[1:]:  # qmail's "(ident@ip)" holds the sender's ident
        low_note = note.lower()
        if low_note.startswith(_FROM_NOTE_MARKERS):
            words.append(low_note[: low_note.find(":") + 1])
    if client.startswith(("(helo ", "(ehlo ", "(lhlo ")):
        words.append(client[:6])
    if "[" in client:
        words.append(client[client.find("[") :])
    return " ".join(words)


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


def _first_token(value: str) -> str | None:
    """Gives the first word of a clause without <>, trailing punctuation or comments."""
    if " " in value or "\x01" in value:
        words = value.replace("\x01", " ").split(None, 1)
        if not words:
            return None
        value = words[0]
    return value.strip("<>,;") or None


def _protocol(value: str, known_only: bool = False) -> str | None:
    """Gives the protocol named in a ``with`` (or ``via``) clause, upper-cased (RFC 3848)."""
    words = value.split(None, 1)
    if words and (word := words[0].upper()) in _COMMON_PROTOCOLS:
        return word
    tokens = value.replace("\x01", " ").split()[:6]
    for token in tokens:
        word = token.strip("[],;").partition("/")[0].upper()
        word = _PROTOCOL_ALIASES.get(word, word)
        if _KNOWN_PROTOCOL.match(word):
            return word
    if known_only or not tokens:
        return None
    return tokens[0].strip("[],;").partition("/")[0].upper() or None


def _qmail_local(raw: str, work: str) -> ReceivedHop:
    """Gives the hop for qmail-queue's own line, "(qmail N invoked by uid N)".

    qmail-queue writes it above the hop qmail-smtpd wrote ("invoked from network") or
    for a message a local program handed it ("invoked by uid N"): a hand-over inside the
    host either way, so the walk steps over it to the line below, if any.
    """
    m = _QMAIL_LOCAL.match(work)
    if m is None:
        return _unparsed(raw, "unparsed: unknown qmail comment")
    how = m.group(1).lower()
    why = "qmail-queue invoked from network" if how == "from" else "qmail-queue invoked locally"
    semi = work.rfind(";")
    return ReceivedHop(
        raw, None, None, None, None, None, None, None, None, False, None, None,
        True, "qmail", True, (f"local: {why}",), work[semi + 1 :] if semi >= 0 else None,
    )  # fmt: skip
