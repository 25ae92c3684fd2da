"""Tests of classifier/lookup/memo.py: results kept from DNS answers equal fresh ones.

The memo keeps SPF's check_host() results (classifier/auth/spf.py).  A kept
result must be the one a fresh evaluation gives, evidence and the session's
query count included; it must end with the TTL of the answers it read, never
outlive a temporary failure, and never answer for another identity.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.auth.checks import run_checks
from classifier.auth.spf import check_helo_spf, check_spf
from classifier.config import load_config
from classifier.lookup.memo import DnsMemo
from classifier.lookup.resolver import Resolver
from classifier.lookup.sources import ZoneSource
from tests.conftest import resolver_for
from tests.dnsserver import DnsTestServer

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "maildir"
RECEIVER = "mx.family.example"

ZONE = """
example.com. 300 TXT "v=spf1 include:_spf.example.com a:mail.example.com -all"
_spf.example.com. 60 TXT "v=spf1 ip4:192.0.2.0/24 ~all"
mail.example.com. 600 A 198.51.100.7
helo.example.net. 900 TXT "v=spf1 a -all"
helo.example.net. 900 A 198.51.100.7
exp.example.org. 300 TXT "v=spf1 -all exp=why.example.org"
why.example.org. 300 TXT "%{i} is not one of %{d}'s senders at %{t}"
"""


class Clock:
    """A resolver clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _zone_resolver(text: str, clock: Callable[[], float] | None = None) -> Resolver:
    if clock is None:
        return Resolver(ZoneSource(text))
    return Resolver(ZoneSource(text), clock=clock)


def _spf_both(resolver: Resolver, ip: str, mail_from: str, helo: str) -> tuple:
    """Gives both SPF results and the session's view: its query count and answers."""
    dns = resolver.session(20)
    helo_result = check_helo_spf(ip, helo, dns, RECEIVER)
    mail_result = check_spf(ip, mail_from, helo, dns, RECEIVER)
    return helo_result, mail_result, dns.queries, [q for q, _ in dns.asked]


def _demo_messages() -> list[Path]:
    return sorted(p for p in DEMO.rglob("*") if p.is_file() and p.parent.name in ("new", "cur"))


def test_kept_results_equal_fresh_ones_for_every_demo_message() -> None:
    config = load_config(ROOT / "examples" / "config.toml")
    zone = (DEMO / "zone.txt").read_text()
    shared = _zone_resolver(zone)
    messages = [p.read_bytes() for p in _demo_messages()]
    assert len(messages) >= 15
    first = [run_checks(m, config.engine, shared) for m in messages]
    hits = shared.memo.hits
    again = [run_checks(m, config.engine, shared) for m in messages]
    assert shared.memo.hits > hits  # the second round was answered from the memo
    for data, one, two in zip(messages, first, again, strict=True):
        fresh = run_checks(data, config.engine, _zone_resolver(zone))
        # CheckReport equality covers every result, its evidence and dns_queries.
        assert two == fresh == one
        assert two.to_dict() == fresh.to_dict()


def test_a_hit_replays_the_questions_into_the_session() -> None:
    resolver = _zone_resolver(ZONE)
    fresh = _spf_both(resolver, "192.0.2.9", "news@example.com", "helo.example.net")
    assert resolver.memo.hits == 0 and len(resolver.memo) == 2
    hit = _spf_both(resolver, "192.0.2.9", "news@example.com", "helo.example.net")
    assert resolver.memo.hits == 2
    assert hit == fresh
    assert hit[0].result == "fail" and hit[1].result == "pass"


def test_expiry_follows_the_smallest_ttl_of_the_answers_read() -> None:
    clock = Clock()
    resolver = _zone_resolver(ZONE, clock)
    first = _spf_both(resolver, "192.0.2.9", "news@example.com", "helo.example.net")
    clock.now += 59  # _spf.example.com's TTL is 60: still standing
    assert _spf_both(resolver, "192.0.2.9", "news@example.com", "helo.example.net") == first
    assert resolver.memo.hits == 2
    clock.now += 2  # past 60 s: the MAIL FROM result is worked out again
    misses = resolver.memo.misses
    assert _spf_both(resolver, "192.0.2.9", "news@example.com", "helo.example.net") == first
    assert resolver.memo.hits == 3  # the HELO result (TTL 900) still stands
    assert resolver.memo.misses == misses + 1


