"""The `authsieve` command: argument parsing, files, output and exit codes.

Errors a user can meet are one line on stderr and exit code 2; a traceback
only with ``--debug``.  Every module is imported inside the command that
needs it, even argparse: `authsieve pipe --daemon` goes to
`classifier.delivery.handover` before anything else is loaded, so it starts fast.
"""

from __future__ import annotations

import sys

from classifier import __version__
from classifier.usage import UsageError

TYPE_CHECKING = False  # typing costs a pipe process milliseconds; mypy reads this as True
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from classifier.auth.checks import CheckReport
    from classifier.config import Settings
    from classifier.lookup.resolver import Resolver
    from classifier.policy.verdict import Verdict

EX_USAGE = 2
EX_TEMPFAIL = 75
EX_SOFTWARE = 70


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default /etc/authsieve/config.toml)")
    p.add_argument("--dns-server", metavar="HOST:PORT", help="ask this nameserver")
    p.add_argument("--dns-zone", metavar="FILE", help="answer DNS from this zone file (offline)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


# command → (module, function adding its sub-parser, one-line help)
PLUGINS = {
    "sieve": ("sieve.commands", "add_sieve_parser", "generate or install the Sieve script"),
    "watch": (
        "classifier.commands.watch",
        "add_watch_parser",
        "classify mail as it lands in Maildirs",
    ),
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
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="authsieve",
        description="SPF, DKIM, ARC and DMARC at delivery time; failures filed, never bounced.",
    )
    parser.add_argument("--version", action="version", version=f"authsieve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="check messages or Maildirs and print the results")
    add_common(check)
    check.add_argument("--json", action="store_true", help="one JSON object per message")
    check.add_argument("--user", help="decide with this user's policy (default: the recipient's)")
    check.add_argument("paths", nargs="+", metavar="PATH", help="message file or Maildir")

    annotate = sub.add_parser("annotate", help="write the annotated message to stdout")
    add_common(annotate)
    annotate.add_argument("--user", help="decide with this user's policy")
    annotate.add_argument("file", nargs="?", help="message file (default: stdin)")

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

    serve = sub.add_parser("serve", help="resident checker for `pipe --daemon` (UNIX socket)")
    add_common(serve)
    serve.add_argument("--socket", metavar="PATH", help="socket path (default: daemon_socket)")
    serve.add_argument(
        "--socket-mode", help="octal permissions of the socket (default: socket_mode, 600)"
    )
    pipe.add_argument("--sendmail-path", default="/usr/sbin/sendmail")

    # Commands that live in their own modules, each adding its own sub-parser; a module is
    # imported only when its command (or the full help) is asked for, so `pipe` starts fast.
    first = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (module, function, summary) in PLUGINS.items():
        if argv is None or first in (None, name):
            try:
                add = getattr(importlib.import_module(module), function)
            except (ImportError, AttributeError):
                continue
            add(sub, add_common)
        else:
            sub.add_parser(name, help=summary)
    return parser


def make_resolver_for(args: argparse.Namespace, settings: Settings) -> Resolver:
    """Gives the one resolver: --dns-zone, else --dns-server, else the config, else resolv.conf."""
    from classifier.lookup.resolver import make_resolver

    zone = args.dns_zone or settings.dns_zone
    server = args.dns_server or settings.dns_server
    try:
        return make_resolver(dns_server=server, dns_zone=zone, timeout=settings.dns_timeout)
    except OSError as exc:
        raise UsageError(f"{zone}: cannot read zone file: {exc.strerror}") from None
    except ValueError as exc:
        what = f"--dns-zone {zone}" if zone else f"--dns-server {server}"
        raise UsageError(f"{what}: {exc}") from None
    except Exception as exc:  # dnspython's zone syntax errors have no common base we can name
        raise UsageError(f"{zone}: bad zone file: {exc}") from None


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

    from classifier.delivery.handover import macro, pipe_hints
    from classifier.delivery.pipe import PipeOutcome, deliver_outcome, process
    from classifier.delivery.targets import delivery_from_spec
    from classifier.log import configure_logging, dropped, log

    started = time.monotonic()
    configure_logging(settings, args.debug, stderr=False)
    try:
        delivery = delivery_from_spec(
            args.deliver,
            args.lda_path,
            args.sendmail_path,
            tuple(args.lda_arg),
            macro(args.user),
            macro(args.original_recipient),
        )
    except ValueError as exc:
        log.error("bad pipe arguments: %s", exc)
        print(f"authsieve: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
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
                PipeOutcome(a.data, a.action, a.summary, a.error),
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
    try:
        resolver = make_resolver_for(args, settings)
    except UsageError as exc:
        log.error("bad pipe arguments: %s", exc)
        print(f"authsieve: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    outcome = process(data, settings, resolver, hints, user)
    code = deliver_outcome(outcome, delivery, hints["sender"], recipients, started)
    if code != 0 and dropped():
        # stderr is allowed now (delivery failed), and it is the only place left to say so.
        print(f"authsieve: {dropped()} log line(s) dropped: no log file or syslog", file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from classifier.delivery.daemon import DaemonSetupError, serve
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
    except DaemonSetupError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot listen: {exc.strerror}") from None


def _reload(args: argparse.Namespace) -> tuple[Settings, Resolver]:
    """Gives the settings and resolver `serve` was started with, read afresh (SIGHUP)."""
    from classifier.config import load_settings

    settings = load_settings(args.config)
    return settings, make_resolver_for(args, settings)


COMMANDS = {"check": cmd_check, "annotate": cmd_annotate, "pipe": cmd_pipe, "serve": cmd_serve}


# argparse drops "--" even from "--opt=--" (its end-of-options mark), leaving a list where
# a string was due: a client whose HELO is "--" deferred every delivery.  A value given
# with "=" is the macro pipe(8) expanded, whatever it says: it passes argparse disguised.
_DASHES = "\x00authsieve-dashes\x00"


def _shield(arg: str) -> str:
    name, eq, value = arg.partition("=")
    return f"{name}={_DASHES}" if eq and name.startswith("--") and value == "--" else arg


def _unshield(value: str) -> str:
    return "--" if value == _DASHES else value


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
    from classifier.config import ConfigError, load_settings

    parser = build_parser(argv)
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
        handler = COMMANDS.get(args.command) or args.handler
        return int(handler(args, settings))
    except (ConfigError, UsageError) as exc:
        if debug:
            raise
        print(f"authsieve: {exc}", file=sys.stderr)
        # In pipe mode a bad config must not bounce mail: Postfix keeps it and retries.
        return EX_TEMPFAIL if args.command == "pipe" else EX_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if debug:
            raise
        print(f"authsieve: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        # Whatever went wrong, Postfix must keep the message and retry rather than bounce it.
        return EX_TEMPFAIL if args.command == "pipe" else EX_SOFTWARE


if __name__ == "__main__":
    # Run as `python -m classifier.commands.main`, this file is __main__; the plugins import
    # classifier.commands.main, so main() comes from there: one copy of the module, not two.
    from classifier.commands.main import main as package_main

    sys.exit(package_main())
