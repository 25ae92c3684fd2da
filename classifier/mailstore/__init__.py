"""Mail already in Maildirs: filing it, watching for it, quarantining and re-checking it.

`maildir` is Maildir on disk (names, moves that survive SIGKILL), `folders`
its Maildir++ folders and Dovecot's subscriptions, `keywords` Dovecot's
keyword files, `mailfiles` the walk over a Maildir's messages; `filing`
checks and files a batch of messages and `watch` runs it as mail lands
(its `workers` processes; `sd_notify` tells the service manager);
`quarantine` lists, releases and purges the quarantine;
`recheck` looks again at mail whose result was temperror.

May import: steps 1-4, `delivery`, `report` (its cache, for recheck) and the
foundation modules.  Never `commands`.
"""
