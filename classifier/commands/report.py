"""`authsieve report`: the shell around `classifier.report.build`.

`report` reads Maildirs and never writes into them: message files are only
opened for reading, and the cache and the HTML page must lie outside every
Maildir given.  Checks run in a thread pool sharing one `Resolver` (and so
one DNS cache); DNS waits release the GIL.  Each message's check record is
cached (`classifier.report.cache`), so a run with another policy asks no DNS.

The Maildir walk (`classifier.mailstore.mailfiles`) and the cache are shared with
`authsieve recheck` (`classifier.commands.recheck`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.commands.options import make_resolver_for
from classifier.config import Config, load_config
from classifier.errors import UsageError
from classifier.mailstore.mailfiles import maildir_files
from classifier.policies import Policies
from classifier.report.build import PolicyRun, ScannedMessage, build_report
from classifier.report.cache import (
    ReportCache,
    checks_fingerprint,
    default_cache_path,
    scan,
)

DEFAULT_JOBS = 8
PROGRESS_FROM = 1000  # messages: a shorter scan takes seconds and needs no bar


def parse_since(text: str | None) -> float | None:
    """Gives the --since date as a timestamp (ISO 8601; a date alone is midnight UTC)."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since: expected a date such as 2025-03-01, got {text!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    p = path.resolve()
    return any(p == r.resolve() or r.resolve() in p.parents for r in roots)


def open_cache(args: argparse.Namespace, roots: Sequence[Path]) -> ReportCache:
    """Gives the report cache: --cache FILE, in memory for --no-cache, else the XDG default."""
    if args.no_cache:
        return ReportCache(":memory:")
    path = Path(args.cache) if args.cache else default_cache_path()
    if _inside(path, roots):
        raise UsageError(f"--cache {path}: inside a Maildir; the report never writes there")
    return ReportCache(path)


def warn(text: str) -> None:
    print(f"authsieve: {text}", file=sys.stderr)


def policy_sets(args: argparse.Namespace, config: Config) -> list[tuple[str, str, Policies]]:
    """Gives (name, file, policies) for each --policy FILE, else for the configured policy."""
    if not args.policy:
        return [("configured", config.source, config.policies)]
    out: list[tuple[str, str, Policies]] = []
    for path in args.policy:
        stem, taken = Path(path).stem or "policy", {n for n, _, _ in out}
        name = stem if stem not in taken else f"{stem}-{len(out) + 1}"
        out.append((name, path, load_config(path).policies))
    return out


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    since = parse_since(args.since)
    if args.top < 1 or args.jobs < 1:
        raise UsageError("--top and --jobs must be at least 1")
    files = maildir_files(args.paths, since)
    roots = [Path(p) for p in args.paths]
    if args.html and _inside(Path(args.html), roots):
        raise UsageError(f"--html {args.html}: inside a Maildir; the report never writes there")
    sets = policy_sets(args, config)
    settings = config.engine
    resolver = make_resolver_for(args, config)
    cache = open_cache(args, roots)
    long_run = len(files) >= PROGRESS_FROM if args.progress is None else args.progress
    started = time.perf_counter()
    scans: dict[str, tuple[tuple[ScannedMessage, ...], dict[str, int]]] = {}
    runs = []
    try:
        for name, source, policies in sets:
            # The trust path steps over the policy's forwarders, so they shape the checks.
            base = policies.for_user(args.user) if args.user else policies.default
            trust = settings.trust_for(base.trusted_forwarders)
            fp = checks_fingerprint(settings, trust)
            if fp not in scans:
                show = long_run and sys.stderr.isatty()
                paths = [f.path for f in files]
                records, counts = scan(
                    paths, settings, trust, resolver, cache, warn, args.recheck, args.jobs, show
                )
                scanned = tuple(
                    ScannedMessage(str(f.path), f.folder, f.delivered, r)
                    for f, r in zip(files, records, strict=True)
                    if r is not None
                )
                scans[fp] = (scanned, counts)
            runs.append(PolicyRun(name, source, policies, scans[fp][0]))
    finally:
        cache.close()
    seconds = time.perf_counter() - started
    stats: dict[str, float | int] = {"files": len(files)}
    for key in ("checked", "cached", "unreadable"):
        stats[key] = sum(counts[key] for _, counts in scans.values())
    stats["dns_queries"] = resolver.queries_sent
    stats["seconds"] = round(seconds, 2)
    stats["rate"] = round(len(files) * len(scans) / seconds) if seconds > 0 else 0
    report = build_report(runs, user=args.user, since=args.since or "", top=args.top, scan=stats)
    from classifier.report import render

    if args.html:
        _write_atomically(Path(args.html), render.render_html(report).encode("utf-8"))
        print(f"report written to {args.html}")
    elif args.json:
        sys.stdout.write(render.render_json(report))
    elif args.csv:
        sys.stdout.write(render.render_csv(report))
    else:
        sys.stdout.write(render.render_table(report, limit=20))
    return 0


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


# ---------------------------------------------------------------------------- parsers


def shared_arguments(
    p: argparse.ArgumentParser, add_common: Callable[[argparse.ArgumentParser], None]
) -> None:
    add_common(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="a Maildir (its .Folders included)")
    p.add_argument("--user", help="judge with this user's policy (default: each recipient's)")
    p.add_argument("--cache", metavar="FILE", help="results cache (default under $XDG_CACHE_HOME)")
    p.add_argument("--no-cache", action="store_true", help="keep results in memory only")


def add_report_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "report",
        help="what each policy would do to the mail you have",
        description="Read Maildirs (never writing to them) and show the check results, where "
        "each policy would file the mail, and which messages it would move.",
    )
    shared_arguments(p, add_common)
    p.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="FILE",
        help="config file whose [policy] and [users] to compare; repeatable",
    )
    p.add_argument("--since", metavar="DATE", help="only mail delivered since DATE (2025-03-01)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON document")
    out.add_argument("--csv", action="store_true", help="CSV: section, policy, item, key, value")
    out.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    p.add_argument("--top", type=int, default=10, help="rows of the domain table (default 10)")
    p.add_argument("--recheck", action="store_true", help="check every message afresh")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="parallel checks (default 8)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on a terminal's stderr (default: on long runs)",
    )
    p.set_defaults(handler=cmd_report)
