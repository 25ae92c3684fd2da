"""`authsieve filter`: the program Pigeonhole's ``filter`` command runs inside Dovecot's delivery.

A server that delivers with ``virtual_transport = lmtp:…`` keeps its Postfix
as it is: the global ``sieve_before`` script (``authsieve sieve generate
--filter``) filters each message through this program (the extprograms
plugin's ``vnd.dovecot.filter``), whose standard output *replaces* the message
for every later rule, and then files on the X-Authsieve header as pipe mode's
script does.  The client, HELO and envelope sender come from the Received
headers; Sieve gives the envelope (``RECIPIENT SENDER`` after ``--``).

Failure rule: the program never loses or holds mail.  It always reads the
whole message, always writes a whole message and always exits 0: any error
(a bad config, an exception, a daemon that does not answer) gives the
original message under the failure header of `classifier.evaluate.failed_annotation`.
When the config cannot be read, the header takes the authserv-id ``sieve
install --filter-dir`` wrote into the program (``--authserv-id``) and names the
recipient's mailbox (``user=``), so the script's rules still read it and a
``[users]`` table's ``internal_error`` files it.
It must also finish before Pigeonhole's ``sieve_filter_exec_timeout`` (10 s
by default): Pigeonhole 0.5.19 kills a program that overruns and then aborts
the LMTP process ("Panic: output stream … is missing error handling"), so the
LMTP client gets no answer and the message waits in Postfix's queue.  The
failure answer is therefore written at ``--deadline`` (default 8 s) whatever
the checks are doing: they run in a forked child, which this process kills
at the deadline (a thread could not interrupt C code holding the GIL, such
as a regex backtracking for seconds).  Nothing goes to stdout but the
message; stderr, which Dovecot logs as an error, gets one line when the
config cannot be read (the log file it names is then unknown).

The hand-over: when the program's command line names the daemon (``--daemon``,
written by ``sieve install --filter-dir`` from ``daemon_socket``), the message
goes to `authsieve serve` before anything else is imported: no config read
(no tomllib), no logging, no engine or dnspython; only the standard library's
threading (for the watchdog), builtin modules and
`classifier.delivery.daemon_client`, as pipe mode's hand-over
(`classifier.delivery.handover`).  It waits for the daemon until one second
before the deadline; a daemon that is down, slow or not trusted leaves the
message to the in-process path (config, logging, checks, in the child) for
what is left: a watchdog thread covers the wait on the socket, the child's
deadline the rest, so the failure rule holds as before.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    import argparse
    import threading
    from collections.abc import Callable, Sequence
    from typing import BinaryIO

    from classifier.evaluate import Annotated

# Under Pigeonhole's default sieve_filter_exec_timeout (10 s), with room for Python's start.
DEFAULT_DEADLINE = 8.0
# What the checks need after their last DNS answer (DKIM and ARC arithmetic, the headers):
# the DNS budget ends this long before the deadline, so slow DNS gives temperror, not
# the watchdog's internal error.
DNS_MARGIN = 1.0
VALUE_OPTIONS = (
    "--config",
    "--deadline",
    "--daemon",
    "--dns-server",
    "--dns-zone",
    "--recipient-delimiter",
    "--authserv-id",
)


HELP = """\
usage: authsieve filter [--config FILE] [--daemon SOCKET] [--deadline S] [--dns-server H:P]
                        [--dns-zone FILE] [--recipient-delimiter C] [--authserv-id ID]
                        -- RECIPIENT SENDER < message

