"""DKIM verification of every signature of a message (RFC 6376, RFC 8463 Ed25519, RFC 8301).

dkimpy parses the header and canonicalises, `dkim_signature` checks the
cryptography; this module decides what each signature's result is and why,
in RFC 8601 §2.7.1 terms:

- ``pass``: the signature verifies with an acceptable key and algorithm;
- ``fail``: it does not verify (header signature or body hash mismatch), or it
  uses what RFC 8301 forbids (rsa-sha1, RSA keys under 1024 bits), or it
  expired (RFC 6376 §3.5 x=) or claims a time in the future;
- ``permerror``: it cannot be verified and never will be: malformed tags, a
  required tag missing, From not signed, no key record, an unusable, revoked
  or mismatched key (RFC 6376 §6.1.1, §6.1.2);
- ``temperror``: the key lookup failed temporarily (timeout, SERVFAIL, budget);
- ``policy``: not looked at, because the message carries more signatures than
  we verify (RFC 6376 §6.1 lets a verifier limit them; RFC 8601 §2.7.1: the
  signatures were not acceptable to the receiver); one result stands for all of
  them, so their number costs neither memory nor header size.  At most MAX_SIGNATURES are
  verified, those whose d= is the From domain first, then those near it, then
  the rest from the top: 200 signatures with different l= over a 5 MB body
  took 4.7 s for the 16 verified before, so a sender cannot spend the
  delivery's time on signatures, nor push the author's own one out of reach.

A check that raises an error dkimpy does not raise for bad input is an
internal error: permerror with ``internal_error`` set, a reason saying so and
a log line with the traceback; the policy files it under ``internal_error``.

Every key lookup goes through the message's `DnsSession`; nothing from a
message is allowed to raise out of `check_dkim`.
"""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import NamedTuple

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from classifier.auth.dkim_signature import (
    BadSignatureTags,
    BodyHashMismatch,
    SignedMessage,
    public_key,
    verify,
)
from classifier.auth.header_block import field_in_header, header_end, header_fields
from classifier.errors import AuthsieveError
from classifier.lazyre import lazy
from classifier.log import log
from classifier.lookup.resolver import DnsSession, DnsTempError
from classifier.message import Message
from classifier.names import MAX_SHOWN

MAX_SIGNATURES = 8  # per message (RFC 6376 §6.1: a verifier MAY limit the signatures it tries)
# RFC 5322 §3.6: fields that occur at most once, so an extra copy is an attack (RFC 6376 §8.15).
SINGLETON_FIELDS = tuple(
    b"from sender reply-to to cc subject date message-id in-reply-to references".split()
)
MAX_SIGNATURE_OCTETS = 16_384  # real signatures are under 2 KB; the cap bounds dkimpy's regexes
MIN_RSA_BITS = 1024  # RFC 8301 §3.2
# dkimpy's own leeway for t= and x=, kept so that pinning `now` changes nothing else.
CLOCK_SLOP = 36_000


_TIMESTAMP = re.compile(rb"\d{1,12}")
# A DKIM-Signature field starts a line of the header block (both parsers read names this way).
_SIGNATURE_FIELD = lazy(rb"^dkim-signature:", re.IGNORECASE | re.MULTILINE)


