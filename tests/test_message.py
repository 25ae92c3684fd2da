"""Header splitting that never loses a byte (classifier/message.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from classifier.message import Message

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
