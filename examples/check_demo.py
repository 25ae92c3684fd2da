#!/usr/bin/env python3
"""Recomputes SPF, DKIM, ARC and DMARC of every demo message and compares them with the README.

`python3 examples/check_demo.py` exits 0 when every result in
examples/maildir/README.md's table is what dnspython + pyspf + dkimpy say,
1 otherwise. It deliberately uses none of authsieve's code: it is an
independent cross-check of the demo data, not of the project.

DNS comes only from examples/maildir/zone.txt, held in memory: pyspf asks
dnspython's default resolver, which is replaced by one that answers from the
zone (dnspython's documented `dns.resolver.default_resolver`); dkimpy gets the
same zone through its `dnsfunc` argument. No network is used.
"""

from __future__ import annotations

import email.utils
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import dkim
import dkim.util
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.zone
import spf

HERE = Path(__file__).resolve().parent
MAILDIR = HERE / "maildir"
OUR_HOST = "mx.family.example"
FOLDERS = ("new", "cur", ".Junk/new", ".Junk/cur")
IN = dns.rdataclass.IN


class ZoneResolver(dns.resolver.Resolver):
    """A dnspython resolver that answers authoritatively from one in-memory zone."""

    def __init__(self, zone: dns.zone.Zone) -> None:
        super().__init__(configure=False)
        self.zone = zone
        self.names = {n.to_text().lower() for n in zone.nodes}

    def _exists(self, name: dns.name.Name) -> bool:
        # An empty non-terminal exists (NODATA), RFC 8020.
        text = name.to_text().lower()
        return any(n == text or n.endswith("." + text) for n in self.names)

    @staticmethod
    def _answer(response: dns.message.Message, owner: dns.name.Name, found) -> None:
        # find_rrset(create=True) also indexes the RRset, which resolve_chaining() reads.
        rrset = response.find_rrset(response.answer, owner, IN, found.rdtype, create=True)
        rrset.update(found)

    def resolve(  # type: ignore[override]
        self,
        qname: str | dns.name.Name,
        rdtype: str | int = dns.rdatatype.A,
        rdclass: int = IN,
        tcp: bool = False,
        source: str | None = None,
        raise_on_no_answer: bool = True,
        source_port: int = 0,
        lifetime: float | None = None,
        search: bool | None = None,
    ) -> dns.resolver.Answer:
        name = dns.name.from_text(qname) if isinstance(qname, str) else qname
        rtype = dns.rdatatype.RdataType.make(rdtype)
        response = dns.message.make_response(dns.message.make_query(name, rtype))
        response.flags |= dns.flags.AA
        owner = name
        for _ in range(8):
            node = self.zone.get_node(owner)
            if node is None:
                break
            found = node.get_rdataset(IN, rtype)
            if found:
                self._answer(response, owner, found)
                break
            cname = node.get_rdataset(IN, dns.rdatatype.CNAME)
            if not cname or rtype == dns.rdatatype.CNAME:
                break
            self._answer(response, owner, cname)
            owner = cname[0].target
        if not response.answer and not self._exists(owner):
            response.set_rcode(dns.rcode.NXDOMAIN)
            raise dns.resolver.NXDOMAIN(qnames=[name], responses={name: response})
        answer = dns.resolver.Answer(name, rtype, IN, response)
        if answer.rrset is None and raise_on_no_answer:
            raise dns.resolver.NoAnswer(response=response)
        return answer


def load_resolver() -> ZoneResolver:
    text = (MAILDIR / "zone.txt").read_text()
    zone = dns.zone.from_text(text, origin=dns.name.root, relativize=False, check_origin=False)
    return ZoneResolver(zone)


RESOLVER = load_resolver()
dns.resolver.default_resolver = RESOLVER


