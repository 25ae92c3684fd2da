"""DNS: every query of the checks goes through one `Resolver` (cache, timeouts, zone file).

`resolver` holds `Resolver` (a nameserver, resolv.conf, or a zone file
answering offline), the per-message `DnsSession` and `make_resolver`; `wire`
is the lean UDP exchange for the common reply.  (Not named ``dns``: that
reads like dnspython's own package in every import line.)

May import: the foundation modules at the top of `classifier` only.
"""
