"""`authsieve report`: exact numbers on a generated Maildir in every format, a cache that asks
no DNS for a second policy, and a Maildir left byte-for-byte as it was.

The Maildir is generated here with known content: each message comes from a sender
profile whose SPF, DKIM and DMARC results are written down by hand (`PROFILES`), so every
expected number below is counted from those hand-written results, not from the code.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import dkim
import nacl.encoding
import nacl.signing
import pytest

from classifier.auth.checks import run_checks
from classifier.commands.main import main
from classifier.config import load_config
from classifier.evaluate import evaluate
from classifier.lookup.resolver import make_resolver
from classifier.message import Message
from classifier.policy.verdict import decide
from classifier.report.build import ScannedMessage, place_of, verdict_for
from classifier.report.cache import (
    CheckRecord,
    ReportCache,
    default_cache_path,
    display_text,
    record_from,
)
from tests.dnsserver import DnsTestServer

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "maildir"


def _key(name: str) -> tuple[str, str]:
    # Fixed seeds: the same keys (and zone) on every run.
    signing = nacl.signing.SigningKey(name.encode().ljust(32, b"\0")[:32])
    seed = signing.encode(encoder=nacl.encoding.Base64Encoder)
    pub = signing.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode()
    return seed.decode(), f"v=DKIM1; k=ed25519; p={pub}"


KEYS = {d: _key(d) for d in ("good.example", "winner.cyou", "lists.example")}

ZONE = "\n".join(
    [
        'good.example. TXT "v=spf1 ip4:192.0.2.10 -all"',
        '_dmarc.good.example. TXT "v=DMARC1; p=reject"',
        'bank.example. TXT "v=spf1 ip4:192.0.2.20 -all"',
        '_dmarc.bank.example. TXT "v=DMARC1; p=reject"',
        "plain.example. A 192.0.2.30",
        'club.example. TXT "v=spf1 ip4:192.0.2.40 ~all"',
        '_dmarc.club.example. TXT "v=DMARC1; p=none"',
        'winner.cyou. TXT "v=spf1 ip4:192.0.2.50 -all"',
        '_dmarc.winner.cyou. TXT "v=DMARC1; p=none"',
        'photo.example. TXT "v=spf1 ip4:192.0.2.60 -all"',
        '_dmarc.photo.example. TXT "v=DMARC1; p=reject"',
        'lists.example. TXT "v=spf1 ip4:192.0.2.70 -all"',
        'slow.example. TXT "v=spf1 ip4:192.0.2.80 -all"',
        *(f's1._domainkey.{d}. TXT "{k[1]}"' for d, k in KEYS.items()),
    ]
)
SERVFAIL = ("slow.example",)  # its SPF record cannot be fetched: SPF temperror

CONFIG = """
[classifier]
authserv_id = "mx.family.example"
trusted_networks = ["203.0.113.25/32"]

