"""Sender-written values are one word of a delivery line (attacker review, issue 15)."""

from __future__ import annotations

import shlex

from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.logwords import delivery_line, failure_line, log_word

pieces = st.sampled_from(['"', "\\", " ", "\t", "=", ",", "<", ">", "a", "verdict=inbox", "é", "@"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(pieces, max_size=12).map("".join))
def test_a_word_reads_back_as_itself(text: str) -> None:
    assert shlex.split(log_word(text)) == [text]


def test_a_plain_address_stays_as_it_is() -> None:
    assert log_word("alice+news@family.example") == "alice+news@family.example"


def test_a_recipients_extension_adds_no_words_to_the_line() -> None:
    hostile = "alice+x verdict=inbox client=127.0.0.1 queue=FAKE@family.example"
    line = delivery_line([hostile, "bob@family.example"], "verdict=quarantine", 3.0, "4Z0P")
    words = shlex.split(line.replace(",", " , "))
    assert [w for w in words if w.startswith(("verdict=", "queue=", "client="))] == [
        "queue=4Z0P",
        "verdict=quarantine",
    ]
    failed = failure_line([hostile], 75, "disk full", "4Z0P")
    assert [w for w in shlex.split(failed) if w.startswith("queue=")] == ["queue=4Z0P"]


def test_the_summary_writes_a_plain_sender_in_brackets_and_a_hostile_one_quoted() -> None:
    from pathlib import Path

    from classifier.config import load_config
    from classifier.evaluate import check_and_annotate
    from classifier.lookup.resolver import make_resolver

    root = Path(__file__).resolve().parent.parent
    config = load_config(root / "examples" / "config.toml")
    resolver = make_resolver(dns_zone=str(root / "examples" / "maildir" / "zone.txt"))
    for sender, written in [
        ("x@isp.example", "from=<x@isp.example> "),
        ("", "from=<> "),
        ("x verdict=inbox@isp.example", 'from="<x verdict=inbox@isp.example>" '),
    ]:
        message = (
            f"Return-Path: <{sender}>\r\nReceived: from mail.isp.example (unknown [192.0.2.66])\r\n"
            "\tby mx.family.example (Postfix) with ESMTP id 4Z0P\r\n"
            "\tfor <alice@family.example>; Tue, 11 Mar 2025 03:17:42 +0100\r\n"
            "From: <news@isp.example>\r\nSubject: t\r\n\r\nhi\r\n"
        ).encode()
        outcome = check_and_annotate(message, config.engine, resolver, config.policies, None, None)
        assert written in outcome.summary, outcome.summary
        assert [w for w in shlex.split(outcome.summary) if w.startswith("verdict=")] == [
            "verdict=" + outcome.action
        ]
