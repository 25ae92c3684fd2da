"""`authsieve learn` and `authsieve suggest`: what users' moves teach the policy (issue 17).

`learn` is the program Dovecot's imapsieve script pipes a moved message to
(``sieve_pipe_bin_dir``, `sieve.imapsieve`).  It reads the whole message
(Pigeonhole wants its input read to the end), then leaves the work to a
detached child and exits 0 at once: a slow or failing `learn` never holds up
the user's IMAP MOVE.  The child has ``--timeout`` seconds, logs what went
wrong and records nothing then.

`suggest` prints the proposals (`classifier.learning.proposals`);
``--apply N`` writes proposal N into the TOML config (comments kept) and
reinstalls the global Sieve script where ``[learn] sieve_dir`` says, so that
the script Dovecot runs and the verdict authsieve writes stay equal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from classifier.config import Config, LearnConfig
from classifier.errors import EX_SOFTWARE, AuthsieveError, UsageError

if TYPE_CHECKING:
    from classifier.aggregate.deliveries import DeliveryStore
    from classifier.learning.proposals import Proposal

MAX_MESSAGE = 64 * 1024 * 1024  # what learn keeps of a message; the rest is read and dropped
DEFAULT_TIMEOUT = 20.0
# learn takes in the moved message's record first (found by name), then at most this
# much of the rest of the spool: a backlog never costs a move (README: Learning).
LEARN_TAKE_IN = 1000  # files
LEARN_TAKE_IN_SECONDS = 3.0
SUGGEST_TAKE_IN_SECONDS = 300.0  # suggest: the rest waits for the next run, which goes on


def add_learn_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser("learn", help="record a message a user moved (from Dovecot's imapsieve)")
    add_common(p)
    p.add_argument("--user", required=True, help="the IMAP user who moved it")
    p.add_argument("--from-folder", required=True, metavar="F", help="where it was")
    p.add_argument("--to-folder", required=True, metavar="T", help="where the user put it")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"give up recording after this many seconds (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("--foreground", action="store_true", help="record before exiting (tests)")
    p.add_argument("message", nargs="?", help="the message file (default: standard input)")
    p.set_defaults(handler=cmd_learn)


def add_suggest_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser("suggest", help="policy changes that users' moves argue for")
    add_common(p)
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument(
        "--user",
        metavar="ADDR",
        help="only proposals that concern this user: for their own table, and the [policy]"
        " ones their moves count towards",
    )
    p.add_argument("--apply", type=int, metavar="N", help="write proposal N into the config")
    p.add_argument(
        "--take-in",
        action="store_true",
        help="only take the spooled delivery records into the store, quietly (hourly from"
        " cron or a timer where only pipe or filter deliver and nobody moves mail)",
    )
    p.add_argument(
        "--sieve-dir",
        metavar="DIR",
        help="with --apply: reinstall the global script here ([learn] sieve_dir)",
    )
    p.set_defaults(handler=cmd_suggest)


def _read_message(path: str | None) -> bytes:
    """Gives the message, reading its source to the end (Pigeonhole wants all of it read)."""
    if path and path != "-":
        return Path(path).read_bytes()[:MAX_MESSAGE]
    stream = sys.stdin.buffer
    kept = stream.read(MAX_MESSAGE)
    while stream.read(1 << 20):
        pass
    return kept


def record_move(args: argparse.Namespace, config: Config, data: bytes) -> bool:
    """Gives whether the move was recorded (False: teaches nothing, or counted before).

    Only the delivery record our X-Authsieve names counts, never the message's
    headers: the user may have written the message into the folder (APPEND).
    """
    from classifier.aggregate.deliveries import DeliveryStore, retention_seconds
    from classifier.learning.moves import delivery_id_of, direction_of, move_of
    from classifier.learning.store import LearningStore
    from classifier.log import log, log_value
    from classifier.message import Message

    learn = _learn_of(config)
    now = int(time.time())
    what = (
        f"learn: {log_value(args.user)} moved a message {log_value(args.from_folder)}"
        f" -> {log_value(args.to_folder)}"
    )
    if not direction_of(args.from_folder, args.to_folder):
        log.info("%s: a move that teaches nothing", what)
        return False
    delivery_id = delivery_id_of(Message.parse(data), config.engine.authserv_id)
    if not delivery_id:
        log.info("%s: nothing learnt: no delivery id of ours in it", what)
        return False
    url = learn.store
    since = int(now - retention_seconds(learn))
    with DeliveryStore.open(url, timeout=2.0) as deliveries:
        # A move may come seconds after a pipe delivery that spooled its record:
        # that record first, by name, then a bounded part of the rest.
        take_in_spool(deliveries, since, delivery_id, LEARN_TAKE_IN, LEARN_TAKE_IN_SECONDS)
        record = deliveries.get(delivery_id)
        deliveries.purge(since)
    if record is None:
        log.info("%s: nothing learnt: no delivery record %s", what, delivery_id)
        return False
    move = move_of(record, args.user, args.from_folder, args.to_folder, now)
    if move is None:
        log.info(
            "%s: nothing learnt: delivery %s was to %s, not to this user",
            what, delivery_id, log_value(record.user or "(unknown)"),
        )  # fmt: skip
        return False
    with LearningStore.open(url, timeout=2.0) as store:
        added = store.record(move)
        store.purge(since)
    log.info(
        "learn: %s %s a message from %s (%s -> %s, delivery %s)%s",
        log_value(move.user), move.direction, log_value(move.record.from_address or "(no From)"),
        log_value(move.from_folder), log_value(move.to_folder), delivery_id,
        "" if added else ": counted before",
    )  # fmt: skip
    return added


def take_in_spool(
    deliveries: DeliveryStore,
    forget_before: int,
    first: str = "",
    limit: int | None = None,
    seconds: float | None = None,
) -> bool:
    """Takes in the records one-shot deliveries spooled (`first` first); gives whether
    files are left.  What fails is logged.

    Records that reached the store (another learn may have taken the spool in) are
    still found: learning goes on without the spool.
    """
    from classifier.log import log, log_value

    try:
        return deliveries.ingest_spool(forget_before, first, limit, seconds).left
    except (OSError, sqlite3.Error) as exc:  # a spool refused as a whole, a lock held too long
        log.warning("learn: spool of %s not taken in: %s", deliveries.path, log_value(str(exc)))
    return False


def _learn_of(config: Config) -> LearnConfig:
    """Gives the [learn] table; raises UsageError when there is none."""
    if config.learn is None:
        raise UsageError(f"{config.source}: learn: no [learn] table, no moves are recorded")
    return config.learn


def cmd_learn(args: argparse.Namespace, config: Config) -> int:
    """Reads the message, records the move in a detached child; gives 0 at once."""
    from classifier.log import configure_logging, log

    data = _read_message(args.message)
    if config.learn is None:
        return 0  # no [learn] table: learning is off
    if not args.foreground:
        sys.stdout.flush()
        if os.fork() != 0:
            return 0  # Dovecot waits for this process only: the MOVE goes on
        # The child: its own session, and no descriptor Dovecot waits on.
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    configure_logging(config.engine, getattr(args, "debug", False), stderr=args.foreground)
    if args.timeout > 0:
        signal.signal(signal.SIGALRM, _give_up)
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
    code = 0
    try:
        record_move(args, config, data)
    except Exception as exc:  # logged, never raised: nothing may reach the IMAP session
        if isinstance(exc, (OSError, sqlite3.Error)):
            log.error("learn: move not recorded: %s", store_problem(config.learn.store, exc))
        else:
            log.error("learn: move not recorded: %s: %s", type(exc).__name__, exc)
        code = 1 if args.foreground else 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if not args.foreground:
        logging_shutdown()
        os._exit(0)
    return code


class _TimedOut(Exception):
    """learn ran past --timeout."""


def _give_up(signum: int, frame: object) -> None:
    raise _TimedOut("gave up after --timeout")


def logging_shutdown() -> None:
    import logging

    logging.shutdown()


def _take_in_only(config: Config, debug: bool = False) -> int:
    """Takes the learning spool in (bounded) and purges old records; prints only trouble.

    What the take-in logs (a refused file) goes to log_file or syslog as for the
    other commands, not to stderr, which cron mails: stderr has the one line
    saying files are left.  The log is opened before the switch to the store's
    owner, as whoever runs the command.
    """
    from classifier.log import configure_logging

    configure_logging(config.engine, debug)
    learn = _learn_of(config)
    owner = _other_owner(learn.store)
    if owner is None:
        return _take_in(learn)
    # Root on a store of another user: nothing after the take-in needs root, so a
    # child gives up root for good (real and saved uid too) and does it.
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = EX_SOFTWARE
        try:
            groups, gid = owner_groups(owner.st_uid, owner.st_gid)
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(owner.st_uid, owner.st_uid, owner.st_uid)
            code = _take_in(learn)
        except AuthsieveError as exc:
            print(f"authsieve: {exc}", file=sys.stderr)
            code = exc.exit_code
        except BaseException as exc:
            print(f"authsieve: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            logging_shutdown()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _take_in(learn: LearnConfig) -> int:
    from classifier.aggregate.deliveries import DeliveryStore, retention_seconds
    from classifier.aggregate.store import StoreError

    url = learn.store
    since = int(time.time() - retention_seconds(learn))
    try:
        with DeliveryStore.open(url) as records:
            taken = records.ingest_spool(since, seconds=SUGGEST_TAKE_IN_SECONDS)
            records.purge(since)
    except (OSError, sqlite3.Error, StoreError) as exc:
        raise UsageError(store_problem(url, exc)) from None
    if taken.left:  # cron mails it: a backlog larger than a run takes in
        print(
            f"authsieve suggest --take-in: {taken.files} spooled file(s) taken in in"
            f" {SUGGEST_TAKE_IN_SECONDS:g} s, more left for the next run",
            file=sys.stderr,
        )
    return 0


def _proposals(config: Config) -> list[Proposal]:
    from classifier.aggregate.deliveries import DeliveryStore, retention_seconds
    from classifier.aggregate.store import StoreError
    from classifier.learning.proposals import Thresholds, propose
    from classifier.learning.store import LearningStore
    from classifier.log import log

    learn = _learn_of(config)
    url = learn.store
    thresholds = Thresholds(learn.min_messages, learn.min_users, learn.block_share)
    since = int(time.time() - retention_seconds(learn))
    try:
        with as_store_owner(url), LearningStore.open(url) as store:
            store.purge(since)
            moves = list(store.moves())
        with as_store_owner(url), DeliveryStore.open(url) as records:
            # deliveries pipe processes spooled; a backlog left is taken in by the next run
            if take_in_spool(records, since, seconds=SUGGEST_TAKE_IN_SECONDS):
                log.warning(
                    "suggest: the learning spool is not empty after %g s: counts leave out"
                    " deliveries still spooled (run suggest again, or hourly: README)",
                    SUGGEST_TAKE_IN_SECONDS,
                )
            records.purge(since)
            deliveries = list(records.records())
    except (OSError, sqlite3.Error, StoreError) as exc:
        raise UsageError(store_problem(url, exc)) from None
    return propose(moves, config.policies, thresholds, deliveries)


def store_problem(url: str, exc: BaseException) -> str:
    """Gives one line naming the store file, who we are, what failed and what to run."""
    import pwd

    from classifier.aggregate.spool import SpoolRefused
    from classifier.aggregate.store import sqlite_path

    try:
        path = sqlite_path(url)
    except Exception:  # a URL that names no file: the message says so
        return f"learn store {url}: {type(exc).__name__}: {exc}"
    if isinstance(exc, SpoolRefused):  # its message says what is wrong: no install advice
        return f"learn store {path}: {exc}"
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = f"uid {os.geteuid()}"
    return (
        f"learn store {path}: {type(exc).__name__}: {exc} (running as {me}); the directory"
        f" {path.parent} must be writable by the mail user that delivers and runs learn:"
        f" install -d -o vmail -g vmail -m 750 {path.parent}"
    )


@contextlib.contextmanager
def as_store_owner(url: str) -> Iterator[None]:
    """Runs the block as the owner of the store's directory when root runs it.

    The directory belongs to the mail user, who runs `learn`: root opening the
    database there would create its -wal and -shm files as root (and lock the
    mail user out), and would follow a link the mail user planted under those
    names.  As that user, root can do only what the user could.
    """
    st = _other_owner(url)
    if st is None:
        yield
        return
    groups, gid = owner_groups(st.st_uid, st.st_gid)
    saved = (os.getgroups(), os.getegid())
    # Groups first, then gid, then uid: only root may set the first two.  Root's
    # own groups (0 among them) go, or a file the user links to root's could be
    # opened through group bits.  Real and saved uid stay 0 to come back:
    # suggest --apply and the quarantine digest write as root afterwards.
    os.setgroups(groups)
    os.setegid(gid)
    os.seteuid(st.st_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(saved[1])
        os.setgroups(saved[0])


def _other_owner(url: str) -> os.stat_result | None:
    """Gives the stat of the store's directory when root runs us and another user owns it."""
    from classifier.aggregate.store import StoreError, sqlite_path

    if os.geteuid() != 0:
        return None
    try:
        st = sqlite_path(url).parent.stat()
    except (OSError, StoreError):  # none yet, or no file: opening it says so
        return None
    return None if st.st_uid == 0 else st


