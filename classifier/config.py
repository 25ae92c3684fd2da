"""Settings from the TOML config file, validated into frozen values.

One file (``/etc/authsieve/config.toml`` unless ``--config`` says otherwise)
with a ``[classifier]`` section for the engine and ``[policy]`` /
``[users."addr"]`` sections for the verdict (parsed by `classifier.policy.rules`).
Every mistake a user can make is a `ConfigError` naming the file, the key and
the value; the command line turns it into one line and exit code 2.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from classifier.errors import UsageError

DEFAULT_PATH = Path("/etc/authsieve/config.toml")
DEFAULT_REPORT_STORE = "sqlite:/var/lib/authsieve/reports.db"  # when [reports] names none
DEFAULT_LEARN_STORE = "sqlite:/var/lib/authsieve/learning/moves.db"  # the mail user's directory
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


class ConfigError(UsageError):
    """A bad config file: the message names the file, the key and the value (exit 2)."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Settings:
    """The engine's settings (section ``[classifier]``) plus the raw policy sections."""

    authserv_id: str
    trusted_networks: tuple[Network, ...] = LOOPBACK
    trusted_forwarders: tuple[Network | str, ...] = ()
    dmarc_mode: str = "rfc9989"
    dns_timeout: float = 5.0
    dns_budget: float = 20.0
    dns_server: str | None = None
    dns_zone: str | None = None
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
    # [watch] and [quarantine]; None: the command's default applies
    watch_roots: tuple[str, ...] | None = None
    watch_path_template: str | None = None
    watch_rescan_interval: float | None = None
    watch_workers: int | None = None
    watch_cur_max_age_days: float | None = None
    quarantine_retention_days: float | None = None
    # [reports] (DMARC aggregate reports, issue 16); reports_store None: nothing is recorded
    reports_store: str | None = None
    reports_host: str | None = None  # written with each row: one report covers several MX
    reports_retention_days: float | None = None
    reports_org_name: str | None = None
    reports_email: str | None = None
    reports_extra_contact_info: str | None = None
    reports_sendmail: str = "/usr/sbin/sendmail"  # what `dmarc-report --send` hands reports to
    reports_max_message_size: int = 10_000_000  # bytes of one report message, larger: not sent
    reports_sent_log: str | None = None  # None: dmarc-sent.log beside a sqlite store
    # [learn] (what users' moves teach, issue 17); learn_store None: `learn` records nothing
    learn_store: str | None = None
    learn_retention_days: float | None = None
    learn_min_messages: int | None = None
    learn_min_users: int | None = None
    learn_sieve_dir: str | None = None
    source: str = "<defaults>"
    # [policy] and [users."…"] exactly as read; classifier.policy.rules validates them.
    policy_raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    users_raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def with_forwarders(self, entries: tuple[str, ...]) -> Settings:
        """Gives these settings with more trusted forwarders (host names or CIDRs) added."""
        extra = tuple(
            f
            for i, e in enumerate(entries)
            if (f := _forwarder(self.source, f"policy.trusted_forwarders[{i}]", e))
            not in self.trusted_forwarders
        )
        return replace(self, trusted_forwarders=self.trusted_forwarders + extra) if extra else self

    def is_trusted_ip(self, ip: str) -> bool:
        """Tells whether ip lies inside trusted_networks (loopback always does)."""
        return _in_networks(ip, self.trusted_networks)

    def forwarder_match(self, ip: str | None, names: tuple[str | None, ...]) -> str:
        """Gives the trusted_forwarders entry that matches this hop's IP or host names, or ""."""
        for entry in self.trusted_forwarders:
            if isinstance(entry, str):
                for name in names:
                    n = (name or "").rstrip(".").lower()
                    if n and (n == entry or n.endswith("." + entry)):
                        return entry
            elif ip and _in_networks(ip, (entry,)):
                return str(entry)
        return ""


@lru_cache(maxsize=8192)
def _in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in networks)


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


