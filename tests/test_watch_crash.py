"""Crash safety: 2,000 messages dropped in while the watcher is SIGKILLed 20 times and restarted.

At the end every message exists exactly once (by Message-ID and body hash)
across INBOX, Junk and Quarantine, in the folder of its verdict; nothing is
left in any tmp/; every message carries exactly one set of our headers.  The
kills alternate between the whole process group (what systemd does) and the
main process alone, whose worker processes must then die with it; every
fifth kill lands during start-up (imports, or the repair of the Maildir).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from classifier.mailstore.maildir import MaildirName, identity, list_folder, virtual_size
from classifier.message import Message
from tests.conftest import ROOT
from tests.dnsserver import DnsTestServer
from tests.helpers import group_processes, wait_for

DEMO = ROOT / "examples" / "maildir"
CONFIG = ROOT / "examples" / "config.toml"
CLI = [
    sys.executable,
    "-c",
    "import sys; from classifier.commands.main import main; sys.exit(main())",
]
AUTHSERV = "mx.family.example"
TOTAL = 2000
KILLS = 20
# Unsigned demo messages (a new Message-ID and body keep their verdict) and where each goes.
TEMPLATES = {
    "new/1741659463.M783163P47153.mx,S=1392,W=1392": ".Quarantine",
    ".Junk/cur/1740992741.M181393P5212.mx,S=1325,W=1325:2,S": ".Junk",
    "cur/1740909903.M813757P24158.mx,S=1440,W=1440:2,S": "",
    "new/1741604735.M22778P24753.mx,S=3258,W=3258": "",
}
FOLDERS = ("", ".Junk", ".Quarantine")


def message(i: int) -> tuple[bytes, str]:
    """Gives message number i (a unique Message-ID and body) and the folder it belongs in."""
    source, folder = list(TEMPLATES.items())[i % len(TEMPLATES)]
    data = (DEMO / source).read_bytes()
    data = re.sub(rb"(?im)^Message-I[dD]: <[^>]*>", f"Message-ID: <crash-{i}@test>".encode(), data)
    return data + f"crash test message {i}\r\n".encode(), folder


def drop_all(new: Path, stop: threading.Event, rate: float) -> None:
    """Delivers every message, half like Postfix virtual (link), half like Dovecot (rename)."""
    tmp = new.parent / "tmp"
    for i in range(TOTAL):
        if stop.is_set():
            return
        data, _ = message(i)
        name = f"{1_800_000_000 + i}.M{i}P{os.getpid()}.mda,S={len(data)},W={virtual_size(data)}"
        (tmp / name).write_bytes(data)
        if i % 2:
            os.link(tmp / name, new / name)
            os.unlink(tmp / name)
        else:
            os.rename(tmp / name, new / name)
        time.sleep(1 / rate)


def all_messages(maildir: Path) -> list[Path]:
    return [p for f in FOLDERS for p in list_folder(maildir / f if f else maildir)]


def filed_count(maildir: Path) -> int:
    return sum(1 for p in all_messages(maildir) if MaildirName.parse(p.name).marked)


def _last_start(lines: list[str]) -> int:
    """Gives the index of the first log line of the last watcher run."""
    pids = [re.search(r"authsieve\[(\d+)\]", line) for line in lines]
    last = pids[-1].group(1) if pids and pids[-1] else ""
    return next((i for i, m in enumerate(pids) if m and m.group(1) == last), len(lines))


def test_every_message_survives_sigkill_exactly_once(
    tmp_path: Path, dns_server: Callable[..., DnsTestServer]
) -> None:
    dns = dns_server((DEMO / "zone.txt").read_text())
    maildir = tmp_path / "vmail" / "family.example" / "alice" / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True)
    log = tmp_path / "watch.log"
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.read_text().replace("[classifier]", f'[classifier]\nlog_file = "{log}"')
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(tmp_path / "notify")}
    argv = [*CLI, "watch", "--config", str(config), "--dns-server", dns.address]
    argv += ["--workers", "2", "--rescan-interval", "1", str(maildir)]

    def start(ready: bool = True) -> subprocess.Popen[bytes]:
        notify.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                notify.recv(200)  # what a process killed before READY still sent
        notify.settimeout(60)
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, start_new_session=True)
        while ready and not notify.recv(200).startswith(b"READY=1"):
            pass
        return proc

    rng = random.Random(6)
    stop = threading.Event()
    dropper = threading.Thread(target=drop_all, args=(maildir / "new", stop, 120.0))
    dropper.start()
    started = time.monotonic()
    try:
        for kill in range(KILLS):
            # Every fifth kill lands during start-up: imports, or the repair of the Maildir.
            early = kill % 5 == 3
            proc = start(ready=not early)
            time.sleep(rng.uniform(0.2, 0.8) if early else rng.uniform(0.05, 0.9))
            if kill % 2:
                os.kill(proc.pid, signal.SIGKILL)  # the workers must die with their parent
            else:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            wait_for(lambda p=proc: not group_processes(p.pid), 10, "the workers to die")  # type: ignore[misc]
        dropper.join(120)
        proc = start()
        wait_for(lambda: filed_count(maildir) >= TOTAL, 120, "every message to be filed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop.set()
        dropper.join(10)
        for p in (proc,):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        notify.close()
    elapsed = time.monotonic() - started

    messages = all_messages(maildir)
    seen: Counter[tuple[str, str]] = Counter()
    for path in messages:
        data = path.read_bytes()
        seen[identity(data)] += 1
        parsed = Message.parse(data)
        top = [f.key for f in parsed.fields[: [f.key for f in parsed.fields].index("received")]]
        assert top.count("x-authsieve") == 1, path
        assert top.count("authentication-results") == 1, path
        assert len(parsed.get_all("X-Authsieve")) == 1, path
        ours = [v for v in parsed.get_all("Authentication-Results") if v.startswith(AUTHSERV)]
        assert len(ours) == 1, path
        number = int(re.search(rb"crash test message (\d+)", data).group(1))  # type: ignore[union-attr]
        folder = path.parent.parent.name if path.parent.parent != maildir else ""
        assert folder == message(number)[1], path
    expected = Counter(identity(message(i)[0]) for i in range(TOTAL))
    assert seen == expected
    assert len(messages) == TOTAL
    for folder in FOLDERS:
        tmp = (maildir / folder if folder else maildir) / "tmp"
        assert os.listdir(tmp) == []
    assert elapsed < 170, f"took {elapsed:.0f} s"
    lines = log.read_text().splitlines()
    filed_before_last = sum(" filed " in line for line in lines[: _last_start(lines)])
    repairs = [line for line in lines if "repaired after an interruption" in line]
    print(f"\n{elapsed:.0f} s; {filed_before_last} filed between kills; {len(repairs)} repairs")
    shutil.rmtree(maildir)
