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
- ``block_suffix``: a top-level suffix (the ``.cyou`` case) whose mail, by the
  delivery records, users moved into Junk nearly all of (``block_share``) and
  never rescued; ``block_domain`` the same for a registrable domain, where the
  suffix as a whole does not qualify (the ``.net`` case).  Both are entries of
  ``blocked_domain_suffixes``, the one key that blocks domains.
- ``relax_rule``: a weak rule (``spf_softfail`` and the like) whose filings
  users keep rescuing.

A proposal needs ``min_messages`` moves (and ``min_users`` users for a
global one); what the policy already does is never proposed.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from classifier.aggregate.deliveries import DeliveryRecord
from classifier.auth.dmarc_discovery import organizational_domain
from classifier.config import LearnConfig
from classifier.learning.moves import JUNKED, RESCUED, Move
from classifier.log import log_value
from classifier.policies import Policies, Policy, normalize_suffix, suffix_matches

DEFAULT_MIN_MESSAGES = LearnConfig.min_messages  # the [learn] defaults, from the config
DEFAULT_MIN_USERS = LearnConfig.min_users
DEFAULT_BLOCK_SHARE = LearnConfig.block_share
# Rules a rescue may argue against: a weak signal on its own.  A DMARC reject or an SPF
# fail is the sender domain's own word and is not relaxed on users' say-so.
RELAXABLE = ("spf_softfail", "spf_neutral", "spf_none", "spf_permerror", "dkim_fail", "dmarc_none")


@dataclass(frozen=True)
class Thresholds:
    """How much evidence a proposal needs ([learn] min_messages, min_users)."""

    min_messages: int = DEFAULT_MIN_MESSAGES
    min_users: int = DEFAULT_MIN_USERS
    block_share: float = DEFAULT_BLOCK_SHARE


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
        if m.direction == RESCUED and m.record.from_address:
            rescued[m.record.from_address].append(m)
        elif m.direction == JUNKED and m.record.from_address:
            junked.add((m.user, m.record.from_address))
    out = []
    for address, group in sorted(rescued.items()):
        if not all(m.record.from_auth for m in group):
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
            if "@" not in user:
                continue  # [users."alice"] is no table the config takes: addresses only
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
    words = [f"DKIM {d}" for d in m.record.dkim_domains]
    if m.record.dmarc == "pass":
        words.append("DMARC pass")
    return words


def _examples(moves: list[Move], n: int = 3) -> tuple[str, ...]:
    """Gives an evidence line for each move: all of them, or the first n and how many in all."""
    lines = [
        f"{m.user}: {m.from_folder} -> {m.to_folder}, {m.record.message_id or '(no Message-ID)'},"
        f" verdict {m.record.verdict or '?'}"
        + (f" ({', '.join(m.record.rules)})" if m.record.rules else "")
        for m in moves
    ]
    if len(lines) > n:
        return (*lines[:n], f"(first {n} of {len(lines)} moves)")
    return tuple(lines)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _org(domain: str) -> str:
    """Gives the Organizational Domain by the Public Suffix List (RFC 7489 §3.2): no DNS here."""
    return organizational_domain(domain, None) if domain else ""


def _forwarders(moves: list[Move], policy: Policy, t: Thresholds) -> list[Proposal]:
    hops: dict[str, list[Move]] = defaultdict(list)
    for m in moves:
        if m.direction == RESCUED and m.record.spf_hop:
            hops[m.record.spf_hop].append(m)
    known = {f.lower() for f in policy.trusted_forwarders}
    out = []
    for hop, group in sorted(hops.items()):
        users = sorted({m.user for m in group})
        if hop in known or len(group) < t.min_messages or len(users) < t.min_users:
            continue
        if not all(m.record.dkim_domains or m.record.arc_sealers for m in group):
            continue  # a hop that breaks SPF of mail nobody signed may be the forger
        upstream = sorted(
            {d for m in group for d in (*m.record.dkim_domains, *m.record.arc_sealers)}
        )
        # A sender's own relay (relay.atk.test for DKIM d=atk.test) forwards nothing: the
        # hop must belong to another organisation than every signer and envelope sender.
        # A hop known only by its IP (no reverse name) has no Organizational Domain to compare.
        hop_org = "" if _is_ip(hop) else _org(hop)
        signers = {_org(d) for d in upstream}
        senders = {_org(m.record.mailfrom_domain) for m in group if m.record.mailfrom_domain}
        if not hop_org or hop_org in signers | senders:
            continue
        results = sorted({m.record.spf for m in group})
        out.append(
            Proposal(
                "trust_forwarder", "", "trusted_forwarders", hop, len(group), tuple(users),
                f"trust forwarder {hop}: {_plural(len(group), 'message')} rescued by"
                f" {_by(group)}, all SPF {'/'.join(results)} at that hop,"
                f" DKIM or ARC pass upstream ({', '.join(upstream[:5])});"
                f" its organizational domain {hop_org} is neither a signer's"
                f" ({', '.join(sorted(signers)[:5])}) nor an envelope sender's"
                f" ({', '.join(sorted(senders)[:5]) or 'none'})",
                _examples(group),
            )
        )  # fmt: skip
    return out


