"""The RFC 9990 aggregate report: stored rows in, one gzip-compressed XML file per Policy Domain.

Pure: rows, the period and who we are go in; file names and bytes come out.
Element names and order follow RFC 9990 Appendix A (the XML schema); the file
name follows §3.2.2 (receiver "!" policy-domain "!" begin "!" end ".xml.gz").
"""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from classifier import __version__
from classifier.aggregate.rows import ReportRow

NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"  # RFC 9990 §6.1
DAY = 86400


@dataclass(frozen=True, slots=True)
class Reporter:
    """Who sends the reports (RFC 9990 §2.1 report_metadata) and the receiver's domain."""

    org_name: str
    email: str
    receiver: str  # the Mail Receiver's domain, first part of the file name
    extra_contact_info: str = ""


@dataclass(frozen=True, slots=True)
class AggregateReport:
    """One report: its Policy Domain, file name, Report-ID and the gzip-compressed XML."""

    policy_domain: str
    filename: str
    report_id: str
    xml: bytes
    records: int
    messages: int
    discovery_method: str = "treewalk"  # how the policy was found: "psl" is RFC 7489's lookup

    def gzipped(self) -> bytes:
        """Gives the XML compressed with GZIP (RFC 1952), the same bytes every time."""
        return gzip.compress(self.xml, mtime=0)


def last_complete_day(now: float) -> tuple[int, int]:
    """Gives [begin, end) of the last complete UTC day before `now` (RFC 9990 §2.1: daily)."""
    end = int(now) // DAY * DAY
    return end - DAY, end


def report_filename(
    receiver: str, policy_domain: str, begin: int, end: int, unique: str = ""
) -> str:
    """Gives the report's file name (RFC 9990 §3.2.2); `end` is the last second covered.

    `unique` is the optional unique-id of §3.2.2, given to a report sent again on
    purpose (``--force``) so that it is told apart from the first one.
    """
    tail = f"!{unique}" if unique else ""
    return f"{receiver}!{policy_domain}!{begin}!{end}{tail}.xml.gz"


def report_id(receiver: str, policy_domain: str, begin: int, unique: str = "") -> str:
    """Gives a Report-ID unique per domain and period, the same when a run is retried.

    RFC 9990 §3.2.1 ("Definition of Report-ID"): unique among reports to the
    same domain.  A report built again on purpose (``--force``) is another
    report, so it carries `unique` (the time it was built) in its Report-ID.
    """
    if unique:
        return f"{begin}.{unique}.{policy_domain}@{receiver}"
    return f"{begin}.{policy_domain}@{receiver}"


def _text(parent: ET.Element, tag: str, value: object) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = str(value)
    return child


def _record_key(row: ReportRow) -> tuple[object, ...]:
    """Gives what makes rows one record: everything but the time (RFC 9990 §2.1)."""
    return (
        row.source_ip, row.disposition, row.dkim_aligned, row.spf_aligned, row.reasons,
        row.envelope_to, row.envelope_from, row.header_from,
        row.dkim, row.spf_domain, row.spf_scope, row.spf_result,
    )  # fmt: skip


def _record(feedback: ET.Element, row: ReportRow, count: int) -> None:
    record = ET.SubElement(feedback, "record")
    r = ET.SubElement(record, "row")
    _text(r, "source_ip", row.source_ip)
    _text(r, "count", count)
    evaluated = ET.SubElement(r, "policy_evaluated")
    _text(evaluated, "disposition", row.disposition)
    # RFC 9990 §2.1: the DMARC-aligned results, not the raw ones.
    _text(evaluated, "dkim", "pass" if row.dkim_aligned else "fail")
    _text(evaluated, "spf", "pass" if row.spf_aligned else "fail")
    for override in row.reasons:
        reason = ET.SubElement(evaluated, "reason")
        _text(reason, "type", override.type)
        if override.comment:
            _text(reason, "comment", override.comment)
    ids = ET.SubElement(record, "identifiers")
    if row.envelope_to:
        _text(ids, "envelope_to", row.envelope_to)
    # Present but empty for the null reverse-path (RFC 9990 §2.1).
    _text(ids, "envelope_from", row.envelope_from)
    _text(ids, "header_from", row.header_from)
    auth = ET.SubElement(record, "auth_results")
    for sig in row.dkim:
        dkim = ET.SubElement(auth, "dkim")
        _text(dkim, "domain", sig.domain)
        _text(dkim, "selector", sig.selector)
        _text(dkim, "result", sig.result)
    spf = ET.SubElement(auth, "spf")
    _text(spf, "domain", row.spf_domain)
    # RFC 9990 Appendix A SPFDomainScope has "mfrom" alone: DMARC uses the MAIL FROM
    # identity only, and a null sender's check of postmaster@HELO is that identity's
    # (RFC 7208 §2.4), which rows recorded before this still call "helo".
    _text(spf, "scope", "mfrom")
    _text(spf, "result", row.spf_result)


def build_report(
    rows: list[ReportRow],
    policy_domain: str,
    begin: int,
    end: int,
    reporter: Reporter,
    unique: str = "",
) -> AggregateReport:
    """Gives the report for one Policy Domain; rows are that domain's, oldest first.

    The policy published is the last one seen in the period (RFC 9990 §2.1:
    "SHOULD note only the final configuration observed").
    """
    last = rows[-1]
    rid = report_id(reporter.receiver, policy_domain, begin, unique)
    feedback = ET.Element("feedback", {"xmlns": NAMESPACE})
    _text(feedback, "version", "1.0")
    meta = ET.SubElement(feedback, "report_metadata")
    _text(meta, "org_name", reporter.org_name)
    _text(meta, "email", reporter.email)
    if reporter.extra_contact_info:
        _text(meta, "extra_contact_info", reporter.extra_contact_info)
    _text(meta, "report_id", rid)
    dates = ET.SubElement(meta, "date_range")
    _text(dates, "begin", begin)
    _text(dates, "end", end - 1)
    _text(meta, "generator", f"authsieve {__version__}")
    published = ET.SubElement(feedback, "policy_published")
    _text(published, "domain", policy_domain)
    _text(published, "discovery_method", last.discovery_method)
    _text(published, "adkim", last.adkim)
    _text(published, "aspf", last.aspf)
    _text(published, "p", last.p)
    _text(published, "sp", last.sp)
    if last.np:
        _text(published, "np", last.np)
    _text(published, "testing", last.testing)
    counts = Counter(_record_key(r) for r in rows)
    firsts: dict[tuple[object, ...], ReportRow] = {}
    for r in rows:
        firsts.setdefault(_record_key(r), r)
    for key, row in firsts.items():
        _record(feedback, row, counts[key])
    ET.indent(feedback)
    xml = ET.tostring(feedback, encoding="UTF-8", xml_declaration=True) + b"\n"
    return AggregateReport(
        policy_domain,
        report_filename(reporter.receiver, policy_domain, begin, end - 1, unique),
        rid,
        xml,
        len(firsts),
        len(rows),
        last.discovery_method,
    )


def build_reports(
    rows: Iterable[ReportRow], begin: int, end: int, reporter: Reporter, unique: str = ""
) -> list[AggregateReport]:
    """Gives one report per Policy Domain seen in [begin, end), by domain name (RFC 9990 §2.1)."""
    by_domain: dict[str, list[ReportRow]] = {}
    for row in rows:
        if begin <= row.received_at < end:
            by_domain.setdefault(row.policy_domain, []).append(row)
    return [
        build_report(
            sorted(found, key=lambda r: r.received_at), domain, begin, end, reporter, unique
        )
        for domain, found in sorted(by_domain.items())
    ]
