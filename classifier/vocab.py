"""The fixed words of authsieve: result words, actions and DMARC policies, one type each.

They are `StrEnum`s: a member is the very string it stands for, so JSON, the
headers and the Sieve scripts write the same words as before, and a word read
back from a header compares equal to its member.
"""

from __future__ import annotations

from enum import StrEnum


class Result(StrEnum):
    """A check's result word (RFC 8601 §2.7), plus ``internal`` (ours, never in A-R)."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    PERMERROR = "permerror"
    TEMPERROR = "temperror"
    POLICY = "policy"
    # The check stopped on an error of ours (a bug, an exception from a library), not
    # on the message or the DNS; never written to Authentication-Results.
    INTERNAL = "internal"


# The RFC 8601 §2.7 words: what an ARC sealer's Authentication-Results can say.
AAR_RESULTS = frozenset(r for r in Result if r is not Result.INTERNAL)
# RFC 7208 §2.6: the results of check_host().
SPF_RESULTS = (
    Result.PASS,
    Result.FAIL,
    Result.SOFTFAIL,
    Result.NEUTRAL,
    Result.NONE,
    Result.PERMERROR,
    Result.TEMPERROR,
)


class Action(StrEnum):
    """Where a message is filed; the most severe action of the rules that fire wins."""

    INBOX = "inbox"
    JUNK = "junk"
    QUARANTINE = "quarantine"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.INBOX: 0, Action.JUNK: 1, Action.QUARANTINE: 2}


class DmarcPolicy(StrEnum):
    """A DMARC policy as published in p=, sp= or np= (RFC 9989 §4.7)."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


# DmarcPolicy(word) without the Enum call's machinery: asked for every message.
DMARC_POLICY_OF = {str(p): p for p in DmarcPolicy}


class Mode(StrEnum):
    """A policy's mode: file as decided, or only say where it would have gone."""

    ENFORCE = "enforce"
    OBSERVE = "observe"
