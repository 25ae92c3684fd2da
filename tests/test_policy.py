"""Policy from the TOML config: defaults, per-user overrides, and one-line config errors."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from classifier.config import ConfigError, config_from_dict
from classifier.policies import (
    Policies,
    Policy,
    normalize_suffix,
    split_sender,
    suffix_matches,
    toml_key,
)

SOURCE = "/etc/authsieve/config.toml"


def policies_from(policy: dict | None = None, users: dict | None = None) -> Policies:
    data: dict = {"classifier": {"authserv_id": "mx.example.org"}}
    if policy is not None:
        data["policy"] = policy
    if users is not None:
        data["users"] = users
    return config_from_dict(data, source=SOURCE).policies


def config_error(policy: dict | None = None, users: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        policies_from(policy, users)
    return info.value


def test_defaults_are_conservative() -> None:
    p = policies_from().default
    assert (p.mode, p.spf_fail, p.dmarc_reject, p.dmarc_quarantine) == (
        "enforce",
        "junk",
        "quarantine",
        "junk",
    )
    others = (p.spf_softfail, p.spf_neutral, p.spf_none, p.spf_permerror, p.dkim_fail, p.dmarc_none)
    assert set(others) == {"inbox"}
    assert p.allow_senders == () and p.blocked_domain_suffixes == ()


def test_global_policy_keys_are_read_and_normalised() -> None:
    p = policies_from(
        {
            "mode": "Observe",
            "spf_softfail": "JUNK",
            "blocked_domain_suffixes": [".CYOU", "top.", "cyou"],
            "blocked_action": "quarantine",
            "allow_senders": ["Ann@Example.COM", "@friends.example"],
            "trusted_arc_sealers": ["Google.com."],
        }
    ).default
    assert p.mode == "observe"
    assert p.spf_softfail == "junk"
    assert p.blocked_domain_suffixes == ("cyou", "top")
    assert p.blocked_action == "quarantine"
    assert p.allow_senders == ("ann@example.com", "@friends.example")
    assert p.trusted_arc_sealers == ("google.com",)


def test_user_overrides_global_key_by_key() -> None:
    pol = policies_from(
        {"spf_fail": "quarantine", "dkim_fail": "junk", "allow_senders": ["@a.example"]},
        {"alice@example.org": {"dkim_fail": "inbox", "allow_senders": ["@b.example"]}},
    )
    alice = pol.for_user("alice@example.org")
    assert alice.spf_fail == "quarantine"  # inherited
    assert alice.dkim_fail == "inbox"  # overridden
    assert alice.allow_senders == ("@b.example",)  # a list replaces the global list
    assert alice.user == "alice@example.org"
    assert pol.default.dkim_fail == "junk"


def test_user_lookup_is_case_insensitive_and_accepts_angle_brackets() -> None:
    pol = policies_from(users={"Alice@Example.ORG": {"mode": "observe"}})
    assert pol.for_user("alice@example.org").mode == "observe"
    assert pol.for_user("<ALICE@example.org>").mode == "observe"


def test_unknown_user_gets_the_global_policy() -> None:
    pol = policies_from({"spf_fail": "quarantine"}, {"alice@example.org": {"mode": "observe"}})
    assert pol.for_user("bob@example.org") == pol.default
    assert pol.for_user("") == pol.default


def test_unknown_action_word_names_file_and_key() -> None:
    err = config_error({"spf_fail": "spam"})
    assert str(err) == (
        f"{SOURCE}: policy.spf_fail: expected inbox, junk or quarantine, got 'spam'"
    )
    assert "\n" not in str(err)


def test_unknown_action_word_for_user_names_the_user_key() -> None:
    err = config_error(users={"alice@example.org": {"blocked_action": "bounce"}})
    assert err.key == 'users."alice@example.org".blocked_action'
    assert str(err).startswith(f'{SOURCE}: users."alice@example.org".blocked_action: ')


def test_unknown_key_is_an_error() -> None:
    err = config_error({"spf_fial": "junk"})
    assert (err.source, err.key, err.problem) == (SOURCE, "policy.spf_fial", "unknown key")


def test_temperror_is_not_configurable() -> None:
    err = config_error({"spf_temperror": "junk"})
    assert err.key == "policy.spf_temperror"
    assert "temperror never files mail" in err.problem


def test_suffix_list_that_is_a_string_is_an_error() -> None:
    err = config_error({"blocked_domain_suffixes": ".cyou"})
    assert err.key == "policy.blocked_domain_suffixes"
    assert "list of strings" in err.problem


def test_suffix_list_with_a_number_names_the_item() -> None:
    err = config_error(users={"a@example.org": {"blocked_domain_suffixes": [".cyou", 7]}})
    assert err.key == 'users."a@example.org".blocked_domain_suffixes[1]'


@pytest.mark.parametrize("bad", ['cyou"; }', "top\nfileinto", "", ".", "a b"])
def test_suffix_that_is_not_a_domain_is_an_error(bad: str) -> None:
    err = config_error({"blocked_domain_suffixes": [bad]})
    assert err.key == "policy.blocked_domain_suffixes[0]"


@pytest.mark.parametrize("bad", ["ann", "ann@", "a\nb@example.com", "x@ex ample.com", 5])
def test_allow_sender_that_is_not_an_address_is_an_error(bad: object) -> None:
    err = config_error({"allow_senders": [bad]})
    assert err.key == "policy.allow_senders[0]"


def test_mode_must_be_enforce_or_observe() -> None:
    assert config_error({"mode": "watch"}).key == "policy.mode"


def test_user_table_must_be_a_table_and_key_an_address() -> None:
    assert config_error(users={"alice@example.org": "junk"}).key == 'users."alice@example.org"'
    assert config_error(users={"alice": {}}).problem == "not an email address"


def test_same_user_twice_in_different_case_is_an_error() -> None:
    err = config_error(users={"a@example.org": {}, "A@Example.org": {}})
    assert err.key == 'users."A@Example.org"'


def test_config_error_on_the_command_line_is_one_line_and_exit_2(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from classifier.commands.main import main

    config = tmp_path / "config.toml"
    config.write_text('[policy]\nblocked_domain_suffixes = ".cyou"\n')
    assert main(["sieve", "generate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{config}: policy.blocked_domain_suffixes:" in err


def test_suffix_helpers_match_whole_labels_only() -> None:
    assert normalize_suffix(".CYOU.") == "cyou"
    assert suffix_matches("shop.cyou", "cyou")
    assert suffix_matches("cyou", "cyou")
    assert not suffix_matches("notcyou", "cyou")
    assert not suffix_matches("", "cyou")


def test_split_sender_gives_local_part_and_domain() -> None:
    assert split_sender("Ann@Example.com") == ("ann", "example.com")
    assert split_sender("@example.com") == ("", "example.com")
    assert split_sender("ann@exa_mple.com") is None


def test_policy_to_dict_lists_are_lists() -> None:
    d = Policy(allow_senders=("@a.example",)).to_dict()
    assert d["allow_senders"] == ["@a.example"]
    assert d["spf_fail"] == "junk"


def test_dmarc_permerror_and_internal_error_have_documented_defaults_and_are_validated() -> None:
    p = policies_from().default
    assert (p.dmarc_permerror, p.internal_error) == ("junk", "inbox")
    user = policies_from(
        {"dmarc_permerror": "Quarantine"}, {"ann@example.org": {"internal_error": "junk"}}
    )
    assert user.default.dmarc_permerror == "quarantine"
    assert user.for_user("ann@example.org").internal_error == "junk"
    err = config_error({"internal_error": "later"})
    assert (err.key, err.problem) == (
        "policy.internal_error",
        "expected inbox, junk or quarantine, got 'later'",
    )
    assert config_error({"dmarc_permerorr": "junk"}).problem == "unknown key"


@given(st.text(st.characters(exclude_categories=("Cs",))))
def test_toml_key_names_the_key_tomllib_reads(text: str) -> None:
    # Error messages name a user's table as the file spells it: users."a@b".
    assert tomllib.loads(f"{toml_key(text)} = 1") == {text: 1}