_CLASSIFIER_KEYS: dict[str, type | tuple[type, ...]] = {
    "authserv_id": str,
    "trusted_networks": list,
    "trusted_forwarders": list,
    "dmarc_mode": str,
    "dns_timeout": (int, float),
    "dns_budget": (int, float),
    "dns_server": str,
    "dns_zone": str,
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
# section → key → (Settings field, check, what the check wants)
_SECTION_KEYS: dict[str, dict[str, tuple[str, Any, str]]] = {
    "watch": {
        "roots": (
            "watch_roots",
            lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
            "a list of paths or globs",
        ),
        "path_template": (
            "watch_path_template",
            lambda v: isinstance(v, str) and "{" in v,
            "a template such as {domain}/{local}/Maildir",
        ),
        "rescan_interval": (
            "watch_rescan_interval",
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
            "a number of seconds > 0",
        ),
        "workers": (
            "watch_workers",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "a whole number >= 0 (0: one per CPU)",
        ),
        "cur_max_age_days": (
            "watch_cur_max_age_days",
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
            "a number of days >= 0 (0: cur/ is never checked)",
        ),
    },
    "quarantine": {
        "retention_days": (
            "quarantine_retention_days",
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
            "a number of days > 0",
        ),
    },
    "reports": {
        "store": (
            "reports_store",
            lambda v: isinstance(v, str) and report_store_kind(v) is not None,
            "sqlite:PATH or postgresql://[user@][host][:port]/dbname[?param=value...]",
        ),
        "host": (
            "reports_host",
            lambda v: isinstance(v, str) and v.strip() and not any(c.isspace() for c in v),
            "this server's name, such as mx1.example.org",
        ),
        "retention_days": (
            "reports_retention_days",
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
            "a number of days > 0",
        ),
        "org_name": ("reports_org_name", lambda v: isinstance(v, str) and v.strip(), "a name"),
        "email": (
            "reports_email",
            lambda v: isinstance(v, str) and "@" in v,
            "an address such as dmarc-reports@example.org",
        ),
        "extra_contact_info": (
            "reports_extra_contact_info",
            lambda v: isinstance(v, str),
            "a string (a URL or a telephone number)",
        ),
        "sendmail": (
            "reports_sendmail",
            lambda v: isinstance(v, str) and v.startswith("/"),
            "an absolute path such as /usr/sbin/sendmail",
        ),
        "max_message_size": (
            "reports_max_message_size",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1000,
            "a number of bytes >= 1000",
        ),
        "sent_log": (
            "reports_sent_log",
            lambda v: isinstance(v, str) and v.startswith("/"),
            "an absolute path",
        ),
    },
    "learn": {
        "store": (
            "learn_store",
            lambda v: isinstance(v, str) and v.startswith("sqlite:"),
            "sqlite:PATH",
        ),
        "retention_days": (
            "learn_retention_days",
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
            "a number of days > 0",
        ),
        "min_messages": (
            "learn_min_messages",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "a whole number >= 1",
        ),
        "min_users": (
            "learn_min_users",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "a whole number >= 1",
        ),
        "sieve_dir": (
            "learn_sieve_dir",
            lambda v: isinstance(v, str) and v.startswith("/"),
            "an absolute directory (where `sieve install --dir` put the global script)",
        ),
    },
}


def _section_values(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Gives the Settings fields of the [watch] … [learn] sections, validated."""
    out: dict[str, Any] = {}
    for section, keys in _SECTION_KEYS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(source, section, "must be a table")
        for key, value in table.items():
            if key not in keys:
                raise ConfigError(source, f"{section}.{key}", "unknown key")
            name, check, wanted = keys[key]
            if not check(value):
                raise ConfigError(source, f"{section}.{key}", f"expected {wanted}, got {value!r}")
            out[name] = tuple(value) if isinstance(value, list) else value
    if "reports" in data:
        out.setdefault("reports_store", DEFAULT_REPORT_STORE)  # a [reports] table turns it on
    if "reports_store" in out:
        out.setdefault("reports_host", default_authserv_id())  # which MX wrote a row
    if "learn" in data:
        out.setdefault("learn_store", DEFAULT_LEARN_STORE)  # so does a [learn] table
    return out


def _network(source: str, key: str, value: object) -> Network:
    if not isinstance(value, str):
        raise ConfigError(source, key, f"expected a CIDR string, got {value!r}")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ConfigError(source, key, f"not a CIDR network: {value!r}") from None


def _forwarder(source: str, key: str, value: object) -> Network | str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, key, f"expected a CIDR or a host name, got {value!r}")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        name = value.strip().rstrip(".").lower()
        if any(c.isspace() or c in "/:@" for c in name):
            raise ConfigError(source, key, f"not a CIDR network or host name: {value!r}") from None
        return name


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


def settings_from_dict(data: dict[str, Any], source: str = "<config>") -> Settings:
    """Gives Settings for a parsed TOML document; raises ConfigError naming the key at fault."""
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(source, key, "unknown section or key")
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
        _forwarder(source, f"classifier.trusted_forwarders[{i}]", v)
        for i, v in enumerate(section.get("trusted_forwarders", []))
    )
    mode = section.get("dmarc_mode", "rfc9989")
    if mode not in ("rfc9989", "rfc7489"):
        raise ConfigError(source, "classifier.dmarc_mode", f"expected rfc9989 or rfc7489: {mode!r}")
    for key in ("dns_timeout", "dns_budget"):
        if key in section and not 0 < section[key] <= 600:
            raise ConfigError(source, f"classifier.{key}", f"out of range: {section[key]!r}")
    policy = data.get("policy", {})
    users = data.get("users", {})
    if not isinstance(policy, dict):
        raise ConfigError(source, "policy", "must be a table")
    if not isinstance(users, dict):
        raise ConfigError(source, "users", "must be a table of tables")
    return Settings(
        authserv_id=section.get("authserv_id") or default_authserv_id(),
        trusted_networks=LOOPBACK + nets,
        trusted_forwarders=forwarders,
        dmarc_mode=mode,
        dns_timeout=float(section.get("dns_timeout", 5.0)),
        dns_budget=float(section.get("dns_budget", 20.0)),
        dns_server=section.get("dns_server"),
        dns_zone=section.get("dns_zone"),
        log_file=section.get("log_file"),
        daemon_socket=section.get("daemon_socket"),
        **_daemon_values(section, source),
        **_section_values(data, source),
        source=source,
        policy_raw=policy,
        users_raw=users,
    )


def load_settings(path: str | Path | None) -> Settings:
    """Gives Settings from a file; the default path may be absent (then defaults apply).

    Raises ConfigError for an unreadable or invalid file.
    """
    explicit = path is not None
    p = Path(path) if path is not None else DEFAULT_PATH
    if not p.exists():
        if explicit:
            raise ConfigError(str(p), "-", "no such file")
        return settings_from_dict({}, source="<defaults>")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(p), "-", f"cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), "-", f"not valid TOML: {exc}") from None
    return settings_from_dict(data, source=str(p))
