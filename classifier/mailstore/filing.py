"""Filing one delivered message where it belongs: checked, annotated, then moved crash-safely.

A message in a Maildir's ``new/`` is read, checked (`evaluate`), given our
headers (`annotate`), and its copy goes to INBOX, ``.Junk`` or
``.Quarantine`` by the verdict (`maildir.place` then `maildir.finish`: the
copy is durable before the original goes).  `authsieve watch` runs this for
every file it sees, in batches.  A message that already carries our
X-Authsieve is left alone, and an internal error files the original
unchanged to INBOX with a temperror header saying why.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from classifier.aggregate.deliveries import delivery_recorder
from classifier.aggregate.store import recorder
from classifier.auth.facts import HEADER_NAME, parse_header_value
from classifier.config import Config
from classifier.delivery.targets import FOLDERS
from classifier.evaluate import Annotated, HeldRecord, check_and_annotate
from classifier.files import DirTree
from classifier.log import log
from classifier.lookup.resolver import Resolver
from classifier.mailstore.folders import ensure_folder
from classifier.mailstore.keywords import JUNK_KEYWORD
from classifier.mailstore.maildir import MaildirName, finish, place, user_from_path
from classifier.message import Message
from classifier.names import safe_domain

DEFAULT_TEMPLATE = "{domain}/{local}/Maildir"


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to file one message."""

    config: Config  # validated whole when loaded, not per message
    resolver: Resolver
    path_template: str = DEFAULT_TEMPLATE
    config_path: str | None = None  # re-read by worker processes on a reload

    def reloaded(self, config: Config) -> Job:
        """Gives this Job with a freshly loaded config."""
        return replace(self, config=config)


@dataclass(frozen=True)
class Outcome:
    """What happened to one file, and why."""

    path: str
    status: str  # filed | left-alone | own | gone | error
    action: str = ""
    dest: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def carries_our_header(message: Message, authserv_id: str) -> bool:
    """Tells whether the message already has our X-Authsieve (our id=) above its first Received.

    Only local software writes above the topmost Received, so one there
    with our id is from an earlier pass (RFC 8601 §5; same rule as
    `annotate.defuse`).
    """
    ours = safe_domain(authserv_id) or "localhost"
    key = HEADER_NAME.lower()
    for f in message.fields:
        if f.key == "received":
            return False
        if f.key == key and parse_header_value(f.value()).get("id", "").lower() == ours:
            return True
    return False


@dataclass(frozen=True)
class _Checked:
    """A message checked and annotated, waiting to be filed."""

    path: Path
    maildir: Path
    user: str | None
    result: Annotated
    like: os.stat_result  # the original's owner and mode, for the new copy
    tree: DirTree  # the Maildir's directories, opened without following symlinks
    record: HeldRecord  # its report rows, recorded once it is filed


def check_path(path: Path, job: Job, tree: DirTree) -> Outcome | _Checked:
    """Gives the checked message, or the outcome when there is nothing to file.

    The file is opened with O_NOFOLLOW from the descriptor of its directory,
    itself reached without following a symlink: a link the mailbox owner put
    in ``new/`` (or in place of ``new/``) is never read.  As root, a file
    that is not the Maildir owner's (a hard link to someone else's) is left
    alone: its copy would be the Maildir owner's to read.
    """
    if MaildirName.parse(path.name).marked:
        return Outcome(str(path), "own")
    maildir = path.parent.parent
    try:
        data, like = tree.read(path)
    except FileNotFoundError:
        return Outcome(str(path), "gone")
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, None):
            log.warning("%s: left alone: a symlink or not a regular file", path)
            return Outcome(str(path), "left-alone", detail="symlink or not a regular file")
        log.error("%s: cannot read: %s", path, exc.strerror)
        return Outcome(str(path), "error", detail=f"read: {exc.strerror}")
    if os.geteuid() == 0 and like.st_uid != tree.owner()[0]:
        log.warning("%s: left alone: owned by uid %d, not the Maildir's owner", path, like.st_uid)
        return Outcome(str(path), "left-alone", detail="not owned by the Maildir's owner")
    # Ours sits above the first Received, near the top; most mail has none: skip the parse.
    maybe_ours = HEADER_NAME.lower().encode() in data[:16384].lower()
    if maybe_ours and carries_our_header(Message.parse(data), job.config.engine.authserv_id):
        return Outcome(str(path), "left-alone", detail="already carries our X-Authsieve")
    user = user_from_path(maildir, job.path_template)
    # The pipe's own step and failure rule: an internal error files the original with an
    # `internal` header, where internal_error says, so the watcher never retries it forever.
    config = job.config
    record = HeldRecord(recorder(config.reports))
    result = check_and_annotate(
        data,
        config.engine,
        job.resolver,
        config.policies,
        None,
        user,
        record,
        delivery_recorder(config.learn),
    )
    return _Checked(path, maildir, user, result, like, tree, record)


