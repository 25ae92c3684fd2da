"""Received header parsing (classifier/envelope/received.py): public suites, each MTA, junk."""

from __future__ import annotations

import json
import random
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.envelope import clauses, quick, received
from classifier.envelope.received import ReceivedHop, parse_received, parse_received_field
from classifier.message import unfolded_value
from classifier.names import normalize_ip
from tests.conftest import VECTORS

SUITE = VECTORS / "received"
SA_FILE = "spamassassin-rcvd-parser.yaml"
STALWART_FILE = "stalwart-mail-parser-received.json"
SAMPLES_FILE = "received-samples.txt"


def _slug(text: str, words: int = 3) -> str:
    return re.sub(r"[^A-Za-z0-9.@-]+", "-", " ".join(text.split()[:words]))[:48].strip("-")


def _sa_cases() -> list[Any]:
    cases = yaml.safe_load((SUITE / SA_FILE).read_text(encoding="utf-8"))["cases"]
    return [pytest.param(c, id=f"sa{i:03d}-{_slug(c['received'])}") for i, c in enumerate(cases)]


def _stalwart_cases() -> list[dict[str, Any]]:
    return json.loads((SUITE / STALWART_FILE).read_text(encoding="utf-8"))


def _samples() -> list[tuple[str, str]]:
    """Gives (family label, header value) for each shape of received-samples.txt."""
    path = SUITE / SAMPLES_FILE
    out, family = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# source:"):
            family = line.rpartition("family:")[2].strip()
        elif line.startswith("Received:"):
            out.append((family, line[len("Received:") :].strip()))
    return out


SAMPLES = _samples()
STALWART = _stalwart_cases()


# --- SpamAssassin t/rcvd_parser.t ---------------------------------------------------------


def _sa_expected(fields: dict[str, str]) -> dict[str, object]:
    """SpamAssassin's relay fields in our form.

    Only spelling differs: SpamAssassin writes "" for absent and "!x!" for an address
    literal HELO "[x]"; an MTA that wrote a bare address where the reverse name belongs
    ("from 192.0.2.1 (EHLO ) (192.0.2.1)") is copied by SpamAssassin into rdns, while we
    report no reverse name.  ``auth`` is SpamAssassin's label of the AUTH kind; we compare
    whether there is one.  ``msa`` depends on SpamAssassin's configuration: not compared.
    """

    def value(key: str) -> str | None:
        return fields.get(key) or None

    helo = value("helo")
    if helo and len(helo) > 2 and helo[0] == helo[-1] == "!":
        helo = f"[{helo[1:-1]}]"
    rdns = value("rdns")
    if rdns is not None and rdns == fields.get("ip"):
        rdns = None
    return {
        "ip": value("ip"),
        "rdns": rdns,
        "helo": helo,
        "by": value("by"),
        "ident": value("ident"),
        "envfrom": value("envfrom"),
        "id": value("id"),
        "auth": bool(fields.get("auth")),
    }


@pytest.mark.parametrize("case", _sa_cases())
def test_spamassassin_case_reads_as_spamassassin_does(case: dict[str, Any]) -> None:
    hop = parse_received(case["received"])
    if case.get("ignored"):
        # SpamAssassin skips these hand-offs; the trust path may only take a hop with an
        # address that is not a local hand-over as the external client.
        assert hop.local or hop.ip is None, hop
        assert not hop.network_client
        return
    got = {
        "ip": hop.ip,
        "rdns": hop.rdns,
        "helo": hop.helo,
        "by": hop.by,
        "ident": hop.ident,
        "envfrom": hop.envelope_from,
        "id": hop.queue_id,
        "auth": hop.authenticated,
    }
    assert got == _sa_expected(case["fields"]), hop.evidence


# --- Stalwart mail-parser resources/received.json ------------------------------------------

