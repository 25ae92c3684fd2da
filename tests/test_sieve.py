"""The generated Sieve script, run by the real Pigeonhole (sievec, sieve-test).

The differential test is the contract: for every annotated message and every
policy, the folder Pigeonhole picks equals the verdict `decide` computed.
"""

from __future__ import annotations

import argparse
import io
import random
from dataclasses import replace
from pathlib import Path

import pytest

from classifier.annotate import defuse, fold
from classifier.auth.facts import AuthFacts, render_header_value
from classifier.config import config_from_dict
from classifier.mailstore.quarantine import allow_sender_in_config
from classifier.message import Message
from classifier.policies import Policies, Policy
from classifier.policy.verdict import Verdict, decide
from sieve.commands import cmd_sieve_generate, cmd_sieve_install
from sieve.generate import field_regex, generate_global_script, generate_script, sieve_string
from sieve.install import InstallError, install_to_dir
from sieve.pigeonhole import Pigeonhole, find_tool, parse_sieve_test_output

AUTHSERV = "mx.example.org"
FOLDER_ACTION = {"INBOX": "inbox", "Junk": "junk", "Quarantine": "quarantine"}
HAVE_PIGEONHOLE = bool(find_tool("sievec") and find_tool("sieve-test"))
needs_pigeonhole = pytest.mark.skipif(
    not HAVE_PIGEONHOLE,
    reason="Pigeonhole's sievec/sieve-test not installed (Debian package dovecot-sieve)",
)

CONFIG = {
    "classifier": {"authserv_id": AUTHSERV},
    "policy": {
        "blocked_domain_suffixes": [".cyou"],
        "allow_senders": ["@friends.example", "ann@example.com"],
    },
    "users": {
        "observer@example.org": {"mode": "observe"},
        "strict@example.org": {
            "spf_fail": "quarantine",
            "spf_softfail": "junk",
            "spf_neutral": "junk",
            "spf_none": "junk",
            "spf_permerror": "quarantine",
            "dkim_fail": "junk",
            "dmarc_quarantine": "quarantine",
            "dmarc_none": "junk",
            "dmarc_permerror": "quarantine",
            "internal_error": "junk",
            "blocked_domain_suffixes": [".cyou", ".top"],
            "blocked_action": "quarantine",
            "allow_senders": [],
        },
        "Lenient@Example.org": {
            "spf_fail": "inbox",
            "dmarc_reject": "junk",
            "dmarc_quarantine": "inbox",
            "dmarc_permerror": "inbox",
            "internal_error": "quarantine",
            "blocked_domain_suffixes": [],
            "allow_senders": ["@example.com", "@friends.example", "boss@shop.cyou"],
        },
        # A name with ERE and quoted-string specials: its branch must match it literally.
        "team.lead+ops@example.org": {"spf_fail": "quarantine", "spf_softfail": "junk"},
    },
}
POLICIES = config_from_dict(CONFIG, source="test.toml").policies
USERS = ("", "observer@example.org", "strict@example.org", "lenient@example.org")


def header_value(facts: AuthFacts, verdict: Verdict, policy: Policy, reason: str = "") -> str:
    """Gives the X-Authsieve value as the annotator writes it (`Evaluation.header_value`)."""
    return render_header_value(
        facts,
        AUTHSERV,
        verdict.action,
        policy.mode,
        reason or "; ".join(verdict.reasons),
        allowed=bool(verdict.allowed),
        user=policy.user,
    )


def annotated(value: str, from_address: str, extra: bytes = b"", top: bytes = b"") -> bytes:
    """Gives a delivered message whose topmost X-Authsieve has value, folded as annotate does."""
    return (
        top
        + fold("X-Authsieve", value, b"\r\n")
        + extra
        + b"Received: from mx.sender.example ([198.51.100.7]) by mx.example.org\r\n"
        + f"From: Someone <{from_address}>\r\n".encode()
        + b"To: user@example.org\r\nSubject: test\r\n\r\nHello.\r\n"
    )


def folder_of(run_stores: tuple[str, ...]) -> str:
    assert len(run_stores) == 1, run_stores
    return FOLDER_ACTION.get(run_stores[0], run_stores[0])


