"""Benchmark: the DMARC report store at a busy server's month (issue 16, item 5).

1. Fill: N rows (default 1,000,000) over 30 days: ~2,000 Policy Domains with a
   long-tailed (Zipf) share of the mail, a few to a few hundred source IPs
   each, mixed results (DKIM/SPF pass and fail, forwarded mail, spoofing),
   one to three DKIM signatures.  Written in time order, 20,000 rows a
   transaction (SQLite: ReportStore.append; PostgreSQL: COPY, the fill is not
   what is measured).
2. One day's reports: the real command, `python -m classifier.commands.main
   dmarc-report --day D --dry-run DIR`, timed end to end (start-up, purge,
   read, XML, gzip), three runs; plus the read and the build in-process.
   Target: < 10 s.
3. Writing one row at delivery, on the filled (warm) store:
   - pipe: K fresh processes, each doing what `authsieve pipe` does (config,
     resolver, check_and_annotate of a demo message with the store's
     recorder); the recorder call itself is timed in that process, then the
     close the interpreter's exit does.  SQLite, twice: "store" writes into
     the store (the last connection makes the WAL and checkpoints it, with
     their syncs), "spool" as pipe does (one file in the spool, aggregate/
     spool.py), then the in-process ingest of those files is timed;
     PostgreSQL: a connection (the psycopg import is timed apart);
   - kept: one process recording M messages, as `authsieve serve` and the
     watcher do (the open store is kept between deliveries).
   Target: median < 1 ms.

Run: .venv/bin/python bench/bench_report_store.py [--backend sqlite|postgresql]
     [--rows 1000000] [--pipes 30] [--kept 1000]
PostgreSQL: a private server from Debian's postgresql (tests/pgserver.py).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import reference_line  # noqa: E402
from classifier.aggregate.rows import DkimEntry, Override, ReportRow  # noqa: E402
from classifier.aggregate.store import _COLUMNS, ReportStore, _drop_kept, _values  # noqa: E402

DAY = 86400
START = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
DEMO = ROOT / "examples" / "maildir"
# One fresh process per message, as pipe(8) runs authsieve: the recorder call is timed inside.
PIPE_DRIVER = """
import json, sys, time
t0 = time.perf_counter()
from classifier.config import load_config
from classifier.envelope.trust import Hints
from classifier.evaluate import check_and_annotate
from classifier.lookup.resolver import make_resolver
config = load_config(sys.argv[1])
resolver = make_resolver(dns_server=None, dns_zone=sys.argv[2], timeout=5.0)
t1 = time.perf_counter()
from classifier.aggregate.store import recorder
t_store = time.perf_counter() - t1
if config.reports.store.startswith("postgres"):
    t1 = time.perf_counter()
    import psycopg
    t_store += time.perf_counter() - t1
record = recorder(config.reports, one_shot=sys.argv[4] == "spool")
took = []
def timed(evaluation):
    t = time.perf_counter()
    ok = record(evaluation)
    took.append((time.perf_counter() - t, ok))
data = open(sys.argv[3], "rb").read()
check_and_annotate(data, config.engine, resolver, config.policies,
                   Hints(recipient="alice@family.example"), "alice@family.example", record=timed)
