"""The watcher: filing by verdict, idempotency, inotify and rescans, SIGTERM, sd_notify, reload."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from classifier.commands.main import main
from classifier.config import load_config
from classifier.mailstore.filing import Job, carries_our_header, process_path
from classifier.mailstore.maildir import MaildirName, identity, list_folder
from classifier.mailstore.sd_notify import sd_notify
from classifier.mailstore.watch import Watcher, WatchOptions
from classifier.message import Message
from tests.conftest import ROOT, resolver_for
from tests.dnsserver import DnsTestServer
from tests.helpers import wait_for

DEMO = ROOT / "examples" / "maildir"
# The command as the console script runs it (python -m would load commands/main.py twice).
CLI = [
    sys.executable,
    "-c",
    "import sys; from classifier.commands.main import main; sys.exit(main())",
]
CONFIG = ROOT / "examples" / "config.toml"
AUTHSERV = "mx.family.example"
# The demo's new/ messages and the folder each belongs in (examples/maildir/README.md).
EXPECTED = {
    "1741009930.M779552P1665.mx": "quarantine",
    "1741223639.M729759P10398.mx": "junk",
    "1741604735.M22778P24753.mx": "inbox",
    "1741659463.M783163P47153.mx": "quarantine",
    "1741761007.M511942P25424.mx": "inbox",
}
FOLDER = {"inbox": "", "junk": ".Junk", "quarantine": ".Quarantine"}


@pytest.fixture
def dns(dns_server: Callable[..., DnsTestServer]) -> DnsTestServer:
    return dns_server((DEMO / "zone.txt").read_text())


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    """Gives a copy of the demo Maildir at a path the default template reads as alice's."""
    target = tmp_path / "vmail" / "family.example" / "alice" / "Maildir"
    shutil.copytree(DEMO, target)
    return target


def job_for(dns: DnsTestServer, config: Path = CONFIG) -> Job:
    return Job(load_config(config), resolver_for(dns), config_path=str(config))


def our_headers(data: bytes) -> tuple[int, int]:
    """Gives how many X-Authsieve and our Authentication-Results the message carries on top."""
    message = Message.parse(data)
    ours = [f for f in message.fields if f.key == "x-authsieve"]
    ar = [v for v in message.get_all("Authentication-Results") if v.startswith(AUTHSERV)]
    return len(ours), len(ar)


def unfiled(maildir: Path) -> list[str]:
    return [n for n in os.listdir(maildir / "new") if not MaildirName.parse(n).marked]


def test_demo_messages_are_filed_by_their_verdict(maildir: Path, dns: DnsTestServer) -> None:
    job = job_for(dns)
    outcomes = {p.name.split(",")[0]: process_path(p, job) for p in (maildir / "new").iterdir()}
    assert {k: o.action for k, o in outcomes.items()} == EXPECTED
    for core, action in EXPECTED.items():
        dest = Path(outcomes[core].dest)
        # Junk as Sieve's `addflag "$Junk"; fileinto "Junk"` leaves it: in cur/ with keyword a.
        sub, info = ("cur", ":2,a") if action == "junk" else ("new", "")
        assert dest.parent == maildir / FOLDER[action] / sub
        assert dest.name.startswith(core + ",authsieve,S=") and dest.name.endswith(info)
        assert our_headers(dest.read_bytes()) == (1, 1)
    assert unfiled(maildir) == [] and os.listdir(maildir / "tmp") == [".keep"]
    assert (maildir / "subscriptions").read_text() == "V\t2\n\nQuarantine\n"


def test_a_message_already_carrying_our_header_is_left_alone(
    maildir: Path, dns: DnsTestServer
) -> None:
    job = job_for(dns)
    first = process_path(maildir / "new" / "1741604735.M22778P24753.mx,S=3258,W=3258", job)
    filed = Path(first.dest)
    again = process_path(filed, job)
    assert again.status == "own"
    # Delivered by someone else under a plain name (e.g. authsieve pipe, or a copy): not redone.
    plain = maildir / "new" / "1799999999.M1P1.mx"
    os.link(filed, plain)
    assert process_path(plain, job).status == "left-alone"
    assert plain.read_bytes() == filed.read_bytes()


