"""Step 2, the checks: SPF, DKIM, ARC and DMARC of one message, each a pure function.

`spf`, `dkim` (with `dkim_body`, the body hash, and `dkim_signature`, one
signature's tags and check), `arc` (both read the raw header block through
`header_block`), `dmarc` (with `dmarc_record`, one
record's tags and the tree walk, and `dmarc_discovery`, where the policy is
found) each give a frozen result with its evidence; `fromheader` reads
the From field's domains; `checks` runs them all for one message (a
`CheckReport`); `facts` is their compact form, `AuthFacts`, which the verdict
reads and the X-Authsieve header carries.

May import: the foundation modules, `lookup` and `envelope`.  Never `policy`:
a check states what it found, it does not judge.
"""
