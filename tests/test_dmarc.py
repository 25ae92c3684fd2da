"""DMARC: the 252 transcribed public cases of dmarc-cases.yaml, and our own edges.

Every case of the four YAML documents (authheaders, mail-dmarc-perl,
opendmarc-libopendmarc, stalwart-mail-auth) runs here; `test_every_case_is_loaded`
counts them.  Each runs in the mode its source implements: authheaders without
``dmarcbis`` and OpenDMARC are RFC 7489 (PSL Organizational Domain), Mail-DMARC
(2026) and Stalwart are RFC 9989 (tree walk).

What is compared: the DMARC result, the policy / disposition and the alignment
flags, never authheaders' exact Authentication-Results text (our header is
written elsewhere and differs).  DKIM for the authheaders messages is verified
for real with dkimpy over the loopback DNS (its ``dnsfunc`` parameter), and must
agree with the ``dkim=`` of the expected header; ``prev`` cases take the DKIM
results the case states.

A case whose expectation contradicts the RFC is listed in DISAGREE with the
clause, and there the test asserts the RFC's answer (OUR_ANSWER) and that it
really differs from upstream's.  OUT_OF_SCOPE holds a receiver-local override
that authsieve makes in its verdict, not in the evaluator.

DNS: each document's zone (and each case's own inline zone) is served by a real
DnsTestServer on loopback, one per zone, shared by the module.
"""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dkim
import pytest
import yaml
from publicsuffixlist import PublicSuffixList

from classifier.auth.dmarc import DmarcResult, alignment_kind, check_dmarc, from_domains
from classifier.auth.dmarc_discovery import organizational_domain, psl_organizational_domain
from classifier.auth.dmarc_record import (
    DmarcRecord,
    external_destination_authorised,
    fetch_records,
    parse_record,
    reporting_uris,
    valid_tag_value,
    walk_names,
)
from classifier.lookup.resolver import DnsSession, Resolver
from classifier.lookup.sources import ServerSource
from tests.conftest import ROOT, VECTORS, resolver_for
from tests.dnsserver import DnsTestServer, free_udp_port

CASES_FILE = VECTORS / "dmarc" / "dmarc-cases.yaml"
MESSAGES = VECTORS / "dmarc" / "authheaders-messages"
TOTAL_CASES = 252

DISAGREE = {
    "authheaders/ah-dmarc-bad-record": (
        'the fragment "reject" is a syntax error that is discarded, leaving p=none: RFC 7489 §6.3'
        ' ("Syntax errors in the remainder of the record SHOULD be discarded"), RFC 9989 §4.8;'
        " so the message fails with policy none instead of permerror"
    ),
    "mail-dmarc-perl/md-psd-y-no-p": (
        '"v=DMARC1; psd=y" has no p= and no rua=, so "the Mail Receiver applies no DMARC'
        ' processing to this message": RFC 9989 §4.10.1 (result none, not fail)'
    ),
    "mail-dmarc-perl/parse-6": (
        'v=DMARC1\\ is not "DMARC1": "the entire record MUST be ignored", RFC 9989 §4.7 (v)'
    ),
    "mail-dmarc-perl/parse-11": (
        "a record without p= and without a usable rua= states no policy: RFC 9989 §4.10.1;"
        " it still counts in the tree walk (psd=y), but is not a valid policy"
    ),
    "mail-dmarc-perl/tag-accept-v-dmarc1": (
        'the version is case-sensitive: %s"DMARC1" in RFC 9989 §4.8, hex-coded in RFC 7489 §6.4'
    ),
    "mail-dmarc-perl/tag-accept-fo-0:1:d:s": (
        '"0" and "1" are mutually exclusive: RFC 9989 §4.7 (fo) and the dmarc-fo rule of §4.8'
    ),
    "mail-dmarc-perl/tag-accept-rf-iodef": (
        'rf= takes registered report formats only, and "afrf" is the only one: RFC 7489 §6.3,'
        " §11.4 (iodef was dropped from the drafts); RFC 9989 removes rf= altogether"
    ),
    "mail-dmarc-perl/tag-accept-rf-IODEF": "as tag-accept-rf-iodef: RFC 7489 §6.3",
    "mail-dmarc-perl/report-uri-invalid-http://www.example.com/dmarc": (
        "a syntactically valid http URI inside the policy domain's own Organizational Domain"
        " (www.example.com under example.com) needs no external authorisation: RFC 7489 §7.1;"
        " Mail-DMARC demands the exact host"
    ),
    "opendmarc-libopendmarc/parse-5": (
        'p= is one of "none", "quarantine", "reject"; "n" is a syntax error: RFC 7489 §6.4'
        " dmarc-request (OpenDMARC accepts prefixes)"
    ),
    "opendmarc-libopendmarc/align-5": (
        '".mac.com." has an empty first label, so it is not a domain name (RFC 1035 §2.3.1) and'
        " aligns with nothing; only the final root dot is dropped"
    ),
    "opendmarc-libopendmarc/align-6": "as align-5: '....mac.com....' is not a domain name",
}

