"""The `authsieve watch` and `authsieve quarantine` commands: arguments in, exit code out.

Settings come from the ``[watch]`` / ``[quarantine]`` config sections
(`Config.watch`, `Config.quarantine`, defaults there); command-line options,
when given, decide.
"""

from __future__ import annotations

import argparse
import getpass
import glob
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.commands.options import make_resolver_for
from classifier.config import Config, Settings, load_config
from classifier.errors import EX_TEMPFAIL, UsageError

DEFAULT_WORKERS = 2


def _add_location(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--maildir",
        action="append",
        default=[],
        metavar="PATH",
        help="a Maildir or a glob over many ([watch] roots); repeatable",
    )
    p.add_argument("--user", help="only this user's quarantine (user@domain)")
    p.add_argument("--path-template", help="path → user, e.g. {domain}/{local}/Maildir")


def add_watch_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("watch", help="classify mail as it lands in Maildirs")
    add_common(p)
    p.add_argument("roots", nargs="*", metavar="ROOT", help="Maildir or glob ([watch] roots)")
    p.add_argument("--path-template", help="path → user (default {domain}/{local}/Maildir)")
    p.add_argument("--rescan-interval", type=float, metavar="SECONDS", help="default 60")
    p.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")
    p.add_argument("--threads", action="store_true", help="worker threads instead of processes")
    p.add_argument("--once", action="store_true", help="file what waits in new/, then exit")
    p.add_argument("--json", action="store_true", help="with --once: the summary as JSON")
    p.set_defaults(handler=cmd_watch)


def _setup_logging(settings: Settings, debug: bool) -> None:
    from classifier.log import configure_logging, log

    configure_logging(settings, debug)
    on_stderr = any(type(h) is logging.StreamHandler for h in log.handlers)
    if not settings.log_file and sys.stderr.isatty() and not on_stderr:
        log.addHandler(logging.StreamHandler())


def cmd_watch(args: argparse.Namespace, config: Config) -> int:
    from classifier.display import printable
    from classifier.mailstore.filing import Job
    from classifier.mailstore.watch import Watcher, WatchOptions

    roots = tuple(args.roots) or tuple(config.watch.roots)
    if not roots:
        raise UsageError("watch: no Maildir given (ROOT arguments or [watch] roots)")
    workers = args.workers if args.workers is not None else config.watch.workers
    if workers < 0:
        raise UsageError(f"--workers {workers}: must be 0 or more")
    interval = args.rescan_interval or config.watch.rescan_interval
    if interval <= 0:
        raise UsageError(f"--rescan-interval {interval}: must be more than 0")
    options = WatchOptions(
        roots=roots,
        path_template=args.path_template or config.watch.path_template,
        rescan_interval=float(interval),
        workers=int(workers or os.cpu_count() or DEFAULT_WORKERS),
        pool="thread" if args.threads else "process",
        once=args.once,
        cur_max_age=config.watch.cur_max_age_days * 86400,
    )
    from classifier.mailstore.maildir import expand_roots

    found = expand_roots(roots)
    if not found:
        raise UsageError(f"watch: no Maildir (a directory with new/) at {', '.join(roots)}")
    if sys.stderr.isatty():  # in the foreground: say what is watched, and how to stop
        shown = ", ".join(printable(str(m)) for m in found[:3])
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        how = "once" if args.once else f"rescan every {interval:g} s; Ctrl-C stops"
        print(f"authsieve watch: {len(found)} Maildir(s): {shown}{more} ({how})", file=sys.stderr)
    _setup_logging(config.engine, args.debug)
    job = Job(config, make_resolver_for(args, config), options.path_template, args.config)
    path = args.config

    def reload() -> Config:
        return load_config(path)

    watcher = Watcher(options, job, reload=reload if path else None)
    code = watcher.run()
    if args.once:
        c = watcher.counts
        summary = {
            "filed": c["filed"],
            "inbox": c["action:inbox"],
            "junk": c["action:junk"],
            "quarantine": c["action:quarantine"],
            "left_alone": c["left-alone"],
            "gone": c["gone"],
            "errors": c["error"],
            "seconds": round(watcher.elapsed, 3),
            "per_second": round(c["filed"] / watcher.elapsed, 1) if watcher.elapsed else 0.0,
        }
        if args.json:
            print(json.dumps(summary))
        else:
            print(" ".join(f"{k}={v}" for k, v in summary.items()))
        if c["error"] and code == 0:
            code = EX_TEMPFAIL  # something is left for the next run
    return code


