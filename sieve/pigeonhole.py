"""Pigeonhole's own tools, run without a Dovecot server: sievec to compile, sieve-test to run.

Both read a dovecot.conf.  We give them a private one in a temporary
directory (RECIPES.md "Pigeonhole without a Dovecot server"): as root,
sieve-test drops to ``nobody`` and refuses to run without a mail user, and a
system dovecot.conf may be unreadable or absent.  Files the tools read are
made world-readable inside that directory.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TOOL_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/sbin")


def find_tool(name: str) -> str | None:
    """Gives the path of a Pigeonhole tool (sievec, sieve-test), or None when absent."""
    found = shutil.which(name)
    if found:
        return found
    for d in TOOL_DIRS:
        path = Path(d) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


DOVECOT = "/usr/sbin/dovecot"


@functools.cache
def dovecot_version(binary: str = DOVECOT) -> tuple[int, int]:
    """Gives the installed Dovecot's (major, minor) from `dovecot --version`; (2, 3) if unknown."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        found = re.match(r"(\d+)\.(\d+)", out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        found = None
    return (int(found[1]), int(found[2])) if found else (2, 3)


def private_config(workdir: Path, version: tuple[int, int] | None = None) -> str:
    """Gives the text of a dovecot.conf good enough for sievec and sieve-test in workdir."""
    # Dovecot 2.4 wants its config version first and split mail_location up (doc.dovecot.org,
    # "Upgrading Dovecot CE from 2.3 to 2.4"); 2.3 knows neither setting.
    if (version or dovecot_version()) >= (2, 4):
        head = ["dovecot_config_version = 2.4.0", "dovecot_storage_version = 2.4.0"]
        mail = ["mail_driver = maildir", f"mail_path = {workdir}/mail"]
    else:
        head, mail = [], [f"mail_location = maildir:{workdir}/mail"]
    lines = [
        *head,
        f"mail_home = {workdir}/home",
        *mail,
        "ssl = no",
        "log_path = /dev/stderr",
        "stats_writer_socket_path =",
        "first_valid_uid = 1",
    ]
    if os.geteuid() == 0:
        # sieve-test as root needs a user to become; nobody can read the 0644 files.
        lines += ["mail_uid = nobody", "mail_gid = nogroup"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CompileResult:
    """Whether sievec accepted a script, and its messages when it did not."""

    ok: bool
    errors: str
    binary: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "errors": self.errors, "binary": self.binary}

    def first_error(self) -> str:
        """Gives the first line of sievec's complaint (for a one-line message)."""
        for line in self.errors.splitlines():
            if "error" in line.lower():
                return line.strip()
        return (self.errors.strip().splitlines() or ["sievec failed"])[0]


@dataclass(frozen=True)
class SieveRun:
    """What sieve-test said the script does with one message."""

    stores: tuple[str, ...]  # folders stored into, explicit actions and implicit keep alike
    flags: tuple[str, ...]
    implicit_keep: bool
    output: str = field(default="", compare=False)

    @property
    def folder(self) -> str:
        """Gives the one folder the message lands in ("INBOX" for keep), or "" when several."""
        return self.stores[0] if len(self.stores) == 1 else ""

    def to_dict(self) -> dict[str, object]:
        return {
            "stores": list(self.stores),
            "flags": list(self.flags),
            "implicit_keep": self.implicit_keep,
        }


_STORE = re.compile(r"^\s*\*\s*store message in folder:\s*(.+?)\s*$")
_KEEP = re.compile(r"^\s*\*\s*keep\s*$")
_FLAGS = re.compile(r"^\s*\+\s*add IMAP flags:\s*(.+?)\s*$")


def parse_sieve_test_output(text: str) -> SieveRun:
    """Gives the stores and flags from sieve-test's "Performed actions" and "Implicit keep"."""
    stores: list[str] = []
    flags: list[str] = []
    section = ""
    implicit = False
    for line in text.splitlines():
        if line.startswith("Performed actions:"):
            section = "performed"
        elif line.startswith("Implicit keep:"):
            section = "implicit"
        elif section:
            store, keep, flag = _STORE.match(line), _KEEP.match(line), _FLAGS.match(line)
            if store or keep:
                stores.append(store.group(1) if store else "INBOX")
                implicit = implicit or section == "implicit"
            elif flag:
                flags.extend(flag.group(1).split())
    return SieveRun(stores=tuple(stores), flags=tuple(flags), implicit_keep=implicit, output=text)


class Pigeonhole:
    """A private workspace for sievec and sieve-test; use as a context manager."""

    def __init__(self, extra_config: str = "") -> None:
        self.sievec = find_tool("sievec")
        self.sieve_test = find_tool("sieve-test")
        self.workdir = Path(tempfile.mkdtemp(prefix="authsieve-pigeonhole-"))
        self.workdir.chmod(0o755)
        for sub in ("home", "mail"):
            (self.workdir / sub).mkdir(mode=0o755)
        self.config = self.workdir / "dovecot.conf"
        self.config.write_text(private_config(self.workdir) + extra_config)
        self.config.chmod(0o644)
        self._messages = 0

    def __enter__(self) -> Pigeonhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _readable(self, name: str, data: bytes) -> Path:
        path = self.workdir / name
        path.write_bytes(data)
        path.chmod(0o644)
        return path

    def compile_file(self, script: Path, binary: Path) -> CompileResult:
        """Gives sievec's judgement of script, writing the binary to binary when it compiles."""
        if not self.sievec:
            return CompileResult(ok=False, errors="sievec not found (install dovecot-sieve)")
        proc = subprocess.run(
            [self.sievec, "-c", str(self.config), str(script), str(binary)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        ok = proc.returncode == 0 and binary.exists()
        return CompileResult(
            ok=ok, errors=(proc.stdout + proc.stderr).strip(), binary=str(binary) if ok else ""
        )

    def compile(self, script_text: str, name: str = "script") -> CompileResult:
        """Gives sievec's judgement of script_text, kept as name.sieve/.svbin for run()."""
        script = self._readable(f"{name}.sieve", script_text.encode("utf-8"))
        binary = self.workdir / f"{name}.svbin"
        result = self.compile_file(script, binary)
        if result.ok:
            binary.chmod(0o644)
            # sieve-test reuses the binary only when it is newer than the script.
            past = time.time() - 60
            os.utime(script, (past, past))
        return result

    def run(
        self, name: str, message: bytes, sender: str | None = None, recipient: str | None = None
    ) -> SieveRun:
        """Gives what the compiled script name does with message, according to sieve-test."""
        if not self.sieve_test:
            raise FileNotFoundError("sieve-test not found (install dovecot-sieve)")
        self._messages += 1
        msg = self._readable(f"msg-{self._messages}.eml", message)
        cmd = [self.sieve_test, "-c", str(self.config)]
        if sender is not None:
            cmd += ["-f", sender]
        if recipient is not None:
            cmd += ["-a", recipient, "-r", recipient]
        cmd += [str(self.workdir / f"{name}.sieve"), str(msg)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        msg.unlink()
        if proc.returncode != 0:
            raise RuntimeError(f"sieve-test failed ({proc.returncode}): {proc.stderr.strip()}")
        return parse_sieve_test_output(proc.stdout)


def compile_script_file(script: Path, binary: Path, extra_config: str = "") -> CompileResult:
    """Gives sievec's judgement of the script file, writing binary when it compiles.

    `extra_config` is added to the private dovecot.conf: the plugins and
    extensions a script for a Pigeonhole plugin (imapsieve, extprograms) needs.
    """
    with Pigeonhole(extra_config) as ph:
        return ph.compile_file(script, binary)
