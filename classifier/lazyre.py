"""Regular expressions compiled on first use, for patterns most messages never need.

`authsieve pipe` starts a process per delivery, and compiling a pattern costs
more than most matches (about 60 compiles were a third of classifier's own
import).  A pattern for an uncommon Received format, an mbox line or a date
form is compiled when a message first needs it; after that its methods are
the compiled pattern's own (bound C methods kept on the object), so a match
costs what it did.
"""

from __future__ import annotations

import re
from typing import Any, AnyStr, cast

_METHODS = ("match", "fullmatch", "search", "sub", "subn", "split", "findall", "finditer")


class _Lazy:
    def __init__(self, pattern: str | bytes, flags: int) -> None:
        self._source = pattern
        self._flags = flags

    def __getattr__(self, name: str) -> Any:
        # Only reached for a name not set yet: the first use compiles and keeps the methods.
        compiled = re.compile(self._source, self._flags)
        for method in _METHODS:
            setattr(self, method, getattr(compiled, method))
        for attribute in ("pattern", "flags", "groups", "groupindex"):
            setattr(self, attribute, getattr(compiled, attribute))
        return getattr(compiled, name)

    def __repr__(self) -> str:
        return f"lazy({self._source!r})"


def lazy(pattern: AnyStr, flags: int = 0) -> re.Pattern[AnyStr]:
    """Gives a pattern that compiles on first use; used as `re.compile`'s result is."""
    return cast("re.Pattern[AnyStr]", _Lazy(pattern, flags))
