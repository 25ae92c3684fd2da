"""The verdict: precedence, allow list, temperror, blocked suffixes, observe mode, ARC, reasons."""

from __future__ import annotations

from dataclasses import replace

from classifier.auth.facts import AuthFacts
from classifier.policies import Policy
from classifier.policy.verdict import decide, effective_results

SPF_EVIDENCE = "SPF fail: 198.51.100.7 is not permitted by example.com (-all)"


def facts(**kw: object) -> AuthFacts:
    base: dict[str, object] = {
        "spf": "pass",
        "dkim": "pass",
        "dmarc": "pass",
        "dmarc_policy": "none",
        "from_domain": "example.com",
        "mailfrom_domain": "example.com",
        "from_address": "ann@example.com",
        "from_authenticated": True,
    }
    base.update(kw)
    return AuthFacts(**base)  # type: ignore[arg-type]


FAILING = {"spf": "fail", "dkim": "fail", "dmarc": "fail", "from_authenticated": False}


def test_clean_message_goes_to_inbox_saying_why() -> None:
    v = decide(facts(), Policy())
    assert (v.action, v.would_be, v.observe) == ("inbox", "inbox", False)
    assert v.reasons == ("SPF pass, DKIM pass, DMARC pass: no rule files this message",)


def test_spf_fail_junks_with_the_evidence_sentence() -> None:
    v = decide(facts(spf="fail", evidence={"spf": SPF_EVIDENCE}), Policy())
    assert v.action == "junk"
    assert v.reasons == (f"{SPF_EVIDENCE} (spf_fail = junk)",)


def test_spf_evidence_without_prefix_gets_one() -> None:
    v = decide(facts(spf="softfail", evidence={"spf": "~all matched"}), Policy(spf_softfail="junk"))
    assert v.reasons == ("SPF softfail: ~all matched (spf_softfail = junk)",)


def test_dmarc_fail_follows_the_domain_policy() -> None:
    failing = {"dmarc": "fail", "spf": "none", "dkim": "none", "from_authenticated": False}
    assert decide(facts(**failing, dmarc_policy="reject"), Policy()).action == "quarantine"
    assert decide(facts(**failing, dmarc_policy="quarantine"), Policy()).action == "junk"
    assert decide(facts(**failing, dmarc_policy="none"), Policy()).action == "inbox"
    assert decide(facts(**failing, dmarc_policy=""), Policy(dmarc_none="junk")).action == "junk"


def test_most_severe_rule_wins_and_is_listed_first() -> None:
    f = facts(**FAILING, dmarc_policy="reject", evidence={"spf": SPF_EVIDENCE})
    v = decide(f, Policy(dkim_fail="junk"))
    assert v.action == "quarantine"
    assert v.reasons[0].startswith("DMARC fail under p=reject")
    assert v.reasons[0].endswith("(dmarc_reject = quarantine)")
    assert [r.rsplit("(", 1)[1] for r in v.reasons[1:]] == ["spf_fail = junk)", "dkim_fail = junk)"]


def test_rules_set_to_inbox_do_not_appear_as_reasons() -> None:
    v = decide(facts(spf="fail", dkim="fail"), Policy(spf_fail="inbox"))
    assert v.action == "inbox"
    assert v.reasons == ("SPF fail, DKIM fail, DMARC pass: no rule files this message",)


def test_blocked_suffix_on_from_domain() -> None:
    f = facts(from_domain="shop.cyou", from_address="a@shop.cyou")
    v = decide(f, Policy(blocked_domain_suffixes=("cyou",)))
    assert v.action == "junk"
    assert v.reasons == ("From domain shop.cyou ends in .cyou (blocked) (blocked_action = junk)",)


def test_blocked_suffix_on_envelope_sender_domain() -> None:
    v = decide(
        facts(mailfrom_domain="bulk.cyou"),
        Policy(blocked_domain_suffixes=(".CYOU",), blocked_action="quarantine"),
    )
    assert v.action == "quarantine"
    assert v.reasons[0].startswith("Envelope sender domain bulk.cyou ends in .cyou")


def test_blocked_suffix_matches_whole_labels_only() -> None:
    v = decide(
        facts(from_domain="notcyou", mailfrom_domain="cyou.example"),
        Policy(blocked_domain_suffixes=("cyou",)),
    )
    assert v.action == "inbox"


