"""Where reports go: rua= read at send time, external destinations verified (RFC 9990 §4)."""

from __future__ import annotations

from collections.abc import Callable

from classifier.aggregate.destinations import MAX_URIS, find_destinations
from tests.conftest import resolver_for
from tests.dnsserver import DnsTestServer

OWN = "mailto:own@example.com,mailto:ops@mail.example.com"
OTHERS = "mailto:agg@vendor.example!50k,mailto:x@nobody.example,https://vendor.example/r"
REPLACED = "mailto:in@vendor.example,mailto:in@elsewhere.example"
MANY = ",".join(f"mailto:{c}@many.example" for c in "abcdefa")
ZONE = f"""\
_dmarc.example.com.  TXT "v=DMARC1; p=none; rua={OWN},{OTHERS}"
example.com.         TXT "v=spf1 -all"
_dmarc.example.      TXT "v=DMARC1; p=none; psd=y"
example.com._report._dmarc.vendor.example. TXT "v=DMARC1; rua={REPLACED}"
_dmarc.many.example. TXT "v=DMARC1; p=none; rua={MANY}"
_dmarc.two.example.  TXT "v=DMARC1; p=none; rua=mailto:a@two.example"
_dmarc.two.example.  TXT "v=DMARC1; p=reject"
"""


def test_rua_destinations_own_external_replaced_and_skipped(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    dns = resolver_for(dns_server(ZONE)).session()
    found = find_destinations("example.com", dns)
    assert found.problem == ""
    # The destination's own rua= replaces ours, toward the same host only (§4 step 9);
    # the obsolete !50k suffix is ignored (RFC 9989 §4.8, Appendix C.4).
    assert [(d.address, d.external) for d in found.send_to] == [
        ("own@example.com", False),
        ("ops@mail.example.com", False),
        ("in@vendor.example", True),
    ]
    assert [(s.uri, s.why.split(":")[0]) for s in found.skipped] == [
        ("mailto:x@nobody.example", "external destination not authorised"),
        ("https://vendor.example/r", "not a mailto"),
    ]


def test_a_record_naming_many_addresses_gets_reports_at_the_first_few(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    found = find_destinations("many.example", resolver_for(dns_server(ZONE)).session())
    assert [d.address for d in found.send_to] == [f"{c}@many.example" for c in "abcde"]
    assert len(found.send_to) == MAX_URIS
    assert [s.uri for s in found.skipped] == ["mailto:f@many.example", "mailto:a@many.example"]


def test_no_record_two_records_and_a_dns_failure_send_nothing(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    server = dns_server(ZONE, servfail=("_dmarc.down.example.",))
    dns = resolver_for(server, timeout=0.5).session()
    assert (
        find_destinations("none.example", dns).problem == "no DMARC record at _dmarc.none.example"
    )
    assert find_destinations("two.example", dns).problem == "2 DMARC records at _dmarc.two.example"
    down = find_destinations("down.example", dns)
    assert down.temporary and down.send_to == ()