# Every field on which we differ from Stalwart's expectation, and why.  The comparison
# test fails if one of these starts to match (stale entry) or if a field not listed here
# differs.
KNOWN_DIFFERENCES: dict[tuple[int, str], str] = {
    (6, "ident"): "Courier '(AUTH: CRAM-MD5 uXDGrn@SYT0/k …)' names the AUTH user; we report "
    "it as auth_user 'uXDGrn@SYT0/k', not as an ident (Stalwart also cuts it at '/')",
    (13, "date"): "asctime date 'Fri Feb 07 10:18:12 2003 -0800': Stalwart reads year 1910 "
    "and second 211; we read 2003-02-07 10:18:12 -08:00",
    (28, "id"): "ecelerity id 'EE/20-30863-33CE1054': Stalwart stops at '/', SpamAssassin "
    "keeps the whole id (its case 44), so do we",
    (29, "id"): "ecelerity id '8B/57-16227-3764EB44' kept whole (see 28)",
    (30, "id"): "ecelerity id '52/92-02454-89FBA054' kept whole (see 28)",
    (32, "with"): "Exim 'with local-bsmtp': we report BSMTP and local=True; Stalwart says SMTP",
    (33, "with"): "Exim 'with local-bsmtp' (see 32)",
    (39, "ident"): "Exim 'ident=[W9VcNxE2vKxgWHD05PJbLzIHSxcmZQ/O]': we keep the whole ident, "
    "Stalwart cuts it at '/'",
    (43, "helo"): "Exim 3 'from rdns (helo) [ip]': the word in parentheses is the HELO, as "
    "SpamAssassin reads it (its case 39); Stalwart takes the first word",
    (43, "rdns"): "Exim 3 'from rdns (helo) [ip]' (see 43 helo): Stalwart swaps name and HELO",
    (47, "helo"): "webmail 'from 217.137.58.28 ([217.137.58.28]) … with HTTP': HTTP has no "
    "HELO; SpamAssassin reports none for webmail hops (its cases 52, 124, 139-143)",
    (65, "ident"): "qmail-ldap '(jdavid@[216.254.40.70]) (envelope-sender <jdavid@…>)': the "
    "ident is 'jdavid'; Stalwart puts the envelope sender there",
    (67, "date"): "'14:22:21 PST' is -08:00 (RFC 5322 §4.3); Stalwart ignores the zone name",
    (68, "helo"): "webmail 'as user jason@localhost … with HTTP': no HELO over HTTP (see 47)",
    (68, "ident"): "'as user jason@localhost' is the webmail login: auth_user, not an ident",
    (89, "helo"): "TIS smap 'from rdns(ip)': the name is the reverse lookup, the HELO is only "
    "given by 'HELO x' or 'claiming to be' (SpamAssassin cases 109, 110)",
    (89, "date"): "two-digit year '26 Mar 03' is 2003 (RFC 5322 §4.3); Stalwart says 1903",
    (90, "date"): "two-digit year '27 Feb 04' is 2004 (RFC 5322 §4.3); Stalwart says 1904",
    (95, "with"): "'with BSMTP' kept as written; Stalwart reports SMTP",
    (110, "helo"): "TIS csmap 'from rdns(ip)': no HELO recorded (see 89)",
    (113, "helo"): "CommuniGate '[ip] (account seiz [ip] verified)' records no HELO; we do not "
    "invent one from the address (SpamAssassin case 62 agrees)",
    (116, "ident"): "'(?dXqpg3b0hiH9faI2OxLT94P/YKDD3rQ1?@64.253.199.166)': we keep the ident "
    "before the address whole; Stalwart keeps what follows the '/'",
    (117, "helo"): "FWTK smtpd 'rdns(ip) via SMTP': no HELO, as SpamAssassin case 109",
    (117, "date"): "asctime date 'Sun Nov 13 14:50:12 2005': Stalwart reads month 13",
    (118, "helo"): "FWTK smtpd 'claiming to be \"foo.woas.net\"' is the HELO, as SpamAssassin "
    "case 110; Stalwart takes the reverse name",
    (118, "date"): "asctime date 'Sun Nov 13 15:38:52 2005' (see 117)",
    (123, "by"): "'by alpha by uid 7791': the receiving host is 'alpha'; Stalwart takes 'uid'",
    (125, "helo"): "'from Unknown/Local ([?.?.?.?])': we keep the word as written",
    (128, "date"): "two-digit year 'Thu, 20 Mar 03' is 2003 (RFC 5322 §4.3)",
    (144, "helo"): "SendGrid 'from MjA3NDc4Mg (unknown) … with HTTP': an account tag over HTTP, "
    "not a HELO (see 47)",
    (144, "date"): "'07:53:55.516 +0000': the seconds are 55; Stalwart drops them",
    (149, "with"): "'with HTTPREST' kept as written; Stalwart reports HTTP",
    (151, "ident"): "'from [<addr>] ([<addr>] helo=maropost.com)': the bracketed address is no "
    "ident; Stalwart takes the envelope-from comment as one",
    (151, "date"): "'Fri Sep 14 14:36:56 EDT 2018' is 2018-09-14 -04:00; Stalwart reads month 14",
    (163, "date"): "'08:15:21 PDT' is -07:00 (RFC 5322 §4.3); Stalwart ignores the zone name",
    (165, "helo"): "'(qmail 84907 invoked from network)' names no HELO; Stalwart reads 'network'",
    (171, "helo"): "'(Postfix, from userid 1002)' is a local pickup, not a HELO 'userid'",
}


def _name(value: dict[str, str] | None) -> str | None:
    return None if value is None else value.get("Name") or value.get("IpAddr")


def _bare(text: str | None) -> str | None:
    return text.strip("[]") or None if text else None


def _stalwart_date(date: dict[str, Any] | None) -> tuple[int, ...] | None:
    if date is None:
        return None
    offset = (date["tz_hour"] * 60 + date["tz_minute"]) * (-1 if date["tz_before_gmt"] else 1)
    parts = ("year", "month", "day", "hour", "minute", "second")
    return (*(date[p] for p in parts), offset)


