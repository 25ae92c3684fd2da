"""Learning from moves without Dovecot: reading our headers, the store, proposals, TOML edits.

The IMAP side (imapsieve, the pipe, MOVE and COPY+EXPUNGE) is tests/test_learn_imap.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.aggregate.deliveries import DeliveryRecord, DeliveryStore, delivery_recorder
from classifier.annotate import fold
from classifier.auth.facts import AuthFacts, render_header_value
from classifier.commands.learn import as_store_owner
from classifier.commands.main import main
from classifier.config import LearnConfig, config_from_dict, load_config
from classifier.envelope.trust import Hints
from classifier.evaluate import check_and_annotate
from classifier.learning.moves import (
    JUNKED,
    RESCUED,
    Move,
    delivery_id_of,
    direction_of,
    move_of,
    same_user,
)
from classifier.learning.proposals import Thresholds, propose, render
from classifier.learning.store import LearningStore
from classifier.lookup.resolver import make_resolver
from classifier.mailstore.configedit import (
    ConfigEditError,
    add_list_entry,
    set_policy_action,
)
from classifier.message import Message
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


def ours(delivery: str = "", authserv: str = AUTHSERV) -> bytes:
    """Gives our headers as delivery writes them: Authentication-Results and X-Authsieve."""
    reason = "SPF fail: 198.51.100.7 is not permitted (spf_fail = junk)"
    ar = f"{authserv}; spf=fail smtp.mailfrom=x@lists.uni.example; dkim=pass header.d=shop.example"
    value = render_header_value(FACTS, authserv, "junk", "enforce", reason, delivery_id=delivery)
    return fold("Authentication-Results", ar, b"\r\n") + fold("X-Authsieve", value, b"\r\n")


DEMO = ROOT / "examples" / "maildir" / "cur" / "1741463056.M393007P13352.mx,S=5516,W=5516:2,S"
ZONE = ROOT / "examples" / "maildir" / "zone.txt"


def learn_config(tmp_path: Path, extra: str = "") -> Path:
    """Gives the example config with a [learn] store under tmp_path."""
    config = tmp_path / "config.toml"
    text = (ROOT / "examples" / "config.toml").read_text()
    config.write_text(
        f'{text}\n[learn]\nstore = "sqlite:{tmp_path}/learning/moves.db"\n{extra}'.replace(
            "[classifier]\n", f'[classifier]\nlog_file = "{tmp_path}/log"\n', 1
        )
    )
    return config


def deliver(config: Path, data: bytes, rcpt: str) -> bytes:
    """Gives the message as delivery annotates it, its delivery recorded (the pipe's step)."""
    loaded = load_config(config)
    out = check_and_annotate(
        data, loaded.engine, make_resolver(dns_zone=ZONE), loaded.policies,
        Hints(recipient=rcpt), rcpt, note=delivery_recorder(loaded.learn),
    )  # fmt: skip
    return out.data


def learn(config: Path, data: bytes, user: str, src: str, dst: str, tmp_path: Path) -> int:
    msg = tmp_path / "moved.eml"
    msg.write_bytes(data)
    return main(["learn", "--config", str(config), "--user", user, "--from-folder", src,
                 "--to-folder", dst, "--foreground", str(msg)])  # fmt: skip


def _learn(config: Path) -> LearnConfig:
    learn = load_config(config).learn
    assert learn is not None
    return learn


def stored(config: Path) -> list[Move]:
    with LearningStore.open(_learn(config).store) as store:
        return list(store.moves())


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """Gives what authsieve logs during the test."""
    import logging

    from classifier.log import log

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    log.addHandler(handler)
    level, log.level = log.level, logging.INFO
    try:
        yield out
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def test_a_delivered_message_teaches_the_facts_of_its_delivery_record(tmp_path: Path) -> None:
    config = learn_config(tmp_path)
    data = deliver(config, DEMO.read_bytes(), "alice@family.example")
    head = Message.parse(data)
    assert delivery_id_of(head, "mx.family.example"), "our X-Authsieve names the delivery record"
    assert learn(config, data, "alice@family.example.", "Junk", "INBOX", tmp_path) == 0
    [move] = stored(config)
    assert (move.user, move.direction) == ("alice@family.example", RESCUED)
    with DeliveryStore.open(_learn(config).store) as records:
        assert move.record == records.get(move.delivery_id)  # the move holds what delivery found
    found = move.record
    assert (found.dkim_domains, found.arc_sealers) == (("lists.example",), ("lists.example",))
    assert (found.client_ip, found.spf, found.spf_hop) == (
        "203.0.113.150", "fail", "mx.lists.example",
    )  # fmt: skip


def test_without_learn_the_header_is_as_before() -> None:
    value = render_header_value(FACTS, AUTHSERV, "junk", "enforce", "r")
    assert "delivery=" not in value
    assert render_header_value(FACTS, AUTHSERV, "junk", "enforce", "r", delivery_id="a2") == (
        value.replace("; reason=", "; delivery=a2; reason=")
    )


def test_forged_headers_appended_by_a_user_teach_nothing(
    tmp_path: Path, logged: io.StringIO
) -> None:
    # The attack: APPEND a message with our headers forged above its Received into Junk,
    # then move it out.  Without a delivery record, or with one made up, nothing is learnt.
    config = learn_config(tmp_path)
    deliver(config, DEMO.read_bytes(), "alice@family.example")  # the store exists
    ours_there = "mx.family.example"  # the example config's authserv-id
    for forged in (ours("", ours_there), ours("abcdefghijklmnopqrst", ours_there)):
        assert learn(config, forged + RECEIVED + BODY, "bob@family.example", "Junk", "INBOX",
                     tmp_path) == 0  # fmt: skip
    assert stored(config) == []
    assert "no delivery record abcdefghijklmnopqrst" in logged.getvalue()


def test_a_move_by_another_user_than_the_recipient_teaches_nothing(
    tmp_path: Path, logged: io.StringIO
) -> None:
    config = learn_config(tmp_path)
    data = deliver(config, DEMO.read_bytes(), "alice@family.example")
    learn(config, data, "bob@family.example", "Junk", "INBOX", tmp_path)
    assert stored(config) == []
    assert "was to alice@family.example, not to this user" in logged.getvalue()
    learn(config, data, "alice", "Junk", "INBOX", tmp_path)  # a login without the domain
    assert [m.user for m in stored(config)] == ["alice@family.example"]


def test_the_last_direction_of_a_message_counts(tmp_path: Path) -> None:
    config = learn_config(tmp_path)
    data = deliver(config, DEMO.read_bytes(), "alice@family.example")
    learn(config, data, "alice@family.example", "Junk", "INBOX", tmp_path)
    learn(config, data, "alice@family.example", "INBOX", "Junk", tmp_path)
    learn(config, data, "alice@family.example", "INBOX", "Junk", tmp_path)
    assert [m.direction for m in stored(config)] == [JUNKED]


def test_a_store_that_cannot_be_written_never_fails_delivery(
    tmp_path: Path, logged: io.StringIO
) -> None:
    (tmp_path / "learning").write_text("")  # a file where the store's directory should be
    config = learn_config(tmp_path)
    data = deliver(config, DEMO.read_bytes(), "alice@family.example")
    assert delivery_id_of(Message.parse(data), "mx.family.example")
    assert data.endswith(DEMO.read_bytes()[-200:])  # delivered, whole
    assert "not recorded" in logged.getvalue()


def test_authentication_results_of_another_host_add_no_dkim_domain(tmp_path: Path) -> None:
    config = learn_config(tmp_path)
    theirs = b"Authentication-Results: evil.example; dkim=pass header.d=bank.example\r\n"
    data = deliver(config, DEMO.read_bytes(), "alice@family.example")
    learn(config, theirs + data, "alice@family.example", "Junk", "INBOX", tmp_path)
    assert [m.record.dkim_domains for m in stored(config)] == [("lists.example",)]


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
@given(st.text(alphabet='; ="\\()\r\n\tverdictidjunk-mx.example.orgdelivery', max_size=80))
def test_hostile_header_text_names_no_delivery(noise: str) -> None:
    forged = f"X-Authsieve: v=1; id={AUTHSERV}; verdict=junk; from-auth=yes; {noise}"
    data = RECEIVED + forged.encode("utf-8", "replace").replace(b"\n", b" ") + b"\r\n" + BODY
    assert delivery_id_of(Message.parse(data), AUTHSERV) == ""


@pytest.mark.parametrize(
    ("login", "recipient", "same"),
    [
        ("alice@family.example.", "alice@family.example", True),
        ("Alice@Family.Example", "alice@family.example.", True),
        ("alice", "alice@family.example", True),
        ("bob", "alice@family.example", False),
        ("alice@other.example", "alice@family.example", False),
        ("alice", "", False),
    ],
)
def test_which_login_is_the_recipient(login: str, recipient: str, same: bool) -> None:
    assert same_user(login, recipient) is same


# --- the store ---------------------------------------------------------------------------------

RECORD = DeliveryRecord(
    id="aaaaaaaaaaaaaaaaaaaa", at=900, user="ann@example.org", message_id="<m@x>", verdict="junk",
    rules=("spf_fail",), reasons="SPF fail (spf_fail = junk)", spf="fail", dkim="pass",
    dmarc="pass", from_auth=True, forwarded=False, allowed=False,
    from_address="news@shop.example", from_domain="shop.example",
    mailfrom="bounce@shop.example", mailfrom_domain="shop.example",
    client_ip="198.51.100.7", client_rdns="relay.uni.example", client_helo="relay.uni.example",
    spf_hop="relay.uni.example", dkim_domains=("shop.example",), arc_sealers=(),
)  # fmt: skip


MOVE_FIELDS = {f.name for f in dataclasses.fields(Move)}


def move(n: int, user: str = "ann@example.org", **changes: Any) -> Move:
    """Gives the n-th move of RECORD's message by user: changes to the move or to its record."""
    facts = {k: v for k, v in changes.items() if k not in MOVE_FIELDS}
    record = dataclasses.replace(RECORD, id=f"d{n}", user=user, **facts)
    base = move_of(record, user, "Junk", "INBOX", 1000 + n)
    assert base is not None
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if k in MOVE_FIELDS})


