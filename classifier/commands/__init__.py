"""The `authsieve` command line: argument parsing, output and exit codes only.

`main` is the entry point (check, annotate, pipe, serve, and the plug-in
table of the other commands); `watch` holds watch and quarantine, `report`
report, `recheck` recheck.  The top of the house: it may import every part,
and no part imports it.
"""
