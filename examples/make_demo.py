#!/usr/bin/env python3
"""Writes the demo Maildir, its DNS zone and its README: `python3 examples/make_demo.py`.

Everything under examples/maildir/ is generated from this file and the
demo-only keys in examples/keys/ (made with openssl and PyNaCl when missing).
The output is byte-for-byte the same on every run: DKIM `t=` and ARC `t=`
are the sending times written in each message's headers, not the time of the
run, and Maildir names are derived from the delivery time and the content.

The messages sit in alice@family.example's Maildir as Dovecot LMTP left them
after Postfix on mx.family.example (203.0.113.25 / 2001:db8:25::25) accepted
them. Each message is signed by its sender *before* the receiving side adds
its Received headers, as happens on the wire. Only documentation addresses
(RFC 5737, RFC 3849) and reserved names (RFC 2606) are used, plus one `.cyou`
sender for the blocked-suffix case.
"""

# Message text reproduces real header and HTML lines, some longer than 100 columns.
# ruff: noqa: E501

from __future__ import annotations

import base64
import contextlib
import hashlib
import inspect
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import dkim
import dns.reversename
import nacl.encoding
import nacl.signing

HERE = Path(__file__).resolve().parent
MAILDIR = HERE / "maildir"
KEYDIR = HERE / "keys"

MX = "mx.family.example"
MX_IP4 = "203.0.113.25"
MX_IP6 = "2001:db8:25::25"
CET = timezone(timedelta(hours=1), "CET")
KEY_LABEL = (
    "# DEMO ONLY - authsieve example key. Its public half is published in\n"
    "# examples/maildir/zone.txt and it signs nothing but the demo messages.\n"
    "# Never use it for real mail.\n"
)


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class Key:
    """One demo DKIM/ARC signing key: its domain, selector and algorithm."""

    domain: str
    selector: str
    algorithm: str = "rsa"  # or "ed25519"

    @property
    def stem(self) -> Path:
        return KEYDIR / f"{self.domain}.{self.selector}"

    @property
    def private_path(self) -> Path:
        return self.stem.with_name(
            self.stem.name + (".key" if self.algorithm == "rsa" else ".ed25519")
        )

    @property
    def dns_path(self) -> Path:
        return self.stem.with_name(self.stem.name + ".dns")

    def ensure(self) -> None:
        """Makes the key pair when either half is missing (2048-bit RSA or Ed25519)."""
        if self.private_path.exists() and self.dns_path.exists():
            return
        KEYDIR.mkdir(parents=True, exist_ok=True)
        if self.algorithm == "rsa":
            pem = subprocess.run(
                ["openssl", "genrsa", "2048"], check=True, capture_output=True
            ).stdout
            der_pub = subprocess.run(
                ["openssl", "rsa", "-pubout", "-outform", "DER"],
                input=pem,
                check=True,
                capture_output=True,
            ).stdout
            self.private_path.write_bytes(KEY_LABEL.encode() + pem)
            p = base64.b64encode(der_pub).decode()
            self.dns_path.write_text(f"v=DKIM1; k=rsa; h=sha256; p={p}\n")
        else:
            signing = nacl.signing.SigningKey.generate()
            seed = signing.encode(encoder=nacl.encoding.Base64Encoder).decode()
            pub = signing.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode()
            self.private_path.write_text(KEY_LABEL + seed + "\n")
            self.dns_path.write_text(f"v=DKIM1; k=ed25519; p={pub}\n")

    def private(self) -> bytes:
        """Gives the private key as dkimpy wants it (PEM for RSA, base64 seed for Ed25519)."""
        text = self.private_path.read_bytes()
        if self.algorithm == "rsa":
            return text[text.index(b"-----BEGIN") :]
        return [ln for ln in text.splitlines() if ln and not ln.startswith(b"#")][-1]

    def txt(self) -> str:
        return self.dns_path.read_text().strip()


@contextlib.contextmanager
def signing_clock(when: datetime) -> Iterator[None]:
    """Makes dkimpy write `t=` as the sending time, so that a rerun gives the same bytes."""
    real = time.time
    time.time = lambda: when.timestamp()  # type: ignore[assignment]
    try:
        yield
    finally:
        time.time = real  # type: ignore[assignment]


def dkim_sign(
    message: bytes,
    key: Key,
    when: datetime,
    headers: list[str] | None = None,
    canon: tuple[bytes, bytes] = (b"relaxed", b"relaxed"),
) -> bytes:
    """Gives the message with a DKIM-Signature of `key` prepended (RFC 6376 §5)."""
    algo = b"rsa-sha256" if key.algorithm == "rsa" else b"ed25519-sha256"
    include = [h.encode() for h in headers] if headers else None
    with signing_clock(when):
        sig = dkim.sign(
            message,
            key.selector.encode(),
            key.domain.encode(),
            key.private(),
            canonicalize=canon,
            signature_algorithm=algo,
            include_headers=include,
        )
    return sig + message


def arc_seal(message: bytes, key: Key, authserv_id: str, when: datetime) -> bytes:
    """Gives the message with one ARC set of `key` prepended (RFC 8617 §5.1)."""
    headers = ["from", "to", "cc", "subject", "date", "message-id", "mime-version",
               "content-type", "list-id", "list-post", "list-unsubscribe"]  # fmt: skip
    arc_set = dkim.arc_sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        key.private(),
        authserv_id.encode(),
        include_headers=[h.encode() for h in headers],
        timestamp=int(when.timestamp()),
    )
    if not arc_set:
        raise RuntimeError(f"arc_sign made no ARC set: no AR header of {authserv_id}?")
    return b"".join(arc_set) + message


# ------------------------------------------------------- dates and ids


def postfix_date(dt: datetime) -> str:
    """Postfix's Received date: `Tue,  4 Mar 2025 18:02:13 +0100 (CET)`."""
    return dt.strftime("%a, ") + f"{dt.day:2d}" + dt.strftime(" %b %Y %H:%M:%S %z (%Z)")


def rfc_date(dt: datetime) -> str:
    """RFC 5322 date with a two-digit day: `Tue, 04 Mar 2025 18:02:13 +0100`."""
    return dt.strftime("%a, %d %b %Y %H:%M:%S %z")


def token(seed: str, alphabet: str, length: int) -> str:
    """A deterministic pseudo-random id drawn from `alphabet` (queue ids, LMTP ids)."""
    digest = hashlib.sha256(seed.encode()).digest() * 2
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


B52 = "BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz0123456789"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def postfix_qid(seed: str) -> str:
    """A long Postfix queue id (enable_long_queue_ids = yes), e.g. `4Z7x0d2bYHz9sWn`."""
    return "4Z" + token(seed, B52, 13)


# ---------------------------------------------------- the receiving side


@dataclass(frozen=True)
class Arrival:
    """How a message reached our Postfix: the SMTP client and what Postfix and Dovecot wrote."""

    at: datetime
    mail_from: str
    helo: str
    ip: str
    rdns: str | None
    tls: bool = True
    auth: str | None = None
    amavis: bool = False
    rcpt: str = "alice@family.example"


def postfix_hop(a: Arrival, qid: str) -> str:
    """Our Postfix smtpd's Received header (smtpd_tls_received_header = yes)."""
    addr = f"IPv6:{a.ip}" if ":" in a.ip else a.ip
    lines = [f"Received: from {a.helo} ({a.rdns or 'unknown'} [{addr}])"]
    if a.tls:
        lines += [
            "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
            "\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)",
            "\t(No client certificate requested)",
        ]
    if a.auth:
        lines.append(f"\t(Authenticated sender: {a.auth})")
    proto = ("ESMTPSA" if a.auth else "ESMTPS") if a.tls else "ESMTP"
    lines += [
        f"\tby {MX} (Postfix) with {proto} id {qid}",
        f"\tfor <{a.rcpt}>; {postfix_date(a.at)}",
    ]
    return "\n".join(lines) + "\n"


def deliver(a: Arrival, message: bytes, seed: str) -> bytes:
    """Gives the message as Dovecot LMTP stored it: our hops and Return-Path on top."""
    qid = postfix_qid(seed + "smtpd")
    top = postfix_hop(a, qid)
    later = a.at + timedelta(seconds=1)
    stored = delivered_at(a)
    if a.amavis:
        amavis_id = token(seed + "amavis", B64[:62], 12)
        top = (
            "Received: from localhost (localhost [127.0.0.1])\n"
            f"\tby {MX} (Postfix) with ESMTP id {postfix_qid(seed + 'reinject')}\n"
            f"\tfor <{a.rcpt}>; {postfix_date(later + timedelta(seconds=1))}\n"
            f"X-Virus-Scanned: Debian amavisd-new at {MX}\n"
            f"Received: from {MX} ([127.0.0.1])\n"
            f"\tby localhost ({MX} [127.0.0.1]) (amavisd-new, port 10024)\n"
            f"\twith ESMTP id {amavis_id} for <{a.rcpt}>;\n"
            f"\t{postfix_date(later)}\n"
        ) + top
    lmtp = (
        f"Return-Path: <{a.mail_from}>\n"
        f"Delivered-To: {a.rcpt}\n"
        f"Received: from {MX}\n"
        f"\tby {MX} with LMTP\n"
        f"\tid {token(seed + 'lmtp', B64[:62], 22)}\n"
        f"\t(envelope-from <{a.mail_from}>)\n"
        f"\tfor <{a.rcpt}>; {rfc_date(stored)}\n"
    )
    return crlf(lmtp + top) + message


