"""Where DNS answers come from: nameservers over the wire, or a zone file in memory.

- `ServerSource`: one or more nameservers (``--dns-server HOST:PORT`` or the
  system's resolv.conf), asked through the lean exchange of classifier/lookup/wire.py,
  with dnspython's own exchange for what it does not handle;
- `ZoneSource`: a zone file held in memory (``--dns-zone FILE``), answering
  authoritatively, NXDOMAIN and NODATA told apart.

The cache, the sessions of one message and the budget are classifier/lookup/resolver.py's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

from classifier.lookup import wire
from classifier.lookup.resolver import (
    MAX_CNAME_CHAIN,
    NEGATIVE_TTL,
    Answer,
    DnsTempError,
    Record,
    normalize_name,
)


def _records(rdatas: Iterable[Any]) -> tuple[Record, ...]:
    out: list[Record] = []
    for rd in rdatas:
        kind = dns.rdatatype.to_text(rd.rdtype)
        if kind in ("A", "AAAA"):
            out.append(str(rd.address))
        elif kind in ("TXT", "SPF"):
            out.append(tuple(bytes(s) for s in rd.strings))
        elif kind == "MX":
            out.append((int(rd.preference), normalize_name(rd.exchange.to_text())))
        elif kind in ("PTR", "CNAME", "NS"):
            out.append(normalize_name(rd.target.to_text()))
    return tuple(out)


class ServerSource(NamedTuple):
    """Asks recursive (or authoritative) nameservers, each given as (host, port)."""

    servers: tuple[tuple[str, int], ...]

    @classmethod
    def from_spec(cls, spec: str) -> ServerSource:
        """Gives a source for ``HOST``, ``HOST:PORT`` or ``[V6]:PORT``; raises ValueError."""
        spec = spec.strip()
        host, port = spec, 53
        if spec.startswith("["):
            host, _, rest = spec[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"unexpected text after the address: {spec!r}")
                port = int(rest[1:])
        elif spec.count(":") == 1:
            host, _, p = spec.partition(":")
            port = int(p)
        ipaddress.ip_address(host)
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        return cls(((host, port),))

    @classmethod
    def from_resolv_conf(cls, path: str = "/etc/resolv.conf") -> ServerSource:
        """Gives a source for the nameservers of resolv.conf (127.0.0.1 when it names none)."""
        servers = []
        try:
            for line in Path(path).read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    servers.append((parts[1].split("%")[0], 53))
        except OSError:
            pass
        return cls(tuple(servers) or (("127.0.0.1", 53),))

    def send(self, qname: str, rdtype: str, timeout: float) -> wire.Pending | None:
        """Sends the query to the first nameserver now; `lookup` reads the reply."""
        try:
            name = dns.name.from_text(qname + ".")
            return wire.Pending(name, dns.rdatatype.from_text(rdtype), self.servers[0], timeout)
        except (OSError, dns.exception.DNSException):
            return None  # `lookup` asks again, and says why when it fails

    def lookup(
        self, qname: str, rdtype: str, timeout: float, sent: wire.Pending | None = None
    ) -> Answer:
        """Gives the answer, reading `sent` (from `send`) for the first nameserver."""
        if sent is not None:
            name, kind = sent.qname, sent.rdtype
        else:
            name, kind = dns.name.from_text(qname + "."), dns.rdatatype.from_text(rdtype)
        last = "no nameserver answered"
        for host, port in self.servers:
            try:
                # The lean exchange answers the common case; dnspython's takes the rest.
                if sent is not None and sent.server == (host, port):
                    reply = sent.receive()
                else:
                    reply = wire.ask(name, kind, (host, port), timeout)
                if reply is None or reply.truncated:
                    reply = _full_exchange(
                        qname, rdtype, host, port, timeout, tcp=reply is not None
                    )
                elif reply.rcode == dns.rcode.FORMERR and not reply.edns:
                    # A server from before EDNS refuses the OPT record: ask it plainly, with
                    # TCP for what does not fit in 512 octets (RFC 6891 §7).
                    reply = _full_exchange(qname, rdtype, host, port, timeout, edns=False)
            except (dns.exception.Timeout, TimeoutError):
                last = f"timeout after {timeout:g}s at {host}:{port}"
                continue
            except (OSError, dns.exception.DNSException) as exc:
                last = f"{type(exc).__name__} at {host}:{port}: {exc}"
                continue
            if reply.rcode == dns.rcode.NXDOMAIN:
                return Answer(qname, rdtype, (), nxdomain=True, ttl=_negative_ttl(reply))
            if reply.rcode != dns.rcode.NOERROR:
                last = f"{dns.rcode.to_text(dns.rcode.Rcode.make(reply.rcode))} from {host}:{port}"
                continue
            return _answer_from_reply(qname, rdtype, name, kind, reply)
        raise DnsTempError(qname, rdtype, last)


def _full_exchange(
    qname: str,
    rdtype: str,
    host: str,
    port: int,
    timeout: float,
    *,
    edns: bool = True,
    tcp: bool = False,
) -> wire.Reply:
    """Asks through dnspython's own exchange: over TCP when asked, else UDP with TCP after TC."""
    query = _query(qname, rdtype, edns=edns)
    if tcp:
        response = dns.query.tcp(query, host, timeout=timeout, port=port)
    else:
        response, _ = dns.query.udp_with_fallback(query, host, timeout=timeout, port=port)

    def records(section: list[dns.rrset.RRset]) -> list[wire.Rr]:
        return [(rrset.name, rrset.rdtype, rrset.ttl, rd) for rrset in section for rd in rrset]

    return wire.Reply(
        response.rcode(),
        records(response.answer),
        records(response.authority),
        edns=response.edns >= 0,
    )


