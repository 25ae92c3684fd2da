"""The TOML config file, validated once into one frozen `Config`.

One file (``/etc/authsieve/config.toml`` unless ``--config`` says otherwise):
``[classifier]`` for the engine (`Settings`), ``[policy]`` / ``[users."addr"]``
for the verdict (`classifier.policies`), ``[watch]``, ``[quarantine]``,
``[reports]`` and ``[learn]`` (the last two typed in `classifier.sections`).
`load_config` checks every key when the file is read, so a daemon or a watcher
finds a mistake at start or reload, not at the first message; defaults are
the field defaults of those types.  Every mistake is a `ConfigError` naming
the file, the key and the value; the command line turns it into one line and
exit code 2.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from classifier.errors import ConfigError
from classifier.names import valid_delimiter
from classifier.policies import Policies, Policy, policies_from_tables, toml_key
from classifier.trusted import LOOPBACK, Network, TrustMatcher, parse_forwarder

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from classifier.sections import (
        LearnConfig,
        ReportsConfig,
    )

DEFAULT_PATH = Path("/etc/authsieve/config.toml")


@dataclass(frozen=True)
class Settings:
    """The engine's settings: section ``[classifier]``."""

    authserv_id: str
    trusted_networks: tuple[Network, ...] = LOOPBACK
    trusted_forwarders: tuple[Network | str, ...] = ()
    dmarc_mode: str = "rfc9989"
    dns_timeout: float = 5.0
    dns_budget: float = 20.0
    dns_server: str | None = None
    dns_zone: str | None = None
    # Dovecot's and Postfix's recipient_delimiter: the LMTP filter finds bob+news@'s
    # [users] table under bob@ (the pipe gets ${user}@${domain} from Postfix instead).
    recipient_delimiter: str = "+"
    log_file: str | None = None
    daemon_socket: str | None = None  # where `authsieve serve` listens and `pipe` asks
    # `authsieve serve`: whom the socket belongs to (the pipe user), its mode, whom the
    # daemon runs as (and whom `pipe` accepts as its peer besides root), and its limits.
    socket_user: str | None = None
    socket_mode: int = 0o600
    daemon_user: str | None = None
    daemon_max_message_size: int | None = None  # None: Postfix's message_size_limit
    daemon_idle_timeout: float = 10.0
    daemon_max_connections: int = 64
    source: str = "<defaults>"
    # The matchers of the policies' trusted_forwarders lists (trust_for), built at load.
    _policy_trust: dict[tuple[str, ...], TrustMatcher] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @cached_property
    def trust(self) -> TrustMatcher:
        """Gives the matcher of trusted_networks and [classifier].trusted_forwarders."""
        return TrustMatcher(self.trusted_networks, self.trusted_forwarders)

    def trust_for(self, forwarders: tuple[str, ...]) -> TrustMatcher:
        """Gives the matcher with a policy's trusted_forwarders added, built once per list.

        `load_config` builds the matcher of every policy's list, so a message only
        looks it up; a list no policy of the file names (``report --policy``)
        is built at its first use.  Raises ConfigError for an entry that is no
        CIDR or host name.
        """
        if not forwarders:
            return self.trust
        matchers = self._policy_trust
        matcher = matchers.get(forwarders)
        if matcher is None:
            if len(matchers) >= 256:  # more distinct lists than a config holds: start afresh
                matchers.clear()
            entries = (
                parse_forwarder(self.source, f"policy.trusted_forwarders[{i}]", e)
                for i, e in enumerate(forwarders)
            )
            matcher = matchers[forwarders] = self.trust.with_forwarders(entries)
        return matcher


def report_store_kind(url: str) -> str | None:
    """Gives "sqlite" or "postgresql" for a report store URL, None for one we cannot use.

    Checks only the form: a PostgreSQL URL (libpq's connection URI) is read in
    full by the driver when the store is opened, and psycopg is not imported here
    (the pipe's start-up, issue 15).
    """
    if any(c.isspace() for c in url):
        return None
    scheme, _, rest = url.partition(":")
    if scheme == "sqlite":
        return "sqlite" if rest.removeprefix("//") else None
    if scheme not in ("postgresql", "postgres") or not rest.startswith("//"):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.fragment or not (parts.path.strip("/") or "dbname=" in parts.query):
        return None  # a database must be named: never the user's default by accident
    return "postgresql"


