"""The cryptographic check of one DKIM signature (RFC 6376 §6.1.3, RFC 8463).

dkimpy reads the key record, canonicalises and picks the signed fields (its
`evaluate_pk`, the functions of its `canonicalization` module, run over all
the fields a message's signatures need at once, and `select_headers`); the
signature itself is checked by OpenSSL (through `cryptography`) for RSA and by
libsodium (through PyNaCl) for Ed25519.  dkimpy's own RSA is pure Python:
byte-by-byte integer conversions and Python's `pow` took 0.45 ms of a 2.3 ms
check for one RSA-2048 and one RSA-1024 signature; OpenSSL takes 0.04 ms
(bench/bench_checks.py).

`cryptography` is imported when the first RSA key is read, so a process that
never meets one does not pay for loading it.
"""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

import base64
import re
from functools import lru_cache
from itertools import compress, count
from operator import methodcaller
from typing import Any, NamedTuple

import dkim
import nacl.exceptions
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
    Relaxed,
    compress_whitespace,
    unfold_header_value,
)

from classifier.auth.dkim_body import body_hashes, new_hash
from classifier.errors import AuthsieveError

# dkimpy's RE_BTAG with its FWS written as \s* (FWS, (\s*\r?\n)?\s+, matches exactly the runs
# of white space): the same matches, without a nested group per character of b=, which
# cost 50 us for a 2048-bit signature.  tests/test_dkim.py checks the two agree.
_B_VALUE = re.compile(rb"([;\s]b\s*=)(?:[\sA-Za-z0-9+/=]*[A-Za-z0-9+/=])?(?:\r?\n\Z)?")
# Where a b= tag can begin: a literal "b", which a search skips to quickly, whereas
# _B_VALUE's leading [;\s] is tried at every separator and space of the field.
_B_TAG = re.compile(rb"b\s*=")
_B_BEFORE = b"; \t\n\r\x0b\x0c"  # what [;\s] matches in a bytes pattern
# The replacement keeping "b=" (group 1): a callable written in C, where the template
# r"\1" was expanded by re's Python code on each match.
_TAG_NAME = methodcaller("group", 1)
_HASHES = {b"rsa-sha256": "sha256", b"ed25519-sha256": "sha256", b"rsa-sha1": "sha1"}
_JOIN = b"\0"  # between field values canonicalised together: no step of relaxed changes it


class BodyHashMismatch(AuthsieveError):
    """The body does not hash to the signature's bh= (RFC 6376 §6.1.3)."""


class BadSignatureTags(AuthsieveError):
    """The tags do not say how to verify: unknown c= or a=, or b=/bh= not base64."""


class PublicKey(NamedTuple):
    """A usable DKIM key: its type (b"rsa" or b"ed25519"), size and verifier."""

    ktype: bytes
    bits: int
    verifier: Any  # cryptography's RSAPublicKey or PyNaCl's VerifyKey


@lru_cache(maxsize=1024)
def public_key(name: str, record: bytes) -> PublicKey:
    """Gives the key a record publishes; raises as dkimpy's `evaluate_pk` does, or ValueError.

    Cached: parsing the key (dkimpy's ASN.1 reader is pure Python) costs more
    than the rest of the checks of a signature, and the same keys sign most mail.
    """
    pk, bits, ktag, _ = dkim.evaluate_pk(name, record)
    if ktag == b"rsa":
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

        # cryptography also refuses what OpenSSL cannot use (an even modulus, e < 3).
        verifier = RSAPublicNumbers(pk["publicExponent"], pk["modulus"]).public_key()
    else:
        verifier = pk
    return PublicKey(ktag, int(bits), verifier)


@lru_cache(maxsize=64)
def canonicalization(c_value: bytes) -> CanonicalizationPolicy:
    """Gives dkimpy's policy for a c= value (RFC 6376 §3.5); raises as its `from_c_value`.

    Kept per c= value, the same few on most mail; the policy is only read.
    """
    return CanonicalizationPolicy.from_c_value(c_value)


