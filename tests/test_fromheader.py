"""Tests of classifier/auth/fromheader.py on hostile From fields: every input ends, and quickly."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.auth.fromheader import first_mailbox, from_domains, normalize_domain

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
