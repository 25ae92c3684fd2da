"""Per-user quarantine: list, show, release (and --allow), purge, digest, the config edit."""

from __future__ import annotations

import email
import os
import shutil
import stat
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from classifier.commands.main import main
from classifier.config import load_config
from classifier.mailstore.filing import Job, carries_our_header, process_path
from classifier.mailstore.maildir import MaildirName, list_folder
from classifier.mailstore.quarantine import (
    QuarantineError,
    add_allowed_sender,
    allow_sender_in_config,
    digest,
    find,
    list_quarantine,
    purge,
    release,
)
from classifier.message import Message
from tests.conftest import ROOT, resolver_for
from tests.dnsserver import DnsTestServer

DEMO = ROOT / "examples" / "maildir"
CONFIG = ROOT / "examples" / "config.toml"
TEMPLATE = "{domain}/{local}/Maildir"
USER = "alice@family.example"
WHEN = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


@pytest.fixture
def maildir(tmp_path: Path, dns_server: Callable[..., DnsTestServer]) -> Path:
    """Gives alice's demo Maildir after the watcher filed new/: two messages in quarantine."""
    target = tmp_path / "vmail" / "family.example" / "alice" / "Maildir"
    shutil.copytree(DEMO, target)
    dns = dns_server((DEMO / "zone.txt").read_text())
    job = Job(load_config(CONFIG), resolver_for(dns))
    for path in sorted((target / "new").iterdir()):
        process_path(path, job)
    return target


def test_list_gives_date_from_subject_and_why(maildir: Path) -> None:
    entries = list_quarantine(maildir, TEMPLATE)
    assert [(e.user, e.sender_address, e.verdict) for e in entries] == [
        (USER, "no-reply@booking.travel.example", "quarantine"),
        (USER, "security@bank.example", "quarantine"),
    ]
    bank = entries[1]
    assert bank.subject == "Action required: unusual sign-in to your account"
    assert bank.date == "Tue, 11 Mar 2025 03:17:29 +0100"
    assert bank.reasons.startswith("DMARC fail under p=reject")
    assert not bank.from_authenticated and len(bank.id) == 12


def test_find_takes_an_id_a_prefix_or_the_file_name(maildir: Path) -> None:
    entries = list_quarantine(maildir, TEMPLATE)
    bank = entries[1]
    assert find(entries, bank.id) is bank
    assert find(entries, bank.id[:6]) is bank
    assert find(entries, Path(bank.path).name) is bank
    with pytest.raises(QuarantineError, match="no such message"):
        find(entries, "ffffffffffff")
    with pytest.raises(QuarantineError) as short:
        find(entries, bank.id[:3])  # too short to be taken as a prefix
    assert str(short.value).startswith(
        f"{bank.id[:3]}: too short; give at least 6 characters of the id"
    )
    with pytest.raises(QuarantineError, match="no such message"):
        find(entries, "ffffff")