def test_negative_answers_bind_the_lifetime_too() -> None:
    clock = Clock()
    zone = "$TTL 3600\n@ SOA ns. host. 1 2 3 4 30\n" + ZONE
    resolver = _zone_resolver(zone, clock)
    dns = resolver.session(20)
    result = check_spf("192.0.2.9", "a@nothing.example.com", "", dns, RECEIVER)
    assert result.result == "none"
    negative = [a.ttl for q, a in dns.asked if a is not None and not a.records]
    assert negative, "the check read no negative answer"
    clock.now += min(negative) + 1
    misses = resolver.memo.misses
    check_spf("192.0.2.9", "a@nothing.example.com", "", resolver.session(20), RECEIVER)
    assert resolver.memo.misses == misses + 1


def test_lru_keeps_at_most_max_entries() -> None:
    resolver = _zone_resolver(ZONE)
    resolver.memo = DnsMemo(max_entries=3)
    for n in range(10):
        check_spf(f"192.0.2.{n}", "news@example.com", "", resolver.session(20), RECEIVER)
    assert len(resolver.memo) == 3


def test_a_temporary_failure_is_never_kept(dns_server: Callable[..., DnsTestServer]) -> None:
    server = dns_server(ZONE, servfail=("_spf.example.com",))
    resolver = resolver_for(server)
    first = check_spf("192.0.2.9", "news@example.com", "", resolver.session(20), RECEIVER)
    assert first.result == "temperror"
    assert len(resolver.memo) == 0
    misses = resolver.memo.misses
    second = check_spf("192.0.2.9", "news@example.com", "", resolver.session(20), RECEIVER)
    assert second.result == "temperror"  # asked again, not answered from the memo
    assert resolver.memo.misses == misses + 1 and resolver.memo.hits == 0
    assert len(resolver.memo) == 0


def test_a_spent_budget_is_never_kept() -> None:
    resolver = _zone_resolver(ZONE)
    result = check_spf("192.0.2.9", "news@example.com", "", resolver.session(0), RECEIVER)
    assert result.result == "temperror"
    assert len(resolver.memo) == 0


def test_a_kept_result_is_not_used_once_the_budget_is_spent() -> None:
    resolver = _zone_resolver(ZONE)
    kept = check_spf("192.0.2.9", "news@example.com", "", resolver.session(20), RECEIVER)
    assert kept.result == "pass"
    late = check_spf("192.0.2.9", "news@example.com", "", resolver.session(0), RECEIVER)
    assert late.result == "temperror"  # what a fresh evaluation with no time left gives


def test_an_explanation_that_may_read_the_clock_is_never_kept() -> None:
    resolver = _zone_resolver(ZONE)
    result = check_spf("192.0.2.9", "a@exp.example.org", "", resolver.session(20), RECEIVER)
    assert result.result == "fail" and "192.0.2.9 is not one of" in result.explanation
    assert len(resolver.memo) == 0