The program Pigeonhole's vnd.dovecot.filter runs (Dovecot LMTP, README "Dovecot
LMTP"): reads a message, writes it checked and annotated, always exits 0.  On
any error it writes the original under an X-Authsieve failure header.

  --config FILE            authsieve's config (default /etc/authsieve/config.toml)
  --daemon SOCKET          hand the message to `authsieve serve` first
  --deadline S             answer within S seconds (default 8; under
                           Dovecot's sieve_filter_exec_timeout)
  --dns-server H:P         DNS server (default [classifier] dns_server)
  --dns-zone FILE          answer DNS from a zone file (tests, demos)
  --recipient-delimiter C  cut RECIPIENT's detail at C (default [classifier]
                           recipient_delimiter, "+")
  --authserv-id ID         the failure header's id when the config cannot be read
"""


def add_filter_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_common: object = None,
) -> None:
    """Lists `filter` in ``authsieve --help``; main runs the command itself, without argparse."""
    import argparse

    p = subparsers.add_parser(
        "filter", help="Dovecot LMTP: Pigeonhole's vnd.dovecot.filter program", add_help=False
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    # Reached only when options come before the word "filter": the same program.
    p.set_defaults(handler=lambda args, config: run_filter(args.rest))


class FilterArgs:
    """The filter's command line: options, then ``--``, then RECIPIENT and SENDER from Sieve."""

    __slots__ = ("deadline", "help", "options", "problems", "recipient", "sender")

    def __init__(self, options: dict[str, str], recipient: str | None, sender: str | None):
        self.options, self.recipient, self.sender = options, recipient, sender
        self.help = False
        self.problems: list[str] = []  # options it does not know or that lack a value
        try:
            deadline = float(options.get("--deadline", DEFAULT_DEADLINE))
        except ValueError:
            deadline = DEFAULT_DEADLINE
        self.deadline = deadline if 0 < deadline <= 3600 else DEFAULT_DEADLINE


def parse_filter_args(argv: Sequence[str]) -> FilterArgs:
    """Gives the options given before ``--`` and the envelope after it; never raises.

    Everything after ``--`` (or after the first word that is not an option) is
    envelope, however it looks: MAIL FROM is the sender's to choose, and
    ``--config=/tmp/x`` as a sender must stay a sender.  Unknown options are noted
    in ``problems``: the message is still answered (under the failure header).
    """
    options: dict[str, str] = {}
    rest: list[str] = []
    args = list(argv)
    problems: list[str] = []
    wants_help = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest = args[i + 1 :]
            break
        if arg in ("-h", "--help"):
            wants_help = True
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if not name.startswith("--"):
            rest = args[i:]
            break
        if name not in VALUE_OPTIONS:
            problems.append(f"unknown option {name}")
        elif not eq:
            if i + 1 >= len(args):
                problems.append(f"{name} needs a value")
            else:
                i += 1
                value = args[i]
        if name in VALUE_OPTIONS:
            options[name] = value
        i += 1
    recipient = rest[0] if rest and rest[0] else None
    sender = rest[1] if len(rest) > 1 else None
    parsed = FilterArgs(options, recipient, sender)
    parsed.help, parsed.problems = wants_help, problems
    return parsed


class Answer:
    """The one answer this process writes, whichever of the checks and the watchdog comes first."""

    def __init__(self, out: BinaryIO, lock: threading.Lock) -> None:
        self.out = out
        self.lock = lock
        self.written = False

    def write(self, data: bytes) -> bool:
        """Writes data as the answer unless one was written; gives whether this one was."""
        with self.lock:
            if self.written:
                return False
            self.written = True
            try:
                self.out.write(data)
                self.out.flush()
            except OSError:
                pass  # Dovecot went away: nothing left to tell it
            return True


