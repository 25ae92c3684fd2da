"""A user's policy compiled to a Sieve script that files on the X-Authsieve header.

The script recomputes `classifier.verdict.decide` from the header's fields
for this user's policy, so a user who edits the policy part of their script
(through ManageSieve) changes only their own filing.  What it reads, and why
that cannot be forged:

- only the topmost X-Authsieve field (``:index 1``, RFC 5260 §6): authsieve
  prepends its own and renames every incoming copy, so a copy the sender
  wrote lower down is never consulted;
- only when that field starts ``v=1; id=<our authserv-id>;`` and then holds
  the fixed fields in their fixed order, each a token or a plain domain.  Every
  test is one regex anchored at ``^`` that spells out the whole fixed part, so
  nothing after it -- the ``error="…"`` and ``reason="…"`` strings, which may
  repeat sender text -- can make a test match;
- never Authentication-Results, and never the header's own ``verdict=``.

Config strings reach the script only as Sieve quoted-strings (RFC 5228
§2.4.2: ``"`` and ``\\`` escaped, CR, LF and NUL removed), never as code; the
script requires no "variables", so a ``${…}`` in a value is not expanded.
Blocked suffixes and allow-list domains are plain DNS names (or dropped), so
inside a regex they need only their dots escaped.
"""

from __future__ import annotations

from classifier.facts import HEADER_NAME, INTERNAL, safe_domain
from classifier.policy import SPF_RULES, Policy, normalize_suffix, split_sender

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
)
# Oldest ARC Authentication-Results, written after arc-trusted when known (empty = absent).
ARC_FIELDS = ("arc-spf", "arc-dkim", "arc-dmarc")
_ANY = "[a-z0-9.-]*"
_SEP = ";[[:space:]]+"  # the annotator folds after ";", and unfolding leaves the tab


