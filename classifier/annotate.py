"""The annotated message: forged copies of our headers defused, our results prepended.

Order of work (RFC 8601 §5; docs/design.md, "The trust rule"):
1. Our own headers from an earlier pass sit above the topmost Received (only
   local software writes there): they are dropped, so a second pass gives the
   same bytes and never a second set.
2. Below that, any Authentication-Results carrying our authserv-id (compared
   as RFC 8601 §2.5 defines it: comments removed, quotes removed, case and a
   trailing dot ignored) and any X-Authsieve came from outside: renamed to
   ``X-Original-…`` so nothing downstream (Sieve, mail clients) can take them
   for ours.
3. Authentication-Results (authres), Received-SPF and X-Authsieve are
   prepended.  No other byte changes, so the original DKIM signatures still
   verify.
"""

from __future__ import annotations

import re
from functools import lru_cache

from authres import (
    AuthenticationResultProperty,
    AuthenticationResultsHeader,
    DKIMAuthenticationResult,
    SPFAuthenticationResult,
)
from authres.arc import ARCAuthenticationResult
from authres.core import AuthenticationResult
from authres.dmarc import DMARCAuthenticationResult

from classifier.auth.checks import CheckReport
from classifier.auth.facts import HEADER_NAME
from classifier.auth.spf import received_spf_fields
from classifier.lazyre import lazy
from classifier.message import HeaderField, Message
from classifier.names import DOT_ATOM, LDH_DOMAIN, quoted_string

_RECEIVER = lazy(r"receiver\s*=\s*(\"[^\"]*\"|[^;\s]+)", re.IGNORECASE)
_OUR_NAMES = ("authentication-results", "received-spf", HEADER_NAME.lower())


def ar_value(text: str) -> str:
    """Gives a property value that authres writes safely (RFC 8601 §2.2 pvalue).

    authres quotes a value that is not a token by itself, except when it holds
    an "@": then it writes it as it is, so a MAIL FROM of ``a;dkim=pass@x``
    would end the property and start a forged result.  Such a value, unless it
    is a plain local@domain, is made one quoted-string here; all other values
    are left to authres (quoting them here too would quote them twice).
    """
    text = " ".join(text.split())
    if not text.isprintable():
        # A control character (ESC from a MAIL FROM, say) would reach a mail client's
        # header view: "?" as Received-SPF writes it.
        text = "".join(c if c.isprintable() else "?" for c in text)
    if "@" not in text:  # authres quotes it unless a token; with an "@" it never is one
        return text
    local, _, domain = text.rpartition("@")
    # An ASCII DNS name and a dot-atom local part: authres writes both safely as they are.
    plain = domain.isascii() and LDH_DOMAIN.fullmatch(domain.lower())
    if plain and (not local or DOT_ATOM.fullmatch(local)):
        return text
    return quoted_string(text)


def ar_reason(text: str) -> str:
    """Gives a reason= value that authres writes safely (RFC 8601 §2.2 reasonspec).

    authres quotes a reason unless it is a token, except when it holds an "@": that
    one went out as it was, and a signature's i= of ``x@b) dkim=pass header.d=bank (``
    or a key record's text wrote a result clause of the sender's into our header
    (attacker review, issue 15).  Such a reason is one quoted-string here; authres
    leaves a value with an "@" as it is, so it is quoted once.
    """
    text = " ".join(text.split())
    return quoted_string(text) if "@" in text else text


def ar_comment(text: str) -> str:
    """Gives text safe inside a comment: parentheses and backslashes escaped (RFC 5322 §3.2.2)."""
    flat = " ".join(text.split())
    # The backslashes first, so that those added before ( and ) stay single.
    return flat.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _skip_cfws(value: str, i: int) -> int:
    """Gives the index after the white space and comments (nested, with quoted-pairs) at i.

    RFC 5322 §3.2.2: a comment may hold comments and backslash-escaped characters.
    """
    depth = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and depth:
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth and not ch.isspace():
            return i
        i += 1
    return i


