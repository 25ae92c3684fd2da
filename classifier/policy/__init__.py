"""Step 3, the verdict: from the results of the checks to inbox, junk or quarantine.

`classifier.policies` (a foundation module: the config loads it) reads the
`[policy]` and `[users."addr"]` TOML tables into `Policy` values; `verdict`
combines one message's `AuthFacts` with a policy into a `Verdict` with its
reasons, the one place where results are weighed.

May import: the foundation modules, `lookup`, `envelope` and `auth`.
"""
