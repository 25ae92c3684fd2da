"""Message.parse's fields and clean flag, and dkim_fields, as the slower readers gave them.

The references below are the implementations before issue 15 (item 3) made them cheaper:
a regex search for a line that is neither a field nor folding, and a loop that rewrites
each raw field's line ends.  Hostile header blocks (bare CR, bare LF, mixed line ends,
junk lines, 8-bit bytes, folding before the first field) must read the same.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.message import Message

_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_EMPTY_LINE = re.compile(rb"\n\r?\n")
_NOT_A_FIELD = re.compile(rb"\n(?![ \t]|[\x21-\x39\x3b-\x7e]+[ \t]*:)")
_LINE_END = re.compile(rb"\r?\n")


def _reference_clean(data: bytes) -> bool:
    if _FIELD_NAME.match(data) is None:
        at = 1 if data[:1] == b"\n" else 2 if data[:2] == b"\r\n" else 0
        return at > 0 or not data
    empty = _EMPTY_LINE.search(data)
    end = empty.start() + 1 if empty is not None else len(data)
    last = end - 1 if data[end - 1 : end] == b"\n" else end
    return _NOT_A_FIELD.search(data, 0, last) is None


_FIELD_BREAK = re.compile(rb"\n(?=([\x21-\x39\x3b-\x7e]+)[ \t]*:)")


def _reference_fields(data: bytes) -> list[tuple[str, bytes]]:
    first = _FIELD_NAME.match(data)
    if first is None:
        return []
    empty = _EMPTY_LINE.search(data)
    end = empty.start() + 1 if empty is not None else len(data)
    parts = _FIELD_BREAK.split(data[:end])
    names = [first.group(1), *parts[1::2]]
    raws = [raw + b"\n" for raw in parts[0::2][:-1]] + parts[-1:]
    return [(name.decode("ascii"), raw) for name, raw in zip(names, raws, strict=True)]


def _reference_dkim_fields(message: Message) -> list[list[bytes]]:
    out = []
    for field in message.fields:
        name, _, value = field.raw.partition(b":")
        if value[-1:] == b"\n":
            value = value[:-2] if value[-2:] == b"\r\n" else value[:-1]
        if b"\n" in value and value.count(b"\n") != value.count(b"\r\n"):
            value = _LINE_END.sub(b"\r\n", value)
        out.append([name, value + b"\r\n"])
    return out


_LINES = st.sampled_from(
    [
        b"From: a@example.com",
        b"Received: from a (b [192.0.2.1])",
        b"\tby c (Postfix) with ESMTP id X;",
        b" Tue, 28 Nov 2026 10:00:00 +0000",
        b"Subject: caf\xc3\xa9 \xff",
        b"X-Empty:",
        b"Name :value",
        b"From mbox line",
        b"not a header",
        b"",
        b"\r",
        b"To: b@example.com\rCc: c@example.com",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s;\r\n\tb=abc",
    ]
)
_ENDS = st.sampled_from([b"\r\n", b"\n", b"\r", b"\n\t", b"\r\n "])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_LINES, _ENDS), max_size=12), st.binary(max_size=20))
def test_clean_and_dkim_fields_read_as_the_reference_does(
    lines: list[tuple[bytes, bytes]], tail: bytes
) -> None:
    data = b"".join(line + end for line, end in lines) + tail
    for message_bytes in (data, data + b"\r\n\r\nbody\r\n", data + b"\n\nbody\n"):
        message = Message.parse(message_bytes)
        assert message.clean == _reference_clean(message_bytes)
        assert [(f.name, f.raw) for f in message.fields] == _reference_fields(message_bytes)
        assert message.dkim_fields() == _reference_dkim_fields(message)
        assert message.to_bytes() == message_bytes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_read_as_the_reference_does(data: bytes) -> None:
    for message_bytes in (data, b"A: b\r\n" + data, b"A: b\n" + data):
        message = Message.parse(message_bytes)
        assert message.clean == _reference_clean(message_bytes)
        assert [(f.name, f.raw) for f in message.fields] == _reference_fields(message_bytes)
        assert message.dkim_fields() == _reference_dkim_fields(message)


def test_crlf_and_lf_messages_take_the_fast_readings() -> None:
    crlf = b"From: a@example.com\r\nSubject: x\r\n\ty\r\n\r\nbody\r\n"
    lf = crlf.replace(b"\r\n", b"\n")
    expected = [[b"From", b" a@example.com\r\n"], [b"Subject", b" x\r\n\ty\r\n"]]
    assert Message.parse(crlf).dkim_fields() == expected
    assert Message.parse(lf).dkim_fields() == expected
    assert Message.parse(crlf).clean and Message.parse(lf).clean
    assert not Message.parse(b"From: a\r\njunk\r\n\r\n").clean


@given(
    st.lists(st.sampled_from(["From", "to", "ARC-Seal", "x-a", "Received"]), max_size=6),
    st.lists(
        st.sampled_from(["from", "to", "arc-seal", "x-a", "received", "From", ""]), max_size=4
    ),
)
def test_has_tells_what_a_look_up_of_each_name_tells(fields: list[str], names: list[str]) -> None:
    message = Message.parse(b"".join(f"{f}: v\r\n".encode() for f in fields) + b"\r\nbody")
    for _ in range(2):  # the first question makes the set; the second reads it
        assert message.has(*names) == any(n in message.field_keys() for n in names)
