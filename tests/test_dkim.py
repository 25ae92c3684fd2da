"""Tests for classifier.auth.dkim: one result per DKIM-Signature, public vectors and crafted mail.

Key records are served by real loopback DNS servers (tests/dnsserver.py).
Servers are pooled per module, one per distinct zone, so that the ~50 cases
do not each pay the half-second a server takes to stop.
"""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dkim
import pytest
import yaml
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import example, given, settings
from hypothesis import strategies as st

from classifier.auth import dkim_body
from classifier.auth.dkim import (
    MAX_SIGNATURES,
    DkimSignatureResult,
    _Outcome,
    _result,
    check_dkim,
    dkim_summary,
)
from classifier.auth.dkim_signature import _B_VALUE, SignedMessage, blank_b
from classifier.lookup.resolver import DnsSession, Resolver
from classifier.lookup.sources import ServerSource
from tests.conftest import resolver_for, vector_path
from tests.dnsserver import DnsTestServer, free_udp_port

STALWART_TIME = 1667843664  # the clock of stalwart mail-auth's dkim_verify test
GMAIL_2012_KEY = (
    "k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA1Kd87/UeJjenpabgbFwh+eBCsSTrqmwIYYvy"
    "wlbhbqoo2DymndFkbjOVIPIldNs/m40KF+yzMn1skyoxcTUGCQs8g3FgD2Ap3ZB5DekAo5wMmk4wimDO+U8QzI3SD"
    "07y2+07wlNWwIt8svnxgdxGkVbbhzY8i+RQ9DpSVpPbF7ykQxtKXkv/ahW3KjViiAH+ghvvIhkx4xYSIc9oSwVmAl5"
    "OctMEeWUwg8Istjqz8BZeTWbf41fbNhte7Y+YqZOwq1Sd0DbvYAD9NOZK9vlfuac0598HY+vtSBczUiKERHv1yRbcaQ"
    "tZFh5wtiRrN04BLUTD21MycBX5jYchHjPY/wIDAQAB"
)
FOOTBALL_ED25519 = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
# A 512-bit RSA test key, made for these tests only (openssl genrsa 512).
RSA_512_PRIVATE = b"""-----BEGIN RSA PRIVATE KEY-----
MIIBOwIBAAJBAKdoYcI3AbucxrsymgGRwMU+VPvmPo6qbfXW4QOnu8mpz8UR1KxV
Y4FaIDWVSSGdboXpk8W9DqtDzpgGmxWd0+8CAwEAAQJBAIaBzvJOYh0NJXwpdyZF
pt6Ua5IN+DuG4l0Brr/SGIc5laVRF33CjcY8PyxsAeFX1ZwzynS2WPiF1HLh8LG5
GbECIQDXIl2L1LvEpHB1+yqA8CvdjyBqgOrvLfYEbt7sOGhgiQIhAMc1Jy5O2fAH
fHNo6b9X3dwbA0sr6l6eX7DAFAeK0cK3AiASaY2KDy322YAKiPGNUYDfmIVUuC3j
RJK+tGJ94yIDyQIgNpg5obZYgjD7CYIiNZ92HUGF+I8Tj1TmMsGhe6Ou8ycCIQDM
bTl6CyhcyoaFni38AsHAjqBdppjNoOCksEA8e+H+qw==
-----END RSA PRIVATE KEY-----
"""
RSA_512_PUBLIC = (
    "v=DKIM1; k=rsa; p=MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKdoYcI3AbucxrsymgGRwMU+VPvmPo6qbfXW4QOnu8"
    "mpz8UR1KxVY4FaIDWVSSGdboXpk8W9DqtDzpgGmxWd0+8CAwEAAQ=="
)
PLAIN = (
    b"From: Test User <test@example.com>\r\nTo: somebody@example.com\r\n"
    b"Subject: Testing\r\nDate: Mon, 01 Jan 2011 01:02:03 +0400\r\n"
    b"Message-ID: <example@example.com>\r\n\r\nThis is a test message.\r\n"
)


def zone_text(records: dict[str, str]) -> str:
    """Gives zone text with one TXT record per owner, split into strings of at most 255 octets."""
    lines = []
    for owner, record in records.items():
        name = re.sub(r'([();"\\ ])', r"\\\1", owner.rstrip("."))
        value = record.replace("\\", "\\\\").replace('"', '\\"')
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
        lines.append(f"{name}. 300 IN TXT " + " ".join(f'"{c}"' for c in chunks))
    return "\n".join(lines) + "\n"