def test_allow_list_beats_every_rule_when_from_is_authenticated() -> None:
    f = facts(
        spf="fail",
        dkim="fail",
        dmarc="pass",
        dmarc_policy="reject",
        from_domain="x.cyou",
        from_address="boss@x.cyou",
    )
    p = Policy(
        allow_senders=("@x.cyou",), blocked_domain_suffixes=("cyou",), dkim_fail="quarantine"
    )
    v = decide(f, p)
    assert v.action == "inbox"
    assert v.reasons == ("Allowed sender @x.cyou: From boss@x.cyou is authenticated",)


def test_forged_allow_listed_from_gets_no_free_pass() -> None:
    f = facts(
        **FAILING,
        dmarc_policy="reject",
        from_address="boss@bank.example",
        from_domain="bank.example",
    )
    v = decide(f, Policy(allow_senders=("boss@bank.example", "@bank.example")))
    assert v.action == "quarantine"


def test_allow_entry_must_name_the_authenticated_from_domain() -> None:
    # The From address is allow-listed but the domain the checks authenticated is another one.
    f = facts(spf="fail", from_address="ann@friends.example", from_domain="example.com")
    assert decide(f, Policy(allow_senders=("@friends.example",))).action == "junk"
    f2 = replace(f, from_domain="friends.example")
    assert decide(f2, Policy(allow_senders=("@friends.example",))).action == "inbox"


def test_allow_address_entry_matches_only_that_address() -> None:
    p = Policy(allow_senders=("ann@example.com",))
    assert decide(facts(spf="fail", from_address="Ann@Example.com"), p).action == "inbox"
    assert decide(facts(spf="fail", from_address="bob@example.com"), p).action == "junk"


def test_temperror_alone_never_files_even_under_the_strictest_policy() -> None:
    strict = Policy(
        **{
            k: "quarantine"
            for k in (
                "spf_fail",
                "spf_softfail",
                "spf_neutral",
                "spf_none",
                "spf_permerror",
                "dkim_fail",
                "dmarc_reject",
                "dmarc_quarantine",
                "dmarc_none",
            )
        }
    )
    f = facts(
        spf="temperror",
        dkim="temperror",
        dmarc="temperror",
        dmarc_policy="reject",
        from_authenticated=False,
    )
    v = decide(f, strict)
    assert v.action == "inbox"
    assert "temporary DNS failure (spf, dkim, dmarc) never files mail" in v.reasons[0]


def test_temperror_with_another_failure_files_on_that_failure() -> None:
    f = facts(spf="temperror", dkim="fail", dmarc="pass")
    assert decide(f, Policy(dkim_fail="junk")).action == "junk"


def test_submission_by_our_own_user_goes_to_inbox() -> None:
    f = facts(**FAILING, dmarc_policy="reject", submission=True, from_domain="x.cyou")
    v = decide(f, Policy(blocked_domain_suffixes=("cyou",)))
    assert v.action == "inbox"
    assert v.reasons == ("Submitted by our own user (SMTP AUTH): not judged by SPF, DKIM or DMARC",)


def test_observe_mode_delivers_to_inbox_and_records_the_would_be_verdict() -> None:
    f = facts(**FAILING, dmarc_policy="reject")
    v = decide(f, Policy(mode="observe"))
    assert (v.action, v.would_be, v.observe) == ("inbox", "quarantine", True)
    assert v.reasons[-1] == "Observe mode: delivered to INBOX, enforce mode would quarantine"
    assert v.to_dict() == {
        "action": "inbox",
        "reasons": list(v.reasons),
        "observe": True,
        "would_be": "quarantine",
        "allowed": "",
    }


def test_trusted_arc_chain_judges_on_the_oldest_results_and_says_so() -> None:
    f = facts(
        **FAILING,
        dmarc_policy="reject",
        arc="pass",
        arc_trusted=True,
        arc_oldest_spf="pass",
        arc_oldest_dkim="pass",
        arc_oldest_dmarc="pass",
        arc_sealers=("lists.example.net",),
    )
    v = decide(f, Policy(dkim_fail="junk"))
    assert v.action == "inbox"
    assert v.reasons[0] == (
        "ARC chain sealed by lists.example.net (trusted): spf, dkim, dmarc judged on the oldest "
        "ARC Authentication-Results"
    )
    assert decide(replace(f, arc_trusted=False), Policy()).action == "quarantine"


