"""ARC chain validation (RFC 8617) and what the oldest sealer said about the message.

dkimpy validates the chain; this module gives its outcome as an `ArcResult`
with the evidence a policy needs to trust a known forwarder: who sealed the
message, in order, and the ARC-Authentication-Results of the first sealer
(i=1), which recorded SPF, DKIM and DMARC before the forwarding broke them
(RFC 8617 §7.2).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

from classifier.auth.header_block import field_in_header, header_end, header_fields
from classifier.lazyre import lazy
from classifier.log import log
from classifier.lookup.resolver import DnsSession
from classifier.message import Message
from classifier.names import MAX_SHOWN

# dkimpy, authres and the chain's cryptography (classifier.auth.arc_chain) are imported
# when a message carries ARC fields: most mail does not, and the pipe starts per message.

MAX_INSTANCES = 50  # RFC 8617 §4.2.1, §5.2 step 1
_ARC_FIELDS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")
_ARC_KEYS = frozenset(name.decode() for name in _ARC_FIELDS)
_INSTANCE = lazy(rb"^\s*i\s*=\s*(\d{1,6})\s*(?:;|$)")
# A fold: a line break and the white space after it (RFC 5322 §3.2.2).  Written with
# each alternative starting with a line break, the search skips to one quickly; "\r?\n"
# was tried at every octet of a long b= (3 times slower).
_FWS = lazy(rb"(?:\r\n|\n)[ \t]+")
# An ARC field starts a line of the header block; most mail has none, and one search says so.
_ANY_ARC_FIELD = lazy(
    rb"^arc-(?:seal|message-signature|authentication-results):", re.IGNORECASE | re.MULTILINE
)


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
    internal_error: bool = False  # our code raised: result fail, reason and log say why

    def to_dict(self) -> dict:
        """Gives the result as plain values for --json."""
        return asdict(self)


def _instance(value: bytes) -> int | None:
    """Gives the i= of an ARC field: the leading tag in AAR, any tag in AMS and AS."""
    from dkim.util import parse_tag_value

    match = _INSTANCE.match(value)
    if match:
        return int(match.group(1))
    try:
        return int(parse_tag_value(_FWS.sub(b" ", value))[b"i"])
    except Exception:
        return None


def _sealers(fields: list[tuple[bytes, bytes]]) -> tuple[str, ...]:
    from dkim.util import parse_tag_value

    seals = []
    for name, value in fields:
        if name.lower() != b"arc-seal":
            continue
        try:
            tags = parse_tag_value(_FWS.sub(b" ", value))
            d = tags.get(b"d", b"")[:MAX_SHOWN].decode("utf-8", "replace")
            seals.append((int(tags.get(b"i", b"0")), d))
        except Exception:
            continue
    # A chain holds one seal per instance, at most MAX_INSTANCES: more fields than that fail
    # it, and need not all be named (58,000 seals made a 250 KB header; attacker review).
    return tuple(d for _, d in sorted(seals))[:MAX_INSTANCES]


@lru_cache(maxsize=1)
def _aar_parser() -> Any:
    """Gives authres's Authentication-Results parser, its token step made cheaper.

    authres reads a value one token at a time, and each token compiled "^" and
    its pattern again (a lookup in re's cache) and cut the text by a `sub` with
    a callback: 370 such steps, 280 µs, for a 3-result AAR.  Here each of
    authres's patterns (constants of its grammar, about 25) is compiled once, and
    the token is cut off the text as that `sub(..., 1)` cut it; authres's grammar
    methods are unchanged.  tests/test_dkim_fast_paths.py compares the two.
    """
    import authres
    import authres.core

    compiled: dict[str, re.Pattern[str]] = {}

    class Header(authres.core.AuthenticationResultsHeader):  # type: ignore[misc]
        _parse_text: str  # what is left to read (set by authres's parse_value)

        def _parse_pattern(self, pattern: str) -> re.Match[str] | None:
            regexp = compiled.get(pattern)
            if regexp is None:
                regexp = compiled.setdefault(pattern, re.compile(r"^" + pattern, re.I))
            text = self._parse_text
            found = regexp.search(text)
            if found is not None:
                self._parse_text = text[: found.start()] + text[found.end() :]
            return found

    features = authres.core_features()
    return lambda value: Header.parse_value(features, value)


def _parse_aar(value: str) -> tuple[str, str, str]:
    """Gives (spf, dkim, dmarc) of an Authentication-Results value (RFC 8601 §2.2)."""
    try:
        header = _aar_parser()(value)
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


def _arc_fields(message: Message) -> list[tuple[bytes, bytes]]:
    """Gives (name, value) of the ARC fields, in order; [] when there are none.

    A clean message (`Message.clean`) gives them from its parsed fields; any
    other goes through `header_fields`, which skips the lines that are no field.
    """
    if not message.clean:
        data = message.data
        if not field_in_header(data, _ANY_ARC_FIELD, header_end(data)):
            return []
        return [(n, v) for n, v in header_fields(data) if n.lower() in _ARC_FIELDS]
    keys = message.field_keys()
    # One pass of set look-ups over the names; Message.has scans the list once per name.
    if _ARC_KEYS.isdisjoint(keys):
        return []
    return [
        (key.encode(), field[1][:-2])
        for key, field in zip(keys, message.dkim_fields(), strict=True)
        if key in _ARC_KEYS
    ]


def key_names(message: Message | bytes) -> list[str]:
    """Gives the key records the chain validation looks up: those of every ARC signature."""
    if isinstance(message, bytes):
        message = Message.parse(message)
    fields = _arc_fields(message)
    if not fields:
        return []
    from dkim.util import parse_tag_value

    names = []
    for name, value in fields:
        if name.lower() not in (b"arc-seal", b"arc-message-signature"):
            continue
        try:
            tags = parse_tag_value(_FWS.sub(b" ", value))
            names.append((tags[b"s"] + b"._domainkey." + tags[b"d"]).decode("utf-8", "replace"))
        except Exception:
            continue  # a set dkimpy will refuse before any lookup
    return list(dict.fromkeys(names))[: 2 * MAX_INSTANCES]


def check_arc(message: Message | bytes, dns: DnsSession) -> ArcResult:
    """Gives the ARC chain validation status, sealers and the oldest AAR (RFC 8617 §5.2).

    Never raises: a chain dkimpy cannot process is a fail with the reason.
    """
    if isinstance(message, bytes):
        message = Message.parse(message)
    fields = _arc_fields(message)
    if not fields:
        return ArcResult("none", 0, (), "", "", "", "", "no ARC header fields")
    import dkim

    from classifier.auth.arc_chain import verify_chain
    from classifier.auth.dkim import DkimKeyTempError

    instances = max((i for _, v in fields if (i := _instance(v)) is not None), default=0)
    oldest = _oldest_results(fields)
    spf, dkim_word, dmarc = _parse_aar(oldest) if oldest else ("", "", "")

    def result(word: str, reason: str) -> ArcResult:
        return ArcResult(word, instances, _sealers(fields), oldest, spf, dkim_word, dmarc, reason)

    if instances > MAX_INSTANCES:
        return result("fail", f"{instances} ARC sets, more than {MAX_INSTANCES} (RFC 8617 §5.2)")
    try:
        cv, reason = verify_chain(message, dns)
    except DkimKeyTempError as exc:
        return result("temperror", exc.reason)
    except (dkim.DKIMException, ValueError) as exc:  # a header dkimpy or a decoder cannot read
        return result("fail", f"ARC not verifiable: {type(exc).__name__}: {exc}"[:300])
    except Exception as exc:
        # Not a temperror, which files nothing: the policy's internal_error decides.
        log.exception("internal error in the ARC check")
        reason = f"internal error in the ARC check: {type(exc).__name__}: {exc}"[:300]
        return replace(result("fail", reason), internal_error=True)
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    text = re.sub(r"b'([^']*)'", r"\1", text)[:300]
    if cv == dkim.CV_Pass:
        return result("pass", f"chain of {instances} ARC set(s) validated")
    if cv == dkim.CV_None:
        return result("none", text)
    # dkimpy gives None for a chain an earlier sealer already marked cv=fail (RFC 8617 §5.2 step 2).
    return result("fail", text)
