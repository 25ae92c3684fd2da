"""UsageError: a bad argument or path the user gave, told in one line with exit code 2.

Raised wherever what the user named is read (a Maildir path, a zone file, an
option's value); the command line catches it.  Imports nothing, so the
command line can name it before anything else is loaded.
"""


class UsageError(Exception):
    """A bad argument or path: one line for the user, exit 2."""
