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
import contextlib
import errno
import fcntl
import os
import sqlite3
import stat
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
from classifier.aggregate.hints import store_hint
from classifier.aggregate.message import report_message
from classifier.aggregate.store import (
    ReportStore,
    StoreError,
    retention_seconds,
    sqlite_path,
)
from classifier.commands.options import add_common, make_resolver_for
from classifier.config import Config, ReportsConfig
from classifier.errors import EX_TEMPFAIL, UsageError
from classifier.files import create_file, open_dir, temp_name, write_all
from classifier.log import log, log_value
from classifier.lookup.resolver import Resolver

SENDMAIL_TIMEOUT = 120.0  # seconds for one hand-over to sendmail


def iso_day(begin: int) -> str:
    """Gives the UTC day that starts at `begin`, as YYYY-MM-DD."""
    return datetime.fromtimestamp(begin, UTC).strftime("%Y-%m-%d")


def report_days(
    args: argparse.Namespace, reports: ReportsConfig, now: float
) -> list[tuple[int, int]]:
    """Gives the [begin, end) UTC days this run reports on, oldest first.

    Only complete days: rows of today may still come, and the sent log would
    keep a report of half a day from ever being completed.  ``--send`` without
    ``--day`` catches up: every complete day of the last ``catch_up_days``, so a
    run that failed (exit 75) and is retried after midnight still sends the
    day it failed on; the sent log keeps a day from going twice.
    """
    last_begin, last_end = last_complete_day(now)
    if args.day:
        try:
            day = datetime.strptime(args.day, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise UsageError(f"--day {args.day!r}: expected YYYY-MM-DD") from None
        begin = int(day.timestamp())
        # A --dry-run of today is a preview and leaves no trace; a day to come has no rows.
        preview = args.dry_run and begin <= now
        if begin + DAY > now and not preview:
            raise UsageError(
                f"--day {args.day}: not a complete UTC day yet (the last one is"
                f" {iso_day(last_begin)})"
            )
        return [(begin, begin + DAY)]
    if not args.send or args.force:
        return [(last_begin, last_end)]
    back = reports.catch_up_days
    return [(last_begin - k * DAY, last_end - k * DAY) for k in reversed(range(back))]


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


def _build(
    reports_config: ReportsConfig,
    days: list[tuple[int, int]],
    reporter: Reporter,
    unique: str = "",
) -> list[tuple[int, int, list[AggregateReport]]]:
    """Gives each day with rows and its reports, oldest first."""
    url = reports_config.store
    try:
        with ReportStore.open(url) as store:
            before = int(time.time() - retention_seconds(reports_config))
            store.ingest_spool(before)  # the rows pipe processes spooled (aggregate/spool.py)
            store.purge(before)
            out = []
            for begin, end in days:
                reports = build_reports(
                    store.rows_between(begin, end), begin, end, reporter, unique
                )
                if reports:
                    out.append((begin, end, reports))
            return out
    except StoreError as exc:
        raise UsageError(f"reports.store: {exc}") from None
    except (OSError, sqlite3.Error) as exc:
        hint = store_hint(sqlite_path(url))
        raise UsageError(f"reports.store {url}: cannot be opened ({exc}); {hint}") from None


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


def open_output_dir(path: Path) -> int:
    """Gives a descriptor of the --dry-run directory, made 0700 when missing.

    Opened with O_NOFOLLOW|O_DIRECTORY and written through only by that
    descriptor, so a run as root never writes where a symlink points.  Refused
    (UsageError): a symlink; a directory others may write to without the sticky
    bit (they could swap the files); one another user owns, when run as root.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        fd = open_dir(path)
    except OSError as exc:
        # Linux gives ENOTDIR for O_NOFOLLOW|O_DIRECTORY on a symlink, others ELOOP.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and path.is_symlink():
            raise UsageError(f"--dry-run {path}: a symlink; give a directory of your own") from None
        raise
    st = os.fstat(fd)
    why = ""
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        why = "writable by other users"
    elif os.geteuid() == 0 and st.st_uid != 0:
        why = f"owned by uid {st.st_uid}, not root"
    if why:
        os.close(fd)
        raise UsageError(
            f"--dry-run {path}: {why}; use a private directory (install -d -m 700 DIR)"
        )
    return fd


def _write(dir_fd: int, name: str, data: bytes) -> None:
    partial = temp_name(".dmarc-", ".tmp")
    fd = create_file(partial, 0o600, dir_fd)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    # A re-run gives the same name and bytes (RFC 9990 §3.2.2).
    os.replace(partial, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


class Lookups:
    """The destinations of each Policy Domain, looked up once per run, within the run's time.

    Each lookup has ``dns_timeout``; the whole run has ``reports.run_time_limit``, so a
    domain whose DNS hangs cannot keep the others' reports from going: a domain not
    reached in time is left for the next run, which the exit code 75 asks for.
    """

    def __init__(self, config: Config, resolver: Resolver, now: float) -> None:
        self.reports, self.dns_budget, self.resolver = (
            _reports_of(config),
            config.engine.dns_budget,
            resolver,
        )
        self.deadline = now + self.reports.run_time_limit
        self.found: dict[tuple[str, str], Destinations | None] = {}
        self.out_of_time = 0

    def get(self, report: AggregateReport) -> Destinations | None:
        """Gives the report's destinations, or None when the run's time is spent."""
        mode = "rfc7489" if report.discovery_method == "psl" else "rfc9989"
        key = (report.policy_domain, mode)
        if key in self.found:
            return self.found[key]
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.out_of_time += 1
            log.warning(
                "dmarc-report: %s: not sent: reports.run_time_limit (%g s) spent,"
                " left for the next run",
                report.policy_domain,
                self.reports.run_time_limit,
            )
            self.found[key] = None
            return None
        session = self.resolver.session(min(self.dns_budget, left))
        found = find_destinations(report.policy_domain, session, mode)
        _log_destinations(found)
        self.found[key] = found
        return found


def _log_destinations(found: Destinations) -> None:
    domain = found.policy_domain
    if found.problem and found.temporary:
        log.warning(
            "dmarc-report: %s: not sent now, left for the next run: %s", domain, found.problem
        )
    elif found.problem:
        log.warning("dmarc-report: %s: no report sent: %s", domain, found.problem)
    for skip in found.skipped:
        log.warning(
            "dmarc-report: %s: %s skipped%s: %s",
            domain,
            log_value(skip.uri),
            " for now, left for the next run" if skip.temporary else "",
            log_value(skip.why),
        )


def _in_turn(
    built: list[tuple[int, int, list[AggregateReport]]],
) -> list[tuple[int, int, AggregateReport]]:
    """Gives the reports in the order they are sent: most messages first, then by name.

    A sender who makes up many Policy Domains with slow DNS gets them to the
    end of the queue, behind the domains that most of the mail came from.
    """
    flat = [(begin, end, r) for begin, end, reports in built for r in reports]
    return sorted(flat, key=lambda t: (-t[2].messages, t[2].policy_domain, t[0]))


def cmd_dmarc_report(args: argparse.Namespace, config: Config) -> int:
    reporter = reporter_for(config)
    reports = _reports_of(config)
    if bool(args.dry_run) == bool(args.send):
        raise UsageError("dmarc-report: give either --send or --dry-run DIR")
    now = time.time()
    days = report_days(args, reports, now)
    # RFC 9990 §3.2.1: a report built again on purpose is a new report, with its own Report-ID.
    unique = str(int(now)) if args.force else ""
    built = _build(reports, days, reporter, unique)
    if not built:
        first, last = iso_day(days[0][0]), iso_day(days[-1][0])
        print(f"no rows for {first if first == last else f'{first} to {last}'} (UTC): no report")
        return 0
    resolver = make_resolver_for(args, config)
    lookups = Lookups(config, resolver, time.monotonic())
    if args.dry_run:
        out = Path(args.dry_run)
        try:
            return _dry_run(out, built, reporter, lookups)
        except OSError as exc:
            raise UsageError(f"--dry-run {out}: {exc.strerror or exc}") from None
    try:
        ledger = SentLog(sent_log_path(config))
    except OSError as exc:
        raise UsageError(f"reports.sent_log {sent_log_path(config)}: {exc}") from None
    quiet = not args.day  # a catch-up run does not list what went on earlier runs
    try:
        failed = sum(
            _send(report, reporter, reports, lookups, args.force, ledger, begin, end, quiet)
            for begin, end, report in _in_turn(built)
        )
    finally:
        ledger.close()
    return EX_TEMPFAIL if failed else 0


def _dry_run(
    out: Path,
    built: list[tuple[int, int, list[AggregateReport]]],
    reporter: Reporter,
    lookups: Lookups,
) -> int:
    """Writes each report and the message it would go in; problems go to the log only."""
    dir_fd = open_output_dir(out)
    try:
        return _dry_run_into(dir_fd, built, reporter, lookups)
    finally:
        os.close(dir_fd)


def _dry_run_into(
    dir_fd: int,
    built: list[tuple[int, int, list[AggregateReport]]],
    reporter: Reporter,
    lookups: Lookups,
) -> int:
    left = 0
    for begin, end, report in _in_turn(built):
        _write(dir_fd, report.filename, report.gzipped())
        print(f"{report.filename}: {report.messages} message(s) in {report.records} record(s)")
        found = lookups.get(report)
        if found is None or found.temporary:
            left += 1
        to = tuple(d.address for d in found.send_to) if found else ()
        if to:
            eml = report_message(report, reporter, to, begin, end - 1, time.time())
            _write(dir_fd, f"{report.filename.removesuffix('.xml.gz')}.eml", eml)
            print(f"  would send to {', '.join(to)}")
        else:
            print("  would send to no one (see the log)")
    return EX_TEMPFAIL if left else 0


def _send(
    report: AggregateReport,
    reporter: Reporter,
    reports: ReportsConfig,
    lookups: Lookups,
    force: bool,
    ledger: SentLog,
    begin: int,
    end: int,
    quiet: bool = False,
) -> int:
    """Sends one report to each of its destinations; gives how many are left for a later run."""
    domain = report.policy_domain
    found = lookups.get(report)
    if found is None:
        return 1
    failed = int(found.temporary)
    for dest in found.send_to:
        if ledger.has(begin, domain, dest.address) and not force:
            if not quiet:
                print(f"{domain}: already sent to {dest.address}")
            continue
        message = report_message(report, reporter, (dest.address,), begin, end - 1, time.time())
        if len(message) > reports.max_message_size:
            log.warning(
                "dmarc-report: %s: report to %s not sent: %d bytes, over"
                " reports.max_message_size (%d)",
                domain,
                dest.address,
                len(message),
                reports.max_message_size,
            )
            continue
        code, said = hand_to_sendmail(reports.sendmail, reporter.email, dest.address, message)
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
    p.add_argument(
        "--day",
        metavar="YYYY-MM-DD",
        help="the complete UTC day to report on (default: with --send, every complete day"
        " of the last reports.catch_up_days not yet sent; with --dry-run, yesterday)",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--dry-run",
        metavar="DIR",
        help="write the .xml.gz files and the .eml messages to DIR instead of sending",
    )
    what.add_argument("--send", action="store_true", help="hand the reports to sendmail")
    p.add_argument(
        "--force",
        action="store_true",
        help="send the day's reports again, as new reports with their own Report-ID",
    )
    p.set_defaults(handler=cmd_dmarc_report)
