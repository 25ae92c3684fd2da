"""DMARC policy records: their grammar, and where the DNS Tree Walk finds them.

Grammar: RFC 9989 §4.7-4.8 (DMARCbis) and RFC 7489 §6.3-6.4.  A record is a
tag-value list (RFC 6376 §3.2) that starts with ``v=DMARC1``; unknown tags are
ignored and a tag whose value breaks the grammar is discarded, leaving its
default (RFC 9989 §4.8, RFC 7489 §6.3).  The two modes know different tags:
``pct``, ``rf`` and ``ri`` exist only in RFC 7489, ``psd`` and ``t`` only in
RFC 9989; ``np`` (RFC 9091, then RFC 9989) is honoured in both.

Discovery: `tree_walk` is the DNS Tree Walk of RFC 9989 §4.10 (at most eight
queries) and `TreeWalk.organizational_domain` its selection rules (§4.10.2).
"""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

from functools import lru_cache
from typing import Any, NamedTuple

from classifier.lazyre import lazy
from classifier.lookup.resolver import DnsSession, DnsTempError

MODES = ("rfc9989", "rfc7489")
REQUESTS = ("none", "quarantine", "reject")
REPORT_SCHEMES = frozenset({"mailto", "http", "https"})

_COMMON_TAGS = frozenset({"v", "p", "sp", "np", "adkim", "aspf", "fo", "rua", "ruf"})
KNOWN_TAGS = {
    "rfc9989": _COMMON_TAGS | {"psd", "t"},
    "rfc7489": _COMMON_TAGS | {"pct", "rf", "ri"},
}
_TAG_NAME = lazy(r"^[A-Za-z][A-Za-z0-9_]*$")
# RFC 3986 URI characters without "," and "!", which a DMARC URI must percent-encode (§4.8)
_URI = lazy(r"^([A-Za-z][A-Za-z0-9+.-]*):([A-Za-z0-9\-._~:/?#\[\]@$&'()*+=%]+)$")
_SIZE = lazy(r"![0-9]+[kmgtKMGT]?$")
_DIGITS = lazy(r"^[0-9]{1,10}$")
_WSP = " \t\r\n"


class RecordError(NamedTuple):
    """Why a TXT string is not a DMARC record at all: it is ignored (RFC 9989 §4.7 "v")."""

    code: str  # "empty", "not-dmarc", "duplicate-tag"
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "reason": self.reason}


class DmarcRecord(NamedTuple):
    """One parsed DMARC record; tags that broke the grammar are in `ignored`, not in effect."""

    text: str
    mode: str
    tags: tuple[tuple[str, str], ...]  # well-formed tags as written, names lower-cased, unknown too
    ignored: tuple[str, ...] = ()  # fragments discarded as syntax errors (§4.8), as written
    p: str | None = None
    sp: str | None = None
    np: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    psd: str = "u"
    testing: bool = False  # t=y (RFC 9989 only)
    pct: int = 100  # RFC 7489 only
    fo: str = "0"
    rua: tuple[str, ...] = ()  # reporting URIs a receiver can use (mailto, http, https)
    ruf: tuple[str, ...] = ()

    @property
    def invalid_tags(self) -> tuple[str, ...]:
        """Gives the names of known tags whose value was discarded."""
        return tuple(f.partition("=")[0].strip().lower() for f in self.ignored if "=" in f)

    def policy_problem(self) -> str:
        """Gives why the record states no usable policy, or "" (RFC 9989 §4.10.1, RFC 7489 §6.6.3).

        A missing or invalid p=, or an invalid sp=/np=, is a problem.
        """
        bad = self.invalid_tags
        if self.p is None:
            return "invalid p= value" if "p" in bad else "no p= tag"
        for tag in ("sp", "np"):
            if tag in bad:
                return f"invalid {tag}= value"
        return ""

    @property
    def usable(self) -> bool:
        """Tells whether the record yields a policy: a valid p=, or else a usable rua= (p=none)."""
        return not self.policy_problem() or bool(self.rua)

    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = self._asdict()
        out["tags"] = self.tag_dict()
        out["usable"] = self.usable
        return out


def _fo_valid(value: str, mode: str) -> bool:
    parts = [p.strip(_WSP).lower() for p in value.split(":")]
    if not parts or any(p not in ("0", "1", "d", "s") for p in parts):
        return False
    if mode == "rfc7489":  # RFC 7489 §6.4: any of 0 1 d s, colon-separated
        return True
    # RFC 9989 §4.8 dmarc-fo: each value at most once, "0" and "1" mutually exclusive
    return len(set(parts)) == len(parts) and not {"0", "1"} <= set(parts)


def _is_uri_list(value: str) -> bool:
    """Tells whether a value is a dmarc-urilist: URIs, each with an optional !size (§4.8)."""
    return all(_URI.match(_SIZE.sub("", item.strip(_WSP))) for item in value.split(","))


