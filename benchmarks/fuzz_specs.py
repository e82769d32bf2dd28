"""A long fuzzing campaign over mutated specs: every case checked, and compiled, loaded and scored
when it checks (tests/spec_fuzzer.py says how mutants are made).

    python benchmarks/fuzz_specs.py --cases 100000 [--seed 0] [--workers 2]

Prints and writes (benchmarks/results/fuzz_specs.json) the cases run, how many scored and how many
were rejected with a KdslError, every exception of another kind with the mutant that raised it
(written to benchmarks/results/fuzz_failures/), and the cases that took over 2 s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from spec_fuzzer import Mutator, run_case  # noqa: E402

SLOW_SECONDS = 2.0


def campaign(args: tuple[int, int, int]) -> dict:
    """``count`` mutants from mutator seed ``seed``; ``worker`` only names the failures."""
    seed, count, worker = args
    import torch

    torch.set_num_threads(1)
    mutator = Mutator(seed)
    outcomes: Counter = Counter()
    failures, slow = [], []
    longest = (0.0, "")
    for index in range(count):
        mutant = mutator.mutant()
        started = time.perf_counter()
        try:
            outcome = run_case(mutant)
            outcomes[f"{outcome.kind} at {outcome.stage}"] += 1
        except Exception as err:  # noqa: BLE001 - every other exception is a finding
            outcomes["exception"] += 1
            name = f"w{worker}-{index}"
            folder = Path(__file__).parent / "results" / "fuzz_failures"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.kd").write_text(mutant.text, encoding="utf-8", errors="surrogatepass")
            failures.append({"case": name, "seed": str(mutant.seed.relative_to(ROOT)),
                             "edits": list(mutant.edits), "error": f"{type(err).__name__}: {err}"[:300],
                             "where": traceback.extract_tb(err.__traceback__)[-1].filename})
        seconds = time.perf_counter() - started
        if seconds > longest[0]:
            longest = (seconds, f"{mutant.seed.name}: {'; '.join(mutant.edits)}")
        if seconds > SLOW_SECONDS:
            slow.append({"seconds": round(seconds, 2), "seed": mutant.seed.name,
                         "edits": list(mutant.edits)})
    return {"outcomes": outcomes, "failures": failures, "slow": slow, "longest": longest}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    per_worker = [args.cases // args.workers + (1 if k < args.cases % args.workers else 0)
                  for k in range(args.workers)]
    jobs = [(args.seed * 1000 + k, count, k) for k, count in enumerate(per_worker)]
    started = time.perf_counter()
    if args.workers == 1:
        parts = [campaign(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            parts = pool.map(campaign, jobs)
    seconds = time.perf_counter() - started
    outcomes: Counter = Counter()
    for part in parts:
        outcomes.update(part["outcomes"])
    failures = [f for part in parts for f in part["failures"]]
    slow = [s for part in parts for s in part["slow"]]
    longest = max(part["longest"] for part in parts)
    results = {"cases": args.cases, "seed": args.seed, "workers": args.workers,
               "seconds": round(seconds, 1), "outcomes": dict(sorted(outcomes.items())),
               "exceptions": len(failures), "cases_over_2s": len(slow),
               "longest_case": {"seconds": round(longest[0], 3), "mutant": longest[1]},
               "failures": failures[:50], "slow": slow[:50]}
    print(f"{args.cases:,} mutated specs in {seconds:.0f} s on {args.workers} workers")
    for kind, count in sorted(outcomes.items()):
        print(f"  {kind:<22} {count:>8,}")
    print(f"exceptions other than KdslError: {len(failures)}; cases over {SLOW_SECONDS:g} s: "
          f"{len(slow)}; longest case {longest[0]:.2f} s ({longest[1][:100]})")
    for failure in failures[:20]:
        print(f"  {failure['case']} ({failure['seed']}; {'; '.join(failure['edits'])}): "
              f"{failure['error'][:160]}")
    out = Path(__file__).parent / "results" / "fuzz_specs.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