def facts(m: Move, **changes: Any) -> Move:
    """Gives the move with its delivery record changed."""
    return dataclasses.replace(m, record=dataclasses.replace(m.record, **changes))


def record(m: Move, verdict: str = "inbox") -> DeliveryRecord:
    """Gives the delivery record a move was made on, with another verdict."""
    return dataclasses.replace(m.record, verdict=verdict)


def test_the_store_counts_a_move_once_and_purges_old_ones(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path}/sub/learning.db"
    with LearningStore.open(url) as store:
        assert store.record(move(1)) is True
        assert store.record(move(1)) is False  # the same key: counted before
        assert store.record(move(2)) is True
        assert [m.delivery_id for m in store.moves()] == ["d1", "d2"]
        assert next(iter(store.moves())) == move(1)  # every field comes back as it went in
        assert store.purge(1002) == 1
        assert [m.delivery_id for m in store.moves()] == ["d2"]
    mode = sqlite3.connect(tmp_path / "sub" / "learning.db").execute("PRAGMA journal_mode")
    assert mode.fetchone() == ("wal",)


def test_moves_recorded_before_the_delivery_time_was_kept_are_still_read(tmp_path: Path) -> None:
    # The table as it was when a move repeated its record's facts: no delivered_at.
    from classifier.aggregate.deliveries import COLUMNS, column_type

    old = ("key", "at", "user", "from_folder", "to_folder", "direction", "delivery_id",
           *(c for c in COLUMNS if c not in ("id", "at", "user")))  # fmt: skip
    db = sqlite3.connect(tmp_path / "moves.db")
    types = {"key": "TEXT", "at": "INTEGER", "delivery_id": "TEXT"}
    db.execute(
        "CREATE TABLE learned_moves ("
        + ", ".join(f"{c} {types.get(c) or column_type(c)} NOT NULL" for c in old)
        + ", PRIMARY KEY (key))"
    )
    then = move(1)
    values = {**then.record.to_dict(), **then.to_dict(), "delivery_id": then.delivery_id}
    values.update({k: json.dumps(values[k]) for k in ("rules", "dkim_domains", "arc_sealers")})
    values.update({k: int(bool(values[k])) for k in ("from_auth", "forwarded", "allowed")})
    db.execute(
        f"INSERT INTO learned_moves VALUES ({', '.join('?' for _ in old)})",
        [values[c] for c in old],
    )
    db.commit()
    db.close()
    with LearningStore.open(f"sqlite:{tmp_path}/moves.db") as store:
        [got] = store.moves()
        assert got == dataclasses.replace(then, record=dataclasses.replace(then.record, at=0))
        assert store.record(move(2)) is True
        assert [m.record.at for m in store.moves()] == [0, RECORD.at]