def _our_date(date: datetime | None) -> tuple[int, ...] | None:
    if date is None:
        return None
    offset = date.utcoffset() or timedelta(0)
    fields = (date.year, date.month, date.day, date.hour, date.minute, date.second)
    return (*fields, int(offset.total_seconds()) // 60)


def _stalwart_fields(expected: dict[str, Any], hop: ReceivedHop) -> list[tuple[str, Any, Any]]:
    """Gives (field, Stalwart's value, ours) for each field Stalwart states.

    Mapping: ``from`` is the word after "from" = our helo, unless ``helo`` states the HELO
    explicitly (``helo_cmd`` alone means an empty HELO argument).  When ``from`` is an
    address and no ``from_ip`` is given, that address is the client: compared with our ip.
    Form only: address literals lose their brackets, from_iprev its trailing dot,
    ``with`` is upper-cased, and an ident written "user@host" where host is our rdns or
    ip is compared as "user" (we report the host part separately).
    """
    out: list[tuple[str, Any, Any]] = []
    if "helo" in expected:
        out.append(("helo", _name(expected["helo"]), _bare(hop.helo)))
    elif "helo_cmd" in expected:
        out.append(("helo", None, hop.helo))
    elif "from" in expected:
        if "IpAddr" in expected["from"] and "from_ip" not in expected:
            out.append(("from→ip", normalize_ip(expected["from"]["IpAddr"]), hop.ip))
        else:
            out.append(("helo", _name(expected["from"]), _bare(hop.helo)))
    if "from_ip" in expected:
        out.append(("ip", normalize_ip(expected["from_ip"]), hop.ip))
    if "from_iprev" in expected:
        out.append(("rdns", expected["from_iprev"].rstrip("."), hop.rdns))
    if "by" in expected:
        out.append(("by", _name(expected["by"]), _bare(hop.by)))
    if "for_" in expected:
        out.append(("for", expected["for_"], hop.for_addr))
    if "with" in expected:
        out.append(("with", expected["with"].upper(), hop.protocol))
    if "id" in expected:
        out.append(("id", expected["id"], hop.queue_id))
    if "ident" in expected:
        ident = expected["ident"]
        user, _, host = ident.rpartition("@")
        if hop.ident and user == hop.ident and host in (hop.rdns, hop.ip):
            ident = user
        out.append(("ident", ident, hop.ident))
    if "date" in expected:
        out.append(("date", _stalwart_date(expected["date"]), _our_date(hop.date)))
    return out


@pytest.mark.parametrize(
    "index", [pytest.param(i, id=f"st{i:03d}-{_slug(c['header'])}") for i, c in enumerate(STALWART)]
)
def test_stalwart_header_fields_match_or_are_known_differences(index: int) -> None:
    case = STALWART[index]
    hop = parse_received(case["header"])
    for field, want, got in _stalwart_fields(case["expected"], hop):
        reason = KNOWN_DIFFERENCES.get((index, field))
        if reason is None:
            assert got == want, f"{field}: Stalwart {want!r}, we {got!r}"
        else:
            assert got != want, f"stale known difference ({index}, {field!r}): {reason}"


def test_stalwart_fields_match_for_at_least_95_percent() -> None:
    total, failing = 0, set()
    for index, case in enumerate(STALWART):
        for field, want, got in _stalwart_fields(case["expected"], parse_received(case["header"])):
            total += 1
            if got != want:
                failing.add((index, field))
    assert failing == set(KNOWN_DIFFERENCES)
    assert (total - len(failing)) / total >= 0.95, (total - len(failing), total)


def test_known_differences_name_fields_stalwart_states() -> None:
    for index, field in KNOWN_DIFFERENCES:
        hop = parse_received(STALWART[index]["header"])
        assert field in {f for f, _, _ in _stalwart_fields(STALWART[index]["expected"], hop)}


# --- the 420 sample shapes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "family, value",
    [pytest.param(f, v, id=f"sample{i:03d}-{_slug(f, 2)}") for i, (f, v) in enumerate(SAMPLES)],
)
def test_sample_shape_reads_into_a_hop(family: str, value: str) -> None:
    hop = parse_received(value)
    assert isinstance(hop, ReceivedHop)
    assert hop.raw == value
    assert (hop.fmt == "unparsed") is (not hop.parsed)
    assert hop.ip is None or normalize_ip(hop.ip) == hop.ip


def test_nearly_all_sample_shapes_are_parsed() -> None:
    parsed = sum(parse_received(value).parsed for _, value in SAMPLES)
    assert len(SAMPLES) == 420
    assert parsed / len(SAMPLES) >= 0.99  # measured: 417 of 420


def test_frame_shortcut_reads_the_same_as_the_clause_reader() -> None:
    """The one-regex reading of well-formed lines must agree with the general reader."""
    lines = [v for _, v in SAMPLES] + [c["header"] for c in STALWART]
    compared = 0
    for line in lines:
        work = " ".join(received._unfold(line).split())
        frame = clauses.read_frame(work)
        if frame is None:
            continue
        compared += 1
        low = work.lower()
        fast = received._build(line, work, low, frame, False)
        slow = received._build(line, work, low, clauses.read_clauses(work), False)
        # The two readers may cut the text after ";" differently; the date it gives must agree.
        same = fast._replace(date_text=None), fast.date
        assert same == (slow._replace(date_text=None), slow.date), line
    assert compared > 250


def _suite_lines() -> list[str]:
    lines = [v for _, v in SAMPLES] + [c["header"] for c in STALWART]
    cases = yaml.safe_load((SUITE / SA_FILE).read_text(encoding="utf-8"))["cases"]
    lines += [c["received"] for c in cases]
    return lines


def test_quick_path_reads_every_suite_line_as_the_general_reader_does() -> None:
    """The one-match reading of the commonest shapes must give the general reader's hop."""
    taken = 0
    for line in _suite_lines() + CHAIN:
        raw = received._unfold(line)
        hop = quick.read_quick(raw)
        if hop is None:
            continue
        taken += 1
        general = received._parse(raw)
        assert (hop, hop.date_text, hop.to_dict()) == (
            general,
            general.date_text,
            general.to_dict(),
        ), line
    assert taken > 80  # measured: 97


