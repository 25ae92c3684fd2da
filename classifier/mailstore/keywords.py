"""Dovecot's Maildir keywords: the letters a–z in a message's flags and the file that names them.

Dovecot keeps an IMAP keyword (``$Junk``, ``$Forwarded``, a user's label) on
a Maildir message as a lowercase letter after ``:2,`` in the file name; the
folder's ``dovecot-keywords`` file says which keyword each letter is, one
``N keyword`` line each (``0 $Junk`` makes letter ``a`` mean $Junk; at most
26).  Letters belong to one folder: a message moved to another folder has
its letters looked up in the old folder's file and found, or added, in the
new one's.  The file is written as Dovecot writes it (maildir-keywords.c):
under the dotlock ``dovecot-keywords.lock``, whole, then renamed into place.

Keywords never hold mail: a keyword file that cannot be read or written (a
symlink the mailbox owner planted, a full disk) costs the keyword, with a
warning, and the message is filed all the same.
"""

from __future__ import annotations

import contextlib
import os
import stat

from classifier.files import read_regular, take_dotlock, write_all
from classifier.log import log

KEYWORDS_FILE = "dovecot-keywords"
MAX_KEYWORDS = 26  # the letters a-z
JUNK_KEYWORD = "$Junk"  # RFC 5788 registry; what Sieve's `addflag "$Junk"` sets


def parse_keywords(raw: bytes) -> dict[int, str]:
    """Gives index → keyword of a ``dovecot-keywords`` file; bad lines skipped, as by Dovecot."""
    found: dict[int, str] = {}
    for line in raw.decode("utf-8", "surrogateescape").split("\n"):
        number, sep, name = line.partition(" ")
        if sep and number.isdigit() and int(number) < MAX_KEYWORDS and name:
            found.setdefault(int(number), name)
    return found


def render_keywords(keywords: dict[int, str]) -> bytes:
    """Gives the file text Dovecot writes: ``N keyword`` lines in index order."""
    return "".join(f"{i} {keywords[i]}\n" for i in sorted(keywords)).encode(
        "utf-8", "surrogateescape"
    )


def read_keywords(dir_fd: int) -> dict[int, str]:
    """Gives index → keyword of the folder open as dir_fd (none when the file is absent)."""
    try:
        raw, _ = read_regular(KEYWORDS_FILE, dir_fd)
    except FileNotFoundError:
        return {}
    return parse_keywords(raw)


def _letter(index: int) -> str:
    return chr(ord("a") + index)


def add_keywords(
    dir_fd: int, names: list[str], owner: tuple[int, int] | None = None
) -> dict[str, int]:
    """Gives keyword → index for `names` in the folder open as dir_fd, adding those it lacks.

    A keyword that finds no free index (26 in use) is left out of the answer.
    """
    current = read_keywords(dir_fd)
    if all(n in current.values() for n in names):
        return {n: i for i, n in current.items() if n in names}
    fd = take_dotlock(KEYWORDS_FILE, dir_fd)
    lock = KEYWORDS_FILE + ".lock"
    try:
        current = read_keywords(dir_fd)  # again, under the lock: Dovecot may have added one
        for name in names:
            if name in current.values():
                continue
            free = next((i for i in range(MAX_KEYWORDS) if i not in current), None)
            if free is None:
                log.warning("%s is full (26 keywords): %s not given", KEYWORDS_FILE, name)
                continue
            current[free] = name
        write_all(fd, render_keywords(current))
        # Dovecot gives the file the folder's permissions, without the search bits.
        os.fchmod(fd, stat.S_IMODE(os.fstat(dir_fd).st_mode) & 0o666)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(lock, KEYWORDS_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(lock, dir_fd=dir_fd)
        raise
    return {n: i for i, n in current.items() if n in names}


def carried_info(
    info: str,
    source_fd: int | None,
    dest_fd: int,
    extra: tuple[str, ...] = (),
    owner: tuple[int, int] | None = None,
) -> str:
    """Gives the Maildir info (``2,FSa``) of a message's copy in the folder open as dest_fd.

    `info` is the original's; source_fd is its folder's descriptor, None when
    the copy stays in the same folder (its letters then mean the same).
    System flags (upper case) are kept; keyword letters are translated
    through both ``dovecot-keywords`` files; `extra` keywords are added.
    Flags come out sorted, as Dovecot writes them.  Without a flag and
    without an original info the answer is "" (the copy goes to new/).
    """
    if not info.startswith("2,") and info:
        return info  # an info Dovecot does not write: carried as it is
    flags = info[2:]
    letters = [c for c in flags if "a" <= c <= "z"]
    if source_fd is None and not extra:
        return info
    system = [c for c in flags if not "a" <= c <= "z"]
    names: list[str] = []
    if source_fd is None:
        kept = letters
    else:
        kept = []
        if letters:
            try:
                source = read_keywords(source_fd)
            except OSError as exc:
                log.warning("%s: not read, keywords not carried: %s", KEYWORDS_FILE, exc)
                source = {}
            names = [source[ord(c) - ord("a")] for c in letters if ord(c) - ord("a") in source]
    names += [n for n in extra if n not in names]
    if names:
        try:
            indexes = add_keywords(dest_fd, names, owner)
        except OSError as exc:
            log.warning("%s: not written, keywords %s not given: %s", KEYWORDS_FILE, names, exc)
            indexes = {}
        kept += [_letter(i) for i in indexes.values()]
    flags = "".join(sorted(set(system + kept)))
    return f"2,{flags}" if flags or info else ""
