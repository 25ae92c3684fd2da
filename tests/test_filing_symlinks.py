"""The watcher, run as root, against a Maildir owner who plants symlinks (issue 19, item 1).

The Maildir belongs to nobody; root files its mail, as `authsieve watch`
does when started as root.  Every link the owner can plant must fail the
operation, never send root's mkdir, write, chown or read where it points.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from classifier.config import load_config
from classifier.mailstore.filing import Job, process_path
from tests.conftest import ROOT, resolver_for
from tests.dnsserver import DnsTestServer
from tests.helpers import NOBODY, as_nobody

DEMO = ROOT / "examples" / "maildir"
CONFIG = ROOT / "examples" / "config.toml"
SECRET = b"root's secret: hunter2\n"


@pytest.fixture
def job(dns_server: Callable[..., DnsTestServer]) -> Job:
    dns = dns_server((DEMO / "zone.txt").read_text())
    return Job(load_config(CONFIG), resolver_for(dns))


@pytest.fixture
def maildir(open_tmp: Path) -> Path:
    """Gives alice's demo Maildir, owned by nobody, mail waiting in new/."""
    target = open_tmp / "vmail" / "family.example" / "alice" / "Maildir"
    shutil.copytree(DEMO, target)
    for path in [target.parent.parent, target.parent, *target.parent.rglob("*")]:
        os.chown(path, *NOBODY, follow_symlinks=False)
    return target


@pytest.fixture
def root_only(open_tmp: Path) -> Path:
    """Gives a directory only root may enter, holding root's secret file."""
    path = open_tmp / "root-only"
    path.mkdir(mode=0o700)
    (path / "secret").write_bytes(SECRET)
    (path / "secret").chmod(0o600)
    return path


def file_all(maildir: Path, job: Job) -> dict[str, str]:
    return {p.name: process_path(p, job).status for p in sorted((maildir / "new").iterdir())}


def every_file(top: Path) -> list[Path]:
    return [p for p in top.rglob("*") if p.is_file() and not p.is_symlink()]


def test_quarantine_folder_linked_to_a_root_directory_gets_nothing(
    maildir: Path, root_only: Path, job: Job
) -> None:
    as_nobody(lambda: os.symlink(root_only, maildir / ".Quarantine"))
    file_all(maildir, job)
    assert sorted(p.name for p in root_only.iterdir()) == ["secret"]
    assert os.stat(root_only).st_uid == 0
    # The two messages that belong in quarantine stay where they were, for a later try.
    waiting = [p for p in (maildir / "new").iterdir() if ",authsieve," not in p.name]
    assert len(waiting) == 2


def test_quarantine_new_linked_to_a_root_directory_gets_nothing(
    maildir: Path, root_only: Path, job: Job
) -> None:
    def plant() -> None:
        folder = maildir / ".Quarantine"
        for sub in ("", "tmp", "cur"):
            (folder / sub).mkdir()
        (folder / "maildirfolder").touch()
        os.symlink(root_only, folder / "new")

    as_nobody(plant)
    file_all(maildir, job)
    assert sorted(p.name for p in root_only.iterdir()) == ["secret"]


def test_link_in_new_to_a_root_only_file_is_never_copied(
    maildir: Path, root_only: Path, job: Job
) -> None:
    name = "1741659999.M1P1.mx.family.example"
    as_nobody(lambda: os.symlink(root_only / "secret", maildir / "new" / name))
    statuses = file_all(maildir, job)
    assert statuses[name] == "left-alone"
    assert not any(SECRET in p.read_bytes() for p in every_file(maildir.parent))
    assert (maildir / "new" / name).is_symlink()


def test_subscriptions_linked_to_a_root_file_is_not_read_into_the_maildir(
    maildir: Path, root_only: Path, job: Job
) -> None:
    (root_only / "secret").write_bytes(b"V\t2\n\n" + SECRET)
    as_nobody(lambda: os.symlink(root_only / "secret", maildir / "subscriptions"))
    file_all(maildir, job)
    assert not any(SECRET in p.read_bytes() for p in every_file(maildir.parent))
    assert (root_only / "secret").read_bytes() == b"V\t2\n\n" + SECRET


def test_file_not_owned_by_the_maildir_owner_is_left_alone(maildir: Path, job: Job) -> None:
    name = "1741659999.M2P2.mx.family.example"
    planted = maildir / "new" / name
    shutil.copy(next(iter(sorted((maildir / "new").iterdir()))), planted)
    planted.chmod(0o600)  # root's, readable by root only: its copy would be nobody's
    assert file_all(maildir, job)[name] == "left-alone"
    assert planted.exists()


def test_copies_and_folders_belong_to_the_maildir_owner(maildir: Path, job: Job) -> None:
    statuses = file_all(maildir, job)
    assert set(statuses.values()) == {"filed"}
    made = [maildir / ".Quarantine", maildir / ".Quarantine" / "new", *every_file(maildir)]
    assert {(os.stat(p).st_uid, os.stat(p).st_gid) for p in made} == {NOBODY}