def run_filter(
    argv: Sequence[str], stdin: BinaryIO | None = None, stdout: BinaryIO | None = None
) -> int:
    """Writes the message checked and annotated, or original + failure header; gives 0."""
    import threading

    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    started = time.monotonic()
    args = parse_filter_args(argv)
    if args.help:  # a person at a terminal: Dovecot's argv always has "--" first
        stdout.write(HELP.encode())
        stdout.flush()
        return 0
    try:
        data = stdin.read()
    except Exception:
        return 0  # nothing read: Sieve's filter fails and the script adds the header
    if args.problems:
        # A wrong command line never holds mail: the original, under the failure header.
        Answer(stdout, threading.Lock()).write(_usage_fallback(data, args))
        return 0
    answer = Answer(stdout, threading.Lock())
    # The hand-over's warnings wait for the in-process path's logging: unconfigured,
    # Python's logging would write them to stderr, which Dovecot logs as errors.
    said: list[str] = []
    why: list[str] = []  # why the daemon was not used, for the in-process path's log line
    state: dict[str, object] = {"said": said, "why": why}

    def give_up() -> None:
        if answer.write(_fallback(data, args, state, "timeout: checks took too long")):
            _log(state, f"filter: deadline {args.deadline:g} s passed; delivered unchecked")
            os._exit(0)

    # One watchdog for the hand-over and the checks alike.
    timer = threading.Timer(max(0.1, args.deadline - (time.monotonic() - started)), give_up)
    timer.daemon = True
    timer.start()
    result = None
    if args.options.get("--daemon"):
        try:
            result = hand_over(data, args, started, said.append, why)
        except Exception as exc:
            why.append(f"internal error {type(exc).__name__}")
            result = None  # whatever broke, the in-process path still answers
    # The checks run in a child the deadline can kill: a thread cannot interrupt C code
    # that holds the GIL (a regex backtracking for seconds), nor a process stopped whole.
    timer.cancel()
    timer.join()
    if result is None:
        result = _in_child(data, args, state, started)
    answer.write(result)
    return 0


def _in_child(data: bytes, args: FilterArgs, state: dict[str, object], started: float) -> bytes:
    """Gives what `_in_process` gives, computed in a forked child; at the deadline, the fallback.

    The child hands its answer over a pipe and exits 0 only once all of it is
    written: a child that dies, or is killed at the deadline, gives the
    original under the failure header.  Nothing of the child reaches stdout.
    """
    import select
    import signal

    try:
        r, w = os.pipe()
        pid = os.fork()
    except OSError:
        return _in_process(data, args, state, started)  # no child to be had: the checks here
    if pid == 0:
        code = 1
        try:
            os.close(r)
            view = memoryview(_in_process(data, args, state, started))
            while view:
                view = view[os.write(w, view) :]
            code = 0
        finally:
            os._exit(code)  # no atexit, no flush of the parent's buffers
    os.close(w)
    chunks = []
    end = started + args.deadline
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)  # a stopped child too
                os.waitpid(pid, 0)
                return _timed_out(data, args, state)
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0 or not chunks:
        return _fallback(data, args, state, "internal error: the checks ended without an answer")
    return b"".join(chunks)


def _timed_out(data: bytes, args: FilterArgs, state: dict[str, object]) -> bytes:
    """Gives the timeout's fallback, with the config's authserv-id and policies, and logs it."""
    try:  # the child loaded these for itself: the parent reads the config only now
        from classifier.config import load_config
        from classifier.log import configure_logging

        config = load_config(args.options.get("--config"))
        state["config"] = config
        configure_logging(config.engine, False, stderr=False)
        state["logging"] = True
    except Exception:
        pass  # the fallback does without: the built-in authserv-id and policy
    _log(state, f"filter: deadline {args.deadline:g} s passed; delivered unchecked")
    return _fallback(data, args, state, "timeout: checks took too long")


def _usage_fallback(data: bytes, args: FilterArgs) -> bytes:
    """Gives the original under the failure header for a wrong command line, said on stderr."""
    said = "; ".join(args.problems)
    _stderr(f"authsieve filter: {said} (authsieve filter --help)")
    state: dict[str, object] = {}
    try:  # the config's authserv-id and the recipient's table, if it can be read
        from classifier.config import load_config

        state["config"] = load_config(args.options.get("--config"))
    except Exception:
        pass
    return _fallback(data, args, state, f"usage: {said}")


