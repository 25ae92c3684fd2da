"""The one logger of authsieve, sent to syslog's mail facility or a configured file.

In pipe mode nothing may reach stderr unless delivery failed (Postfix mails
stderr back in bounces), so everything else goes here.
"""

from __future__ import annotations

import logging
import os

from classifier.config import Settings

log = logging.getLogger("authsieve")


def configure_logging(settings: Settings, debug: bool = False) -> None:
    """Sends log records to the configured file, else to syslog's mail facility."""
    if log.handlers:
        return
    handler: logging.Handler
    if settings.log_file:
        handler = logging.FileHandler(settings.log_file)
        fmt = "%(asctime)s authsieve[%(process)d]: %(message)s"
        handler.setFormatter(logging.Formatter(fmt))
    elif os.path.exists("/dev/log"):
        # Imported only when used: it costs start-up time in every pipe process.
        from logging.handlers import SysLogHandler

        handler = SysLogHandler("/dev/log", facility=SysLogHandler.LOG_MAIL)
        handler.setFormatter(logging.Formatter("authsieve[%(process)d]: %(message)s"))
    else:
        handler = logging.NullHandler()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
