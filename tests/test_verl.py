"""kdsl as verl's custom reward function, called by verl's own code: the config loader
(`get_custom_reward_fn`, which imports kdsl/integrations/verl.py from its file path) and the batch reward
manager, on a `DataProto` built from the land-cover example's completions.

verl pins its own transformers, so it lives in an environment of its own: `.ci/run` makes it
(`.venv-verl`, with verl and this checkout) and names its Python in `KDSL_VERL_PYTHON`. The
test runs verl there and compares with the scores computed here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import kdsl
import kdsl.integrations.verl

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "landsat_landcover.kd"
ROWS = [json.loads(line) for line in (ROOT / "examples" / "landsat_completions.jsonl").read_text().splitlines()]
VERL_PYTHON = os.environ.get("KDSL_VERL_PYTHON")

IN_VERL = r"""
import json, sys
import numpy as np
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.reward import get_custom_reward_fn
from verl.workers.reward_manager.batch import BatchRewardManager

rows, module_file, spec, tests = json.loads(sys.stdin.read())
sys.path.insert(0, tests)  # tests/tiny.py (a `tests` package installed there would shadow it)
from tiny import byte_level_tokenizer
tokenizer = byte_level_tokenizer()
prompts = [tokenizer.encode("Classify this Landsat 8 pixel.") for _ in rows]
responses = [tokenizer.encode(r["completion"]) for r in rows]
width_p, width_r = max(map(len, prompts)), max(map(len, responses))
pad = tokenizer.pad_token_id
prompt_ids = torch.tensor([[pad] * (width_p - len(p)) + p for p in prompts])  # left-padded, as verl
response_ids = torch.tensor([r + [pad] * (width_r - len(r)) for r in responses])
mask = torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (width_r - len(r))
                     for p, r in zip(prompts, responses)])
data = DataProto.from_dict(
    tensors={"prompts": prompt_ids, "responses": response_ids, "attention_mask": mask},
    non_tensors={"data_source": np.array(["landsat"] * len(rows), dtype=object),
                 "reward_model": np.array([{"ground_truth": r["label"]} for r in rows], dtype=object),
                 "extra_info": np.array([{"sr": r["sr"]} for r in rows], dtype=object)})
config = OmegaConf.create({"reward": {"custom_reward_function": {
    "path": module_file, "name": "compute_score",
    "reward_kwargs": {"spec": spec, "inputs": {"label": "ground_truth", "sr": "extra_info.sr"}}}}})
manager = BatchRewardManager(tokenizer, num_examine=0, compute_score=get_custom_reward_fn(config))
out = manager(data, return_dict=True)
lengths = [len(r) for r in responses]
print(json.dumps({"rewards": [out["reward_tensor"][i, n - 1].item() for i, n in enumerate(lengths)],
                  "elsewhere": float(out["reward_tensor"].abs().sum() - sum(abs(out["reward_tensor"][i, n - 1].item()) for i, n in enumerate(lengths))),
                  "extra": {k: list(map(float, v)) for k, v in out["reward_extra_info"].items()}}))
"""


@pytest.mark.skipif(not VERL_PYTHON, reason="needs verl's own environment: KDSL_VERL_PYTHON "
                    "(.ci/run makes it)")
def test_verl_batch_reward_manager_scores_with_the_spec():
    result = subprocess.run([VERL_PYTHON, "-c", IN_VERL], input=json.dumps([ROWS, kdsl.integrations.verl.__file__, str(SPEC), str(ROOT / "tests")]),
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    scores = kdsl.load(SPEC).score([r["completion"] for r in ROWS], label=[r["label"] for r in ROWS],
                                   sr=[r["sr"] for r in ROWS])
    assert got["rewards"] == pytest.approx(scores.reward.tolist(), abs=1e-6)
    assert got["elsewhere"] == 0.0  # the reward sits on each response's last token only
    for name, values in scores.levels.items():
        assert got["extra"][f"level.{name}"] == pytest.approx(values.tolist(), abs=1e-6)
    assert got["extra"]["score"] == pytest.approx(scores.reward.tolist(), abs=1e-6)


def test_inputs_come_from_the_mapping_or_extra_info():
    program = kdsl.load(SPEC)
    columns = kdsl.integrations.verl.columns_for(program, ["s", "s"], ["Urban", "Water"],
                                    [{"sr": [0.1] * 7}, {"sr": [0.2] * 7}], {"label": "ground_truth"})
    assert columns == {"label": ["Urban", "Water"], "sr": [[0.1] * 7, [0.2] * 7]}
    with pytest.raises(kdsl.errors.KdslDataError, match=r"row 1: extra_info has no `sr` \(it has band\)"):
        kdsl.integrations.verl.columns_for(program, ["s", "s"], ["Urban", "Water"], [{"sr": [0.1] * 7}, {"band": 1}],
                              {"label": "ground_truth", "sr": "extra_info.sr"})
    with pytest.raises(kdsl.errors.KdslDataError, match="no value for input `label`"):
        kdsl.integrations.verl.columns_for(program, ["s"], ["Urban"], [{"sr": [0.1] * 7}])
    with pytest.raises(kdsl.errors.KdslError, match="inputs maps colour, which"):
        kdsl.integrations.verl.columns_for(program, ["s"], ["Urban"], [{}], {"colour": "ground_truth"})
    # compute_score in this process gives the same dicts verl receives
    out = kdsl.integrations.verl.compute_score(["s"], [ROWS[0]["completion"]], [ROWS[0]["label"]], [{"sr": ROWS[0]["sr"]}],
                                  spec=str(SPEC), inputs={"label": "ground_truth"})
    assert set(out[0]) == {"score", *(f"level.{n}" for n in program.level_names)}
