"""The timing every benchmark here uses: the median of repeated runs."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int, warm_up: bool = True) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, after one untimed call unless ``warm_up``
    is false (for work whose first run is as representative as the others, such as a process)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