def test_raw_field_reads_as_its_unfolded_value_does() -> None:
    for line in _suite_lines() + CHAIN:
        folded = line.replace(" by ", "\r\n\tby ", 1)
        spaced = line.replace(" ", "  ", 1)
        for field in (
            f"Received: {line}\r\n",
            f"Received:\t {line} \n",
            f"Received: {folded}\r\n",
            f"Received: {spaced}\r\n",
            f"Received: {line}",  # the last field of a message without a body
            # folded, with white space unfolding must turn into single spaces
            f"Received: {folded.replace(' ', chr(0xA0) + ' ', 1)}\r\n",
            f"Received: {folded.replace(' ', chr(9) + chr(11), 1)}\n",
            f"Received:\r\n {line}\r\n",
        ):
            raw = field.encode("utf-8", "surrogateescape")
            expected = parse_received(unfolded_value(raw))
            assert parse_received_field(raw).to_dict() == expected.to_dict(), field


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=0),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=400),
            st.sampled_from(["\r\n ", "\n\t", "\r\n\t ", " \x0b", "\xa0", "\u2028", "  "]),
        ),
        max_size=4,
    ),
)
def test_folded_raw_field_reads_as_its_unfolded_value_does(
    pick: int, cuts: list[tuple[int, str]]
) -> None:
    line = CHAIN[pick % len(CHAIN)]  # Postfix, amavis and Dovecot lines: the quick path's
    for at, text in sorted(cuts, reverse=True):
        line = line[:at] + text + line[at:]
    raw = f"Received: {line}\r\n".encode("utf-8", "surrogateescape")
    expected = parse_received(unfolded_value(raw))
    assert parse_received_field(raw).to_dict() == expected.to_dict()


def test_raw_field_that_is_not_bytes_gives_an_unparsed_hop() -> None:
    hop = parse_received_field("Received: from a by b; x")  # type: ignore[arg-type]
    assert not hop.parsed and hop.fmt == "unparsed"


@pytest.mark.parametrize("index", [0, 1, 2, 3, 5, 7])
def test_quick_path_takes_postfix_amavis_and_dovecot_lines(index: int) -> None:
    assert quick.read_quick(CHAIN[index]) is not None


@pytest.mark.parametrize(
    "line",
    [
        # each a near miss of a quick shape, read by the general reader
        "(from localhost) by host.example with ESMTP id X; Tue, 28 Nov 2026 10:00:00 +0000",
        "from a by b (Postfix) with LMTP id X (envelope-from <s@x>); Tue, 28 Nov 2026 10:00:00",
        "from a (helo [192.0.2.1]) by b (Postfix) with ESMTP id X; Tue, 28 Nov 2026 10:00:00",
        "from a (b [192.0.2.1]) by c (Postfix) with ESMTPSA id X; Tue, 28 Nov 2026 10:00:00",
        "from a (b [999.0.2.1]) by c (Postfix) with ESMTP id X; Tue, 28 Nov 2026 10:00:00",
        "from a (b  [192.0.2.1]) by c (Postfix) with ESMTP id X; Tue, 28 Nov 2026 10:00:00",
        "from a (b [192.0.2.1]) (x qmail-scanner y) by c (Postfix) with ESMTP; 28 Nov 2026",
        "from a (b [192.0.2.1]) by c (Postfix) with ESMTP; Tue, 28 Nov 2026 id 1 for <x>",
        "from 192.0.2.1 by c (Exim 4.9) with esmtp id X; Tue, 28 Nov 2026 10:00:00 +0000",
        "from a by b with LMTP id X (envelope-from <s@x>) for <r@x>; Tue, 28 Nov 2026 é",
    ],
)
def test_near_misses_of_the_quick_shapes_read_as_the_general_reader_does(line: str) -> None:
    assert parse_received(line).to_dict() == received._parse(received._unfold(line)).to_dict()


# --- never raises, bounded time -------------------------------------------------------------


def _mutate(line: str, edits: list[tuple[str, int, str]]) -> str:
    for kind, at, char in edits:
        at = at % (len(line) + 1)
        if kind == "insert":
            line = line[:at] + char + line[at:]
        elif kind == "delete":
            line = line[:at] + line[at + 1 :]
        elif kind == "replace":
            line = line[:at] + char + line[at + 1 :]
        else:
            line = line[:at]
    return line


