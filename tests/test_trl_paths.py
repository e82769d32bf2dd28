"""TRL's newer paths: reward functions that pickle into a spawned process (the asynchronous GRPO
trainer scores there), `None` for rules that do not apply, a per-completion verdict through
`log_extra`, GRPOConfig loss options passed through `kdsl train --config`, and a clear error
when a config field contradicts the spec's `advantage` statement."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import kdsl
from kdsl.errors import KdslError
from kdsl.training.rewards import verdicts
from kdsl.training.train import TrainOptions, build_config, train

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "landsat_landcover.kd"
ROWS = [json.loads(line) for line in (ROOT / "examples" / "landsat_completions.jsonl").read_text().splitlines()]
COMPLETIONS = [r["completion"] for r in ROWS]
COLUMNS = {"label": [r["label"] for r in ROWS], "sr": [r["sr"] for r in ROWS]}

CHILD = """
import json, pickle, sys
functions = pickle.load(open(sys.argv[1], "rb"))
completions, columns = json.load(open(sys.argv[2]))
assert len({id(f.kdsl_cache) for f in functions}) == 1, "the functions no longer share one cache"
print(json.dumps({f.__name__: f(completions=completions, **columns) for f in functions}))
"""


@pytest.mark.parametrize("per", ["level", "rule", "reward"])
def test_reward_functions_pickle_and_score_in_a_spawned_process(per, tmp_path):
    program = kdsl.load(SPEC)
    functions = program.reward_functions(per=per)
    here = {f.__name__: f(completions=COMPLETIONS, **COLUMNS) for f in functions}
    (tmp_path / "functions.pkl").write_bytes(pickle.dumps(functions))
    (tmp_path / "batch.json").write_text(json.dumps([COMPLETIONS, COLUMNS]))
    result = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "functions.pkl"),
                             str(tmp_path / "batch.json")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    there = json.loads(result.stdout)
    assert list(there) == list(here)
    for name in here:
        assert there[name] == pytest.approx(here[name]) if None not in here[name] else there[name] == [
            None if v is None else pytest.approx(v) for v in here[name]]
    if per == "rule":  # a rule that does not apply to a row is None there, as TRL expects
        assert any(v is None for values in here.values() for v in values)


def test_log_extra_gets_a_verdict_per_completion():
    program = kdsl.load(SPEC)
    logged = {}
    functions = program.reward_functions()
    # the example rows, and one well-formed answer that is wrong
    completions = [*COMPLETIONS, "<think>the water index is high so it is water</think><answer>Water</answer>"]
    columns = {name: [*values, values[0]] for name, values in COLUMNS.items()}
    for function in functions:
        function(completions=completions, log_extra=lambda column, values: logged.setdefault(column, values),
                 **columns)
    assert list(logged) == ["kdsl"] and len(logged["kdsl"]) == len(completions)
    scores = program.score(completions, **columns)
    for i, verdict in enumerate(logged["kdsl"]):
        failed = [r.name for r in program.ir.rules
                  if bool(scores.applies[r.name][i]) and float(scores.rules[r.name][i]) < 1.0]
        if not failed:
            assert verdict == "every rule that applies holds"
        elif float(scores.levels["format"][i]) < 1.0:
            assert verdict.startswith("gate format closed: ")
        else:
            assert verdict == f"failed: {', '.join(failed)}"
    assert logged["kdsl"] == verdicts(program, scores)
    # the example file holds each kind: a closed gate, a wrong answer, a completion that passes
    assert {v.split(":")[0].split(" closed")[0] for v in logged["kdsl"]} >= {
        "gate format", "failed", "every rule that applies holds"}


def _options(tmp_path, config: str) -> TrainOptions:
    (tmp_path / "train.yaml").write_text(config)
    return TrainOptions(spec=str(SPEC), config=str(tmp_path / "train.yaml"), output_dir=str(tmp_path / "out"))


@pytest.mark.parametrize("config, field, value", [
    ("loss_type: dr_grpo\n", "loss_type", "dr_grpo"),
    ("loss_type: dapo\n", "loss_type", "dapo"),
    ("importance_sampling_level: sequence\n", "importance_sampling_level", "sequence"),
])
def test_loss_options_pass_through_the_config(config, field, value, tmp_path):
    built = build_config(_options(tmp_path, config), {}, tmp_path / "out", kdsl.load(SPEC).ir.advantage)
    assert getattr(built, field) == value


def test_a_config_that_contradicts_the_advantage_statement_is_refused(tmp_path):
    advantage = kdsl.load(SPEC).ir.advantage  # grpo(scale = group, aggregate = per_level)
    assert advantage["aggregate"] == "per_level" and advantage["scale"] == "group"
    with pytest.raises(KdslError, match=r"`multi_objective_aggregation: sum_then_normalize` contradicts "
                                        r"the spec.*write advantage grpo\(aggregate = sum\) in the spec"):
        build_config(_options(tmp_path, "multi_objective_aggregation: sum_then_normalize\n"), {},
                     tmp_path / "out", advantage)
    with pytest.raises(KdslError, match=r"`scale_rewards: batch` contradicts the spec, whose advantages "
                                        r"are `scale = group`"):
        build_config(_options(tmp_path, "scale_rewards: batch\n"), {}, tmp_path / "out", advantage)
    # saying what the spec says is fine
    built = build_config(_options(tmp_path, "multi_objective_aggregation: normalize_then_sum\n"
                                            "scale_rewards: group\n"), {}, tmp_path / "out", advantage)
    assert built.multi_objective_aggregation == "normalize_then_sum"


def test_train_runs_with_dr_grpo_and_sequence_level_sampling(tmp_path):
    (tmp_path / "train.yaml").write_text("loss_type: dr_grpo\nimportance_sampling_level: sequence\n"
                                         "max_steps: 2\nsave_steps: 100\n")
    summary = train(TrainOptions(spec=str(SPEC), config=str(tmp_path / "train.yaml"),
                                 output_dir=str(tmp_path / "out"), table_every=0))
    assert summary["steps"] == 2
    config = json.loads((tmp_path / "out" / "kdsl_run" / "config.json").read_text())
    assert config["loss_type"] == "dr_grpo" and config["importance_sampling_level"] == "sequence"
