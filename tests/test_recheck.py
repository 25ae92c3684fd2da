"""`authsieve recheck`: messages whose result was temperror are checked again and re-filed
when the verdict changed, Maildir-safely, and only when they are where authsieve put them."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from classifier.annotate import annotate
from classifier.auth.facts import parse_header_value
from classifier.commands.main import main
from classifier.config import config_from_dict
from classifier.evaluate import evaluate
from classifier.mailstore.recheck import refile
from classifier.message import Message
from tests.conftest import resolver_for
from tests.dnsserver import DnsTestServer
from tests.test_report import CONFIG, PROFILES, SERVFAIL, ZONE, delivered, make_message, snapshot

WHEN = delivered(5, 30)


def slow_message(index: int = 1) -> bytes:
    # ops@slow.example from 192.0.2.99: not in slow.example's "-all" record once it can be read.
    profile = replace(PROFILES["slow"], ip="192.0.2.99")
    return make_message(profile, "Status", WHEN, index)


def put(root: Path, folder: str, sub: str, name: str, data: bytes) -> Path:
    for s in ("tmp", "new", "cur"):
        (root / folder / s).mkdir(parents=True, exist_ok=True)
    path = root / folder / sub / name
    path.write_bytes(data)
    os.utime(path, (WHEN, WHEN))
    return path


def annotated(data: bytes, server: DnsTestServer) -> bytes:
    """Gives the message as delivery wrote it, its checks run against `server`."""
    config = config_from_dict(tomllib.loads(CONFIG))
    settings = config.engine
    result = evaluate(data, settings, resolver_for(server), config.policies)
    value = result.header_value(settings.authserv_id)
    return annotate(data, result.report, settings.authserv_id, value)


@pytest.fixture
def env(tmp_path: Path, dns_server: Callable[..., DnsTestServer]) -> dict:
    (tmp_path / "config.toml").write_text(CONFIG)
    return {
        "dir": tmp_path,
        "root": tmp_path / "Maildir",
        "broken": dns_server(ZONE, servfail=SERVFAIL),
        "fixed": dns_server(ZONE),
    }


def recheck(env: dict, server: DnsTestServer, capsys, *extra: str) -> tuple[int, list[dict]]:
    d = env["dir"]
    code = main(
        [
            "recheck",
            "--config",
            str(d / "config.toml"),
            "--dns-server",
            server.address,
            "--cache",
            str(d / "cache.sqlite3"),
            "--json",
            *extra,
            str(env["root"]),
        ]
    )
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def test_header_temperror_message_moves_to_junk_with_fresh_headers(env, capsys) -> None:
    original = annotated(slow_message(), env["broken"])
    head = parse_header_value(Message.parse(original).get("X-Authsieve") or "")
    assert (head["spf"], head["verdict"]) == ("temperror", "inbox")
    src = put(env["root"], "", "cur", f"{WHEN}.M1P1.mx,S=1:2,S", original)
    good = put(
        env["root"],
        "",
        "cur",
        f"{WHEN}.M2P1.mx:2,S",
        annotated(make_message(PROFILES["good"], "Hi", WHEN, 2), env["fixed"]),
    )
    good_before = (good.read_bytes(), good.stat().st_mtime_ns)

    code, (row,) = recheck(env, env["fixed"], capsys)

    assert code == 0
    assert (row["was"], row["now"], row["outcome"]) == ("inbox", "junk", "moved")
    assert "spf=temperror" in row["before"] and "spf=fail" in row["after"]
    assert not src.exists()
    moved = Path(row["new_path"])
    assert moved.parent == env["root"] / ".Junk" / "cur" and moved.name.endswith(":2,S")
    assert moved.stat().st_mtime_ns == WHEN * 10**9  # Dovecot's received date is kept
    msg = Message.parse(moved.read_bytes())
    assert len(msg.get_all("X-Authsieve")) == 1
    head = parse_header_value(msg.get("X-Authsieve") or "")
    assert (head["spf"], head["verdict"]) == ("fail", "junk")
    assert moved.read_bytes().endswith(slow_message())  # only our headers changed
    assert (good.read_bytes(), good.stat().st_mtime_ns) == good_before
    assert list((env["root"] / ".Junk" / "tmp").iterdir()) == []


def test_second_recheck_finds_nothing_and_asks_no_dns(env, capsys) -> None:
    put(env["root"], "", "new", f"{WHEN}.M1P1.mx", annotated(slow_message(), env["broken"]))
    recheck(env, env["fixed"], capsys)
    before, sent = snapshot(env["root"]), env["fixed"].query_count
    code, rows = recheck(env, env["fixed"], capsys)
    assert (code, rows) == (0, [])
    assert snapshot(env["root"]) == before and env["fixed"].query_count == sent


def test_cached_temperror_without_header_moves_the_bytes_unchanged(env, capsys) -> None:
    data = slow_message()
    src = put(env["root"], "", "new", f"{WHEN}.M1P1.mx", data)
    d = env["dir"]
    assert (
        main(
            [
                "report",
                "--config",
                str(d / "config.toml"),
                "--dns-server",
                env["broken"].address,
                "--cache",
                str(d / "cache.sqlite3"),
                "--json",
                str(env["root"]),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["results"]["spf"]["temperror"] == 1

    code, (row,) = recheck(env, env["fixed"], capsys)

    assert (code, row["was"], row["now"], row["outcome"]) == (0, "inbox", "junk", "moved")
    moved = Path(row["new_path"])
    assert moved.parent == env["root"] / ".Junk" / "new"
    assert moved.read_bytes() == data and not src.exists()


def test_still_failing_dns_leaves_the_message_in_place(env, capsys) -> None:
    put(env["root"], "", "new", f"{WHEN}.M1P1.mx", annotated(slow_message(), env["broken"]))
    before = snapshot(env["root"])
    code, (row,) = recheck(env, env["broken"], capsys)
    assert (code, row["outcome"], row["now"]) == (0, "still temperror", "inbox")
    assert snapshot(env["root"]) == before


def test_message_the_user_moved_is_left_where_it_is(env, capsys) -> None:
    # Filed to INBOX by its header, but the user has since put it in Junk.
    put(env["root"], "", "new", ".keep", b"")
    put(
        env["root"], ".Junk", "cur", f"{WHEN}.M1P1.mx:2,S", annotated(slow_message(), env["broken"])
    )
    before = snapshot(env["root"])
    _, (row,) = recheck(env, env["fixed"], capsys)
    assert (row["was"], row["now"], row["outcome"]) == (
        "inbox",
        "junk",
        "left where the user put it",
    )
    assert snapshot(env["root"]) == before


def test_dry_run_moves_nothing(env, capsys) -> None:
    put(env["root"], "", "new", f"{WHEN}.M1P1.mx", annotated(slow_message(), env["broken"]))
    before = snapshot(env["root"])
    _, (row,) = recheck(env, env["fixed"], capsys, "--dry-run")
    assert row["outcome"] == "would move" and row["new_path"] == ""
    assert snapshot(env["root"]) == before


def test_text_output_names_the_move_and_the_totals(env, capsys) -> None:
    put(env["root"], "", "new", f"{WHEN}.M1P1.mx", annotated(slow_message(), env["broken"]))
    d = env["dir"]
    code = main(
        [
            "recheck",
            "--config",
            str(d / "config.toml"),
            "--dns-server",
            env["fixed"].address,
            "--no-cache",
            str(env["root"]),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "inbox → junk: moved" in out
    assert out.endswith("1 of 1 messages had a temperror result; 1 moved\n")


def test_refile_keeps_mode_and_unlinks_only_after_the_copy_is_in_place(tmp_path: Path) -> None:
    src = put(tmp_path, "", "cur", "1.M1P1.mx:2,RS", b"old bytes")
    os.chmod(src, 0o640)
    final = refile(src, tmp_path, ".Quarantine", b"new bytes")
    assert final.parent == tmp_path / ".Quarantine" / "cur" and final.name.endswith(":2,RS")
    assert final.read_bytes() == b"new bytes" and final.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / ".Quarantine" / "maildirfolder").is_file() and not src.exists()


def test_failed_move_keeps_the_original_and_exits_1(env, capsys) -> None:
    src = put(env["root"], "", "new", f"{WHEN}.M1P1.mx", annotated(slow_message(), env["broken"]))
    (env["root"] / ".Junk").write_bytes(b"not a folder")  # the move cannot create .Junk/
    before = src.read_bytes()
    code, (row,) = recheck(env, env["fixed"], capsys)
    assert code == 1 and row["outcome"].startswith("not moved: ")
    assert src.read_bytes() == before and list((env["root"] / "tmp").iterdir()) == []
