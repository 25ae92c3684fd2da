"""One-shot deliveries spool their learning record; learn takes it in before it looks (issue 17).

The spool is the report store's (`classifier.aggregate.spool`, tests/test_aggregate_spool.py):
here, that a pipe delivery's record waits there, that a move right after it is learnt,
and that a spooled file nobody's writer made (a symlink, another owner, a wrong mode,
an id taken in before, a row that is no record) teaches nothing.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from classifier.aggregate import spool
from classifier.aggregate.deliveries import DeliveryStore, delivery_recorder, record_delivery
from classifier.aggregate.spool import spool_dir, spool_rows
from classifier.config import load_config
from classifier.envelope.trust import Hints
from classifier.evaluate import Evaluation, check_and_annotate
from classifier.lookup.resolver import make_resolver
from tests.conftest import ROOT
from tests.helpers import NOBODY, as_nobody
from tests.test_learning import DEMO, ZONE, _learn, learn, learn_config, logged, stored

__all__ = ["logged"]  # the fixture, used by name

RCPT = "alice@family.example"


def wait_for_take_in() -> None:
    """Waits for the background take-in threads of serve and the watcher (spool.in_background)."""
    for thread in threading.enumerate():
        if thread.name == "spool-take-in":
            thread.join(60)


def spooled(config: Path) -> list[Path]:
    """Gives the whole files in the learning store's spool, by name."""
    spool = spool_dir(Path(_learn(config).store.removeprefix("sqlite:")))
    if not spool.exists():
        return []
    return sorted(p for p in spool.iterdir() if not p.name.startswith("."))


def deliver_one_shot(config: Path, data: bytes) -> bytes:
    """Gives the message as a pipe process annotates it, its record spooled."""
    loaded = load_config(config)
    out = check_and_annotate(
        data, loaded.engine, make_resolver(dns_zone=ZONE), loaded.policies,
        Hints(recipient=RCPT), RCPT, note=delivery_recorder(loaded.learn, one_shot=True),
    )  # fmt: skip
    return out.data


def delivery_id(data: bytes) -> str:
    found = re.search(rb";\s+delivery=([a-z2-7]{20})", data)
    assert found is not None
    return found.group(1).decode()


def _one_shot_argv(how: str, config: Path) -> list[str]:
    """Gives the command line of a one-shot delivery: pipe as Postfix runs it, or the filter."""
    if how == "pipe":
        tail = ["--dns-zone", str(ZONE), "--recipient", RCPT, "--deliver", "stdout"]
    else:  # as the LMTP filter's Sieve script runs it: recipient, then sender
        tail = ["--dns-zone", str(ZONE), "--", RCPT, "x@example.net"]
    return [sys.executable, "-m", "classifier.commands.main", how, "--config", str(config), *tail]


