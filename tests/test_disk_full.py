"""Disk full: the original stays untouched, the error is logged, and the message is filed later.

Two ways to run out of room: a small tmpfs mounted by the test (needs root
and permission to mount), and RLIMIT_FSIZE on the watcher's processes (works
anywhere), raised again with prlimit once "space is back".
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from classifier.mailstore.maildir import MaildirName, list_folder
from tests.conftest import ROOT
from tests.dnsserver import DnsTestServer
from tests.helpers import group_processes, make_maildir, wait_for

DEMO = ROOT / "examples" / "maildir"
CONFIG = ROOT / "examples" / "config.toml"
CLI = [
    sys.executable,
    "-c",
    "import sys; from classifier.commands.main import main; sys.exit(main())",
]
PHISH = DEMO / "new" / "1741659463.M783163P47153.mx,S=1392,W=1392"  # → .Quarantine
PLAIN = DEMO / "cur" / "1740909903.M813757P24158.mx,S=1440,W=1440:2,S"  # → INBOX


def filed(maildir: Path) -> list[Path]:
    return [
        p
        for f in ("", ".Junk", ".Quarantine")
        for p in list_folder(maildir / f if f else maildir)
        if MaildirName.parse(p.name).marked
    ]


def leftovers_in_tmp(maildir: Path) -> list[str]:
    return [
        n
        for f in ("", ".Junk", ".Quarantine")
        if (maildir / f / "tmp").is_dir()
        for n in os.listdir(maildir / f / "tmp")
    ]


class Service:
    """The watch command as a service: started, waited for READY=1, stopped with SIGTERM."""

    def __init__(self, tmp_path: Path, dns: DnsTestServer, maildir: Path, limit: int = 0) -> None:
        self.log = tmp_path / "watch.log"
        config = tmp_path / "config.toml"
        text = CONFIG.read_text().replace("[classifier]", f'[classifier]\nlog_file = "{self.log}"')
        config.write_text(text)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp_path / "notify"))
        self.notify.settimeout(30)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(tmp_path / "notify")}
        argv = [*CLI, "watch", "--config", str(config), "--dns-server", dns.address]
        argv += ["--workers", "2", "--rescan-interval", "0.3", str(maildir)]

        def fsize_limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=fsize_limit if limit else None,
        )
        assert self.notify.recv(200).startswith(b"READY=1")

    def logged(self, text: str) -> bool:
        return self.log.exists() and text in self.log.read_text()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.notify.close()


@pytest.fixture
def dns(dns_server: Callable[..., DnsTestServer]) -> DnsTestServer:
    return dns_server((DEMO / "zone.txt").read_text())


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """Gives a 256 KiB tmpfs mounted for the test (skips when this process cannot mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE test covers this case")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    name = f"authsieve-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", name, str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_up(path: Path) -> None:
    """Writes into `path` until the file system says no space is left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_full_tmpfs_keeps_the_original_and_files_it_once_space_is_back(
    small_tmpfs: Path, tmp_path: Path, dns: DnsTestServer
) -> None:
    maildir = make_maildir(small_tmpfs / "family.example" / "alice" / "Maildir")
    original = maildir / "new" / "1800000000.M1P1.mda,S=1392,W=1392"
    original.write_bytes(PHISH.read_bytes())
    filler = small_tmpfs / "filler"
    fill_up(filler)
    service = Service(tmp_path, dns, maildir)
    try:
        wait_for(lambda: service.logged("No space left on device"), 20, "the error in the log")
        time.sleep(0.8)  # a few rescans: each retries, none may harm the original
        assert original.read_bytes() == PHISH.read_bytes()
        assert filed(maildir) == [] and leftovers_in_tmp(maildir) == []
        filler.unlink()
        wait_for(lambda: len(filed(maildir)) == 1, 20, "the message to be filed")
        assert service.stop() == 0
    finally:
        if service.proc.poll() is None:
            service.stop()
    (copy,) = filed(maildir)
    assert copy.parent == maildir / ".Quarantine" / "new"
    assert copy.read_bytes().endswith(PHISH.read_bytes())
    assert not original.exists() and leftovers_in_tmp(maildir) == []
    assert (maildir / "subscriptions").read_text() == "V\t2\n\nQuarantine\n"
    assert "not filed, original kept" in service.log.read_text()


def test_file_size_limit_keeps_the_original_and_files_it_once_lifted(
    tmp_path: Path, dns: DnsTestServer
) -> None:
    maildir = make_maildir(tmp_path / "vmail" / "family.example" / "alice" / "Maildir")
    big = PLAIN.read_bytes() + b"a long message body line, again and again.\r\n" * 4000
    original = maildir / "new" / f"1800000001.M2P2.mda,S={len(big)}"
    original.write_bytes(big)
    limit = 64 * 1024  # below the message (180 KB), above what the log will hold
    service = Service(tmp_path, dns, maildir, limit=limit)
    try:
        wait_for(lambda: service.logged("File too large"), 20, "the error in the log")
        time.sleep(0.8)
        assert original.read_bytes() == big
        assert filed(maildir) == [] and leftovers_in_tmp(maildir) == []
        # Space is back: lift the limit of every process of the watcher.
        for pid in group_processes(service.proc.pid):
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        wait_for(lambda: len(filed(maildir)) == 1, 20, "the message to be filed")
        assert service.stop() == 0
    finally:
        if service.proc.poll() is None:
            service.stop()
    (copy,) = filed(maildir)
    assert copy.parent == maildir / "new" and copy.read_bytes().endswith(big)
    assert not original.exists() and leftovers_in_tmp(maildir) == []
