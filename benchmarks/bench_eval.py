"""``kdsl eval`` throughput against ``model.generate`` called directly, in one run.

Both sides generate greedy completions for the same rows at the same batch size with the same
model; the direct side tokenizes, generates and decodes, nothing more. ``kdsl eval`` adds its
bookkeeping, the spec's scores of every completion, the bootstrap intervals and pass@k. Its cost
on top is the difference, and the target is under 5%.

    python benchmarks/bench_eval.py [--model PATH_OR_GGUF] [--rows 120] [--batch-size 30] [--samples 1]
                                    [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_time, results_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the embedded tiny model")
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=30)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    import kdsl
    from kdsl.example import landsat
    from kdsl.io.loading import load_model
    from kdsl.tools import evaluation
    from kdsl.training.train import EMBEDDED_MODEL

    program = kdsl.load(Path(__file__).resolve().parents[1] / "examples" / "landsat_landcover.kd")
    rows = (landsat.landsat_rows() * ((args.rows + 119) // 120))[:args.rows]
    model, tokenizer = load_model(args.model or str(EMBEDDED_MODEL), device=args.device)
    config = evaluation.EvalConfig(samples=args.samples, max_new_tokens=args.max_new_tokens,
                                   batch_size=args.batch_size, temperature=1.0 if args.samples > 1 else None)

    def direct():
        # what a user would write by hand: tokenize as the trainer does, generate, decode
        texts = []
        tokenizer.padding_side = "left"
        for start in range(0, len(rows), args.batch_size):
            batch = tokenizer([r["prompt"] for r in rows[start:start + args.batch_size]],
                              return_tensors="pt", padding=True).to(args.device)
            torch.manual_seed(0)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=args.max_new_tokens,
                                     do_sample=args.samples > 1, num_return_sequences=args.samples,
                                     pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                                     eos_token_id=tokenizer.eos_token_id,
                                     **({} if args.samples > 1 else {"temperature": None, "top_p": None,
                                                                     "top_k": None}),
                                     **({"temperature": 1.0, "top_k": 0} if args.samples > 1 else {}))
            texts.extend(tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True))
        return texts

    def through_kdsl():
        return evaluation.evaluate(program, model, tokenizer, rows, config)

    # Interleave the two, so a change in the machine's load falls on both.
    direct_times, kdsl_times = [], []
    direct()
    through_kdsl()
    for _ in range(args.repeats):
        direct_times.append(median_time(direct, 1, warm_up=False))
        kdsl_times.append(median_time(through_kdsl, 1, warm_up=False))
    import statistics

    completions = args.rows * args.samples
    d, k = statistics.median(direct_times), statistics.median(kdsl_times)
    result = evaluation.evaluate(program, model, tokenizer, rows, config)
    figures = {
        "model": args.model or "embedded tiny model", "rows": args.rows, "samples": args.samples,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "device": args.device,
        "threads": torch.get_num_threads(),
        "direct_seconds": round(d, 3), "kdsl_eval_seconds": round(k, 3),
        "direct_completions_per_second": round(completions / d, 1),
        "kdsl_eval_completions_per_second": round(completions / k, 1),
        "overhead_percent": round(100 * (k - d) / d, 2),
        "scoring_seconds": round(result.score_seconds, 4),
        "scoring_percent_of_generation": round(100 * result.score_seconds / result.generate_seconds, 2),
        "repeats": args.repeats, "direct_times": [round(t, 3) for t in direct_times],
        "kdsl_times": [round(t, 3) for t in kdsl_times],
    }
    print(json.dumps(figures, indent=2))
    name = "bench_eval" if args.model is None else "bench_eval_" + Path(args.model).stem.split(".")[0]
    results_path(name, args.device).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
