"""Tests of classifier/lookup (resolver, sources) against a loopback DNS server and ZoneSource.

Both sources read the same zone text and must give the same answers.
"""

from __future__ import annotations

import resource
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.errors import UsageError
from classifier.lookup import wire as dns_wire
from classifier.lookup.resolver import (
    Answer,
    DnsTempError,
    Resolver,
    _key,
    make_resolver,
    reverse_name,
)
from classifier.lookup.sources import ServerSource, ZoneSource, _answer_from_reply, _full_exchange
from tests.conftest import resolver_for
from tests.dnsserver import DnsTestServer, free_udp_port
from tests.helpers import wait_for

BIG_TXT = " ".join(f'"{chr(97 + i) * 200}"' for i in range(3))  # 600 octets: over UDP's 512
HUGE_TXT = " ".join(f'"{chr(97 + i) * 200}"' for i in range(8))  # 1,600 octets: over EDNS's 1232

ZONE = f"""
example.com.             300 IN TXT "v=spf1 ip4:192.0.2.0/24 " "-all"
example.com.             300 IN TXT "google-site-verification=abc"
example.com.             300 IN MX 10 mail.example.com.
example.com.             300 IN MX 20 backup.example.net.
mail.example.com.        300 IN A 192.0.2.1
mail.example.com.        300 IN AAAA 2001:db8::1
alias.example.com.       300 IN CNAME alias2.example.com.
alias2.example.com.      300 IN CNAME mail.example.com.
dangling.example.com.    300 IN CNAME nowhere.example.com.
deep.sub.example.com.    300 IN A 192.0.2.2
big.example.com.         300 IN TXT {BIG_TXT}
huge.example.com.        300 IN TXT {HUGE_TXT}
1.2.0.192.in-addr.arpa.  300 IN PTR mail.example.com.
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 300 PTR mail.example.com.
short.example.com.       60 IN A 192.0.2.3
broken.example.com.      300 IN A 192.0.2.4
xn--bcher-kva.example.   300 IN A 192.0.2.9
macro%percent\\032\\032space.example.com. 300 IN A 192.0.2.8
"""