OUT_OF_SCOPE = {
    "mail-dmarc-perl/mv-whitelist": (
        "a receiver-local allow list overrides the disposition (RFC 7489 §7.2, RFC 9989 §5.4);"
        " authsieve does that in its policy/verdict, so the evaluator gives the Domain Owner's"
        " request: fail with disposition reject"
    ),
}

OUR_ANSWER: dict[str, Any] = {
    "authheaders/ah-dmarc-bad-record": {
        "dmarc": "fail",
        "policy": "none",
        "header.from": "bad.example.com",
    },
    "mail-dmarc-perl/md-psd-y-no-p": {"result": "none", "disposition": "none", "published_p": ""},
    "mail-dmarc-perl/parse-6": {"valid": False},
    "mail-dmarc-perl/parse-11": {"valid": False},
    "mail-dmarc-perl/tag-accept-v-dmarc1": False,
    "mail-dmarc-perl/tag-accept-fo-0:1:d:s": False,
    "mail-dmarc-perl/tag-accept-rf-iodef": False,
    "mail-dmarc-perl/tag-accept-rf-IODEF": False,
    "mail-dmarc-perl/report-uri-invalid-http://www.example.com/dmarc": True,
    "opendmarc-libopendmarc/parse-5": "ERROR_BAD_VALUE",
    "opendmarc-libopendmarc/align-5": False,
    "opendmarc-libopendmarc/align-6": False,
    "mail-dmarc-perl/mv-whitelist": {"result": "fail", "disposition": "reject"},
}


# --- loading the cases ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    suite: str
    kind: str
    id: str
    data: Any


def _documents() -> dict[str, dict[str, Any]]:
    return {doc["suite"]: doc for doc in yaml.safe_load_all(CASES_FILE.read_text())}


DOCS = _documents()


def _load_cases() -> list[Case]:
    out: list[Case] = []

    def add(suite: str, kind: str, key: str, data: Any) -> None:
        out.append(Case(suite, kind, f"{suite}/{key}", data))

    def listed(suite: str, kind: str, prefix: str, items: list[Any]) -> None:
        for number, item in enumerate(items, 1):
            add(suite, kind, item.get("id", f"{prefix}-{number}"), item)

    ah, md = DOCS["authheaders"], DOCS["mail-dmarc-perl"]
    od, st = DOCS["opendmarc-libopendmarc"], DOCS["stalwart-mail-auth"]
    listed("authheaders", "ah-eval", "case", ah["cases"])
    listed("authheaders", "from", "from", ah["from_domain_extraction"])
    listed("mail-dmarc-perl", "from", "from", md["from_domain_extraction"])
    listed("mail-dmarc-perl", "md-spf-align", "spf-align", md["spf_alignment"])
    listed("mail-dmarc-perl", "md-dkim-align", "dkim-align", md["dkim_alignment"])
    listed("mail-dmarc-perl", "orgdomain", "org", md["organizational_domain"])
    listed("mail-dmarc-perl", "fetch", "fetch", md["record_fetch"])
    listed("mail-dmarc-perl", "md-eval", "eval", md["evaluations"])
    listed("mail-dmarc-perl", "md-parse", "parse", md["policy_record_parse"])
    for verdict in ("accept", "reject"):
        for tag, values in md["tag_values"][verdict].items():
            for value in values:
                add("mail-dmarc-perl", "tag", f"tag-{verdict}-{tag}-{value}", (verdict, tag, value))
    for verdict in ("valid", "invalid"):
        for uri in md["reporting_uri"][verdict]:
            add("mail-dmarc-perl", "report-uri", f"report-uri-{verdict}-{uri}", (verdict, uri))
    listed("mail-dmarc-perl", "external", "external", md["external_report_verification"])
    listed("opendmarc-libopendmarc", "od-parse", "parse", od["record_parse"])
    listed("opendmarc-libopendmarc", "od-align", "align", od["alignment"])
    listed("opendmarc-libopendmarc", "from", "from", od["from_domain_extraction"])
    listed("opendmarc-libopendmarc", "orgdomain-psl", "org", od["organizational_domain_psl"])
    listed("stalwart-mail-auth", "st-eval", "eval", st["evaluations"])
    return out


CASES = _load_cases()


def cases(*kinds: str) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in CASES if c.kind in kinds]


def check(case: Case, observed: Any, expected: Any) -> None:
    """Asserts upstream's expectation, or for a listed disagreement the RFC's different answer."""
    if case.id in OUR_ANSWER:
        ours = OUR_ANSWER[case.id]
        if isinstance(ours, dict):
            assert {k: observed[k] for k in ours} == ours, DISAGREE.get(case.id, "")
            assert any(expected.get(k, v) != v for k, v in ours.items()), "not a disagreement"
        else:
            assert observed == ours != expected, DISAGREE.get(case.id, OUT_OF_SCOPE.get(case.id))
        return
    if isinstance(expected, dict):
        assert {k: observed[k] for k in expected} == expected
    else:
        assert observed == expected


# --- DNS: one loopback server per zone, shared by the module -------------------------

PLACEHOLDER = {"A": "192.0.2.1", "AAAA": "2001:db8::1", "MX": "10 mail.invalid."}


def txt(value: str) -> str:
    """Gives a TXT rdata in zone syntax, split into 255-octet strings."""
    data = value.encode()
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    quoted = (c.decode().replace("\\", "\\\\").replace('"', '\\"') for c in chunks)
    return " ".join(f'"{q}"' for q in quoted)