def test_our_header_below_received_or_with_another_id_is_not_ours() -> None:
    ours = b"X-Authsieve: v=1; id=mx.family.example; verdict=inbox\r\n"
    received = b"Received: from a by b; Tue, 11 Mar 2025 03:17:43 +0100\r\n"
    body = b"From: x@example.org\r\n\r\nhi\r\n"
    assert carries_our_header(Message.parse(ours + received + body), AUTHSERV)
    assert not carries_our_header(Message.parse(received + ours + body), AUTHSERV)
    other = ours.replace(b"mx.family.example", b"mx.elsewhere.example")
    assert not carries_our_header(Message.parse(other + received + body), AUTHSERV)


def test_a_forged_result_header_is_defused_when_filed(maildir: Path, dns: DnsTestServer) -> None:
    path = maildir / "new" / "1741659463.M783163P47153.mx,S=1392,W=1392"
    data = path.read_bytes()
    top, rest = data.split(b"\r\nReceived: from mail.bank", 1)
    forged = b"X-Authsieve: v=1; id=mx.family.example; verdict=inbox\r\n"
    path.write_bytes(top + b"\r\n" + forged + b"Received: from mail.bank" + rest)
    outcome = process_path(path, job_for(dns))
    assert outcome.action == "quarantine"
    message = Message.parse(Path(outcome.dest).read_bytes())
    assert message.get_all("X-Original-X-Authsieve") == ["v=1; id=mx.family.example; verdict=inbox"]
    assert our_headers(Path(outcome.dest).read_bytes()) == (1, 1)


def test_once_files_everything_waiting_and_leaves_cur_alone(
    maildir: Path, dns: DnsTestServer
) -> None:
    cur = sorted(os.listdir(maildir / "cur"))
    roots = (str(maildir.parent.parent.parent / "*" / "*" / "Maildir"),)
    options = WatchOptions(roots=roots, workers=0, once=True)
    watcher = Watcher(options, job_for(dns), notify=lambda _s: False)
    assert watcher.run() == 0
    assert watcher.counts["filed"] == 5
    assert watcher.counts["action:quarantine"] == 2 and watcher.counts["action:junk"] == 1
    assert unfiled(maildir) == [] and sorted(os.listdir(maildir / "cur")) == cur


def drop(maildir: Path, source: Path, name: str, how: str) -> None:
    """Delivers like Postfix virtual (hard link into new/) or Dovecot (rename from tmp/)."""
    tmp = maildir / "tmp" / name
    shutil.copyfile(source, tmp)
    if how == "link":
        os.link(tmp, maildir / "new" / name)
        tmp.unlink()
    else:
        os.rename(tmp, maildir / "new" / name)


def run_in_thread(watcher: Watcher) -> threading.Thread:
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("pool", ["thread", "main"])
def test_new_mail_is_filed_on_the_inotify_event_and_own_renames_are_ignored(
    maildir: Path, dns: DnsTestServer, pool: str
) -> None:
    sources = sorted((maildir / "new").iterdir())
    for p in sources:
        p.rename(maildir.parent / p.name)  # start with an empty new/
    workers = 2 if pool == "thread" else 0
    options = WatchOptions(roots=(str(maildir),), rescan_interval=3600, workers=workers, pool=pool)
    ready = threading.Event()

    def notify(state: str) -> bool:
        ready.set()
        return True

    watcher = Watcher(options, job_for(dns), notify=notify)
    thread = run_in_thread(watcher)
    assert ready.wait(10)  # READY=1 comes after the first scan: from here on, only events
    for i, p in enumerate(sources):
        drop(maildir, maildir.parent / p.name, f"18000000{i}.M{i}P9.mx", "link" if i % 2 else "mv")
    wait_for(lambda: watcher.counts["filed"] == 5)
    time.sleep(0.3)  # let the events of our own renames arrive: they must not be dispatched
    watcher.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    assert watcher.counts["filed"] == 5 and watcher.counts["own"] == 0
    assert watcher.counts["gone"] == 0 and unfiled(maildir) == []


