"""Delivery targets (delivery/targets.py): dovecot-lda's arguments, and why a next stage failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier.delivery.targets import (
    REASON_LIMIT,
    DeliveryError,
    DovecotLdaDelivery,
    delivery_from_spec,
    stage_reason,
)
from classifier.errors import UsageError

# What dovecot-lda 2.3 writes to stderr for an unwritable Maildir when log_path = /dev/stderr.
DOVECOT_STDERR = (
    b"Dec 06 23:29:57 lda(u)<15529><n2yf>: Error: Mailbox INBOX: open(/home/u/Maildir/tmp/1.vm)"
    b" failed: Permission denied\n"
    b"Dec 06 23:29:57 lda(u)<15529><n2yf>: Info: msgid=unspecified: save failed to INBOX\n"
    b"Internal error occurred. Refer to server log for more information. [2026-12-06 23:29:57]\n"
)


def recording_lda(tmp_path: Path, exit_code: int = 0, stderr: str = "") -> Path:
    """Gives a stand-in dovecot-lda that writes its arguments, one a line, to tmp_path/argv.

    `stderr` is a printf format: what it prints on stderr before it exits.
    """
    lda = tmp_path / "lda"
    lda.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\ncat >/dev/null\n'
        f"printf '{stderr}' >&2\nexit {exit_code}\n"
    )
    lda.chmod(0o755)
    return lda


def test_reason_is_the_error_line_not_dovecots_closing_hint() -> None:
    reason = stage_reason(DOVECOT_STDERR)
    assert reason.endswith(
        ": Error: Mailbox INBOX: open(/home/u/Maildir/tmp/1.vm) failed: Permission denied"
    )


def test_reason_without_an_error_line_is_the_last_line() -> None:
    said = b"Internal error occurred. Refer to server log for more information. [2026-12-06]\n"
    assert stage_reason(b"\n" + said + b"\n\n") == said.decode().strip()


def test_reason_is_one_printable_bounded_line() -> None:
    reason = stage_reason(b"Fatal: \x1b[31mred\x07 " + b"x" * 5000 + b"\r\n")
    assert len(reason) == REASON_LIMIT and reason.endswith("...")
    assert reason.isprintable() and "\n" not in reason and reason.startswith("Fatal:  [31mred")


def test_reason_of_a_silent_program_says_so() -> None:
    assert stage_reason(b"") == stage_reason(b" \n\n") == "nothing on stderr (see its own log)"


def test_lda_failure_carries_its_own_line_and_exit_code(tmp_path: Path) -> None:
    lda = recording_lda(tmp_path, 75, "lda(u): Error: quota exceeded\\nInternal error occurred.")
    with pytest.raises(DeliveryError) as caught:
        DovecotLdaDelivery(str(lda)).deliver(b"x\n", "a@example.com", ["u@family.example"], "inbox")
    assert caught.value.exit_code == 75
    assert str(caught.value) == "lda exited 75: lda(u): Error: quota exceeded"


def test_plus_address_goes_to_the_users_mailbox_with_the_address_for_sieve(tmp_path: Path) -> None:
    lda = recording_lda(tmp_path)
    delivery = delivery_from_spec(
        "dovecot-lda",
        str(lda),
        user="you@family.example",
        original_recipient="you+news@family.example",
    )
    delivery.deliver(b"x\n", "a@example.com", ["you+news@family.example"], "inbox")
    assert (tmp_path / "argv").read_text().split() == [
        "-e", "-f", "a@example.com", "-d", "you@family.example", "-a", "you+news@family.example",
    ]  # fmt: skip


def test_without_a_user_the_recipient_is_both_mailbox_and_address(tmp_path: Path) -> None:
    lda = recording_lda(tmp_path)
    delivery_from_spec("dovecot-lda", str(lda)).deliver(b"x\n", "", ["you@family.example"], "junk")
    assert (tmp_path / "argv").read_text().split() == [
        "-e", "-f", "<>", "-d", "you@family.example", "-a", "you@family.example",
    ]  # fmt: skip


def test_extra_lda_arguments_come_first(tmp_path: Path) -> None:
    lda = recording_lda(tmp_path)
    extra = ("-c", "/etc/dovecot/lda.conf", "-o", "mail_debug=yes")
    delivery = delivery_from_spec("dovecot-lda", str(lda), lda_args=extra)
    delivery.deliver(b"x\n", "a@example.com", ["u@family.example"], "inbox")
    assert (tmp_path / "argv").read_text().split()[:5] == [*extra, "-e"]


@pytest.mark.parametrize("arg", ["-d", "-a", "-f", "-e", "-dother@family.example"])
def test_extra_lda_argument_authsieve_sets_itself_is_refused(arg: str) -> None:
    with pytest.raises(UsageError, match=f"--lda-arg {arg}: authsieve sets {arg[:2]}"):
        delivery_from_spec("dovecot-lda", lda_args=("-c", "/etc/x.conf", arg))
