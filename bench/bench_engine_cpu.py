"""Benchmark: engine CPU per message, warm DNS cache, against another checkout (issue 15, item 3).

The mix is every demo message (examples/maildir, its sub-folders included:
DKIM RSA and Ed25519, ARC, SPF include chains, every verdict) plus the
message of bench/bench_checks.py (three signatures, an SPF include chain of
four).  Each message goes through `check_and_annotate` with the demo config,
the step pipe, serve and the watcher share; DNS comes from the demo zone in
memory, every answer cached by a first pass before anything is timed.

Each tree runs in a child process of its own, its own `classifier` on
sys.path (the child says which file it imported), so `--baseline PATH`
compares this tree with a checkout of another commit (a git worktree) in the
same run: the children alternate, so the machine's drift falls on both.
`--instructions` also counts the instructions of the timed rounds with
valgrind's callgrind (two runs per tree, the difference of R and 2R rounds),
a figure that does not drift with the load of a shared machine.

Run:  .venv/bin/python bench/bench_engine_cpu.py --baseline /work/wt-base
      .venv/bin/python bench/bench_engine_cpu.py --baseline ../base --instructions
      .venv/bin/python bench/bench_engine_cpu.py --profile     # cProfile top entries
      .venv/bin/python bench/bench_engine_cpu.py --baseline ../base --fresh-identities
      .venv/bin/python bench/bench_engine_cpu.py --baseline ../base --cold-caches
Target (issue 15, item 3): half of the baseline's CPU per message.

The mix repeats its messages every round, so SPF results kept by the DNS memo
(classifier/lookup/memo.py) are found for every message after the first
round; `--fresh-identities` forgets them before each message, which gives the
figure for mail from senders not seen within the TTLs of their records.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "maildir"
CONFIG = ROOT / "examples" / "config.toml"

# What a child runs: `python -c CHILD TREE WORKDIR ROUNDS [profile]`.  Only the
# standard library and the tree's own packages are imported before sys.path is set.
CHILD = r"""
import json, os, sys, time
tree, work, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, tree)
import classifier
assert classifier.__file__.startswith(tree), classifier.__file__
from pathlib import Path
from classifier.evaluate import check_and_annotate
from classifier.lookup.resolver import Resolver
from classifier.lookup.sources import ZoneSource

resolver = Resolver(ZoneSource((Path(work) / "zone.txt").read_text()))
messages = [p.read_bytes() for p in sorted(Path(work).glob("msg-*"))]
try:  # one Config (issue 20): check_and_annotate takes the policies before the hints
    from classifier.config import load_config
except ImportError:  # a checkout from before it: Settings and load_policies
    from classifier.config import load_settings
    from classifier.policy.rules import load_policies

    settings = load_settings(Path(work) / "config.toml")
    policies = load_policies(settings)
    def check(m):
        return check_and_annotate(m, settings, resolver, None, None, policies)
else:
    config = load_config(Path(work) / "config.toml")
    def check(m):
        return check_and_annotate(m, config.engine, resolver, config.policies, None, None)
memo = getattr(resolver, "memo", None)  # a checkout from before the DNS memo has none
if memo is not None and os.environ.get("BENCH_FRESH_IDENTITIES") == "1":
    # Every message as if its sender were new: no SPF result kept from an earlier one.
    checked = check
    def check(m):
        memo.clear()
        return checked(m)
actions = [check(m) for m in messages]
if os.environ.get("BENCH_COLD_CACHES") == "1":
    # Every bounded functools cache of the engine (keyed on domains, names, IPs, keys,
    # policies: values that recur in real mail, and always here) emptied before each
    # message, with the DNS memo: a sender, domain and key never seen before.  Caches
    # without a bound (a loaded module, the Public Suffix List) stay: they hold no mail.
    # Also those keyed on the config (a policy's suffix list): an overstatement.
    caches = {
        id(value): value
        for name, module in list(sys.modules.items())
        if name.split(".")[0] == "classifier" and module is not None
        for value in vars(module).values()
        if hasattr(value, "cache_clear") and (value.cache_info().maxsize or 0) >= 64
    }.values()
    warm = check
    def check(m):
        for cache in caches:
            cache.cache_clear()
        if memo is not None:
            memo.clear()
        return warm(m)
    print(len(caches), "caches emptied before each message", file=sys.stderr)

def one_round():
    for m in messages:
        check(m)

if len(sys.argv) > 4:
    import cProfile, pstats
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(rounds):
        one_round()
    profile.disable()
    stats = pstats.Stats(profile, stream=sys.stderr)
    stats.sort_stats(*(sys.argv[5:] or ["tottime"])).print_stats(int(sys.argv[4]))
    sys.exit(0)
cpu = []
for _ in range(rounds):
    start = time.process_time()
    one_round()
    cpu.append((time.process_time() - start) / len(messages) * 1000)