def _usable_uri(uri: str) -> bool:
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "mailto":
        local, at, domain = rest.partition("?")[0].partition("@")
        return bool(at and local and domain) and not local.startswith("/")
    return scheme in REPORT_SCHEMES and rest.startswith("//") and len(rest) > 2


def reporting_uris(value: str) -> tuple[str, ...]:
    """Gives the reporting URIs of a rua=/ruf= value that a receiver can use.

    RFC 9989 §4.7: URIs with schemes the receiver does not support MUST be
    ignored; reports go by mailto (which every reporter implements) or http(s).
    The obsolete ``!size`` suffix is dropped (§4.8 obs-dmarc-uri).
    """
    return tuple(
        uri
        for item in value.split(",")
        for uri in (_SIZE.sub("", item.strip(_WSP)),)
        if _URI.match(uri) and _usable_uri(uri)
    )


def valid_tag_value(tag: str, value: str, mode: str = "rfc9989") -> bool:
    """Tells whether a value fits the grammar of a known tag (RFC 9989 §4.8, RFC 7489 §6.4).

    ABNF literals are case-insensitive (RFC 5234 §2.3), except the version,
    which is ``%s"DMARC1"`` (RFC 9989 §4.8) and hex-coded in RFC 7489 §6.4.
    Unknown tags accept any non-empty value (they are ignored).
    """
    tag, low = tag.lower(), value.strip(_WSP).lower()
    if not low:
        return False
    if tag == "v":
        return value.strip(_WSP) == "DMARC1"
    if tag in ("p", "sp", "np"):
        return low in REQUESTS
    if tag == "psd":
        return low in ("y", "n", "u")
    if tag == "t":
        return low in ("y", "n")
    if tag in ("adkim", "aspf"):
        return low in ("r", "s")
    if tag == "fo":
        return _fo_valid(low, mode)
    if tag in ("rua", "ruf"):
        return _is_uri_list(value)
    if tag == "pct":
        return bool(_DIGITS.match(low)) and int(low) <= 100
    if tag == "ri":
        return bool(_DIGITS.match(low)) and int(low) < 2**32
    if tag == "rf":  # RFC 7489 §6.3: registered report formats only, and "afrf" is the one
        return all(part.strip(_WSP) == "afrf" for part in low.split(":"))
    return True


def parse_record(text: str, mode: str = "rfc9989") -> DmarcRecord | RecordError:
    """Gives the record a TXT string states, or why it is not a DMARC record (RFC 9989 §4.7-4.8).

    ``v=DMARC1`` must come first, exactly so; a tag name twice makes the whole
    list invalid (RFC 6376 §3.2); unknown tags are kept in `tags` but have no
    effect; a known tag with a bad value, a fragment without ``=`` and an empty
    value are discarded into `ignored` (RFC 9989 §4.8, RFC 7489 §6.3).
    """
    if mode not in MODES:
        mode = "rfc9989"
    body = str(text).strip(_WSP)
    if not body:
        return RecordError("empty", "empty TXT record")
    fragments = body.split(";")
    name, eq, value = fragments[0].partition("=")
    if not eq or name.strip(_WSP).lower() != "v" or value.strip(_WSP) != "DMARC1":
        return RecordError("not-dmarc", f"does not start with v=DMARC1: {body[:80]!r}")
    tags: list[tuple[str, str]] = [("v", "DMARC1")]
    ignored: list[str] = []
    fields: dict[str, Any] = {}
    seen = {"v"}
    known = KNOWN_TAGS[mode]
    for fragment in fragments[1:]:
        fragment = fragment.strip(_WSP)
        if not fragment:
            continue
        name, eq, value = fragment.partition("=")
        name, value = name.strip(_WSP).lower(), value.strip(_WSP)
        if not eq or not _TAG_NAME.match(name) or not value:
            ignored.append(fragment)
            continue
        if name in seen:
            return RecordError("duplicate-tag", f"tag {name}= appears twice (RFC 6376 §3.2)")
        seen.add(name)
        if name in known and not valid_tag_value(name, value, mode):
            ignored.append(fragment)
            continue
        tags.append((name, value))
        if name in known:
            fields.update(_fields(name, value))
    return DmarcRecord(text=body, mode=mode, tags=tuple(tags), ignored=tuple(ignored), **fields)


def _fields(tag: str, value: str) -> dict[str, Any]:
    """Gives the DmarcRecord fields a valid tag sets."""
    low = value.lower()
    if tag in ("p", "sp", "np", "adkim", "aspf", "psd", "fo"):
        return {tag: low}
    if tag == "t":
        return {"testing": low == "y"}
    if tag == "pct":
        return {"pct": int(low)}
    if tag in ("rua", "ruf"):
        return {tag: reporting_uris(value)}
    return {}  # v, rf, ri: checked, but nothing to keep


# The same few records come with most mail; a parsed record is immutable, so it is shared.
_parse_known = lru_cache(maxsize=4096)(parse_record)


def _records(texts: list[str], mode: str) -> list[DmarcRecord]:
    return [r for r in (_parse_known(t, mode) for t in texts) if isinstance(r, DmarcRecord)]