def _place_checked(checked: _Checked) -> Outcome | tuple[_Checked, Path]:
    result = checked.result
    try:
        dest = ensure_folder(checked.maildir, FOLDERS.get(result.action, ""), checked.tree)
        # Filed as Sieve files it: Junk with the $Junk keyword (mail clients' "junk" mark).
        keywords = (JUNK_KEYWORD,) if result.action == "junk" else ()
        placed = place(checked.path, result.data, dest, checked.like, checked.tree, keywords)
        return checked, placed
    except OSError as exc:
        # Full disk, quota, permissions: the original stays; the next rescan tries again.
        log.error("%s: not filed, original kept: %s", checked.path, exc)
        return Outcome(str(checked.path), "error", result.action, detail=str(exc))


def _finish_batch(placed: list[tuple[_Checked, Path]]) -> list[Outcome]:
    try:
        for tree in {id(c.tree): c.tree for c, _ in placed}.values():
            finish([(c.path, final) for c, final in placed if c.tree is tree], tree)
    except OSError as exc:
        # The copies are in place and the originals still there: filing one again finds
        # its copy under the derived name and only removes the original.
        log.error("not finished, originals kept for now: %s", exc)
        return [Outcome(str(c.path), "error", c.result.action, detail=str(exc)) for c, _ in placed]
    for c, final in placed:
        log.info("filed %s as %s user=%s %s", c.path.name, final, c.user or "-", c.result.summary)
        c.record.delivered()
    return [
        Outcome(str(c.path), "filed", c.result.action, str(final), c.result.error)
        for c, final in placed
    ]


def _guarded(fn: Callable[..., Any], path: str, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # a bug must not stop the watcher; the file stays where it is
        log.exception("%s: internal error", path)
        return Outcome(path, "error", detail=f"internal error: {type(exc).__name__}")


def file_batch(paths: list[str], job: Job, io: Executor | None = None) -> list[Outcome]:
    """Gives the outcome of filing each path, in order.

    Each message is checked here; its copy is written on `io` (when given),
    so one message's fsync waits while the next is checked.  The originals
    go at the end, after one directory sync for the whole batch.
    """
    trees: dict[Path, DirTree] = {}
    try:
        return _file_batch(paths, job, io, trees)
    finally:
        for tree in trees.values():
            tree.close()


def _file_batch(
    paths: list[str], job: Job, io: Executor | None, trees: dict[Path, DirTree]
) -> list[Outcome]:
    steps: list[Any] = []
    for p in paths:
        maildir = Path(p).parent.parent
        tree = trees.get(maildir) or trees.setdefault(maildir, DirTree(maildir))
        checked = _guarded(check_path, p, Path(p), job, tree)
        if isinstance(checked, Outcome):
            steps.append(checked)
        else:
            steps.append(
                io.submit(_guarded, _place_checked, p, checked) if io else _place_checked(checked)
            )
    steps = [s.result() if isinstance(s, Future) else s for s in steps]
    placed = [s for s in steps if isinstance(s, tuple)]
    try:
        finished = iter(_finish_batch(placed))
    except Exception as exc:
        log.exception("internal error while finishing a batch")
        finished = iter([Outcome(str(c.path), "error", detail=repr(exc)) for c, _ in placed])
    return [next(finished) if isinstance(s, tuple) else s for s in steps]


def process_path(path: Path, job: Job) -> Outcome:
    """Gives the outcome of filing one message file: checked, annotated, filed by verdict."""
    return file_batch([str(path)], job)[0]
