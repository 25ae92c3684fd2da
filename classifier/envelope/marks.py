"""What the receiving MTA wrote about its own session, read only where it writes it.

A Received header's "authenticated", "local hand-over" and envelope sender are
decided from a `Marks` value: the ``with`` keyword, the comments that open after
the client comment and before ``by``, and the by clause's comments (docs/design.md,
the trust rule; README "Which words of a Received header are believed").  The
per-MTA patterns of the from part live in classifier/envelope/formats.py.
"""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

import re
from typing import NamedTuple

from classifier.envelope.formats import FromPart
from classifier.lazyre import lazy

# What MTAs write to say "handed over inside the host" or "this was our AUTH user".  Each
# is read only in the place its MTA writes it (docs/design.md, "The trust rule"): the ``with``
# keyword, a comment that opens in the from part after the first word, a comment of the
# by clause.  The HELO, a reverse name and every address are the sender's words: a
# marker found inside them means nothing.  A comment can only be opened by the MTA:
# Postfix turns "(" and ")" of a HELO into "?" (smtpd.c, neuter()), a reverse name is a
# host name, and quoted local parts are masked before a line is cut (received.py).
_NETWORK_PROTOCOLS = frozenset(
    ("SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", "UTF8SMTP", "UTF8SMTPS")
)
_AUTH_PROTOCOL = re.compile(r"^(?:(?:UTF8)?(?:E?SMTP|LMTP)S?A|ASMTP|HTTP\w*)$")
# A whole comment, matched from its "(": Exim, Dovecot LMTP, qmail-scanner.
_ENVELOPE_NOTE = re.compile(r"\(envelope-(?:from|sender)\s+<?([^<>\s,()]*)>?", re.I)
# The comment an MTA writes about the AUTH of its own session, matched from its "(":
# Postfix "(Authenticated sender: u)", Sendmail "(authenticated bits=0)", Courier
# "(AUTH: LOGIN u, TLS: …)", CommuniGate "(account u HELO h)", webmail "(SquirrelMail
# authenticated user u)", CriticalPath (a by-clause comment) "(authenticated as u)".
_AUTH_NOTE = re.compile(
    r"\((?:authenticated sender: ?(?P<postfix>[^()\s]+)\)"
    r"|authenticated(?: (?:as|by) (?P<as>[^()\s,;]+)| bits=\d+| \(\d+ bits\))?[,)]"
    r"|auth: (?P<mech>[\w-]+)(?: (?P<courier>[^,()\s]+))?"
    r"|account (?P<account>[^()\s]+)"
    r"|\w+ authenticated user (?P<webmail>[^()\s]+)\))",
    re.I,
)
# The start of every comment _AUTH_NOTE reads, found anywhere: one search over all the
# notes tells whether any of them needs matching (most lines have none).
_AUTH_HINT = re.compile(r"\((?:authenticated|auth: |account |\w+ authenticated user)", re.I)
# The start of every comment auth_reason or envelope_from reads: a line without one
# anywhere gives them nothing to find in its comments (classifier/envelope/quick.py).
MARK_HINT = re.compile(
    r"\((?:authenticated|auth: |account |\w+ authenticated user|envelope-)", re.I
)
# "from 192.0.2.5 ( [192.0.2.5]) as user u by …": after the last comment of the from part.
_AS_USER = re.compile(r"\) as user (\S+)$", re.I)
_POSTFIX_PICKUP = re.compile(r"\([^()]*, from userid \d+\)$", re.I)
# The address part of the client comment: OpenSMTPD "[local]", Cyrus "[unix socket]",
# Sendmail "[[UNIX: localhost]]".
_LOCAL_SOCKET = re.compile(
    r"\((?:[^\s()\[\]]++ ?)?\[(?:local|unix socket|\[unix: ?[^\[\]]*\]|unix:[^\[\]]*)\]\)$", re.I
)
_GMX_SUBMISSION = lazy(r"\(mp\w*\)$", re.I)
_GMX_HOSTS = frozenset(("mail.gmx.net", "mail.gmx.com"))


