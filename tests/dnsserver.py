"""A small authoritative DNS server on 127.0.0.1 for tests, answering from zone text.

It is deliberately independent of `classifier.lookup.sources.ZoneSource`: tests reach it
over real UDP/TCP through `ServerSource`, as authsieve reaches a real server.

Behaviour that SPF and DMARC depend on is exact: NXDOMAIN for a name that does
not exist, NODATA (NOERROR, empty answer, SOA in authority) for an existing
name or an empty non-terminal, CNAME chains followed inside the zone, TXT
strings as written, and TC over UDP for answers over 512 octets (no EDNS) so
the client retries over TCP.  Names listed in `servfail` answer SERVFAIL; names
listed in `silent` never answer (a black-holed nameserver: the client times out).
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import traceback
from collections import Counter

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

SOA_TEXT = ". 300 IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 300"


class ZoneData:
    """The zone text parsed into rdatasets by absolute owner name."""

    def __init__(self, text: str) -> None:
        zone = dns.zone.from_text(
            "$TTL 300\n" + text, origin=dns.name.root, relativize=False, check_origin=False
        )
        self.nodes = {name: node for name, node in zone.nodes.items()}
        self.soa = dns.rrset.from_text(*SOA_TEXT.split(" ", 4)[:4], SOA_TEXT.split(" ", 4)[4])

    def exists(self, name: dns.name.Name) -> bool:
        if name in self.nodes:
            return True
        return any(n.is_subdomain(name) for n in self.nodes)


class DnsTestServer:
    """Serves ZoneData on 127.0.0.1 at a random port over UDP and TCP until `stop()`."""

    def __init__(
        self,
        zone_text: str,
        servfail: tuple[str, ...] = (),
        edns: bool = True,
        silent: tuple[str, ...] = (),
    ) -> None:
        self.zone = ZoneData(zone_text)
        self.servfail = {dns.name.from_text(n) for n in servfail}
        self.silent = {dns.name.from_text(n) for n in silent}
        self.edns = edns  # False: answer FORMERR to a query with EDNS, as old servers do
        self.queries: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[str, str]] = []  # every question, in the order it came in
        # The zone never changes: each distinct question is answered once, and a repeat gets
        # the same reply with its own ID (keyed by the query after the ID: flags, question,
        # EDNS).  A benchmark then times the client, not this server's Python.
        self._replies: dict[tuple[bytes, bool], tuple[tuple[str, str], bytes]] = {}
        self._lock = threading.Lock()
        server = self

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                while True:
                    head = self.request.recv(2)
                    if len(head) < 2:
                        return
                    (length,) = struct.unpack("!H", head)
                    data = b""
                    while len(data) < length:
                        chunk = self.request.recv(length - len(data))
                        if not chunk:
                            return
                        data += chunk
                    reply = server.answer(data, udp=False)
                    if not reply:
                        continue  # a silent name: the client waits out its timeout
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        # One thread answers UDP in turn, straight from the socket: socketserver's select
        # loop and handler object per datagram would cost more than a cached answer.
        # No SO_REUSEADDR: with it, Linux may give a port-0 bind a port another such UDP
        # socket holds, and a test's queries would reach another test's server.
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        for attempt in range(20):
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._udp.bind(("127.0.0.1", 0))
            self.port = self._udp.getsockname()[1]
            try:  # TCP on the same port number, as a nameserver listens
                self._tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
                break
            except OSError:
                self._udp.close()
                if attempt == 19:
                    raise
        self._stopping = False
        self._tcp.daemon_threads = True
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._tcp.serve_forever, args=(0.05,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _serve_udp(self) -> None:
        while True:
            try:
                data, client = self._udp.recvfrom(65535)
            except OSError:
                return
            if self._stopping:
                return
            try:
                reply = self.answer(data, udp=True)
                if reply:
                    self._udp.sendto(reply, client)
            except Exception:  # a bad datagram must not stop the server
                traceback.print_exc()

    @property
    def address(self) -> str:
        """Gives ``127.0.0.1:PORT`` as `--dns-server` takes it."""
        return f"127.0.0.1:{self.port}"

    @property
    def query_count(self) -> int:
        with self._lock:
            return sum(self.queries.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.queries.clear()
            self.log.clear()

    def stop(self) -> None:
        self._stopping = True
        # A datagram to itself wakes the UDP thread, which sees the flag and returns.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wake:
            wake.sendto(b"", ("127.0.0.1", self.port))
        self._threads[0].join(5)
        self._udp.close()
        self._tcp.shutdown()
        self._tcp.server_close()

    def answer(self, wire: bytes, udp: bool) -> bytes:
        key = (wire[2:], udp)
        with self._lock:
            known = self._replies.get(key)
            if known is not None:
                self.queries[known[0]] += 1
                self.log.append(known[0])
        if known is not None:
            return wire[:2] + known[1][2:]
        reply, question = self._answer(wire, udp)
        if question is not None:
            with self._lock:
                self._replies[key] = (question, reply)
        return reply

    def _answer(self, wire: bytes, udp: bool) -> tuple[bytes, tuple[str, str] | None]:
        """Gives the reply to a query, and its (name, type) when it asked a question."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return b"", None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire(), None
        if query.edns >= 0 and not self.edns:
            response.use_edns(False)
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire(), None
        question = query.question[0]
        asked = (question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype))
        with self._lock:
            self.queries[asked] += 1
            self.log.append(asked)
        if question.name in self.silent:
            return b"", None  # no reply, and none remembered: every retry goes unanswered
        if question.name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire(), asked
        self._fill(response, question.name, question.rdtype)
        wire_out = response.to_wire(max_size=65535)  # the UDP limit is applied below
        limit = query.payload if query.edns >= 0 else 512
        if udp and len(wire_out) > limit:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire(), asked
        return wire_out, asked

    def _fill(self, response: dns.message.Message, name: dns.name.Name, rdtype: int) -> None:
        for _ in range(8):
            node = self.zone.nodes.get(name)
            if node is not None:
                found = node.get_rdataset(dns.rdataclass.IN, rdtype)
                if found is not None:
                    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
                    rrset.update(found)
                    response.answer.append(rrset)
                    return
                cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
                if cname is not None and rdtype != dns.rdatatype.CNAME:
                    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.CNAME)
                    rrset.update(cname)
                    response.answer.append(rrset)
                    name = cname[0].target
                    continue
            break
        if not self.zone.exists(name):
            response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(self.zone.soa)


def free_udp_port() -> int:
    """Gives a loopback port where nothing listens (for temperror tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DnsServerProcess:
    """The same server in a process of its own, as a real nameserver runs beside authsieve.

    For benchmarks: in-process, the server's own Python work would compete with
    the code measured for one interpreter lock.
    """

    def __init__(self, zone_text: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(zone_text)
        self._proc.stdin.close()
        self.address = self._proc.stdout.readline().strip()
        if not self.address:
            self._proc.kill()
            raise RuntimeError("the DNS server process did not start")

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


def _serve_stdin_zone() -> None:
    """Serves the zone text read from stdin; prints the address, then runs until told to stop.

    SIGTERM or SIGINT stops it, and so does the death of the process that started
    it: a benchmark killed half-way must not leave a server behind.
    """
    parent = os.getppid()
    server = DnsTestServer(sys.stdin.read())
    print(server.address, flush=True)
    while os.getppid() == parent:
        if signal.sigtimedwait({signal.SIGTERM, signal.SIGINT}, 1.0) is not None:
            break
    server.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    _serve_stdin_zone()