def owner_groups(uid: int, fallback_gid: int) -> tuple[list[int], int]:
    """Gives the user's groups (primary first) and primary gid; the directory's gid for none."""
    import pwd

    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return [fallback_gid], fallback_gid
    return [pw.pw_gid, *(g for g in os.getgrouplist(pw.pw_name, pw.pw_gid) if g != pw.pw_gid)], (
        pw.pw_gid
    )


def open_proposals(config: Config) -> list[Proposal]:
    """Gives the proposals, or [] when learning is off (for the quarantine digest)."""
    return _proposals(config) if config.learn else []


def cmd_suggest(args: argparse.Namespace, config: Config) -> int:
    from classifier.learning.proposals import render
    from classifier.policies import normalize_user

    if args.take_in:
        return _take_in_only(config, getattr(args, "debug", False))
    proposals = _proposals(config)
    numbered = list(enumerate(proposals, 1))
    if args.user:
        wanted = normalize_user(args.user)
        numbered = [(n, p) for n, p in numbered if p.user == wanted or wanted in p.users]
    if args.apply is not None:
        if not 1 <= args.apply <= len(proposals):
            raise UsageError(f"--apply {args.apply}: no such proposal (there are {len(proposals)})")
        return _apply(args, config, proposals[args.apply - 1])
    if args.json:
        doc = [{"number": n, **p.to_dict()} for n, p in numbered]
        print(json.dumps({"proposals": doc}, indent=2))
        return 0
    print(render(numbered), end="")  # the global numbers, which --apply takes
    return 0