class DkimKeyTempError(AuthsieveError):
    """A key lookup failed temporarily; raised through dkimpy so it is not read as 'no key'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def dkimpy_txt_lookup(dns: DnsSession) -> Callable[..., bytes | None]:
    """Gives a dkimpy ``dnsfunc``: the first TXT record at a name, None when there is none.

    dkimpy turns any DNS failure into "no key"; raising `DkimKeyTempError`
    instead keeps a temporary failure a temperror (RFC 6376 §6.1.2).
    """

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        try:
            records = dns.txt(text)
        except DnsTempError as exc:
            raise DkimKeyTempError(f"DNS temporary failure: {exc.reason}") from exc
        except Exception:
            # A name the DNS cannot carry (bad escape, IDNA error) has no key.
            return None
        # RFC 6376 §3.6.2.2 leaves several records undefined; take the first, as dkimpy does.
        return records[0].encode("utf-8") if records else None

    return lookup


def _dkimpy_reason(exc: Exception) -> str:
    """Gives dkimpy's message without the b'…' of Python's bytes repr, at most 200 characters."""
    return re.sub(r"b'([^']*)'", r"\1", str(exc))[:200]


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace").strip()


def _shown(value: bytes | None) -> str:
    return _text(value[:MAX_SHOWN] if value else value)


@dataclass(frozen=True)
class DkimSignatureResult:
    """The result of one DKIM-Signature header field, with the evidence for it."""

    result: str  # pass fail neutral policy temperror permerror (RFC 8601 §2.7.1)
    domain: str  # d=
    selector: str  # s=
    algorithm: str  # a=
    b: str  # first 8 characters of b= (header.b, RFC 6008)
    identity: str  # i=, or "@" + d= when absent (RFC 6376 §3.5)
    bits: int | None  # key size: RSA modulus bits, 256 for Ed25519
    reason: str
    index: int  # 0-based position among the DKIM-Signature fields, from the top
    testing: bool = False  # key has t=y: treat like unsigned mail (RFC 6376 §3.6.1)
    internal_error: bool = False  # our code raised: result permerror, reason and log say why

    def to_dict(self) -> dict:
        """Gives the result as plain values for --json."""
        return asdict(self)


class _Outcome(NamedTuple):
    result: str
    reason: str
    bits: int | None = None
    testing: bool = False
    internal: bool = False


# What dkimpy and the decoders raise on a message or key they cannot read: a permerror.
# Anything else is an error of ours, logged and reported as such (never a temperror).
_INPUT_ERRORS = (dkim.DKIMException, ValueError)


def _internal(exc: Exception, bits: int | None = None, testing: bool = False) -> _Outcome:
    """Gives the outcome of a signature whose check raised an unexpected error, logged."""
    log.exception("internal error in the DKIM check")
    reason = f"internal error in the DKIM check: {type(exc).__name__}: {_dkimpy_reason(exc)}"
    return _Outcome("permerror", reason, bits, testing, internal=True)


class _Verdict(Exception):
    """Ends the checks of one signature early, before the key is known, with a result."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


def _check_times(tags: dict[bytes, bytes], now: float) -> None:
    """Raises a verdict when t= or x= are malformed or rule the signature out (RFC 6376 §3.5)."""
    stamps: dict[bytes, int] = {}
    for tag in (b"t", b"x"):
        if tag in tags:
            if _TIMESTAMP.fullmatch(tags[tag]) is None:
                raise _Verdict("permerror", f"{tag.decode()}= is not a timestamp")
            stamps[tag] = int(tags[tag])
    t, x = stamps.get(b"t"), stamps.get(b"x")
    if t is not None and x is not None and x <= t:
        raise _Verdict("permerror", f"x={x} is not after t={t}")
    if x is not None and x < now - CLOCK_SLOP:
        raise _Verdict("fail", f"signature expired (x={x})")
    if t is not None and t > now + CLOCK_SLOP:
        raise _Verdict("fail", f"signature timestamp in the future (t={t})")


def _check_key_record(record: bytes, tags: dict[bytes, bytes]) -> bool:
    """Gives whether the key is in testing mode; raises a verdict for an unusable key.

    RFC 6376 §3.6.1 (tags of the key record) and §6.1.2 (what makes a key unusable).
    """
    i_domain = tags.get(b"i", b"@" + tags[b"d"]).rpartition(b"@")[2]
    return _key_record_verdict(record, tags[b"a"].lower(), i_domain.lower() == tags[b"d"].lower())