@pytest.fixture(scope="module")
def pigeonhole():
    if not HAVE_PIGEONHOLE:
        pytest.skip("Pigeonhole's sievec/sieve-test not installed (Debian package dovecot-sieve)")
    with Pigeonhole() as ph:
        yield ph


def compiled(ph: Pigeonhole, policy: Policy, name: str, authserv_id: str = AUTHSERV) -> str:
    result = ph.compile(generate_script(policy, authserv_id), name)
    assert result.ok, result.errors
    return name


# --- the grid of messages ---------------------------------------------------------------------

DOMAINS = ("example.com", "friends.example", "shop.cyou", "news.top", "bank.example", "")
MAILFROM_DOMAINS = ("example.com", "bulk.cyou", "", "friends.example", "bounce.bank.example")


def grid(count: int = 80, seed: int = 4) -> list[AuthFacts]:
    """Gives varied facts: every result word, DMARC policy, suffix, allow, submission, ARC."""
    rng = random.Random(seed)
    spf = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror", "internal")
    dkim = ("pass", "fail", "none", "temperror", "permerror", "internal")
    dmarc = ("pass", "fail", "fail", "none", "temperror", "permerror", "permerror", "internal")
    out: list[AuthFacts] = []
    for i in range(count):
        from_domain = rng.choice(DOMAINS)
        local = rng.choice(("ann", "boss", "news"))
        address = f"{local}@{from_domain or 'unknown.invalid'}"
        if rng.random() < 0.1:  # From address of one domain, authenticated domain another
            address = f"{local}@{rng.choice(DOMAINS[:3])}"
        arc_trusted = rng.random() < 0.25
        out.append(
            AuthFacts(
                spf=spf[i % len(spf)] if i < 2 * len(spf) else rng.choice(spf),
                helo_spf=rng.choice(spf),
                dkim=rng.choice(dkim),
                arc=rng.choice(("pass", "fail", "none", "internal")),
                dmarc=rng.choice(dmarc),
                dmarc_policy=rng.choice(("", "none", "quarantine", "reject", "reject")),
                from_domain=from_domain,
                mailfrom_domain=rng.choice(MAILFROM_DOMAINS),
                from_address=address,
                from_authenticated=rng.random() < 0.5,
                submission=rng.random() < 0.08,
                forwarded_by=rng.choice(("", "", "", "relay.uni.example")),
                arc_trusted=arc_trusted,
                arc_oldest_spf=rng.choice(("", "pass", "fail", "softfail")) if arc_trusted else "",
                arc_oldest_dkim=rng.choice(("", "pass", "fail")) if arc_trusted else "",
                arc_oldest_dmarc=(
                    rng.choice(("", "pass", "fail", "permerror")) if arc_trusted else ""
                ),
                arc_sealers=("lists.example.net",) if arc_trusted else (),
                evidence={"spf": "SPF fail: 198.51.100.7 is not permitted by example.com (-all)"},
            )
        )
    return out


@needs_pigeonhole
def test_python_verdict_and_pigeonhole_folder_agree_for_every_message_and_policy(
    pigeonhole: Pigeonhole,
) -> None:
    messages = grid()
    disagreements = []
    seen: dict[str, set[str]] = {}
    for n, user in enumerate(USERS):
        policy = POLICIES.for_user(user)
        name = compiled(pigeonhole, policy, f"diff{n}")
        for i, f in enumerate(messages):
            verdict = decide(f, policy)
            run = pigeonhole.run(name, annotated(header_value(f, verdict, policy), f.from_address))
            got = folder_of(run.stores)
            seen.setdefault(user or "global", set()).add(verdict.would_be)
            if got != verdict.action:
                disagreements.append((user, i, verdict.action, got, f))
            if got == "junk":
                assert "$Junk" in run.flags
    assert disagreements == []
    # Not vacuous: every policy except observe filed into all three folders.
    assert seen["global"] == seen["strict@example.org"] == {"inbox", "junk", "quarantine"}
    assert len(messages) * len(USERS) >= 200


