"""Step 1, the envelope: which Received header tells the truth, and what it says.

`received` reads one Received header into a `ReceivedHop` (`hop`): `quick`
reads the commonest shapes in one match, `clauses` cuts any other line at its
keywords, `formats` holds the readers of each MTA's way of writing the
from part, and `marks` reads only what the receiving MTA wrote in fixed places
(AUTH, local hand-over, envelope sender); `trust` walks the chain from the
top (docs/design.md, "The trust rule") to the SMTP client, its HELO and rDNS name, the
envelope sender and the recipient: an `Envelope`.

May import: the foundation modules at the top of `classifier` only.  Never
`lookup`: reading headers asks no DNS.
"""
