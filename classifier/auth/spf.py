"""SPF results for the MAIL FROM and HELO identities (RFC 7208), evaluated by pyspf.

pyspf does the record evaluation; every DNS query it makes goes through the
message's `DnsSession` (classifier.lookup.resolver): pyspf has no resolver parameter, so
its module-level `DNSLookup` hook is pointed, on first use, at an adapter that
reads the session of the current check from a `ContextVar`.  Each check sets
that variable for its own duration only, so checks in a thread pool never see
one another's session, and a query never repeats within one message: the
session remembers every answer, including the empty ones pyspf does not cache.

The RFC 7208 §4.6.4 limits are pyspf's in strict mode: at most 10 DNS
mechanisms and 2 void lookups; the time limit is the session's budget.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import dns.exception
import spf as pyspf

from classifier.envelope.trust import split_address, strip_angle
from classifier.lookup.resolver import DnsSession, DnsTempError, Record
from classifier.names import DOT_ATOM, normalize_ip, quoted_string
from classifier.vocab import SPF_RESULTS, Result

RESULTS = SPF_RESULTS

# The tag of each result in Received-SPF, as postfix-policyd-spf-perl writes it.
_HEADER_TAGS = {r: r.capitalize() for r in RESULTS}

# An exp= text is 7-bit ASCII (RFC 7208 §6.2, pyspf enforces it), so a
# non-ASCII marker can never be mistaken for one: it tells "no exp= given".
_NO_EXP = "\u2400default explanation"

_SESSION: contextvars.ContextVar[DnsSession | None] = contextvars.ContextVar(
    "authsieve_spf_dns_session", default=None
)
_INSTALL_LOCK = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class SpfResult:
    """The outcome of one SPF check and the evidence for it (RFC 7208 §2.6)."""

    result: Result  # one of SPF_RESULTS
    identity: str  # "mailfrom" or "helo"
    domain: str  # domain checked ("" when none)
    sender: str  # the full identity checked (postmaster@HELO for a null sender / HELO check)
    client_ip: str
    helo: str
    mechanism: str  # the mechanism that matched, as written ("" when none / default)
    explanation: str  # the exp= text when given, else a sentence a person understands
    reason: str  # one sentence with the evidence

    def to_dict(self) -> dict[str, str]:
        """Gives every field by name, for --json."""
        return asdict(self)


def default_explanation(result: str, domain: str, client_ip: str) -> str:
    """Gives the sentence used when the domain gives no exp= text (RFC 7208 §6.2)."""
    if not domain:
        return "there was no domain to check, so SPF says nothing about this message"
    sentences = {
        "pass": f"{domain} allows {client_ip} to send its mail",
        "fail": f"{domain} does not allow {client_ip} to send its mail",
        "softfail": f"{domain} does not list {client_ip} as a sender of its mail, "
        "but asks only for suspicion, not rejection",
        "neutral": f"{domain} says nothing about whether {client_ip} may send its mail",
        "none": f"{domain} publishes no SPF record, so SPF says nothing about this message",
        "permerror": f"the SPF record of {domain} is broken, so it cannot be evaluated",
        "temperror": f"a DNS lookup for the SPF record of {domain} failed for now; "
        "a later check may succeed",
    }
    return sentences.get(result, f"SPF result {result} for {domain}")


def _reason(result: str, domain: str, client_ip: str, mechanism: str, detail: str) -> str:
    by = f"({mechanism})" if mechanism else "(no mechanism matched, the default result)"
    if result == "pass":
        return f"{client_ip} is permitted by {domain} {by}"
    if result == "fail":
        return f"{client_ip} is not permitted by {domain} {by}"
    if result == "softfail":
        return f"{client_ip} is discouraged but not forbidden by {domain} {by}"
    if result == "neutral":
        return f"{domain} neither permits nor denies {client_ip} {by}"
    if result == "none":
        return f"{domain} publishes no SPF record"
    if result == "permerror":
        return f"the SPF record of {domain} cannot be evaluated: {detail}"
    return f"a DNS lookup failed while checking {domain}: {detail}"


def _printable(text: str) -> str:
    """Gives text with every non-printable character (CR, LF, NUL, lone surrogates…) as '?'."""
    if text.isprintable():
        return text  # nearly always: one C call instead of a Python step per character
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _pyspf_value(rdtype: str, record: Record) -> Any:
    """Gives a record in the shape pyspf's DNSLookup_dnspython yields it."""
    if rdtype in ("TXT", "SPF"):
        return list(record)  # the character-strings as bytes, unjoined (RFC 7208 §3.3)
    return record  # A/AAAA address text, MX (preference, host), PTR host name