[policy]
spf_fail = "junk"
dmarc_reject = "quarantine"
dmarc_quarantine = "junk"
blocked_domain_suffixes = [".cyou"]
"""
STRICT = CONFIG.replace(
    'spf_fail = "junk"', 'spf_fail = "junk"\nspf_none = "junk"\nspf_softfail = "junk"'
)


@dataclass(frozen=True)
class Profile:
    """A sender, how it reaches us, and the results it must get (spf, dkim, dmarc)."""

    sender: str
    mail_from: str
    ip: str
    rdns: str
    sign: str  # the DKIM d= that signs, "" for unsigned
    expect: tuple[str, str, str]
    list_id: str = ""
    behind: str = ""  # a Received hop written by the forwarding list server


PROFILES = {
    "good": Profile("News <news@good.example>", "bounce@good.example", "192.0.2.10",
                    "mail.good.example", "good.example", ("pass", "pass", "pass")),
    "spoof": Profile('"Bank Security" <security@bank.example>', "security@bank.example",
                     "198.51.100.66", "unknown", "", ("fail", "none", "fail")),
    "plain": Profile("Grandpa <grandpa@plain.example>", "grandpa@plain.example", "192.0.2.30",
                     "mail.plain.example", "", ("none", "none", "none")),
    "club": Profile("Chess Club <sec@club.example>", "sec@club.example", "198.51.100.41",
                    "new.clubhost.example", "", ("softfail", "none", "fail")),
    "cyou": Profile("Lucky <promo@winner.cyou>", "promo@winner.cyou", "192.0.2.50",
                    "mail.winner.cyou", "winner.cyou", ("pass", "pass", "pass")),
    "list": Profile("Dave <dave@photo.example>", "dave@photo.example", "192.0.2.70",
                    "mx.lists.example", "lists.example", ("fail", "pass", "fail"),
                    list_id="Photo Club <club.lists.example>",
                    behind="from mail.photo.example (mail.photo.example [192.0.2.60])\r\n"
                    "\tby mx.lists.example (Postfix) with ESMTPS id 4Zq1\r\n"
                    "\tfor <club@lists.example>; Mon, 03 Mar 2025 09:59:00 +0000"),
    "slow": Profile("Ops <ops@slow.example>", "ops@slow.example", "192.0.2.80",
                    "mail.slow.example", "", ("temperror", "none", "none")),
}  # fmt: skip

# (profile, folder, sub, day of March 2025, subject)
SPECS = [
    ("good", "", "cur", 1, "Weekly news 1"),
    ("good", "", "cur", 2, "Weekly news 2"),
    ("good", "", "cur", 3, "Weekly news 3"),
    ("good", "", "new", 4, "Weekly news 4"),
    ("good", "", "new", 5, "Weekly news 5"),
    ("spoof", "", "new", 3, "Action required"),
    ("spoof", ".Junk", "cur", 2, "Action required again"),
    ("plain", "", "cur", 1, "Tom & Jerry <b>Garden</b>"),
    ("plain", "", "cur", 4, "Photos"),
    ("plain", "", "cur", 6, "Birthday"),
    ("club", "", "cur", 2, "Tournament"),
    ("club", "", "cur", 5, "Results"),
    ("cyou", ".Junk", "cur", 6, "You won"),
    ("list", "", "cur", 3, "[Photo Club] Meeting"),
    ("list", "", "new", 6, "[Photo Club] Exhibition"),
    ("slow", "", "new", 5, "Status"),
]


def delivered(day: int, index: int) -> int:
    return int(datetime(2025, 3, day, 10, index, tzinfo=UTC).timestamp())


# The headers authsieve leaves on a message it filed (or a person released), by delivery.
DELIVERY_HEADERS = {
    "enforce": "X-Authsieve: v=1; id=mx.family.example; verdict=inbox; mode=enforce\r\n",
    "observe": "X-Authsieve: v=1; id=mx.family.example; verdict=inbox; mode=observe\r\n",
    "released": "X-Authsieve-Released: Sat, 08 Mar 2025 09:00:00 +0000; by=alice\r\n"
    "X-Authsieve: v=1; id=mx.family.example; verdict=quarantine; mode=enforce\r\n",
    "foreign": "X-Authsieve: v=1; id=mx.other.example; verdict=inbox; mode=enforce\r\n",
    "": "",
}


def make_message(
    profile: Profile, subject: str, when: int, index: int, delivery: str = ""
) -> bytes:
    """Gives a delivered message: signed by its sender, Received by our Postfix, filed."""
    date = datetime.fromtimestamp(when, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    body = (
        f"From: {profile.sender}\r\nTo: alice@family.example\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\nMessage-ID: <{index}.{when}@{profile.mail_from.split('@')[1]}>\r\n"
        + (f"List-Id: {profile.list_id}\r\n" if profile.list_id else "")
        + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + f"Message {index}.\r\n"
    ).encode()
    if profile.sign:
        seed = KEYS[profile.sign][0].encode()
        body = (
            dkim.sign(
                body, b"s1", profile.sign.encode(), seed, signature_algorithm=b"ed25519-sha256"
            )
            + body
        )
    helo = profile.rdns if profile.rdns != "unknown" else "mail." + profile.mail_from.split("@")[1]
    ours = (
        f"Received: from {helo} ({profile.rdns} [{profile.ip}])\r\n"
        f"\tby mx.family.example (Postfix) with ESMTPS id 4Z{index:04d}\r\n"
        f"\tfor <alice@family.example>; {date}\r\n"
    )
    behind = f"Received: {profile.behind}\r\n" if profile.behind else ""
    top = f"Return-Path: <{profile.mail_from}>\r\nDelivered-To: alice@family.example\r\n"
    filed = DELIVERY_HEADERS[delivery]
    return filed.encode() + top.encode() + ours.encode() + behind.encode() + body


def build_maildir(root: Path, specs: list[tuple[str, str, str, int, str]] = SPECS) -> Path:
    """Writes the Maildir of `specs` (mtime = delivery time) and gives its root."""
    for folder in ("", ".Junk"):
        for sub in ("tmp", "new", "cur"):
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
    for index, (kind, folder, sub, day, subject) in enumerate(specs):
        when = delivered(day, index)
        # Filed by authsieve in enforce mode: where each sits is where a person kept it.
        data = make_message(PROFILES[kind], subject, when, index, "enforce")
        name = f"{when}.M{index}P1.mx,S={len(data)},W={len(data)}" + (
            ":2,S" if sub == "cur" else ""
        )
        path = root / folder / sub / name
        path.write_bytes(data)
        os.utime(path, (when, when))
    return root


def expected() -> dict[tuple[str, ...], object]:
    """Gives every number the report must show, counted from the hand-written PROFILES."""
    exp: dict[tuple[str, ...], object] = {}
    results = [PROFILES[s[0]].expect for s in SPECS]
    for i, check in enumerate(("spf", "dkim", "dmarc")):
        seen = Counter(r[i] for r in results)
        for word in ("pass", "fail", "none", "temperror"):
            exp[("results", check, word)] = seen[word]
    exp[("results", "spf", "softfail")] = 2
    exp[("results", "arc", "none")] = 16
    exp[("results", "spf", "none_rate")] = "18.8"  # 3 of 16
    exp |= {("now", "inbox"): 14, ("now", "junk"): 2, ("now", "quarantine"): 0}
    tables = {
        # configured: spoof and list mail → quarantine (DMARC p=reject), .cyou → junk.
        ("policy", "config"): {"inbox": 11, "junk": 1, "quarantine": 4, "moves": 4},
        # strict also junks SPF none (plain ×3) and softfail (club ×2).
        ("policy", "strict"): {"inbox": 6, "junk": 6, "quarantine": 4, "moves": 9},
        ("suffix", ".example"): {"messages": 15, "failing": 6, "dmarc_pass": 5, "filed_now": 1},
        ("suffix", ".cyou"): {"messages": 1, "failing": 0, "dmarc_pass": 1, "filed_now": 1},
        ("forwarded", "mx.lists.example"): {"messages": 2, "dkim_pass": 2, "arc_pass": 0},
    }
    tables[("policy", "config")]["likely_false_positives"] = 3
    tables[("policy", "strict")]["likely_false_positives"] = 8
    tables[("suffix", ".example")] |= {"filed.config": 4, "filed.strict": 9}
    tables[("suffix", ".cyou")] |= {"filed.config": 1, "filed.strict": 1}
    for domain in ("bank.example", "club.example", "photo.example"):
        tables[("domain", domain)] = dict.fromkeys(
            ("messages", "failing", "spf_fail", "dmarc_fail"), 2
        ) | {"dkim_fail": 0}
    for prefix, values in tables.items():
        exp |= {(*prefix, k): v for k, v in values.items()}
    days = Counter((s[3], PROFILES[s[0]].expect[2]) for s in SPECS)
    for day in range(1, 7):
        for word in ("pass", "fail", "none"):
            exp[("timeline", f"2025-03-0{day}", word)] = days[(day, word)]
    return exp


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int] | None]:
    """Gives every file's bytes, mtime (ns) and mode, and every directory, under root."""
    out: dict[str, tuple[bytes, int, int] | None] = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        out[str(path.relative_to(root))] = (
            (path.read_bytes(), st.st_mtime_ns, st.st_mode) if path.is_file() else None
        )
    return out