def sieve_string(text: str) -> str:
    """Gives text as a Sieve quoted-string, CR/LF/NUL removed (RFC 5228 §2.4.2).

    ``"`` and ``\\`` are the only characters a quoted-string must escape.
    """
    clean = "".join(c for c in str(text) if c not in "\r\n\0")
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment_text(text: str) -> str:
    """Gives text safe inside a ``#`` comment: printable ASCII only, so it cannot end the line."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))


def header_id(authserv_id: str) -> str:
    """Gives the id= value render_header_value writes for this authserv-id."""
    return safe_domain(authserv_id) or "localhost"


def _re_domain(domain: str) -> str:
    return domain.replace(".", "\\.")


def field_regex(authserv_id: str, **want: str) -> str:
    """Gives a POSIX ERE matching an X-Authsieve value of ours whose fields match want.

    want maps field names (underscores for dashes) to ERE fragments; every
    other field matches any token or domain.  The ``(;|$)`` end means the
    last fixed field is complete, whatever quoted fields follow.
    """
    want = {k.replace("_", "-"): v for k, v in want.items()}
    parts = ["^v=1", f"id={_re_domain(header_id(authserv_id))}"]
    parts += [f"{name}=({want[name]})" if name in want else f"{name}={_ANY}" for name in FIELDS]
    pattern = _SEP.join(parts)
    arc = _SEP + _SEP.join(
        f"arc-{n}=({want.get('arc-' + n, '[a-z]*')})" for n in ("spf", "dkim", "dmarc")
    )
    if any(name in want for name in ARC_FIELDS):
        pattern += arc
    else:
        pattern += f"({arc})?"
    return pattern + "(;|$)"


class _Script:
    """Builds test expressions for one authserv-id."""

    def __init__(self, authserv_id: str) -> None:
        self.authserv_id = authserv_id

    def has(self, **want: str) -> str:
        regex = field_regex(self.authserv_id, **want)
        return f"header :index 1 :regex {sieve_string(HEADER_NAME)} {sieve_string(regex)}"

    def effective(self, name: str, values: str, **extra: str) -> str:
        """Test: the judged result `name` (spf, dkim, dmarc) is one of values (an ERE group body).

        Mirrors verdict.effective_results: under arc-trusted=yes a non-empty
        arc-<name> replaces the local result.
        """
        arc = f"arc_{name}"
        local_untrusted = self.has(arc_trusted="no", **{name: values}, **extra)
        from_arc = self.has(arc_trusted="yes", **{arc: values}, **extra)
        local_trusted = (
            f"allof ({self.has(arc_trusted='yes', **{name: values}, **extra)},\n"
            f"                   not {self.has(arc_trusted='yes', **{arc: '[a-z]+'})})"
        )
        return f"anyof ({local_untrusted},\n         {from_arc},\n         {local_trusted})"

    def from_authenticated(self, domain: str) -> str:
        d = _re_domain(domain)
        return (
            f"anyof ({self.has(from_auth='yes', from_domain=d)},\n"
            f"                {self.has(arc_trusted='yes', arc_dmarc='pass', from_domain=d)})"
        )


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
        out.append((f"internal_error = {action}", "anyof (" + ",\n  ".join(tests) + ")"))
    suffixes = [n for n in (normalize_suffix(x) for x in policy.blocked_domain_suffixes) if n]
    if suffixes and policy.action_for("blocked_action") == action:
        # A suffix that is a single label "none" must not match the header's from-domain=none.
        patterns = [
            ("([a-z0-9-]+\\.)+" if n == "none" else "([a-z0-9-]+\\.)*") + _re_domain(n)
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


def _allow_tests(policy: Policy, s: _Script) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for entry in policy.allow_senders:
        parts = split_sender(entry)
        if parts is None:
            continue
        local, domain = parts
        if local:
            addr = f'address :index 1 :all :is "from" {sieve_string(local + "@" + domain)}'
        else:
            addr = f'address :index 1 :domain :is "from" {sieve_string(domain)}'
        test = f"allof ({addr},\n       {s.from_authenticated(domain)})"
        out.append((f"allow_senders {comment_text(local + '@' + domain)}", test))
    return out


def _anyof(tests: list[tuple[str, str]]) -> str:
    body = ",\n".join(f"# {c}\n{t}" for c, t in tests)
    return "anyof (\n" + _indent(body, 2) + "\n)"


def _indent(text: str, n: int) -> str:
    return "\n".join((" " * n + line) if line else line for line in text.splitlines())


def _header(policy: Policy, authserv_id: str) -> list[str]:
    who = policy.user or "every user (global policy)"
    lines = [
        f"# authsieve filing policy for {comment_text(who)}",
        "# Generated by `authsieve sieve generate`. Edit the actions to change your own filing;",
        "# `authsieve sieve install` replaces this script with a freshly generated one.",
        f"# Reads only the topmost X-Authsieve header whose id= is {header_id(authserv_id)};",
        "# never Authentication-Results, never the header's own verdict= or reason=.",
        f"# mode = {policy.mode}",
    ]
    for key in ("spf_fail", "spf_softfail", "spf_neutral", "spf_none", "spf_permerror"):
        lines.append(f"# {key} = {policy.action_for(key)}")
    for key in (
        "dkim_fail",
        "dmarc_reject",
        "dmarc_quarantine",
        "dmarc_none",
        "dmarc_permerror",
        "internal_error",
        "blocked_action",
    ):
        lines.append(f"# {key} = {policy.action_for(key)}")
    return lines


def generate_script(policy: Policy, authserv_id: str) -> str:
    """Gives the Sieve script that files as decide() does for policy.

    Extensions: fileinto (RFC 5228), mailbox (RFC 5490), imap4flags (RFC 5232),
    regex (draft-ietf-sieve-regex), index (RFC 5260).
    """
    s = _Script(authserv_id)
    observe = policy.mode == "observe"
    lines = _header(policy, authserv_id)
    lines.append("require [" + ", ".join(sieve_string(r) for r in REQUIRE) + "];")
    lines.append("")
    branches: list[tuple[str, str]] = [
        ("# Submitted by our own user (SMTP AUTH): implicit keep.", s.has(submission="yes"))
    ]
    allow = _allow_tests(policy, s)
    if allow:
        branches.append(
            ("# Allow-listed, From domain authenticated: implicit keep.", _anyof(allow))
        )
    fileinto_q = f"fileinto :create {sieve_string(QUARANTINE_FOLDER)};"
    fileinto_j = f"fileinto :create :flags {sieve_string(JUNK_FLAG)} {sieve_string(JUNK_FOLDER)};"
    for action, command in (("quarantine", fileinto_q), ("junk", fileinto_j)):
        tests = _conditions(policy, s, action)
        if tests:
            body = f"# observe mode, would: {command}" if observe else command
            branches.append((body, _anyof(tests)))
    for i, (body, test) in enumerate(branches):
        keyword = "if" if i == 0 else "} elsif"
        lines.append(f"{keyword} {test} {{")
        lines.append(f"  {body}")
    lines.append("}")
    return "\n".join(lines) + "\n"