def crlf(data: bytes) -> bytes:
    """Gives the message with CRLF line ends, as it travels in SMTP."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def dkimpy_data(name: str) -> Path:
    return vector_path("dkim", "dkimpy-data", name)


def key_file(name: str) -> str:
    return dkimpy_data(name).read_text().strip()


@pytest.fixture(scope="module")
def dns_for() -> Iterator[Callable[[dict[str, str]], DnsSession]]:
    """Gives a factory: key records → a DNS session against a loopback server holding them."""
    servers: dict[str, DnsTestServer] = {}

    def session(records: dict[str, str]) -> DnsSession:
        text = zone_text(records)
        if text not in servers:
            servers[text] = DnsTestServer(text)
        return resolver_for(servers[text]).session()

    yield session
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        list(pool.map(DnsTestServer.stop, servers.values()))


def signed(
    message: bytes, selector: bytes, domain: bytes, key: bytes, algorithm: bytes = b"rsa-sha256"
) -> bytes:
    """Gives the message with one more DKIM-Signature on top, made by dkimpy."""
    header = dkim.sign(
        message,
        selector,
        domain,
        key,
        signature_algorithm=algorithm,
        include_headers=[b"from", b"to", b"subject"],
    )
    return header + message


def results_of(results: tuple[DkimSignatureResult, ...]) -> tuple[str, ...]:
    return tuple(r.result for r in results)


# --- RFC 8463 and RFC 6376 examples -------------------------------------------------------


def rfc8463_records() -> dict[str, str]:
    folder = vector_path("dkim", "rfc8463-appendix-a")
    return {
        "brisbane._domainkey.football.example.com": (
            folder / "brisbane._domainkey.football.example.com.txt"
        )
        .read_text()
        .strip(),
        "test._domainkey.football.example.com": (
            folder / "test._domainkey.football.example.com.txt"
        )
        .read_text()
        .strip(),
    }


def test_rfc8463_ed25519_and_rsa_signatures_both_pass(dns_for):
    message = vector_path("dkim", "rfc8463-appendix-a", "a3-signed.eml").read_bytes()
    results = check_dkim(message, dns_for(rfc8463_records()))
    assert [(r.result, r.algorithm, r.selector, r.bits, r.index) for r in results] == [
        ("pass", "ed25519-sha256", "brisbane", 256, 0),
        ("pass", "rsa-sha256", "test", 1024, 1),
    ]
    assert results[0].b == "/gCrinpc"
    assert results[0].domain == "football.example.com"
    assert results[0].identity == "@football.example.com"


def test_rfc8463_body_change_is_body_hash_mismatch_for_both(dns_for):
    message = vector_path("dkim", "rfc8463-appendix-a", "a3-signed.eml").read_bytes()
    tampered = message.replace(b"Joe.", b"Mallory.")
    assert tampered != message
    results = check_dkim(tampered, dns_for(rfc8463_records()))
    assert [(r.result, r.reason) for r in results] == [("fail", "body hash mismatch")] * 2


def lieser_defaults() -> dict[str, str]:
    cases = yaml.safe_load(vector_path("dkim", "dkim-verifier-lieser", "cases.yaml").read_text())
    return dict(cases["dns_default"])


def test_rfc6376_a2_corrected_example_passes(dns_for):
    path = vector_path("dkim", "dkim-verifier-lieser", "data", "rfc6376-A.2.eml")
    (result,) = check_dkim(crlf(path.read_bytes()), dns_for(lieser_defaults()))
    assert (result.result, result.domain, result.selector, result.identity, result.bits) == (
        "pass",
        "example.com",
        "brisbane",
        "joe@football.example.com",
        1024,
    )


# --- dkimpy's fixed vectors (dkim/SOURCE.md) ---------------------------------------------

DKIMPY_VECTORS = [
    ("test2.message", {"20120113._domainkey.gmail.com": GMAIL_2012_KEY}, ("pass",), ""),
    (
        "rfc6376.signed.msg",
        {
            "brisbane._domainkey.football.example.com": FOOTBALL_ED25519,
            "test._domainkey.football.example.com": "@test.txt",
        },
        ("pass", "pass"),
        "",
    ),
    (
        "rfc6376.signed.rsa.msg",
        {"test._domainkey.football.example.com": "@test.txt"},
        ("pass",),
        "",
    ),
    # dkimpy's own test only asks "not True, no crash"; a key that does not decode is
    # unusable, a PERMFAIL of RFC 6376 §6.1.2 and so permerror in RFC 8601 terms.
    (
        "rfc6376.signed.rsa.msg",
        {
            "test._domainkey.football.example.com": "k=rsa; p=MFwwDQYJKoZIhvNAQEBBQADSwAwSAJBANm"
            "Be10IgY+u7h3enWTukkqtUD5PR52Tb/mPfjC0QJTocVBq6Za/PlzfV+Py92VaCak19F4WrbVTK5Gg5tW220M"
            "CAwEAAQ=="
        },
        ("permerror",),
        "unusable key",
    ),
    # d= with a parenthesis is not a domain: a malformed signature (RFC 6376 §3.5), permerror.
    (
        "test.message.baddomain",
        {"test._domainkey.legitimate.com(.attacker.com": "@test.txt"},
        ("permerror",),
        "d= value is not valid",
    ),
    ("ed25519test2.msg", {"sed._domainkey.test.ex": "@eximtest.dns"}, ("pass",), ""),
    # Windows-1258 text and no signature: nothing to verify, and no crash.
    ("rfc6376.w1258.msg", {}, (), ""),
]


@pytest.mark.parametrize(
    ("message", "records", "expected", "reason"),
    DKIMPY_VECTORS,
    ids=[f"{v[0]}-{'-'.join(v[2]) or 'unsigned'}" for v in DKIMPY_VECTORS],
)
def test_dkimpy_fixed_vectors(dns_for, message, records, expected, reason):
    records = {k: key_file(v[1:]) if v.startswith("@") else v for k, v in records.items()}
    results = check_dkim(dkimpy_data(message).read_bytes(), dns_for(records))
    assert results_of(results) == expected
    assert all(reason in r.reason for r in results)


KEY_RECORD_VARIANTS = [
    ("test.txt", "pass", "signature verified"),
    ("test2.txt", "pass", "signature verified"),  # no k=: rsa by default (RFC 6376 §3.6.1)
    ("badversion.txt", "permerror", "v= is not DKIM1"),
    ("badk.txt", "permerror", "unknown key type k=ed25519-sha256"),
    ("test_tlsrpt.txt", "permerror", "not for email (s=tlsrpt)"),
]


@pytest.mark.parametrize(("record", "expected", "reason"), KEY_RECORD_VARIANTS)
def test_dkimpy_key_records_decide_the_result(dns_for, record, expected, reason):
    message = signed(PLAIN, b"test", b"example.com", dkimpy_data("test.private").read_bytes())
    (result,) = check_dkim(message, dns_for({"test._domainkey.example.com": key_file(record)}))
    assert (result.result, reason in result.reason) == (expected, True)


@pytest.mark.parametrize(
    ("private", "public"),
    [
        ("2048_testkey.key", "2048_testkey_wo_markers.pub.txt"),
        ("2048_testkey.key", "2048_testkey_wo_markers.pub.rsa.txt"),
        ("2048_testkey_PKCS8.key", "2048_testkey_PKCS8.key.pub.txt"),
        ("1024_testkey.key", "1024_testkey_wo_markers.pub.rsa.txt"),
    ],
)
def test_rsa_public_key_forms_all_verify(dns_for, private, public):
    message = signed(PLAIN, b"k", b"example.net", dkimpy_data(private).read_bytes())
    (result,) = check_dkim(message, dns_for({"k._domainkey.example.net": key_file(public)}))
    assert (result.result, result.bits) == ("pass", int(private[:4]))


# --- lieser/dkim_verifier cases.yaml -----------------------------------------------------

# dkim_verifier's error types, as RFC 8601 results with the reason we give.
LIESER_ERRORS = {
    "DKIM_SIGERROR_MISSING_V": ("permerror", "missing v="),
    "DKIM_SIGERROR_KEY_REVOKED": ("permerror", "key revoked"),
    "DKIM_SIGERROR_KEY_HASHNOTINCLUDED": ("permerror", "key h=sha1 excludes"),
    "DKIM_SIGERROR_KEY_MISMATCHED_K": ("permerror", "does not match a="),
    "DKIM_SIGERROR_KEY_NOTEMAILKEY": ("permerror", "not for email"),
    "DKIM_SIGERROR_DOMAIN_I": ("permerror", "t=s forbids"),
    "DKIM_SIGERROR_CORRUPT_BH": ("fail", "body hash mismatch"),
    "DKIM_SIGERROR_BADSIG": ("fail", "signature did not verify"),
}
# DKIM_POLICYERROR_UNSIGNED_HEADER_ADDED is dkim_verifier's own policy verdict on a valid
# signature, not an RFC 6376 result.  A second From breaks the signature anyway (dkimpy
# signs one more From than h= lists); for Subject/Date/To the signature stays valid and
# we pass it, naming the unsigned extra field as evidence (RFC 6376 §8.15).
LIESER_POLICY = {
    "From": ("fail", "signature did not verify"),
    "Subject": ("pass", "unsigned extra Subject field"),
    "Date": ("pass", "unsigned extra Date field"),
    "To": ("pass", "unsigned extra To field"),
}


def lieser_cases() -> list[dict]:
    path = vector_path("dkim", "dkim-verifier-lieser", "cases.yaml")
    return yaml.safe_load(path.read_text())["cases"]


def lieser_expected(entry: dict) -> tuple[str, str]:
    if entry["result"] == "SUCCESS":
        return "pass", "signature verified"
    if entry["error_type"] == "DKIM_POLICYERROR_UNSIGNED_HEADER_ADDED":
        return LIESER_POLICY[entry["error_params"][0]]
    return LIESER_ERRORS[entry["error_type"]]


@pytest.mark.parametrize("case", lieser_cases(), ids=lambda c: c["name"])
def test_dkim_verifier_cases(dns_for, case):
    records = lieser_defaults()
    p_value = records["brisbane._domainkey.example.com"].split("p=", 1)[1]
    for owner, record in (case.get("dns_override") or {}).items():
        records[owner] = re.sub(r"p=P$", f"p={p_value}", record)
    message = crlf(vector_path("dkim", "dkim-verifier-lieser", case["file"]).read_bytes())
    expected = case["expected"]
    if isinstance(expected, dict):  # per-mode expectations; the DKIM result is the same in all
        expected = next(iter(expected.values()))
    results = check_dkim(message, dns_for(records))
    if all("selector" in e for e in expected):  # dkim_verifier sorts; match by s=
        pairs = [(e, next(r for r in results if r.selector == e["selector"])) for e in expected]
    elif len(expected) == len(results):
        pairs = list(zip(expected, results, strict=True))
    else:  # "From domain equals SDID and AUID" describes both signatures of its file with one
        pairs = [(expected[0], r) for r in results]
    assert results
    for entry, result in pairs:
        want, reason = lieser_expected(entry)
        assert (result.result, reason in result.reason) == (want, True), result.reason
        if entry.get("sdid"):
            assert result.domain == entry["sdid"]
        if entry.get("auid"):
            assert result.identity == entry["auid"]
        if entry.get("algorithm"):
            assert result.algorithm == entry["algorithm"]


# --- stalwart mail-auth vectors ----------------------------------------------------------


def stalwart(name: str) -> tuple[dict[str, str], bytes]:
    """Gives (key records, message with CRLF) of a stalwart test file."""
    raw = vector_path("dkim", "stalwart-mail-auth", name).read_bytes().replace(b"\r\n", b"\n")
    head, _, message = raw.partition(b"\n\n")
    records = dict(line.split(" ", 1) for line in head.decode().splitlines() if line.strip())
    return records, crlf(message)


@pytest.mark.parametrize("name", [f"00{n}.txt" for n in range(1, 7)])
def test_stalwart_vectors_pass_at_their_time(dns_for, name):
    records, message = stalwart(name)
    results = check_dkim(message, dns_for(records), now=STALWART_TIME)
    assert results[-1].result == "pass"
    assert all(r.result == "pass" for r in results), [r.reason for r in results]


def test_expired_signature_fails_at_todays_clock(dns_for):
    records, message = stalwart("005.txt")
    (result,) = check_dkim(message, dns_for(records))
    assert (result.result, result.reason) == ("fail", "signature expired (x=1667930064)")


def test_white_space_before_the_colon_is_read_as_relaxed_canonicalisation_reads_it(dns_for):
    """One field-name rule (RFC 5322 §4.5): "Subject :" is the Subject field, for DKIM too.

    Relaxed canonicalisation drops the white space (RFC 6376 §3.4.2), so the signature
    still verifies; simple keeps every byte, so there it does not.  (dkimpy's own parser
    refused such a header block: every signature was a permerror.)
    """
    key = dkimpy_data("test.private").read_bytes()
    dns = dns_for({"test._domainkey.example.com": key_file("test.txt")})
    for canon, expected in ((b"relaxed/relaxed", "pass"), (b"simple/simple", "fail")):
        header = dkim.sign(
            PLAIN,
            b"test",
            b"example.com",
            key,
            canonicalize=tuple(canon.split(b"/")),
            include_headers=[b"from", b"to", b"subject"],
        )
        message = (header + PLAIN).replace(b"\r\nSubject: ", b"\r\nSubject : ")
        (result,) = check_dkim(message, dns)
        assert (canon, result.result) == (canon, expected), result.reason


# --- RFC 8301: algorithms and key sizes --------------------------------------------------


def test_rsa_sha1_never_passes(dns_for):
    key = dkimpy_data("test.private").read_bytes()
    dns = dns_for({"test._domainkey.example.com": key_file("test.txt")})
    sha1 = check_dkim(signed(PLAIN, b"test", b"example.com", key, b"rsa-sha1"), dns)
    sha256 = check_dkim(signed(PLAIN, b"test", b"example.com", key, b"rsa-sha256"), dns)
    assert [(r.result, r.algorithm, r.reason) for r in sha1] == [
        ("fail", "rsa-sha1", "rsa-sha1 not allowed (RFC 8301 §3.1)")
    ]
    assert results_of(sha256) == ("pass",)


def test_rsa_key_of_512_bits_fails(dns_for):
    message = signed(PLAIN, b"short", b"example.com", RSA_512_PRIVATE)
    (result,) = check_dkim(message, dns_for({"short._domainkey.example.com": RSA_512_PUBLIC}))
    assert (result.result, result.bits) == ("fail", 512)
    assert result.reason.startswith("key too short (512 bits")


# --- DNS outcomes ------------------------------------------------------------------------


def test_unreachable_dns_is_temperror():
    resolver = Resolver(ServerSource.from_spec(f"127.0.0.1:{free_udp_port()}"), timeout=0.3)
    message = vector_path("dkim", "rfc8463-appendix-a", "a3-signed.eml").read_bytes()
    results = check_dkim(message, resolver.session())
    assert results_of(results) == ("temperror", "temperror")
    assert all(r.reason.startswith("DNS temporary failure: ") for r in results)
    assert dkim_summary(results) == "temperror"


def test_servfail_on_the_key_is_temperror(dns_server):
    owner = "test._domainkey.football.example.com"
    server = dns_server(zone_text(rfc8463_records()), servfail=(owner + ".",))
    message = vector_path("dkim", "rfc8463-appendix-a", "a3-signed.eml").read_bytes()
    results = check_dkim(message, resolver_for(server).session())
    assert results_of(results) == ("pass", "temperror")
    assert dkim_summary(results) == "pass"


def test_missing_key_is_permerror(dns_for):
    message = vector_path("dkim", "rfc8463-appendix-a", "a3-signed.eml").read_bytes()
    records = {"brisbane._domainkey.football.example.com": FOOTBALL_ED25519}
    results = check_dkim(message, dns_for(records))
    assert [(r.result, r.reason) for r in results] == [
        ("pass", "signature verified"),
        ("permerror", "no key for test._domainkey.football.example.com"),
    ]


def test_three_signatures_give_three_results_in_header_order(dns_for):
    rsa = dkimpy_data("test.private").read_bytes()
    ed = vector_path("dkim", "rfc8463-appendix-a", "brisbane.ed25519.private.b64").read_bytes()
    message = signed(PLAIN, b"test", b"example.com", rsa)  # bottom
    message = signed(message, b"gone", b"example.org", rsa)
    message = signed(message, b"brisbane", b"football.example.com", ed.strip(), b"ed25519-sha256")
    records = {
        "test._domainkey.example.com": key_file("test.txt"),
        "brisbane._domainkey.football.example.com": FOOTBALL_ED25519,
    }
    results = check_dkim(message, dns_for(records))
    assert [(r.index, r.selector, r.result) for r in results] == [
        (0, "brisbane", "pass"),
        (1, "gone", "permerror"),
        (2, "test", "pass"),
    ]


def test_signatures_beyond_the_limit_are_not_verified(dns_for):
    message = signed(PLAIN, b"test", b"example.com", dkimpy_data("test.private").read_bytes())
    header, _, rest = message.partition(b"From:")
    many = header * (MAX_SIGNATURES + 2) + b"From:" + rest
    results = check_dkim(many, dns_for({"test._domainkey.example.com": key_file("test.txt")}))
    # One result stands for the two not verified, in the place of the first of them.
    assert results_of(results) == ("pass",) * MAX_SIGNATURES + ("policy",)
    assert results[-1].index == MAX_SIGNATURES
    assert "only 8 per message" in results[-1].reason and "RFC 6376 §6.1" in results[-1].reason
    assert "stands for 2 signatures" in results[-1].reason


def test_the_from_domains_signature_is_verified_below_many_others(dns_for):
    """Signatures a sender puts on top cannot push the author domain's out of the few verified."""
    rsa = dkimpy_data("test.private").read_bytes()
    message = signed(PLAIN, b"test", b"example.com", rsa)  # the From domain's, at the bottom
    for _ in range(MAX_SIGNATURES + 4):
        message = signed(message, b"test", b"elsewhere.test", rsa)
    records = {
        "test._domainkey.example.com": key_file("test.txt"),
        "test._domainkey.elsewhere.test": key_file("test.txt"),
    }
    results = check_dkim(message, dns_for(records))
    assert len(results) == MAX_SIGNATURES + 1  # one stands for the five not verified
    assert (results[-1].domain, results[-1].result) == ("example.com", "pass")
    verified = [r.index for r in results if r.result != "policy"]
    assert verified == [*range(MAX_SIGNATURES - 1), MAX_SIGNATURES + 4]  # then the top ones