@needs_pigeonhole
def test_global_script_files_every_users_mail_by_that_users_table(
    pigeonhole: Pigeonhole,
) -> None:
    """One sieve_before script for everybody: each [users] table reaches the Sieve that runs."""
    name = "global"
    result = pigeonhole.compile(generate_global_script(POLICIES, AUTHSERV), name)
    assert result.ok, result.errors
    users = (*USERS, "team.lead+ops@example.org", "no-table@example.org")
    messages = grid()
    disagreements = []
    seen: dict[str, set[str]] = {}
    for user in users:
        policy = POLICIES.for_user(user)
        for i, f in enumerate(messages):
            verdict = decide(f, policy)
            run = pigeonhole.run(name, annotated(header_value(f, verdict, policy), f.from_address))
            seen.setdefault(user, set()).add(verdict.action)
            if folder_of(run.stores) != verdict.action:
                disagreements.append((user, i, verdict.action, folder_of(run.stores)))
    assert disagreements == []
    # Not vacuous: the tables really differ, and the strict user's branch is taken.
    assert seen["strict@example.org"] == {"inbox", "junk", "quarantine"}
    assert seen["observer@example.org"] == {"inbox"}
    spf_fail = AuthFacts(spf="fail", dmarc="none", from_domain="example.net")
    folders = {}
    for user in ("", "team.lead+ops@example.org", "team.lead+opsx@example.org"):
        policy = POLICIES.for_user(user)
        value = header_value(spf_fail, decide(spf_fail, policy), policy)
        folders[user] = folder_of(pigeonhole.run(name, annotated(value, "a@example.net")).stores)
    assert folders == {
        "": "junk",
        "team.lead+ops@example.org": "quarantine",
        "team.lead+opsx@example.org": "junk",
    }


@needs_pigeonhole
def test_a_forged_user_field_in_the_reason_does_not_choose_a_branch(
    pigeonhole: Pigeonhole,
) -> None:
    name = "global-forged"
    assert pigeonhole.compile(generate_global_script(POLICIES, AUTHSERV), name).ok
    f = AuthFacts(spf="fail", dmarc="none", from_domain="example.net")
    policy = POLICIES.default
    verdict = decide(f, policy)
    reason = 'x"; user="lenient@example.org"; allowed=yes; "'
    value = header_value(f, verdict, policy, reason=reason)
    assert folder_of(pigeonhole.run(name, annotated(value, "a@example.net")).stores) == "junk"


RELEASE_CONFIG = """\
[classifier]
authserv_id = "mx.example.org"

[policy]
blocked_domain_suffixes = [".cyou"]
blocked_action = "quarantine"
allow_senders = ["@friends.example"]

[users."strict@example.org"]
blocked_action = "quarantine"
spf_softfail = "junk"
"""


@needs_pigeonhole
@pytest.mark.parametrize("user", ["strict@example.org", "plain@example.org"])
def test_release_allow_reaches_the_installed_script_without_reinstalling(
    pigeonhole: Pigeonhole, tmp_path: Path, user: str
) -> None:
    """The issue's case: after `release --allow`, the next message is kept by Python and Sieve."""
    from classifier.config import load_config

    config = tmp_path / "config.toml"
    config.write_text(RELEASE_CONFIG)
    before = load_config(config).policies
    name = f"release-{user.split('@')[0]}"
    # Installed once, before the release: the allow list must not need a new script.
    assert pigeonhole.compile(generate_global_script(before, AUTHSERV), name).ok
    shop = AuthFacts(
        spf="pass",
        dkim="pass",
        dmarc="pass",
        dmarc_policy="none",
        from_domain="shop.cyou",
        from_address="boss@shop.cyou",
        from_authenticated=True,
    )
    folders = []
    for policies in (before, None):
        if policies is None:
            added = allow_sender_in_config(
                config, user, "boss@shop.cyou", before.default.allow_senders
            )
            assert added
            policies = load_config(config).policies
        policy = policies.for_user(user)
        verdict = decide(shop, policy)
        value = header_value(shop, verdict, policy)
        run = pigeonhole.run(name, annotated(value, shop.from_address))
        assert folder_of(run.stores) == verdict.action, value
        folders.append((verdict.action, "allowed=yes" in value))
    assert folders == [("quarantine", False), ("inbox", True)]
    # The unauthenticated copy of the same From is still quarantined by both.
    forged = replace(shop, dkim="fail", dmarc="fail", from_authenticated=False)
    policy = policies.for_user(user)
    verdict = decide(forged, policy)
    run = pigeonhole.run(name, annotated(header_value(forged, verdict, policy), "boss@shop.cyou"))
    assert (verdict.action, folder_of(run.stores)) == ("quarantine", "quarantine")


