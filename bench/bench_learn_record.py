"""Benchmark: the learning delivery record a one-shot `authsieve pipe` writes (issue 17).

With ``[learn]`` on, every delivery records what authsieve found, for `learn`.
Each of N fresh processes does what `authsieve pipe` does (config, resolver,
`check_and_annotate` of a demo message with the delivery-record hook of
`classifier.aggregate.deliveries`) and times the hook's call in that process:

- "store": the record straight into the learning store's SQLite (what pipe
  did before the spool; `serve` and the watcher still do it): open, WAL,
  schema, commit, close, the last connection's checkpoint included;
- "spool": the record as one file under ``moves.db.spool/`` (what pipe and
  filter do now, `classifier.aggregate.spool`).

The two kinds alternate, so that the machine's drift hits both alike.  Then
the spooled files are taken in as `learn` does before it looks a delivery up
(`DeliveryStore.ingest_spool`), timed in this process, and one file alone.
``--tree DIR`` runs the processes' "store" writes with another checkout's
code (e.g. /work/main, before the spool), "spool" with this one.

Run: .venv/bin/python bench/bench_learn_record.py [--processes 200] [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import reference_line  # noqa: E402

DEMO = ROOT / "examples" / "maildir"
# One fresh process per delivery, as pipe(8) runs authsieve; run with cwd = the tree's root.
DRIVER = """
import json, sys, time
from classifier.config import load_config
from classifier.envelope.trust import Hints
from classifier.evaluate import check_and_annotate
from classifier.lookup.resolver import make_resolver
from classifier.aggregate.deliveries import delivery_recorder
config = load_config(sys.argv[1])
resolver = make_resolver(dns_server=None, dns_zone=sys.argv[2], timeout=5.0)
hook = delivery_recorder(config.learn, **({"one_shot": True} if sys.argv[4] == "spool" else {}))
took = []
def timed(*args):
    t = time.perf_counter()
    ok = hook(*args)
    took.append((time.perf_counter() - t, ok))
    return ok
data = open(sys.argv[3], "rb").read()
check_and_annotate(data, config.engine, resolver, config.policies,
                   Hints(recipient="alice@family.example"), "alice@family.example", None, timed)
print(json.dumps({"record": took[0][0], "ok": took[0][1]}))
"""


def config_text(store: Path) -> str:
    return (
        '[classifier]\nauthserv_id = "mx.family.example"\n'
        'trusted_networks = ["203.0.113.25/32"]\nlog_file = "/dev/null"\n\n'
        f'[learn]\nstore = "sqlite:{store}"\n'
    )


def demo_message() -> Path:
    found = sorted([*(DEMO / "new").iterdir(), *(DEMO / "cur").iterdir()])
    return next(m for m in found if b"@riverside.example" in m.read_bytes())


def one_process(config: Path, how: str, tree: Path) -> tuple[float, float]:
    """Gives (the record call, the whole process) in seconds."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(config), str(DEMO / "zone.txt"), str(demo_message()),
         how],
        capture_output=True, text=True, cwd=tree, check=True,
    )  # fmt: skip
    whole = time.perf_counter() - started
    got = json.loads(proc.stdout)
    assert got["ok"], proc.stderr
    return got["record"], whole


def ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20)
    return f"median {statistics.median(values) * 1000:6.2f} ms, p95 {q[18] * 1000:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=200, help="of each kind")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the code of the store writes")
    args = parser.parse_args()
    print(reference_line())
    from classifier.aggregate.deliveries import DeliveryStore
    from classifier.aggregate.spool import spool_dir

    with tempfile.TemporaryDirectory(prefix="authsieve-bench-") as tmp:
        work = Path(tmp)
        stores = {how: work / how / "learning" / "moves.db" for how in ("store", "spool")}
        configs = {}
        for how, store in stores.items():
            configs[how] = work / f"{how}.toml"
            configs[how].write_text(config_text(store))
        took: dict[str, list[float]] = {"store": [], "spool": []}
        whole: dict[str, list[float]] = {"store": [], "spool": []}
        for _ in range(args.processes):
            for how in ("store", "spool"):
                record, total = one_process(
                    configs[how], how, args.tree if how == "store" else ROOT
                )
                took[how].append(record)
                whole[how].append(total)
        print(f"{args.processes} fresh processes of each kind (store: {args.tree})")
        for how in ("store", "spool"):
            print(f"  {how:5}: record {ms(took[how])}; whole process {ms(whole[how])}")
        spooled = len(list(spool_dir(stores["spool"]).iterdir()))
        with DeliveryStore.open(f"sqlite:{stores['spool']}") as store:
            started = time.perf_counter()
            taken = store.ingest_spool(0)
            ingest = time.perf_counter() - started
            assert taken == spooled == args.processes, (taken, spooled)
            single = []
            for _ in range(20):
                one_process(configs["spool"], "spool", ROOT)
                started = time.perf_counter()
                assert store.ingest_spool(0) == 1
                single.append(time.perf_counter() - started)
        print(
            f"  taken in as learn does: {taken} files in {ingest * 1000:.1f} ms"
            f" ({ingest / taken * 1000:.2f} ms a file); one file alone: {ms(single)}"
        )


if __name__ == "__main__":
    main()
