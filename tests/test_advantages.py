"""Advantage estimators: hand-computed cases, degenerate groups, and equality with TRL's own code
path (``GRPOTrainer._generate_and_score_completions`` on scripted completions)."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import pytest
import torch

import kdsl
from kdsl.training import advantages as adv
from kdsl.training.advantages import AdvantageConfig

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
spec adv_demo version 1
input {
  gold: float
}
output {
  think: tag "think"
  reply: tag "answer"
  value: reply as float
}
level format gate {
  rule has_answer: present(reply)
}
level accuracy weight 2 {
  rule exact: value == gold
  rule close: when present(think): abs(value - gold) <= 1 weight 0.5
}
level style weight 0.5 {
  rule explains: when value > 3: length(think, words) >= 3
}
"""


@pytest.fixture(scope="module")
def program():
    return kdsl.loads(SPEC)


def scored(program, completions, gold):
    scores = program.score(completions, gold=gold)
    return scores, adv.components(program.module, scores)


def test_components_sum_to_the_reward(program):
    completions = ["<answer>4</answer>", "<think>a b c</think><answer>5</answer>", "nothing",
                   "<think>x</think><answer>2</answer>"]
    scores, comp = scored(program, completions, [4, 4, 4, 4])
    torch.testing.assert_close(comp.reward, scores.reward)
    torch.testing.assert_close(comp.level_scores()[:, 1], scores.levels["accuracy"])


def test_grpo_sum_by_hand(program):
    # format 1 + accuracy 2 x exact + style 0.5 x 0 (`explains` applies, but there is no think)
    completions = ["<answer>4</answer>", "<answer>5</answer>", "<answer>4</answer>", "none"]
    scores, comp = scored(program, completions, [4.0, 4.0, 4.0, 4.0])
    r = scores.reward.tolist()
    assert r == [3.0, 1.0, 3.0, 0.0]
    got, parts = adv.advantages(comp, 2, AdvantageConfig())
    std = (2 ** 0.5) * abs(r[0] - r[1]) / 2  # unbiased std of two values
    a0 = (r[0] - (r[0] + r[1]) / 2) / (std + 1e-4)
    b0 = (r[2] - (r[2] + r[3]) / 2) / ((2 ** 0.5) * abs(r[2] - r[3]) / 2 + 1e-4)
    torch.testing.assert_close(got, torch.tensor([a0, -a0, b0, -b0]))
    torch.testing.assert_close(parts.sum(1), got)
    none, _ = adv.advantages(comp, 2, AdvantageConfig(scale="none"))
    torch.testing.assert_close(none, torch.tensor([1.0, -1.0, 1.5, -1.5]))
    rloo, _ = adv.advantages(comp, 2, AdvantageConfig("rloo"))
    torch.testing.assert_close(rloo, torch.tensor([2.0, -2.0, 3.0, -3.0]))


def test_degenerate_groups_give_zero_not_nan(program):
    same = ["<answer>4</answer>"] * 4
    _, comp = scored(program, same, [4.0] * 4)
    for config in [AdvantageConfig(), AdvantageConfig(scale="batch"), AdvantageConfig(aggregate="per_level"),
                   AdvantageConfig(aggregate="per_rule"), AdvantageConfig("rloo")]:
        a, _ = adv.advantages(comp, 2, config)
        assert torch.equal(a, torch.zeros(4)), config
        one, _ = adv.advantages(comp, 1, config)  # groups of one completion: no baseline
        assert torch.equal(one, torch.zeros(4)), config
    # all-invalid rows: no answer, NaN gold; nothing becomes NaN
    _, comp = scored(program, ["x", "y", "<answer>inf</answer>", "<answer>1e999</answer>"],
                     [float("nan")] * 4)
    for config in [AdvantageConfig(aggregate=a) for a in ("sum", "per_level", "per_rule")]:
        a, parts = adv.advantages(comp, 2, config)
        assert torch.isfinite(a).all() and torch.isfinite(parts).all()


def test_per_rule_leaves_out_rows_no_rule_applies_to():
    program = kdsl.loads("""
spec sparse version 1
output {
  reply: tag "answer"
}
level only weight 1 {
  rule long_enough: when present(reply): length(reply, chars) >= 3
}
""")
    completions = ["<answer>abcd</answer>", "<answer>a</answer>", "no answer", "<answer>abc</answer>"]
    comp = adv.components(program.module, program.score(completions))
    a, _ = adv.advantages(comp, 4, AdvantageConfig(aggregate="per_rule"))
    assert a[2] == 0.0  # the rule does not apply to row 2: unscorable, advantage 0
    assert a[0] > 0 and a[3] > 0 and a[1] < 0
    torch.testing.assert_close(a[[0, 1, 3]].mean(), torch.tensor(0.0), atol=1e-6, rtol=0)


def test_token_advantages_follow_spans(program):
    completions = ["<answer>4</answer>", "<answer>5</answer>"]
    _, comp = scored(program, completions, [4.0, 4.0])
    seq, parts = adv.advantages(comp, 2, AdvantageConfig())
    exact = comp.names.index("exact")
    mask = torch.tensor([[True, True, False], [False, True, True]])
    tok = adv.token_advantages(seq, parts, [(exact, mask)])
    expected = seq[:, None] - parts[:, exact:exact + 1] * (~mask).float()
    torch.testing.assert_close(tok, expected)
    assert torch.equal(tok[0, :2], seq[0].expand(2)) and torch.equal(tok[1, 1:], seq[1].expand(2))


