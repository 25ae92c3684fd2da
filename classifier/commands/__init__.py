"""The `authsieve` command line: argument parsing, output and exit codes only.

`main` is the entry point and the one table of commands (check, annotate,
pipe and serve live there); `watch` holds watch and quarantine, `report`
report, `recheck` recheck; `options` the options they share.  Each command
module adds its own sub-parser and handler, and none imports `main`.  The
top of the house: it may import every part, and no part imports it.
"""