# (qname, type) pairs whose answers both sources must agree on.
QUESTIONS = [
    ("example.com", "TXT"),
    ("example.com", "MX"),
    ("example.com", "A"),  # NODATA at an existing name
    ("mail.example.com", "A"),
    ("mail.example.com", "AAAA"),
    ("mail.example.com", "TXT"),
    ("sub.example.com", "A"),  # empty non-terminal: NODATA, not NXDOMAIN
    ("deep.sub.example.com", "A"),
    ("nothere.example.com", "A"),  # NXDOMAIN
    ("nothere.example.com", "TXT"),
    ("alias.example.com", "A"),  # CNAME chain of two
    ("alias.example.com", "AAAA"),
    ("alias.example.com", "TXT"),  # chain ends in NODATA
    ("alias.example.com", "CNAME"),
    ("dangling.example.com", "A"),  # chain ends in NXDOMAIN
    ("big.example.com", "TXT"),
    ("huge.example.com", "TXT"),
    ("1.2.0.192.in-addr.arpa", "PTR"),
    (reverse_name("2001:db8::1"), "PTR"),
    ("short.example.com", "A"),
    ("MAIL.Example.COM.", "A"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[DnsTestServer]:
    """Gives one loopback server of ZONE for the module (broken.example.com: SERVFAIL)."""
    srv = DnsTestServer(ZONE, servfail=("broken.example.com",))
    yield srv
    srv.stop()


@pytest.fixture
def fresh(server: DnsTestServer) -> DnsTestServer:
    """Gives the module's server with its query counts at zero."""
    server.reset_counts()
    return server


@pytest.fixture(params=["server", "zone"])
def resolver(request: pytest.FixtureRequest, fresh: DnsTestServer) -> Resolver:
    """Gives a resolver of ZONE, once through the loopback server, once through ZoneSource."""
    if request.param == "server":
        return resolver_for(fresh)
    return Resolver(ZoneSource(ZONE))


def _essence(answer: Answer) -> tuple[object, ...]:
    # The order of the records in an RRset carries no meaning (RFC 2181 §5).
    return (sorted(answer.records, key=repr), answer.nxdomain, answer.ttl)


def test_server_and_zone_source_give_the_same_answers(fresh: DnsTestServer) -> None:
    via_server = resolver_for(fresh)
    via_zone = Resolver(ZoneSource(ZONE))
    for qname, rdtype in QUESTIONS:
        assert _essence(via_server.query(qname, rdtype)) == _essence(
            via_zone.query(qname, rdtype)
        ), (qname, rdtype)


def test_nxdomain_and_nodata_are_told_apart(resolver: Resolver) -> None:
    assert resolver.query("nothere.example.com", "A") == Answer(
        "nothere.example.com", "A", (), nxdomain=True
    )
    nodata = resolver.query("mail.example.com", "TXT")
    assert (nodata.records, nodata.nxdomain) == ((), False)


def test_empty_non_terminal_is_nodata(resolver: Resolver) -> None:
    answer = resolver.query("sub.example.com", "A")
    assert (answer.records, answer.nxdomain) == ((), False)


def test_cname_chain_is_followed_to_the_records(resolver: Resolver) -> None:
    assert resolver.query("alias.example.com", "A").records == ("192.0.2.1",)
    assert resolver.query("alias.example.com", "AAAA").records == ("2001:db8::1",)
    assert resolver.query("alias.example.com", "CNAME").records == ("alias2.example.com",)


def test_cname_to_a_missing_name_is_nxdomain(resolver: Resolver) -> None:
    answer = resolver.query("dangling.example.com", "A")
    assert (answer.records, answer.nxdomain) == ((), True)


def test_multi_string_txt_is_kept_unjoined_and_joined_by_txt_strings(resolver: Resolver) -> None:
    answer = resolver.query("example.com", "TXT")
    assert sorted(answer.records) == [
        (b"google-site-verification=abc",),
        (b"v=spf1 ip4:192.0.2.0/24 ", b"-all"),
    ]
    assert sorted(answer.txt_strings()) == [
        "google-site-verification=abc",
        "v=spf1 ip4:192.0.2.0/24 -all",
    ]


def test_session_txt_gives_joined_strings(resolver: Resolver) -> None:
    assert "v=spf1 ip4:192.0.2.0/24 -all" in resolver.session().txt("example.com")


def test_txt_over_512_octets_arrives_whole(resolver: Resolver) -> None:
    answer = resolver.query("big.example.com", "TXT")
    assert answer.records == (tuple(bytes([97 + i]) * 200 for i in range(3)),)


def test_txt_over_512_octets_comes_over_udp_with_edns(fresh: DnsTestServer) -> None:
    # A 2048-bit DKIM key needs more than 512 octets: EDNS0 (RFC 6891) saves the TCP retry.
    resolver_for(fresh).query("big.example.com", "TXT")
    assert fresh.queries[("big.example.com.", "TXT")] == 1


def test_txt_over_the_edns_payload_falls_back_to_tcp(fresh: DnsTestServer) -> None:
    answer = resolver_for(fresh).query("huge.example.com", "TXT")
    assert answer.records == (tuple(bytes([97 + i]) * 200 for i in range(8)),)
    # Once over UDP (answered truncated), once again over TCP.
    assert fresh.queries[("huge.example.com.", "TXT")] == 2


def test_a_server_without_edns_is_asked_again_plainly() -> None:
    # RFC 6891 §7: FORMERR to a query with an OPT record means a server from before EDNS.
    old = DnsTestServer(ZONE, edns=False)
    try:
        answer = resolver_for(old).query("big.example.com", "TXT")
        assert answer.records == (tuple(bytes([97 + i]) * 200 for i in range(3)),)
        # The plain query over UDP (600 octets: truncated), then over TCP.
        assert old.queries[("big.example.com.", "TXT")] == 2
        assert resolver_for(old).query("mail.example.com", "A").records == ("192.0.2.1",)
    finally:
        old.stop()


def test_mx_ptr_and_aaaa_records(resolver: Resolver) -> None:
    assert sorted(resolver.query("example.com", "MX").records) == [
        (10, "mail.example.com"),
        (20, "backup.example.net"),
    ]
    assert resolver.query(reverse_name("192.0.2.1"), "PTR").records == ("mail.example.com",)
    assert resolver.query(reverse_name("2001:db8::1"), "PTR").records == ("mail.example.com",)
    assert resolver.query("mail.example.com", "AAAA").records == ("2001:db8::1",)


def test_query_names_are_case_and_dot_insensitive(resolver: Resolver) -> None:
    answer = resolver.query("MAIL.Example.COM.", "a")
    assert (answer.qname, answer.rdtype, answer.records) == (
        "mail.example.com",
        "A",
        ("192.0.2.1",),
    )


def test_unsupported_type_is_a_value_error(resolver: Resolver) -> None:
    with pytest.raises(ValueError, match="unsupported query type"):
        resolver.query("example.com", "SOA")


def test_names_the_dns_cannot_hold_are_nxdomain_without_a_query(fresh: DnsTestServer) -> None:
    resolver = resolver_for(fresh)
    for name in ("", "a..example.com", "x" * 64 + ".example.com", ("a" * 60 + ".") * 5 + "com"):
        assert resolver.query(name, "A").nxdomain, name
    assert fresh.query_count == 0


def test_unencodable_name_is_nxdomain_from_both_sources(fresh: DnsTestServer) -> None:
    for resolver in (resolver_for(fresh), Resolver(ZoneSource(ZONE))):
        assert resolver.query("caf\udcc3.example.com", "A").nxdomain


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_answer_is_cached_for_its_ttl_and_asked_again_after(fresh: DnsTestServer) -> None:
    clock = FakeClock()
    resolver = Resolver(ServerSource.from_spec(fresh.address), timeout=2.0, clock=clock)
    resolver.query("short.example.com", "A")
    clock.now += 59
    resolver.query("short.example.com", "A")
    assert fresh.queries[("short.example.com.", "A")] == 1
    clock.now += 2  # past the 60 s TTL
    assert resolver.query("short.example.com", "A").records == ("192.0.2.3",)
    assert fresh.queries[("short.example.com.", "A")] == 2
    assert resolver.queries_sent == 2


def test_negative_answer_is_cached_too(fresh: DnsTestServer) -> None:
    clock = FakeClock()
    resolver = Resolver(ServerSource.from_spec(fresh.address), timeout=2.0, clock=clock)
    resolver.query("nothere.example.com", "TXT")
    resolver.query("nothere.example.com", "TXT")
    assert fresh.queries[("nothere.example.com.", "TXT")] == 1
    clock.now += 301
    resolver.query("nothere.example.com", "TXT")
    assert fresh.queries[("nothere.example.com.", "TXT")] == 2


def test_cache_holds_at_most_max_entries(fresh: DnsTestServer) -> None:
    resolver = Resolver(ServerSource.from_spec(fresh.address), timeout=2.0, max_entries=2)
    for name in ("mail.example.com", "short.example.com", "deep.sub.example.com"):
        resolver.query(name, "A")
    resolver.query("mail.example.com", "A")  # the oldest entry was dropped
    assert fresh.queries[("mail.example.com.", "A")] == 2


def test_servfail_is_a_temporary_error(fresh: DnsTestServer) -> None:
    with pytest.raises(DnsTempError) as err:
        resolver_for(fresh).query("broken.example.com", "A")
    assert (err.value.qname, err.value.rdtype) == ("broken.example.com", "A")
    assert "SERVFAIL" in err.value.reason


def test_unreachable_server_is_a_temporary_error() -> None:
    resolver = Resolver(ServerSource.from_spec(f"127.0.0.1:{free_udp_port()}"), timeout=0.3)
    with pytest.raises(DnsTempError):
        resolver.query("example.com", "TXT")


def test_next_server_is_asked_when_the_first_fails(fresh: DnsTestServer) -> None:
    source = ServerSource((("127.0.0.1", free_udp_port()), ("127.0.0.1", fresh.port)))
    answer = Resolver(source, timeout=0.3).query("mail.example.com", "A")
    assert answer.records == ("192.0.2.1",)


def test_session_asks_each_question_once(fresh: DnsTestServer) -> None:
    session = resolver_for(fresh).session()
    for _ in range(3):
        session.query("mail.example.com", "A")
        session.query("Mail.Example.com.", "a")
    assert session.queries == 1
    assert fresh.queries[("mail.example.com.", "A")] == 1


def test_session_remembers_a_temporary_error(fresh: DnsTestServer) -> None:
    session = resolver_for(fresh).session()
    for _ in range(2):
        with pytest.raises(DnsTempError):
            session.query("broken.example.com", "A")
    assert fresh.queries[("broken.example.com.", "A")] == 1


def test_session_budget_spent_is_a_temporary_error(fresh: DnsTestServer) -> None:
    clock = FakeClock()
    resolver = Resolver(ServerSource.from_spec(fresh.address), timeout=2.0, clock=clock)
    session = resolver.session(budget=5.0)
    session.query("mail.example.com", "A")
    clock.now += 6
    with pytest.raises(DnsTempError, match="budget"):
        session.query("short.example.com", "A")
    assert fresh.queries[("short.example.com.", "A")] == 0


def test_sessions_share_the_resolver_cache_across_threads(fresh: DnsTestServer) -> None:
    resolver = resolver_for(fresh)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: resolver.session().txt("example.com"), range(8)))
    assert all(sorted(a) == sorted(answers[0]) for a in answers)
    assert fresh.queries[("example.com.", "TXT")] <= 4  # threads may race before the cache fills