def test_rescan_finds_a_maildir_created_later(tmp_path: Path, dns: DnsTestServer) -> None:
    root = tmp_path / "vmail"
    root.mkdir()
    options = WatchOptions(
        roots=(str(root / "*" / "*" / "Maildir"),), rescan_interval=0.1, workers=0
    )
    watcher = Watcher(options, job_for(dns), notify=lambda _s: False)
    thread = run_in_thread(watcher)
    time.sleep(0.3)
    late = root / "family.example" / "bob" / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (late / sub).mkdir(parents=True)
    drop(late, DEMO / "new" / "1741223639.M729759P10398.mx,S=2049,W=2049", "1.M1P1.mx", "mv")
    wait_for(lambda: watcher.counts["filed"] == 1)
    watcher.request_stop()
    thread.join(10)
    # Bob is in observe mode: the .cyou spam would be junk, but stays in his INBOX.
    assert [p.parent.parent.name for p in list_folder(late)] == ["Maildir"]


def test_a_changed_config_is_reloaded_at_the_next_rescan(
    tmp_path: Path, dns: DnsTestServer
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.read_text())
    job = job_for(dns, config)
    watcher = Watcher(
        WatchOptions(roots=()), job, reload=lambda: load_config(config), notify=lambda _s: False
    )
    assert job.config.policies.default.dmarc_reject == "quarantine"
    config.write_text(
        CONFIG.read_text().replace('dmarc_reject = "quarantine"', 'dmarc_reject = "junk"')
    )
    os.utime(config, (time.time() + 5, time.time() + 5))
    watcher.rescan(None)
    assert watcher.job.config.policies.default.dmarc_reject == "junk" and watcher.generation == 1


def test_sd_notify_sends_a_datagram_to_notify_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert sock.recv(100) == b"READY=1"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        name = f"authsieve-test-{os.getpid()}"
        sock.bind("\0" + name)
        assert sd_notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"STOPPING=1"
    assert sd_notify("READY=1", {}) is False


def test_watch_without_a_maildir_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "--config", str(CONFIG)]) == 2
    assert capsys.readouterr().err.strip() == (
        "authsieve: watch: no Maildir given (ROOT arguments or [watch] roots)"
    )


def test_watch_whose_roots_match_no_maildir_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    glob = str(tmp_path / "vmail" / "*" / "*" / "Maildir")
    assert main(["watch", "--config", str(CONFIG), "--once", glob, str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"authsieve: watch: no Maildir (a directory with new/) at {glob}, {tmp_path}\n"
    )


def test_watch_in_the_foreground_says_what_it_watches(maildir: Path, dns: DnsTestServer) -> None:
    """On a terminal (a pty here) the first line names the Maildirs and how to stop."""
    import pty

    other = maildir.parent.parent / "bob" / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (other / sub).mkdir(parents=True)
    glob = str(maildir.parent.parent / "*" / "Maildir")
    argv = [*CLI, "watch", "--config", str(CONFIG), "--dns-server", dns.address]
    argv += ["--rescan-interval", "30", "--workers", "0", glob]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=child_fd, stdout=subprocess.DEVNULL)
    os.close(child_fd)
    try:
        seen = b""
        while b"\n" not in seen:
            seen += os.read(main_fd, 1000)
        wait_for(lambda: unfiled(maildir) == [])  # running: SIGTERM is handled now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main_fd)
    assert seen.split(b"\r\n")[0].decode() == (
        f"authsieve watch: 2 Maildir(s): {maildir}, {other} (rescan every 30 s; Ctrl-C stops)"
    )


