"""Learning from moves without Dovecot: reading our headers, the store, proposals, TOML edits.

The IMAP side (imapsieve, the pipe, MOVE and COPY+EXPUNGE) is tests/test_learn_imap.py.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.annotate import fold
from classifier.auth.facts import AuthFacts, render_header_value
from classifier.commands.learn import as_store_owner
from classifier.commands.main import main
from classifier.config import config_from_dict, load_config
from classifier.learning.moves import JUNKED, RESCUED, Move, direction_of, read_move
from classifier.learning.proposals import Thresholds, propose, render
from classifier.learning.store import LearningStore
from classifier.mailstore.configedit import (
    ConfigEditError,
    add_list_entry,
    set_policy_action,
)
from sieve.commands import filter_command
from sieve.imapsieve import compile_config, generate_learn_script, learn_program_text
from sieve.pigeonhole import Pigeonhole, dovecot_version, find_tool
from tests.conftest import ROOT
from tests.helpers import NOBODY

AUTHSERV = "mx.example.org"
CONFIG = config_from_dict({"classifier": {"authserv_id": AUTHSERV}})
SETTINGS = CONFIG.engine
RECEIVED = (
    b"Received: from relay.uni.example (relay.uni.example [198.51.100.7])\r\n"
    b"\tby mx.example.org (Postfix) with ESMTP id 1; Mon, 1 Dec 2025 10:00:00 +0000\r\n"
)
BODY = (
    b"From: News <news@shop.example>\r\nTo: ann@example.org\r\n"
    b"Message-ID: <m1@shop.example>\r\nSubject: hi\r\n\r\nbody\r\n"
)
FACTS = AuthFacts(
    spf="fail",
    dkim="pass",
    dmarc="pass",
    from_domain="shop.example",
    mailfrom_domain="lists.uni.example",
    from_authenticated=True,
)


def ours(facts: AuthFacts = FACTS, verdict: str = "junk", reason: str = "") -> bytes:
    """Gives our headers as delivery writes them: Authentication-Results and X-Authsieve."""
    reason = reason or "SPF fail: 198.51.100.7 is not permitted (spf_fail = junk)"
    ar = f"{AUTHSERV}; spf=fail smtp.mailfrom=x@lists.uni.example; dkim=pass header.d=shop.example"
    return fold("Authentication-Results", ar, b"\r\n") + fold(
        "X-Authsieve", render_header_value(facts, AUTHSERV, verdict, "enforce", reason), b"\r\n"
    )


def test_a_rescue_is_read_from_our_headers_with_the_hop_that_broke_spf() -> None:
    move = read_move(ours() + RECEIVED + BODY, "Ann@Example.org", "Junk", "INBOX", SETTINGS, 7)
    assert move is not None
    assert (move.user, move.direction, move.verdict, move.rules) == (
        "ann@example.org",
        RESCUED,
        "junk",
        ("spf_fail",),
    )
    assert (move.client_ip, move.client_rdns, move.spf_hop) == (
        "198.51.100.7",
        "relay.uni.example",
        "relay.uni.example",
    )
    assert (move.from_address, move.from_auth, move.dkim_domains) == (
        "news@shop.example",
        True,
        ("shop.example",),
    )


def test_headers_below_the_topmost_received_teach_nothing() -> None:
    # Written by the sender: below the Received header our MTA wrote.
    assert (
        read_move(RECEIVED + ours() + BODY, "ann@example.org", "Junk", "INBOX", SETTINGS, 7) is None
    )


def test_another_authserv_id_teaches_nothing() -> None:
    other = config_from_dict({"classifier": {"authserv_id": "mx.other.example"}}).engine
    assert read_move(ours() + RECEIVED + BODY, "ann@example.org", "Junk", "INBOX", other, 7) is None


def test_the_sealers_of_a_passing_arc_chain_are_recorded() -> None:
    ar = f"{AUTHSERV}; spf=fail smtp.mailfrom=x@lists.example; arc=pass (sealed by lists.example)"
    data = fold("Authentication-Results", ar, b"\r\n") + ours()[ours().index(b"X-Authsieve") :]
    move = read_move(data + RECEIVED + BODY, "ann@example.org", "Junk", "INBOX", SETTINGS, 7)
    assert move is not None and (move.arc_sealers, move.dkim_domains) == (("lists.example",), ())


def test_a_delivered_demo_message_teaches_its_dkim_and_arc_domains() -> None:
    demo = ROOT / "examples" / "maildir" / "cur" / "1741463056.M393007P13352.mx,S=5516,W=5516:2,S"
    config = ROOT / "examples" / "config.toml"
    zone = ROOT / "examples" / "maildir" / "zone.txt"
    argv = [*filter_command(), "annotate", "--config", str(config), "--dns-zone", str(zone)]
    data = subprocess.run([*argv, str(demo)], capture_output=True, check=True).stdout
    demo_settings = load_config(config).engine
    move = read_move(data, "alice@family.example", "Junk", "INBOX", demo_settings, 7)
    assert move is not None
    assert (move.dkim_domains, move.arc_sealers) == (("lists.example",), ("lists.example",))
    assert (move.client_ip, move.spf, move.spf_hop) == ("203.0.113.150", "fail", "mx.lists.example")


def test_authentication_results_of_another_host_add_no_dkim_domain() -> None:
    theirs = b"Authentication-Results: evil.example; dkim=pass header.d=bank.example\r\n"
    data = theirs + ours() + RECEIVED + BODY
    move = read_move(data, "ann@example.org", "Junk", "INBOX", SETTINGS, 7)
    assert move is not None and move.dkim_domains == ("shop.example",)


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ("Junk", "INBOX", RESCUED),
        ("INBOX.Quarantine", "INBOX.Work", RESCUED),
        ("INBOX", "Junk", JUNKED),
        ("Quarantine", "Junk", JUNKED),
        ("Junk", "Trash", ""),
        ("Junk", "Quarantine", ""),
        ("INBOX", "Archive", ""),
        ("Junk", "Junk", ""),
    ],
)
def test_which_moves_teach(src: str, dst: str, expected: str) -> None:
    assert direction_of(src, dst) == expected


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet='; ="\\()\r\n\tverdictidjunk-mx.example.org', max_size=80))
def test_hostile_header_text_below_received_never_teaches(noise: str) -> None:
    forged = f"X-Authsieve: v=1; id={AUTHSERV}; verdict=junk; from-auth=yes; {noise}"
    data = RECEIVED + forged.encode("utf-8", "replace").replace(b"\n", b" ") + b"\r\n" + BODY
    assert read_move(data, "ann@example.org", "INBOX", "Junk", SETTINGS, 7) is None


# --- the store ---------------------------------------------------------------------------------


def move(n: int, user: str = "ann@example.org", **changes: Any) -> Move:
    base = read_move(ours() + RECEIVED + BODY, user, "Junk", "INBOX", SETTINGS, 1000 + n)
    assert base is not None
    return dataclasses.replace(base, key=f"{user}-{n}", message_id=f"<m{n}@x>", **changes)


def test_the_store_counts_a_move_once_and_purges_old_ones(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path}/sub/learning.db"
    with LearningStore.open(url) as store:
        assert store.record(move(1)) is True
        assert store.record(move(1)) is False  # the same key: counted before
        assert store.record(move(2)) is True
        assert [m.message_id for m in store.moves()] == ["<m1@x>", "<m2@x>"]
        assert next(iter(store.moves())) == move(1)  # every field comes back as it went in
        assert store.purge(1002) == 1
        assert [m.message_id for m in store.moves()] == ["<m2@x>"]
    mode = sqlite3.connect(tmp_path / "sub" / "learning.db").execute("PRAGMA journal_mode")
    assert mode.fetchone() == ("wal",)


# --- proposals ---------------------------------------------------------------------------------

POLICIES = CONFIG.policies
T = Thresholds(min_messages=3, min_users=2)


def test_forwarder_proposed_from_rescues_by_two_users_with_dkim_upstream() -> None:
    moves = [move(1), move(2), move(3, "bob@example.org")]
    found = [p for p in propose(moves, POLICIES, T) if p.kind == "trust_forwarder"]
    assert [(p.value, p.messages, p.users) for p in found] == [
        ("relay.uni.example", 3, ("ann@example.org", "bob@example.org"))
    ]
    assert "all SPF fail at that hop, DKIM or ARC pass upstream (shop.example)" in found[0].summary


def test_no_forwarder_when_nothing_was_signed_or_sealed_upstream() -> None:
    moves = [move(n, dkim_domains=()) for n in (1, 2)] + [move(3, "bob@example.org")]
    assert not [p for p in propose(moves, POLICIES, T) if p.kind == "trust_forwarder"]
    sealed = [dataclasses.replace(m, arc_sealers=("lists.example",)) for m in moves]
    assert [p.value for p in propose(sealed, POLICIES, T) if p.kind == "trust_forwarder"] == [
        "relay.uni.example"
    ]


def test_allow_is_never_proposed_for_an_unauthenticated_sender() -> None:
    moves = [move(n, from_auth=n != 2) for n in (1, 2, 3, 4)]
    assert not [p for p in propose(moves, POLICIES, T) if p.kind == "allow_sender"]
    moves = [move(n) for n in (1, 2, 3)]
    found = [p for p in propose(moves, POLICIES, T) if p.kind == "allow_sender"]
    assert [(p.user, p.value, p.messages) for p in found] == [
        ("ann@example.org", "news@shop.example", 3)
    ]


def test_below_the_threshold_nothing_is_proposed() -> None:
    moves = [move(1), move(2, "bob@example.org")]
    assert propose(moves, POLICIES, T) == []
    assert render([]).startswith("No proposals")


def test_suffix_of_several_junked_domains_never_rescued_is_its_tld() -> None:
    junked = [
        move(n, user, direction=JUNKED, from_domain=d, rules=(), spf_hop="")
        for n, (user, d) in enumerate(
            [
                ("ann@example.org", "a.cyou"),
                ("bob@example.org", "b.cyou"),
                ("ann@example.org", "a.cyou"),
            ]
        )
    ]
    found = [p for p in propose(junked, POLICIES, T) if p.kind == "block_suffix"]
    assert [(p.value, p.messages) for p in found] == [(".cyou", 3)]
    rescued_once = [*junked, move(9, from_domain="c.cyou")]
    found = [p for p in propose(rescued_once, POLICIES, T) if p.kind == "block_suffix"]
    assert [p.value for p in found] == []  # a.cyou 2 moves, b.cyou 1: under the threshold


def test_a_weak_rule_users_keep_rescuing_is_proposed_for_relaxing() -> None:
    policies = config_from_dict(
        {"classifier": {"authserv_id": AUTHSERV}, "policy": {"spf_softfail": "junk"}}
    ).policies
    moves = [move(n, u, rules=("spf_softfail",), dkim_domains=(), spf_hop="") for n, u in
             ((1, "ann@example.org"), (2, "bob@example.org"), (3, "bob@example.org"))]  # fmt: skip
    found = [p for p in propose(moves, policies, T) if p.kind == "relax_rule"]
    assert [(p.key, p.value, p.messages) for p in found] == [("spf_softfail", "inbox", 3)]
    strong = [dataclasses.replace(m, rules=("dmarc_reject",)) for m in moves]
    assert not [p for p in propose(strong, policies, T) if p.kind == "relax_rule"]


# --- the TOML edits ----------------------------------------------------------------------------


def test_a_global_list_entry_goes_into_policy_keeping_comments() -> None:
    text = (
        '# site\n[policy]\nspf_fail = "junk"  # keep\n\n[users."a@x.example"]\nmode = "observe"\n'
    )
    new = add_list_entry(text, "", "blocked_domain_suffixes", ".cyou")
    assert new == text.replace("[policy]\n", '[policy]\nblocked_domain_suffixes = [".cyou"]\n')
    again = add_list_entry(new, "", "blocked_domain_suffixes", ".top")
    assert tomllib.loads(again)["policy"]["blocked_domain_suffixes"] == [".cyou", ".top"]
    assert add_list_entry(again, "", "blocked_domain_suffixes", ".TOP") == again


def test_a_policy_action_is_set_in_place() -> None:
    text = '[policy]\nspf_softfail = "junk"   # too strict?\n'
    assert set_policy_action(text, "spf_softfail", "inbox") == (
        '[policy]\nspf_softfail = "inbox"   # too strict?\n'
    )
    assert tomllib.loads(set_policy_action("", "dkim_fail", "inbox")) == {
        "policy": {"dkim_fail": "inbox"}
    }
    with pytest.raises(ConfigEditError, match="by hand"):
        set_policy_action('policy = { spf_softfail = "junk" }\n', "spf_softfail", "inbox")


# --- the command line ------------------------------------------------------------------------


def test_learn_exits_at_once_and_records_in_the_background(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    store = tmp_path / "learning.db"
    config.write_text(
        f'[classifier]\nauthserv_id = "{AUTHSERV}"\nlog_file = "{tmp_path}/log"\n'
        f'[learn]\nstore = "sqlite:{store}"\n'
    )
    # The store is locked by another writer: learn must still answer at once, give up after
    # --timeout in the background, and say so in the log.
    blocker = sqlite3.connect(store, isolation_level=None)
    blocker.execute("PRAGMA journal_mode=WAL")
    LearningStore.open(f"sqlite:{store}").close()
    blocker.execute("BEGIN EXCLUSIVE")
    argv = [*filter_command(), "learn", "--config", str(config), "--user", "ann@example.org",
            "--from-folder", "Junk", "--to-folder", "INBOX", "--timeout", "3"]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(argv, input=ours() + RECEIVED + BODY, capture_output=True, timeout=30)
    took = time.monotonic() - started
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert took < 2.5, f"learn took {took:.2f}s before exiting"
    deadline = time.monotonic() + 20
    while "not recorded" not in (tmp_path / "log").read_text(errors="replace"):
        assert time.monotonic() < deadline, "learn logged no failure"
        time.sleep(0.1)
    blocker.execute("ROLLBACK")
    # Unlocked, the same move is recorded (--foreground: before exiting).
    proc = subprocess.run([*argv, "--foreground"], input=ours() + RECEIVED + BODY, timeout=30)
    assert proc.returncode == 0
    with LearningStore.open(f"sqlite:{store}") as s:
        assert [m.direction for m in s.moves()] == [RESCUED]


def test_learn_with_a_broken_config_still_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[learn\n")
    argv = [*filter_command(), "learn", "--config", str(config), "--user", "u",
            "--from-folder", "Junk", "--to-folder", "INBOX"]  # fmt: skip
    proc = subprocess.run(argv, input=BODY, capture_output=True, timeout=30)
    assert proc.returncode == 0 and b"config.toml" in proc.stderr


def test_suggest_without_a_learn_table_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[classifier]\nauthserv_id = "{AUTHSERV}"\n')
    assert main(["suggest", "--config", str(config)]) == 2
    assert "no [learn] table" in capsys.readouterr().err


def test_suggest_apply_of_a_number_not_shown_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[classifier]\nauthserv_id = "{AUTHSERV}"\n[learn]\nstore = "sqlite:{tmp_path}/l.db"\n'
    )
    assert main(["suggest", "--apply", "1", "--config", str(config)]) == 2


# --- the Sieve side ----------------------------------------------------------------------------


@pytest.mark.skipif(not find_tool("sievec"), reason="needs sievec (dovecot-sieve)")
def test_the_learn_script_compiles_with_the_plugins_the_example_enables() -> None:
    with Pigeonhole(compile_config(dovecot_version())) as ph:
        assert ph.compile(generate_learn_script(), "learn").ok
    with Pigeonhole() as ph:  # without them sievec rejects it: the config is what makes it work
        assert not ph.compile(generate_learn_script(), "learn").ok


def test_the_pipe_program_runs_learn_with_the_config(tmp_path: Path) -> None:
    text = learn_program_text(["/usr/bin/authsieve"], str(tmp_path / "c.toml"))
    assert text.splitlines()[-1] == f'exec /usr/bin/authsieve learn --config {tmp_path}/c.toml "$@"'


def test_nothing_is_printed_by_learn_in_the_foreground_without_a_learn_table(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[classifier]\nauthserv_id = "{AUTHSERV}"\n')
    out = io.StringIO()
    sys_stdin = sys.stdin
    try:
        sys.stdin = io.TextIOWrapper(io.BytesIO(BODY))
        from contextlib import redirect_stdout

        with redirect_stdout(out):
            code = main(["learn", "--config", str(config), "--user", "u", "--from-folder", "Junk",
                         "--to-folder", "INBOX", "--foreground"])  # fmt: skip
    finally:
        sys.stdin = sys_stdin
    assert (code, out.getvalue()) == (0, "")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: root's suggest on the mail user's store")
def test_root_works_on_the_store_as_the_owner_of_its_directory(open_tmp: Path) -> None:
    store = open_tmp / "learning"
    store.mkdir()
    os.chown(store, *NOBODY)
    with as_store_owner(f"sqlite:{store}/moves.db"):
        assert (os.geteuid(), os.getegid()) == NOBODY
        LearningStore.open(f"sqlite:{store}/moves.db").close()
    assert os.geteuid() == 0
    assert {(p.stat().st_uid, p.stat().st_gid) for p in store.iterdir()} == {NOBODY}
    with as_store_owner(f"sqlite:{open_tmp}/root-owned/moves.db"):
        assert os.geteuid() == 0  # a directory that is not there yet, or root's: stays root


def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    config = tmp_path / "config.toml"
    learn = f'[learn]\nstore = "sqlite:{tmp_path}/file/x.db"\n'
    config.write_text(f'[classifier]\nauthserv_id = "{AUTHSERV}"\n{learn}')
    assert main(["suggest", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"authsieve: learn store sqlite:{tmp_path}/file/x.db: ")
        and err.count("\n") == 1
    )
