"""Header splitting that never loses a byte (classifier/message.py)."""

from __future__ import annotations

import re

import dkim
import pytest
from hypothesis import given
from hypothesis import strategies as st

from classifier.auth.header_block import header_end
from classifier.lazyre import lazy
from classifier.message import Message, parse_date

SAMPLE = (
    b"Received: from a by b;\r\n\tTue, 28 Nov 2026 10:00:00 +0000\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= \xc3\xa9\r\n"
    b"\r\n"
    b"Body line\r\n"
)


def test_fields_keep_their_exact_bytes() -> None:
    msg = Message.parse(SAMPLE)
    assert [f.name for f in msg.fields] == ["Received", "From", "Subject"]
    assert msg.fields[0].raw == b"Received: from a by b;\r\n\tTue, 28 Nov 2026 10:00:00 +0000\r\n"
    assert msg.rest == b"\r\nBody line\r\n"
    assert msg.to_bytes() == SAMPLE


def test_values_are_unfolded() -> None:
    msg = Message.parse(SAMPLE)
    assert msg.get("received") == "from a by b; Tue, 28 Nov 2026 10:00:00 +0000"
    assert msg.get_all("From") == ["Alice <alice@example.com>"]
    assert msg.get("X-Missing") is None


def test_lf_only_message() -> None:
    msg = Message.parse(b"From: a@example.com\nTo: b@example.com\n\nbody\n")
    assert msg.eol == b"\n"
    assert msg.get("To") == "b@example.com"
    assert msg.rest == b"\nbody\n"


def test_message_without_headers_is_all_body() -> None:
    data = b"just some text\r\nwithout headers\r\n"
    msg = Message.parse(data)
    assert msg.fields == ()
    assert msg.to_bytes() == data


def test_garbage_line_inside_header_block_stays_with_previous_field() -> None:
    data = b"From: a@example.com\r\nthis is not a header\r\nTo: b@example.com\r\n\r\nx"
    msg = Message.parse(data)
    assert [f.name for f in msg.fields] == ["From", "To"]
    assert msg.to_bytes() == data


@given(st.binary(max_size=2000))
def test_any_bytes_round_trip(data: bytes) -> None:
    assert Message.parse(data).to_bytes() == data


def test_message_made_from_its_fields_equals_the_parsed_one() -> None:
    msg = Message.parse(SAMPLE)
    again = Message(msg.fields, msg.rest, msg.eol)
    assert again == msg
    assert again.to_bytes() == SAMPLE
    assert again.get_all("Received") == msg.get_all("Received")


def test_unfolding_collapses_whitespace_of_folded_fields_only() -> None:
    msg = Message.parse(b"A:  x \t y\r\nB: p\r\n  q\r\nC:  one  line")
    assert msg.get("a") == "x y"  # ends with a line break: unfolded
    assert msg.get("b") == "p q"
    assert msg.get("c") == "one  line"  # no line break at all: only stripped


def test_values_are_unfolded_only_as_they_are_read() -> None:
    msg = Message.parse(b"Received: a\r\nX: 1\r\nReceived: b\r\nReceived: c\r\n\r\n")
    values = msg.values("RECEIVED")
    assert next(values) == "a"
    assert list(values) == ["b", "c"]


def test_parse_date_reads_rfc_5322_and_obsolete_dates() -> None:
    current = parse_date("Tue, 28 Nov 2026 10:00:00 +0100")
    obsolete = parse_date("28 Nov 99 10:00 EST")  # RFC 5322 §4.3: two-digit year, zone name
    assert current is not None and current.isoformat() == "2026-11-28T10:00:00+01:00"
    assert obsolete is not None and obsolete.isoformat() == "1999-11-28T10:00:00-05:00"
    assert parse_date("not a date") is None


def test_raws_give_the_exact_bytes_of_the_fields_asked_for() -> None:
    msg = Message.parse(SAMPLE)
    assert list(msg.raws("RECEIVED")) == [msg.fields[0].raw]
    headers_only = Message.parse(b"Received: a\r\nReceived: b")  # no line break at the end
    assert list(headers_only.raws("received")) == [b"Received: a\r\n", b"Received: b"]
    assert list(headers_only.raws("x")) == []


# --- one parse for every step: what DKIM and ARC are handed -------------------------------

CLEAN_HEADER_BLOCKS = [
    b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n",
    b"From: a@example.com\nSubject: x\n\nbody\n",
    b"From: a@example.com\r\nSubject: folded\r\n\tline\r\n  and more\r\n\r\nbody",
    b"From: a@example.com\r\nSubject: bare LF\n folding\r\n\r\n",
    b"Subject: no body, no last line break",
    b"Subject: a lone\rCR\r\r\nTo: b\r\n\r\nbody",
    b"\r\nall body",
]


@pytest.mark.parametrize("data", CLEAN_HEADER_BLOCKS)
def test_the_fields_dkimpy_is_handed_are_those_its_own_parser_gives(data: bytes) -> None:
    message = Message.parse(data)
    end = header_end(data)
    fields, _ = dkim.rfc822_parse(data[: end[1]] if end else data)
    assert message.clean
    assert message.header_end == end
    assert message.dkim_fields() == [list(f) for f in fields]


@pytest.mark.parametrize(
    "data",
    [b"From x@example.com Mon Jan  1\nA: b\n\nbody", b"A: b\njunk\nC: d\n\n", b" folded\nA: b\n\n"],
)
def test_a_line_that_is_no_field_leaves_the_header_block_to_dkimpys_parser(data: bytes) -> None:
    message = Message.parse(data)
    assert not message.clean
    assert message.header_end == header_end(data)
    assert message.to_bytes() == data


def test_white_space_before_the_colon_is_one_field_name_rule_for_every_step() -> None:
    # RFC 5322 §4.5 (obs-optional: field-name *WSP ":"): the name is "Subject".
    message = Message.parse(b"Subject : hello\r\nTo: b@example.com\r\n\r\nbody")
    assert message.get("Subject") == "hello"
    assert message.clean
    assert message.dkim_fields()[0] == [b"Subject ", b" hello\r\n"]


def test_a_lazy_pattern_does_what_the_compiled_one_does() -> None:
    eager, deferred = re.compile(r"(a+)(b)?", re.I), lazy(r"(a+)(b)?", re.I)
    for text in ("", "AAb", "xaab", "ab ab", "b"):
        assert [m.groups() for m in deferred.finditer(text)] == [
            m.groups() for m in eager.finditer(text)
        ]
        assert deferred.sub("-", text) == eager.sub("-", text)
        assert bool(deferred.match(text)) == bool(eager.match(text))
    assert (deferred.pattern, deferred.flags, deferred.groups) == (
        eager.pattern,
        eager.flags,
        eager.groups,
    )
