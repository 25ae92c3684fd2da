"""ARC chain validation (RFC 8617) and what the oldest sealer said about the message.

dkimpy validates the chain; this module gives its outcome as an `ArcResult`
with the evidence a policy needs to trust a known forwarder: who sealed the
message, in order, and the ARC-Authentication-Results of the first sealer
(i=1), which recorded SPF, DKIM and DMARC before the forwarding broke them
(RFC 8617 §7.2).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

import authres
import dkim
from dkim.util import parse_tag_value

from classifier.dkim import (
    DkimKeyTempError,
    crlf_body,
    dkimpy_txt_lookup,
    field_in_header,
    header_end,
    header_fields,
)
from classifier.dns import DnsSession

MAX_INSTANCES = 50  # RFC 8617 §4.2.1, §5.2 step 1
# Memory dkimpy may take to canonicalise a body for ARC, or twice the message when that is more.
MAX_CANONICALISATION = 64 * 2**20
_ARC_FIELDS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")
_INSTANCE = re.compile(rb"^\s*i\s*=\s*(\d{1,6})\s*(?:;|$)")
_FWS = re.compile(rb"\r?\n[ \t]+")
# An ARC field starts a line of the header block; most mail has none, and one search says so.
_ANY_ARC_FIELD = re.compile(
    rb"^arc-(?:seal|message-signature|authentication-results):", re.IGNORECASE | re.MULTILINE
)

# dkimpy logs every failing seal at ERROR; the result carries the reason instead.
_DKIMPY_LOG = logging.Logger("authsieve.dkimpy.arc")
_DKIMPY_LOG.disabled = True


@dataclass(frozen=True)
class ArcResult:
    """The chain validation status of a message (RFC 8617 §5.2) and its evidence."""

    result: str  # pass fail none, or temperror when a key lookup failed temporarily
    instances: int  # number of ARC sets (highest i=)
    sealers: tuple[str, ...]  # d= of each ARC-Seal, i=1 first
    oldest_results: str  # ARC-Authentication-Results value of i=1, without "i=1;"
    oldest_spf: str  # spf= of that AAR ("" when absent or unreadable)
    oldest_dkim: str  # dkim=: "pass" when any dkim= passed, else the first
    oldest_dmarc: str  # dmarc=
    reason: str

    def to_dict(self) -> dict:
        """Gives the result as plain values for --json."""
        return asdict(self)


def _instance(value: bytes) -> int | None:
    """Gives the i= of an ARC field: the leading tag in AAR, any tag in AMS and AS."""
    match = _INSTANCE.match(value)
    if match:
        return int(match.group(1))
    try:
        return int(parse_tag_value(_FWS.sub(b" ", value))[b"i"])
    except Exception:
        return None


def _sealers(fields: list[tuple[bytes, bytes]]) -> tuple[str, ...]:
    seals = []
    for name, value in fields:
        if name.lower() != b"arc-seal":
            continue
        try:
            tags = parse_tag_value(_FWS.sub(b" ", value))
            seals.append(
                (int(tags.get(b"i", b"0")), tags.get(b"d", b"").decode("utf-8", "replace"))
            )
        except Exception:
            continue
    return tuple(d for _, d in sorted(seals))


def _parse_aar(value: str) -> tuple[str, str, str]:
    """Gives (spf, dkim, dmarc) of an Authentication-Results value (RFC 8601 §2.2)."""
    try:
        header = authres.AuthenticationResultsHeader.parse_value(value)
    except Exception:
        return "", "", ""
    found: dict[str, list[str]] = {}
    for res in header.results:
        method = str(getattr(res, "method", "")).lower()
        found.setdefault(method, []).append(str(getattr(res, "result", "")).lower())
    dkim_results = found.get("dkim", [])
    dkim_word = "pass" if "pass" in dkim_results else (dkim_results[0] if dkim_results else "")
    return found.get("spf", [""])[0], dkim_word, found.get("dmarc", [""])[0]


def _oldest_results(fields: list[tuple[bytes, bytes]]) -> str:
    for name, value in fields:
        if name.lower() == b"arc-authentication-results" and _instance(value) == 1:
            text = _FWS.sub(b" ", value).decode("utf-8", "replace").strip()
            return re.sub(r"^i\s*=\s*1\s*;\s*", "", text)
    return ""


def _canonicalisation_cost(
    message: bytes, fields: list[tuple[bytes, bytes]], instances: int
) -> int:
    """Gives about how much memory dkimpy takes to canonicalise the body for the newest AMS.

    dkimpy canonicalises a body whole, and under the relaxed algorithm its
    regular expressions hold a piece for every run of spaces before joining
    them: about 90 octets a run, measured here (a 50 MB body of short words
    took 22 times its size).  The simple algorithm takes one copy.
    """
    end = header_end(message)
    if end is None:
        return 0
    body = len(message) - end[1]
    newest = [v for n, v in fields if n.lower() == b"arc-message-signature"]
    newest = [v for v in newest if _instance(v) == instances]
    try:
        canon = parse_tag_value(_FWS.sub(b" ", newest[0])).get(b"c", b"simple/simple")
    except Exception:
        return body  # dkimpy will refuse the signature before it reads the body
    if not canon.strip().lower().endswith(b"/relaxed"):
        return body
    return body + 90 * (message.count(b" ", end[1]) + message.count(b"\t", end[1]))


def _verify_chain(message: bytes, dns: DnsSession) -> tuple[object, object]:
    """Gives dkimpy's chain validation status and reason, as its `arc_verify` does.

    dkimpy's parser gets the header block only and the body is handed over
    as one CRLF string: parsing a 50 MB body into lines took 4.8 times the
    message's size in memory (tests/test_checks.py holds it under 3).
    """
    end = header_end(message)
    verifier = dkim.ARC(
        message if end is None else message[: end[1]], logger=_DKIMPY_LOG, minkey=1024
    )
    if end is not None:
        verifier.body = crlf_body(message, end)
    try:
        cv, _, reason = verifier.verify(dnsfunc=dkimpy_txt_lookup(dns))
    except dkim.DKIMException as exc:
        return dkim.CV_Fail, str(exc)
    return cv, reason


def check_arc(message: bytes, dns: DnsSession) -> ArcResult:
    """Gives the ARC chain validation status, sealers and the oldest AAR (RFC 8617 §5.2).

    Never raises: a chain dkimpy cannot process is a fail with the reason.
    """
    if not field_in_header(message, _ANY_ARC_FIELD, header_end(message)):
        return ArcResult("none", 0, (), "", "", "", "", "no ARC header fields")
    fields = [(n, v) for n, v in header_fields(message) if n.lower() in _ARC_FIELDS]
    instances = max((i for _, v in fields if (i := _instance(v)) is not None), default=0)
    oldest = _oldest_results(fields)
    spf, dkim_word, dmarc = _parse_aar(oldest) if oldest else ("", "", "")

    def result(word: str, reason: str) -> ArcResult:
        return ArcResult(word, instances, _sealers(fields), oldest, spf, dkim_word, dmarc, reason)

    if not fields:
        return result("none", "no ARC header fields")
    if instances > MAX_INSTANCES:
        return result("fail", f"{instances} ARC sets, more than {MAX_INSTANCES} (RFC 8617 §5.2)")
    cost = _canonicalisation_cost(message, fields, instances)
    if cost > max(2 * len(message), MAX_CANONICALISATION):
        return result(
            "fail",
            f"not validated: canonicalising this {len(message) / 2**20:.1f} MiB message would"
            f" take about {cost / 2**20:.0f} MiB of memory (relaxed, RFC 6376 §3.4.4)",
        )
    try:
        cv, reason = _verify_chain(message, dns)
    except DkimKeyTempError as exc:
        return result("temperror", exc.reason)
    except Exception as exc:
        return result("fail", f"ARC not verifiable: {type(exc).__name__}: {exc}"[:300])
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    text = re.sub(r"b'([^']*)'", r"\1", text)[:300]
    if cv == dkim.CV_Pass:
        return result("pass", f"chain of {instances} ARC set(s) validated")
    if cv == dkim.CV_None:
        return result("none", text)
    # dkimpy gives None for a chain an earlier sealer already marked cv=fail (RFC 8617 §5.2 step 2).
    return result("fail", text)
