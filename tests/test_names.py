"""The shared name and word helpers (classifier/names.py): one rule each, used everywhere."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from classifier.names import DOT_ATOM, LDH_DOMAIN, normalize_ip, quoted_string, safe_domain


@given(st.text(alphabet='ab"\\;()= \t@', max_size=30))
def test_a_quoted_string_reads_back_as_its_text_and_cannot_be_left(text: str) -> None:
    out = quoted_string(text)
    assert out.startswith('"') and out.endswith('"')
    inner = out[1:-1]
    # RFC 5322 §3.2.4: every quote inside is a quoted-pair, so none ends the string early.
    assert re.fullmatch(r'(?:[^"\\]|\\.)*', inner, re.S)
    assert re.sub(r"\\(.)", r"\1", inner, flags=re.S) == text


def test_dot_atom_is_runs_of_atext_joined_by_single_dots() -> None:
    assert DOT_ATOM.fullmatch("john.q+news")
    for bad in ("a..b", ".a", "a.", "a b", 'a"b', "a@b", "a\n"):
        assert not DOT_ATOM.fullmatch(bad), bad


def test_domains_and_addresses_have_one_normal_form() -> None:
    assert safe_domain(" Example.ORG. ") == "example.org"
    assert safe_domain("élan.cyou") == "xn--lan-9la.cyou"
    assert safe_domain("a b.example") == "" and not LDH_DOMAIN.fullmatch("a" * 64 + ".example")
    assert normalize_ip("[IPv6:2001:DB8::1]") == "2001:db8::1"
    assert normalize_ip("::ffff:192.0.2.1") == "192.0.2.1"  # RFC 7208 §5: the IPv4 client
    assert normalize_ip("fe80::1%eth0") == "fe80::1"
    assert normalize_ip("192.0.2.300") is None
