"""The filing policy from the TOML config: global ``[policy]`` and ``[users."addr"]`` overrides.

A `Policy` maps authentication results to an action (``inbox``, ``junk``,
``quarantine``).  `policies_from_tables` validates the tables when
`classifier.config.load_config` reads the file (a foundation module, so the
config holds typed policies); every mistake is a `ConfigError` naming the file
and the key (``policy.spf_fail``, ``users."alice@example.org".blocked_action``).
A user's table overrides the global one key by key (a list replaces the
global list).  The same `Policy` value is decided in Python
(`classifier.policy.verdict.decide`) and compiled to Sieve (`sieve.generate`).
"""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

from typing import Any, NamedTuple

from classifier.errors import ConfigError
from classifier.names import safe_domain
from classifier.vocab import Action, Mode

ACTIONS = tuple(Action)
MODES = tuple(Mode)
# The SPF results a policy may file on; pass, temperror and policy never file (docs/design.md).
SPF_RULES = ("fail", "softfail", "neutral", "none", "permerror")
ACTION_KEYS = (
    *(f"spf_{r}" for r in SPF_RULES),
    "dkim_fail",
    "dmarc_reject",
    "dmarc_quarantine",
    "dmarc_none",
    "dmarc_permerror",
    "internal_error",
    "blocked_action",
)
LIST_KEYS = (
    "blocked_domain_suffixes",
    "allow_senders",
    "trusted_forwarders",
    "trusted_arc_sealers",
)
_TEMPERROR_KEYS = ("spf_temperror", "dkim_temperror", "dmarc_temperror", "arc_temperror")


class Policy(NamedTuple):
    """One user's (or the global) policy: results → actions, lists, and the mode."""

    mode: Mode = Mode.ENFORCE
    spf_fail: Action = Action.JUNK
    spf_softfail: Action = Action.INBOX
    spf_neutral: Action = Action.INBOX
    spf_none: Action = Action.INBOX
    spf_permerror: Action = Action.INBOX
    dkim_fail: Action = Action.INBOX
    dmarc_reject: Action = Action.QUARANTINE
    dmarc_quarantine: Action = Action.JUNK
    dmarc_none: Action = Action.INBOX
    # DMARC permerror: no From, a From without a readable domain, or more Author Domains
    # than are evaluated with none failing (RFC 9989 §5.3.1, §11.5): DMARC cannot protect
    # the name a mail client shows, so it is not trusted by default.
    dmarc_permerror: Action = Action.JUNK
    # A check that stopped on an error of ours: "inbox" adds nothing, so the other rules
    # decide; the error never removes a rule that fires (it is no temperror).
    internal_error: Action = Action.INBOX
    blocked_domain_suffixes: tuple[str, ...] = ()  # normalised: lower case, no leading dot
    blocked_action: Action = Action.JUNK
    allow_senders: tuple[str, ...] = ()  # lower case "local@domain" or "@domain"
    trusted_forwarders: tuple[str, ...] = ()  # host names or CIDRs (used by the envelope step)
    trusted_arc_sealers: tuple[str, ...] = ()  # ARC-Seal d= domains (used by checks.facts_from)
    user: str = ""  # whose policy this is; "" for the global one

    def action_for(self, key: str) -> Action:
        """Gives the action configured under an action key such as ``spf_fail``."""
        value = getattr(self, key)
        return Action(value) if value in ACTIONS else Action.INBOX

    def to_dict(self) -> dict[str, object]:
        d = self._asdict()
        for key in LIST_KEYS:
            d[key] = list(d[key])
        return d


class Policies(NamedTuple):
    """The global policy and every user's merged policy, looked up by address."""

    default: Policy
    users: tuple[tuple[str, Policy], ...] = ()

    def for_user(self, addr: str) -> Policy:
        """Gives addr's policy (case-insensitive match), or the global one for unknown users."""
        key = normalize_user(addr)
        for name, policy in self.users:
            if name == key:
                return policy
        return self.default

    def to_dict(self) -> dict[str, object]:
        return {
            "default": self.default.to_dict(),
            "users": {name: p.to_dict() for name, p in self.users},
        }


def normalize_user(addr: str) -> str:
    """Gives a recipient address in the form used to look up users: bare and lower case."""
    return addr.strip().strip("<>").strip().lower()


def normalize_suffix(text: str) -> str:
    """Gives a blocked suffix as a lower-case DNS name without the leading dot, or "" if invalid."""
    if not isinstance(text, str) or any(ord(c) < 33 or ord(c) > 126 for c in text):
        return ""
    return safe_domain(text.strip().lstrip("."))


def suffix_matches(domain: str, suffix: str) -> bool:
    """Tells whether a (plain, lower-case) domain is suffix or lies below it."""
    return bool(domain and suffix) and (domain == suffix or domain.endswith("." + suffix))


