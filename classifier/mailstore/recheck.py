"""`authsieve recheck`: look again at mail whose result was temperror, and move what changed.

A message's result was temperror when a DNS lookup failed at delivery; the
record says so in the report cache or in our own X-Authsieve header.  Each
such message is checked again; when its verdict changed and it is still in
the folder delivery chose, it is re-filed: the new copy is written to tmp/,
fsynced and renamed into place before the original is unlinked, so a crash
leaves a duplicate, never a loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from classifier.config import Settings
from classifier.files import fsync_dir, write_all
from classifier.lookup.resolver import Resolver
from classifier.mailstore.mailfiles import MailFile
from classifier.message import Message
from classifier.policies import Policies
from classifier.report.build import ScannedMessage, verdict_for
from classifier.report.cache import (
    CheckRecord,
    ReportCache,
    checks_fingerprint,
    message_key,
    record_from,
)

_TEMP_KEYS = ("spf", "helo-spf", "dkim", "arc", "dmarc")  # X-Authsieve keys


def our_header(message: Message, authserv_id: str) -> dict[str, str] | None:
    """Gives our own X-Authsieve values: one above the topmost Received with our id, or None.

    Only local software writes above the first Received (RFC 5321 §4.4), and
    delivery renames every copy from outside, so only that one can be ours.
    """
    from classifier.auth.facts import HEADER_NAME, parse_header_value
    from classifier.names import safe_domain

    ours = safe_domain(authserv_id) or "localhost"
    for field in message.fields:
        if field.key == "received":
            return None
        if field.key == HEADER_NAME.lower():
            values = parse_header_value(field.value())
            if values.get("id", "").lower() == ours:
                return values
    return None


def _results(record: CheckRecord) -> dict[str, str]:
    return {k: getattr(record.facts, k.replace("-", "_")) for k in _TEMP_KEYS}


def _words(values: dict[str, str]) -> str:
    return " ".join(f"{k}={values.get(k) or 'none'}" for k in _TEMP_KEYS)


@dataclass(frozen=True)
class Recheck:
    """What recheck found for one message whose result was temperror, and what it did."""

    path: str
    folder: str
    before: str  # the results as recorded (header or cache)
    after: str  # the results now
    was: str  # the verdict it was filed by
    now: str  # the verdict now
    # moved | would move | unchanged | still temperror | left where the user put it | not moved: …
    outcome: str
    new_path: str = ""

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def refile(src: Path, root: Path, folder: str, data: bytes) -> Path:
    """Gives the new path of a message moved to ROOT/FOLDER the Maildir way, data as its bytes.

    tmp/, fsync, rename into new/ or cur/ (as the original was, flags kept),
    and only then unlink the original.  Mode, owner and mtime (Dovecot's
    received date) are kept.
    """
    from classifier.delivery.targets import maildir_name

    base = root / folder if folder else root
    for sub in ("tmp", "new", "cur"):
        (base / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder:
        (base / "maildirfolder").touch(exist_ok=True)
    sub = "cur" if src.parent.name == "cur" else "new"
    info = src.name.partition(":")[2]
    unique = f"{maildir_name()},S={len(data)}"
    final = base / sub / (f"{unique}:{info}" if sub == "cur" and info else unique)
    st = src.stat()
    tmp = base / "tmp" / unique
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, st.st_mode & 0o777)
            if os.geteuid() == 0:
                os.fchown(fd, st.st_uid, st.st_gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
    # Gone already means renamed meanwhile (a flag change): the copy is in place, so the
    # worst case is a duplicate, never a loss.
    src.unlink(missing_ok=True)
    fsync_dir(src.parent)
    return final


def recheck_one(
    f: MailFile,
    settings: Settings,
    policies: Policies,
    resolver: Resolver,
    cache: ReportCache,
    user: str | None = None,
    dry_run: bool = False,
) -> Recheck | None:
    """Gives what recheck did to one message, or None when its result was not temperror.

    `user` judges every message by that user's policy (default: each recipient's);
    `dry_run` says what would move and moves nothing.
    """
    from classifier.annotate import annotate
    from classifier.delivery.targets import FOLDERS
    from classifier.evaluate import evaluate

    data = f.path.read_bytes()
    message = Message.parse(data)
    mid, digest = message_key(data)
    base = policies.for_user(user) if user else policies.default
    fp = checks_fingerprint(settings, settings.trust_for(base.trusted_forwarders))
    cached = cache.get(mid, digest, fp)
    header = our_header(message, settings.authserv_id)
    if cached is not None:
        if not cached.temperror:
            return None  # the cache is newer than any header: a recheck already resolved it
        before = _words(_results(cached))
        was = verdict_for(ScannedMessage(str(f.path), f.folder, 0, cached), policies, user)
        was_action: str = was.action
    elif header is not None and any(header.get(k) == "temperror" for k in _TEMP_KEYS):
        before, was_action = _words(header), "inbox"
    else:
        return None
    if header is not None and header.get("verdict") in FOLDERS:
        was_action = header["verdict"]  # where delivery filed it, whatever the cache says
    result = evaluate(data, settings, resolver, policies, user=user)
    record = record_from(result.report, message, settings.authserv_id)
    cache.put(mid, digest, fp, record)
    now = result.verdict.action
    rc = Recheck(str(f.path), f.folder, before, _words(_results(record)), was_action, now, "")
    if record.temperror:
        return replace(rc, outcome="still temperror")
    if now == was_action:
        return replace(rc, outcome="unchanged")
    if f.folder != (FOLDERS[was_action] or "INBOX"):
        return replace(rc, outcome="left where the user put it")
    if dry_run:
        return replace(rc, outcome="would move")
    if header is not None:
        # The message carries our results: it moves with the new ones, not the temperror.
        value = result.header_value(settings.authserv_id)
        data = annotate(data, result.report, settings.authserv_id, value)
        cache.put(*message_key(data), fp, record)
    try:
        new_path = refile(f.path, f.root, FOLDERS[now], data)
    except OSError as exc:
        return replace(rc, outcome=f"not moved: {exc.strerror}")
    return replace(rc, outcome="moved", new_path=str(new_path))