# --- proposals ---------------------------------------------------------------------------------

POLICIES = CONFIG.policies
SOFTFAIL_JUNK = config_from_dict(
    {"classifier": {"authserv_id": AUTHSERV}, "policy": {"spf_softfail": "junk"}}
).policies
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
    sealed = [facts(m, arc_sealers=("lists.example",)) for m in moves]
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
    strong = [facts(m, rules=("dmarc_reject",)) for m in moves]
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
    config = learn_config(tmp_path)
    store = tmp_path / "learning" / "moves.db"
    data = deliver(config, DEMO.read_bytes(), "alice@family.example")
    # The store is locked by another writer: learn must still answer at once, give up after
    # --timeout in the background, and say so in the log.
    blocker = sqlite3.connect(store, isolation_level=None)
    blocker.execute("PRAGMA journal_mode=WAL")
    LearningStore.open(f"sqlite:{store}").close()
    blocker.execute("BEGIN EXCLUSIVE")
    argv = [*filter_command(), "learn", "--config", str(config), "--user", "alice@family.example",
            "--from-folder", "Junk", "--to-folder", "INBOX", "--timeout", "3"]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(argv, input=data, capture_output=True, timeout=30)
    took = time.monotonic() - started
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert took < 2.5, f"learn took {took:.2f}s before exiting"
    deadline = time.monotonic() + 20
    log = tmp_path / "log"  # written by the background process, which may not have begun
    while not log.exists() or "not recorded" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "learn logged no failure"
        time.sleep(0.1)
    log_text = (tmp_path / "log").read_text(errors="replace")
    assert f"{store}" in log_text and "(running as " in log_text  # which file, as whom
    blocker.execute("ROLLBACK")
    # Unlocked, the same move is recorded (--foreground: before exiting).
    proc = subprocess.run([*argv, "--foreground"], input=data, timeout=30)
    assert proc.returncode == 0
    assert [m.direction for m in stored(config)] == [RESCUED]


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
    assert err.startswith(f"authsieve: learn store {tmp_path}/file/x.db: ") and err.count("\n") == 1
    # Which file, as whom, and what to run (admin finding).
    assert "(running as root)" in err or "(running as " in err
    assert f"install -d -o vmail -g vmail -m 750 {tmp_path}/file" in err


