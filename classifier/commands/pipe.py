"""`authsieve pipe` (Postfix's pipe(8) transport, the full path) and `authsieve serve`.

The fast path of `pipe --daemon` never comes here: `classifier.delivery.handover`
hands the message over first, and only what it cannot do falls back to `cmd_pipe`.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from classifier.delivery.handover import (
    DEFAULT_LDA_PATH,
    DEFAULT_SENDMAIL_PATH,
    parse_pipe_args,
)
from classifier.errors import UsageError

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    from classifier.config import Config
    from classifier.lookup.resolver import Resolver


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
        "--queue-id",
        metavar="ID",
        help="Postfix's queue id (${queue_id}), written into the delivery log line",
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
        metavar="TARGET",
        help="dovecot-lda | sendmail | maildir:PATH | stdout (required: where the message goes)",
    )
    pipe.add_argument(
        "--lda-path",
        default=DEFAULT_LDA_PATH,
        help="the dovecot-lda that --deliver dovecot-lda runs (default: %(default)s)",
    )
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
    pipe.add_argument(
        "--sendmail-path",
        default=DEFAULT_SENDMAIL_PATH,
        help="the sendmail that --deliver sendmail runs (default: %(default)s)",
    )
    pipe.set_defaults(handler=cmd_pipe)


def pipe_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """Gives what the pipe parser would for plain ``--name value`` options, without argparse.

    master.cf gives only such options, and building the parser costs a pipe
    process more than reading them (issue 15).  Anything else (``--help``, an
    abbreviation, a value that is no number) gives None: argparse then reads
    it and says what is wrong.
    """
    options = parse_pipe_args(argv)
    if options is None:
        return None

    def opt(name: str, default: str | None = None) -> Any:
        return options.get(name, default)

    timeout = opt("--daemon-timeout")
    try:
        daemon_timeout = None if timeout is None else float(timeout)
    except ValueError:
        return None
    return SimpleNamespace(
        command="pipe",
        handler=cmd_pipe,
        config=opt("--config"),
        dns_server=opt("--dns-server"),
        dns_zone=opt("--dns-zone"),
        debug=bool(opt("--debug")),
        sender=opt("--sender"),
        recipient=list(opt("--recipient")),
        client_address=opt("--client-address"),
        client_helo=opt("--client-helo"),
        client_hostname=opt("--client-hostname"),
        sasl_username=opt("--sasl-username"),
        queue_id=opt("--queue-id"),
        user=opt("--user"),
        original_recipient=opt("--original-recipient"),
        deliver=opt("--deliver"),
        lda_path=opt("--lda-path", DEFAULT_LDA_PATH),
        lda_arg=list(opt("--lda-arg")),
        daemon=opt("--daemon"),
        daemon_timeout=daemon_timeout,
        sendmail_path=opt("--sendmail-path", DEFAULT_SENDMAIL_PATH),
    )


def add_serve_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    serve = sub.add_parser("serve", help="resident checker for `pipe --daemon` (UNIX socket)")
    add_common(serve)
    serve.add_argument("--socket", metavar="PATH", help="socket path (default: daemon_socket)")
    serve.add_argument(
        "--socket-mode", help="octal permissions of the socket (default: socket_mode, 600)"
    )
    serve.set_defaults(handler=cmd_serve)


def cmd_pipe(args: argparse.Namespace | SimpleNamespace, config: Config) -> int:
    import time

    from classifier.commands.options import make_resolver_for
    from classifier.delivery.handover import macro, pipe_hints
    from classifier.delivery.pipe import deliver_outcome
    from classifier.delivery.targets import delivery_from_spec
    from classifier.log import configure_logging, dropped, log

    started = time.monotonic()
    settings = config.engine
    configure_logging(settings, args.debug, stderr=False)
    if not args.deliver:
        # No default: under Postfix, stdout is pipe(8)'s status text, and a message
        # printed there counts as delivered (admin review, issue 15).
        raise UsageError("pipe: no --deliver: give dovecot-lda, sendmail, maildir:PATH or stdout")
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
    why = [args.daemon_not_used] if getattr(args, "daemon_not_used", "") else []
    if socket_path and not handed_over:
        from classifier.delivery.daemon_client import call_daemon, trusted_uids

        trusted = trusted_uids(settings.daemon_user)
        wait = args.daemon_timeout or settings.dns_budget + 10
        call = call_daemon(socket_path, data, hints, user, wait, trusted, why=why)
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
            ms = (time.monotonic() - started) * 1000
            if not call.report(code, recipients, ms, queue_id=args.queue_id):
                # The daemon did not log it (it stopped after answering): the line is ours.
                from classifier.logwords import delivery_line, failure_line

                if code == 0:
                    log.info("%s", delivery_line(recipients, a.summary, ms, args.queue_id))
                else:
                    said = "the delivery target failed (Postfix logs its words)"
                    log.error("%s", failure_line(recipients, code, said, args.queue_id))
            return code
    if socket_path:
        # Each cause asks for another remedy (admin review, issue 15): the log says which.
        reason = "; ".join(why) or "not asked"
        log.warning("daemon at %s not used: %s; checking in this process", socket_path, reason)
    resolver = make_resolver_for(args, config)
    # The hints travel as JSON to the daemon; in this process they are the engine's Hints.
    from classifier.envelope.trust import Hints
    from classifier.evaluate import HeldRecord, check_and_annotate

    record = HeldRecord(None)
    if config.reports:  # the store (sqlite3) is imported only when [reports] is on
        from classifier.aggregate.store import recorder

        # Report rows only once the delivery target took the message (not on exit 75).
        record = HeldRecord(recorder(config.reports, one_shot=True))  # spooled: no WAL
    note = None
    if config.learn is not None:  # the delivery record `learn` believes (issue 17)
        from classifier.aggregate.deliveries import HeldNote, delivery_recorder

        # spooled (no WAL), once the delivery target took the message
        note = HeldNote(delivery_recorder(config.learn, one_shot=True))
    outcome = check_and_annotate(
        data, settings, resolver, config.policies, Hints(**hints), user, record, note
    )
    code = deliver_outcome(
        outcome.data,
        outcome.action,
        outcome.summary,
        delivery,
        hints["sender"],
        recipients,
        started,
        queue_id=args.queue_id,
    )
    if code == 0:
        record.delivered()
        if note is not None:
            note.delivered()
    if code != 0 and dropped():
        # stderr is allowed now (delivery failed), and it is the only place left to say so.
        print(f"authsieve: {dropped()} log line(s) dropped: no log file or syslog", file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from dataclasses import replace

    from classifier.commands.options import make_resolver_for
    from classifier.delivery.daemon import serve
    from classifier.log import configure_logging

    settings = config.engine
    if os.geteuid() == 0 and settings.daemon_user:
        # The log file is opened once the daemon is daemon_user (`serve`): as root, a link
        # the mail user put in its log directory would choose the file root appends to.
        configure_logging(replace(settings, log_file=None), args.debug)
    else:
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
    resolver = make_resolver_for(args, config)
    try:
        return serve(path, config, resolver, mode, reload=lambda: _reload(args))
    except OSError as exc:
        raise UsageError(f"{path}: cannot listen: {exc.strerror}") from None


def _reload(args: argparse.Namespace) -> tuple[Config, Resolver]:
    """Gives the config and resolver `serve` was started with, read afresh (SIGHUP)."""
    from classifier.commands.options import make_resolver_for
    from classifier.config import load_config

    config = load_config(args.config)
    return config, make_resolver_for(args, config)