def test_signatures_that_differ_in_l_share_one_pass_over_the_body():
    """Each body hash of the noted signatures comes out of the first request (RFC 6376 §3.5)."""
    body = b"line  one \r\n" * 1000
    message = SignedMessage([[b"From", b" x\r\n"]], body, 0)
    relaxed = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    for length in (b"5", b"700", None):
        tags = {b"a": b"rsa-sha256", b"c": b"relaxed/relaxed", b"bh": b"x"}
        message.expect(tags if length is None else {**tags, b"l": length})
    first = message.body_hash(relaxed, "sha256", b"5")
    assert len(message._body_hashes) == 3  # the other two were worked out in the same pass
    canonical = b"line one\r\n" * 1000
    assert first == hashlib.sha256(canonical[:5]).digest()
    assert message.body_hash(relaxed, "sha256", b"700") == hashlib.sha256(canonical[:700]).digest()
    assert message.body_hash(relaxed, "sha256", None) == hashlib.sha256(canonical).digest()


# --- signature and key fields checked by us ----------------------------------------------


def test_timestamp_in_the_future_fails(dns_for):
    message = vector_path("dkim", "rfc8463-appendix-a", "a3-signed.eml").read_bytes()
    results = check_dkim(message, dns_for(rfc8463_records()), now=1528637909 - 86400)
    assert [r.reason for r in results] == ["signature timestamp in the future (t=1528637909)"] * 2
    assert results_of(results) == ("fail", "fail")


