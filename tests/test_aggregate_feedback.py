"""The RFC 9990 aggregate report: built from the store, read back by parsedmarc, checked
against the element structure of RFC 9990 Appendix A."""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import parsedmarc
import pytest

from classifier.aggregate.feedback import NAMESPACE, Reporter, build_report, last_complete_day
from classifier.aggregate.rows import DkimEntry, Override, ReportRow
from classifier.aggregate.store import ReportStore
from classifier.commands.main import main

DAY = 1_700_006_400  # 2023-11-15 00:00:00 UTC
REPORTER = Reporter("Family Mail", "dmarc-reports@family.example", "mx.family.example")
N = "{" + NAMESPACE + "}"

# RFC 9990 Appendix A (the XML schema), written out: element → its children, the required
# ones marked "!".  Compared with the published appendix (not the working group's draft
# this first came from): sp, auth_results/spf and envelope_from are optional, the SPF scope
# is "mfrom" only, SPF results include "policy", and the types the schema declares with
# xs:all (any order) are in UNORDERED; the others are xs:sequence.
STRUCTURE = {
    "feedback": ["version", "!report_metadata", "!policy_published", "extension", "!record"],
    "report_metadata": [
        "!org_name", "!email", "extra_contact_info", "!report_id", "!date_range", "error",
        "generator",
    ],
    "date_range": ["!begin", "!end"],
    "policy_published": [
        "!domain", "!p", "sp", "np", "adkim", "aspf", "discovery_method", "fo", "testing",
    ],
    "record": ["!row", "!identifiers", "!auth_results"],
    "row": ["!source_ip", "!count", "!policy_evaluated"],
    "policy_evaluated": ["!disposition", "!dkim", "!spf", "reason"],
    "reason": ["!type", "comment"],
    "identifiers": ["!header_from", "envelope_from", "envelope_to"],
    "auth_results": ["dkim", "spf"],
    "auth_results/dkim": ["!domain", "!selector", "!result", "human_result"],
    "auth_results/spf": ["!domain", "scope", "!result", "human_result"],
}  # fmt: skip
UNORDERED = {
    "report_metadata", "date_range", "policy_published", "row", "reason", "identifiers",
    "auth_results/dkim", "auth_results/spf",
}  # fmt: skip
ONCE = {"auth_results": {"spf"}}  # maxOccurs="1" among repeatable siblings
ENUMS = {
    "policy_evaluated/disposition": {"none", "pass", "quarantine", "reject"},
    "policy_evaluated/dkim": {"pass", "fail"},
    "policy_evaluated/spf": {"pass", "fail"},
    "reason/type": {"local_policy", "mailing_list", "other", "policy_test_mode",
                    "trusted_forwarder"},
    "policy_published/p": {"none", "quarantine", "reject"},
    "policy_published/sp": {"none", "quarantine", "reject"},
    "policy_published/np": {"none", "quarantine", "reject"},
    "policy_published/adkim": {"r", "s"},
    "policy_published/aspf": {"r", "s"},
    "policy_published/testing": {"n", "y"},
    "policy_published/discovery_method": {"psl", "treewalk"},
    "dkim/result": {"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"},
    "spf/scope": {"mfrom"},
    "spf/result": {"none", "pass", "fail", "softfail", "policy", "neutral", "temperror",
                   "permerror"},
}  # fmt: skip


def check_structure(element: ET.Element, path: str = "feedback") -> None:
    """Fails when an element's children break RFC 9990 Appendix A (names, order, required)."""
    tag = element.tag.removeprefix(N)
    assert element.tag.startswith(N), f"{element.tag}: not in {NAMESPACE}"
    two = "/".join(path.split("/")[-2:])
    key = two if two in STRUCTURE else tag
    if key not in STRUCTURE:
        assert len(element) == 0, f"{path}: a leaf has children"
        parent = path.rsplit("/", 2)[-2] if "/" in path else ""
        allowed = ENUMS.get(f"{parent}/{tag}")
        assert allowed is None or element.text in allowed, f"{path}: {element.text!r}"
        return
    wanted = [n.lstrip("!") for n in STRUCTURE[key]]
    children = [c.tag.removeprefix(N) for c in element]
    assert all(c in wanted for c in children), f"{path}: unknown child in {children}"
    if key in UNORDERED:  # xs:all: each at most once, in any order
        assert len(set(children)) == len(children), f"{path}: a child twice in {children}"
    else:
        assert [wanted.index(c) for c in children] == sorted(wanted.index(c) for c in children)
    for once in ONCE.get(key, set()):
        assert children.count(once) <= 1, f"{path}: {once} more than once"
    for name in STRUCTURE[key]:
        if name.startswith("!"):
            assert name[1:] in children, f"{path}: {name[1:]} missing"
    for child in element:
        check_structure(child, f"{path}/{child.tag.removeprefix(N)}")


