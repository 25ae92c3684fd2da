"""Per-MTA patterns for the ``from`` part of a Received header (RFC 5321 §4.4 "Stamp").

RFC 5321 fixes only the frame (``from`` domain, ``by`` domain, ``with``/``id``/``for``
clauses, ``;`` date); what sits between ``from`` and ``by`` -- HELO name, reverse-DNS
name, address literal, ident, AUTH user -- is written differently by every MTA, and the
same shape can mean different things: ``name ([192.0.2.1])`` is the HELO name for
Sendmail but the verified reverse-DNS name for Exim.  So the family is recognised first
(on the MTA's own words only, classifier/envelope/received.py ``_mta_words``), then
that family's patterns are tried on the ``from`` part alone, and the generic list is the
last resort.  What the MTA says of AUTH, a local hand-over or the envelope sender is read
in classifier/envelope/marks.py.

A pattern names its groups ``name`` (the first word after ``from``), ``helo``, ``rdns``,
``ip``/``ipb``, ``ident``, ``user``, ``mech``, ``verified``; its *convention* says what the
first word is for that family.
"""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

import re
from functools import lru_cache
from typing import NamedTuple

from classifier.lazyre import lazy
from classifier.names import normalize_ip

# Conventions: what the first word after "from" means.
NAME_IS_HELO = "helo"  # Sendmail, Postfix, Exchange: "from HELO (rdns [ip])"
NAME_IS_RDNS = "rdns"  # qmail, Exim: the first word is the reverse-DNS name
NAME_IS_RDNS_ONLY = "rdns-only"  # TIS smap: name(ip), the HELO only when stated
NO_HELO = "no-helo"  # webmail over HTTP, ecelerity: no HELO unless stated
COMMUNIGATE = "communigate"  # "[ip] (HELO x)", "name ([ip] verified)"

_IP_PORT = lazy(r"^\[?(\d{1,3}(?:\.\d{1,3}){3})\]?(?:[:.]\d{1,5})?$")
_IP_LITERAL_PORT = lazy(r"^\[([^\[\]]*)\](?::\d{1,5})?$")
# Names a reverse lookup or an MTA writes when it has no name to give.
NO_NAME = frozenset({"", "unknown", "softdnserr", "unverified", "unavailable"})


class Reader(NamedTuple):
    """One pattern for the ``from`` part and the convention it follows."""

    name: str
    regex: re.Pattern[str]
    convention: str


class Family(NamedTuple):
    """An MTA family: its name (``ReceivedHop.fmt``) and its readers, tried in order."""

    name: str
    readers: tuple[Reader, ...]


class FromPart(NamedTuple):
    """What the ``from`` part says about the sending side."""

    helo: str | None
    rdns: str | None
    ip: str | None  # normalised; None when ip_text is no usable address
    ip_text: str | None
    ident: str | None
    auth_user: str | None
    auth_mech: str | None
    reader: str


def _r(pattern: str) -> re.Pattern[str]:
    return lazy(pattern, re.IGNORECASE)


