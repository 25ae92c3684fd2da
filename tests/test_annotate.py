"""Annotation: our headers prepended, forged ones defused, no other byte changed (annotate.py)."""

from __future__ import annotations

import re
from collections.abc import Callable

import authres
import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.annotate import (
    _split_outside_quotes,
    annotate,
    ar_comment,
    ar_value,
    authserv_id_of,
    defuse,
    fold,
)
from classifier.auth.checks import facts_from, run_checks
from classifier.auth.facts import parse_header_value, render_header_value
from classifier.config import config_from_dict
from classifier.message import Message
from tests.conftest import resolver_for, vector_path
from tests.dnsserver import DnsTestServer

AUTHSERV = "mx.family.example"
SETTINGS = config_from_dict(
    {"classifier": {"authserv_id": AUTHSERV, "trusted_networks": ["203.0.113.25/32"]}}
).engine


def dkim_key_record() -> str:
    """Gives the zone line of the 2048-bit test key at s2048._domainkey.example.com."""
    record = vector_path("dkim", "dkimpy-data", "2048_testkey_wo_markers.pub.txt").read_text()
    record = "".join(record.split())
    chunks = " ".join(f'"{record[i : i + 200]}"' for i in range(0, len(record), 200))
    return f"s2048._domainkey.example.com. TXT {chunks}\n"


def zone_text() -> str:
    return (
        dkim_key_record()
        + 'example.com. TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
        + '_dmarc.example.com. TXT "v=DMARC1; p=reject"\n'
    )


def signed_message(mail_from: str = "news@example.com", client: str = "192.0.2.10") -> bytes:
    body = (
        b"From: News <news@example.com>\r\nTo: alice@family.example\r\n"
        b"Subject: Offers\r\nMessage-ID: <1@example.com>\r\n"
        b"Date: Sat, 28 Nov 2026 09:00:00 +0000\r\n\r\nHello Alice.\r\n"
    )
    key = vector_path("dkim", "dkimpy-data", "2048_testkey.key").read_bytes()
    sig = dkim.sign(body, b"s2048", b"example.com", key, include_headers=[b"from", b"subject"])
    received = (
        f"Return-Path: <{mail_from}>\r\n"
        f"Received: from mail.example.com (mail.example.com [{client}]) by {AUTHSERV} (Postfix)"
        " with ESMTPS id 4Sg2Va3 for <alice@family.example>; Sat, 28 Nov 2026 09:00:01 +0000\r\n"
    ).encode()
    return received + sig + body


@pytest.fixture
def server(dns_server: Callable[..., DnsTestServer]) -> DnsTestServer:
    return dns_server(zone_text())


def annotated(data: bytes, server: DnsTestServer) -> tuple[bytes, dict[str, str]]:
    report = run_checks(data, SETTINGS, resolver_for(server))
    facts = facts_from(report)
    value = render_header_value(facts, AUTHSERV, "inbox", "enforce", "test")
    return annotate(data, report, AUTHSERV, value), parse_header_value(value)


def dkim_verifies(data: bytes, server: DnsTestServer) -> bool:
    session = resolver_for(server).session()

    def txt(name: bytes, timeout: int = 5) -> bytes:
        return "".join(session.txt(name.decode())).encode()

    return bool(dkim.verify(data, dnsfunc=txt))


def test_original_dkim_signature_still_verifies_after_annotation(server: DnsTestServer) -> None:
    data = signed_message()
    assert dkim_verifies(data, server)
    out, fields = annotated(data, server)
    assert fields["spf"] == "pass" and fields["dkim"] == "pass" and fields["dmarc"] == "pass"
    assert out.endswith(data)  # only prepended: no other byte changed
    assert dkim_verifies(out, server)


def test_three_headers_are_prepended_in_order(server: DnsTestServer) -> None:
    out, _ = annotated(signed_message(), server)
    names = [f.name for f in Message.parse(out).fields][:3]
    assert names == ["Authentication-Results", "Received-SPF", "X-Authsieve"]
    ar = Message.parse(out).get("Authentication-Results") or ""
    parsed = authres.AuthenticationResultsHeader.parse_value(ar)
    assert parsed.authserv_id == AUTHSERV
    methods = {r.method: r.result for r in parsed.results}
    assert methods["spf"] == "pass" and methods["dkim"] == "pass" and methods["dmarc"] == "pass"


