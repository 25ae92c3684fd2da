"""Benchmark: what Postfix pays per delivery — one fresh `authsieve pipe` process per message.

Measured in the same run, interleaved, so machine noise hits all alike:
  a  python3 -c pass
  b  python3 -c "import spf, dkim, dns.resolver, authres"   (the imports-only script)
  c  authsieve pipe --deliver stdout < message            (in-process checks, loopback DNS)
  d  authsieve pipe --daemon SOCKET --deliver stdout      (a real `authsieve serve`)
  e  dovecot-lda alone, private config (the next stage's own cost), -d as f gives it
  f  authsieve pipe --daemon SOCKET --deliver dovecot-lda
Every command runs with one interpreter: a venv made here, as a production
`pip install .` has it.  Its site-packages holds this tree (a .pth line; not an
editable install, whose import hook alone doubles `python -c pass`) and symbolic
links to the files of exactly the distributions pyproject's `dependencies` need
(their closure through each distribution's Requires-Dist, markers evaluated for
this interpreter, extras followed where asked for), taken from .venv by
importlib.metadata's file lists.  .venv's test-only packages stay out: with them
dnspython would import its DNS-over-HTTPS stack (httpx, h2, anyio) into b.
Messages: the five of examples/maildir, in turn; DNS from a loopback server
in a process of its own.
Run: .venv/bin/python bench/bench_pipe_startup.py [ROUNDS]
     .venv/bin/python bench/bench_pipe_startup.py --instructions
       (a, b and c counted by valgrind's callgrind instead: a figure a loaded, shared
       machine does not change; c for an unsigned and for a DKIM-signed demo message)
Targets (issue 15): d <= 2 x a; c <= 1.3 x b; f - e beside d - a.
"""

from __future__ import annotations

import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from importlib import metadata
from importlib.metadata import Distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import reference_line  # noqa: E402
from tests.dnsserver import DnsServerProcess  # noqa: E402

DEMO = ROOT / "examples" / "maildir"
LDA = "/usr/lib/dovecot/dovecot-lda"
# Everything runs as pipe(8)'s user, the daemon too (dovecot-lda never delivers as root).
USER = "nobody" if os.geteuid() == 0 else None
# Bytecode as an installed package has it (pip compiles on install); the variable that
# forbids writing it would make every start compile our modules from source.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
SCRIPT = "#!{python}\nimport sys\nfrom classifier.commands.main import main\n" \
    "if __name__ == '__main__':\n    sys.exit(main())\n"  # fmt: skip
DOVECOT_CONF = """\
mail_location = maildir:{d}/Maildir
mail_home = {d}
postmaster_address = postmaster@family.example
hostname = mx.family.example
ssl = no
stats_writer_socket_path =
lda_mailbox_autocreate = yes
log_path = {d}/dovecot.log
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}
}}
"""


# dovecot-lda -d asks Dovecot's auth service for the user (userdb), and no Dovecot server
# runs here: without it, -d ends in exit 75.  As tests/mta.py does, a wrapper plays the
# userdb (every user is the one mailbox under mail_home) and drops -d; rows e and f both
# go through it, so f - e is still authsieve's part.
LDA_WRAPPER = """#!/bin/sh
take=
for arg do
  shift
  if [ "$take" = d ]; then take=; continue; fi
  if [ "$arg" = -d ]; then take=d; continue; fi
  set -- "$@" "$arg"
done
exec {lda} "$@"
"""


