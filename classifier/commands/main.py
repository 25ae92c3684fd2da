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
from classifier.errors import EX_INTERRUPTED, EX_SOFTWARE, EX_TEMPFAIL, AuthsieveError

TYPE_CHECKING = False  # typing costs a pipe process milliseconds; mypy reads this as True
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from types import SimpleNamespace


# Every command, in the order `--help` lists them: command → (module, the function that adds
# its sub-parser with its handler, one-line help).  A module is imported only when its
# command (or the full help) is asked for, so `pipe` starts fast.
COMMANDS = {
    "check": ("classifier.commands.check", "add_check_parser", "check messages or Maildirs"),
    "annotate": ("classifier.commands.check", "add_annotate_parser", "annotate one message"),
    "pipe": ("classifier.commands.pipe", "add_pipe_parser", "Postfix pipe(8) transport"),
    "serve": ("classifier.commands.pipe", "add_serve_parser", "resident checker for pipe"),
    "filter": (
        "classifier.delivery.sievefilter",
        "add_filter_parser",
        "Dovecot LMTP: Pigeonhole's vnd.dovecot.filter program",
    ),
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
    "learn": (
        "classifier.commands.learn",
        "add_learn_parser",
        "record a message a user moved (Dovecot imapsieve)",
    ),
    "suggest": (
        "classifier.commands.learn",
        "add_suggest_parser",
        "policy changes that users' moves argue for",
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
            # A known command never shows the others (its usage says COMMAND): a parser
            # each would cost a pipe process a millisecond.  For an unknown one, argparse's
            # "invalid choice" lists them all.
            if first not in COMMANDS:
                sub.add_parser(name, help=summary)
            continue
        try:
            add = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as exc:
            raise AuthsieveError(f"{name}: cannot load {module}.{function}: {exc}") from exc
        add(sub, add_common)
    return parser


# argparse drops "--" even from "--opt=--" (its end-of-options mark), leaving a list where
# a string was due: a client whose HELO is "--" deferred every delivery.  A value given
# with "=" is the macro pipe(8) expanded, whatever it says: it passes argparse disguised.
_DASHES = "\x00authsieve-dashes\x00"


def _shield(arg: str) -> str:
    name, eq, value = arg.partition("=")
    return f"{name}={_DASHES}" if eq and name.startswith("--") and value == "--" else arg


def _unshield(value: str) -> str:
    return "--" if value == _DASHES else value


def parse(argv: list[str]) -> argparse.Namespace:
    """Gives the parsed command line; SystemExit for --help and usage errors (argparse's)."""
    args = build_parser(argv).parse_args([_shield(a) for a in argv])
    for name, value in vars(args).items():
        if isinstance(value, str):
            setattr(args, name, _unshield(value))
        elif isinstance(value, list):
            setattr(args, name, [_unshield(v) if isinstance(v, str) else v for v in value])
    return args


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
    """Runs the command of argv (sys.argv when None) and gives its exit code."""
    if argv is not None or sys.argv[1:2] != ["pipe"]:
        return run(argv)
    # The process is one `authsieve pipe`: one message, then exit (Postfix starts one per
    # delivery).  Its garbage is a message's worth, so the cycle collector is not run: its
    # full passes over every imported object during start-up, and twice more at exit
    # (finalize_modules), were about 60 M of the 560 M instructions a signed message took
    # (issue 15).  Reference counting still frees everything else as it goes.
    import gc

    gc.disable()
    try:
        return run(argv)
    finally:
        gc.freeze()  # exit's collections leave the survivors, all of them, untouched


def run(argv: Sequence[str] | None = None) -> int:
    """Gives the exit code of the command of argv (sys.argv when None)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    message = None
    not_used = ""  # why the pipe's fast path could not use the daemon
    args: argparse.Namespace | SimpleNamespace | None = None
    if argv[:1] == ["filter"]:
        # Pigeonhole's filter (issue 18): no argparse, nothing may stop the answer.
        from classifier.delivery.sievefilter import run_filter

        return run_filter(argv[1:])
    if argv[:1] == ["pipe"]:
        from classifier.delivery.handover import hand_over

        handover = hand_over(argv[1:])
        if handover.code is not None:
            return handover.code
        message, not_used = handover.data, handover.why
        from classifier.commands.pipe import pipe_args

        args = pipe_args(argv[1:])  # master.cf's plain options: no argparse
    from classifier.config import load_config

    if args is None:
        try:
            args = parse(argv)
        except AuthsieveError as exc:  # a command module that cannot be imported
            return fail(exc, argv[:1] == ["pipe"], "--debug" in argv)
        except SystemExit as exc:
            # A mistake in master.cf's argv must keep mail queued, not bounce it.
            if argv[:1] == ["pipe"] and exc.code not in (0, None):
                return EX_TEMPFAIL
            raise
    if argv[:1] == ["pipe"] or not hasattr(args, "message"):
        args.message = message  # the pipe's message; learn's positional file is its own
        args.daemon_not_used = not_used
    debug = getattr(args, "debug", False)
    try:
        config = load_config(getattr(args, "config", None))
        return int(args.handler(args, config))
    except AuthsieveError as exc:
        code = fail(exc, args.command == "pipe", debug)
        # Dovecot's IMAP MOVE must not fail for learn: said on stderr (Dovecot's log) only.
        return 0 if args.command == "learn" else code
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
