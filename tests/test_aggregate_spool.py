"""One-shot writers spool their report rows; the store's holder ingests them once (issue 16)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from classifier.aggregate import spool
from classifier.aggregate.spool import spool_dir, spool_rows
from classifier.aggregate.store import ReportStore, _values
from classifier.config import ReportsConfig
from tests.test_aggregate_store import MESSAGES, ROOT, ZONE, _row, config_with_store
from tests.test_learn_spool import wait_for_take_in


def _pipe_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "classifier.commands.main", "pipe", "--config", str(config),
            "--dns-zone", str(ZONE), "--recipient", "alice@family.example",
            "--deliver", "stdout"]  # fmt: skip


def test_rows_of_concurrent_pipe_processes_land_in_the_report_exactly_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "lib" / "reports.db"
    config = config_with_store(tmp_path, f"sqlite:{db}")
    messages = [m for m in MESSAGES if b"@riverside.example" in m.read_bytes()][:1] * 6
    procs = [
        subprocess.Popen(
            _pipe_argv(config),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        for _ in messages
    ]
    for proc, message in zip(procs, messages, strict=True):
        out, err = proc.communicate(message.read_bytes(), timeout=60)
        assert proc.returncode == 0, err
        assert out.endswith(message.read_bytes())
    spool = spool_dir(db)
    files = sorted(p for p in spool.iterdir() if not p.name.startswith("."))
    assert len(files) == 6
    assert spool.stat().st_mode & 0o777 == 0o700
    assert db.parent.stat().st_mode & 0o777 == 0o750
    assert {p.stat().st_mode & 0o777 for p in files} == {0o600}
    assert not db.exists()  # no process made the database nor its WAL
    kept = tmp_path / "copy.json"
    shutil.copy(files[0], kept)

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    report = subprocess.run(
        [sys.executable, "-m", "classifier.commands.main", "dmarc-report", "--config",
         str(config), "--day", day, "--dns-zone", str(ZONE), "--dry-run", str(tmp_path / "out")],
        capture_output=True, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert list(spool.iterdir()) == []  # ingested, then unlinked
    # A crash between the commit and the unlink leaves a file that was taken in: not again.
    shutil.copy(kept, files[0])
    with ReportStore.open(f"sqlite:{db}") as store:
        assert store.ingest_spool(0) == 0
        rows = list(store.rows_between(0, 2**40))
    assert list(spool.iterdir()) == []
    assert len(rows) == 6 and {r.header_from for r in rows} == {"riverside.example"}


def test_a_kept_store_ingests_the_spool_on_its_hourly_round(tmp_path: Path) -> None:
    db = tmp_path / "reports.db"
    spool_rows(spool_dir(db), [list(_values(_row(1000), "mx1"))])
    reports = ReportsConfig(store=f"sqlite:{db}", host="mx1", retention_days=36500)
    from classifier.aggregate.store import _drop_kept, _last_purge, record_rows

    _last_purge.pop(reports.store, None)
    spool._next_run.pop(("reports", reports.store), None)
    try:
        assert record_rows(reports, (_row(1001),), now=time.time())  # serve's first delivery
        wait_for_take_in()  # in a thread of its own: the delivery did not wait for it
    finally:
        _drop_kept()
    with ReportStore.open(reports.store) as store:
        assert [r.received_at for r in store.rows_between(0, 5000)] == [1000, 1001]
    assert list(spool_dir(db).iterdir()) == []


def _spooled(db: Path, at: int) -> Path:
    ident = spool_rows(spool_dir(db), [list(_values(_row(at), "mx1"))])
    return spool_dir(db) / f"{ident}.json"


def test_a_symlink_or_a_file_of_another_user_in_the_spool_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "reports.db"
    good = _spooled(db, 1000)
    outside = tmp_path / "outside.json"
    outside.write_bytes(good.read_bytes().replace(b'"id":"', b'"id":"x'))
    link = spool_dir(db) / "0-link.json"
    link.symlink_to(outside)
    foreign = _spooled(db, 1001)
    if os.geteuid() == 0:
        os.chown(foreign, 65534, 65534)  # nobody's
    else:
        foreign.unlink()
    hard = spool_dir(db) / "1-hard.json"
    os.link(outside, hard)  # two links: not a file of the spool's own
    with caplog.at_level(logging.WARNING), ReportStore.open(f"sqlite:{db}") as store:
        assert store.ingest_spool(0) == 1
        assert [r.received_at for r in store.rows_between(0, 5000)] == [1000]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any("0-link.json refused: cannot open" in m for m in refused), refused
    assert any("1-hard.json refused: not a plain file" in m for m in refused), refused
    if os.geteuid() == 0:
        assert any(f"{foreign.name} refused: owned by uid 65534" in m for m in refused), refused
    # Refused ones are removed (the link itself, not what it names), so logged once.
    assert not link.is_symlink() and not hard.exists() and not foreign.exists()
    assert outside.exists() and not good.exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING), ReportStore.open(f"sqlite:{db}") as store:
        assert store.ingest_spool(0) == 0
    assert not [r for r in caplog.records if "refused" in r.getMessage()]


def test_a_spool_directory_others_may_write_is_not_read(tmp_path: Path) -> None:
    db = tmp_path / "reports.db"
    _spooled(db, 1000)
    spool_dir(db).chmod(0o777)
    with ReportStore.open(f"sqlite:{db}") as store, pytest.raises(PermissionError):
        store.ingest_spool(0)


def test_a_spool_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    db = tmp_path / "reports.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    spool_dir(db).symlink_to(elsewhere)
    with pytest.raises(OSError):
        spool_rows(spool_dir(db), [list(_values(_row(1000), "mx1"))])
    assert list(elsewhere.iterdir()) == []
    with ReportStore.open(f"sqlite:{db}") as store, pytest.raises(OSError):
        store.ingest_spool(0)


def test_a_half_written_file_is_not_read_and_a_stale_one_is_removed(tmp_path: Path) -> None:
    db = tmp_path / "reports.db"
    _spooled(db, 1000)
    partial = spool_dir(db) / ".123.4.abc"
    partial.write_bytes(json.dumps({"id": "123", "rows": []})[:10].encode())
    with ReportStore.open(f"sqlite:{db}") as store:
        assert store.ingest_spool(0) == 1
        assert partial.exists()  # a writer may be at it
        old = time.time() - 11 * 60  # a writer is done within ms: minutes are stale
        os.utime(partial, (old, old))
        assert store.ingest_spool(0) == 0
    assert not partial.exists()


def test_a_file_another_reader_took_in_meanwhile_is_skipped_not_refused(tmp_path: Path) -> None:
    # Several readers at once (learn processes of a user who moved many messages): a file
    # listed by one and taken in and unlinked by another is gone, not refused.
    from classifier.aggregate.spool import Spool

    db = tmp_path / "reports.db"
    first, second = _spooled(db, 1000), _spooled(db, 1001)
    spool = Spool(spool_dir(db))
    try:
        files = spool.files(len(_values(_row(1000), "mx1")))
        got = next(files)
        second.unlink()  # the other reader's unlink
        assert (got.name, got.refused) == (first.name, "")
        assert list(files) == []
    finally:
        spool.close()


@pytest.mark.parametrize("how", ["mode 0777", "another owner", "a symlink"])
def test_the_writer_refuses_a_spool_directory_the_reader_refuses(how: str, tmp_path: Path) -> None:
    # attacker review F3: another user's pre-made world-writable spool took the rows,
    # which the reader then refused as a whole (lost), and that user could read them.
    db = tmp_path / "reports.db"
    planted = spool_dir(db)
    if how == "a symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        planted.symlink_to(tmp_path / "elsewhere")
    else:
        planted.mkdir(mode=0o700)
        planted.chmod(0o777 if how == "mode 0777" else 0o700)
    if how == "another owner":
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(planted, 65534, 65534)
    with pytest.raises(OSError):
        spool_rows(planted, [list(_values(_row(1000), "mx1"))])
    assert [p for p in planted.iterdir()] == []  # nothing written there, not even a dot file


def test_a_pipe_whose_spool_is_refused_delivers_and_says_not_recorded(tmp_path: Path) -> None:
    db = tmp_path / "lib" / "reports.db"
    config = config_with_store(tmp_path, f"sqlite:{db}")
    log = tmp_path / "log"
    text = config.read_text().replace("[classifier]\n", f'[classifier]\nlog_file = "{log}"\n', 1)
    config.write_text(text)
    spool_dir(db).mkdir(parents=True, mode=0o700)
    spool_dir(db).chmod(0o777)
    message = next(m for m in MESSAGES if b"@riverside.example" in m.read_bytes()).read_bytes()
    proc = subprocess.run(
        [*_pipe_argv(config), "--deliver", "stdout"], input=message,
        capture_output=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(message)
    assert list(spool_dir(db).iterdir()) == []
    said = log.read_text()
    assert "not written" in said and "mode 0777: refused" in said, said


def test_an_empty_or_partial_record_is_refused_once_and_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing is fsynced before the rename: a power cut may leave a whole name with
    # nothing or half a record in it.  Refused, logged once and removed, not every run.
    db = tmp_path / "reports.db"
    good = _spooled(db, 1000)
    for name, data in (("1-empty.json", b""), ("2-half.json", good.read_bytes()[:30])):
        fd = os.open(spool_dir(db) / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)
    for run in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING), ReportStore.open(f"sqlite:{db}") as store:
            assert store.ingest_spool(0) == (1 if run == 0 else 0)
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == (2 if run == 0 else 0), refused
    assert list(spool_dir(db).iterdir()) == []


def test_a_take_in_is_bounded_and_the_next_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "reports.db"
    for at in range(1000, 1010):
        _spooled(db, at)
    with ReportStore.open(f"sqlite:{db}") as store:
        assert store.take_in_spool(0, limit=4) == (4, 4, True)
        assert store.take_in_spool(0, seconds=0.0) == (0, 0, True)  # no time: nothing
        assert store.take_in_spool(0, limit=4) == (4, 4, True)
        assert store.take_in_spool(0, limit=4) == (2, 2, False)
        assert sorted(r.received_at for r in store.rows_between(0, 5000)) == list(range(1000, 1010))
