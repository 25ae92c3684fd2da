"""Install over ManageSieve (RFC 5804) into a real Dovecot started on 127.0.0.1 for the test."""

from __future__ import annotations

import argparse
import io
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from classifier.config import config_from_dict
from sieve.commands import cmd_sieve_install
from sieve.generate import generate_script
from sieve.install import SCRIPT_NAME, InstallError, install_managesieve
from tests.dovecot_conf import DovecotSyntax

pytestmark = pytest.mark.integration

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
MANAGESIEVE = Path("/usr/lib/dovecot/managesieve-login")
USER = "ann@example.org"
PASSWORD = "correct horse battery staple"
CONFIG = {
    "classifier": {"authserv_id": "mx.example.org"},
    "policy": {"blocked_domain_suffixes": [".cyou"]},
    "users": {USER: {"spf_softfail": "junk", "allow_senders": ["@friends.example"]}},
}


@dataclass
class Dovecot:
    """A running Dovecot with only ManageSieve, and where its throwaway user's files live."""

    port: int
    home: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accounts() -> tuple[str, str, str, str]:
    """Gives (internal user, login user, mail user, mail group) that exist on this machine."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
        return me, me, me, group

    def exists(name: str) -> bool:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return False
        return True

    internal = "dovecot" if exists("dovecot") else "nobody"
    login = "dovenull" if exists("dovenull") else "nobody"
    return internal, login, "nobody", "nogroup"


def _config(root: Path, port: int, syntax: DovecotSyntax | None = None) -> str:
    internal, login, mail_user, mail_group = _accounts()
    syntax = syntax or DovecotSyntax()
    return (
        syntax.header()
        + _SERVER.format(
            root=root, internal=internal, login=login, listener=syntax.inet_listener("sieve", port)
        )
        + syntax.allow_cleartext()
        + syntax.maildir("~/Maildir")
        + syntax.passwd_file_passdb(f"{root}/passwd")
        + syntax.static_userdb(mail_user, mail_group, f"{root}/home/{syntax.username()}")
        + syntax.sieve_scripts("~/sieve", "~/.dovecot.sieve")
    )


_SERVER = """
base_dir = {root}/run
state_dir = {root}/state
protocols = sieve
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
auth_failure_delay = 0
log_path = {root}/dovecot.log
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
service managesieve-login {{
{listener}}}
"""


def _wait_for(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dovecot exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(64):
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail("dovecot did not open its ManageSieve port")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    if not Path(DOVECOT).exists() or not MANAGESIEVE.exists():
        pytest.skip("Dovecot with ManageSieve not installed (dovecot-core, dovecot-managesieved)")
    # Not pytest's tmp_path: its parents are 0700 and Dovecot's users must walk into this one.
    root = Path(tempfile.mkdtemp(prefix="authsieve-dovecot-"))
    root.chmod(0o755)
    proc = None
    try:
        port = _free_port()
        home = root / "home" / USER.split("@")[0]
        home.mkdir(parents=True)
        _, _, mail_user, mail_group = _accounts()
        shutil.chown(home, mail_user, mail_group)
        passwd = root / "passwd"
        passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        passwd.chmod(0o644)
        conf = root / "dovecot.conf"
        conf.write_text(_config(root, port))
        conf.chmod(0o644)
        proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(port, proc, root / "dovecot.log")
        yield Dovecot(port=port, home=home)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _args(port: int, password_file: Path, user: str = USER) -> argparse.Namespace:
    return argparse.Namespace(
        user=user,
        dir=None,
        managesieve=f"127.0.0.1:{port}",
        login=None,
        password_file=str(password_file),
        starttls=False,
        name=SCRIPT_NAME,
    )


def _listed(port: int) -> tuple[str, list[str], str]:
    from sievelib.managesieve import Client

    client = Client("127.0.0.1", port)
    assert client.connect(USER, PASSWORD, authmech="PLAIN")
    active, others = client.listscripts()
    text = client.getscript(active) if active else ""
    client.logout()
    return active, others, text


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_install_uploads_and_activates_the_generated_script(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    config = config_from_dict(CONFIG, source="test.toml")
    expected = generate_script(config.policies.for_user(USER)._replace(user=USER), "mx.example.org")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    out = io.StringIO()
    assert cmd_sieve_install(_args(dovecot.port, password_file), config, out) == 0
    target = f"managesieve://{USER}@127.0.0.1:{dovecot.port}/{SCRIPT_NAME}"
    assert out.getvalue() == f"installed {target} (active)\n"
    active, _others, text = _listed(dovecot.port)
    assert active == SCRIPT_NAME
    # sievelib's GETSCRIPT drops the final line break.
    assert text.replace("\r\n", "\n") == expected.rstrip("\n")
    # The server stored it where Dovecot's delivery will run it.
    assert (dovecot.home / ".dovecot.sieve").resolve().read_text() == expected


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_reinstall_replaces_the_active_script(dovecot: Dovecot) -> None:
    first = install_managesieve("# one\nkeep;\n", "127.0.0.1", dovecot.port, USER, PASSWORD)
    second = install_managesieve("# two\nkeep;\n", "127.0.0.1", dovecot.port, USER, PASSWORD)
    assert first.active and second.active
    active, others, text = _listed(dovecot.port)
    assert (active, text.replace("\r\n", "\n")) == (SCRIPT_NAME, "# two\nkeep;")
    assert SCRIPT_NAME not in others


def test_script_the_server_rejects_is_reported_not_activated(dovecot: Dovecot) -> None:
    with pytest.raises(InstallError) as info:
        install_managesieve("frobnicate;\n", "127.0.0.1", dovecot.port, USER, PASSWORD, "broken")
    assert "upload refused" in str(info.value)


def test_nothing_listening_is_an_install_error() -> None:
    with pytest.raises(InstallError) as info:
        install_managesieve("keep;\n", "127.0.0.1", _free_port(), USER, PASSWORD)
    assert "Connection to server failed" in str(info.value)


def test_wrong_password_is_one_line_and_exit_2(
    dovecot: Dovecot, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_from_dict(CONFIG, source="test.toml")
    password_file = tmp_path / "password"
    password_file.write_text("wrong\n")
    password_file.chmod(0o600)  # a readable one adds a warning line first
    with pytest.raises(InstallError) as info:
        cmd_sieve_install(_args(dovecot.port, password_file), config)
    said = str(info.value)  # the command line's one catch prints it after "authsieve: "
    assert said.startswith(f"managesieve://{USER}@127.0.0.1:{dovecot.port}/")
    assert "login failed" in said and "\n" not in said
    assert info.value.exit_code == 2 and capsys.readouterr().err == ""
