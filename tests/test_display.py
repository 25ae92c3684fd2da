"""Output a sender's text reaches (issue 19, item 4): terminals, mail bodies, CSV, log lines."""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from classifier.commands.main import main
from classifier.config import load_config
from classifier.display import csv_cell, display_text, printable
from classifier.log import log
from classifier.mailstore.filing import Job, process_path
from classifier.mailstore.quarantine import digest, list_quarantine
from classifier.report.build import PLACES, Move, PolicyOutcome, Report
from classifier.report.render import render_csv
from tests.conftest import ROOT, resolver_for
from tests.dnsserver import DnsTestServer

DEMO = ROOT / "examples" / "maildir"
CONFIG = ROOT / "examples" / "config.toml"
TEMPLATE = "{domain}/{local}/Maildir"
USER = "alice@family.example"
ESC = "\x1b"
HOSTILE_SUBJECT = "=?utf-8?q?=1B]0;pwned=07=1B[2J?= hello \x1b[31mred\u202e"
HOSTILE_REASON = "SPF fail \x1b]8;;http://evil.example\x07click\x1b]8;;\x07"
QUARANTINED = (
    "X-Authsieve: v=1; id=mx.family.example; verdict=quarantine; spf=fail;"
    f' reason="{HOSTILE_REASON}"\r\n'
    "Received: from x by mx.family.example; Tue, 11 Mar 2025 03:17:43 +0100\r\n"
    f"From: \x1b[1mBank\x1b[0m <bank@evil.example>\r\nSubject: {HOSTILE_SUBJECT}\r\n"
    "Message-ID: <hostile@evil.example>\r\n\r\nbody\r\n"
).encode()


@pytest.fixture
def maildir(tmp_path: Path, dns_server: Callable[..., DnsTestServer]) -> Path:
    """Gives alice's demo Maildir after filing, plus one quarantined message full of escapes."""
    target = tmp_path / "vmail" / "family.example" / "alice" / "Maildir"
    shutil.copytree(DEMO, target)
    job = Job(load_config(CONFIG), resolver_for(dns_server((DEMO / "zone.txt").read_text())))
    for path in sorted((target / "new").iterdir()):
        process_path(path, job)
    name = "1741659999.M1P1.mx,authsieve,S=1,W=1"
    (target / ".Quarantine" / "new" / name).write_bytes(QUARANTINED)
    return target


def no_controls(text: str) -> bool:
    return all(ch.isprintable() or ch == "\n" for ch in text)


@pytest.mark.parametrize("action", [["list"], ["digest"]])
def test_quarantine_list_and_digest_print_no_escape_sequences(
    maildir: Path, capsys: pytest.CaptureFixture[str], action: list[str]
) -> None:
    argv = ["quarantine", *action, "--config", str(CONFIG), "--maildir", str(maildir)]
    assert main([*argv, "--user", USER]) == 0
    out = capsys.readouterr().out
    assert ESC not in out and "\x07" not in out and no_controls(out)
    assert "hello [31mred" in out and "Bank" in out


def test_quarantine_show_prints_no_escape_sequences_above_the_message(
    maildir: Path, capsys: pytest.CaptureFixture[bytes]
) -> None:
    hostile = next(e for e in list_quarantine(maildir, TEMPLATE) if "hello" in e.subject)
    argv = ["quarantine", "show", "--config", str(CONFIG), "--maildir", str(maildir)]
    assert main([*argv, "--user", USER, hostile.id]) == 0
    out = capsys.readouterr().out
    head, message = out.split("\n\n", 1)
    assert ESC not in head and no_controls(head)
    assert "Why:      SPF fail" in head
    # the message below it too (attacker review): ESC shown as \x1b, lines kept
    assert ESC not in message and "\x07" not in message
    assert "\\x1b[31mred" in message and message.count("\n") > 3


def test_quarantine_show_raw_gives_the_bytes_as_they_are(
    maildir: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    hostile = next(e for e in list_quarantine(maildir, TEMPLATE) if "hello" in e.subject)
    argv = ["quarantine", "show", "--config", str(CONFIG), "--maildir", str(maildir), "--raw"]
    assert main([*argv, "--user", USER, hostile.id]) == 0
    assert capsysbinary.readouterr().out == Path(hostile.path).read_bytes()


def test_one_helper_strips_what_a_terminal_would_run() -> None:
    assert printable("a\x1b[31mb\x00c\u202ed\r\ne\x9bf") == "a [31mb c d e f"
    assert display_text("=?utf-8?q?=1B]0;t=07x?=") == "]0;t x"


def test_digest_lines_are_at_most_998_octets() -> None:
    long_subject = "ä" * 2000  # 4000 octets in UTF-8
    entry = next(iter(list_for_digest(long_subject)))
    text = digest(USER, [entry], 30, datetime(2026, 1, 1, tzinfo=UTC), "postmaster@x.example")
    assert max(len(line.encode()) for line in text.split("\n")) <= 998
    assert "".join(line.strip() for line in text.split("\n")).count("ä") == 2000


def list_for_digest(subject: str) -> Iterator[object]:
    from classifier.mailstore.quarantine import QuarantinedMessage

    yield QuarantinedMessage(
        "0123456789ab", "/x", USER, 0.0, "", "a@b.example", "a@b.example", subject, "quarantine",
        "", False, 1,
    )  # fmt: skip


@pytest.mark.parametrize("user", ["alice@family.example\nBcc: all@family.example", "a\x1b[2J"])
def test_digest_refuses_a_user_with_control_characters(
    maildir: Path, capsys: pytest.CaptureFixture[str], user: str
) -> None:
    argv = ["quarantine", "digest", "--config", str(CONFIG), "--maildir", str(maildir)]
    assert main([*argv, "--user", user, "--mail-from", "postmaster@family.example"]) == 2
    out, err = capsys.readouterr()
    assert "Bcc:" not in out and "control characters" in err


@pytest.mark.parametrize("cell", ['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\t=1"])
def test_report_csv_neutralises_formula_cells(cell: str) -> None:
    move = Move("/m", "INBOX", "inbox", "quarantine", "2026", cell, cell, (cell,), False)
    policy = PolicyOutcome("p", "cfg", "enforce", dict.fromkeys(PLACES, 0), (move,))
    report = Report(
        1, "", "", "", {}, 0.0, dict.fromkeys(PLACES, 0), (policy,), (), (), (), "day", (), {}
    )
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    moved = [r[4] for r in rows if r[0] == "move" and r[3] in ("sender", "subject", "reasons")]
    assert moved == ["'" + cell] * 3
    assert csv_cell(-2) == -2  # numbers stay numbers


def test_log_line_cannot_be_forged_by_a_file_name_or_a_return_path(tmp_path: Path) -> None:
    out = tmp_path / "log"
    handler = logging.FileHandler(out)
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.INFO)
    try:
        name = "1.M1P1.mx\n2026-01-01 authsieve[1]: filed FORGED as INBOX user=bob"
        log.info("filed %s as %s user=%s", name, "/x/new/y", "bounce\x00\x1b[2J@evil.example")
        try:
            raise ValueError("line one\nline two")
        except ValueError:
            log.exception("%s: internal error", "p")
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(old)
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    assert "\\x0a2026-01-01" in lines[0] and "\\x00\\x1b[2J" in lines[0]
    assert all(no_controls(line) for line in lines)
