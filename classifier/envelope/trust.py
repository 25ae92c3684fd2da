"""The SMTP envelope recovered from a delivered message: who really handed it to us.

Only Received headers that our own servers wrote are true.  Walking from the
top (docs/design.md, "The trust rule"): the topmost hop was written by the delivering
server; a hop whose sending side is ours (trusted_networks, loopback, a local
hand-over such as LMTP or a content filter on 127.0.0.1) is stepped over; a
trusted forwarder is stepped over and recorded; a hop that shows SMTP AUTH is
our own user; the first other hop's ``from`` part is the SMTP client, and
nothing below it is read.
"""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from classifier.envelope.hop import ReceivedHop
from classifier.envelope.received import parse_received_field
from classifier.message import Message
from classifier.names import normalize_ip
from classifier.trusted import TrustMatcher


class Hints(NamedTuple):
    """What Postfix's pipe(8) macros say: ${sender}, ${recipient}, ${client_address}, …"""

    sender: str | None = None
    recipient: str | None = None
    client_address: str | None = None
    client_helo: str | None = None
    client_hostname: str | None = None
    # ${sasl_username}: "" when Postfix's client did not log in, None when not given.
    sasl_username: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """The recovered SMTP envelope, with the evidence for each part."""

    client_ip: str | None
    helo: str | None
    rdns: str | None
    mail_from: str | None  # "" is the null sender (<>); None when no source names one
    rcpt: str | None
    authenticated: bool
    forwarded_by: str | None
    hop_index: int | None  # index from the top of the Received header that named the client
    evidence: tuple[str, ...]

    @property
    def mail_from_domain(self) -> str:
        """Gives the domain of the envelope sender ("" for the null or an unknown sender).

        The domain follows the last "@" outside quotes (RFC 5321 §4.1.2): the
        SPF domain of ``"john@evil.test"@sender.example`` is sender.example.
        """
        if not self.mail_from:
            return ""
        return split_address(self.mail_from)[1].rstrip(".").lower()

    def to_dict(self) -> dict[str, object]:
        return {
            "client_ip": self.client_ip,
            "helo": self.helo,
            "rdns": self.rdns,
            "mail_from": self.mail_from,
            "rcpt": self.rcpt,
            "authenticated": self.authenticated,
            "forwarded_by": self.forwarded_by,
            "hop_index": self.hop_index,
            "evidence": list(self.evidence),
        }


_NO_HINTS = Hints()


def _outside_quotes(text: str) -> list[tuple[int, str]]:
    """Gives (index, character) of every character of text that is not inside a quoted-string.

    RFC 5321 §4.1.2: a Quoted-string local part may hold "@", "<", ">" and a
    backslash-escaped quote (quoted-pairSMTP); none of them ends it.
    """
    out: list[tuple[int, str]] = []
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        else:
            out.append((i, ch))
    return out


def split_address(addr: str) -> tuple[str, str]:
    """Gives (local part, domain) of a bare address, split at the last "@" outside quotes.

    RFC 5321 §4.1.2: Mailbox = Local-part "@" Domain, and a Local-part may be a
    Quoted-string holding "@": ``"john@evil.test"@sender.example`` has the
    domain sender.example.  The local part keeps its quotes.  An address
    without such an "@" is all local part, with the domain "".
    """
    if '"' not in addr:  # no quoted-string: the last "@" is the one (most addresses)
        at = addr.rfind("@")
        return (addr, "") if at < 0 else (addr[:at], addr[at + 1 :])
    ats = [i for i, ch in _outside_quotes(addr) if ch == "@"]
    if not ats:
        return addr, ""
    return addr[: ats[-1]], addr[ats[-1] + 1 :]


def strip_angle(addr: str) -> str:
    """Gives an address without angle brackets, comments or surrounding space ("" for <>).

    Brackets inside a quoted local part are part of it, and the quotes stay
    (RFC 5321 §4.1.2): ``<"ceo;dmarc=pass\\"x"@shop.example>`` gives
    ``"ceo;dmarc=pass\\"x"@shop.example``.
    """
    text = addr.strip()
    if '"' not in text:  # no quoted-string: the first "<" and the first ">" after it
        start = text.find("<")
        end = text.find(">", start + 1) if start >= 0 else -1
        return (text[start + 1 : end] if end >= 0 else text).strip()
    plain = _outside_quotes(text)
    start = next((i for i, ch in plain if ch == "<"), -1)
    if start >= 0:
        end = next((i for i, ch in plain if ch == ">" and i > start), -1)
        if end >= 0:
            text = text[start + 1 : end]
    return text.strip()


class _Walk(NamedTuple):
    hops: tuple[ReceivedHop, ...]  # the hops read, top first; nothing below the client
    hop: ReceivedHop | None
    hop_index: int | None
    authenticated: bool
    forwarded_by: str | None
    envelope_from: str | None
    evidence: tuple[str, ...]


