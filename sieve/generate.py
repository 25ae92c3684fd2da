"""A policy compiled to a Sieve script that files on the X-Authsieve header.

The script recomputes `classifier.policy.verdict.decide` from the header's fields
for this user's policy, so a user who edits the policy part of their script
(through ManageSieve) changes only their own filing.  What it reads, and why
that cannot be forged:

- only the topmost X-Authsieve field (``:index 1``, RFC 5260 §6): authsieve
  prepends its own and renames every incoming copy, so a copy the sender
  wrote lower down is never consulted;
- only when that field starts ``v=1; id=<our authserv-id>;``.  The fixed
  fields after it (`FIELDS`) are tokens or plain domains, never a ``;`` or a
  quote, always all written and in their order, so every test is one regex
  anchored at ``^`` that counts the fields before the one it reads
  (``([^;]*;){N}``) and names that one.  Nothing after the fixed part -- the
  ``error="…"`` and ``reason="…"`` strings, which may repeat sender text --
  can make a test match;
- never Authentication-Results, and never the header's own ``verdict=``.

What depends on the config rather than on the message is decided in Python
at delivery and written into the header, so that the script never files by
a stale copy: ``allowed=yes`` when an allow_senders entry let the message
through (`Verdict.allowed`; `quarantine release --allow` adds entries), and
``user="…"`` naming the ``[users."…"]`` table whose policy decided.  The
global script (`generate_global_script`) holds one branch per user table,
chosen by that field, so it files every user's mail as Python does.

Config strings reach the script only as Sieve quoted-strings (RFC 5228
§2.4.2: ``"`` and ``\\`` escaped, CR, LF and NUL removed), never as code; the
script requires no "variables", so a ``${…}`` in a value is not expanded.
Blocked suffixes are plain DNS names (or dropped), so inside a regex they
need only their dots escaped.
"""

from __future__ import annotations

from classifier.auth.facts import HEADER_NAME, INTERNAL, quote
from classifier.names import quoted_string, safe_domain
from classifier.policies import (
    ACTION_KEYS,
    SPF_RULES,
    Policies,
    Policy,
    normalize_suffix,
    split_sender,
)

REQUIRE = ("fileinto", "mailbox", "imap4flags", "regex", "index")
JUNK_FOLDER = "Junk"
QUARANTINE_FOLDER = "Quarantine"
JUNK_FLAG = "$Junk"
# The fixed fields of render_header_value after v=1 and id=, in order.
FIELDS = (
    "verdict",
    "mode",
    "spf",
    "helo-spf",
    "dkim",
    "arc",
    "dmarc",
    "policy",
    "from-domain",
    "mailfrom-domain",
    "from-auth",
    "submission",
    "forwarded",
    "arc-trusted",
    # Oldest ARC Authentication-Results (empty = absent), then the allow-list decision.
    "arc-spf",
    "arc-dkim",
    "arc-dmarc",
    "allowed",
)
_SKIP = "([^;]*;)"  # one fixed field, with the space before it and the ";" after it
_SEP = "[[:space:]]+"  # the annotator folds after ";", and unfolding leaves the tab
COMMENT_WIDTH = 76


def sieve_string(text: str) -> str:
    """Gives text as a Sieve quoted-string, CR/LF/NUL removed (RFC 5228 §2.4.2).

    ``"`` and ``\\`` are the only characters a quoted-string must escape, as in RFC 5322.
    """
    return quoted_string("".join(c for c in str(text) if c not in "\r\n\0"))


