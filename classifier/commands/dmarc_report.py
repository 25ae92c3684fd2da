"""`authsieve dmarc-report`: RFC 9990 aggregate reports from the report store.

One gzip-compressed report per Policy Domain for the period (default: the last
complete UTC day), named as RFC 9990 §3.2.2 prescribes.  For each, the Policy
Domain's DMARC record is read again now and its rua= mailto: destinations
checked (`classifier.aggregate.destinations`).  ``--send`` hands one message
per destination to sendmail (never through a shell) and remembers what was
sent, so a rerun for the same day sends nothing twice (``--force`` does);
``--dry-run DIR`` writes the .xml.gz files and the .eml it would send there.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.aggregate.destinations import Destinations, find_destinations
from classifier.aggregate.feedback import (
    DAY,
    AggregateReport,
    Reporter,
    build_reports,
    last_complete_day,
)
from classifier.aggregate.message import report_message
from classifier.aggregate.store import (
    STORE_HINT,
    ReportStore,
    StoreError,
    retention_seconds,
    sqlite_path,
)
from classifier.commands.options import add_common, make_resolver_for
from classifier.config import Config, ReportsConfig
from classifier.errors import EX_TEMPFAIL, UsageError
from classifier.log import log, log_value
from classifier.lookup.resolver import Resolver

SENDMAIL_TIMEOUT = 120.0  # seconds for one hand-over to sendmail


def _period(args: argparse.Namespace) -> tuple[int, int]:
    if not args.day:
        return last_complete_day(time.time())
    try:
        day = datetime.strptime(args.day, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(f"--day {args.day!r}: expected YYYY-MM-DD") from None
    begin = int(day.timestamp())
    return begin, begin + DAY


def _reports_of(config: Config) -> ReportsConfig:
    """Gives the [reports] table; raises UsageError when there is none."""
    if config.reports is None:
        raise UsageError(f"{config.source}: reports: no [reports] table, nothing is recorded")
    return config.reports


def reporter_for(config: Config) -> Reporter:
    """Gives who signs the reports, from [reports]; raises UsageError naming a missing key."""
    reports = _reports_of(config)
    if not reports.email:
        raise UsageError(f"{config.source}: reports.email: needed in every report (RFC 9990)")
    authserv_id = config.engine.authserv_id
    return Reporter(
        org_name=reports.org_name or authserv_id,
        email=reports.email,
        receiver=authserv_id,
        extra_contact_info=reports.extra_contact_info,
    )


def sent_log_path(config: Config) -> Path:
    """Gives the file that remembers sent reports: reports.sent_log, else beside the store."""
    reports = _reports_of(config)
    if reports.sent_log:
        return Path(reports.sent_log)
    url = reports.store
    if url.startswith("sqlite:"):
        return sqlite_path(url).parent / "dmarc-sent.log"
    return Path("/var/lib/authsieve/dmarc-sent.log")


def _build(config: Config, begin: int, end: int, reporter: Reporter) -> list[AggregateReport]:
    reports = _reports_of(config)
    url = reports.store
    try:
        with ReportStore.open(url) as store:
            before = int(time.time() - retention_seconds(reports))
            store.ingest_spool(before)  # the rows pipe processes spooled (aggregate/spool.py)
            store.purge(before)
            return build_reports(store.rows_between(begin, end), begin, end, reporter)
    except StoreError as exc:
        raise UsageError(f"reports.store: {exc}") from None
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"reports.store {url}: cannot be opened ({exc}); {STORE_HINT}") from None


class SentLog:
    """The lines ``<begin> <policy-domain> <address> <report-id>`` of reports handed over.

    Held under an exclusive lock while a run sends, so a timer run and a hand
    run never both send a report.  Opened without following a symlink.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self.fd = os.open(path, flags, 0o640)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        with open(os.dup(self.fd), encoding="ascii", errors="replace") as f:
            f.seek(0)
            self.sent = {tuple(line.split()[:3]) for line in f if line.strip()}

    def has(self, begin: int, domain: str, address: str) -> bool:
        return (str(begin), domain, address.lower()) in self.sent

    def add(self, begin: int, domain: str, address: str, report_id: str) -> None:
        os.write(self.fd, f"{begin} {domain} {address.lower()} {report_id}\n".encode())
        os.fsync(self.fd)
        self.sent.add((str(begin), domain, address.lower()))

    def close(self) -> None:
        os.close(self.fd)


