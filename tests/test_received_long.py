"""Our MTA's line with the longest HELO and reverse name a client can have (issue 15 review).

The from part of a Received line was cut to 512 characters before it was read.
A client whose HELO and reverse name were long (a 491-character HELO, or a
253-character HELO and a 253-character forward-confirmed name) pushed the
client comment past the cut: no client address, SPF none, and a message SPF
fails went to INBOX.  Postfix reads a HELO of up to line_length_limit (2048)
octets and writes it as it came.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.envelope.received import parse_received, parse_received_field

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "config.toml"
ZONE = ROOT / "examples" / "maildir" / "zone.txt"

LABEL = "a" * 63
NAME_253 = ".".join([LABEL, LABEL, LABEL, "b" * 53]) + ".example"  # the longest DNS name


def postfix_line(helo: str, name: str, ip: str) -> str:
    literal = f"IPv6:{ip}" if ":" in ip else ip
    return (
        f"from {helo} ({name} [{literal}])\r\n\tby mx.family.example (Postfix) with ESMTPS id"
        " 4ZjLwCRcD7Rp76m\r\n\tfor <alice@family.example>; Tue, 11 Mar 2025 03:17:42 +0100 (CET)"
    )


@pytest.mark.parametrize("helo_length", [1, 253, 491, 505, 1000, 2040])
@pytest.mark.parametrize("name", ["unknown", NAME_253])
@pytest.mark.parametrize("ip", ["192.0.2.66", "2001:db8::66"])
def test_the_client_of_a_long_helo_is_found(helo_length: int, name: str, ip: str) -> None:
    helo = ("h" * helo_length)[:-1] + "x"
    value = postfix_line(helo, name, ip)
    for hop in (parse_received(value), parse_received_field(b"Received: " + value.encode())):
        assert (hop.ip, hop.helo) == (ip, helo), hop
        assert hop.rdns == (None if name == "unknown" else name), hop


# Host names a client may give: labels of letters, digits and hyphens, up to 2040 octets.
labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63)
helos = st.lists(labels, min_size=1, max_size=40).map(".".join).filter(lambda h: len(h) <= 2040)


@settings(max_examples=300, deadline=None)
@given(helos, st.sampled_from(["unknown", "mail.example.org", NAME_253]))
def test_any_helo_postfix_takes_leaves_the_client_readable(helo: str, name: str) -> None:
    hop = parse_received(postfix_line(helo, name, "198.51.100.7"))
    assert hop.ip == "198.51.100.7", hop


@pytest.mark.parametrize("helo", [NAME_253, "a" * 491, "?" * 600])
def test_spf_still_fails_for_a_long_helo(tmp_path: Path, helo: str) -> None:
    # isp.example publishes -all and DMARC p=none: only the SPF rule files its forgeries.
    name = NAME_253 if helo == NAME_253 else "unknown"
    message = tmp_path / "long.eml"
    message.write_text(
        "Return-Path: <x@isp.example>\r\n"
        f"Received: {postfix_line(helo, name, '192.0.2.66')}\r\n"
        "From: <news@isp.example>\r\nTo: <alice@family.example>\r\nSubject: t\r\n\r\nhi\r\n"
    )
    argv = [sys.executable, "-m", "classifier.commands.main", "check", "--json",
            "--config", str(CONFIG), "--dns-zone", str(ZONE), str(message)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=True, timeout=60)
    out = json.loads(proc.stdout)
    assert out["envelope"]["client_ip"] == "192.0.2.66", out["envelope"]
    assert (out["spf"]["result"], out["verdict"]["action"]) == ("fail", "junk")