# --- quarantine ---------------------------------------------------------------------------


def add_quarantine_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    q = sub.add_parser("quarantine", help="list, show, release or purge quarantined mail")
    qsub = q.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")

    p = qsub.add_parser("list", help="date, From, Subject and why, per message")
    add_common(p)
    _add_location(p)
    p.add_argument("--json", action="store_true", help="one JSON object per message")
    p.set_defaults(handler=cmd_list)

    p = qsub.add_parser("show", help="one message: our results and the message itself")
    add_common(p)
    _add_location(p)
    p.add_argument("id", help="message id (from list), an id prefix, or the file name")
    p.add_argument("--raw", action="store_true", help="only the message bytes")
    p.set_defaults(handler=cmd_show)

    p = qsub.add_parser("release", help="move messages back to INBOX")
    add_common(p)
    _add_location(p)
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--allow", action="store_true", help="add the From address to allow_senders")
    p.add_argument("--allow-domain", action="store_true", help="add @domain of From instead")
    p.add_argument("--by", help="who releases (default: your login name)")
    p.set_defaults(handler=cmd_release)

    p = qsub.add_parser("purge", help="delete what is older than the retention")
    add_common(p)
    _add_location(p)
    p.add_argument("--retention-days", type=float, help="default 30 ([quarantine] retention_days)")
    p.add_argument("--dry-run", action="store_true", help="only say what would go")
    p.set_defaults(handler=cmd_purge)

    p = qsub.add_parser("digest", help="a plain-text summary to mail to the user")
    add_common(p)
    _add_location(p)
    p.add_argument("--days", type=float, help="only messages that arrived in the last DAYS")
    p.add_argument("--mail-from", metavar="ADDR", help="print a whole message From: ADDR")
    p.add_argument(
        "--proposals",
        action="store_true",
        help="add the open policy proposals (`authsieve suggest`): the administrator's digest",
    )
    p.set_defaults(handler=cmd_digest)


def _maildirs(args: argparse.Namespace, config: Config) -> list[tuple[Path, str]]:
    """Gives (Maildir, user) for every Maildir named, only the --user's when given."""
    from classifier.mailstore.maildir import expand_roots, user_from_path
    from classifier.policies import normalize_user

    roots = tuple(args.maildir) or tuple(config.watch.roots)
    if not roots:
        raise UsageError("quarantine: no Maildir given (--maildir or [watch] roots)")
    if args.user and not args.user.isprintable():
        raise UsageError(f"--user {args.user!r}: control characters are not allowed")
    template = args.path_template or config.watch.path_template
    found = [(m, user_from_path(m, template) or "") for m in expand_roots(roots)]
    if not found:
        raise UsageError(f"{', '.join(roots)}: no Maildir there")
    if not args.user:
        return [(m, u or str(m)) for m, u in found]
    want = normalize_user(args.user)
    if len(roots) == 1 and not glob.has_magic(roots[0]) and len(found) == 1:
        return [(found[0][0], want)]  # one Maildir named outright: it is this user's
    mine = [(m, u) for m, u in found if u == want]
    if not mine:
        raise UsageError(f"--user {args.user}: no Maildir of that user under {', '.join(roots)}")
    return mine


def _entries(args: argparse.Namespace, config: Config) -> list[tuple[Path, Any]]:
    from classifier.mailstore.quarantine import list_quarantine

    template = args.path_template or config.watch.path_template
    return [
        (maildir, e)
        for maildir, user in _maildirs(args, config)
        for e in list_quarantine(maildir, template, user)
    ]


def _find(args: argparse.Namespace, config: Config, wanted: str) -> tuple[Path, Any]:
    from classifier.mailstore.quarantine import find

    pairs = _entries(args, config)
    entry = find([e for _, e in pairs], wanted)
    return next((m, e) for m, e in pairs if e is entry)


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    from classifier.display import printable
    from classifier.mailstore.quarantine import date_text

    pairs = _entries(args, config)
    for _, e in pairs:
        if args.json:
            print(json.dumps(e.to_dict(), ensure_ascii=False))
        else:
            who = "" if args.user else f"{printable(e.user)}  "
            print(f"{e.id}  {who}{date_text(e)}  {e.sender[:40]}  {e.subject[:50]}")
            if e.reasons:
                print(f"{'':14}why: {e.reasons}")
    if not pairs and not args.json:
        print("quarantine is empty")
    return 0