def records_at(
    domain: str, dns: DnsSession, mode: str = "rfc9989"
) -> tuple[list[DmarcRecord], bool]:
    """Gives the DMARC records at ``_dmarc.<domain>`` and whether that name is NXDOMAIN.

    TXT strings that are not DMARC records are discarded (RFC 9989 §4.10 step 2).
    Raises DnsTempError on a temporary DNS failure.
    """
    answer = dns.query(f"_dmarc.{domain}", "TXT")
    return _records(answer.txt_strings(), mode), answer.nxdomain


def fetch_records(domain: str, dns: DnsSession) -> list[str]:
    """Gives the text of each DMARC record at ``_dmarc.<domain>``; raises DnsTempError."""
    return [r.text for r in records_at(domain, dns)[0]]


def walk_names(domain: str) -> list[str]:
    """Gives the names a DNS Tree Walk queries, at most eight (RFC 9989 §4.10 steps 3-7).

    The domain itself; then, for fewer than eight labels, each parent in turn;
    for eight or more, a jump to the last seven labels, then each parent.
    """
    labels = domain.split(".")
    rest = labels[-7:] if len(labels) >= 8 else labels[1:]
    names = [domain]
    while rest:
        names.append(".".join(rest))
        rest = rest[1:]
    return names


class WalkStep(NamedTuple):
    """One query of a tree walk: the name and the single DMARC record found there, if any."""

    name: str
    record: DmarcRecord | None
    found: int  # DMARC records at the name; two or more are all discarded (§4.10 step 2)
    nxdomain: bool


class TreeWalk(NamedTuple):
    """The DNS Tree Walk from one domain (RFC 9989 §4.10), cut short by a temporary error."""

    start: str
    steps: tuple[WalkStep, ...]
    error: str = ""  # the temporary DNS failure that stopped the walk, "" when complete

    def records(self) -> list[tuple[str, DmarcRecord]]:
        """Gives (name, record) for each name that held exactly one DMARC record, longest first."""
        return [(s.name, s.record) for s in self.steps if s.record is not None]

    def record_at(self, name: str) -> DmarcRecord | None:
        return next((r for n, r in self.records() if n == name), None)

    def organizational_domain(self) -> str:
        """Gives the Organizational Domain by the selection rules of RFC 9989 §4.10.2.

        A psd=n record marks its own domain; a psd=y record (other than at the
        start) marks the domain one label below it; otherwise the record with
        the fewest labels; with no record at all, the start itself.
        """
        found = self.records()
        for name, record in found:
            if record.psd == "n":
                return name
            if record.psd == "y" and name != self.start:
                return ".".join(self.start.split(".")[-(name.count(".") + 2) :])
        return found[-1][0] if found else self.start

    def psd_record(self) -> tuple[str, DmarcRecord] | None:
        """Gives the Public Suffix Domain's record (psd=y) met on the walk, if any."""
        return next(((n, r) for n, r in self.records() if r.psd == "y"), None)

    def queried(self) -> list[str]:
        return [f"_dmarc.{s.name}" for s in self.steps]


def tree_walk(domain: str, dns: DnsSession, policy_only: bool = False) -> TreeWalk:
    """Gives the DNS Tree Walk from a domain: queries up to eight names (RFC 9989 §4.10).

    The walk stops early at the first single record carrying psd=y or psd=n
    (steps 2 and 6), or at a temporary DNS failure, which it records.  With
    `policy_only`, a record at the domain itself ends it too: policy discovery
    is done there (§4.10.1), and the names above matter only to an
    Organizational Domain that may never be needed.
    """
    steps: list[WalkStep] = []
    for name in walk_names(domain):
        try:
            found, nxdomain = records_at(name, dns, "rfc9989")
        except DnsTempError as exc:
            return TreeWalk(domain, tuple(steps), f"_dmarc.{name}: {exc.reason}")
        record = found[0] if len(found) == 1 else None
        steps.append(WalkStep(name, record, len(found), nxdomain))
        if record is not None and (record.psd in ("y", "n") or (policy_only and len(steps) == 1)):
            break
    return TreeWalk(domain, tuple(steps))


def external_destination_authorised(
    policy_domain: str, destination_domain: str, dns: DnsSession
) -> tuple[bool, tuple[str, ...]]:
    """Gives whether a report destination outside the policy domain accepts its reports.

    RFC 9990 §4 (RFC 7489 §7.1 before it): the destination publishes a DMARC
    record at ``<policy domain>._report._dmarc.<destination>``; a rua= in it
    replaces the requested URIs.  Gives (authorised, replacement URIs).  Raises
    DnsTempError on a temporary DNS failure: that is not a "no" (RFC 9990 §4 step 5
    lets the check be repeated later), and the caller decides what waits.
    """
    answer = dns.query(f"{policy_domain}._report._dmarc.{destination_domain}", "TXT")
    found = _records(answer.txt_strings(), "rfc7489")
    return bool(found), (found[0].rua if found else ())
