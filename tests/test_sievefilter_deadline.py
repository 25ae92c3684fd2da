"""`authsieve filter`'s deadline holds whatever the checks do (attacker review).

A thread cannot stop C code that holds the GIL (a regex backtracking for
seconds): the watchdog thread of old never fired, Pigeonhole killed the
filter at sieve_filter_exec_timeout and the LMTP process aborted, leaving
the message in Postfix's queue.  The checks run in a child; here the child
is stopped outright (SIGSTOP, which no code in it can answer) and the
filter must still write the original under the failure header, once, by
its deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from classifier.auth.facts import parse_header_value
from classifier.message import Message
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
PHISH = next((ROOT / "examples" / "maildir" / "new").glob("1741659463.*"))
RCPT = "alice@family.example"


def children(pid: int) -> list[int]:
    """Gives the processes whose parent is pid."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_stopped_check_still_gets_the_original_out_by_the_deadline(tmp_path: Path) -> None:
    # A DNS server that never answers keeps the child checking until it is stopped.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    config = tmp_path / "slow.toml"
    config.write_text(
        '[classifier]\nauthserv_id = "mx.family.example"\n'
        f'dns_server = "127.0.0.1:{sock.getsockname()[1]}"\ndns_timeout = 30\n'
    )
    data = PHISH.read_bytes()
    argv = [sys.executable, "-m", "classifier.commands.main", "filter",
            "--config", str(config), "--deadline", "3", "--", RCPT]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
        proc.stdin = None  # written and closed: communicate must not flush it
        wait_for(lambda: bool(children(proc.pid)), what="the checking child")
        (child,) = children(proc.pid)
        os.kill(child, signal.SIGSTOP)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert (proc.returncode, err) == (0, b"")
    assert 3 <= took < 6, took  # well inside Pigeonhole's 10 s sieve_filter_exec_timeout
    head = out[: len(out) - len(data)]
    assert out.endswith(data) and head.startswith(b"X-Authsieve:")  # the original, once
    assert head.count(b"X-Authsieve:") == 1 and data not in head
    fields = parse_header_value(Message.parse(out).get_all("X-Authsieve")[0])
    assert fields["spf"] == "internal" and fields["error"].startswith("timeout")
    assert fields["id"] == "mx.family.example"
    assert not Path(f"/proc/{child}").exists()  # killed and reaped, not left stopped
