"""Run under ``accelerate launch --num_processes 2 --cpu``: each process scores its share of a fixed
batch (a prompt's group split across the two), and kdsl's gathered advantages are written out."""

from __future__ import annotations

import json
import sys

from accelerate import Accelerator

import kdsl
from kdsl.training.trl import gathered_advantages

sys.path.insert(0, sys.argv[2])
from tests.test_advantages import SPEC, scripted_batch  # noqa: E402

GROUP = 4


def main(out: str) -> None:
    accelerator = Accelerator(cpu=True)
    program = kdsl.loads(SPEC)
    completions = scripted_batch(12, seed=11)
    gold = [4.0] * 6 + [5.0] * 6
    n = len(completions) // accelerator.num_processes
    rows = slice(accelerator.process_index * n, (accelerator.process_index + 1) * n)
    scores = program.score(completions[rows], gold=gold[rows])
    results = {}
    for aggregate in ("sum", "per_level", "per_rule"):
        config = kdsl.training.advantages.AdvantageConfig(aggregate=aggregate)
        local, _parts, _all = gathered_advantages(accelerator, program.module, scores, GROUP, config)
        results[aggregate] = accelerator.gather(local).tolist()
    if accelerator.is_main_process:
        with open(out, "w") as f:
            json.dump({"processes": accelerator.num_processes, "advantages": results}, f)
    # Leave together and close the process group: a gloo group torn down by interpreter exit
    # can abort one process ("terminate called without an active exception").
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
