"""`sieve install --dir` into a directory a mail user owns, and the ManageSieve password file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from sieve.install import install_to_dir, read_password_file
from tests.helpers import as_nobody, give_to_nobody

SCRIPT = (
    'require ["fileinto"];\nif header :contains "X-Authsieve" "verdict=junk" { fileinto "Junk"; }\n'
)


def test_install_as_root_never_writes_through_a_link_the_user_planted(open_tmp: Path) -> None:
    user_dir = open_tmp / "sieve"
    user_dir.mkdir()
    give_to_nobody(user_dir)
    victim = open_tmp / "victim"  # root's file, which the user cannot write
    victim.write_text("root's data\n")
    victim.chmod(0o600)

    def plant() -> None:
        # The old temp names were .NAME.PID.tmp.sieve: every pid this test could run as.
        for pid in range(max(2, os.getpid() - 50), os.getpid() + 2000):
            for ext in ("sieve", "svbin"):
                os.symlink(victim, user_dir / f".authsieve.{pid}.tmp.{ext}")
        os.symlink(victim, user_dir / "authsieve.svbin")

    as_nobody(plant)
    result = install_to_dir(SCRIPT, user_dir)
    assert victim.read_text() == "root's data\n"
    final = Path(result.target)
    assert not final.is_symlink() and final.read_text() == SCRIPT
    if result.compiled:
        assert not Path(result.binary).is_symlink()
    leftovers = [p.name for p in user_dir.iterdir() if not p.is_symlink()]
    assert sorted(leftovers) == sorted(
        ["authsieve.sieve"] + (["authsieve.svbin"] if result.compiled else [])
    )


def test_install_leaves_no_temp_file_with_a_predictable_name(tmp_path: Path) -> None:
    install_to_dir(SCRIPT, tmp_path, compile_with_sievec=False)
    assert [p.name for p in tmp_path.iterdir()] == ["authsieve.sieve"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_password_file_readable_by_others_is_warned_about(tmp_path: Path, mode: int) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(mode)
    warned = io.StringIO()
    assert read_password_file(secret, warned) == "hunter2"
    assert "readable by others" in warned.getvalue()
    assert warned.getvalue().count("\n") == 1


def test_private_password_file_gives_no_warning(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)
    warned = io.StringIO()
    assert read_password_file(secret, warned) == "hunter2"
    assert warned.getvalue() == ""
