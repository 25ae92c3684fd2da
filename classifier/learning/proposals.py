"""Proposals from recorded moves: pure functions of the moves, the thresholds and the policy.

Four kinds, each a change to one list or key of the TOML config:

- ``allow_sender``: a From address a user rescued from Junk/Quarantine again
  and again, every time authenticated (``from-auth=yes``: DMARC pass, or an
  aligned SPF/DKIM pass).  Never for a sender that was not: an allow list
  entry only lets an authenticated From through (README, "Policy"), and a
  proposal for one would teach nothing but a false sense of safety.  Two
  users or more make it a global proposal.
- ``trust_forwarder``: the SMTP client (by the reverse name our MTA wrote,
  else the IP) whose SPF failed on rescued messages that carried a passing
  DKIM signature or ARC chain from upstream: a forwarder or a list that breaks SPF.
- ``block_suffix``: a From domain (or, for several of them, their top-level
  domain: the ``.cyou`` case) that users moved into Junk and never rescued.
- ``relax_rule``: a weak rule (``spf_softfail`` and the like) whose filings
  users keep rescuing.

A proposal needs ``min_messages`` moves (and ``min_users`` users for a
global one); what the policy already does is never proposed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from classifier.config import LearnConfig
from classifier.learning.moves import JUNKED, RESCUED, Move
from classifier.policies import Policies, Policy, normalize_suffix, suffix_matches

DEFAULT_MIN_MESSAGES = LearnConfig.min_messages  # the [learn] defaults, from the config
DEFAULT_MIN_USERS = LearnConfig.min_users
# Rules a rescue may argue against: a weak signal on its own.  A DMARC reject or an SPF
# fail is the sender domain's own word and is not relaxed on users' say-so.
RELAXABLE = ("spf_softfail", "spf_neutral", "spf_none", "spf_permerror", "dkim_fail", "dmarc_none")


@dataclass(frozen=True)
class Thresholds:
    """How much evidence a proposal needs ([learn] min_messages, min_users)."""

    min_messages: int = DEFAULT_MIN_MESSAGES
    min_users: int = DEFAULT_MIN_USERS


@dataclass(frozen=True)
class Proposal:
    """One change the moves argue for, with its evidence."""

    kind: str  # allow_sender | trust_forwarder | block_suffix | relax_rule
    user: str  # whose table it changes; "" for [policy]
    key: str  # the config key: allow_senders, trusted_forwarders, blocked_domain_suffixes, …
    value: str  # the list entry to add, or the action for relax_rule
    messages: int
    users: tuple[str, ...]
    summary: str
    evidence: tuple[str, ...] = field(default=())

    @property
    def table(self) -> str:
        return f'users."{self.user}"' if self.user else "policy"

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "table": self.table,
            "user": self.user,
            "key": self.key,
            "value": self.value,
            "messages": self.messages,
            "users": list(self.users),
            "summary": self.summary,
            "evidence": list(self.evidence),
        }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _by(moves: list[Move]) -> str:
    return _plural(len({m.user for m in moves}), "user")


def _allow(moves: list[Move], policies: Policies, t: Thresholds) -> list[Proposal]:
    rescued: dict[str, list[Move]] = defaultdict(list)
    junked: set[tuple[str, str]] = set()
    for m in moves:
        if m.direction == RESCUED and m.from_address:
            rescued[m.from_address].append(m)
        elif m.direction == JUNKED and m.from_address:
            junked.add((m.user, m.from_address))
    out = []
    for address, group in sorted(rescued.items()):
        if not all(m.from_auth for m in group):
            continue  # one unauthenticated copy: the address proves nothing
        users = sorted({m.user for m in group} - {u for u, a in junked if a == address})
        kept = [m for m in group if m.user in users]
        how = ", ".join(sorted({w for m in kept for w in _auth_words(m)})) or "authenticated"
        if len(users) >= t.min_users and len(kept) >= t.min_messages:
            if address in policies.default.allow_senders:
                continue
            out.append(
                Proposal(
                    "allow_sender", "", "allow_senders", address, len(kept), tuple(users),
                    f"allow sender {address} for everybody: rescued {_plural(len(kept), 'time')}"
                    f" by {_by(kept)}, every time authenticated ({how})",
                    _examples(kept),
                )
            )  # fmt: skip
            continue
        for user in users:
            mine = [m for m in kept if m.user == user]
            if len(mine) < t.min_messages or address in policies.for_user(user).allow_senders:
                continue
            out.append(
                Proposal(
                    "allow_sender", user, "allow_senders", address, len(mine), (user,),
                    f"allow sender {address} for {user}: rescued {_plural(len(mine), 'time')},"
                    f" every time authenticated ({how})",
                    _examples(mine),
                )
            )  # fmt: skip
    return out


def _auth_words(m: Move) -> list[str]:
    words = [f"DKIM {d}" for d in m.dkim_domains]
    if m.dmarc == "pass":
        words.append("DMARC pass")
    return words


def _examples(moves: list[Move], n: int = 3) -> tuple[str, ...]:
    return tuple(
        f"{m.user}: {m.from_folder} -> {m.to_folder}, {m.message_id or '(no Message-ID)'},"
        f" verdict {m.verdict or '?'}" + (f" ({', '.join(m.rules)})" if m.rules else "")
        for m in moves[:n]
    )


def _forwarders(moves: list[Move], policy: Policy, t: Thresholds) -> list[Proposal]:
    hops: dict[str, list[Move]] = defaultdict(list)
    for m in moves:
        if m.direction == RESCUED and m.spf_hop:
            hops[m.spf_hop].append(m)
    known = {f.lower() for f in policy.trusted_forwarders}
    out = []
    for hop, group in sorted(hops.items()):
        users = sorted({m.user for m in group})
        if hop in known or len(group) < t.min_messages or len(users) < t.min_users:
            continue
        if not all(m.dkim_domains or m.arc_sealers for m in group):
            continue  # a hop that breaks SPF of mail nobody signed may be the forger
        upstream = sorted({d for m in group for d in (*m.dkim_domains, *m.arc_sealers)})
        results = sorted({m.spf for m in group})
        out.append(
            Proposal(
                "trust_forwarder", "", "trusted_forwarders", hop, len(group), tuple(users),
                f"trust forwarder {hop}: {_plural(len(group), 'message')} rescued by"
                f" {_by(group)}, all SPF {'/'.join(results)} at that hop,"
                f" DKIM or ARC pass upstream ({', '.join(upstream[:5])})",
                _examples(group),
            )
        )  # fmt: skip
    return out


def _suffixes(moves: list[Move], policy: Policy, t: Thresholds) -> list[Proposal]:
    junked: dict[str, list[Move]] = defaultdict(list)
    rescued_domains = {m.from_domain for m in moves if m.direction == RESCUED and m.from_domain}
    for m in moves:
        if m.direction == JUNKED and m.from_domain:
            junked[m.from_domain].append(m)
    blocked = [s for s in (normalize_suffix(x) for x in policy.blocked_domain_suffixes) if s]
    by_tld: dict[str, list[str]] = defaultdict(list)
    for domain in junked:
        by_tld[domain.rsplit(".", 1)[-1]].append(domain)
    candidates: list[tuple[str, list[Move]]] = []
    for tld, domains in sorted(by_tld.items()):
        group = [m for d in domains for m in junked[d]]
        rescued_here = any(suffix_matches(d, tld) for d in rescued_domains)
        if len(domains) > 1 and not rescued_here:
            candidates.append((tld, group))  # several names under one TLD, none ever wanted
        else:
            candidates += [(d, junked[d]) for d in sorted(domains) if d not in rescued_domains]
    out = []
    for suffix, group in candidates:
        users = sorted({m.user for m in group})
        if any(suffix_matches(suffix, b) for b in blocked):
            continue
        if len(group) < t.min_messages or len(users) < t.min_users:
            continue
        domains = sorted({m.from_domain for m in group})
        out.append(
            Proposal(
                "block_suffix", "", "blocked_domain_suffixes", f".{suffix}", len(group),
                tuple(users),
                f"block suffix .{suffix}: moved into Junk {_plural(len(group), 'time')} by"
                f" {_by(group)}, never rescued ({', '.join(domains[:5])})",
                _examples(group),
            )
        )  # fmt: skip
    return out


def _rules(moves: list[Move], policy: Policy, t: Thresholds) -> list[Proposal]:
    rescued: dict[str, list[Move]] = defaultdict(list)
    for m in moves:
        if m.direction == RESCUED:
            for rule in m.rules:
                if rule in RELAXABLE:
                    rescued[rule].append(m)
    out = []
    for rule, group in sorted(rescued.items()):
        users = sorted({m.user for m in group})
        if policy.action_for(rule) == "inbox":
            continue
        if len(group) < t.min_messages or len(users) < t.min_users:
            continue
        out.append(
            Proposal(
                "relax_rule", "", rule, "inbox", len(group), tuple(users),
                f"rule {rule}={policy.action_for(rule)}: {_plural(len(group), 'message')} it"
                f" filed were rescued by {_by(group)}; propose {rule} = \"inbox\"",
                _examples(group),
            )
        )  # fmt: skip
    return out


def propose(moves: Iterable[Move], policies: Policies, thresholds: Thresholds) -> list[Proposal]:
    """Gives the proposals the moves argue for, numbered by their order here (1, 2, …)."""
    moves = list(moves)
    default = policies.default
    return [
        *_forwarders(moves, default, thresholds),
        *_allow(moves, policies, thresholds),
        *_suffixes(moves, default, thresholds),
        *_rules(moves, default, thresholds),
    ]


def render(numbered: list[tuple[int, Proposal]]) -> str:
    """Gives the (number, proposal) pairs as plain text, for `suggest` and the digest."""
    if not numbered:
        return "No proposals: the moves recorded so far argue for no change.\n"
    lines = []
    for n, p in numbered:
        lines.append(f"{n}. {p.summary}")
        lines.append(f"   change: [{p.table}] {p.key} {'=' if p.kind == 'relax_rule' else '+='}"
                     f" \"{p.value}\"")  # fmt: skip
        lines += [f"   e.g. {e}" for e in p.evidence]
    return "\n".join(lines) + "\n"
