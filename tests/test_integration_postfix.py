"""`authsieve pipe` behind a real Postfix, delivering through a real dovecot-lda and Sieve.

One private Postfix per module (tests/mta.py) relays ``test.example`` to the
``authsieve`` pipe(8) service; swaks plays external SMTP clients with
XCLIENT; DNS comes from the loopback test server.  Every test counts what it
sent and what arrived: nothing may be lost, nothing delivered twice.
"""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier.auth.facts import parse_header_value
from tests.dnsserver import DnsTestServer, free_udp_port
from tests.mta import REPO, Delivered, Mta, run_as, throwaway_mta

pytestmark = pytest.mark.integration

GOOD_CLIENT = "203.0.113.9"  # listed in pass.example's SPF record
STRANGER = "198.51.100.66"  # listed nowhere
ZONE = """
pass.example.          TXT "v=spf1 ip4:203.0.113.9 -all"
_dmarc.pass.example.   TXT "v=DMARC1; p=reject"
mail.pass.example.     TXT "v=spf1 ip4:203.0.113.9 -all"
fail.example.          TXT "v=spf1 ip4:192.0.2.7 -all"
reject.example.        TXT "v=spf1 ip4:192.0.2.7 -all"
_dmarc.reject.example. TXT "v=DMARC1; p=reject"
"""
ENFORCED = "bob@test.example"
OBSERVER = "olga@test.example"
BROKEN = "dora@test.example"  # the one whose Maildir the deferral test breaks
SORTER = "pat@test.example"  # her own Sieve files mail to pat+news@ into News
SORTER_SIEVE = """\
require ["envelope", "subaddress", "fileinto", "mailbox"];
if envelope :detail "to" "news" { fileinto :create "News"; }
"""


def config_text(dns_server: str, root: Path, timeout: float = 1, budget: float = 3) -> str:
    """Gives authsieve's config: enforce for everyone, observe for OBSERVER."""
    return f"""\
[classifier]
authserv_id = "mx.test.example"
dns_server = "{dns_server}"
dns_timeout = {timeout}
dns_budget = {budget}
log_file = "{root}/authsieve.log"

[policy]
mode = "enforce"
spf_fail = "junk"
dmarc_reject = "quarantine"

[users."{OBSERVER}"]
mode = "observe"
"""


def generated_sieve(config: Path, user: str) -> str:
    """Gives the script `authsieve sieve generate` writes for user."""
    argv = [sys.executable, "-m", "classifier.commands.main", "sieve", "generate"]
    argv += ["--config", str(config), "--user", user]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"sieve generate failed: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def mta() -> Iterator[Mta]:
    with throwaway_mta() as running:
        if isinstance(running, str):
            pytest.skip(running)
        dns = DnsTestServer(ZONE)
        try:
            running.set_config(config_text(dns.address, running.root))
            for user in (ENFORCED, OBSERVER, BROKEN):
                running.add_user(user, generated_sieve(running.config, user))
            running.add_user(SORTER, SORTER_SIEVE)
            wrapper = str(running.root / "bin" / "authsieve")
            proc = run_as(running.user, [wrapper, "pipe", "--help"], {})
            assert proc.returncode == 0, f"authsieve pipe cannot start: {proc.stderr.decode()}"
            yield running
        finally:
            dns.stop()


def message(mail_from_header: str, token: str) -> bytes:
    """Gives a plain message whose Message-ID and body carry token."""
    return (
        f"From: {mail_from_header}\r\nTo: someone@test.example\r\n"
        f"Subject: integration {token}\r\nMessage-ID: <{token}@sender.example>\r\n"
        f"Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n\r\nbody of {token}\r\n"
    ).encode()


def send(
    mta: Mta, *, mail_from: str, header_from: str, rcpt: str, client_ip: str, helo: str
) -> tuple[str, str]:
    """Sends one message as an external client; gives (token, Postfix queue id)."""
    token = f"t{uuid.uuid4().hex[:12]}"
    queue_id = mta.send(
        message(header_from, token),
        mail_from=mail_from,
        rcpt=rcpt,
        client_ip=client_ip,
        helo=helo,
        token=token,
    )
    return token, queue_id