def cmd_show(args: argparse.Namespace, config: Config) -> int:
    from classifier.display import printable, terminal_text
    from classifier.mailstore.quarantine import date_text

    _, e = _find(args, config, args.id)
    data = Path(e.path).read_bytes()
    if args.raw:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        return 0
    # The file name is the mailbox owner's choice: shown like the sender's text.
    user, path = printable(e.user), printable(e.path)
    print(f"Id:       {e.id}\nUser:     {user}\nFile:     {path}\nDate:     {date_text(e)}")
    print(f"From:     {e.sender}\nSubject:  {e.subject}\nVerdict:  {e.verdict}")
    print(f"Why:      {e.reasons or '-'}\n")
    # The message as the terminal may show it: the sender's control characters escaped.
    sys.stdout.write(terminal_text(data))
    return 0


def cmd_release(args: argparse.Namespace, config: Config) -> int:
    from classifier.display import printable
    from classifier.mailstore.quarantine import allow_sender_in_config, release

    by = args.by or getpass.getuser()
    for wanted in args.ids:
        maildir, e = _find(args, config, wanted)
        try:
            dest = release(maildir, e, by, datetime.now(UTC))
        except OSError as exc:
            print(f"authsieve: {e.id}: not released (left in quarantine): {exc}", file=sys.stderr)
            return EX_TEMPFAIL
        print(f"{e.id}: released to {printable(str(dest))}")
        if not (args.allow or args.allow_domain):
            continue
        if not e.sender_address or "@" not in e.sender_address:
            raise UsageError(f"{e.id}: no From address to allow")
        config_file = Path(args.config or config.source)
        if not config_file.is_file():
            raise UsageError("--allow: no config file to add the sender to (give --config)")
        entry = "@" + e.sender_address.rpartition("@")[2] if args.allow_domain else e.sender_address
        inherited = config.policies.default.allow_senders
        added = allow_sender_in_config(config_file, e.user, entry, inherited)
        print(f"{entry}: {'added to' if added else 'already in'} allow_senders of {e.user}")
        if not e.from_authenticated:
            print(
                "warning: this message did not authenticate its From domain (no DMARC-aligned"
                " SPF or DKIM pass), and an allowed sender passes only when it does: the next"
                " message like this one will be filed the same way"
            )
    return 0


def cmd_purge(args: argparse.Namespace, config: Config) -> int:
    from classifier.display import printable
    from classifier.mailstore.quarantine import purge

    days = args.retention_days
    if days is None:
        days = config.quarantine.retention_days
    elif not days > 0:  # 0 read as "the default" once, -1 as "everything": neither is asked for
        raise UsageError(f"--retention-days {days:g}: must be more than 0")
    gone = purge([e for _, e in _entries(args, config)], days, time.time(), args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for e in gone:
        print(f"{verb} {e.id}  {printable(e.user)}  {e.sender[:40]}  {e.subject[:50]}")
    print(f"{verb} {len(gone)} message(s) older than {days:g} days")
    return 0


def cmd_digest(args: argparse.Namespace, config: Config) -> int:
    from classifier.mailstore.quarantine import digest

    if not args.user:
        raise UsageError("digest: --user is required")
    if args.mail_from and not args.mail_from.isprintable():
        # It becomes a header line: a line break would add headers (RFC 5322 §2.2).
        raise UsageError(f"--mail-from {args.mail_from!r}: control characters are not allowed")
    days = config.quarantine.retention_days
    entries = [e for _, e in _entries(args, config)]
    if args.days:
        entries = [e for e in entries if e.arrived >= time.time() - args.days * 86400]
    user = entries[0].user if entries else args.user
    appendix = ""
    if args.proposals:
        from classifier.commands.learn import open_proposals
        from classifier.learning.proposals import render

        found = open_proposals(config)
        appendix = (
            "Policy proposals from what users moved in and out of Junk and Quarantine\n"
            "(authsieve suggest; "
            "apply one with: authsieve suggest --apply N):\n\n" + render(list(enumerate(found, 1)))
        )
    text = digest(user, entries, days, datetime.now(UTC), args.mail_from or "", appendix)
    print(text, end="")
    return 0
