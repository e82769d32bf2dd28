"""`kdsl check` on a small spec: wall time from process start to exit, and whether torch loads.

    python benchmarks/bench_check.py [--runs 10] [SPEC]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import sys; from kdsl.cli import main; rc = main(['check', sys.argv[1]]); "
         "print('torch imported:', 'torch' in sys.modules, file=sys.stderr); sys.exit(rc)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec", nargs="?", default=str(ROOT / "examples" / "landsat_landcover.kd"))
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    command = [sys.executable, "-m", "kdsl.cli", "check", args.spec]
    subprocess.run(command, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    probe = subprocess.run([sys.executable, "-c", PROBE, args.spec], capture_output=True, text=True)
    torch_loaded = "torch imported: True" in probe.stderr
    results = {"spec": Path(args.spec).name, "runs": args.runs, "median_seconds": statistics.median(times),
               "max_seconds": max(times), "torch_imported": torch_loaded}
    print(f"kdsl check {Path(args.spec).name}: median {results['median_seconds']:.3f} s, "
          f"max {results['max_seconds']:.3f} s over {args.runs} runs (process start to exit); "
          f"torch imported: {'yes' if torch_loaded else 'no'}")
    out = Path(__file__).parent / "results" / "bench_check.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