def verdict(delivered: Delivered) -> dict[str, str]:
    """Gives the fields of the topmost X-Authsieve header of a delivered message."""
    msg = email.message_from_bytes(delivered.data, policy=email.policy.compat32)
    values = msg.get_all("X-Authsieve") or []
    assert len(values) == 1, f"expected one X-Authsieve header, got {values}"
    return parse_header_value(str(values[0]))


def mailbox_of(rcpt: str) -> str:
    """Gives the mailbox an address belongs to: without its +detail (recipient_delimiter)."""
    local, _, domain = rcpt.partition("@")
    return f"{local.partition('+')[0]}@{domain}"


def header(delivered: Delivered, name: str) -> str:
    msg = email.message_from_bytes(delivered.data, policy=email.policy.compat32)
    return " ".join(str(msg.get(name, "")).split())


def test_spf_pass_lands_in_inbox_with_our_three_headers(mta: Mta) -> None:
    token, queue_id = send(
        mta,
        mail_from="alice@pass.example",
        header_from="Alice <alice@pass.example>",
        rcpt=ENFORCED,
        client_ip=GOOD_CLIENT,
        helo="mail.pass.example",
    )
    got = mta.wait_delivered(token)
    assert (got.user, got.folder) == (ENFORCED, "INBOX")
    fields = verdict(got)
    assert (fields["verdict"], fields["spf"], fields["dmarc"]) == ("inbox", "pass", "pass")
    results = header(got, "Authentication-Results")
    assert results.startswith("mx.test.example;")
    assert "spf=pass" in results and "smtp.mailfrom=alice@pass.example" in results
    assert "dmarc=pass" in results and "header.from=pass.example" in results
    received_spf = header(got, "Received-SPF")
    assert received_spf.startswith("Pass ") and f"client-ip={GOOD_CLIENT};" in received_spf
    mta.wait_queue_empty()
    # The delivery line names Postfix's queue id (--queue-id=${queue_id}), to find the
    # message in Postfix's log as well.
    lines = (mta.root / "authsieve.log").read_text().splitlines()
    assert any(f"delivered to={ENFORCED} queue={queue_id} " in line for line in lines), lines


def test_spf_fail_is_filed_into_junk(mta: Mta) -> None:
    token, _ = send(
        mta,
        mail_from="mallory@fail.example",
        header_from="mallory@fail.example",
        rcpt=ENFORCED,
        client_ip=STRANGER,
        helo="mail.fail.example",
    )
    got = mta.wait_delivered(token)
    assert (got.user, got.folder) == (ENFORCED, "Junk")
    fields = verdict(got)
    assert (fields["verdict"], fields["mode"], fields["spf"]) == ("junk", "enforce", "fail")
    assert header(got, "Received-SPF").startswith("Fail ")
    mta.wait_queue_empty()


def test_dmarc_fail_under_p_reject_is_quarantined(mta: Mta) -> None:
    # SPF passes for the envelope domain, which is not aligned with From: DMARC fails.
    token, _ = send(
        mta,
        mail_from="bounces@pass.example",
        header_from="The CEO <ceo@reject.example>",
        rcpt=ENFORCED,
        client_ip=GOOD_CLIENT,
        helo="mail.pass.example",
    )
    got = mta.wait_delivered(token)
    assert (got.user, got.folder) == (ENFORCED, "Quarantine")
    fields = verdict(got)
    assert (fields["verdict"], fields["spf"]) == ("quarantine", "pass")
    assert (fields["dmarc"], fields["policy"], fields["from-domain"]) == (
        "fail",
        "reject",
        "reject.example",
    )
    assert "dmarc=fail" in header(got, "Authentication-Results")
    mta.wait_queue_empty()


def test_observe_mode_delivers_to_inbox_with_the_would_be_verdict(mta: Mta) -> None:
    token, _ = send(
        mta,
        mail_from="mallory@fail.example",
        header_from="mallory@fail.example",
        rcpt=OBSERVER,
        client_ip=STRANGER,
        helo="mail.fail.example",
    )
    got = mta.wait_delivered(token)
    assert (got.user, got.folder) == (OBSERVER, "INBOX")
    fields = verdict(got)
    assert (fields["verdict"], fields["mode"], fields["spf"]) == ("inbox", "observe", "fail")
    assert "would junk" in fields["reason"]
    mta.wait_queue_empty()