class SignedMessage:
    """A message as DKIM reads it (RFC 6376 §3.4), with what its signatures can share.

    `fields` are dkimpy's (name, value) pairs, values with their line breaks;
    the body is `message` from `body_start` on, with whatever line ends it has.
    Signatures of one message mostly name the same fields and canonicalise the
    same body the same way (an ESP's signature beside the author domain's):
    each field and each body hash is worked out once per message and
    canonicalisation, not once per signature.
    """

    def __init__(self, fields: list[list[bytes]], message: bytes, body_start: int) -> None:
        self.fields = fields
        # White space before the colon (RFC 5322 §4.5) is no part of the name (§3.4.2).
        self.names = [f[0].rstrip(b" \t").lower() for f in fields]
        self._message = message
        self._body_start = body_start
        # per header canonicalisation: the canonical fields by their index in `fields`
        self._fields: dict[bytes, dict[int, tuple[bytes, bytes]]] = {}
        self._body_hashes: dict[tuple[bytes, str, bytes | None], bytes] = {}
        # l= values of the signatures still to be verified, per (algorithm, digest)
        self._expected: dict[tuple[bytes, str], set[bytes | None]] = {}

    def expect(self, tags: dict[bytes, bytes]) -> None:
        """Notes a signature's body hash to come, so that one pass serves every l= (§3.5)."""
        try:
            policy = canonicalization(tags.get(b"c", b"simple/simple"))
        except InvalidCanonicalizationPolicyError:
            return
        digest = _HASHES.get(tags.get(b"a", b""))
        length = tags.get(b"l")
        if digest is None or b"bh" not in tags or (length is not None and not length.isdigit()):
            return
        self._expected.setdefault((policy.body_algorithm.name, digest), set()).add(length)

    def canonical_fields(self, policy: CanonicalizationPolicy, names: set[bytes]) -> list:
        """Gives the canonicalised fields whose lower-case name is in `names`, in order."""
        algorithm = policy.header_algorithm
        kept = self._fields.setdefault(algorithm.name, {})
        # The indexes picked by iterators written in C: no Python step per field.
        wanted = list(compress(count(), map(names.__contains__, self.names)))
        new = [i for i in wanted if i not in kept]
        if new:
            # One call for the fields not yet canonicalised: dkimpy's canonicalisation
            # reads each field on its own, so the list gives what one call per field gave.
            done = canonicalize_headers(algorithm, [self.fields[i] for i in new])
            kept.update(zip(new, done, strict=True))
        return list(map(kept.__getitem__, wanted))

    def body_hash(self, policy: CanonicalizationPolicy, digest: str, length: bytes | None) -> bytes:
        """Gives the hash of the canonicalised body, cut to l= octets when given (§3.7)."""
        key = (policy.body_algorithm.name, digest, length)
        found = self._body_hashes.get(key)
        if found is None:
            wanted = self._expected.pop(key[:2], set()) | {length}
            limits = {n: None if n is None else int(n) for n in wanted}
            hashes = body_hashes(self._message, self._body_start, key[0], digest, limits.values())
            for n, limit in limits.items():
                self._body_hashes[(key[0], digest, n)] = hashes[limit]
            found = self._body_hashes[key]
        return found


