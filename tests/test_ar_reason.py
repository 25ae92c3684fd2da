"""A DKIM reason with an "@" is one quoted-string in our Authentication-Results (issue 15 review).

authres leaves any value holding an "@" unquoted, so a reason built from a
sender's i= or key record wrote its own result clauses into our header.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import authres
from hypothesis import example, given, settings
from hypothesis import strategies as st

from classifier.annotate import ar_reason
from classifier.message import Message

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "config.toml"
ZONE = ROOT / "examples" / "maildir" / "zone.txt"

pieces = st.sampled_from(["@", "x@bank.example", ";", " ", "(", ")", '"', "\\", "dkim=pass",
                          "header.d=bank.example", "=", "a", "é", "\t", "reason="])  # fmt: skip


@settings(max_examples=2000, deadline=None)
@example("i= domain is not a subdomain of d= (i=x@bank.example) dkim=pass header.d=bank (")
@example('x"@bank.example')
@given(st.lists(pieces, min_size=1, max_size=12).map("".join))
def test_a_reason_reads_back_as_one_value_of_one_result(reason: str) -> None:
    flat = " ".join(reason.split())
    if not flat:
        return
    written = authres.AuthenticationResultsHeader(
        authserv_id="mx.family.example",
        results=[
            authres.DKIMAuthenticationResult(result="permerror", reason=ar_reason(reason)),
            authres.SPFAuthenticationResult(result="fail"),
        ],
    )
    read = authres.AuthenticationResultsHeader.parse(str(written))
    assert [(r.method, r.result) for r in read.results] == [
        ("dkim", "permerror"),
        ("spf", "fail"),
    ]
    # authres writes a non-ASCII character as "?" and reads quoted-pairs as they stand.
    unquoted = re.sub(r"\\(.)", r"\1", read.results[0].reason)
    assert unquoted == "".join(c if " " <= c <= "~" else "?" for c in flat)


def test_a_forged_clause_in_an_i_stays_inside_the_reason(tmp_path: Path) -> None:
    message = tmp_path / "ar.eml"
    message.write_bytes(
        b"Return-Path: <x@evil.example>\r\n"
        b"Received: from mail.evil.example (unknown [192.0.2.66])\r\n"
        b"\tby mx.family.example (Postfix) with ESMTP id 4ZjLwCRcD7Rp76m\r\n"
        b"\tfor <alice@family.example>; Tue, 11 Mar 2025 03:17:42 +0100 (CET)\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=evil.example; s=s1;\r\n"
        b" i=x@bank.example) dkim=pass header.d=bank.example (; h=from:to:subject;\r\n"
        b" bh=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=; b=AAAA\r\n"
        b'From: "Bank" <security@bank.example>\r\nTo: <alice@family.example>\r\n'
        b"Subject: test\r\n\r\nhello\r\n"
    )
    argv = [sys.executable, "-m", "classifier.commands.main", "pipe", "--config", str(CONFIG),
            "--dns-zone", str(ZONE), "--recipient=alice@family.example",
            "--deliver=stdout"]  # fmt: skip
    proc = subprocess.run(argv, input=message.read_bytes(), capture_output=True, cwd=ROOT,
                          check=True, timeout=60)  # fmt: skip
    value = Message.parse(proc.stdout).get_all("Authentication-Results")[0]
    read = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
    assert [(r.method, r.result) for r in read.results] == [
        ("spf", "none"), ("dkim", "permerror"), ("arc", "none"), ("dmarc", "fail")
    ]  # fmt: skip
    assert "dkim=pass header.d=bank.example" in read.results[1].reason
