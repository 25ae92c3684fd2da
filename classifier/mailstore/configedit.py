"""Edits of the TOML config that keep its comments and layout: one list entry, one action.

Used by `authsieve quarantine release --allow` (a user's allow_senders) and
`authsieve suggest --apply` (the lists and actions of [policy] and
[users."addr"]).  Each edit is made in the text, parsed back, and must
differ from the old document in that one value only; the file is replaced
atomically, under a lock on its directory.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from classifier.errors import UsageError
from classifier.files import replace_file
from classifier.policies import normalize_user


class ConfigEditError(UsageError):
    """An edit that cannot be made safely: one line naming what to change by hand (exit 2)."""


_USER_HEADER = re.compile(
    r"""^[ \t]*\[[ \t]*users[ \t]*\.[ \t]*"""
    r"""("(?:[^"\\\n]|\\.)*"|'[^'\n]*')[ \t]*\][ \t]*(?:\#.*)?$""",
    re.MULTILINE,
)
_ANY_HEADER = re.compile(r"^[ \t]*\[", re.MULTILINE)


def _toml_key(quoted: str) -> str:
    if quoted.startswith("'"):
        return quoted[1:-1]
    try:
        return str(json.loads(quoted))
    except ValueError:
        return quoted[1:-1]


def _array_bounds(text: str, start: int) -> tuple[int, int]:
    """Gives (closing bracket, last significant character before it) of the array at start."""
    depth, last, i = 0, start, start
    while i < len(text):
        c = text[i]
        if c == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if c in "\"'":
            triple = c * 3
            if text.startswith(triple, i):
                end = text.find(triple, i + 3) + 3
            else:
                end = i + 1
                while end < len(text) and text[end] != c:
                    end += 2 if c == '"' and text[end] == "\\" else 1
                end += 1
            last, i = end - 1, end
            continue
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return i, last
        if not c.isspace():
            last = i
        i += 1
    raise ConfigEditError("allow_senders: unterminated array")


def _insert_into_array(text: str, open_at: int, entry: str) -> str:
    close, last = _array_bounds(text, open_at)
    item = json.dumps(entry)
    line_start = text.rfind("\n", 0, close) + 1
    if text[line_start:close].strip() == "" and "\n" in text[open_at:close]:
        # A multi-line array: one more line before the closing bracket, indented like the last.
        indent = "    "
        if text[last] != "[":
            last_line = text[text.rfind("\n", 0, last) + 1 : last + 1]
            indent = last_line[: len(last_line) - len(last_line.lstrip(" \t"))]
        comma = "" if text[last] in "[," else ","
        head = text[: last + 1] + comma + text[last + 1 : line_start]
        return head + f"{indent}{item},\n" + text[line_start:]
    if text[last] == "[":
        return text[:close] + item + text[close:]
    sep = " " if text[last] == "," else ", "
    return text[: last + 1] + sep + item + text[last + 1 :]


_POLICY_HEADER = re.compile(r"^[ \t]*\[[ \t]*policy[ \t]*\][ \t]*(?:\#.*)?$", re.MULTILINE)


def _table_header(text: str, user: str) -> re.Match[str] | None:
    """Gives the header line of [users."user"] (or of [policy] for user ""), or None."""
    if not user:
        return _POLICY_HEADER.search(text)
    key = normalize_user(user)
    return next(
        (m for m in _USER_HEADER.finditer(text) if normalize_user(_toml_key(m.group(1))) == key),
        None,
    )


