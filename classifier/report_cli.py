"""`authsieve report` and `authsieve recheck`: the shell around `classifier.report`.

`report` reads Maildirs and never writes into them: message files are only
opened for reading, and the cache and the HTML page must lie outside every
Maildir given.  Checks run in a thread pool sharing one `Resolver` (and so
one DNS cache); DNS waits release the GIL.  Each message's check record is
cached (`classifier.report_cache`), so a run with another policy asks no DNS.

`recheck` looks again at messages whose result was temperror (in the cache,
or in our own X-Authsieve header) and re-files those whose verdict changed:
the new copy is written to tmp/, fsynced and renamed into place before the
original is unlinked, so a crash leaves a duplicate, never a loss.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.cli import UsageError, make_resolver_for
from classifier.config import Settings, load_settings
from classifier.dns import Resolver
from classifier.files import fsync_dir, write_all
from classifier.message import Message
from classifier.policy import Policies, load_policies
from classifier.report import PolicyRun, ScannedMessage, build_report, verdict_for
from classifier.report_cache import (
    CacheError,
    CheckRecord,
    ReportCache,
    checks_fingerprint,
    default_cache_path,
    message_key,
    record_from,
    scan,
)

DEFAULT_JOBS = 8
PROGRESS_FROM = 1000  # messages: a shorter scan takes seconds and needs no bar
_STAMP = re.compile(r"(\d{9,11})[.]")
_TEMP_KEYS = ("spf", "helo-spf", "dkim", "arc", "dmarc")  # X-Authsieve keys
# Folders of mail the user wrote or threw away (RFC 6154 \Sent, \Drafts, \Trash): not
# received mail a policy could misfile, and their "SPF none" would only skew the counts.
SKIPPED_FOLDERS = frozenset(
    {
        "sent",
        "sent messages",
        "sent items",
        "drafts",
        "templates",
        "outbox",
        "trash",
        "deleted messages",
        "deleted items",
    }
)


@dataclass(frozen=True)
class MailFile:
    """A message file in a Maildir: the Maildir it belongs to, its folder, its delivery time."""

    path: Path
    root: Path
    folder: str  # "INBOX" or the Maildir++ folder name (".Junk")
    delivered: float


def _delivered(entry: os.DirEntry[str]) -> float:
    # A Maildir name starts with the delivery time; else the mtime (Dovecot's received date).
    m = _STAMP.match(entry.name)
    return float(m.group(1)) if m else entry.stat().st_mtime


def maildir_files(paths: Sequence[str], since: float | None = None) -> list[MailFile]:
    """Gives the message files of each Maildir (INBOX and each .Folder) delivered since `since`.

    Sent, Drafts, Trash and their like are left out (SKIPPED_FOLDERS).
    """
    out: list[MailFile] = []
    for name in paths:
        root = Path(name)
        if not root.is_dir() or not any((root / sub).is_dir() for sub in ("new", "cur")):
            raise UsageError(f"{root}: not a Maildir (no new/ or cur/)")
        subfolders = sorted(
            d
            for d in root.iterdir()
            if d.name.startswith(".")
            and d.name.rsplit(".", 1)[-1].lower() not in SKIPPED_FOLDERS
            and d.is_dir()
        )
        for folder_dir, folder in [(root, "INBOX"), *((d, d.name) for d in subfolders)]:
            for sub in ("new", "cur"):
                if not (folder_dir / sub).is_dir():
                    continue
                with os.scandir(folder_dir / sub) as it:
                    # Maildir names never start with a dot (.keep and the like are not mail).
                    entries = sorted(
                        (e for e in it if not e.name.startswith(".") and e.is_file()),
                        key=lambda e: e.name,
                    )
                for e in entries:
                    when = _delivered(e)
                    if since is None or when >= since:
                        out.append(MailFile(Path(e.path), root, folder, when))
    return out


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
    try:
        return ReportCache(path)
    except CacheError as exc:
        raise UsageError(str(exc)) from None


def _warn(text: str) -> None:
    print(f"authsieve: {text}", file=sys.stderr)


def policy_sets(args: argparse.Namespace, settings: Settings) -> list[tuple[str, str, Policies]]:
    """Gives (name, file, policies) for each --policy FILE, else for the configured policy."""
    if not args.policy:
        return [("configured", settings.source, load_policies(settings))]
    out: list[tuple[str, str, Policies]] = []
    for path in args.policy:
        stem, taken = Path(path).stem or "policy", {n for n, _, _ in out}
        name = stem if stem not in taken else f"{stem}-{len(out) + 1}"
        out.append((name, path, load_policies(load_settings(path))))
    return out


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    since = parse_since(args.since)
    if args.top < 1 or args.jobs < 1:
        raise UsageError("--top and --jobs must be at least 1")
    files = maildir_files(args.paths, since)
    roots = [Path(p) for p in args.paths]
    if args.html and _inside(Path(args.html), roots):
        raise UsageError(f"--html {args.html}: inside a Maildir; the report never writes there")
    sets = policy_sets(args, settings)
    resolver = make_resolver_for(args, settings)
    cache = open_cache(args, roots)
    long_run = len(files) >= PROGRESS_FROM if args.progress is None else args.progress
    started = time.perf_counter()
    scans: dict[str, tuple[tuple[ScannedMessage, ...], dict[str, int]]] = {}
    runs = []
    try:
        for name, source, policies in sets:
            # The trust path steps over the policy's forwarders, so they shape the checks.
            base = policies.for_user(args.user) if args.user else policies.default
            check_settings = settings.with_forwarders(base.trusted_forwarders)
            fp = checks_fingerprint(check_settings)
            if fp not in scans:
                show = long_run and sys.stderr.isatty()
                paths = [f.path for f in files]
                records, counts = scan(
                    paths, check_settings, resolver, cache, _warn, args.recheck, args.jobs, show
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
    from classifier import report_render as render

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


# ---------------------------------------------------------------------------- recheck


def our_header(message: Message, authserv_id: str) -> dict[str, str] | None:
    """Gives our own X-Authsieve values: one above the topmost Received with our id, or None.

    Only local software writes above the first Received (RFC 5321 §4.4), and
    delivery renames every copy from outside, so only that one can be ours.
    """
    from classifier.facts import HEADER_NAME, parse_header_value, safe_domain

    ours = safe_domain(authserv_id) or "localhost"
    for field in message.fields:
        if field.key == "received":
            return None
        if field.key == HEADER_NAME.lower():
            values = parse_header_value(field.value())
            if values.get("id", "").lower() == ours:
                return values
    return None


def _results(record: CheckRecord) -> dict[str, str]:
    return {k: getattr(record.facts, k.replace("-", "_")) for k in _TEMP_KEYS}


def _words(values: dict[str, str]) -> str:
    return " ".join(f"{k}={values.get(k) or 'none'}" for k in _TEMP_KEYS)


@dataclass(frozen=True)
class Recheck:
    """What recheck found for one message whose result was temperror, and what it did."""

    path: str
    folder: str
    before: str  # the results as recorded (header or cache)
    after: str  # the results now
    was: str  # the verdict it was filed by
    now: str  # the verdict now
    # moved | would move | unchanged | still temperror | left where the user put it | not moved: …
    outcome: str
    new_path: str = ""

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def refile(src: Path, root: Path, folder: str, data: bytes) -> Path:
    """Gives the new path of a message moved to ROOT/FOLDER the Maildir way, data as its bytes.

    tmp/, fsync, rename into new/ or cur/ (as the original was, flags kept),
    and only then unlink the original.  Mode, owner and mtime (Dovecot's
    received date) are kept.
    """
    from classifier.deliver import maildir_name

    base = root / folder if folder else root
    for sub in ("tmp", "new", "cur"):
        (base / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder:
        (base / "maildirfolder").touch(exist_ok=True)
    sub = "cur" if src.parent.name == "cur" else "new"
    info = src.name.partition(":")[2]
    unique = f"{maildir_name()},S={len(data)}"
    final = base / sub / (f"{unique}:{info}" if sub == "cur" and info else unique)
    st = src.stat()
    tmp = base / "tmp" / unique
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, st.st_mode & 0o777)
            if os.geteuid() == 0:
                os.fchown(fd, st.st_uid, st.st_gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
    # Gone already means renamed meanwhile (a flag change): the copy is in place, so the
    # worst case is a duplicate, never a loss.
    src.unlink(missing_ok=True)
    fsync_dir(src.parent)
    return final


def recheck_one(
    f: MailFile,
    args: argparse.Namespace,
    settings: Settings,
    policies: Policies,
    resolver: Resolver,
    cache: ReportCache,
) -> Recheck | None:
    """Gives what recheck did to one message, or None when its result was not temperror."""
    from classifier.annotate import annotate
    from classifier.deliver import FOLDERS
    from classifier.evaluate import evaluate

    data = f.path.read_bytes()
    message = Message.parse(data)
    mid, digest = message_key(data)
    base = policies.for_user(args.user) if args.user else policies.default
    fp = checks_fingerprint(settings.with_forwarders(base.trusted_forwarders))
    cached = cache.get(mid, digest, fp)
    header = our_header(message, settings.authserv_id)
    if cached is not None:
        if not cached.temperror:
            return None  # the cache is newer than any header: a recheck already resolved it
        before = _words(_results(cached))
        was = verdict_for(ScannedMessage(str(f.path), f.folder, 0, cached), policies, args.user)
        was_action = was.action
    elif header is not None and any(header.get(k) == "temperror" for k in _TEMP_KEYS):
        before, was_action = _words(header), "inbox"
    else:
        return None
    if header is not None and header.get("verdict") in FOLDERS:
        was_action = header["verdict"]  # where delivery filed it, whatever the cache says
    result = evaluate(data, settings, resolver, user=args.user, policies=policies)
    record = record_from(result.report, message)
    cache.put(mid, digest, fp, record)
    now = result.verdict.action
    rc = Recheck(str(f.path), f.folder, before, _words(_results(record)), was_action, now, "")
    if record.temperror:
        return replace(rc, outcome="still temperror")
    if now == was_action:
        return replace(rc, outcome="unchanged")
    if f.folder != (FOLDERS[was_action] or "INBOX"):
        return replace(rc, outcome="left where the user put it")
    if args.dry_run:
        return replace(rc, outcome="would move")
    if header is not None:
        # The message carries our results: it moves with the new ones, not the temperror.
        value = result.header_value(settings.authserv_id)
        data = annotate(data, result.report, settings.authserv_id, value)
        cache.put(*message_key(data), fp, record)
    try:
        new_path = refile(f.path, f.root, FOLDERS[now], data)
    except OSError as exc:
        return replace(rc, outcome=f"not moved: {exc.strerror}")
    return replace(rc, outcome="moved", new_path=str(new_path))


def cmd_recheck(args: argparse.Namespace, settings: Settings) -> int:
    files = maildir_files(args.paths)
    policies = load_policies(settings)
    resolver = make_resolver_for(args, settings)
    cache = open_cache(args, [Path(p) for p in args.paths])
    done: list[Recheck] = []
    try:
        for f in files:
            try:
                rc = recheck_one(f, args, settings, policies, resolver, cache)
            except OSError as exc:
                _warn(f"{f.path}: cannot read: {exc.strerror}")
                continue
            if rc is not None:
                done.append(rc)
    finally:
        cache.close()
    for rc in done:
        if args.json:
            print(json.dumps(rc.to_dict(), ensure_ascii=False))
        else:
            where = f" ({rc.new_path})" if rc.new_path else ""
            print(f"{rc.path}\n    {rc.before}  →  {rc.after}")
            print(f"    {rc.was} → {rc.now}: {rc.outcome}{where}")
    if not args.json:
        moved = sum(rc.outcome == "moved" for rc in done)
        print(f"{len(done)} of {len(files)} messages had a temperror result; {moved} moved")
    # A message that should have moved and could not is worth a non-zero exit (cron mails it).
    return 1 if any(rc.outcome.startswith("not moved") for rc in done) else 0


# ---------------------------------------------------------------------------- parsers


def _shared(
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
    _shared(p, add_common)
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


def add_recheck_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "recheck",
        help="re-check messages whose result was temperror",
        description="Check again every message whose cached or header result was temperror "
        "and move it to the folder of its new verdict when that changed.",
    )
    _shared(p, add_common)
    p.add_argument("--dry-run", action="store_true", help="say what would move; move nothing")
    p.add_argument("--json", action="store_true", help="one JSON object per rechecked message")
    p.set_defaults(handler=cmd_recheck)
