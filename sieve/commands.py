"""`authsieve sieve generate|install`: the command-line side of the Sieve scripts.

`classifier.commands.main` calls `add_sieve_parser(subparsers, add_common)`; each
subcommand stores its handler as ``args.handler``, called with
``(args, config)`` and returning the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from classifier.config import Config
from classifier.errors import EX_USAGE, UsageError
from classifier.policies import Policy, normalize_user
from sieve.filterscript import (
    DEFAULT_DEADLINE,
    PROGRAM,
    generate_filter_script,
    program_text,
)
from sieve.filterscript import compile_config as filter_compile_config
from sieve.generate import generate_global_script, generate_script
from sieve.imapsieve import (
    LEARN_PROGRAM,
    LEARN_SCRIPT,
    compile_config,
    generate_learn_script,
    learn_program_text,
)
from sieve.install import (
    SCRIPT_NAME,
    InstallError,
    install_managesieve,
    install_program,
    install_to_dir,
    parse_hostport,
    read_password_file,
)
from sieve.pigeonhole import dovecot_version

EXEC_TIMEOUT = 10.0  # Pigeonhole's default sieve_filter_exec_timeout


def add_sieve_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_common: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """Gives the ``sieve`` parser, added to subparsers with its generate and install commands."""
    sieve = subparsers.add_parser("sieve", help="generate or install the Sieve filing script")
    sub = sieve.add_subparsers(dest="sieve_command", required=True, metavar="SUBCOMMAND")

    gen = sub.add_parser(
        "generate", help="print the global Sieve script (every user's table) or a user's own"
    )
    gen.add_argument("--user", metavar="ADDR", help="use this user's [users] overrides")
    gen.add_argument(
        "--filter", action="store_true", help="Dovecot LMTP: run authsieve-filter first (global)"
    )
    gen.set_defaults(handler=cmd_sieve_generate)

    inst = sub.add_parser("install", help="write the script to a directory or upload it")
    where = inst.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", metavar="DIR", help="write DIR/NAME.sieve atomically, then sievec")
    where.add_argument(
        "--managesieve", metavar="HOST:PORT", help="upload and activate over ManageSieve"
    )
    where.add_argument(
        "--filter-dir",
        metavar="DIR",
        help="write the authsieve-filter program (sieve_filter_bin_dir)",
    )
    where.add_argument(
        "--imapsieve",
        metavar="DIR",
        help="write the imapsieve script that reports users' moves to `authsieve learn`",
    )
    where.add_argument(
        "--pipe-dir",
        metavar="DIR",
        help="write the authsieve-learn program (sieve_pipe_bin_dir)",
    )
    inst.add_argument(
        "--filter", action="store_true", help="with --dir: the script that runs authsieve-filter"
    )
    inst.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        help=f"--filter-dir: answer within this many seconds (default {DEFAULT_DEADLINE:g})",
    )
    inst.add_argument("--user", metavar="ADDR", help="whose policy (and ManageSieve login)")
    inst.add_argument("--login", metavar="NAME", help="ManageSieve login if not --user")
    inst.add_argument("--password-file", metavar="FILE", help="ManageSieve password, first line")
    inst.add_argument("--starttls", action="store_true", help="ManageSieve: STARTTLS first")
    inst.add_argument("--name", default=SCRIPT_NAME, help=f"script name (default {SCRIPT_NAME})")
    inst.set_defaults(handler=cmd_sieve_install)

    if add_common is not None:
        add_common(gen)
        add_common(inst)
    return sieve


def script_for(config: Config, user: str | None, filter_first: bool = False) -> str:
    """Gives the script to install: the user's own, or the global one with every user's table.

    `filter_first` gives the global script that first runs authsieve-filter (issue 18).
    """
    if filter_first:
        if user:
            raise InstallError("--filter is the global sieve_before script: no --user")
        try:
            return generate_filter_script(config.policies, config.engine.authserv_id)
        except ValueError as exc:
            raise InstallError(str(exc)) from None
    if user:
        return generate_script(policy_for(config, user), config.engine.authserv_id)
    return generate_global_script(config.policies, config.engine.authserv_id)


def policy_for(config: Config, user: str | None) -> Policy:
    """Gives the policy the script compiles: the user's merged policy, or the global one."""
    policies = config.policies
    if not user:
        return policies.default
    return policies.for_user(user)._replace(user=normalize_user(user))