def _check_hop(hop: ReceivedHop) -> None:
    assert isinstance(hop, ReceivedHop)
    assert isinstance(hop.parsed, bool) and isinstance(hop.local, bool)
    assert (hop.fmt == "unparsed") is (not hop.parsed)
    assert hop.date is None or hop.date.tzinfo is not None
    assert hop.ip is None or normalize_ip(hop.ip) == hop.ip
    json.dumps(hop.to_dict(), default=str)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_random_text_reads_without_raising(text: str) -> None:
    _check_hop(parse_received(text))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=0),
    st.lists(
        st.tuples(
            st.sampled_from(["insert", "delete", "replace", "truncate"]),
            st.integers(min_value=0, max_value=2000),
            st.sampled_from(list("()[]<>;:@ \t\r\n\x00\x01=\"'.,")) | st.characters(),
        ),
        max_size=8,
    ),
)
def test_mutated_sample_lines_read_without_raising(
    pick: int, edits: list[tuple[str, int, str]]
) -> None:
    lines = [v for _, v in SAMPLES] or ["from a (b [192.0.2.1]) by c with ESMTP id d; x"]
    _check_hop(parse_received(_mutate(lines[pick % len(lines)], edits)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_binary_junk_read_with_surrogateescape_never_raises(junk: bytes) -> None:
    _check_hop(parse_received(junk.decode("utf-8", "surrogateescape")))


def _worst_ms(value: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        _check_hop(parse_received(value))
        best = min(best, (time.perf_counter() - start) * 1000)
    return best


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("from " + "a" * 100_000, id="long-word"),
        pytest.param("(" * 100_000, id="open-parens"),
        pytest.param("(a" * 50_000, id="unclosed-comments"),
        pytest.param("from x (" + "(a" * 50_000 + ")" * 5_000, id="deep-comments"),
        pytest.param("from " + "x (y [192.0.2.1]) " * 5_000 + "by z;", id="repeated-from"),
        pytest.param("from a by b with " + "(c " * 33_000, id="comment-storm"),
        pytest.param(" by" * 33_000, id="keyword-storm"),
        pytest.param("from x (" + "[192.0.2.1] " * 8_000 + ")", id="bracket-storm"),
    ],
)
def test_100_kb_line_reads_in_bounded_time(value: str) -> None:
    assert _worst_ms(value) < 50


def test_100_kb_of_binary_garbage_reads_in_bounded_time() -> None:
    rng = random.Random(7)
    junk = bytes(rng.randrange(256) for _ in range(100_000)).decode("utf-8", "surrogateescape")
    assert _worst_ms(junk) < 50
    assert _worst_ms("from " + junk) < 50


def test_non_text_input_gives_an_unparsed_hop() -> None:
    hop = parse_received(None)  # type: ignore[arg-type]
    assert not hop.parsed and hop.fmt == "unparsed"


CHAIN = [
    "from mx.example.org by mx.example.org with LMTP id kHsGBbTrYWUoBQAA"
    " (envelope-from <news@shop.example>) for <alice@example.org>;"
    " Tue, 28 Nov 2026 10:00:03 +0000",
    "from localhost (localhost [127.0.0.1]) by mx.example.org (Postfix) with ESMTP"
    " id 4Sg2Vb0Q1Zz9sW1 for <alice@example.org>; Tue, 28 Nov 2026 10:00:02 +0000",
    "from mx.example.org ([127.0.0.1]) by localhost (mx.example.org [127.0.0.1])"
    " (amavisd-new, port 10024) with ESMTP id abc123 for <alice@example.org>;"
    " Tue, 28 Nov 2026 10:00:02 +0000",
    "from out3.mail.shop.example (out3.mail.shop.example [192.0.2.33]) (using TLSv1.3"
    " with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) (No client certificate requested) by"
    " mx.example.org (Postfix) with ESMTPS id 4Sg2Va3 for <alice@example.org>;"
    " Tue, 28 Nov 2026 10:00:01 +0000",
    "from app7.internal.shop.example ([10.1.2.7]) by out3.mail.shop.example with"
    " esmtp (Exim 4.96) (envelope-from <news@shop.example>) id 1r7xYz-000abc-2Q for"
    " alice@example.org; Tue, 28 Nov 2026 10:00:00 +0000",
    "from web1 (web1 [10.1.3.1]) by app7.internal.shop.example (8.17.1/8.17.1) with"
    " ESMTP id 3ASA00aa012345 for <alice@example.org>; Tue, 28 Nov 2026 09:59:59 +0000",
    "(qmail 10681 invoked by uid 404); 28 Nov 2026 09:59:58 -0000",
    "from localhost (localhost [127.0.0.1]) by web1 (OpenSMTPD) with ESMTP id"
    " 1a2b3c4d; Tue, 28 Nov 2026 09:59:58 +0000",
]


def test_eight_hop_chain_reads_in_well_under_a_millisecond() -> None:
    # A regression guard, not the benchmark: the measured cost is far lower.
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        hops = [parse_received(v) for v in CHAIN]
        best = min(best, time.perf_counter() - start)
    assert all(h.parsed for h in hops)
    assert best < 0.001


# --- normalize_ip ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("192.0.2.1", "192.0.2.1"),
        ("[192.0.2.1]", "192.0.2.1"),
        (" [ 198.51.100.7 ] ", "198.51.100.7"),
        ("IPv6:2001:db8::1", "2001:db8::1"),
        ("[IPv6:2001:DB8:0:0:0:0:0:1]", "2001:db8::1"),
        ("ipv6:2001:db8::25", "2001:db8::25"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::ccea:aa3a:fbcf:883f%6]", "fe80::ccea:aa3a:fbcf:883f"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("[::ffff:192.0.2.141]", "192.0.2.141"),
        ("[IPv6:::1]", "::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0025", "2001:db8::25"),
    ],
)
def test_normalize_ip_gives_the_canonical_address(text: str, expected: str) -> None:
    assert normalize_ip(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "unknown", "[local]", "192.0.2", "192.0.2.256", "2001:db8::g", "?.?.?.?", "[]", "a" * 200],
)
def test_normalize_ip_gives_none_for_no_address(text: str) -> None:
    assert normalize_ip(text) is None


# --- one clear line per family --------------------------------------------------------------

DATE = "; Tue, 28 Nov 2026 10:00:01 +0000"


def hop_of(value: str) -> ReceivedHop:
    hop = parse_received(value)
    assert hop.parsed, hop
    return hop


def fields_of(hop: ReceivedHop, *names: str) -> dict[str, object]:
    return {n: getattr(hop, n) for n in names}


def test_postfix_relay_names_helo_rdns_and_address() -> None:
    hop = hop_of(
        "from mail.example.net (mail.example.net [192.0.2.10]) (using TLSv1.3 with cipher"
        " TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS"
        " (2048 bits) server-digest SHA256) (No client certificate requested) by"
        " mx.example.org (Postfix) with ESMTPS id 4Sg2Va3Xyz for <alice@example.org>" + DATE
    )
    assert fields_of(hop, "helo", "rdns", "ip", "by", "protocol", "queue_id", "for_addr") == {
        "helo": "mail.example.net",
        "rdns": "mail.example.net",
        "ip": "192.0.2.10",
        "by": "mx.example.org",
        "protocol": "ESMTPS",
        "queue_id": "4Sg2Va3Xyz",
        "for_addr": "alice@example.org",
    }
    assert (hop.fmt, hop.local, hop.authenticated, hop.network_client) == (
        "postfix",
        False,
        False,
        True,
    )
    assert hop.date == datetime(2026, 11, 28, 10, 0, 1, tzinfo=UTC)