@lru_cache(maxsize=1024)
def _key_record_verdict(record: bytes, algorithm: bytes, i_is_d: bool) -> bool:
    """`_check_key_record` for a signature's a= (in lower case) and whether its i= domain is d=.

    Kept per key record, as the record's tags are: the same keys sign most mail.  A
    verdict raised is not kept.
    """
    try:
        key = _key_tags(record)
    except InvalidTagValueList as exc:
        raise _Verdict("permerror", f"malformed key record: {exc}") from exc
    if key.get(b"v", b"DKIM1") != b"DKIM1":
        raise _Verdict("permerror", "key record v= is not DKIM1")
    if b"p" not in key:
        raise _Verdict("permerror", "key record has no p=")
    if not key[b"p"]:
        raise _Verdict("permerror", "key revoked (empty p=)")
    ktype = key.get(b"k", b"rsa").lower()
    if ktype not in (b"rsa", b"ed25519"):
        raise _Verdict("permerror", f"unknown key type k={_text(ktype)}")
    if not algorithm.startswith(ktype + b"-"):
        raise _Verdict(
            "permerror", f"key type k={_text(ktype)} does not match a={_text(algorithm)}"
        )
    if b"h" in key:
        hashes = {h.strip().lower() for h in key[b"h"].split(b":")}
        if algorithm.split(b"-", 1)[1] not in hashes:
            raise _Verdict("permerror", f"key h={_text(key[b'h'])} excludes a={_text(algorithm)}")
    if b"s" in key:
        services = {s.strip().lower() for s in key[b"s"].split(b":")}
        if not services & {b"*", b"email"}:
            raise _Verdict("permerror", f"key is not for email (s={_text(key[b's'])})")
    flags = {f.strip().lower() for f in key.get(b"t", b"").split(b":")}
    if b"s" in flags and not i_is_d:
        raise _Verdict("permerror", "key flag t=s forbids an i= subdomain of d=")
    return b"y" in flags


@lru_cache(maxsize=1024)
def _key_tags(record: bytes) -> dict[bytes, bytes]:
    """Gives the tags of a key record (read only: the dict is shared by every caller)."""
    return parse_tag_value(record)


def _verify(
    message: SignedMessage,
    field: list[bytes] | tuple[bytes, bytes],
    tags: dict[bytes, bytes],
    dns: DnsSession,
    now: float,
) -> _Outcome:
    """Gives the outcome of one parsed signature (RFC 6376 §6.1)."""
    try:
        # t= and x= are checked against `now` below, not dkimpy's clock: a copy without them.
        fields = tags.copy()
        fields.pop(b"t", None)
        fields.pop(b"x", None)
        dkim.validate_signature_fields(fields)
    except dkim.DKIMException as exc:
        raise _Verdict("permerror", _dkimpy_reason(exc)) from exc
    except IndexError as exc:
        # dkimpy indexes before the start of an i= that is d= itself with nothing before
        # it ("i=example.com"): no "@", so no Agent or User Identifier (RFC 6376 §3.5).
        i = _shown(tags.get(b"i"))
        raise _Verdict("permerror", f"i= {i} is not an address within d= (RFC 6376 §3.5)") from exc
    # The names of h= are separated by ":" with white space around it (RFC 6376 §3.5);
    # strip() takes the white space off each name.
    signed = [h.strip().lower() for h in tags[b"h"].split(b":")]
    if b"from" not in signed:
        raise _Verdict("permerror", "From header field not signed (RFC 6376 §6.1.1)")
    _check_times(tags, now)
    if tags[b"a"].lower() == b"rsa-sha1":
        raise _Verdict("fail", "rsa-sha1 not allowed (RFC 8301 §3.1)")
    name = _key_name(tags)
    try:
        record = dkimpy_txt_lookup(dns)(name)
    except DkimKeyTempError as exc:
        raise _Verdict("temperror", exc.reason) from exc
    if record is None:
        raise _Verdict("permerror", f"no key for {name}")
    testing = _check_key_record(record, tags)
    try:
        key = public_key(name, record)
    except Exception as exc:
        raise _Verdict("permerror", f"unusable key at {name}: {_dkimpy_reason(exc)}") from exc
    bits = key.bits
    if key.ktype == b"rsa" and bits < MIN_RSA_BITS:
        return _Outcome("fail", f"key too short ({bits} bits; RFC 8301 §3.2)", bits, testing)
    try:
        ok = verify(key, tags, signed, field, message)
    except BodyHashMismatch:
        return _Outcome("fail", "body hash mismatch", bits, testing)
    except BadSignatureTags as exc:
        return _Outcome("permerror", str(exc), bits, testing)
    except _INPUT_ERRORS as exc:
        return _Outcome("permerror", _unverifiable(exc), bits, testing)
    except Exception as exc:
        return _internal(exc, bits, testing)
    if not ok:
        return _Outcome("fail", "signature did not verify", bits, testing)
    added = _unsigned_extra_fields(message.names, signed)
    note = f"; unsigned extra {', '.join(added)} field (RFC 6376 §8.15)" if added else ""
    return _Outcome("pass", "signature verified" + note, bits, testing)


