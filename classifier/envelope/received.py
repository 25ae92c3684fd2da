"""One Received header value, read into a ReceivedHop (RFC 5321 §4.4, RFC 5322 §3.6.7).

The frame is common to every MTA: ``from`` … ``by`` … ``with`` … ``id`` … ``for`` … ``;``
date.  The shapes Postfix, amavis and Dovecot write for nearly every delivery are read in
one match (classifier/envelope/quick.py); this module is the general reader of every
other line: it cuts the line into clauses (classifier/envelope/clauses.py), and the
``from`` part -- where MTAs disagree -- is read by the patterns of the recognised family
(classifier/envelope/formats.py).  Nothing here raises on input from a message: a header
that cannot be read comes back with ``parsed=False`` and ``fmt="unparsed"``.
"""

from __future__ import annotations

import re

from classifier.envelope.clauses import (
    COMMENT,
    COMMON_PROTOCOLS,
    FROM_NOTE_MARKERS,
    MAX_CHARS,
    MAX_FROM_CHARS,
    Frame,
    first_token,
    mask_quotes,
    read_clauses,
    read_frame,
    unmask,
)
from classifier.envelope.formats import FALLBACK, FromPart, detect_family, read_from
from classifier.envelope.hop import ReceivedHop
from classifier.envelope.marks import Marks, auth_reason, envelope_from, local_reason
from classifier.envelope.quick import read_quick
from classifier.lazyre import lazy
from classifier.message import unfolded_value

__all__ = ["ReceivedHop", "parse_received", "parse_received_field"]

# After the client comment: the MTA's own comments (TLS, AUTH) and then the by clause.
_AFTER_CLIENT = lazy(r"(?: \((?:[^()]++|\([^()]*+\))*+\))* by ")
# A HELO made one word: space, "(", ")" and ";" become placeholders, undone when read.
_HELO_MASK = str.maketrans(" ();", "\x02\x04\x05\x06")
# qmail's own "rdns (HELO x)" before its "(ip)": the name and the HELO are two things.
_QMAIL_NAME_HELO = lazy(r"[^\s()]+ \((?:HELO|EHLO|LHLO)(?: [^()]*)?\)$", re.I)
_HELO_UNMASK = str.maketrans("\x02\x04\x05\x06", " ();")
_NO_PLACEHOLDERS = str.maketrans(dict.fromkeys("\x01\x02\x03\x04\x05\x06", " "))
# "(name [address])" or "([address])": how Postfix and Sendmail name the client.
_CLIENT_COMMENT = lazy(r"\((?:[^\s()\[\]]+ )?\[[^\s()\[\]]+\]\)")
# Family markers a from part holds after the client comment: Postfix's and Courier's AUTH.
_FIRST_WORD = lazy(r"[^\s()]*")
_QMAIL_LOCAL = lazy(r"^\(qmail \d+ (?:messnum \d+ )?invoked (by|from|for) ", re.I)
_KNOWN_PROTOCOL = lazy(
    r"^(?:(?:UTF8)?(?:E?SMTP|LMTP)S?A?|ESMTPSA|B?SMTP|ASMTP|QMQP|HTTP\w*|IMAPS?|POP3?S?"
    r"|LOCAL(?:-[A-Z0-9]+)?|MAPI|NNFMP|ECSTREAM|TCP|SUBMISSION)$"
)
_PROTOCOL_ALIASES = {"SMTPSVC": "SMTP", "ESMTP-TLS": "ESMTPS"}


def parse_received(value: str) -> ReceivedHop:
    """Gives the ReceivedHop read from one header value; never raises (RFC 5321 §4.4)."""
    raw = ""
    try:
        raw = _unfold(value)
        return read_quick(raw) or _parse(raw)
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
        if "\n" in line:
            # Folded (most MTAs fold their lines): unfolded_value(raw) would give this, its
            # line breaks making it unprintable; the bytes are not decoded a second time.
            flat = " ".join(line.split())  # what parse_received would read: no _unfold
            return read_quick(flat) or parse_received(flat)
        return read_quick(line) or parse_received(unfolded_value(raw))
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


def _parse(raw: str) -> ReceivedHop:
    work = raw if len(raw) <= MAX_CHARS else raw[:MAX_CHARS]
    if "  " in work or "\t" in work or not work.isascii() or not work.isprintable():
        # \x01 to \x06 are the placeholders below
        work = " ".join(work.translate(_NO_PLACEHOLDERS).split())
    quoted: tuple[str, ...] = ()
    if '"' in work:
        work, quoted = mask_quotes(work)
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
    frame = read_frame(work) if low.startswith("from ") else None
    return _build(raw, work, low, frame or read_clauses(work), submitted, quoted)


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


def _build(
    raw: str, work: str, low: str, frame: Frame, submitted: bool, quoted: tuple[str, ...] = ()
) -> ReceivedHop:
    """Gives the hop: the family's patterns read the from part, then the flags are set.

    Local hand-over and AUTH are read only from what the receiving MTA wrote in fixed
    places (classifier.envelope.marks.Marks); the HELO, names and addresses never count.
    """
    from_text, by_value, by_comment, with_value, via_value, id_value, for_value, _, _, _ = frame
    by = first_token(by_value)
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
        from_text = from_text[:MAX_FROM_CHARS]
        if "(" in from_text:
            first = _FIRST_WORD.match(from_text)
            from_notes = tuple(COMMENT.findall(from_text, first.end() if first else 0))
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
        helo = unmask(helo, quoted)
    if helo and helo[:1] == '"' and part is not None and part.reader == "smap":
        helo = helo[1:-1] or None  # TIS smap: 'claiming to be "x"'
    return ReceivedHop(
        raw=raw,
        helo=helo,
        rdns=part.rdns if part else None,
        ip=ip,
        by=by,
        protocol=protocol,
        queue_id=unmask(first_token(id_value), quoted),
        for_addr=unmask(first_token(for_value), quoted),
        envelope_from=unmask(envelope_from(marks, frame.second_from), quoted),
        authenticated=why_auth is not None,
        auth_user=unmask(auth_user, quoted),
        ident=unmask(part.ident, quoted) if part else None,
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
        if low_note.startswith(FROM_NOTE_MARKERS):
            words.append(low_note[: low_note.find(":") + 1])
    if client.startswith(("(helo ", "(ehlo ", "(lhlo ")):
        words.append(client[:6])
    if "[" in client:
        words.append(client[client.find("[") :])
    return " ".join(words)


def _protocol(value: str, known_only: bool = False) -> str | None:
    """Gives the protocol named in a ``with`` (or ``via``) clause, upper-cased (RFC 3848)."""
    words = value.split(None, 1)
    if words and (word := words[0].upper()) in COMMON_PROTOCOLS:
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
