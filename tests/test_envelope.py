"""Trust path: which Received header names the real SMTP client (classifier/envelope/trust.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.config import config_from_dict
from classifier.envelope.trust import Hints, recover_envelope, split_address, strip_angle
from classifier.message import Message

TRUST = config_from_dict(
    {
        "classifier": {
            "authserv_id": "mx.family.example",
            "trusted_networks": ["203.0.113.25/32", "203.0.113.26/32", "2001:db8:25::/64"],
            "trusted_forwarders": ["relay.uni.example", "198.51.100.128/25"],
        }
    }
).engine.trust

LMTP = (
    "Received: from mx.family.example by mx.family.example with LMTP id kHsGBbTrYWUoBQAA"
    " (envelope-from <sender@example.com>) for <alice@family.example>;"
    " Tue, 28 Nov 2026 10:00:03 +0000\r\n"
)
AMAVIS_BACK = (
    "Received: from localhost (localhost [127.0.0.1]) by mx.family.example (Postfix)"
    " with ESMTP id 4Sg2Vb0Q1Zz9sW1 for <alice@family.example>; Tue, 28 Nov 2026 10:00:02 +0000\r\n"
)
AMAVIS_SCAN = (
    "Received: from mx.family.example ([127.0.0.1]) by localhost (mx.family.example"
    " [127.0.0.1]) (amavisd-new, port 10024) with ESMTP id abc123 for <alice@family.example>;"
    " Tue, 28 Nov 2026 10:00:02 +0000\r\n"
)


def postfix_hop(helo: str, rdns: str, ip: str, by: str = "mx.family.example") -> str:
    return (
        f"Received: from {helo} ({rdns} [{ip}]) by {by} (Postfix) with ESMTPS id 4Sg2Va3"
        " for <alice@family.example>; Tue, 28 Nov 2026 10:00:01 +0000\r\n"
    )


def message(*headers: str, body: str = "Hello.\r\n") -> Message:
    return Message.parse("".join(headers).encode() + b"From: a@example.com\r\n\r\n" + body.encode())


def test_first_external_hop_names_the_client() -> None:
    env = recover_envelope(
        message(
            "Return-Path: <sender@example.com>\r\n",
            postfix_hop("mail.example.com", "mail.example.com", "192.0.2.10"),
        ),
        TRUST,
    )
    assert (env.client_ip, env.helo, env.rdns) == (
        "192.0.2.10",
        "mail.example.com",
        "mail.example.com",
    )
    assert env.mail_from == "sender@example.com"
    assert env.hop_index == 0
    assert env.authenticated is False


def test_forged_received_below_trusted_hop_is_ignored() -> None:
    forged = postfix_hop("trusted.bank.example", "trusted.bank.example", "127.0.0.1", by="x")
    env = recover_envelope(
        message(
            "Return-Path: <a@example.com>\r\n",
            postfix_hop("spammer.example", "unknown", "198.51.100.7"),
            forged,
        ),
        TRUST,
    )
    assert env.client_ip == "198.51.100.7"
    assert env.rdns is None  # "unknown" means no reverse DNS
    assert env.hop_index == 0


def test_amavis_and_lmtp_hops_are_stepped_over() -> None:
    env = recover_envelope(
        message(
            "Return-Path: <sender@example.com>\r\n",
            LMTP,
            AMAVIS_BACK,
            AMAVIS_SCAN,
            postfix_hop("mail.example.com", "mail.example.com", "192.0.2.10"),
            postfix_hop("forged.example", "forged.example", "198.51.100.99", by="mail.example.com"),
        ),
        TRUST,
    )
    assert env.client_ip == "192.0.2.10"
    assert env.hop_index == 3
    assert env.rcpt == "alice@family.example"
    assert any("stepped over" in e for e in env.evidence)


def test_backup_mx_in_trusted_networks_is_stepped_over() -> None:
    env = recover_envelope(
        message(
            postfix_hop("mx2.family.example", "mx2.family.example", "203.0.113.26"),
            postfix_hop(
                "mail.example.net", "mail.example.net", "192.0.2.44", by="mx2.family.example"
            ),
        ),
        TRUST,
    )
    assert env.client_ip == "192.0.2.44"
    assert env.hop_index == 1


def test_authenticated_submission_is_detected() -> None:
    hop = (
        "Received: from [192.168.1.20] (unknown [198.51.100.23]) (Authenticated sender:"
        " bob@family.example) by mx.family.example (Postfix) with ESMTPSA id 4Sg3;"
        " Tue, 28 Nov 2026 10:00:01 +0000\r\n"
    )
    env = recover_envelope(message(hop), TRUST)
    assert env.authenticated is True
    assert env.client_ip == "198.51.100.23"


def test_ipv6_client() -> None:
    env = recover_envelope(
        message(postfix_hop("mail6.example.org", "mail6.example.org", "IPv6:2001:DB8:0:0::53")),
        TRUST,
    )
    assert env.client_ip == "2001:db8::53"


def test_ipv6_hop_inside_trusted_network_is_stepped_over() -> None:
    env = recover_envelope(
        message(
            postfix_hop("mx.family.example", "mx.family.example", "IPv6:2001:db8:25::25"),
            postfix_hop("mail.example.com", "mail.example.com", "192.0.2.10"),
        ),
        TRUST,
    )
    assert env.client_ip == "192.0.2.10"


def test_ip_literal_helo_is_kept() -> None:
    env = recover_envelope(message(postfix_hop("[192.0.2.77]", "unknown", "192.0.2.77")), TRUST)
    assert env.helo == "[192.0.2.77]"
    assert env.client_ip == "192.0.2.77"


def test_null_sender() -> None:
    env = recover_envelope(
        message(
            "Return-Path: <>\r\n", postfix_hop("mx.example.com", "mx.example.com", "192.0.2.5")
        ),
        TRUST,
    )
    assert env.mail_from == ""
    assert env.mail_from_domain == ""


def test_topmost_of_several_return_paths_wins() -> None:
    env = recover_envelope(
        message(
            "Return-Path: <real@example.com>\r\n",
            postfix_hop("mx.example.com", "mx.example.com", "192.0.2.5"),
            "Return-Path: <forged@bank.example>\r\n",
        ),
        TRUST,
    )
    assert env.mail_from == "real@example.com"
    assert any("topmost" in e for e in env.evidence)


def test_trusted_forwarder_by_rdns_is_recorded() -> None:
    env = recover_envelope(
        message(
            postfix_hop("relay.uni.example", "out1.relay.uni.example", "192.0.2.200"),
            postfix_hop(
                "mail.example.org", "mail.example.org", "198.51.100.50", by="relay.uni.example"
            ),
        ),
        TRUST,
    )
    assert env.forwarded_by == "out1.relay.uni.example"
    assert env.client_ip == "198.51.100.50"


def test_trusted_forwarder_by_network_is_recorded() -> None:
    env = recover_envelope(
        message(
            postfix_hop("fwd.example", "fwd.example", "198.51.100.200"),
            postfix_hop("mail.example.org", "mail.example.org", "192.0.2.60", by="fwd.example"),
        ),
        TRUST,
    )
    assert env.forwarded_by == "fwd.example"
    assert env.client_ip == "192.0.2.60"


def test_forwarder_claimed_only_in_helo_is_not_trusted() -> None:
    env = recover_envelope(
        message(
            postfix_hop("relay.uni.example", "unknown", "192.0.2.201"),
            postfix_hop("mail.example.org", "mail.example.org", "198.51.100.50"),
        ),
        TRUST,
    )
    assert env.forwarded_by is None
    assert env.client_ip == "192.0.2.201"


def test_helo_posing_as_a_local_hop_fails_under_any_mail_name() -> None:
    # A client's HELO "x [127.0.0.1] by mx.family.example with LMTP" must not turn our own
    # hop into a local hand-over, or the forged hop below would name the client.
    helo = "x [127.0.0.1] by mx.family.example with LMTP"
    for mail_name in ("Postfix", "Mailserver"):
        ours = postfix_hop(helo, "evil.example", "198.51.100.7").replace(
            "(Postfix)", f"({mail_name})"
        )
        forged = postfix_hop("good.example", "good.example", "192.0.2.99", by="evil.example")
        env = recover_envelope(message(ours, forged), TRUST)
        assert (env.client_ip, env.hop_index, env.helo) == ("198.51.100.7", 0, helo), mail_name


def test_hints_take_precedence_and_disagreement_is_recorded() -> None:
    env = recover_envelope(
        message(
            "Return-Path: <a@example.com>\r\n",
            postfix_hop("mail.example.com", "mail.example.com", "192.0.2.10"),
        ),
        TRUST,
        Hints(sender="b@example.com", recipient="bob@family.example", client_address="192.0.2.11"),
    )
    assert env.client_ip == "192.0.2.11"
    assert env.mail_from == "b@example.com"
    assert env.rcpt == "bob@family.example"
    assert any("differs" in e and "192.0.2.10" in e for e in env.evidence)
    assert any("differs" in e and "Return-Path" in e for e in env.evidence)


def test_unreadable_received_is_reported_not_raised() -> None:
    env = recover_envelope(message("Received: \x00\x01 garbage ;;; (((\r\n"), TRUST)
    assert env.client_ip is None
    assert any("unparsed Received" in e for e in env.evidence)


def test_no_received_headers_means_local() -> None:
    env = recover_envelope(message(), TRUST)
    assert env.client_ip is None
    assert "no Received headers" in env.evidence


def test_envelope_from_comment_of_trusted_hop_gives_sender() -> None:
    env = recover_envelope(
        message(LMTP, postfix_hop("mail.example.com", "mail.example.com", "192.0.2.10")),
        TRUST,
    )
    assert env.mail_from == "sender@example.com"


def test_hop_without_client_address_stops_the_walk() -> None:
    hop = (
        "Received: from mystery by mx.family.example (Postfix) with ESMTP id 4Sg;"
        " Tue, 28 Nov 2026 10:00:01 +0000\r\n"
    )
    env = recover_envelope(
        message(hop, postfix_hop("forged.example", "forged.example", "192.0.2.99")), TRUST
    )
    assert env.client_ip is None
    assert any("no client address" in e for e in env.evidence)


# --- issue 12: forgeries that reached INBOX -------------------------------------------------


def lmtp_hop(mail_from: str, rcpt: str = "<alice@family.example>") -> str:
    """Dovecot LMTP's own line, with the envelope sender exactly as the client gave it."""
    return (
        "Received: from mx.family.example ([127.0.0.1])\r\n\tby mx.family.example with LMTP"
        f"\r\n\tid kHsGBbTrYWUoBQAA\r\n\t(envelope-from <{mail_from}>)\r\n\tfor {rcpt};"
        " Tue, 28 Nov 2026 10:00:03 +0000\r\n"
    )