def cmd_sieve_generate(args: argparse.Namespace, config: Config, out: TextIO | None = None) -> int:
    """Prints the script for --user (or the global one); gives the exit code."""
    script = script_for(config, args.user, getattr(args, "filter", False))
    (out or sys.stdout).write(script)
    return 0


def cmd_sieve_install(args: argparse.Namespace, config: Config, out: TextIO | None = None) -> int:
    """Installs the script into --dir or over --managesieve; gives the exit code.

    A script that cannot be installed raises InstallError (exit 2, said by the command line).
    """
    out = out or sys.stdout
    name = args.name
    if not name or any(c in name for c in "/\\\0\r\n") or name.startswith("."):
        raise UsageError(f"--name {name!r}: not a plain script name")
    if getattr(args, "imapsieve", None):
        result = install_to_dir(
            generate_learn_script(),
            Path(args.imapsieve),
            name=LEARN_SCRIPT,
            extra_config=compile_config(dovecot_version()),
        )
        note = f" (compiled {result.binary})" if result.compiled else ""
        out.write(f"installed {result.target}{note}\n")
        return 0
    if getattr(args, "pipe_dir", None):
        text = learn_program_text(filter_command(), settings_path(args))
        out.write(f"installed {install_program(text, Path(args.pipe_dir), LEARN_PROGRAM)}\n")
        return 0
    if getattr(args, "filter_dir", None):
        if not 0 < args.deadline <= 3600:
            raise UsageError(f"--deadline {args.deadline:g}: not between 0 and 3600 seconds")
        if args.deadline >= EXEC_TIMEOUT:
            print(
                f"authsieve: warning: --deadline {args.deadline:g}: set Dovecot's"
                f" sieve_filter_exec_timeout above it (default {EXEC_TIMEOUT:g} s), or"
                " Pigeonhole kills the program and the message waits in Postfix's queue",
                file=sys.stderr,
            )
        text = program_text(
            filter_command(),
            settings_path(args),
            args.deadline,
            config.engine.daemon_socket,
            config.engine.recipient_delimiter,
            config.engine.authserv_id,
            dns_options(args),
        )
        out.write(f"installed {install_program(text, Path(args.filter_dir), PROGRAM)}\n")
        return 0
    if args.dir:
        with_filter = getattr(args, "filter", False)
        script = script_for(config, args.user, with_filter)
        # The --filter script needs extprograms' words in sievec's private config too.
        extra = filter_compile_config(dovecot_version()) if with_filter else ""
        result = install_to_dir(script, Path(args.dir), name=name, extra_config=extra)
        if result.compiled:
            note = f" (compiled {result.binary})"
        elif result.checked:
            note = " (checked by sievec; Dovecot compiles it as the directory's owner)"
        else:
            note = " (sievec not found)"
        out.write(f"installed {result.target}{note}\n")
        return 0
    if not args.user:
        raise UsageError("--managesieve needs --user ADDR")
    if not args.password_file:
        raise UsageError("--managesieve needs --password-file FILE")
    host, port = parse_hostport(args.managesieve)
    password = read_password_file(Path(args.password_file))
    script = script_for(config, args.user)
    result = install_managesieve(
        script, host, port, args.login or args.user, password, name, args.starttls
    )
    state = "active" if result.active else "uploaded, NOT active"
    out.write(f"installed {result.target} ({state})\n")
    return 0 if result.active else EX_USAGE


def filter_command() -> list[str]:
    """Gives the command that runs authsieve with this Python: the console script if present."""
    script = Path(sys.executable).parent / "authsieve"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "classifier.commands.main"]


def dns_options(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """Gives install's --dns-server and --dns-zone for the program (the zone file absolute)."""
    found: list[tuple[str, str]] = []
    if getattr(args, "dns_server", None):
        found.append(("--dns-server", str(args.dns_server)))
    if getattr(args, "dns_zone", None):
        found.append(("--dns-zone", str(Path(args.dns_zone).resolve())))
    return tuple(found)


def settings_path(args: argparse.Namespace) -> str | None:
    """Gives the config file the program is to read: --config, else the default (None)."""
    config = getattr(args, "config", None)
    return str(config) if config else None