def _unsigned_extra_fields(names: list[bytes], signed: list[bytes]) -> list[str]:
    """Gives the singleton fields that occur more often than the signature covers them.

    An added Subject or To above the signed one keeps the signature valid while
    a mail reader shows the added one (RFC 6376 §8.15); this is evidence for
    the verdict, not a failure.  `names` are the message's field names in lower case.
    """
    return [
        name.decode().title()
        for name in SINGLETON_FIELDS
        if 0 < signed.count(name) < names.count(name)
    ]


def _unverifiable(exc: Exception) -> str:
    return f"unverifiable signature: {type(exc).__name__}: {_dkimpy_reason(exc)}"


def _result(
    index: int, value: bytes, outcome: _Outcome, tags: dict[bytes, bytes] | None = None
) -> DkimSignatureResult:
    """Gives the result for a signature field value, its tags read leniently for the evidence."""
    if tags is None:
        try:
            tags = parse_tag_value(value)
        except Exception:
            tags = {}
    domain = _shown(tags.get(b"d"))
    # header.b is the first 8 characters of b= (RFC 6008): white space is taken out of
    # its start only, unless that leaves fewer.
    b_raw = tags.get(b"b", b"")
    b_value = b"".join(b_raw[:32].split())
    if len(b_value) < 8:
        b_value = b"".join(b_raw.split())
    return DkimSignatureResult(
        result=outcome.result,
        domain=domain,
        selector=_shown(tags.get(b"s")),
        algorithm=_shown(tags.get(b"a")),
        b=_text(b_value[:8]),
        identity=_shown(tags.get(b"i")) or f"@{domain}",
        bits=outcome.bits,
        reason=outcome.reason,
        index=index,
        testing=outcome.testing,
        internal_error=outcome.internal,
    )


def _read_tags(value: bytes) -> dict[bytes, bytes] | _Outcome:
    """Gives the tags of a signature field, or the permerror outcome when they cannot be read."""
    if len(value) > MAX_SIGNATURE_OCTETS:
        return _Outcome("permerror", f"header too long ({len(value)} octets)")
    try:
        return parse_tag_value(value)
    except Exception as exc:
        return _Outcome("permerror", f"malformed tag list: {_dkimpy_reason(exc)}")


def _key_name(tags: dict[bytes, bytes]) -> str:
    """Gives the name of the key record a signature names (RFC 6376 §3.6.2.1)."""
    return f"{_text(tags[b's'])}._domainkey.{_text(tags[b'd'])}"


def _check_one(
    message: SignedMessage,
    index: int,
    field: list[bytes],
    tags: dict[bytes, bytes] | _Outcome,
    dns: DnsSession,
    now: float,
) -> DkimSignatureResult:
    """Gives the result of the signature field at `index`, whatever its content."""
    if isinstance(tags, _Outcome):
        return _result(index, field[1], tags)  # the evidence reads what it can of the field
    try:
        outcome = _verify(message, field, tags, dns, now)
    except _Verdict as verdict:
        outcome = _Outcome(verdict.result, verdict.reason)
    except _INPUT_ERRORS as exc:
        outcome = _Outcome("permerror", _unverifiable(exc))
    except Exception as exc:
        outcome = _internal(exc)
    return _result(index, field[1], outcome, tags)


def _signed_message(message: bytes, end: tuple[int, int] | None) -> SignedMessage:
    """Gives the message as dkimpy's parser reads it, without splitting the body into lines.

    dkimpy splits the whole message into a list of lines to find the body; for
    a 50 MB message that alone costs more than the message.  Its parser gets
    the header block only; the body stays where it is in the message and is
    hashed a slice at a time (`dkim_body`).  `end` is `header_end(message)`.
    """
    if end is None:
        return SignedMessage(dkim.rfc822_parse(message)[0], b"", 0)  # no body
    fields, _ = dkim.rfc822_parse(message[: end[1]])
    return SignedMessage(fields, message, end[1])