def hand_over(
    data: bytes,
    args: FilterArgs,
    started: float,
    warn: Callable[[str], object],
    why: list[str] | None = None,
) -> bytes | None:
    """Gives the message as the daemon named by ``--daemon`` annotated it, or None.

    None when the daemon is down, slow, untrusted or answers nonsense: the caller
    checks in-process then, and `why` holds the reason.  Reads no config unless the
    daemon's user must be checked against ``daemon_user`` (it runs as neither root
    nor this user).
    """
    from classifier.delivery.daemon_client import call_daemon
    from classifier.delivery.handover import macro

    # Leave a second of the deadline for checking here should the daemon not answer.
    wait = args.deadline - (time.monotonic() - started) - 1.0
    if wait <= 0.1:
        if why is not None:
            why.append(f"no time left to ask it within --deadline {args.deadline:g}")
        return None
    recipient = macro(args.recipient)
    hints = {"sender": args.sender, "recipient": recipient}
    config = args.options.get("--config")
    call = call_daemon(
        args.options["--daemon"],
        data,
        hints,
        _owner(recipient, args.options.get("--recipient-delimiter", "+")),
        wait,
        lambda: _trusted(config, warn),
        warn,
        why,
        "--deadline",
    )
    if call is None:
        return None
    call.report(0, [recipient or "-"], (time.monotonic() - started) * 1000)
    return call.answer.data


def _trusted(config: str | None, warn: Callable[[str], object]) -> frozenset[int]:
    """Gives the uids trusted as the daemon: root, this user and the config's daemon_user."""
    from classifier.config import ConfigError, load_config
    from classifier.delivery.daemon_client import trusted_uids

    try:
        return trusted_uids(load_config(config).engine.daemon_user, warn)
    except ConfigError:
        return trusted_uids(None, warn)


def _in_process(data: bytes, args: FilterArgs, state: dict[str, object], started: float) -> bytes:
    """Gives the message checked here (or by a daemon named only in the config), or the fallback."""
    try:
        return _check(data, args, state, started).data
    except Exception as exc:
        from classifier.config import ConfigError

        if "config" not in state and isinstance(exc, ConfigError):
            # No log to write to: Dovecot logs the program's stderr (one line).
            _stderr(f"authsieve filter: {exc}; delivered under internal_error")
        _log(state, f"filter: internal error {type(exc).__name__}: {exc}", error=True)
        return _fallback(data, args, state, f"internal error: {type(exc).__name__}")