def delivered_at(a: Arrival) -> datetime:
    """Gives when Dovecot stored the message: a second after Postfix, three with amavis."""
    return a.at + timedelta(seconds=3 if a.amavis else 1)


def crlf(text: str) -> bytes:
    """Gives the text with CRLF line endings (RFC 5322 §2.1)."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


# ------------------------------------------------------------ Maildir


def maildir_name(case: Case, data: bytes, delivered: datetime) -> str:
    """A Dovecot-style Maildir name: `<time>.M<usec>P<pid>.mx,S=<size>,W=<size>[:2,S]`."""
    digest = hashlib.sha256(case.slug.encode()).digest()
    usec = int.from_bytes(digest[:3], "big") % 1_000_000
    pid = 1000 + int.from_bytes(digest[3:5], "big") % 60000
    # The file already has CRLF line ends, so the virtual size W= equals S=.
    name = f"{int(delivered.timestamp())}.M{usec}P{pid}.mx,S={len(data)},W={len(data)}"
    return name if case.folder.endswith("new") else name + ":2,S"


def write_maildir(built: list[tuple[Case, bytes, datetime]]) -> dict[str, str]:
    """Writes a fresh Maildir (cur/ new/ tmp/ and .Junk/); gives slug → relative path."""
    if MAILDIR.exists():
        for sub in ("cur", "new", "tmp", ".Junk"):
            shutil.rmtree(MAILDIR / sub, ignore_errors=True)
    for sub in ("cur", "new", "tmp", ".Junk/cur", ".Junk/new", ".Junk/tmp"):
        (MAILDIR / sub).mkdir(parents=True, exist_ok=True)
    (MAILDIR / ".Junk" / "maildirfolder").write_bytes(b"")  # Dovecot's sub-folder marker
    paths = {}
    for case, data, delivered in built:
        rel = f"{case.folder}/{maildir_name(case, data, delivered)}"
        (MAILDIR / rel).write_bytes(data)
        paths[case.slug] = rel
    for sub in ("cur", "new", "tmp", ".Junk/cur", ".Junk/new", ".Junk/tmp"):
        if not any((MAILDIR / sub).iterdir()):
            # Git keeps no empty directory; Maildir readers skip dot files.
            (MAILDIR / sub / ".keep").write_bytes(b"")
    return paths


# ---------------------------------------------------------------- zone


@dataclass
class Zone:
    """Records for one master file with absolute owner names (RFC 1035 §5)."""

    lines: list[str] = field(default_factory=list)

    def comment(self, text: str) -> None:
        self.lines.append(f"\n; {text}")

    def add(self, owner: str, rtype: str, value: str) -> None:
        if rtype == "TXT":
            value = txt_value(value)
        self.lines.append(f"{owner + '.':<52} 3600 IN {rtype:<5} {value}")

    def ptr(self, ip: str, name: str) -> None:
        self.add(dns.reversename.from_address(ip).to_text().rstrip("."), "PTR", name + ".")

    def text(self) -> str:
        head = (
            "; DNS data for the authsieve demo Maildir (examples/maildir/).\n"
            "; Generated by examples/make_demo.py - edit that file, not this one.\n"
            "; Absolute owner names, many domains in one file: load it with\n"
            ";   dns.zone.from_text(text, origin=dns.name.root, relativize=False,\n"
            ";                      check_origin=False)\n"
            "; or `authsieve --dns-zone examples/maildir/zone.txt`.\n"
            "$TTL 3600\n"
        )
        return head + "\n".join(self.lines).lstrip("\n") + "\n"


def txt_value(value: str) -> str:
    """A TXT rdata with the text cut into quoted chunks of at most 255 octets (RFC 1035 §3.3)."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    quoted = [f'"{c}"' for c in chunks]
    if len(quoted) == 1:
        return quoted[0]
    return "( " + "\n".ljust(70).join(quoted) + " )"


# -------------------------------------------------------------- README


