"""The `authsieve` command line (classifier/commands/main.py): what every command shares."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import classifier
from classifier.commands import main
from classifier.errors import EX_SOFTWARE
from tests.test_layers import import_graph

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


def test_a_command_module_that_cannot_be_imported_is_named_not_an_invalid_choice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = ("classifier.commands.no_such_module", "add_report_parser", "report")
    monkeypatch.setitem(main.COMMANDS, "report", broken)
    assert main.main(["report", "/nowhere"]) == EX_SOFTWARE
    err = capsys.readouterr().err
    assert err.startswith("authsieve: report: cannot load classifier.commands.no_such_module")
    assert err.count("\n") == 1 and "invalid choice" not in err


def test_every_command_sets_its_handler_and_one_path_dispatches_them() -> None:
    rest = {
        "sieve": ["generate"],
        "quarantine": ["list"],
        "annotate": [],
        "learn": ["--user", "u", "--from-folder", "Junk", "--to-folder", "INBOX"],
    }
    for name in main.COMMANDS:
        argv = [name, *rest.get(name, ["x"])]
        args = main.build_parser(argv).parse_known_args(argv)[0]
        assert callable(getattr(args, "handler", None)), name


def test_no_command_module_imports_main_back() -> None:
    graph = import_graph(ROOT)
    back = [m for m, imported in graph.items() if "classifier.commands.main" in imported]
    assert back == ["classifier.commands.main"]  # its own `python -m` guard, nothing else