# "helo (rdns [ip])", "helo (ident@rdns [ip] (may be forged))", "helo (IDENT:x@rdns [ip])",
# "helo ([ip])", "helo (<unknown.domain>[ip])", "helo (user@[ip])" — Sendmail, Postfix, Courier…
SENDMAIL = _r(
    r"^(?P<name>[^\s()]*) ?\((?:IDENT:)?(?:(?P<ident>[^\s@()\[\]]+)@)?"
    r"(?!(?:HELO|EHLO|LHLO|account) )(?P<rdns>[^\s()\[\]]*) ?\[(?P<ip>[^\s()\[\]]*)\]"
)
# Sendmail's local form without an address: "localhost (user@localhost)".
SENDMAIL_NOIP = _r(
    r"^(?P<name>[^\s()]*) ?\((?:IDENT:)?(?P<ident>[^\s@()\[\]]+)@(?P<rdns>[^\s()\[\]]+)\)"
)
# qmail, qpsmtpd, Yahoo, GMX: "rdns (HELO helo) (ident@ip)", "rdns (EHLO helo) [ip]".
QMAIL_HELO = _r(
    r"^(?P<name>[^\s()]*) ?\((?:HELO|EHLO|LHLO)(?: (?P<helo>[^()]*?))? ?\)"
    r"(?: ?\((?:(?P<ident>[^()]*)@)?(?P<ip>[^\s()@]*)(?: with (?P<mech>[\w-]+))?\)"
    r"| ?\[(?P<ipb>[^\s()\[\]]*)\])?"
)
# qmail without HELO (HELO equals the name): "rdns (ip)", "rdns (ident@ip)", "(u@ip with plain)".
QMAIL_IP = _r(
    r"^(?P<name>[^\s()]*) ?\((?:(?P<ident>[^()\s]*)@)?"
    r"(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f]*:[0-9a-f:.]+)(?: with (?P<mech>[\w-]+))?\)"
)
# Exim 4: "rdns ([ip]:port helo=x ident=y)", "[ip] (port=1 helo=x)"; lenient (all optional).
EXIM = _r(
    r"^(?P<name>[^\s()]*) ?\((?:\[(?P<ip>[^\s()\[\]]*)\](?::\d+)? ?)?(?:port=\d+ ?)?"
    r"(?:helo=(?P<helo>[^\s()]*) ?)?(?:ident=(?P<ident>[^\s()]*) ?)?\)"
)
# The same, only when helo= or ident= shows it is Exim-style (for the generic list).
EXIM_STRICT = _r(
    r"^(?P<name>[^\s()]*) ?\((?:\[(?P<ip>[^\s()\[\]]*)\](?::\d+)? ?)?(?:port=\d+ ?)?"
    r"(?=(?:helo|ident)=)(?:helo=(?P<helo>[^\s()]*) ?)?(?:ident=(?P<ident>[^\s()]*) ?)?\)"
)
# Exim 3: "rdns (helo) [ip.port] (ident)".
EXIM3 = _r(r"^(?P<name>[^\s()]+) \((?P<helo>[^\s()]+)\) \[(?P<ip>[^\s()\[\]]+)\]")
# "name [ip]" (Exim 3, MDaemon, fetchmail, SMTPD32), also "name [(ip)]".
NAME_BRACKET = _r(r"^(?P<name>[^\s()\[\]]+) ?\[\(?(?P<ip>[^\s()\[\]]+)\)?\]")
# "helo ([ip])", "helo ([ip] RDNS failed)", "helo (ip)", "helo ( ip)", "helo (ip:port)".
HELO_PAREN_IP = _r(
    r"^(?P<name>[^\s()]*) ?\( ?\[?(?P<ip>\d{1,3}(?:\.\d{1,3}){3}(?:[:.]\d{1,5})?"
    r"|(?:IPv6:)?[0-9a-f]*:[0-9a-f:.]+(?:%\w+)?)\]?(?::\d{1,5})?(?: [^()]*)?\)"
)
# TIS FWTK smap / smtpd: "rdns(ip)", "rdns(ip, HELO x)", 'rdns(ip), claiming to be "x"'.
FWTK = _r(
    r"^(?P<name>[^\s()]+)\((?P<ip>[^\s(),]+)(?:, HELO (?P<helo>[^\s()]+))?\)"
    r"(?:, claiming to be (?P<helob>\x03\d+\x03|\"[^\"]*\"))?"  # quoted: received.py masks
)
# CommuniGate Pro: "[ip] (account u HELO h)", "name ([ip] verified)", "[ip] (account u [ip])".
CGP = _r(
    r"^(?P<name>[^\s()]*) ?\((?=[^()]*\S\))(?:account (?P<user>[^\s()]+) ?)?"
    r"(?:(?:HELO|EHLO) (?P<helo>[^\s()]*) ?)?(?:\[(?P<ip>[^\s()\[\]]*)\] ?)?"
    r"(?P<verified>verified|unverified)?\)"
)
# "helo (rdns)" without an address (LSMTP, Content Technologies): the name in parentheses.
NAME_PAREN_NAME = _r(r"^(?P<name>[^\s()]+) \((?P<rdns>[a-z0-9][\w-]*(?:\.[\w-]+)+\.?)\)")
# Last resort: an address at the end of the first comment, "name (junk 2001:db8::1)".
PAREN_TAIL_IP = _r(
    r"^(?P<name>[^\s()]+) \([^()]*? (?P<ip>\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f]*:[0-9a-f:]+)\)"
)
# The first word alone: a HELO name, an address, or a local user name.
BARE = lazy(r"^(?P<name>[^\s()]+)")