def txt_record(name: str) -> str | None:
    """Gives the first TXT record at `name`, its strings joined, or None."""
    try:
        answer = RESOLVER.resolve(name.rstrip(".") + ".", "TXT", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return None
    if answer.rrset is None:
        return None
    return b"".join(answer.rrset[0].strings).decode()


def dkim_dns(name: bytes | str, timeout: int = 5) -> bytes | None:
    """dkimpy's `dnsfunc`: the TXT record at `name` as bytes, or None."""
    found = txt_record(name.decode() if isinstance(name, bytes) else name)
    return found.encode() if found is not None else None


# ---------------------------------------------------------------- messages

HOP = re.compile(
    r"from\s+(?P<helo>\S+)\s+\((?:(?P<rdns>[^\s\[]+)\s+)?\[(?:IPv6:)?(?P<ip>[0-9A-Fa-f:.]+)\]\)"
)


@dataclass(frozen=True)
class Hop:
    helo: str
    rdns: str
    ip: str
    by: str


def received_hops(raw: bytes) -> list[tuple[str, Hop | None]]:
    """Gives every Received header top to bottom, unfolded, with its `from` part if readable."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    fields = re.split(r"\r\n(?![ \t])", head)
    out = []
    for f in fields:
        if not f.lower().startswith("received:"):
            continue
        text = " ".join(f.split())
        m = HOP.search(text)
        by = re.search(r"\bby\s+(\S+)", text)
        hop = None
        if m:
            hop = Hop(m["helo"], m["rdns"] or "unknown", m["ip"], by[1] if by else "")
        out.append((text, hop))
    return out


def our_client(raw: bytes) -> tuple[Hop, list[tuple[str, Hop | None]]]:
    """Gives our Postfix's external hop (the SMTP client) and the hops below it."""
    hops = received_hops(raw)
    for i, (text, hop) in enumerate(hops):
        if f"by {OUR_HOST} (Postfix)" in text and hop and hop.ip not in ("127.0.0.1", "::1"):
            return hop, hops[i + 1 :]
    raise ValueError("no external hop of our Postfix")


def header(raw: bytes, name: str) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    m = re.search(rf"(?im)^{name}:(.*(?:\r\n[ \t].*)*)", head)
    return " ".join(m[1].split()) if m else ""


# ---------------------------------------------------------------- checks


def spf_result(ip: str, mail_from: str, helo: str) -> str:
    """pyspf's RFC 7208 result for (ip, MAIL FROM, HELO); HELO identity when MAIL FROM is null."""
    result, _explanation = spf.check2(i=ip, s=mail_from, h=helo)
    return result


def dkim_results(raw: bytes) -> list[tuple[str, str, str, str]]:
    """Gives (result, d=, s=, why) for every DKIM-Signature, top to bottom (RFC 6376 §6)."""
    count = len(re.findall(rb"(?im)^DKIM-Signature:", raw.split(b"\r\n\r\n", 1)[0]))
    out = []
    for idx in range(count):
        log = Notes()
        d = dkim.DKIM(raw, minkey=1024, logger=log)
        sig_headers = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
        tags = dkim.util.parse_tag_value(sig_headers[idx])
        try:
            ok = d.verify(idx=idx, dnsfunc=dkim_dns)
        except dkim.DKIMException as exc:
            ok, log.last = False, short_reason(str(exc))
        why = "" if ok else f" ({log.last})"
        out.append(("pass" if ok else "fail", tags[b"d"].decode(), tags[b"s"].decode(), why))
    return out


def short_reason(text: str) -> str:
    """Gives dkimpy's reason without the hashes and ASN.1 detail that follow it."""
    return text.split(" (got")[0].split(": Unparsable")[0]


class Notes:
    """A logger for dkimpy that keeps the last thing it said (the reason a signature failed)."""

    last = "signature did not verify"

    def debug(self, msg: str, *args: object) -> None:
        if "mismatch" in msg or "key" in msg.lower():
            self.last = short_reason(msg)

    info = warning = error = debug


def arc_result(raw: bytes) -> str:
    """Gives dkimpy's ARC chain validation result (RFC 8617 §5.2)."""
    cv, _results, _reason = dkim.arc_verify(raw, dnsfunc=dkim_dns)
    return cv.decode()


def org_domain(domain: str) -> str:
    # Every name here falls under the Public Suffix List's default rule "*".
    return ".".join(domain.split(".")[-2:])


def aligned(a: str, b: str, mode: str) -> bool:
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


def dmarc_result(from_domain: str, spf_res: str, spf_domain: str, dkims: list) -> str:
    """Gives `result (p=policy)` per RFC 7489 §6.6 (record discovery §6.6.3, sp= for subdomains)."""
    record, policy_tag = txt_record(f"_dmarc.{from_domain}"), "p"
    if record is None and org_domain(from_domain) != from_domain:
        record, policy_tag = txt_record(f"_dmarc.{org_domain(from_domain)}"), "sp"
    if record is None or not record.startswith("v=DMARC1"):
        return "none"
    tags = dict(
        (k.strip(), v.strip()) for k, _, v in (t.partition("=") for t in record.split(";")) if k
    )
    policy = tags.get(policy_tag, tags["p"]) if policy_tag == "sp" else tags["p"]
    spf_ok = spf_res == "pass" and aligned(spf_domain, from_domain, tags.get("aspf", "r"))
    dkim_ok = any(
        r == "pass" and aligned(d, from_domain, tags.get("adkim", "r")) for r, d, _, _ in dkims
    )
    return f"{'pass' if spf_ok or dkim_ok else 'fail'} (p={policy})"


@dataclass(frozen=True)
class Outcome:
    spf: str
    dkim: str
    arc: str
    dmarc: str
    detail: list[str]


def evaluate(raw: bytes, trusted_forwarders: set[str]) -> Outcome:
    """Gives every result for one message, in the README's notation."""
    client, below = our_client(raw)
    mail_from = header(raw, "Return-Path").strip("<> ")
    from_domain = email.utils.getaddresses([header(raw, "From")])[0][1].rpartition("@")[2].lower()
    spf_res = spf_result(client.ip, mail_from, client.helo)
    spf_domain = mail_from.rpartition("@")[2] if mail_from else client.helo
    dkims = dkim_results(raw)
    arc = arc_result(raw)
    dmarc = dmarc_result(from_domain, spf_res, spf_domain, dkims)
    detail = [
        f"client   {client.ip} helo={client.helo} rdns={client.rdns}",
        f"spf      {spf_res}  (mailfrom=<{mail_from}>)",
    ]
    spf_text, dmarc_text = spf_res, dmarc
    if client.rdns in trusted_forwarders:
        inner = next(h for t, h in below if h and h.by == client.rdns)
        inner_spf = spf_result(inner.ip, mail_from, inner.helo)
        inner_dmarc = dmarc_result(from_domain, inner_spf, spf_domain, dkims)
        spf_text += f"; behind {client.rdns}: {inner_spf}"
        dmarc_text += f"; behind {client.rdns}: {inner_dmarc}"
        detail.append(f"behind   {inner.ip} helo={inner.helo}: spf {inner_spf}")
    dkim_text = ", ".join(f"{r} {d}/{s}" for r, d, s, _ in dkims) or "none"
    dkim_detail = ", ".join(f"{r} {d}/{s}{why}" for r, d, s, why in dkims) or "none"
    detail += [
        f"dkim     {dkim_detail}",
        f"arc      {arc}",
        f"dmarc    {dmarc_text}  (From {from_domain})",
    ]
    return Outcome(spf_text, dkim_text, arc, dmarc_text, detail)


# ---------------------------------------------------------------- README + Maildir


def expected_rows() -> dict[str, tuple[str, str, str, str]]:
    """Gives file → (SPF, DKIM, ARC, DMARC) from the README's "Expected results" table."""
    rows = {}
    for line in (MAILDIR / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1], cells[2], cells[3], cells[4])
    return rows