def test_release_of_a_too_short_id_says_so(
    maildir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roots = str(maildir.parent.parent.parent / "*" / "*" / "Maildir")
    bank = list_quarantine(maildir, TEMPLATE)[1]
    argv = ["quarantine", "release", "--config", str(CONFIG), "--maildir", roots]
    assert main([*argv, "--user", USER, bank.id[:4]]) == 2
    err = capsys.readouterr().err
    assert f"{bank.id[:4]}: too short; give at least 6 characters of the id" in err
    assert "no such message" not in err
    assert Path(bank.path).exists()


def test_release_moves_to_inbox_with_the_released_header(maildir: Path) -> None:
    bank = list_quarantine(maildir, TEMPLATE)[1]
    before = Path(bank.path).read_bytes()
    dest = release(maildir, bank, "postmaster", WHEN)
    assert dest.parent == maildir / "new" and MaildirName.parse(dest.name).marked
    data = dest.read_bytes()
    assert (
        data == b"X-Authsieve-Released: Sat, 28 Nov 2026 09:30:00 +0000; by=postmaster\r\n" + before
    )
    assert not Path(bank.path).exists()
    assert [e.id for e in list_quarantine(maildir, TEMPLATE)] != [bank.id]
    # The watcher leaves the released copy alone: our X-Authsieve is still on top.
    assert carries_our_header(Message.parse(data), "mx.family.example")


def test_release_from_cur_keeps_the_seen_flag(maildir: Path) -> None:
    bank = list_quarantine(maildir, TEMPLATE)[1]
    read = Path(bank.path).parent.parent / "cur" / (Path(bank.path).name + ":2,S")
    os.rename(bank.path, read)
    entry = find(list_quarantine(maildir, TEMPLATE), bank.id)
    dest = release(maildir, entry, "a user with spaces", WHEN)
    assert dest.parent == maildir / "cur" and dest.name.endswith(":2,S")
    assert b'by="a user with spaces"\r\n' in dest.read_bytes().split(b"\r\n", 1)[0] + b"\r\n"


def test_release_finishes_an_interrupted_release_without_a_second_copy(maildir: Path) -> None:
    bank = list_quarantine(maildir, TEMPLATE)[1]
    first = release(maildir, bank, "postmaster", WHEN)
    # As if killed after the copy was in INBOX but before the quarantined file was removed:
    shutil.copyfile(first, bank.path)
    dest = release(maildir, bank, "postmaster", WHEN)
    assert dest == first and not Path(bank.path).exists()
    copies = [p for p in list_folder(maildir) if p.name.startswith("1741659463.")]
    assert copies == [first]


def test_purge_deletes_only_what_is_older_than_the_retention(maildir: Path) -> None:
    entries = list_quarantine(maildir, TEMPLATE)
    old = time.time() - 31 * 86400
    os.utime(entries[0].path, (old, old))
    entries = list_quarantine(maildir, TEMPLATE)
    assert [e.id for e in purge(entries, 30, time.time(), dry_run=True)] == [entries[0].id]
    assert Path(entries[0].path).exists()
    assert [e.id for e in purge(entries, 30, time.time())] == [entries[0].id]
    assert [e.id for e in list_quarantine(maildir, TEMPLATE)] == [entries[1].id]


def test_digest_is_a_plain_text_mail_for_the_user(maildir: Path) -> None:
    entries = list_quarantine(maildir, TEMPLATE)
    text = digest(USER, entries, 30, WHEN, sender="postmaster@family.example")
    mail = email.message_from_string(text)
    assert mail["To"] == USER and mail["Subject"] == "Quarantine: 2 messages held for you"
    assert mail["Auto-Submitted"] == "auto-generated"
    body = mail.get_payload()
    assert "2 messages are held in quarantine for alice@family.example." in body
    for e in entries:
        assert e.subject in body and f"Id: {e.id}" in body and e.reasons in body
    assert "authsieve quarantine release --user alice@family.example ID" in body
    assert (
        digest(USER, [], 30, WHEN)
        == "No messages for alice@family.example are held in quarantine.\n"
    )


# --- the allow list in the config ---------------------------------------------------------


def test_allow_appends_to_a_user_table_that_has_a_list() -> None:
    text = (
        '[policy]\nmode = "enforce"\n\n[users."alice@x.example"]  # Alice\n'
        'allow_senders = ["a@b.example"]  # friends\nmode = "observe"\n'
    )
    new = add_allowed_sender(text, "Alice@X.example", "c@d.example")
    assert new == text.replace('["a@b.example"]', '["a@b.example", "c@d.example"]')


def test_allow_extends_a_multi_line_list_and_keeps_its_comments() -> None:
    text = (
        "# site config\n"
        '[users."alice@x.example"]\n'
        "allow_senders = [\n"
        '    "a@b.example",  # the bank\n'
        '    "@shop.example"  # all of the shop\n'
        "]\n"
        "\n"
        '[users."bob@x.example"]\n'
        'mode = "observe"\n'
    )
    new = add_allowed_sender(text, "alice@x.example", "c@d.example")
    assert new == text.replace(
        '    "@shop.example"  # all of the shop\n',
        '    "@shop.example",  # all of the shop\n    "c@d.example",\n',
    )


def test_allow_adds_the_key_to_a_table_without_one_starting_from_the_global_list() -> None:
    text = (
        '[policy]\nallow_senders = ["@global.example"]\n\n'
        '[users."alice@x.example"]\nmode = "observe"\n'
    )
    new = add_allowed_sender(text, "alice@x.example", "c@d.example", ("@global.example",))
    users = tomllib.loads(new)["users"]["alice@x.example"]
    assert users == {"allow_senders": ["@global.example", "c@d.example"], "mode": "observe"}
    assert new.startswith(text.split("mode")[0])


def test_allow_appends_a_table_for_a_user_without_one() -> None:
    text = '[policy]\nmode = "enforce"  # keep\n'
    new = add_allowed_sender(text, "bob@x.example", "c@d.example")
    assert new == text + '\n[users."bob@x.example"]\nallow_senders = ["c@d.example"]\n'


def test_allow_of_a_sender_already_there_changes_nothing() -> None:
    text = '[users."alice@x.example"]\nallow_senders = ["C@D.example"]\n'
    assert add_allowed_sender(text, "alice@x.example", "c@d.example") == text


def test_allow_refuses_a_layout_it_cannot_edit_safely() -> None:
    text = '[users]\n"alice@x.example" = { mode = "observe" }\n'
    with pytest.raises(QuarantineError, match="by hand"):
        add_allowed_sender(text, "alice@x.example", "c@d.example")


def test_allow_writes_the_config_atomically_keeping_its_mode(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.read_text())
    config.chmod(0o640)
    assert allow_sender_in_config(config, USER, "c@d.example", ()) is True
    assert allow_sender_in_config(config, USER, "c@d.example", ()) is False
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["config.toml"]
    policy = load_config(config).policies.for_user(USER)
    assert policy.allow_senders == ("c@d.example",)
    assert "# Bob watches before he lets authsieve file his mail." in config.read_text()


# --- the command ----------------------------------------------------------------------------


def test_release_allow_command_moves_the_message_and_allows_the_sender(
    maildir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.read_text())
    base = [
        "--config",
        str(config),
        "--maildir",
        str(maildir.parent.parent.parent / "*" / "*" / "Maildir"),
    ]
    bank = list_quarantine(maildir, TEMPLATE)[1]
    code = main(
        ["quarantine", "release", *base, "--user", USER, "--allow", "--by", "root", bank.id[:8]]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"{bank.id}: released to {maildir}/new/" in out
    assert "security@bank.example: added to allow_senders of alice@family.example" in out
    assert "warning: this message did not authenticate its From domain" in out
    policy = load_config(config).policies.for_user(USER)
    assert policy.allow_senders == ("security@bank.example",)
    assert main(["quarantine", "list", *base, "--user", USER]) == 0
    assert bank.id not in capsys.readouterr().out


def test_quarantine_of_an_unknown_user_is_a_usage_error(
    maildir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roots = str(maildir.parent.parent.parent / "*" / "*" / "Maildir")
    argv = [
        "quarantine",
        "list",
        "--config",
        str(CONFIG),
        "--maildir",
        roots,
        "--user",
        "x@y.example",
    ]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(
        "authsieve: --user x@y.example: no Maildir of that user"
    )


@pytest.mark.parametrize("days", ["0", "-1"])
def test_purge_refuses_a_retention_that_is_not_positive(
    maildir: Path, days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # admin review: 0 was read as the default 30, -1 would have deleted everything
    before = sorted(p.name for p in maildir.rglob("*") if p.is_file())
    argv = ["quarantine", "purge", "--config", str(CONFIG), "--maildir", str(maildir)]
    assert main([*argv, "--retention-days", days]) == 2
    assert "must be more than 0" in capsys.readouterr().err
    assert sorted(p.name for p in maildir.rglob("*") if p.is_file()) == before


def _tomlkit_allow(text: str, user: str, entry: str, inherited: tuple[str, ...]) -> str:
    """Gives the config with the entry added by tomlkit, the style-keeping TOML library."""
    import tomlkit

    doc = tomlkit.parse(text)
    users = doc.setdefault("users", tomlkit.table(is_super_table=True))
    table = users.setdefault(user, tomlkit.table())
    if "allow_senders" not in table:
        table["allow_senders"] = list(inherited)
    table["allow_senders"].append(entry)
    return tomlkit.dumps(doc)


def _config_texts() -> list[tuple[str, str]]:
    from tests.test_readme import readme_blocks

    return [
        ("README.md config.toml", readme_blocks()["config.toml"]),
        ("examples/config.toml", (ROOT / "examples" / "config.toml").read_text()),
    ]


@pytest.mark.parametrize("name", ["README.md config.toml", "examples/config.toml"])
def test_allow_edits_the_shipped_configs_as_tomlkit_does_and_keeps_their_comments(
    name: str,
) -> None:
    # The hand-written editor stays (tomlkit is not needed at run time): here it must agree
    # with tomlkit on the configs people start from, for a user with a table and one without.
    text = dict(_config_texts())[name]
    users = [*tomllib.loads(text).get("users", {}), "new@family.example"]
    inherited = tuple(tomllib.loads(text).get("policy", {}).get("allow_senders", ()))
    for user in users:
        ours = add_allowed_sender(text, user, "c@d.example", inherited)
        theirs = _tomlkit_allow(text, user, "c@d.example", inherited)
        assert tomllib.loads(ours) == tomllib.loads(theirs), (name, user)
        kept = [line for line in text.splitlines() if line.lstrip().startswith("#")]
        assert all(line in ours.splitlines() for line in kept), (name, user)
        assert ours.startswith(text.split(f'[users."{user}"]')[0].rstrip("\n")), (name, user)