def authserv_id_of(value: str) -> str:
    """Gives the authserv-id of an Authentication-Results value as RFC 8601 §2.5 compares it.

    The authserv-id is a ``value`` (RFC 2045 token or quoted-string, RFC 8601
    §2.2) after optional CFWS.  Comments, nested ones too, are not part of it;
    a quoted-string is compared unquoted; the comparison ignores case and a
    trailing dot (RFC 8601 §2.5: the same host name, written another way, is
    the same id).  So ``(a (b) c) "MX.Example.ORG."`` gives ``mx.example.org``.
    """
    i = _skip_cfws(value, 0)
    if value[i : i + 1] == '"':
        out: list[str] = []
        i += 1
        while i < len(value) and value[i] != '"':
            if value[i] == "\\":
                i += 1
            out.append(value[i : i + 1])
            i += 1
        text = "".join(out)
    else:
        end = i
        while end < len(value) and value[end] not in ';("' and not value[end].isspace():
            end += 1
        text = value[i:end]
    return normalize_authserv_id(text)


def normalize_authserv_id(text: str) -> str:
    """Gives an authserv-id in the form two ids are compared in (RFC 8601 §2.5)."""
    return " ".join(text.split()).lower().rstrip(".")


def _ours(field: HeaderField, authserv_id: str) -> bool:
    key = field.key
    if key == "authentication-results":
        ours = normalize_authserv_id(authserv_id)
        return bool(ours) and authserv_id_of(field.value()) == ours
    if key == HEADER_NAME.lower():
        return True
    if key == "received-spf":
        # RFC 7208 §9.1: "receiver=" names the host that wrote the field; compared as an
        # authserv-id is, so "receiver=MX.Example.ORG." is ours too.
        ours = normalize_authserv_id(authserv_id)
        return bool(ours) and any(
            normalize_authserv_id(m.group(1).strip('"')) == ours
            for m in _RECEIVER.finditer(field.value())
        )
    return False


def defuse(message: Message, authserv_id: str) -> Message:
    """Gives the message without our earlier annotation and with forged copies renamed."""
    if not message.has(*_OUR_NAMES):
        return message  # the usual case: nothing of ours, no field made
    out: list[HeaderField] = []
    above_received = True
    for field in message.fields:
        if field.key == "received":
            above_received = False
        if field.key in _OUR_NAMES and _ours(field, authserv_id):
            if above_received:
                continue
            # A copy below the topmost Received was written by someone else in our name:
            # kept for the record under another name, never where a reader trusts it.
            new_name = "X-Original-" + field.name
            raw = new_name.encode() + field.raw[len(field.name) :]
            out.append(HeaderField(new_name, raw, new_name.lower()))
            continue
        out.append(field)
    return Message(tuple(out), message.rest, message.eol)


class _Written(AuthenticationResult):
    """A result clause as authres wrote it once, written again as it is.

    For clauses made only of values that recur across mail (result words,
    domains, selectors, policy words: see the caches below), never for one
    that holds a sender's address or a signature.
    """

    def __init__(self, made: AuthenticationResult) -> None:
        self.__dict__.update(made.__dict__)  # its fields, for a reader of the object
        self.text = str(made)

    def __str__(self) -> str:
        return self.text


class _WrittenProperty(AuthenticationResultProperty):
    """A property as authres wrote it once (see `_Written`)."""

    def __init__(self, type_: str, name: str, value: str) -> None:
        super().__init__(type_, name, value)
        self.text = super().__str__()

    def __str__(self) -> str:
        return self.text


_AUTH_PASS = _Written(AuthenticationResult(method="auth", result="pass"))
_DKIM_NONE = _Written(DKIMAuthenticationResult(result="none"))


# Keyed on a DKIM d=, s=, a= or an i= that is only "@" and a domain: the domains, selectors
# and algorithms that sign mail recur.
@lru_cache(maxsize=4096)
def _recurring_property(name: str, value: str) -> AuthenticationResultProperty | None:
    """Gives the header.<name> property of a DKIM result, or None when nothing is left to write."""
    written = ar_value(value)
    return _WrittenProperty("header", name, written) if written else None


def _blank(name: str) -> AuthenticationResultProperty:
    """Gives the property of a value that is blank once written: authres fails on it, as before."""
    return AuthenticationResultProperty("header", name, "")


def _spf_ar(report: CheckReport) -> AuthenticationResult:
    spf, env = report.spf, report.envelope
    if spf.identity == "helo" or not env.mail_from:
        name, value = "helo", env.helo
    else:
        name, value = "mailfrom", env.mail_from
    properties = [AuthenticationResultProperty("smtp", name, ar_value(value))] if value else []
    comment = ar_comment(f"domain of {spf.domain}") if spf.domain else None
    return SPFAuthenticationResult(result=spf.result, result_comment=comment, properties=properties)


