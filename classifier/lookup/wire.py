"""One question over UDP and the records of its answer, without building DNS message objects.

dnspython's `dns.query.udp` builds a whole `Message` for the query and for
the reply (every name hashed into an RRset index, every field an enum):
about 0.6 ms of client CPU per lookup here, most of a cold check's time
(bench/bench_checks.py).  Here the query is the fixed 12-octet header, the
name as dnspython encodes it and an OPT record (RFC 1035 §4.1, RFC 6891
§6.1.2); the reply's records are read with dnspython's wire parser (names
with compression pointers, typed rdata), and only the answer and authority
sections are kept.

What this reader cannot take is left to dnspython's own exchange: a
truncated reply (asked again over TCP), FORMERR from a server without EDNS
(asked again plainly), an extended rcode, or a reply it cannot parse.
"""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.wire

EDNS_PAYLOAD = 1232  # DNS Flag Day 2020: fits a 2048-bit DKIM key without fragmentation
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_QTAIL = struct.Struct("!HH")
_RD = 0x0100
_QR = 0x8000
_TC = 0x0200
# RFC 6891 §6.1.2: root owner, type OPT, our payload size, extended rcode 0, version 0.
_OPT = b"\x00" + struct.pack("!HHIH", 41, EDNS_PAYLOAD, 0, 0)
_IN = dns.rdataclass.IN
_OPT_TYPE = dns.rdatatype.OPT

# A record as the reader keeps it: owner name, type, TTL, rdata.
Rr = tuple[dns.name.Name, int, int, Any]


class Reply(NamedTuple):
    """The parts of a reply that decide an answer: rcode, answer and authority records.

    `truncated` (TC: ask again over TCP) and `edns` (the reply carried OPT)
    tell the caller what to do with a reply that holds no usable records.
    """

    rcode: int
    answer: list[Rr]
    authority: list[Rr]
    truncated: bool = False
    edns: bool = True


def _read_records(parser: dns.wire.Parser, count: int) -> list[Rr]:
    records: list[Rr] = []
    for _ in range(count):
        owner = parser.get_name(decompress=True)
        rdtype, rdclass, ttl, length = parser.get_struct(_RR.format)
        with parser.restrict_to(length):
            if rdtype == _OPT_TYPE:
                parser.get_bytes(length)  # its class is the payload size, not a class
                records.append((owner, rdtype, ttl, None))
                continue
            rdata = dns.rdata.from_wire_parser(rdclass, rdtype, parser)
        if rdclass == _IN:
            records.append((owner, rdtype, ttl, rdata))
    return records


def parse_reply(wire: bytes, query_id: int, qname: dns.name.Name, rdtype: int) -> Reply | None:
    """Gives the reply to our question, or None when dnspython's full exchange must read it.

    Raises ValueError when the datagram is not the reply to this question
    (another ID, not a response, another question): the caller keeps waiting,
    so that a stray or forged datagram can neither answer nor fail the query.
    """
    parser = dns.wire.Parser(wire)
    try:
        reply_id, flags, qdcount, ancount, nscount, arcount = parser.get_struct(_HEADER.format)
    except dns.exception.FormError as exc:
        raise ValueError("short datagram") from exc
    if reply_id != query_id or not flags & _QR or flags & 0x7800 or qdcount != 1:
        raise ValueError("not a reply to this query")
    try:
        asked = parser.get_name(decompress=True)
        qtype, qclass = parser.get_struct(_QTAIL.format)
    except dns.exception.DNSException as exc:
        raise ValueError("unreadable question") from exc
    if asked != qname or qtype != rdtype or qclass != _IN:
        raise ValueError("a reply to another question")
    rcode = flags & 0x000F
    if flags & _TC:
        return Reply(rcode, [], [], truncated=True)  # what did fit is not the whole answer
    try:
        answer = _read_records(parser, ancount)
        authority = _read_records(parser, nscount)
        additional = _read_records(parser, arcount)
    except (dns.exception.DNSException, ValueError, struct.error):
        return None
    opt = [rr for rr in additional if rr[1] == _OPT_TYPE]
    if any(rr[2] >> 24 for rr in opt):
        return None  # an extended rcode (RFC 6891 §6.1.3): left to dnspython
    return Reply(rcode, answer, authority, edns=bool(opt))


def _same_host(got: str, asked: str) -> bool:
    """Tells whether two address texts name one host ("::1" and "0::1" do)."""
    if got == asked:
        return True
    try:
        return ipaddress.ip_address(got) == ipaddress.ip_address(asked)
    except ValueError:
        return False


class Pending:
    """A query on its way: sent from its own socket, its reply read by `receive`.

    Sending several before reading any lets their round trips overlap (a
    message's DKIM keys, DMARC record and SPF records are known at once).
    A new socket per query keeps the source port random (RFC 5452 §9.2), as
    dnspython does.
    """

    def __init__(
        self,
        qname: dns.name.Name,
        rdtype: int,
        server: tuple[str, int],
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.qname = qname
        self.rdtype = rdtype
        self.server = server
        self.timeout = timeout
        self._clock = clock
        # A query id an off-path forger cannot guess (RFC 5452 §9.2): the system's CSPRNG,
        # as secrets.randbits takes it, without the secrets module's import.
        self._id = int.from_bytes(os.urandom(2), "big")
        wire = (
            _HEADER.pack(self._id, _RD, 1, 0, 0, 1)
            + cast(bytes, qname.to_wire())  # bytes, as no file is given
            + _QTAIL.pack(rdtype, _IN)
            + _OPT
        )
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            self._deadline = clock() + timeout
            self._sock.sendto(wire, server)
        except OSError:
            self._sock.close()
            raise

    def receive(self) -> Reply | None:
        """Gives the reply (None: use the full path), and closes the socket.

        Raises TimeoutError when no matching reply came by the deadline.
        """
        # poll, not select: a busy daemon may hold more than select's 1,024 descriptors.
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        try:
            while True:
                # A reply that came in while another query was waited for is still
                # taken after the deadline: a query sent ahead (the DMARC record) must
                # not time out because a black-holed one (a DKIM key) was read first.
                left = max(self._deadline - self._clock(), 0.0)
                if not poller.poll(left * 1000):
                    raise TimeoutError(f"no reply in {self.timeout:g}s")
                try:
                    data, source = self._sock.recvfrom(65535)
                except BlockingIOError:
                    continue
                if source[1] != self.server[1] or not _same_host(source[0], self.server[0]):
                    continue  # not from the server we asked (RFC 5452 §4.1)
                try:
                    return parse_reply(data, self._id, self.qname, self.rdtype)
                except ValueError:
                    continue
        finally:
            self.close()

    def close(self) -> None:
        """Stops waiting for the reply (a query sent ahead that no check needed)."""
        self._sock.close()


def ask(
    qname: dns.name.Name,
    rdtype: int,
    server: tuple[str, int],
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> Reply | None:
    """Sends one EDNS query and gives the reply (None: use the full path).

    Raises TimeoutError when no matching reply came in time, OSError when
    the network refuses.
    """
    return Pending(qname, rdtype, server, timeout, clock).receive()
