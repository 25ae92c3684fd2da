"""The `authsieve` command: argument parsing, files, output and exit codes.

Every command registers itself: `COMMANDS` names the module and the function
that adds its sub-parser, which sets the handler `main` calls.  Errors are
`classifier.errors.AuthsieveError`s, caught once in `main`: one line on stderr
and the error's exit code (2 for usage and config errors; 75 for any of them
in pipe mode); a traceback only with ``--debug``.  Every module is imported inside the command that
needs it, even argparse: `authsieve pipe --daemon` goes to
`classifier.delivery.handover` before anything else is loaded, so it starts fast.
"""

from __future__ import annotations

import sys

from classifier import __version__
from classifier.errors import EX_INTERRUPTED, EX_SOFTWARE, EX_TEMPFAIL, AuthsieveError, UsageError

TYPE_CHECKING = False  # typing costs a pipe process milliseconds; mypy reads this as True
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path
    from typing import Any

    from classifier.auth.checks import CheckReport
    from classifier.config import Settings
    from classifier.lookup.resolver import Resolver
    from classifier.policy.verdict import Verdict


# Every command, in the order `--help` lists them: command → (module, the function that adds
# its sub-parser with its handler, one-line help).  A module is imported only when its
# command (or the full help) is asked for, so `pipe` starts fast.
COMMANDS = {
    "check": ("classifier.commands.main", "add_check_parser", "check messages or Maildirs"),
    "annotate": ("classifier.commands.main", "add_annotate_parser", "annotate one message"),
    "pipe": ("classifier.commands.main", "add_pipe_parser", "Postfix pipe(8) transport"),
    "serve": ("classifier.commands.main", "add_serve_parser", "resident checker for pipe"),
    "sieve": ("sieve.commands", "add_sieve_parser", "generate or install the Sieve script"),
    "watch": ("classifier.commands.watch", "add_watch_parser", "classify mail as it lands"),
    "quarantine": (
        "classifier.commands.watch",
        "add_quarantine_parser",
        "list, show, release or purge quarantined mail",
    ),
    "report": (
        "classifier.commands.report",
        "add_report_parser",
        "what each policy would do to the mail you have",
    ),
    "recheck": (
        "classifier.commands.recheck",
        "add_recheck_parser",
        "re-check messages whose result was temperror",
    ),
    "dmarc-report": (
        "classifier.commands.dmarc_report",
        "add_dmarc_report_parser",
        "build DMARC aggregate reports (RFC 9990) from the report store",
    ),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Gives the parser: every command's sub-parser, each setting its own handler.

    Only the module of the command named in `argv` is imported (all of them for
    the full help); a module that cannot be imported raises AuthsieveError
    naming it, rather than argparse's "invalid choice".
    """
    import argparse
    import importlib

    from classifier.commands.options import add_common

    parser = argparse.ArgumentParser(
        prog="authsieve",
        description="SPF, DKIM, ARC and DMARC at delivery time; failures filed, never bounced.",
    )
    parser.add_argument("--version", action="version", version=f"authsieve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    first = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (module, function, summary) in COMMANDS.items():
        if argv is not None and first not in (None, name):
            sub.add_parser(name, help=summary)
            continue
        try:
            add = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as exc:
            raise AuthsieveError(f"{name}: cannot load {module}.{function}: {exc}") from exc
        add(sub, add_common)
    return parser


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


def add_pipe_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    pipe = sub.add_parser("pipe", help="Postfix pipe(8) transport: check, annotate, deliver")
    add_common(pipe)
    pipe.add_argument("--sender", help="envelope sender (${sender})")
    pipe.add_argument(
        "--recipient", action="append", default=[], help="recipient (${recipient}); repeatable"
    )
    pipe.add_argument("--client-address", help="SMTP client IP (${client_address})")
    pipe.add_argument("--client-helo", help="SMTP client HELO (${client_helo})")
    pipe.add_argument("--client-hostname", help="SMTP client reverse DNS (${client_hostname})")
    pipe.add_argument(
        "--sasl-username",
        help="SMTP AUTH login of the client (${sasl_username}; empty: none), outranks headers",
    )
    pipe.add_argument(
        "--user",
        metavar="ADDRESS",
        help="the mailbox the recipient belongs to, without its +detail (${user}@${domain}):"
        " whose policy decides, and dovecot-lda's -d (default: the recipient)",
    )
    pipe.add_argument(
        "--original-recipient",
        metavar="ADDRESS",
        help="the recipient before aliasing (${original_recipient}): dovecot-lda's -a,"
        ' what Sieve\'s envelope "to" sees (default: the recipient)',
    )
    pipe.add_argument(
        "--deliver",
        default="stdout",
        metavar="TARGET",
        help="stdout | dovecot-lda | sendmail | maildir:PATH (default stdout)",
    )
    pipe.add_argument("--lda-path", default="/usr/lib/dovecot/dovecot-lda")
    pipe.add_argument(
        "--lda-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for dovecot-lda, repeatable; write --lda-arg=-c --lda-arg=FILE",
    )
    pipe.add_argument(
        "--daemon",
        metavar="SOCKET",
        help="let `authsieve serve` on this socket check the message (falls back to in-process)",
    )
    pipe.add_argument(
        "--daemon-timeout",
        type=float,
        metavar="SECONDS",
        help="check in-process when the daemon has not answered by then"
        " (default: dns_budget + 10, or 60 on the fast path)",
    )
    pipe.add_argument("--sendmail-path", default="/usr/sbin/sendmail")
    pipe.set_defaults(handler=cmd_pipe)


def add_serve_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    serve = sub.add_parser("serve", help="resident checker for `pipe --daemon` (UNIX socket)")
    add_common(serve)
    serve.add_argument("--socket", metavar="PATH", help="socket path (default: daemon_socket)")
    serve.add_argument(
        "--socket-mode", help="octal permissions of the socket (default: socket_mode, 600)"
    )
    serve.set_defaults(handler=cmd_serve)


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


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from classifier.commands.options import make_resolver_for
    from classifier.evaluate import evaluate
    from classifier.policy.rules import load_policies

    policies = load_policies(settings)
    resolver = make_resolver_for(args, settings)
    files = list(iter_message_files(args.paths))
    rows = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"authsieve: {path}: cannot read: {exc.strerror}", file=sys.stderr)
            continue
        result = evaluate(data, settings, resolver, user=args.user, policies=policies)
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


def cmd_annotate(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from classifier.annotate import annotate
    from classifier.commands.options import make_resolver_for
    from classifier.evaluate import evaluate

    resolver = make_resolver_for(args, settings)
    if args.file:
        try:
            data = Path(args.file).read_bytes()
        except OSError as exc:
            raise UsageError(f"{args.file}: cannot read: {exc.strerror}") from None
    else:
        data = sys.stdin.buffer.read()
    result = evaluate(data, settings, resolver, user=args.user)
    value = result.header_value(settings.authserv_id)
    sys.stdout.buffer.write(annotate(data, result.report, settings.authserv_id, value))
    return 0


def cmd_pipe(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from classifier.commands.options import make_resolver_for
    from classifier.delivery.handover import macro, pipe_hints
    from classifier.delivery.pipe import deliver_outcome
    from classifier.delivery.targets import delivery_from_spec
    from classifier.log import configure_logging, dropped, log

    started = time.monotonic()
    configure_logging(settings, args.debug, stderr=False)
    delivery = delivery_from_spec(
        args.deliver,
        args.lda_path,
        args.sendmail_path,
        tuple(args.lda_arg),
        macro(args.user),
        macro(args.original_recipient),
    )
    # Read already when `classifier.delivery.handover` tried the daemon and could not use it.
    handed_over = args.message is not None
    data = args.message if handed_over else sys.stdin.buffer.read()
    recipients = list(args.recipient)
    hints = pipe_hints(
        args.sender,
        recipients,
        args.client_address,
        args.client_helo,
        args.client_hostname,
        args.sasl_username,
    )
    # The mailbox's owner decides: you+news@ is you@ when the delimiter is "+".
    user = macro(args.user) or hints["recipient"]
    outcome = None
    socket_path = args.daemon or settings.daemon_socket
    if socket_path and not handed_over:
        from classifier.delivery.daemon_client import call_daemon, trusted_uids

        trusted = trusted_uids(settings.daemon_user)
        wait = args.daemon_timeout or settings.dns_budget + 10
        call = call_daemon(socket_path, data, hints, user, wait, trusted)
        if call is not None:
            a = call.answer
            code = deliver_outcome(
                a.data,
                a.action,
                a.summary,
                delivery,
                hints["sender"],
                recipients,
                started,
                log_it=False,
            )
            call.report(code, recipients, (time.monotonic() - started) * 1000)
            return code
    if socket_path:
        log.warning("daemon at %s did not answer; checking in this process", socket_path)
    resolver = make_resolver_for(args, settings)
    # The hints travel as JSON to the daemon; in this process they are the engine's Hints.
    from classifier.aggregate.store import recorder
    from classifier.envelope.trust import Hints
    from classifier.evaluate import check_and_annotate

    outcome = check_and_annotate(
        data, settings, resolver, Hints(**hints), user, record=recorder(settings)
    )
    code = deliver_outcome(
        outcome.data,
        outcome.action,
        outcome.summary,
        delivery,
        hints["sender"],
        recipients,
        started,
    )
    if code != 0 and dropped():
        # stderr is allowed now (delivery failed), and it is the only place left to say so.
        print(f"authsieve: {dropped()} log line(s) dropped: no log file or syslog", file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from classifier.commands.options import make_resolver_for
    from classifier.delivery.daemon import serve
    from classifier.log import configure_logging

    configure_logging(settings, args.debug)
    path = args.socket or settings.daemon_socket
    if not path:
        raise UsageError("serve: no socket: give --socket PATH or classifier.daemon_socket")
    mode = None
    if args.socket_mode is not None:
        try:
            mode = int(args.socket_mode, 8)
        except ValueError:
            raise UsageError(f"--socket-mode {args.socket_mode!r}: not an octal mode") from None
        if not 0 <= mode <= 0o777 or mode & 0o007:
            raise UsageError(f"--socket-mode {args.socket_mode}: owner/group bits only (600, 660)")
    resolver = make_resolver_for(args, settings)
    try:
        return serve(path, settings, resolver, mode, reload=lambda: _reload(args))
    except OSError as exc:
        raise UsageError(f"{path}: cannot listen: {exc.strerror}") from None


def _reload(args: argparse.Namespace) -> tuple[Settings, Resolver]:
    """Gives the settings and resolver `serve` was started with, read afresh (SIGHUP)."""
    from classifier.commands.options import make_resolver_for
    from classifier.config import load_settings

    settings = load_settings(args.config)
    return settings, make_resolver_for(args, settings)


# argparse drops "--" even from "--opt=--" (its end-of-options mark), leaving a list where
# a string was due: a client whose HELO is "--" deferred every delivery.  A value given
# with "=" is the macro pipe(8) expanded, whatever it says: it passes argparse disguised.
_DASHES = "\x00authsieve-dashes\x00"


def _shield(arg: str) -> str:
    name, eq, value = arg.partition("=")
    return f"{name}={_DASHES}" if eq and name.startswith("--") and value == "--" else arg


def _unshield(value: str) -> str:
    return "--" if value == _DASHES else value


def fail(exc: AuthsieveError, pipe: bool, debug: bool) -> int:
    """Says the error in one line (a traceback with --debug) and gives its exit code."""
    if debug:
        raise exc
    print(f"authsieve: {exc}", file=sys.stderr)
    if pipe:
        from classifier.log import log

        if log.handlers:  # set up by cmd_pipe; before that, Python would print it again
            log.error("%s", exc)
        # A bad config or argument must not bounce mail: Postfix keeps it and retries.
        return EX_TEMPFAIL
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    message = None
    if argv[:1] == ["filter"]:
        # Pigeonhole's filter (issue 18): no argparse, nothing may stop the answer.
        from classifier.delivery.sievefilter import run_filter

        return run_filter(argv[1:])
    if argv[:1] == ["pipe"]:
        from classifier.delivery.handover import hand_over

        handover = hand_over(argv[1:])
        if handover.code is not None:
            return handover.code
        message = handover.data
    from classifier.config import load_settings

    try:
        parser = build_parser(argv)
    except AuthsieveError as exc:  # a command module that cannot be imported
        return fail(exc, argv[:1] == ["pipe"], "--debug" in argv)
    try:
        args = parser.parse_args([_shield(a) for a in argv])
        for name, value in vars(args).items():
            if isinstance(value, str):
                setattr(args, name, _unshield(value))
            elif isinstance(value, list):
                setattr(args, name, [_unshield(v) if isinstance(v, str) else v for v in value])
    except SystemExit as exc:
        # A mistake in master.cf's argv must keep mail queued, not bounce it.
        if argv[:1] == ["pipe"] and exc.code not in (0, None):
            return EX_TEMPFAIL
        raise
    args.message = message
    debug = getattr(args, "debug", False)
    try:
        settings = load_settings(getattr(args, "config", None))
        return int(args.handler(args, settings))
    except AuthsieveError as exc:
        return fail(exc, args.command == "pipe", debug)
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if debug:
            raise
        print(f"authsieve: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        # Whatever went wrong, Postfix must keep the message and retry rather than bounce it.
        return EX_TEMPFAIL if args.command == "pipe" else EX_SOFTWARE


if __name__ == "__main__":
    # Run as `python -m classifier.commands.main`, this file is __main__; COMMANDS names
    # classifier.commands.main, so main() comes from there: one copy of the module, not two.
    from classifier.commands.main import main as package_main

    sys.exit(package_main())