def row(at: int, ip: str, **changes: object) -> ReportRow:
    base = ReportRow(
        received_at=at,
        source_ip=ip,
        header_from="example.com",
        envelope_from="example.com",
        envelope_to="family.example",
        spf_domain="example.com",
        spf_scope="mfrom",
        spf_result="pass",
        dkim=(DkimEntry("example.com", "s1", "pass"),),
        dmarc_result="pass",
        dkim_aligned=True,
        spf_aligned=True,
        policy_domain="example.com",
        discovery_method="treewalk",
        p="reject",
        sp="quarantine",
        np="",
        adkim="r",
        aspf="s",
        testing="n",
        policy_applied="reject",
        disposition="pass",
        reasons=(),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


FAIL = {
    "spf_result": "fail", "dkim": (), "dmarc_result": "fail", "dkim_aligned": False,
    "spf_aligned": False, "disposition": "quarantine",
    "reasons": (Override("local_policy", "filed to junk, never rejected"),),
}  # fmt: skip

# One day with mixed results: 3 passes from one IP, 2 failures from another, one
# forwarded failure let through, 1 from IPv6, 2 for another Policy Domain, and two
# rows outside the day that no report may count.
MIXED = [
    row(DAY + 10, "192.0.2.1"),
    row(DAY + 20, "192.0.2.1"),
    row(DAY + 86399, "192.0.2.1"),
    row(DAY + 30, "198.51.100.9", **FAIL),
    row(DAY + 40, "198.51.100.9", **FAIL),
    row(DAY + 50, "203.0.113.7", **{**FAIL, "disposition": "none", "reasons": (
        Override("trusted_forwarder", "relay.uni.example"),)}),
    row(DAY + 60, "2001:db8::25", header_from="news.example.com", envelope_from=""),
    row(DAY + 70, "192.0.2.80", header_from="other.example", policy_domain="other.example",
        p="none", sp="none", policy_applied="none", disposition="none"),
    row(DAY + 80, "192.0.2.80", header_from="other.example", policy_domain="other.example",
        p="none", sp="none", policy_applied="none", disposition="none"),
    row(DAY - 1, "192.0.2.1"),
    row(DAY + 86400, "192.0.2.1"),
]  # fmt: skip


@pytest.fixture
def reports(tmp_path: Path) -> dict[str, Path]:
    db = tmp_path / "reports.db"
    with ReportStore.open(f"sqlite:{db}") as store:
        store.append(MIXED)
    config = tmp_path / "config.toml"
    config.write_text(
        '[classifier]\nauthserv_id = "mx.family.example"\n'
        f'[reports]\nstore = "sqlite:{db}"\nretention_days = 36500\norg_name = "Family Mail"\n'
        'email = "dmarc-reports@family.example"\n'
        'extra_contact_info = "https://family.example/dmarc"\n'
    )
    out = tmp_path / "out"
    # The dry run reads the rua= destinations too: from a zone file, never the Internet.
    zone = tmp_path / "zone"
    zone.write_text('_dmarc.example.com. 300 IN TXT "v=DMARC1; p=reject"\n')
    code = main(["dmarc-report", "--config", str(config), "--day", "2023-11-15",
                 "--dns-zone", str(zone), "--dry-run", str(out)])  # fmt: skip
    assert code == 0
    return {p.name.split("!")[1]: p for p in out.iterdir() if p.name.endswith(".xml.gz")}


def test_one_report_per_policy_domain_named_as_rfc9990_says(reports: dict[str, Path]) -> None:
    # RFC 9990 §3.2.2: receiver!policy-domain!begin!end.xml.gz, end the last second covered.
    assert sorted(p.name for p in reports.values()) == [
        f"mx.family.example!example.com!{DAY}!{DAY + 86399}.xml.gz",
        f"mx.family.example!other.example!{DAY}!{DAY + 86399}.xml.gz",
    ]
    for path in reports.values():
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # GZIP (RFC 1952)


def test_parsedmarc_reads_the_counts_ips_results_and_dispositions_the_store_holds(
    reports: dict[str, Path],
) -> None:
    parsed = parsedmarc.parse_report_file(str(reports["example.com"]), offline=True)
    assert parsed["report_type"] == "aggregate"
    report = parsed["report"]
    meta = report["report_metadata"]
    assert (meta["org_name"], meta["org_email"]) == ("Family Mail", "dmarc-reports@family.example")
    # Ours is f"{DAY}.example.com@mx.family.example" (RFC 9990 §3.2.1 ridfmt, dot-atom "@"
    # dot-atom); parsedmarc keeps the part before the "@".
    assert meta["report_id"] == f"{DAY}.example.com"
    assert report["policy_published"]["domain"] == "example.com"
    assert (report["policy_published"]["p"], report["policy_published"]["sp"]) == (
        "reject", "quarantine",
    )  # fmt: skip
    got = sorted(
        (r["source"]["ip_address"], r["count"], r["policy_evaluated"]["disposition"],
         r["policy_evaluated"]["dkim"], r["policy_evaluated"]["spf"],
         tuple(x["type"] for x in r["policy_evaluated"]["policy_override_reasons"]),
         r["identifiers"]["header_from"])
        for r in report["records"]
    )  # fmt: skip
    assert got == [
        ("192.0.2.1", 3, "pass", "pass", "pass", (), "example.com"),
        ("198.51.100.9", 2, "quarantine", "fail", "fail", ("local_policy",), "example.com"),
        ("2001:db8::25", 1, "pass", "pass", "pass", (), "news.example.com"),
        ("203.0.113.7", 1, "none", "fail", "fail", ("trusted_forwarder",), "example.com"),
    ]
    expected = [r for r in MIXED if r.policy_domain == "example.com" and DAY <= r.received_at
                < DAY + 86400]  # fmt: skip
    assert sum(r["count"] for r in report["records"]) == len(expected) == 7
    other = parsedmarc.parse_report_file(str(reports["other.example"]), offline=True)["report"]
    assert [(r["source"]["ip_address"], r["count"]) for r in other["records"]] == [
        ("192.0.2.80", 2)
    ]


def test_every_report_follows_the_rfc9990_schema_structure(reports: dict[str, Path]) -> None:
    for path in reports.values():
        root = ET.fromstring(gzip.decompress(path.read_bytes()))
        assert root.tag == N + "feedback"
        check_structure(root)


def test_a_report_holds_no_local_part(reports: dict[str, Path]) -> None:
    text = gzip.decompress(reports["example.com"].read_bytes()).decode()
    # The one "@" is our Report-ID and our own address (RFC 9990 §2.1 report_metadata).
    assert text.count("@") == 2


def test_the_default_period_is_the_last_complete_utc_day() -> None:
    assert last_complete_day(DAY + 3600) == (DAY - 86400, DAY)
    assert last_complete_day(DAY) == (DAY - 86400, DAY)


def test_a_null_senders_helo_check_is_reported_as_the_mfrom_scope() -> None:
    # RFC 9990 Appendix A: SPFDomainScope is "mfrom" alone; for a null reverse-path the
    # MAIL FROM check is postmaster@HELO (RFC 7208 §2.4), so the HELO domain goes with it.
    helo = row(DAY + 5, "192.0.2.9", envelope_from="", spf_domain="mx.example.com",
               spf_scope="helo")  # fmt: skip
    report = build_report([helo], "example.com", DAY, DAY + 86400, REPORTER)
    root = ET.fromstring(report.xml)
    check_structure(root)
    spf = root.find(f"{N}record/{N}auth_results/{N}spf")
    assert spf is not None
    assert [(c.tag.removeprefix(N), c.text) for c in spf] == [
        ("domain", "mx.example.com"), ("scope", "mfrom"), ("result", "pass"),
    ]  # fmt: skip


def test_the_structure_check_refuses_what_appendix_a_does_not_allow() -> None:
    report = build_report([row(DAY + 5, "192.0.2.9")], "example.com", DAY, DAY + 86400, REPORTER)
    root = ET.fromstring(report.xml)
    auth = root.find(f"{N}record/{N}auth_results")
    assert auth is not None
    ET.SubElement(auth, N + "spf")  # a second spf: maxOccurs="1"
    with pytest.raises(AssertionError, match="more than once"):
        check_structure(root)
    root = ET.fromstring(report.xml)
    scope = root.find(f"{N}record/{N}auth_results/{N}spf/{N}scope")
    assert scope is not None
    scope.text = "helo"
    with pytest.raises(AssertionError, match="helo"):
        check_structure(root)
