"""The one error tree and the exit codes: every error authsieve raises on purpose.

`AuthsieveError` is the base; each kind carries the exit code it maps to, so
the command line catches the base once (`classifier.commands.main`) and says
one line.  Exit codes are sysexits(3) values, except usage and config
errors, which exit 2 as argparse does.  Imports only `os`, so the thin pipe
path can name it before anything else is loaded.
"""

import os

EX_USAGE = 2  # a bad argument, path or config key: argparse's code, not sysexits' 64
EX_SOFTWARE = os.EX_SOFTWARE  # 70: a bug, or a worker that died
EX_TEMPFAIL = os.EX_TEMPFAIL  # 75: try again later; Postfix keeps the message queued
EX_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class AuthsieveError(Exception):
    """An error authsieve raises on purpose: one line for the user, and its exit code."""

    exit_code = EX_SOFTWARE


class UsageError(AuthsieveError):
    """A bad argument or path the user gave: one line, exit 2."""

    exit_code = EX_USAGE


class TempError(AuthsieveError):
    """Something outside failed for now (DNS, the next delivery stage): exit 75, try again."""

    exit_code = EX_TEMPFAIL


class ConfigError(UsageError):
    """A bad config file: the message names the file, the key and the value (exit 2)."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem
