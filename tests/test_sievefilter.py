"""`authsieve filter`, the program Pigeonhole's vnd.dovecot.filter runs (sievefilter.py, issue 18).

Always exit 0 with a whole message on stdout: checked and annotated, or the
original under the failure header when the config, the checks, the daemon or
the clock let it down.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from classifier.auth.facts import parse_header_value
from classifier.delivery.sievefilter import DEFAULT_DEADLINE, VALUE_OPTIONS, parse_filter_args
from classifier.message import Message
from tests.helpers import stranger_socket

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "maildir"
CONFIG = ROOT / "examples" / "config.toml"
ZONE = DEMO / "zone.txt"
NEWSLETTER = next((DEMO / "new").glob("1741761007.*"))  # all pass → inbox
PHISH = next((DEMO / "new").glob("1741659463.*"))  # SPF fail, DMARC p=reject → quarantine
RCPT = "alice@family.example"


def run_filter(*options: str, data: bytes, envelope: tuple[str, ...] = (RCPT,)) -> tuple[
    subprocess.CompletedProcess[bytes], float
]:  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "filter", *options, "--", *envelope],
        input=data,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    return proc, time.monotonic() - started


def x_authsieve(data: bytes) -> dict[str, str]:
    return parse_header_value(Message.parse(data).get_all("X-Authsieve")[0])


def test_envelope_after_the_double_dash_is_never_an_option() -> None:
    args = parse_filter_args(["--config", "/etc/a.toml", "--", RCPT, "--config=/tmp/evil"])
    assert args.options == {"--config": "/etc/a.toml"}
    assert (args.recipient, args.sender) == (RCPT, "--config=/tmp/evil")
    assert parse_filter_args(["--deadline", "nonsense"]).deadline == DEFAULT_DEADLINE
    assert parse_filter_args(["--deadline=2.5", "--", "", ""]).recipient is None


def test_filter_writes_the_annotated_message_that_pipe_mode_writes(tmp_path: Path) -> None:
    data = PHISH.read_bytes()
    proc, _ = run_filter("--config", str(CONFIG), "--dns-zone", str(ZONE), data=data)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.endswith(data.split(b"\r\n\r\n", 1)[1])  # the body untouched
    fields = x_authsieve(proc.stdout)
    assert (fields["verdict"], fields["spf"], fields["dmarc"]) == ("quarantine", "fail", "fail")
    piped = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "pipe", "--config", str(CONFIG),
         "--dns-zone", str(ZONE), "--recipient", RCPT, "--deliver", "stdout"],
        input=data, capture_output=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert piped.returncode == 0
    assert x_authsieve(piped.stdout) == fields


def test_a_broken_config_gives_the_original_under_the_failure_header(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[classifier\n")
    data = NEWSLETTER.read_bytes()
    proc, _ = run_filter(
        "--config", str(bad), "--authserv-id=mx.family.example",
        data=data, envelope=("Carol+x@Family.Example", "x@example.net"),
    )  # fmt: skip
    assert proc.returncode == 0
    # One line for Dovecot's log, naming the file.
    said = proc.stderr.decode()
    assert said.count("\n") == 1 and str(bad) in said and said.startswith("authsieve filter:")
    assert proc.stdout.endswith(b"\r\n" + data)
    fields = x_authsieve(proc.stdout)
    assert fields["spf"] == fields["dkim"] == fields["dmarc"] == "internal"
    assert fields["error"] == "internal error: ConfigError"
    # The id the script reads, and the mailbox whose [users] block files it.
    assert (fields["id"], fields["user"]) == ("mx.family.example", "carol@family.example")
    header = proc.stdout[: -len(data)].split(b"\r\n")[:-1]
    assert len(header) > 3 and len(header[0]) <= 78, header  # folded after "; "


def test_a_plus_address_gets_its_users_table(tmp_path: Path) -> None:
    # Sieve hands over the raw envelope recipient; pipe mode gets ${user}@${domain}.
    data = PHISH.read_bytes()
    proc, _ = run_filter(
        "--config", str(CONFIG), "--dns-zone", str(ZONE),
        data=data, envelope=("Bob+News@Family.Example", "x@example.net"),
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, b"")
    fields = x_authsieve(proc.stdout)
    assert (fields["user"], fields["mode"]) == ("bob@family.example", "observe")
    # Another delimiter, as the installed program passes it: "+" is then part of the name.
    proc, _ = run_filter(
        "--config", str(CONFIG), "--dns-zone", str(ZONE), "--recipient-delimiter=-",
        data=data, envelope=("bob+news@family.example", "x@example.net"),
    )  # fmt: skip
    assert x_authsieve(proc.stdout).get("user", "") == ""


def test_help_is_help_and_a_wrong_option_still_answers_the_message() -> None:
    for flag in ("--help", "-h"):
        # No message on stdin: help must not wait for one.
        proc = subprocess.run(
            [sys.executable, "-m", "classifier.commands.main", "filter", flag],
            stdin=subprocess.DEVNULL, capture_output=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0 and proc.stdout.startswith(b"usage: authsieve filter")
    data = NEWSLETTER.read_bytes()
    proc, _ = run_filter("--config", str(CONFIG), "--bogus", data=data)
    assert proc.returncode == 0
    assert proc.stderr.decode().startswith("authsieve filter: unknown option --bogus")
    assert proc.stdout.endswith(b"\r\n" + data)
    fields = x_authsieve(proc.stdout)
    assert (fields["id"], fields["spf"]) == ("mx.family.example", "internal")
    assert fields["error"] == "usage: unknown option --bogus"
    listed = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "--help"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert any(line.split()[:1] == ["filter"] for line in listed.stdout.splitlines())


def silent_dns() -> tuple[socket.socket, str]:
    """Gives a UDP socket that takes queries and never answers, and its address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"127.0.0.1:{sock.getsockname()[1]}"


