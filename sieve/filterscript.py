"""The sieve_before script for Dovecot LMTP with no Postfix change, and its program (issue 18).

Pigeonhole's extprograms plugin (``vnd.dovecot.filter``) pipes the message
through ``authsieve-filter`` (`classifier.delivery.sievefilter`), found in
``sieve_filter_bin_dir``; the program's standard output replaces the message
for every later rule and for the copy that is stored.  Then the very rules of
`generate_global_script` (pipe mode's script) file it on the X-Authsieve
header the program wrote, so there is one policy for both ways in.

What Pigeonhole 0.5.19 does, found by experiment (tests/test_lmtp_filter.py):

- the program gets the strings of the ``filter`` command as argv (here
  RECIPIENT and SENDER, taken with ``envelope`` into variables), and
  HOME, USER, HOST, SENDER, RECIPIENT, ORIG_RECIPIENT in its environment;
  it runs as the mail user, in Dovecot's base_dir;
- a non-zero exit makes ``filter``, used as a test, false, and the message
  stays as it was; Dovecot logs the program's stderr as errors;
- a program still running at ``sieve_filter_exec_timeout`` is killed, and
  then the LMTP process panics and dies without answering DATA: the client
  (Postfix) keeps the message and retries.  The program therefore answers by
  its own deadline, well before that timeout.

When the program failed anyway (crashed, not installed), the script prepends
(``addheader``, RFC 5293 §4) the same failure header the program writes on an
internal error (`classifier.evaluate.failed_annotation`), so that the rules read
that one and never a copy the sender wrote lower down (they read only ``:index
1``).  The header is the recipient's: a ``[users."…"]`` table is chosen by the
envelope recipient as the program chooses it (the whole address, case-insensitive)
and named in ``user="…"``, so that table's ``internal_error`` files the message,
not the global one.

The rules are generated with no ``${`` anywhere outside comments: with
"variables" required, one would be expanded inside a string.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from classifier.auth.facts import HEADER_NAME
from classifier.policies import Policies
from classifier.policy.verdict import failed_checks
from sieve.generate import (
    REQUIRE,
    _global_rules,
    _header,
    _policy_comments,
    _Script,
    sieve_string,
)

PROGRAM = "authsieve-filter"
FILTER_REQUIRE = ("vnd.dovecot.filter", "variables", "envelope", "editheader", "subaddress")
FAILED = "filter program failed"
DEFAULT_DEADLINE = 8.0  # classifier.delivery.sievefilter.DEFAULT_DEADLINE


def compile_config(version: tuple[int, int]) -> str:
    """Gives the dovecot.conf lines sievec needs to accept the --filter script.

    The words of examples/dovecot/*/90-authsieve-filter.conf: without them
    sievec knows neither vnd.dovecot.filter nor editheader.
    """
    if version >= (2, 4):
        return (
            "sieve_plugins {\n  sieve_extprograms = yes\n}\n"
            "sieve_global_extensions {\n  vnd.dovecot.filter = yes\n  editheader = yes\n}\n"
        )
    return (
        "plugin {\n  sieve_plugins = sieve_extprograms\n"
        "  sieve_global_extensions = +vnd.dovecot.filter +editheader\n}\n"
    )


def failure_header_value(policies: Policies, authserv_id: str, user: str = "") -> str:
    """Gives the X-Authsieve value the script adds for `user` ("": global) when the program failed.

    The value `classifier.evaluate.failed_annotation` writes (both through
    `classifier.policy.verdict.failed_checks`), but for the error text.
    """
    return failed_checks(policies.for_user(user), authserv_id, FAILED)[1]


def _verbatim(text: str) -> str:
    """Gives text as a Sieve string that "variables" expands back to text itself.

    A ``${`` becomes ``${authsieve_dollar}{``: the one substitution is not expanded
    again (RFC 5229 §3), so a user name holding ``${x}`` stays that name.
    """
    return sieve_string(text).replace("${", "${authsieve_dollar}{")


def _recipient_test(name: str) -> str:
    """Gives the Sieve test for "the envelope recipient is the user `name`", plus addresses too.

    bob+news@family.example is bob's, as the program finds it: "subaddress" (RFC 5233
    §4) gives the local part before Dovecot's recipient_delimiter as ``:user``.
    """
    whole = f'envelope :all :is "to" {_verbatim(name)}'
    local, at, domain = name.rpartition("@")
    if not at or not local:
        return whole
    user = (
        f'envelope :user :is "to" {_verbatim(local)}, envelope :domain :is "to" {_verbatim(domain)}'
    )
    return f"anyof({whole}, allof({user}))"


def _failure_headers(policies: Policies, authserv_id: str) -> list[str]:
    """Gives the lines that add the failure header of the envelope recipient's policy."""
    lines: list[str] = []
    for i, (name, _policy) in enumerate(policies.users):
        # Sieve's default comparator is i;ascii-casemap (RFC 5228 §2.7.3), as for_user's match.
        keyword = "if" if i == 0 else "} elsif"
        lines.append(f"{keyword} {_recipient_test(name)} {{")
        lines.append(f"  addheader {sieve_string(HEADER_NAME)}")
        lines.append(f"    {_verbatim(failure_header_value(policies, authserv_id, name))};")
    default = [
        f"addheader {sieve_string(HEADER_NAME)}",
        f"  {_verbatim(failure_header_value(policies, authserv_id))};",
    ]
    if not lines:
        return default
    return [*lines, "} else {", *(f"  {line}" for line in default), "}"]


def generate_filter_script(policies: Policies, authserv_id: str, program: str = PROGRAM) -> str:
    """Gives the sieve_before script: filter through `program`, then pipe mode's global rules.

    Extensions besides those of the rules: vnd.dovecot.filter (Pigeonhole),
    variables (RFC 5229), envelope (RFC 5228 §5.4), editheader (RFC 5293), subaddress
    (RFC 5233: a [users] table matches its plus addresses too).
    """
    s = _Script(authserv_id)
    rules = _global_rules(policies, s)
    failure = _failure_headers(policies, authserv_id)
    code = [line for line in rules if not line.lstrip().startswith("#")]
    if any("${" in line for line in code):
        raise ValueError("a [users] table name holds '${': not possible in the --filter script")
    lines = _header("every user, behind the authsieve-filter program", authserv_id)
    lines += [
        "# Generated by `authsieve sieve generate --filter`, for a global sieve_before with",
        "# sieve_plugins = sieve_extprograms and sieve_global_extensions = +vnd.dovecot.filter",
        "# +editheader (README: Dovecot LMTP).",
        "#",
        "# Global [policy]:",
        *_policy_comments(policies.default),
    ]
    require = ", ".join(sieve_string(r) for r in (*REQUIRE, *FILTER_REQUIRE))
    lines += [f"require [{require}];", ""]
    lines += [
        '# The envelope, as Sieve knows it; "" for the null sender (MAIL FROM:<>).',
        'set "authsieve_to" "";',
        'set "authsieve_from" "";',
        'set "authsieve_dollar" "$";',
        'if envelope :all :matches "to" "*" { set "authsieve_to" "${1}"; }',
        'if envelope :all :matches "from" "*" { set "authsieve_from" "${1}"; }',
        "# The program's output replaces the message; it exits 0 whatever went wrong inside.",
        f'if not filter {sieve_string(program)} ["${{authsieve_to}}", "${{authsieve_from}}"] {{',
        "  # It did not run, crashed or was killed: the original message goes on, under",
        "  # the header that says the checks failed for this recipient (read by the rules",
        "  # below: a [users] table's internal_error files it).",
        *(f"  {line}" for line in failure),
        "}",
        "",
    ]
    lines += rules
    return "\n".join(lines) + "\n"


def program_text(
    command: list[str],
    config: str | None,
    deadline: float,
    daemon: str | None = None,
    delimiter: str = "+",
    authserv_id: str | None = None,
    dns: tuple[tuple[str, str], ...] = (),
) -> str:
    """Gives the shell script to put in sieve_filter_bin_dir as `PROGRAM`.

    With `daemon` (the config's daemon_socket) the program hands each message to
    `authsieve serve` without reading the config first (the fast start of
    `classifier.delivery.sievefilter.hand_over`).
    """
    argv = [*command, "filter"]
    if daemon:
        argv += ["--daemon", str(daemon)]
    if config:
        argv += ["--config", str(Path(config).resolve())]
    argv += ["--deadline", f"{deadline:g}"]
    if delimiter != "+":  # the hand-over reads no config: it needs the config's value here
        argv += [f"--recipient-delimiter={delimiter}"]
    if authserv_id:  # the failure header's id when the config cannot be read
        argv += [f"--authserv-id={authserv_id}"]
    for option, value in dns:  # install's --dns-server / --dns-zone, kept for every message
        argv += [option, value]
    return (
        "#!/bin/sh\n"
        "# authsieve for Pigeonhole's vnd.dovecot.filter (sieve_filter_bin_dir), written by\n"
        "# `authsieve sieve install --filter-dir`.  From Sieve: RECIPIENT SENDER.  Always exits 0\n"
        "# with a whole message; answers by --deadline, under sieve_filter_exec_timeout.\n"
        f'exec {" ".join(shlex.quote(a) for a in argv)} -- "$@"\n'
    )