def _apply(args: argparse.Namespace, config: Config, proposal: Proposal) -> int:
    """Writes the proposal into the config, checked by the real loader, then reinstalls Sieve.

    A text the loader rejects is never written (every delivery would defer on it); a
    reinstall that fails puts the old text back, so that config and script stay equal.
    """
    from classifier.log import log_value
    from classifier.mailstore.configedit import edit_config, set_policy_action

    path = Path(args.config or config.source)
    if not path.is_file():
        raise UsageError(f"{path}: no config file to write the change into (--config)")
    old = path.read_text(encoding="utf-8")
    if proposal.kind == "relax_rule":
        was = config.policies.default.action_for(proposal.key)
        said = f"set to {proposal.value} (was {was})"
    else:
        said = f"{proposal.value} added"

    def change(text: str) -> str:
        if proposal.kind == "relax_rule":
            return _checked(path, set_policy_action(text, proposal.key, proposal.value))
        return _checked(path, _add_entry(text, config, proposal))

    changed = edit_config(path, change)
    where = f"{path}: [{log_value(proposal.table)}] {proposal.key}"
    if not changed:
        print(f"{where}: {log_value(proposal.value)} already there")
        return 0
    print(f"{where}: {log_value(said)}")
    try:
        return _reinstall(args, config, path)
    except Exception as exc:
        edit_config(path, lambda t: old)
        print(
            f"Sieve reinstall failed ({type(exc).__name__}: {log_value(str(exc))}):"
            f" {path} restored, proposal not applied"
        )
        return 1


def _checked(path: Path, text: str) -> str:
    """Gives the text when the config loader takes it; raises UsageError naming why not."""
    import tomllib

    from classifier.config import config_from_dict
    from classifier.errors import AuthsieveError

    try:
        config_from_dict(tomllib.loads(text), str(path))
    except (tomllib.TOMLDecodeError, AuthsieveError) as exc:
        raise UsageError(f"{path}: not changed: the change would not load: {exc}") from None
    return text


def _add_entry(text: str, config: Config, proposal: Proposal) -> str:
    """Gives the config text with the proposal's list entry added where it takes effect.

    A user's list replaces the global one (`classifier.policies`): a new user
    list starts with the global entries, and a global entry goes into every user
    table that has its own list too, or it would not reach those users.
    """
    import tomllib

    from classifier.mailstore.configedit import add_list_entry

    if proposal.user:
        inherited = tuple(getattr(config.policies.default, proposal.key))
        return add_list_entry(text, proposal.user, proposal.key, proposal.value, inherited)
    users = tomllib.loads(text).get("users", {})  # which user tables have a list of their own
    text = add_list_entry(text, "", proposal.key, proposal.value)
    for user, table in sorted(users.items()):
        if isinstance(table, dict) and proposal.key in table:
            text = add_list_entry(text, user, proposal.key, proposal.value)
    return text


def _reinstall(args: argparse.Namespace, config: Config, path: Path) -> int:
    """Reinstalls the global script from the edited config; gives the exit code."""
    from classifier.config import load_config
    from sieve.commands import script_for
    from sieve.filterscript import compile_config
    from sieve.install import SCRIPT_NAME, install_to_dir
    from sieve.pigeonhole import dovecot_version

    where = args.sieve_dir or (config.learn.sieve_dir if config.learn else None)
    if not where:
        print(
            "no [learn] sieve_dir and no --sieve-dir: reinstall the Sieve script yourself"
            " (`authsieve sieve install --dir DIR`)"
        )
        return 0
    directory = Path(where)
    installed = directory / f"{SCRIPT_NAME}.sieve"
    # The same kind of script as the one there: the LMTP filter's, or pipe mode's.
    with_filter = installed.is_file() and "vnd.dovecot.filter" in installed.read_text()
    script = script_for(load_config(path), None, with_filter)
    extra = compile_config(dovecot_version()) if with_filter else ""
    result = install_to_dir(script, directory, extra_config=extra)
    print(f"installed {result.target}")
    return 0
