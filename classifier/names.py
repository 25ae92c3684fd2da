"""Domain names, IP addresses and quoted words as the checks compare and write them.

The lowest layer that needs them (config validates policy domains with
them), so every part uses the same rule: one DNS-name pattern, one A-label
conversion (the idna package is imported at the first non-ASCII name only,
off the pipe's start-up path), one IP normalisation, one dot-atom pattern
and one quoted-string writer.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

# RFC 5322 §3.2.3 dot-atom: runs of atext joined by single dots (use fullmatch).
DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")

# The most of a name, selector or identity a result writes into our headers: no valid one is
# longer (a name is at most 255 octets, RFC 1035 §2.3.4; a local part 64, RFC 5321
# §4.5.3.1).  An unreadable signature of 100 KB put all of its d= into Authentication-Results.
MAX_SHOWN = 320

# RFC 1035 §2.3.4 lengths; "_" is allowed in a label (DNS names may hold it, RFC 2181 §11).
LDH_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}$"
)


def to_a_labels(name: str) -> str | None:
    """Gives an internationalised domain name in A-labels (RFC 5891), or None."""
    try:
        try:  # IDNA 2008 (RFC 5891) from the idna package; Python's IDNA 2003 codec otherwise
            import idna
        except ImportError:  # pragma: no cover - depends on the environment
            return name.encode("idna").decode("ascii")
        return str(idna.encode(name, uts46=True).decode("ascii"))
    except (UnicodeError, ValueError):
        return None


def safe_domain(text: str) -> str:
    """Gives the domain in lower case when it is a plain DNS name, else "".

    An internationalised name is given in A-labels, and "_" is allowed in a label
    (DNS names may hold it, RFC 2181 §11): either would otherwise read as no domain
    at all, and a blocked suffix would not see x@élan.cyou or x@_a.cyou.
    """
    d = text.strip().rstrip(".").lower()
    if d and not d.isascii():
        d = (to_a_labels(d) or "").lower()
    return d if LDH_DOMAIN.match(d) else ""


def quoted_string(text: str) -> str:
    """Gives text as a quoted-string: in double quotes, \\ and " escaped (RFC 5322 §3.2.4).

    The caller decides what else may not appear (line breaks, control characters).
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def normalize_ip(text: str) -> str | None:
    """Gives the address in canonical form, or None (RFC 5321 §4.1.3 address literals).

    Brackets, an ``IPv6:`` tag and a ``%zone`` are dropped, an IPv4-mapped IPv6
    address becomes the IPv4 address (RFC 7208 §5 checks it as the IPv4 client it
    is), IPv6 is compressed lower-case (RFC 5952 §4).
    """
    if not isinstance(text, str) or len(text) > 80:
        return None
    return normalize_ip_text(text.strip())


@lru_cache(maxsize=4096)
def normalize_ip_text(text: str) -> str | None:
    """Gives normalize_ip(text) for a str already stripped and at most 80 characters long."""
    if text[:1] == "[" and text[-1:] == "]":
        text = text[1:-1].strip()
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    text = text.partition("%")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def mailbox_owner(addr: str, delimiters: str = "+") -> str:
    """Gives the user a recipient address belongs to: bob+news@Family.Example is bob@family.example.

    The local part ends at the first of the delimiter characters, as Postfix's and
    Dovecot's ``recipient_delimiter`` cut it (postconf(5); RFC 5233 §4 "user");
    "" keeps the address whole.
    """
    key = addr.strip().strip("<>").strip().lower()  # policies.normalize_user
    local, at, domain = key.rpartition("@")
    if not at or not delimiters:
        return key
    cut = min((i for i in (local.find(c) for c in delimiters) if i > 0), default=-1)
    return f"{local[:cut] if cut > 0 else local}@{domain}"


def valid_delimiter(text: str) -> bool:
    """Tells whether text can be a recipient_delimiter: printable, no letter, digit or "@"."""
    return all(33 <= ord(c) <= 126 and not c.isalnum() and c not in '@"\\' for c in text)