def test_trusted_arc_result_absent_from_oldest_keeps_the_local_one() -> None:
    f = facts(**FAILING, dmarc_policy="reject", arc_trusted=True, arc_oldest_spf="pass")
    eff = effective_results(f)
    assert (eff.spf, eff.dkim, eff.dmarc, eff.arc_used) == ("pass", "fail", "fail", ("spf",))
    assert decide(f, Policy()).action == "quarantine"


def test_trusted_arc_failure_in_oldest_results_is_filed_and_named() -> None:
    f = facts(arc_trusted=True, arc_oldest_spf="fail", arc_oldest_dmarc="bogus")
    v = decide(f, Policy())
    assert v.action == "junk"
    assert "SPF fail (oldest ARC Authentication-Results) (spf_fail = junk)" in v.reasons


def test_trusted_arc_dmarc_pass_authenticates_from_for_the_allow_list() -> None:
    f = facts(
        **FAILING,
        dmarc_policy="reject",
        arc_trusted=True,
        arc_oldest_dmarc="pass",
        from_address="ann@friends.example",
        from_domain="friends.example",
    )
    assert decide(f, Policy(allow_senders=("@friends.example",))).action == "inbox"


def test_trusted_forwarder_is_named_in_the_reasons() -> None:
    v = decide(facts(spf="fail", forwarded_by="relay.uni.example"), Policy())
    assert v.action == "junk"
    assert v.reasons[0].startswith("Forwarded by relay.uni.example (trusted forwarder)")


def test_unknown_result_words_are_judged_as_the_header_writes_them() -> None:
    # render_header_value writes "none" for a word outside the vocabulary; decide does the same.
    v = decide(facts(spf="FAIL"), Policy(spf_none="junk"))
    assert v.action == "junk"
    assert v.reasons[0].startswith("SPF none")


# --- dmarc_permerror and internal_error -------------------------------------------------------


def test_dmarc_permerror_is_junk_by_default_and_says_why() -> None:
    f = facts(
        dmarc="permerror",
        dmarc_policy="",
        from_authenticated=False,
        evidence={"dmarc": "no From header field: no Author Domain (RFC 9989 §5.3.1)"},
    )
    v = decide(f, Policy())
    assert v.action == "junk"
    assert v.reasons == (
        "DMARC permerror: no From header field: no Author Domain (RFC 9989 §5.3.1)"
        " (dmarc_permerror = junk)",
    )
    assert decide(f, Policy(dmarc_permerror="inbox")).action == "inbox"


def test_internal_error_by_default_gives_the_verdict_of_the_other_checks() -> None:
    dmarc_broke = {"dmarc": "internal", "dmarc_policy": "", "from_authenticated": False}
    alone = decide(facts(**dmarc_broke), Policy())
    assert alone.action == "inbox"
    assert alone.reasons == (
        "SPF pass, DKIM pass, DMARC internal: an internal error (dmarc) files no mail under"
        " internal_error = inbox, and no other rule files this message",
    )
    # Never a free pass: the rules that fire on the other results still file.
    assert decide(facts(spf="fail", **dmarc_broke), Policy()).action == "junk"
    assert decide(facts(spf="fail", **dmarc_broke), Policy(spf_fail="quarantine")).action == (
        "quarantine"
    )


def test_internal_error_is_filed_by_its_own_key_and_names_the_check() -> None:
    f = facts(
        dkim="internal",
        arc="internal",
        evidence={"dkim": "permerror d=example.com s=s (internal error in the DKIM check: X)"},
    )
    v = decide(f, Policy(internal_error="quarantine"))
    assert v.action == "quarantine"
    assert v.reasons == (
        "Internal error in the dkim, arc check: permerror d=example.com s=s (internal error in"
        " the DKIM check: X) (internal_error = quarantine)",
    )


def test_internal_error_does_not_open_the_allow_list() -> None:
    f = facts(spf="fail", dmarc="internal", from_authenticated=False)
    assert decide(f, Policy(allow_senders=("@example.com",))).action == "junk"


def test_a_trusted_arc_result_replaces_a_local_internal_error_as_any_local_result() -> None:
    f = facts(
        dmarc="internal",
        arc="pass",
        arc_trusted=True,
        arc_oldest_dmarc="pass",
        arc_sealers=("lists.example",),
    )
    assert decide(f, Policy(internal_error="junk")).action == "inbox"
    assert decide(replace(f, arc_oldest_dmarc=""), Policy(internal_error="junk")).action == "junk"