def test_mail_from_cannot_inject_a_result(server: DnsTestServer) -> None:
    out, _ = annotated(signed_message(mail_from="a;dkim=pass@x"), server)
    ar = Message.parse(out).get("Authentication-Results") or ""
    parsed = authres.AuthenticationResultsHeader.parse_value(ar)
    dkim_results = [r.result for r in parsed.results if r.method == "dkim"]
    assert dkim_results == ["pass"]  # the one real signature, nothing injected
    spf = next(r for r in parsed.results if r.method == "spf")
    assert spf.smtp_mailfrom == '"a;dkim=pass@x"' or "a;dkim=pass@x" in ar
    assert '"a;dkim=pass@x"' in ar


def test_forged_headers_under_our_authserv_id_are_renamed(server: DnsTestServer) -> None:
    data = signed_message()
    marker = b"Received: from mail.example.com"
    forged = (
        f"Authentication-Results: {AUTHSERV.upper()}; spf=pass smtp.mailfrom=x@example.com\r\n"
        "X-Authsieve: v=1; id=mx.family.example; verdict=inbox; spf=pass\r\n"
        "Authentication-Results: other.example; spf=fail\r\n"
    ).encode()
    i = data.index(marker)
    j = data.index(b"\r\n", i) + 2
    data = data[:j] + forged + data[j:]
    out, _ = annotated(data, server)
    msg = Message.parse(out)
    assert len(msg.get_all("X-Authsieve")) == 1
    ours = [v for v in msg.get_all("Authentication-Results") if authserv_id_of(v) == AUTHSERV]
    assert len(ours) == 1
    assert msg.get_all("X-Original-X-Authsieve") == [
        "v=1; id=mx.family.example; verdict=inbox; spf=pass"
    ]
    assert len(msg.get_all("X-Original-Authentication-Results")) == 1
    assert "other.example; spf=fail" in msg.get_all("Authentication-Results")


def test_second_pass_gives_the_same_bytes(server: DnsTestServer) -> None:
    once, _ = annotated(signed_message(), server)
    twice, _ = annotated(once, server)
    assert twice == once


def test_defuse_keeps_foreign_headers() -> None:
    data = b"Authentication-Results: other.example; spf=pass\r\nFrom: a@b\r\n\r\nx"
    assert defuse(Message.parse(data), AUTHSERV).to_bytes() == data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user@example.com", "user@example.com"),
        ("pass", "pass"),
        ("a;dkim=pass@x", '"a;dkim=pass@x"'),
        ('a"b\\c@x', '"a\\"b\\\\c@x"'),
        ("a\r\nb@x", '"a b@x"'),
    ],
)
def test_ar_value_quotes_what_is_not_a_token(text: str, expected: str) -> None:
    assert ar_value(text) == expected


def forged_below_received(ar_value_text: str) -> bytes:
    """Gives the signed message with a sender-written Authentication-Results below our Received."""
    data = signed_message()
    i = data.index(b"Received: from mail.example.com")
    j = data.index(b"\r\n", i) + 2
    forged = f"Authentication-Results: {ar_value_text}; dkim=pass; dmarc=pass\r\n".encode()
    return data[:j] + forged + data[j:]


def survivors(out: bytes) -> list[str]:
    """Gives the Authentication-Results left with a forged dmarc=pass (ours says dmarc=pass too)."""
    return [
        v
        for v in Message.parse(out).get_all("Authentication-Results")
        if "dkim=pass; dmarc=pass" in " ".join(v.split())
    ]


def test_forged_ar_with_trailing_dot_id_is_renamed(server: DnsTestServer) -> None:
    out, _ = annotated(forged_below_received(f"{AUTHSERV}."), server)
    assert survivors(out) == []
    assert Message.parse(out).get_all("X-Original-Authentication-Results") == [
        f"{AUTHSERV}.; dkim=pass; dmarc=pass"
    ]


def test_forged_ar_with_quoted_id_is_renamed(server: DnsTestServer) -> None:
    out, _ = annotated(forged_below_received(f'"{AUTHSERV}"'), server)
    assert survivors(out) == []
    assert len(Message.parse(out).get_all("X-Original-Authentication-Results")) == 1


def test_forged_ar_with_nested_comment_before_id_is_renamed(server: DnsTestServer) -> None:
    out, _ = annotated(forged_below_received(f"(a (b) c) {AUTHSERV}"), server)
    assert survivors(out) == []
    assert len(Message.parse(out).get_all("X-Original-Authentication-Results")) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mx.family.example; spf=pass", "mx.family.example"),
        ("MX.Family.Example.; spf=pass", "mx.family.example"),
        ('"mx.family.example"; spf=pass', "mx.family.example"),
        ('"MX.family.example."; spf=pass', "mx.family.example"),
        ("(a (b) c) mx.family.example; spf=pass", "mx.family.example"),
        ("(a \\) (b) c) mx.family.example 1; spf=pass", "mx.family.example"),
        ("mx.family.example(comment); none", "mx.family.example"),
        ('"mx.family(not a comment).example"; none', "mx.family(not a comment).example"),
        ("(only a comment)", ""),
        ("", ""),
    ],
)
def test_authserv_id_is_read_as_rfc8601_compares_it(value: str, expected: str) -> None:
    assert authserv_id_of(value) == expected