def _suffixes(
    moves: list[Move], deliveries: list[DeliveryRecord], policy: Policy, t: Thresholds
) -> list[Proposal]:
    """Block proposals: a top-level suffix only when the delivery records show that nearly
    all its mail was moved into Junk, else the registrable domains (the ``.net`` case)."""
    junked = [m for m in moves if m.direction == JUNKED and m.record.from_domain]
    if not junked:
        return []
    rescued = {
        m.record.from_domain for m in moves if m.direction == RESCUED and m.record.from_domain
    }
    moved = {m.delivery_id for m in moves}
    blocked = [s for s in (normalize_suffix(x) for x in policy.blocked_domain_suffixes) if s]

    def weigh(suffix: str) -> tuple[list[Move], int, int] | None:
        """Gives the junked moves, deliveries and untouched inbox deliveries under suffix."""
        if any(suffix_matches(d, suffix) for d in rescued):
            return None
        group = [m for m in junked if suffix_matches(m.record.from_domain, suffix)]
        under = [r for r in deliveries if suffix_matches(r.from_domain, suffix)]
        ids = {r.id for r in under} | {m.delivery_id for m in group}
        untouched = sum(1 for r in under if r.verdict == "inbox" and r.id not in moved)
        return group, len(ids), untouched

    def enough(group: list[Move], total: int, untouched: int) -> bool:
        users = {m.user for m in group}
        return (
            len(group) >= t.min_messages
            and len(users) >= t.min_users
            and len(group) >= t.block_share * total
            and untouched < t.min_messages
        )

    out = []
    done: set[str] = set()
    for tld in sorted({m.record.from_domain.rsplit(".", 1)[-1] for m in junked}):
        if any(suffix_matches(tld, b) for b in blocked):
            continue
        orgs = sorted(
            {
                _org(m.record.from_domain)
                for m in junked
                if suffix_matches(m.record.from_domain, tld)
            }
        )
        weighed = weigh(tld)
        if len(orgs) > 1 and weighed and enough(*weighed):
            group, total, untouched = weighed
            out.append(_block("block_suffix", f".{tld}", group, total, untouched))
            done.add(tld)
            continue
        for org in orgs:
            if org in done or any(suffix_matches(org, b) for b in blocked):
                continue
            weighed = weigh(org)
            if weighed and enough(*weighed):
                out.append(_block("block_domain", org, *weighed))
                done.add(org)
    return out


def _block(kind: str, value: str, group: list[Move], total: int, untouched: int) -> Proposal:
    domains = sorted({m.record.from_domain for m in group})
    what = "suffix" if kind == "block_suffix" else "domain"
    return Proposal(
        kind, "", "blocked_domain_suffixes", value, len(group),
        tuple(sorted({m.user for m in group})),
        f"block {what} {value}: {len(group)} of {_plural(total, 'delivery')} under it moved into"
        f" Junk by {_by(group)}, never rescued, {untouched} left in INBOX untouched"
        f" ({', '.join(domains[:5])})",
        _examples(group),
    )  # fmt: skip


def _rules(
    moves: list[Move], deliveries: list[DeliveryRecord], policy: Policy, t: Thresholds
) -> list[Proposal]:
    rescued: dict[str, list[Move]] = defaultdict(list)
    for m in moves:
        if m.direction == RESCUED:
            for rule in m.record.rules:
                if rule in RELAXABLE:
                    rescued[rule].append(m)
    out = []
    for rule, group in sorted(rescued.items()):
        users = sorted({m.user for m in group})
        if policy.action_for(rule) == "inbox":
            continue
        if len(group) < t.min_messages or len(users) < t.min_users:
            continue
        # The deliveries it filed, from the delivery records (those purged count as rescued).
        filed = {r.id for r in deliveries if rule in r.rules} | {m.delivery_id for m in group}
        out.append(
            Proposal(
                "relax_rule", "", rule, "inbox", len(group), tuple(users),
                f"rule {rule}={policy.action_for(rule)}: {len(group)} of"
                f" {_plural(len(filed), 'message')} it filed were rescued by {_by(group)};"
                f" propose {rule} = \"inbox\"",
                _examples(group),
            )
        )  # fmt: skip
    return out


def propose(
    moves: Iterable[Move],
    policies: Policies,
    thresholds: Thresholds,
    deliveries: Iterable[DeliveryRecord] = (),
) -> list[Proposal]:
    """Gives the proposals the moves argue for, numbered by their order here (1, 2, …).

    `deliveries` are the delivery records: how much mail a suffix or a rule saw in all.
    """
    moves, records = list(moves), list(deliveries)
    default = policies.default
    return [
        *_forwarders(moves, default, thresholds),
        *_allow(moves, policies, thresholds),
        *_suffixes(moves, records, default, thresholds),
        *_rules(moves, records, default, thresholds),
    ]


def render(numbered: list[tuple[int, Proposal]]) -> str:
    """Gives the (number, proposal) pairs as plain text, for `suggest` and the digest."""
    if not numbered:
        return "No proposals: the moves recorded so far argue for no change.\n"
    lines = []
    # Every summary and evidence line holds sender- or user-written text (From addresses,
    # folder and login names): escaped, so that none acts on a terminal or adds a line.
    for n, p in numbered:
        lines.append(f"{n}. {log_value(p.summary)}")
        how = "=" if p.kind == "relax_rule" else "+="
        lines.append(f'   change: [{log_value(p.table)}] {p.key} {how} "{log_value(p.value)}"')
        lines += [f"   e.g. {log_value(e)}" for e in p.evidence]
    return "\n".join(lines) + "\n"