HOSTILE = st.sampled_from(
    [
        "",
        "<>",
        "news@example.com",
        "NEWS@Example.COM",
        '"a@b"@example.com',
        '"x (Authenticated sender: bob) y"@example.com',
        "news@example.com.",
        "a;spf=pass@example.com",
        "news@example.com\r\nX: y",
        "postmaster@helo.example.net",
        "@example.com",
        "news@[192.0.2.9]",
        "news@exa\u00e9mple.com",
        "news@_spf.example.com",
    ]
) | st.text(alphabet='ab@.<>"()[];: \\\r\n%{}exmplco', max_size=30)
HELOS = st.sampled_from(
    ["", "helo.example.net", "HELO.example.net.", "[192.0.2.9]", "example.com", "x y", "a\u00e9.b"]
) | st.text(alphabet='helo.xamptn[]() \\"', max_size=20)
IPS = st.sampled_from(["192.0.2.9", "198.51.100.7", "::ffff:192.0.2.9", "2001:db8::1", "nope"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    one=st.tuples(IPS, HOSTILE, HELOS),
    other=st.tuples(IPS, HOSTILE, HELOS),
)
def test_hostile_envelopes_never_share_an_entry(
    one: tuple[str, str, str], other: tuple[str, str, str]
) -> None:
    shared = _zone_resolver(ZONE)
    _spf_both(shared, *one)
    _spf_both(shared, *other)
    again = _spf_both(shared, *one)  # may be answered from the memo now
    assert again == _spf_both(_zone_resolver(ZONE), *one)
    later = _spf_both(shared, *other)
    assert later == _spf_both(_zone_resolver(ZONE), *other)


@pytest.mark.parametrize("ip", ["192.0.2.9", "198.51.100.7", "203.0.113.1"])
def test_each_client_address_gets_its_own_result(ip: str) -> None:
    shared = _zone_resolver(ZONE)
    for other in ("192.0.2.9", "198.51.100.7", "203.0.113.1"):
        _spf_both(shared, other, "news@example.com", "helo.example.net")
    assert _spf_both(shared, ip, "news@example.com", "helo.example.net") == _spf_both(
        _zone_resolver(ZONE), ip, "news@example.com", "helo.example.net"
    )


DMARC_ZONE = """
_dmarc.example.com. 120 TXT "v=DMARC1; p=reject"
_dmarc.shop.example. 3600 TXT "v=DMARC1; p=quarantine; psd=n"
"""


def test_dmarc_discovery_is_kept_until_its_records_ttl() -> None:
    from classifier.auth.dmarc_discovery import discover

    clock = Clock()
    resolver = _zone_resolver(DMARC_ZONE, clock)
    fresh = discover("news.example.com", resolver.session(20), "rfc9989")
    assert fresh.record is not None and fresh.record_domain == "example.com"
    hits = resolver.memo.hits
    dns = resolver.session(20)
    assert discover("news.example.com", dns, "rfc9989") == fresh
    assert resolver.memo.hits == hits + 1
    # the replay put every answer of the walk into the session, as a fresh walk would
    assert dns.queries == 3
    clock.now += 121
    misses = resolver.memo.misses
    assert discover("news.example.com", resolver.session(20), "rfc9989") == fresh
    assert resolver.memo.misses == misses + 1


def test_dmarc_discovery_cut_short_by_a_failure_is_never_kept(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    from classifier.auth.dmarc_discovery import discover

    server = dns_server(DMARC_ZONE, servfail=("_dmarc.example.com",))
    resolver = resolver_for(server)
    found = discover("news.example.com", resolver.session(20), "rfc9989")
    assert found.temp and found.record is None
    assert len(resolver.memo) == 0


@pytest.mark.parametrize("author", ["news.example.com", "shop.example", "x.nowhere.example"])
@pytest.mark.parametrize("servfail", [(), ("_dmarc.example.com",)])
@pytest.mark.parametrize("mode", ["rfc9989", "rfc7489"])
def test_dmarc_evaluation_reading_discover_first_gives_what_discovering_again_gives(
    dns_server: Callable[..., DnsTestServer], author: str, servfail: tuple, mode: str
) -> None:
    from classifier.auth.dmarc import check_dmarc, discover_first

    server = dns_server(DMARC_ZONE, servfail=servfail)
    from_values = [f"A <a@{author}>"]
    got = []
    for pass_it in (False, True):
        resolver = resolver_for(server)  # its own memo: no replay between the two
        dns = resolver.session(20)
        found = discover_first(from_values, dns, mode)
        assert set(found) == {author}
        result = check_dmarc(
            from_values, "fail", "", [], dns, mode=mode, discovered=found if pass_it else None
        )
        got.append((result, dns.queries))
    assert got[0] == got[1]