FORGED_AUTH_HOP = (
    "Received: from laptop (dsl.bank.example [198.51.100.7]) (Authenticated sender: ceo)"
    " by smtp.bank.example (Postfix) with ESMTPSA id 1 for <alice@family.example>;"
    " Tue, 28 Nov 2026 09:59:00 +0000\r\n"
)


@pytest.mark.parametrize(
    "mail_from",
    [
        '"x (Authenticated sender: bob) y"@evil.example',
        '"x) with ESMTPSA id y ("@evil.example',
        '"x) (auth: PLAIN bob, "@evil.example',
        '"x) (account bob) ("@evil.example',
        '"x) by mx.family.example with LMTP ("@evil.example',
        '"\\") (Authenticated sender: bob) (\\""@evil.example',
    ],
)
def test_lmtp_envelope_from_with_auth_words_is_not_our_own_user(mail_from: str) -> None:
    env = recover_envelope(
        message(
            lmtp_hop(mail_from),
            postfix_hop("mail.evil.example", "mail.evil.example", "192.0.2.66"),
        ),
        TRUST,
    )
    assert (env.client_ip, env.helo, env.authenticated) == (
        "192.0.2.66",
        "mail.evil.example",
        False,
    )
    assert env.hop_index == 1


def test_lmtp_hop_keeps_the_quoted_envelope_sender_whole() -> None:
    mail_from = '"x (Authenticated sender: bob) y"@evil.example'
    env = recover_envelope(message(lmtp_hop(mail_from)), TRUST)
    assert (env.mail_from, env.mail_from_domain) == (mail_from, "evil.example")
    assert env.authenticated is False


