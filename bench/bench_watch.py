"""Benchmark: `authsieve watch` throughput on a full new/, and its memory over 100,000 messages.

Throughput: 10,000 messages (copies of the 17 demo messages: DKIM RSA and
Ed25519, ARC, SPF include chains, every verdict) wait in one Maildir's new/;
the watcher files them all (`--once` semantics) with the DNS cache already
warm (the resolver answered every query of the demo once before the worker
processes were forked).  DNS is the loopback test server (real UDP), so a
cache miss would cost a real round trip.  `--compare` also runs threads and
other pool sizes on a smaller set, to show what helps on this machine.

Memory: the real `authsieve watch` command runs as a service; messages are
dropped into new/ in batches (tmp/ then rename, like an MDA) and the filed
copies are deleted once a batch is done, so disk use stays bounded.  The
resident set of the watcher and its worker processes is sampled after
every batch.

Run:  python3 bench/bench_watch.py                 # both, 10,000 and 100,000
      python3 bench/bench_watch.py --compare       # threads vs processes
      python3 bench/bench_watch.py --memory 0      # throughput only
Targets (issue 6): >= 500 msg/s; RSS flat, <= 150 MB peak.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier.config import load_config  # noqa: E402
from classifier.evaluate import check_and_annotate  # noqa: E402
from classifier.lookup.resolver import Resolver  # noqa: E402
from classifier.lookup.sources import ServerSource  # noqa: E402
from classifier.mailstore.filing import Job  # noqa: E402
from classifier.mailstore.maildir import MaildirName  # noqa: E402
from classifier.mailstore.watch import Watcher, WatchOptions  # noqa: E402
from tests.dnsserver import DnsTestServer  # noqa: E402

DEMO = ROOT / "examples" / "maildir"
# The command as the console script runs it (python -m would load commands/main.py twice).
CLI = [
    sys.executable,
    "-c",
    "import sys; from classifier.commands.main import main; sys.exit(main())",
]
CONFIG = ROOT / "examples" / "config.toml"


def templates() -> list[bytes]:
    """Gives the bytes of every demo message (new/, cur/ and .Junk/cur/)."""
    files = [
        p
        for sub in ("new", "cur", ".Junk/cur")
        for p in sorted((DEMO / sub).iterdir())
        if not p.name.startswith(".")
    ]
    return [p.read_bytes() for p in files]


def fill(new: Path, count: int, start: int = 0) -> None:
    """Drops `count` messages into new/ the way an MDA does: tmp/ first, then rename."""
    msgs = templates()
    tmp = new.parent / "tmp"
    for i in range(start, start + count):
        data = msgs[i % len(msgs)]
        name = f"{1_700_000_000 + i}.M{i}P4242.bench,S={len(data)},W={len(data)}"
        (tmp / name).write_bytes(data)
        os.rename(tmp / name, new / name)


def make_maildir(base: Path) -> Path:
    maildir = base / "example.org" / "alice" / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True)
    return maildir


def warm_resolver(server: DnsTestServer) -> Resolver:
    """Gives a resolver whose cache already holds every answer the demo messages need."""
    resolver = Resolver(ServerSource.from_spec(server.address), timeout=2.0)
    config = load_config(CONFIG)
    for data in templates():
        check_and_annotate(data, config.engine, resolver, config.policies, None, None)
    return resolver


def throughput(
    count: int, workers: int, pool: str, server: DnsTestServer, base: Path
) -> tuple[float, float]:
    """Gives (messages filed per wall-clock second, CPU milliseconds per message, all processes)."""
    work = Path(tempfile.mkdtemp(dir=base))
    maildir = make_maildir(work)
    fill(maildir / "new", count)
    job = Job(load_config(CONFIG), warm_resolver(server))
    options = WatchOptions(roots=(str(maildir),), workers=workers, pool=pool, once=True)
    watcher = Watcher(options, job, notify=lambda _s: False)
    cpu = _cpu_seconds()
    started = time.perf_counter()
    watcher.run()
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    filed = watcher.counts["filed"]
    left = sum(1 for n in os.listdir(maildir / "new") if not MaildirName.parse(n).marked)
    shutil.rmtree(work)
    if filed != count or left:
        raise SystemExit(f"only {filed} of {count} filed, {left} left in new/")
    return count / elapsed, cpu / count * 1000


def _cpu_seconds() -> float:
    """Gives the CPU time of this process and its reaped children (the worker processes)."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    """Gives pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    return out