def _ascii_name(name: str) -> str | None:
    """Gives the name with U-labels as A-labels (RFC 7208 §4.3), or None if it cannot exist."""
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _pyspf_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[Any]:
    """Answers pyspf's DNS query from the session of the running check, as ((name, type), value)."""
    session = _SESSION.get()
    if session is None:
        # No check of ours is running in this context: refuse rather than leak a query.
        raise pyspf.TempError("DNS: pyspf used outside an authsieve SPF check")
    qname = _ascii_name(name)
    if qname is None:
        return []
    try:
        answer = session.query(qname, qtype)
    except DnsTempError as exc:
        raise pyspf.TempError(f"DNS {exc}") from exc
    except (dns.exception.DNSException, UnicodeError, ValueError):
        # A name the DNS cannot carry (RFC 7208 §4.3): nothing exists there.
        return []
    return [((name, qtype), _pyspf_value(qtype, rec)) for rec in answer.records]


def _install_lookup() -> None:
    """Points pyspf's module-level DNS hook at the session adapter (idempotent)."""
    # The test and the set under one lock: with the test outside it, the lock guarded nothing.
    with _INSTALL_LOCK:
        if pyspf.DNSLookup is not _pyspf_lookup:
            pyspf.DNSLookup = _pyspf_lookup


def _domain_problem(domain: str) -> tuple[str, str]:
    """Gives (the domain in A-labels, "") or ("", why it cannot be checked) (RFC 7208 §4.3)."""
    # Kept per name (senders' names recur); one longer than any DNS name is not kept.
    return _domain_problem_of(domain) if len(domain) <= _KEPT_LENGTH else _check_domain(domain)


_KEPT_LENGTH = 320  # the longest text a cache below is keyed on (names.MAX_SHOWN)


def _check_domain(domain: str) -> tuple[str, str]:
    if domain.endswith(".") and not domain.endswith(".."):
        domain = domain[:-1]
    if not domain:
        return "", "there is no domain"
    # Only digits and dots, or a colon, can make an address (a name holds no colon); a name
    # that ends in neither is no such run, and is not copied to be told so.
    last = domain[-1]
    literal = ":" in domain or (
        (last == "." or last.isdigit()) and domain.replace(".", "").isdigit()
    )
    if domain.startswith("[") or (literal and normalize_ip(domain) is not None):
        return "", f"{_printable(domain)!r} is an address literal, not a domain"
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return "", f"{_printable(domain)!r} is not a valid domain name"
    labels = domain.split(".")
    if len(labels) < 2:
        return "", f"{domain!r} is not a fully qualified domain name"
    if "" in labels:
        return "", f"{domain!r} has an empty label"
    if len(domain) > 253 or (len(domain) > 63 and max(map(len, labels)) > 63):
        return "", f"{domain!r} is longer than a DNS name can be"
    return domain.lower(), ""


_domain_problem_of = lru_cache(maxsize=4096)(_check_domain)


def _none(identity: str, domain: str, sender: str, ip: str, helo: str, why: str) -> SpfResult:
    return SpfResult(
        result=Result.NONE,
        identity=identity,
        domain=domain,
        sender=_printable(sender),
        client_ip=ip,
        helo=_printable(helo),
        mechanism="",
        explanation="SPF says nothing about this message: " + why,
        reason=why,
    )