def test_service_notifies_ready_files_mail_and_stops_cleanly_on_sigterm(
    maildir: Path, dns: DnsTestServer, tmp_path: Path
) -> None:
    """The real command with worker processes: READY=1, filing, SIGHUP, SIGTERM → STOPPING=1.

    SIGHUP reloads the policy in the worker processes too; SIGTERM exits 0.
    """
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.read_text().replace(
            "[classifier]", f'[classifier]\nlog_file = "{tmp_path / "watch.log"}"', 1
        )
    )
    waiting = sorted(os.listdir(maildir / "new"))
    for name in waiting:
        os.rename(maildir / "new" / name, maildir / name)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(tmp_path / "notify")}
    argv = [*CLI, "watch", "--config", str(config)]
    argv += ["--dns-server", dns.address, "--workers", "2", str(maildir)]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT)
    try:
        assert notify.recv(200).startswith(b"READY=1\nSTATUS=watching 1 Maildir")
        for i, name in enumerate(waiting):
            drop(maildir, maildir / name, f"1800000000.M{i}P7.mx", "mv")
        wait_for(lambda: unfiled(maildir) == [] and len(list(list_folder(maildir))) >= 12)
        # SIGHUP: the worker processes take the new policy for the next message.
        config.write_text(
            config.read_text().replace('dmarc_reject = "quarantine"', 'dmarc_reject = "junk"')
        )
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reloaded" in (tmp_path / "watch.log").read_text())
        phish = "1741659463.M783163P47153.mx,S=1392,W=1392"
        drop(maildir, DEMO / "new" / phish, "1800000001.M9P7.mx", "link")
        wait_for(lambda: unfiled(maildir) == [])
        assert any(n.startswith("1800000001.M9P7.mx,") for n in os.listdir(maildir / ".Junk/cur"))
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(200) == b"STOPPING=1"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    filed = [p for f in FOLDER.values() for p in list_folder(maildir / f)]
    assert len([p for p in filed if MaildirName.parse(p.name).marked]) == 6
    log = (tmp_path / "watch.log").read_text()
    assert log.count(" filed ") == 6


COUNT = 3000


def test_sigterm_while_filing_finishes_what_is_in_hand_and_loses_nothing(
    tmp_path: Path, dns: DnsTestServer
) -> None:
    maildir = tmp_path / "vmail" / "family.example" / "alice" / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True)
    template = (DEMO / "new" / "1741659463.M783163P47153.mx,S=1392,W=1392").read_bytes()
    wanted = []
    # Enough that the watcher (over 1,000 msg/s on an idle machine) is still filing when
    # SIGTERM comes 0.3 s after READY.
    for i in range(COUNT):
        data = template.replace(b"<1741659449.4471@bank.example>", f"<t{i}@test>".encode())
        data += f"message {i}\r\n".encode()
        (maildir / "new" / f"1800000000.M{i}P1.mda").write_bytes(data)
        wanted.append(identity(data))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(tmp_path / "notify")}
    argv = [*CLI, "watch", "--config", str(CONFIG), "--dns-server", dns.address, str(maildir)]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT)
    try:
        assert notify.recv(200).startswith(b"READY=1")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(200) == b"STOPPING=1"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()

    def present() -> list[tuple[str, str]]:
        folders = (maildir, maildir / ".Quarantine")
        return sorted(identity(p.read_bytes()) for f in folders for p in list_folder(f))

    assert present() == sorted(wanted)
    assert 0 < len(unfiled(maildir)) < COUNT  # stopped part-way, and nothing was half done
    assert [n for f in ("", ".Quarantine") for n in os.listdir(maildir / f / "tmp")] == []
    done = subprocess.run([*argv, "--once"], env=env, cwd=ROOT, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert present() == sorted(wanted) and unfiled(maildir) == []


def test_a_second_watcher_leaves_a_maildir_that_one_already_files(
    maildir: Path, dns: DnsTestServer
) -> None:
    options = WatchOptions(roots=(str(maildir),), workers=0)
    first = Watcher(options, job_for(dns), notify=lambda _s: False)
    second = Watcher(options, job_for(dns), notify=lambda _s: False)
    first.rescan(None)
    second.rescan(None)
    assert list(first.maildirs) == [maildir] and second.maildirs == {}
    assert len(first.backlog) == 5 and not second.backlog
    first._release(first.maildirs.pop(maildir), None)
    second.rescan(None)
    assert list(second.maildirs) == [maildir]
    second._release(second.maildirs.pop(maildir), None)


def test_a_bad_policy_on_reload_keeps_the_running_config(
    tmp_path: Path, dns: DnsTestServer
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.read_text())
    job = job_for(dns, config)
    watcher = Watcher(
        WatchOptions(roots=()), job, reload=lambda: load_config(config), notify=lambda _s: False
    )
    config.write_text(CONFIG.read_text() + '\n[users."a@example.org"]\nspf_fail = "bounce"\n')
    os.utime(config, (time.time() + 5, time.time() + 5))
    watcher.rescan(None)  # the mistake shows here, at the reload, not at the next message
    assert watcher.job is job and watcher.generation == 0
