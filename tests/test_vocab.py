"""The typed vocabularies (classifier/vocab.py): members are the very words written out."""

from __future__ import annotations

import json
import pickle

from classifier.auth.facts import AuthFacts, parse_header_value, render_header_value
from classifier.config import config_from_dict
from classifier.policies import Policy
from classifier.policy.verdict import decide
from classifier.vocab import Action, DmarcPolicy, Mode, Result


def test_members_write_and_compare_as_their_words() -> None:
    assert (
        json.dumps({"r": Result.TEMPERROR, "a": Action.JUNK}) == '{"r": "temperror", "a": "junk"}'
    )
    assert f"spf={Result.PASS}; p={DmarcPolicy.REJECT}" == "spf=pass; p=reject"
    assert Result("softfail") is Result.SOFTFAIL and Mode.OBSERVE == "observe"
    assert {"quarantine": 1}[Action.QUARANTINE] == 1  # same hash as the word
    assert pickle.loads(pickle.dumps(Action.JUNK)) is Action.JUNK  # to the watch workers
    assert sorted(Action, key=lambda a: a.severity) == [
        Action.INBOX,
        Action.JUNK,
        Action.QUARANTINE,
    ]


def test_a_policy_from_the_config_holds_members_and_writes_the_same_json() -> None:
    data = {"policy": {"spf_fail": "Quarantine", "mode": "observe"}}
    policy = config_from_dict(data).policies.default
    assert policy.spf_fail is Action.QUARANTINE and policy.mode is Mode.OBSERVE
    assert json.loads(json.dumps(policy.to_dict()))["spf_fail"] == "quarantine"
    assert json.dumps(Policy().to_dict()).count('"junk"') == 4


def test_the_header_and_verdict_words_are_unchanged() -> None:
    facts = AuthFacts(spf="fail", dmarc="fail", dmarc_policy="reject", from_domain="x.example")
    verdict = decide(facts, Policy())
    assert verdict.action is Action.QUARANTINE and verdict.would_be is Action.QUARANTINE
    value = render_header_value(facts, "mx.example", verdict.action, Policy().mode, "r")
    fields = parse_header_value(value)
    assert (fields["verdict"], fields["mode"], fields["policy"]) == (
        "quarantine",
        "enforce",
        "reject",
    )
    assert "Action." not in value and "Mode." not in value
    assert json.dumps(verdict.to_dict()).startswith('{"action": "quarantine", ')