def test_postfix_unknown_reverse_name_and_ipv6_literal() -> None:
    hop = hop_of(
        "from relay.example.net (unknown [IPv6:2001:DB8::25]) by mx.example.org (Postfix)"
        " with ESMTP id 4Sg2Vb1" + DATE
    )
    assert (hop.helo, hop.rdns, hop.ip) == ("relay.example.net", None, "2001:db8::25")


def test_postfix_authenticated_submission_names_the_user() -> None:
    hop = hop_of(
        "from [192.168.1.20] (unknown [198.51.100.23]) (Authenticated sender: alice)"
        " by smtp.example.org (Postfix) with ESMTPSA id 4Sg2Vc1 for <bob@example.net>" + DATE
    )
    assert (hop.helo, hop.ip, hop.authenticated, hop.auth_user) == (
        "[192.168.1.20]",
        "198.51.100.23",
        True,
        "alice",
    )
    assert any(e.startswith("authenticated:") for e in hop.evidence)


def test_postfix_pickup_is_a_local_hand_over() -> None:
    hop = hop_of("by mx.example.org (Postfix, from userid 1000) id 4Sg2Vd2" + DATE)
    assert (hop.fmt, hop.local, hop.ip, hop.by, hop.queue_id) == (
        "postfix",
        True,
        None,
        "mx.example.org",
        "4Sg2Vd2",
    )


def test_exim_authenticated_submission_with_envelope_from() -> None:
    hop = hop_of(
        "from [203.0.113.45] (helo=laptop.example.net) by smtp.example.org with esmtpsa"
        " (TLS1.3) tls TLS_AES_256_GCM_SHA384 (Exim 4.96) (envelope-from <carol@example.org>)"
        " id 1r7xYz-000abc-2Q for dave@example.net" + DATE
    )
    assert fields_of(hop, "fmt", "ip", "helo", "rdns", "protocol", "envelope_from") == {
        "fmt": "exim",
        "ip": "203.0.113.45",
        "helo": "laptop.example.net",
        "rdns": None,
        "protocol": "ESMTPSA",
        "envelope_from": "carol@example.org",
    }
    assert (hop.authenticated, hop.queue_id, hop.for_addr) == (
        True,
        "1r7xYz-000abc-2Q",
        "dave@example.net",
    )


def test_exim_relay_first_word_is_the_verified_reverse_name() -> None:
    hop = hop_of(
        "from mail.example.net ([192.0.2.10]:43210 helo=relay.example.net) by mx.example.org"
        " with esmtps (TLS1.3) tls TLS_AES_256_GCM_SHA384 (Exim 4.96)"
        " (envelope-from <news@example.net>) id 1r7xZa-000abd-3R for alice@example.org" + DATE
    )
    assert (hop.rdns, hop.helo, hop.ip, hop.authenticated) == (
        "mail.example.net",
        "relay.example.net",
        "192.0.2.10",
        False,
    )


def test_exim_local_submission_has_no_network_client() -> None:
    hop = hop_of(
        "from alice by mx.example.org with local (Exim 4.96) (envelope-from <alice@example.org>)"
        " id 1r7xZb-000abe-4S for bob@example.net" + DATE
    )
    assert (hop.local, hop.protocol, hop.ip, hop.network_client) == (True, "LOCAL", None, False)


def test_sendmail_relay_and_may_be_forged_name() -> None:
    hop = hop_of(
        "from client.example.net (ident@host.example.net [198.51.100.9] (may be forged)) by"
        " mail.example.org (8.17.1/8.17.1) with ESMTPS id 3ASA00aa012345 (version=TLSv1.3"
        " cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT) for <alice@example.org>" + DATE
    )
    assert fields_of(hop, "fmt", "helo", "rdns", "ip", "ident", "queue_id") == {
        "fmt": "sendmail",
        "helo": "client.example.net",
        "rdns": "host.example.net",
        "ip": "198.51.100.9",
        "ident": "ident",
        "queue_id": "3ASA00aa012345",
    }


def test_sendmail_local_submission_is_local() -> None:
    hop = hop_of(
        "(from alice@localhost) by mail.example.org (8.17.1/8.17.1/Submit) id 3ASA0" + DATE
    )
    assert (hop.fmt, hop.local, hop.ip) == ("sendmail", True, None)


def test_qmail_helo_and_address_comments() -> None:
    hop = hop_of(
        "from unknown (HELO laptop) (user@203.0.113.7) by mail.example.org with ESMTPA;"
        " 28 Nov 2026 10:00:00 -0000"
    )
    assert fields_of(hop, "fmt", "rdns", "helo", "ip", "ident", "authenticated") == {
        "fmt": "qmail",
        "rdns": None,
        "helo": "laptop",
        "ip": "203.0.113.7",
        "ident": "user",
        "authenticated": True,
    }


def test_qmail_queue_line_is_parsed_and_local() -> None:
    hop = hop_of("(qmail 10681 invoked by uid 404); 28 Nov 2026 09:59:58 -0000")
    assert (hop.fmt, hop.local, hop.ip) == ("qmail", True, None)
    assert hop.date == datetime(2026, 11, 28, 9, 59, 58, tzinfo=UTC)


def test_opensmtpd_relay_and_local_socket() -> None:
    relay = hop_of(
        "from client.example.net (client.example.net [192.0.2.44]) by mx.example.org"
        " (OpenSMTPD) with ESMTPS id 1a2b3c4d (TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO)"
        " for <alice@example.org>" + DATE
    )
    assert (relay.fmt, relay.ip, relay.rdns, relay.local) == (
        "opensmtpd",
        "192.0.2.44",
        "client.example.net",
        False,
    )
    local = hop_of(
        "from localhost (mx.example.org [local]) by mx.example.org (OpenSMTPD) with ESMTPA"
        " id 5db34e0d for <bob@example.net>" + DATE
    )
    assert (local.local, local.ip, local.authenticated) == (True, None, True)


