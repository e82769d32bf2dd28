"""`kdsl test` on a spec with 1,000 examples: time after start-up (imports done) to a full report.

The spec is the land-cover example (examples/landsat_landcover.kd) with 1,000 generated example
blocks (synthetic, seeded): real Landsat rows from the `spyndex` package, each with a completion
that claims a random class, and expectations on rules, levels, the reward and lets. Timed: reading,
parsing, checking and compiling the spec, scoring every case, checking every expectation, and
formatting the report; the process start and imports are measured apart.

    python benchmarks/bench_test.py [--n 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_spec(n: int, seed: int = 0) -> str:
    from kdsl.example import landsat

    rng = random.Random(seed)
    rows = landsat.landsat_rows()
    base = (ROOT / "examples" / "landsat_landcover.kd").read_text()
    base = base[: base.index("example ")]
    blocks = []
    for i in range(n):
        row = rows[rng.randrange(len(rows))]
        claim = rng.choice(landsat.CLASSES)
        argued = rng.random() < 0.8  # otherwise the format gate closes and zeroes accuracy
        think = "NDVI from red and near infrared reflectance decides it" if argued else "hm"
        completion = f"<think>{think}</think><answer>{claim}</answer>"
        right = claim == row["label"]
        expect = ["correct" if right else "not correct", "one_answer",
                  f"level.accuracy == {1 if right and argued else 0}", "reward >= 0", "ndvi > -1"]
        values = ", ".join(f"{v:.4f}" for v in row["sr"])
        blocks.append(f'example "case {i}" {{\n  completion: {json.dumps(completion)}\n'
                      f'  label: {row["label"]}\n  sr: [{values}]\n  expect {", ".join(expect)}\n}}\n')
    return base + "\n".join(blocks)


def run_once(path: Path) -> tuple[float, int, int]:
    from kdsl.tools import testing

    start = time.perf_counter()
    suite = testing.run_suite(testing.load_suite(path))
    report = testing.format_results([suite], {str(path): {c.id for c in suite.cases}})
    seconds = time.perf_counter() - start
    passed = sum(o.passed for o in suite.outcomes)
    assert report
    return seconds, passed, len(suite.outcomes)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="kdsl-bench-test-"))
    path = folder / "many_examples.kd"
    path.write_text(make_spec(args.n))
    # Start-up, timed apart below: the interpreter, the imports (torch among them) and the parser
    # tables, which every kdsl process builds once.
    import torch  # noqa: F401

    import kdsl.runtime.program  # noqa: F401
    import kdsl.tools.testing  # noqa: F401
    from kdsl.frontend.parser import _lark

    _lark()
    times = []
    for _ in range(args.repeats):
        seconds, passed, total = run_once(path)
        times.append(seconds)
    assert passed == total == args.n, f"{passed} of {total} cases passed"
    start = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "kdsl.cli", "test", str(path)], capture_output=True,
                         text=True)
    process = time.perf_counter() - start
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, kdsl.runtime.program, kdsl.tools.testing, kdsl.cli; "
                    "from kdsl.frontend.parser import _lark; _lark()"], check=True)
    startup = time.perf_counter() - start
    result = {"examples": args.n, "first_run_seconds": round(times[0], 3),
              "median_seconds": round(statistics.median(times), 3),
              "whole_process_seconds": round(process, 2), "startup_seconds": round(startup, 2)}
    print(f"kdsl test, {args.n} examples, after start-up: first run {times[0]:.3f} s, median of "
          f"{args.repeats} {result['median_seconds']:.3f} s; the whole `kdsl test` process "
          f"{process:.2f} s, of which start-up (interpreter, imports, parser tables) {startup:.2f} s")
    (ROOT / "benchmarks" / "results" / "bench_test.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