def comment_text(text: str) -> str:
    """Gives text safe inside a ``#`` comment: printable ASCII only, so it cannot end the line."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))


def header_id(authserv_id: str) -> str:
    """Gives the id= value render_header_value writes for this authserv-id."""
    return safe_domain(authserv_id) or "localhost"


def _re_domain(domain: str) -> str:
    return domain.replace(".", "\\.")


def _re_literal(text: str) -> str:
    """Gives text as a POSIX ERE matching exactly it: every special character backslashed."""
    # "$" as a bracket, never "\\$": a "${" would be a variable in the --filter script.
    return "".join("[$]" if c == "$" else ("\\" + c if c in ".[]{}()\\*+?^|" else c) for c in text)


def _skip(n: int) -> str:
    return "" if n == 0 else (_SKIP if n == 1 else f"{_SKIP}{{{n}}}")


def field_regex(authserv_id: str, **want: str) -> str:
    """Gives a POSIX ERE matching an X-Authsieve value of ours whose fields match want.

    want maps field names (underscores for dashes) to ERE fragments, plus
    ``user`` for the exact user name.  The fields before and between the
    wanted ones are counted, not named; the ``(;|$)`` end means the last
    wanted field is complete, whatever follows.
    """
    want = {k.replace("_", "-"): v for k, v in want.items()}
    unknown = set(want) - set(FIELDS) - {"user"}
    if unknown:
        raise ValueError(f"not X-Authsieve fields: {sorted(unknown)}")
    pattern = f"^v=1;{_SEP}id={_re_domain(header_id(authserv_id))};"
    skipped = 0
    last = max((FIELDS.index(k) for k in want if k in FIELDS), default=-1)
    for i, name in enumerate(FIELDS[: last + 1]):
        if name in want:
            pattern += f"{_skip(skipped)}{_SEP}{name}=({want[name]})"
            pattern += ";" if i < last or "user" in want else ""
            skipped = 0
        else:
            skipped += 1
    if "user" in want:
        skipped = len(FIELDS) - 1 - last
        pattern += f"{_skip(skipped)}{_SEP}user={_re_literal(quote(want['user']))}"
    return pattern + "(;|$)"


class _Script:
    """Builds test expressions for one authserv-id."""

    def __init__(self, authserv_id: str) -> None:
        self.authserv_id = authserv_id

    def has(self, **want: str) -> str:
        regex = field_regex(self.authserv_id, **want)
        return f"header :index 1 :regex {sieve_string(HEADER_NAME)}\n  {sieve_string(regex)}"

    def effective(self, name: str, values: str, **extra: str) -> str:
        """Test: the judged result `name` (spf, dkim, dmarc) is one of values (an ERE group body).

        Mirrors verdict.effective_results: under arc-trusted=yes a non-empty
        arc-<name> replaces the local result.
        """
        arc = f"arc_{name}"
        local_untrusted = self.has(arc_trusted="no", **{name: values}, **extra)
        from_arc = self.has(arc_trusted="yes", **{arc: values}, **extra)
        local_trusted = _group(
            "allof",
            [
                self.has(arc_trusted="yes", **{name: values}, **extra),
                "not " + _indent(self.has(arc_trusted="yes", **{arc: "[a-z]+"}), 4, False),
            ],
        )
        return _group("anyof", [local_untrusted, from_arc, local_trusted])


def _group(word: str, tests: list[str]) -> str:
    """Gives ``word (t1, t2, …)`` with each test's lines aligned after the parenthesis."""
    pad = len(word) + 2
    return f"{word} (" + ",\n".join(_indent(t, pad, i > 0) for i, t in enumerate(tests)) + ")"


def _conditions(policy: Policy, s: _Script, action: str) -> list[tuple[str, str]]:
    """Gives (comment, test) for every rule of policy whose action is `action`."""
    out: list[tuple[str, str]] = []
    spf = [r for r in SPF_RULES if policy.action_for(f"spf_{r}") == action]
    if spf:
        keys = ", ".join(f"spf_{r}" for r in spf)
        out.append((f"{keys} = {action}", s.effective("spf", "|".join(spf))))
    if policy.action_for("dkim_fail") == action:
        out.append((f"dkim_fail = {action}", s.effective("dkim", "fail")))
    dmarc = [
        p for p in ("reject", "quarantine", "none") if policy.action_for(f"dmarc_{p}") == action
    ]
    if dmarc:
        keys = ", ".join(f"dmarc_{p}" for p in dmarc)
        out.append((f"{keys} = {action}", s.effective("dmarc", "fail", policy="|".join(dmarc))))
    if policy.action_for("dmarc_permerror") == action:
        out.append((f"dmarc_permerror = {action}", s.effective("dmarc", "permerror")))
    if policy.action_for("internal_error") == action:
        # Mirrors verdict.internal_errors: the judged spf, dkim, dmarc, and the local arc.
        tests = [s.effective(name, INTERNAL) for name in ("spf", "dkim", "dmarc")]
        tests.append(s.has(arc=INTERNAL))
        out.append((f"internal_error = {action}", _group("anyof", tests)))
    suffixes = [n for n in (normalize_suffix(x) for x in policy.blocked_domain_suffixes) if n]
    if suffixes and policy.action_for("blocked_action") == action:
        # A suffix that is a single label "none" must not match the header's from-domain=none.
        patterns = [
            ("([a-z0-9_-]+\\.)+" if n == "none" else "([a-z0-9_-]+\\.)*") + _re_domain(n)
            for n in suffixes
        ]
        body = "|".join(patterns)
        shown = ", ".join("." + n for n in suffixes)
        out.append(
            (f"blocked_domain_suffixes {comment_text(shown)} on From", s.has(from_domain=body))
        )
        out.append(
            (
                f"blocked_domain_suffixes {comment_text(shown)} on MAIL FROM",
                s.has(mailfrom_domain=body),
            )
        )
    return out


def _anyof(tests: list[tuple[str, str]]) -> str:
    body = ",\n".join(f"# {c}\n{t}" for c, t in tests)
    return "anyof (\n" + _indent(body, 2) + "\n)"


def _indent(text: str, n: int, first: bool = True) -> str:
    """Gives text with every line (but the first, unless `first`) indented by n spaces."""
    lines = text.splitlines()
    return "\n".join(
        (" " * n + line) if line and (first or i > 0) else line for i, line in enumerate(lines)
    )


