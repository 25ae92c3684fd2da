"""The DKIM and ARC steps rewritten for CPU (issue 15, item 3) give what dkimpy and authres give.

Each property runs our step and the library's own function on the same
hostile input (what a sender writes: folded lines, odd white space, NUL,
8-bit, duplicate tags, b= in odd places) and asks for the same output, or
the same exception.
"""

from __future__ import annotations

import hashlib
import re

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy, Relaxed, Simple
from hypothesis import example, given, settings
from hypothesis import strategies as st

from classifier.auth.arc import _FWS
from classifier.auth.dkim import _check_key_record, _Verdict
from classifier.auth.dkim_signature import canonicalize_headers, header_hash

# Pieces of field names and values: white space of every kind, line breaks alone and
# in folds, NUL (the join of `canonicalize_headers`), 8-bit octets, tag syntax.
_VALUE_PIECES = [b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\r\n ", b"\r\n\t", b"\n", b"\r", b"\n\t"]
_VALUE_PIECES += [b"\0", b"\xff", b"\xc3\xa9", b"\x0b", b"\x0c", b"a", b"Word", b"=", b";"]
_VALUE_PIECES += [b"b=", b"; b=AB+/", b" b =\r\n\tz==", b"bh=x", b"h=from:to"]
_NAME_PIECES = [b"From", b"to", b"SUBJECT", b"x-a", b" ", b"\t", b"\0", b"\xe9", b"DKIM-Signature"]

values = st.lists(st.sampled_from(_VALUE_PIECES), max_size=16).map(b"".join)
# Values as the message parsers give them: most end with CRLF, some with LF or nothing.
ended = st.tuples(values, st.sampled_from([b"\r\n", b"\r\n", b"\n", b""])).map(b"".join)
names = st.lists(st.sampled_from(_NAME_PIECES), min_size=1, max_size=3).map(b"".join)
fields = st.lists(st.tuples(names, ended).map(list), max_size=8)


@settings(max_examples=3000, deadline=None)
@example([[b"Subject", b" A  b\r\n"], [b"From", b" x\r\n"]])
@example([[b"X", b"a\0b\r\n"], [b"Y", b" c\r\n"]])
@example([[b"X ", b" a\r\r\n"], [b"Y", b"\r\n"]])
@example([[b"X", b"a\r"], [b"Y", b"\nb"]])
@given(fields)
def test_canonicalize_headers_is_dkimpys(headers):
    """One pass over the joined values gives dkimpy's per-field canonicalisation."""
    assert canonicalize_headers(Relaxed, headers) == Relaxed.canonicalize_headers(headers)
    assert canonicalize_headers(Simple, headers) == Simple.canonicalize_headers(headers)


_INCLUDE = [b"from", b"to", b"subject", b"x-a", b"dkim-signature", b"missing"]


@settings(max_examples=2000, deadline=None)
@example(
    [[b"From", b" a\r\n"], [b"From", b" b\r\n"]],
    [b"from", b"from"],
    [b"DKIM-Signature", b" v=1; b=AB\r\n CD; h=from\r\n"],
    b"relaxed/relaxed",
)
@given(
    fields,
    st.lists(st.sampled_from(_INCLUDE), max_size=8),
    st.tuples(names, ended).map(list),
    st.sampled_from([b"relaxed/relaxed", b"simple/simple", b"relaxed/simple", b"simple/relaxed"]),
)
def test_header_hash_is_dkimpys(headers, include, field, c_value):
    """`header_hash` of canonical fields is the hash dkimpy's `hash_headers` makes."""
    policy = CanonicalizationPolicy.from_c_value(c_value)
    canonical = policy.canonicalize_headers(headers)
    for digest in ("sha256", "sha1"):
        hasher = hashlib.new(digest)
        dkim.hash_headers(hasher, policy, canonical, include, field, {})
        assert header_hash(digest, policy, canonical, include, field) == hasher.digest()


@pytest.mark.parametrize("order", [(0, 1, 2, 0, 1, 2), (2, 1, 0, 2, 1, 0)])
def test_key_record_verdicts_kept_per_record_follow_each_signature(order):
    """A key's t=s verdict, kept per record, still depends on each signature's i= (§3.6.1)."""
    record = b"v=DKIM1; k=rsa; t=s:y; p=AAAA"
    signatures = [
        {b"a": b"rsa-sha256", b"d": b"example.com", b"i": b"@sub.example.com"},
        {b"a": b"rsa-sha256", b"d": b"example.com", b"i": b"a@EXAMPLE.com"},
        {b"a": b"rsa-sha256", b"d": b"example.com"},
    ]
    for index in order:
        if index == 0:
            with pytest.raises(_Verdict, match="t=s forbids"):
                _check_key_record(record, signatures[index])
        else:
            assert _check_key_record(record, signatures[index]) is True  # t=y: testing
    with pytest.raises(_Verdict, match="does not match"):
        _check_key_record(record, {b"a": b"ed25519-sha256", b"d": b"example.com"})


_FOLD_PIECES = [b"\r\n", b"\n", b"\r", b" ", b"\t", b"\r\r\n ", b"\n\n\t", b"a", b";", b"="]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(_FOLD_PIECES), max_size=24).map(b"".join))
def test_arc_unfolding_pattern_is_the_plain_one(value):
    """arc's fold pattern replaces what \\r?\\n[ \\t]+ (RFC 5322 §3.2.2 FWS) replaces."""
    assert _FWS.sub(b" ", value) == re.sub(rb"\r?\n[ \t]+", b" ", value)