@pytest.mark.parametrize(
    ("spec", "servers"),
    [
        ("127.0.0.1:5353", (("127.0.0.1", 5353),)),
        ("[::1]:53", (("::1", 53),)),
        ("[::1]", (("::1", 53),)),
        ("192.0.2.1", (("192.0.2.1", 53),)),
        ("2001:db8::53", (("2001:db8::53", 53),)),
        (" 127.0.0.1:53 ", (("127.0.0.1", 53),)),
    ],
)
def test_server_spec_is_parsed(spec: str, servers: tuple[tuple[str, int], ...]) -> None:
    assert ServerSource.from_spec(spec).servers == servers


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "garbage",
        "dns.example.com:53",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:x",
        "[::1]:",
    ],
)
def test_garbage_server_spec_is_a_value_error(spec: str) -> None:
    with pytest.raises(ValueError):
        ServerSource.from_spec(spec)


@pytest.mark.parametrize("spec", ["[::1]junk", "[::1]53"])
def test_text_after_a_bracketed_address_is_a_value_error(spec: str) -> None:
    with pytest.raises(ValueError):
        ServerSource.from_spec(spec)


def test_resolv_conf_nameservers_are_read(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# comment\nsearch example.com\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n"
    )
    assert ServerSource.from_resolv_conf(str(conf)).servers == (
        ("192.0.2.53", 53),
        ("fe80::1", 53),
    )


