"""Whom the trust path steps over: trusted_networks and trusted_forwarders, compiled once.

A `TrustMatcher` is built when the config is loaded, one for the engine's
lists and one per distinct list of a policy's trusted_forwarders
(`Settings.trust_for`), and handed to the walk (`classifier.envelope.trust`).
Every message asks about the same few addresses (loopback, our relays), so a
matcher remembers its answers, a bounded number of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from classifier.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
_MAX_ANSWERS = 4096  # addresses remembered per matcher; then it starts afresh


def parse_forwarder(source: str, key: str, value: object) -> Network | str:
    """Gives a trusted_forwarders entry as a network or a lower-case host name; else ConfigError."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, key, f"expected a CIDR or a host name, got {value!r}")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        name = value.strip().rstrip(".").lower()
        if any(c.isspace() or c in "/:@" for c in name):
            raise ConfigError(source, key, f"not a CIDR network or host name: {value!r}") from None
        return name


class TrustMatcher:
    """The trusted networks (loopback always among them) and forwarders of one policy."""

    __slots__ = ("_answers", "forwarders", "networks")

    def __init__(self, networks: Iterable[Network], forwarders: Iterable[Network | str]) -> None:
        self.networks: tuple[Network, ...] = tuple(networks)
        self.forwarders: tuple[Network | str, ...] = tuple(dict.fromkeys(forwarders))
        self._answers: dict[str, bool] = {}

    def with_forwarders(self, entries: Iterable[Network | str]) -> TrustMatcher:
        """Gives a new matcher with more forwarders (a policy's list) after these."""
        return TrustMatcher(self.networks, (*self.forwarders, *entries))

    def is_trusted_ip(self, ip: str) -> bool:
        """Tells whether ip lies inside the trusted networks; answers are remembered."""
        trusted = self._answers.get(ip)
        if trusted is None:
            if len(self._answers) >= _MAX_ANSWERS:
                self._answers.clear()
            trusted = self._answers[ip] = _in_networks(ip, self.networks)
        return trusted

    def forwarder_match(self, ip: str | None, names: tuple[str | None, ...]) -> str:
        """Gives the forwarder entry that matches this hop's IP or host names, or ""."""
        if not self.forwarders:
            return ""
        for entry in self.forwarders:
            if isinstance(entry, str):
                for name in names:
                    n = (name or "").rstrip(".").lower()
                    if n and (n == entry or n.endswith("." + entry)):
                        return entry
            elif ip and _in_networks(ip, (entry,)):
                return str(entry)
        return ""


def _in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in networks)