def walk_trust_path(fields: Iterable[bytes], trust: TrustMatcher) -> _Walk:
    """Gives the hop that names the SMTP client, walking the Received fields (docs/design.md)."""
    evidence: list[str] = []
    forwarded_by: str | None = None
    envelope_from: str | None = None
    hops: list[ReceivedHop] = []
    for i, field in enumerate(fields):
        # Parsed one by one: what lies below the client is never read.
        hop = parse_received_field(field)
        hops.append(hop)
        if envelope_from is None and hop.envelope_from is not None:
            envelope_from = hop.envelope_from
        where = f"Received #{i + 1}"
        if not hop.parsed:
            evidence.append(f"envelope: unparsed Received ({where}); client unknown")
            return _Walk(tuple(hops), None, i, False, forwarded_by, envelope_from, tuple(evidence))
        if hop.authenticated:
            evidence.append(
                f"{where}: SMTP AUTH ({hop.protocol or 'authenticated'}"
                + (f" as {hop.auth_user}" if hop.auth_user else "")
                + ") — our own user"
            )
            return _Walk(tuple(hops), hop, i, True, forwarded_by, envelope_from, tuple(evidence))
        if hop.local or (hop.ip is None and hop.protocol in ("LMTP", "LOCAL")):
            evidence.append(f"{where}: local hand-over ({hop.protocol or hop.fmt}), stepped over")
            continue
        if hop.ip is None:
            # Stepping over a hop we cannot place would let a forged header below it speak.
            evidence.append(f"envelope: no client address in {where}; client unknown")
            return _Walk(tuple(hops), None, i, False, forwarded_by, envelope_from, tuple(evidence))
        if trust.is_trusted_ip(hop.ip):  # loopback is always in trusted_networks
            evidence.append(f"{where}: {hop.ip} is in trusted_networks, stepped over")
            continue
        # HELO is the client's own claim: only our server's reverse lookup names a forwarder.
        rdns = hop.rdns if hop.rdns_confirmed else None
        forwarder = trust.forwarder_match(hop.ip, (rdns,))
        if forwarder:
            forwarded_by = forwarded_by or (hop.rdns or hop.ip)
            evidence.append(f"{where}: {hop.ip} is trusted forwarder {forwarder}, stepped over")
            continue
        evidence.append(
            f"{where}: client {hop.ip}"
            + (f" ({hop.rdns})" if hop.rdns else "")
            + (f" HELO {hop.helo}" if hop.helo else "")
            + f" [{hop.fmt}] — first hop from outside"
        )
        return _Walk(tuple(hops), hop, i, False, forwarded_by, envelope_from, tuple(evidence))
    if hops:
        evidence.append("no Received hop from outside: locally submitted")
    else:
        evidence.append("no Received headers")
    return _Walk(tuple(hops), None, None, False, forwarded_by, envelope_from, tuple(evidence))


def recover_envelope(message: Message, trust: TrustMatcher, hints: Hints | None = None) -> Envelope:
    """Gives the Envelope of a delivered message; Postfix's hints come first (docs/design.md)."""
    hints = hints or _NO_HINTS
    walk = walk_trust_path(message.raws("Received"), trust)
    evidence = list(walk.evidence)
    hop = walk.hop
    client_ip = hop.ip if hop else None
    helo = hop.helo if hop else None
    rdns = hop.rdns if hop else None
    authenticated = walk.authenticated

    hinted = normalize_ip(hints.client_address) if hints.client_address else None
    if hinted and trust.is_trusted_ip(hinted):
        # Postfix's macros describe its last SMTP client: a content filter re-injecting
        # on loopback, say.  The client is further down, where the walk found it.
        evidence.append(f"hint client_address {hinted} is in trusted_networks: hints not used")
    elif hinted:
        if client_ip and hinted != client_ip:
            evidence.append(f"hint client_address {hinted} differs from Received ({client_ip})")
        client_ip = hinted
        if hints.client_helo:
            if helo and hints.client_helo.lower() != helo.lower():
                evidence.append(
                    f"hint client_helo {hints.client_helo} differs from Received ({helo})"
                )
            helo = hints.client_helo
        if hints.client_hostname and hints.client_hostname.lower() != "unknown":
            rdns = hints.client_hostname
        if hints.sasl_username is not None:
            # Postfix's word on SMTP AUTH outranks any Received header (docs/design.md).
            if hints.sasl_username:
                if not authenticated:
                    evidence.append(f"Postfix: SASL login {hints.sasl_username} — our own user")
                authenticated = True
            elif authenticated:
                evidence.append(
                    "Postfix: no SASL login; the AUTH a Received header claims is ignored"
                )
                authenticated = False

    return_paths = message.get_all("Return-Path")
    mail_from: str | None = None
    if hints.sender is not None:
        mail_from = strip_angle(hints.sender)
        if return_paths and strip_angle(return_paths[0]).lower() != mail_from.lower():
            evidence.append(
                f"hint sender <{mail_from}> differs from Return-Path {return_paths[0].strip()}"
            )
        evidence.append("envelope sender from the pipe hint")
    elif return_paths:
        mail_from = strip_angle(return_paths[0])
        if len(return_paths) > 1:
            evidence.append(f"{len(return_paths)} Return-Path headers: the topmost one is used")
        evidence.append("envelope sender from Return-Path")
    elif walk.envelope_from is not None:
        mail_from = strip_angle(walk.envelope_from)
        evidence.append("envelope sender from the envelope-from comment of a trusted hop")
    else:
        evidence.append("envelope sender unknown")

    rcpt = hints.recipient
    if not rcpt:
        for h in walk.hops:
            if h.for_addr:
                rcpt = h.for_addr
                break
    if not rcpt:
        for name in ("Delivered-To", "X-Original-To"):
            value = message.get(name)
            if value:
                rcpt = strip_angle(value)
                break

    return Envelope(
        client_ip=client_ip,
        helo=helo,
        rdns=rdns if rdns and rdns.lower() != "unknown" else None,
        mail_from=mail_from,
        rcpt=rcpt or None,
        authenticated=authenticated,
        forwarded_by=walk.forwarded_by,
        hop_index=walk.hop_index,
        evidence=tuple(evidence),
    )
