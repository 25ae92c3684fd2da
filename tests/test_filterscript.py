"""The --filter sieve_before script and the authsieve-filter program (sieve/filterscript.py)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from classifier.auth.facts import parse_header_value
from classifier.config import config_from_dict, load_config
from classifier.evaluate import failed_annotation
from sieve.filterscript import (
    FAILED,
    failure_header_value,
    generate_filter_script,
    program_text,
)
from sieve.generate import generate_global_script
from sieve.pigeonhole import Pigeonhole, dovecot_version, find_tool

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
    assert 'envelope :all :is "to" "a${authsieve_dollar}{x}@example.org"' in script


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


EXTPROGRAMS = "/usr/lib/dovecot/modules/sieve/lib90_sieve_extprograms_plugin.so"


def extprograms_conf(bindir: Path) -> str:
    """The private sievec/sieve-test lines for a script that runs `filter`, per Dovecot version.

    Tests compile the script as a personal one, so the extensions go in sieve_extensions;
    2.4 has no plugin { } section and takes boolean lists (doc.dovecot.org, "Sieve Plugin").
    """
    if dovecot_version() >= (2, 4):
        return (
            "sieve_plugins {\n  sieve_extprograms = yes\n}\n"
            "sieve_extensions {\n  vnd.dovecot.filter = yes\n  editheader = yes\n}\n"
            f"sieve_filter_bin_dir = {bindir}\n"
        )
    return (
        "plugin {\n  sieve_plugins = sieve_extprograms\n"
        "  sieve_extensions = +vnd.dovecot.filter +editheader\n"
        f"  sieve_filter_bin_dir = {bindir}\n}}\n"
    )


@pytest.mark.skipif(
    not (find_tool("sievec") and find_tool("sieve-test") and os.path.exists(EXTPROGRAMS)),
    reason="needs Pigeonhole with extprograms (bash scripts/install-deps --test)",
)
def test_a_failed_program_is_filed_by_the_recipients_internal_error() -> None:
    config = config_from_dict(
        {
            "classifier": {"authserv_id": "mx.example.org"},
            "policy": {"internal_error": "inbox"},
            "users": {
                "Carol@Example.org": {"internal_error": "quarantine"},
                "dave@example.org": {"spf_fail": "quarantine"},
                "f${x}@example.org": {"internal_error": "junk"},
            },
        }
    )
    settings, policies = config.engine, config.policies
    script = generate_filter_script(policies, settings.authserv_id)
    message = b"From: x@example.net\r\nSubject: hi\r\n\r\nbody\r\n"
    with Pigeonhole() as ph:
        # The program "crashes": Sieve's filter test is false and the script adds the header.
        bindir = ph.workdir / "bin"
        bindir.mkdir(mode=0o755)
        program = bindir / "authsieve-filter"
        program.write_text("#!/bin/sh\ncat >/dev/null\nexit 1\n")
        program.chmod(0o755)
        with ph.config.open("a") as conf:
            conf.write(extprograms_conf(bindir))
        compiled = ph.compile(script, "filter")
        assert compiled.ok, compiled.errors
        carol = ph.run("filter", message, "x@example.net", "carol@example.org")
        carol_plus = ph.run("filter", message, "x@example.net", "Carol+news@EXAMPLE.org")
        dave = ph.run("filter", message, "x@example.net", "dave@example.org")
        stranger = ph.run("filter", message, "x@example.net", "erin@example.org")
        dollar = ph.run("filter", message, "x@example.net", "f${x}@example.org")
    assert carol.folder == carol_plus.folder == "Quarantine"
    assert dollar.folder == "Junk"  # the name, not a variable, matched
    assert dave.folder == stranger.folder == "INBOX"
    # Python's own failure header for Carol is the one the script added.
    value = failure_header_value(policies, settings.authserv_id, "carol@example.org")
    expected = failed_annotation(
        message, settings.authserv_id, policies, "carol@example.org", FAILED
    )
    header = expected.data[: -len(message)].decode()
    assert re.sub(r"\r\n\t", " ", header) == f"X-Authsieve: {value}\r\n"  # folded at "; "
    assert parse_header_value(value)["user"] == "carol@example.org"


def test_install_writes_the_daemon_socket_into_the_program(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.read_text().replace(
            "[classifier]", '[classifier]\ndaemon_socket = "/run/authsieve/a.sock"', 1
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "sieve", "install",
         "--filter-dir", str(tmp_path), "--config", str(config)],
        cwd=ROOT, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "authsieve-filter").read_text()
    assert f" filter --daemon /run/authsieve/a.sock --config {config} --deadline 8 "
    assert " --authserv-id=mx.family.example -- " in text


SIEVEC_EXTPROGRAMS = pytest.mark.skipif(
    not (find_tool("sievec") and os.path.exists(EXTPROGRAMS)),
    reason="needs Pigeonhole with extprograms (bash scripts/install-deps --test)",
)


@SIEVEC_EXTPROGRAMS
def test_readme_install_of_the_filter_script_passes_the_real_sievec(tmp_path: Path) -> None:
    # README "Dovecot LMTP": `authsieve sieve install --dir DIR --filter --config …`,
    # before any conf.d file is in place: sievec must know vnd.dovecot.filter.
    done = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "sieve", "install",
         "--dir", str(tmp_path), "--filter", "--config", str(CONFIG)],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "vnd.dovecot.filter" in (tmp_path / "authsieve.sieve").read_text()
    assert (tmp_path / "authsieve.svbin").stat().st_size > 0


@SIEVEC_EXTPROGRAMS
def test_suggest_apply_reinstalls_a_filter_script_through_sievec(tmp_path: Path) -> None:
    import argparse

    from classifier.commands.learn import _reinstall

    config = tmp_path / "config.toml"
    config.write_text(CONFIG.read_text())
    (tmp_path / "authsieve.sieve").write_text('# old\nrequire "vnd.dovecot.filter";\n')
    args = argparse.Namespace(sieve_dir=str(tmp_path))
    assert _reinstall(args, load_config(config), config) == 0
    text = (tmp_path / "authsieve.sieve").read_text()
    assert text.startswith("#") and 'filter "authsieve-filter"' in text
    assert (tmp_path / "authsieve.svbin").stat().st_size > 0


def test_recipient_delimiter_is_validated_and_cuts_the_detail() -> None:
    from classifier.config import ConfigError
    from classifier.names import mailbox_owner

    assert mailbox_owner("<Bob+News@Family.Example>") == "bob@family.example"
    assert mailbox_owner("bob-x+y@a.example", "+-") == "bob@a.example"
    assert mailbox_owner("+x@a.example") == "+x@a.example"  # no user left: kept whole
    assert mailbox_owner("bob+x@a.example", "") == "bob+x@a.example"
    assert (
        config_from_dict({"classifier": {"recipient_delimiter": "-"}}).engine.recipient_delimiter
        == "-"
    )
    with pytest.raises(ConfigError, match="recipient_delimiter"):
        config_from_dict({"classifier": {"recipient_delimiter": "x"}})


@SIEVEC_EXTPROGRAMS
def test_a_broken_config_is_filed_by_the_recipients_internal_error(tmp_path: Path) -> None:
    # The installed program, its config broken after install: sieve-test runs it for real.
    with Pigeonhole(extra_config="") as ph:
        config = ph.workdir / "config.toml"
        config.write_text(
            '[classifier]\nauthserv_id = "mx.example.org"\n'
            '[users."carol@example.org"]\ninternal_error = "quarantine"\n'
        )
        config.chmod(0o644)
        bindir = ph.workdir / "bin"
        bindir.mkdir(mode=0o755)
        conf = ("--config", str(config))
        for argv in (("--filter-dir", str(bindir)), ("--dir", str(ph.workdir), "--filter")):
            done = subprocess.run(
                [sys.executable, "-m", "classifier.commands.main", "sieve", "install",
                 *argv, *conf],
                cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        (ph.workdir / "authsieve.sieve").rename(ph.workdir / "filter.sieve")
        with ph.config.open("a") as f:
            f.write(extprograms_conf(bindir))
        assert ph.compile((ph.workdir / "filter.sieve").read_text(), "filter").ok
        config.write_text("[classifier\n")  # broken after install
        message = b"From: x@example.net\r\nSubject: hi\r\n\r\nbody\r\n"
        carol = ph.run("filter", message, "x@example.net", "carol+x@example.org")
        erin = ph.run("filter", message, "x@example.net", "erin@example.org")
    assert carol.folder == "Quarantine"
    assert erin.folder == "INBOX"


def test_install_writes_dns_zone_and_server_into_the_program(tmp_path: Path) -> None:
    zone = ROOT / "examples" / "maildir" / "zone.txt"
    done = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "sieve", "install",
         "--filter-dir", str(tmp_path), "--config", str(CONFIG),
         "--dns-zone", str(zone), "--dns-server", "127.0.0.1:5353"],
        cwd=ROOT, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "authsieve-filter").read_text()
    assert f" --dns-server 127.0.0.1:5353 --dns-zone {zone} -- " in text


def test_install_warns_when_the_deadline_reaches_dovecots_exec_timeout(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "classifier.commands.main", "sieve", "install",
            "--filter-dir", str(tmp_path), "--config", str(CONFIG)]  # fmt: skip
    quiet = subprocess.run([*argv, "--deadline", "9"], cwd=ROOT, capture_output=True,
                           text=True, check=False, timeout=60)  # fmt: skip
    loud = subprocess.run([*argv, "--deadline", "12"], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=60)  # fmt: skip
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert loud.returncode == 0 and loud.stderr.count("\n") == 1
    assert "sieve_filter_exec_timeout" in loud.stderr