# What the interpreter's exit does next: close the kept store (SQLite: the last
# connection checkpoints the WAL into the database and removes it).
from classifier.aggregate import store
t = time.perf_counter()
store._drop_kept()
closed = time.perf_counter() - t
print(json.dumps({"import": t_store, "record": took[0][0], "ok": took[0][1], "close": closed}))
"""


def make_rows(n: int, days: int, domains: int, seed: int = 16) -> list[ReportRow]:
    """Gives n rows spread over `days` days from START, oldest first."""
    rnd = random.Random(seed)
    weights = [1 / (i + 1) for i in range(domains)]  # a few big senders, a long tail
    ips = [
        [f"198.18.{(d * 7 + k) % 256}.{(d + k * 31) % 254 + 1}" if k % 5 else
         f"2001:db8:{d:x}::{k + 1:x}" for k in range(max(2, int(400 * w)))]
        for d, w in enumerate(weights)
    ]  # fmt: skip
    names = [f"d{d:04d}.example" for d in range(domains)]
    times = sorted(START + rnd.randrange(days * DAY) for _ in range(n))
    picks = rnd.choices(range(domains), weights=weights, k=n)
    out = []
    for at, d in zip(times, picks, strict=True):
        name, kind = names[d], rnd.random()
        ip = rnd.choice(ips[d])
        if kind < 0.70:  # the domain's own mail, signed and SPF-aligned
            dkim, spf, aligned, disp, reasons = "pass", "pass", (True, True), "pass", ()
        elif kind < 0.80:  # forwarded: SPF fails, the signature survives
            dkim, spf, aligned, disp, reasons = "pass", "fail", (True, False), "pass", ()
            ip = f"203.0.113.{rnd.randrange(1, 40)}"
        elif kind < 0.92:  # spoofed
            dkim, spf, aligned, disp = "none", "fail", (False, False), "quarantine"
            reasons = (Override("local_policy", "filed to junk, never rejected"),)
            ip = f"192.0.2.{rnd.randrange(1, 255)}"
        else:  # a mailing list broke the signature; a trusted forwarder
            dkim, spf, aligned, disp = "fail", "softfail", (False, False), "none"
            reasons = (Override("trusted_forwarder", "lists.example"),)
            ip = f"203.0.113.{rnd.randrange(40, 60)}"
        sigs = tuple(
            DkimEntry(name if k == 0 else "esp.example", f"s{k}", dkim)
            for k in range(1 + (d % 3 == 0) + (d % 7 == 0))
        )
        p = ("none", "quarantine", "reject")[d % 3]
        values = (
            at, ip, name, f"bounce.{name}", "family.example", f"bounce.{name}", "mfrom", spf,
            sigs, "pass" if any(aligned) else "fail", aligned[0], aligned[1], name, "treewalk",
            p, p, "", "r", "r", "n", p, disp, reasons,
        )  # fmt: skip
        out.append(ReportRow(**dict(zip(_COLUMNS, values, strict=True))))  # kw_only
    return out


def fill(url: str, rows: list[ReportRow], backend: str) -> float:
    started = time.perf_counter()
    hosts = ("mx1.family.example", "mx2.family.example")
    with ReportStore.open(url, timeout=3600) as store:  # the fill: one long COPY
        if backend == "postgresql":
            columns = ", ".join((*_COLUMNS, "host"))
            with (
                store.db.cursor() as cur,
                cur.copy(f"COPY report_rows ({columns}) FROM STDIN") as cp,
            ):
                for i, row in enumerate(rows):
                    cp.write_row(_values(row, hosts[i % 2]))
            store.db.execute("ANALYZE report_rows")
        else:
            for begin in range(0, len(rows), 20_000):
                chunk = rows[begin : begin + 20_000]
                store.host = hosts[(begin // 20_000) % 2]
                store.append(chunk)
            store.db.execute("ANALYZE")
    return time.perf_counter() - started


def config_text(url: str, zone: str) -> str:
    return (
        '[classifier]\nauthserv_id = "mx.family.example"\n'
        f'trusted_networks = ["203.0.113.25/32"]\ndns_zone = "{zone}"\n'
        f'log_file = "/dev/null"\n\n[reports]\nstore = "{url}"\nretention_days = 400\n'
        'host = "mx1.family.example"\norg_name = "Family Mail"\n'
        'email = "dmarc-reports@family.example"\n'
    )


def report_runs(config: Path, day: str, out: Path, runs: int = 3) -> list[tuple[float, float]]:
    """Gives (wall, cpu) seconds of each run of the real dmarc-report command."""
    results = []
    for i in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "classifier.commands.main", "dmarc-report", "--config",
             str(config), "--day", day, "--dry-run", str(out / str(i))],
            capture_output=True, text=True, cwd=ROOT, check=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        results.append((wall, cpu))
    print(f"  last run said: {proc.stdout.splitlines()[-1]}")
    return results


def in_process(url: str, begin: int) -> tuple[float, float, int, int]:
    """Gives (read s, build s, rows, reports) of one day, in this process."""
    from classifier.aggregate.feedback import Reporter, build_reports

    with ReportStore.open(url) as store:
        started = time.perf_counter()
        rows = list(store.rows_between(begin, begin + DAY))
        read = time.perf_counter() - started
    started = time.perf_counter()
    reports = build_reports(rows, begin, begin + DAY, Reporter("o", "r@o.example", "o.example"))
    return read, time.perf_counter() - started, len(rows), len(reports)


def demo_message() -> Path:
    found = sorted([*(DEMO / "new").iterdir(), *(DEMO / "cur").iterdir()])
    return next(m for m in found if b"@riverside.example" in m.read_bytes())  # one row


def pipe_writes(config: Path, count: int, how: str) -> tuple[list[float], list[float], list[float]]:
    zone, message = str(DEMO / "zone.txt"), str(demo_message())
    imports, records, closes = [], [], []
    for _ in range(count):
        proc = subprocess.run(
            [sys.executable, "-c", PIPE_DRIVER, str(config), zone, message, how],
            capture_output=True, text=True, cwd=ROOT, check=True,
        )  # fmt: skip
        got = json.loads(proc.stdout)
        assert got["ok"], proc.stderr
        imports.append(got["import"])
        records.append(got["record"])
        closes.append(got["close"])
    return imports, records, closes


def kept_writes(config: Path, count: int) -> list[float]:
    from classifier.aggregate.store import record_delivery
    from classifier.config import load_config
    from classifier.envelope.trust import Hints
    from classifier.evaluate import Evaluation, check_and_annotate
    from classifier.lookup.resolver import make_resolver

    loaded = load_config(config)
    assert loaded.reports is not None
    resolver = make_resolver(dns_server=None, dns_zone=str(DEMO / "zone.txt"), timeout=5.0)
    got: list[Evaluation] = []
    check_and_annotate(demo_message().read_bytes(), loaded.engine, resolver, loaded.policies,
                       Hints(recipient="alice@family.example"), "alice@family.example",
                       record=got.append)  # fmt: skip
    took = []
    for _ in range(count):
        started = time.perf_counter()
        assert record_delivery(loaded.reports, got[0])
        took.append(time.perf_counter() - started)
    return took


def ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20) if len(values) > 1 else values * 19
    return f"median {statistics.median(values) * 1000:.2f} ms, p95 {q[18] * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--pipes", type=int, default=30)
    parser.add_argument("--kept", type=int, default=1000)
    args = parser.parse_args()
    print(reference_line())
    with tempfile.TemporaryDirectory(prefix="authsieve-bench-") as tmp:
        work = Path(tmp)
        server = None
        if args.backend == "postgresql":
            from tests.pgserver import PostgresServer

            server = PostgresServer().start()
            url = server.create_database("reports")
        else:
            url = f"sqlite:{work}/reports.db"
        try:
            started = time.perf_counter()
            rows = make_rows(args.rows, args.days, args.domains)
            print(
                f"{args.backend}: {len(rows):,} rows made in {time.perf_counter() - started:.1f} s"
            )
            print(f"fill: {fill(url, rows, args.backend):.1f} s")
            day = START + args.days // 2 * DAY
            del rows
            config = work / "config.toml"
            config.write_text(config_text(url, str(DEMO / "zone.txt")))
            read, build, n, reports = in_process(url, day)
            print(f"one day in-process: {n:,} rows read in {read:.2f} s, "
                  f"{reports} reports built in {build:.2f} s")  # fmt: skip
            stamp = datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%d")
            runs = report_runs(config, stamp, work / "out")
            for wall, cpu in runs:
                print(f"dmarc-report --day {stamp} --dry-run: {wall:.2f} s wall, {cpu:.2f} s CPU")
            kept = kept_writes(config, args.kept)
            print(f"record, kept store ({args.kept} deliveries in one process): {ms(kept)}")
            _drop_kept()  # pipe processes alone: none of them finds another connection open
            for how in ("store", "spool"):
                if how == "spool" and server is not None:
                    break  # a PostgreSQL store: pipe connects, as a kept writer does
                imports, records, closes = pipe_writes(config, args.pipes, how)
                what = "as `authsieve pipe` does" if how == "spool" or server else "into the store"
                print(f"record, pipe {what} ({args.pipes} fresh processes, {how}): {ms(records)}")
                print(f"  then the close at exit: {ms(closes)}")
                module = "store module" + (" + psycopg" if server else "")
                print(f"  import of the {module}: {ms(imports)}")
            if server is None:
                with ReportStore.open(url) as store:
                    started = time.perf_counter()
                    taken = store.ingest_spool(0)
                    took = time.perf_counter() - started
                print(f"ingest of the spool ({taken} rows): {took * 1000:.1f} ms")
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
