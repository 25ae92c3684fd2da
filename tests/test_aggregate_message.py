"""The email carrying a report (RFC 9990 §3.2.2) and the rua= addresses it may go to."""

from __future__ import annotations

import email
import email.policy
import gzip
import re

import pytest

from classifier.aggregate.destinations import mailto_address
from classifier.aggregate.feedback import AggregateReport, Reporter, report_filename
from classifier.aggregate.message import report_message, report_subject

DAY = 1_700_006_400
REPORTER = Reporter("Family Mail", "dmarc-reports@family.example", "mx.family.example")
XML = b'<?xml version="1.0" encoding="UTF-8"?>\n<feedback/>\n'
REPORT = AggregateReport(
    "example.com",
    report_filename("mx.family.example", "example.com", DAY, DAY + 86399),
    f"{DAY}.example.com@mx.family.example",
    XML,
    1,
    3,
)

# RFC 9990 §3.2.2 dmarc-subject: "Report" 1*FWS "Domain:" 1*FWS domain-name 1*FWS
# "Submitter:" 1*FWS domain-name 1*FWS [ "Report-ID:" 1*FWS ridtxt ], case-sensitive.
FWS = r"(?:\r?\n)?[ \t]+"
DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
DOT_ATOM = rf"{ATEXT}(?:\.{ATEXT})*"
RIDTXT = rf"(?:<{DOT_ATOM}(?:@{DOT_ATOM})?>|{DOT_ATOM}(?:@{DOT_ATOM})?)"
SUBJECT = re.compile(
    rf"Report{FWS}Domain:{FWS}({DOMAIN}){FWS}Submitter:{FWS}({DOMAIN})"
    rf"(?:{FWS}Report-ID:{FWS}({RIDTXT}))?$"
)


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def test_the_subject_follows_the_dmarc_subject_grammar() -> None:
    subject = report_subject("example.com", "mx.family.example", REPORT.report_id)
    found = SUBJECT.match(subject)
    assert found, subject
    assert found.groups() == ("example.com", "mx.family.example", f"<{REPORT.report_id}>")


def test_the_message_carries_the_gzip_report_as_rfc9990_prescribes() -> None:
    data = report_message(REPORT, REPORTER, ("agg@example.com",), DAY, DAY + 86399, DAY + 90000)
    msg = parsed(data)
    raw_subject = re.search(rb"^Subject: (.*?)\r\n(?![ \t])", data, re.M | re.S)
    assert raw_subject and SUBJECT.match(raw_subject.group(1).decode())  # folded or not
    assert msg["From"] == "dmarc-reports@family.example"
    assert msg["To"] == "agg@example.com"
    assert msg["Message-ID"] == f"<{REPORT.report_id}>"  # §3.2.2: the same ridtxt
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/mixed"
    text, attached = list(msg.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert "example.com" in text.get_content() and "3 message(s)" in text.get_content()
    # §3.2.2: media type application/gzip (RFC 6713), the file name of the filename ABNF.
    assert attached.get_content_type() == "application/gzip"
    assert attached.get_content_disposition() == "attachment"
    assert attached.get_filename() == "mx.family.example!example.com!1700006400!1700092799.xml.gz"
    assert gzip.decompress(attached.get_content()) == XML
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")


def test_a_resent_report_is_the_same_report() -> None:
    one = parsed(report_message(REPORT, REPORTER, ("a@example.com",), DAY, DAY + 86399, 1.0))
    two = parsed(report_message(REPORT, REPORTER, ("a@example.com",), DAY, DAY + 86399, 9.0))
    assert one["Message-ID"] == two["Message-ID"] and one["Subject"] == two["Subject"]
    (first,), (again,) = list(one.iter_attachments()), list(two.iter_attachments())
    assert first.get_content() == again.get_content()


@pytest.mark.parametrize(
    ("uri", "address"),
    [
        ("mailto:dmarc@example.com", "dmarc@example.com"),
        ("MAILTO:Dmarc@Example.COM", "Dmarc@example.com"),
        ("mailto:d%2Bagg@example.com?subject=hi", "d+agg@example.com"),
        ("mailto:a@example.com%2Cb@evil.example", None),  # two addresses
        ("mailto:-oQ/tmp/x@example.com", "-oQ/tmp/x@example.com"),  # after "--": not an option
        ("mailto:a b@example.com", None),
        ('mailto:"a"@example.com', None),
        ("mailto:<a@example.com>", None),
        ("mailto:a@example.com%0D%0ABcc:x@evil.example", None),
        ("mailto:a..b@example.com", None),
        ("mailto:@example.com", None),
        ("mailto:a@", None),
        ("mailto:a@exa_mple..com", None),
        ("https://example.com/dmarc", None),
    ],
)
def test_only_a_plain_address_is_taken_from_a_mailto_uri(uri: str, address: str | None) -> None:
    assert mailto_address(uri) == address


def test_mime_version_is_in_the_message_header_only() -> None:
    data = report_message(REPORT, REPORTER, ("agg@example.com",), DAY, DAY + 86399, DAY + 90000)
    assert data.count(b"MIME-Version:") == 1
    assert data.index(b"MIME-Version:") < data.index(b"\r\n\r\n")
