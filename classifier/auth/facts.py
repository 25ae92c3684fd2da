"""The facts a policy decides on, and the X-Authsieve header that carries them to Sieve.

`AuthFacts` is the summary of one message's checks: the same values decide
the verdict in Python (`classifier.policy.verdict`) and, written into the
X-Authsieve header, in the Sieve script that Pigeonhole runs
(`sieve.generate`).  Both read the same fields, so both reach the same folder.

Header grammar (one line, ``; ``-separated ``key=value``; values are tokens
from a fixed vocabulary, domains, or a quoted string for the reason):

    X-Authsieve: v=1; id=mx.example.org; verdict=junk; mode=enforce; spf=fail;
     helo-spf=none; dkim=none; arc=none; dmarc=fail; policy=reject;
     from-domain=example.com; mailfrom-domain=example.com; from-auth=no;
     submission=no; forwarded=no; arc-trusted=no; arc-spf=; arc-dkim=; arc-dmarc=;
     reason="..."

The result words are RFC 8601's plus ``internal``: the check ended on an
internal error (its evidence says which and why); a policy files it under
``internal_error``.  The arc-* fields hold RFC 8601 words only.

Domains are written only when they are plain LDH names (checked here), so
sender-controlled text can never add a key or end the header; the reason is
a quoted-string with `"` and `\\` escaped and line breaks removed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from classifier.lazyre import lazy
from classifier.names import quoted_string, safe_domain
from classifier.vocab import AAR_RESULTS, DmarcPolicy, Result

HEADER_NAME = "X-Authsieve"
RELEASED_HEADER = "X-Authsieve-Released"  # written by `authsieve quarantine release`
INTERNAL = Result.INTERNAL
RESULTS = frozenset(Result)  # the words the header may carry for a check
POLICIES = frozenset({"", *DmarcPolicy})  # "": no DMARC record applies
_WRITTEN_POLICIES = POLICIES - {""}


@dataclass(frozen=True, kw_only=True)
class AuthFacts:
    """What the checks found about one message, in the terms a policy uses."""

    spf: str = "none"  # MAIL FROM result (HELO result when the sender is null)
    helo_spf: str = "none"
    dkim: str = "none"  # pass if any signature passed, else the summary (fail/temperror/…)
    arc: str = "none"
    dmarc: str = "none"
    dmarc_policy: str = ""  # the DMARC policy that applies ("" when no record)
    from_domain: str = ""
    mailfrom_domain: str = ""
    from_address: str = ""  # the RFC5322.From address, for allow lists (not written to the header)
    mailfrom: str = ""  # the envelope sender (not written to the header)
    from_authenticated: bool = False  # DMARC pass, or an SPF/DKIM pass aligned with From
    submission: bool = False  # arrived by SMTP AUTH: our own user
    forwarded_by: str = ""  # trusted forwarder that handed the message over
    arc_trusted: bool = False  # ARC pass sealed by a configured trusted sealer
    arc_oldest_spf: str = ""
    arc_oldest_dkim: str = ""
    arc_oldest_dmarc: str = ""
    arc_sealers: tuple[str, ...] = ()
    evidence: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # evidence: check name ("spf", "dkim", "dmarc", "arc", "envelope") → a sentence saying why

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["arc_sealers"] = list(self.arc_sealers)
        return d


def quote(text: str) -> str:
    """Gives an RFC 5322 quoted-string of text on one line (RFC 5322 §3.2.4)."""
    return quoted_string(" ".join(str(text).split()))


def _fields_of(key: str, words: frozenset[str], default: str) -> dict[str, str]:
    """Gives each allowed word's ``key=word`` field, written once at import, not per message."""
    return {word: f"{key}={word}" for word in words} | {"": f"{key}={default}"}


# Each result field as render_header_fields writes it; a word not in the table is "none"
# ("" for the arc-* fields).
_SPF = _fields_of("spf", RESULTS, "none")
_HELO_SPF = _fields_of("helo-spf", RESULTS, "none")
_DKIM = _fields_of("dkim", RESULTS, "none")
_ARC = _fields_of("arc", RESULTS, "none")
_DMARC = _fields_of("dmarc", RESULTS, "none")
_POLICY = _fields_of("policy", _WRITTEN_POLICIES, "none")
_ARC_SPF = _fields_of("arc-spf", AAR_RESULTS, "")
_ARC_DKIM = _fields_of("arc-dkim", AAR_RESULTS, "")
_ARC_DMARC = _fields_of("arc-dmarc", AAR_RESULTS, "")
_VERDICTS = _fields_of("verdict", frozenset({"inbox", "junk", "quarantine"}), "inbox")
_YES_NO = ("no", "yes")


