"""Where a Policy Domain's aggregate reports go: its rua= mailto: URIs, checked at send time.

The record is read again when the report is sent (RFC 9990 §3.2: the rua=
tag of the DMARC Policy Record names the destinations), through the one DNS
layer.  A destination whose Organizational Domain is not the Policy Domain's
must agree to receive the reports (RFC 9990 §4, "Verifying External
Destinations"): a DMARC record at ``<policy-domain>._report._dmarc.<host>``,
whose own rua= may replace the URI as long as it names the same host.

Size limits: RFC 9989 removed the ``!size`` suffix of a URI (Appendix C.4;
§4.8 keeps it only as obsolete syntax a reporter ignores), so the suffix is
dropped where records are parsed and only our own maximum applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from classifier.auth.dmarc_discovery import organizational_domain
from classifier.auth.dmarc_record import external_destination_authorised, records_at
from classifier.auth.facts import safe_domain
from classifier.lookup.resolver import DnsSession, DnsTempError

# RFC 9990 §3.2 lets a receiver limit the URIs it supports: a record naming dozens of
# addresses gets reports at the first few only.
MAX_URIS = 5
# What we put on sendmail's command line and in To:: a plain addr-spec, no
# quoting, no comments, no second address (a "," in a DMARC URI is percent-encoded).
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Destination:
    """One address a report is sent to, and the URI it came from."""

    uri: str
    address: str
    domain: str
    external: bool  # outside the Policy Domain's Organizational Domain, and authorised


@dataclass(frozen=True, slots=True)
class Skipped:
    """A URI of the record that gets no report, and why."""

    uri: str
    why: str
    temporary: bool = False  # a temporary DNS failure: the next run tries again


@dataclass(frozen=True, slots=True)
class Destinations:
    """A Policy Domain's destinations at send time; `problem` says why there are none."""

    policy_domain: str
    send_to: tuple[Destination, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    problem: str = ""  # no record, no rua=, a DNS failure
    temporary: bool = False  # a temporary DNS failure kept a report from a destination


def mailto_address(uri: str) -> str | None:
    """Gives the one plain address of a mailto: URI (RFC 6068), or None when it has none.

    Headers after "?" are ignored: a report carries our own headers.  A local
    part that would need quoting is refused: the address goes on sendmail's
    command line and into To:.
    """
    scheme, _, rest = uri.partition(":")
    if scheme.lower() != "mailto":
        return None
    to = unquote(rest.partition("?")[0]).strip()
    local, at, domain = to.rpartition("@")
    host = safe_domain(domain)
    if not at or not host or not _LOCAL.match(local):
        return None
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return None
    return f"{local}@{host}"


def _same_org(a: str, b: str, dns: DnsSession, mode: str) -> bool:
    """Gives whether a and b share an Organizational Domain; raises DnsTempError when unknown.

    `organizational_domain` gives "" when DNS failed: that must not turn into
    "external, and not authorised".
    """
    org_a, org_b = organizational_domain(a, dns, mode), organizational_domain(b, dns, mode)
    if not org_a or not org_b:
        raise DnsTempError(a if not org_a else b, "TXT", "Organizational Domain not found")
    return org_a == org_b


def _checked(
    uri: str, policy_domain: str, dns: DnsSession, mode: str
) -> list[Destination] | Skipped:
    address = mailto_address(uri)
    if address is None:
        scheme = uri.partition(":")[0].lower()
        why = "not a mailto: URI (only mailto: is sent)" if scheme != "mailto" else "no address"
        return Skipped(uri, why)
    host = address.rpartition("@")[2]
    if _same_org(policy_domain, host, dns, mode):
        return [Destination(uri, address, host, False)]
    # RFC 9990 §4 steps 2-8: <policy-domain>._report._dmarc.<destination host>.
    name = f"{policy_domain}._report._dmarc.{host}"
    if len(name) > 253:
        return Skipped(uri, f"{name[:60]}…: longer than DNS allows (RFC 9990 §4 step 4)")
    authorised, replacement = external_destination_authorised(policy_domain, host, dns)
    if not authorised:
        return Skipped(uri, f"external destination not authorised: no DMARC record at {name}")
    if not replacement:
        return [Destination(uri, address, host, True)]
    # Step 9: the destination's rua= replaces ours, but only toward the same host.
    found = [(r, mailto_address(r)) for r in replacement]
    same = [Destination(r, a, host, True) for r, a in found if a and a.endswith(f"@{host}")]
    return same[:MAX_URIS] or Skipped(uri, f"{name}: its rua= names no mailto: address at {host}")


def find_destinations(policy_domain: str, dns: DnsSession, mode: str = "rfc9989") -> Destinations:
    """Gives where a Policy Domain's reports go, from its record as published now.

    The URIs are taken in the order given (RFC 9990 §3.2), at most MAX_URIS of
    them; each address once.
    """
    try:
        records, _ = records_at(policy_domain, dns, mode)
    except DnsTempError as exc:
        return Destinations(policy_domain, problem=f"_dmarc.{policy_domain}: {exc}", temporary=True)
    if len(records) != 1:
        count = "no DMARC record" if not records else f"{len(records)} DMARC records"
        return Destinations(policy_domain, problem=f"{count} at _dmarc.{policy_domain}")
    if not records[0].rua:
        return Destinations(policy_domain, problem=f"no rua= in _dmarc.{policy_domain}")
    send: dict[str, Destination] = {}
    rua = records[0].rua
    skipped = [Skipped(uri, f"beyond the first {MAX_URIS} rua= URIs") for uri in rua[MAX_URIS:]]
    for uri in rua[:MAX_URIS]:
        try:
            checked = _checked(uri, policy_domain, dns, mode)
        except DnsTempError as exc:
            checked = Skipped(uri, f"temporary DNS failure: {exc}", temporary=True)
        if isinstance(checked, Skipped):
            skipped.append(checked)
            continue
        for dest in checked:
            send.setdefault(dest.address.lower(), dest)
    temporary = any(s.temporary for s in skipped)
    return Destinations(policy_domain, tuple(send.values()), tuple(skipped), temporary=temporary)
