"""The README, executed: its config blocks run the real Postfix + dovecot-lda integration.

A fenced block the tests use has a marker line just before it in README.md,
``<!-- readme-test: NAME -->``.  The policy and ``[watch]`` defaults blocks
are compared with the code's defaults; the Dovecot blocks (one per file for
Dovecot 2.3 and one for 2.4 where their syntax differs) with the files of
examples/dovecot/2.3/ and 2.4/ and, through ``doveconf -n``, with Debian's stock
configuration of the installed version that they are added to.  Then a private
Postfix (tests/mta.py) runs the README's master.cf service, dovecot-lda reads the
README's conf.d blocks as new files, authsieve reads the README's config.toml
(observe, then the enforce block of step 7), and the global Sieve script is
installed with the README's command.  Only paths change: the DNS server, the log file, the
sieve_before directory and the Maildirs live in the temp dir.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from classifier.aggregate.store import ReportStore
from classifier.auth.facts import parse_header_value
from classifier.config import (
    DEFAULT_LEARN_STORE,
    LearnConfig,
    QuarantineConfig,
    ReportsConfig,
    WatchConfig,
    config_from_dict,
)
from classifier.policies import Policy
from tests.dnsserver import DnsTestServer
from tests.dovecot_conf import DovecotSyntax
from tests.mta import EXAMPLES, REPO, Delivered, Mta, open_up, throwaway_mta, wait_until

README = REPO / "README.md"
MARKER = re.compile(
    r"^[ \t]*<!-- readme-test: (?P<name>[^>]+?) -->\n[ \t]*```[^\n]*\n(?P<body>.*?)^[ \t]*```",
    re.MULTILINE | re.DOTALL,
)
DOVECOT_FILES = (
    "90-authsieve-auth.conf",
    "90-authsieve-lda.conf",
    "90-authsieve-mailboxes.conf",
    "90-authsieve-sieve.conf",
)
# dovecot-lda without a Dovecot server has no use for the auth socket's file.
LDA_FILES = DOVECOT_FILES[1:]
# The README shows these twice, for Dovecot 2.3 and for 2.4; the others are the same for both.
PER_VERSION = ("90-authsieve-lda.conf", "90-authsieve-sieve.conf")
VERSIONS = ("2.3", "2.4")
IMAPSIEVE_FILE = "90-authsieve-imapsieve.conf"  # README: Learning from users' moves
STOCK_DOVECOT = Path("/usr/share/dovecot")
DOVECONF = "/usr/bin/doveconf"


def readme_blocks() -> dict[str, str]:
    """Gives the README's marked fenced blocks by marker name, unindented."""
    blocks: dict[str, str] = {}
    for m in MARKER.finditer(README.read_text()):
        assert m["name"] not in blocks, f"README.md: two blocks marked {m['name']!r}"
        blocks[m["name"]] = textwrap.dedent(m["body"])
    return blocks


def dovecot_block(blocks: dict[str, str], version: str, name: str) -> str:
    """Gives the README's block of the conf.d file name for Dovecot version ("2.3", "2.4")."""
    return blocks[f"dovecot {version} {name}" if name in PER_VERSION else f"dovecot {name}"]


def settings_lines(text: str) -> list[str]:
    """Gives a conf file's lines without comments and blank lines."""
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


# --- the blocks, compared with the code and the examples ----------------------------------


def test_readme_marks_every_block_the_tests_run() -> None:
    names = set(readme_blocks())
    wanted = {"policy defaults", "watch defaults", "config.toml", "config.toml enforce"}
    wanted |= {"master.cf"} | {f"dovecot {n}" for n in DOVECOT_FILES if n not in PER_VERSION}
    wanted |= {f"dovecot {v} {n}" for v in VERSIONS for n in PER_VERSION}
    # tests/test_lmtp_filter.py
    wanted |= {f"lmtp-filter {v} 90-authsieve-filter.conf" for v in VERSIONS}
    wanted |= {"lmtp-filter main.cf"}
    wanted |= {f"reports {n}" for n in ("config.toml", "store directory", "timer", "cron")}
    wanted |= {"learn config"} | {f"dovecot {v} {IMAPSIEVE_FILE}" for v in VERSIONS}
    # tests/test_aggregate_store_pg.py runs the PostgreSQL ones against a real server
    wanted |= {"postgresql setup", "postgresql writer role", "reports postgresql"}
    assert names == wanted


