"""The config's ``[reports]`` and ``[learn]`` sections, which turn those features on.

Apart from `classifier.config` because few configs have them: `authsieve pipe`
starts a process per delivery, and defining a class costs it time (issue 15).
`load_config` imports this module only when a file has one of these tables;
``from classifier.config import ReportsConfig`` works as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from classifier.config import default_authserv_id

DEFAULT_REPORT_STORE = "sqlite:/var/lib/authsieve/reports.db"  # when [reports] names none
DEFAULT_LEARN_STORE = "sqlite:/var/lib/authsieve/learning/moves.db"  # the mail user's directory


@dataclass(frozen=True)
class ReportsConfig:
    """Section ``[reports]`` (DMARC aggregate reports, issue 16): its presence turns them on."""

    store: str = DEFAULT_REPORT_STORE  # sqlite:PATH or a postgresql:// URL (report_store_kind)
    # Written with each row: one organisation's report covers all its MX hosts.
    host: str = field(default_factory=default_authserv_id)
    retention_days: float = 35.0
    org_name: str = ""  # "": the authserv_id
    email: str = ""
    extra_contact_info: str = ""
    sendmail: str = "/usr/sbin/sendmail"  # what `dmarc-report --send` hands reports to
    max_message_size: int = 10_000_000  # bytes of one report message, larger: not sent
    sent_log: str | None = None  # None: dmarc-sent.log beside a sqlite store
    catch_up_days: int = 7  # `dmarc-report --send` sends unsent days this far back
    run_time_limit: float = 600.0  # seconds for one `dmarc-report` run's DNS checks


@dataclass(frozen=True)
class LearnConfig:
    """Section ``[learn]`` (what users' moves teach, issue 17): its presence turns it on."""

    store: str = DEFAULT_LEARN_STORE
    retention_days: float = 180.0
    min_messages: int = 5  # moves of one kind before a change is proposed
    min_users: int = 2  # users among them
    block_share: float = 0.8  # of the deliveries under a suffix or domain, moved into Junk
    sieve_dir: str | None = None  # where `sieve install --dir` put the global script
