"""The Received lines nearly every delivery carries, read in one match (RFC 5321 §4.4).

Postfix and OpenSMTPD relays, amavis and Dovecot LMTP write a few shapes for nearly every
hop: read_quick reads them with one regex, and gives None for any other line, which
the general reader (classifier/envelope/received.py) then reads.  The hop it gives is
the general reader's, field for field (tests/test_received.py checks it on every suite
line).
"""

from __future__ import annotations

import re

from classifier.envelope.clauses import (
    COMMENT,
    COMMON_PROTOCOLS,
    FROM_NOTE_MARKERS,
    MAX_CHARS,
    MAX_FROM_CHARS,
)
from classifier.envelope.formats import (
    BARE_HELO_READER,
    POSTFIX,
    SENDMAIL_READER,
    FromPart,
    clean_name,
    detect_family,
)
from classifier.envelope.hop import ReceivedHop
from classifier.envelope.marks import Marks, auth_reason, envelope_from, local_reason
from classifier.names import normalize_ip_text

# The shapes nearly every delivery carries -- Postfix and OpenSMTPD relays, amavis, Dovecot
# LMTP -- in one match: "from HELO (RDNS [IPv4]) (…) by HOST (…) with P id I for <R>; date"
# or "from HELO by HOST …".  It is the frame pattern of read_frame (clauses.py) with the
# from part spelled out and plainer words, so a line it matches is cut exactly where
# read_frame cuts it; any other line is left to the general reader.  Only printable ASCII
# matches: the general reader would rewrite anything else.
_HOST = r"[A-Za-z0-9][A-Za-z0-9.-]*"
_NOTE = r"\([ -'*-~]*+(?:\([ -'*-~]*+\)[ -'*-~]*+)*+\)"  # one level of nesting, as the frame
_IPV4 = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
# Postfix's IPv6 client, "[IPv6:2001:db8::1]": no family marker fits in hex digits and
# colons, and the bound keeps it under normalize_ip's 80 characters.
_ADDRESS = rf"{_IPV4}|IPv6:[0-9A-Fa-f:.]{{2,45}}"
# The HELO is a name or, from a client without one (a submission client, say), an
# address literal: "from [192.0.2.9] (unknown [192.0.2.9])".
_QUICK = re.compile(
    rf"from ({_HOST}|\[(?:{_ADDRESS})\])"
    rf"(?: \((?:({_HOST}) )?\[({_ADDRESS})\]\)((?: {_NOTE})*+))?"
    rf" by ({_HOST})(?: ({_NOTE}))?"
    rf"(?: {_NOTE}| with ([A-Za-z0-9]+)| id ([A-Za-z0-9]+)| for (<?[!-'*-:=?-~]+>?))*+"
    r" ?;([ -~]*+)\Z"
)
# The comments after the client comment, which the match has shown to be " (…)" runs of
# one nesting level: cut by the simpler pattern, as COMMENT would cut them.
_NOTES = re.compile(_NOTE)
# Words SENDMAIL's lookahead refuses as a reverse-DNS name: the general reader decides.
_NOT_RDNS = frozenset(("HELO", "EHLO", "LHLO", "ACCOUNT"))


def names_a_mark(low: str) -> bool:
    """Tells whether lower-cased ASCII text may hold a comment marks.MARK_HINT finds.

    Every comment auth_reason or envelope_from reads opens with one of these words.
    """
    return (
        "(auth" in low or "(account " in low or " authenticated user" in low or "(envelope-" in low
    )


def read_quick(raw: str) -> ReceivedHop | None:
    """Gives the hop of a line in one of the commonest shapes, or None (the general reader's).

    The same hop as _parse, field for field (tests/test_received.py checks it on every
    suite line), for a fraction of the cost: one match reads the frame and the from part,
    and the family's reader is known from the shape instead of searched for.
    """
    m = _QUICK.match(raw) if len(raw) <= MAX_CHARS and '"' not in raw else None
    if m is None:
        return None
    name, rdns, ip_text, notes, by, by_comment, with_value, id_value, for_value, date = m.groups()
    if (
        with_value is None
        # the from part, "from " to " by ", is cut to MAX_FROM_CHARS by the general reader
        or (len(raw) > MAX_FROM_CHARS and m.start(5) - 9 > MAX_FROM_CHARS)
        or " id " in date  # clauses after the date: the clause reader takes them
        or " for " in date
        or "  " in raw  # _parse would rewrite it first
    ):
        return None
    protocol = with_value.upper()
    if protocol not in COMMON_PROTOCOLS or (notes and "[" in notes):
        # "[" after the client comment: the HELO may hold a comment of its own (_join_helo)
        return None
    low = raw.lower()  # the match took printable ASCII only: no case folds beyond A-Z
    if by_comment == "(Postfix)":
        family = POSTFIX  # the first marker detect_family looks for: no search needed
    else:
        # The sender's words (HELO, reverse name) never pick the family, nor do the comments
        # after the client's but for their opening words, as received._mta_words reads them.
        tail = low[m.end(4) if ip_text is not None else m.end(1) :]
        if notes:
            opening = [n[: n.find(":") + 1] for n in _NOTES.findall(notes.lower())]
            tail += "".join(" " + w for w in opening if w.startswith(FROM_NOTE_MARKERS))
        family = detect_family(tail, by, by_comment or "", protocol)
    # The comments after the client's are read only for AUTH and the envelope sender
    # (auth_reason, envelope_from): a line with none of the words that open them needs
    # them not cut.
    marked = names_a_mark(low)
    if ip_text is not None:
        # "helo (rdns [ip])", "helo ([ip])": SENDMAIL's reading, as _interpret gives it.
        if family.readers[0] != SENDMAIL_READER or (rdns and rdns.upper() in _NOT_RDNS):
            return None
        rdns, ip = (clean_name(rdns) if rdns else None), normalize_ip_text(ip_text)
        part = FromPart(name, rdns, ip, ip_text, None, None, None, "sendmail")
        from_notes: tuple[str, ...] = (raw[raw.rfind("(", 0, m.start(3)) : m.end(3) + 2],)
        if notes and marked:
            from_notes += tuple(_NOTES.findall(notes))
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
    if marked and (by_comment is not None or "(" in raw[m.end(5) :]):
        by_notes = tuple(COMMENT.findall(raw, m.end(5)))
    marks = Marks(raw[5 : m.start(5) - 4], from_notes, by, by_comment or "", by_notes, with_value)
    local = local_reason(protocol, fmt, True, False, ip, part, marks)
    if local:
        evidence += (f"local: {local}",)
    auth_user, why_auth = auth_reason(protocol, part, marks)
    if why_auth:
        evidence += (f"authenticated: {why_auth}",)
    # In field order (raw, helo, rdns, ip, by, protocol, queue_id, for_addr, envelope_from,
    # authenticated, auth_user, ident, local, fmt, parsed, evidence, date_text): keywords
    # cost twice as much to pass, on a path every delivery takes twice or more.
    return ReceivedHop(
        raw, name, rdns, ip, by, protocol, id_value,
        for_value.strip("<>,;") or None if for_value else None,
        envelope_from(marks, None), why_auth is not None, auth_user, None,
        local is not None, fmt, True, evidence, date,
    )  # fmt: skip
