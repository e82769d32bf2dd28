"""How work grows with input size, without asserting any wall-clock time.

``cpu_seconds`` is the process's CPU time (what other programs on a busy machine do not add to),
the least of a few runs; tests compare it between two sizes of the same input in the same test, so
a linear path and a quadratic one are told apart whatever the machine's speed."""

from __future__ import annotations

import time


def cpu_seconds(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def growth(make, run, small: int, factor: int = 8) -> float:
    """How many times longer ``run(make(factor * small))`` takes than ``run(make(small))``:
    about ``factor`` for linear work, ``factor ** 2`` for quadratic."""
    little, big = make(small), make(small * factor)
    run(little)  # warm caches and lazy imports
    return cpu_seconds(lambda: run(big)) / max(cpu_seconds(lambda: run(little)), 1e-4)