def verify(
    key: PublicKey,
    tags: dict[bytes, bytes],
    signed: list[bytes],
    field: list[bytes] | tuple[bytes, bytes],
    message: SignedMessage,
) -> bool:
    """Tells whether the signature in `field` (with parsed `tags`) verifies with `key`.

    `signed` are the h= names in lower case.  Raises BodyHashMismatch, or
    BadSignatureTags for c=, a=, b= or bh= it cannot use.
    """
    try:
        policy = canonicalization(tags.get(b"c", b"simple/simple"))
    except InvalidCanonicalizationPolicyError as exc:
        raise BadSignatureTags(f"invalid c= value: {exc.args[0]!r}") from exc
    digest = _HASHES.get(tags[b"a"])
    if digest is None:
        raise BadSignatureTags(f"unknown a= {tags[b'a']!r}")
    # An ARC-Seal signs header fields only: it has no bh= (RFC 8617 §4.1.3).
    if b"bh" in tags and message.body_hash(policy, digest, tags.get(b"l")) != _base64(
        tags[b"bh"], "bh"
    ):
        raise BodyHashMismatch()
    # A second From above the signed one is hashed as well, so that adding one breaks the
    # signature (dkimpy's fix for Debian bug 644046; RFC 6376 §8.15).
    include = [*signed, b"from"] if b"from" in signed else list(signed)
    canonical = message.canonical_fields(policy, set(include))
    hashed = header_hash(digest, policy, canonical, include, field)
    signature = _base64(tags[b"b"], "b")
    if key.ktype == b"ed25519":
        try:
            key.verifier.verify(hashed, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True
    return _rsa_verify(key.verifier, signature, hashed, digest)


def header_hash(
    digest: str,
    policy: CanonicalizationPolicy,
    canonical: list,
    include: list[bytes],
    field: list[bytes] | tuple[bytes, bytes],
) -> bytes:
    """Gives the hash dkimpy's `hash_headers` makes of the signed fields and the signature.

    `canonical` are the message's fields canonicalised by `policy`, `include` the
    h= names in lower case.  The fields are picked by dkimpy's `select_headers`,
    bottom up (RFC 6376 §5.4.2); the signature's own field follows with b= empty
    and without its final CRLF (§3.7).  Its b= is emptied once, by `blank_b`:
    dkimpy's slower pattern ran again over what it left and found nothing to take.
    """
    selected = dkim.select_headers(canonical, include)
    ((name, value),) = canonicalize_headers(
        policy.header_algorithm, [(field[0], blank_b(field[1]))]
    )
    # Each (name, value) as name:value, joined in C: no Python step per field.
    signed = b"".join(map(b":".join, selected))
    return new_hash(digest, b"".join((signed, name, b":", value.rstrip()))).digest()


def canonicalize_headers(algorithm: Any, fields: list) -> list:
    """Gives dkimpy's `algorithm.canonicalize_headers(fields)`, from one pass over all values.

    dkimpy's relaxed canonicalisation (RFC 6376 §3.4.2) runs two regular expressions
    per field; here its own two functions run once over the values joined by NUL,
    which neither changes nor lets a match cross, and not at all when they would
    change nothing: unfolding without a line feed, compressing without a tab or two
    spaces in a row.  Each value's final CRLF, which unfolding would only remove, is
    cut first.  A value holding NUL goes through dkimpy per field.
    """
    if algorithm is not Relaxed or len(fields) == 0:
        return algorithm.canonicalize_headers(fields)
    joined = _JOIN.join([v[:-2] if v[-2:] == b"\r\n" else v for _, v in fields])
    if joined.count(_JOIN) != len(fields) - 1:
        return algorithm.canonicalize_headers(fields)
    if b"\n" in joined:
        joined = unfold_header_value(joined)
    if b"\t" in joined or b"  " in joined:
        joined = compress_whitespace(joined)
    # As dkimpy's Relaxed: names in lower case without white space before the colon,
    # values without white space around them, ended by CRLF.
    return [
        (f[0].lower().rstrip(), v.strip() + b"\r\n")
        for f, v in zip(fields, joined.split(_JOIN), strict=True)
    ]


def blank_b(value: bytes) -> bytes:
    """Gives value with every b= tag's value taken out, as `_B_VALUE.sub` gives it.

    Its first match starts at the separator or space before the first "b" that white
    space and "=" follow; the pattern runs from there, not from the start.
    """
    for found in _B_TAG.finditer(value, 1):
        at = found.start() - 1
        if value[at] in _B_BEFORE:
            return value[:at] + _B_VALUE.sub(_TAG_NAME, value[at:])
    return value


def _rsa_verify(verifier: Any, signature: bytes, digest: bytes, algorithm: str) -> bool:
    """RSASSA-PKCS1-v1_5 (RFC 8017 §8.2.2) of a digest, by OpenSSL."""
    invalid, pkcs1, prehashed = _rsa_parameters(algorithm)
    try:
        verifier.verify(signature, digest, pkcs1, prehashed)
    except invalid:
        return False
    return True


@lru_cache(maxsize=2)
def _rsa_parameters(algorithm: str) -> tuple[type[Exception], Any, Any]:
    """Gives cryptography's InvalidSignature, PKCS #1 v1.5 padding and the prehashed digest.

    Imported at the first RSA signature and built once: they hold no state.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    prehashed = utils.Prehashed(hashes.SHA256() if algorithm == "sha256" else hashes.SHA1())
    return InvalidSignature, padding.PKCS1v15(), prehashed


def _base64(value: bytes, tag: str) -> bytes:
    try:
        # bytes.split() cuts at the white space \s matches in bytes: joined, none is left.
        return base64.b64decode(b"".join(value.split()), validate=True)
    except ValueError as exc:
        raise BadSignatureTags(f"{tag}= is not base64: {exc}") from exc