def _dmarc_ar(report: CheckReport) -> AuthenticationResult:
    dm = report.dmarc
    # Our own user's submission: DMARC was not evaluated, and the header says so.
    if report.envelope.authenticated and dm.result == "none" and dm.reason:
        return _dmarc_clause(
            dm.result, dm.from_domain, dm.internal_error, dm.policy, dm.testing, dm.mode, dm.reason
        )
    return _dmarc_written(
        dm.result, dm.from_domain, dm.internal_error, dm.policy, dm.testing, dm.mode
    )


def _dmarc_clause(
    result: str,
    from_domain: str,
    internal_error: bool,
    policy: str,
    testing: bool,
    mode: str,
    reason: str | None = None,
) -> AuthenticationResult:
    properties = (
        [AuthenticationResultProperty("header", "from", ar_value(from_domain))]
        if from_domain
        else []
    )
    comment = None
    if internal_error:
        comment = "internal error"  # RFC 8601 has no word for it: permerror
    if policy:
        properties.append(AuthenticationResultProperty("policy", "dmarc", ar_value(policy)))
        comment = ar_comment(f"p={policy}" + (" testing" if testing else "") + f" mode={mode}")
    return DMARCAuthenticationResult(
        result=result, result_comment=comment, reason=reason, properties=properties
    )


# Keyed on the From domain and what its DMARC record says: the same for all its mail.
@lru_cache(maxsize=4096)
def _dmarc_written(
    result: str, from_domain: str, internal_error: bool, policy: str, testing: bool, mode: str
) -> AuthenticationResult:
    return _Written(_dmarc_clause(result, from_domain, internal_error, policy, testing, mode))


# Keyed on the ARC result and the sealers' domains (mailing lists, forwarders): they recur.
@lru_cache(maxsize=1024)
def _arc_ar(result: str, internal_error: bool, sealers: tuple[str, ...]) -> AuthenticationResult:
    comment = None
    if internal_error:
        comment = "internal error"
    elif sealers:
        comment = ar_comment("sealed by " + ", ".join(sealers))
    return _Written(ARCAuthenticationResult(result=result, result_comment=comment))


def authentication_results(report: CheckReport, authserv_id: str) -> str:
    """Gives the Authentication-Results value for the report, written with authres (RFC 8601).

    Each result is made with its properties, in the order they are written, rather than
    set one by one through authres's setters, which search the list each time.  Clauses
    and properties made only of values that recur across mail are written by authres
    once and kept (`_Written`); a sender's address and a signature's b= are written anew.
    """
    results: list[AuthenticationResult] = []
    if report.envelope.authenticated:
        results.append(_AUTH_PASS)
    else:
        results.append(_spf_ar(report))
    for sig in report.dkim:
        # authres quotes a reason only when it is given to the constructor.
        reason = ar_reason(sig.reason) if sig.result != "pass" and sig.reason else None
        # In the order authres's keywords and setters appended them: d, s, i, b, a.
        properties = []
        for name, value in (("d", sig.domain), ("s", sig.selector)):
            if value:  # as the keywords: an empty value is left out
                made = _recurring_property(name, value)
                if made is not None:
                    properties.append(made)
        if sig.identity.startswith("@"):  # no i= given, or only a domain: it recurs
            properties.append(_recurring_property("i", sig.identity) or _blank("i"))
        elif sig.identity:
            properties.append(AuthenticationResultProperty("header", "i", ar_value(sig.identity)))
        if sig.b:
            properties.append(AuthenticationResultProperty("header", "b", ar_value(sig.b)))
        if sig.algorithm:
            properties.append(_recurring_property("a", sig.algorithm) or _blank("a"))
        results.append(
            DKIMAuthenticationResult(result=sig.result, reason=reason, properties=properties)
        )
    if not report.dkim:
        results.append(_DKIM_NONE)
    arc = report.arc
    results.append(_arc_ar(arc.result, arc.internal_error, tuple(arc.sealers)))
    results.append(_dmarc_ar(report))
    header = AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    return header.header_value().strip()


