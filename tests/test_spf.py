"""Tests of classifier/auth/spf.py: the OpenSPF RFC 7208 suite and the behaviour around pyspf.

Every DNS answer comes from a real DNS server on loopback (tests.dnsserver),
reached through classifier.lookup.resolver, as in production.
"""

from __future__ import annotations

import email
import itertools
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
import spf as pyspf
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.auth.spf import (
    SpfResult,
    _domain_problem,
    check_helo_spf,
    check_spf,
    default_explanation,
    received_spf_header,
)
from classifier.lookup.resolver import DnsSession, Resolver
from classifier.lookup.sources import ServerSource
from classifier.names import normalize_ip
from tests.conftest import ROOT, resolver_for, vector_path
from tests.dnsserver import DnsTestServer, free_udp_port

SUITE_FILE = ("spf-openspf", "rfc7208-tests.yml")
SUITE_CASES = 203

# ---------------------------------------------------------------------------
# The OpenSPF suite: zonedata → zone text served by a loopback server
# ---------------------------------------------------------------------------

QUERY_TYPES = ("A", "AAAA", "MX", "PTR", "TXT", "SPF", "CNAME")


class SuiteDnsServer(DnsTestServer):
    """A DnsTestServer that answers SERVFAIL for chosen (name, type) pairs.

    The suite's ``TIMEOUT`` fails only the types a name has no records of
    (``spftimeout.example.net`` answers TXT but times out for the rest), while
    DnsTestServer's ``servfail`` fails a whole name.
    """

    def __init__(self, zone_text: str, servfail_types: frozenset[tuple[str, str]]) -> None:
        self.servfail_types = {
            (dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
            for name, rdtype in servfail_types
        }
        super().__init__(zone_text)

    def answer(self, wire: bytes, udp: bool) -> bytes:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return super().answer(wire, udp)
        if query.question:
            question = query.question[0]
            if (question.name, question.rdtype) in self.servfail_types:
                response = dns.message.make_response(query)
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire()
        return super().answer(wire, udp)


def _zone_name(name: str) -> str:
    """Gives a suite owner or target name in zone-file syntax, odd characters as \\DDD."""
    if not name:
        return "."
    labels = []
    for label in name.rstrip(".").split("."):
        labels.append(
            "".join(
                ch if re.fullmatch(r"[A-Za-z0-9_-]", ch) else f"\\{ord(ch):03d}" for ch in label
            )
        )
    return ".".join(labels) + "."


def _octets(text: str) -> bytes:
    """Gives the octets a suite string stands for: "\\x80" in the YAML means the octet 0x80."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _txt_rdata(value: str | list[str]) -> str:
    """Gives TXT rdata in zone syntax: each string quoted, split at 255 octets (RFC 1035 §3.3)."""
    strings = [value] if isinstance(value, str) else list(value)
    if not strings:
        # A TXT record without strings is illegal (RFC 1035 §3.3.14) and dnspython
        # cannot carry it; the nearest record that exists holds one empty string.
        strings = [""]
    out = []
    for text in strings:
        raw = _octets(text)
        chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
        for chunk in chunks:
            body = "".join(
                chr(b) if 0x20 <= b <= 0x7E and chr(b) not in '"\\' else f"\\{b:03d}" for b in chunk
            )
            out.append(f'"{body}"')
    return " ".join(out)


def zone_from_zonedata(zonedata: dict[str, list[Any]]) -> tuple[str, frozenset[tuple[str, str]]]:
    """Gives (zone text, (name, type) pairs that time out) for one suite scenario.

    SPF records are served as type SPF and, unless the name lists TXT (even
    ``TXT: NONE``), also as TXT, as the suite's header asks of drivers.
    """
    lines: list[str] = []
    timeouts: set[tuple[str, str]] = set()
    for name, entries in zonedata.items():
        owner = _zone_name(name)
        records: list[tuple[str, Any]] = []
        has_txt = False
        timeout = False
        for entry in entries:
            if entry == "TIMEOUT":
                timeout = True
                continue
            ((rdtype, value),) = entry.items()
            has_txt = has_txt or rdtype == "TXT"
            if value != "NONE":
                records.append((rdtype, value))
        if not has_txt:
            records += [("TXT", value) for rdtype, value in records if rdtype == "SPF"]
        for rdtype, value in records:
            if rdtype in ("TXT", "SPF"):
                rdata = _txt_rdata(value)
            elif rdtype == "MX":
                rdata = f"{int(value[0])} {_zone_name(str(value[1]))}"
            elif rdtype in ("PTR", "CNAME"):
                rdata = _zone_name(str(value))
            else:
                rdata = str(value)
            lines.append(f"{owner} 300 IN {rdtype} {rdata}")
        if timeout:
            answered = {rdtype for rdtype, _ in records}
            timeouts |= {(owner, t) for t in QUERY_TYPES if t not in answered}
    return "\n".join(lines) + "\n", frozenset(timeouts)


def _load_scenarios() -> list[dict[str, Any]]:
    with vector_path(*SUITE_FILE).open("rb") as f:
        return list(yaml.safe_load_all(f))


SCENARIOS = _load_scenarios()

# Cases where pyspf (not this module) disagrees with the suite: id → reason.
PYSPF_WRONG: dict[str, str] = {}


def _suite_params() -> list[Any]:
    params = []
    for index, scenario in enumerate(SCENARIOS):
        for case_id, case in scenario["tests"].items():
            marks = []
            if case_id in PYSPF_WRONG:
                marks.append(pytest.mark.xfail(strict=True, reason=PYSPF_WRONG[case_id]))
            params.append(pytest.param(index, case, id=case_id, marks=marks))
    return params


def _stop_all(servers: list[DnsTestServer]) -> None:
    """Stops servers side by side: each stop() waits for its serve loop to notice."""
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        list(pool.map(DnsTestServer.stop, servers))


@pytest.fixture(scope="module")
def scenario_resolvers() -> Iterator[Callable[[int], Resolver]]:
    """Gives scenario index → a resolver asking a loopback server of that scenario's zonedata.

    One server per scenario, started when its first case runs, for the whole module.
    """
    servers: list[DnsTestServer] = []
    resolvers: dict[int, Resolver] = {}

    def resolver(index: int) -> Resolver:
        if index not in resolvers:
            zone_text, timeouts = zone_from_zonedata(SCENARIOS[index]["zonedata"])
            servers.append(SuiteDnsServer(zone_text, timeouts))
            resolvers[index] = resolver_for(servers[-1], timeout=1.0)
        return resolvers[index]

    yield resolver
    _stop_all(servers)


@pytest.mark.parametrize(("scenario", "case"), _suite_params())
def test_openspf_rfc7208_case_gives_the_expected_result(
    scenario_resolvers: Callable[[int], Resolver], scenario: int, case: dict[str, Any]
) -> None:
    session = scenario_resolvers(scenario).session(budget=10.0)
    result = check_spf(case["host"], case["mailfrom"], case["helo"], session)
    expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
    assert result.result in expected, result.reason
    explanation = case.get("explanation")
    if explanation == "DEFAULT":
        assert result.explanation == default_explanation(
            result.result, result.domain, result.client_ip
        )
    elif explanation is not None:
        assert result.explanation == explanation


def test_openspf_rfc7208_suite_holds_all_its_cases() -> None:
    assert sum(len(s["tests"]) for s in SCENARIOS) == SUITE_CASES


def test_suite_timeout_fails_only_the_types_a_name_lacks() -> None:
    zone, timeouts = zone_from_zonedata(
        {"t.example.net": [{"TXT": "v=spf1 -all"}, "TIMEOUT"], "x.example.net": ["TIMEOUT"]}
    )
    assert 't.example.net. 300 IN TXT "v=spf1 -all"' in zone
    assert ("t.example.net.", "TXT") not in timeouts
    assert ("t.example.net.", "SPF") in timeouts
    assert {("x.example.net.", t) for t in QUERY_TYPES} <= timeouts


# ---------------------------------------------------------------------------
# Behaviour around pyspf
# ---------------------------------------------------------------------------

_A_MECHANISMS = " ".join(f"a:a{i}.example.com" for i in range(1, 12))
ZONE = (
    """
example.com.          300 IN TXT "v=spf1 ip4:192.0.2.0/24 include:_spf.example.net " "-all"
_spf.example.net.     300 IN TXT "v=spf1 ip4:198.51.100.8 a:mail.example.net ~all"
mail.example.net.     300 IN A 203.0.113.5
soft.example.com.     300 IN TXT "v=spf1 ~all"
exp.example.com.      300 IN TXT "v=spf1 -all exp=why.example.com"
why.example.com.      300 IN TXT "%{i} may not send for %{d}"
helo.example.org.     300 IN TXT "v=spf1 a -all"
helo.example.org.     300 IN A 192.0.2.77
nolimit.example.com.  300 IN TXT "v=spf1 A_MECHANISMS -all"
void.example.com.     300 IN TXT "v=spf1 a:v1.example.com a:v2.example.com a:v3.example.com -all"
repeat.example.com.   300 IN TXT ( "v=spf1 a:gone.example.com a:gone.example.com mx "
                                  "include:_spf.example.net a:mail.example.net -all" )
repeat.example.com.   300 IN MX 10 mail.example.net.
xn--bcher-kva.example. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
""".replace("A_MECHANISMS", _A_MECHANISMS)
    + "".join(f"a{i}.example.com. 300 IN A 203.0.113.{i}\n" for i in range(1, 12))
)


@pytest.fixture(scope="module")
def zone_servers() -> Iterator[tuple[DnsTestServer, DnsTestServer]]:
    """Gives two loopback servers of ZONE for the whole module: one sound, one whose
    example.com answers SERVFAIL."""
    servers = [DnsTestServer(ZONE), DnsTestServer(ZONE, servfail=("example.com",))]
    yield servers[0], servers[1]
    _stop_all(servers)


@pytest.fixture
def server(zone_servers: tuple[DnsTestServer, DnsTestServer]) -> DnsTestServer:
    """Gives the sound server of ZONE with its query counts at zero."""
    zone_servers[0].reset_counts()
    return zone_servers[0]


@pytest.fixture
def servfail_server(zone_servers: tuple[DnsTestServer, DnsTestServer]) -> DnsTestServer:
    """Gives the server of ZONE whose example.com answers SERVFAIL."""
    return zone_servers[1]


def _session(server: DnsTestServer, budget: float = 10.0) -> DnsSession:
    return resolver_for(server, timeout=1.0).session(budget)


def test_mail_from_pass_reports_the_matching_ip4_mechanism(server: DnsTestServer) -> None:
    r = check_spf("192.0.2.10", "alice@example.com", "mx.example.com", _session(server))
    assert (r.result, r.identity, r.domain, r.mechanism) == (
        "pass",
        "mailfrom",
        "example.com",
        "ip4:192.0.2.0/24",
    )
    assert r.reason == "192.0.2.10 is permitted by example.com (ip4:192.0.2.0/24)"


def test_pass_through_include_reports_the_include(server: DnsTestServer) -> None:
    r = check_spf("203.0.113.5", "alice@example.com", "mx.example.com", _session(server))
    assert (r.result, r.mechanism) == ("pass", "include:_spf.example.net")


def test_fail_reports_minus_all_with_the_evidence(server: DnsTestServer) -> None:
    r = check_spf("198.51.100.7", "alice@example.com", "mx.example.com", _session(server))
    assert (r.result, r.mechanism) == ("fail", "-all")
    assert r.reason == "198.51.100.7 is not permitted by example.com (-all)"
    assert r.explanation == default_explanation("fail", "example.com", "198.51.100.7")


def test_softfail_reports_tilde_all(server: DnsTestServer) -> None:
    r = check_spf("198.51.100.7", "bob@soft.example.com", "mx.example.com", _session(server))
    assert (r.result, r.mechanism) == ("softfail", "~all")


def test_fail_with_exp_gives_the_domains_explanation(server: DnsTestServer) -> None:
    r = check_spf("198.51.100.7", "bob@exp.example.com", "mx.example.com", _session(server))
    assert r.result == "fail"
    assert r.explanation == "198.51.100.7 may not send for exp.example.com"


def test_domain_without_record_is_none(server: DnsTestServer) -> None:
    r = check_spf("192.0.2.10", "carol@nowhere.example", "mx.example.com", _session(server))
    assert (r.result, r.domain, r.mechanism) == ("none", "nowhere.example", "")
    assert r.reason == "nowhere.example publishes no SPF record"


def test_to_dict_carries_result_domain_mechanism_and_explanation(server: DnsTestServer) -> None:
    r = check_spf("192.0.2.10", "alice@example.com", "mx.example.com", _session(server))
    d = r.to_dict()
    assert {k: d[k] for k in ("result", "domain", "mechanism")} == {
        "result": "pass",
        "domain": "example.com",
        "mechanism": "ip4:192.0.2.0/24",
    }
    assert d["explanation"] == r.explanation and d["sender"] == "alice@example.com"


@pytest.mark.parametrize("null", ["", "<>", " <> "])
def test_null_sender_checks_postmaster_at_helo(server: DnsTestServer, null: str) -> None:
    r = check_spf("192.0.2.77", null, "helo.example.org", _session(server))
    assert (r.result, r.identity, r.domain, r.sender, r.mechanism) == (
        "pass",
        "helo",
        "helo.example.org",
        "postmaster@helo.example.org",
        "a",
    )


def test_helo_check_fails_a_host_the_helo_domain_does_not_list(server: DnsTestServer) -> None:
    r = check_helo_spf("192.0.2.78", "helo.example.org", _session(server))
    assert (r.result, r.identity, r.mechanism) == ("fail", "helo", "-all")


@pytest.mark.parametrize(
    "helo", ["[192.0.2.77]", "192.0.2.77", "[IPv6:2001:db8::1]", "2001:db8::1", "IPv6:2001:db8::1"]
)
def test_helo_check_with_ip_literal_is_none_without_dns(server: DnsTestServer, helo: str) -> None:
    r = check_helo_spf("192.0.2.77", helo, _session(server))
    assert (r.result, r.domain) == ("none", "")
    assert "address literal" in r.reason
    assert server.query_count == 0


@pytest.mark.parametrize("helo", ["localhost", "OEMCOMPUTER", ""])
def test_helo_check_with_a_name_that_is_not_fqdn_is_none(server: DnsTestServer, helo: str) -> None:
    r = check_helo_spf("192.0.2.77", helo, _session(server))
    assert r.result == "none"
    assert r.reason
    assert server.query_count == 0


@pytest.mark.parametrize(
    "client_ip", ["not-an-ip", "", "999.1.1.1", "192.0.2.1; rm -rf", "2001:db8::zz"]
)
def test_unparseable_client_ip_is_none_with_the_reason(
    server: DnsTestServer, client_ip: str
) -> None:
    r = check_spf(client_ip, "alice@example.com", "mx.example.com", _session(server))
    assert r.result == "none"
    assert "is not an IP address" in r.reason


def test_bracketed_and_v4_mapped_client_addresses_are_normalized(server: DnsTestServer) -> None:
    session = _session(server)
    assert (
        check_spf("[192.0.2.10]", "a@example.com", "h.example", session).client_ip == "192.0.2.10"
    )
    mapped = check_spf("::ffff:192.0.2.10", "a@example.com", "h.example", session)
    assert (mapped.result, mapped.client_ip) == ("pass", "192.0.2.10")


@pytest.mark.parametrize(
    "sender",
    [
        "caf\udcc3\udca9@example.com",  # 8-bit bytes decoded with surrogateescape
        "alice@exa\udcc3mple.com",
        "alice@[192.0.2.1]",
        "alice@localhost",
        "alice@a..example.com",
        "x@" + "a" * 64 + ".example.com",
    ],
)
def test_odd_sender_gives_a_result_not_an_exception(server: DnsTestServer, sender: str) -> None:
    r = check_spf("192.0.2.10", sender, "mx.example.com", _session(server))
    assert r.result in ("none", "permerror", "pass")
    assert r.reason
    assert r.sender.isprintable()


def test_eight_bit_local_part_still_checks_the_domain(server: DnsTestServer) -> None:
    r = check_spf("192.0.2.10", "caf\udcc3\udca9@example.com", "mx.example.com", _session(server))
    assert (r.result, r.domain) == ("pass", "example.com")


def test_internationalized_domain_is_checked_as_its_a_label(server: DnsTestServer) -> None:
    r = check_spf("192.0.2.10", "anna@bücher.example", "mx.example.com", _session(server))
    assert (r.result, r.domain) == ("pass", "xn--bcher-kva.example")


def test_more_than_ten_dns_mechanisms_is_permerror(server: DnsTestServer) -> None:
    r = check_spf("198.51.100.7", "a@nolimit.example.com", "mx.example.com", _session(server))
    assert r.result == "permerror"
    assert "Too many DNS lookups" in r.reason


def test_more_than_two_void_lookups_is_permerror(server: DnsTestServer) -> None:
    r = check_spf("198.51.100.7", "a@void.example.com", "mx.example.com", _session(server))
    assert r.result == "permerror"
    assert "Void lookup limit" in r.reason


def test_no_query_is_sent_twice_within_one_message(server: DnsTestServer) -> None:
    session = _session(server)
    first = check_spf("198.51.100.7", "a@repeat.example.com", "mx.example.com", session)
    again = check_spf("198.51.100.7", "a@repeat.example.com", "mx.example.com", session)
    helo = check_helo_spf("198.51.100.7", "repeat.example.com", session)
    assert first.result == again.result == helo.result == "fail"
    assert server.queries[("gone.example.com.", "A")] == 1
    assert server.queries[("mail.example.net.", "A")] == 1
    assert max(server.queries.values()) == 1


def test_unreachable_dns_server_is_temperror() -> None:
    resolver = Resolver(ServerSource.from_spec(f"127.0.0.1:{free_udp_port()}"), timeout=0.3)
    r = check_spf("192.0.2.10", "alice@example.com", "mx.example.com", resolver.session(2.0))
    assert r.result == "temperror"
    assert r.reason.startswith("a DNS lookup failed while checking example.com:")


def test_servfail_is_temperror(servfail_server: DnsTestServer) -> None:
    r = check_spf("192.0.2.10", "alice@example.com", "mx.example.com", _session(servfail_server))
    assert r.result == "temperror"
    assert "SERVFAIL" in r.reason


def test_spent_time_budget_is_temperror(server: DnsTestServer) -> None:
    # Every look at the clock is 10 s later: a query reads it once, so the budget of 8 s
    # is spent after the first one.
    ticks = itertools.count(0.0, 10.0)
    resolver = Resolver(
        ServerSource.from_spec(server.address), timeout=1.0, clock=lambda: next(ticks)
    )
    r = check_spf("203.0.113.5", "alice@example.com", "mx.example.com", resolver.session(8.0))
    assert r.result == "temperror"
    assert "budget" in r.reason
    assert server.queries[("example.com.", "TXT")] == 1
    assert server.queries[("_spf.example.net.", "TXT")] == 0


def test_checks_in_a_thread_pool_use_their_own_sessions(
    server: DnsTestServer, servfail_server: DnsTestServer
) -> None:
    good, bad = server, servfail_server

    def check(i: int) -> str:
        server = good if i % 2 else bad
        return check_spf("192.0.2.10", "alice@example.com", "h.example", _session(server)).result

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(check, range(12)))
    assert results == ["temperror", "pass"] * 6


def test_pyspf_outside_a_check_sends_no_query(server: DnsTestServer) -> None:
    check_spf("192.0.2.10", "alice@example.com", "mx.example.com", _session(server))
    before = server.query_count
    result, _code, _text = pyspf.query("192.0.2.10", "alice@example.com", "mx.example.com").check()
    assert result == "temperror"
    assert server.query_count == before


def test_importing_the_module_leaves_pyspf_untouched() -> None:
    code = "import spf, classifier.auth.spf; print(spf.DNSLookup.__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "DNSLookup_dnspython"


# ---------------------------------------------------------------------------
# Received-SPF
# ---------------------------------------------------------------------------


def _result(**changes: str) -> SpfResult:
    base = {
        "result": "pass",
        "identity": "mailfrom",
        "domain": "example.com",
        "sender": "alice@example.com",
        "client_ip": "192.0.2.10",
        "helo": "mx.example.com",
        "mechanism": "ip4:192.0.2.0/24",
        "explanation": "",
        "reason": "",
    }
    return SpfResult(**{**base, **changes})


def _pairs(value: str) -> list[tuple[str, str]]:
    """Gives the key=value pairs after the comment, reading quoted-strings as RFC 5322 does."""
    rest = value.split(") ", 1)[1]
    pairs = []
    pos = 0
    token = re.compile(r'\s*([a-z-]+)=(?:"((?:[^"\\]|\\.)*)"|([^;\s"]+))\s*(?:;|$)')
    while pos < len(rest):
        m = token.match(rest, pos)
        assert m, f"unparseable at {rest[pos:]!r}"
        text = m.group(3) if m.group(2) is None else re.sub(r"\\(.)", r"\1", m.group(2))
        pairs.append((m.group(1), text))
        pos = m.end()
    return pairs


def test_received_spf_is_written_like_policyd_spf() -> None:
    header = received_spf_header(_result(), "mx.example.org")
    assert header == (
        "Pass (mailfrom) identity=mailfrom; client-ip=192.0.2.10; helo=mx.example.com; "
        'envelope-from="alice@example.com"; receiver=mx.example.org; '
        'mechanism="ip4:192.0.2.0/24"'
    )


def test_received_spf_for_helo_identity_has_no_envelope_from() -> None:
    r = _result(result="fail", identity="helo", sender="postmaster@mx.example.com", mechanism="")
    header = received_spf_header(r, "mx.example.org")
    assert header.startswith("Fail (helo) identity=helo; ")
    assert [k for k, _ in _pairs(header)] == ["identity", "client-ip", "helo", "receiver"]


@pytest.mark.parametrize(
    "sender",
    [
        "a;dkim=pass@x.example",
        'a"; receiver=evil; x="@x.example',
        'a\\"; identity=helo@x.example',
        "a\r\nX-Authsieve: verdict=inbox@x.example",
        "a\nb\r\0c\x85d\u2028e@x.example",
    ],
)
def test_received_spf_quotes_sender_text_so_it_injects_nothing(sender: str) -> None:
    header = received_spf_header(_result(sender=sender, helo=sender), "mx.example.org")
    assert header.isprintable()
    keys = [k for k, _ in _pairs(header)]
    assert keys == ["identity", "client-ip", "helo", "envelope-from", "receiver", "mechanism"]
    values = dict(_pairs(header))
    assert values["identity"] == "mailfrom"
    assert values["envelope-from"] == "".join(c if c.isprintable() else "?" for c in sender)
    msg = email.message_from_string(f"Received-SPF: {header}\n\nbody\n")
    assert msg.keys() == ["Received-SPF"]


def test_received_spf_of_a_permerror_names_the_problem_quoted() -> None:
    r = _result(result="permerror", mechanism="", reason='record "v=spf1 moo"; broken')
    values = dict(_pairs(received_spf_header(r, "")))
    assert values["problem"] == 'record "v=spf1 moo"; broken'
    assert "receiver" not in values


def test_received_spf_quotes_an_ipv6_client_address() -> None:
    header = received_spf_header(_result(client_ip="2001:db8::1"), "mx.example.org")
    assert 'client-ip="2001:db8::1";' in header


def test_header_from_a_real_check_names_the_mechanism(server: DnsTestServer) -> None:
    r = check_spf("198.51.100.7", "alice@example.com", "mx.example.com", _session(server))
    header = received_spf_header(r, "mx.example.org")
    assert header.startswith("Fail (mailfrom) identity=mailfrom; client-ip=198.51.100.7;")
    assert dict(_pairs(header))["mechanism"] == "-all"


def _domain_problem_plainly(domain: str) -> tuple[str, str]:
    """_domain_problem's rules, each checked in turn (the reference for its short cuts)."""
    if domain.endswith(".") and not domain.endswith(".."):
        domain = domain[:-1]
    if not domain:
        return "", "there is no domain"
    literal = ":" in domain or domain.replace(".", "").isdigit()
    if domain.startswith("[") or (literal and normalize_ip(domain) is not None):
        return "", "literal"
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return "", "invalid"
    labels = domain.split(".")
    if len(labels) < 2 or "" in labels:
        return "", "labels"
    if len(domain) > 253 or max(map(len, labels)) > 63:
        return "", "long"
    return domain.lower(), ""


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet="0123456789.:[]%abcXYZ-_\u0661\u00e9", max_size=30)
    | st.builds(
        lambda n, tail: "a" * n + tail, st.integers(0, 300), st.sampled_from(["", ".b", ".1", "."])
    )
)
def test_domain_problem_short_cuts_keep_its_rules(domain: str) -> None:
    domain_out, problem = _domain_problem(domain)
    expected_out, expected_problem = _domain_problem_plainly(domain)
    assert domain_out == expected_out
    assert bool(problem) == bool(expected_problem)