import hashlib
out = [hashlib.sha256(a.data).hexdigest()[:16] for a in actions]
print(json.dumps({
    "module": classifier.__file__, "messages": len(messages), "cpu_ms": cpu,
    "actions": [a.action for a in actions], "digest": out,
}))
"""


def prepare(work: Path) -> None:
    """Writes the mix, the zone (demo + bench_checks) and the config into `work`."""
    sys.path.insert(0, str(ROOT))
    from bench.bench_checks import build

    files = sorted(p for p in DEMO.rglob("*") if p.is_file() and p.parent.name in ("new", "cur"))
    extra, zone = build()
    for i, path in enumerate(files):
        (work / f"msg-{i:03d}").write_bytes(path.read_bytes())
    (work / f"msg-{len(files):03d}").write_bytes(extra)
    (work / "zone.txt").write_text((DEMO / "zone.txt").read_text() + zone)
    (work / "config.toml").write_text(CONFIG.read_text())


def run_child(python: str, tree: Path, work: Path, rounds: int) -> dict:
    out = subprocess.run(
        [python, "-c", CHILD, str(tree), str(work), str(rounds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def instructions(python: str, tree: Path, work: Path, rounds: int) -> float:
    """Gives callgrind's instruction count per message of `rounds` timed rounds."""
    counts = []
    for n in (rounds, 2 * rounds):
        with tempfile.NamedTemporaryFile(dir=work, suffix=".cg") as out:
            run = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out.name}",
                    python,
                    "-c",
                    CHILD,
                    str(tree),
                    str(work),
                    str(n),
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts every run
            )
        found = re.search(r"Collected : (\d+)", run.stderr)
        assert found, run.stderr[-2000:]
        counts.append(int(found.group(1)))
    messages = len(list(work.glob("msg-*")))
    return (counts[1] - counts[0]) / (rounds * messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a checkout to compare with")
    parser.add_argument("--baseline-python", default=sys.executable)
    parser.add_argument("--runs", type=int, default=6, help="children per tree (alternating)")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per child")
    parser.add_argument("--instructions", action="store_true", help="also count with callgrind")
    parser.add_argument("--profile", type=int, metavar="N", help="print cProfile's top N")
    parser.add_argument(
        "--fresh-identities",
        action="store_true",
        help="forget the DNS memo (SPF results, DMARC discovery) before every message, as if "
        "each came from a sender not seen before; the DNS cache stays warm",
    )
    parser.add_argument(
        "--cold-caches",
        action="store_true",
        help="also empty the engine's bounded caches (names, domains, keys, policies) before "
        "every message: the worst case, where nothing about a message was seen before",
    )
    args = parser.parse_args()
    if args.fresh_identities:
        os.environ["BENCH_FRESH_IDENTITIES"] = "1"  # read by the children
    if args.cold_caches:
        os.environ["BENCH_COLD_CACHES"] = "1"
    trees = [("this tree", ROOT.resolve(), sys.executable)]
    if args.baseline:
        trees.insert(0, ("baseline", args.baseline.resolve(), args.baseline_python))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work)
        if args.profile:
            for label, tree, python in trees:
                print(f"== {label} ({tree}): cProfile, {args.rounds} rounds, by own time")
                argv = [python, "-c", CHILD, str(tree), str(work), str(args.rounds)]
                run = subprocess.run(
                    [*argv, str(args.profile)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                print(run.stderr)
            return
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in trees}
        seen: dict[str, dict] = {}
        for _ in range(args.runs):
            for label, tree, python in trees:
                result = run_child(python, tree, work, args.rounds)
                cpu[label] += result["cpu_ms"]
                seen[label] = result
        first = next(iter(seen.values()))
        memo = "forgotten before every message" if args.fresh_identities else "kept"
        if args.cold_caches:
            memo = "forgotten, and the engine's bounded caches emptied, before every message"
        print(f"{first['messages']} messages, {args.runs} x {args.rounds} rounds per tree")
        print(f"DNS cache warm; DNS memo (kept SPF results, DMARC discovery): {memo}")
        for label, _, _ in trees:
            print(
                f"{label:10} {seen[label]['module']}: CPU per message median "
                f"{statistics.median(cpu[label]):.3f} ms (min {min(cpu[label]):.3f})"
            )
        if args.baseline:
            base, new = seen["baseline"], seen["this tree"]
            same = base["actions"] == new["actions"] and base["digest"] == new["digest"]
            ratio = statistics.median(cpu["this tree"]) / statistics.median(cpu["baseline"])
            print(f"this tree / baseline: {ratio:.2f} (target <= 0.50)")
            print("verdicts and annotated bytes identical:", same)
        if args.instructions:
            counted = {label: instructions(python, tree, work, 3) for label, tree, python in trees}
            for label, count in counted.items():
                print(f"{label:10} instructions per message (callgrind): {count / 1e6:.2f} M")
            if args.baseline:
                ratio = counted["this tree"] / counted["baseline"]
                print(f"instructions, this tree / baseline: {ratio:.2f}")
    sys.path.insert(0, str(ROOT))
    from bench.machine import reference_line

    print(reference_line(), time.strftime("%H:%M:%S"), f"pid {os.getpid()}")


if __name__ == "__main__":
    main()
