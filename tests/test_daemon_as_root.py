"""`authsieve serve` started as root says so unless it becomes daemon_user (issue 15 review)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "config.toml"
ZONE = ROOT / "examples" / "maildir" / "zone.txt"


@pytest.mark.parametrize(
    ("daemon_user", "socket_user"), [(None, None), ("nobody", None), ("nobody", "nobody")]
)
def test_a_daemon_left_running_as_root_warns_in_its_log(
    tmp_path: Path, daemon_user: str | None, socket_user: str | None
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    # Not pytest's tmp_path: nobody cannot reach into root's 0700 directory.
    where = Path(tempfile.mkdtemp(prefix="authsieve-root-"))
    where.chmod(0o777)  # nobody writes its log here, once it is nobody
    log = where / "serve.log"
    extra = f'log_file = "{log}"\n' + (f'daemon_user = "{daemon_user}"\n' if daemon_user else "")
    extra += f'socket_user = "{socket_user}"\n' if socket_user else ""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.read_text().replace("[classifier]\n", f"[classifier]\n{extra}", 1))
    sock = where / "d.sock"
    argv = [sys.executable, "-m", "classifier.commands.main", "serve", "--config", str(config),
            "--dns-zone", str(ZONE), "--socket", str(sock)]  # fmt: skip
    server = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: log.exists() and "listening on" in log.read_text(), 30, "the daemon")
        text = log.read_text()
    finally:
        server.terminate()
        server.communicate(timeout=30)
        shutil.rmtree(where, ignore_errors=True)
    uid = 0 if daemon_user is None else int(subprocess.check_output(["id", "-u", daemon_user]))
    assert f"(uid {uid}," in text, text
    assert ("running as root: set daemon_user" in text) == (daemon_user is None), text
    # Without socket_user the socket stays root's, and the log says what to set.
    assert (f"daemon: {sock} belongs to root: set socket_user" in text) == (not socket_user)