class Signatures(NamedTuple):
    """The DKIM-Signature fields of a message, read once for the key lookups and the checks.

    `unreadable` says why dkimpy could not read the header block ("" when it
    could); each signature then gets a permerror with that reason.
    """

    message: SignedMessage | None
    fields: tuple[list[bytes], ...]
    # One per field: the tags, the outcome of reading them, or None for a field not verified
    # (beyond MAX_SIGNATURES).
    tags: tuple[dict[bytes, bytes] | _Outcome | None, ...]
    unreadable: str = ""

    def key_names(self) -> list[str]:
        """Gives the key record names the verified signatures will look up, in order."""
        return [
            _key_name(tags)
            for tags in self.tags
            if isinstance(tags, dict) and b"s" in tags and b"d" in tags
        ]


_D_TAG = lazy(rb"(?:^|;)[ \t\r\n]*d[ \t\r\n]*=[ \t\r\n]*([^; \t\r\n]*)")


def _nearness(value: bytes, author: bytes) -> int:
    """Gives 0 when d= is the From domain, 1 when they share a parent, 2 otherwise.

    A guess without DNS at which signatures can align for DMARC (RFC 7489 §3.1.1);
    it only orders the signatures to verify, it decides nothing.
    """
    if len(value) > MAX_SIGNATURE_OCTETS:
        return 2
    found = _D_TAG.search(value)
    d = found.group(1).lower().rstrip(b".") if found else b""
    if not d or not author:
        return 2
    if d == author:
        return 0
    shared = 0
    for ours, theirs in zip(reversed(author.split(b".")), reversed(d.split(b".")), strict=False):
        if ours != theirs:
            break
        shared += 1
    return 1 if shared >= 2 else 2


def _chosen(fields: tuple[list[bytes], ...], author: str) -> set[int]:
    """Gives the indexes of the signature fields to verify (at most MAX_SIGNATURES)."""
    if len(fields) <= MAX_SIGNATURES:
        return set(range(len(fields)))
    name = author.encode("ascii", "replace")
    order = sorted(range(len(fields)), key=lambda i: (_nearness(fields[i][1], name), i))
    return set(order[:MAX_SIGNATURES])


def _tags_of(
    fields: tuple[list[bytes], ...], author: str, message: SignedMessage | None
) -> tuple[dict[bytes, bytes] | _Outcome | None, ...]:
    """Gives the tags of the fields to verify (None for the others), noting their body hashes."""
    chosen = _chosen(fields, author)
    tags = tuple(_read_tags(f[1]) if i in chosen else None for i, f in enumerate(fields))
    if message is not None:
        for t in tags:
            if isinstance(t, dict):
                message.expect(t)
    return tags


def _author_domain(message: Message) -> str:
    from classifier.auth.fromheader import from_domains

    try:
        domains, _ = from_domains(message.get_all("From"))
    except Exception:  # the order of the checks only: DMARC reads From and reports
        return ""
    return domains[0] if domains else ""


def read_signatures(message: Message | bytes) -> Signatures:
    """Gives the message's DKIM-Signature fields with their tags (none when unsigned).

    A parsed message hands dkimpy its fields (`Message.dkim_fields`): the header
    block is not cut again.  One whose header block holds a line that is no
    field (an mbox "From " line dkimpy skips, junk it refuses) goes through
    dkimpy's own parser, as every message did before.
    """
    if isinstance(message, bytes):
        message = Message.parse(message)
    if not message.clean:
        return _read_signatures_unclean(message.data)
    if "dkim-signature" not in message.field_keys():
        return Signatures(None, (), ())
    end = message.header_end
    fields = message.dkim_fields()
    data = message.data
    signed = SignedMessage(fields, data, end[1]) if end else SignedMessage(fields, b"", 0)
    found = tuple(
        f for f, n in zip(fields, message.field_keys(), strict=True) if n == "dkim-signature"
    )
    # The author domain orders the signatures only when there are more than are verified.
    author = _author_domain(message) if len(found) > MAX_SIGNATURES else ""
    return Signatures(signed, found, _tags_of(found, author, signed))


