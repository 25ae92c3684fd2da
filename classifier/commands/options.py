"""The options every command shares, and the one resolver they name.

Each command module adds ``add_common`` to its parsers and builds its
resolver with ``make_resolver_for``; `main` only dispatches.  Imports
nothing at its top, so `authsieve pipe` pays for none of it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs a pipe process milliseconds; mypy reads this as True
if TYPE_CHECKING:
    import argparse
    from types import SimpleNamespace

    from classifier.config import Config
    from classifier.lookup.resolver import Resolver


def add_common(p: argparse.ArgumentParser) -> None:
    """Adds --config, --dns-server, --dns-zone and --debug to a command's parser."""
    p.add_argument("--config", help="TOML config file (default /etc/authsieve/config.toml)")
    p.add_argument("--dns-server", metavar="HOST:PORT", help="ask this nameserver")
    p.add_argument("--dns-zone", metavar="FILE", help="answer DNS from this zone file (offline)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def make_resolver_for(args: argparse.Namespace | SimpleNamespace, config: Config) -> Resolver:
    """Gives the one resolver: --dns-zone, else --dns-server, else the config, else resolv.conf."""
    from classifier.lookup.resolver import make_resolver

    settings = config.engine

    zone = args.dns_zone or settings.dns_zone
    server = args.dns_server or settings.dns_server
    return make_resolver(dns_server=server, dns_zone=zone, timeout=settings.dns_timeout)