# RFC 5322 §3.2.4: a quoted-string holds qtext and quoted-pairs.  Text whose quoted-strings
# are all closed, and the rest of an open quoted-string up to its closing quote.
# Written as runs of plain characters between quoted-pairs, not one alternation per
# character: the same strings, without a step of the regex engine per character.
_CLOSED = re.compile(r'[^"]*(?:"[^"\\]*(?:\\.[^"\\]*)*"[^"]*)*', re.DOTALL)
_QUOTED_TAIL = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _left_open(piece: str, inside: bool) -> bool:
    """Tells whether a quoted-string is open at the end of piece (`inside`: open at its start)."""
    rest = piece
    if inside:
        # Inside the open quoted-string ("; " was qtext, or its ";" a quoted-pair).
        closing = _QUOTED_TAIL.match(piece)
        if closing is None:
            return True
        rest = piece[closing.end() :]
    return '"' in rest and not _CLOSED.fullmatch(rest)


def _split_outside_quotes(value: str) -> list[str]:
    """Gives value split at "; " wherever that is not inside a quoted-string.

    A quoted-string runs to its closing quote, or to the end when unclosed.
    The value is split at every "; " first; a piece that leaves a quoted-string
    open is joined with the next ones until it closes, each piece read once.
    """
    pieces = value.split("; ")
    quote = value.find('"')
    if quote < 0:
        return pieces  # no quoted-string: every "; " separates
    # The pieces before the one holding the first quote are parts as they are: "; " holds
    # no quote, so the separators before it are counted as split() found them.
    first = value.count("; ", 0, quote)
    parts: list[str] = pieces[:first]
    held: list[str] = []  # the pieces of a part whose quoted-string is still open
    for piece in pieces[first:]:
        if "\\" not in piece:
            # No quoted-pair: each quote opens or closes a quoted-string, so the count
            # tells what `_left_open` finds, without its patterns' backtracking.
            still_open = (piece.count('"') + (1 if held else 0)) % 2 == 1
        else:
            still_open = _left_open(piece, bool(held))
        if still_open:
            held.append(piece)
        elif held:
            held.append(piece)
            parts.append("; ".join(held))
            held = []
        else:
            parts.append(piece)
    if held:
        parts.append("; ".join(held))
    return parts


def fold(name: str, value: str, eol: bytes) -> bytes:
    """Gives a header field folded after ``;`` so lines stay near 78 octets (RFC 5322 §2.2.3)."""
    return fold_fields(name, _split_outside_quotes(value), eol)


def fold_fields(name: str, parts: list[str], eol: bytes) -> bytes:
    """Gives `fold` of the value "; ".join(parts), for parts that hold no "; " outside quotes.

    A value we write ourselves comes as its parts: they are not joined and split again.
    """
    lines: list[str] = []
    line = f"{name}: {parts[0]}"
    for part in parts[1:]:
        if len(line) + len(part) > 74:  # with "; " between, over 76
            lines.append(line)
            line = "\t" + part
        else:
            line = f"{line}; {part}"  # one new string, not two
    lines.append(line)
    # One encode of the joined text: the codec works character by character, so the
    # bytes are those of each line encoded and joined; the ";" ending a line is joined in.
    end = eol.decode("utf-8", "surrogateescape")
    return (f";{end}".join(lines) + end).encode("utf-8", "surrogateescape")


def annotate(
    data: bytes, report: CheckReport, authserv_id: str, authsieve_value: str | list[str]
) -> bytes:
    """Gives the message with our headers prepended and forged copies defused.

    `authsieve_value` is the X-Authsieve value, or its fields (`render_header_fields`).

    The message the checks parsed (`CheckReport.message`) is read again when it is
    `data`'s; a report of other bytes has them parsed here.
    """
    parsed = report.message
    if parsed is None or parsed.data is not data:
        parsed = Message.parse(data)
    message = defuse(parsed, authserv_id)
    eol = message.eol
    new = [
        fold("Authentication-Results", authentication_results(report, authserv_id), eol),
    ]
    if not report.envelope.authenticated and report.envelope.client_ip:
        new.append(fold_fields("Received-SPF", received_spf_fields(report.spf, authserv_id), eol))
    if isinstance(authsieve_value, str):
        new.append(fold(HEADER_NAME, authsieve_value, eol))
    else:
        new.append(fold_fields(HEADER_NAME, authsieve_value, eol))
    if message is parsed and parsed.data is data:
        new.append(data)  # nothing defused: the message as it came, not joined again
        return b"".join(new)
    return b"".join(new) + message.to_bytes()
