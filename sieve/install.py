"""Putting a generated script where Dovecot runs it: a directory, or a ManageSieve server.

A directory install never leaves a half-written or uncompilable script in
place: the script is compiled with sievec (when installed) in a private
temporary directory, then written to a temporary file of random name in the
target directory, fsynced, and only then renamed over the old one.  A
ManageSieve install (RFC 5804) uploads with PUTSCRIPT, which the server
checks, then SETACTIVE, through sievelib's client.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from classifier.errors import UsageError
from classifier.files import fsync_dir, open_dir, temp_name, write_synced
from sieve.pigeonhole import compile_script_file, find_tool

SCRIPT_NAME = "authsieve"


class InstallError(UsageError):
    """An install that did not happen: one line for the user (exit 2)."""


@dataclass(frozen=True)
class InstallResult:
    """Where the script went and whether it was compiled or activated."""

    target: str  # file path, or managesieve://user@host:port/name
    compiled: bool = False
    binary: str = ""
    active: bool = False
    checked: bool = False  # sievec accepted the script (also when no binary was installed)

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "compiled": self.compiled,
            "binary": self.binary,
            "active": self.active,
            "checked": self.checked,
        }


INSTALLED_MODE = 0o644  # Dovecot reads the script and its binary as the mail user, not root


def _put(dir_fd: int, name: str, data: bytes, mode: int = INSTALLED_MODE) -> None:
    """Puts data at dir_fd/name: a new, unpredictable temp file, fsynced, renamed over name.

    The directory may belong to the mail user (the per-user install): the temp
    file is created with O_EXCL|O_NOFOLLOW under a random name, and rename(2)
    replaces a symlink at the final name instead of writing where it points.
    The mode is set through the descriptor whatever the umask: a 0600 root
    file in sieve_before makes dovecot-lda (as vmail) log errors and recompile
    on every delivery.
    """
    tmp = temp_name(f".{name}.", ".tmp")
    write_synced(tmp, data, mode, dir_fd=dir_fd, exact_mode=True)
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _sievec(script: Path, shown: Path, extra_config: str = "") -> bytes:
    """Gives the binary sievec makes of script; raises InstallError naming `shown`.

    The output goes to a private temporary directory of ours.  A binary
    records the path of its script, and Dovecot recompiles (and, in a
    directory it may not write, logs errors on every delivery) when that is
    not the path it runs: compile the installed file to use the binary there.
    """
    with tempfile.TemporaryDirectory(prefix="authsieve-sievec-") as private:
        out = Path(private, script.with_suffix(".svbin").name)
        result = compile_script_file(script, out, extra_config)
        if not result.ok:
            raise InstallError(f"{shown}: sievec rejected the script: {result.first_error()}")
        return out.read_bytes()


def install_to_dir(
    script: str,
    directory: Path,
    name: str = SCRIPT_NAME,
    compile_with_sievec: bool = True,
    extra_config: str = "",
) -> InstallResult:
    """Gives the installed DIR/name.sieve (and .svbin), written atomically; raises InstallError.

    sievec first checks the script in a private temporary directory of ours,
    never in DIR (which the mail user may own and fill with links); a script
    it rejects replaces nothing.  The files are put into DIR by `_put`, mode
    0644.  In a directory of ours (root's sieve_before directory) the
    installed script is then compiled under the path Dovecot runs and the
    binary put after it, so that it is the newer file: Dovecot uses it
    instead of recompiling (sieve_before directories are usually not writable
    by the mail user).  In a directory another user owns, sievec never reads
    what that user could swap: Dovecot compiles the script there itself.
    """
    if not directory.is_dir():
        raise InstallError(f"{directory}: no such directory")
    # Dovecot names the script by the path in its config: absolute, as the admin wrote it.
    final = Path(os.path.abspath(directory)) / f"{name}.sieve"
    final_bin = final.with_suffix(".svbin")
    data = script.encode("utf-8")
    checked = False
    try:
        binary = b""
        use_sievec = compile_with_sievec and bool(find_tool("sievec"))
        if use_sievec:
            with tempfile.TemporaryDirectory(prefix="authsieve-sievec-") as private:
                # sievec names the script after the file: keep the name and the ".sieve" ending.
                src = Path(private, final.name)
                write_synced(src, data, 0o600)
                _sievec(src, final, extra_config)
            checked = True
        dir_fd = open_dir(directory, follow=True)
        try:
            _put(dir_fd, final.name, data)
            fsync_dir(dir_fd)
            if use_sievec and os.fstat(dir_fd).st_uid == os.geteuid():
                binary = _sievec(final, final, extra_config)
                _put(dir_fd, final_bin.name, binary)
                fsync_dir(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise InstallError(f"{final}: cannot write: {exc.strerror or exc}") from None
    return InstallResult(
        target=str(final),
        compiled=bool(binary),
        binary=str(final_bin) if binary else "",
        checked=checked,
    )


def install_program(text: str, directory: Path, name: str) -> str:
    """Gives DIR/name, the program written atomically, mode 0755 (sieve_filter_bin_dir)."""
    if not directory.is_dir():
        raise InstallError(f"{directory}: no such directory")
    final = Path(os.path.abspath(directory)) / name
    try:
        dir_fd = open_dir(directory, follow=True)
        try:
            _put(dir_fd, name, text.encode("utf-8"), mode=0o755)
            fsync_dir(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise InstallError(f"{final}: cannot write: {exc.strerror or exc}") from None
    return str(final)


def read_password_file(path: Path, warn: TextIO | None = None) -> str:
    """Gives the password on the first line of path (the line break removed).

    Warns (one line on `warn`, stderr by default) when the file is readable by
    its group or by others: a password there is everyone's.
    """
    try:
        with path.open(encoding="utf-8") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            text = fh.read()
    except OSError as exc:
        raise InstallError(f"{path}: cannot read: {exc.strerror}") from None
    if mode & 0o044:
        print(
            f"authsieve: warning: {path}: the password file is readable by others"
            f" (mode {stat.S_IMODE(mode):04o}); chmod 600 it",
            file=warn or sys.stderr,
        )
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