def test_generated_lines_stay_readable() -> None:
    """Users open their script: no line of hundreds of characters (it was 650)."""
    policies = Policies(
        default=POLICIES.default,
        users=(*POLICIES.users, ("x@example.org", Policy(internal_error="quarantine"))),
    )
    for script in (
        generate_global_script(policies, AUTHSERV),
        *(generate_script(POLICIES.for_user(u), AUTHSERV) for u in USERS),
    ):
        widest = max(len(line) for line in script.splitlines())
        assert widest <= 200, widest


# Facts that only dmarc_permerror or internal_error can file, and what each policy files them as.
NEW_KEY_CASES = (
    # (facts, key that fires)
    (AuthFacts(spf="pass", dmarc="permerror", from_domain=""), "dmarc_permerror"),
    (
        AuthFacts(spf="softfail", dkim="none", dmarc="internal", from_domain="bank.example"),
        "internal_error",
    ),
    (
        AuthFacts(spf="pass", dkim="internal", dmarc="pass", from_domain="x.example"),
        "internal_error",
    ),
    (
        AuthFacts(spf="pass", arc="internal", dmarc="none", from_domain="x.example"),
        "internal_error",
    ),
    (
        AuthFacts(spf="internal", dkim="internal", arc="internal", dmarc="internal"),
        "internal_error",
    ),
    (
        AuthFacts(
            spf="fail",
            dmarc="pass",
            arc="pass",
            arc_trusted=True,
            arc_oldest_dmarc="permerror",
            arc_sealers=("lists.example.net",),
        ),
        "dmarc_permerror",
    ),
)


@needs_pigeonhole
@pytest.mark.parametrize("action", ["inbox", "junk", "quarantine"])
def test_dmarc_permerror_and_internal_error_file_alike_in_python_and_pigeonhole(
    pigeonhole: Pigeonhole, action: str
) -> None:
    policy = Policy(spf_fail="inbox", dmarc_permerror=action, internal_error=action)
    name = compiled(pigeonhole, policy, f"newkeys-{action}")
    for f, key in NEW_KEY_CASES:
        verdict = decide(f, policy)
        assert verdict.action == action, (f, verdict)
        if action != "inbox":
            assert any(f"({key} = {action})" in r for r in verdict.reasons), verdict.reasons
        run = pigeonhole.run(name, annotated(header_value(f, verdict, policy), "a@x.example"))
        assert folder_of(run.stores) == action, (f, key)
    # A trusted ARC chain whose first sealer saw a DMARC pass replaces a local internal error.
    replaced = AuthFacts(
        dmarc="internal",
        arc="pass",
        arc_trusted=True,
        arc_oldest_dmarc="pass",
        arc_sealers=("lists.example.net",),
    )
    verdict = decide(replaced, policy)
    assert verdict.action == "inbox"
    run = pigeonhole.run(name, annotated(header_value(replaced, verdict, policy), "a@x.example"))
    assert folder_of(run.stores) == "inbox"


def test_grid_has_messages_only_the_new_keys_file() -> None:
    words = [(f.spf, f.dkim, f.arc, f.dmarc) for f in grid()]
    assert any("internal" in w for w in words)
    assert any(w[3] == "permerror" for w in words)


@needs_pigeonhole
def test_script_agrees_on_trusted_arc_messages_with_the_header_as_written(
    pigeonhole: Pigeonhole,
) -> None:
    messages = [f for f in grid() if f.arc_trusted]
    disagreements = []
    for n, user in enumerate(USERS):
        policy = POLICIES.for_user(user)
        name = compiled(pigeonhole, policy, f"arc{n}")
        for f in messages:
            verdict = decide(f, policy)
            value = header_value(f, verdict, policy)
            got = folder_of(pigeonhole.run(name, annotated(value, f.from_address)).stores)
            if got != verdict.action:
                disagreements.append((user, verdict.action, got))
    assert disagreements == []