def redact_store_url(url: str) -> str:
    """Gives the URL with any password replaced by "***", for log lines and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable store URL>"
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = "&".join(
        f"{k}=***" if k == "password" else f"{k}={v}" if sep else k
        for k, sep, v in (p.partition("=") for p in parts.query.split("&") if p)
    )
    if netloc == parts.netloc and query == parts.query:
        return url
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def default_authserv_id() -> str:
    """Gives the host's FQDN, the RFC 8601 §2.5 recommendation for the authserv-id."""
    return socket.getfqdn() or "localhost"


_SECTIONS = ("ReportsConfig", "LearnConfig", "DEFAULT_REPORT_STORE", "DEFAULT_LEARN_STORE")


def __getattr__(name: str) -> Any:
    """Gives the [reports] and [learn] types from `classifier.sections`, imported on first use."""
    if name in _SECTIONS:
        import classifier.sections

        return getattr(classifier.sections, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CLASSIFIER_KEYS: dict[str, type | tuple[type, ...]] = {
    "authserv_id": str,
    "trusted_networks": list,
    "trusted_forwarders": list,
    "dmarc_mode": str,
    "dns_timeout": (int, float),
    "dns_budget": (int, float),
    "dns_server": str,
    "dns_zone": str,
    "recipient_delimiter": str,
    "log_file": str,
    "daemon_socket": str,
    "socket_user": str,
    "socket_mode": (int, str),
    "daemon_user": str,
    "daemon_max_message_size": int,
    "daemon_idle_timeout": (int, float),
    "daemon_max_connections": int,
}
_TOP_KEYS = {"classifier", "policy", "users", "watch", "quarantine", "reports", "learn"}


class WatchConfig(NamedTuple):
    """Section ``[watch]``: what `authsieve watch` watches (command-line options win)."""

    roots: tuple[str, ...] = ()
    path_template: str = "{domain}/{local}/Maildir"
    rescan_interval: float = 60.0
    workers: int = 0  # 0: one worker process per CPU
    cur_max_age_days: float = 7.0  # unfiled mail a client moved to cur/: this recent only


class QuarantineConfig(NamedTuple):
    """Section ``[quarantine]``."""

    retention_days: float = 30.0


def _number(low: float, strict: bool = True) -> Any:
    def check(v: object) -> bool:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        return ok and (v > low if strict else v >= low)  # type: ignore[operator]

    return check


# section → key → (check, what the check wants)
_SECTION_KEYS: dict[str, dict[str, tuple[Any, str]]] = {
    "watch": {
        "roots": (
            lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
            "a list of paths or globs",
        ),
        "path_template": (
            lambda v: isinstance(v, str) and "{" in v,
            "a template such as {domain}/{local}/Maildir",
        ),
        "rescan_interval": (_number(0), "a number of seconds > 0"),
        "workers": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "a whole number >= 0 (0: one per CPU)",
        ),
        "cur_max_age_days": (
            _number(0, strict=False),
            "a number of days >= 0 (0: cur/ is never checked)",
        ),
    },
    "quarantine": {"retention_days": (_number(0), "a number of days > 0")},
    "reports": {
        "store": (
            lambda v: isinstance(v, str) and report_store_kind(v) is not None,
            "sqlite:PATH or postgresql://[user@][host][:port]/dbname[?param=value...]",
        ),
        "host": (
            lambda v: isinstance(v, str) and v.strip() and not any(c.isspace() for c in v),
            "this server's name, such as mx1.example.org",
        ),
        "retention_days": (_number(0), "a number of days > 0"),
        "org_name": (lambda v: isinstance(v, str) and v.strip(), "a name"),
        "email": (
            lambda v: isinstance(v, str) and "@" in v,
            "an address such as dmarc-reports@example.org",
        ),
        "extra_contact_info": (
            lambda v: isinstance(v, str),
            "a string (a URL or a telephone number)",
        ),
        "sendmail": (
            lambda v: isinstance(v, str) and v.startswith("/"),
            "an absolute path such as /usr/sbin/sendmail",
        ),
        "max_message_size": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1000,
            "a number of bytes >= 1000",
        ),
        "sent_log": (
            lambda v: isinstance(v, str) and v.startswith("/"),
            "an absolute path",
        ),
        "catch_up_days": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 366,
            "a number of days from 1 to 366",
        ),
        "run_time_limit": (_number(0), "a number of seconds > 0"),
    },
    "learn": {
        "store": (
            lambda v: isinstance(v, str) and v.startswith("sqlite:"),
            "sqlite:PATH",
        ),
        "retention_days": (
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
            "a number of days > 0",
        ),
        "min_messages": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "a whole number >= 1",
        ),
        "min_users": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "a whole number >= 1",
        ),
        "block_share": (
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1,
            "a number > 0 and <= 1",
        ),
        "sieve_dir": (
            lambda v: isinstance(v, str) and v.startswith("/"),
            "an absolute directory (where `sieve install --dir` put the global script)",
        ),
    },
}


