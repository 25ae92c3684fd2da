"""`authsieve dmarc-report --send` through a real Postfix's sendmail into local Maildirs.

The loopback DNS server publishes the Policy Domains' records and the
``_report._dmarc`` authorisations (RFC 9990 §4); the reports go through a
throwaway Postfix (sendmail → pickup → the authsieve pipe → dovecot-lda) and
are read back from the Maildirs with parsedmarc.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import parsedmarc
import pytest

from classifier.aggregate.rows import DkimEntry, ReportRow
from classifier.aggregate.store import ReportStore
from classifier.commands.main import build_parser, main
from tests.dnsserver import DnsTestServer
from tests.mta import Mta, throwaway_mta, wait_until

DAY = 1_700_006_400  # 2023-11-15 00:00:00 UTC
RECEIVER = "mx.family.example"
OWN, AGG, BIG, LOST = (f"{u}@test.example" for u in ("own", "agg", "big", "lost"))

ZONE = """\
_dmarc.test.example. TXT "v=DMARC1; p=none; rua=mailto:own@test.example"
_dmarc.ext.example. TXT "v=DMARC1; p=none; rua=mailto:agg@test.example!10m"
ext.example._report._dmarc.test.example. TXT "v=DMARC1;"
_dmarc.noauth.example. TXT "v=DMARC1; p=reject; rua=mailto:lost@test.example"
_dmarc.norua.example. TXT "v=DMARC1; p=quarantine"
_dmarc.big.example. TXT "v=DMARC1; p=none; rua=mailto:big@test.example"
big.example._report._dmarc.test.example. TXT "v=DMARC1"
"""

# Rows per Policy Domain: (domain, how many messages, from how many IPs).
ROWS = {
    "test.example": (3, 2),
    "ext.example": (2, 1),
    "noauth.example": (1, 1),
    "norua.example": (1, 1),
    "big.example": (600, 600),
}
MAX_SIZE = 4000  # bytes: the small reports' messages fit, big.example's does not

SENDMAIL = """\
#!/bin/sh
for a; do last=$a; done
if [ -e "{root}/fail-$last" ]; then echo "refused $last" >&2; exit 75; fi
MAIL_CONFIG={root}/etc
export MAIL_CONFIG
exec /usr/sbin/sendmail "$@"
"""


def row(domain: str, n: int, ip: str) -> ReportRow:
    return ReportRow(
        received_at=DAY + 60 + n,
        source_ip=ip,
        header_from=domain,
        envelope_from=domain,
        envelope_to="family.example",
        spf_domain=domain,
        spf_scope="mfrom",
        spf_result="pass",
        dkim=(DkimEntry(domain, "s1", "pass"),),
        dmarc_result="pass",
        dkim_aligned=True,
        spf_aligned=True,
        policy_domain=domain,
        discovery_method="treewalk",
        p="none",
        sp="none",
        np="",
        adkim="r",
        aspf="r",
        testing="n",
        policy_applied="none",
        disposition="none",
        reasons=(),
    )


def rows() -> list[ReportRow]:
    out = []
    for domain, (count, ips) in ROWS.items():
        for n in range(count):
            out.append(row(domain, n, f"10.{n % ips // 250}.{n % ips % 250}.7"))
    return out


@dataclass
class Setup:
    mta: Mta
    config: Path
    dns: str

    def run(self, *extra: str) -> int:
        argv = ["dmarc-report", "--config", str(self.config), "--dns-server", self.dns]
        return main([*argv, "--day", "2023-11-15", *extra])

    def reports(self, addr: str) -> list[EmailMessage]:
        found = [m for m in self.mta.mailboxes() if m.user == addr]
        parse = email.message_from_bytes
        return [parse(m.data, policy=email.policy.default) for m in found]  # type: ignore[misc]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with throwaway_mta() as mta:
        if isinstance(mta, str):
            pytest.skip(mta)
        dns = DnsTestServer(ZONE)
        try:
            mta.set_config(
                f'[classifier]\nauthserv_id = "mx.test.example"\ndns_server = "{dns.address}"\n'
                f'dns_timeout = 1\nlog_file = "{mta.root}/authsieve.log"\n'
            )
            for addr in (OWN, AGG, BIG, LOST):
                mta.add_user(addr, None)
            sendmail = mta.root / "bin" / "sendmail"
            sendmail.write_text(SENDMAIL.format(root=mta.root))
            sendmail.chmod(0o755)
            tmp = tmp_path_factory.mktemp("dmarc-send")
            with ReportStore.open(f"sqlite:{tmp / 'reports.db'}") as store:
                store.append(rows())
            config = tmp / "config.toml"
            config.write_text(
                f'[classifier]\nauthserv_id = "{RECEIVER}"\n'
                f'[reports]\nstore = "sqlite:{tmp / "reports.db"}"\nretention_days = 36500\n'
                'org_name = "Family Mail"\nemail = "dmarc-reports@family.example"\n'
                f'sendmail = "{sendmail}"\nmax_message_size = {MAX_SIZE}\n'
            )
            yield Setup(mta, config, dns.address)
        finally:
            dns.stop()


def arrived(setup: Setup, addr: str, count: int) -> list[EmailMessage]:
    wait_until(lambda: len(setup.reports(addr)) >= count, 30, f"{count} at {addr}", setup.mta.logs)
    setup.mta.wait_queue_empty()
    found = setup.reports(addr)
    assert len(found) == count, f"{addr}: {len(found)} report(s), expected {count}"
    return found


def attachment(msg: EmailMessage) -> tuple[str, bytes]:
    parts = [p for p in msg.iter_attachments() if p.get_content_type() == "application/gzip"]
    assert len(parts) == 1
    return parts[0].get_filename() or "", parts[0].get_content()


def test_send_delivers_each_report_once_skips_what_it_must_and_reruns_send_nothing(
    setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A refused hand-over is logged, the run goes on with the other domains, exit 75.
    (setup.mta.root / f"fail-{AGG}").touch()
    assert setup.run("--send") == 75
    log = caplog.text
    assert f"ext.example: sendmail exit 75 for {AGG}: refused {AGG}" in log
    # RFC 9990 §4: no _report._dmarc record at the destination, no report.
    assert "noauth.example: mailto:lost@test.example skipped: external destination not" in log
    assert "noauth.example._report._dmarc.test.example" in log
    assert "norua.example: no report sent: no rua= in _dmarc.norua.example" in log
    assert "big.example: report to big@test.example not sent:" in log
    assert f"over reports.max_message_size ({MAX_SIZE})" in log
    (own,) = arrived(setup, OWN, 1)

    # The refused one goes on the next run; the one already sent does not go again.
    (setup.mta.root / f"fail-{AGG}").unlink()
    assert setup.run("--send") == 0
    (agg,) = arrived(setup, AGG, 1)
    assert setup.run("--send") == 0
    setup.mta.wait_queue_empty()
    assert len(setup.reports(OWN)) == len(setup.reports(AGG)) == 1
    assert setup.reports(BIG) == setup.reports(LOST) == []

    name, data = attachment(own)
    assert name == f"{RECEIVER}!test.example!{DAY}!{DAY + 86399}.xml.gz"
    assert own["Subject"] == (
        f"Report Domain: test.example Submitter: {RECEIVER} "
        f"Report-ID: <{DAY}.test.example@{RECEIVER}>"
    )
    assert own["From"] == "dmarc-reports@family.example" and own["To"] == OWN
    path = tmp_path / name
    path.write_bytes(data)
    report = parsedmarc.parse_report_file(str(path), offline=True)["report"]
    got = sorted((r["source"]["ip_address"], r["count"]) for r in report["records"])
    assert got == [("10.0.0.7", 2), ("10.0.1.7", 1)]
    assert report["policy_published"]["domain"] == "test.example"
    name, data = attachment(agg)
    assert "!ext.example!" in name and gzip.decompress(data).count(b"<count>2</count>") == 1

    # --force sends the day again.
    assert setup.run("--send", "--force") == 0
    assert len(arrived(setup, OWN, 2)) == 2


def test_dry_run_writes_the_reports_and_the_messages_it_would_send(
    setup: Setup, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert setup.run("--dry-run", str(out)) == 0
    names = sorted(p.name for p in out.iterdir())
    base = f"{RECEIVER}!test.example!{DAY}!{DAY + 86399}"
    assert f"{base}.xml.gz" in names and f"{base}.eml" in names
    # No .eml where no destination is left.
    assert not [n for n in names if n.endswith(".eml") and ("noauth" in n or "norua" in n)]
    msg = email.message_from_bytes((out / f"{base}.eml").read_bytes(), policy=email.policy.default)
    assert msg["To"] == OWN
    assert attachment(msg)[1] == (out / f"{base}.xml.gz").read_bytes()  # type: ignore[arg-type]


def test_a_store_that_cannot_be_opened_says_who_must_write_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[reports]\nstore = "sqlite:{blocked}/reports.db"\nemail = "d@family.example"\n'
    )
    assert main(["dmarc-report", "--config", str(config), "--dry-run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"reports.store sqlite:{blocked}/reports.db: cannot be opened" in err
    # The directory in the way and the user this runs as (root here), not a fixed path.
    assert f"install -d -o root -g root -m 750 {blocked} (README" in err


# --- examples/systemd and examples/cron run the same command, as the store's user ----------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SERVICE = EXAMPLES / "systemd" / "authsieve-dmarc-report.service"
TIMER = EXAMPLES / "systemd" / "authsieve-dmarc-report.timer"
CRON = EXAMPLES / "cron" / "authsieve-dmarc-report"


def unit_value(unit: Path, key: str) -> str:
    (value,) = [ln.split("=", 1)[1] for ln in unit.read_text().splitlines() if ln.startswith(key)]
    return value.strip()


def test_timer_service_and_cron_line_send_yesterdays_reports_as_vmail() -> None:
    command = unit_value(SERVICE, "ExecStart=").split()
    assert command[1:] == [
        "dmarc-report", "--config", "/etc/authsieve/config.toml", "--send",
    ]  # fmt: skip
    args = build_parser(command[1:]).parse_args(command[1:])
    assert (args.send, args.dry_run, args.day, args.force) == (True, None, None, False)
    assert unit_value(SERVICE, "User=") == "vmail" and unit_value(SERVICE, "Type=") == "oneshot"
    # Postfix's sendmail runs the setgid postdrop: nothing may set no_new_privs.
    text = SERVICE.read_text()
    for implies in ("\nNoNewPrivileges=yes", "\nRestrictAddressFamilies=", "\nPrivateDevices="):
        assert implies not in text
    # "-": a host without Postfix has no maildrop, and the unit must still start.
    assert "-/var/spool/postfix/maildrop" in unit_value(SERVICE, "ReadWritePaths=").split()
    assert unit_value(SERVICE, "RestartPreventExitStatus=") == "2"
    # A oneshot is not timed by default: a hung run must end, and be retried (its start is
    # its whole run; RuntimeMaxSec= is ignored for a oneshot, systemd-analyze says so).
    assert unit_value(SERVICE, "TimeoutStartSec=") == "30min"
    assert unit_value(TIMER, "OnCalendar=") == "*-*-* 00:10:00 UTC"
    assert unit_value(TIMER, "RandomizedDelaySec=") == "45min"
    lines = [ln.split() for ln in CRON.read_text().splitlines() if ln and ln[0].isdigit()]
    # The first run after midnight UTC, a retry later the same day (the sent log and the
    # catch-up make it harmless).
    assert [(int(f[0]), int(f[1]), f[2:5]) for f in lines] == [
        (23, 1, ["*", "*", "*"]),
        (23, 7, ["*", "*", "*"]),
    ]
    assert all(f[5] == "vmail" and f[6:] == command for f in lines)
    assert unit_value(CRON, "MAILTO=")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verifies_the_timer_and_its_service(tmp_path: Path) -> None:
    for unit in (SERVICE, TIMER):
        text = unit.read_text().replace("/usr/local/bin/authsieve", sys.executable)
        (tmp_path / unit.name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / TIMER.name), str(tmp_path / SERVICE.name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # A complaint names the unit file by its path, or (an ignored setting) by its name.
    units = [str(tmp_path), *(unit.name for unit in (SERVICE, TIMER))]
    complaints = [ln for ln in done.stderr.splitlines() if any(u in ln for u in units)]
    assert done.returncode == 0 and complaints == [], done.stderr
    calendar = subprocess.run(
        ["systemd-analyze", "calendar", unit_value(TIMER, "OnCalendar=")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Normalized form: *-*-* 00:10:00 UTC" in calendar.stdout