@pytest.mark.parametrize(
    "rdns",
    ["qmail-scanner.evil.example", "qmail-scanner", "unix.evil.example", "local.evil.example"],
)
def test_reverse_name_with_local_marker_does_not_step_over_the_client(rdns: str) -> None:
    env = recover_envelope(
        message(LMTP, postfix_hop("mail.evil.example", rdns, "192.0.2.66"), FORGED_AUTH_HOP),
        TRUST,
    )
    assert (env.client_ip, env.helo, env.authenticated) == (
        "192.0.2.66",
        "mail.evil.example",
        False,
    )
    assert env.hop_index == 1


def test_postfix_says_no_login_so_a_claimed_auth_is_ignored() -> None:
    # Even a hop that really reads as AUTH counts for nothing when Postfix, which wrote
    # it, says the client did not log in (pipe(8) ${sasl_username} empty).
    forged_top = FORGED_AUTH_HOP.replace("smtp.bank.example", "mx.family.example")
    hints = Hints(client_address="198.51.100.7", client_helo="laptop", sasl_username="")
    env = recover_envelope(message(forged_top), TRUST, hints)
    assert (env.client_ip, env.authenticated) == ("198.51.100.7", False)
    assert any("no SASL login" in e for e in env.evidence)


def test_postfix_login_makes_our_own_user_without_any_header() -> None:
    hints = Hints(client_address="192.0.2.10", client_helo="laptop", sasl_username="alice")
    env = recover_envelope(
        message(postfix_hop("laptop", "dsl.example.net", "192.0.2.10")), TRUST, hints
    )
    assert (env.client_ip, env.authenticated) == ("192.0.2.10", True)


