"""Benchmark: wall time per LMTP delivery into a private Dovecot, with and without authsieve-filter.

Issue 18.  The setup of tests/test_lmtp_filter.py (private Dovecot 2.3, LMTP on
loopback, the README's 90-authsieve-filter.conf, DNS from a loopback server),
one LMTP session per message (LHLO … QUIT, the time Postfix's lmtp client waits),
the demo messages in turn, the variants interleaved so machine noise hits all alike:

  a  sieve_before holds pipe mode's rules only (no filter: what LMTP costs without authsieve)
  b  the --filter script, the program checking in-process
  c  the --filter script, the program handing over to a running `authsieve serve`
     (``--daemon`` in the program, as ``sieve install --filter-dir`` writes it
     when daemon_socket is set)
  d  with --before DIR: c, but the authsieve code of another checkout DIR (PYTHONPATH),
     e.g. ``git worktree add --detach /tmp/before COMMIT``, to compare two versions
     of the program in the same run

Run as root: .venv/bin/python bench/bench_lmtp_filter.py [ROUNDS] [--before DIR]
"""

from __future__ import annotations

import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import reference_line  # noqa: E402
from tests.dnsserver import DnsTestServer  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.test_lmtp_filter import ATTACK_ZONE, DEMO, FilterSetup, take_one  # noqa: E402


def main() -> None:
    argv = sys.argv[1:]
    before_dir = None
    if "--before" in argv:
        at = argv.index("--before")
        before_dir = str(Path(argv[at + 1]).resolve())
        del argv[at : at + 2]
    rounds = int(argv[0]) if argv else 10
    root = Path(tempfile.mkdtemp(prefix="authsieve-bench-lmtp-"))
    root.chmod(0o755)
    dns = DnsTestServer((DEMO / "zone.txt").read_text() + ATTACK_ZONE)
    setup = FilterSetup(root, dns)
    nobody = pwd.getpwnam("nobody")
    sock = root / "daemon" / "authsieve.sock"
    sock.parent.mkdir()
    os.chown(sock.parent, nobody.pw_uid, nobody.pw_gid)
    serve = subprocess.Popen(
        [sys.executable, "-m", "classifier.commands.main", "serve", "--config",
         str(setup.config), "--socket", str(sock)],
        cwd=ROOT, user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    before = root / "before-lmtp" / "authsieve.sieve"
    program = root / "filter-bin" / "authsieve-filter"
    filter_script = before.read_text()
    rules_only = (root / "before-lda" / "authsieve.sieve").read_text()
    in_process = program.read_text()
    with_daemon = in_process.replace(" filter ", f" filter --daemon {sock} ", 1)
    variants = {
        "a rules only, no filter": (rules_only, in_process),
        "b filter, in-process": (filter_script, in_process),
        "c filter, daemon": (filter_script, with_daemon),
    }
    if before_dir:
        old = with_daemon.replace("\nexec ", f"\nPYTHONPATH={before_dir} exec ", 1)
        variants["d filter, daemon, --before"] = (filter_script, old)
    messages = sorted((DEMO / "new").glob("*"))[:5]
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        if setup.lmtp.start():
            raise SystemExit("dovecot did not start")
        wait_for(sock.exists, 10, "authsieve serve")
        for _ in range(rounds):
            for name, (script, prog) in variants.items():
                before.write_text(script)
                for compiled in before.parent.glob("*.svbin"):
                    compiled.unlink()
                program.write_text(prog)
                setup.via_lmtp("warm@up.example", messages[0].read_bytes())  # compile, cache
                for path in messages:
                    started = time.perf_counter()
                    setup.lmtp.send("joe@grandpa.example", path.read_bytes())
                    times[name].append(time.perf_counter() - started)
                    take_one(setup.lmtp.maildir())
    finally:
        serve.terminate()
        serve.wait()
        setup.lmtp.stop()
        dns.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(reference_line())
    print(f"{rounds} rounds x {len(messages)} messages, one LMTP session each (ms):")
    for name, values in times.items():
        ms = sorted(v * 1000 for v in values)
        print(
            f"  {name:26} median {statistics.median(ms):6.1f}"
            f"  p90 {ms[int(len(ms) * 0.9)]:6.1f}  min {ms[0]:6.1f}"
        )


if __name__ == "__main__":
    main()
