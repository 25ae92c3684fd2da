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
    not_evaluated = report.envelope.authenticated and dm.result == "none"
    properties = (
        [AuthenticationResultProperty("header", "from", ar_value(dm.from_domain))]
        if dm.from_domain
        else []
    )
    comment = None
    if dm.internal_error:
        comment = "internal error"  # RFC 8601 has no word for it: permerror
    if dm.policy:
        properties.append(AuthenticationResultProperty("policy", "dmarc", ar_value(dm.policy)))
        comment = ar_comment(
            f"p={dm.policy}" + (" testing" if dm.testing else "") + f" mode={dm.mode}"
        )
    return DMARCAuthenticationResult(
        result=dm.result,
        result_comment=comment,
        reason=(dm.reason or None) if not_evaluated else None,
        properties=properties,
    )


def authentication_results(report: CheckReport, authserv_id: str) -> str:
    """Gives the Authentication-Results value for the report, written with authres (RFC 8601).

    Each result is made with its properties, in the order they are written, rather than
    set one by one through authres's setters, which search the list each time.
    """
    results: list[AuthenticationResult] = []
    if report.envelope.authenticated:
        results.append(AuthenticationResult(method="auth", result="pass"))
    else:
        results.append(_spf_ar(report))
    for sig in report.dkim:
        # authres quotes a reason only when it is given to the constructor.
        reason = sig.reason if sig.result != "pass" and sig.reason else None
        # In the order authres's keywords and setters appended them: d, s, i, b, a.
        properties = []
        for name, value in (("d", sig.domain), ("s", sig.selector)):
            written = ar_value(value) if value else None
            if written:  # as the keywords: an empty value is left out
                properties.append(AuthenticationResultProperty("header", name, written))
        for name, value in (("i", sig.identity), ("b", sig.b), ("a", sig.algorithm)):
            if value:
                properties.append(AuthenticationResultProperty("header", name, ar_value(value)))
        results.append(
            DKIMAuthenticationResult(result=sig.result, reason=reason, properties=properties)
        )
    if not report.dkim:
        results.append(DKIMAuthenticationResult(result="none"))
    arc_comment = None
    if report.arc.internal_error:
        arc_comment = "internal error"
    elif report.arc.sealers:
        arc_comment = ar_comment("sealed by " + ", ".join(report.arc.sealers))
    results.append(ARCAuthenticationResult(result=report.arc.result, result_comment=arc_comment))
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