def test_hints_of_a_loopback_reinjection_do_not_name_the_client() -> None:
    # Behind a content filter, pipe(8)'s macros describe the filter on 127.0.0.1.
    hints = Hints(client_address="127.0.0.1", client_helo="localhost", sasl_username="")
    env = recover_envelope(
        message(
            AMAVIS_BACK,
            AMAVIS_SCAN,
            postfix_hop("laptop", "dsl.example.net", "192.0.2.10").replace("ESMTPS", "ESMTPSA"),
        ),
        TRUST,
        hints,
    )
    assert (env.client_ip, env.helo, env.authenticated) == ("192.0.2.10", "laptop", True)


QMAIL_NETWORK = "Received: (qmail 4711 invoked from network); 28 Nov 2026 10:00:02 -0000\r\n"
QMAIL_SMTPD = (
    "Received: from mail.example.net (HELO mail.example.net) (192.0.2.33)\r\n"
    "  by mx.family.example with SMTP; 28 Nov 2026 10:00:01 -0000\r\n"
)


def test_qmail_queue_line_is_stepped_over_to_the_smtpd_hop() -> None:
    env = recover_envelope(message(QMAIL_NETWORK, QMAIL_SMTPD), TRUST)
    assert (env.client_ip, env.helo, env.hop_index) == ("192.0.2.33", "mail.example.net", 1)