def readme(built: list[tuple[Case, bytes, datetime]], paths: dict[str, str]) -> str:
    """Gives examples/maildir/README.md: what each message shows and its expected results."""
    out = [README_HEAD]
    out.append("| File | SPF | DKIM | ARC | DMARC | Intended verdict |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    for case, _, _ in built:
        e = case.expect
        out.append(
            f"| `{paths[case.slug]}` | {e.spf} | {e.dkim} | {e.arc} | {e.dmarc} | {e.verdict} |"
        )
    out.append("\n## The messages\n")
    for n, (case, _, _) in enumerate(built, 1):
        out.append(f"### {n:02d}. {case.title}\n")
        out.append(f"`{paths[case.slug]}`\n")
        out.append(case.story.strip() + "\n")
    return "\n".join(out)


README_HEAD = """\
# The demo Maildir

alice@family.example's Maildir on `mx.family.example` (203.0.113.25,
2001:db8:25::25; authserv-id `mx.family.example`), as Dovecot LMTP left it
after Postfix accepted each message: `new/` (unread), `cur/` (read) and the
`.Junk/` folder. Every message is real RFC 5322 with CRLF line ends and a
full Received chain: Dovecot's LMTP hop on top, sometimes an amavis
re-injection pair on 127.0.0.1, then our Postfix's hop (the SMTP client that
matters), then the sender side's own hops as their MTAs write them.

`zone.txt` holds every DNS record the checks need (SPF, DKIM keys, DMARC,
PTR, A/AAAA/MX). The keys that signed the messages are demo-only keys in
`../keys/`. All of it is generated by `../make_demo.py`; `../check_demo.py`
recomputes the results below with dnspython, pyspf and dkimpy alone and
fails when any differs.

Try it:

```
python3 examples/make_demo.py      # regenerate (same bytes every time)
python3 examples/check_demo.py     # SPF / DKIM / ARC / DMARC of every message
authsieve check --config examples/config.toml --dns-zone examples/maildir/zone.txt examples/maildir
```

How to read the table:

- **SPF** is pyspf's result for the client of our Postfix hop (IP and HELO)
  and the envelope sender of `Return-Path` (the HELO name when it is `<>`).
  For a message that came through the trusted forwarder relay.uni.example,
  the result for the hop behind it follows after `behind`.
- **DKIM** is one result per DKIM-Signature, top to bottom, as
  `result domain/selector`.
- **ARC** is dkimpy's `arc_verify` chain result.
- **DMARC** is RFC 7489 with relaxed or strict alignment as the record says
  and the organizational domain taken as the last two labels (what the Public
  Suffix List gives for every name used here); `p=` is the policy that
  applies (`sp=` for a subdomain). RFC 9989's DNS tree walk gives the same
  results for every message here: no `_dmarc` record sits at a TLD, and the
  one subdomain that inherits a policy (booking.travel.example) exists, so
  `np=` does not come into play.
- **Intended verdict** is what the demo policy in `../config.toml` files the
  message as; `tests/test_demo.py` checks that `authsieve check` agrees.

## Expected results
"""


# ------------------------------------------------------- message helpers


def rfc5322(head: str, body: str) -> bytes:
    """Gives a message from header text and body text, with CRLF line ends."""
    return crlf(head.strip("\n") + "\n\n" + body.lstrip("\n"))


def prepend(text: str, message: bytes) -> bytes:
    """Gives the message with header lines put on top, as the next hop does."""
    return crlf(text.strip("\n") + "\n") + message


def split(message: bytes) -> tuple[bytes, bytes]:
    head, _, body = message.partition(b"\r\n\r\n")
    return head + b"\r\n", body


def set_subject(message: bytes, subject: str) -> bytes:
    """Gives the message with its Subject replaced (what a list's subject tag does)."""
    head, body = split(message)
    head = re.sub(rb"(?m)^Subject: .*\r\n", f"Subject: {subject}\r\n".encode(), head, count=1)
    return head + b"\r\n" + body


def add_headers(message: bytes, text: str) -> bytes:
    """Gives the message with header lines added below the existing ones."""
    head, body = split(message)
    return head + crlf(text.strip("\n") + "\n") + b"\r\n" + body


def add_footer(message: bytes, text: str) -> bytes:
    """Gives the message with text appended to its body (a disclaimer or list footer)."""
    return message + crlf(text.lstrip("\n"))


TLS13 = (
    "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n"
    "\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n"
    "\t(No client certificate requested)\n"
)


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Expect:
    """What examples/maildir/README.md promises for one message (checked by check_demo.py)."""

    spf: str
    dkim: str
    arc: str
    dmarc: str
    verdict: str


@dataclass(frozen=True)
class Case:
    """One demo message: where it is filed, what it shows, and how it is built."""

    slug: str
    folder: str
    title: str
    story: str
    expect: Expect
    build: Callable[[], tuple[bytes, Arrival]]


CASES: list[Case] = []


def case(
    slug: str, folder: str, title: str, expect: Expect
) -> Callable[[Callable[[], tuple[bytes, Arrival]]], Callable[[], tuple[bytes, Arrival]]]:
    """Registers a message builder; its docstring is the message's story in the README."""

    def register(fn: Callable[[], tuple[bytes, Arrival]]) -> Callable[[], tuple[bytes, Arrival]]:
        CASES.append(Case(slug, folder, title, inspect.cleandoc(fn.__doc__ or ""), expect, fn))
        return fn

    return register


K = {
    "shop-rsa": Key("news.shop.example", "rsa2024"),
    "shop-ed": Key("news.shop.example", "ed2024", "ed25519"),
    "riverside": Key("riverside.example", "2025a"),
    "photo": Key("photo.example", "mail"),
    "lists": Key("lists.example", "lists2025"),
    "cyou": Key("lucky-winner.cyou", "k1"),
    "mailbox": Key("mailbox.example.net", "20230601"),
    "plumbing": Key("plumbing.example", "selector1"),
    "frank": Key("frank.example", "default"),
    "esp": Key("esp-mailer.example", "esp1"),
    "school": Key("school.example", "sch2025"),
    "coupons": Key("coupons.example", "old"),
}


def at(day: int, hh: int, mm: int, ss: int, tz: timezone = CET) -> datetime:
    return datetime(2025, 3, day, hh, mm, ss, tzinfo=tz)


PST = timezone(timedelta(hours=-8), "PST")


@case(
    "newsletter",
    "new",
    "Newsletter with two DKIM signatures (RSA and Ed25519)",
    Expect(
        "pass",
        "pass news.shop.example/ed2024, pass news.shop.example/rsa2024",
        "none",
        "pass (p=reject)",
        "inbox",
    ),
)
def newsletter() -> tuple[bytes, Arrival]:
    """
    A newsletter from news.shop.example sent through the mailing service
    mailhaus.example. The envelope sender is a VERP bounce address under
    bounces.news.shop.example, whose SPF record reaches the service's
    addresses through two `include:` levels
    (`bounces.news.shop.example` → `_spf.shop.example` → `spf.mailhaus.example`).
    It carries two DKIM signatures of the same domain, an Ed25519 one on top
    of an RSA one (RFC 8463 dual signing), both aligned with the From domain.
    Our side passed it through amavis (the 127.0.0.1 re-injection pair).
    """
    t = at(12, 7, 30, 4)
    sent = t.astimezone(UTC) - timedelta(seconds=3)
    msg = rfc5322(
        f"""
Received: from app-3.mailhaus.example (app-3.mailhaus.example [198.51.100.34])
\tby o40.out.mailhaus.example (Postfix) with ESMTP id {postfix_qid("nl-esp")}
\tfor <alice@family.example>; {postfix_date(sent)}
From: Shop Example <news@news.shop.example>
To: alice@family.example
Subject: Spring sale: 20% off garden tools this week
Date: {rfc_date(sent - timedelta(seconds=2))}
Message-ID: <20250312063001.7f3a2c91e4@news.shop.example>
MIME-Version: 1.0
List-Unsubscribe: <https://news.shop.example/u/7f3a2c91e4>,
 <mailto:unsubscribe-7f3a2c91e4@news.shop.example>
List-Unsubscribe-Post: List-Unsubscribe=One-Click
Feedback-ID: spring25:newsletter:mailhaus
Content-Type: multipart/alternative; boundary="=_b7f3a2c91e4"
""",
        """
--=_b7f3a2c91e4
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

Hello Alice,

Spring is here: 20% off all garden tools until Sunday.
Use code SPRING25 at checkout.

https://news.shop.example/c/7f3a2c91e4/spring

Unsubscribe: https://news.shop.example/u/7f3a2c91e4

--=_b7f3a2c91e4
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 7bit

<html><body><p>Hello Alice,</p>
<p>Spring is here: <b>20% off all garden tools</b> until Sunday.
Use code <b>SPRING25</b> at checkout.</p>
<p><a href="https://news.shop.example/c/7f3a2c91e4/spring">Shop the sale</a></p>
<p><small><a href="https://news.shop.example/u/7f3a2c91e4">Unsubscribe</a></small></p>
</body></html>

--=_b7f3a2c91e4--
""",
    )
    msg = dkim_sign(msg, K["shop-rsa"], sent)
    msg = dkim_sign(msg, K["shop-ed"], sent)
    return msg, Arrival(
        t,
        "bounce+7f3a2c91e4-alice=family.example@bounces.news.shop.example",
        "o40.out.mailhaus.example",
        "198.51.100.40",
        "o40.out.mailhaus.example",
        amavis=True,
    )


@case(
    "phish-bank",
    "new",
    "Phish from a spoofed bank.example (SPF fail, DMARC p=reject, forged Received)",
    Expect("fail", "none", "none", "fail (p=reject)", "quarantine"),
)
def phish_bank() -> tuple[bytes, Arrival]:
    """
    A phish claiming to come from security@bank.example, sent from
    192.0.2.66, a host without reverse DNS that says `HELO mail.bank.example`.
    bank.example allows only its own network (`-all`) and publishes DMARC
    `p=reject` with strict alignment, so SPF fails, there is no DKIM, and DMARC
    fails under p=reject. The sender wrote a forged
    `Received: from mx1.bank.example … [203.0.113.130]` below the real hop to
    look legitimate: the trust path stops at our Postfix hop and never reads
    it (checking 203.0.113.130 would have given SPF pass).
    """
    t = at(11, 3, 17, 42)
    msg = rfc5322(
        f"""
Received: from mx1.bank.example (mx1.bank.example [203.0.113.130])
\tby smtp.bank.example (Postfix) with ESMTPS id {postfix_qid("phish-forged")}
\tfor <alice@family.example>; {postfix_date(t.astimezone(UTC) - timedelta(seconds=11))}
From: "Bank Example Security" <security@bank.example>
Reply-To: <verify@bank-example-verify.example.net>
To: <alice@family.example>
Subject: Action required: unusual sign-in to your account
Date: {rfc_date(t - timedelta(seconds=13))}
Message-ID: <1741659449.4471@bank.example>
MIME-Version: 1.0
X-Mailer: Microsoft Outlook 16.0
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 8bit
""",
        """
Dear customer,

We detected an unusual sign-in to your online banking from a new device.
For your security, your account access has been limited.

Please confirm your identity within 24 hours to avoid suspension:

    https://bank-example-verify.example.net/login?ref=8812

Thank you,
Bank Example Security Team
""",
    )
    return msg, Arrival(
        t, "security@bank.example", "mail.bank.example", "192.0.2.66", None, tls=False
    )


@case(
    "softfail-chess",
    "cur",
    "Club mail from a host its SPF record does not list yet (softfail, Courier)",
    Expect("softfail", "none", "none", "fail (p=none)", "inbox"),
)
def softfail_chess() -> tuple[bytes, Arrival]:
    """
    The chess club moved its mail to a new host (mail.clubhost.example,
    198.51.100.71, running Courier) but its SPF record still lists only the old
    one and ends in `~all`: SPF softfail. Unsigned, so DMARC fails, but the
    club publishes `p=none`: a monitoring-only policy, so the message stays in
    the inbox with the results recorded. Below our hop, Courier's own hop shows
    the secretary's authenticated submission (`AUTH: PLAIN …`, an IPv4-mapped
    address) - not ours, so not a reason to trust it.
    """
    t = at(4, 18, 2, 13)
    msg = rfc5322(
        f"""
Received: from [192.0.2.15] (pool-192-0-2-15.dsl.isp.example [::ffff:192.0.2.15])
  (AUTH: PLAIN secretary@chess-club.example, TLS: TLSv1.3,256bits,TLS_AES_256_GCM_SHA384)
  by mail.clubhost.example with ESMTPSA; {rfc_date(t - timedelta(seconds=9))}
  id 0000000000A1B2C3.0000000067C731EB.00002F1A
Message-ID: <b2c4e6f8-1a3c-4e5f-8a9b-0c1d2e3f4a5b@chess-club.example>
Date: {rfc_date(t - timedelta(seconds=15))}
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
Content-Language: en-GB
To: Alice <alice@family.example>
From: Chess Club Secretary <secretary@chess-club.example>
Subject: Tournament on Saturday moved to 10:00
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit
""",
        """
Hi Alice,

the spring tournament on Saturday starts at 10:00 instead of 9:00 -
the hall is booked for a yoga class until then. Pairings are on the
club website as usual.

See you there,
Maria
--
Chess Club Example, secretary
""",
    )
    return msg, Arrival(
        t, "secretary@chess-club.example", "mail.clubhost.example", "198.51.100.71",
        "mail.clubhost.example",
    )  # fmt: skip


@case(
    "spf-none-grandpa",
    "cur",
    "A self-hosted domain with no SPF, DKIM or DMARC at all (OpenSMTPD)",
    Expect("none", "none", "none", "none", "inbox"),
)
def spf_none_grandpa() -> tuple[bytes, Arrival]:
    """
    Grandpa runs OpenSMTPD on his own server and never published SPF or DMARC
    for grandpa.example, nor signs with DKIM: every result is `none`. There is
    nothing to fail, so the message goes to the inbox; a strict policy
    ("SPF none → junk") would show up in `authsieve report` as a change here.
    OpenSMTPD's own hop (`… (OpenSMTPD) with ESMTPSA id … auth=yes user=joe`)
    sits below ours.
    """
    t = at(2, 11, 5, 2)
    msg = rfc5322(
        f"""
Received: from laptop.home (pool-198-51-100-9.dsl.isp.example [198.51.100.9])
\tby mail.grandpa.example (OpenSMTPD) with ESMTPSA id 5e1c9a2f (TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO) auth=yes user=joe
\tfor <alice@family.example>;
\t{postfix_date(t - timedelta(seconds=3))}
Date: {rfc_date(t - timedelta(seconds=4))}
From: Grandpa Joe <joe@grandpa.example>
To: Alice <alice@family.example>
Subject: Photos from the garden
Message-ID: <Z8QtNq1lR0m5dXJk@laptop.home>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Disposition: inline
User-Agent: NeoMutt/20231103
""",
        """
Hi Alice,

the first tulips are out! I put the photos on the usual share:
https://grandpa.example/photos/2025-03/

Tell Bob the apple tree survived the winter after all.

Love,
Grandpa
""",
    )
    return msg, Arrival(
        t, "joe@grandpa.example", "mail.grandpa.example", "203.0.113.88", "mail.grandpa.example"
    )


@case(
    "dkim-body-modified",
    "cur",
    "DKIM broken by a footer added after signing, rescued by aligned SPF (Exim)",
    Expect("pass", "fail riverside.example/2025a", "none", "pass (p=quarantine)", "inbox"),
)
def dkim_body_modified() -> tuple[bytes, Arrival]:
    """
    Carol's Exim server (mail.riverside.example) signs with DKIM, then hands
    the message to the outbound gateway gw.riverside.example, which appends a
    legal disclaimer to the body. The body hash no longer matches: DKIM fail.
    The gateway's address is in riverside.example's SPF record, and the
    envelope sender's domain is the From domain, so SPF passes aligned and
    DMARC passes (p=quarantine is not applied). Both sender-side hops are
    Exim's (`with esmtpsa (TLS1.3) tls … (Exim 4.97) (envelope-from <…>) id …`).
    """
    t = at(5, 9, 12, 44)
    msg = rfc5322(
        f"""
Received: from pool-198-51-100-14.cable.example ([198.51.100.14] helo=[198.51.100.14])
\tby mail.riverside.example with esmtpsa  (TLS1.3) tls TLS_AES_128_GCM_SHA256
\t(Exim 4.97)
\t(envelope-from <carol@riverside.example>)
\tid 1tpYk2-0004Qx-1c
\tfor alice@family.example;
\t{rfc_date(t - timedelta(seconds=5))}
Message-ID: <e7d3f1a2-5b6c-4d8e-9f0a-1b2c3d4e5f60@riverside.example>
Date: {rfc_date(t - timedelta(seconds=6))}
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
From: Carol Example <carol@riverside.example>
To: Alice <alice@family.example>
Subject: Regatta volunteers
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit
""",
        """
Hi Alice,

thanks for offering to help at the regatta on 12 April. Could you take
the registration desk from 8:00 to 11:00? Coffee is on us.

Carol
""",
    )
    msg = dkim_sign(msg, K["riverside"], t - timedelta(seconds=5))
    msg = prepend(
        f"""
Received: from mail.riverside.example ([192.0.2.44])
\tby gw.riverside.example with esmtps  (TLS1.3) tls TLS_AES_256_GCM_SHA384
\t(Exim 4.97)
\t(envelope-from <carol@riverside.example>)
\tid 1tpYk3-0007Ab-0T
\tfor alice@family.example;
\t{rfc_date(t - timedelta(seconds=3))}
""",
        msg,
    )
    msg = add_footer(
        msg,
        """
--
Riverside Rowing Club e.V. - registered association VR 1234, Riverside.
This e-mail is confidential. If you received it in error, please delete it.
""",
    )
    return msg, Arrival(
        t, "carol@riverside.example", "gw.riverside.example", "192.0.2.45", "gw.riverside.example"
    )


@case(
    "list-arc",
    "cur",
    "Mailing list forward: SPF and DKIM broken, ARC-sealed by lists.example",
    Expect(
        "fail",
        "pass lists.example/lists2025, fail photo.example/mail",
        "pass",
        "fail (p=reject)",
        "inbox (ARC from lists.example)",
    ),
)
def list_arc() -> tuple[bytes, Arrival]:
    """
    Dave (photo.example, `p=reject`) wrote to the photo club list at
    lists.example. The list server checked him on arrival (spf=pass,
    dkim=pass, dmarc=pass, in its own Authentication-Results), tagged the
    Subject with `[Photo Club]`, added List-* headers and a footer, and sent it
    on keeping Dave's envelope sender. At our server SPF for photo.example fails
    (lists.example is not in it), Dave's DKIM signature fails (Subject and body
    changed) and the list's own DKIM signature passes but is not aligned:
    DMARC fails under p=reject. The list sealed its findings with ARC
    (`ARC-Seal` i=1, cv=none), and the chain validates: a policy that trusts
    lists.example as an ARC sealer delivers it to the inbox.
    """
    t = at(8, 20, 44, 15)
    sent = t - timedelta(seconds=8)
    msg = rfc5322(
        f"""
Received: from [192.0.2.91] (unknown [192.0.2.91])
{TLS13}\t(Authenticated sender: dave@photo.example)
\tby mail.photo.example (Postfix) with ESMTPSA id {postfix_qid("list-sub")}
\tfor <photo-club@lists.example>; {postfix_date(sent)}
Message-ID: <3b1e5c0a-9f2d-4c8e-b1a7-2d6e0c9f4a11@photo.example>
Date: {rfc_date(sent - timedelta(seconds=3))}
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
From: Dave Example <dave@photo.example>
To: photo-club@lists.example
Subject: Sunday walk: meeting point changed
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit
""",
        """
Hi all,

the footbridge by the old mill is closed, so for Sunday's walk we meet
at the car park on Church Lane instead, 9:30 as planned. Bring the long
lenses - the herons are back.

Dave
""",
    )
    msg = dkim_sign(msg, K["photo"], sent)
    b_tag = re.search(rb"\bb=([A-Za-z0-9+/]{8})", msg.split(b"bh=", 1)[1]).group(1).decode()
    msg = prepend(
        f"""
Authentication-Results: lists.example;
\tdkim=pass (2048-bit key) header.d=photo.example header.i=@photo.example header.b={b_tag};
\tspf=pass smtp.mailfrom=dave@photo.example;
\tdmarc=pass (p=reject dis=none) header.from=photo.example
Received: from mail.photo.example (mail.photo.example [198.51.100.90])
{TLS13}\tby mx.lists.example (Postfix) with ESMTPS id {postfix_qid("list-in")}
\tfor <photo-club@lists.example>; {postfix_date(sent + timedelta(seconds=1))}
""",
        msg,
    )
    msg = set_subject(msg, "[Photo Club] Sunday walk: meeting point changed")
    msg = add_headers(
        msg,
        """
List-Id: Photo Club <photo-club.lists.example>
List-Post: <mailto:photo-club@lists.example>
List-Unsubscribe: <mailto:photo-club-leave@lists.example>
List-Archive: <https://lists.example/archives/photo-club/>
Precedence: list
""",
    )
    msg = add_footer(
        msg,
        """
_______________________________________________
Photo Club mailing list -- photo-club@lists.example
To unsubscribe send an email to photo-club-leave@lists.example
""",
    )
    msg = prepend(
        f"""
Received: from mx.lists.example (localhost [127.0.0.1])
\tby mx.lists.example (Postfix) with ESMTP id {postfix_qid("list-out")}
\tfor <alice@family.example>; {postfix_date(t - timedelta(seconds=3))}
""",
        msg,
    )
    msg = arc_seal(msg, K["lists"], "lists.example", t - timedelta(seconds=2))
    msg = dkim_sign(msg, K["lists"], t - timedelta(seconds=2))
    return msg, Arrival(
        t, "dave@photo.example", "mx.lists.example", "203.0.113.150", "mx.lists.example"
    )


@case(
    "cyou-spam",
    "new",
    "Spam from a .cyou domain that passes SPF, DKIM and DMARC (qmail)",
    Expect(
        "pass", "pass lucky-winner.cyou/k1", "none", "pass (p=none)", "junk (blocked suffix .cyou)"
    ),
)
def cyou_spam() -> tuple[bytes, Arrival]:
    """
    Bulk spam from lucky-winner.cyou. Spammers set up their authentication
    properly: SPF pass, DKIM pass, DMARC pass. Only the blocked-suffix rule
    (`.cyou` in `blocked_domain_suffixes`) files it into Junk. The sender side
    is qmail (`(qmail N invoked from network)` and
    `from unknown (HELO localhost) (127.0.0.1) by … with SMTP`); our hop is
    plain ESMTP without TLS.
    """
    t = at(6, 2, 13, 58)
    sent = t.astimezone(UTC) - timedelta(seconds=4)
    subject = "=?UTF-8?B?8J+OgSBDb25ncmF0dWxhdGlvbnMhIFlvdSBoYXZlIGJlZW4gc2VsZWN0ZWQ=?="
    msg = rfc5322(
        f"""
Received: (qmail 7234 invoked from network); {sent.day} Mar 2025 {sent:%H:%M:%S} -0000
Received: from unknown (HELO localhost) (127.0.0.1)
  by mta2.lucky-winner.cyou with SMTP; {sent.day} Mar 2025 {sent:%H:%M:%S} -0000
From: "Lucky Winner Team" <promo@lucky-winner.cyou>
To: alice@family.example
Subject: {subject}
Date: {rfc_date(sent)}
Message-ID: <20250306011354.48213.qmail@mta2.lucky-winner.cyou>
MIME-Version: 1.0
Content-Type: text/html; charset=UTF-8
Content-Transfer-Encoding: 7bit
""",
        """
<html><body>
<h2>Congratulations, alice!</h2>
<p>You have been selected to receive a <b>brand-new smartphone</b> for just 1 EUR.</p>
<p>Only 3 left - <a href="https://claim.lucky-winner.cyou/r/a1f9">claim yours now</a>.</p>
<p><small>To stop receiving these offers <a href="https://lucky-winner.cyou/u">click here</a>.</small></p>
</body></html>
""",
    )
    msg = dkim_sign(msg, K["cyou"], sent)
    return msg, Arrival(
        t, "bounce@lucky-winner.cyou", "mta2.lucky-winner.cyou", "198.51.100.201",
        "mta2.lucky-winner.cyou", tls=False,
    )  # fmt: skip


@case(
    "ipv6-freemail",
    "cur",
    "A friend's reply from a large free-mail provider over IPv6 (Gmail-style)",
    Expect("pass", "pass mailbox.example.net/20230601", "none", "pass (p=none)", "inbox"),
)
def ipv6_freemail() -> tuple[bytes, Arrival]:
    """
    Erin writes from mailbox.example.net, a Gmail-like provider that reached
    our server over IPv6 (`[IPv6:2001:db8:4860:4864:20::32e]`). SPF passes
    through `include:_netblocks.mailbox.example.net` and its `ip6:` range,
    the provider's DKIM signature passes, and DMARC passes. The provider's own
    hop is Gmail's `Received: by <host> with SMTP id …` with an `X-Received`.
    """
    t = at(7, 16, 41, 25)
    sent = t.astimezone(PST) - timedelta(seconds=3)
    msg = rfc5322(
        f"""
X-Received: by 2001:db8:4860:a0c::11 with SMTP id 5b1f17b1804b1-43bd0f3c8b1mr4521975e9.9.1741362081321;
        {rfc_date(sent)} (PST)
MIME-Version: 1.0
From: Erin Example <erin@mailbox.example.net>
Date: Fri, 7 Mar 2025 16:41:09 +0100
Message-ID: <CAHx7Zq0pX4f2kVbQm3Ju7s9b1Rk8Lw=E5tN@mail.mailbox.example.net>
Subject: Re: Easter plans
To: Alice <alice@family.example>
In-Reply-To: <8a1d2e3f-4b5c-6d7e-8f90-a1b2c3d4e5f6@family.example>
References: <8a1d2e3f-4b5c-6d7e-8f90-a1b2c3d4e5f6@family.example>
Content-Type: multipart/alternative; boundary="000000000000a1b2c3d4e5f60718"
""",
        """
--000000000000a1b2c3d4e5f60718
Content-Type: text/plain; charset="UTF-8"

Sounds great, we'll bring the kids and a cake. Saturday around 3?

Erin

--000000000000a1b2c3d4e5f60718
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">Sounds great, we&#39;ll bring the kids and a cake. Saturday around 3?<div><br></div><div>Erin</div></div>

--000000000000a1b2c3d4e5f60718--
""",
    )
    headers = ["to", "subject", "message-id", "date", "from", "mime-version", "from"]
    msg = dkim_sign(msg, K["mailbox"], sent, headers=headers)
    msg = prepend(
        f"""
Received: by mail-wm1-x32e.mailbox.example.net with SMTP id 5b1f17b1804b1-43bd0f3c8b1so12345675e9.0
        for <alice@family.example>; {rfc_date(sent)} (PST)
""",
        msg,
    )
    return msg, Arrival(
        t, "erin@mailbox.example.net", "mail-wm1-x32e.mailbox.example.net",
        "2001:db8:4860:4864:20::32e", "mail-wm1-x32e.mailbox.example.net",
    )  # fmt: skip


@case(
    "null-sender-bounce",
    "new",
    "A bounce with a null envelope sender: SPF checks the HELO name",
    Expect("pass", "none", "none", "pass (p=none)", "inbox"),
)
def null_sender_bounce() -> tuple[bytes, Arrival]:
    """
    Alice mistyped an address at isp.example; the ISP's Postfix bounced it.
    Bounces have an empty envelope sender (`Return-Path: <>`), so SPF checks
    the HELO identity `smtp.isp.example` (RFC 7208 §2.3), which publishes
    `v=spf1 a -all`: pass. DMARC uses that HELO result for alignment; the From
    domain is the same host name, so DMARC passes under isp.example's
    `p=none`. The returned headers inside the body mention our own Postfix;
    they are body text and play no part in the trust path.
    """
    t = at(10, 12, 5, 34)
    qid = postfix_qid("bounce-isp")
    boundary = f"{qid}.1741604731/smtp.isp.example"
    msg = rfc5322(
        f"""
Received: by smtp.isp.example (Postfix)
\tid {qid}; {postfix_date(t - timedelta(seconds=3))}
Date: {postfix_date(t - timedelta(seconds=3))}
From: MAILER-DAEMON@smtp.isp.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: alice@family.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Content-Transfer-Encoding: 8bit
Message-Id: <20250310110531.{qid}@smtp.isp.example>
""",
        f"""
This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host smtp.isp.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<jo.smith@isp.example>: host mbox.isp.example[192.0.2.121] said: 550 5.1.1
    <jo.smith@isp.example>: Recipient address rejected: User unknown in
    virtual mailbox table (in reply to RCPT TO command)

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; smtp.isp.example
X-Postfix-Queue-ID: {qid}
X-Postfix-Sender: rfc822; alice@family.example
Arrival-Date: {postfix_date(t - timedelta(seconds=5))}

Final-Recipient: rfc822; jo.smith@isp.example
Original-Recipient: rfc822;jo.smith@isp.example
Action: failed
Status: 5.1.1
Remote-MTA: dns; mbox.isp.example
Diagnostic-Code: smtp; 550 5.1.1 <jo.smith@isp.example>: Recipient address
    rejected: User unknown in virtual mailbox table

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <alice@family.example>
Received: from mx.family.example (mx.family.example [203.0.113.25])
\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
\t(No client certificate requested)
\tby smtp.isp.example (Postfix) with ESMTPS id 4Z8kQw0Hq1z3yVb
\tfor <jo.smith@isp.example>; {postfix_date(t - timedelta(seconds=5))}
Message-ID: <0c9e7b55-3d2a-4f1e-9b8c-7a6d5e4f3a2b@family.example>
Date: {rfc_date(t - timedelta(seconds=8))}
From: Alice <alice@family.example>
To: jo.smith@isp.example
Subject: Lift to the match on Sunday

--{boundary}--
""",
    )
    return msg, Arrival(t, "", "smtp.isp.example", "192.0.2.120", "smtp.isp.example")


@case(
    "bob-submission",
    "cur",
    "Bob's own mail, submitted with SMTP AUTH from his home connection",
    Expect("fail", "none", "none", "fail (p=quarantine)", "inbox (authenticated submission)"),
)
def bob_submission() -> tuple[bytes, Arrival]:
    """
    Bob wrote to Alice from his laptop at home, submitting to our own Postfix
    with SMTP AUTH: the hop says `with ESMTPSA` and
    `(Authenticated sender: bob@family.example)`. Checked like a stranger,
    family.example's `v=spf1 mx -all` would fail for his home address
    198.51.100.23 and DMARC would fail under p=quarantine; the trust path
    recognises our own authenticated user instead and does not judge the
    message by SPF.
    """
    t = at(9, 17, 20, 8)
    msg = rfc5322(
        f"""
Message-ID: <5d6e7f80-91a2-4b3c-8d4e-5f6a7b8c9d0e@family.example>
Date: {rfc_date(t - timedelta(seconds=2))}
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
Content-Language: en-GB
To: Alice <alice@family.example>
From: Bob <bob@family.example>
Subject: Dinner tonight?
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit
""",
        """
Shall I pick up something from the Thai place on the way home?
Usual order otherwise.

Bob
""",
    )
    return msg, Arrival(
        t, "bob@family.example", "[198.51.100.23]", "198.51.100.23",
        "dyn-198-51-100-23.cable.example", auth="bob@family.example",
    )  # fmt: skip


@case(
    "uni-forward",
    "cur",
    "Forwarded by the trusted university relay (Sendmail), SPF judged behind it",
    Expect(
        "fail; behind relay.uni.example: pass",
        "none",
        "none",
        "fail (p=quarantine); behind relay.uni.example: pass (p=quarantine)",
        "inbox (trusted forwarder)",
    ),
)
def uni_forward() -> tuple[bytes, Arrival]:
    """
    The rowing club's treasurer wrote to Alice's old university address;
    relay.uni.example (Sendmail) forwards it to family.example unchanged,
    keeping the envelope sender. Checked at our hop, SPF for
    rowing-club.example fails (the relay is not in its `-all` record) and,
    with no DKIM, DMARC fails under p=quarantine. relay.uni.example is in
    `trusted_forwarders`, so the trust path steps over it and reads the
    Sendmail hop below (`by relay.uni.example (8.17.1/8.17.1) with ESMTPS id …`):
    the club's own server 192.0.2.77 passes SPF and DMARC passes. The club's
    webmail hands mail to Postfix locally (`(Postfix, from userid 33)`).
    """
    t = at(7, 16, 17, 55)
    msg = rfc5322(
        f"""
Received: by mail.rowing-club.example (Postfix, from userid 33)
\tid 7C2E41A0F3; {postfix_date(t - timedelta(seconds=6))}
To: alice@uni.example
Subject: Membership fee 2025 - reminder
From: Rowing Club Treasurer <treasurer@rowing-club.example>
Date: {rfc_date(t - timedelta(seconds=6))}
Message-ID: <6f1c0e9d2b4a8c7e5d3f1a0b9c8d7e6f@rowing-club.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=US-ASCII; format=flowed
Content-Transfer-Encoding: 7bit
User-Agent: Roundcube Webmail/1.6.9
""",
        """
Dear Alice,

a friendly reminder that the 2025 membership fee of 60 EUR is due by
31 March. Bank details are on the club website; please use your member
number as reference.

Best regards,
Tom (treasurer)
""",
    )
    msg = prepend(
        """
Received: from mail.rowing-club.example (mail.rowing-club.example [192.0.2.77])
\tby relay.uni.example (8.17.1/8.17.1) with ESMTPS id 527FHq3a012345
\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT)
\tfor <alice@uni.example>; Fri, 7 Mar 2025 16:17:52 +0100
""",
        msg,
    )
    return msg, Arrival(
        t,
        "treasurer@rowing-club.example",
        "relay.uni.example",
        "198.51.100.60",
        "relay.uni.example",
    )


@case(
    "o365-invoice",
    "cur",
    "An invoice sent through a hosted Exchange service (Office 365-style)",
    Expect("pass", "pass plumbing.example/selector1", "none", "pass (p=quarantine)", "inbox"),
)
def o365_invoice() -> tuple[bytes, Arrival]:
    """
    The plumber's invoice, sent from a hosted Exchange tenant: Exchange's
    `with mapi` and `with Microsoft SMTP Server (version=TLS1_2, …)` hops, then
    the service's outbound host. SPF passes through
    `include:spf.protection.mail365.example`. The DKIM key is found the
    Office 365 way: `selector1._domainkey.plumbing.example` is a CNAME to a
    record in the service's zone. DMARC passes.
    """
    t = at(10, 9, 30, 14)
    sent = t.astimezone(UTC) - timedelta(seconds=4)
    host_a = "DB9PR03MB7321.eurprd03.prod.mail365.example"
    host_b = "AM0PR03MB6324.eurprd03.prod.mail365.example"
    msg = rfc5322(
        f"""
Received: from {host_a} (2001:db8:10a6:10:3a::17) by
 {host_b} (2001:db8:10a6:208:15c::22) with Microsoft SMTP Server
 (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.8511.20;
 {rfc_date(sent)}
Received: from {host_a} ([2001:db8:10a6:10:3a::17]) by {host_a}
 ([2001:db8:10a6:10:3a::17%5]) with mapi id 15.20.8511.019; {rfc_date(sent - timedelta(seconds=1))}
From: Plumbing Example Ltd <accounts@plumbing.example>
To: "alice@family.example" <alice@family.example>
Subject: Invoice INV-2025-0314 for your boiler service
Thread-Topic: Invoice INV-2025-0314 for your boiler service
Thread-Index: AQHbkZ3xY2u7bXh3Q0mE1m2xK7v9Ug==
Date: {rfc_date(sent - timedelta(seconds=1))}
Message-ID: <DB9PR03MB73218C1F2A4E5B6D7C8E9F0AB1C2D3E4@{host_a}>
Accept-Language: en-GB, en-US
Content-Language: en-GB
X-MS-Has-Attach:
X-MS-TNEF-Correlator:
x-ms-exchange-senderadcheck: 1
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable
MIME-Version: 1.0
X-OriginatorOrg: plumbing.example
""",
        """
Dear Ms Example,

Please find below the invoice for the annual boiler service on 6 March.

Invoice: INV-2025-0314
Amount due: 145.00 EUR (incl. VAT)
Due date: 24 March 2025

Payment by bank transfer to the account on our website, quoting the
invoice number.

Kind regards,
Accounts team
Plumbing Example Ltd
""",
    )
    headers = ["From", "Date", "Subject", "Message-ID", "Content-Type", "MIME-Version",
               "X-MS-Exchange-SenderADCheck"]  # fmt: skip
    msg = dkim_sign(msg, K["plumbing"], sent, headers=headers)
    return msg, Arrival(
        t, "accounts@plumbing.example", "EUR03-DB5-obe.outbound.protection.mail365.example",
        "198.51.100.101", "mail-db5eur03on2101.outbound.protection.mail365.example",
    )  # fmt: skip


@case(
    "postfix-submission-frank",
    "cur",
    "A friend's self-hosted Postfix with SMTP AUTH on his side (strict DMARC)",
    Expect("pass", "pass frank.example/default", "none", "pass (p=reject)", "inbox"),
)
def postfix_submission_frank() -> tuple[bytes, Arrival]:
    """
    Frank submits from his phone over IPv6 to his own Postfix with SMTP AUTH
    (`with ESMTPSA`, `(Authenticated sender: frank@frank.example)`) - an
    authenticated hop, but on *his* server, below ours: it says nothing about
    our users and the trust path never gets there. His server signs with
    OpenDKIM and frank.example publishes strict DMARC (`adkim=s; aspf=s;
    p=reject`): SPF, DKIM and DMARC pass. Our side ran it through amavis.
    """
    t = at(6, 21, 8, 37)
    sent = t - timedelta(seconds=4)
    msg = rfc5322(
        f"""
Received: from [IPv6:2001:db8:f00d::17] (unknown [IPv6:2001:db8:f00d::17])
{TLS13}\t(Authenticated sender: frank@frank.example)
\tby mail.frank.example (Postfix) with ESMTPSA id {postfix_qid("frank-sub")}
\tfor <alice@family.example>; {postfix_date(sent)}
Message-ID: <a9b8c7d6-e5f4-4a3b-9c2d-1e0f9a8b7c6d@frank.example>
Date: {rfc_date(sent - timedelta(seconds=2))}
MIME-Version: 1.0
User-Agent: K-9 Mail for Android
From: Frank Example <frank@frank.example>
To: Alice <alice@family.example>
Subject: Bike tour in May - dates?
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 7bit
""",
        """
Hi Alice,

are you and Bob still up for the lake tour? I could do 10-11 May or
24-25 May. I'll book the guest house once we agree.

Frank
""",
    )
    msg = dkim_sign(msg, K["frank"], sent, canon=(b"relaxed", b"simple"))
    return msg, Arrival(
        t, "frank@frank.example", "mail.frank.example", "192.0.2.50", "mail.frank.example",
        amavis=True,
    )  # fmt: skip


@case(
    "subdomain-sp-quarantine",
    "new",
    "Booking mail from a subdomain sent unaligned through an ESP (DMARC sp=quarantine)",
    Expect(
        "pass",
        "pass esp-mailer.example/esp1",
        "none",
        "fail (p=quarantine)",
        "quarantine",
    ),
)
def subdomain_sp_quarantine() -> tuple[bytes, Arrival]:
    """
    A booking confirmation From no-reply@booking.travel.example, sent through
    the email service esp-mailer.example with the service's own bounce
    address and DKIM signature. SPF passes and DKIM passes - but both for
    esp-mailer.example, not aligned with the From domain. booking.travel.example
    has no DMARC record of its own, so the organizational domain's record
    applies, and for subdomains it says `sp=quarantine` (while travel.example
    itself is `p=reject`): DMARC fails with policy quarantine.
    """
    t = at(3, 14, 52, 9)
    sent = t.astimezone(UTC) - timedelta(seconds=2)
    msg = rfc5322(
        f"""
Received: from api-worker-12.esp-mailer.example (api-worker-12.esp-mailer.example [198.51.100.185])
\tby o180.esp-mailer.example (Postfix) with ESMTP id {postfix_qid("esp-in")}
\tfor <alice@family.example>; {postfix_date(sent)}
From: Travel Example Bookings <no-reply@booking.travel.example>
To: alice@family.example
Subject: Your booking TX-48213 is confirmed: Lisbon, 18-22 April
Date: {rfc_date(sent - timedelta(seconds=1))}
Message-ID: <0100019572a1b2c3-48213-alice@esp-mailer.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 7bit
X-ESP-Campaign: transactional-booking
""",
        """
Hello Alice,

your booking TX-48213 is confirmed.

  Hotel Example Lisboa, 18-22 April 2025, 2 adults
  Total paid: 612.00 EUR

Manage your booking: https://booking.travel.example/b/TX-48213

Have a good trip!
Travel Example
""",
    )
    msg = dkim_sign(msg, K["esp"], sent)
    return msg, Arrival(
        t, "bounces+48213-alice=family.example@esp-mailer.example", "o180.esp-mailer.example",
        "198.51.100.180", "o180.esp-mailer.example",
    )  # fmt: skip


@case(
    "spf-neutral-school",
    "cur",
    "School newsletter from its web server: SPF neutral (?all), DKIM saves it",
    Expect("neutral", "pass school.example/sch2025", "none", "pass (p=none)", "inbox"),
)
def spf_neutral_school() -> tuple[bytes, Arrival]:
    """
    The school's web server sends the newsletter itself (PHPMailer → the local
    Postfix, `(Postfix, from userid 33)`). Its address is not in school.example's
    SPF record, which ends in `?all`: SPF neutral, which DMARC treats like no
    pass. The web server signs with the school's DKIM key, so DMARC passes
    through DKIM alone.
    """
    t = at(5, 15, 0, 6)
    msg = rfc5322(
        f"""
Received: by web.school.example (Postfix, from userid 33)
\tid 2B1F43E0A7; {postfix_date(t - timedelta(seconds=4))}
To: alice@family.example
Subject: Parents' evening on 20 March
Date: {rfc_date(t - timedelta(seconds=4))}
From: School Example Office <office@school.example>
Message-ID: <Zq3fK9x2LmP0vT7wYb1c@web.school.example>
X-Mailer: PHPMailer 6.9.1
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit
""",
        """
Dear parents,

parents' evening for years 3 and 4 takes place on Thursday, 20 March,
from 17:00 to 20:00. Please book a slot with your child's teacher:
https://school.example/parents-evening

School Example office
""",
    )
    msg = dkim_sign(msg, K["school"], t - timedelta(seconds=4))
    return msg, Arrival(
        t, "office@school.example", "web.school.example", "192.0.2.150", "web.school.example"
    )


@case(
    "junk-spf-permerror",
    ".Junk/cur",
    "Already in Junk: SPF record including a domain that does not exist (permerror)",
    Expect("permerror", "none", "none", "fail (p=none)", "junk"),
)
def junk_spf_permerror() -> tuple[bytes, Arrival]:
    """
    A deals mailing that Alice had moved to Junk. deals.example's SPF record
    says `include:_spf.gone.example`, a name that does not exist: SPF
    permerror (RFC 7208 §5.2). Unsigned; DMARC fails under p=none.
    """
    t = at(3, 10, 5, 40)
    msg = rfc5322(
        f"""
Received: from localhost (localhost [127.0.0.1])
\tby mail.deals.example (Postfix) with ESMTP id {postfix_qid("deals")}
\tfor <alice@family.example>; {postfix_date(t - timedelta(seconds=2))}
From: Deals Example <offers@deals.example>
To: alice@family.example
Subject: Last chance: 70% off everything
Date: {rfc_date(t - timedelta(seconds=3))}
Message-ID: <offer-8841.alice@deals.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 7bit
""",
        """
LAST CHANCE! 70% off everything, today only.

https://deals.example/today

You receive this mail because you signed up at deals.example.
Unsubscribe: https://deals.example/unsubscribe
""",
    )
    return msg, Arrival(t, "offers@deals.example", "mail.deals.example", "198.51.100.222",
                        "mail.deals.example")  # fmt: skip


@case(
    "junk-dkim-revoked",
    ".Junk/cur",
    "Already in Junk: signed with a revoked DKIM key (empty p=)",
    Expect("none", "fail coupons.example/old", "none", "fail (p=quarantine)", "quarantine"),
)
def junk_dkim_revoked() -> tuple[bytes, Arrival]:
    """
    A coupon mailing signed with selector `old`, whose key record has been
    revoked (`p=` empty, RFC 6376 §3.6.1): DKIM fails. coupons.example
    publishes no SPF (none) but DMARC `p=quarantine`, which fails. The sender
    side is OpenSMTPD relaying for an application host.
    """
    t = at(1, 19, 45, 12)
    sent = t - timedelta(seconds=3)
    msg = rfc5322(
        f"""
Received: from app01.coupons.example (app01.coupons.example [192.0.2.231])
\tby out.coupons.example (OpenSMTPD) with ESMTP id 9a3c1f0e
\tfor <alice@family.example>;
\t{postfix_date(sent)}
From: Coupons Example <hello@coupons.example>
To: alice@family.example
Subject: Your weekend coupons are here
Date: {rfc_date(sent - timedelta(seconds=1))}
Message-ID: <c0u9-20250301-alice@coupons.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 7bit
""",
        """
Your weekend coupons:

  - 2 for 1 at Pizza Example
  - 15% off at Garden Centre Example

Show this mail at the till. https://coupons.example/w/alice
""",
    )
    msg = dkim_sign(msg, K["coupons"], sent)
    return msg, Arrival(t, "hello@coupons.example", "out.coupons.example", "192.0.2.230",
                        "out.coupons.example")  # fmt: skip


# ---------------------------------------------------------------- zone data


def zone_records(z: Zone) -> None:
    """Fills the zone with every record the demo messages need."""

    def host(name: str, *ips: str, ptr: bool = True) -> None:
        for ip in ips:
            z.add(name, "AAAA" if ":" in ip else "A", ip)
            if ptr:
                z.ptr(ip, name)

    def dkim_key(key: Key) -> None:
        z.add(f"{key.selector}._domainkey.{key.domain}", "TXT", key.txt())

    z.comment("family.example: our own domain and mail host")
    z.add("family.example", "MX", "10 mx.family.example.")
    z.add("family.example", "TXT", "v=spf1 mx -all")
    z.add("_dmarc.family.example", "TXT", "v=DMARC1; p=quarantine; rua=mailto:dmarc@family.example")
    host(MX, MX_IP4, MX_IP6)
    z.add(MX, "TXT", "v=spf1 a -all")

    z.comment("01 newsletter: news.shop.example via mailhaus.example (include chain)")
    z.add("shop.example", "TXT", "v=spf1 include:_spf.shop.example -all")
    z.add("_dmarc.shop.example", "TXT", "v=DMARC1; p=reject; rua=mailto:dmarc-reports@shop.example")
    z.add("news.shop.example", "TXT", "v=spf1 include:_spf.shop.example -all")
    z.add("bounces.news.shop.example", "TXT", "v=spf1 include:_spf.shop.example -all")
    z.add(
        "_spf.shop.example", "TXT", "v=spf1 ip4:203.0.113.96/28 include:spf.mailhaus.example ~all"
    )
    z.add("spf.mailhaus.example", "TXT", "v=spf1 ip4:198.51.100.32/28 ip6:2001:db8:6d6c::/48 -all")
    dkim_key(K["shop-rsa"])
    dkim_key(K["shop-ed"])
    host("o40.out.mailhaus.example", "198.51.100.40")
    host("app-3.mailhaus.example", "198.51.100.34")

    z.comment("02 phish: bank.example (strict, p=reject); 192.0.2.66 has no PTR")
    z.add("bank.example", "MX", "10 mx1.bank.example.")
    z.add("bank.example", "TXT", "v=spf1 mx ip4:203.0.113.128/27 -all")
    z.add(
        "_dmarc.bank.example",
        "TXT",
        "v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc@bank.example",
    )
    host("mx1.bank.example", "203.0.113.130")

    z.comment("03 softfail: chess-club.example moved hosts, SPF not updated (~all)")
    z.add("chess-club.example", "TXT", "v=spf1 ip4:203.0.113.70 ~all")
    z.add(
        "_dmarc.chess-club.example",
        "TXT",
        "v=DMARC1; p=none; rua=mailto:secretary@chess-club.example",
    )
    host("mail.clubhost.example", "198.51.100.71")
    z.add("mail.clubhost.example", "TXT", "v=spf1 a -all")

    z.comment("04 none: grandpa.example publishes no SPF and no DMARC")
    z.add("grandpa.example", "MX", "10 mail.grandpa.example.")
    host("mail.grandpa.example", "203.0.113.88")

    z.comment("05 DKIM body modified: riverside.example, SPF pass via the gateway")
    z.add("riverside.example", "MX", "10 mail.riverside.example.")
    z.add("riverside.example", "TXT", "v=spf1 ip4:192.0.2.40/29 -all")
    z.add("_dmarc.riverside.example", "TXT", "v=DMARC1; p=quarantine")
    dkim_key(K["riverside"])
    host("mail.riverside.example", "192.0.2.44")
    host("gw.riverside.example", "192.0.2.45")

    z.comment("06 mailing list: photo.example (p=reject) via lists.example (ARC sealer)")
    z.add("photo.example", "MX", "10 mail.photo.example.")
    z.add("photo.example", "TXT", "v=spf1 mx -all")
    z.add("_dmarc.photo.example", "TXT", "v=DMARC1; p=reject")
    dkim_key(K["photo"])
    host("mail.photo.example", "198.51.100.90")
    z.add("lists.example", "MX", "10 mx.lists.example.")
    z.add("lists.example", "TXT", "v=spf1 ip4:203.0.113.150 -all")
    z.add("_dmarc.lists.example", "TXT", "v=DMARC1; p=none")
    dkim_key(K["lists"])
    host("mx.lists.example", "203.0.113.150")

    z.comment("07 blocked suffix: lucky-winner.cyou has perfect authentication")
    z.add("lucky-winner.cyou", "TXT", "v=spf1 ip4:198.51.100.200/29 -all")
    z.add("_dmarc.lucky-winner.cyou", "TXT", "v=DMARC1; p=none")
    dkim_key(K["cyou"])
    host("mta2.lucky-winner.cyou", "198.51.100.201")

    z.comment("08 IPv6: mailbox.example.net (free-mail provider)")
    z.add("mailbox.example.net", "MX", "10 mx.mailbox.example.net.")
    z.add("mailbox.example.net", "TXT", "v=spf1 include:_netblocks.mailbox.example.net ~all")
    z.add("_netblocks.mailbox.example.net", "TXT",
          "v=spf1 ip6:2001:db8:4860::/48 ip4:198.51.100.128/27 ~all")  # fmt: skip
    z.add(
        "_dmarc.mailbox.example.net",
        "TXT",
        "v=DMARC1; p=none; sp=quarantine; rua=mailto:mailauth-reports@mailbox.example.net",
    )
    dkim_key(K["mailbox"])
    host("mail-wm1-x32e.mailbox.example.net", "2001:db8:4860:4864:20::32e")

    z.comment("09 null sender: the HELO name smtp.isp.example has its own SPF record")
    z.add("isp.example", "TXT", "v=spf1 ip4:192.0.2.112/28 -all")
    z.add("_dmarc.isp.example", "TXT", "v=DMARC1; p=none")
    host("smtp.isp.example", "192.0.2.120")
    z.add("smtp.isp.example", "TXT", "v=spf1 a -all")
    host("mbox.isp.example", "192.0.2.121")

    z.comment("10 Bob's home connection (authenticated submission)")
    host("dyn-198-51-100-23.cable.example", "198.51.100.23")

    z.comment("11 trusted forwarder: relay.uni.example forwards for rowing-club.example")
    z.add("uni.example", "MX", "10 relay.uni.example.")
    z.add("uni.example", "TXT", "v=spf1 ip4:198.51.100.56/29 ?all")
    z.add("_dmarc.uni.example", "TXT", "v=DMARC1; p=none")
    host("relay.uni.example", "198.51.100.60")
    z.add("relay.uni.example", "TXT", "v=spf1 a -all")
    z.add("rowing-club.example", "MX", "10 mail.rowing-club.example.")
    z.add("rowing-club.example", "TXT", "v=spf1 ip4:192.0.2.77 -all")
    z.add("_dmarc.rowing-club.example", "TXT", "v=DMARC1; p=quarantine")
    host("mail.rowing-club.example", "192.0.2.77")

    z.comment("12 hosted Exchange: plumbing.example, DKIM key behind a CNAME")
    z.add("plumbing.example", "MX", "0 plumbing-example.mail.protection.mail365.example.")
    z.add("plumbing.example", "TXT", "v=spf1 include:spf.protection.mail365.example -all")
    z.add("_dmarc.plumbing.example", "TXT", "v=DMARC1; p=quarantine; pct=100")
    z.add("spf.protection.mail365.example", "TXT",
          "v=spf1 ip4:198.51.100.96/27 ip6:2001:db8:365::/48 -all")  # fmt: skip
    target = "selector1-plumbing-example._domainkey.plumbingco.onmail365.example"
    z.add("selector1._domainkey.plumbing.example", "CNAME", target + ".")
    z.add(target, "TXT", K["plumbing"].txt())
    host("mail-db5eur03on2101.outbound.protection.mail365.example", "198.51.100.101")

    z.comment("13 frank.example: self-hosted Postfix + OpenDKIM, strict DMARC")
    z.add("frank.example", "MX", "10 mail.frank.example.")
    z.add("frank.example", "TXT", "v=spf1 mx -all")
    z.add("_dmarc.frank.example", "TXT", "v=DMARC1; p=reject; adkim=s; aspf=s")
    dkim_key(K["frank"])
    host("mail.frank.example", "192.0.2.50", "2001:db8:f4a::50")

    z.comment("14 subdomain policy: travel.example p=reject, sp=quarantine; ESP unaligned")
    z.add("travel.example", "TXT", "v=spf1 -all")
    z.add("_dmarc.travel.example", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    z.add("booking.travel.example", "A", "203.0.113.180")
    z.add("esp-mailer.example", "TXT", "v=spf1 ip4:198.51.100.176/28 -all")
    z.add("_dmarc.esp-mailer.example", "TXT", "v=DMARC1; p=none")
    dkim_key(K["esp"])
    host("o180.esp-mailer.example", "198.51.100.180")
    host("api-worker-12.esp-mailer.example", "198.51.100.185")

    z.comment("15 neutral: school.example ends in ?all, its web server is not listed")
    z.add("school.example", "TXT", "v=spf1 ip4:203.0.113.200/29 ?all")
    z.add("_dmarc.school.example", "TXT", "v=DMARC1; p=none")
    dkim_key(K["school"])
    host("web.school.example", "192.0.2.150")

    z.comment("16 permerror: deals.example includes a name that does not exist")
    z.add("deals.example", "TXT", "v=spf1 include:_spf.gone.example -all")
    z.add("_dmarc.deals.example", "TXT", "v=DMARC1; p=none")
    host("mail.deals.example", "198.51.100.222")

    z.comment("17 revoked DKIM key: coupons.example (no SPF, p=quarantine)")
    z.add("old._domainkey.coupons.example", "TXT", "v=DKIM1; k=rsa; p=")
    z.add("_dmarc.coupons.example", "TXT", "v=DMARC1; p=quarantine")
    host("out.coupons.example", "192.0.2.230")
    host("app01.coupons.example", "192.0.2.231")


# ---------------------------------------------------------------- main


def build() -> None:
    """Makes the keys if missing, then writes the Maildir, zone.txt and README.md."""
    for key in K.values():
        key.ensure()
    built = []
    for demo in CASES:
        message, arrival = demo.build()
        data = deliver(arrival, message, demo.slug)
        built.append((demo, data, delivered_at(arrival)))
    paths = write_maildir(built)
    zone = Zone()
    zone_records(zone)
    (MAILDIR / "zone.txt").write_text(zone.text())
    (MAILDIR / "README.md").write_text(readme(built, paths))
    print(f"wrote {len(built)} messages, zone.txt and README.md under {MAILDIR}")


if __name__ == "__main__":
    build()