def test_missing_resolv_conf_means_localhost(tmp_path: Path) -> None:
    source = ServerSource.from_resolv_conf(str(tmp_path / "absent"))
    assert source.servers == (("127.0.0.1", 53),)


def test_make_resolver_picks_zone_then_server_then_resolv_conf(tmp_path: Path) -> None:
    zone_file = tmp_path / "zone.txt"
    zone_file.write_text(ZONE, encoding="utf-8")
    from_zone = make_resolver(dns_server="127.0.0.1:53", dns_zone=zone_file, timeout=1.5)
    assert isinstance(from_zone.source, ZoneSource)
    assert from_zone.timeout == 1.5
    assert from_zone.query("mail.example.com", "A").records == ("192.0.2.1",)
    from_server = make_resolver(dns_server="[::1]:5353")
    assert from_server.source == ServerSource((("::1", 5353),))
    assert isinstance(make_resolver().source, ServerSource)


def test_make_resolver_rejects_a_bad_server_spec() -> None:
    with pytest.raises(UsageError, match="--dns-server not a server: "):
        make_resolver(dns_server="not a server")


def test_make_resolver_names_a_zone_file_it_cannot_parse(tmp_path: Path) -> None:
    zone_file = tmp_path / "bad.zone"
    zone_file.write_text("example.com. 300 IN A not-an-address\n", encoding="utf-8")
    with pytest.raises(UsageError, match=rf"^{zone_file}: bad zone file: "):
        make_resolver(dns_zone=zone_file)