def _read_signatures_unclean(message: bytes) -> Signatures:
    """`read_signatures` of a header block with lines that are no field, by dkimpy's parser."""
    end = header_end(message)
    if not field_in_header(message, _SIGNATURE_FIELD, end):
        return Signatures(None, (), ())
    try:
        signed = _signed_message(message, end)
    except Exception as exc:
        found = [[n, v] for n, v in header_fields(message) if n.lower() == b"dkim-signature"]
        reason = f"message header not parseable: {_dkimpy_reason(exc)[:120]}"
        return Signatures(None, tuple(found), (), reason)
    fields = tuple(
        f for f, n in zip(signed.fields, signed.names, strict=True) if n == b"dkim-signature"
    )
    author = _author_domain(Message.parse(message)) if len(fields) > MAX_SIGNATURES else ""
    return Signatures(signed, fields, _tags_of(fields, author, signed))


def verify_signatures(
    signatures: Signatures,
    dns: DnsSession,
    now: float | None = None,
    step: Callable[[str], None] | None = None,
) -> tuple[DkimSignatureResult, ...]:
    """Gives one result per signature verified, top first; () when unsigned (RFC 6376 §6.1).

    The signatures not verified (beyond MAX_SIGNATURES) get one result, in the place
    of the first of them, that says how many it stands for.  `now` is the verification
    time for t= and x= (RFC 6376 §3.5); None means the current time.  `step` is called
    before each signature verified, and may raise to stop (a deadline:
    `checks.Deadline.check`).
    """
    clock = time.time() if now is None else now
    fields = signatures.fields
    if signatures.message is None:
        outcome = _Outcome("permerror", signatures.unreadable)
        listed = [_result(i, f[1], outcome) for i, f in enumerate(fields[:MAX_SIGNATURES])]
        if len(fields) > MAX_SIGNATURES:
            more = len(fields) - MAX_SIGNATURES
            reason = f"{signatures.unreadable}; stands for {more} signatures, not listed"
            listed.append(_result(MAX_SIGNATURES, fields[MAX_SIGNATURES][1],
                                  _Outcome("permerror", reason)))  # fmt: skip
        return tuple(listed)
    results = []
    skipped = [i for i, tags in enumerate(signatures.tags) if tags is None]
    for index, field in enumerate(fields):
        tags = signatures.tags[index]
        if tags is None:
            if index == skipped[0]:
                results.append(_result(index, field[1], _Outcome("policy", _skipped(skipped))))
            continue
        if step is not None:
            step(f"DKIM signature {index + 1}")
        results.append(_check_one(signatures.message, index, field, tags, dns, clock))
    return tuple(results)


def _skipped(indexes: list[int]) -> str:
    """Gives the reason of the one result that stands for every signature not verified.

    One result, not one each: 300,000 ten-octet signatures in a 10 MB message made an
    Authentication-Results field of 70 MB and a process of 1 GB (attacker review, issue 15).
    """
    also = f"; stands for {len(indexes)} signatures not verified" if len(indexes) > 1 else ""
    return (
        f"not verified: only {MAX_SIGNATURES} per message are, those whose d= is nearest"
        f" the From domain first (RFC 6376 §6.1){also}"
    )


def check_dkim(
    message: Message | bytes, dns: DnsSession, now: float | None = None
) -> tuple[DkimSignatureResult, ...]:
    """Gives the results of `verify_signatures`: one per signature verified, top first."""
    return verify_signatures(read_signatures(message), dns, now)


# The order in which a single word sums up several signatures: any pass is enough for
# DMARC (RFC 7489 §4.2); a temporary failure may still turn into a pass on retry, so it
# outranks the final outcomes; then what failed verification before what could not be read.
_SUMMARY_ORDER = ("pass", "temperror", "fail", "permerror", "policy", "neutral")


def dkim_summary(results: Iterable[DkimSignatureResult]) -> str:
    """Gives one word for all signatures: the best of them, "none" when unsigned (RFC 8601 §2.7.1).

    Precedence: pass, temperror, fail, permerror, policy, neutral (RFC 7489 §4.2:
    one passing signature is enough).
    """
    seen = {r.result for r in results}
    for word in _SUMMARY_ORDER:
        if word in seen:
            return word
    return "none"