def test_expiry_before_timestamp_is_permerror(dns_for):
    message = vector_path("dkim", "rfc8463-appendix-a", "a3-signed.eml").read_bytes()
    tampered = message.replace(b"t=1528637909;", b"t=1528637909; x=1528637000;", 1)
    results = check_dkim(tampered, dns_for(rfc8463_records()))
    assert (results[0].result, results[0].reason) == (
        "permerror",
        "x=1528637000 is not after t=1528637909",
    )


def test_unsigned_from_is_permerror(dns_for):
    message = vector_path("dkim", "rfc8463-appendix-a", "a3-signed.eml").read_bytes()
    tampered = re.sub(rb"h=[^;]*;", b"h=to : subject;", message, count=1)
    results = check_dkim(tampered, dns_for(rfc8463_records()))
    assert (results[0].result, results[0].reason) == (
        "permerror",
        "From header field not signed (RFC 6376 §6.1.1)",
    )


def test_testing_key_is_flagged(dns_for):
    message = signed(PLAIN, b"test", b"example.com", dkimpy_data("test.private").read_bytes())
    record = key_file("test.txt").replace("k=rsa;", "k=rsa; t=y;")
    (result,) = check_dkim(message, dns_for({"test._domainkey.example.com": record}))
    assert (result.result, result.testing) == ("pass", True)


