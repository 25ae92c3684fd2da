"""One move of a message by a user, read from the message's own headers: ours only.

A message a user drags out of Junk or Quarantine ("rescued") or into Junk
("junked") carries what authsieve found at delivery.  Only our own headers
count: the X-Authsieve and Authentication-Results with our authserv-id
*above the topmost Received* (only local software writes there, RFC 5321
§4.4; delivery renamed every copy from outside, `classifier.annotate.defuse`).
A message without them teaches nothing, whatever it says lower down.  The
client, its HELO and reverse name are re-read from the Received chain with
the same trust walk as at delivery (`classifier.envelope.trust`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

from classifier.annotate import authserv_id_of, normalize_authserv_id
from classifier.auth.checks import first_from_address
from classifier.auth.facts import HEADER_NAME, parse_header_value, safe_domain
from classifier.config import Settings
from classifier.envelope.trust import recover_envelope
from classifier.message import Message

RESCUED = "rescued"  # out of Junk or Quarantine, into a folder the user reads
JUNKED = "junked"  # into Junk from anywhere else
JUNK = "junk"
QUARANTINE = "quarantine"
# Folders a move into teaches nothing: deleting is not a judgement on the sender.
_IGNORED = frozenset({"trash", "deleted messages", "deleted items"})
_RULE = re.compile(r"\(([a-z_]+) = (?:junk|quarantine)\)")
_ARC_PASS = re.compile(r"^\s*arc\s*=\s*pass\s*\(sealed by ([^()]*)\)", re.I)
_DKIM_PASS = re.compile(r"^\s*dkim\s*=\s*pass\b.*?\bheader\.d\s*=\s*\"?([A-Za-z0-9._-]+)", re.I)


@dataclass(frozen=True)
class Move:
    """One message moved by one user, with the facts our headers recorded at delivery."""

    key: str  # digest of Message-ID (or the headers), user and direction: counted once
    at: int  # when it was moved, seconds since the epoch
    user: str
    from_folder: str
    to_folder: str
    direction: str  # RESCUED | JUNKED
    message_id: str
    verdict: str  # what authsieve had decided
    rules: tuple[str, ...]  # the policy keys that filed it (spf_fail, blocked_action, …)
    reasons: str
    spf: str
    dkim: str
    dmarc: str
    from_auth: bool
    forwarded: bool
    allowed: bool
    from_address: str
    from_domain: str
    mailfrom: str  # the envelope sender
    mailfrom_domain: str
    client_ip: str
    client_rdns: str
    client_helo: str
    spf_hop: str  # the client whose SPF failed: reverse name, else IP ("" when SPF did not fail)
    dkim_domains: tuple[str, ...]  # d= of every passing DKIM signature
    arc_sealers: tuple[str, ...]  # d= of the ARC sealers of a passing chain

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        for name in ("rules", "dkim_domains", "arc_sealers"):
            d[name] = list(d[name])
        return d


def folder_kind(name: str) -> str:
    """Gives JUNK, QUARANTINE, "trash" or "" for an IMAP folder name (any case, any prefix)."""
    leaf = re.split(r"[./]", name.strip())[-1].lower() if name.strip() else ""
    if leaf in ("junk", "spam"):
        return JUNK
    if leaf == QUARANTINE:
        return QUARANTINE
    return "trash" if leaf in _IGNORED else ""


def direction_of(from_folder: str, to_folder: str) -> str:
    """Gives RESCUED, JUNKED or "" (a move that teaches nothing)."""
    src, dst = folder_kind(from_folder), folder_kind(to_folder)
    if dst == JUNK and src != JUNK:
        return JUNKED
    if src in (JUNK, QUARANTINE) and dst == "":
        return RESCUED
    return ""


def our_fields(message: Message, authserv_id: str) -> tuple[dict[str, str] | None, list[str]]:
    """Gives our X-Authsieve values (or None) and our Authentication-Results values.

    Only the fields above the topmost Received count; an X-Authsieve there must
    carry our id= and an Authentication-Results our authserv-id (RFC 8601 §2.5).
    """
    ours = safe_domain(authserv_id) or "localhost"
    ours_ar = normalize_authserv_id(authserv_id)
    header: dict[str, str] | None = None
    results: list[str] = []
    for field in message.fields:
        if field.key == "received":
            break
        if field.key == HEADER_NAME.lower() and header is None:
            values = parse_header_value(field.value())
            if values.get("id", "").lower() == ours:
                header = values
        elif field.key == "authentication-results" and ours_ar == authserv_id_of(field.value()):
            # ours_ar is never "" here: normalize_authserv_id of a configured id
            results.append(field.value())
    return header, results


def dkim_pass_domains(results: list[str]) -> tuple[str, ...]:
    """Gives the d= of every dkim=pass in our Authentication-Results values, sorted."""
    found: set[str] = set()
    for value in results:
        for part in " ".join(value.split()).split(";"):
            m = _DKIM_PASS.match(part)
            if m and (d := safe_domain(m.group(1))):
                found.add(d)
    return tuple(sorted(found))


def arc_pass_sealers(results: list[str]) -> tuple[str, ...]:
    """Gives the sealers our Authentication-Results name for arc=pass ("sealed by a, b")."""
    found: set[str] = set()
    for value in results:
        for part in " ".join(value.split()).split(";"):
            m = _ARC_PASS.match(part)
            if m:
                found.update(d for x in m.group(1).split(",") if (d := safe_domain(x)))
    return tuple(sorted(found))


def move_key(message: Message, data: bytes, user: str, direction: str) -> str:
    """Gives the digest a move is counted under: Message-ID (else the header block), user, way."""
    mid = " ".join((message.get("Message-ID") or "").split()).lower()
    basis = mid or hashlib.sha256(data.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]).hexdigest()
    return hashlib.sha256(f"{basis}\x00{user.lower()}\x00{direction}".encode()).hexdigest()


def read_move(
    data: bytes, user: str, from_folder: str, to_folder: str, settings: Settings, now: int
) -> Move | None:
    """Gives the move, or None when it teaches nothing (no header of ours, or a neutral move)."""
    direction = direction_of(from_folder, to_folder)
    if not direction:
        return None
    message = Message.parse(data)
    header, results = our_fields(message, settings.authserv_id)
    if header is None:
        return None
    env = recover_envelope(message, settings.trust)
    spf = header.get("spf", "none")
    mailfrom = (env.mail_from or "").lower()
    hop = (env.rdns or env.client_ip or "") if spf in ("fail", "softfail") else ""
    return Move(
        key=move_key(message, data, user, direction),
        at=now,
        user=user.strip().lower(),
        from_folder=from_folder,
        to_folder=to_folder,
        direction=direction,
        message_id=" ".join((message.get("Message-ID") or "").split())[:300],
        verdict=header.get("verdict", ""),
        rules=tuple(dict.fromkeys(_RULE.findall(header.get("reason", "")))),
        reasons=header.get("reason", "")[:1000],
        spf=spf,
        dkim=header.get("dkim", "none"),
        dmarc=header.get("dmarc", "none"),
        from_auth=header.get("from-auth") == "yes",
        forwarded=header.get("forwarded") == "yes",
        allowed=header.get("allowed") == "yes",
        from_address=first_from_address(message),
        from_domain=safe_domain(header.get("from-domain", "")),
        mailfrom=mailfrom,
        mailfrom_domain=safe_domain(header.get("mailfrom-domain", "")),
        client_ip=env.client_ip or "",
        client_rdns=safe_domain(env.rdns or ""),
        client_helo=(env.helo or "")[:255],
        spf_hop=safe_domain(hop) or (env.client_ip or "" if hop else ""),
        dkim_domains=dkim_pass_domains(results),
        arc_sealers=arc_pass_sealers(results),
    )