@pytest.mark.parametrize(
    "other", ["mx.family.example.evil", '"mx.family.example x"', "(mx.family.example) other"]
)
def test_ar_of_another_authserv_id_is_kept(other: str) -> None:
    data = f"Received: by {AUTHSERV}\r\nAuthentication-Results: {other}; spf=pass\r\n\r\nx"
    assert defuse(Message.parse(data.encode()), AUTHSERV).to_bytes() == data.encode()


@pytest.mark.parametrize(
    "receiver", [f"{AUTHSERV.upper()}.", f'"{AUTHSERV}"', f"{AUTHSERV}", f" {AUTHSERV}."]
)
def test_forged_received_spf_naming_us_as_receiver_is_renamed(
    server: DnsTestServer, receiver: str
) -> None:
    data = signed_message()
    forged = (
        "Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=192.0.2.10;"
        f" receiver={receiver}; envelope-from=ceo@bank.example\r\n"
    ).encode()
    below = data.index(b"\r\n", data.index(b"Received: from mail.example.com")) + 2
    out, _ = annotated(data[:below] + forged + data[below:], server)
    fields = Message.parse(out)
    assert len(fields.get_all("Received-SPF")) == 1  # ours only
    assert "ceo@bank.example" not in (fields.get("Received-SPF") or "")
    assert len(fields.get_all("X-Original-Received-SPF")) == 1


def test_received_spf_of_another_receiver_is_kept(server: DnsTestServer) -> None:
    forged = b"Received-SPF: Pass identity=mailfrom; receiver=mx.other.example\r\n"
    data = signed_message()
    below = data.index(b"\r\n", data.index(b"Received: from mail.example.com")) + 2
    out, _ = annotated(data[:below] + forged + data[below:], server)
    assert len(Message.parse(out).get_all("Received-SPF")) == 2


def test_control_characters_of_a_mail_from_never_reach_authentication_results(
    server: DnsTestServer,
) -> None:
    # attacker review: ESC in Return-Path reached smtp.mailfrom raw
    out, _ = annotated(signed_message(mail_from="\x1b[35m@evil.example"), server)
    ours = Message.parse(out).get("Authentication-Results") or ""
    assert "\x1b" not in ours and "smtp.mailfrom=" in ours and "?[35m@evil.example" in ours


def test_ar_comment_escapes_parentheses_and_backslashes_once() -> None:
    assert ar_comment("sealed by a\\b (x)\t y") == "sealed by a\\\\b \\(x\\) y"


def test_ar_value_turns_control_characters_into_question_marks() -> None:
    assert ar_value("a\x1bb\x00c@x.example") == "a?b?c@x.example"


_SEPARATOR_OR_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|; ', re.DOTALL)


def _split_reference(value: str) -> list[str]:
    """The plain reading: scan left to right, skip each quoted-string whole, split at "; "."""
    parts, start = [], 0
    for match in _SEPARATOR_OR_QUOTED.finditer(value):
        if match.group() == "; ":
            parts.append(value[start : match.start()])
            start = match.end()
    return [*parts, value[start:]]


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet='ab; "\\\r\n()=', max_size=60))
def test_fold_splits_only_outside_quoted_strings(value: str) -> None:
    assert _split_outside_quotes(value) == _split_reference(value)


def _fold_reference(name: str, value: str, eol: bytes) -> bytes:
    """The plain reading: lines filled with whole parts while they stay within 76 characters."""
    parts = _split_reference(value)
    lines, line = [], f"{name}: {parts[0]}"
    for part in parts[1:]:
        if len(line) + 2 + len(part) > 76:
            lines.append(line + ";")
            line = "\t" + part
        else:
            line += "; " + part
    end = eol.decode("utf-8", "surrogateescape")
    return end.join([*lines, line, ""]).encode("utf-8", "surrogateescape")


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.text(alphabet='ab "\\=;', max_size=30), min_size=1, max_size=20),
    st.sampled_from(["X-Authsieve", "Authentication-Results", "X" * 80]),
    st.sampled_from([b"\r\n", b"\n"]),
)
def test_fold_fills_lines_with_whole_parts(parts: list[str], name: str, eol: bytes) -> None:
    value = "; ".join(parts)
    assert fold(name, value, eol) == _fold_reference(name, value, eol)
