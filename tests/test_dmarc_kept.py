"""A DMARC result kept in the DNS memo is the one a fresh evaluation gives (issue 15).

`check_dmarc` keeps a message's result for its one Author Domain, keyed on
that domain, the SPF and DKIM (result, domain) pairs and the mode, bound to
the TTLs of the answers it read (classifier/lookup/memo.py).  Compared here
with the evaluation as it ran before (discovery's outcome handed in, nothing
kept), on hostile From fields and identifiers, with the records changing
under it.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.auth.dmarc import (
    DmarcResult,
    OrgDomains,
    _evaluate,
    check_dmarc,
    discover_first,
    from_domains,
)
from classifier.lookup.resolver import DnsSession, Resolver
from classifier.lookup.sources import ZoneSource

ZONE = """
_dmarc.example.com. 300 TXT "v=DMARC1; p=reject; adkim=s"
_dmarc.shop.example. 60 TXT "v=DMARC1; p=quarantine; sp=none; np=reject; t=y"
_dmarc.org.test. 600 TXT "v=DMARC1; p=none; rua=mailto:x@org.test"
www.org.test. 600 A 192.0.2.1
_dmarc.broken.test. 300 TXT "v=DMARC1; p=bogus"
mail.example.com. 300 A 192.0.2.2
"""
# The same names a while later: a policy changed, one record gone, one new.
ZONE_LATER = """
_dmarc.example.com. 300 TXT "v=DMARC1; p=none"
_dmarc.org.test. 600 TXT "v=DMARC1; p=reject"
www.org.test. 600 A 192.0.2.1
_dmarc.new.test. 300 TXT "v=DMARC1; p=quarantine"
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_DOMAINS = [
    "example.com",
    "mail.example.com",
    "shop.example",
    "a.shop.example",
    "org.test",
    "www.org.test",
    "ghost.org.test",
    "broken.test",
    "new.test",
    "EXAMPLE.COM.",
]
_HOSTILE = st.text(alphabet='ab.-@;:"\\()<>, \t\r\n\x00é', max_size=30)
_DOMAIN = st.sampled_from(_DOMAINS) | _HOSTILE
_FROM = st.one_of(
    _DOMAIN.map(lambda d: f"Ann <ann@{d}>"),
    st.tuples(_HOSTILE, _DOMAIN).map(lambda t: f'"{t[0]}" <x@{t[1]}>'),
    _HOSTILE,
)
_WORD = st.sampled_from(["pass", "fail", "none", "temperror", "softfail", "PASS", ""])


def _old(
    values: list[str], spf: tuple[str, str], dkim: list[tuple[str, str]], dns: DnsSession, mode: str
) -> DmarcResult:
    """The single-author evaluation as check_dmarc ran it before: discovery handed in."""
    domains, _ = from_domains(values)
    author = domains[0]
    discovered = discover_first(values, dns, mode)
    orgs = OrgDomains(dns, mode)
    return _evaluate(author, spf, dkim, dns, mode, None, orgs, discovered.get(author))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(
        st.tuples(
            _FROM,
            st.tuples(_WORD, _DOMAIN),
            st.lists(st.tuples(_WORD, _DOMAIN), max_size=3),
            st.sampled_from(["rfc9989", "rfc7489"]),
            # Seconds passed before this message; after 1000 (longer than every TTL) the
            # zone has changed: a kept result must not outlive the answers it was made from.
            st.sampled_from([0, 30, 400, 1000]),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_kept_result_is_the_fresh_one(
    messages: list[tuple[str, tuple[str, str], list[tuple[str, str]], str, int]],
) -> None:
    clock = Clock()
    resolver = Resolver(ZoneSource(ZONE), clock=clock)
    zones = [ZONE, ZONE_LATER]
    for value, spf, dkim, mode, later in messages:
        clock.now += later
        if later == 1000:
            zones.reverse()
            resolver.source = ZoneSource(zones[0])
        values = [value]
        domains, error = from_domains(values)
        single = not error and len(set(domains)) == 1
        # The old evaluation first, in a session of its own on the same resolver (its cache
        # and discovery memo as a message would meet them), then the check that keeps.
        want = _old(values, spf, dkim, resolver.session(20), mode) if single else None
        dns = resolver.session(20)
        before = len(resolver.memo)
        found = discover_first(values, dns, mode)
        got = check_dmarc(values, spf[0], spf[1], dkim, dns, mode=mode, discovered=found)
        if not single:
            continue  # several Author Domains, or none: evaluated as before, nothing kept
        assert got == want
        old_dns = resolver.session(20)
        _old(values, spf, dkim, old_dns, mode)
        assert dns.queries == old_dns.queries  # a kept result replays every question
        assert len(resolver.memo) >= before


def test_kept_per_identifiers_and_answers() -> None:
    """The same Author Domain with other SPF results is evaluated again; the same is kept."""
    clock = Clock()
    resolver = Resolver(ZoneSource(ZONE), clock=clock)
    values = ["Ann <ann@example.com>"]

    def check(spf: tuple[str, str]) -> DmarcResult:
        dns = resolver.session(20)
        found = discover_first(values, dns, "rfc9989")
        return check_dmarc(values, spf[0], spf[1], [], dns, discovered=found)

    first = check(("pass", "example.com"))
    assert first.result == "pass"
    assert check(("fail", "example.com")).result == "fail"
    hits = resolver.memo.hits
    assert check(("pass", "example.com")) is first  # kept: the very result
    assert resolver.memo.hits > hits
    # The record changes and the answers expire: the kept result goes with them.
    clock.now += 1000
    resolver.source = ZoneSource(ZONE_LATER)
    later = check(("fail", "example.com"))
    assert later.result == "fail"
    assert later.policy == "none"