def test_zone_file_with_a_syntax_error_is_rejected(tmp_path: Path) -> None:
    zone_file = tmp_path / "bad.zone"
    zone_file.write_text("example.com. 300 IN A not-an-address\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"bad\.zone"):
        ZoneSource.from_file(zone_file)


@pytest.mark.parametrize(
    ("ip", "name"),
    [
        ("192.0.2.1", "1.2.0.192.in-addr.arpa"),
        ("2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
        ("2001:DB8::A", "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
    ],
)
def test_reverse_name(ip: str, name: str) -> None:
    assert reverse_name(ip) == name


def test_reverse_name_of_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        reverse_name("not-an-ip")


def test_odd_and_internationalized_names_answer_alike_from_both_sources(
    fresh: DnsTestServer,
) -> None:
    for resolver in (resolver_for(fresh), Resolver(ZoneSource(ZONE))):
        assert resolver.query("bücher.example", "A").records == ("192.0.2.9",)
        assert resolver.query("macro%percent  space.example.com", "A").records == ("192.0.2.8",)


def test_concurrent_misses_on_one_name_send_one_query(dns_server) -> None:  # type: ignore[no-untyped-def]
    import threading as _threading

    from tests.conftest import resolver_for as _resolver_for

    server = dns_server('burst.example. TXT "v=spf1 -all"\n')
    resolver = _resolver_for(server)
    start = _threading.Barrier(8)
    answers = []

    def ask() -> None:
        start.wait()
        answers.append(resolver.query("burst.example", "TXT"))

    threads = [_threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 8 and len(set(answers)) == 1
    assert server.queries[("burst.example.", "TXT")] == 1


# --- the lean UDP exchange (classifier/lookup/wire.py) against dnspython's own ------------


def test_lean_exchange_reads_replies_as_dnspython_does(fresh: DnsTestServer) -> None:
    """Record for record, in order, with the same TTL: the lean reader and dnspython agree."""
    host, port = fresh.address.split(":")
    source = ServerSource.from_spec(fresh.address)
    for qname, rdtype in [*QUESTIONS, ("broken.example.com", "A")]:
        qname = qname.lower().rstrip(".")
        name, kind = dns.name.from_text(qname + "."), dns.rdatatype.from_text(rdtype)
        full = _full_exchange(qname, rdtype, host, int(port), 2)
        lean = dns_wire.ask(name, kind, (host, int(port)), 2)
        assert lean is not None, (qname, rdtype)
        if rdtype == "TXT" and qname.startswith("huge"):
            assert lean.truncated and not lean.answer
            continue
        assert (lean.rcode, lean.answer, lean.authority) == (
            full.rcode,
            full.answer,
            full.authority,
        ), (qname, rdtype)
        if full.rcode in (0, 3):
            assert source.lookup(qname, rdtype, 2) == (
                _answer_from_reply(qname, rdtype, name, kind, full)
                if full.rcode == 0
                else Answer(qname, rdtype, (), nxdomain=True, ttl=300)
            ), (qname, rdtype)


def test_stray_and_forged_datagrams_do_not_answer_the_query() -> None:
    """Only the reply from the server asked, with our ID and our question, is read (RFC 5452)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.bind(("127.0.0.1", 0))

    def respond() -> None:
        wire, client = server.recvfrom(65535)
        query = dns.message.from_wire(wire)

        def reply(address: str, qid: int | None = None, qname: str | None = None) -> bytes:
            asked = dns.message.make_query(qname, "A") if qname else query
            response = dns.message.make_response(asked)
            response.id = query.id if qid is None else qid
            name = asked.question[0].name
            response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", address))
            return response.to_wire()

        forger.sendto(reply("203.0.113.1"), client)  # right ID, wrong source port
        server.sendto(reply("203.0.113.2", qid=(query.id + 1) % 65536), client)  # wrong ID
        server.sendto(reply("203.0.113.3", qname="other.example."), client)  # other question
        server.sendto(b"\x00", client)  # not DNS at all
        server.sendto(reply("192.0.2.1"), client)

    thread = threading.Thread(target=respond)
    thread.start()
    try:
        answer = ServerSource((("127.0.0.1", server.getsockname()[1]),)).lookup(
            "mail.example.com", "A", 2
        )
    finally:
        thread.join(5)
        server.close()
        forger.close()
    assert answer.records == ("192.0.2.1",)


def test_a_server_that_never_answers_our_question_times_out() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))

    def respond() -> None:
        wire, client = server.recvfrom(65535)
        server.sendto(wire, client)  # the query itself echoed back: not a response

    thread = threading.Thread(target=respond)
    thread.start()
    try:
        with pytest.raises(DnsTempError, match=r"timeout after 0\.3s"):
            Resolver(ServerSource((("127.0.0.1", server.getsockname()[1]),)), timeout=0.3).query(
                "mail.example.com", "A"
            )
    finally:
        thread.join(5)
        server.close()


def test_queries_sent_ahead_are_read_once_and_let_go_when_unasked(fresh: DnsTestServer) -> None:
    resolver = resolver_for(fresh)
    session = resolver.session()
    ahead = [("mail.example.com", "A"), ("example.com", "MX"), ("MAIL.example.com.", "A")]
    session.send_ahead(ahead)
    assert session.query("mail.example.com", "A").records == ("192.0.2.1",)
    assert session.queries == 1  # counted when a check asks, not when sent
    session.close()
    assert not resolver._sent and not resolver._inflight
    # The unread query did go out (its reply is dropped with the socket), once.
    wait_for(lambda: fresh.queries[("example.com.", "MX")] == 1, 5, "the MX query")
    assert dict(fresh.queries) == {("mail.example.com.", "A"): 1, ("example.com.", "MX"): 1}
    # The question let go is asked afresh when someone needs it.
    assert len(resolver.query("example.com", "MX").records) == 2
    assert fresh.queries[("example.com.", "MX")] == 2


def test_a_query_sent_ahead_is_read_by_whichever_session_asks_first(fresh: DnsTestServer) -> None:
    resolver = resolver_for(fresh)
    first, second = resolver.session(), resolver.session()
    first.send_ahead([("mail.example.com", "AAAA")])
    assert second.query("mail.example.com", "AAAA").records == ("2001:db8::1",)
    assert first.query("mail.example.com", "AAAA").records == ("2001:db8::1",)  # from the cache
    first.close()
    assert fresh.queries[("mail.example.com.", "AAAA")] == 1


def test_nothing_is_sent_ahead_for_a_zone_or_an_unsendable_name(fresh: DnsTestServer) -> None:
    zone = Resolver(ZoneSource(ZONE)).session()
    zone.send_ahead([("mail.example.com", "A")])
    assert zone.query("mail.example.com", "A").records == ("192.0.2.1",)
    resolver = resolver_for(fresh)
    session = resolver.session()
    session.send_ahead([("a" * 64 + ".example.com", "TXT"), ("example.com", "BOGUS")])
    session.close()
    assert fresh.query_count == 0 and not resolver._inflight


def test_a_process_holding_over_1024_descriptors_still_gets_answers(fresh: DnsTestServer) -> None:
    """select() cannot watch a descriptor over 1,023; a busy daemon may hold that many."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"descriptor limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(1030)]
    try:
        assert held[-1].fileno() > 1024
        assert resolver_for(fresh).query("mail.example.com", "A").records == ("192.0.2.1",)
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# Names as a sender writes them: case, trailing dots, white space, escapes, IDNA, odd octets.
_NAME_TEXT = st.lists(
    st.sampled_from([*'aZ09-_. \t\\"()[];@*ßéÄ\x00\x7f', "xn--", "..", "\\046", "\\."]),
    max_size=30,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_NAME_TEXT, st.sampled_from(["TXT", "txt", "A", "Mx", "PTR"]))
def test_a_cache_key_is_its_own_key(qname: str, rdtype: str) -> None:
    """The resolver finds a question asked in the cache's spelling without normalising it
    again (`Resolver.query`'s first look): that is right only because `_key` gives a
    cache key back unchanged."""
    key = _key(qname, rdtype)
    assert _key(*key) == key