def hand_to_sendmail(sendmail: str, sender: str, rcpt: str, message: bytes) -> tuple[int, str]:
    """Gives sendmail's exit code and its last stderr line; runs ``sendmail -oi -f S -- R``."""
    argv = [sendmail, "-oi", "-f", sender, "--", rcpt]
    try:
        proc = subprocess.run(
            argv, input=message, capture_output=True, timeout=SENDMAIL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return EX_TEMPFAIL, str(exc)
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    return proc.returncode, (lines[-1] if lines else "")


def _write(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_bytes(data)
    os.replace(partial, path)  # a re-run gives the same name and bytes (RFC 9990 §3.2.2)


def _destinations(report: AggregateReport, config: Config, resolver: Resolver) -> Destinations:
    mode = "rfc7489" if report.discovery_method == "psl" else "rfc9989"
    dns = resolver.session(config.engine.dns_budget)
    found = find_destinations(report.policy_domain, dns, mode)
    if found.problem:
        log.warning("dmarc-report: %s: no report sent: %s", report.policy_domain, found.problem)
    for skip in found.skipped:
        log.warning(
            "dmarc-report: %s: %s skipped: %s",
            report.policy_domain,
            log_value(skip.uri),
            log_value(skip.why),
        )
    return found


def cmd_dmarc_report(args: argparse.Namespace, config: Config) -> int:
    reporter = reporter_for(config)
    if bool(args.dry_run) == bool(args.send):
        raise UsageError("dmarc-report: give either --send or --dry-run DIR")
    begin, end = _period(args)
    reports = _build(config, begin, end, reporter)
    if not reports:
        print(f"no rows between {begin} and {end - 1}: no report")
        return 0
    resolver = make_resolver_for(args, config)
    if args.dry_run:
        out = Path(args.dry_run)
        try:
            return _dry_run(out, reports, reporter, config, resolver, begin, end)
        except OSError as exc:
            raise UsageError(f"--dry-run {out}: {exc.strerror or exc}") from None
    try:
        ledger = SentLog(sent_log_path(config))
    except OSError as exc:
        raise UsageError(f"reports.sent_log {sent_log_path(config)}: {exc}") from None
    try:
        failed = sum(
            _send(report, reporter, config, resolver, args.force, ledger, begin, end)
            for report in reports
        )
    finally:
        ledger.close()
    return EX_TEMPFAIL if failed else 0


def _dry_run(
    out: Path,
    reports: list[AggregateReport],
    reporter: Reporter,
    config: Config,
    resolver: Resolver,
    begin: int,
    end: int,
) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for report in reports:
        _write(out / report.filename, report.gzipped())
        print(f"{report.filename}: {report.messages} message(s) in {report.records} record(s)")
        found = _destinations(report, config, resolver)
        to = tuple(d.address for d in found.send_to)
        if to:
            eml = report_message(report, reporter, to, begin, end - 1, time.time())
            _write(out / f"{report.filename.removesuffix('.xml.gz')}.eml", eml)
            print(f"  would send to {', '.join(to)}")
        for skip in found.skipped:
            print(f"  skipped {skip.uri}: {skip.why}")
        if found.problem:
            print(f"  not sent: {found.problem}")
    return 0


def _send(
    report: AggregateReport,
    reporter: Reporter,
    config: Config,
    resolver: Resolver,
    force: bool,
    ledger: SentLog,
    begin: int,
    end: int,
) -> int:
    """Sends one report to each of its destinations; gives how many hand-overs failed."""
    domain = report.policy_domain
    found = _destinations(report, config, resolver)
    failed = int(found.temporary)
    for dest in found.send_to:
        if ledger.has(begin, domain, dest.address) and not force:
            print(f"{domain}: already sent to {dest.address}")
            continue
        message = report_message(report, reporter, (dest.address,), begin, end - 1, time.time())
        if len(message) > _reports_of(config).max_message_size:
            log.warning(
                "dmarc-report: %s: report to %s not sent: %d bytes, over"
                " reports.max_message_size (%d)",
                domain,
                dest.address,
                len(message),
                _reports_of(config).max_message_size,
            )
            continue
        code, said = hand_to_sendmail(
            _reports_of(config).sendmail, reporter.email, dest.address, message
        )
        if code != 0:
            failed += 1
            log.error(
                "dmarc-report: %s: sendmail exit %d for %s: %s",
                domain,
                code,
                dest.address,
                log_value(said),
            )
            continue
        ledger.add(begin, domain, dest.address, report.report_id)
        print(f"{domain}: sent {report.filename} to {dest.address}")
    return failed


def add_dmarc_report_parser(
    sub: Any, add_common_options: Callable[[argparse.ArgumentParser], None] = add_common
) -> None:
    p = sub.add_parser(
        "dmarc-report",
        help="build and send DMARC aggregate reports (RFC 9990) from the report store",
        description="One gzip-compressed RFC 9990 aggregate report per Policy Domain for "
        "one UTC day (default: the last complete one), sent to the rua= addresses the "
        "domain publishes now.",
    )
    add_common_options(p)
    p.add_argument("--day", metavar="YYYY-MM-DD", help="the UTC day to report on")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--dry-run",
        metavar="DIR",
        help="write the .xml.gz files and the .eml messages to DIR instead of sending",
    )
    what.add_argument("--send", action="store_true", help="hand the reports to sendmail")
    p.add_argument(
        "--force", action="store_true", help="send again what was already sent for that day"
    )
    p.set_defaults(handler=cmd_dmarc_report)