def _section(data: dict[str, Any], source: str, section: str) -> dict[str, Any]:
    """Gives one of [watch], [quarantine], [reports], [learn] as keyword arguments, validated."""
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(source, section, "must be a table")
    keys = _SECTION_KEYS[section]
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in keys:
            raise ConfigError(source, f"{section}.{key}", "unknown key")
        check, wanted = keys[key]
        if not check(value):
            raise ConfigError(source, f"{section}.{key}", f"expected {wanted}, got {value!r}")
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _network(source: str, key: str, value: object) -> Network:
    if not isinstance(value, str):
        raise ConfigError(source, key, f"expected a CIDR string, got {value!r}")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ConfigError(source, key, f"not a CIDR network: {value!r}") from None


def _socket_mode(source: str, value: int | str) -> int:
    """Gives a socket mode from 0o660 (TOML octal) or "660"; only owner and group bits."""
    try:
        mode = value if isinstance(value, int) else int(value, 8)
    except ValueError:
        raise ConfigError(
            source, "classifier.socket_mode", f"not an octal mode: {value!r}"
        ) from None
    if not 0 <= mode <= 0o777 or mode & 0o007:
        # A socket others may write to lets any local user feed the daemon (issue 19).
        raise ConfigError(
            source,
            "classifier.socket_mode",
            f"expected owner/group bits only (0o600, 0o660): {value!r}",
        )
    return mode


def _daemon_values(section: dict[str, Any], source: str) -> dict[str, Any]:
    """Gives the `serve` settings of [classifier], validated."""
    out: dict[str, Any] = {}
    for key in ("socket_user", "daemon_user"):
        if key in section:
            name = section[key].strip()
            if not name or any(c.isspace() or c in ":/" for c in name):
                raise ConfigError(source, f"classifier.{key}", f"not a user name: {section[key]!r}")
            out[key] = name
    if "socket_mode" in section:
        out["socket_mode"] = _socket_mode(source, section["socket_mode"])
    limits = {
        "daemon_max_message_size": (1024, 1 << 34),
        "daemon_idle_timeout": (0.1, 3600),
        "daemon_max_connections": (1, 65536),
    }
    for key, (low, high) in limits.items():
        if key in section:
            if not low <= section[key] <= high:
                raise ConfigError(
                    source, f"classifier.{key}", f"out of range {low}..{high}: {section[key]!r}"
                )
            out[key] = section[key]
    return out


