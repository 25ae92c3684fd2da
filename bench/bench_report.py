"""Benchmark: `authsieve report` over a 20,000-message Maildir, cold and cached.

The Maildir holds mail from 1,000 sender domains (20 messages each, senders
interleaved in time as in a real mailbox): 60 % DKIM-signed (RSA-2048) with
SPF through an include and DMARC p=reject, the rest unsigned with SPF pass,
SPF fail (spoofed), no records at all, or SPF softfail.  DNS comes from the
loopback test server (tests/dnsserver.py), started in its own process as a
real nameserver would be.

- cold: an empty results cache, every message checked (`--jobs`, default 8);
- cached: the same Maildir judged by another policy (zero DNS queries).

Both runs are the real command (`python3 -m classifier.commands.main report --json`),
timed end to end, start-up included; its CPU time is printed too, because on
a shared machine the wall-clock figure mostly measures the neighbours.

Run: python3 bench/bench_report.py [--messages 20000] [--jobs 8] [--jobs-sweep 1,2,4,8]
Targets (issue 7): cold >= 300 msg/s, cached re-run >= 3,000 msg/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dkim

ROOT = Path(__file__).resolve().parent.parent
KEYS = ROOT / "examples" / "keys"
KEY_NAME = "plumbing.example.selector1"  # a demo RSA-2048 key: its public half serves every domain
PER_DOMAIN = 20
SERVER = """
import sys
from tests.dnsserver import DnsTestServer
server = DnsTestServer(open(sys.argv[1]).read())
print(server.address, flush=True)
for _ in sys.stdin:
    print(server.query_count, flush=True)
"""
CONFIG = """
[classifier]
authserv_id = "mx.family.example"
trusted_networks = ["203.0.113.25/32"]

