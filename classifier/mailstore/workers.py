"""The watcher's worker processes: each files the batches of paths it is handed.

The checks are pure Python, so only processes reach a second core.  A worker dies
with its parent (PR_SET_PDEATHSIG), ignores the signals its parent decides on,
and reloads the config when the parent's generation moved on (SIGHUP).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from classifier.config import ConfigError, load_config
from classifier.log import log, reopen_logging
from classifier.mailstore.filing import Job, Outcome, file_batch

_PR_SET_PDEATHSIG = 1
_WORKER: dict[str, Any] = {}


def _set_parent_death_signal() -> None:
    """Asks Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def init_worker(job: Job, parent: int) -> None:
    _set_parent_death_signal()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    # The parent decides when to stop; a worker must finish the message in hand.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _WORKER.update(job=job, generation=0)


def work_in_process(paths: list[str], generation: int) -> list[Outcome]:
    job: Job = _WORKER["job"]
    if generation != _WORKER["generation"]:
        try:
            config = load_config(job.config_path)
            job = job.reloaded(config)
            reopen_logging(config.engine)
        except ConfigError as exc:
            log.error("config reload failed in worker, keeping the old policy: %s", exc)
        _WORKER.update(job=job, generation=generation)
    if "io" not in _WORKER:  # started here, after the fork: a thread does not survive one
        _WORKER["io"] = ThreadPoolExecutor(1, thread_name_prefix="authsieve-commit")
    return file_batch(paths, job, _WORKER["io"])


def ping() -> int:
    return os.getpid()