@pytest.mark.parametrize("version", VERSIONS)
def test_imapsieve_blocks_are_the_example_files_without_comments(version: str) -> None:
    # The example is what tests/test_learn_imap.py runs Dovecot with.
    example = (EXAMPLES / "dovecot" / version / IMAPSIEVE_FILE).read_text()
    shown = readme_blocks()[f"dovecot {version} {IMAPSIEVE_FILE}"]
    assert settings_lines(shown) == settings_lines(example)


def test_learn_block_is_valid_config_with_the_codes_default_store() -> None:
    learn = config_from_dict(tomllib.loads(readme_blocks()["learn config"]), "README.md").learn
    assert learn is not None and learn.store == DEFAULT_LEARN_STORE
    assert (learn.min_messages, learn.min_users) == (5, 2)
    assert learn.retention_days == LearnConfig().retention_days


def test_policy_defaults_block_is_the_codes_defaults() -> None:
    data = tomllib.loads(readme_blocks()["policy defaults"])
    keys = set(Policy._fields) - {"user"}
    assert set(data["policy"]) == keys, "the README's block lists every [policy] key"
    shown = config_from_dict(data).policies.default
    assert shown == config_from_dict({}).policies.default == Policy()


def test_watch_defaults_block_is_the_codes_defaults() -> None:
    data = tomllib.loads(readme_blocks()["watch defaults"])
    config = config_from_dict(data)
    shown = {(section, key) for section, table in data.items() for key in table}
    sections = {"watch": WatchConfig, "quarantine": QuarantineConfig}
    wanted = {(name, f) for name, kind in sections.items() for f in kind._fields}
    assert shown == wanted, "the README's block lists every [watch]/[quarantine] key"
    assert config.watch == WatchConfig() and config.quarantine == QuarantineConfig()


def test_readme_config_blocks_are_valid_config() -> None:
    blocks = readme_blocks()
    for text in (blocks["config.toml"], enforced_config(blocks["config.toml"], blocks)):
        config_from_dict(tomllib.loads(text), "README.md")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", DOVECOT_FILES)
def test_dovecot_blocks_are_the_example_files_without_comments(version: str, name: str) -> None:
    example = (EXAMPLES / "dovecot" / version / name).read_text()
    shown = dovecot_block(readme_blocks(), version, name)
    assert settings_lines(shown) == settings_lines(example)


def mailbox_settings(conf: str, name: str) -> set[str]:
    """Gives the settings of the first `mailbox NAME { … }` block of doveconf's output."""
    found = re.search(rf"mailbox {name} {{\n(.*?)\n\s*}}", conf, re.DOTALL)
    assert found, f"no mailbox {name}"
    return {unquoted(line.strip()) for line in found[1].splitlines()}


def unquoted(line: str) -> str:
    """Gives a doveconf -n line with its value unquoted: 2.4 prints special_use = "\\\\Junk"."""
    name, sep, value = line.partition(" = ")
    if sep and len(value) > 1 and value[0] == value[-1] == '"':
        value = value[1:-1].replace("\\\\", "\\")
    return name + sep + value