def test_dns_that_never_answers_gives_temperror_before_the_deadline(tmp_path: Path) -> None:
    sock, address = silent_dns()
    config = tmp_path / "slow.toml"
    config.write_text(
        f'[classifier]\nauthserv_id = "mx.family.example"\ndns_server = "{address}"\n'
        "dns_timeout = 30\ndns_budget = 60\n"
    )
    data = PHISH.read_bytes()
    try:
        proc, took = run_filter("--config", str(config), "--deadline", "2", data=data)
    finally:
        sock.close()
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert took < 6, took  # well inside Pigeonhole's 10 s sieve_filter_exec_timeout
    # The DNS budget (60 s configured) ended a margin before the 2 s deadline: the checks
    # answered themselves, temperror (filed by nothing), not the watchdog's internal error.
    fields = x_authsieve(proc.stdout)
    assert (fields["spf"], fields["dmarc"]) == ("temperror", "temperror"), fields
    assert "error" not in fields
    assert fields["id"] == "mx.family.example"


def test_a_daemon_that_never_answers_is_left_for_the_check_in_process(tmp_path: Path) -> None:
    path = str(tmp_path / "daemon.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    data = PHISH.read_bytes()
    try:
        proc, took = run_filter(
            "--config", str(CONFIG), "--dns-zone", str(ZONE), "--daemon", path,
            "--deadline", "4", data=data,
        )  # fmt: skip
    finally:
        for s in (*held, listener):
            s.close()
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert took < 6, took
    assert x_authsieve(proc.stdout)["verdict"] == "quarantine"  # checked here after all


def test_the_daemon_answers_when_it_runs(tmp_path: Path) -> None:
    from classifier.config import load_config
    from classifier.delivery.daemon import make_server
    from classifier.lookup.resolver import make_resolver

    path = str(tmp_path / "d.sock")
    server = make_server(path, load_config(CONFIG), make_resolver(dns_zone=str(ZONE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # No --dns-zone: checked in this process, the demo's names would not resolve.
        proc, _ = run_filter("--config", str(CONFIG), "--daemon", path, data=PHISH.read_bytes())
    finally:
        server.shutdown()
        server.server_close()
        if os.path.exists(path):
            os.unlink(path)
    assert (proc.returncode, proc.stderr) == (0, b"")
    fields = x_authsieve(proc.stdout)
    assert (fields["verdict"], fields["spf"]) == ("quarantine", "fail")


HEAVY = ("argparse", "tomllib", "logging", "dns", "classifier.config", "classifier.evaluate")
PROBE = """\
import sys
from classifier.commands.main import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy} or m in {heavy})
sys.stderr.write(" ".join(heavy))
sys.exit(code)
"""


def test_the_daemons_hand_over_imports_no_config_logging_or_dns(tmp_path: Path) -> None:
    from classifier.config import load_config
    from classifier.delivery.daemon import make_server
    from classifier.lookup.resolver import make_resolver

    path = str(tmp_path / "d.sock")
    server = make_server(path, load_config(CONFIG), make_resolver(dns_zone=str(ZONE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    probe = PROBE.format(heavy=repr(set(HEAVY)))
    argv = [sys.executable, "-c", probe, "filter", "--daemon", path, "--config", str(CONFIG)]
    try:
        answered = subprocess.run(
            [*argv, "--", RCPT, "x@example.net"],
            input=PHISH.read_bytes(), capture_output=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        os.unlink(path)
    # The checks run in a child (invisible to the probe); a wrong option is answered by
    # this process, with the config's authserv-id, so it imports what the probe looks for.
    fallen = subprocess.run(
        [*argv, "--no-such-option", "--", RCPT, "x@example.net"],
        input=PHISH.read_bytes(), capture_output=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert (answered.returncode, answered.stderr) == (0, b"")
    assert x_authsieve(answered.stdout)["verdict"] == "quarantine"
    assert fallen.returncode == 0
    assert x_authsieve(fallen.stdout)["error"].startswith("usage")
    imported = set(fallen.stderr.decode().split())
    assert {"tomllib", "classifier.config", "classifier.evaluate"} <= imported


def test_the_installed_programs_options_are_all_the_filters_own() -> None:
    from sieve.filterscript import program_text

    text = program_text(["/usr/bin/authsieve"], "/etc/authsieve/c.toml", 8, "/run/a s/d.sock")
    argv = shlex.split(text.rsplit("exec ", 1)[1].replace('"$@"', RCPT))[2:]
    args = parse_filter_args(argv)
    assert args.options == {
        "--daemon": "/run/a s/d.sock", "--config": "/etc/authsieve/c.toml", "--deadline": "8",
    }  # fmt: skip
    assert args.recipient == RCPT
    readme = (ROOT / "README.md").read_text()
    synopsis = next(line for line in readme.splitlines() if line.startswith("authsieve filter "))
    shown = {word.strip("[]") for word in synopsis.split() if word.startswith("[--")}
    assert shown <= set(VALUE_OPTIONS)


def test_a_daemon_that_hangs_up_is_left_for_the_check_in_process(tmp_path: Path) -> None:
    path = str(tmp_path / "hangup.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(100)
        conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        proc, took = run_filter(
            "--config", str(CONFIG), "--dns-zone", str(ZONE), "--daemon", path,
            data=PHISH.read_bytes(),
        )  # fmt: skip
    finally:
        listener.close()
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert took < 6, took
    assert x_authsieve(proc.stdout)["verdict"] == "quarantine"  # checked here


def test_a_socket_of_another_user_is_not_handed_the_message() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to listen as nobody")
    # Listens as nobody, whom the config does not name as daemon_user; would hold a message.
    with stranger_socket() as path:
        proc, took = run_filter(
            "--config", str(CONFIG), "--dns-zone", str(ZONE), "--daemon", str(path),
            data=PHISH.read_bytes(),
        )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert took < 6, took  # not handed over: a holder would have kept it 7 s
    assert x_authsieve(proc.stdout)["verdict"] == "quarantine"