def test_courier_mapped_address_and_auth_comment() -> None:
    hop = hop_of(
        "from laptop.example.net (laptop.example.net [::ffff:192.0.2.77]) (AUTH: LOGIN"
        " alice@example.org, TLS: TLSv1.3,256bits,TLS_AES_256_GCM_SHA384) by mail.example.org"
        " with ESMTPSA" + DATE
    )
    assert (hop.fmt, hop.ip, hop.authenticated, hop.auth_user) == (
        "courier",
        "192.0.2.77",
        True,
        "alice@example.org",
    )


def test_exchange_smtpsvc() -> None:
    hop = hop_of(
        "from WORKSTATION ([192.0.2.50] RDNS failed) by exch.example.org with Microsoft"
        " SMTPSVC(6.0.3790.4675)" + DATE
    )
    assert fields_of(hop, "fmt", "helo", "rdns", "ip", "protocol") == {
        "fmt": "exchange",
        "helo": "WORKSTATION",
        "rdns": None,
        "ip": "192.0.2.50",
        "protocol": "SMTP",
    }


def test_office_365_hop_inside_exchange_online() -> None:
    hop = hop_of(
        "from mx.example.net (198.51.100.20) by AM0EUR02FT012.mail.protection.outlook.com"
        " (198.51.100.99) with Microsoft SMTP Server (version=TLS1_2,"
        " cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.7452.22 via Frontend Transport"
        + DATE
    )
    assert fields_of(hop, "fmt", "helo", "ip", "by", "protocol", "queue_id") == {
        "fmt": "exchange",
        "helo": "mx.example.net",
        "ip": "198.51.100.20",
        "by": "AM0EUR02FT012.mail.protection.outlook.com",
        "protocol": "SMTP",
        "queue_id": "15.20.7452.22",
    }
    mapi = hop_of(
        "from DB6PR07MB3286.eurprd07.prod.outlook.com ([2001:db8::ccea%6]) by"
        " DB6PR07MB3286.eurprd07.prod.outlook.com ([2001:db8::ccea%6]) with mapi id"
        " 15.20.1164.0" + DATE
    )
    assert (mapi.ip, mapi.protocol) == ("2001:db8::ccea", "MAPI")


def test_gmail_relay_and_internal_hop() -> None:
    relay = hop_of(
        "from mail-sor-f41.google.com (mail-sor-f41.google.com. [192.0.2.41]) by mx.google.com"
        " with SMTPS id a640c23a62f3a-a6f0a1b2c3dsor123456766b.12.2026.11.28.02.00.01"
        " for <alice@gmail.com> (Google Transport Security)" + DATE
    )
    assert fields_of(relay, "fmt", "helo", "rdns", "ip", "protocol", "for_addr") == {
        "fmt": "gmail",
        "helo": "mail-sor-f41.google.com",
        "rdns": "mail-sor-f41.google.com",
        "ip": "192.0.2.41",
        "protocol": "SMTPS",
        "for_addr": "alice@gmail.com",
    }
    internal = hop_of(
        "by 2002:a05:6a10:8a4f:b0:4c5:1234:5678 with SMTP id ab12csp1234567pxb" + DATE
    )
    assert (internal.fmt, internal.local, internal.ip) == ("gmail", True, None)
    submission = hop_of(
        "from laptop ([2001:db8:1::7]) by smtp.gmail.com with ESMTPSA id n23sm15339981pgv.76"
        " for <bob@example.net> (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256)" + DATE
    )
    assert (submission.ip, submission.authenticated) == ("2001:db8:1::7", True)


def test_dovecot_lmtp_delivery_is_local_with_envelope_sender() -> None:
    hop = hop_of(
        "from mx.example.org by mx.example.org with LMTP id kHsGBbTrYWUoBQAA"
        " (envelope-from <news@example.net>) for <alice@example.org>" + DATE
    )
    assert fields_of(hop, "fmt", "local", "protocol", "envelope_from", "for_addr") == {
        "fmt": "dovecot-lmtp",
        "local": True,
        "protocol": "LMTP",
        "envelope_from": "news@example.net",
        "for_addr": "alice@example.org",
    }
    with_ip = hop_of(
        "from mx.example.org ([192.0.2.25]) by imap.example.org with LMTP id 8JF2CbTrYWUoBQAA"
        " (envelope-from <>) for <alice@example.org>" + DATE
    )
    assert (with_ip.ip, with_ip.local, with_ip.envelope_from) == ("192.0.2.25", True, "")


def test_amavis_scan_and_reinjection_on_loopback() -> None:
    scan = hop_of(
        "from localhost (localhost [127.0.0.1]) by mx.example.org (mx.example.org [127.0.0.1])"
        " (amavisd-new, port 10024) with ESMTP id abc123 for <alice@example.org>" + DATE
    )
    assert (scan.fmt, scan.ip, scan.local, scan.queue_id) == (
        "amavis",
        "127.0.0.1",
        False,
        "abc123",
    )
    back = hop_of(
        "from localhost (localhost [127.0.0.1]) by mx.example.org (Postfix) with ESMTP id 4Sg2"
        + DATE
    )
    assert (back.fmt, back.ip, back.rdns, back.helo) == (
        "postfix",
        "127.0.0.1",
        "localhost",
        "localhost",
    )