# --- the review findings (issue 17, second round) ----------------------------------------------


def test_a_senders_own_relay_is_never_proposed_as_a_forwarder() -> None:
    # The attacker's relay.atk.test breaks SPF of mail signed d=atk.test, or sent as atk.test.
    own = {"spf_hop": "relay.atk.test", "client_rdns": "relay.atk.test"}
    signed = [move(n, u, **own, dkim_domains=("atk.test",)) for n, u in
              ((1, "ann@example.org"), (2, "ann@example.org"), (3, "bob@example.org"))]  # fmt: skip
    sent = [facts(m, dkim_domains=("shop.example",), mailfrom_domain="b.atk.test")
            for m in signed]  # fmt: skip
    for moves in (signed, sent):
        assert not [p for p in propose(moves, POLICIES, T) if p.kind == "trust_forwarder"]
    by_ip = [facts(m, spf_hop="192.0.2.9", dkim_domains=("x.example",)) for m in signed]
    assert not [p for p in propose(by_ip, POLICIES, T) if p.kind == "trust_forwarder"]
    other = [facts(m, dkim_domains=("shop.example",)) for m in signed]
    [found] = [p for p in propose(other, POLICIES, T) if p.kind == "trust_forwarder"]
    assert "its organizational domain atk.test is neither a signer's (shop.example)" in (
        found.summary
    )


def _junked(n: int, user: str, domain: str) -> Move:
    return move(n, user, direction=JUNKED, from_domain=domain, rules=(), spf_hop="")


def test_no_suffix_block_when_mail_under_it_stays_in_inbox_untouched() -> None:
    # The .net finding: a.net and b.net junked, but c.net's (DMARC-passing) mail is read.
    users = ("ann@example.org", "bob@example.org", "ann@example.org")
    junked = [_junked(n, u, "a.net") for n, u in enumerate(users)]
    junked += [_junked(10 + n, u, "mail.b.net") for n, u in enumerate(users)]
    kept = [dataclasses.replace(RECORD, id=f"k{n}", from_domain="c.net") for n in range(20)]
    records = [record(m, "inbox") for m in junked] + kept
    found = [(p.kind, p.value) for p in propose(junked, POLICIES, T, records)]
    assert found == [("block_domain", "a.net"), ("block_domain", "b.net")]
    # Without c.net's mail, nearly all .net mail was junked: the suffix.
    found = [(p.kind, p.value) for p in propose(junked, POLICIES, T, records[:6])]
    assert found == [("block_suffix", ".net")]
    # A domain whose mail mostly stayed is not proposed either (share below 0.8).
    more = [dataclasses.replace(RECORD, id=f"a{n}", from_domain="a.net") for n in range(5)]
    found = [(p.kind, p.value) for p in propose(junked[:3], POLICIES, T, records[:3] + more)]
    assert found == []


