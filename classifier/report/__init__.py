"""`authsieve report`: what each policy would do to the mail a user already has.

`cache` checks messages (in a thread pool, one resolver) and keeps each
message's check record in SQLite, so another policy asks no DNS; `build`
replays the records under each policy into a report; `render` writes it as
text, JSON, CSV or HTML.

May import: steps 1-4, `delivery` and the foundation modules.  Never
`mailstore` or `commands`.
"""
