"""The Author Domains of a message: the domains of the mailboxes in its From header fields.

DMARC judges the domain of the RFC5322.From mailbox (RFC 9989 §5.3.1, RFC 7489
§6.6.1).  Real From fields are messier than RFC 5322 §3.4 allows, so this
reader is lenient where leniency cannot hide a mailbox, and strict where it
could: quoted strings and comments are opaque (an ``@`` inside them is not an
address), an address in angle brackets wins over anything in the display
name, and a field that holds several mailboxes gives all of their domains so
that the caller can judge every one of them.

Domains come back as DMARC compares them: lower case, without a trailing dot,
and U-labels turned into A-labels (RFC 9989 §5.3.1, RFC 5890 §2.3).
"""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import NamedTuple

from classifier.lazyre import lazy
from classifier.names import DOT_ATOM, quoted_string, to_a_labels

_SPECIALS = "<>,;:@[]"
# A run of characters that are neither white space (str.isspace's, as \s reads it) nor
# specials, parentheses or quotes: one atom of `_tokens`.
_ATOM = re.compile(r'[^\s<>,;:@\[\]()"]+')
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


class _Token(NamedTuple):  # a tuple: built for every token, a frozen dataclass costs 5x
    kind: str  # "atom", "quoted", "special", "literal"
    text: str
    spaced: bool  # whitespace or a comment came right before it


@lru_cache(maxsize=8192)  # pure, and every message asks about the same few domains
def normalize_domain(text: str) -> str | None:
    """Gives a domain as DMARC compares it (lower case, A-labels, no final dot), or None.

    None when the text is not a DNS name: empty labels, characters a host name
    cannot hold, a label over 63 or a name over 253 octets (RFC 1035 §2.3.4).
    """
    name = text.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        return None
    if not name.isascii():
        name = to_a_labels(name) or ""
    name = name.lower()
    if not name or len(name) > 253:
        return None
    if not all(_LABEL.match(label) for label in name.split(".")):
        return None
    return name


def _tokens(value: str) -> list[_Token]:
    """Gives the lexical tokens of a header value, comments dropped (RFC 5322 §3.2)."""
    out: list[_Token] = []
    i, n, spaced = 0, len(value), False
    while i < n:
        ch = value[i]
        if ch.isspace() or ch == ")":
            # A ")" outside a comment is not RFC 5322; read as a space, it can neither join
            # nor split an address (and cannot stall this loop).
            spaced, i = True, i + 1
        elif ch == "(":
            depth, i = 1, i + 1
            while i < n and depth:
                if value[i] == "\\":
                    i += 1
                elif value[i] == "(":
                    depth += 1
                elif value[i] == ")":
                    depth -= 1
                i += 1
            spaced = True
        elif ch == '"':
            j, chars = i + 1, []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(value[j])
                j += 1
            out.append(_Token("quoted", "".join(chars), spaced))
            i, spaced = j + 1, False
        elif ch == "[":
            j = value.find("]", i)
            j = n - 1 if j < 0 else j
            out.append(_Token("literal", value[i : j + 1], spaced))
            i, spaced = j + 1, False
        elif ch in _SPECIALS:
            out.append(_Token("special", ch, spaced))
            i, spaced = i + 1, False
        else:
            atom = _ATOM.match(value, i)  # ch is none of the above: it starts an atom
            j = atom.end() if atom else i + 1
            out.append(_Token("atom", value[i:j], spaced))
            i, spaced = j, False
    return out