def test_a_rule_proposal_counts_the_deliveries_it_filed() -> None:
    policies = config_from_dict(
        {"classifier": {"authserv_id": AUTHSERV}, "policy": {"spf_softfail": "junk"}}
    ).policies
    moves = [move(n, u, rules=("spf_softfail",), dkim_domains=(), spf_hop="") for n, u in
             ((1, "ann@example.org"), (2, "bob@example.org"), (3, "bob@example.org"))]  # fmt: skip
    filed = [record(m, "junk") for m in moves]
    filed += [dataclasses.replace(filed[0], id=f"x{n}") for n in range(5)]
    [found] = [p for p in propose(moves, policies, T, filed) if p.kind == "relax_rule"]
    assert found.summary.startswith("rule spf_softfail=junk: 3 of 8 messages it filed were rescued")


def test_no_per_user_proposal_for_a_login_that_is_no_address() -> None:
    moves = [move(n, "alice") for n in (1, 2, 3)]
    assert not [p for p in propose(moves, POLICIES, T) if p.user]


def test_evidence_says_how_many_moves_it_leaves_out() -> None:
    moves = [move(n, u) for n, u in enumerate(["ann@example.org"] * 3 + ["bob@example.org"] * 2)]
    [found] = [p for p in propose(moves, POLICIES, T) if p.kind == "trust_forwarder"]
    assert len(found.evidence) == 4 and found.evidence[-1] == "(first 3 of 5 moves)"


PIECES = ["a", "@", ".", " ", "\n", "\r", "\x1b", "[", "\x07", "\u202e", "\u2066", "\x9b", "\x00"]
HOSTILE = st.lists(st.sampled_from([*PIECES, "1. ", "change: "]), max_size=12).map("".join)


@settings(max_examples=80, deadline=None)
@given(sender=HOSTILE, message_id=HOSTILE, user=HOSTILE, folder=HOSTILE)
def test_sender_and_user_text_never_reaches_the_terminal_raw(
    sender: str, message_id: str, user: str, folder: str
) -> None:
    moves = [
        move(n, user + u, from_address=sender + "x@shop.example", message_id=message_id,
             from_folder="Junk" + folder)
        for n, u in ((1, "ann@example.org"), (2, "ann@example.org"), (3, "bob@example.org"))
    ]  # fmt: skip
    proposals = propose(moves, POLICIES, T)
    assert proposals  # a forwarder at least: the values reach the text
    text = render(list(enumerate(proposals, 1)))
    for line in text.splitlines():
        assert line.isprintable(), repr(line)
        assert line[:1].isdigit() or line.startswith("   change: ") or line.startswith("   e.g. ")
    assert text.count("\n") == sum(2 + len(p.evidence) for p in proposals)


def _store_with_rescues(tmp_path: Path, user: str = "ann@example.org") -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[classifier]\nauthserv_id = "{AUTHSERV}"\n'
        '[policy]\nspf_softfail = "junk"  # keep\n'
        f'[learn]\nstore = "sqlite:{tmp_path}/l/moves.db"\nmin_messages = 1\nmin_users = 1\n'
    )
    with LearningStore.open(f"sqlite:{tmp_path}/l/moves.db") as store:
        now = int(time.time())
        store.record(
            move(
                1,
                user,
                rules=("spf_softfail",),
                dkim_domains=(),
                spf_hop="",
                at=now,
                from_auth=False,
            )
        )
    return config


def test_apply_says_what_a_rule_was_and_restores_the_config_when_sieve_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _store_with_rescues(tmp_path)
    before = config.read_text()
    (tmp_path / "a-file").write_text("")
    bad = str(tmp_path / "a-file" / "sieve")
    assert main(["suggest", "--config", str(config), "--apply", "1", "--sieve-dir", bad]) == 1
    out = capsys.readouterr().out
    assert "spf_softfail: set to inbox (was junk)" in out
    assert out.splitlines()[-1].endswith(f"{config} restored, proposal not applied")
    assert config.read_text() == before
    from classifier.commands.learn import _proposals

    assert [p.key for p in _proposals(load_config(config))] == ["spf_softfail"]  # still there