def test_dovecot_blocks_added_to_debians_stock_config_keep_its_folders(tmp_path: Path) -> None:
    if not (os.access(DOVECONF, os.X_OK) and (STOCK_DOVECOT / "conf.d").is_dir()):
        pytest.skip("Debian's dovecot-core is not installed")
    shutil.copy(STOCK_DOVECOT / "dovecot.conf", tmp_path)
    shutil.copytree(STOCK_DOVECOT / "conf.d", tmp_path / "conf.d")
    syntax = DovecotSyntax()
    for name in DOVECOT_FILES:
        target = tmp_path / "conf.d" / name
        assert not target.exists(), f"{name} would replace one of Debian's files"
        target.write_text(dovecot_block(readme_blocks(), syntax.examples, name))
    proc = subprocess.run(
        [DOVECONF, "-c", str(tmp_path / "dovecot.conf"), "-n"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    conf = proc.stdout
    for folder in ("Drafts", "Sent", "Trash"):
        assert f"special_use = \\{folder}" in mailbox_settings(conf, folder), folder
    assert {"auto = subscribe", "special_use = \\Junk"} <= mailbox_settings(conf, "Junk")
    assert "auto = subscribe" in mailbox_settings(conf, "Quarantine")
    if syntax.v24:
        before = re.search(r"sieve_script authsieve {\n(.*?)\n\s*}", conf, re.DOTALL)
        assert before and "type = before" in before[1], conf
        assert "path = /etc/dovecot/sieve-before.d/" in before[1]
        assert re.search(r"protocol lda {[^}]*mail_plugins[^}]*sieve", conf), conf
    else:
        assert "sieve_before = /etc/dovecot/sieve-before.d/" in conf
        assert re.search(r"protocol lda {\n\s+mail_plugins = \" ?sieve\"", conf)
    protocols = re.search(r"^protocols = (.*)$", conf, re.MULTILINE)
    words = protocols[1].strip('" ').split() if protocols else []
    assert words.count("sieve") <= 1, f"protocols = {words}"


# --- the README run by a real Postfix and dovecot-lda --------------------------------------

YOU = "you@family.example"  # the README's user
GOOD_CLIENT = "203.0.113.9"
STRANGER = "198.51.100.66"
ZONE = """
example.com.           TXT "v=spf1 ip4:203.0.113.9 -all"
_dmarc.example.com.    TXT "v=DMARC1; p=none"
mail.example.com.      TXT "v=spf1 ip4:203.0.113.9 -all"
fail.example.          TXT "v=spf1 ip4:192.0.2.7 -all"
bank.example.          TXT "v=spf1 ip4:192.0.2.7 -all"
_dmarc.bank.example.   TXT "v=DMARC1; p=reject"
lucky-winner.cyou.     TXT "v=spf1 ip4:203.0.113.9 -all"
_dmarc.lucky-winner.cyou. TXT "v=DMARC1; p=none"
"""


def localised_config(text: str, root: Path, dns: str, log_file: str | None = None) -> str:
    """Gives the README's config.toml with this test's DNS server and log file (its paths)."""
    log_file = log_file or f"{root}/authsieve.log"
    text, n = re.subn(r"^# log_file = .*$", f'log_file = "{log_file}"', text, flags=re.MULTILINE)
    assert n == 1, "README.md config.toml: no '# log_file = …' line"
    extra = f'dns_server = "{dns}"\ndns_timeout = 1\ndns_budget = 3\n'
    return text.replace("[classifier]\n", "[classifier]\n" + extra, 1)


def enforced_config(text: str, blocks: dict[str, str]) -> str:
    """Gives config text whose [policy] table is replaced by the README's step-7 block."""
    found = re.search(r"^\[policy\]\n(?:(?!^\[).*\n?)*", text, re.MULTILINE)
    assert found, "README.md config.toml: no [policy] table"
    return text[: found.start()] + blocks["config.toml enforce"] + text[found.end() :]


def localised_snippets(root: Path) -> dict[str, str]:
    blocks, version = readme_blocks(), DovecotSyntax().examples
    texts = {name: dovecot_block(blocks, version, name) for name in LDA_FILES}
    sieve = texts["90-authsieve-sieve.conf"]
    assert "/etc/dovecot/sieve-before.d/" in sieve
    texts["90-authsieve-sieve.conf"] = sieve.replace(
        "/etc/dovecot/sieve-before.d/", f"{root}/sieve-before.d/"
    )
    return texts


def authsieve(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs the authsieve command line as root (the administrator), from the repository."""
    argv = [sys.executable, "-m", "classifier.commands.main", *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def install_global_script(mta: Mta) -> None:
    """Runs step 3's `authsieve sieve install --dir /etc/dovecot/sieve-before.d`, localised."""
    target = mta.root / "sieve-before.d"
    target.mkdir(exist_ok=True)
    proc = authsieve("sieve", "install", "--config", str(mta.config), "--dir", str(target))
    assert proc.returncode == 0, proc.stderr
    open_up(target)


@pytest.fixture(scope="module")
def mta() -> Iterator[Mta]:
    blocks = readme_blocks()
    with contextlib.ExitStack() as stack:
        running = stack.enter_context(
            throwaway_mta("family.example", blocks["master.cf"], localised_snippets)
        )
        if isinstance(running, str):
            pytest.skip(running)
        dns = DnsTestServer(ZONE)
        stack.callback(dns.stop)
        running.set_config(localised_config(blocks["config.toml"], running.root, dns.address))
        running.add_user(YOU, None)
        install_global_script(running)
        yield running


@pytest.fixture(scope="module")
def enforcing(mta: Mta) -> Mta:
    """Gives the MTA after step 7: the README's enforce block, the script installed again."""
    blocks = readme_blocks()
    mta.set_config(enforced_config(mta.config.read_text(), blocks))
    install_global_script(mta)
    return mta


def message(header_from: str, token: str, to: str = YOU) -> bytes:
    return (
        f"From: {header_from}\r\nTo: {to}\r\nSubject: readme {token}\r\n"
        f"Message-ID: <{token}@sender.example>\r\n"
        f"Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n\r\nbody of {token}\r\n"
    ).encode()


def send(mta: Mta, mail_from: str, client_ip: str, rcpt: str = YOU) -> str:
    """Sends one message from mail_from (also its From) as an external client; gives its token."""
    token = f"r{uuid.uuid4().hex[:12]}"
    helo = "mail." + mail_from.rpartition("@")[2]
    mta.send(
        message(mail_from, token, rcpt),
        token=token,
        mail_from=mail_from,
        rcpt=rcpt,
        client_ip=client_ip,
        helo=helo,
    )
    return token


def fields_of(got: Delivered) -> dict[str, str]:
    msg = email.message_from_bytes(got.data, policy=email.policy.compat32)
    values = msg.get_all("X-Authsieve") or []
    assert len(values) == 1, f"expected one X-Authsieve header, got {values}"
    return parse_header_value(str(values[0]))


def header(got: Delivered, name: str) -> str:
    msg = email.message_from_bytes(got.data, policy=email.policy.compat32)
    return " ".join(str(msg.get(name, "")).split())


@pytest.mark.integration
def test_observe_config_delivers_everything_to_inbox_with_the_would_be_verdict(mta: Mta) -> None:
    token = send(mta, "mallory@fail.example", STRANGER)
    got = mta.wait_delivered(token)
    fields = fields_of(got)
    assert (got.user, got.folder) == (YOU, "INBOX")
    assert (fields["mode"], fields["verdict"], fields["spf"]) == ("observe", "inbox", "fail")
    assert "would junk" in fields["reason"]
    assert header(got, "Authentication-Results").startswith("mx.family.example;")
    mta.wait_queue_empty()


@pytest.mark.integration
def test_enforce_block_files_spf_fail_into_junk_and_dmarc_reject_into_quarantine(
    enforcing: Mta,
) -> None:
    good = send(enforcing, "alice@example.com", GOOD_CLIENT)
    spf_fail = send(enforcing, "mallory@fail.example", STRANGER)
    forged = send(enforcing, "security@bank.example", STRANGER)
    got = {t: enforcing.wait_delivered(t) for t in (good, spf_fail, forged)}
    assert [(got[t].user, got[t].folder, fields_of(got[t])["verdict"]) for t in got] == [
        (YOU, "INBOX", "inbox"),
        (YOU, "Junk", "junk"),
        (YOU, "Quarantine", "quarantine"),
    ]
    assert "$Junk" in flags_of(enforcing, got[spf_fail])
    enforcing.wait_queue_empty()


def flags_of(mta: Mta, got: Delivered) -> list[str]:
    """Gives the IMAP keywords of a delivered message, read from its Maildir's dovecot-keywords."""
    keywords = got.path.parent.parent / "dovecot-keywords"
    names = dict(line.split(" ", 1) for line in keywords.read_text().splitlines() if " " in line)
    letters = got.path.name.rpartition(":2,")[2]
    return [names[str(ord(c) - ord("a"))] for c in letters if c.islower()]


@pytest.mark.integration
def test_plus_address_goes_to_the_users_mailbox_and_is_filed_alike(enforcing: Mta) -> None:
    plus = YOU.replace("@", "+news@")
    good = send(enforcing, "alice@example.com", GOOD_CLIENT, rcpt=plus)
    bad = send(enforcing, "mallory@fail.example", STRANGER, rcpt=plus)
    inbox, junk = enforcing.wait_delivered(good), enforcing.wait_delivered(bad)
    assert (inbox.user, inbox.folder, fields_of(inbox)["verdict"]) == (YOU, "INBOX", "inbox")
    assert (junk.user, junk.folder, fields_of(junk)["verdict"]) == (YOU, "Junk", "junk")
    assert header(inbox, "Delivered-To") == plus
    enforcing.wait_queue_empty()


def maildirs(mta: Mta) -> str:
    """Gives the README's `/var/vmail/*/*/Maildir`, localised."""
    return f"{mta.root}/mail/*/*/Maildir"


def quarantined(mta: Mta, token: str) -> dict[str, object]:
    """Gives `authsieve quarantine list --json`'s entry of the message carrying token."""
    proc = authsieve(
        "quarantine", "list", "--json", "--config", str(mta.config), "--maildir", maildirs(mta)
    )
    assert proc.returncode == 0, proc.stderr
    entries = [json.loads(line) for line in proc.stdout.splitlines()]
    mine = [e for e in entries if token in str(e.get("subject"))]
    assert len(mine) == 1, entries
    return mine[0]


@pytest.mark.integration
def test_blocked_suffix_is_quarantined_and_listed_by_the_quarantine_command(
    enforcing: Mta,
) -> None:
    token = send(enforcing, "deals@lucky-winner.cyou", GOOD_CLIENT)
    got = enforcing.wait_delivered(token)
    fields = fields_of(got)
    assert (got.folder, fields["verdict"], fields["dmarc"]) == ("Quarantine", "quarantine", "pass")
    entry = quarantined(enforcing, token)
    assert entry["user"] == YOU
    enforcing.wait_queue_empty()


@pytest.mark.integration
def test_release_allow_lets_the_sender_in_next_time(enforcing: Mta) -> None:
    first = send(enforcing, "friend@lucky-winner.cyou", GOOD_CLIENT)
    assert enforcing.wait_delivered(first).folder == "Quarantine"
    entry = quarantined(enforcing, first)
    args = ["--config", str(enforcing.config), "--maildir", maildirs(enforcing)]
    proc = authsieve("quarantine", "release", "--allow", *args, str(entry["id"]))
    assert proc.returncode == 0, proc.stderr
    released = enforcing.find(first)
    assert [m.folder for m in released] == ["INBOX"]
    assert header(released[0], "X-Authsieve-Released")
    # The README: the Sieve script is generated from the policy, so install it again.
    install_global_script(enforcing)
    again = send(enforcing, "friend@lucky-winner.cyou", GOOD_CLIENT)
    got = enforcing.wait_delivered(again)
    assert (got.folder, fields_of(got)["verdict"]) == ("INBOX", "inbox")
    enforcing.wait_queue_empty()


# A message as Postfix's virtual(8) delivers it: no authsieve in the path, the watcher's case.
LANDED = (
    "Return-Path: <mallory@fail.example>\r\n"
    "Delivered-To: you@family.example\r\n"
    "Received: from mail.fail.example (unknown [198.51.100.66])\r\n"
    "\tby mx.family.example (Postfix) with ESMTP id 4ZAB12\r\n"
    "\tfor <you@family.example>; Sat, 01 Mar 2025 10:00:01 +0000 (UTC)\r\n"
)


@pytest.mark.integration
def test_watcher_started_later_files_mail_a_client_already_moved_to_cur(enforcing: Mta) -> None:
    token = f"w{uuid.uuid4().hex[:12]}"
    cur = enforcing.maildir(YOU) / "cur"
    # Arrived while the watcher was stopped; a mail client read it (new/ → cur/, flag S).
    # A recent name: the watcher files cur/ mail up to [watch] cur_max_age_days old.
    path = cur / f"{int(time.time())}.M1P1.mx.family.example:2,S"
    path.write_bytes(LANDED.encode() + message("mallory@fail.example", token))
    os.chown(path, enforcing.user.pw_uid, enforcing.user.pw_gid)
    # examples/systemd/authsieve-watch.service's ExecStart, as the Maildirs' owner.
    argv = [str(enforcing.root / "bin/authsieve"), "watch", "--config", str(enforcing.config)]
    argv.append(maildirs(enforcing))
    watcher = subprocess.Popen(
        argv,
        env={"PATH": "/usr/bin:/bin"},
        user=enforcing.user.pw_uid,
        group=enforcing.user.pw_gid,
        extra_groups=[],
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def filed() -> bool:
            return any(m.folder == "Junk" for m in enforcing.find(token))

        wait_until(filed, 30, f"the watcher to file {token}", enforcing.logs)
    finally:
        watcher.send_signal(signal.SIGTERM)
        try:
            watcher.wait(timeout=30)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.wait()
    copies = enforcing.find(token)
    assert [(m.user, m.folder) for m in copies] == [(YOU, "Junk")]
    assert fields_of(copies[0])["spf"] == "fail"


@pytest.mark.integration
def test_log_file_vmail_cannot_write_does_not_hold_up_delivery(enforcing: Mta) -> None:
    # The README: "If you set log_file, create the file and give it to vmail" — forgotten here.
    readonly = enforcing.root / "readonly"
    readonly.mkdir(mode=0o755, exist_ok=True)
    before = enforcing.config.read_text()
    log_line = f'log_file = "{enforcing.root}/authsieve.log"'
    assert log_line in before
    enforcing.set_config(before.replace(log_line, f'log_file = "{readonly}/authsieve.log"'))
    token = ""
    try:
        token = send(enforcing, "mallory@fail.example", STRANGER)
        got = enforcing.wait_delivered(token)
        assert (got.folder, fields_of(got)["verdict"]) == ("Junk", "junk")
    finally:
        enforcing.set_config(before)
        if token and not enforcing.find(token):
            # Deferred: let it through with the good config, so nothing stays queued.
            enforcing.flush()
            with contextlib.suppress(AssertionError):
                enforcing.wait_delivered(token, timeout=30, retrying=True)


@pytest.mark.integration
def test_every_message_sent_is_delivered_exactly_once(mta: Mta) -> None:
    mta.wait_queue_empty(timeout=30)
    delivered = mta.mailboxes()
    for sent in mta.sent:
        users = [m.user for m in delivered if sent.token.encode() in m.data]
        assert users == [YOU], f"{sent}: delivered to {users}"


# --- DMARC aggregate reports -------------------------------------------------------------


def test_reports_block_is_valid_config_naming_every_reports_key() -> None:
    block = readme_blocks()["reports config.toml"]
    shown = set(re.findall(r"^#? ?(\w+) = ", block, re.MULTILINE))
    assert shown == {f.name for f in fields(ReportsConfig)}
    reports = config_from_dict(tomllib.loads(block), "README.md").reports
    assert reports is not None
    defaults = ReportsConfig()
    assert reports.sendmail == defaults.sendmail
    assert reports.max_message_size == defaults.max_message_size


def test_reports_timer_and_cron_blocks_install_files_that_exist() -> None:
    blocks = readme_blocks()
    for name in ("reports timer", "reports cron"):
        paths = re.findall(r"examples/\S+", blocks[name])
        assert paths, name
        for path in paths:
            assert (REPO / path).is_file(), path


@pytest.mark.integration
def test_reports_store_directory_lets_the_pipe_user_record_and_report(mta: Mta) -> None:
    """The README's install -d and first run, localised: vmail is this MTA's pipe user."""
    blocks = readme_blocks()
    lib = mta.root / "lib-authsieve"
    config = mta.config.read_text()
    reports = blocks["reports config.toml"].replace("/var/lib/authsieve", str(lib))
    user = mta.user.pw_name
    script = (
        blocks["reports store directory"]
        .replace("/var/lib/authsieve", str(lib))
        .replace("-o vmail -g vmail", f"-o {user} -g {mta.user.pw_gid}")
        .replace("runuser -u vmail", f"runuser -u {user}")
        .replace("-- authsieve ", f"-- {mta.root}/bin/authsieve ")
        .replace("/etc/authsieve/config.toml", str(mta.config))
    )
    mta.set_config(config + "\n" + reports)
    try:
        done = subprocess.run(["sh", "-e", "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert (lib / "reports.db").stat().st_uid == mta.user.pw_uid
        token = send(mta, "promo@lucky-winner.cyou", GOOD_CLIENT)
        mta.wait_delivered(token)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        # The pipe process spools its row, as the pipe user, once dovecot-lda has returned
        # (just after the file appears); dmarc-report takes it in.
        spool = lib / "reports.db.spool"
        wait_until(lambda: any(spool.glob("*.json")), 10, "a spooled report row", mta.logs)
        (spooled,) = spool.glob("*.json")
        assert spooled.stat().st_uid == mta.user.pw_uid
        out = lib / "dmarc-out"
        argv = ["runuser", "-u", user, "--", f"{mta.root}/bin/authsieve", "dmarc-report"]
        argv += ["--config", str(mta.config), "--day", day, "--dry-run", str(out)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert [p.name.split("!")[1] for p in out.glob("*.xml.gz")] == ["lucky-winner.cyou"]
        assert not spooled.exists()
        with ReportStore.open(f"sqlite:{lib / 'reports.db'}") as store:
            rows = list(store.rows_between(0, 2**40))
        assert [(r.header_from, r.source_ip, r.dmarc_result) for r in rows] == [
            ("lucky-winner.cyou", GOOD_CLIENT, "pass")
        ]
    finally:
        mta.set_config(config)


def test_the_merged_sieve_lines_for_filter_and_imapsieve_hold_both_files_words() -> None:
    # Dovecot 2.3: the later file's sieve_plugins / sieve_global_extensions replace the
    # earlier's; anyone running the LMTP filter and learning needs the union (README).
    readme = README.read_text()

    def words(text: str, key: str) -> set[str]:
        return {
            w
            for line in text.splitlines()
            if line.strip().startswith(f"{key} =")
            for w in line.split("=", 1)[1].split()
        }

    for key in ("sieve_plugins", "sieve_global_extensions"):
        both = set()
        for name in ("90-authsieve-filter.conf", IMAPSIEVE_FILE):
            text = (EXAMPLES / "dovecot" / "2.3" / name).read_text()
            both |= words(settings_lines_text(text), key)
        merged = [line for line in readme.splitlines() if line.strip().startswith(f"{key} =")]
        assert any(words(line, key) == both for line in merged), (key, sorted(both))


def settings_lines_text(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_the_commands_list_names_every_command() -> None:
    import argparse

    from classifier.commands.main import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    text = (REPO / "README.md").read_text()
    block = text.split("## Commands", 1)[1].split("```", 2)[1]
    listed = set(re.findall(r"^authsieve ([a-z-]+)", block, re.MULTILINE))
    assert set(sub.choices) <= listed, set(sub.choices) - listed
