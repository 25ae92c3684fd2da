"""All checks of one message together, on good and on hostile input (classifier/auth/checks.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import authres
import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.auth.checks import facts_from, first_from_address, run_checks
from classifier.auth.facts import render_header_value
from classifier.auth.header_block import header_end
from classifier.config import config_from_dict
from classifier.message import Message
from tests.conftest import resolver_for, vector_path
from tests.dnsserver import DnsTestServer, free_udp_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = config_from_dict(
    {"classifier": {"authserv_id": "mx.family.example", "trusted_networks": ["203.0.113.25/32"]}}
)
SETTINGS = CONFIG.engine
ZONE = """
example.com. TXT "v=spf1 include:_spf.example.com -all"
_spf.example.com. TXT "v=spf1 ip4:192.0.2.0/24 ~all"
_dmarc.example.com. TXT "v=DMARC1; p=reject"
"""
HOP = (
    b"Return-Path: <news@example.com>\r\n"
    b"Received: from mail.example.com (mail.example.com [192.0.2.10]) by mx.family.example"
    b" (Postfix) with ESMTPS id 4Sg2Va3 for <alice@family.example>;"
    b" Sat, 28 Nov 2026 09:00:01 +0000\r\n"
)


@pytest.fixture
def server(dns_server: Callable[..., DnsTestServer]) -> DnsTestServer:
    return dns_server(ZONE)


def test_spf_include_chain_and_dmarc(server: DnsTestServer) -> None:
    data = HOP + b"From: News <news@example.com>\r\nSubject: x\r\n\r\nHello\r\n"
    report = run_checks(data, SETTINGS, resolver_for(server))
    assert report.spf.result == "pass"
    assert report.spf.mechanism == "include:_spf.example.com"
    assert report.dmarc.result == "pass" and report.dmarc.spf_aligned
    assert report.dkim == () and report.dkim_result == "none"
    facts = facts_from(report)
    assert facts.from_authenticated and facts.from_domain == "example.com"


def test_no_query_is_sent_twice_within_one_message(server: DnsTestServer) -> None:
    data = HOP + b"From: news@example.com\r\n\r\nHello\r\n"
    report = run_checks(data, SETTINGS, resolver_for(server))
    assert report.dns_queries == server.query_count
    assert max(server.queries.values()) == 1


def test_unreachable_dns_gives_temperror_not_fail() -> None:
    from classifier.lookup.resolver import Resolver
    from classifier.lookup.sources import ServerSource

    resolver = Resolver(ServerSource.from_spec(f"127.0.0.1:{free_udp_port()}"), timeout=0.3)
    data = HOP + b"From: news@example.com\r\n\r\nHello\r\n"
    report = run_checks(data, SETTINGS, resolver)
    assert report.spf.result == "temperror"
    assert report.dmarc.result == "temperror"


def test_first_from_address_ignores_display_names_and_comments() -> None:
    msg = Message.parse(b'From: "Doe, John" <John@Example.COM> (work)\r\n\r\n')
    assert first_from_address(msg) == "john@example.com"
    msg = Message.parse(b"From: mailer-daemon@isp.example (Mail Delivery System)\r\n\r\n")
    assert first_from_address(msg) == "mailer-daemon@isp.example"


@pytest.mark.parametrize(
    ("value", "address"),
    [
        # The mailbox DMARC judges, not an address-like display name.
        ('"boss@bank.example" <Thief@Evil.example>', "thief@evil.example"),
        ("Team: Ann <ann@a.example>, bob@b.example;", "ann@a.example"),
        ("Ann <ann@b\xc3\xbccher.example>", "ann@xn--bcher-kva.example"),
        ('"john doe"@example.com', '"john doe"@example.com'),
        ('"john.doe"@example.com', "john.doe@example.com"),
        ("undisclosed-recipients:;", ""),
        ("news@", ""),
    ],
)
def test_first_from_address_is_the_mailbox_dmarc_reads(value: str, address: str) -> None:
    msg = Message.parse(b"From: " + value.encode("latin-1") + b"\r\n\r\n")
    assert first_from_address(msg) == address


HOSTILE = {
    "no headers": b"just a body without any header\r\n",
    "empty": b"",
    "binary garbage": bytes(range(256)) * 64,
    "100 KB header line": HOP + b"Subject: " + b"A" * 100_000 + b"\r\nFrom: a@example.com\r\n\r\nx",
    "8-bit headers": HOP + "From: Jörg <jörg@exämple.com>\r\nSubject: Grüße\r\n\r\nx".encode(),
    "latin-1 headers": HOP + "From: Jörg <j@example.com>\r\n\r\nx".encode("latin-1"),
    "bad dkim signature": HOP
    + b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=x; b=!!; bh=??\r\n"
    + b"From: a@example.com\r\n\r\nx",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_gives_results_not_exceptions(server: DnsTestServer, name: str) -> None:
    report = run_checks(HOSTILE[name], SETTINGS, resolver_for(server))
    assert report.spf.result in {"pass", "fail", "softfail", "neutral", "none", "permerror"}
    assert report.dmarc.result in {"pass", "fail", "none", "permerror", "temperror"}
    for sig in report.dkim:
        assert sig.result != "pass" and sig.reason
    assert facts_from(report).spf == report.spf.result


def test_check_command_exits_0_on_hostile_files(server: DnsTestServer, tmp_path: Path) -> None:
    for n, data in enumerate(HOSTILE.values()):
        (tmp_path / f"m{n}.eml").write_bytes(data)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "classifier.commands.main",
            "check",
            "--json",
            "--dns-server",
            server.address,
            *sorted(str(p) for p in tmp_path.iterdir()),
        ],
        capture_output=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert len(proc.stdout.splitlines()) == len(HOSTILE)


# tracemalloc counts what the checks allocate (the high-water mark of the process, read after
# the file, would hide anything below what reading it took).
MEMORY_PROBE = """
import sys, tracemalloc
from classifier.auth.checks import run_checks
from classifier.config import config_from_dict
from classifier.lookup.resolver import Resolver
from classifier.lookup.sources import ServerSource
data = open(sys.argv[1], "rb").read()
settings = config_from_dict({"classifier": {"authserv_id": "mx.family.example"}}).engine
tracemalloc.start()
report = run_checks(data, settings, Resolver(ServerSource.from_spec(sys.argv[2]), timeout=2))
grown = tracemalloc.get_traced_memory()[1]
print(report.spf.result, [d.result for d in report.dkim], report.arc.result, grown)
"""
# Text of short words: the relaxed algorithm's worst case (a run of spaces after each word).
BIG_BODY = (b"0123456789 " * 6 + b"end \r\n") * (50 * 1024 * 1024 // 72)


def _probe_memory(data: bytes, server: DnsTestServer, tmp_path: Path) -> list[str]:
    """Gives SPF, DKIM and ARC results and the bytes the checks allocated at most, in a child."""
    path = tmp_path / "big.eml"
    path.write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path), server.address],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    spf, rest = proc.stdout.strip().split(" ", 1)
    dkim_results, arc, grown = rest.rsplit(" ", 2)
    # The message is read into memory once (1x); the checks may add at most 2x more.
    assert int(grown) < 2 * len(data), f"grew {int(grown) / len(data):.1f} times the message"
    return [spf, dkim_results, arc]


@pytest.mark.parametrize("canonicalization", [b"relaxed/simple", b"relaxed/relaxed"])
def test_50_mb_body_is_checked_within_3x_its_size(
    dns_server: Callable[..., DnsTestServer], tmp_path: Path, canonicalization: bytes
) -> None:
    from tests.test_annotate import dkim_key_record

    server = dns_server(ZONE + dkim_key_record())
    key = vector_path("dkim", "dkimpy-data", "2048_testkey.key").read_bytes()
    unsigned = b"From: news@example.com\r\nSubject: big\r\n\r\n" + BIG_BODY
    canon = tuple(canonicalization.split(b"/"))
    data = HOP + dkim.sign(unsigned, b"s2048", b"example.com", key, canonicalize=canon) + unsigned
    del unsigned
    # The body hash was computed over all 50 MB.
    assert _probe_memory(data, server, tmp_path) == ["pass", "['pass']", "none"]


def test_50_mb_body_under_an_arc_chain_is_checked_within_3x_its_size(
    dns_server: Callable[..., DnsTestServer], tmp_path: Path
) -> None:
    """dkimpy would canonicalise it whole for the ARC-Message-Signature: 22x in memory."""
    sealed = next((ROOT / "examples" / "maildir").glob("*/1741463056.*")).read_bytes()
    assert b"ARC-Seal:" in sealed and b"c=relaxed/relaxed" in sealed
    end = header_end(sealed)
    assert end is not None
    keys = (ROOT / "examples" / "maildir" / "zone.txt").read_text()  # the sealers' keys
    _, _, arc = _probe_memory(sealed[: end[1]] + BIG_BODY, dns_server(keys), tmp_path)
    assert arc == "fail"  # not validated, and the reason says why


def _signed(data: bytes, algorithm: bytes = b"rsa-sha256", selector: bytes = b"test") -> bytes:
    key = vector_path("dkim", "dkimpy-data", "test.private").read_bytes()
    header, _, rest = data.partition(b"From:")
    body = b"From:" + rest
    sig = dkim.sign(body, selector, b"example.com", key, signature_algorithm=algorithm)
    return header + sig + body


def test_first_records_of_every_check_are_asked_together(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    """DKIM key, DMARC record and both SPF records go out before any reply is read."""
    key = vector_path("dkim", "dkimpy-data", "test.txt").read_text().strip()
    server = dns_server(ZONE + f'test._domainkey.example.com. TXT "{key}"\n')
    data = _signed(HOP + b"From: News <news@example.com>\r\nSubject: x\r\n\r\nHello\r\n")
    resolver = resolver_for(server)
    report = run_checks(data, SETTINGS, resolver)
    assert (report.spf.result, report.dkim_result, report.dmarc.result) == ("pass",) * 3
    first = [
        ("test._domainkey.example.com.", "TXT"),
        ("_dmarc.example.com.", "TXT"),
        ("mail.example.com.", "TXT"),  # the HELO name
        ("example.com.", "TXT"),  # the MAIL FROM domain
    ]
    assert server.log == [*first, ("_spf.example.com.", "TXT")]  # the include comes after
    assert report.dns_queries == len(server.log)
    run_checks(data, SETTINGS, resolver)
    assert len(server.log) == 5  # all cached: nothing is sent ahead again


def test_a_key_sent_for_but_never_looked_up_is_asked_once_and_let_go(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    server = dns_server(ZONE)
    # rsa-sha1 fails before its key is looked up (RFC 8301): the query sent ahead is unused.
    data = _signed(HOP + b"From: news@example.com\r\n\r\nHello\r\n", b"rsa-sha1", b"old")
    resolver = resolver_for(server)
    report = run_checks(data, SETTINGS, resolver)
    assert report.dkim[0].reason.startswith("rsa-sha1 not allowed")
    assert server.queries[("old._domainkey.example.com.", "TXT")] == 1
    assert max(server.queries.values()) == 1
    assert not resolver._sent and not resolver._inflight  # nothing left waiting


# --- quoted local parts in the MAIL FROM (RFC 5321 §4.1.2) -------------------------------------

QUOTED_ZONE = """
sender.example. TXT "v=spf1 ip4:192.0.2.0/24 -all"
evil.test. TXT "v=spf1 -all"
shop.example. TXT "v=spf1 ip4:192.0.2.0/24 -all"
"""


def quoted_sender_message(mail_from: str) -> bytes:
    return (
        f"Return-Path: <{mail_from}>\r\n".encode()
        + HOP.split(b"\r\n", 1)[1]
        + b"From: <a@sender.example>\r\nSubject: x\r\n\r\nHello\r\n"
    )


def test_quoted_local_part_with_at_is_checked_at_the_domain_after_the_last_at(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    server = dns_server(QUOTED_ZONE)
    report = run_checks(
        quoted_sender_message('"john@evil.test"@sender.example'), SETTINGS, resolver_for(server)
    )
    assert (report.spf.result, report.spf.domain) == ("pass", "sender.example")
    assert report.spf.sender == '"john@evil.test"@sender.example'
    assert facts_from(report).mailfrom_domain == "sender.example"
    assert server.queries.get(("evil.test", "TXT"), 0) == 0


def test_quoted_local_part_keeps_its_quotes_in_headers_json_and_log(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    from classifier.evaluate import check_and_annotate

    server = dns_server(QUOTED_ZONE)
    addr = '"ceo;dmarc=pass\\"x"@shop.example'
    outcome = check_and_annotate(
        quoted_sender_message(addr),
        SETTINGS,
        resolver_for(server),
        CONFIG.policies,
        None,
        "alice@family.example",
    )
    msg = Message.parse(outcome.data)
    received_spf = msg.get("Received-SPF") or ""
    assert 'envelope-from="\\"ceo;dmarc=pass\\\\\\"x\\"@shop.example";' in received_spf
    ar = authres.AuthenticationResultsHeader.parse_value(msg.get("Authentication-Results") or "")
    spf = next(r for r in ar.results if r.method == "spf")
    # authres gives the quoted-string's content still escaped (RFC 5322 §3.2.4 quoted-pair)
    assert (spf.result, re.sub(r"\\(.)", r"\1", spf.smtp_mailfrom)) == ("pass", addr)
    assert [r.method for r in ar.results] == ["spf", "dkim", "arc", "dmarc"]
    assert "mailfrom-domain=shop.example;" in (msg.get("X-Authsieve") or "")
    # One word in the log line: quoted, its \\ and " escaped (attacker review, issue 15).
    assert ' from="<\\"ceo;dmarc=pass\\\\\\"x\\"@shop.example>" spf=' in outcome.summary
    report = run_checks(quoted_sender_message(addr), SETTINGS, resolver_for(server))
    data = report.to_dict()
    assert data["envelope"]["mail_from"] == addr  # type: ignore[index]
    assert data["spf"]["sender"] == addr  # type: ignore[index]


# --- several From domains, judged by the whole check and the default policy ------------------

BANK_ZONE = '_dmarc.bank.example. TXT "v=DMARC1; p=reject"\n' + "".join(
    f'x{i}.example. TXT "v=spf1 ip4:192.0.2.0/24 -all"\n' for i in range(1, 6)
)


def bank_message(from_value: str) -> bytes:
    return (
        b"Return-Path: <bounce@x1.example>\r\n"
        + HOP.split(b"\r\n", 1)[1]
        + f"From: {from_value}\r\nSubject: Your account\r\n\r\nHello\r\n".encode()
    )


def test_six_from_domains_are_not_more_lenient_than_the_first(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    from classifier.policies import Policy
    from classifier.policy.verdict import decide

    server = dns_server(BANK_ZONE)
    bank = '"Bank" <security@bank.example>'
    alone = facts_from(run_checks(bank_message(bank), SETTINGS, resolver_for(server)))
    extra = ", ".join(f"<a@x{i}.example>" for i in range(1, 6))
    six = facts_from(run_checks(bank_message(f"{bank}, {extra}"), SETTINGS, resolver_for(server)))
    assert (alone.dmarc, alone.dmarc_policy) == ("fail", "reject")
    assert (six.dmarc, six.dmarc_policy, six.from_domain) == ("fail", "reject", "bank.example")
    assert decide(alone, Policy()).action == decide(six, Policy()).action == "quarantine"
    # The bank last: x1..x5 are evaluated (x1 passes SPF aligned), the bank is not, and
    # may publish p=reject: as severe as the bank alone (attacker review: it was junk, or
    # inbox for a user with dmarc_permerror = "inbox").
    last = facts_from(run_checks(bank_message(f"{extra}, {bank}"), SETTINGS, resolver_for(server)))
    assert (last.dmarc, last.dmarc_policy, last.from_authenticated) == ("fail", "reject", False)
    lenient = Policy(dmarc_permerror="inbox")
    assert decide(last, Policy()).action == decide(last, lenient).action == "quarantine"


def test_an_internal_error_in_a_check_reaches_the_facts_as_its_own_word(
    server: DnsTestServer,
) -> None:
    from dataclasses import replace

    data = HOP + b"From: News <news@example.com>\r\nSubject: x\r\n\r\nHello\r\n"
    report = run_checks(data, SETTINGS, resolver_for(server))
    broken = replace(
        report,
        dmarc=replace(report.dmarc, result="permerror", internal_error=True, reason="boom"),
        arc=replace(report.arc, result="fail", internal_error=True),
    )
    facts = facts_from(broken)
    assert (facts.dmarc, facts.arc, facts.from_authenticated) == ("internal", "internal", False)
    assert "dmarc=internal;" in render_header_value(facts, "mx.family.example", "inbox", "enforce")


# --- hostile messages: no temperror without a DNS cause (ISSUE 19) -----------------------------

HOSTILE_ZONE = (
    BANK_ZONE
    + '_dmarc.x1.example. TXT "v=DMARC1; p=quarantine; sp=reject; np=reject"\n'
    + 'sel._domainkey.bank.example. TXT "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCB"\n'
    + 'ed._domainkey.x1.example. TXT "v=DKIM1; k=ed25519; '
    + 'p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="\n'
)
FROM_VALUES = (
    '"Bank" <security@bank.example>',
    ", ".join(f"a@x{i}.example" for i in range(1, 7)),
    "<>",
    "undisclosed-recipients:;",
    '"a@bank.example"@x1.example',
    "=?utf-8?q?Bank?= <security@bank.example>",
    "(a (b <x@evil.test>) c) security@bank.example",
    "a@[192.0.2.1]",
    "@",
    '"unterminated <a@bank.example>',
    "a@bank.example>, <",
    "a@bank..example",
    "a@-bank.example",
    "a@" + "x." * 130 + "example",
    "a@bücher.example",
    "a@bank.example\x00",
)
SIGNATURES = (
    "v=1; a=rsa-sha256; d=bank.example; s=sel; h=from; bh=AAAA; b=AAAA",
    "v=1; a=ed25519-sha256; d=x1.example; s=ed; c=relaxed/relaxed; h=from:subject; bh=; b=",
    "v=1; a=rsa-sha256; d=; s=; h=; bh=; b=",
    "v=1; a=rsa-sha256; d=bank.example; s=a..b; h=from; bh=AAAA; b=AAAA; l=99999999999",
    "v=1; a=rsa-sha256; d=bank.example.; s=sel; h=from:from:from; t=2; x=1; bh=AA; b=AA",
    "v=1; a=rsa-sha256; d=bank.example; s=sel\\; h=from; i=@evil.test; bh=AAAA; b=AAAA",
    "v=1; a=rsa-sha256; d=x\x01y.example; s=sel; h=from; bh=AAAA; b=====",
    "v=2; a=foo; d=bank.example; s=sel",
    "garbage ;;; ===",
)
ARC_SETS = (
    "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x1.example; s=ed; b=AAAA\r\n"
    "ARC-Message-Signature: i=1; a=rsa-sha256; d=x1.example; s=ed; h=from; bh=AA; b=AA\r\n"
    "ARC-Authentication-Results: i=1; x1.example; spf=pass; dmarc=pass\r\n",
    "ARC-Seal: i=99999999; cv=pass; d=x1.example; s=ed; b=\r\n",
    "ARC-Authentication-Results: i=1; (((; dmarc=pass\r\n",
    "ARC-Seal: i=2; cv=fail; d=bank.example; s=sel; b=AA\r\n"
    "ARC-Seal: i=1; cv=none; d=bank.example; s=sel; b=AA\r\n",
)
RETURN_PATHS = (
    "<bounce@x1.example>",
    '<"john@evil.test"@x1.example>',
    '<"ceo;dmarc=pass\\"x"@bank.example>',
    "<>",
    "<@>",
    "<a@[192.0.2.1]>",
    '<"unterminated@x1.example>',
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_messages_give_no_temperror_without_a_dns_cause(
    dns_server: Callable[..., DnsTestServer], data: st.DataObject
) -> None:
    """A healthy DNS server answers every query: no result may be temperror (RFC 8601 §2.7.1)."""
    server = hostile_server(dns_server)
    headers = [f"Return-Path: {data.draw(st.sampled_from(RETURN_PATHS))}\r\n"]
    headers.append(HOP.split(b"\r\n", 1)[1].decode())
    headers += data.draw(st.lists(st.sampled_from(ARC_SETS), max_size=2))
    for sig in data.draw(st.lists(st.sampled_from(SIGNATURES), max_size=3)):
        headers.append(f"DKIM-Signature: {sig}\r\n")
    for value in data.draw(st.lists(st.sampled_from(FROM_VALUES), max_size=3)):
        headers.append(f"From: {value}\r\n")
    message = "".join(headers).encode("utf-8", "surrogateescape") + b"Subject: x\r\n\r\nHi\r\n"
    report = run_checks(message, SETTINGS, resolver_for(server))
    results = {
        "spf": (report.spf.result, report.spf.reason),
        "helo_spf": (report.helo_spf.result, report.helo_spf.reason),
        "arc": (report.arc.result, report.arc.reason),
        "dmarc": (report.dmarc.result, report.dmarc.reason),
        **{f"dkim{d.index}": (d.result, d.reason) for d in report.dkim},
    }
    assert [k for k, (word, _) in results.items() if word == "temperror"] == [], results
    internal = [d.reason for d in report.dkim if d.internal_error]
    internal += [r.reason for r in (report.arc, report.dmarc) if r.internal_error]
    assert internal == []
    facts = facts_from(report)
    assert "temperror" not in (facts.spf, facts.helo_spf, facts.dkim, facts.arc, facts.dmarc)


_HOSTILE_SERVERS: dict[int, DnsTestServer] = {}


def hostile_server(dns_server: Callable[..., DnsTestServer]) -> DnsTestServer:
    """Gives one server for all examples of a test run (the fixture lives as long as the test)."""
    key = id(dns_server)
    if key not in _HOSTILE_SERVERS:
        _HOSTILE_SERVERS.clear()
        _HOSTILE_SERVERS[key] = dns_server(HOSTILE_ZONE)
    return _HOSTILE_SERVERS[key]


SUBMITTED = (
    b"Return-Path: <ceo@family.example>\r\n"
    b"Received: from laptop (dsl.isp.example [198.51.100.7]) (Authenticated sender: ceo)"
    b" by mx.family.example (Postfix) with ESMTPSA id 4Sg2Vb1;"
    b" Sat, 28 Nov 2026 09:00:01 +0000\r\n"
    b"From: CEO <ceo@family.example>\r\nTo: x@example.com\r\nSubject: x\r\n\r\nHello\r\n"
)


def test_our_own_users_submission_is_not_written_up_as_a_dmarc_fail(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    """SMTP AUTH mail: SPF not applied, so DMARC was not evaluated, and the headers say so."""
    from classifier.annotate import annotate

    server = dns_server('_dmarc.family.example. TXT "v=DMARC1; p=reject"\n')
    report = run_checks(SUBMITTED, SETTINGS, resolver_for(server))
    assert report.envelope.authenticated
    assert (report.dmarc.result, report.dmarc.policy) == ("none", "")
    assert report.dmarc.reason.startswith("not evaluated: submitted by our own")
    assert ("_dmarc.family.example", "TXT") not in server.log
    facts = facts_from(report)
    assert (facts.dmarc, facts.submission, facts.from_domain) == ("none", True, "family.example")
    out = Message.parse(annotate(SUBMITTED, report, "mx.family.example", "v=1"))
    ar = " ".join((out.get("Authentication-Results") or "").split())
    assert "dmarc=fail" not in ar
    assert 'dmarc=none reason="not evaluated: submitted by our own authenticated user' in ar
    assert ar.startswith("mx.family.example; auth=pass")


# --- a sender's lookups that never answer cannot make DMARC temperror (RFC 7489 §6.6.2) -------

SILENT_ZONE = """
shop.example. TXT "v=spf1 ip4:198.51.100.0/24 -all"
news.shop.example. TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc.news.shop.example. TXT "v=DMARC1; p=reject"
attacker.test. TXT "v=spf1 ip4:192.0.2.66 -all"
evil.example. TXT "v=spf1 ip4:192.0.2.66 -all"
"""
# The sender's own names whose nameserver never answers.
SILENT = (
    "x._domainkey.blackhole.bh.example.",
    "slow.test.",
    "helo.slow.test.",
    "_dmarc.evil.example.",
)
BLACKHOLE_SIGNATURE = (
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=blackhole.bh.example; s=x;"
    b" h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n"
)


def spoof(mail_from: str, helo: str, signature: bytes = b"") -> bytes:
    hop = (
        f"Return-Path: <{mail_from}>\r\nReceived: from {helo} ({helo} [192.0.2.66])"
        " by mx.family.example (Postfix) with ESMTP id 4Sg2Va9 for <alice@family.example>;"
        " Sat, 28 Nov 2026 09:00:01 +0000\r\n"
    ).encode()
    return hop + signature + b"From: news@news.shop.example\r\nSubject: x\r\n\r\nHello\r\n"


@pytest.mark.parametrize(
    ("mail_from", "helo", "signature", "timed_out"),
    [
        ("x@attacker.test", "mail.attacker.test", BLACKHOLE_SIGNATURE, "dkim"),
        ("x@slow.test", "mail.attacker.test", b"", "spf"),
        ("x@attacker.test", "helo.slow.test", b"", "helo_spf"),
        # SPF passes for a domain whose Organizational Domain cannot be looked up
        ("x@evil.example", "mail.attacker.test", b"", ""),
    ],
)
def test_unaligned_identifier_that_never_answers_leaves_dmarc_fail(
    dns_server: Callable[..., DnsTestServer],
    mail_from: str,
    helo: str,
    signature: bytes,
    timed_out: str,
) -> None:
    """A temporary failure of a domain that cannot align cannot make DMARC pass: fail, not
    temperror, even when the black hole spends the whole DNS time budget."""
    server = dns_server(SILENT_ZONE, silent=SILENT)
    settings = config_from_dict(
        {
            "classifier": {
                "authserv_id": "mx.family.example",
                "trusted_networks": ["203.0.113.25/32"],
                "dns_budget": 0.4,
            }
        }
    ).engine
    report = run_checks(spoof(mail_from, helo, signature), settings, resolver_for(server, 0.4))
    words = {"dkim": report.dkim_result, "spf": report.spf.result}
    words["helo_spf"] = report.helo_spf.result
    if timed_out:
        assert words[timed_out] == "temperror"
    assert (report.dmarc.result, report.dmarc.policy) == ("fail", "reject"), report.dmarc.reason


def test_aligned_pass_beside_a_black_holed_signature_passes_dmarc(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    zone = SILENT_ZONE.replace(
        'news.shop.example. TXT "v=spf1 ip4:198.51.100.0/24',
        'news.shop.example. TXT "v=spf1 ip4:192.0.2.66',
    )
    server = dns_server(zone, silent=SILENT)
    data = spoof("bounce@news.shop.example", "mail.attacker.test", BLACKHOLE_SIGNATURE)
    report = run_checks(data, SETTINGS, resolver_for(server, 0.4))
    assert report.dkim_result == "temperror" and report.spf.result == "pass"
    assert report.dmarc.result == "pass" and report.dmarc.aligned_by == "spf"


# --- a deadline stops the checks between steps (attacker review item 4) ------------------------


def test_checks_stop_at_the_deadline_instead_of_waiting_out_slow_dns(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    """Nobody waits after the deadline: the DNS budget ends with it, and the next step raises."""
    from classifier.auth.checks import CheckAbandoned, Deadline

    server = dns_server(SILENT_ZONE, silent=SILENT)
    data = spoof("x@slow.test", "helo.slow.test", BLACKHOLE_SIGNATURE * 3)
    started = time.monotonic()
    with pytest.raises(CheckAbandoned, match="deadline passed before"):
        # Without the deadline each silent lookup waits 10 s, within the 20 s budget.
        run_checks(data, SETTINGS, resolver_for(server, 10.0), deadline=Deadline(started + 0.5))
    assert time.monotonic() - started < 5  # the DNS time left was the deadline's, not 10 s


def test_checks_stop_before_the_next_signature_when_the_client_is_gone(
    dns_server: Callable[..., DnsTestServer],
) -> None:
    from classifier.auth.checks import CheckAbandoned, Deadline

    server = dns_server(SILENT_ZONE)
    asked: list[int] = []

    def gone() -> bool:
        asked.append(1)
        return len(asked) > 3  # asked before the checks, DKIM, and each signature

    data = spoof("x@attacker.test", "mail.attacker.test", BLACKHOLE_SIGNATURE * 5)
    deadline = Deadline(time.monotonic() + 60, gone)
    with pytest.raises(CheckAbandoned, match="client gone before DKIM signature 2"):
        run_checks(data, SETTINGS, resolver_for(server), deadline=deadline)