def _query(qname: str, rdtype: str, edns: bool) -> dns.message.Message:
    """Gives a recursive query, with EDNS0 unless asked not to.

    EDNS0 (RFC 6891) with the 1232-octet payload of DNS Flag Day 2020: a 2048-bit
    DKIM key fits, where the plain 512 octets would make every key lookup a TCP retry.
    """
    if edns:
        query = dns.message.make_query(qname + ".", rdtype, use_edns=0, payload=wire.EDNS_PAYLOAD)
    else:
        query = dns.message.make_query(qname + ".", rdtype)
    query.flags |= dns.flags.RD
    return query


def _negative_ttl(reply: wire.Reply) -> int:
    for _, rdtype, ttl, rdata in reply.authority:
        if rdtype == dns.rdatatype.SOA:
            # RFC 2308 §5: the smaller of the SOA's TTL and its MINIMUM field.
            return min(ttl, int(rdata.minimum), NEGATIVE_TTL)
    return NEGATIVE_TTL


def _answer_from_reply(
    qname: str, rdtype: str, name: dns.name.Name, wanted: int, reply: wire.Reply
) -> Answer:
    """Follows the CNAME chain inside one reply to the records of the asked type."""
    for _ in range(MAX_CNAME_CHAIN):
        found = [rr for rr in reply.answer if rr[1] == wanted and rr[0] == name]
        if found:
            rdatas = list(dict.fromkeys(rr[3] for rr in found))  # an RRset holds no duplicates
            return Answer(qname, rdtype, _records(rdatas), ttl=min(rr[2] for rr in found))
        cname = next(
            (rr for rr in reply.answer if rr[1] == dns.rdatatype.CNAME and rr[0] == name), None
        )
        if cname is None or wanted == dns.rdatatype.CNAME:
            break
        name = cname[3].target
    return Answer(qname, rdtype, (), ttl=_negative_ttl(reply))


class ZoneSource:
    """Answers from a zone file held in memory, authoritatively and without any network.

    The file uses absolute owner names (or ``$ORIGIN``) and may hold many
    domains.  A name that exists only because something below it exists
    (an empty non-terminal) answers NODATA, not NXDOMAIN (RFC 8020).
    """

    def __init__(self, text: str, filename: str = "<zone>") -> None:
        import dns.zone  # only --dns-zone reads a zone file: not in every pipe process

        # A default TTL, so that a zone written without $TTL loads as the test server loads it.
        zone = dns.zone.from_text(
            "$TTL 300\n" + text,
            origin=dns.name.root,
            relativize=False,
            check_origin=False,
            filename=filename,
        )
        self._nodes: dict[str, dict[str, tuple[Record, ...]]] = {}
        self._ttls: dict[tuple[str, str], int] = {}
        for name, node in zone.nodes.items():
            owner = normalize_name(name.to_text())
            per_type = self._nodes.setdefault(owner, {})
            for rdataset in node.rdatasets:
                kind = dns.rdatatype.to_text(rdataset.rdtype)
                rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
                rrset.update(rdataset)
                per_type[kind] = _records(rrset)
                self._ttls[(owner, kind)] = int(rdataset.ttl)
        self._names = frozenset(self._nodes)

    @classmethod
    def from_file(cls, path: str | Path) -> ZoneSource:
        """Reads a zone file; raises OSError or dns.exception.DNSException on bad input."""
        p = Path(path)
        return cls(p.read_text(encoding="utf-8"), filename=str(p))

    def _exists(self, owner: str) -> bool:
        if owner in self._names:
            return True
        suffix = "." + owner
        return any(n.endswith(suffix) for n in self._names)

    def send(self, qname: str, rdtype: str, timeout: float) -> None:
        """Nothing to send ahead: the zone answers at once."""
        return None

    def lookup(
        self, qname: str, rdtype: str, timeout: float, sent: wire.Pending | None = None
    ) -> Answer:
        owner = qname
        for _ in range(MAX_CNAME_CHAIN):
            per_type = self._nodes.get(owner, {})
            if rdtype in per_type:
                return Answer(qname, rdtype, per_type[rdtype], ttl=self._ttls[(owner, rdtype)])
            if "CNAME" in per_type and rdtype != "CNAME":
                owner = str(per_type["CNAME"][0])
                continue
            break
        return Answer(qname, rdtype, (), nxdomain=not self._exists(owner))
