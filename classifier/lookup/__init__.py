"""DNS: every query of the checks goes through one `Resolver` (cache, timeouts, zone file).

`resolver` holds `Resolver` (the cache), the per-message `DnsSession`, the
answers and errors, and `make_resolver`; `memo` the results worked out from
DNS answers alone, kept while those answers stand; `sources` the places answers come
from (nameservers, resolv.conf, or a zone file answering offline); `wire` is
the lean UDP exchange for the common reply.  (Not named ``dns``: that
reads like dnspython's own package in every import line.)

May import: the foundation modules at the top of `classifier` only.
"""
