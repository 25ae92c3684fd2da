"""The log file against the local mail user, who may write the log directory (attacker review).

The commands run as root, the way the systemd units and an administrator
start them; the attacker is nobody, in a forked child, and plants a symlink
or a hard link at the log file's name.  No root-owned file may be appended to
through it, and logging never costs the delivery.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier.delivery.daemon_client import ask_daemon
from tests.helpers import NOBODY, as_nobody, give_to_nobody, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "maildir"
ZONE = DEMO / "zone.txt"
PHISH = next((DEMO / "new").glob("1741659463.*"))
CLI = [sys.executable, "-m", "classifier.commands.main"]
RCPT = "alice@family.example"
ROOTS_OWN = b"root's own file\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacks need root and nobody")


class Place:
    """A log directory of nobody's, a root-owned file it may aim at, and a config."""

    def __init__(self, base: Path, daemon_user: bool) -> None:
        self.logdir = base / "log"
        self.logdir.mkdir()
        give_to_nobody(self.logdir)
        self.log = self.logdir / "authsieve.log"
        self.victim = base / "victim"
        self.victim.write_bytes(ROOTS_OWN)
        self.run = base / "run"
        self.run.mkdir(mode=0o755)
        self.socket = self.run / "authsieve.sock"
        extra = 'daemon_user = "nobody"\nsocket_user = "nobody"\n' if daemon_user else ""
        self.config = base / "config.toml"
        self.config.write_text(
            (ROOT / "examples" / "config.toml")
            .read_text()
            .replace("[classifier]", f'[classifier]\nlog_file = "{self.log}"\n{extra}', 1)
        )

    def plant_symlink(self) -> None:
        as_nobody(lambda: os.symlink(self.victim, self.log))


@pytest.fixture
def serve_place(open_tmp: Path) -> Place:
    return Place(open_tmp, daemon_user=True)


@contextlib.contextmanager
def _serve(place: Place) -> Iterator[subprocess.Popen[bytes]]:
    argv = [*CLI, "serve", "--config", str(place.config), "--dns-zone", str(ZONE),
            "--socket", str(place.socket)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(place.socket.exists, what="the daemon's socket")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=30)


def _stop(proc: subprocess.Popen[bytes]) -> bytes:
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    return err


def test_serve_as_root_never_appends_through_a_symlink_in_the_log_directory(
    serve_place: Place,
) -> None:
    place = serve_place
    place.plant_symlink()
    with _serve(place) as proc:
        outcome = ask_daemon(str(place.socket), PHISH.read_bytes(), {"recipient": RCPT}, RCPT, 30)
        assert outcome is not None and outcome.action == "quarantine"  # delivery goes on
        proc.send_signal(signal.SIGHUP)  # the reopen too
        wait_for(lambda: b"reloaded" in _peek_stderr(proc), what="the reload")
        err = _peek_stderr(proc) + _stop(proc)
        assert place.victim.read_bytes() == ROOTS_OWN
        assert place.log.is_symlink()
        assert b"cannot write" in err and b"Traceback" not in err


_seen: dict[int, bytes] = {}


def _peek_stderr(proc: subprocess.Popen[bytes]) -> bytes:
    """Reads what the daemon wrote to stderr so far, without waiting for more."""
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    chunk = proc.stderr.read() or b""
    _seen[proc.pid] = _seen.get(proc.pid, b"") + chunk
    return _seen[proc.pid]


def test_serve_as_root_logs_to_a_file_of_the_daemon_user(serve_place: Place) -> None:
    place = serve_place
    with _serve(place) as proc:
        wait_for(lambda: place.log.exists() and "listening" in place.log.read_text(),
                 what="the start line in the log file")  # fmt: skip
        st = place.log.stat()
        assert (st.st_uid, st.st_gid) == NOBODY  # written as daemon_user, never as root
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in place.log.read_text(), what="the reload line")
        _stop(proc)


def _filter(place: Place) -> subprocess.CompletedProcess[bytes]:
    argv = [*CLI, "filter", "--config", str(place.config), "--dns-zone", str(ZONE), "--", RCPT]
    data = PHISH.read_bytes()
    proc = subprocess.run(argv, input=data, capture_output=True, cwd=ROOT, timeout=60, check=False)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert b"X-Authsieve:" in proc.stdout and proc.stdout.endswith(data.split(b"\r\n\r\n", 1)[1])
    return proc


def test_filter_by_hand_as_root_gives_a_new_log_file_to_the_directorys_owner(
    open_tmp: Path,
) -> None:
    # admin review: a root run created a root-owned log the mail user could not write after
    place = Place(open_tmp, daemon_user=False)
    _filter(place)
    st = place.log.stat()
    assert (st.st_uid, st.st_gid) == NOBODY
    assert "filtered to=" in place.log.read_text()

    def append() -> None:
        with place.log.open("a") as f:
            f.write("nobody's line\n")

    as_nobody(append)


def test_filter_by_hand_as_root_follows_no_link_at_the_log_file(open_tmp: Path) -> None:
    place = Place(open_tmp, daemon_user=False)
    place.plant_symlink()
    _filter(place)
    assert place.victim.read_bytes() == ROOTS_OWN
    # A hard link (no protected_hardlinks on this system) is another name of root's file.
    place.log.unlink()
    os.link(place.victim, place.log)
    _filter(place)
    assert place.victim.read_bytes() == ROOTS_OWN
