"""`authsieve recheck`: the command line around `classifier.mailstore.recheck`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from classifier.commands.options import make_resolver_for
from classifier.commands.report import open_cache, shared_arguments, warn
from classifier.config import Config
from classifier.mailstore.mailfiles import maildir_files
from classifier.mailstore.recheck import Recheck, recheck_one


def cmd_recheck(args: argparse.Namespace, config: Config) -> int:
    files = maildir_files(args.paths)
    settings, policies = config.engine, config.policies
    resolver = make_resolver_for(args, config)
    cache = open_cache(args, [Path(p) for p in args.paths])
    done: list[Recheck] = []
    try:
        for f in files:
            try:
                rc = recheck_one(f, settings, policies, resolver, cache, args.user, args.dry_run)
            except OSError as exc:
                warn(f"{f.path}: cannot read: {exc.strerror}")
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


def add_recheck_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "recheck",
        help="re-check messages whose result was temperror",
        description="Check again every message whose cached or header result was temperror "
        "and move it to the folder of its new verdict when that changed.",
    )
    shared_arguments(p, add_common)
    p.add_argument("--dry-run", action="store_true", help="say what would move; move nothing")
    p.add_argument("--json", action="store_true", help="one JSON object per rechecked message")
    p.set_defaults(handler=cmd_recheck)
