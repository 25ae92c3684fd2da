"""`authsieve dmarc-report`: RFC 9990 aggregate reports from the report store.

One gzip-compressed report per Policy Domain for the period (default: the last
complete UTC day), named as RFC 9990 §3.2.2 prescribes.  ``--dry-run DIR``
writes the files there; sending (``--send``, rua= and the external-destination
check of RFC 9990 §4) is not built yet.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.aggregate.feedback import DAY, Reporter, build_reports, last_complete_day
from classifier.aggregate.store import ReportStore, StoreError, retention_seconds
from classifier.config import Settings
from classifier.errors import UsageError


def _period(args: argparse.Namespace) -> tuple[int, int]:
    if not args.day:
        return last_complete_day(time.time())
    try:
        day = datetime.strptime(args.day, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(f"--day {args.day!r}: expected YYYY-MM-DD") from None
    begin = int(day.timestamp())
    return begin, begin + DAY


def reporter_for(settings: Settings) -> Reporter:
    """Gives who signs the reports, from [reports]; raises UsageError naming a missing key."""
    if not settings.reports_store:
        raise UsageError(f"{settings.source}: reports: no [reports] table, nothing is recorded")
    if not settings.reports_email:
        raise UsageError(f"{settings.source}: reports.email: needed in every report (RFC 9990)")
    return Reporter(
        org_name=settings.reports_org_name or settings.authserv_id,
        email=settings.reports_email,
        receiver=settings.authserv_id,
        extra_contact_info=settings.reports_extra_contact_info or "",
    )


def cmd_dmarc_report(args: argparse.Namespace, settings: Settings) -> int:
    reporter = reporter_for(settings)
    assert settings.reports_store
    begin, end = _period(args)
    if not args.dry_run:
        raise UsageError("dmarc-report: sending is not built yet; give --dry-run DIR")
    try:
        with ReportStore.open(settings.reports_store) as store:
            store.purge(int(time.time() - retention_seconds(settings)))
            reports = build_reports(store.rows_between(begin, end), begin, end, reporter)
            hosts = store.hosts_between(begin, end)
    except StoreError as exc:
        raise UsageError(f"reports.store: {exc}") from None
    out = Path(args.dry_run)
    out.mkdir(parents=True, exist_ok=True)
    for report in reports:
        target = out / report.filename
        partial = out / f".{report.filename}.tmp"
        partial.write_bytes(report.gzipped())
        os.replace(partial, target)  # a re-run gives the same name and bytes (RFC 9990 §3.2.2)
        print(f"{report.filename}: {report.messages} message(s) in {report.records} record(s)")
    if len(hosts) > 1 or any(hosts):  # several MX share the store: say whose rows these are
        print("rows from " + ", ".join(f"{h or '(no host)'} ({n})" for h, n in hosts.items()))
    if not reports:
        print(f"no rows between {begin} and {end - 1}: no report")
    return 0


def add_dmarc_report_parser(
    sub: Any, add_common: Callable[[argparse.ArgumentParser], None]
) -> None:
    p = sub.add_parser(
        "dmarc-report",
        help="build DMARC aggregate reports (RFC 9990) from the report store",
        description="One gzip-compressed RFC 9990 aggregate report per Policy Domain for "
        "one UTC day (default: the last complete one).",
    )
    add_common(p)
    p.add_argument("--day", metavar="YYYY-MM-DD", help="the UTC day to report on")
    p.add_argument(
        "--dry-run", metavar="DIR", help="write the .xml.gz files to DIR instead of sending"
    )
    p.set_defaults(handler=cmd_dmarc_report)