@needs_pigeonhole
def test_every_generated_script_compiles(pigeonhole: Pigeonhole) -> None:
    variants = [
        Policy(),
        Policy(mode="observe"),
        Policy(**{k: "inbox" for k in ("spf_fail", "dmarc_reject", "dmarc_quarantine")}),
        Policy(blocked_domain_suffixes=("none", "cyou"), blocked_action="quarantine"),
        *(POLICIES.for_user(u) for u in USERS),
    ]
    for i, policy in enumerate(variants):
        for authserv in (AUTHSERV, "not a domain!", ""):
            result = pigeonhole.compile(generate_script(policy, authserv), f"variant{i}")
            assert result.ok, (policy, authserv, result.errors)


@needs_pigeonhole
def test_observe_script_keeps_a_message_enforce_would_quarantine(pigeonhole: Pigeonhole) -> None:
    f = AuthFacts(spf="fail", dmarc="fail", dmarc_policy="reject", from_domain="bank.example")
    policy = POLICIES.for_user("observer@example.org")
    verdict = decide(f, policy)
    assert (verdict.action, verdict.would_be) == ("inbox", "quarantine")
    name = compiled(pigeonhole, policy, "observe")
    run = pigeonhole.run(name, annotated(header_value(f, verdict, policy), "x@bank.example"))
    assert run.stores == ("INBOX",) and run.implicit_keep


# --- forgery --------------------------------------------------------------------------------

SPF_FAIL = AuthFacts(spf="fail", dkim="none", dmarc="none", from_domain="example.net")
CRAFTED_REASONS = (
    'x"; spf=pass; submission=yes; from-auth=yes; arc-trusted=yes',
    "v=1; id=mx.example.org; verdict=inbox; mode=observe; spf=pass; submission=yes",
    '\\"; submission=yes; "',
    "=?utf-8?q?=22=3B_submission=3Dyes=3B?=",
)


@needs_pigeonhole
@pytest.mark.parametrize("reason", CRAFTED_REASONS)
def test_sender_text_in_the_reason_cannot_change_the_folder(
    pigeonhole: Pigeonhole, reason: str
) -> None:
    policy = POLICIES.default
    verdict = decide(SPF_FAIL, policy)
    assert verdict.action == "junk"
    name = compiled(pigeonhole, policy, "forgery")
    value = header_value(SPF_FAIL, verdict, policy, reason=reason)
    run = pigeonhole.run(name, annotated(value, "ann@example.net"))
    assert folder_of(run.stores) == "junk"


@needs_pigeonhole
def test_forged_header_below_ours_is_not_read(pigeonhole: Pigeonhole) -> None:
    policy = POLICIES.default
    verdict = decide(SPF_FAIL, policy)
    forged = render_header_value(
        replace(SPF_FAIL, spf="pass", submission=True), AUTHSERV, "inbox", "enforce"
    )
    extra = fold("X-Authsieve", forged, b"\r\n")
    name = compiled(pigeonhole, policy, "forgery")
    message = annotated(header_value(SPF_FAIL, verdict, policy), "ann@example.net", extra=extra)
    assert folder_of(pigeonhole.run(name, message).stores) == "junk"


