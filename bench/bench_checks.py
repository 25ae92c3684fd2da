"""Benchmark: the full check of a typical message, warm and cold DNS cache.

The message carries 3 DKIM signatures (RSA-2048, RSA-1024, Ed25519), its SPF
record needs an include chain of 4 lookups, and DMARC is evaluated.  DNS comes
from the loopback test server (tests/dnsserver.py): queries are counted on one
in this process, and timed against one in a process of its own, as a real
nameserver runs beside authsieve (in-process, its Python would share the
interpreter lock with the check being timed).  This VM's speed drifts by up to
1.6x from minute to minute: read the figures against the machine reference
printed with them (bench/machine.py).

Run: .venv/bin/python bench/bench_checks.py
Targets (issue 3): warm cache <= 2 ms median, cold cache <= 10 ms median;
no query twice within one message.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dkim  # noqa: E402

from bench.machine import reference_line  # noqa: E402
from classifier.auth.checks import run_checks  # noqa: E402
from classifier.config import config_from_dict  # noqa: E402
from classifier.lookup.resolver import Resolver  # noqa: E402
from classifier.lookup.sources import ServerSource  # noqa: E402
from tests.dnsserver import DnsServerProcess, DnsTestServer  # noqa: E402

DATA = ROOT / "tests" / "vectors" / "dkim" / "dkimpy-data"


def txt(owner: str, record: str) -> str:
    record = "".join(record.split())
    chunks = " ".join(f'"{record[i : i + 200]}"' for i in range(0, len(record), 200))
    return f"{owner}. TXT {chunks}\n"


def build() -> tuple[bytes, str]:
    zone = (
        txt("s2048._domainkey.shop.example", (DATA / "2048_testkey_wo_markers.pub.txt").read_text())
        + txt(
            "s1024._domainkey.esp.example", (DATA / "1024_testkey_wo_markers.pub.txt").read_text()
        )
        + txt("ed._domainkey.shop.example", (DATA / "ed25519test.dns").read_text())
        + 'shop.example. TXT "v=spf1 include:_spf1.shop.example -all"\n'
        + '_spf1.shop.example. TXT "v=spf1 include:_spf2.shop.example -all"\n'
        + '_spf2.shop.example. TXT "v=spf1 include:_spf3.shop.example -all"\n'
        + '_spf3.shop.example. TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
        + '_dmarc.shop.example. TXT "v=DMARC1; p=reject; rua=mailto:d@shop.example"\n'
    )
    body = (
        b"From: Shop <news@shop.example>\r\nTo: alice@family.example\r\n"
        b"Subject: This week's offers\r\nDate: Sat, 28 Nov 2026 09:00:00 +0000\r\n"
        b"Message-ID: <offers-4711@shop.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"Offers of the week.\r\n" * 150
    )
    signed = body
    for selector, domain, key, algo in (
        (b"ed", b"shop.example", (DATA / "ed25519test.key").read_bytes(), b"ed25519-sha256"),
        (b"s1024", b"esp.example", (DATA / "1024_testkey.key").read_bytes(), b"rsa-sha256"),
        (b"s2048", b"shop.example", (DATA / "2048_testkey.key").read_bytes(), b"rsa-sha256"),
    ):
        signed = dkim.sign(signed, selector, domain, key, signature_algorithm=algo) + signed
    hops = (
        b"Return-Path: <bounce@shop.example>\r\n"
        b"Received: from mx.family.example by mx.family.example with LMTP id kHsG"
        b" (envelope-from <bounce@shop.example>) for <alice@family.example>;"
        b" Sat, 28 Nov 2026 09:00:03 +0000\r\n"
        b"Received: from out.shop.example (out.shop.example [192.0.2.33]) by mx.family.example"
        b" (Postfix) with ESMTPS id 4Sg2Va3 for <alice@family.example>;"
        b" Sat, 28 Nov 2026 09:00:01 +0000\r\n"
    )
    return hops + signed, zone


def main() -> None:
    message, zone = build()
    server = DnsTestServer(zone)
    settings = config_from_dict({"classifier": {"authserv_id": "mx.family.example"}}).engine
    try:
        report = run_checks(
            message, settings, Resolver(ServerSource.from_spec(server.address), timeout=2)
        )
        results = [d.result for d in report.dkim]
        assert report.spf.result == "pass" and results == ["pass"] * 3, (report.spf, results)
        assert report.dmarc.result == "pass", report.dmarc
        print(
            f"DNS queries for one message (cold): {report.dns_queries} looked up, "
            f"{server.query_count} reached the server, "
            f"repeated within the message: {sum(n - 1 for n in server.queries.values())}"
        )
    finally:
        server.stop()
    # Timed against the same server in a process of its own, as a real nameserver runs.
    server = DnsServerProcess(zone)
    try:
        cold = []
        for _ in range(200):
            resolver = Resolver(ServerSource.from_spec(server.address), timeout=2)
            start = time.perf_counter()
            run_checks(message, settings, resolver)
            cold.append((time.perf_counter() - start) * 1000)
        warm_resolver = Resolver(ServerSource.from_spec(server.address), timeout=2)
        run_checks(message, settings, warm_resolver)
        sent = warm_resolver.queries_sent
        warm = []
        for _ in range(500):
            start = time.perf_counter()
            run_checks(message, settings, warm_resolver)
            warm.append((time.perf_counter() - start) * 1000)
        assert warm_resolver.queries_sent == sent, "warm runs must not reach the server"
    finally:
        server.stop()
    print(
        f"full check, warm cache: median {statistics.median(warm):.2f} ms "
        f"(p90 {statistics.quantiles(warm, n=10)[-1]:.2f} ms)"
    )
    print(
        f"full check, cold cache: median {statistics.median(cold):.2f} ms "
        f"(p90 {statistics.quantiles(cold, n=10)[-1]:.2f} ms)"
    )
    print(reference_line())


if __name__ == "__main__":
    main()