def _check(data: bytes, args: FilterArgs, state: dict[str, object], started: float) -> Annotated:
    """Gives the outcome from the daemon when configured and answering, else from this process."""
    from classifier.aggregate.deliveries import delivery_recorder
    from classifier.aggregate.store import recorder
    from classifier.config import load_config
    from classifier.delivery.handover import macro
    from classifier.envelope.trust import Hints
    from classifier.evaluate import Annotated, check_and_annotate
    from classifier.log import configure_logging, log

    config = load_config(args.options.get("--config"))
    state["config"] = config
    settings = config.engine
    configure_logging(settings, False, stderr=False)
    state["logging"] = True
    for line in state.get("said") or ():  # type: ignore[attr-defined]
        log.warning("filter: %s", line)
    recipient = macro(args.recipient)
    sender = args.sender
    hints: dict[str, str | None] = {"sender": sender, "recipient": recipient}
    # The mailbox's owner decides: bob+news@ is bob@ (Postfix gives pipe mode ${user}@${domain}).
    delimiter = args.options.get("--recipient-delimiter", settings.recipient_delimiter)
    recipient = _owner(recipient, delimiter)
    if args.options.get("--daemon"):
        # Each cause asks for another remedy (start it, remove a stale file, more connections).
        why = state.get("why")
        reason = "; ".join(why) if isinstance(why, list) and why else "not asked"
        log.warning(
            "filter: daemon at %s not used: %s; checking in this process",
            args.options["--daemon"],
            reason,
        )
    socket_path = None if args.options.get("--daemon") else settings.daemon_socket
    if socket_path:
        from classifier.delivery.daemon_client import call_daemon, trusted_uids

        # Leave a second of the deadline for checking here should the daemon not answer.
        wait = args.deadline - (time.monotonic() - started) - 1.0
        call = None
        reasons = [f"no time left to ask it within --deadline {args.deadline:g}"]
        if wait > 0.1:
            reasons = []
            trusted = trusted_uids(settings.daemon_user)
            call = call_daemon(
                socket_path,
                data,
                hints,
                recipient,
                wait,
                trusted,
                why=reasons,
                wait_option="--deadline",
            )
        if call is not None:
            a = call.answer
            ms = (time.monotonic() - started) * 1000
            if not call.report(0, [recipient or "-"], ms):
                from classifier.logwords import delivery_line

                # The daemon stopped after answering: the line is ours to write.
                log.info("%s", delivery_line([recipient or "-"], a.summary, ms))
            return Annotated(a.data, a.action, a.summary, a.error)
        log.warning(
            "filter: daemon at %s not used: %s; checking in this process",
            socket_path,
            "; ".join(reasons) or "not asked",
        )
    from dataclasses import replace

    from classifier.lookup.resolver import make_resolver

    left = args.deadline - (time.monotonic() - started) - DNS_MARGIN
    settings = replace(settings, dns_budget=max(0.1, min(settings.dns_budget, left)))
    resolver = make_resolver(
        dns_server=args.options.get("--dns-server") or settings.dns_server,
        dns_zone=args.options.get("--dns-zone") or settings.dns_zone,
        timeout=settings.dns_timeout,
    )
    outcome = check_and_annotate(
        data,
        settings,
        resolver,
        config.policies,
        Hints(**hints),
        recipient,
        recorder(config.reports, one_shot=True),
        delivery_recorder(config.learn, one_shot=True),
    )
    log.info(
        "filtered to=%s %s (%.0f ms)",
        recipient or "-",
        outcome.summary,
        (time.monotonic() - started) * 1000,
    )
    return outcome


def _fallback(data: bytes, args: FilterArgs, state: dict[str, object], error: str) -> bytes:
    """Gives the original message under the failure header; the header alone may not fail."""
    from classifier.config import Config
    from classifier.evaluate import failed_annotation

    config = state.get("config")
    try:
        delimiter = args.options.get("--recipient-delimiter")
        if delimiter is None:
            delimiter = config.engine.recipient_delimiter if isinstance(config, Config) else "+"
        user = _owner(args.recipient, delimiter) or ""
        if isinstance(config, Config):
            authserv_id, policies = config.engine.authserv_id, config.policies
        else:  # the config could not be loaded: the built-in policy, named for the mailbox
            from classifier.config import default_authserv_id
            from classifier.policies import Policies, Policy

            authserv_id = args.options.get("--authserv-id") or default_authserv_id()
            # user= picks the script's [users] block, whose internal_error then files it.
            policies = Policies(Policy(), ((user, Policy(user=user)),))
        return failed_annotation(data, authserv_id, policies, user, error).data
    except Exception:
        return data  # Sieve's rules then find no header of ours: the implicit keep


def _stderr(line: str) -> None:
    try:
        sys.stderr.write(line.replace("\n", " ") + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def _owner(recipient: str | None, delimiter: str) -> str | None:
    """Gives the user whose policy applies to recipient (its detail cut off), None for none."""
    from classifier.names import mailbox_owner

    return mailbox_owner(recipient, delimiter) if recipient else None


def _log(state: dict[str, object], line: str, error: bool = False) -> None:
    if not state.get("logging"):
        return
    try:
        from classifier.log import log

        (log.error if error else log.warning)("%s", line)
    except Exception:
        pass
