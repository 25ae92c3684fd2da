"""`authsieve pipe --daemon SOCKET`: hand the message to `authsieve serve`, deliver its answer.

Postfix starts one pipe process per delivery, so this path must cost little
more than starting Python: it reads no config (``--daemon`` names the
socket), parses the arguments Postfix's master.cf gives without argparse,
and imports only builtin modules and the delivery target (no checks, no
dnspython, no ``re``).  The daemon logs the delivery line this process
reports back to it.

Anything else (another command line, ``--help``, a daemon that is down,
slow, killed or not trusted) gives `fall_back`, and `classifier.commands.main` does
what it always did, in-process, with the message already read.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # typing costs a pipe process milliseconds; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# The options of `authsieve pipe` (classifier.commands.main); tests/test_handover.py keeps
# them in step.
VALUE_OPTIONS = frozenset(
    {
        "--config", "--dns-server", "--dns-zone", "--sender", "--recipient", "--client-address",
        "--client-helo", "--client-hostname", "--sasl-username", "--user",
        "--original-recipient", "--deliver", "--lda-path", "--lda-arg", "--daemon",
        "--daemon-timeout", "--sendmail-path", "--queue-id",
    }
)  # fmt: skip
LIST_OPTIONS = frozenset({"--recipient", "--lda-arg"})
# The fast path reads no config, so not dns_budget either: a daemon that has not answered
# by then (stopped with SIGSTOP, overloaded) is given up on and the message checked here.
# The default dns_budget (20 s) fits well inside; --daemon-timeout for a larger budget.
FAST_PATH_WAIT = 60.0
FLAG_OPTIONS = frozenset({"--debug"})
# The defaults of `authsieve pipe`'s options, for its parser and for this module alike
# (--deliver has none: without it, nothing would be delivered under Postfix).
DEFAULT_LDA_PATH = "/usr/lib/dovecot/dovecot-lda"
DEFAULT_SENDMAIL_PATH = "/usr/sbin/sendmail"


class Handover:
    """What came of trying the daemon: an exit code, or the message read (None: stdin unread).

    `why` says why the daemon was not used, when it was asked ("" otherwise).
    """

    __slots__ = ("code", "data", "why")

    def __init__(self, code: int | None, data: bytes | None = None, why: str = "") -> None:
        self.code, self.data, self.why = code, data, why


def parse_pipe_args(argv: Sequence[str]) -> dict[str, object] | None:
    """Gives the options as argparse would, or None for anything but plain ``--name value``."""
    options: dict[str, object] = {name: [] for name in LIST_OPTIONS}
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in FLAG_OPTIONS and not eq:
            options[name] = True
            continue
        if name not in VALUE_OPTIONS:
            return None
        if not eq:
            value = next(args, None)  # type: ignore[assignment]
            # argparse reads "-x" as an option, not a value: let it say so.
            if value is None or value.startswith("-"):
                return None
        if name in LIST_OPTIONS:
            options[name].append(value)  # type: ignore[attr-defined]
        else:
            options[name] = value
    return options


def macro(value: str | None) -> str | None:
    """Gives a pipe(8) macro value, or None when Postfix had none (empty or "unknown")."""
    if value is None or value.strip() in ("", "unknown", "[UNAVAILABLE]"):
        return None
    return value.strip()


def pipe_hints(
    sender: str | None,
    recipients: list[str],
    client_address: str | None,
    client_helo: str | None,
    client_hostname: str | None,
    sasl_username: str | None,
) -> dict[str, str | None]:
    """Gives the hints of pipe(8)'s macros as they travel to the daemon (JSON)."""
    return {
        # pipe(8) spells the null sender MAILER-DAEMON unless the service sets null_sender=.
        "sender": "" if (sender or "").strip().upper() == "MAILER-DAEMON" else sender,
        "recipient": recipients[0] if recipients else None,
        "client_address": macro(client_address),
        "client_helo": macro(client_helo),
        "client_hostname": macro(client_hostname),
        # Empty is Postfix's "no login", not a missing macro.
        "sasl_username": None if sasl_username is None else sasl_username.strip(),
    }