# --- hostile input -----------------------------------------------------------------------

SIG = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=test; h=from; bh=AAAA; b="
BAD_INPUT = [
    ("empty", b"", ()),
    ("no-headers", b"\r\nHey gang,\r\nThis is a test message.\r\n", ()),
    ("binary-garbage", random.Random(1).randbytes(5000), ()),
    ("long-unsigned-header-line", b"X-Long: " + b"a" * 100_000 + b"\r\n" + PLAIN, ()),
    ("long-signature", SIG + b"A" * 100_000 + b"\r\n" + PLAIN, ("permerror",)),
    (
        "garbage-in-signature",
        b"DKIM-Signature: " + bytes(range(256)) + b"\r\n" + PLAIN,
        ("permerror",),
    ),
    ("continuation-first", b" folded\r\n" + SIG + b"AAAA\r\n" + PLAIN, ("permerror",)),
    (
        "8bit-headers",
        "Subject: Jörg \xff\r\n".encode("latin-1") + SIG + b"AAAA\r\n" + PLAIN,
        ("fail",),
    ),
    ("whitespace-b", SIG + b" \r\n " * 3000 + b"=\r\n" + PLAIN, ("permerror",)),
]


@pytest.mark.parametrize(
    ("message", "expected"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_gives_results_not_exceptions(dns_for, message, expected):
    results = check_dkim(message, dns_for({"test._domainkey.example.com": key_file("test.txt")}))
    assert results_of(results) == expected
    assert all(r.reason for r in results)


def test_too_long_signature_says_so(dns_for):
    (result,) = check_dkim(SIG + b"A" * 100_000 + b"\r\n" + PLAIN, dns_for({}))
    assert (result.reason, result.domain, result.selector) == (
        "header too long (100064 octets)",
        "example.com",
        "test",
    )


def test_unparseable_header_block_still_names_each_signature(dns_for):
    message = (
        SIG + b"AAAA\r\nnot a header line\r\n" + SIG.replace(b"s=test", b"s=two") + b"AAAA\r\n\r\n"
    )
    results = check_dkim(message, dns_for({}))
    assert [(r.result, r.selector, r.index) for r in results] == [
        ("permerror", "test", 0),
        ("permerror", "two", 1),
    ]
    assert results[0].reason.startswith("message header not parseable")


# --- summary and serialisation -----------------------------------------------------------


def one(result: str) -> DkimSignatureResult:
    return DkimSignatureResult(
        result, "example.com", "s", "rsa-sha256", "AAAA", "@example.com", 2048, "r", 0
    )


@pytest.mark.parametrize(
    ("words", "summary"),
    [
        ((), "none"),
        (("fail", "pass"), "pass"),
        (("fail", "temperror"), "temperror"),
        (("permerror", "fail"), "fail"),
        (("permerror",), "permerror"),
        (("policy",), "policy"),
    ],
)
def test_summary_prefers_any_pass_then_temperror(words, summary):
    assert dkim_summary(tuple(one(w) for w in words)) == summary


def test_to_dict_carries_the_evidence():
    assert one("pass").to_dict() == {
        "result": "pass",
        "domain": "example.com",
        "selector": "s",
        "algorithm": "rsa-sha256",
        "b": "AAAA",
        "identity": "@example.com",
        "bits": 2048,
        "reason": "r",
        "index": 0,
        "testing": False,
        "internal_error": False,
    }


# --- our cryptographic step against dkimpy's own verification ----------------------------

EQUIVALENCE_KEYS = [
    ("2048_testkey.key", "2048_testkey_wo_markers.pub.txt", b"rsa-sha256"),
    ("1024_testkey.key", "1024_testkey_wo_markers.pub.txt", b"rsa-sha256"),
    ("ed25519test.key", "ed25519test.dns", b"ed25519-sha256"),
]


def _mutations(message: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """Gives edits a message meets in transit or from an attacker, one at a time."""
    header, _, body = message.partition(b"\r\n\r\n")
    yield "unchanged", message
    yield "subject changed", message.replace(b"Subject: Testing", b"Subject: Testinh")
    yield "unsigned field added", b"X-Spam: no\r\n" + message
    yield "second From on top", b"From: evil@example.org\r\n" + message
    yield "subject refolded", message.replace(b"Subject: Testing", b"Subject:\r\n \t Testing ")
    yield "body trailing blanks", header + b"\r\n\r\n" + body.replace(b"message.", b"message.  ")
    yield "body empty lines added", message + b"\r\n\r\n"
    yield "body changed", message.replace(b"a test", b"a best")
    b_start = message.index(b" b=") + 3
    for _ in range(3):
        at = rng.randrange(b_start, b_start + 40)
        if message[at : at + 1].isalnum():
            swapped = b"B" if message[at : at + 1] != b"B" else b"C"
            yield f"b= octet {at} changed", message[:at] + swapped + message[at + 1 :]
    at = rng.randrange(len(header))
    yield f"header octet {at} dropped", message[:at] + message[at + 1 :]


@pytest.mark.parametrize(("private", "public", "algorithm"), EQUIVALENCE_KEYS)
@pytest.mark.parametrize("canon", [b"simple/simple", b"relaxed/relaxed", b"relaxed/simple"])
def test_verification_agrees_with_dkimpys_own(dns_for, private, public, algorithm, canon):
    """OpenSSL and libsodium decide as dkimpy's own verifier does, edit by edit."""
    key = dkimpy_data(private).read_bytes()
    record = key_file(public)
    header = dkim.sign(
        PLAIN,
        b"sel",
        b"example.com",
        key,
        signature_algorithm=algorithm,
        canonicalize=tuple(canon.split(b"/")),
        include_headers=[b"from", b"to", b"subject", b"date"],
    )
    rng = random.Random(f"{private}{canon!r}")
    verdicts = []
    for what, message in _mutations(crlf(header + PLAIN), rng):
        (ours,) = check_dkim(message, dns_for({"sel._domainkey.example.com": record}))
        theirs = dkim.verify(message, dnsfunc=lambda name, timeout=5: record.encode())
        verdicts.append((what, ours.result == "pass", theirs))
    assert [v for v in verdicts if v[1] != v[2]] == []
    assert verdicts[0][1] and sum(v[1] for v in verdicts) < len(verdicts) - 3


# Pieces of a signature field, whole tags among them so that b= values turn up often.
_TAG_PIECES = [b"; b=", b" b =", b"b", b"=", b";", b" ", b"\t", b"\r\n", b"\r\n\t", b"\n", b"\r"]
_TAG_PIECES += [b"AB+/", b"z", b"0", b"==", b"h=from", b"; bh=", b"v=1"]


@settings(max_examples=3000, deadline=None)
@example(b"; b=AB+/\r\n")
@example(b" b =\r\n\tAB \r\n z==\t;")
@given(st.lists(st.sampled_from(_TAG_PIECES), max_size=24).map(b"".join))
def test_b_value_blanking_matches_dkimpys_pattern(value):
    """Our pattern for emptying b= takes what dkimpy's RE_BTAG takes, and leaves it nothing."""
    ours = _B_VALUE.sub(rb"\1", value)
    assert ours == dkim.RE_BTAG.sub(rb"\1", value)
    assert dkim.RE_BTAG.sub(rb"\1", ours) == ours
    assert blank_b(value) == ours  # the pattern run from its first match on


def test_fields_and_body_are_canonicalised_once_per_message(dns_for):
    """Two signatures with one canonicalisation share the work; the results still differ."""
    rsa = dkimpy_data("test.private").read_bytes()
    message = signed(PLAIN, b"test", b"example.com", rsa)
    message = signed(message, b"test", b"example.com", rsa)
    message = message.replace(b"This is a test", b"This is a fest", 1)
    (top, bottom) = check_dkim(
        message, dns_for({"test._domainkey.example.com": key_file("test.txt")})
    )
    assert (
        (top.result, top.reason) == (bottom.result, bottom.reason) == ("fail", "body hash mismatch")
    )
    shared = SignedMessage([[b"Subject", b" A  b\r\n"], [b"From", b" x\r\n"]], b"body\r\n", 0)
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    first = shared.canonical_fields(policy, {b"subject"})
    assert first == [(b"subject", b"A b\r\n")]
    assert shared.canonical_fields(policy, {b"subject", b"from"})[0] is first[0]
    assert shared.body_hash(policy, "sha256", None) is shared.body_hash(policy, "sha256", None)
    assert shared.body_hash(policy, "sha256", b"2") != shared.body_hash(policy, "sha256", None)


# --- the body hash, a slice at a time (classifier/auth/dkim_body.py) ---------------------------

_BODY_PIECES = [b"a", b"word ", b" ", b"\t", b"  \t ", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"x y"]


@settings(max_examples=1500, deadline=None)
@example(b"", None)
@example(b"\r\n\r\n", None)
@example(b"text \r\n\r\n \t\r\nmore\n\n", 5)
@given(
    st.lists(st.sampled_from(_BODY_PIECES), max_size=40).map(b"".join),
    st.none() | st.integers(min_value=0, max_value=200),
)
def test_body_hash_by_slices_equals_dkimpys_whole_body(body, length):
    """Any body, any slice size, any l=: the same hash as dkimpy's canonicalisation of it all."""
    header = b"Subject: x\r\n\r\n"
    message = header + body
    crlf = re.sub(rb"\r?\n", b"\r\n", body)  # as dkimpy's parser gives the body
    for name in (b"simple", b"relaxed"):
        canonical = CanonicalizationPolicy.from_c_value(b"relaxed/" + name).canonicalize_body(crlf)
        expected = hashlib.sha256(canonical if length is None else canonical[:length]).digest()
        for size in (1, 2, 7, dkim_body.SLICE):
            got = dkim_body.body_hash(message, len(header), name, "sha256", length, size)
            assert got == expected, (name, size)


class MisbehavingDns:
    """A DNS session whose TXT answer is not a list: our code then raises, as a bug would."""

    def txt(self, name: str) -> object:
        return 42


def test_internal_error_in_a_signature_check_is_logged_and_flagged(caplog, monkeypatch):
    from classifier.log import log

    monkeypatch.setattr(log, "propagate", True)  # configure_logging may have turned it off
    message = vector_path("dkim", "rfc8463-appendix-a", "a3-signed.eml").read_bytes()
    with caplog.at_level("ERROR", logger="authsieve"):
        results = check_dkim(message, MisbehavingDns(), now=1528637909)  # type: ignore[arg-type]
    assert [(r.result, r.internal_error) for r in results] == [("permerror", True)] * 2
    assert results[0].reason.startswith("internal error in the DKIM check: TypeError: ")
    records = [r for r in caplog.records if r.name == "authsieve"]
    texts = [r.getMessage() for r in records]  # one escaped line each (classifier/log.py)
    assert len(texts) == 2
    assert all(t.startswith("internal error in the DKIM check | Traceback") for t in texts)
    assert all("TypeError" in t and "\n" not in t for t in texts)
    assert dkim_summary(results) == "permerror"  # the facts make it "internal"


def test_relaxed_body_with_a_megabyte_of_spaces_in_one_line_is_linear() -> None:
    """A line of 1 MB of spaces hashes in about the time of its size (RFC 6376 §3.4.4).

    dkimpy's trailing-space pattern retried the whole run at each space: 100,000
    spaces took over 10 s, so 1 MB took hours.  Run in a child with a generous
    timeout: a regression fails by timing out, not by a tight threshold.
    """
    code = (
        "from classifier.auth import dkim_body\n"
        "body = b'a' + b' ' * 1_000_000 + b'x\\r\\n' + b'b' + b'\\t ' * 500_000 + b'\\r\\n'\n"
        "print(dkim_body.body_hash(b'S: x\\r\\n\\r\\n' + body, 8, b'relaxed', 'sha256').hex())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    expected = hashlib.sha256(b"a x\r\nb\r\n").hexdigest()
    assert done.stdout.strip() == expected


@pytest.mark.parametrize(
    ("b_value", "header_b"),
    [
        (b"AbCdEfGhIjKl" + b"mN" * 200, "AbCdEfGh"),
        (b"Ab \r\n Cd" + b" " * 40 + b"\r\n Ef\r\n Gh\r\n Ij", "AbCdEfGh"),  # folded early
        (b"Ab Cd", "AbCd"),
        (b"", ""),
    ],
)
def test_header_b_is_the_first_8_characters_of_b_without_white_space(
    b_value: bytes, header_b: str
) -> None:
    tags = {b"d": b"example.com", b"s": b"sel", b"a": b"rsa-sha256", b"b": b_value}
    assert _result(0, b"", _Outcome("pass", ""), tags).b == header_b


@pytest.mark.parametrize("identity", [b"football.example.com", b"FOOTBALL.example.com"])
def test_an_i_that_is_d_itself_is_a_permerror_not_an_internal_error(dns_for, identity):
    # A sender wrote i= without "@" and equal to d=: dkimpy's validation indexed before its
    # start (IndexError), which came out as an internal error with a traceback in the log.
    message = vector_path("dkim", "rfc8463-appendix-a", "a3-signed.eml").read_bytes()
    forged = message.replace(b"i=@football.example.com;", b"i=" + identity + b";", 1)
    assert forged != message
    results = check_dkim(forged, dns_for(rfc8463_records()))
    assert results[0].result == "permerror" and not results[0].internal_error, results[0]
    assert "is not an address within d=" in results[0].reason
    assert results[1].result == "pass"  # the other signature is read on its own