def _family(name: str, *readers: tuple[str, re.Pattern[str], str]) -> Family:
    return Family(name, tuple(Reader(n, rx, conv) for n, rx, conv in readers))


_BARE_HELO = ("bare", BARE, NAME_IS_HELO)
_SENDMAIL = ("sendmail", SENDMAIL, NAME_IS_HELO)
_PAREN_IP = ("helo (ip)", HELO_PAREN_IP, NAME_IS_HELO)
_QMAIL_HELO = ("qmail (HELO)", QMAIL_HELO, NAME_IS_RDNS)
_QMAIL_IP = ("qmail (ip)", QMAIL_IP, NAME_IS_RDNS)

# The readers the quick path of classifier/envelope/received.py stands in for.
SENDMAIL_READER, BARE_HELO_READER = Reader(*_SENDMAIL), Reader(*_BARE_HELO)
POSTFIX = _family("postfix", _SENDMAIL, _BARE_HELO)
SENDMAIL_FAMILY = _family(
    "sendmail", _SENDMAIL, ("sendmail local", SENDMAIL_NOIP, NAME_IS_HELO), _PAREN_IP, _BARE_HELO
)
EXIM_FAMILY = _family(
    "exim",
    ("exim", EXIM, NAME_IS_RDNS),
    ("exim3", EXIM3, NAME_IS_RDNS),
    ("exim3 name [ip]", NAME_BRACKET, NAME_IS_RDNS),
    _QMAIL_HELO,
    _BARE_HELO,
)
QMAIL = _family("qmail", _QMAIL_HELO, _QMAIL_IP, _SENDMAIL, _BARE_HELO)
OPENSMTPD = _family("opensmtpd", _SENDMAIL, _BARE_HELO)
COURIER = _family("courier", _SENDMAIL, _PAREN_IP, _BARE_HELO)
EXCHANGE = _family("exchange", _PAREN_IP, _SENDMAIL, _BARE_HELO)
GMAIL = _family("gmail", _SENDMAIL, _PAREN_IP, _BARE_HELO)
DOVECOT_LMTP = _family("dovecot-lmtp", _QMAIL_HELO, _SENDMAIL, _PAREN_IP, _QMAIL_IP, _BARE_HELO)
LMTP = _family("lmtp", _QMAIL_HELO, _SENDMAIL, _PAREN_IP, _QMAIL_IP, _BARE_HELO)
AMAVIS = _family("amavis", _SENDMAIL, _PAREN_IP, _BARE_HELO)
COMMUNIGATE_FAMILY = _family(
    "communigate", ("communigate", CGP, COMMUNIGATE), ("bare", BARE, COMMUNIGATE)
)
ECELERITY = _family("ecelerity", ("ecelerity", EXIM, NO_HELO), ("bare", BARE, NO_HELO))
MDAEMON = _family("mdaemon", ("name [ip]", NAME_BRACKET, NAME_IS_HELO), _SENDMAIL, _BARE_HELO)
INTERMAIL = _family("intermail", _PAREN_IP, _SENDMAIL, _BARE_HELO)
STALWART = _family("stalwart", _SENDMAIL, _BARE_HELO)
SCALIX = _family("scalix", _PAREN_IP, _BARE_HELO)
XMAIL = _family("xmail", _PAREN_IP, _BARE_HELO)
FWTK_FAMILY = _family("smap", ("smap", FWTK, NAME_IS_RDNS_ONLY), _BARE_HELO)
FETCHMAIL = _family("fetchmail", ("name [ip]", NAME_BRACKET, NAME_IS_HELO), _SENDMAIL, _BARE_HELO)
WEBMAIL = _family(
    "webmail",
    ("webmail", SENDMAIL, NO_HELO),
    ("webmail (ip)", HELO_PAREN_IP, NO_HELO),
    ("bare", BARE, NO_HELO),
)
YAHOO = _family("yahoo", _QMAIL_HELO, _QMAIL_IP, _SENDMAIL, _BARE_HELO)
FALLBACK = _family(
    "fallback",
    _QMAIL_HELO,
    ("exim-style", EXIM_STRICT, NAME_IS_RDNS),
    _SENDMAIL,
    _QMAIL_IP,
    ("sendmail local", SENDMAIL_NOIP, NAME_IS_HELO),
    ("smap", FWTK, NAME_IS_RDNS_ONLY),
    _PAREN_IP,
    ("name [ip]", NAME_BRACKET, NAME_IS_HELO),
    ("helo (rdns)", NAME_PAREN_NAME, NAME_IS_HELO),
    ("address in comment", PAREN_TAIL_IP, NAME_IS_HELO),
    _BARE_HELO,
)

