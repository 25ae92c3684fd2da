"""Logging never holds mail: an unwritable log file, no syslog, and the units' log directory.

The commands run as a real unprivileged user (nobody), the way Postfix's
pipe(8) and the systemd units run them, in a private mount namespace where
/dev has no ``log`` socket (``unshare -m``) when the machine has one.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier.log import SYSLOG_SOCKETS, DroppedRecords, open_handler
from tests.conftest import ROOT
from tests.mta import Interpreter, give, open_up, pipe_interpreter

DEMO = ROOT / "examples" / "maildir"
UNITS = ROOT / "examples" / "systemd"
MESSAGE = DEMO / "new" / "1741604735.M22778P24753.mx,S=3258,W=3258"  # inbox
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    """Gives a directory nobody can read, with authsieve's code in it for nobody to run."""
    root = Path(tempfile.mkdtemp(prefix="authsieve-log-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def python(place: Path) -> Interpreter:
    found = pipe_interpreter(place, NOBODY)
    if isinstance(found, str):
        pytest.skip(found)
    return found


def without_syslog(argv: list[str]) -> list[str]:
    """Gives argv run as nobody, where no syslog socket exists (a private /dev if need be)."""
    drop = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups"]
    present = [p for p in SYSLOG_SOCKETS if os.path.lexists(p)]
    if not present:
        return [*drop, *argv]
    if shutil.which("unshare") is None:
        pytest.skip("this machine has a syslog socket and no unshare to hide it")
    hide = " && ".join(f"mount -t tmpfs tmpfs {os.path.dirname(p)}" for p in present)
    return ["unshare", "-m", "sh", "-c", f'{hide} && exec "$@"', "sh", *drop, *argv]


def unwritable_log(place: Path) -> Path:
    """Gives a log file path in a directory root owns: nobody cannot create it (EACCES)."""
    logs = place / "var-log"
    logs.mkdir(exist_ok=True)
    logs.chmod(0o755)
    return logs / "authsieve.log"


def config(place: Path, log_file: Path) -> Path:
    path = place / "config.toml"
    text = (ROOT / "examples" / "config.toml").read_text()
    path.write_text(text.replace("[classifier]", f'[classifier]\nlog_file = "{log_file}"', 1))
    zone = place / "zone.txt"
    shutil.copyfile(DEMO / "zone.txt", zone)
    open_up(path)
    open_up(zone)
    return path


def maildir_of_nobody(place: Path, name: str) -> Path:
    maildir = place / name / "family.example" / "alice" / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True)
    give(place / name, NOBODY)
    return maildir


def run(
    python: Interpreter, argv: list[str], data: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    code = "import sys; from classifier.commands.main import main; sys.exit(main())"
    return subprocess.run(
        without_syslog([python.python, "-c", code, *argv]),
        input=data,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(python.path)},
        cwd="/",
        timeout=120,
        check=False,
    )


def test_pipe_delivers_with_an_unwritable_log_file_and_no_syslog_and_prints_nothing(
    place: Path, python: Interpreter
) -> None:
    """Today: "internal error: PermissionError" on stderr, and exit 75 for every message."""
    log_file = unwritable_log(place)
    maildir = maildir_of_nobody(place, "pipe")
    argv = ["pipe", "--config", str(config(place, log_file)), "--dns-zone", str(place / "zone.txt")]
    argv += ["--recipient", "alice@family.example", "--deliver", f"maildir:{maildir}"]
    done = run(python, argv, MESSAGE.read_bytes())
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    [delivered] = os.listdir(maildir / "new")
    assert (
        b"X-Authsieve: v=1; id=mx.family.example; verdict=inbox"
        in (maildir / "new" / delivered).read_bytes()
    )
    assert not log_file.exists()


def test_pipe_whose_delivery_fails_says_how_many_log_lines_were_dropped(
    place: Path, python: Interpreter
) -> None:
    log_file = unwritable_log(place)
    argv = ["pipe", "--config", str(config(place, log_file)), "--dns-zone", str(place / "zone.txt")]
    argv += ["--recipient", "alice@family.example", "--deliver", f"maildir:{place / 'var-log'}"]
    done = run(python, argv, MESSAGE.read_bytes())
    assert done.returncode == 75
    last = done.stderr.decode().strip().splitlines()[-1]
    assert re.fullmatch(r"authsieve: \d+ log line\(s\) dropped: no log file or syslog", last)


def test_watch_with_an_unwritable_log_file_logs_to_stderr_once_said_why_and_files(
    place: Path, python: Interpreter
) -> None:
    """Today: exit 70 ("internal error: PermissionError"), over and over under systemd."""
    log_file = unwritable_log(place)
    maildir = maildir_of_nobody(place, "watch")
    shutil.copyfile(MESSAGE, maildir / "new" / MESSAGE.name)
    give(maildir, NOBODY)
    argv = ["watch", "--config", str(config(place, log_file)), "--dns-zone"]
    argv += [str(place / "zone.txt"), "--once", "--workers", "0", str(maildir)]
    done = run(python, argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith("filed=1 inbox=1 junk=0 quarantine=0 left_alone=0")
    lines = done.stderr.decode().splitlines()
    assert lines[0] == (
        f"authsieve: log_file {log_file}: cannot write: Permission denied;"
        f" no syslog at {', '.join(SYSLOG_SOCKETS)}; logging to stderr"
    )
    assert len(lines) == 2 and lines[1].startswith("authsieve: filed 1741604735.M22778P24753.mx")


def test_a_log_file_that_cannot_be_opened_falls_back_to_syslog_with_a_warning(
    tmp_path: Path,
) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "log"))
    server.settimeout(5)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    try:
        handler, why = open_handler(str(blocked / "x.log"), False, (str(tmp_path / "log"),))
        assert why == f"log_file {blocked}/x.log: cannot write: Not a directory; logging to syslog"
        record = logging.LogRecord("authsieve", logging.WARNING, __file__, 1, why, None, None)
        handler.handle(record)
        handler.close()
        assert (
            server.recv(500) == f"<20>authsieve[{os.getpid()}]: {why}\x00".encode()
        )  # mail.warning
    finally:
        server.close()


