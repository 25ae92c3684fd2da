"""Maildir names, folders, subscriptions, the crash-safe commit, and repair after a kill."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from classifier.mailstore.folders import ensure_folder, read_subscriptions, subscribe
from classifier.mailstore.maildir import (
    MaildirName,
    commit,
    expand_roots,
    identity,
    list_folder,
    processed_name,
    recover,
    user_from_path,
    virtual_size,
)
from tests.helpers import make_maildir

MSG = (
    b"Received: from a by b; Tue, 11 Mar 2025 03:17:43 +0100\r\n"
    b"From: Ann <ann@example.org>\r\nMessage-ID: <m1@example.org>\r\nSubject: hi\r\n"
    b"\r\nbody line\r\n"
)
TEMPLATE = "{domain}/{local}/Maildir"
ORIGINAL = "1741659463.M783163P47153.mx,S=1392,W=1420"


def annotated(data: bytes = MSG) -> bytes:
    return b"X-Authsieve: v=1; id=mx.example; verdict=inbox\r\n" + data


def deliver(maildir: Path, name: str = ORIGINAL, data: bytes = MSG, sub: str = "new") -> Path:
    path = maildir / sub / name
    path.write_bytes(data)
    return path


def files(maildir: Path) -> list[str]:
    """Gives every file under the Maildir except the folder markers, relative and sorted."""
    return sorted(
        str(p.relative_to(maildir))
        for p in maildir.rglob("*")
        if p.is_file() and p.name not in ("maildirfolder", "subscriptions")
    )


# --- names ------------------------------------------------------------------------------------


def test_processed_name_drops_old_sizes_and_carries_the_mark_and_new_sizes() -> None:
    data = b"a\nb\r\n"
    name = processed_name(ORIGINAL, data)
    assert name == "1741659463.M783163P47153.mx,authsieve,S=5,W=6"
    parsed = MaildirName.parse(name)
    assert parsed.marked and parsed.core == MaildirName.parse(ORIGINAL).core


def test_processed_name_keeps_info_flags() -> None:
    assert processed_name(ORIGINAL + ":2,RS", b"x", "2,RS").endswith(",S=1,W=1:2,RS")


def test_original_name_is_not_marked_even_with_authsieve_in_host() -> None:
    assert not MaildirName.parse("1.M2P3.authsieve.example,S=4").marked
    assert MaildirName.parse("1.M2P3.host,authsieve,S=4:2,S").marked


def test_virtual_size_counts_bare_lf_as_crlf() -> None:
    assert virtual_size(b"a\nb\r\nc") == 7


@pytest.mark.parametrize(
    ("path", "template", "user"),
    [
        (
            "/var/vmail/family.example/alice/Maildir",
            "{domain}/{local}/Maildir",
            "alice@family.example",
        ),
        (
            "/var/vmail/Family.Example/Bob/Maildir/",
            "{domain}/{local}/Maildir",
            "bob@family.example",
        ),
        ("/var/vmail/ann@example.org", "{user}", "ann@example.org"),
        ("/home/ann/Maildir", "{domain}/{local}/Mail", None),
        ("/srv/mail/example.org/ann", "mail/{domain}/{local}", "ann@example.org"),
    ],
)
def test_user_from_path_follows_the_template(path: str, template: str, user: str | None) -> None:
    assert user_from_path(Path(path), template) == user


def test_expand_roots_globs_only_maildirs(tmp_path: Path) -> None:
    a = make_maildir(tmp_path / "example.org" / "ann" / "Maildir")
    b = make_maildir(tmp_path / "example.org" / "bob" / "Maildir")
    (tmp_path / "example.org" / "carl" / "Maildir").mkdir(parents=True)  # no new/: not yet
    assert expand_roots([str(tmp_path / "*" / "*" / "Maildir")]) == [a, b]


# --- folders and subscriptions ----------------------------------------------------------------


def test_ensure_folder_creates_maildirpp_folder_and_subscribes_v2(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    junk = ensure_folder(maildir, ".Junk")
    assert junk == maildir / ".Junk"
    assert all((junk / sub).is_dir() for sub in ("tmp", "new", "cur"))
    assert (junk / "maildirfolder").is_file()
    assert (maildir / "subscriptions").read_text() == "V\t2\n\nJunk\n"
    ensure_folder(maildir, ".Quarantine")
    assert read_subscriptions(maildir) == (2, ["Junk", "Quarantine"])
    assert not (maildir / "subscriptions.lock").exists()


def test_subscribe_keeps_a_version_1_file_and_never_adds_twice(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    (maildir / "subscriptions").write_text("Sent\nDrafts\n")
    assert subscribe(maildir, "Quarantine") is True
    assert subscribe(maildir, "Quarantine") is False
    assert (maildir / "subscriptions").read_text() == "Sent\nDrafts\nQuarantine\n"


def test_subscribe_breaks_a_stale_lock_but_waits_for_a_fresh_one(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    lock = maildir / "subscriptions.lock"
    lock.write_text("")
    with pytest.raises(OSError, match="lock"):
        subscribe(maildir, "Junk", timeout=0.2)
    old = time.time() - 120
    os.utime(lock, (old, old))
    assert subscribe(maildir, "Junk") is True


# --- commit -----------------------------------------------------------------------------------


def test_commit_rewrites_in_place_under_a_new_name(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir)
    final = commit(original, annotated(), maildir)
    assert final.parent == maildir / "new"
    assert final.name == processed_name(ORIGINAL, annotated())
    assert final.read_bytes() == annotated()
    assert files(maildir) == [f"new/{final.name}"]


def test_commit_from_cur_keeps_the_flags_in_cur(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir, ORIGINAL + ":2,RS", sub="cur")
    final = commit(original, annotated(), maildir)
    assert final.parent.name == "cur" and final.name.endswith(":2,RS")
    assert files(maildir) == [f"cur/{final.name}"]


def test_commit_moves_into_another_folder(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir)
    final = commit(original, annotated(), ensure_folder(maildir, ".Quarantine"))
    assert files(maildir) == [f".Quarantine/new/{final.name}"]


def test_commit_that_cannot_write_leaves_the_original_untouched(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir)
    broken = tmp_path / "Broken"  # a folder without tmp/: the first write fails
    broken.mkdir()
    with pytest.raises(OSError):
        commit(original, annotated(), broken)
    assert original.read_bytes() == MSG
    assert files(maildir) == [f"new/{ORIGINAL}"]


def test_commit_removes_the_original_that_dovecot_moved_to_cur_meanwhile(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir)
    os.rename(original, maildir / "cur" / (ORIGINAL + ":2,"))  # a client looked at INBOX
    final = commit(original, annotated(), maildir)
    assert files(maildir) == [f"cur/{final.name}:2,"]  # where the client saw it


def test_commit_removes_the_cur_original_whose_flags_a_client_changed_meanwhile(
    tmp_path: Path,
) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir, ORIGINAL + ":2,", sub="cur")
    os.rename(original, maildir / "cur" / (ORIGINAL + ":2,S"))  # the client read it
    final = commit(original, annotated(), maildir)
    assert final.name.endswith(":2,")
    assert files(maildir) == [f"cur/{final.name}S"]  # one copy, with the flag set last


def test_commit_after_a_kill_between_link_and_unlink_files_once(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir)
    (maildir / "new" / processed_name(ORIGINAL, annotated())).write_bytes(annotated())
    final = commit(original, annotated(), maildir)
    assert files(maildir) == [f"new/{final.name}"]


def test_commit_never_overwrites_a_different_message_holding_the_name(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir)
    other = annotated(MSG.replace(b"body line", b"another body"))
    squatter = maildir / "new" / processed_name(ORIGINAL, annotated())
    squatter.write_bytes(other)
    final = commit(original, annotated(), maildir)
    assert final != squatter and final.read_bytes() == annotated()
    assert squatter.read_bytes() == other
    assert not original.exists()


def test_identity_ignores_added_headers_and_line_ends() -> None:
    assert identity(annotated()) == identity(MSG.replace(b"\r\n", b"\n"))
    assert identity(MSG) != identity(MSG.replace(b"body line", b"other"))


def test_list_folder_gives_new_then_cur_and_skips_dotfiles(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    deliver(maildir, "2.b")
    deliver(maildir, "1.a:2,S", sub="cur")
    deliver(maildir, ".keep")
    assert [p.name for p in list_folder(maildir)] == ["2.b", "1.a:2,S"]


# --- repair after a kill: every state a SIGKILL can leave -------------------------------------


def test_recover_removes_a_half_written_copy_in_tmp(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir)
    stale = maildir / "tmp" / processed_name(ORIGINAL, annotated())
    stale.write_bytes(annotated()[:10])
    foreign = deliver(maildir, "99.M1P1.mda", sub="tmp")  # another program's work in progress
    result = recover(maildir)
    assert result.stale_tmp == (str(stale),)
    assert original.exists() and foreign.exists() and not stale.exists()


def test_recover_removes_the_original_when_its_copy_is_in_place(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir)
    name = processed_name(ORIGINAL, annotated())
    (maildir / "tmp" / name).write_bytes(annotated())  # killed after link, before tmp unlink
    os.link(maildir / "tmp" / name, maildir / "new" / name)
    result = recover(maildir)
    assert result.orphans_removed == (str(original),)
    assert files(maildir) == [f"new/{name}"]


@pytest.mark.parametrize(
    "where", ["new/{n}", "cur/{n}:2,S", ".Junk/new/{n}", ".Quarantine/cur/{n}:2,"]
)
def test_recover_finds_the_copy_wherever_it_went(tmp_path: Path, where: str) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    ensure_folder(maildir, ".Junk")
    ensure_folder(maildir, ".Quarantine")
    original = deliver(maildir)
    copy = maildir / where.format(n=processed_name(ORIGINAL, annotated()))
    copy.write_bytes(annotated())
    assert recover(maildir).orphans_removed == (str(original),)
    assert files(maildir) == [str(copy.relative_to(maildir))]


def test_recover_keeps_an_original_whose_namesake_is_another_message(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    original = deliver(maildir)
    other = annotated(MSG.replace(b"<m1@", b"<m2@"))
    (maildir / "new" / processed_name(ORIGINAL, other)).write_bytes(other)
    result = recover(maildir)
    assert result.orphans_kept == (str(original),) and original.exists()


def test_recover_of_a_clean_maildir_changes_nothing(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Maildir")
    deliver(maildir)
    before = files(maildir)
    assert recover(maildir).to_dict() == {
        "stale_tmp": [],
        "orphans_removed": [],
        "orphans_kept": [],
    }
    assert files(maildir) == before