# Markers in the lower-cased header, mostly the software named in a comment.  No real
# header carries two of them, so the commonest are tried first.
_MARKERS: dict[str, Family] = {
    "(postfix": POSTFIX, "(authenticated sender:": POSTFIX,
    "(exim": EXIM_FAMILY, "/exim)": EXIM_FAMILY, "(fetchmail": FETCHMAIL, "(amavis": AMAVIS,
    "(opensmtpd": OPENSMTPD, "(communigate": COMMUNIGATE_FAMILY, "(ecelerity": ECELERITY,
    "(mdaemon": MDAEMON, "(intermail": INTERMAIL, "(stalwart": STALWART,
    "(courier": COURIER, "(auth: ": COURIER, "softdnserr": COURIER, "[::ffff:": COURIER,
    "(scalix": SCALIX, "[xmail": XMAIL,
    "microsoft smtp": EXCHANGE, "with mapi": EXCHANGE, "exchange internet mail": EXCHANGE,
    " via smap": FWTK_FAMILY, " via csmap": FWTK_FAMILY, " via smtp by": FWTK_FAMILY,
}  # fmt: skip
# Most markers open a comment: one search tells whether any of them is in the line, so a
# line with none (Dovecot LMTP's, say) is not searched once per marker.
_COMMENT_MARKER = re.compile(
    r"\((?:" + "|".join(re.escape(m[1:]) for m in _MARKERS if m[0] == "(") + ")"
)
_SENDMAIL_VERSION = lazy(r"^\(\S*?\d+\.\d+[\w.+-]*(?: \([^()]*\))?/")
_GOOGLE_HOSTS = ("google.com", "gmail.com", "googlemail.com")
_OFFICE365_HOSTS = ("outlook.com", "office365.com")


def detect_family(low: str, by_host: str, by_comment: str, protocol: str | None) -> Family:
    """Gives the MTA family whose patterns fit this header, or FALLBACK (RFC 5321 §4.4)."""
    if (
        _COMMENT_MARKER.search(low)
        # each of the other markers holds one of these (tests/test_envelope_fast.py): a
        # line with none is not searched for the markers one by one
        or "[" in low
        or " via " in low
        or "/exim)" in low
        or "softdnserr" in low
        or "microsoft smtp" in low
        or "with mapi" in low
        or "exchange internet mail" in low
    ):
        for marker, family in _MARKERS.items():
            if marker in low:
                return family
    host = by_host.lower()
    if host.endswith(_OFFICE365_HOSTS):
        return EXCHANGE
    if host.endswith(_GOOGLE_HOSTS) or host.startswith("2002:a"):
        return GMAIL
    proto = protocol or ""
    if proto.startswith("LMTP"):
        return DOVECOT_LMTP if "(envelope-from" in low else LMTP
    if proto.startswith("HTTP") or "(via http)" in low or " authenticated user " in low:
        return WEBMAIL
    if (
        _SENDMAIL_VERSION.match(by_comment)
        or "(authenticated bits=" in low
        or "/submit)" in low
        or "sendmail" in by_comment.lower()
    ):
        return SENDMAIL_FAMILY
    if "(helo " in low or "(ehlo " in low or "(lhlo " in low or "(qp " in low or "qpsmtpd" in low:
        return QMAIL
    if host.endswith(".yahoo.com"):
        return YAHOO
    return FALLBACK


