"""Putting a generated script where Dovecot runs it: a directory, or a ManageSieve server.

A directory install never leaves a half-written or uncompilable script in
place: the script is written to a temporary file, fsynced, compiled with
sievec when it is installed, and only then renamed over the old one.  A
ManageSieve install (RFC 5804) uploads with PUTSCRIPT, which the server
checks, then SETACTIVE, through sievelib's client.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from classifier.files import fsync_dir, write_all
from sieve.pigeonhole import compile_script_file, find_tool

SCRIPT_NAME = "authsieve"


class InstallError(Exception):
    """An install that did not happen: one line for the user (exit 2)."""


@dataclass(frozen=True)
class InstallResult:
    """Where the script went and whether it was compiled or activated."""

    target: str  # file path, or managesieve://user@host:port/name
    compiled: bool = False
    binary: str = ""
    active: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "compiled": self.compiled,
            "binary": self.binary,
            "active": self.active,
        }


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def install_to_dir(
    script: str, directory: Path, name: str = SCRIPT_NAME, compile_with_sievec: bool = True
) -> InstallResult:
    """Gives the installed DIR/name.sieve (and .svbin), written atomically; raises InstallError.

    The binary is renamed into place after the script so that it is the newer
    file: Dovecot then uses it instead of recompiling (sieve_before
    directories are usually not writable by the mail user).
    """
    if not directory.is_dir():
        raise InstallError(f"{directory}: no such directory")
    final = directory / f"{name}.sieve"
    final_bin = directory / f"{name}.svbin"
    # sievec names the script after the file: keep the ".sieve" ending on the temp file.
    tmp = directory / f".{name}.{os.getpid()}.tmp.sieve"
    tmp_bin = directory / f".{name}.{os.getpid()}.tmp.svbin"
    try:
        _write_synced(tmp, script.encode("utf-8"))
        compiled = False
        if compile_with_sievec and find_tool("sievec"):
            result = compile_script_file(tmp, tmp_bin)
            if not result.ok:
                raise InstallError(f"{final}: sievec rejected the script: {result.first_error()}")
            with open(tmp_bin, "rb+") as fh:
                os.fsync(fh.fileno())
            compiled = True
        os.replace(tmp, final)
        if compiled:
            os.replace(tmp_bin, final_bin)
        fsync_dir(directory)
    except OSError as exc:
        raise InstallError(f"{final}: cannot write: {exc.strerror}") from None
    finally:
        for leftover in (tmp, tmp_bin):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return InstallResult(
        target=str(final), compiled=compiled, binary=str(final_bin) if compiled else ""
    )


def read_password_file(path: Path) -> str:
    """Gives the password on the first line of path (the line break removed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InstallError(f"{path}: cannot read: {exc.strerror}") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise InstallError(f"{path}: empty password file")
    return lines[0]


def parse_hostport(spec: str, default_port: int = 4190) -> tuple[str, int]:
    """Gives (host, port) of HOST:PORT, [V6]:PORT or HOST (port 4190, RFC 5804 §1.8)."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif spec.count(":") == 1:
        host, _, port_text = spec.partition(":")
    else:
        host, port_text = spec, ""
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise InstallError(f"--managesieve {spec}: bad port") from None
    if not host or not 0 < port < 65536:
        raise InstallError(f"--managesieve {spec}: expected HOST:PORT")
    return host, port


def _server_says(client: object) -> str:
    msg = getattr(client, "errmsg", b"") or b""
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return " ".join(text.split()) or "refused"


def install_managesieve(
    script: str,
    host: str,
    port: int,
    login: str,
    password: str,
    name: str = SCRIPT_NAME,
    starttls: bool = False,
) -> InstallResult:
    """Gives the result of uploading and activating script (RFC 5804 §2.6 PUTSCRIPT, §2.8)."""
    from sievelib.managesieve import Client, Error

    where = f"managesieve://{login}@{host}:{port}/{name}"
    client = Client(host, port)
    try:
        with warnings.catch_warnings():
            if host in ("127.0.0.1", "::1", "localhost"):
                # Cleartext on loopback never leaves the machine: sievelib's warning is noise.
                warnings.simplefilter("ignore", UserWarning)
            logged_in = client.connect(login, password, starttls=starttls, authmech="PLAIN")
        if not logged_in:
            raise InstallError(f"{where}: login failed: {_server_says(client)}")
        if not client.putscript(name, script):
            raise InstallError(f"{where}: upload refused: {_server_says(client)}")
        if not client.setactive(name):
            raise InstallError(f"{where}: activation refused: {_server_says(client)}")
        active, _ = client.listscripts()
        with contextlib.suppress(Error, OSError):
            client.logout()
    except (Error, OSError) as exc:
        raise InstallError(f"{where}: {exc}") from None
    return InstallResult(target=where, compiled=True, active=active == name)
