"""Authentication-Results: public parser cases parse with authres, and our quoting round-trips.

Cases: RFC 8601 Appendix B (as quoted by dkim_verifier), dkim_verifier's and
go-msgauth's parser cases (tests/vectors/authres/authres-parse-cases.yaml)
and the authres package's own doctests (authres-py-doctest-cases.yaml).
"""

from __future__ import annotations

from typing import Any

import authres
import authres.arc
import authres.dmarc
import pytest
import yaml

from classifier.annotate import ar_value
from tests.conftest import vector_path

# What authres 1.2 itself cannot parse (RFC-valid or not), so there is nothing to round-trip.
AUTHRES_CANNOT_PARSE = {
    "B.7": "comments between method, '/', version and '=' (RFC 8601 B.7) are beyond authres",
    "quoted-authserv-id": "authres takes the authserv-id as a token only",
    "go-empty": "an empty value has no authserv-id",
    "go-trailing-semicolon": "a trailing ';' (go-msgauth is lenient, RFC 8601 §2.2 is not)",
    "trailing-semicolon": "the same, in dkim_verifier's relaxed mode",
}
AUTHRES_DIFFERS = {
    "quoted-sdid-auid": "authres's DKIM result drops a quoted header.d value",
}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    data = yaml.safe_load(vector_path("authres", "authres-parse-cases.yaml").read_text())
    out = []
    for section in ("rfc8601_appendix_b", "dkim_verifier_other", "go_msgauth"):
        for n, case in enumerate(data[section]):
            cid = case.get("id")
            if cid is None:
                value = case.get("value", "")
                cid = "go-empty" if not value else f"go-{n}"
                if value.rstrip().endswith(";"):
                    cid = "go-trailing-semicolon"
            out.append((f"{section}/{cid}", case))
    return out


def _value(case: dict[str, Any]) -> str:
    text = case.get("header", case.get("value", ""))
    if text.lower().startswith("authentication-results:"):
        text = text.split(":", 1)[1]
    return " ".join(text.split())


def _expected(case: dict[str, Any]) -> dict[str, Any] | None:
    """Gives the expected parse (the relaxed one where the strict parser must refuse)."""
    expect = case.get("expect", case.get("relaxed"))
    return expect if isinstance(expect, dict) else None


def _structure(header: authres.AuthenticationResultsHeader) -> tuple[Any, ...]:
    return (
        header.authserv_id.lower(),
        [
            (r.method, r.result, {f"{p.type}.{p.name}": p.value for p in r.properties})
            for r in header.results
        ],
    )


CASES = _cases()


@pytest.mark.parametrize(("cid", "case"), CASES, ids=[c for c, _ in CASES])
def test_parser_case(cid: str, case: dict[str, Any]) -> None:
    short = cid.split("/", 1)[1]
    expected = _expected(case)
    try:
        header = authres.AuthenticationResultsHeader.parse_value(_value(case))
    except authres.AuthResError:
        # Refused: right when the case must be refused, else a listed authres limitation.
        assert expected is None or short in AUTHRES_CANNOT_PARSE or short.startswith("eai-"), cid
        return
    if expected is None:
        pytest.skip(f"{cid}: authres accepts what a strict parser refuses")
    got = _structure(header)
    want = (
        str(expected.get("authserv_id", got[0])).lower(),
        [(r["method"], r["result"], r.get("props", {})) for r in expected.get("results", [])],
    )
    if short in AUTHRES_DIFFERS:
        assert got != want, f"{cid} now parses as expected: drop it from AUTHRES_DIFFERS"
        return
    assert got == want


@pytest.mark.parametrize(("cid", "case"), CASES, ids=[c for c, _ in CASES])
def test_our_quoting_round_trips(cid: str, case: dict[str, Any]) -> None:
    """Every parsed result, written again with our pvalue quoting, parses back to the same."""
    try:
        header = authres.AuthenticationResultsHeader.parse_value(_value(case))
    except authres.AuthResError:
        pytest.skip("authres cannot parse it")
    rebuilt = authres.AuthenticationResultsHeader(
        authserv_id=header.authserv_id,
        results=[
            authres.core.AuthenticationResult(
                method=r.method,
                result=r.result,
                properties=[
                    authres.AuthenticationResultProperty(p.type, p.name, ar_value(p.value))
                    for p in r.properties
                ],
            )
            for r in header.results
        ],
    )
    value = str(rebuilt).split(":", 1)[1].strip()
    again = authres.AuthenticationResultsHeader.parse_value(value)
    assert _structure(again) == _structure(header)


def test_rfc8601_appendix_b_parses_except_the_comment_heavy_example() -> None:
    appendix = [(c, case) for c, case in CASES if c.startswith("rfc8601_appendix_b/")]
    parsed = 0
    for _cid, case in appendix:
        try:
            authres.AuthenticationResultsHeader.parse_value(_value(case))
            parsed += 1
        except authres.AuthResError:
            assert case["id"] == "B.7"
    assert parsed == len(appendix) - 1 == 10


DOCTESTS = yaml.safe_load(vector_path("authres", "authres-py-doctest-cases.yaml").read_text())


@pytest.mark.parametrize("n", range(len(DOCTESTS["parse_cases"])))
def test_authres_doctest_parse_case(n: int) -> None:
    case = DOCTESTS["parse_cases"][n]
    checks = [e for e in case["expect"] if e["expr"].startswith("arobj.")]
    if "core" not in case["parser"] or not checks:
        pytest.skip("extension-method or error case of the authres doctests")
    header = case["header"].split(":", 1)[1].strip()
    arobj = authres.AuthenticationResultsHeader.parse_value(header)
    for item in checks:
        # Expressions are test data from the suite, evaluated against the parsed object.
        got = eval(item["expr"], {"arobj": arobj})
        assert str(got) == str(item["expected"]), item["expr"]


@pytest.mark.parametrize("n", range(len(DOCTESTS["generated_headers"])))
def test_generated_headers_round_trip(n: int) -> None:
    text = DOCTESTS["generated_headers"][n]["expected_header"]
    value = text.split(":", 1)[1].strip()
    header = authres.AuthenticationResultsHeader.parse_value(value)
    again = authres.AuthenticationResultsHeader.parse_value(str(header).split(":", 1)[1].strip())
    assert _structure(again) == _structure(header)