def memory(total: int, batch: int, workers: int, server: DnsTestServer, base: Path) -> None:
    """Runs the watch command over `total` messages in batches; prints the RSS after each."""
    work = Path(tempfile.mkdtemp(dir=base))
    maildir = make_maildir(work)
    log = work / "watch.log"
    config = work / "config.toml"
    config.write_text(
        CONFIG.read_text().replace("[classifier]", f'[classifier]\nlog_file = "{log}"', 1)
    )
    argv = [*CLI, "watch", "--config", str(config)]
    argv += ["--dns-server", server.address, "--rescan-interval", "2"]
    argv += ["--workers", str(workers), str(maildir)]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    samples: list[tuple[int, int, list[int]]] = []
    started = time.perf_counter()
    try:
        time.sleep(1.5)
        done = 0
        while done < total:
            fill(maildir / "new", batch, done)
            done += batch
            while any(not MaildirName.parse(n).marked for n in os.listdir(maildir / "new")):
                time.sleep(0.05)
            for folder in (maildir, maildir / ".Junk", maildir / ".Quarantine"):
                for sub in ("new", "cur"):
                    d = folder / sub
                    if d.is_dir():
                        for n in os.listdir(d):
                            os.unlink(d / n)
            per = [rss_kb(p) for p in tree(proc.pid)]
            samples.append((done, sum(per), per))
            if done % (batch * 5) == 0 or done == total:
                print(
                    f"  {done:>7} messages  RSS total {sum(per) / 1024:6.1f} MB  "
                    f"({' + '.join(f'{k / 1024:.1f}' for k in per)})",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    elapsed = time.perf_counter() - started
    peak = max(s[1] for s in samples)
    first = samples[0][1]
    last = samples[-1][1]
    print(
        f"memory: {total} messages in {elapsed:.0f} s; RSS total first {first / 1024:.1f} MB, "
        f"last {last / 1024:.1f} MB, peak {peak / 1024:.1f} MB (main + {workers} workers)"
    )
    shutil.rmtree(work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--memory", type=int, default=100_000, help="0 to skip")
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--compare", action="store_true", help="threads vs processes, pool sizes")
    ap.add_argument("--dir", default=None, help="where to build the Maildirs (default: $TMPDIR)")
    args = ap.parse_args()
    # The in-process runs log nowhere (the engine's log lines would cost the same in production).
    logging.getLogger("authsieve").addHandler(logging.NullHandler())
    logging.getLogger("authsieve").propagate = False
    zone = (DEMO / "zone.txt").read_text()
    server = DnsTestServer(zone)
    base = Path(tempfile.mkdtemp(prefix="bench-watch-", dir=args.dir))
    try:
        print(f"{os.cpu_count()} CPUs; DNS: loopback server {server.address}, cache warm")
        if args.compare:
            n = min(args.messages, 3000)
            for pool, workers in (
                ("process", 0),
                ("thread", 1),
                ("thread", 2),
                ("thread", 4),
                ("process", 1),
                ("process", 2),
                ("process", 3),
                ("process", 4),
            ):
                label = "main process only" if workers == 0 else f"{workers} {pool}(s)"
                rate, cpu = throughput(n, workers, pool, server, base)
                print(f"  {n} messages, {label:<18} {rate:5.0f} msg/s  {cpu:.2f} ms CPU/msg")
        print(f"  ({_load()})")
        rate, cpu = throughput(args.messages, args.workers, "process", server, base)
        cores = os.cpu_count() or 1
        print(
            f"throughput: {args.messages} messages waiting in new/, {args.workers} worker "
            f"processes: {rate:.0f} msg/s wall (target >= 500); {cpu:.2f} ms CPU per message "
            f"(all processes) = {cores / cpu * 1000:.0f} msg/s if {cores} cores were ours alone"
        )
        print(f"  ({_load()})")
        if args.memory:
            memory(args.memory, args.batch, args.workers, server, base)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
