"""How quick this machine is right now, to read a benchmark's figures against.

A shared VM drifts in speed from minute to minute (by 1.6x on the one these
benchmarks were written on), so each benchmark prints this reference beside
its figures: the best of five timings of ``sum(range(10**6))`` in the same
interpreter (Debian's python3 there: 9.5 ms when quick, 15 in slow spells).
"""

from __future__ import annotations

import timeit


def reference_ms() -> float:
    """Gives the best of five timings of sum(range(10**6)), in milliseconds."""
    return min(timeit.repeat("sum(range(10**6))", number=5, repeat=5)) / 5 * 1000


def reference_line() -> str:
    """Gives the reference as one line for a benchmark's output."""
    return f"machine reference: sum(range(10**6)) takes {reference_ms():.1f} ms (~9.5 when quick)"