@lru_cache(maxsize=64)  # keyed on our configured authserv-id
def _id_field(authserv_id: str) -> str:
    return f"id={safe_domain(authserv_id) or 'localhost'}"


def render_header_value(
    facts: AuthFacts,
    authserv_id: str,
    verdict: str,
    mode: str,
    reason: str = "",
    error: str = "",
    allowed: bool = False,
    user: str = "",
    delivery_id: str = "",
    domains: tuple[str, str] | None = None,
) -> str:
    """Gives the X-Authsieve header value (without the name) for these facts.

    The fields of `render_header_fields`, joined with "; ".
    """
    return "; ".join(
        render_header_fields(
            facts, authserv_id, verdict, mode, reason, error, allowed, user, delivery_id, domains
        )
    )


def render_header_fields(
    facts: AuthFacts,
    authserv_id: str,
    verdict: str,
    mode: str,
    reason: str = "",
    error: str = "",
    allowed: bool = False,
    user: str = "",
    delivery_id: str = "",
    domains: tuple[str, str] | None = None,
) -> list[str]:
    """Gives the ``key=value`` fields of the X-Authsieve header value, in their order.

    `annotate` folds the header between them, so they are not joined and split again.

    `domains` is (safe_domain(facts.from_domain), safe_domain(facts.mailfrom_domain)),
    when the caller has worked them out already (the verdict's `EffectiveResults`).

    `delivery_id` (``delivery=``, only with [learn] on) names the delivery record
    `authsieve learn` believes (`classifier.aggregate.deliveries`): ``id=`` is the
    authserv-id already.

    `allowed` is the policy's allow_senders decision (`Verdict.allowed`) and
    `user` the ``[users."…"]`` table whose policy decided ("" for the global
    one): the Sieve script reads both, so the list and the table it files by
    are the ones Python used at delivery (a ``quarantine release --allow``
    counts from the next message on, without reinstalling a script).
    """
    from_domain, mailfrom_domain = domains or (
        safe_domain(facts.from_domain),
        safe_domain(facts.mailfrom_domain),
    )
    # Fixed words are looked up in the tables above (a word outside them: "none" or "").
    parts = [
        "v=1",
        _id_field(authserv_id),
        _VERDICTS.get(verdict) or _VERDICTS[""],
        "mode=observe" if mode == "observe" else "mode=enforce",
        _SPF.get(facts.spf) or _SPF[""],
        _HELO_SPF.get(facts.helo_spf) or _HELO_SPF[""],
        _DKIM.get(facts.dkim) or _DKIM[""],
        _ARC.get(facts.arc) or _ARC[""],
        _DMARC.get(facts.dmarc) or _DMARC[""],
        _POLICY.get(facts.dmarc_policy) or _POLICY[""],
        f"from-domain={from_domain or 'none'}",
        f"mailfrom-domain={mailfrom_domain or 'none'}",
        f"from-auth={_YES_NO[bool(facts.from_authenticated)]}",
        f"submission={_YES_NO[bool(facts.submission)]}",
        f"forwarded={_YES_NO[bool(facts.forwarded_by)]}",
        f"arc-trusted={_YES_NO[bool(facts.arc_trusted)]}",
        # What the oldest trusted ARC sealer saw; empty when absent (the local result stands).
        _ARC_SPF.get(facts.arc_oldest_spf) or _ARC_SPF[""],
        _ARC_DKIM.get(facts.arc_oldest_dkim) or _ARC_DKIM[""],
        _ARC_DMARC.get(facts.arc_oldest_dmarc) or _ARC_DMARC[""],
        f"allowed={_YES_NO[bool(allowed)]}",
    ]
    if user:
        parts.append(f"user={quote(user)}")
    # After user=: the Sieve script counts the fixed fields, then reads user= (sieve.generate).
    if delivery_id.isalnum() and delivery_id.isascii():
        parts.append(f"delivery={delivery_id}")
    if error:
        parts.append(f"error={quote(error)}")
    if reason:
        parts.append(f"reason={quote(reason)}")
    return parts


_PAIR = lazy(r'\s*([a-z][a-z0-9-]*)=("(?:[^"\\]|\\.)*"|[^;\s]*)\s*(?:;|$)', re.I)


def parse_header_value(value: str) -> dict[str, str]:
    """Gives the key=value pairs of an X-Authsieve value (quoted strings unquoted)."""
    out: dict[str, str] = {}
    for m in _PAIR.finditer(" ".join(value.split())):
        key, val = m.group(1).lower(), m.group(2)
        if val.startswith('"'):
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        out.setdefault(key, val)
    return out
