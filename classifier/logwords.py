"""One word of a log line, whatever a sender put into it.

A delivery line is read as ``key=value`` words (by grep, by a log parser, by an
admin's eye).  A recipient's extension or a MAIL FROM may hold spaces and
``verdict=inbox``: written as it came, such a value adds words of the sender's
before ours (attacker review, issue 15).  Standard library only, no ``re``: the
pipe's fast path writes these lines too.
"""

_SPECIAL = frozenset('="\\,<>')


def log_word(text: str) -> str:
    """Gives text as one word: as it is, or quoted with \\ and " escaped when it could split."""
    if text and not any(ch.isspace() or ch in _SPECIAL for ch in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