def _units(tokens: list[_Token]) -> list[list[_Token]]:
    """Splits the tokens at commas, colons and semicolons outside angle brackets.

    A colon ends a group's display name (RFC 5322 §3.4), so ``From: a@b`` pasted
    into the value and ``Mail From:<a@b>`` both leave the mailbox in a unit of its own.
    """
    units: list[list[_Token]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.kind == "special" and tok.text == "<":
            depth += 1
        elif tok.kind == "special" and tok.text == ">":
            depth = max(depth - 1, 0)
        elif tok.kind == "special" and tok.text in ",;:" and depth == 0:
            units.append([])
            continue
        units[-1].append(tok)
    return [u for u in units if u]


def _domain_after(tokens: list[_Token], at: int) -> tuple[str, bool]:
    """Gives the raw domain text after the ``@`` at index `at`, and whether it is a literal."""
    parts: list[str] = []
    for tok in tokens[at + 1 :]:
        if tok.kind == "literal" and not parts:
            return tok.text, True
        if tok.kind != "atom":
            break
        # obs-domain allows CFWS around the dots; anything else after a space is not the domain
        if parts and tok.spaced and not (parts[-1].endswith(".") or tok.text.startswith(".")):
            break
        parts.append(tok.text)
    return "".join(parts), False


def _mailbox_ats(unit: list[_Token]) -> list[int]:
    """Gives the indexes of the ``@`` that separate a local part from a domain in one unit.

    When the unit has an angle-addr, only ``@`` inside angle brackets count: the
    display name is not an address, whatever it looks like.
    """
    depth = 0
    inside: list[int] = []
    outside: list[int] = []
    for index, tok in enumerate(unit):
        if tok.kind != "special":
            continue
        if tok.text == "<":
            depth += 1
        elif tok.text == ">":
            depth = max(depth - 1, 0)
        elif tok.text == "@":
            before = unit[index - 1] if index else None
            # an "@" without a local part before it starts an obsolete route (@a,@b:)
            if before is None or before.kind not in ("atom", "quoted"):
                continue
            (inside if depth else outside).append(index)
    has_angle = any(t.kind == "special" and t.text == "<" for t in unit)
    return inside if has_angle else outside


_LITERAL = lazy(r"^\[[^\[\]\\@]*\]$")  # RFC 5322 §3.4.1 domain-literal, dtext only


def first_mailbox(from_header_values: Iterable[object] | None) -> str:
    """Gives the first mailbox of the From fields as local@domain, lower-cased, or "".

    Read as `from_domains` reads them, so an allow list meets the very mailbox
    whose domain DMARC judged; the domain in A-labels, a quoted local part
    that is not a dot-atom in quotes (RFC 5322 §3.4.1).
    """
    for value in from_header_values or []:
        if value is None:
            continue
        first = _read_from_value(str(value))[3]
        if first:
            return first
    return ""


def _mailbox_text(local: _Token, raw: str, literal: bool) -> str:
    """Gives local@domain lower-cased for `first_mailbox`, or "" when the domain is unusable."""
    domain = (raw if _LITERAL.match(raw) else "") if literal else normalize_domain(raw)
    if not domain:
        return ""
    text = local.text
    if local.kind == "quoted" and not DOT_ATOM.fullmatch(text):
        text = quoted_string(text)
    return f"{text}@{domain}".lower()


def _unfold(value: str) -> str:
    return value.replace("\r\n", "").replace("\n", "").replace("\r", "")


def _mailboxes(unfolded: str) -> Iterator[tuple[_Token, str, bool]]:
    """Yields (local-part token, raw domain, is an address literal) per mailbox of a value."""
    for unit in _units(_tokens(unfolded)):
        for at in _mailbox_ats(unit):
            raw, literal = _domain_after(unit, at)
            yield unit[at - 1], raw, literal


def from_domains(from_header_values: Iterable[object] | None) -> tuple[list[str], str]:
    """Gives the domain of every mailbox in the From fields, and "" or why there is none.

    RFC 9989 §5.3.1 / RFC 7489 §6.6.1: the Author Domain is the domain of the
    RFC5322.From mailbox.  Every From field and every mailbox in it counts (a
    second field or mailbox must not hide a spoofed one); the caller decides
    what several domains mean.  The reason is non-empty only when no domain was
    found: no From field, a From without an address, an address literal or a
    domain that is not a DNS name.
    """
    values = [str(v) for v in (from_header_values or []) if v is not None]
    if not values:
        return [], "no From header field"
    domains: list[str] = []
    problems: list[str] = []
    for value in values:
        found, trouble, shown, _ = _read_from_value(value)
        domains += found
        problems += trouble
        if not found and not problems:
            problems.append(f"no address with a domain in From: {shown}" if shown else "empty From")
    if domains:
        return domains, ""
    return [], "; ".join(problems) or "no address with a domain in From"


def _read_from_value(value: str) -> tuple[tuple[str, ...], tuple[str, ...], str, str]:
    """Gives the domains of one From value, what is wrong with it, its text to show and
    its first usable mailbox (`first_mailbox`, "" when none).

    Values of a line's length are cached (a message's checks read its From
    twice, and senders repeat theirs); longer ones would make the cache large.
    """
    return _read_short(value) if len(value) <= 998 else _read_any(value)


def _read_any(value: str) -> tuple[tuple[str, ...], tuple[str, ...], str, str]:
    unfolded = _unfold(value)
    domains: list[str] = []
    problems: list[str] = []
    first = ""
    for local, raw, literal in _mailboxes(unfolded):
        if not first:
            first = _mailbox_text(local, raw, literal)
        domain = None if literal else normalize_domain(raw)
        if domain is None:
            what = "an address literal" if literal else "not a domain name"
            problems.append(f"{raw or '(empty)'} is {what}")
            continue
        domains.append(domain)
    return tuple(domains), tuple(problems), unfolded.strip()[:200], first


_read_short = lru_cache(maxsize=1024)(_read_any)
