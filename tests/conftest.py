"""Shared fixtures: a real DNS server on loopback, and the public test vectors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from classifier.lookup.resolver import Resolver
from classifier.lookup.sources import ServerSource
from tests.dnsserver import DnsTestServer

ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "vectors"
DATA = Path(__file__).resolve().parent / "data"


def vector_path(*parts: str) -> Path:
    """Gives a file of tests/vectors; a missing one fails (they ship with the tests, never skip)."""
    path = VECTORS.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"test vector missing: {path}")
    return path


@pytest.fixture
def dns_server() -> Iterator[Callable[..., DnsTestServer]]:
    """Gives a factory: zone text → a running DnsTestServer on 127.0.0.1, stopped after the test."""
    started: list[DnsTestServer] = []

    def start(
        zone_text: str, servfail: tuple[str, ...] = (), silent: tuple[str, ...] = ()
    ) -> DnsTestServer:
        server = DnsTestServer(zone_text, servfail=servfail, silent=silent)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def resolver_for(server: DnsTestServer, timeout: float = 2.0) -> Resolver:
    """Gives a Resolver that asks the loopback test server."""
    return Resolver(ServerSource.from_spec(server.address), timeout=timeout)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """Gives a fresh directory under /tmp that every local user can reach (mode 0755).

    pytest's tmp_path sits below a root-only directory; the security tests
    need one that their unprivileged user (nobody) can walk into.
    """
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="authsieve-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
