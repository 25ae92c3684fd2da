"""The `authsieve` command line (classifier/commands/main.py): what every command shares."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import classifier

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_packages_and_exits_0() -> None:
    argv = [sys.executable, "-m", "classifier.commands.main", "--version"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        f"authsieve {classifier.__version__}\n",
        "",
    )
    assert metadata.version("authsieve") == classifier.__version__