def test_pipe_without_file_or_syslog_drops_and_counts(tmp_path: Path) -> None:
    handler, why = open_handler(None, False, (str(tmp_path / "none"),))
    assert isinstance(handler, DroppedRecords)
    assert why == f"no syslog at {tmp_path / 'none'}; log lines are dropped"
    handler.handle(logging.LogRecord("authsieve", logging.INFO, __file__, 1, "x", None, None))
    assert handler.count == 1


# --- the systemd units and the README agree on where the log goes ------------------------


def unit_values(unit: Path, key: str) -> list[str]:
    return [
        line.split("=", 1)[1].strip()
        for line in unit.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def test_readme_log_file_is_where_every_unit_may_write() -> None:
    """ProtectSystem=strict makes /var/log read-only: README's log_file must be writable."""
    readme = (ROOT / "README.md").read_text()
    suggested = set(re.findall(r'log_file = "([^"]+)"', readme))
    assert suggested == {"/var/log/authsieve/authsieve.log"}
    for unit in sorted(UNITS.glob("*.service")):
        assert unit_values(unit, "ProtectSystem") == ["strict"]
        writable = [f"/var/log/{d}" for d in unit_values(unit, "LogsDirectory")]
        writable += [p for v in unit_values(unit, "ReadWritePaths") for p in v.split()]
        for path in suggested:
            assert any(Path(path).is_relative_to(w) for w in writable), (unit.name, path)
        assert unit_values(unit, "User") == ["vmail"]  # LogsDirectory= gives it to vmail


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    units = []
    for unit in sorted(UNITS.glob("*.service")):
        # verify wants ExecStart's program to exist: the one this test runs stands in for it.
        text = unit.read_text().replace("/usr/local/bin/authsieve", sys.executable)
        (tmp_path / unit.name).write_text(text)
        units.append(str(tmp_path / unit.name))
    done = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=120
    )
    complaints = [line for line in done.stderr.splitlines() if str(tmp_path) in line]
    assert done.returncode == 0 and complaints == [], done.stderr


def test_every_unit_may_write_the_stores_default_directory() -> None:
    """serve and the watcher record deliveries ([learn], [reports]) into /var/lib/authsieve."""
    for unit in sorted(UNITS.glob("*.service")):
        writable = [p.lstrip("-") for v in unit_values(unit, "ReadWritePaths") for p in v.split()]
        assert "/var/lib/authsieve" in writable, unit.name