@pytest.fixture
def setup(tmp_path: Path, dns_server: Callable[..., DnsTestServer]) -> dict[str, object]:
    maildir = build_maildir(tmp_path / "Maildir")
    (tmp_path / "config.toml").write_text(CONFIG)
    (tmp_path / "strict.toml").write_text(STRICT)
    server = dns_server(ZONE, servfail=SERVFAIL)
    return {"maildir": maildir, "dir": tmp_path, "server": server}


def run_report(
    setup: dict[str, object], capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    d: Path = setup["dir"]  # type: ignore[assignment]
    server: DnsTestServer = setup["server"]  # type: ignore[assignment]
    config, cache = str(d / "config.toml"), str(d / "cache.sqlite3")
    args = ["--config", config, "--dns-server", server.address, "--cache", cache]
    code = main(["report", *args, *extra, str(setup["maildir"])])
    out, err = capsys.readouterr()
    return code, out, err


def both(setup: dict[str, object]) -> tuple[str, ...]:
    d: Path = setup["dir"]  # type: ignore[assignment]
    return ("--policy", str(d / "config.toml"), "--policy", str(d / "strict.toml"))


def flat_from_json(doc: dict) -> dict[tuple[str, ...], object]:
    out: dict[tuple[str, ...], object] = {}
    for check, counts in doc["results"].items():
        out |= {("results", check, w): n for w, n in counts.items()}
    out[("results", "spf", "none_rate")] = f"{doc['spf_none_rate']:.1f}"
    out |= {("now", p): n for p, n in doc["now"].items()}
    for p in doc["policies"]:
        out |= {("policy", p["name"], k): n for k, n in p["counts"].items()}
        out[("policy", p["name"], "moves")] = p["moves_total"]
        out[("policy", p["name"], "likely_false_positives")] = p["likely_false_positives"]
    for d in doc["domains"]:
        out |= {("domain", d["domain"], k): v for k, v in d.items() if k != "domain"}
    for s in doc["suffixes"]:
        out |= {("suffix", s["suffix"], k): v for k, v in s.items() if k not in ("suffix", "filed")}
        out |= {("suffix", s["suffix"], f"filed.{n}"): v for n, v in s["filed"].items()}
    for f in doc["forwarded"]:
        out |= {("forwarded", f["via"], k): v for k, v in f.items() if k != "via"}
    for t in doc["timeline"]:
        out |= {("timeline", t["label"], k): v for k, v in t["counts"].items()}
    return out


def flat_from_csv(text: str) -> dict[tuple[str, ...], object]:
    out: dict[tuple[str, ...], object] = {}
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and list(rows[0]) == ["section", "policy", "item", "key", "value"]
    for r in rows:
        value: object = int(r["value"]) if r["value"].isdigit() else r["value"]
        sec, pol, item, key = r["section"], r["policy"], r["item"], r["key"]
        if sec == "results":
            out[("results", item, "none_rate" if key == "none_rate_percent" else key)] = value
        elif sec == "now":
            out[("now", key)] = value
        elif sec == "policy":
            out[("policy", pol, key)] = value
        elif sec == "suffix":
            out[("suffix", item, f"filed.{pol}" if pol else key)] = value
        elif sec in ("domain", "forwarded", "timeline"):
            out[(sec, item, key)] = value
    return out


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def row_numbers(prefix: tuple[str, ...], keys: list[str], values: list[str]) -> dict:
    return {(*prefix, k): int(v) for k, v in zip(keys, values, strict=False) if v != "-"}


def flat_from_table(text: str) -> dict[tuple[str, ...], object]:
    """Reads the numbers back from the terminal table, section by section."""
    out: dict[tuple[str, ...], object] = {}
    sections = text.split("\n\n")

    def table(title: str) -> tuple[list[str], list[list[str]]]:
        block = next(s for s in sections if s.startswith(title)).splitlines()
        rows = [cells(x) for x in block[2:] if not x.startswith(("SPF none", "Where"))]
        return cells(block[1]), rows

    head, rows = table("Results")
    for row in rows:
        out |= row_numbers(("results", row[0].lower()), head, row[1:])
    rate = re.search(r"SPF none rate: ([\d.]+)%", text)
    out[("results", "spf", "none_rate")] = rate.group(1) if rate else None
    now = re.search(r"Where the mail is now: inbox (\d+), junk (\d+), quarantine (\d+)", text)
    assert now
    out |= row_numbers(("now",), ["inbox", "junk", "quarantine"], list(now.groups()))
    _, rows = table("Policies")
    keys = ["inbox", "junk", "quarantine", "moves", "likely_false_positives"]
    for row in rows:
        out |= row_numbers(("policy", row[0]), keys, row[2:])
    _, rows = table("Top failing From domains")
    keys = ["messages", "failing", "spf_fail", "dkim_fail", "dmarc_fail"]
    for row in rows:
        out |= row_numbers(("domain", row[0]), keys, row[1:])
    head, rows = table("Domain suffixes")
    keys = ["messages", "failing", "dmarc_pass", "filed_now"]
    keys += ["filed." + h.removeprefix("filed by ") for h in head[5:]]
    for row in rows:
        out |= row_numbers(("suffix", row[0]), keys, row[1:])
    _, rows = table("Forwarded")
    for row in rows:
        out |= row_numbers(("forwarded", row[0]), ["messages", "dkim_pass", "arc_pass"], row[1:4])
    return out


def assert_numbers(got: dict[tuple[str, ...], object], skip: tuple[str, ...] = ()) -> None:
    want = {k: v for k, v in expected().items() if k[0] not in skip}
    assert {k: got.get(k) for k in want} == want


def test_first_run_checks_the_generated_maildir_as_written_down(setup, capsys) -> None:
    code, out, err = run_report(setup, capsys, *both(setup), "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["messages"] == len(SPECS)
    assert doc["scan"]["checked"] == len(SPECS) and doc["scan"]["cached"] == 0
    assert (doc["first"], doc["last"], doc["granularity"]) == ("2025-03-01", "2025-03-06", "day")
    assert_numbers(flat_from_json(doc))


def test_table_json_and_csv_show_the_same_exact_numbers(setup, capsys) -> None:
    _, out_json, _ = run_report(setup, capsys, *both(setup), "--json")
    _, out_csv, _ = run_report(setup, capsys, *both(setup), "--csv")
    _, out_table, _ = run_report(setup, capsys, *both(setup))
    assert_numbers(flat_from_json(json.loads(out_json)))
    assert_numbers(flat_from_csv(out_csv))
    # The terminal leaves the timeline to --html.
    assert_numbers(flat_from_table(out_table), skip=("timeline",))


def test_second_run_with_another_policy_sends_no_dns_query(setup, capsys) -> None:
    server: DnsTestServer = setup["server"]  # type: ignore[assignment]
    d: Path = setup["dir"]  # type: ignore[assignment]
    _, first, _ = run_report(setup, capsys, "--policy", str(d / "config.toml"), "--json")
    sent = server.query_count
    assert sent > 0 and json.loads(first)["scan"]["dns_queries"] > 0
    _, second, _ = run_report(setup, capsys, "--policy", str(d / "strict.toml"), "--json")
    assert server.query_count == sent
    doc = json.loads(second)
    assert doc["scan"] | {"seconds": 0, "rate": 0} == {
        "files": 16,
        "checked": 0,
        "cached": 16,
        "unreadable": 0,
        "dns_queries": 0,
        "seconds": 0,
        "rate": 0,
    }
    assert doc["policies"][0]["counts"] == {"inbox": 6, "junk": 6, "quarantine": 4}


def test_recheck_option_checks_again_despite_the_cache(setup, capsys) -> None:
    server: DnsTestServer = setup["server"]  # type: ignore[assignment]
    run_report(setup, capsys, "--json")
    sent = server.query_count
    _, out, _ = run_report(setup, capsys, "--json", "--recheck")
    assert json.loads(out)["scan"]["checked"] == 16
    assert server.query_count > sent


def test_report_leaves_every_maildir_file_byte_identical(setup, capsys) -> None:
    maildir: Path = setup["maildir"]  # type: ignore[assignment]
    d: Path = setup["dir"]  # type: ignore[assignment]
    before = snapshot(maildir)
    for extra in ((), ("--json",), ("--csv",), ("--html", str(d / "r.html")), ("--recheck",)):
        code, _, _ = run_report(setup, capsys, *both(setup), *extra)
        assert code == 0
    assert snapshot(maildir) == before
    assert (d / "r.html").is_file()


def test_cache_or_page_inside_the_maildir_is_refused(setup, capsys) -> None:
    maildir: Path = setup["maildir"]  # type: ignore[assignment]
    before = snapshot(maildir)
    code, _, err = run_report(setup, capsys, "--cache", str(maildir / "c.sqlite3"))
    assert code == 2 and err.count("\n") == 1 and "inside a Maildir" in err
    code, _, err = run_report(setup, capsys, "--html", str(maildir / ".Junk" / "r.html"))
    assert code == 2 and "inside a Maildir" in err
    assert snapshot(maildir) == before


def test_sent_drafts_and_trash_are_left_out(setup, capsys) -> None:
    maildir: Path = setup["maildir"]  # type: ignore[assignment]
    for folder in (".Sent", ".Drafts", ".Trash"):
        for sub in ("new", "cur", "tmp"):
            (maildir / folder / sub).mkdir(parents=True)
        (maildir / folder / "cur" / f"{delivered(2, 50)}.M9P9.mx:2,S").write_bytes(
            make_message(PROFILES["plain"], "Mine", delivered(2, 50), 99)
        )
    _, out, _ = run_report(setup, capsys, "--json")
    assert json.loads(out)["messages"] == len(SPECS)


def test_likely_false_positives_come_first_with_date_sender_subject_and_reasons(
    setup, capsys
) -> None:
    _, out, _ = run_report(setup, capsys, *both(setup), "--json")
    strict = json.loads(out)["policies"][1]
    flags = [m["likely_false_positive"] for m in strict["moves"]]
    assert flags == [True] * 8 + [False]
    first = strict["moves"][0]
    # Newest first: both day-6 candidates, the list mail (10:14) before Birthday (10:09).
    assert [(m["date"], m["subject"], m["would"]) for m in strict["moves"][:2]] == [
        ("2025-03-06", "[Photo Club] Exhibition", "quarantine"),
        ("2025-03-06", "Birthday", "junk"),
    ]
    assert first["now"] == "inbox" and first["sender"] == "Dave <dave@photo.example>"
    assert all(m["reasons"] and m["sender"] for m in strict["moves"])
    last = strict["moves"][-1]
    assert (last["folder"], last["would"], last["subject"]) == (
        ".Junk",
        "quarantine",
        "Action required again",
    )


def test_since_keeps_only_mail_delivered_from_that_date(setup, capsys) -> None:
    _, out, _ = run_report(setup, capsys, "--since", "2025-03-05", "--json")
    doc = json.loads(out)
    assert doc["messages"] == sum(1 for s in SPECS if s[3] >= 5) == 6
    assert doc["since"] == "2025-03-05" and doc["first"] == "2025-03-05"


def test_bad_since_is_one_line_and_exit_2(setup, capsys) -> None:
    code, out, err = run_report(setup, capsys, "--since", "last tuesday")
    assert code == 2 and out == ""
    assert err == "authsieve: --since: expected a date such as 2025-03-01, got 'last tuesday'\n"


def test_observe_mode_policy_is_counted_by_what_enforce_would_do(setup, capsys) -> None:
    d: Path = setup["dir"]  # type: ignore[assignment]
    (d / "watch.toml").write_text(STRICT.replace("[policy]", '[policy]\nmode = "observe"'))
    _, out, _ = run_report(setup, capsys, "--policy", str(d / "watch.toml"), "--json")
    policy = json.loads(out)["policies"][0]
    assert (policy["name"], policy["mode"]) == ("watch", "observe")
    assert policy["counts"] == {"inbox": 6, "junk": 6, "quarantine": 4}


def test_forwarded_list_mail_names_the_relay_to_trust(setup, capsys) -> None:
    _, out, _ = run_report(setup, capsys, "--json")
    (row,) = json.loads(out)["forwarded"]
    assert row["via"] == "mx.lists.example"
    assert row["fix"] == 'trusted_forwarders = ["mx.lists.example"]'
    assert row["list_id"] == "Photo Club <club.lists.example>"
    assert not row["already_trusted"]


def test_trusting_the_relay_judges_list_mail_behind_it(setup, capsys) -> None:
    d: Path = setup["dir"]  # type: ignore[assignment]
    (d / "fwd.toml").write_text(
        CONFIG.replace("[policy]", '[policy]\ntrusted_forwarders = ["mx.lists.example"]')
    )
    _, out, _ = run_report(
        setup, capsys, "--policy", str(d / "config.toml"), "--policy", str(d / "fwd.toml"), "--json"
    )
    config, fwd = json.loads(out)["policies"]
    # The trust path changes, so the list mail is checked again behind the relay: SPF pass.
    assert config["counts"] == {"inbox": 11, "junk": 1, "quarantine": 4}
    assert fwd["counts"] == {"inbox": 13, "junk": 1, "quarantine": 2}


# ---------------------------------------------------------------- the pure parts


def test_place_of_folder_names() -> None:
    assert [place_of(f) for f in ("INBOX", ".Junk", ".Spam", ".INBOX.Quarantine", ".Archive")] == [
        "inbox",
        "junk",
        "junk",
        "quarantine",
        "inbox",
    ]


def test_display_text_decodes_rfc2047_and_drops_control_characters() -> None:
    assert display_text("=?utf-8?q?Caf=C3=A9?= menu") == "Café menu"
    assert display_text("red\x1b[31m alert\r\n\tnow") == "red [31m alert now"


def test_cache_path_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert default_cache_path({"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "authsieve" / "report.sqlite3"
    )
    assert default_cache_path({"XDG_CACHE_HOME": "relative"}).parts[-3:] == (
        ".cache",
        "authsieve",
        "report.sqlite3",
    )


def test_cached_record_decides_as_delivery_does_on_the_demo_maildir(tmp_path: Path) -> None:
    """Per policy, decide() over the cached record (ARC trust recomputed) = evaluate()."""
    config = load_config(ROOT / "examples" / "config.toml")
    settings, policies = config.engine, config.policies
    resolver = make_resolver(dns_zone=DEMO / "zone.txt")
    cache = ReportCache(tmp_path / "c.sqlite3")
    files = sorted(
        p for p in DEMO.rglob("*") if p.parent.name in ("new", "cur") and not p.name.startswith(".")
    )
    assert len(files) == 17
    arc_trusted = 0
    for path in files:
        data = path.read_bytes()
        message = Message.parse(data)
        record = record_from(run_checks(data, settings, resolver), message, settings.authserv_id)
        cache.put("id", path.name, "fp", record)
        back = cache.get("id", path.name, "fp")
        assert back == record and isinstance(back, CheckRecord)
        scanned = ScannedMessage(str(path), "INBOX", 0.0, back)
        got = verdict_for(scanned, policies, None)
        want = evaluate(data, settings, resolver, policies)
        assert got == want.verdict, path.name
        # report._outcome shares decisions across envelope senders (VERP): decide() ignores them.
        policy = policies.for_user(back.rcpt)
        other = replace(want.facts, mailfrom="someone-else@elsewhere.example")
        assert decide(other, policy) == want.verdict, path.name
        arc_trusted += want.facts.arc_trusted
    assert arc_trusted == 1  # the photo club list, sealed by lists.example
    cache.close()


@pytest.mark.parametrize(
    ("delivery", "counted"),
    [
        ("enforce", True),
        ("released", True),
        ("observe", False),
        ("", False),
        ("foreign", False),
    ],
)
def test_likely_false_positives_count_only_mail_a_person_kept(
    tmp_path: Path,
    dns_server: Callable[..., DnsTestServer],
    capsys: pytest.CaptureFixture[str],
    delivery: str,
    counted: bool,
) -> None:
    """Observe-mode deliveries and mail authsieve never filed were placed by nobody."""
    maildir = build_maildir(tmp_path / "Maildir", [])
    when = delivered(6, 1)
    data = make_message(PROFILES["plain"], "Birthday", when, 1, delivery)
    (maildir / "cur" / f"{when}.M1P1.mx:2,S").write_bytes(data)
    (tmp_path / "strict.toml").write_text(STRICT)
    server = dns_server(ZONE, servfail=SERVFAIL)
    args = ["--config", str(tmp_path / "strict.toml"), "--dns-server", server.address]
    args += ["--cache", str(tmp_path / "cache.sqlite3")]
    assert main(["report", *args, "--json", str(maildir)]) == 0
    policy = json.loads(capsys.readouterr().out)["policies"][0]
    assert [(m["now"], m["would"]) for m in policy["moves"]] == [("inbox", "junk")]
    assert policy["likely_false_positives"] == (1 if counted else 0)
    assert policy["moves"][0]["likely_false_positive"] is counted
    assert main(["report", *args, str(maildir)]) == 0
    text = capsys.readouterr().out
    assert "! likely false positive: a message a person kept in the inbox" in text
    assert ("  ! 2025-03-06" in text) is counted