def _evaluate(
    ip: str, sender: str, helo: str, identity: str, domain: str, dns: DnsSession, receiver: str
) -> SpfResult:
    """Gives check_host()'s result (RFC 7208 §4), kept while the DNS answers it read stand.

    The key is every input pyspf's evaluation reads besides DNS: the client IP
    (%{i}, %{c}, %{v}), the sender (%{s}, %{l}, %{o}, %{d}), the HELO (%{h}),
    the identity and the receiver (%{r}) (RFC 7208 §7.3).  The one other
    input, the time for %{t}, is read by an exp= text only (§7.3): a result
    that carries the domain's own explanation is never kept.
    """
    key = ("spf", ip, sender, helo, identity, domain, receiver)
    return dns.resolver.memo.compute(
        dns, key, lambda: _check_host(ip, sender, helo, identity, domain, dns, receiver)
    )


def _check_host(
    ip: str, sender: str, helo: str, identity: str, domain: str, dns: DnsSession, receiver: str
) -> tuple[SpfResult, bool]:
    """Runs pyspf's check_host() with its DNS bound to this session; tells if it may be kept."""
    keepable = True
    _install_lookup()
    token = _SESSION.set(dns)
    try:
        # A null sender makes pyspf check postmaster@HELO (RFC 7208 §2.4).
        query = pyspf.query(
            i=ip,
            s="" if identity == "helo" else sender,
            h=helo,
            receiver=receiver or None,
            strict=True,
            querytime=0,  # the session's budget is the time limit (RFC 7208 §4.6.4)
        )
        if identity == "mailfrom":
            # pyspf splits the sender at its first "@"; a quoted local part may hold one
            # (RFC 5321 §4.1.2), so the %{l}/%{o}/%{d} it checks are set from our split.
            # RFC 7208 §4.3: an empty local part reads as "postmaster".
            query.l = split_address(sender)[0] or "postmaster"
            query.d = query.o = domain
        query.set_default_explanation(_NO_EXP)
        result, _code, text = query.check()
        mechanism = query.mechanism or ""
    except Exception as exc:  # pyspf raises on some odd input; never let it reach the caller
        result, text, mechanism = "permerror", f"pyspf failed: {type(exc).__name__}: {exc}", ""
        keepable = False
    finally:
        _SESSION.reset(token)
    if result not in RESULTS:
        text, result = f"pyspf gave the unknown result {result!r}", Result.PERMERROR
    result = Result(result)
    detail = _printable(str(text).removeprefix("SPF Permanent Error: "))
    detail = detail.removeprefix("SPF Temporary Error: ")
    explanation = default_explanation(result, domain, ip)
    if result == "fail" and text != _NO_EXP:
        explanation = _printable(str(text))  # the domain's own exp= text (RFC 7208 §6.2)
        keepable = False  # it may hold %{t}, the time of this evaluation (RFC 7208 §7.3)
    keepable = keepable and result != Result.TEMPERROR
    spf = SpfResult(
        result=result,
        identity=identity,
        domain=domain,
        sender=_printable(sender),
        client_ip=ip,
        helo=_printable(helo),
        mechanism=_printable(mechanism),
        explanation=explanation,
        reason=_reason(result, domain, ip, _printable(mechanism), detail),
    )
    return spf, keepable


def record_domains(mail_from: str | None, helo: str) -> list[str]:
    """Gives the domains whose SPF records the HELO and MAIL FROM checks read first."""
    out = []
    helo_domain, problem = _domain_problem(helo.strip())
    if not problem:
        out.append(helo_domain)
    sender, _, domain = _sender(mail_from or "")
    if sender:
        domain, problem = _domain_problem(domain)
        if not problem and domain not in out:
            out.append(domain)
    return out


def _sender(mail_from: str) -> tuple[str, str, str]:
    """Gives the MAIL FROM address without angle brackets, its local part and its domain.

    The domain follows the last "@" outside quotes (RFC 5321 §4.1.2), and a
    quoted local part keeps its quotes.  A sender without such an "@" is read
    as pyspf reads it: postmaster at that domain.
    """
    sender = strip_angle(mail_from)
    local, domain = split_address(sender)
    if not domain and not sender.endswith("@"):
        local, domain = "postmaster", sender
    return sender, local, domain