def test_communigate_account_is_authenticated() -> None:
    hop = hop_of(
        "from [203.0.113.8] (account alice@example.org HELO laptop.example.org) by"
        " mail.example.org (CommuniGate Pro SMTP 6.3.9) with ESMTPSA id 9830625"
        " for bob@example.net" + DATE
    )
    assert fields_of(hop, "fmt", "ip", "helo", "authenticated", "auth_user") == {
        "fmt": "communigate",
        "ip": "203.0.113.8",
        "helo": "laptop.example.org",
        "authenticated": True,
        "auth_user": "alice@example.org",
    }


def test_webmail_over_http_is_authenticated_and_has_no_helo() -> None:
    hop = hop_of(
        "from 198.51.100.70 (SquirrelMail authenticated user alice) by webmail.example.org"
        " with HTTP" + DATE
    )
    assert fields_of(hop, "fmt", "ip", "helo", "authenticated", "auth_user", "local") == {
        "fmt": "webmail",
        "ip": "198.51.100.70",
        "helo": None,
        "authenticated": True,
        "auth_user": "alice",
        "local": False,
    }


def test_fetchmail_reinjection_is_local() -> None:
    hop = hop_of(
        "from pop.example.net [192.0.2.110] by localhost with POP3 (fetchmail-6.4.37)"
        " for <alice@localhost> (single-drop)" + DATE
    )
    assert (hop.fmt, hop.local, hop.ip, hop.network_client) == (
        "fetchmail",
        True,
        "192.0.2.110",
        False,
    )


def test_yahoo_style_auth_plain_comment() -> None:
    hop = hop_of(
        "from client.example.net (HELO laptop) (alice@203.0.113.60 with plain) by"
        " smtp.mail.yahoo.com with SMTP; 28 Nov 2026 10:00:00 -0000"
    )
    assert (hop.ip, hop.helo, hop.authenticated, hop.auth_user) == (
        "203.0.113.60",
        "laptop",
        True,
        "alice",
    )


@pytest.mark.parametrize(
    "helo",
    [
        "[local]",
        "x with LMTP by trusted.example",
        "a from userid 0",
        "y [unix: z",
        "mail pickup service",
        "qmail-scanner",
        "b envelope-from x",
        "x by relay.example with ESMTPSA id 1",
        "SquirrelMail authenticated user bob",
        "x [127.0.0.1] by mx.example.org with LMTP",
    ],
)
@pytest.mark.parametrize("mail_name", ["Postfix", "Mailserver"])  # Postfix's mail_name setting
def test_postfix_helo_cannot_forge_what_our_server_wrote(helo: str, mail_name: str) -> None:
    # Postfix keeps spaces and brackets in the HELO (it neuters only <>()\";:@), so a
    # client can send words that look like clauses or markers of a local hand-over.
    hop = hop_of(
        f"from {helo} (unknown [203.0.113.9]) by mx.example.org ({mail_name}) with ESMTP id 4Sg2"
        + DATE
    )
    assert fields_of(hop, "helo", "ip", "by", "protocol", "queue_id") == {
        "helo": helo,
        "ip": "203.0.113.9",
        "by": "mx.example.org",
        "protocol": "ESMTP",
        "queue_id": "4Sg2",
    }
    assert (hop.local, hop.authenticated, hop.envelope_from) == (False, False, None)
    assert hop.network_client


# --- frame details ----------------------------------------------------------------------------


def test_folded_header_is_unfolded_and_prefix_dropped() -> None:
    hop = parse_received(
        "Received: from mail.example.net (mail.example.net [192.0.2.10])\r\n\tby mx.example.org"
        " (Postfix) with ESMTP id 4Sg2\r\n\tfor <alice@example.org>;\r\n Tue, 28 Nov 2026"
        " 10:00:01 +0000\r\n"
    )
    assert "\r" not in hop.raw and "\n" not in hop.raw
    assert (hop.ip, hop.by, hop.for_addr) == ("192.0.2.10", "mx.example.org", "alice@example.org")
    assert hop.date == datetime(2026, 11, 28, 10, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "tail, expected",
    [
        ("Tue, 28 Nov 2026 10:00:01 -0500 (EST)", (2026, 11, 28, 10, 0, 1, -300)),
        ("28 Nov 26 10:00:01 GMT", (2026, 11, 28, 10, 0, 1, 0)),
        ("Thu, 20 Mar 97 10:06:43 PDT", (1997, 3, 20, 10, 6, 43, -420)),
        ("Fri Feb 07 10:18:12 2003 -0800", (2003, 2, 7, 10, 18, 12, -480)),
        ("Wed, 19 Jun 2002 20:50:49", (2002, 6, 19, 20, 50, 49, 0)),
        ("not a date", None),
        ("31 Feb 2026 10:00:01 +0000", None),
    ],
)
def test_date_after_the_semicolon_is_timezone_aware(
    tail: str, expected: tuple[int, ...] | None
) -> None:
    hop = parse_received(f"from a.example.net ([192.0.2.1]) by b.example.org with SMTP; {tail}")
    assert _our_date(hop.date) == expected


def test_to_dict_is_json_ready() -> None:
    hop = parse_received(CHAIN[3])
    data = json.loads(json.dumps(hop.to_dict()))
    assert data["ip"] == "192.0.2.33"
    assert data["date"] == "2026-11-28T10:00:01+00:00"
    assert "date_text" in data and isinstance(data["evidence"], list)


def test_unreadable_header_says_so_and_keeps_the_date() -> None:
    hop = parse_received(
        "with ECARTIS (v1.0.0; list bind-announce); Fri, 18 Aug 2006 07:19:58 +0000"
    )
    assert (hop.parsed, hop.fmt) == (False, "unparsed")
    assert hop.evidence and hop.evidence[0].startswith("unparsed")
    assert hop.date == datetime(2006, 8, 18, 7, 19, 58, tzinfo=UTC)