def maildir_problems(rel: str, raw: bytes) -> list[str]:
    """Gives what is wrong with one file's Maildir name or line ends."""
    folder, _, name = rel.rpartition("/")
    problems = []
    pattern = r"\d+\.M\d+P\d+\.[^/:]+,S=(\d+),W=(\d+)"
    m = re.fullmatch(pattern + (r":2,[A-Z]*" if folder.endswith("cur") else ""), name)
    if not m:
        problems.append(f"not a valid Maildir name for {folder}/: {name}")
    elif int(m[1]) != len(raw):
        problems.append(f"S={m[1]} but the file has {len(raw)} bytes")
    if re.search(rb"(?<!\r)\n", raw) or re.search(rb"\r(?!\n)", raw):
        problems.append("line ends are not all CRLF")
    return problems


def main() -> int:
    config = tomllib.loads((HERE / "config.toml").read_text())
    forwarders = set(config.get("classifier", {}).get("trusted_forwarders", []))
    expected = expected_rows()
    files = sorted(
        (p for f in FOLDERS if (MAILDIR / f).is_dir() for p in (MAILDIR / f).iterdir()),
        key=lambda p: p.name,
    )
    files = [p for p in files if not p.name.startswith(".")]
    failures = 0
    seen = set()
    for path in files:
        rel = path.relative_to(MAILDIR).as_posix()
        raw = path.read_bytes()
        seen.add(rel)
        got = evaluate(raw, forwarders)
        print(f"{rel}\n  Subject: {header(raw, 'Subject')}")
        for line in got.detail:
            print("  " + line)
        problems = maildir_problems(rel, raw)
        want = expected.get(rel)
        if want is None:
            problems.append("not listed in README.md")
        else:
            for label, w, g in zip(
                ("SPF", "DKIM", "ARC", "DMARC"),
                want,
                (got.spf, got.dkim, got.arc, got.dmarc),
                strict=True,
            ):
                if w != g:
                    problems.append(f"{label}: README says {w!r}, got {g!r}")
        for p in problems:
            print(f"  MISMATCH {p}")
        print("  ok" if not problems else "")
        failures += bool(problems)
    for rel in sorted(set(expected) - seen):
        print(f"{rel}\n  MISMATCH listed in README.md but not in the Maildir")
        failures += 1
    total = len(seen | set(expected))
    print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