def test_dns_server_down_delivers_to_inbox_with_temperror(mta: Mta) -> None:
    # A stopped server and a port where nothing listens look the same to the resolver.
    down = f"127.0.0.1:{free_udp_port()}"
    before = mta.config.read_text()
    mta.set_config(config_text(down, mta.root, timeout=0.5, budget=1.5))
    try:
        # This sender's SPF fails when DNS answers: only the temperror keeps it in the INBOX.
        token, _ = send(
            mta,
            mail_from="mallory@fail.example",
            header_from="mallory@fail.example",
            rcpt=ENFORCED,
            client_ip=STRANGER,
            helo="mail.fail.example",
        )
        got = mta.wait_delivered(token)
    finally:
        mta.set_config(before)
    assert (got.user, got.folder) == (ENFORCED, "INBOX")
    fields = verdict(got)
    assert (fields["verdict"], fields["spf"], fields["dmarc"]) == (
        "inbox",
        "temperror",
        "temperror",
    )
    assert "spf=temperror" in header(got, "Authentication-Results")
    mta.wait_queue_empty()


def test_bounce_with_null_sender_is_delivered(mta: Mta) -> None:
    # MAIL FROM:<> (a DSN): ${sender} is empty, SPF checks the HELO name instead.
    token, _ = send(
        mta,
        mail_from="<>",
        header_from="Mail Delivery System <MAILER-DAEMON@mail.pass.example>",
        rcpt=ENFORCED,
        client_ip=GOOD_CLIENT,
        helo="mail.pass.example",
    )
    got = mta.wait_delivered(token)
    assert (got.user, got.folder) == (ENFORCED, "INBOX")
    assert header(got, "Return-Path") == "<>"
    fields = verdict(got)
    assert (fields["verdict"], fields["spf"], fields["dmarc"]) == ("inbox", "pass", "pass")
    mta.wait_queue_empty()


def test_unwritable_maildir_defers_then_delivers_after_fix_and_flush(mta: Mta) -> None:
    maildir = mta.maildir(BROKEN)
    subdirs = [maildir / sub for sub in ("tmp", "new", "cur")]
    for d in subdirs:
        d.chmod(0o500)
    try:
        token, queue_id = send(
            mta,
            mail_from="alice@pass.example",
            header_from="alice@pass.example",
            rcpt=BROKEN,
            client_ip=GOOD_CLIENT,
            helo="mail.pass.example",
        )
        deferred = mta.wait_deferred(queue_id)
        assert [r["address"] for r in deferred["recipients"]] == [BROKEN]
        # What Postfix shows in mailq is dovecot-lda's own line, not only its exit code.
        reason = str(deferred["recipients"][0].get("delay_reason"))
        assert "dovecot-lda exited 75: Internal error occurred." in reason
        assert mta.find(token) == []
    finally:
        for d in subdirs:
            d.chmod(0o700)
    mta.flush()
    got = mta.wait_delivered(token, retrying=True)
    assert (got.user, got.folder) == (BROKEN, "INBOX")
    assert verdict(got)["verdict"] == "inbox"
    mta.wait_queue_empty()


def test_plus_address_lands_in_the_users_mailbox_filed_as_without_it(mta: Mta) -> None:
    # recipient_delimiter = + in Postfix and Dovecot: bob+news@ is bob's mailbox.
    plus = ENFORCED.replace("@", "+news@")
    good, _ = send(
        mta,
        mail_from="alice@pass.example",
        header_from="alice@pass.example",
        rcpt=plus,
        client_ip=GOOD_CLIENT,
        helo="mail.pass.example",
    )
    bad, _ = send(
        mta,
        mail_from="mallory@fail.example",
        header_from="mallory@fail.example",
        rcpt=plus,
        client_ip=STRANGER,
        helo="mail.fail.example",
    )
    inbox, junk = mta.wait_delivered(good), mta.wait_delivered(bad)
    assert (inbox.user, inbox.folder, verdict(inbox)["verdict"]) == (ENFORCED, "INBOX", "inbox")
    assert (junk.user, junk.folder, verdict(junk)["verdict"]) == (ENFORCED, "Junk", "junk")
    assert header(inbox, "Delivered-To") == plus
    mta.wait_queue_empty()