def hand_over(argv: Sequence[str]) -> Handover:
    """Gives the exit code of a message the daemon checked and that was then delivered.

    Gives no code (and the message, once read) whenever the daemon cannot be
    used: the caller then checks in this process, so the message is still
    delivered exactly once.
    """
    started = time.monotonic()
    options = parse_pipe_args(argv)
    if options is None or not options.get("--daemon") or not options.get("--deliver"):
        return Handover(None)  # the full path checks, or says what is wrong
    from classifier.delivery.daemon_client import call_daemon
    from classifier.delivery.targets import DeliveryError, delivery_from_spec
    from classifier.errors import UsageError
    from classifier.logwords import delivery_line, failure_line

    def opt(name: str) -> str | None:
        value = options.get(name)
        return value if isinstance(value, str) else None

    recipients: list[str] = list(options["--recipient"])  # type: ignore[call-overload]
    user = macro(opt("--user"))
    queue = macro(opt("--queue-id"))
    try:
        delivery = delivery_from_spec(
            opt("--deliver") or "",
            opt("--lda-path") or DEFAULT_LDA_PATH,
            opt("--sendmail-path") or DEFAULT_SENDMAIL_PATH,
            tuple(options["--lda-arg"]),  # type: ignore[arg-type]
            user,
            macro(opt("--original-recipient")),
        )
    except UsageError:
        return Handover(None)  # the full path says what is wrong, where it is logged
    data = sys.stdin.buffer.read()
    hints = pipe_hints(
        opt("--sender"),
        recipients,
        opt("--client-address"),
        opt("--client-helo"),
        opt("--client-hostname"),
        opt("--sasl-username"),
    )
    # The mailbox's owner decides: you+news@ is you@ when the delimiter is "+".
    try:
        wait = float(opt("--daemon-timeout") or FAST_PATH_WAIT)
    except ValueError:
        return Handover(None, data)  # argparse says what is wrong
    # What is worth saying goes to the full path's log line, never to stderr: pipe(8)
    # puts a command's output into the bounce or defer text.
    why: list[str] = []
    call = call_daemon(
        str(opt("--daemon")),
        data,
        hints,
        user or hints["recipient"],
        wait,
        trusted=lambda: _trusted(opt, why.append),
        warn=lambda _said: None,  # the same reason reaches `why`
        why=why,
    )
    if call is None:
        return Handover(None, data, "; ".join(why))
    answer = call.answer
    sender = (hints["sender"] or "").strip().strip("<>").strip()
    try:
        delivery.deliver(answer.data, sender, recipients, answer.action)
    except DeliveryError as exc:
        print(f"authsieve: delivery failed: {exc}", file=sys.stderr)
        if not call.report(exc.exit_code, recipients, 0.0, str(exc), queue):
            _log_here(options, failure_line(recipients, exc.exit_code, exc, queue), error=True)
        return Handover(exc.exit_code, data)
    ms = (time.monotonic() - started) * 1000
    if not call.report(0, recipients, ms, queue_id=queue):
        # The daemon went away after answering: the delivery line is ours to write.
        _log_here(options, delivery_line(recipients, answer.summary, ms, queue))
    return Handover(0, data)


def _trusted(opt: Callable[[str], str | None], warn: Callable[[str], object]) -> frozenset[int]:
    """Gives the uids trusted as the daemon by the config's daemon_user (read only for this)."""
    from classifier.config import ConfigError, load_config
    from classifier.delivery.daemon_client import trusted_uids

    try:
        return trusted_uids(load_config(opt("--config")).engine.daemon_user, warn)
    except ConfigError:
        return trusted_uids(None, warn)


def _log_here(options: dict[str, object], line: str, error: bool = False) -> None:
    """Logs one line as the in-process path would (config read only now, for its log_file)."""
    from classifier.config import ConfigError, load_config
    from classifier.log import configure_logging, log

    config = options.get("--config")
    try:
        configure_logging(load_config(config if isinstance(config, str) else None).engine)
    except ConfigError:
        return
    (log.error if error else log.info)("%s", line)