@pytest.mark.parametrize("how", ["pipe", "filter"])
def test_a_one_shot_deliverys_record_waits_in_the_spool_and_a_move_right_after_is_learnt(
    how: str, tmp_path: Path
) -> None:
    config = learn_config(tmp_path)
    proc = subprocess.run(
        _one_shot_argv(how, config), input=DEMO.read_bytes(), capture_output=True, cwd=ROOT,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    named = delivery_id(proc.stdout)
    [file] = spooled(config)
    assert file.stat().st_mode & 0o777 == 0o600
    assert file.parent.stat().st_mode & 0o777 == 0o700
    [row] = json.loads(file.read_bytes())["rows"]
    assert row[0] == named and RCPT in row  # the record, by the id X-Authsieve carries
    assert not (tmp_path / "learning" / "moves.db").exists()  # the process made no database
    assert learn(config, proc.stdout, RCPT, "Junk", "INBOX", tmp_path) == 0
    [move] = stored(config)
    assert (move.delivery_id, move.user, move.record.client_ip) == (named, RCPT, "203.0.113.150")
    assert spooled(config) == []  # taken in, then unlinked


def _forge_symlink(file: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    file.rename(outside)
    file.symlink_to(outside)


def _forge_owner(file: Path, tmp_path: Path) -> None:
    os.chown(file, *NOBODY)


def _forge_mode(file: Path, tmp_path: Path) -> None:
    file.chmod(0o644)


def _forge_row(file: Path, tmp_path: Path) -> None:
    doc = json.loads(file.read_bytes())
    doc["rows"][0][1] = "yesterday"  # `at`: a record's is an integer
    file.write_text(json.dumps(doc))


FORGERIES = {
    "symlink": (_forge_symlink, "cannot open"),
    "foreign owner": (_forge_owner, f"owned by uid {NOBODY[0]}"),
    "mode 0644": (_forge_mode, "mode 0644, not 0600"),
    "not a record": (_forge_row, "a row that is not one of this store's"),
}


@pytest.mark.parametrize("kind", FORGERIES)
def test_a_forged_spool_file_teaches_nothing(
    kind: str, tmp_path: Path, logged: io.StringIO
) -> None:
    forge, why = FORGERIES[kind]
    if kind == "foreign owner" and os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    config = learn_config(tmp_path)
    data = deliver_one_shot(config, DEMO.read_bytes())
    [file] = spooled(config)
    forge(file, tmp_path)
    assert learn(config, data, RCPT, "Junk", "INBOX", tmp_path) == 0
    assert stored(config) == []
    said = logged.getvalue()
    assert f"{file.name} refused: {why}" in said, said
    assert f"no delivery record {delivery_id(data)}" in said
    # Logged once and removed (a symlink itself, not its target): not again and again.
    assert not file.is_symlink() and not file.exists()
    if kind == "symlink":
        assert (tmp_path / "outside.json").exists()
    assert learn(config, data, RCPT, "Junk", "INBOX", tmp_path) == 0
    assert logged.getvalue().count("refused") == 1


def test_a_replayed_spool_id_teaches_nothing(tmp_path: Path, logged: io.StringIO) -> None:
    config = learn_config(tmp_path)
    first = deliver_one_shot(config, DEMO.read_bytes())
    [taken] = spooled(config)
    kept = taken.read_bytes()
    assert learn(config, first, RCPT, "Junk", "INBOX", tmp_path) == 0  # takes it in
    assert len(stored(config)) == 1 and spooled(config) == []
    # Another delivery's record under the id of the file taken in before: dropped.
    second = deliver_one_shot(
        config, DEMO.read_bytes().replace(b"Message-ID: <", b"Message-ID: <2")
    )
    [file] = spooled(config)
    doc = json.loads(file.read_bytes())
    doc["id"] = json.loads(kept)["id"]
    file.write_text(json.dumps(doc))
    assert learn(config, second, RCPT, "Junk", "INBOX", tmp_path) == 0
    assert len(stored(config)) == 1  # the first move only
    assert f"no delivery record {delivery_id(second)}" in logged.getvalue()
    assert "taken in before, dropped" in logged.getvalue()
    assert spooled(config) == []  # consumed, not left to be tried again
    # The first file put back (a crash between commit and unlink does this) adds nothing.
    taken.write_bytes(kept)
    taken.chmod(0o600)
    with DeliveryStore.open(_learn(config).store) as store:
        assert store.ingest_spool(0).added == 0
        assert len(list(store.records())) == 1


def test_a_spool_others_may_write_is_not_read_and_learn_goes_on(
    tmp_path: Path, logged: io.StringIO
) -> None:
    config = learn_config(tmp_path)
    data = deliver_one_shot(config, DEMO.read_bytes())
    [file] = spooled(config)
    file.parent.chmod(0o777)
    assert learn(config, data, RCPT, "Junk", "INBOX", tmp_path) == 0
    assert stored(config) == []
    assert "not taken in: " in logged.getvalue() and "writable by group or others" in (
        logged.getvalue()
    )
    assert file.exists()


def test_suggest_takes_the_spool_in(tmp_path: Path) -> None:
    from classifier.commands.main import main

    config = learn_config(tmp_path)
    data = deliver_one_shot(config, DEMO.read_bytes())
    with __import__("contextlib").redirect_stdout(io.StringIO()):
        assert main(["suggest", "--json", "--config", str(config)]) == 0
    assert spooled(config) == []
    with DeliveryStore.open(_learn(config).store) as store:
        assert store.get(delivery_id(data)) is not None


def test_a_process_that_keeps_delivering_takes_the_spool_in_hourly_off_the_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # attacker review F2: serve's first delivery after start took a 117k-file spool in
    # (58 s) before it answered.  A thread of its own now, bounded.
    config = learn_config(tmp_path)
    spooled_data = deliver_one_shot(config, DEMO.read_bytes())
    learn_table = _learn(config)
    loaded = load_config(config)
    got: list[Evaluation] = []
    check_and_annotate(
        DEMO.read_bytes(), loaded.engine, make_resolver(dns_zone=ZONE), loaded.policies,
        Hints(recipient=RCPT), RCPT, record=got.append,
    )  # fmt: skip
    runs: list[tuple[str, int | None, float | None]] = []
    ingest = DeliveryStore.ingest_spool

    def watched(
        store: DeliveryStore, before: int, first: str = "", limit: int | None = None,
        seconds: float | None = None,
    ) -> spool.Intake:  # fmt: skip
        runs.append((threading.current_thread().name, limit, seconds))
        return ingest(store, before, first, limit, seconds)

    monkeypatch.setattr(DeliveryStore, "ingest_spool", watched)
    spool._next_run.pop(("learn", learn_table.store), None)
    assert record_delivery(learn_table, got[0], "bbbbbbbbbbbbbbbbbbbb", RCPT, b"")  # serve's first
    wait_for_take_in()
    assert runs == [("spool-take-in", spool.BACKGROUND_LIMIT, spool.BACKGROUND_SECONDS)]
    assert spooled(config) == []
    deliver_one_shot(config, DEMO.read_bytes())
    assert record_delivery(
        learn_table, got[0], "cccccccccccccccccccc", RCPT, b""
    )  # within the hour
    wait_for_take_in()
    assert len(spooled(config)) == 1 and len(runs) == 1
    with DeliveryStore.open(learn_table.store) as store:
        ids = {r.id for r in store.records()}
    assert ids == {delivery_id(spooled_data), "b" * 20, "c" * 20}


def test_many_learn_processes_at_once_take_the_spool_in_once_and_quietly(tmp_path: Path) -> None:
    # A user who moves many messages starts as many learn processes: each takes the
    # spool in before it looks, so files vanish under the others.  None is refused.
    config = learn_config(tmp_path)
    moved = []
    for n in range(12):
        data = DEMO.read_bytes().replace(b"Message-ID: <", f"Message-ID: <{n}.".encode(), 1)
        moved.append(deliver_one_shot(config, data))
    assert len(spooled(config)) == 12
    procs = []
    for n, data in enumerate(moved[:8]):
        path = tmp_path / f"moved-{n}.eml"
        path.write_bytes(data)
        argv = [sys.executable, "-m", "classifier.commands.main", "learn", "--config",
                str(config), "--user", RCPT, "--from-folder", "Junk", "--to-folder", "INBOX",
                "--foreground", str(path)]  # fmt: skip
        procs.append(
            subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    said = ""
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        said += out.decode()
        assert proc.returncode == 0, out
    assert sorted(m.delivery_id for m in stored(config)) == sorted(map(delivery_id, moved[:8]))
    assert spooled(config) == []
    with DeliveryStore.open(_learn(config).store) as store:
        assert len(list(store.records())) == 12
    said += (tmp_path / "log").read_text()
    assert "refused" not in said and "not taken in" not in said, said


def test_serve_records_a_delivery_only_once_its_client_reports_it_delivered(
    tmp_path: Path,
) -> None:
    # attacker review F2: a client that stopped waiting (pipe --daemon-timeout) delivers
    # under its own delivery id; the daemon's row under its id named no delivery at all.
    from classifier.delivery.daemon_client import call_daemon
    from tests.helpers import wait_for

    config = learn_config(tmp_path)
    sock = tmp_path / "authsieve.sock"
    argv = [sys.executable, "-m", "classifier.commands.main", "serve", "--config", str(config),
            "--dns-zone", str(ZONE), "--socket", str(sock)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "log"
    try:
        wait_for(sock.exists, what="the daemon's socket")
        hints = {"recipient": RCPT}
        gone = call_daemon(str(sock), DEMO.read_bytes(), hints, RCPT, 30)
        assert gone is not None
        gone.sock.close()  # the client gave up: no delivery report
        wait_for(lambda: "no delivery report" in log.read_text(), what="the daemon's log line")
        kept = call_daemon(str(sock), DEMO.read_bytes(), hints, RCPT, 30)
        assert kept is not None and kept.report(0, [RCPT], 1.0)
        store = _learn(config).store

        def recorded() -> set[str]:
            if not Path(store.removeprefix("sqlite:")).exists():
                return set()
            with DeliveryStore.open(store) as records:
                return {r.id for r in records.records()}

        wait_for(lambda: delivery_id(kept.answer.data) in recorded(), what="the record")
        assert delivery_id(gone.answer.data) not in recorded()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_backlog_costs_no_move_and_each_learn_takes_in_a_bounded_new_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # attacker review F1: with 200k files spooled, learn spent its --timeout taking in the
    # oldest and lost the move; the next one began again with the oldest.
    from classifier.commands import learn as learn_command
    from classifier.evaluate import new_delivery_id

    config = learn_config(tmp_path)
    moved = [deliver_one_shot(config, DEMO.read_bytes()) for _ in range(2)]
    [template] = json.loads(spooled(config)[0].read_bytes())["rows"]
    spool = spooled(config)[0].parent
    backlog = 3000
    for _ in range(backlog):  # other deliveries' records, waiting
        ident = new_delivery_id()
        spool_rows(spool, [[ident, *template[1:]]], ident)
    monkeypatch.setattr(learn_command, "LEARN_TAKE_IN", 200)
    before = {p.name for p in spooled(config)}
    assert len(before) == backlog + 2
    assert learn(config, moved[0], RCPT, "Junk", "INBOX", tmp_path) == 0
    assert [m.delivery_id for m in stored(config)] == [delivery_id(moved[0])]
    after = {p.name for p in spooled(config)}
    assert len(after) == len(before) - 200  # the moved one's record first, then a bounded part
    assert f"{delivery_id(moved[0])}.json" not in after
    assert learn(config, moved[1], RCPT, "Junk", "INBOX", tmp_path) == 0
    assert len(stored(config)) == 2
    again = {p.name for p in spooled(config)}
    assert len(again) == len(after) - 200  # went on: 200 files the first did not take in
    with DeliveryStore.open(_learn(config).store) as store:
        assert len(list(store.records())) == 400


EXAMPLES = ROOT / "examples"
TAKE_IN_SERVICE = EXAMPLES / "systemd" / "authsieve-learn-spool.service"
TAKE_IN_TIMER = EXAMPLES / "systemd" / "authsieve-learn-spool.timer"
TAKE_IN_CRON = EXAMPLES / "cron" / "authsieve-learn-spool"


def test_the_shipped_hourly_take_in_empties_the_spool_of_a_pipe_only_server(
    tmp_path: Path,
) -> None:
    # attacker review F1: on a pipe-only server only learn and suggest emptied the spool.
    from tests.test_dmarc_send import unit_value

    command = unit_value(TAKE_IN_SERVICE, "ExecStart=").split()
    [cron] = [ln.split() for ln in TAKE_IN_CRON.read_text().splitlines() if ln[:1].isdigit()]
    assert cron[5] == "vmail" == unit_value(TAKE_IN_SERVICE, "User=") and cron[6:] == command
    assert unit_value(TAKE_IN_TIMER, "OnCalendar=") == "hourly"
    config = learn_config(tmp_path)
    data = [deliver_one_shot(config, DEMO.read_bytes()) for _ in range(3)]
    assert len(spooled(config)) == 3
    argv = [sys.executable, "-m", "classifier.commands.main", *command[1:]]
    argv[argv.index("/etc/authsieve/config.toml")] = str(config)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout == b"" and done.stderr == b"", done.stderr
    assert spooled(config) == []
    with DeliveryStore.open(_learn(config).store) as store:
        assert {r.id for r in store.records()} == set(map(delivery_id, data))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verifies_the_take_in_timer_and_service(tmp_path: Path) -> None:
    for unit in (TAKE_IN_SERVICE, TAKE_IN_TIMER):
        text = unit.read_text().replace("/usr/local/bin/authsieve", sys.executable)
        (tmp_path / unit.name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / TAKE_IN_TIMER.name),
         str(tmp_path / TAKE_IN_SERVICE.name)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    # A complaint names the unit file by its path, or (an ignored setting) by its name.
    units = [str(tmp_path), *(unit.name for unit in (TAKE_IN_SERVICE, TAKE_IN_TIMER))]
    complaints = [ln for ln in done.stderr.splitlines() if any(u in ln for u in units)]
    assert done.returncode == 0 and complaints == [], done.stderr


def test_files_taken_in_before_are_one_log_line_a_run_not_one_each(
    tmp_path: Path, logged: io.StringIO
) -> None:
    # N2: learn racing serve over a backlog logged each file another reader took in.
    config = learn_config(tmp_path)
    deliver_one_shot(config, DEMO.read_bytes())
    [taken] = spooled(config)
    kept = taken.read_bytes()
    with DeliveryStore.open(_learn(config).store) as store:
        assert store.ingest_spool(0).added > 0
        for n in range(5):  # the same id again, as a second reader would meet it
            copy = taken.with_name(f"copy{n}.json")
            copy.write_bytes(kept)
            copy.chmod(0o600)
        assert store.ingest_spool(0).added == 0
    lines = [line for line in logged.getvalue().splitlines() if "taken in before" in line]
    assert lines == [f"spool {taken.parent}: 5 file(s) taken in before, dropped"]
    assert spooled(config) == []


def test_suggest_take_in_logs_a_refused_file_to_the_log_file_not_to_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # N3: the cron job mails stderr; a refused file belongs in log_file.
    from classifier.commands.main import main
    from classifier.log import log

    config = learn_config(tmp_path)
    deliver_one_shot(config, DEMO.read_bytes())
    [file] = spooled(config)
    (file.parent / "planted.json").symlink_to("/etc/passwd")
    kept, level, propagate = log.handlers[:], log.level, log.propagate
    for handler in kept:
        log.removeHandler(handler)
    try:
        assert main(["suggest", "--take-in", "--config", str(config)]) == 0
    finally:
        for handler in log.handlers[:]:
            log.removeHandler(handler)
            handler.close()
        for handler in kept:
            log.addHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
    assert capfd.readouterr() == ("", "")
    assert "planted.json refused: cannot open" in (tmp_path / "log").read_text()
    assert spooled(config) == []


@pytest.mark.parametrize("how", ["a symlink", "mode 1777"])
def test_suggest_take_in_says_why_a_spool_directory_is_refused(
    tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # N5: a symlink was a NotADirectoryError with install advice; 1777 read "mode 0777".
    from classifier.commands.main import main

    config = learn_config(tmp_path)
    deliver_one_shot(config, DEMO.read_bytes())
    [file] = spooled(config)
    directory = file.parent
    if how == "a symlink":
        directory.rename(tmp_path / "elsewhere")
        directory.symlink_to(tmp_path / "elsewhere")
        said = f"{directory}: a symlink, refused"
    else:
        directory.chmod(0o1777)
        said = f"{directory}: mode 1777, writable by group or others, not read"
    assert main(["suggest", "--take-in", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert said in err and "install -d" not in err and "NotADirectoryError" not in err, err
    assert err.count("\n") == 1


def test_the_writer_names_the_real_mode_of_a_sticky_spool_directory(tmp_path: Path) -> None:
    directory = tmp_path / "moves.db.spool"
    directory.mkdir()
    directory.chmod(0o1777)
    with pytest.raises(PermissionError, match="mode 1777: refused"):
        spool_rows(directory, [[1]])


def test_a_root_pipe_into_another_users_store_spools_nothing_and_says_why(
    open_tmp: Path,
) -> None:
    # Admin review: one hand-run root pipe made a root-owned spool; vmail's deliveries
    # then all failed "Permission denied" and suggest --take-in advised install -d.
    config = learn_config(open_tmp)
    store_dir = open_tmp / "learning"
    store_dir.mkdir(mode=0o750)
    os.chown(store_dir, *NOBODY)
    proc = subprocess.run(
        _one_shot_argv("pipe", config), input=DEMO.read_bytes(), capture_output=True,
        cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert b"X-Authsieve" in proc.stdout  # delivered all the same
    assert list(store_dir.iterdir()) == []  # no root-owned spool, nor anything else
    said = "not recorded: running as root; the store belongs to nobody (run the pipe as that user)"
    assert said in (open_tmp / "log").read_text()
    # The store's owner still spools.
    (open_tmp / "log").chmod(0o666)
    as_nobody(lambda: deliver_one_shot(config, DEMO.read_bytes()))
    [file] = spooled(config)
    assert file.stat().st_uid == file.parent.stat().st_uid == NOBODY[0]


def test_a_spool_of_the_wrong_owner_is_named_with_its_owner_and_fix(open_tmp: Path) -> None:
    # As an older root pipe left it: the reader names the spool, not the store directory.
    store_dir = open_tmp / "learning"
    store_dir.mkdir(mode=0o750)
    os.chown(store_dir, *NOBODY)
    directory = store_dir / "moves.db.spool"
    directory.mkdir(mode=0o700)  # root's

    def read() -> None:
        with pytest.raises(spool.SpoolRefused) as got:
            spool.Spool(directory)
        said = str(got.value)
        assert f"spool directory {directory}: owned by root, not nobody" in said, said
        assert f"chown -R nobody: {directory}, or remove it when empty" in said, said

    as_nobody(read)