def check_helo_spf(client_ip: str, helo: str, dns: DnsSession, receiver: str = "") -> SpfResult:
    """Gives the SPF result for the HELO identity, postmaster@HELO (RFC 7208 §2.3).

    An address literal or a name that is not a fully qualified domain cannot be
    checked: the result is none, with the reason.
    """
    helo = helo.strip()
    sender = f"postmaster@{helo}"
    ip = normalize_ip(client_ip)
    if ip is None:
        why = f"the client address {_printable(client_ip)!r} is not an IP address"
        return _none("helo", "", sender, _printable(client_ip), helo, why)
    if not helo:
        return _none("helo", "", sender, ip, helo, "the client gave no HELO name")
    domain, problem = _domain_problem(helo)
    if problem:
        return _none("helo", "", sender, ip, helo, f"the HELO name cannot be checked: {problem}")
    return _evaluate(ip, f"postmaster@{domain}", domain, "helo", domain, dns, receiver)


def check_spf(
    client_ip: str, mail_from: str, helo: str, dns: DnsSession, receiver: str = ""
) -> SpfResult:
    """Gives the SPF result for the MAIL FROM identity (RFC 7208 §2.4, §4).

    A null sender ("" or "<>") checks postmaster@HELO, reported as identity
    "helo".  Bad input gives a result with the reason, never an exception.
    """
    sender, local, domain = _sender(mail_from)
    if not sender:
        return check_helo_spf(client_ip, helo, dns, receiver)
    ip = normalize_ip(client_ip)
    if ip is None:
        why = f"the client address {_printable(client_ip)!r} is not an IP address"
        return _none("mailfrom", "", sender, _printable(client_ip), helo, why)
    domain, problem = _domain_problem(domain)
    if problem:
        why = f"the MAIL FROM domain cannot be checked: {problem}"
        return _none("mailfrom", "", sender, ip, helo, why)
    return _evaluate(ip, f"{local}@{domain}", helo.strip(), "mailfrom", domain, dns, receiver)


def _header_value(text: str) -> str:
    """Gives text as an RFC 5322 dot-atom when it is one, else as a quoted-string.

    Inside the quotes only \\ and " are escaped, and every character that is
    not printable (CR, LF, NUL…) becomes '?', so a value can neither end the
    quotes, add a key, nor start a new header line.
    """
    if DOT_ATOM.fullmatch(text):  # RFC 5322 §3.2.3: a dot-atom needs no quoting
        return text
    return quoted_string(_printable(text))


def received_spf_header(result: SpfResult, receiver: str) -> str:
    """Gives the value of a Received-SPF header field (RFC 7208 §9.1).

    In the style of postfix-policyd-spf-perl: ``Pass (mailfrom)
    identity=mailfrom; client-ip=…; helo=…; envelope-from=…; receiver=…``,
    then mechanism= and problem= when known.  envelope-from is written for the
    mailfrom identity only; every value that is not a dot-atom is quoted.
    """
    return "; ".join(received_spf_fields(result, receiver))


def received_spf_fields(result: SpfResult, receiver: str) -> list[str]:
    """Gives `received_spf_header`'s value in its "; "-separated parts, for folding."""
    tag = _HEADER_TAGS.get(result.result, "None")
    identity = "helo" if result.identity == "helo" else "mailfrom"
    parts = [
        f"{tag} ({identity}) {_recurring_field('identity', result.identity)}",
        f"client-ip={_header_value(result.client_ip)}",
    ]
    if result.helo:
        parts.append(f"helo={_header_value(result.helo)}")
    if result.identity == "mailfrom" and result.sender:
        parts.append(f"envelope-from={_header_value(result.sender)}")
    if receiver:
        parts.append(_recurring_field("receiver", receiver))
    if len(result.mechanism) > _KEPT_LENGTH:
        parts.append(f"mechanism={_header_value(result.mechanism)}")
    elif result.mechanism:
        parts.append(_recurring_field("mechanism", result.mechanism))
    if result.result in ("permerror", "temperror"):
        parts.append(f"problem={_header_value(result.reason)}")
    return parts


# Keyed on our authserv-id, the identity word or a mechanism of a domain's SPF record.
@lru_cache(maxsize=1024)
def _recurring_field(key: str, value: str) -> str:
    return f"{key}={_header_value(value)}"
