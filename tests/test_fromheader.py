"""Tests of classifier/auth/fromheader.py on hostile From fields: every input ends, and quickly."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.auth.fromheader import (
    _LITERAL,
    _mailboxes,
    _tokens,
    _unfold,
    first_mailbox,
    from_domains,
    normalize_domain,
)
from classifier.names import DOT_ATOM, quoted_string

# Pieces that steer the tokenizer into every branch, unbalanced ones included.
_PIECES = ["a", "b.example", "@", "<", ">", "(", ")", '"', "\\", "[", "]", ",", ";", ":", " "]
_PIECES += ["\t", "\r\n ", "x@y.example", "\u00fc", "..", "\x00"]


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fails the test instead of hanging it when the code under test does not return."""

    def expired(signum: int, frame: object) -> None:
        raise AssertionError(f"no answer within {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_stray_closing_parenthesis_neither_hangs_nor_hides_the_address() -> None:
    with _deadline(5):
        assert from_domains(["a) b@c.example"]) == (["c.example"], "")
        assert first_mailbox(["x) <Ann@B.example>)"]) == "ann@b.example"
        assert from_domains([")"]) == ([], "no address with a domain in From: )")


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join))
def test_any_from_value_gives_an_answer(value: str) -> None:
    with _deadline(5):
        domains, reason = from_domains([value])
        mailbox = first_mailbox([value])
    assert bool(domains) != bool(reason)
    assert all(normalize_domain(d) == d for d in domains)
    domain = mailbox.rpartition("@")[2]
    if mailbox and not domain.startswith("["):  # an address literal is no DMARC domain
        assert domain in domains


def _tokens_reference(value: str) -> list[tuple[str, str, bool]]:
    """The character-by-character reading of RFC 5322 §3.2 tokens, comments dropped."""
    out, i, n, spaced = [], 0, len(value), False
    while i < n:
        ch = value[i]
        if ch.isspace() or ch == ")":
            spaced, i = True, i + 1
        elif ch == "(":
            depth, i = 1, i + 1
            while i < n and depth:
                if value[i] == "\\":
                    i += 1
                elif value[i] == "(":
                    depth += 1
                elif value[i] == ")":
                    depth -= 1
                i += 1
            spaced = True
        elif ch == '"':
            j, chars = i + 1, []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(value[j])
                j += 1
            out.append(("quoted", "".join(chars), spaced))
            i, spaced = j + 1, False
        elif ch == "[":
            j = value.find("]", i)
            j = n - 1 if j < 0 else j
            out.append(("literal", value[i : j + 1], spaced))
            i, spaced = j + 1, False
        elif ch in "<>,;:@[]":
            out.append(("special", ch, spaced))
            i, spaced = i + 1, False
        else:
            j = i
            while j < n and not value[j].isspace() and value[j] not in '<>,;:@[]()"':
                j += 1
            out.append(("atom", value[i:j], spaced))
            i, spaced = j, False
    return out


@settings(max_examples=1500)
@given(
    st.text(alphabet='ab.@<>,;:[]()"\\ \t\r\n\u00a0\u2028\u3000é', max_size=40)
    | st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)
)
def test_tokens_read_as_the_character_by_character_reading(value: str) -> None:
    assert [tuple(t) for t in _tokens(value)] == _tokens_reference(value)


def _first_mailbox_reference(values: list[str | None]) -> str:
    """first_mailbox as it read the From values before it shared from_domains' reading."""
    for value in values:
        if value is None:
            continue
        for local, raw, literal in _mailboxes(_unfold(str(value))):
            domain = (raw if _LITERAL.match(raw) else "") if literal else normalize_domain(raw)
            if not domain:
                continue
            text = local.text
            if local.kind == "quoted" and not DOT_ATOM.fullmatch(text):
                text = quoted_string(text)
            return f"{text}@{domain}".lower()
    return ""


_HOSTILE_FROM = st.text(alphabet='aB.@<>,;:[]()"\\ \t\r\n\u00a0é1', max_size=40) | st.lists(
    st.sampled_from([*_PIECES, "[1.2.3.4]", "xn--", "A.Example", "dkim=pass"]), max_size=12
).map("".join)


@settings(max_examples=1500)
@given(st.lists(_HOSTILE_FROM | st.none(), max_size=3))
def test_first_mailbox_reads_as_its_own_walk_did(values: list[str | None]) -> None:
    assert first_mailbox(values) == _first_mailbox_reference(values)
    # and the domain of the mailbox it gives is the one DMARC judged, when that one is usable
    found = first_mailbox(values)
    if found and not found.endswith("]"):
        assert found.rpartition("@")[2] in from_domains(values)[0]