def test_plus_address_is_decided_by_the_users_own_policy(mta: Mta) -> None:
    token, _ = send(
        mta,
        mail_from="mallory@fail.example",
        header_from="mallory@fail.example",
        rcpt=OBSERVER.replace("@", "+shop@"),
        client_ip=STRANGER,
        helo="mail.fail.example",
    )
    got = mta.wait_delivered(token)
    assert (got.user, got.folder) == (OBSERVER, "INBOX")
    fields = verdict(got)
    assert (fields["verdict"], fields["mode"], fields["spf"]) == ("inbox", "observe", "fail")
    mta.wait_queue_empty()


def test_sieve_sees_the_plus_detail_of_the_envelope_recipient(mta: Mta) -> None:
    tokens = [
        send(
            mta,
            mail_from="alice@pass.example",
            header_from="alice@pass.example",
            rcpt=rcpt,
            client_ip=GOOD_CLIENT,
            helo="mail.pass.example",
        )[0]
        for rcpt in (SORTER.replace("@", "+news@"), SORTER)
    ]
    news, plain = (mta.wait_delivered(token) for token in tokens)
    assert (news.user, news.folder) == (SORTER, "News")
    assert (plain.user, plain.folder) == (SORTER, "INBOX")
    mta.wait_queue_empty()


def test_every_message_sent_is_delivered_exactly_once(mta: Mta) -> None:
    mta.wait_queue_empty()
    delivered = mta.mailboxes()
    for sent in mta.sent:
        copies = [m.user for m in delivered if sent.token.encode() in m.data]
        assert copies == [mailbox_of(sent.rcpt)], f"{sent}: delivered to {copies}"
    assert len(delivered) == len(mta.sent)


# A hop the sender wrote whole, below Postfix's own: it claims an AUTH login and names a
# client that SPF would pass for pass.example and reject.example alike.
FORGED_HOPS = (
    b"Received: from laptop (dsl.reject.example [192.0.2.7]) (Authenticated sender: ceo)\r\n"
    b"\tby mx.test.example (Postfix) with ESMTPSA id 4ZZZ for <bob@test.example>;\r\n"
    b"\tSat, 01 Mar 2025 09:59:00 +0000\r\n"
    b"Received: (qmail 1 invoked by uid 0); 01 Mar 2025 09:58:00 -0000\r\n"
)


@pytest.mark.parametrize(
    "mail_from, helo, client_name",
    [
        # issue 12, 1: an AUTH phrase in a quoted local part (RFC 5321 §4.1.2)
        ('"x (Authenticated sender: bob) y"@reject.example', "mail.reject.example", None),
        ('"x) with ESMTPSA id y ("@reject.example', "mail.reject.example", None),
        ('"x) (auth: PLAIN bob, "@reject.example', "mail.reject.example", None),
        ('"x) (account bob) ("@reject.example', "mail.reject.example", None),
        # issue 12, 2: a reverse name that reads as a local re-queue
        ("ceo@reject.example", "mail.reject.example", "qmail-scanner.reject.example"),
        ("ceo@reject.example", "mail.reject.example", "local.unix.reject.example"),
        # marker words in the HELO, which Postfix keeps but for its parentheses
        ("ceo@reject.example", "x (Authenticated sender: bob) with ESMTPSA [local]", None),
    ],
)
def test_forged_trust_words_through_real_postfix_are_quarantined(
    mta: Mta, mail_from: str, helo: str, client_name: str | None
) -> None:
    token = f"t{uuid.uuid4().hex[:12]}"
    data = FORGED_HOPS + message("The CEO <ceo@reject.example>", token)
    mta.send(
        data,
        token=token,
        mail_from=mail_from,
        rcpt=ENFORCED,
        client_ip=STRANGER,
        helo=helo,
        client_name=client_name or "[UNAVAILABLE]",
    )
    got = mta.wait_delivered(token)
    fields = verdict(got)
    assert (got.folder, fields["verdict"], fields["dmarc"]) == ("Quarantine", "quarantine", "fail")
    assert fields.get("submission", "no") == "no", fields
    assert f"client-ip={STRANGER};" in header(got, "Received-SPF")
    mta.wait_queue_empty()