class Marks(NamedTuple):
    """What the receiving MTA wrote in the fixed places of its line; nothing else is read.

    ``from_notes`` are the comments of the from part after its first word (the client
    comment first), ``by_notes`` those after the by host up to the date; quoted strings
    inside them are still masked.
    """

    from_text: str
    from_notes: tuple[str, ...]
    by_host: str
    by_comment: str
    by_notes: tuple[str, ...]
    with_value: str


def envelope_from(marks: Marks, second_from: str | None) -> str | None:
    """Gives the envelope sender a hop recorded: Exim/LMTP comments, XMail's "from <x>"."""
    for note in marks.by_notes + marks.from_notes:
        # "-" is no other character's lower case: the slice is checked only with one there
        if note[9:10] == "-" and note[1:10].lower() == "envelope-":
            m = _ENVELOPE_NOTE.match(note)
            if m:
                return m.group(1)
    if second_from is not None:
        value = second_from.strip()
        if value.startswith("<"):
            return value.partition(">")[0][1:]
    return None


def local_reason(
    protocol: str | None,
    family: str,
    has_from: bool,
    submitted: bool,
    ip: str | None,
    part: FromPart | None,
    marks: Marks,
) -> str | None:
    """Gives why the sending side is not an SMTP client on the network, or None.

    RFC 5321 §4.4: an SMTP server always writes a FROM clause; a Received line
    without one, or one naming a local protocol, records a hand-over inside the host.
    """
    if protocol is not None and protocol not in _NETWORK_PROTOCOLS:
        if protocol == "LOCAL":
            return "with local"
        if protocol.startswith("LMTP"):
            return f"{protocol} delivery (RFC 2033)"
        if protocol.startswith(("IMAP", "POP")) or family == "fetchmail":
            return f"fetched by {protocol} and re-injected"
    if marks.with_value[:13].lower() == "qmail-scanner":
        return "qmail-scanner re-queue"
    by_comment = marks.by_comment
    if "," in by_comment and _POSTFIX_PICKUP.match(by_comment):
        return "Postfix pickup (from userid)"
    if family == "exchange" and marks.from_text.lower() == "mail pickup service":
        return "Exchange pickup service"
    if marks.from_notes and _LOCAL_SOCKET.match(marks.from_notes[0]):
        return "local socket"
    if ip is None and (submitted or by_comment.lower().endswith("/submit)")):
        return "Sendmail local submission"
    if not has_from:
        return "no from clause"
    if family == "exim" and ip is None and part is not None and part.helo and "." not in part.helo:
        return "Exim local sender"
    return None


def auth_reason(
    protocol: str | None, part: FromPart | None, marks: Marks
) -> tuple[str | None, str | None]:
    """Gives (AUTH user, why the hop is authenticated) or (None, None) (RFC 4954 §7, RFC 3848)."""
    user = part.auth_user if part else None
    reason: str | None = None
    if part is not None and part.auth_mech:
        reason = f"AUTH {part.auth_mech.upper()}"
    if protocol is not None and (
        protocol in ("ESMTPA", "ESMTPSA")
        or (protocol not in _NETWORK_PROTOCOLS and _AUTH_PROTOCOL.match(protocol))
    ):
        reason = reason or f"with {protocol}"
    notes = marks.from_notes + marks.by_notes[:2]
    if notes and _AUTH_HINT.search(" ".join(notes)) is None:
        notes = ()
    for note in notes:
        m = _AUTH_NOTE.match(note)
        if m is None:
            continue
        if m.group("mech"):
            found = m.group("courier")
            reason = reason or f"AUTH: {m.group('mech')}"
        else:
            found = next((v for v in m.groupdict().values() if v), None)
            reason = reason or m.group(0).strip("( )")
        user = user or found
    if marks.from_notes and (m := _AS_USER.search(marks.from_text)):
        reason = reason or "as user"
        user = user or m.group(1)
    if (
        reason is None
        and marks.by_host.lower() in _GMX_HOSTS
        and _GMX_SUBMISSION.match(marks.by_comment)
    ):
        reason = "GMX submission server (mail.gmx.net mp*)"
    with_value = marks.with_value
    if reason is None and " " in with_value and " auth" in with_value.lower():
        words = [w.strip("[](),;").upper() for w in with_value.replace("\x01", " ").split()]
        if "AUTH" in words:
            reason = "AUTH in with clause"
    return (user if reason else None), reason
