"""`authsieve check` and `authsieve annotate`: one message or Maildir at a time, on a terminal."""

from __future__ import annotations

import sys

from classifier.errors import UsageError

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path
    from typing import Any

    from classifier.auth.checks import CheckReport
    from classifier.config import Config
    from classifier.policy.verdict import Verdict


def add_check_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    check = sub.add_parser("check", help="check messages or Maildirs and print the results")
    add_common(check)
    check.add_argument("--json", action="store_true", help="one JSON object per message")
    check.add_argument("--user", help="decide with this user's policy (default: the recipient's)")
    check.add_argument("paths", nargs="+", metavar="PATH", help="message file or Maildir")
    check.set_defaults(handler=cmd_check)


def add_annotate_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    annotate = sub.add_parser("annotate", help="write the annotated message to stdout")
    add_common(annotate)
    annotate.add_argument("--user", help="decide with this user's policy")
    annotate.add_argument("file", nargs="?", help="message file (default: stdin)")
    annotate.set_defaults(handler=cmd_annotate)


def iter_message_files(paths: Sequence[str]) -> Iterator[Path]:
    """Gives every message file named: files as given, Maildirs as new/ and cur/ of each folder."""
    from pathlib import Path

    for name in paths:
        path = Path(name)
        if path.is_file():
            yield path
        elif path.is_dir():
            if not any((path / sub).is_dir() for sub in ("new", "cur")):
                raise UsageError(f"{path}: not a Maildir (no new/ or cur/)")
            subfolders = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith("."))
            folders = [path, *subfolders]
            for folder in folders:
                for sub in ("new", "cur"):
                    d = folder / sub
                    if d.is_dir():
                        # Maildir names never start with a dot (.keep and the like are not mail).
                        yield from sorted(
                            p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")
                        )
        else:
            raise UsageError(f"{path}: no such file or directory")


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    import json

    from classifier.commands.options import make_resolver_for
    from classifier.evaluate import evaluate

    resolver = make_resolver_for(args, config)
    files = list(iter_message_files(args.paths))
    rows = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"authsieve: {path}: cannot read: {exc.strerror}", file=sys.stderr)
            continue
        result = evaluate(data, config.engine, resolver, config.policies, user=args.user)
        if args.json:
            print(json.dumps({"file": str(path), **result.to_dict()}, ensure_ascii=False))
        else:
            rows.append((path, result.report, result.verdict))
    if not args.json:
        print_table(rows)
    return 0


def _folder_of(path: Path) -> str:
    """Gives the Maildir folder a message file sits in (INBOX, .Junk, …), or "" for a plain file."""
    if path.parent.name in ("new", "cur"):
        folder = path.parent.parent.name
        return folder if folder.startswith(".") else "INBOX"
    return ""


def print_table(rows: list[tuple[Path, CheckReport, Verdict]]) -> None:
    """Prints one line per message (who sent it, what the checks said, where it goes), then why."""
    header = ("#", "folder", "from", "client", "spf", "dkim", "arc", "dmarc", "verdict")
    lines = [header]
    for n, (path, report, verdict) in enumerate(rows, 1):
        env = report.envelope
        client = env.client_ip or ("(auth)" if env.authenticated else "-")
        dmarc = report.dmarc.result + (f"/{report.dmarc.policy}" if report.dmarc.policy else "")
        action = verdict.action if not verdict.observe else f"inbox (would {verdict.would_be})"
        lines.append(
            (
                str(n),
                _folder_of(path) or path.name[:20],
                (report.from_address or "-")[:32],
                client,
                report.spf.result,
                report.dkim_result,
                report.arc.result,
                dmarc,
                action,
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    for row in lines:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if rows:
        print()
    for n, (path, _report, verdict) in enumerate(rows, 1):
        print(f"{n:>{widths[0]}}  {path}")
        for reason in verdict.reasons:
            print(f"{'':>{widths[0]}}    {reason}")


def cmd_annotate(args: argparse.Namespace, config: Config) -> int:
    from pathlib import Path

    from classifier.annotate import annotate
    from classifier.commands.options import make_resolver_for
    from classifier.evaluate import evaluate

    settings = config.engine
    resolver = make_resolver_for(args, config)
    if args.file:
        try:
            data = Path(args.file).read_bytes()
        except OSError as exc:
            raise UsageError(f"{args.file}: cannot read: {exc.strerror}") from None
    else:
        data = sys.stdin.buffer.read()
    result = evaluate(data, settings, resolver, config.policies, user=args.user)
    value = result.header_value(settings.authserv_id)
    sys.stdout.buffer.write(annotate(data, result.report, settings.authserv_id, value))
    return 0