[policy]
spf_fail = "junk"
dmarc_reject = "quarantine"
blocked_domain_suffixes = [".cyou"]
"""
STRICT = CONFIG + 'spf_none = "junk"\nspf_softfail = "junk"\ndmarc_none = "junk"\n'


KINDS = ["signed"] * 6 + ["unsigned", "spoofed", "bare", "softfail"]


def kind(i: int) -> str:
    return KINDS[i % len(KINDS)]


def zone(domains: int) -> str:
    """Gives the zone of every sender domain (SPF, include, DKIM key, DMARC)."""
    key = "".join((KEYS / f"{KEY_NAME}.dns").read_text().split())
    chunks = " ".join(f'"{key[i : i + 200]}"' for i in range(0, len(key), 200))
    lines = []
    for i in range(domains):
        d, k, net = f"d{i:04d}.example", kind(i), f"198.18.{i // 256}.{i % 256}"
        if k == "bare":
            lines.append(f"{d}. A {net}")
            continue
        end = "~all" if k == "softfail" else "-all"
        lines.append(f'{d}. TXT "v=spf1 include:_spf.{d} {end}"')
        lines.append(f'_spf.{d}. TXT "v=spf1 ip4:{net}/32 {end}"')
        policy = "reject" if k == "signed" else ("quarantine" if k == "spoofed" else "none")
        lines.append(f'_dmarc.{d}. TXT "v=DMARC1; p={policy}"')
        if k == "signed":
            lines.append(f"s1._domainkey.{d}. TXT {chunks}")
    return "\n".join(lines) + "\n"


def signed_body(i: int, private: bytes) -> bytes:
    d = f"d{i:04d}.example"
    body = (
        f"From: News <news@{d}>\r\nTo: alice@family.example\r\nSubject: Issue {i}\r\n"
        f"Date: Wed, 01 Jan 2025 10:00:00 +0000\r\nMessage-ID: <issue-{i}@{d}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + b"News of the week, one line of many.\r\n" * 40
    if kind(i) == "signed":
        # One signature per domain (RSA signing is slow); every copy is still verified.
        body = dkim.sign(body, b"s1", d.encode(), private) + body
    return body


def build(root: Path, messages: int) -> int:
    """Writes the Maildir, senders interleaved as in a real mailbox; gives the domain count."""
    private = (KEYS / f"{KEY_NAME}.key").read_bytes()
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True)
    start = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
    domains = -(-messages // PER_DOMAIN)
    bodies = [signed_body(i, private) for i in range(domains)]
    for n in range(messages):
        i = n % domains
        d, k = f"d{i:04d}.example", kind(i)
        ip = f"198.19.{i // 256}.{i % 256}" if k == "spoofed" else f"198.18.{i // 256}.{i % 256}"
        when = start + n * 300  # one message every five minutes: about 70 days
        date = datetime.fromtimestamp(when, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        data = (
            f"Return-Path: <bounce-{n}@{d}>\r\nDelivered-To: alice@family.example\r\n"
            f"Received: from mail.{d} (mail.{d} [{ip}])\r\n"
            f"\tby mx.family.example (Postfix) with ESMTPS id Q{n:06d}\r\n"
            f"\tfor <alice@family.example>; {date}\r\n"
        ).encode() + bodies[i]
        sub = "cur" if n % 3 else "new"
        name = f"{when}.M{n}P1.mx,S={len(data)}" + (":2,S" if sub == "cur" else "")
        (root / sub / name).write_bytes(data)
    return domains


def report(address: str, d: Path, policy: str, jobs: int, cache: Path) -> Run:
    """Gives the timing of one `authsieve report --json` run and its JSON."""
    argv = [
        sys.executable,
        "-m",
        "classifier.commands.main",
        "report",
        "--config",
        str(d / "config.toml"),
        "--dns-server",
        address,
        "--cache",
        str(cache),
        "--policy",
        str(d / policy),
        "--jobs",
        str(jobs),
        "--json",
        str(d / "Maildir"),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, json.loads(proc.stdout))


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float  # user + system seconds of the report process (its threads included)
    doc: dict

    def line(self, messages: int, asked: int, target: int) -> str:
        return (
            f"{self.wall:6.1f} s = {messages / self.wall:5.0f} msg/s end to end "
            f"(CPU {self.cpu:.1f} s = {messages / self.cpu:5.0f} msg per CPU-second), "
            f"{asked} DNS queries at the server; target >= {target:,} msg/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--jobs-sweep", default="", help="e.g. 1,2,4,8: cold runs per --jobs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="authsieve-bench-") as tmp:
        d = Path(tmp)
        started = time.perf_counter()
        domains = build(d / "Maildir", args.messages)
        (d / "zone.txt").write_text(zone(domains))
        (d / "config.toml").write_text(CONFIG)
        (d / "strict.toml").write_text(STRICT)
        print(
            f"{args.messages} messages from {domains} sender domains, "
            f"generated in {time.perf_counter() - started:.1f} s on {os.cpu_count()} CPUs"
        )
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(d / "zone.txt")],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdin and server.stdout
        address = server.stdout.readline().strip()

        def asked() -> int:
            server.stdin.write("count\n")  # type: ignore[union-attr]
            server.stdin.flush()  # type: ignore[union-attr]
            return int(server.stdout.readline())  # type: ignore[union-attr]

        try:
            print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            for jobs in [int(j) for j in args.jobs_sweep.split(",") if j] or [args.jobs]:
                cache, before = d / f"cache-{jobs}.sqlite3", asked()
                run = report(address, d, "config.toml", jobs, cache)
                print(f"cold --jobs {jobs}: " + run.line(args.messages, asked() - before, 300))
            before = asked()
            run = report(address, d, "strict.toml", args.jobs, cache)
            assert run.doc["scan"]["cached"] == args.messages, run.doc["scan"]
            print("cached, another policy: " + run.line(args.messages, asked() - before, 3000))
            strict = run.doc["policies"][0]
            print(f"strict policy: {strict['counts']}; {strict['moves_total']} moves")
            print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            server.stdin.close()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
