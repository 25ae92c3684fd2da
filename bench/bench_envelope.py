"""Benchmark: parse the Received chain and build the Envelope of a typical 8-hop message.

Run: .venv/bin/python bench/bench_envelope.py  (prints the median µs per message)
Target (issue 2): <= 100 µs median in one process.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import reference_line
from classifier.config import config_from_dict
from classifier.envelope.trust import recover_envelope
from classifier.message import Message

HOPS = [
    "Received: from mx.family.example by mx.family.example with LMTP id kHsGBbTrYWUoBQAA"
    " (envelope-from <news@shop.example>) for <alice@family.example>;"
    " Tue, 28 Nov 2026 10:00:03 +0000",
    "Received: from localhost (localhost [127.0.0.1]) by mx.family.example (Postfix) with ESMTP"
    " id 4Sg2Vb0Q1Zz9sW1 for <alice@family.example>; Tue, 28 Nov 2026 10:00:02 +0000",
    "Received: from mx.family.example ([127.0.0.1]) by localhost (mx.family.example [127.0.0.1])"
    " (amavisd-new, port 10024) with ESMTP id abc123 for <alice@family.example>;"
    " Tue, 28 Nov 2026 10:00:02 +0000",
    "Received: from out3.mail.shop.example (out3.mail.shop.example [192.0.2.33]) (using TLSv1.3"
    " with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) (No client certificate requested) by"
    " mx.family.example (Postfix) with ESMTPS id 4Sg2Va3 for <alice@family.example>;"
    " Tue, 28 Nov 2026 10:00:01 +0000",
    "Received: from app7.internal.shop.example ([10.1.2.7]) by out3.mail.shop.example with"
    " esmtp (Exim 4.96) (envelope-from <news@shop.example>) id 1r7xYz-000abc-2Q for"
    " alice@family.example; Tue, 28 Nov 2026 10:00:00 +0000",
    "Received: from web1 (web1 [10.1.3.1]) by app7.internal.shop.example (8.17.1/8.17.1) with"
    " ESMTP id 3ASA00aa012345 for <alice@family.example>; Tue, 28 Nov 2026 09:59:59 +0000",
    "Received: (qmail 10681 invoked by uid 404); 28 Nov 2026 09:59:58 -0000",
    "Received: from localhost (localhost [127.0.0.1]) by web1 (OpenSMTPD) with ESMTP id"
    " 1a2b3c4d; Tue, 28 Nov 2026 09:59:58 +0000",
]
MESSAGE = (
    "Return-Path: <news@shop.example>\r\n"
    + "".join(h + "\r\n" for h in HOPS)
    + "From: Shop <news@shop.example>\r\nTo: alice@family.example\r\nSubject: Offers\r\n\r\nHi\r\n"
).encode()
TRUST = config_from_dict(
    {"classifier": {"authserv_id": "mx.family.example", "trusted_networks": ["203.0.113.25/32"]}}
).engine.trust


def main() -> None:
    env = recover_envelope(Message.parse(MESSAGE), TRUST)
    assert env.client_ip == "192.0.2.33", env
    runs = []
    for _ in range(30):
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            recover_envelope(Message.parse(MESSAGE), TRUST)
        runs.append((time.perf_counter() - start) / n * 1e6)
    print(f"envelope (8 hops, parse + trust path): median {statistics.median(runs):.1f} µs/message")
    print(reference_line())


if __name__ == "__main__":
    main()