def add_list_entry(
    text: str, user: str, list_key: str, entry: str, inherited: tuple[str, ...] = ()
) -> str:
    """Gives the config text with `entry` in a list of [users."user"] ([policy] for user "").

    Everything else stays as it was; the result is parsed back and must differ
    in that one list only.  A new user list starts with the `inherited` global
    entries (a user's list replaces the global one).  Raises ConfigEditError
    when the file is laid out so that a safe edit is not possible.
    """
    key = normalize_user(user)
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigEditError(f"not valid TOML: {exc}") from None
    if key:
        users = before.get("users", {})
        actual = next((k for k in users if normalize_user(k) == key), None)
        table = users.get(actual, {}) if actual else {}
        shown = f"users.{json.dumps(key)}"
    else:
        actual, table, shown = None, before.get("policy", {}), "policy"
    current = list(table.get(list_key, inherited))
    if entry.strip().lower() in [str(e).strip().lower() for e in current]:
        return text
    header = _table_header(text, key)
    values = ", ".join(json.dumps(e) for e in [*current, entry])
    if header is None:
        head = f"[users.{json.dumps(key)}]" if key else "[policy]"
        new = text.rstrip("\n") + f"\n\n{head}\n{list_key} = [{values}]\n"
        actual = actual or key
    else:
        nxt = _ANY_HEADER.search(text, header.end())
        end = nxt.start() if nxt else len(text)
        key_line = re.compile(rf"^([ \t]*){re.escape(list_key)}[ \t]*=[ \t]*", re.MULTILINE)
        found = key_line.search(text, header.end(), end)
        if found is not None:
            new = _insert_into_array(text, found.end(), entry)
        else:
            at = header.end() + 1 if header.end() < len(text) else len(text)
            new = text[:at] + ("" if text[at - 1 : at] == "\n" or at == 0 else "\n")
            new += f"{list_key} = [{values}]\n" + text[at:]
    expected: dict[str, Any] = copy.deepcopy(before)
    if key:
        expected.setdefault("users", {}).setdefault(actual, {})[list_key] = [*current, entry]
    else:
        expected.setdefault("policy", {})[list_key] = [*current, entry]
    try:
        after = tomllib.loads(new)
    except tomllib.TOMLDecodeError:
        after = None
    if after != expected:
        raise ConfigEditError(f'cannot edit safely; add "{entry}" to {shown}.{list_key} by hand')
    return new


def set_policy_action(text: str, action_key: str, action: str) -> str:
    """Gives the config text with ``action_key = "action"`` in [policy], all else as it was.

    Raises ConfigEditError when the file is laid out so that a safe edit is not possible.
    """
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigEditError(f"not valid TOML: {exc}") from None
    line = f"{action_key} = {json.dumps(action)}"
    header = _table_header(text, "")
    if header is None:
        new = text.rstrip("\n") + f"\n\n[policy]\n{line}\n"
    else:
        nxt = _ANY_HEADER.search(text, header.end())
        end = nxt.start() if nxt else len(text)
        value = re.compile(
            rf"^[ \t]*{re.escape(action_key)}[ \t]*=[ \t]*(\"[^\"\n]*\"|'[^'\n]*')", re.MULTILINE
        )
        found = value.search(text, header.end(), end)
        if found is not None:
            new = text[: found.start(1)] + json.dumps(action) + text[found.end(1) :]
        else:
            at = header.end() + 1 if header.end() < len(text) else len(text)
            new = text[:at] + ("" if text[at - 1 : at] == "\n" or at == 0 else "\n")
            new += line + "\n" + text[at:]
    expected: dict[str, Any] = copy.deepcopy(before)
    expected.setdefault("policy", {})[action_key] = action
    try:
        after = tomllib.loads(new)
    except tomllib.TOMLDecodeError:
        after = None
    if after != expected:
        raise ConfigEditError(f"cannot edit safely; set policy.{line} by hand")
    return new


def edit_config(config: Path, change: Callable[[str], str]) -> bool:
    """Gives True when `change` changed the config file's text, replaced atomically.

    The directory is locked, so that two edits at once do not lose one.  Raises
    ConfigEditError, naming the file, when the change cannot be made safely.
    """
    dir_fd = os.open(config.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)  # two releases at once must not lose an entry
        text = config.read_text(encoding="utf-8")
        try:
            new = change(text)
        except ConfigEditError as exc:
            raise ConfigEditError(f"{config}: {exc}") from None
        if new == text:
            return False
        replace_file(config, new.encode("utf-8"))
        return True
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(dir_fd, fcntl.LOCK_UN)
        os.close(dir_fd)