# ---- equality with TRL's own computation -------------------------------------------------------

ANSWERS = ["<answer>4</answer>", "<answer>5</answer>", "<think>so it is</think><answer>4</answer>",
           "<think>one two three four</think><answer>6</answer>", "<answer>nope</answer>", "nothing here",
           "<think>w</think><answer>3</answer>"]


def scripted_batch(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(ANSWERS) for _ in range(n)]


def trl_advantages(program, completions, gold, group, per, scale, aggregation):
    """Advantages as TRL's GRPOTrainer computes them for these completions."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tests.tiny import byte_level_tokenizer, tiny_causal_lm

    tokenizer = byte_level_tokenizer()
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for c in completions]
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == completions

    def rollout(prompts, trainer):
        return {"prompt_ids": [tokenizer("q")["input_ids"] for _ in prompts], "completion_ids": ids,
                "logprobs": [[0.0] * len(i) for i in ids]}

    n = len(completions)
    config = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="kdsl-trl-"), per_device_train_batch_size=n,
                        num_generations=group, max_completion_length=64, use_cpu=True, report_to="none",
                        scale_rewards=scale, multi_objective_aggregation=aggregation,
                        reward_weights=program.reward_weights(per), beta=0.0, bf16=False)
    rows = [{"prompt": "q", "gold": g} for g in gold]
    trainer = GRPOTrainer(model=tiny_causal_lm(tokenizer), reward_funcs=program.reward_functions(per=per),
                          args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          rollout_func=rollout)
    trainer.model.train()
    out = trainer._generate_and_score_completions(rows)
    return out["advantages"], trainer


CASES = [
    ("level", "group", "sum_then_normalize", AdvantageConfig(scale="group")),
    ("level", "batch", "sum_then_normalize", AdvantageConfig(scale="batch")),
    ("level", "none", "sum_then_normalize", AdvantageConfig(scale="none")),
    ("reward", "group", "sum_then_normalize", AdvantageConfig(scale="group")),
    ("level", "group", "normalize_then_sum", AdvantageConfig(aggregate="per_level")),
    ("rule", "group", "normalize_then_sum", AdvantageConfig(aggregate="per_rule")),
]


@pytest.mark.parametrize(("per", "scale", "aggregation", "config"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_equal_to_trl(program, per, scale, aggregation, config):
    completions = scripted_batch(12, seed=len(per) * 7 + len(scale) + len(aggregation))
    # a group whose completions are all equal (zero variance) and a mix of golds
    completions[8:12] = [completions[8]] * 4
    gold = [4.0] * 4 + [5.0] * 4 + [4.0] * 4
    theirs, _ = trl_advantages(program, completions, gold, 4, per, scale, aggregation)
    ours = program.advantages(program.score(completions, gold=gold), 4, config)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-6, rtol=1e-6)


def test_reward_functions_log_kdsl_metrics(program):
    completions = scripted_batch(8, seed=3)
    gold = [4.0] * 8
    _, trainer = trl_advantages(program, completions, gold, 4, "level", "group", "sum_then_normalize")
    logged = trainer._metrics["train"]
    scores = program.score(completions, gold=gold)
    for level in program.level_names:
        assert logged[f"kdsl/level/{level}"][-1] == pytest.approx(scores.levels[level].mean().item(), abs=1e-6)
    applies = scores.applies["exact"].float()
    rate = (scores.rules["exact"] * applies).sum() / applies.sum()
    assert logged["kdsl/rule/exact"][-1] == pytest.approx(rate.item(), abs=1e-6)
    assert logged["rewards/accuracy/mean"][-1] == pytest.approx(scores.levels["accuracy"].mean().item(), abs=1e-6)


def test_two_processes_give_the_same_advantages_as_one(tmp_path):
    """Groups of 4 over 2 processes of 6 rows each: group 2 is split across the processes."""
    import os
    import socket
    import subprocess
    import sys

    import kdsl.training.advantages  # noqa: F401  (the script reaches it as kdsl.training.advantages)

    script = Path(__file__).with_name("distributed_advantages.py")
    out = tmp_path / "two.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    # accelerate's multi-process launcher (torchrun underneath); Accelerator(cpu=True) in the
    # script makes the processes talk over gloo on this CPU machine.
    with socket.socket() as probe:  # a free port, so concurrent runs on one machine do not clash
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
              str(script), str(out), str(ROOT)]
    result = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["processes"] == 2
    program = kdsl.loads(SPEC)
    completions = scripted_batch(12, seed=11)
    scores = program.score(completions, gold=[4.0] * 6 + [5.0] * 6)
    for aggregate, values in two["advantages"].items():
        one = program.advantages(scores, 4, AdvantageConfig(aggregate=aggregate))
        assert torch.count_nonzero(one) > 0
        torch.testing.assert_close(torch.tensor(values), one, atol=1e-6, rtol=1e-6)