def runtime_distributions() -> dict[str, Distribution]:
    """Gives the installed distributions `authsieve`'s dependencies need, by canonical name."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo = [(req, "") for req in metadata.requires("authsieve") or []]
    while todo:
        text, extra = todo.pop()
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        dist = found.setdefault(name, metadata.distribution(req.name))
        for wanted in ("", *sorted(req.extras)):
            if (name, wanted) not in done:
                done.add((name, wanted))
                todo += [(sub, wanted) for sub in dist.requires or []]
    return found


def bench_interpreter(work: Path) -> str:
    """Gives a python whose site-packages hold this tree and the runtime dependencies only."""
    venv.create(work / "venv", with_pip=False)
    python = work / "venv" / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    for dist in runtime_distributions().values():
        for file in dist.files or []:
            source = Path(dist.locate_file(file)).resolve()
            target = purelib / file
            # Scripts are recorded as ../../../bin/...; only the importable files matter here.
            if ".." in file.parts or not source.is_file() or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    (purelib / "authsieve-bench.pth").write_text(f"{ROOT}\n")
    script = work / "venv" / "bin" / "authsieve"
    script.write_text(SCRIPT.format(python=python))
    script.chmod(0o755)
    return str(python)


def timed(argv: list[str], stdin: bytes, user: str | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, cwd=ROOT, env=ENV, check=False,
        **({"user": user, "group": "nogroup", "extra_groups": []} if user else {}),  # type: ignore[arg-type]
    )  # fmt: skip
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed: {proc.stderr.decode()[-500:]}")
    return elapsed


def instructions() -> None:
    """Prints callgrind's instruction counts of a, b and c, and c / b."""
    import re

    compileall.compile_dir(ROOT / "classifier", quiet=1)  # no run compiles our modules
    work = Path(tempfile.mkdtemp(prefix="authsieve-bench-"))
    py = bench_interpreter(work)
    config = str(ROOT / "examples" / "config.toml")
    dns = DnsServerProcess((DEMO / "zone.txt").read_text())
    unsigned = DEMO / "cur" / "1740909903.M813757P24158.mx,S=1440,W=1440:2,S"
    signed = DEMO / "new" / "1741009930.M779552P1665.mx,S=2263,W=2263"
    pipe = [py, "-c", SCRIPT.split("\n", 1)[1], "pipe", "--recipient", "alice@family.example",
            "--deliver", "stdout"]  # fmt: skip
    pipe += ["--sender", "a@x.example", "--config", config, "--dns-server", dns.address]
    runs = {
        "a  python -c pass": ([py, "-c", "pass"], b""),
        "b  imports only": ([py, "-c", "import spf, dkim, dns.resolver, authres"], b""),
        "c  pipe in-process, unsigned": (pipe, unsigned.read_bytes()),
        "c  pipe in-process, DKIM-signed": (pipe, signed.read_bytes()),
    }
    counts = {}
    try:
        for name, (argv, stdin) in runs.items():
            proc = subprocess.run(
                ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                input=stdin, capture_output=True, cwd=ROOT, env={**ENV, "PYTHONHASHSEED": "0"},
                check=True,
            )  # fmt: skip
            found = re.search(rb"Collected : (\d+)", proc.stderr)
            assert found, proc.stderr[-500:]
            counts[name] = int(found.group(1))
            print(f"{name:34s} {counts[name] / 1e6:8.1f} M instructions")
    finally:
        dns.stop()
        shutil.rmtree(work, ignore_errors=True)
    b = counts["b  imports only"]
    for name in runs:
        if name.startswith("c"):
            print(f"{name} / b = {counts[name] / b:.2f}  (target <= 1.30)")


