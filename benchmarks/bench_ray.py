"""`kdsl score --engine ray` against the local engine: completions/s at 1 and 2 workers (Ray
actors or local processes), on the same file, in one run; Ray's start-up is timed apart.

The data is the land-cover example's completions (`examples/landsat_completions.jsonl`),
repeated to N rows (default 100,000) and written to a temporary jsonl file. Both engines must
write the same output before anything is timed.

    python benchmarks/bench_ray.py [--n 100000] [--batch-size 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray
from timing import results_path

import kdsl
from kdsl.tools import scoring

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "landsat_landcover.kd"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    program = kdsl.load(SPEC)
    rows = (ROOT / "examples" / "landsat_completions.jsonl").read_text().splitlines()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "rows.jsonl"
        data.write_text("".join(rows[i % len(rows)] + "\n" for i in range(args.n)))

        def score(engine: str, workers: int, out: str) -> float:
            start = time.perf_counter()
            scoring.score_file(program, data, out=Path(folder) / out, batch_size=args.batch_size,
                               workers=workers, report=lambda m: None, spec=SPEC, engine=engine)
            return time.perf_counter() - start

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        figures = []
        for workers in (1, 2):
            local = score("local", workers, f"local{workers}.jsonl")
            on_ray = score("ray", workers, f"ray{workers}.jsonl")
            same = (Path(folder) / f"local{workers}.jsonl").read_bytes() == (Path(folder) / f"ray{workers}.jsonl").read_bytes()
            assert same, "the engines wrote different output"
            figures.append({"workers": workers, "local_seconds": round(local, 2),
                            "local_completions_per_second": round(args.n / local),
                            "ray_seconds": round(on_ray, 2),
                            "ray_completions_per_second": round(args.n / on_ray)})
        ray.shutdown()
    result = {"rows": args.n, "batch_size": args.batch_size, "cpus": os.cpu_count(),
              "ray_init_seconds": round(ray_start, 2), "figures": figures}
    print(f"{args.n:,} rows; ray.init {result['ray_init_seconds']} s (not in the figures below)")
    print(f"{'workers':>7} {'local s':>8} {'local c/s':>10} {'ray s':>7} {'ray c/s':>8}")
    for f in figures:
        print(f"{f['workers']:>7} {f['local_seconds']:>8} {f['local_completions_per_second']:>10} "
              f"{f['ray_seconds']:>7} {f['ray_completions_per_second']:>8}")
    results_path("bench_ray").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
