"""The cheaper envelope readers of issue 15 (item 3) read as the readers they stand in for.

Everything in a Received line but the receiving MTA's own words is the sender's: the
HELO, the reverse name, the address literal, the comments a relay below wrote.  So the
lines here are the quick shapes with hostile pieces put in every place, and each must
give the general reader's hop (tests/test_received.py does the same for the suite
lines); the AUTH and local hand-over readers are compared with their former code, kept
below as the reference.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from classifier.envelope import formats, quick, received
from classifier.envelope.formats import FromPart
from classifier.envelope.marks import MARK_HINT, Marks, auth_reason, local_reason
from classifier.envelope.received import parse_received, parse_received_field
from classifier.message import unfolded_value

# --- the former auth_reason and local_reason, the reference -------------------------------

_NETWORK_PROTOCOLS = frozenset(
    ("SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", "UTF8SMTP", "UTF8SMTPS")
)
_AUTH_PROTOCOL = re.compile(r"^(?:(?:UTF8)?(?:E?SMTP|LMTP)S?A|ASMTP|HTTP\w*)$")
_AUTH_NOTE = re.compile(
    r"\((?:authenticated sender: ?(?P<postfix>[^()\s]+)\)"
    r"|authenticated(?: (?:as|by) (?P<as>[^()\s,;]+)| bits=\d+| \(\d+ bits\))?[,)]"
    r"|auth: (?P<mech>[\w-]+)(?: (?P<courier>[^,()\s]+))?"
    r"|account (?P<account>[^()\s]+)"
    r"|\w+ authenticated user (?P<webmail>[^()\s]+)\))",
    re.I,
)
_AS_USER = re.compile(r"\) as user (\S+)$", re.I)
_POSTFIX_PICKUP = re.compile(r"\([^()]*, from userid \d+\)$", re.I)
_LOCAL_SOCKET = re.compile(
    r"\((?:[^\s()\[\]]++ ?)?\[(?:local|unix socket|\[unix: ?[^\[\]]*\]|unix:[^\[\]]*)\]\)$", re.I
)
_GMX_SUBMISSION = re.compile(r"\(mp\w*\)$", re.I)
_GMX_HOSTS = frozenset(("mail.gmx.net", "mail.gmx.com"))


def _reference_local_reason(
    protocol: str | None,
    family: str,
    has_from: bool,
    submitted: bool,
    ip: str | None,
    part: FromPart | None,
    marks: Marks,
) -> str | None:
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
    if by_comment and _POSTFIX_PICKUP.match(by_comment):
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


def _reference_auth_reason(
    protocol: str | None, part: FromPart | None, marks: Marks
) -> tuple[str | None, str | None]:
    user = part.auth_user if part else None
    reason: str | None = None
    if part is not None and part.auth_mech:
        reason = f"AUTH {part.auth_mech.upper()}"
    if protocol is not None and (
        protocol in ("ESMTPA", "ESMTPSA")
        or (protocol not in _NETWORK_PROTOCOLS and _AUTH_PROTOCOL.match(protocol))
    ):
        reason = reason or f"with {protocol}"
    for note in marks.from_notes + marks.by_notes[:2]:
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


# --- hostile pieces ------------------------------------------------------------------------

# Words a sender may put where a reader looks for the MTA's own: AUTH and hand-over marks,
# family markers, quotes, brackets, 8-bit and look-alike letters (ſ and K fold to s and k).
_WORDS = [
    "(Authenticated sender: bob@x.example)", "(authenticated bits=0)", "(AUTH: PLAIN u, TLS)",
    "(account u HELO h)", "(SquirrelMail authenticated user u)", "(authenticated as u)",
    "(Authenticated ſender: u)", "(envelope-from <x@y>)", "(Postfix, from userid 33)",
    "(x [local])", "(x [unix socket])", "(mp001)", "(Exim 4.97)", "(amavisd-new, port 1)",
    "(qmail-scanner 2)", ") as user bob", "(using TLSv1.3 with cipher X (256/256 bits))",
    "(No client certificate requested)", "[::ffff:192.0.2.1]", "softdnserr", "[xmail",
    "microsoft smtp", " via smap", '"q"', "(a (b (c)))", "((", "))", "é", "\xff", "\udcff",
    "by", "with", "id", "for", ";", "  ", "\t", "Kelvin", "ı", "(", ")", "[", "]", "<>",
]  # fmt: skip
_WORD = st.sampled_from(_WORDS) | st.text(min_size=0, max_size=12)
_IP = st.sampled_from(
    ["192.0.2.9", "198.51.100.23", "127.0.0.1", "999.1.1.1", "IPv6:2001:db8::17",
     "IPv6:::ffff:192.0.2.9", "IPv6:::1", "IPv6:zz", "IPv6:1.2.3.4", "IPv6:" + "1:" * 30]
)  # fmt: skip
_NAME = st.sampled_from(
    [
        "mail.example",
        "unknown",
        "localhost",
        "HELO",
        "account",
        "mx-1.example.org",
        "a",
        "softdnserr",
    ]
)
_HELO = _NAME | _IP.map(lambda ip: f"[{ip}]") | _WORD


@st.composite
def _postfix_lines(draw: st.DrawFn) -> str:
    """A line in the shape Postfix writes for an SMTP client, hostile words anywhere."""
    helo = draw(_HELO)
    rdns, ip = draw(_NAME), draw(_IP)
    client = draw(st.sampled_from([f" ({rdns} [{ip}])", f" ([{ip}])", f" ({rdns} [{ip}] )", ""]))
    notes = "".join(" " + draw(_WORD) for _ in range(draw(st.integers(0, 3))))
    by_comment = draw(st.sampled_from([" (Postfix)", " (OpenSMTPD)", "", " (8.17.1/8.17.1)"]))
    proto = draw(st.sampled_from(["ESMTP", "ESMTPS", "ESMTPSA", "LMTP", "SMTP", "esmtpa", "X"]))
    tail = draw(st.sampled_from(["", " id 4Sg2Va3", " id X for <a@b.example>", " for <r@x>"]))
    extra = draw(_WORD)
    date = draw(st.sampled_from(["Tue, 28 Nov 2026 10:00:01 +0000", "x id 1", "", "(CET)"]))
    by = draw(st.sampled_from(["mx.family.example", "mail.gmx.net", "localhost"]))
    return f"from {helo}{client}{notes} by {by}{by_comment} with {proto}{tail}{extra}; {date}"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_postfix_lines())
# A family word in a comment after the client's: the quick reader searched it, the general
# one reads only the opening words there (found in CI, in 6230216 already).
@example(
    "from mail.example (mail.example [192.0.2.9]) (Postfix, from userid 33)"
    " by mx.family.example (OpenSMTPD) with ESMTP;; Tue, 28 Nov 2026 10:00:01 +0000"
)
def test_quick_path_reads_hostile_postfix_lines_as_the_general_reader(line: str) -> None:
    raw = received._unfold(line)
    hop = quick.read_quick(raw)
    if hop is not None:
        general = received._parse(raw)
        # The readers may cut the text after ";" differently (a comment left open there,
        # as on main before issue 15 item 3); the date it gives must agree.
        assert (hop._replace(date_text=None), hop.date) == (
            general._replace(date_text=None),
            general.date,
        ), line
    field = f"Received: {line.replace(' by ', chr(13) + chr(10) + chr(9) + 'by ', 1)}\r\n"
    data = field.encode("utf-8", "surrogateescape")
    assert parse_received_field(data).to_dict() == parse_received(unfolded_value(data)).to_dict()


def test_quick_path_takes_address_literal_helos_and_ipv6_clients() -> None:
    lines = [
        "from [192.0.2.91] (unknown [192.0.2.91]) (Authenticated sender: dave@photo.example)"
        " by mail.photo.example (Postfix) with ESMTPSA id 4Z0P; Sat, 8 Mar 2025 20:44:09 +0100",
        "from [IPv6:2001:db8:f00d::17] (unknown [IPv6:2001:db8:f00d::17]) (No client"
        " certificate requested) by mx.example (Postfix) with ESMTPSA id 4Zvq;"
        " Thu, 6 Mar 2025 21:08:35 +0100",
        "from mail-wm1.example.net (mail-wm1.example.net [IPv6:2001:db8:4860::32e])"
        " by mx.example (Postfix) with ESMTPS id 4Zvq; Fri, 7 Mar 2025 16:41:23 +0100",
    ]
    for line in lines:
        hop = quick.read_quick(line)
        assert hop is not None, line
        assert hop == received._parse(line), line
    assert quick.read_quick(lines[0]) == received._parse(lines[0])
    first = quick.read_quick(lines[0])
    assert first is not None and first.authenticated and first.auth_user == "dave@photo.example"
    assert first.helo == "[192.0.2.91]" and first.rdns is None and first.ip == "192.0.2.91"
    ipv6 = quick.read_quick(lines[2])
    assert ipv6 is not None and ipv6.ip == "2001:db8:4860::32e" and not ipv6.authenticated


_NOTE = st.sampled_from(_WORDS) | st.text(max_size=30).map(lambda t: f"({t})")
_PART = st.builds(
    FromPart,
    st.none() | _WORD,
    st.none() | _NAME,
    st.none() | st.just("192.0.2.1"),
    st.none() | _WORD,
    st.none() | _WORD,
    st.none() | _WORD,
    st.none() | st.sampled_from(["plain", "LOGIN"]),
    st.just("bare"),
)
_MARKS = st.builds(
    Marks,
    _WORD | st.sampled_from(["x (y [1.2.3.4]) as user bob", "mail pickup service"]),
    st.lists(_NOTE, max_size=4).map(tuple),
    st.sampled_from(["mail.gmx.net", "MAIL.GMX.COM", "mx.example", ""]),
    st.sampled_from(["", "(Postfix)", "(Postfix, from userid 33)", "(mp042)", "(8.1/submit)"])
    | _NOTE,
    st.lists(_NOTE, max_size=4).map(tuple),
    st.sampled_from(["ESMTP", "LMTP", "qmail-scanner 1", "esmtp auth x", "SMTP (AUTH)"]) | _WORD,
)
_PROTOCOL = st.none() | st.sampled_from(
    ["SMTP", "ESMTPSA", "LMTP", "LMTPA", "LOCAL", "HTTP", "IMAP", "UTF8SMTPA", "ASMTP"]
)


@settings(max_examples=1500, deadline=None)
@given(
    _PROTOCOL,
    st.sampled_from(["postfix", "exim", "exchange", "fetchmail", "fallback"]),
    st.booleans(),
    st.booleans(),
    st.none() | st.just("192.0.2.1"),
    st.none() | _PART,
    _MARKS,
)
def test_auth_and_local_readers_decide_as_before(
    protocol: str | None,
    family: str,
    has_from: bool,
    submitted: bool,
    ip: str | None,
    part: FromPart | None,
    marks: Marks,
) -> None:
    assert auth_reason(protocol, part, marks) == _reference_auth_reason(protocol, part, marks)
    assert local_reason(protocol, family, has_from, submitted, ip, part, marks) == (
        _reference_local_reason(protocol, family, has_from, submitted, ip, part, marks)
    )


def _reference_family(low: str) -> object:
    for marker, family in formats._MARKERS.items():  # the former loop: every marker, in order
        if marker in low:
            return family
    return None


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.sampled_from(list(formats._MARKERS)) | st.text(max_size=6), max_size=4),
    st.sampled_from(["mx.example", "mail.outlook.com", "x.google.com", "a.yahoo.com"]),
    st.sampled_from(["", "(Postfix)", "(8.17.1/8.17.1)", "(sendmail)"]),
    st.none() | st.sampled_from(["LMTP", "HTTP", "ESMTP"]),
)
def test_family_is_told_by_the_first_marker_as_before(
    pieces: list[str], by_host: str, by_comment: str, protocol: str | None
) -> None:
    low = " ".join(pieces).lower()
    expected = _reference_family(low)
    if expected is not None:
        assert formats.detect_family(low, by_host, by_comment, protocol) is expected


def test_every_marker_alone_is_found() -> None:
    for marker, family in formats._MARKERS.items():
        assert formats.detect_family(f"x {marker} y", "mx.example", "", None) is family, marker


def test_comments_that_tell_auth_or_the_sender_are_read_wherever_they_stand() -> None:
    client = "from h.example (h.example [192.0.2.9])"
    by = "by mx.example (Postfix) with ESMTP id X"
    for note in (
        "(envelope-from <s@x.example>)",
        "(ENVELOPE-sender s@x.example)",
        "(Authenticated sender: u@x.example)",
        "(authenticated bits=0)",
        "(AUTH: PLAIN u, TLS)",
        "(account u HELO h)",
        "(Horde authenticated user u)",
    ):
        for line in (
            f"{client} {note} {by}; Tue, 28 Nov 2026 10:00:01 +0000",
            f"{client} {by} {note}; Tue, 28 Nov 2026 10:00:01 +0000",
            f"{client} (x) {by} (y) {note} for <r@x.example>; Tue, 28 Nov 2026 10:00:01 +0000",
            f"from h.example by mx.example with LMTP id X {note}; Tue, 28 Nov 2026 10:00:01 +0000",
        ):
            hop = quick.read_quick(line)
            assert hop is None or hop == received._parse(line), line
        first = quick.read_quick(f"{client} {note} {by}; Tue, 28 Nov 2026 10:00:01 +0000")
        assert first is not None and (first.envelope_from == "s@x.example" or first.authenticated)


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(
        st.sampled_from(["(", " ", "authenticated", "auth: ", "account ", "envelope-", "user"])
        | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=4),
        max_size=8,
    ).map("".join),
    st.booleans(),
)
def test_the_quick_mark_words_cover_every_comment_the_mark_readers_read(
    text: str, upper: bool
) -> None:
    text = text.upper() if upper else text
    if MARK_HINT.search(text):
        assert quick.names_a_mark(text.lower()), text
