"""What kdsl costs inside a GRPO step: its reward, advantage and mask work as a share of step time.

Two measurements, both through the real code path (``KdslGRPOTrainer`` in TRL's ``GRPOTrainer``):

1. **The tiny CPU run**: ``kdsl train``'s embedded default (the tiny land-cover model on the real
   Landsat rows, ``kdsl.example.landsat.DEFAULT_TRAINING``) for ``--steps`` steps. Every call of kdsl's
   reward functions and of ``KdslGRPOTrainer.kdsl_apply`` (advantages from gathered rewards,
   token-level spans, loss masks) is timed; the share is their total over the training time.
2. **kdsl's work on a 7B-sized batch**: 64 completions of about 2 KB (8 prompts x 8 generations,
   generated text of the length a 7B reasoning model writes; synthetic, seeded) scored by the
   land-cover spec plus a rule ``on`` the answer and ``mask after "</answer>"``, so every
   token-level path runs. A 7B step cannot run here; the share for one is this time over published
   and lower-bound step times (see benchmarks/README.md).

    python benchmarks/bench_train_share.py [--steps 40] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from timing import results_path

import kdsl
from kdsl.example import landsat
from kdsl.training.train import EMBEDDED_MODEL

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "landsat_landcover.kd"

# The example spec, plus a rule that acts on the answer's tokens only and a loss mask: the
# token-level work that a 7B run with such a spec does on every batch.
TOKEN_LEVEL_RULES = """
level answer_only weight 0.5 {
  rule answer_is_a_class: present(answer) on reply
}
mask after "</answer>"
"""


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Timed:
    """Wall time spent in kdsl's reward functions and in ``kdsl_apply`` of one trainer."""

    def __init__(self, trainer, device):
        self.seconds = 0.0
        self.calls = 0
        self.device = device
        trainer.reward_funcs = [self._wrap(f) for f in trainer.reward_funcs]
        apply = trainer.kdsl_apply

        def timed_apply(output):
            return self._time(apply, output)

        trainer.kdsl_apply = timed_apply

    def _time(self, fn, *args, **kwargs):
        _sync(self.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync(self.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def _wrap(self, fn):
        def timed(*args, **kwargs):
            return self._time(fn, *args, **kwargs)

        timed.__name__ = fn.__name__
        return timed


def _trainer(program, config, rows, rollout=None):
    from datasets import Dataset

    from kdsl.training.trl import KdslGRPOTrainer

    kwargs = {"rollout_func": rollout} if rollout else {}
    return KdslGRPOTrainer(program, model=str(EMBEDDED_MODEL), args=config,
                           train_dataset=Dataset.from_list(rows), **kwargs)


def tiny_run(steps: int, device: str) -> dict:
    from trl import GRPOConfig

    program = kdsl.load(SPEC)
    train_rows, _ = landsat.train_heldout_split(landsat.landsat_rows())
    settings = dict(landsat.DEFAULT_TRAINING, max_steps=steps, save_strategy="no",
                    report_to="none", disable_tqdm=True, logging_steps=steps,
                    use_cpu=device == "cpu")
    config = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="kdsl-share-"), **settings)
    trainer = _trainer(program, config, train_rows)
    timed = Timed(trainer, device)
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    return {"steps": steps, "batch": config.per_device_train_batch_size,
            "train_seconds": round(total, 3), "kdsl_seconds": round(timed.seconds, 4),
            "kdsl_ms_per_step": round(1000 * timed.seconds / steps, 3),
            "step_ms": round(1000 * total / steps, 1), "share": timed.seconds / total}


def long_completions(n: int, seed: int = 0) -> list[str]:
    """Completions of about 2 KB each: reasoning text, then an answer, sometimes trailing text
    (synthetic, seeded)."""
    rng = random.Random(seed)
    words = ("the near infrared reflectance of band five is well above red so NDVI is high while "
             "green against SWIR gives MNDWI below zero and the NDBI stays negative").split()
    out = []
    for _ in range(n):
        think = " ".join(rng.choice(words) for _word in range(330))
        answer = rng.choice(landsat.CLASSES)
        tail = " I am confident about this classification." if rng.random() < 0.3 else ""
        out.append(f"<think>{think}</think><answer>{answer}</answer>{tail}")
    return out


def seven_b_batch(device: str, repeats: int) -> dict:
    """kdsl's reward + advantage + mask time on one 7B-sized batch, through ``KdslGRPOTrainer``."""
    from trl import GRPOConfig

    program = kdsl.loads(SPEC.read_text() + TOKEN_LEVEL_RULES, name=str(SPEC))
    train_rows, _ = landsat.train_heldout_split(landsat.landsat_rows())
    rows = [train_rows[i // 8] for i in range(64)]  # 8 prompts x 8 generations
    texts = long_completions(64)
    config = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="kdsl-share-"), num_generations=8,
                        per_device_train_batch_size=64, max_completion_length=4096, beta=0.0,
                        report_to="none", use_cpu=device == "cpu")
    holder = {}

    def rollout(prompts, trainer):
        tok = trainer.processing_class
        ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
        holder["tokens"] = sum(map(len, ids)) / len(ids)
        return {"prompt_ids": [tok(p)["input_ids"] for p in prompts], "completion_ids": ids,
                "logprobs": [[0.0] * len(i) for i in ids]}

    trainer = _trainer(program, config, rows, rollout)
    trainer.model.train()
    timed = Timed(trainer, device)
    per_batch = []
    for _ in range(repeats):
        before = timed.seconds
        output = trainer._generate_and_score_completions(rows)
        per_batch.append(timed.seconds - before)
    assert output["advantages"].shape == output["completion_ids"].shape  # token-level ran
    assert "tool_mask" in output
    return {"completions": 64, "chars": round(statistics.mean(len(t) for t in texts)),
            "tokens_of_tiny_tokenizer": round(holder["tokens"]),
            "kdsl_ms": round(1000 * statistics.median(per_batch), 2)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    tiny = tiny_run(args.steps, args.device)
    big = seven_b_batch(args.device, args.repeats)
    print(f"tiny CPU run: {tiny['steps']} steps of {tiny['batch']} completions, "
          f"{tiny['step_ms']:.0f} ms a step; kdsl {tiny['kdsl_ms_per_step']:.2f} ms a step "
          f"= {100 * tiny['share']:.2f}% of step time")
    print(f"7B-sized batch: {big['completions']} completions of {big['chars']} chars, "
          f"kdsl {big['kdsl_ms']:.1f} ms (reward functions + advantages + spans + mask)")
    for label, seconds in STEP_SECONDS.items():
        print(f"  share of a {seconds:g} s step ({label}): {100 * big['kdsl_ms'] / 1000 / seconds:.3f}%")
    result = {"tiny_run": tiny, "seven_b_batch": big, "device": args.device,
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    out = results_path("bench_train_share", args.device)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


# Step times to set kdsl's time against (benchmarks/README.md derives and cites them): a lower bound
# for a 7B GRPO step of 64 completions of 512 tokens on one H100 (generation at full memory
# bandwidth, LoRA training and reference log-probs at full bf16 throughput), and a step time that
# a published GRPO run reports.
STEP_SECONDS = {"7B lower bound, one H100": 4.0, "published GRPO step": 80.0}


if __name__ == "__main__":
    main()