def _wrapped_comment(label: str, items: list[str]) -> list[str]:
    """Gives ``# label: a, b, …`` as comment lines of at most COMMENT_WIDTH characters."""
    lines: list[str] = []
    line = f"# {label}:"
    for i, item in enumerate(items):
        word = " " + comment_text(item) + ("," if i < len(items) - 1 else "")
        if len(line) + len(word) > COMMENT_WIDTH and line != f"# {label}:":
            lines.append(line)
            line = "#  "
        line += word
    lines.append(line + (" (none)" if not items else ""))
    return lines


def _policy_comments(policy: Policy) -> list[str]:
    lines = [f"# mode = {policy.mode}"]
    for key in ACTION_KEYS:
        lines.append(f"# {key} = {policy.action_for(key)}")
    lines += _wrapped_comment(
        "allow_senders (decided by authsieve at delivery, read as allowed=yes)",
        [f"{p[0]}@{p[1]}" for p in map(split_sender, policy.allow_senders) if p],
    )
    return lines


def _header(who: str, authserv_id: str) -> list[str]:
    return [
        f"# authsieve filing policy for {comment_text(who)}",
        "# Generated by `authsieve sieve generate`. Edit the actions to change your own filing;",
        "# `authsieve sieve install` replaces this script with a freshly generated one.",
        f"# Reads only the topmost X-Authsieve header whose id= is {header_id(authserv_id)};",
        "# never Authentication-Results, never the header's own verdict= or reason=.",
    ]


def _chain(policy: Policy, s: _Script) -> list[str]:
    """Gives the if/elsif chain that files as decide() does for policy."""
    observe = policy.mode == "observe"
    branches: list[tuple[str, str]] = [
        ("# Submitted by our own user (SMTP AUTH): implicit keep.", s.has(submission="yes")),
        (
            "# Allow-listed sender, From domain authenticated: implicit keep.",
            s.has(allowed="yes"),
        ),
    ]
    fileinto_q = f"fileinto :create {sieve_string(QUARANTINE_FOLDER)};"
    fileinto_j = f"fileinto :create :flags {sieve_string(JUNK_FLAG)} {sieve_string(JUNK_FOLDER)};"
    for action, command in (("quarantine", fileinto_q), ("junk", fileinto_j)):
        tests = _conditions(policy, s, action)
        if tests:
            body = f"# observe mode, would: {command}" if observe else command
            branches.append((body, _anyof(tests)))
    lines: list[str] = []
    for i, (body, test) in enumerate(branches):
        keyword = "if" if i == 0 else "} elsif"
        lines.append(f"{keyword} {_indent(test, 2, False)} {{")
        lines.append(f"  {body}")
    lines.append("}")
    return lines


def _require() -> str:
    return "require [" + ", ".join(sieve_string(r) for r in REQUIRE) + "];"


def generate_script(policy: Policy, authserv_id: str) -> str:
    """Gives the Sieve script that files as decide() does for policy.

    Extensions: fileinto (RFC 5228), mailbox (RFC 5490), imap4flags (RFC 5232),
    regex (draft-ietf-sieve-regex), index (RFC 5260).
    """
    s = _Script(authserv_id)
    lines = _header(policy.user or "every user (global policy)", authserv_id)
    lines += _policy_comments(policy)
    lines += [_require(), ""]
    lines += _chain(policy, s)
    return "\n".join(lines) + "\n"


def generate_global_script(policies: Policies, authserv_id: str) -> str:
    """Gives the one script for every user (sieve_before): a branch per ``[users."…"]`` table.

    A branch is chosen by the header's ``user="…"``, which names the table
    whose policy decided at delivery: the mailbox user (``--user``, without
    its +detail), never an address from the message or the envelope, so an
    alias or a plus address files by the same table in Python and in Sieve.
    Mail for a user without a table (no ``user=``) takes the global policy.
    """
    s = _Script(authserv_id)
    lines = _header("every user (global policy and each [users] table)", authserv_id)
    lines += ["#", "# Global [policy]:", *_policy_comments(policies.default)]
    lines += [_require(), ""]
    lines += _global_rules(policies, s)
    return "\n".join(lines) + "\n"


def _global_rules(policies: Policies, s: _Script) -> list[str]:
    """Gives the rules of the global script: one branch per user table that differs."""
    lines: list[str] = []
    default_chain = _chain(policies.default, s)
    branches = [
        (name, chain)
        for name, policy in policies.users
        if (chain := _chain(policy, s)) != default_chain
    ]
    for i, (name, chain) in enumerate(branches):
        keyword = "if" if i == 0 else "} elsif"
        lines.append(f"# [users.{comment_text(quote(name))}]")
        lines.append(f"{keyword} {_indent(s.has(user=name), 2, False)} {{")
        lines += [f"  {c}" for c in _policy_comments(policies.for_user(name))]
        lines += [_indent(line, 2) for line in chain]
    if branches:
        lines.append("} else {")
        lines.append("  # Every other user: the global [policy].")
        lines += [_indent(line, 2) for line in default_chain]
        lines.append("}")
    else:
        lines += default_chain
    return lines
