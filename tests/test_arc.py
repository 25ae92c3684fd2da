"""Tests for classifier.auth.arc: ValiMail's validation suite, stalwart chains and the oldest AAR.

One loopback DNS server per key-record set (module-scoped): the ValiMail suite
has 10 scenarios and 171 cases, and a server takes half a second to stop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import pytest
import yaml

from classifier.auth.arc import MAX_INSTANCES, ArcResult, check_arc
from classifier.auth.dkim import dkimpy_txt_lookup
from classifier.lookup.resolver import DnsSession, Resolver
from classifier.lookup.sources import ServerSource
from tests.conftest import resolver_for, vector_path
from tests.dnsserver import DnsTestServer, free_udp_port
from tests.test_dkim import crlf, zone_text

VALIMAIL = vector_path("arc-valimail", "arc-draft-validation-tests.yml")
# Cases whose expected cv is empty in the suite: a chain that already carries cv=fail.
# Disputed upstream (OpenARC issue #78); RFC 8617 §5.2 step 2 makes such a chain fail,
# which is what we assert instead of the empty string.
DISPUTED = {"cv_fail_i1_as_cv_fail", "cv_fail_i2_as2_fail", "cv_fail_i2_as1_fail"}


@cache
def valimail_cases() -> list[tuple[dict[str, str], str, dict]]:
    """Gives (txt-records, case name, case) of every validation case, as YAML parses them."""
    cases = []
    for scenario in yaml.safe_load_all(VALIMAIL.read_text()):
        for name, case in scenario["tests"].items():
            cases.append((scenario["txt-records"], name, case))
    return cases


def valimail_case(name: str) -> tuple[dict[str, str], bytes]:
    records, _, case = next(c for c in valimail_cases() if c[1] == name)
    return records, crlf(case["message"].encode())


@pytest.fixture(scope="module")
def dns_for() -> Iterator[Callable[[dict[str, str]], DnsSession]]:
    """Gives a factory: key records → a DNS session against a loopback server holding them."""
    servers: dict[str, tuple[DnsTestServer, Resolver]] = {}

    def session(records: dict[str, str]) -> DnsSession:
        text = zone_text(records)
        if text not in servers:
            server = DnsTestServer(text)
            servers[text] = (server, resolver_for(server))
        return servers[text][1].session()

    yield session
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        list(pool.map(lambda pair: pair[0].stop(), servers.values()))


@pytest.mark.parametrize(
    ("records", "name", "case"),
    valimail_cases(),
    ids=[f"{i:03d}-{name}" for i, (_, name, _) in enumerate(valimail_cases())],
)
def test_valimail_validation_suite(dns_for, records, name, case):
    result = check_arc(crlf(case["message"].encode()), dns_for(records))
    if name in DISPUTED:
        assert (result.result, "reported failure" in result.reason) == ("fail", True)
    else:
        assert result.result == str(case["cv"]).lower(), result.reason


def test_valimail_suite_has_171_cases_with_3_disputed():
    cases = valimail_cases()
    assert len(cases) == 171
    assert {name for _, name, case in cases if case["cv"] == ""} == DISPUTED


def test_passing_chain_names_its_sealers_oldest_first(dns_for):
    records, message = valimail_case("cv_pass_i3_1")
    result = check_arc(message, dns_for(records))
    assert (result.result, result.instances, result.sealers) == ("pass", 3, ("example.org",) * 3)


def test_oldest_aar_is_parsed(dns_for):
    records, message = valimail_case("cv_pass_i1_1")
    result = check_arc(message, dns_for(records))
    assert result.result == "pass"
    assert result.oldest_results.startswith(
        "lists.example.org; spf=pass smtp.mfrom=jqd@d1.example;"
    )
    assert (result.oldest_spf, result.oldest_dkim, result.oldest_dmarc) == ("pass", "pass", "pass")


def stalwart(name: str) -> tuple[dict[str, str], bytes]:
    """Gives (key records, message with CRLF) of a stalwart ARC test file."""
    raw = vector_path("arc-stalwart", name).read_bytes().replace(b"\r\n", b"\n")
    head, _, message = raw.partition(b"\n\n")
    records = dict(line.split(" ", 1) for line in head.decode().splitlines() if line.strip())
    return records, crlf(message)


def test_stalwart_001_gmail_chain_passes_with_its_view_of_the_message(dns_for):
    records, message = stalwart("001.txt")
    result = check_arc(message, dns_for(records))
    assert (result.result, result.instances, result.sealers) == ("pass", 1, ("google.com",))
    assert result.oldest_results.startswith("mx.google.com; dkim=pass header.i=@ietf.org")
    assert (result.oldest_spf, result.oldest_dkim, result.oldest_dmarc) == ("pass", "pass", "fail")


def test_stalwart_002_ed25519_seal_is_a_fail_dkimpy_cannot_verify(dns_for):
    # Upstream expects pass; dkimpy 1.1 verifies ARC with rsa-sha256 only, so the
    # ed25519-sha256 set at i=1 is reported as an unknown algorithm.
    records, message = stalwart("002.txt")
    result = check_arc(message, dns_for(records))
    assert (result.result, result.reason) == ("fail", "unknown signature algorithm: ed25519-sha256")
    assert result.sealers == ("scamorza.org", "manchego.org")
    assert (result.oldest_dkim, result.oldest_spf) == ("pass", "")


def test_unreachable_dns_is_temperror():
    _, message = valimail_case("cv_pass_i1_1")
    resolver = Resolver(ServerSource.from_spec(f"127.0.0.1:{free_udp_port()}"), timeout=0.3)
    result = check_arc(message, resolver.session())
    assert result.result == "temperror"
    assert result.reason.startswith("DNS temporary failure: ")
    assert result.sealers == ("example.org",)


def test_unsealed_message_is_none(dns_for):
    message = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    result = check_arc(message, dns_for({}))
    assert result == ArcResult("none", 0, (), "", "", "", "", "no ARC header fields")


BASE = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
SEAL = b"ARC-Seal: i=%d; a=rsa-sha256; d=example.org; s=dummy; cv=none; b=AAAA\r\n"
HOSTILE = [
    ("too-many-instances", SEAL % (MAX_INSTANCES + 1) + BASE, "more than 50"),
    ("seal-only", SEAL % 1 + BASE, "Incomplete ARC set for instance 1"),
    ("garbage", b"ARC-Seal: i=1; " + bytes(range(1, 256)) + b"\r\n" + BASE, "ARC not verifiable"),
    ("long-seal", b"ARC-Seal: i=1; b=" + b"A" * 100_000 + b"\r\n" + BASE, "Incomplete ARC set"),
    ("continuation-first", b" x\r\n" + SEAL % 1 + BASE, "ARC not verifiable"),
]


@pytest.mark.parametrize(
    ("message", "reason"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_broken_chains_fail_with_a_reason(dns_for, message, reason):
    result = check_arc(message, dns_for({}))
    assert (result.result, reason in result.reason) == ("fail", True), result.reason


def test_to_dict_carries_sealers_and_oldest_results(dns_for):
    records, message = valimail_case("cv_pass_i2_1")
    data = check_arc(message, dns_for(records)).to_dict()
    assert (data["result"], data["sealers"], data["instances"]) == (
        "pass",
        ("example.org", "example.org"),
        2,
    )
    assert set(data) >= {"oldest_results", "oldest_spf", "oldest_dkim", "oldest_dmarc", "reason"}


def test_the_demo_chain_validates_and_a_changed_body_breaks_it() -> None:
    """The newest ARC-Message-Signature covers the body, hashed a slice at a time."""
    from pathlib import Path

    import dkim

    from classifier.auth.dkim_body import SLICE
    from classifier.lookup.sources import ZoneSource

    root = Path(__file__).resolve().parent.parent / "examples" / "maildir"
    sealed = next(root.glob("*/1741463056.*")).read_bytes()
    keys = Resolver(ZoneSource((root / "zone.txt").read_text()))
    result = check_arc(sealed, keys.session())
    assert (result.result, result.sealers) == ("pass", ("lists.example",))
    longer = sealed + b"word " * SLICE + b"\r\n"  # several slices of text
    result = check_arc(longer, keys.session())
    assert (result.result, result.reason) == (
        "fail",
        "Most recent ARC-Message-Signature did not validate",
    )
    # dkimpy's own validation, which reads the whole body at once, agrees on both.
    lookup = dkimpy_txt_lookup(keys.session())
    assert [dkim.arc_verify(m, dnsfunc=lookup)[0] for m in (sealed, longer)] == [
        dkim.CV_Pass,
        dkim.CV_Fail,
    ]


def test_key_names_are_those_of_every_arc_signature_once() -> None:
    from classifier.auth.arc import key_names

    seal = b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=lists.example; s=k1; b=AAAA\r\n"
    ams = b"ARC-Message-Signature: i=1; a=rsa-sha256; d=lists.example; s=k1; h=from; bh=A; b=A\r\n"
    seal2 = b"ARC-Seal: i=2; a=rsa-sha256; cv=pass; d=fwd.example;\r\n s=k2; b=AAAA\r\n"
    broken = b"ARC-Seal: i=3; this is no tag list\r\n"
    message = broken + seal2 + seal + ams + b"From: a@b.example\r\n\r\nbody\r\n"
    assert key_names(message) == ["k2._domainkey.fwd.example", "k1._domainkey.lists.example"]
    assert key_names(b"From: a@b.example\r\n\r\nARC-Seal: i=1; d=x; s=y\r\n") == []


class MisbehavingDns:
    """A DNS session whose TXT answer is not a list: our code then raises, as a bug would."""

    def txt(self, name: str) -> object:
        return 42


def test_internal_error_in_the_chain_check_is_logged_and_flagged(caplog, monkeypatch):
    from classifier.log import log

    monkeypatch.setattr(log, "propagate", True)  # configure_logging may have turned it off
    _, message = valimail_case("cv_pass_i1_1")
    with caplog.at_level("ERROR", logger="authsieve"):
        result = check_arc(message, MisbehavingDns())  # type: ignore[arg-type]
    assert (result.result, result.internal_error) == ("fail", True)
    assert result.reason.startswith("internal error in the ARC check: TypeError: ")
    (record,) = [r for r in caplog.records if r.name == "authsieve"]
    text = record.getMessage()  # one escaped line (classifier/log.py)
    assert text.startswith("internal error in the ARC check | Traceback")
    assert "TypeError" in text and "\n" not in text
