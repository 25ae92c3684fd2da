"""DMARC policy discovery: where a message's policy record is, and Organizational Domains.

RFC 9989 finds the record by its tree walk (§4.10.1: the Author Domain's own
record, the Organizational Domain's, the public suffix domain's); RFC 7489 mode
looks at the From domain and its Public Suffix List Organizational Domain
(§6.6.3).  Evaluating what was found -- alignment, the policy that applies, the
result -- is classifier/auth/dmarc.py's.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from classifier.auth.dmarc_record import DmarcRecord, records_at, tree_walk
from classifier.auth.fromheader import normalize_domain
from classifier.lookup.resolver import DnsSession

TYPE_CHECKING = False  # mypy reads this as True
if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList


@functools.cache
def public_suffix_list() -> PublicSuffixList:
    """Gives the one offline Public Suffix List (the DMARC check's and the report's)."""
    # Imported and built at first use, never at import: most runs use rfc9989.
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def psl_organizational_domain(domain: str, psl: PublicSuffixList | None = None) -> str:
    """Gives the Organizational Domain by the Public Suffix List (RFC 7489 §3.2).

    The public suffix plus one label; a name that is itself a public suffix is
    its own Organizational Domain.
    """
    try:
        return (psl or public_suffix_list()).privatesuffix(domain) or domain
    except (ValueError, TypeError):
        return domain


class OrgDomains:
    """Organizational Domains of one message's names, each looked up once."""

    def __init__(self, dns: DnsSession | None, mode: str) -> None:
        self.dns, self.mode = dns, mode
        self.known: dict[str, str | None] = {}

    def of(self, domain: str) -> str | None:
        """Gives the Organizational Domain, or None after a temporary DNS failure."""
        if domain not in self.known:
            if self.mode == "rfc7489" or self.dns is None:
                self.known[domain] = psl_organizational_domain(domain)
            else:
                walk = tree_walk(domain, self.dns)
                self.known[domain] = None if walk.error else walk.organizational_domain()
        return self.known[domain]


def organizational_domain(domain: str, dns: DnsSession | None, mode: str = "rfc9989") -> str:
    """Gives the Organizational Domain (RFC 9989 §4.10.2 or RFC 7489 §3.2), "" on DNS failure."""
    name = normalize_domain(domain)
    return (OrgDomains(dns, mode).of(name) or "") if name else ""


class Discovery(NamedTuple):
    """Where policy discovery ended: the record, whose it is, or why there is none."""

    record: DmarcRecord | None = None
    record_domain: str = ""
    kind: str = ""  # "author", "org", "psd"
    org_domain: str | None = None
    problem: str = ""  # why no record applies
    temp: str = ""  # a temporary DNS failure that stopped discovery


def discover_9989(author: str, dns: DnsSession) -> Discovery:
    """Finds the record by the tree walk: the author's, the org domain's, the PSD's (§4.10.1).

    The author's own record ends discovery: its p= applies whatever the
    Organizational Domain is, which is then looked up only if alignment needs it.
    """
    walk = tree_walk(author, dns, policy_only=True)
    if not walk.steps:
        return Discovery(temp=walk.error)
    first = walk.steps[0]
    if first.record is not None:
        return Discovery(first.record, author, "author", None)
    org = None if walk.error else walk.organizational_domain()
    if walk.error or org is None:
        return Discovery(temp=walk.error)
    record = walk.record_at(org)
    if record is not None:
        return Discovery(record, org, "org", org)
    psd = walk.psd_record()
    if psd is not None:
        return Discovery(psd[1], psd[0], "psd", org)
    discarded = [f"_dmarc.{s.name}" for s in walk.steps if s.found > 1]
    problem = f"no DMARC record at {', '.join(walk.queried())}"
    if discarded:
        problem += f"; several records at {', '.join(discarded)} were all discarded (§4.10)"
    return Discovery(org_domain=org, problem=problem)


def discover_7489(author: str, dns: DnsSession) -> Discovery:
    """Finds the record at the From domain, else at its PSL Organizational Domain (§6.6.3)."""
    org = psl_organizational_domain(author)
    found, _ = records_at(author, dns, "rfc7489")
    where, kind = author, "author"
    if not found and org != author:
        found, _ = records_at(org, dns, "rfc7489")
        where, kind = org, "org"
    if len(found) == 1:
        return Discovery(found[0], where, kind, org)
    queried = " and ".join(f"_dmarc.{d}" for d in dict.fromkeys((author, org)))
    if found:
        problem = f"{len(found)} DMARC records at _dmarc.{where}: DMARC not applied (§6.6.3 step 5)"
    else:
        problem = f"no DMARC record at {queried}"
    return Discovery(org_domain=org, problem=problem)


def discover(author: str, dns: DnsSession, mode: str) -> Discovery:
    """Gives where policy discovery ends for an Author Domain, in `mode`; raises DnsTempError.

    Discovery reads nothing but the Author Domain, the mode, the answers of its
    queries and (rfc7489) the offline Public Suffix List, so its outcome is kept
    in the resolver's DNS memo while those answers stand: the check asks for it
    twice per message (`discover_first`, then the evaluation), and each sender's
    domain comes back with most of its mail.
    """

    def work() -> tuple[Discovery, bool]:
        found = discover_7489(author, dns) if mode == "rfc7489" else discover_9989(author, dns)
        return found, not found.temp

    return dns.resolver.memo.compute(dns, ("dmarc-discovery", mode, author), work)


def author_exists(author: str, dns: DnsSession) -> bool:
    """Tells whether the Author Domain exists: any answer but NXDOMAIN (RFC 9989 §3.2.13, A.4).

    The ``_dmarc`` query of discovery already tells when it was not NXDOMAIN;
    otherwise a CNAME query, which a name answers without following anything.
    """
    if not dns.query(f"_dmarc.{author}", "TXT").nxdomain:
        return True
    return not dns.query(author, "CNAME").nxdomain
