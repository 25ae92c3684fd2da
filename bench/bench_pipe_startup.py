"""Benchmark: what Postfix pays per delivery — one fresh `authsieve pipe --deliver stdout` process.

Measured in the same run, alternating, so machine noise hits all three alike:
  (a) python3 -c pass
  (b) python3 -c "import spf, dkim, dns.resolver"   (the libraries we cannot avoid)
  (c) python3 -m classifier.cli pipe --deliver stdout < message   (DNS from a loopback server)
Run: .venv/bin/python bench/bench_pipe_startup.py [ROUNDS]
  (d) the same through `authsieve serve` (resident daemon, warm imports and DNS cache)
Target (issue 5): median (c) <= 1.3 x median (b); (d) is the fallback design when (c) misses.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.dnsserver import DnsTestServer  # noqa: E402

DEMO = ROOT / "examples" / "maildir"
SOCKET = Path("/tmp/authsieve-bench.sock")
MESSAGE = next((DEMO / "new").glob("1741761007.*"))  # newsletter: 2 DKIM signatures, SPF, DMARC


# Bytecode as an installed package has it (pip compiles on install); the variable that
# forbids writing it would make every start compile our modules from source.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: list[str], stdin: bytes = b"") -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, cwd=ROOT, env=ENV, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed: {proc.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    data = MESSAGE.read_bytes()
    py = sys.executable
    compileall.compile_dir(ROOT / "classifier", quiet=1)
    compileall.compile_dir(ROOT / "sieve", quiet=1)
    # A real nameserver on loopback, as in production (a zone file would be parsed at each start).
    server = DnsTestServer((DEMO / "zone.txt").read_text())
    commands = {
        "a: python -c pass": ([py, "-c", "pass"], b""),
        "b: import spf, dkim, dns": ([py, "-c", "import spf, dkim, dns.resolver"], b""),
        "c: authsieve pipe": (
            [
                py,
                "-m",
                "classifier.cli",
                "pipe",
                "--config",
                str(ROOT / "examples/config.toml"),
                "--dns-zone",
                str(DEMO / "zone.txt"),
                "--recipient",
                "alice@family.example",
                "--deliver",
                "stdout",
            ],
            data,
        ),
        "d: pipe --daemon": (
            [
                py,
                "-m",
                "classifier.cli",
                "pipe",
                "--config",
                str(ROOT / "examples/config.toml"),
                "--daemon",
                str(SOCKET),
                "--recipient",
                "alice@family.example",
                "--deliver",
                "stdout",
            ],
            data,
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    daemon = subprocess.Popen(
        [
            py,
            "-m",
            "classifier.cli",
            "serve",
            "--config",
            str(ROOT / "examples/config.toml"),
            "--dns-server",
            server.address,
            "--socket",
            str(SOCKET),
        ],
        cwd=ROOT,
        env=ENV,
    )
    for _ in range(100):
        if SOCKET.exists():
            break
        time.sleep(0.05)
    try:
        for _ in range(rounds):
            for name, (argv, stdin) in commands.items():
                times[name].append(timed(argv, stdin))
    finally:
        daemon.terminate()
        daemon.wait()
        server.stop()
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, median in medians.items():
        print(f"{name:28s} median {median:7.1f} ms")
    base = medians["b: import spf, dkim, dns"]
    print(
        f"authsieve pipe / imports-only = {medians['c: authsieve pipe'] / base:.2f}"
        f"; with --daemon: {medians['d: pipe --daemon'] / base:.2f} (target <= 1.30)"
    )


if __name__ == "__main__":
    main()