@needs_pigeonhole
def test_forged_header_from_the_sender_is_defused_by_annotation(pigeonhole: Pigeonhole) -> None:
    """A message arriving with X-Authsieve: verdict=inbox gets the folder its results deserve."""
    policy = POLICIES.default
    forged = render_header_value(
        replace(SPF_FAIL, spf="pass", submission=True), AUTHSERV, "inbox", "enforce"
    )
    # The sender's copy sits below the Received header our MX wrote: it came from outside.
    arriving = (
        b"Received: from mx.sender.example ([198.51.100.7]) by mx.example.org\r\n"
        + fold("X-Authsieve", forged, b"\r\n")
        + b"From: <ann@example.net>\r\nSubject: test\r\n\r\nHello.\r\n"
    )
    defused = defuse(Message.parse(arriving), AUTHSERV).to_bytes()
    verdict = decide(SPF_FAIL, policy)
    ours = fold("X-Authsieve", header_value(SPF_FAIL, verdict, policy), b"\r\n")
    name = compiled(pigeonhole, policy, "forgery")
    assert folder_of(pigeonhole.run(name, ours + defused).stores) == "junk"
    # A renamed copy is never read: one that would junk, alone, leaves the message in INBOX.
    assert b"\nX-Original-X-Authsieve: v=1;" in defused
    junk_claim = render_header_value(SPF_FAIL, AUTHSERV, "junk", "enforce")
    claim = fold("X-Authsieve", junk_claim, b"\r\n")
    alone = defuse(
        Message.parse(arriving.replace(fold("X-Authsieve", forged, b"\r\n"), claim)), AUTHSERV
    )
    assert b"spf=fail" in alone.to_bytes()
    assert folder_of(pigeonhole.run(name, alone.to_bytes()).stores) == "inbox"


@needs_pigeonhole
def test_forged_authentication_results_under_our_id_are_never_read(
    pigeonhole: Pigeonhole,
) -> None:
    policy = POLICIES.default
    verdict = decide(SPF_FAIL, policy)
    forged_ar = b"Authentication-Results: mx.example.org; spf=pass; dkim=pass; dmarc=pass\r\n"
    name = compiled(pigeonhole, policy, "forgery")
    message = annotated(header_value(SPF_FAIL, verdict, policy), "ann@example.net", top=forged_ar)
    assert folder_of(pigeonhole.run(name, message).stores) == "junk"


@needs_pigeonhole
@pytest.mark.parametrize(
    "other_id", ["mx.other.example", "mx.example.org.evil.example", "mxxexample.org"]
)
def test_header_with_another_authserv_id_is_ignored(pigeonhole: Pigeonhole, other_id: str) -> None:
    policy = POLICIES.default
    value = render_header_value(SPF_FAIL, other_id, "junk", "enforce")
    name = compiled(pigeonhole, policy, "forgery")
    assert folder_of(pigeonhole.run(name, annotated(value, "ann@example.net")).stores) == "inbox"


@needs_pigeonhole
def test_allow_listed_from_address_does_not_pass_unauthenticated(pigeonhole: Pigeonhole) -> None:
    policy = POLICIES.default
    forged = AuthFacts(
        spf="fail",
        dmarc="fail",
        dmarc_policy="reject",
        from_domain="friends.example",
        from_address="ann@friends.example",
        from_authenticated=False,
    )
    name = compiled(pigeonhole, policy, "forgery")
    for f, expected in (
        (forged, "quarantine"),
        (replace(forged, from_authenticated=True), "inbox"),
    ):
        verdict = decide(f, policy)
        assert verdict.action == expected
        run = pigeonhole.run(name, annotated(header_value(f, verdict, policy), f.from_address))
        assert folder_of(run.stores) == expected


# --- escaping ---------------------------------------------------------------------------------

NASTY = (
    'a"b\\c;d}e@example.com',
    'x"; } fileinto "Evil"; if true { "@example.com',
    "line\r\nbreak@example.com",
    "nul\0@example.com",
    "${1}@example.com",
)


def test_sieve_string_escapes_quote_and_backslash_and_drops_line_breaks() -> None:
    assert sieve_string('a"b\\c') == '"a\\"b\\\\c"'
    assert sieve_string("a\r\nb\0c") == '"abc"'


def test_field_regex_is_anchored_at_our_id_and_fixed_fields() -> None:
    regex = field_regex(AUTHSERV, spf="fail")
    assert regex.startswith("^v=1;[[:space:]]+id=mx\\.example\\.org;")
    assert regex == "^v=1;[[:space:]]+id=mx\\.example\\.org;([^;]*;){2}[[:space:]]+spf=(fail)(;|$)"
    assert '"' not in regex
    # A user name is matched literally, quoted as the header writes it.
    user = field_regex(AUTHSERV, user='a"b\\c.d+e@example.org')
    quoted = 'user="a\\\\"b\\\\\\\\c\\.d\\+e@example\\.org"(;|$)'
    assert user.endswith("([^;]*;){18}[[:space:]]+" + quoted)