def main() -> None:
    if sys.argv[1:] == ["--instructions"]:
        instructions()
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    messages = sorted((DEMO / "new").iterdir()) + sorted((DEMO / "cur").iterdir())
    compileall.compile_dir(ROOT / "classifier", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="authsieve-bench-"))
    work.chmod(0o755)
    py = bench_interpreter(work)
    authsieve = str(work / "venv" / "bin" / "authsieve")
    (work / "run").mkdir()
    sock = str(work / "run" / "authsieve.sock")
    config = str(ROOT / "examples" / "config.toml")
    dns = DnsServerProcess((DEMO / "zone.txt").read_text())
    (work / "dovecot.conf").write_text(DOVECOT_CONF.format(d=work))
    (work / "Maildir").mkdir()
    if os.geteuid() == 0:
        shutil.chown(work / "Maildir", "nobody")
        shutil.chown(work / "run", "nobody")
        (work / "dovecot.log").touch()
        shutil.chown(work / "dovecot.log", "nobody")
    pipe = [authsieve, "pipe", "--recipient", "alice@family.example", "--sender", "a@x.example"]
    stdout = ["--deliver", "stdout"]
    wrapper = work / "dovecot-lda"
    wrapper.write_text(LDA_WRAPPER.format(lda=LDA))
    wrapper.chmod(0o755)
    lda = [
        "--deliver", "dovecot-lda", "--lda-path", str(wrapper), f"--lda-arg=-c{work}/dovecot.conf"
    ]  # fmt: skip
    lda_alone = [
        "-e",
        "-f",
        "a@x.example",
        "-d",
        "alice@family.example",
        "-a",
        "alice@family.example",
    ]
    commands: dict[str, list[str] | None] = {
        "a  python -c pass": [py, "-c", "pass"],
        "b  imports only": [py, "-c", "import spf, dkim, dns.resolver, authres"],
        "c  pipe in-process": [*pipe, "--config", config, "--dns-server", dns.address, *stdout],
        "d  pipe --daemon, stdout": [*pipe, "--daemon", sock, *stdout],
        "e  dovecot-lda alone": [str(wrapper), f"-c{work}/dovecot.conf", *lda_alone],
        "f  pipe --daemon, lda": [*pipe, "--daemon", sock, *lda],
    }
    if not Path(LDA).exists():
        commands["e  dovecot-lda alone"] = commands["f  pipe --daemon, lda"] = None
    serve = [authsieve, "serve", "--config", config, "--dns-server", dns.address, "--socket", sock]
    as_user = {"user": USER, "group": "nogroup", "extra_groups": []} if USER else {}
    daemon = subprocess.Popen(serve, cwd=ROOT, env=ENV, **as_user)  # type: ignore[call-overload]
    for _ in range(200):
        if Path(sock).exists():
            break
        time.sleep(0.05)
    times: dict[str, list[float]] = {k: [] for k, v in commands.items() if v}
    try:
        for n in range(rounds):
            data = messages[n % len(messages)].read_bytes()
            for name in list(times):
                argv = commands[name]
                assert argv is not None
                try:
                    times[name].append(timed(argv, b"" if name[0] in "ab" else data, USER))
                except SystemExit as exc:
                    if name[0] not in "ef":
                        raise
                    print(f"{name}: left out: {exc}"[:300])  # a private Dovecot setup issue
                    times.pop(name)
    finally:
        daemon.terminate()
        daemon.wait()
        dns.stop()
        delivered = (
            sum(1 for _ in (work / "Maildir").rglob("new/*")) if (work / "Maildir").exists() else 0
        )
        shutil.rmtree(work, ignore_errors=True)
    m = {k: statistics.median(v) for k, v in times.items()}
    print(f"{rounds} rounds over {len(messages)} messages; {reference_line()}")
    for name, median in m.items():
        print(f"{name:26s} median {median:7.1f} ms")
    a, b = m["a  python -c pass"], m["b  imports only"]
    print(
        f"c / b (in-process / imports only)   = {m['c  pipe in-process'] / b:.2f}  (target <= 1.30)"
    )
    d = m["d  pipe --daemon, stdout"]
    print(f"d / a (--daemon stdout / python)    = {d / a:.2f}  (target <= 2.00)")
    if "f  pipe --daemon, lda" in m and "e  dovecot-lda alone" in m:
        e, f = m["e  dovecot-lda alone"], m["f  pipe --daemon, lda"]
        print(f"f / a = {f / a:.2f}; (f - e) / a (authsieve's part beside dovecot-lda) = "
              f"{(f - e) / a:.2f}; dovecot-lda deliveries: {delivered}")  # fmt: skip


if __name__ == "__main__":
    main()
