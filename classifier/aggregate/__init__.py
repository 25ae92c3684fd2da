"""DMARC aggregate reports (RFC 9990): rows recorded at delivery, a store, the XML report.

`rows` turns an evaluation into report rows (pure), `store` keeps them
(SQLite), `feedback` builds one gzip-compressed RFC 9990 report per Policy
Domain and period.  Below the delivery paths, which record rows; above the
checks and the verdict, which it reads.
"""