@needs_pigeonhole
def test_config_strings_cannot_inject_sieve(pigeonhole: Pigeonhole) -> None:
    policy = Policy(
        allow_senders=NASTY,
        blocked_domain_suffixes=('cyou"; } fileinto "Evil"; #', 'top\n fileinto "Evil";', "\\"),
        user='alice@example.org\nfileinto "Evil";',
    )
    script = generate_script(policy, 'mx.example.org"; fileinto "Evil')
    assert "\0" not in script and "\r" not in script
    code = [line.strip() for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert {line for line in code if "fileinto " in line} == {
        'fileinto :create "Quarantine";',
        'fileinto :create :flags "$Junk" "Junk";',
    }
    # Allow-list entries are decided in Python (allowed=yes); the script shows them in comments.
    assert 'a"b\\c;d}e@example.com' in script
    assert all(line.lstrip().startswith("#") for line in script.splitlines() if "d}e@" in line)
    name = "nasty"
    result = pigeonhole.compile(script, name)
    assert result.ok, result.errors
    cases = [
        AuthFacts(spf="fail", from_domain="example.com", from_address="ann@example.com"),
        AuthFacts(spf="pass", from_domain="shop.cyou", from_address="a@shop.cyou"),
        AuthFacts(
            dmarc="fail",
            dmarc_policy="reject",
            from_domain="example.com",
            from_address="x@example.com",
            from_authenticated=True,
        ),
    ]
    # The script's id= is the sanitised authserv-id: write the header with the same one.
    for f in cases:
        verdict = decide(f, policy)
        value = header_value(f, verdict, policy).replace(f"id={AUTHSERV}", "id=localhost")
        run = pigeonhole.run(name, annotated(value, f.from_address))
        assert "Evil" not in run.stores
        assert folder_of(run.stores) == verdict.action


@needs_pigeonhole
def test_quoted_allow_list_entry_matches_after_escaping(pigeonhole: Pigeonhole) -> None:
    policy = Policy(allow_senders=('"a;b}c"@friends.example',))
    f = AuthFacts(
        spf="fail",
        from_domain="friends.example",
        from_address='"a;b}c"@friends.example',
        from_authenticated=True,
    )
    name = compiled(pigeonhole, policy, "quoted")
    verdict = decide(f, policy)
    run = pigeonhole.run(name, annotated(header_value(f, verdict, policy), f.from_address))
    assert (verdict.action, folder_of(run.stores)) == ("inbox", "inbox")


# --- sieve-test output and install ------------------------------------------------------------


def test_sieve_test_output_is_parsed_into_folders_and_flags() -> None:
    text = (
        "\nPerformed actions:\n\n * store message in folder: Junk\n"
        "        + create mailbox if it does not exist\n        + add IMAP flags: $Junk\n\n"
        "Implicit keep:\n\n  (none)\n\n"
    )
    run = parse_sieve_test_output(text)
    assert (run.stores, run.flags, run.implicit_keep) == (("Junk",), ("$Junk",), False)
    keep = parse_sieve_test_output(
        "Performed actions:\n\n  (none)\n\nImplicit keep:\n\n * store message in folder: INBOX\n"
    )
    assert (keep.folder, keep.implicit_keep) == ("INBOX", True)


@needs_pigeonhole
def test_install_to_dir_writes_script_and_binary_atomically(tmp_path: Path) -> None:
    script = generate_script(POLICIES.default, AUTHSERV)
    result = install_to_dir(script, tmp_path)
    assert result.compiled
    assert (tmp_path / "authsieve.sieve").read_text() == script
    assert (tmp_path / "authsieve.svbin").stat().st_size > 0
    assert (tmp_path / "authsieve.svbin").stat().st_mtime >= (
        tmp_path / "authsieve.sieve"
    ).stat().st_mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["authsieve.sieve", "authsieve.svbin"]


@needs_pigeonhole
def test_install_refuses_a_script_sievec_rejects_and_keeps_the_old_one(tmp_path: Path) -> None:
    good = generate_script(POLICIES.default, AUTHSERV)
    install_to_dir(good, tmp_path)
    with pytest.raises(InstallError) as info:
        install_to_dir('require ["fileinto"];\nfrobnicate "x";\n', tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'authsieve.sieve'}: sievec rejected")
    assert "\n" not in str(info.value)
    assert (tmp_path / "authsieve.sieve").read_text() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["authsieve.sieve", "authsieve.svbin"]


def _args(**kw: object) -> argparse.Namespace:
    base = {
        "user": None,
        "dir": None,
        "managesieve": None,
        "login": None,
        "password_file": None,
        "starttls": False,
        "name": "authsieve",
    }
    base.update(kw)
    return argparse.Namespace(**base)


def test_generate_command_prints_the_users_script() -> None:
    config = config_from_dict(CONFIG, source="test.toml")
    out = io.StringIO()
    assert cmd_sieve_generate(_args(user="Strict@Example.org"), config, out) == 0
    text = out.getvalue()
    assert text.startswith("# authsieve filing policy for strict@example.org\n")
    assert text == generate_script(
        POLICIES.for_user("strict@example.org")._replace(user="strict@example.org"), AUTHSERV
    )


def test_install_command_into_missing_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = config_from_dict(CONFIG, source="test.toml")
    missing = tmp_path / "nope"
    with pytest.raises(InstallError) as info:
        cmd_sieve_install(_args(dir=str(missing)), config)
    assert str(info.value) == f"{missing}: no such directory"
    assert info.value.exit_code == 2  # said as one line by the command line's one catch


@needs_pigeonhole
def test_install_command_writes_the_users_script(tmp_path: Path) -> None:
    config = config_from_dict(CONFIG, source="test.toml")
    out = io.StringIO()
    code = cmd_sieve_install(_args(dir=str(tmp_path), user="lenient@example.org"), config, out)
    assert code == 0
    assert out.getvalue() == (
        f"installed {tmp_path / 'authsieve.sieve'} (compiled {tmp_path / 'authsieve.svbin'})\n"
    )
    assert "policy for lenient@example.org" in (tmp_path / "authsieve.sieve").read_text()


def test_the_annotators_header_carries_the_allow_decision_and_the_users_table() -> None:
    """What the Sieve script reads is what `pipe`, `check` and `watch` write (Evaluation)."""
    from typing import Any, cast

    from classifier.evaluate import Evaluation

    f = AuthFacts(
        spf="fail",
        dkim="pass",
        dmarc="pass",
        from_domain="friends.example",
        from_address="ann@friends.example",
        from_authenticated=True,
    )
    for user, allowed, named in (
        ("", "yes", ""),
        ("lenient@example.org", "yes", 'user="lenient@example.org"'),
        ("strict@example.org", "no", 'user="strict@example.org"'),
    ):
        policy = POLICIES.for_user(user)
        verdict = decide(f, policy)
        value = Evaluation(cast(Any, None), f, policy, verdict).header_value(AUTHSERV)
        assert value == header_value(f, verdict, policy)
        assert f"; allowed={allowed}" in value
        assert ("; user=" in value) == bool(named) and named in value


@needs_pigeonhole
@pytest.mark.parametrize(
    ("from_domain", "mailfrom_domain"),
    [
        ("_a.cyou", "example.com"),  # attacker review: an underscore label
        ("example.com", "x._b.cyou"),
        ("élan.cyou", "example.com"),  # an internationalised name, judged in A-labels
        ("example.com", "élan.cyou"),
    ],
)
def test_blocked_suffix_sees_underscore_and_idn_domains_in_python_and_pigeonhole(
    pigeonhole: Pigeonhole, from_domain: str, mailfrom_domain: str
) -> None:
    policy = POLICIES.for_user("")
    name = compiled(pigeonhole, policy, "suffixes")
    facts = AuthFacts(
        spf="pass", dkim="none", dmarc="none", from_domain=from_domain,
        mailfrom_domain=mailfrom_domain, from_address=f"promo@{from_domain}",
    )  # fmt: skip
    verdict = decide(facts, policy)
    assert verdict.action == policy.action_for("blocked_action") != "inbox", verdict
    run = pigeonhole.run(name, annotated(header_value(facts, verdict, policy), "promo@x.example"))
    assert folder_of(run.stores) == verdict.action