def test_qmail_local_submission_has_no_network_client() -> None:
    env = recover_envelope(
        message("Received: (qmail 4712 invoked by uid 1000); 28 Nov 2026 10:00:02 -0000\r\n"),
        TRUST,
    )
    assert (env.client_ip, env.authenticated) == (None, False)
    assert "locally submitted" in env.evidence[-2] + env.evidence[-1]


# --- quoted local parts (RFC 5321 §4.1.2) -----------------------------------------------------

CLIENT_HOP = postfix_hop("mail.sender.example", "mail.sender.example", "192.0.2.10")


def test_quoted_local_part_holding_at_gives_the_domain_after_the_last_at() -> None:
    env = recover_envelope(
        message('Return-Path: <"john@evil.test"@sender.example>\r\n', CLIENT_HOP), TRUST
    )
    assert env.mail_from == '"john@evil.test"@sender.example'
    assert env.mail_from_domain == "sender.example"


def test_quoted_local_part_keeps_its_quotes_from_return_path_and_hint() -> None:
    addr = '"ceo;dmarc=pass\\"x"@shop.example'
    from_header = recover_envelope(message(f"Return-Path: <{addr}>\r\n", CLIENT_HOP), TRUST)
    from_hint = recover_envelope(message(CLIENT_HOP), TRUST, Hints(sender=f"<{addr}>"))
    assert from_header.mail_from == from_hint.mail_from == addr
    assert from_header.mail_from_domain == from_hint.mail_from_domain == "shop.example"


@pytest.mark.parametrize(
    ("text", "bare"),
    [
        ("<a@b.example>", "a@b.example"),
        (" <> ", ""),
        ('<"a>b"@x.example>', '"a>b"@x.example'),
        ('<"<x@y>"@z.example>', '"<x@y>"@z.example'),
        ('"a<b"@x.example', '"a<b"@x.example'),
        ("Name <a@b.example>", "a@b.example"),
    ],
)
def test_strip_angle_keeps_quoted_local_parts_whole(text: str, bare: str) -> None:
    assert strip_angle(text) == bare


# Runs of white space are left out: a header value's white space is collapsed when it is
# read (classifier/message.py unfolded_value), a quoted local part's too.
QUOTED_TEXT = st.text(
    st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from(["@", "<", ">", '"']),
    max_size=30,
).filter(lambda t: "  " not in t and t == t.strip())


@given(local=QUOTED_TEXT, domain=st.from_regex(r"[a-z][a-z0-9-]{0,10}\.example", fullmatch=True))
@settings(max_examples=300, deadline=None)
def test_any_quoted_local_part_leaves_the_domain_and_the_quotes_alone(
    local: str, domain: str
) -> None:
    quoted = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    addr = f"{quoted}@{domain}"
    assert strip_angle(f"<{addr}>") == addr
    assert split_address(addr) == (quoted, domain)
    env = recover_envelope(message(f"Return-Path: <{addr}>\r\n", CLIENT_HOP), TRUST)
    assert (env.mail_from, env.mail_from_domain) == (addr, domain)


def test_forwarder_named_only_by_an_unconfirmed_reverse_name_is_not_trusted() -> None:
    # Sendmail writes "(may be forged)" when the PTR did not confirm: the name is the
    # sender's own, and relay.uni.example is a trusted forwarder by name.
    hop = (
        "Received: from relay (relay.uni.example [192.0.2.44] (may be forged))"
        " by mx.family.example (8.17.1/8.17.1) with ESMTP id 3ABC;"
        " Tue, 28 Nov 2026 10:00:01 +0000\r\n"
    )
    env = recover_envelope(message(hop, FORGED_AUTH_HOP), TRUST)
    assert (env.client_ip, env.forwarded_by, env.hop_index) == ("192.0.2.44", None, 0)
    confirmed = hop.replace(" (may be forged)", "")
    env = recover_envelope(message(confirmed, postfix_hop("a", "b.example", "192.0.2.45")), TRUST)
    assert (env.client_ip, env.forwarded_by) == ("192.0.2.45", "relay.uni.example")