def split_sender(entry: str) -> tuple[str, str] | None:
    """Gives (local part or "", domain) of an allow_senders entry, or None when it is unusable.

    ``@example.org`` allows the whole domain; ``ann@example.org`` one address.
    Whitespace and control characters are never part of an entry: such an
    entry could not be matched against a From address anyway.
    """
    if not isinstance(entry, str):
        return None
    text = entry.strip().lower()
    if any(ord(c) < 33 or ord(c) == 127 for c in text):
        return None
    local, at, domain = text.rpartition("@")
    domain = safe_domain(domain)
    # RFC 5321 §4.1.2: a mail domain is letters, digits and hyphens.  safe_domain also
    # takes "_" (so that a blocked suffix sees x@_a.cyou); an allowed sender must not.
    if not at or not domain or "_" in domain:
        return None
    return local, domain


# TOML basic strings (toml.io v1.0.0, "String"): these are written as escapes, other
# control characters as \uXXXX, everything else as it is.
_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_key(text: str) -> str:
    """Gives text as a quoted TOML key, as a user writes it in the file: "a@example.org"."""
    return (
        '"'
        + "".join(
            _TOML_ESCAPES.get(c) or (f"\\u{ord(c):04X}" if c < " " or c == "\x7f" else c)
            for c in text
        )
        + '"'
    )


def _key_name(user: str | None, key: str) -> str:
    # TOML dotted-key spelling, so the user can find the line: users."a@b".key
    return f"policy.{key}" if user is None else f"users.{toml_key(user)}.{key}"


def _check_action(source: str, name: str, value: object) -> Action:
    if not isinstance(value, str) or value.strip().lower() not in ACTIONS:
        raise ConfigError(source, name, f"expected inbox, junk or quarantine, got {value!r}")
    return Action(value.strip().lower())


def _check_list(source: str, name: str, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(source, name, f"expected a list of strings, got {value!r}")
    out: list[str] = []
    for i, item in enumerate(value):
        item_name = f"{name}[{i}]"
        if not isinstance(item, str):
            raise ConfigError(source, item_name, f"expected a string, got {item!r}")
        if key == "blocked_domain_suffixes":
            norm = normalize_suffix(item)
            if not norm:
                raise ConfigError(source, item_name, f"not a domain suffix: {item!r}")
        elif key == "allow_senders":
            parts = split_sender(item)
            if parts is None:
                raise ConfigError(
                    source, item_name, f"expected an address or @domain, got {item!r}"
                )
            norm = f"{parts[0]}@{parts[1]}"
        else:
            norm = item.strip().rstrip(".").lower()
            if not norm or any(ord(c) < 33 or ord(c) == 127 for c in norm):
                raise ConfigError(source, item_name, f"expected a host name or CIDR, got {item!r}")
        if norm not in out:
            out.append(norm)
    return tuple(out)


def parse_policy_table(source: str, table: object, user: str | None = None) -> dict[str, Any]:
    """Gives the validated keys of one policy table; raises ConfigError naming the key at fault."""
    if not isinstance(table, dict):
        where = "policy" if user is None else f"users.{toml_key(user)}"
        raise ConfigError(source, where, "must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = _key_name(user, key)
        if key == "mode":
            if not isinstance(value, str) or value.strip().lower() not in MODES:
                raise ConfigError(source, name, f"expected enforce or observe, got {value!r}")
            values[key] = Mode(value.strip().lower())
        elif key in ACTION_KEYS:
            values[key] = _check_action(source, name, value)
        elif key in LIST_KEYS:
            values[key] = _check_list(source, name, key, value)
        elif key in _TEMPERROR_KEYS:
            raise ConfigError(source, name, "unknown key (a temperror never files mail on its own)")
        else:
            raise ConfigError(source, name, "unknown key")
    return values


def policies_from_tables(source: str, policy: object, users: object) -> Policies:
    """Gives the global policy and each user's merged policy from the [policy] and [users] tables.

    Every key is validated here, once, when the config is loaded; defaults are
    the `Policy` field defaults.  Raises ConfigError naming the key at fault.
    """
    default = Policy(**parse_policy_table(source, policy))
    if not isinstance(users, dict):
        raise ConfigError(source, "users", "must be a table of tables")
    entries: list[tuple[str, Policy]] = []
    seen: dict[str, str] = {}
    for addr, table in users.items():
        key = normalize_user(addr)
        if "@" not in key or any(ord(c) < 33 or ord(c) == 127 for c in key):
            raise ConfigError(source, f"users.{toml_key(addr)}", "not an email address")
        if key in seen:
            raise ConfigError(
                source, f"users.{toml_key(addr)}", f"same user as users.{toml_key(seen[key])}"
            )
        seen[key] = addr
        overrides = parse_policy_table(source, table, user=addr)
        entries.append((key, default._replace(user=key, **overrides)))
    return Policies(default=default, users=tuple(entries))