# --- ARC-Authentication-Results: authres with its token step made cheaper ------------------

_AAR_PIECES = [b"lists.example", b" 1", b";", b"; ", b" ", b"\r\n ", b"\t", b"none"]
_AAR_PIECES += [b"spf=pass", b"dkim=pass", b"dkim=fail", b"dmarc=pass", b"DKIM = Neutral"]
_AAR_PIECES += [b"arc=none", b"auth/1=pass", b"iprev=temperror", b" reason=", b'"a;b\\" (c)"']
_AAR_PIECES += [b"(comment)", b"(a; dkim=fail)", b"(\\(;\\))", b"((nested) ;)", b"(", b")", b'"']
_AAR_PIECES += [b" header.d=photo.example", b" smtp.mailfrom=a@b", b" header.i=@x", b"=", b"."]
_AAR_PIECES += [b" policy.x=y", b" body.l=1", b" bad.ptype=z", b"\\", b"\xc3\xa9", b"@", b"/"]


def _authres_words(value: str) -> tuple[str, str, str] | None:
    """The plain authres parse, and the words `_parse_aar` draws from it (None: refused)."""
    import authres

    try:
        header = authres.AuthenticationResultsHeader.parse_value(value)
    except Exception:
        return None
    found: dict[str, list[str]] = {}
    for res in header.results:
        found.setdefault(str(res.method).lower(), []).append(str(res.result).lower())
    dkim_words = found.get("dkim", [])
    dkim_word = "pass" if "pass" in dkim_words else (dkim_words[0] if dkim_words else "")
    return found.get("spf", [""])[0], dkim_word, found.get("dmarc", [""])[0]


# AARs built by the grammar (RFC 8601 §2.2) from hostile parts, some with a piece dropped in.
_CFWS = ["", " ", "\r\n ", "\t", " (c) ", "(a; dkim=fail)", " (\\(;\\)) ", "((n) ;)", '("q;")']
_PVALUES = ["photo.example", "@x.example", "a@b.example", '"a;b\\" (c)"', '"q"@d.example', "", "="]
cfws = st.sampled_from(_CFWS)
prop = st.tuples(
    st.sampled_from([" header", " smtp", " policy", " body", " bad"]),
    cfws,
    st.sampled_from([".d", ".from", ".mailfrom", ".i", "", ".b"]),
    st.sampled_from(["=", " = ", ""]),
    st.sampled_from(_PVALUES),
    cfws,
).map("".join)
resinfo = st.tuples(
    st.sampled_from([";", "; ", ";\r\n "]),
    cfws,
    st.sampled_from(
        ["spf", "dkim", "dmarc", "DKIM", "arc", "auth/1", "iprev", "none", "NONE", "x-y"]
    ),
    cfws,
    st.sampled_from(["=", " = "]),
    cfws,
    st.sampled_from(["pass", "fail", "none", "Neutral", "temperror", "softfail", ""]),
    st.sampled_from(["", " reason=ok", " Reason=ok", ' reason="a;b\\"c"', " reason=(x)y"]),
    st.lists(prop, max_size=3).map("".join),
).map("".join)
built = st.tuples(
    st.sampled_from(["lists.example", "mx.example.com", "a", ""]),
    cfws,
    st.sampled_from(["", " 1", " 2"]),
    st.lists(resinfo, max_size=5).map("".join),
    cfws,
).map("".join)
aars = built | st.tuples(built, st.sampled_from(_AAR_PIECES), st.integers(0, 300)).map(
    lambda t: t[0][: t[2]] + t[1].decode("utf-8", "replace") + t[0][t[2] :]
)


@settings(max_examples=3000, deadline=None)
@example("lists.example; dkim=pass header.d=photo.example; spf=pass smtp.mailfrom=a@b")
@example('x; dkim=fail (a; dkim=pass) header.d=y; dkim=pass reason="a;b\\" (c)"')
@example("x (\\(;\\)) 1; spf=pass (((nested) ;)) ; dmarc=none")
@example("x; none")
@given(
    aars
    | st.lists(st.sampled_from(_AAR_PIECES), max_size=20)
    .map(b"".join)
    .map(lambda raw: raw.decode("utf-8", "replace"))
)
def test_aar_parser_is_authres(value):
    """Our authres parser refuses what authres refuses and reads the same results."""
    import authres

    from classifier.auth.arc import _aar_parser, _parse_aar

    words = _authres_words(value)
    assert _parse_aar(value) == (words or ("", "", ""))
    if words is not None:
        theirs = authres.AuthenticationResultsHeader.parse_value(value)
        assert _read(_aar_parser()(value)) == _read(theirs)


def _read(header) -> tuple:
    """What a parsed header holds (its str() fails on some values: an authres bug)."""
    return (
        header.authserv_id,
        header.version,
        [
            (
                r.method,
                r.version,
                r.result,
                r.reason,
                [(p.type, p.name, p.value) for p in r.properties],
            )
            for r in header.results
        ],
    )
