"""Config file validation: every mistake is one line naming file and key (classifier/config.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from classifier.config import ConfigError, config_from_dict, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_keep_loopback_trusted() -> None:
    settings = config_from_dict({}).engine
    assert settings.trust.is_trusted_ip("127.0.0.1")
    assert settings.trust.is_trusted_ip("::1")
    assert not settings.trust.is_trusted_ip("192.0.2.1")
    assert settings.authserv_id


def test_trusted_networks_and_forwarders_are_parsed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[classifier]\nauthserv_id = "mx.example.org"\n'
        'trusted_networks = ["192.0.2.0/24", "2001:db8::/32"]\n'
        'trusted_forwarders = ["Relay.Uni.Example.", "198.51.100.0/25"]\n',
    )
    settings = load_config(path).engine
    assert settings.authserv_id == "mx.example.org"
    assert settings.trust.is_trusted_ip("192.0.2.77")
    assert settings.trust.is_trusted_ip("2001:db8::1")
    assert settings.trusted_forwarders == (
        "relay.uni.example",
        ipaddress.ip_network("198.51.100.0/25"),
    )
    trust = settings.trust
    assert trust.forwarder_match("203.0.113.1", ("a.relay.uni.example",)) == "relay.uni.example"
    assert trust.forwarder_match("198.51.100.3", ()) == "198.51.100.0/25"
    assert trust.forwarder_match("203.0.113.1", ("evilrelay.uni.example.com",)) == ""


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[classifier]\ntrusted_networks = ["10.0.0.300/8"]\n', "classifier.trusted_networks[0]"),
        ('[classifier]\ntrusted_networks = "10.0.0.0/8"\n', "classifier.trusted_networks"),
        ("[classifier]\nbogus = 1\n", "classifier.bogus"),
        ('[classifer]\nauthserv_id = "x"\n', "classifer"),
        ('[classifier]\ndmarc_mode = "rfc1234"\n', "classifier.dmarc_mode"),
        ("[classifier]\ndns_timeout = -1\n", "classifier.dns_timeout"),
        ('[classifier]\ntrusted_forwarders = ["a b"]\n', "classifier.trusted_forwarders[0]"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert str(info.value).startswith(f"{path}: {key}: ")
    assert "\n" not in str(info.value)


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[classifier\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_watch_and_quarantine_sections(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[watch]\nroots = ["/var/vmail/*/*/Maildir"]\npath_template = "{domain}/{local}/Maildir"\n'
        "rescan_interval = 30\nworkers = 2\n[quarantine]\nretention_days = 14\n",
    )
    config = load_config(path)
    assert config.watch.roots == ("/var/vmail/*/*/Maildir",)
    assert config.watch.rescan_interval == 30 and config.watch.workers == 2
    assert config.watch.cur_max_age_days == 7.0  # a key not given: the field default
    assert config.quarantine.retention_days == 14
    assert config.reports is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[watch]\nworkers = -1\n", "watch.workers"),
        ("[watch]\nroots = '/var/vmail'\n", "watch.roots"),
        ("[watch]\nevery = 3\n", "watch.every"),
        ("[quarantine]\nretention_days = 0\n", "quarantine.retention_days"),
    ],
)
def test_bad_watch_settings_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key


def test_daemon_keys_give_the_socket_owner_mode_and_limits() -> None:
    s = config_from_dict(
        {
            "classifier": {
                "socket_user": "postfix-pipe",
                "socket_mode": "660",
                "daemon_user": "authsieve",
                "daemon_max_message_size": 52428800,
                "daemon_idle_timeout": 5,
                "daemon_max_connections": 16,
            }
        }
    ).engine
    assert (s.socket_user, s.socket_mode, s.daemon_user) == ("postfix-pipe", 0o660, "authsieve")
    assert (s.daemon_max_message_size, s.daemon_idle_timeout, s.daemon_max_connections) == (
        52428800,
        5,
        16,
    )
    assert config_from_dict({}).engine.socket_mode == 0o600


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("socket_mode", 0o666),  # anyone could hand the daemon work
        ("socket_mode", "rw"),
        ("socket_user", "a b"),
        ("daemon_max_message_size", 0),
        ("daemon_idle_timeout", 0),
        ("daemon_max_connections", 0),
    ],
)
def test_bad_daemon_keys_are_one_line_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"classifier": {key: value}}, source="c.toml")
    assert str(err.value).startswith(f"c.toml: classifier.{key}: ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[policy]\nspf_fail = "bounce"\n', "policy.spf_fail"),
        ('[policy]\ntrusted_forwarders = ["relay/x"]\n', "policy.trusted_forwarders[0]"),
        (
            '[users."a@example.org"]\ntrusted_forwarders = ["ok.example", "a:b"]\n',
            'users."a@example.org".trusted_forwarders[1]',
        ),
    ],
)
def test_a_bad_policy_fails_at_load_not_at_the_first_message(
    tmp_path: Path, text: str, key: str
) -> None:
    # The daemon and the watcher load the config at start and on SIGHUP: this is where
    # a mistake must show, before any message is checked.
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key
    assert "\n" not in str(info.value)


def test_the_config_is_typed_and_frozen(tmp_path: Path) -> None:
    text = '[policy]\nspf_fail = "Quarantine"\n[users."B@Example.org"]\nmode = "observe"\n'
    config = load_config(write(tmp_path, text))
    assert config.policies.default.spf_fail == "quarantine"
    assert config.policies.for_user("b@example.org").mode == "observe"
    assert config.policies.for_user("b@example.org").spf_fail == "quarantine"  # inherited
    with pytest.raises(AttributeError):  # a NamedTuple's field cannot be set
        config.watch.workers = 3  # type: ignore[misc]


def test_trust_matchers_are_built_at_load_once_per_forwarders_list(tmp_path: Path) -> None:
    text = (
        '[classifier]\ntrusted_networks = ["192.0.2.0/24"]\ntrusted_forwarders = ["a.example"]\n'
        '[policy]\ntrusted_forwarders = ["relay.uni.example", "a.example"]\n'
        '[users."b@example.org"]\ntrusted_forwarders = ["198.51.100.0/25"]\n'
    )
    config = load_config(write(tmp_path, text))
    engine = config.engine
    default = config.policies.default.trusted_forwarders
    matcher = engine.trust_for(default)
    # The same object for every message of that policy: its remembered answers are kept.
    assert engine.trust_for(default) is matcher
    assert engine.trust_for(()) is engine.trust
    assert matcher.forwarders == ("a.example", "relay.uni.example")  # no entry twice
    assert matcher.forwarder_match("203.0.113.9", ("mx.relay.uni.example",)) == "relay.uni.example"
    assert matcher.is_trusted_ip("192.0.2.7") and not matcher.is_trusted_ip("192.0.3.7")
    user = engine.trust_for(config.policies.for_user("b@example.org").trusted_forwarders)
    assert user.forwarder_match("198.51.100.3", ()) == "198.51.100.0/25"
    assert engine.trust.forwarder_match("198.51.100.3", ()) == ""  # the engine's own lists


def test_a_trust_matcher_remembers_a_bounded_number_of_answers() -> None:
    from classifier import trusted

    matcher = config_from_dict({}).engine.trust
    for i in range(trusted._MAX_ANSWERS + 10):
        assert not matcher.is_trusted_ip(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert matcher.is_trusted_ip("127.0.0.1")
    assert len(matcher._answers) <= trusted._MAX_ANSWERS
