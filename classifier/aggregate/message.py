"""The email that carries one aggregate report (RFC 9990 §3.2.2), built as bytes.

Pure: the report, who we are, the recipients and the time go in; the message
comes out.  A MIME message (RFC 2045) with a short text/plain part and the
gzip-compressed XML as an ``application/gzip`` attachment (RFC 6713) named as
§3.2.2 prescribes; the Subject follows §3.2.2's dmarc-subject ("Report
Domain: … Submitter: … Report-ID: …") and the Message-ID reuses the
Report-ID, so a re-sent report is recognisable as the same one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from classifier.aggregate.feedback import AggregateReport, Reporter


def report_subject(policy_domain: str, submitter: str, report_id: str) -> str:
    """Gives the Subject of a report (RFC 9990 §3.2.2 dmarc-subject, ridtxt in angle brackets)."""
    return f"Report Domain: {policy_domain} Submitter: {submitter} Report-ID: <{report_id}>"


def _text(report: AggregateReport, reporter: Reporter, begin: int, end: int) -> str:
    day = datetime.fromtimestamp(begin, UTC).strftime("%Y-%m-%d")
    return (
        f"This is a DMARC aggregate report (RFC 9990) from {reporter.org_name} "
        f"({reporter.receiver}) for {report.policy_domain}, covering {day} UTC "
        f"({begin} to {end}): {report.messages} message(s) in {report.records} record(s).\n"
        f"The report is the attached file {report.filename}.\n"
        f"Questions about it: {reporter.email}\n"
    )


def report_message(
    report: AggregateReport,
    reporter: Reporter,
    to: tuple[str, ...],
    begin: int,
    end: int,
    now: float,
) -> bytes:
    """Gives the message carrying one report to `to`, with CRLF line ends (RFC 5322 §2.1).

    `end` is the last second the report covers, as in its file name.
    """
    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address(addr_spec=reporter.email)
    msg["To"] = [Address(addr_spec=a) for a in to]
    msg["Subject"] = report_subject(report.policy_domain, reporter.receiver, report.report_id)
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = f"<{report.report_id}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5: no auto-replies to a report
    msg.set_content(_text(report, reporter, begin, end))
    msg.add_attachment(
        report.gzipped(), maintype="application", subtype="gzip", filename=report.filename
    )
    # RFC 2045 §4: MIME-Version belongs in the message header; the email package also
    # puts one on a part made by add_attachment.
    for part in msg.iter_attachments():
        del part["MIME-Version"]
    return msg.as_bytes()
