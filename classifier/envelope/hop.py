"""ReceivedHop: what one Received header says about one hop (RFC 5321 §4.4)."""

# Annotations are objects here, not strings (no __future__ import): typing.NamedTuple
# compiles a string annotation per field at import, a pipe process's start-up (issue 15).

from datetime import datetime
from typing import NamedTuple

from classifier.message import parse_date


class ReceivedHop(NamedTuple):
    """What one Received header says about one hop, with the evidence for its flags."""

    raw: str
    helo: str | None
    rdns: str | None
    ip: str | None
    by: str | None
    protocol: str | None
    queue_id: str | None
    for_addr: str | None
    envelope_from: str | None  # "" is the null sender <>
    authenticated: bool
    auth_user: str | None
    ident: str | None
    local: bool
    fmt: str
    parsed: bool
    evidence: tuple[str, ...] = ()
    date_text: str | None = None  # after the ";"
    # False when the MTA says it could not confirm the reverse name (Sendmail's "(may be
    # forged)"): the name is then the sender's own PTR and names no trusted forwarder.
    rdns_confirmed: bool = True

    @property
    def date(self) -> datetime | None:
        """Gives the date after the ";", timezone-aware, or None (RFC 5322 §3.3).

        Read when asked for, not kept: the trust path never needs it, and parsing it is
        a third of the cost of reading a header.
        """
        return parse_date(self.date_text)

    @property
    def network_client(self) -> bool:
        """Gives True when the hop names an SMTP client reached over the network."""
        return self.ip is not None and not self.local

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = self._asdict()
        out["evidence"] = list(self.evidence)
        date = self.date
        out["date"] = date.isoformat() if date else None
        return out
