"""`authsieve pipe` and `serve`: check, annotate, deliver, never lose (pipe.py, daemon.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier.auth.facts import parse_header_value
from classifier.config import load_config
from classifier.delivery.daemon import make_server
from classifier.delivery.daemon_client import ask_daemon
from classifier.envelope.trust import Hints
from classifier.evaluate import check_and_annotate
from classifier.lookup.resolver import make_resolver
from classifier.message import Message
from tests.dnsserver import free_udp_port

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "maildir"
CONFIG = ROOT / "examples" / "config.toml"
ZONE = DEMO / "zone.txt"
NEWSLETTER = next((DEMO / "new").glob("1741761007.*"))  # all pass → inbox
PHISH = next((DEMO / "new").glob("1741659463.*"))  # SPF fail, DMARC p=reject → quarantine
CYOU = next((DEMO / "new").glob("1741223639.*"))  # blocked suffix → junk
HINTS = Hints(recipient="alice@family.example")
WIRE_HINTS = {"recipient": "alice@family.example"}  # as a pipe process sends them


def pipe(*args: str, stdin: bytes, config: Path = CONFIG) -> subprocess.CompletedProcess[bytes]:
    argv = [
        sys.executable,
        "-m",
        "classifier.commands.main",
        "pipe",
        "--config",
        str(config),
        *args,
    ]
    return subprocess.run(argv, input=stdin, capture_output=True, cwd=ROOT, check=False, timeout=60)


@pytest.mark.parametrize(
    ("message", "folder"), [(NEWSLETTER, "new"), (PHISH, ".Quarantine/new"), (CYOU, ".Junk/new")]
)
def test_maildir_delivery_files_by_verdict(tmp_path: Path, message: Path, folder: str) -> None:
    proc = pipe(
        "--dns-zone", str(ZONE), "--recipient", "alice@family.example",
        "--deliver", f"maildir:{tmp_path}", stdin=message.read_bytes(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b"" and proc.stdout == b""  # Postfix mails stderr back: stay silent
    files = list((tmp_path / folder).iterdir())
    assert len(files) == 1
    delivered = files[0].read_bytes()
    assert delivered.endswith(message.read_bytes())
    assert list((tmp_path / "tmp").iterdir()) == []


def test_stdout_delivery_prepends_our_three_headers() -> None:
    proc = pipe(
        "--dns-zone", str(ZONE), "--recipient", "alice@family.example", "--deliver", "stdout",
        stdin=NEWSLETTER.read_bytes(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = [f.name for f in Message.parse(proc.stdout).fields][:3]
    assert names == ["Authentication-Results", "Received-SPF", "X-Authsieve"]


def test_unwritable_maildir_is_a_temporary_failure(tmp_path: Path) -> None:
    target = tmp_path / "file-not-dir"
    target.write_text("x")
    proc = pipe(
        "--dns-zone", str(ZONE), "--deliver", f"maildir:{target}", stdin=NEWSLETTER.read_bytes()
    )
    assert proc.returncode == 75
    assert b"delivery failed" in proc.stderr


def test_failing_next_stage_exit_code_is_passed_through(tmp_path: Path) -> None:
    lda = tmp_path / "lda"
    lda.write_text("#!/bin/sh\ncat >/dev/null\necho 'mailbox full' >&2\nexit 75\n")
    lda.chmod(0o755)
    proc = pipe(
        "--dns-zone", str(ZONE), "--deliver", "dovecot-lda", "--lda-path", str(lda),
        "--sender", "a@example.com", "--recipient", "alice@family.example",
        stdin=NEWSLETTER.read_bytes(),
    )  # fmt: skip
    assert proc.returncode == 75
    assert b"mailbox full" in proc.stderr


def test_dovecot_lda_gets_sender_and_recipient_as_arguments(tmp_path: Path) -> None:
    lda = tmp_path / "lda"
    log = tmp_path / "argv"
    lda.write_text(f'#!/bin/sh\necho "$@" > {log}\ncat > {tmp_path}/msg\n')
    lda.chmod(0o755)
    proc = pipe(
        "--dns-zone", str(ZONE), "--deliver", "dovecot-lda", "--lda-path", str(lda),
        "--sender", "bounce@shop.example", "--recipient", "alice@family.example",
        stdin=NEWSLETTER.read_bytes(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().split() == [
        "-e",
        "-f",
        "bounce@shop.example",
        "-d",
        "alice@family.example",
        "-a",
        "alice@family.example",
    ]
    assert (tmp_path / "msg").read_bytes().endswith(NEWSLETTER.read_bytes())


def test_pipe_gives_dovecot_lda_the_mailbox_the_address_and_extra_arguments(
    tmp_path: Path,
) -> None:
    lda = tmp_path / "lda"
    log = tmp_path / "argv"
    lda.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\ncat >/dev/null\n')
    lda.chmod(0o755)
    proc = pipe(
        "--dns-zone", str(ZONE), "--deliver", "dovecot-lda", "--lda-path", str(lda),
        "--lda-arg=-c", "--lda-arg=/etc/dovecot/lda.conf",
        "--sender", "bounce@shop.example", "--recipient", "alice+news@family.example",
        "--user", "alice@family.example", "--original-recipient", "news@family.example",
        stdin=NEWSLETTER.read_bytes(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().split() == [
        "-c", "/etc/dovecot/lda.conf", "-e", "-f", "bounce@shop.example",
        "-d", "alice@family.example", "-a", "news@family.example",
    ]  # fmt: skip


def test_lda_argument_authsieve_sets_itself_defers_with_one_line() -> None:
    proc = pipe(
        "--dns-zone", str(ZONE), "--deliver", "dovecot-lda", "--lda-arg=-d",
        "--lda-arg=eve@family.example", "--recipient", "alice@family.example",
        stdin=NEWSLETTER.read_bytes(),
    )  # fmt: skip
    assert proc.returncode == 75
    assert proc.stderr == b"authsieve: --lda-arg -d: authsieve sets -d from the envelope\n"


@pytest.mark.parametrize(("user", "mode"), [(None, "enforce"), ("bob@family.example", "observe")])
def test_plus_address_is_decided_by_its_users_policy(user: str | None, mode: str) -> None:
    # examples/config.toml: bob@family.example observes; everybody else enforces.
    args = ["--recipient", "bob+shop@family.example"] + (["--user", user] if user else [])
    proc = pipe("--dns-zone", str(ZONE), *args, "--deliver", "stdout", stdin=PHISH.read_bytes())
    assert proc.returncode == 0, proc.stderr
    fields = parse_header_value(Message.parse(proc.stdout).get("X-Authsieve") or "")
    assert (fields["mode"], fields["verdict"]) == (
        (mode, "inbox") if mode == "observe" else (mode, "quarantine")
    )


def test_readme_shows_the_master_cf_service_as_written() -> None:
    master = (ROOT / "examples" / "postfix" / "master.cf").read_text()
    service = master[master.index("\nauthsieve ") + 1 :].strip()
    assert f"```\n{service}\n```" in (ROOT / "README.md").read_text()


def test_typo_in_pipe_arguments_defers_instead_of_bouncing() -> None:
    proc = pipe("--bogus", stdin=NEWSLETTER.read_bytes())
    assert proc.returncode == 75


def test_postfix_null_sender_spelling_is_the_null_sender(tmp_path: Path) -> None:
    proc = pipe(
        "--dns-zone", str(ZONE), "--sender", "MAILER-DAEMON", "--deliver", "stdout",
        stdin=next((DEMO / "new").glob("1741604735.*")).read_bytes(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ar = Message.parse(proc.stdout).get("Authentication-Results") or ""
    assert "smtp.helo=smtp.isp.example" in ar and "spf=pass" in ar


def test_bad_config_defers_instead_of_bouncing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy]\nspf_fail = 'delete'\n")
    proc = pipe("--deliver", "stdout", stdin=NEWSLETTER.read_bytes(), config=bad)
    assert proc.returncode == 75
    assert b"policy.spf_fail" in proc.stderr


def test_unreachable_dns_delivers_with_temperror(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        CONFIG.read_text().replace(
            "[classifier]", "[classifier]\ndns_timeout = 0.3\ndns_budget = 1"
        )
    )
    proc = pipe(
        "--dns-server", f"127.0.0.1:{free_udp_port()}", "--recipient", "alice@family.example",
        "--deliver", f"maildir:{tmp_path / 'md'}", stdin=PHISH.read_bytes(), config=config,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (delivered,) = (tmp_path / "md" / "new").iterdir()  # INBOX: a temperror never files
    fields = parse_header_value(Message.parse(delivered.read_bytes()).get("X-Authsieve") or "")
    assert fields["spf"] == "temperror" and fields["verdict"] == "inbox"


class Exploding:
    def session(self, budget: float) -> None:
        raise RuntimeError("boom")


def test_internal_error_delivers_unchanged_with_an_error_header() -> None:
    config = load_config(CONFIG)
    data = NEWSLETTER.read_bytes()
    outcome = check_and_annotate(
        data, config.engine, Exploding(), config.policies, HINTS, "alice@family.example"
    )  # type: ignore[arg-type]
    assert outcome.action == "inbox"
    assert outcome.data.endswith(data)
    header = Message.parse(outcome.data).get("X-Authsieve") or ""
    fields = parse_header_value(header)
    assert fields["verdict"] == "inbox" and fields["spf"] == "internal"
    assert fields["dkim"] == fields["arc"] == fields["dmarc"] == "internal"
    assert fields["error"] == "internal error: RuntimeError"


def test_internal_error_in_the_pipe_is_filed_by_internal_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    alice = '\n[users."alice@family.example"]\ninternal_error = "junk"\n'
    config.write_text(CONFIG.read_text() + alice)
    loaded = load_config(config)
    data = NEWSLETTER.read_bytes()
    outcome = check_and_annotate(
        data, loaded.engine, Exploding(), loaded.policies, HINTS, "alice@family.example"
    )  # type: ignore[arg-type]
    assert outcome.action == "junk"
    fields = parse_header_value(Message.parse(outcome.data).get("X-Authsieve") or "")
    assert (fields["verdict"], fields["dmarc"]) == ("junk", "internal")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "authsieve.sock")
    server = make_server(path, load_config(CONFIG), make_resolver(dns_zone=ZONE))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_daemon_gives_what_the_pipe_process_would(daemon: str) -> None:
    config = load_config(CONFIG)
    for message in (NEWSLETTER, PHISH, CYOU):
        data = message.read_bytes()
        resolver = make_resolver(dns_zone=ZONE)
        local = check_and_annotate(
            data, config.engine, resolver, config.policies, HINTS, "alice@family.example"
        )
        remote = ask_daemon(daemon, data, WIRE_HINTS, "alice@family.example", timeout=30)
        assert remote is not None
        assert (remote.data, remote.action, remote.summary, remote.error) == (
            local.data,
            local.action,
            local.summary,
            local.error,
        )


def test_pipe_through_daemon_and_fallback_when_it_is_down(daemon: str, tmp_path: Path) -> None:
    args = ("--recipient", "alice@family.example", "--deliver", "stdout")
    via = pipe("--daemon", daemon, *args, stdin=PHISH.read_bytes())
    assert via.returncode == 0, via.stderr
    down = pipe("--daemon", str(tmp_path / "nothing.sock"), "--dns-zone", str(ZONE), *args,
                stdin=PHISH.read_bytes())  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert via.stdout == down.stdout
    assert parse_header_value(Message.parse(via.stdout).get("X-Authsieve") or "")["verdict"] == (
        "quarantine"
    )


@pytest.mark.skipif(shutil.which("true") is None or os.geteuid() != 0, reason="needs root")
def test_serve_refuses_a_socket_it_cannot_create(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "serve", "--config", str(CONFIG),
         "--dns-zone", str(ZONE), "--socket", str(tmp_path / "no" / "such" / "dir.sock")],
        capture_output=True, cwd=ROOT, check=False, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert b"cannot listen" in proc.stderr


@pytest.mark.parametrize(
    "option",
    ["--client-helo", "--client-hostname", "--client-address", "--sasl-username", "--sender",
     "--user", "--original-recipient"],
)  # fmt: skip
@pytest.mark.parametrize("daemon", [False, True])
def test_a_macro_value_of_two_dashes_is_a_value(option: str, daemon: bool) -> None:
    # attacker review: "EHLO --" made argparse drop the value, and every delivery deferred
    fast = ["--daemon=/nonexistent/authsieve.sock"] if daemon else []
    proc = pipe(
        "--dns-zone", str(ZONE), "--recipient=alice@family.example", "--deliver", "stdout",
        *fast, f"{option}=--", stdin=PHISH.read_bytes(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert b"verdict=quarantine" in proc.stdout and b"internal" not in proc.stdout


def test_every_pipe_option_is_described_in_its_help() -> None:
    import argparse

    from classifier.commands.main import build_parser

    parser = build_parser(["pipe"])
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    pipe_parser = sub.choices["pipe"]
    bare = [a.option_strings[0] for a in pipe_parser._actions if a.option_strings and not a.help]
    assert bare == []


# Prints the collector's state once main() returned, and exits with main's code.
GC_PROBE = """import gc, sys
from classifier.commands.main import main
code = main() if sys.argv[1] == "pipe" else main(sys.argv[2:])
print(gc.isenabled(), gc.get_freeze_count() > 0, file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(("how", "state"), [("process", b"False True"), ("call", b"True False")])
def test_only_a_pipe_process_skips_the_cycle_collector(how: str, state: bytes) -> None:
    # A process that is one `pipe` exits after its message (issue 15); a caller of
    # main(argv) in a longer-lived process keeps its collector as it was.
    argv = ["pipe", "--config", str(CONFIG), "--dns-zone", str(ZONE), "--deliver", "stdout"]
    proc = subprocess.run(
        [sys.executable, "-c", GC_PROBE, *(argv if how == "process" else ["call", *argv])],
        input=NEWSLETTER.read_bytes(), capture_output=True, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == state
    assert proc.stdout.endswith(NEWSLETTER.read_bytes())
    assert b"dmarc=pass" in proc.stdout.split(b"\n\n")[0]


def test_many_signatures_add_a_header_of_a_few_lines_not_one_entry_each() -> None:
    # attacker review: 300,000 ten-octet DKIM-Signature fields in a 10 MB message gave an
    # Authentication-Results field of 70 MB (one dkim= entry each) and a 1 GB process.
    data = PHISH.read_bytes()
    many = b"".join(b"DKIM-Signature: d=a%d;s=b;b=\n" % i for i in range(50_000)) + data
    config = load_config(CONFIG)
    outcome = check_and_annotate(many, config.engine, make_resolver(dns_zone=ZONE),
                                 config.policies, HINTS, "alice@family.example")  # fmt: skip
    assert outcome.data.endswith(many)
    added = outcome.data[: -len(many)]
    assert len(added) < 6_000, added[:2000]
    results = Message.parse(outcome.data).get("Authentication-Results") or ""
    assert results.count("dkim=") == 9  # eight verified, one for the other 49,992
    assert "stands for 49992 signatures not verified" in " ".join(results.split())
    assert outcome.action == "quarantine"  # the verdict of the message without them


@pytest.mark.parametrize(
    "fields",
    [
        b"DKIM-Signature: v=1; a=rsa-sha256; d=bank.example" + b" (" * 40_000 + b"; s=x; b=\n",
        b"ARC-Seal: i=1; a=rsa-sha256; d=lists.example; s=x; cv=none; b=\n" * 5_000,
        b"ARC-Seal: i=1; a=rsa-sha256; d=" + b"l" * 90_000 + b"; s=x; cv=none; b=\n",
    ],
    ids=["a 100 KB d=", "5,000 seals", "a 90 KB sealer"],
)
def test_our_headers_stay_small_whatever_the_fields_they_report_on(fields: bytes) -> None:
    # attacker review: a signature's d= and every ARC sealer were written out whole.
    data = fields + PHISH.read_bytes()
    config = load_config(CONFIG)
    outcome = check_and_annotate(data, config.engine, make_resolver(dns_zone=ZONE),
                                 config.policies, HINTS, "alice@family.example")  # fmt: skip
    assert outcome.data.endswith(data)
    assert len(outcome.data) - len(data) < 20_000


@pytest.mark.parametrize("daemon_option", [[], ["--daemon", "/nonexistent/authsieve.sock"]])
def test_a_pipe_without_deliver_defers_and_prints_no_message(daemon_option: list[str]) -> None:
    # admin review: with --deliver left out of master.cf the message went to stdout, which
    # pipe(8) takes as status text, and Postfix and authsieve both logged it delivered.
    argv = [sys.executable, "-m", "classifier.commands.main", "pipe", "--config", str(CONFIG),
            "--dns-zone", str(ZONE), "--recipient=alice@x.example", *daemon_option]  # fmt: skip
    proc = subprocess.run(argv, input=PHISH.read_bytes(), capture_output=True, cwd=ROOT,
                          check=False, timeout=60)  # fmt: skip
    assert proc.returncode == 75  # EX_TEMPFAIL: Postfix keeps the message queued
    assert proc.stdout == b""
    assert proc.stderr.decode().splitlines() == [
        "authsieve: pipe: no --deliver: give dovecot-lda, sendmail, maildir:PATH or stdout"
    ]
