"""Domain names and address words as the checks compare and write them.

The lowest layer that needs them (config validates policy domains with
them), so every part uses the same rule: one DNS-name pattern, one A-label
conversion (the idna package is imported at the first non-ASCII name only,
off the pipe's start-up path).
"""

from __future__ import annotations

import re

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