def address_of(text: str) -> str | None:
    """Gives the normalised address in ``ip``, ``[ip]:port``, ``ip:port`` or ``a.b.c.d.port``."""
    ip = normalize_ip(text)
    if ip is None:
        m = _IP_PORT.match(text) or _IP_LITERAL_PORT.match(text)
        if m is not None:
            ip = normalize_ip(m.group(1))
    return ip


def _is_address(text: str) -> bool:
    """Gives True for an address literal ``[…]`` or a bare IPv4/IPv6 address (with port)."""
    if not text:
        return False
    first = text[0]
    if first == "[":
        return True
    return (first.isdigit() or ":" in text) and address_of(text) is not None


@lru_cache(maxsize=4096)  # the same few names come back in every message: localhost, relays
def clean_name(text: str | None) -> str | None:
    """Gives a reverse-DNS name as a plain host name: no <>, no trailing dot, None if absent."""
    if not text:
        return None
    name = text.strip("<>").rstrip(".")
    if name.lower() in NO_NAME or _is_address(name):
        return None
    return name


def read_from(family: Family, from_text: str) -> FromPart | None:
    """Gives what the first matching pattern of the family reads in the ``from`` part."""
    if "(" not in from_text and "[" not in from_text:
        # Only the closing bare-word reader can match: every other pattern needs ( or [.
        reader = family.readers[-1]
        m = reader.regex.match(from_text)
        return _interpret(m.groupdict(), reader) if m is not None else None
    for reader in family.readers:
        m = reader.regex.match(from_text)
        if m is not None:
            return _interpret(m.groupdict(), reader)
    return None


def _interpret(g: dict[str, str | None], reader: Reader) -> FromPart:
    name = g["name"] or ""
    ip_text = g.get("ip") or g.get("ipb")
    ip_in_comment = ip_text is not None
    helo = g.get("helo")
    if helo is None:
        helo = g.get("helob")
    rdns = g.get("rdns")
    first = name[:1]
    name_is_address = first == "[" or (
        (first.isdigit() or ":" in name) and address_of(name) is not None
    )
    # A bare address standing alone after "from" is the client, not a HELO argument.
    name_is_client_only = name_is_address and not ip_in_comment and first != "["
    if not ip_in_comment and name_is_address:
        ip_text = name
    convention = reader.convention
    if convention == NAME_IS_HELO:
        if helo is None and name and not name_is_client_only:
            helo = name
    elif convention == NAME_IS_RDNS:
        if rdns is None and ip_in_comment and not name_is_address:
            rdns = name
        if helo is None and name and not name_is_client_only:
            helo = name
    elif convention == NAME_IS_RDNS_ONLY:
        rdns = rdns or name
    elif convention == COMMUNIGATE:
        if helo is None and name and not name_is_address:
            helo = name
        if g.get("verified") == "verified" and not name_is_address:
            rdns = name
    ident = g.get("ident")
    user = g.get("user")
    mech = g.get("mech")
    if mech:
        # qmail/Yahoo "(user@ip with plain)": the name before the address is the AUTH user.
        user = ident
    return FromPart(
        helo or None,
        clean_name(rdns) if rdns else None,
        address_of(ip_text) if ip_text else None,
        ip_text or None,
        (ident.strip("[]") or None) if ident else None,
        user or None,
        mech or None,
        reader.name,
    )