def _engine(data: dict[str, Any], source: str) -> Settings:
    """Gives the [classifier] section as Settings; raises ConfigError naming the key at fault."""
    section = data.get("classifier", {})
    if not isinstance(section, dict):
        raise ConfigError(source, "classifier", "must be a table")
    for key, value in section.items():
        kind = _CLASSIFIER_KEYS.get(key)
        if kind is None:
            raise ConfigError(source, f"classifier.{key}", "unknown key")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(source, f"classifier.{key}", f"wrong type: {value!r}")
    nets = tuple(
        _network(source, f"classifier.trusted_networks[{i}]", v)
        for i, v in enumerate(section.get("trusted_networks", []))
    )
    forwarders = tuple(
        parse_forwarder(source, f"classifier.trusted_forwarders[{i}]", v)
        for i, v in enumerate(section.get("trusted_forwarders", []))
    )
    mode = section.get("dmarc_mode", "rfc9989")
    if mode not in ("rfc9989", "rfc7489"):
        raise ConfigError(source, "classifier.dmarc_mode", f"expected rfc9989 or rfc7489: {mode!r}")
    for key in ("dns_timeout", "dns_budget"):
        if key in section and not 0 < section[key] <= 600:
            raise ConfigError(source, f"classifier.{key}", f"out of range: {section[key]!r}")
    delimiter = section.get("recipient_delimiter", "+")
    if not valid_delimiter(delimiter):
        raise ConfigError(
            source, "classifier.recipient_delimiter", f"not delimiter characters: {delimiter!r}"
        )
    return Settings(
        authserv_id=section.get("authserv_id") or default_authserv_id(),
        trusted_networks=LOOPBACK + nets,
        trusted_forwarders=forwarders,
        dmarc_mode=mode,
        dns_timeout=float(section.get("dns_timeout", 5.0)),
        dns_budget=float(section.get("dns_budget", 20.0)),
        dns_server=section.get("dns_server"),
        dns_zone=section.get("dns_zone"),
        recipient_delimiter=delimiter,
        log_file=section.get("log_file"),
        daemon_socket=section.get("daemon_socket"),
        **_daemon_values(section, source),
        source=source,
    )


class Config(NamedTuple):
    """The whole config file, every key validated: engine, policies and the other sections."""

    engine: Settings
    policies: Policies = Policies(Policy())
    watch: WatchConfig = WatchConfig()
    quarantine: QuarantineConfig = QuarantineConfig()
    reports: ReportsConfig | None = None  # None: no [reports] table, nothing is recorded
    learn: LearnConfig | None = None  # None: no [learn] table, `learn` records nothing
    source: str = "<defaults>"


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Gives the Config of a parsed TOML document; raises ConfigError naming the key at fault."""
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(source, key, "unknown section or key")
    engine = _engine(data, source)
    policies = policies_from_tables(source, data.get("policy", {}), data.get("users", {}))
    for name, policy in (("policy", policies.default), *policies.users):
        where = "policy" if name == "policy" else f"users.{toml_key(name)}"
        for i, entry in enumerate(policy.trusted_forwarders):
            parse_forwarder(source, f"{where}.trusted_forwarders[{i}]", entry)
        engine.trust_for(policy.trusted_forwarders)  # built now, looked up per message
    return Config(
        engine=engine,
        policies=policies,
        watch=WatchConfig(**_section(data, source, "watch")),
        quarantine=QuarantineConfig(**_section(data, source, "quarantine")),
        reports=_optional(data, source, "reports"),
        learn=_optional(data, source, "learn"),
        source=source,
    )


def _optional(data: dict[str, Any], source: str, section: str) -> Any:
    """Gives the ReportsConfig or LearnConfig of a section, None when the file has no such table."""
    if section not in data:
        return None
    from classifier.sections import LearnConfig, ReportsConfig

    kind = ReportsConfig if section == "reports" else LearnConfig
    return kind(**_section(data, source, section))


def load_config(path: str | Path | None) -> Config:
    """Gives the Config of a file; the default path may be absent (then defaults apply).

    Raises ConfigError for an unreadable or invalid file.
    """
    explicit = path is not None
    p = Path(path) if path is not None else DEFAULT_PATH
    if not p.exists():
        if explicit:
            raise ConfigError(str(p), "-", "no such file")
        return config_from_dict({}, source="<defaults>")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(p), "-", f"cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), "-", f"not valid TOML: {exc}") from None
    return config_from_dict(data, source=str(p))