def zone_from_map(names: dict[str, Any], exists: Any = ()) -> str:
    """Gives zone text for a case's dns map: str → TXT, "" → empty TXT, {TYPE: …} → that type.

    null is NXDOMAIN: the owner is left out, and so is every name under it (RFC 8020).
    """
    missing = [owner.rstrip(".") for owner, value in names.items() if value is None]
    lines = []
    for owner, value in names.items():
        owner = owner.rstrip(".")
        if any(owner == gone or owner.endswith("." + gone) for gone in missing):
            continue
        if isinstance(value, dict):
            lines += [f"{owner}. 300 IN {kind} {PLACEHOLDER[kind]}" for kind in value]
            continue
        if value.startswith("<contents of "):
            value = (VECTORS / "dmarc" / value[len("<contents of ") : -1]).read_text().strip()
        lines.append(f"{owner}. 300 IN TXT {txt(value)}")
    lines += [f"{name}. 300 IN A 192.0.2.1" for name in exists]
    return "\n".join(lines) + "\n"


class ServerPool:
    """Starts one DnsTestServer per distinct zone and stops them all together at the end."""

    def __init__(self) -> None:
        self.servers: dict[tuple[str, tuple[str, ...]], DnsTestServer] = {}

    def get(self, zone: str, servfail: tuple[str, ...] = ()) -> DnsTestServer:
        key = (zone, servfail)
        if key not in self.servers:
            self.servers[key] = DnsTestServer(zone, servfail=servfail)
        return self.servers[key]

    def session(self, zone: str) -> DnsSession:
        return resolver_for(self.get(zone)).session()

    def stop_all(self) -> None:
        # each stop waits for the serving loops' poll interval: stop them side by side
        threads = [threading.Thread(target=s.stop) for s in self.servers.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


@pytest.fixture(scope="module")
def pool() -> Iterator[ServerPool]:
    servers = ServerPool()
    yield servers
    servers.stop_all()


def ah_zone() -> str:
    return zone_from_map(DOCS["authheaders"]["dns"])


def md_zone() -> str:
    return "\n".join(DOCS["mail-dmarc-perl"]["zone_04_PurePerl"]) + "\n"


# --- the transcribed cases -----------------------------------------------------------


def test_every_case_is_loaded() -> None:
    assert len(CASES) == TOTAL_CASES
    assert len({c.id for c in CASES}) == TOTAL_CASES
    assert set(DISAGREE) | set(OUT_OF_SCOPE) == set(OUR_ANSWER) <= {c.id for c in CASES}


@pytest.mark.parametrize("case", cases("from"))
def test_from_domain_extraction_matches_suite(case: Case) -> None:
    domains, error = from_domains([case.data["from"]])
    if case.data["domain"] is None:
        # no single Author Domain: none at all, or several (each of which check_dmarc judges)
        assert error or len(set(domains)) > 1
    else:
        assert (domains[:1], error) == ([case.data["domain"]], "")


def dkim_of_message(message: bytes, dns: DnsSession) -> list[tuple[str, str]]:
    """Gives (result, d=) per DKIM signature, verified by dkimpy over the loopback DNS."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        found = dns.txt(name.decode().rstrip("."))
        return found[0].encode() if found else None

    count = len(email.message_from_bytes(message).get_all("DKIM-Signature") or [])
    verifier = dkim.DKIM(message)
    out = []
    for index in range(count):
        ok = verifier.verify(idx=index, dnsfunc=lookup)
        out.append(("pass" if ok else "fail", verifier.domain.decode().lower()))
    return out


def ar_dkim(header: str) -> list[tuple[str, str]]:
    return re.findall(r"dkim=(\w+) header\.d=([^\s;]+)", header)


@pytest.mark.parametrize("case", cases("ah-eval"))
def test_authheaders_message_matches_suite(case: Case, pool: ServerPool) -> None:
    data, dns = case.data, pool.session(ah_zone())
    options, expect = data.get("options", {}), data["expect"]
    raw = (MESSAGES / data["message"]).read_bytes()
    froms = email.message_from_bytes(raw, policy=email.policy.compat32).get_all("From") or []
    if "header_from_raw" in data:
        assert froms == [data["header_from_raw"]]
    if "prev" in data:
        signatures = ar_dkim(data["prev"])
    elif options.get("dkim", True):
        signatures = dkim_of_message(raw, dns)
        assert signatures == ar_dkim(expect["ar"])  # our fixture chain agrees with authheaders
    else:
        signatures = []
    if options.get("dmarc") is False:
        assert "dmarc=" not in expect["ar"] and signatures == [("pass", "example.com")]
        return
    mode = "rfc9989" if options.get("dmarcbis") else "rfc7489"
    result = check_dmarc(froms, "none", "", signatures, dns, mode=mode)
    observed = {
        "dmarc": result.result,
        "policy": result.policy,
        "header.from": result.from_domain or "none",
    }
    wanted = {k: v for k, v in expect.items() if k in ("dmarc", "policy")}
    header_from = re.search(r"header\.from=(\S+)", expect["ar"])
    if header_from:
        wanted["header.from"] = header_from.group(1)
    check(case, observed, wanted)


def spf_entries(spf: Any) -> list[dict[str, str]]:
    return spf if isinstance(spf, list) else [spf]


@pytest.mark.parametrize("case", cases("md-spf-align"))
def test_mail_dmarc_spf_alignment_matches_suite(case: Case, pool: ServerPool) -> None:
    data = case.data
    author, mfrom = (
        data["header_from"],
        [e for e in spf_entries(data["spf"]) if e["scope"] == "mfrom"],
    )
    if "policy" in data:
        # an SMTP transaction has one MAIL FROM: each mfrom result is one possible message
        dns = pool.session(f"_dmarc.{author}. 300 IN TXT {txt(data['policy'])}\n")
        results = [check_dmarc([f"u@{author}"], e["result"], e["domain"], [], dns) for e in mfrom]
        aligned = [e for e, r in zip(mfrom, results, strict=True) if r.spf_aligned]
        check(case, "pass" if aligned else "fail", data["expect_spf"])
        kinds = [alignment_kind(author, e["domain"], dns) for e in aligned]
    else:
        dns = pool.session(md_zone())
        kinds = [alignment_kind(author, e["domain"], dns) for e in mfrom if e["result"] == "pass"]
        relaxed_ok = data.get("aspf", "r") == "r"
        observed = any(k == "strict" or (k == "relaxed" and relaxed_ok) for k in kinds)
        check(case, observed, data["aligned"])
    if "mode" in data:
        assert data["mode"] in kinds


@pytest.mark.parametrize("case", cases("md-dkim-align"))
def test_mail_dmarc_dkim_alignment_matches_suite(case: Case, pool: ServerPool) -> None:
    data, dns = case.data, pool.session(md_zone())
    kinds = [
        alignment_kind(data["header_from"], sig["domain"], dns)
        for sig in data["dkim"]
        if sig["result"] == "pass"
    ]
    check(case, any(k in ("strict", "relaxed") for k in kinds), data["aligned"])
    if "mode" in data:
        assert data["mode"] in kinds


@pytest.mark.parametrize("case", cases("orgdomain", "orgdomain-psl"))
def test_organizational_domain_matches_suite(case: Case, pool: ServerPool) -> None:
    data = case.data
    if case.kind == "orgdomain-psl":
        observed = psl_organizational_domain(data["domain"])  # the bundled (current) list
    elif "psl" in data:
        observed = psl_organizational_domain(data["domain"], PublicSuffixList(data["psl"]))
    else:
        observed = organizational_domain(data["domain"], pool.session(md_zone()))
    check(case, observed, data["org"])


@pytest.mark.parametrize("case", cases("fetch"))
def test_record_fetch_matches_suite(case: Case, pool: ServerPool) -> None:
    # "com": RFC 9989 walks up to the TLD, so _dmarc.com is asked; none is published there
    check(case, fetch_records(case.data["query"], pool.session(md_zone())), case.data["records"])


def observe_mail_dmarc(
    result: DmarcResult, author: str, spf: tuple[str, str], dns: DnsSession
) -> dict[str, Any]:
    def kind(aligned: bool, identifier: str) -> str:
        return alignment_kind(author, identifier, dns) if aligned else ""

    dkim_d = result.aligned_by.partition(":")[2]
    return {
        "result": result.result,
        "disposition": result.disposition,
        "published_p": result.published_policy,
        "spf": "pass" if result.spf_aligned else "fail",
        "spf_aligned": result.spf_aligned,
        "dkim_aligned": result.dkim_aligned,
        "spf_align": kind(result.spf_aligned, spf[1]),
        "dkim_align": kind(result.dkim_aligned, dkim_d),
    }


@pytest.mark.parametrize("case", cases("md-eval"))
def test_mail_dmarc_evaluation_matches_suite(case: Case, pool: ServerPool) -> None:
    data = case.data
    dns = pool.session(zone_from_map(data["dns"]) if "dns" in data else md_zone())
    mfrom = [e for e in spf_entries(data.get("spf", [])) if e["scope"] == "mfrom"]
    spf = (mfrom[0]["result"], mfrom[0]["domain"]) if mfrom else ("none", "")
    signatures = [(s["result"], s["domain"]) for s in data.get("dkim", [])]
    author = data["header_from"]
    result = check_dmarc([f"user@{author}"], *spf, signatures, dns, mode="rfc9989")
    expected = {k: v for k, v in data["expect"].items() if k != "reason"}
    check(case, observe_mail_dmarc(result, author, spf, dns), expected)


def record_text(data: dict[str, Any]) -> str:
    if "record" in data:
        return str(data["record"])
    return "; ".join(f"{tag}={value}" for tag, value in data["tags"].items())


@pytest.mark.parametrize("case", cases("md-parse"))
def test_mail_dmarc_record_parse_matches_suite(case: Case) -> None:
    data = case.data
    record = parse_record(record_text(data))
    observed: dict[str, Any] = {"parsed": None, "valid": False, "defaults_applied": None}
    if isinstance(record, DmarcRecord):
        tags = record.tag_dict()
        observed["parsed"], observed["valid"] = tags, record.usable
        observed["defaults_applied"] = {
            k: str(tags.get(k, getattr(record, k, None))) for k in data.get("defaults_applied", {})
        }
    expected = {k: data[k] for k in ("parsed", "valid") if k in data}
    if "parsed" in expected:
        expected["parsed"] = {k: str(v) for k, v in expected["parsed"].items()}
    if "defaults_applied" in data:
        expected["defaults_applied"] = {k: str(v) for k, v in data["defaults_applied"].items()}
    check(case, observed, expected)


@pytest.mark.parametrize("case", cases("tag"))
def test_mail_dmarc_tag_value_matches_suite(case: Case) -> None:
    verdict, tag, value = case.data
    if tag in ("rua", "ruf"):
        observed = bool(reporting_uris(str(value)))  # a list that yields no usable URI
    else:
        observed = valid_tag_value(tag, str(value))
    check(case, observed, verdict == "accept")


@pytest.mark.parametrize("case", cases("report-uri"))
def test_mail_dmarc_reporting_uri_matches_suite(case: Case) -> None:
    verdict, uri = case.data
    check(case, bool(reporting_uris(uri)), verdict == "valid")


@pytest.mark.parametrize("case", cases("external"))
def test_external_report_destination_matches_suite(case: Case, pool: ServerPool) -> None:
    data = case.data
    authorised, replacement = external_destination_authorised(
        data["policy_domain"], data["report_dest"], pool.session(md_zone())
    )
    check(case, authorised, data["authorised"])
    if "rua_override" in data:
        assert replacement == (data["rua_override"],)


def opendmarc_status(text: str) -> str:
    record = parse_record(text, mode="rfc7489")
    if not isinstance(record, DmarcRecord):
        return "ERROR_EMPTY" if record.code == "empty" else "ERROR_BAD_VERSION"
    if record.invalid_tags:
        return "ERROR_BAD_VALUE"
    return "OKAY" if record.p else "ERROR_NO_REQUIRED_P"


@pytest.mark.parametrize("case", cases("od-parse"))
def test_opendmarc_record_parse_matches_suite(case: Case) -> None:
    check(case, opendmarc_status(case.data["record"]), case.data["status"])


@pytest.mark.parametrize("case", cases("od-align"))
def test_opendmarc_alignment_matches_suite(case: Case) -> None:
    data = case.data
    kind = alignment_kind(data["a"], data["b"], None, mode="rfc7489")
    aligned = kind == "strict" or (kind == "relaxed" and data["mode"] == "relaxed")
    check(case, aligned, data["aligned"])


def verdict_word(aligned: bool, passing: bool) -> str:
    return "pass" if aligned else "fail (not aligned)" if passing else "none"


@pytest.mark.parametrize("case", cases("st-eval"))
def test_stalwart_evaluation_matches_suite(case: Case, pool: ServerPool) -> None:
    data = case.data
    dns = pool.session(zone_from_map(data["dns"], data.get("exists", [])))
    spf_result = data["spf"]["result"] if "spf" in data else "none"
    signatures = [(s["result"], s["domain"]) for s in data.get("dkim", [])]
    author = data["header_from"]
    result = check_dmarc(
        [f"user@{author}"], spf_result, data.get("mail_from_domain", ""), signatures, dns
    )
    observed = {
        "dkim": verdict_word(result.dkim_aligned, any(r == "pass" for r, _ in signatures)),
        "spf": verdict_word(result.spf_aligned, spf_result == "pass"),
        "policy": result.policy,
        "dmarc_record": result.record or None,
    }
    check(case, observed, data["expect"])


# --- our own edges -------------------------------------------------------------------

REJECT = "v=DMARC1; p=reject"


def zone(**records: str) -> str:
    """Gives zone text from owner=TXT keyword pairs (``__`` stands for a dot)."""
    return "".join(f"{k.replace('__', '.')}. 300 IN TXT {txt(v)}\n" for k, v in records.items())


def test_servfail_on_the_dmarc_query_gives_temperror(pool: ServerPool) -> None:
    server = pool.get(zone(_dmarc__sf__example=REJECT), servfail=("_dmarc.sf.example.",))
    result = check_dmarc(["a@sf.example"], "pass", "sf.example", [], resolver_for(server).session())
    assert (result.result, result.policy, result.record) == ("temperror", "", "")
    assert "SERVFAIL" in result.reason


def test_unreachable_dns_server_gives_temperror() -> None:
    resolver = Resolver(ServerSource((("127.0.0.1", free_udp_port()),)), timeout=0.5)
    result = check_dmarc(["a@example.com"], "pass", "example.com", [], resolver.session())
    assert (result.result, result.policy) == ("temperror", "")


def test_servfail_above_the_author_record_spares_only_strict_alignment(pool: ServerPool) -> None:
    server = pool.get(zone(_dmarc__a__sfup__example=REJECT), servfail=("_dmarc.sfup.example.",))
    dns = resolver_for(server).session()
    assert check_dmarc(["x@a.sfup.example"], "pass", "a.sfup.example", [], dns).result == "pass"
    failing = check_dmarc(["x@a.sfup.example"], "pass", "b.sfup.example", [], dns)
    assert failing.result == "temperror"  # relaxed alignment needs the org domain it cannot see


def test_tree_walk_asks_at_most_eight_names_per_lookup(pool: ServerPool) -> None:
    server = pool.get(zone(_dmarc__deep__example="v=DMARC1; p=reject; np=quarantine"))
    author = "a.b.c.d.e.f.g.h.i.j.mail.deep.example"  # 13 labels, as in RFC 9989 §4.10
    signer = "s1.s2.s3.s4.s5.s6.s7.s8.s9.deep.example"
    server.reset_counts()
    dns = resolver_for(server).session()
    result = check_dmarc([f"x@{author}"], "fail", "", [("pass", signer)], dns)
    asked = {name: n for (name, kind), n in server.queries.items() if kind == "TXT"}
    author_walk, signer_walk = walk_names(author), walk_names(signer)
    assert len(author_walk) == len(signer_walk) == 8
    assert author_walk[:3] == [author, "g.h.i.j.mail.deep.example", "h.i.j.mail.deep.example"]
    assert set(asked) == {f"_dmarc.{n}." for n in author_walk + signer_walk}
    assert set(asked.values()) == {1}  # each name once per message, shared by both walks
    assert (result.result, result.dkim_aligned, result.org_domain) == ("pass", True, "deep.example")


def test_the_authors_own_record_and_an_identical_identifier_need_no_tree_walk(
    pool: ServerPool,
) -> None:
    server = pool.get(zone(_dmarc__shop__example=REJECT, _dmarc__example="v=DMARC1; p=none"))
    server.reset_counts()
    dns = resolver_for(server).session()
    result = check_dmarc(
        ["x@shop.example"],
        "pass",
        "shop.example",
        [("pass", "esp.example"), ("pass", "shop.example")],
        dns,
    )
    assert (result.result, result.aligned_by, result.disposition) == (
        "pass",
        "dkim:shop.example",
        "none",
    )
    # Policy discovery ends at the author's record; no Organizational Domain was needed.
    assert set(server.queries) == {("_dmarc.shop.example.", "TXT")}
    assert "DKIM esp.example: pass, alignment not looked up" in result.reason
    assert result.org_domain == ""


def test_relaxed_alignment_still_walks_when_nothing_aligns_exactly(pool: ServerPool) -> None:
    server = pool.get(zone(_dmarc__shop__example=REJECT))
    server.reset_counts()
    dns = resolver_for(server).session()
    result = check_dmarc(["x@shop.example"], "fail", "", [("pass", "mail.shop.example")], dns)
    assert (result.result, result.aligned_by, result.org_domain) == (
        "pass",
        "dkim:mail.shop.example",
        "shop.example",
    )
    assert ("_dmarc.example.", "TXT") in server.queries


def test_psd_y_makes_the_label_below_the_organizational_domain(pool: ServerPool) -> None:
    dns = pool.session(
        zone(_dmarc__bank__test="v=DMARC1; p=reject; psd=y", _dmarc__giant__bank__test=REJECT)
    )
    assert organizational_domain("mail.giant.bank.test", dns) == "giant.bank.test"
    assert organizational_domain("mega.bank.test", dns) == "mega.bank.test"
    same = check_dmarc(["x@giant.bank.test"], "pass", "mail.giant.bank.test", [], dns)
    other = check_dmarc(["x@giant.bank.test"], "pass", "mega.bank.test", [], dns)
    assert (same.result, same.spf_aligned) == ("pass", True)
    assert (other.result, other.spf_aligned, other.policy) == ("fail", False, "reject")


def test_psd_n_stops_the_walk_below_the_apex(pool: ServerPool) -> None:
    dns = pool.session(
        zone(
            _dmarc__corp__test="v=DMARC1; p=none",
            _dmarc__dept__corp__test="v=DMARC1; p=quarantine; psd=n",
        )
    )
    assert organizational_domain("a.dept.corp.test", dns) == "dept.corp.test"
    assert organizational_domain("a.other.corp.test", dns) == "corp.test"
    result = check_dmarc(["x@a.dept.corp.test"], "pass", "other.corp.test", [], dns)
    assert (result.result, result.policy, result.record_domain) == (
        "fail",
        "quarantine",
        "_dmarc.dept.corp.test",
    )


def test_np_applies_only_to_a_nonexistent_subdomain(pool: ServerPool) -> None:
    text = zone(_dmarc__np__test="v=DMARC1; p=none; sp=quarantine; np=reject")
    dns = pool.session(text + "real.np.test. 300 IN MX 10 mx.np.test.\n")
    ghost = check_dmarc(["x@ghost.np.test"], "none", "", [], dns)
    real = check_dmarc(["x@real.np.test"], "none", "", [], dns)
    apex = check_dmarc(["x@np.test"], "none", "", [], dns)
    assert (ghost.policy, real.policy, apex.policy) == ("reject", "quarantine", "none")
    assert "np of _dmarc.np.test" in ghost.reason


def test_t_y_applies_the_policy_one_level_lower(pool: ServerPool) -> None:
    dns = pool.session(
        zone(
            _dmarc__rt__test="v=DMARC1; p=reject; t=y",
            _dmarc__qt__test="v=DMARC1; p=quarantine; t=y",
        )
    )
    rejects = check_dmarc(["x@rt.test"], "none", "", [], dns)
    quarantines = check_dmarc(["x@qt.test"], "none", "", [], dns)
    assert (rejects.policy, rejects.published_policy, rejects.testing) == (
        "quarantine",
        "reject",
        True,
    )
    assert (quarantines.policy, quarantines.disposition) == ("none", "none")
    assert check_dmarc(["x@rt.test"], "none", "", [], dns, mode="rfc7489").policy == "reject"


def test_two_records_at_one_name(pool: ServerPool) -> None:
    text = (
        f"_dmarc.two.example.com. 300 IN TXT {txt(REJECT)}\n"
        f"_dmarc.two.example.com. 300 IN TXT {txt('v=DMARC1; p=none')}\n"
        f"_dmarc.example.com. 300 IN TXT {txt('v=DMARC1; p=quarantine')}\n"
    )
    dns = pool.session(text)
    old = check_dmarc(["x@two.example.com"], "none", "", [], dns, mode="rfc7489")
    assert (old.result, old.policy) == ("none", "")  # RFC 7489 §6.6.3 step 5: not applied
    assert "2 DMARC records" in old.reason
    new = check_dmarc(["x@two.example.com"], "none", "", [], dns)
    # RFC 9989 §4.10 step 2: both are discarded and the walk goes on to the org domain
    assert (new.result, new.policy, new.record_domain) == (
        "fail",
        "quarantine",
        "_dmarc.example.com",
    )


def test_several_from_domains_give_the_most_severe_result(pool: ServerPool) -> None:
    dns = pool.session(zone(_dmarc__strict__test=REJECT, _dmarc__lax__test="v=DMARC1; p=none"))
    passing = [("pass", "lax.test")]
    one_field = check_dmarc(["a <a@lax.test>, b <b@strict.test>"], "none", "", passing, dns)
    two_fields = check_dmarc(["a@lax.test", "b@strict.test"], "none", "", passing, dns)
    for result in (one_field, two_fields):
        assert (result.result, result.policy, result.from_domain) == (
            "fail",
            "reject",
            "strict.test",
        )
        assert "2 domain(s)" in result.reason
    assert "2 From fields" in two_fields.reason
    only_lax = check_dmarc(["a@lax.test", "c@LAX.test."], "none", "", passing, dns)
    assert (only_lax.result, only_lax.from_domain) == ("pass", "lax.test")


def test_missing_or_domainless_from_gives_permerror(pool: ServerPool) -> None:
    dns = pool.session(zone(_dmarc__x__test=REJECT))
    for froms in ([], None, ['"Test User"'], ["user@[192.0.2.1]"], ["undisclosed-recipients:;"]):
        result = check_dmarc(froms, "pass", "x.test", [], dns)
        assert (result.result, result.policy, result.from_domain) == ("permerror", "", "")


def test_pct_samples_with_the_callers_draw_in_rfc7489_mode(pool: ServerPool) -> None:
    dns = pool.session(zone(_dmarc__pct__test="v=DMARC1; p=reject; pct=50"))

    def run(sample: float | None) -> DmarcResult:
        return check_dmarc(["x@pct.test"], "none", "", [], dns, mode="rfc7489", sample=sample)

    assert (run(0.2).policy, run(0.7).policy) == ("reject", "quarantine")
    unsampled = run(None)
    assert (unsampled.policy, unsampled.testing, unsampled.pct) == ("reject", True, 50)
    assert check_dmarc(["x@pct.test"], "none", "", [], dns).pct is None  # ignored in RFC 9989


def test_only_an_spf_pass_aligns_and_names_compare_case_blind(pool: ServerPool) -> None:
    dns = pool.session(zone(_dmarc__h__test=REJECT))
    for word in ("softfail", "neutral", "fail", "temperror", ""):
        assert not check_dmarc(["x@h.test"], word, "h.test", [], dns).spf_aligned
    assert check_dmarc(["x@h.test"], "Pass", "H.TEST.", [], dns).aligned_by == "spf"


def test_idn_from_domain_is_compared_as_a_label(pool: ServerPool) -> None:
    dns = pool.session(f"_dmarc.xn--bcher-kva.test. 300 IN TXT {txt(REJECT)}\n")
    domains, error = from_domains(["Bücher <info@Bücher.TEST.>"])
    assert (domains, error) == (["xn--bcher-kva.test"], "")
    result = check_dmarc(["info@bücher.test"], "none", "", [("pass", "xn--bcher-kva.test")], dns)
    assert (result.result, result.from_domain) == ("pass", "xn--bcher-kva.test")


def test_check_dmarc_never_raises_on_odd_input(pool: ServerPool) -> None:
    dns = pool.session(zone(_dmarc__odd__test=REJECT))
    odd: list[Any] = [
        (["\x00@@@"], None, None, [("pass", None)]),
        (["x@odd.test"], "pass", "not a domain", [(None, "odd.test")]),
        (["x@odd.test"], "pass", "odd.test", [("pass",)]),
        ([b"x@odd.test"], "pass", "odd.test", None),
    ]
    for froms, spf, spf_domain, signatures in odd:
        result = check_dmarc(froms, spf, spf_domain, signatures, dns)
        assert result.result in ("pass", "fail", "none", "temperror", "permerror")
    assert (
        check_dmarc(["x@odd.test"], "pass", "odd.test", [], dns, mode="rfc0").result == "permerror"
    )


def test_result_to_dict_carries_the_evidence(pool: ServerPool) -> None:
    dns = pool.session(zone(_dmarc__ev__test=REJECT))
    result = check_dmarc(["x@ev.test"], "pass", "mail.ev.test", [], dns).to_dict()
    assert {k: result[k] for k in ("result", "policy", "from_domain", "mode")} == {
        "result": "pass",
        "policy": "reject",
        "from_domain": "ev.test",
        "mode": "rfc9989",
    }
    assert (result["spf_aligned"], result["dkim_aligned"], result["disposition"]) == (
        True,
        False,
        "none",
    )
    assert result["record_domain"] == "_dmarc.ev.test" and "relaxed" in str(result["reason"])


def test_public_suffix_list_is_built_only_when_rfc7489_is_used() -> None:
    code = (
        "import classifier.auth.dmarc_discovery as d\n"
        "print(d.public_suffix_list.cache_info().currsize)\n"
        "d.psl_organizational_domain('a.example.co.uk')\n"
        "print(d.public_suffix_list.cache_info().currsize)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["0", "1"]


# --- more Author Domains than are evaluated (RFC 9989 §11.5, RFC 7489 §6.6.1) ------------------

EXTRA = [f"a@x{i}.test" for i in range(1, 6)]
BANK_ZONE = dict(_dmarc__bank__test=REJECT, **{f"_dmarc__x{i}__test": REJECT for i in range(1, 6)})


def test_six_from_domains_are_not_more_lenient_than_the_first(pool: ServerPool) -> None:
    dns = pool.session(zone(**BANK_ZONE))
    alone = check_dmarc(['"Bank" <security@bank.test>'], "none", "", [], dns)
    assert (alone.result, alone.policy) == ("fail", "reject")
    value = '"Bank" <security@bank.test>, ' + ", ".join(f"<{a}>" for a in EXTRA)
    # x1..x5 sign for themselves: each alone would pass, the bank would not.
    passing = [("pass", f"x{i}.test") for i in range(1, 6)]
    six = check_dmarc([value], "none", "", passing, dns)
    assert (six.result, six.policy, six.from_domain) == ("fail", "reject", "bank.test")
    assert "From names 6 domains" in six.reason and "most severe" in six.reason
    as_fields = check_dmarc(['"Bank" <security@bank.test>', *EXTRA], "none", "", passing, dns)
    assert (as_fields.result, as_fields.policy) == ("fail", "reject")


def test_the_most_severe_policy_among_the_evaluated_domains_is_given(pool: ServerPool) -> None:
    dns = pool.session(zone(_dmarc__soft__test="v=DMARC1; p=quarantine", **BANK_ZONE))
    value = ", ".join(["a@soft.test", "b@bank.test", *(f"c@y{i}.test" for i in range(1, 6))])
    result = check_dmarc([value], "none", "", [], dns)
    assert (result.result, result.policy, result.from_domain) == ("fail", "reject", "bank.test")


def test_a_domain_beyond_the_cap_cannot_ride_on_passing_ones(pool: ServerPool) -> None:
    dns = pool.session(zone(**BANK_ZONE))
    passing = [("pass", f"x{i}.test") for i in range(1, 6)]
    result = check_dmarc([", ".join([*EXTRA, "security@bank.test"])], "none", "", passing, dns)
    # the bank, sixth, is not evaluated and may publish p=reject: failing under reject
    assert (result.result, result.policy, result.from_domain) == ("fail", "reject", "x1.test")
    assert not (result.spf_aligned or result.dkim_aligned)
    assert "1 more are not authenticated and may publish p=reject" in result.reason


def test_records_of_the_evaluated_author_domains_are_sent_ahead() -> None:
    from classifier.auth.dmarc import record_names

    names = record_names([", ".join(["a@bank.test", *EXTRA])])
    assert names == ["_dmarc.bank.test", *(f"_dmarc.x{i}.test" for i in range(1, 5))]


class Unprintable:
    """A value whose text cannot be taken: makes the DMARC code raise, as a bug would."""

    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_internal_error_in_the_dmarc_check_is_logged_and_not_a_temperror(
    pool: ServerPool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from classifier.log import log

    # configure_logging, run by another test, may have stopped records reaching caplog.
    monkeypatch.setattr(log, "propagate", True)
    dns = pool.session(zone(**BANK_ZONE))
    with caplog.at_level("ERROR", logger="authsieve"):
        result = check_dmarc(["security@bank.test"], "none", "", [(Unprintable(), "x")], dns)
    assert (result.result, result.internal_error) == ("permerror", True)
    assert result.reason == "internal error in the DMARC check: RuntimeError: no text"
    (record,) = [r for r in caplog.records if r.name == "authsieve"]
    # one escaped line (classifier/log.py), the traceback after " | "
    text = record.getMessage()
    assert text.startswith("internal error in the DMARC check | Traceback")
    assert "RuntimeError: no text" in text and "\n" not in text