def test_apply_never_writes_a_config_the_loader_rejects(tmp_path: Path) -> None:
    from classifier.commands.learn import _apply
    from classifier.errors import UsageError
    from classifier.learning.proposals import Proposal

    config = _store_with_rescues(tmp_path)
    before = config.read_text()
    bad = Proposal("allow_sender", "alice", "allow_senders", "x@shop.example", 5, ("alice",), "s")
    args = argparse.Namespace(config=str(config), sieve_dir=None)
    with pytest.raises(UsageError, match="not changed: the change would not load"):
        _apply(args, load_config(config), bad)
    assert config.read_text() == before


# --- the attacker review of main (N1) ------------------------------------------------------------


@pytest.fixture
def own_log() -> Iterator[None]:
    """Lets a command configure authsieve's log afresh, and puts the test's back after."""
    import logging

    from classifier.log import log

    kept, level, propagate = log.handlers[:], log.level, log.propagate
    for handler in kept:
        log.removeHandler(handler)
    try:
        yield
    finally:
        for handler in log.handlers[:]:
            log.removeHandler(handler)
            handler.close()
        for handler in kept:
            log.addHandler(handler)
        log.setLevel(level or logging.NOTSET)
        log.propagate = propagate


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: root's suggest on the mail user's store")
def test_root_on_the_store_drops_its_own_groups_and_comes_back(open_tmp: Path) -> None:
    store = open_tmp / "learning"
    store.mkdir()
    os.chown(store, *NOBODY)
    before = (os.getgroups(), os.getegid())
    os.setgroups([0, 4])
    try:
        with as_store_owner(f"sqlite:{store}/moves.db"):
            # root's group 0 would open a root-owned 0660 file the user links to
            assert 0 not in os.getgroups() and 4 not in os.getgroups()
            assert NOBODY[1] in os.getgroups()
            assert (os.geteuid(), os.getegid()) == NOBODY
        assert sorted(os.getgroups()) == [0, 4] and os.geteuid() == 0
    finally:
        os.setgroups(before[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the file the link names is root's")
def test_suggest_take_in_refuses_a_symlinked_store_and_leaves_roots_file_alone(
    open_tmp: Path, capfd: pytest.CaptureFixture[str], own_log: None
) -> None:
    store = open_tmp / "learning"
    store.mkdir()
    os.chown(store, *NOBODY)
    secret = open_tmp / "root-file"
    secret.write_bytes(b"root's\n")
    secret.chmod(0o660)
    (store / "moves.db").symlink_to(secret)
    config = open_tmp / "config.toml"
    config.write_text(
        f'[classifier]\nauthserv_id = "{AUTHSERV}"\n[learn]\nstore = "sqlite:{store}/moves.db"\n'
    )
    assert main(["suggest", "--take-in", "--config", str(config)]) == 2  # in a child
    assert "a symlink, refused" in capfd.readouterr().err
    assert secret.read_bytes() == b"root's\n"
    assert not list(open_tmp.glob("root-file-*"))  # no -wal/-shm beside it
    assert main(["suggest", "--config", str(config)]) == 2
    assert "a symlink, refused" in capfd.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: root's take-in on the mail user's store")
def test_root_takes_the_spool_in_as_the_store_owner_for_good(
    open_tmp: Path, monkeypatch: pytest.MonkeyPatch, own_log: None
) -> None:
    # N1: nothing after --take-in needs root, so real and saved uid go too.
    from classifier.aggregate.deliveries import DeliveryStore

    store = open_tmp / "learning"
    store.mkdir()
    os.chown(store, *NOBODY)
    seen = open_tmp / "seen"
    seen.touch()
    seen.chmod(0o666)
    ingest = DeliveryStore.ingest_spool

    def watched(self: DeliveryStore, *args: object, **kwargs: object) -> object:
        seen.write_text(repr((os.getresuid(), os.getresgid(), sorted(os.getgroups()))))
        return ingest(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DeliveryStore, "ingest_spool", watched)
    config = open_tmp / "config.toml"
    config.write_text(
        f'[classifier]\nauthserv_id = "{AUTHSERV}"\n[learn]\nstore = "sqlite:{store}/moves.db"\n'
    )
    assert main(["suggest", "--take-in", "--config", str(config)]) == 0
    uid, gid = NOBODY
    assert seen.read_text() == repr(((uid, uid, uid), (gid, gid, gid), [gid]))
    assert os.getresuid() == (0, 0, 0)  # the caller (here pytest) is root still
    assert {p.stat().st_uid for p in store.iterdir()} == {uid}
