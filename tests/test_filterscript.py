"""The --filter sieve_before script and the authsieve-filter program (sieve/filterscript.py)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from classifier.config import config_from_dict, load_config
from sieve.filterscript import generate_filter_script, program_text
from sieve.generate import generate_global_script

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "config.toml"


def rules_of(script: str) -> str:
    """Gives what follows the require line and the filter preamble: the filing rules."""
    code = script.split("\nrequire [", 1)[1].split("\n", 1)[1]
    return code.split("\n}\n\n", 1)[1] if "filter " in code else code.lstrip("\n")


def test_filter_script_files_by_the_rules_of_pipe_modes_script() -> None:
    config = load_config(CONFIG)
    settings, policies = config.engine, config.policies
    filtered = generate_filter_script(policies, settings.authserv_id)
    assert rules_of(filtered) == rules_of(generate_global_script(policies, settings.authserv_id))
    assert 'if not filter "authsieve-filter" ["${authsieve_to}", "${authsieve_from}"] {' in filtered
    assert '"vnd.dovecot.filter", "variables", "envelope", "editheader"' in filtered
    assert 'addheader "X-Authsieve"' in filtered and 'error=\\"filter program failed\\"' in filtered


def test_a_user_name_with_dollar_brace_is_no_variable_in_the_filter_script() -> None:
    config = config_from_dict(
        {
            "classifier": {"authserv_id": "mx.example.org"},
            "users": {"a${x}@example.org": {"spf_fail": "quarantine"}},
        }
    )
    script = generate_filter_script(config.policies, config.engine.authserv_id)
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    uses = [line for line in code if "${" in line]
    assert all("authsieve_" in line or "${1}" in line for line in uses), uses
    assert "a[$]\\\\{x\\\\}@example\\\\.org" in script


def test_program_runs_authsieve_filter_with_the_envelope_after_double_dash(tmp_path: Path) -> None:
    text = program_text(["/opt/a b/authsieve"], "/etc/authsieve/c.toml", 7.5)
    assert text.startswith("#!/bin/sh\n")
    assert text.endswith(
        "exec '/opt/a b/authsieve' filter --config /etc/authsieve/c.toml --deadline 7.5 -- \"$@\"\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "sieve", "install",
         "--filter-dir", str(tmp_path), "--config", str(CONFIG)],
        cwd=ROOT, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    program = tmp_path / "authsieve-filter"
    assert stat.S_IMODE(program.stat().st_mode) == 0o755
    assert f"--config {CONFIG}" in program.read_text()


def test_filter_script_is_global_only() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "sieve", "generate", "--filter",
         "--user", "alice@family.example", "--config", str(CONFIG)],
        cwd=ROOT, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and b"--filter" in done.stderr
