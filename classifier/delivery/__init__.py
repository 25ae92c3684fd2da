"""Step 5 in pipe mode: a message from Postfix, checked, annotated and handed on.

`pipe` processes one message; `targets` are the places it goes (stdout,
dovecot-lda, sendmail, ``maildir:PATH``), each parsing its own ``--deliver``
spec; `daemon` is `authsieve serve`, which keeps the resolver and its cache
warm, and `daemon_client` its client; `handover` is the thin start of
`authsieve pipe --daemon` (standard library and `daemon_client` only, so a
pipe process starts fast).

May import: everything of steps 1-4 (`envelope`, `lookup`, `auth`, `policy`,
`evaluate`, `annotate`) and the foundation modules.  Nothing here imports
`report`, `mailstore` or `commands`.
"""
