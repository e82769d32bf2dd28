"""kdsl as a reward of a `verifiers` task, called by verifiers' own code: `Task.score` (what a
rollout calls when it finishes) on tasks whose `@vf.reward` method awaits a SpecReward, and
verifiers' offline re-scoring (`vf-replay`'s `run_replay`) of a saved run with the reward
plugged in by config (`fn = "kdsl.integrations.verifiers:reward"`), on the land-cover example's completions.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import pytest
import verifiers.v1 as vf
from verifiers.v1.configs.cli.replay import ReplayConfig
from verifiers.v1.errors import TaskError
from verifiers.v1.graph import MessageNode
from verifiers.v1.task import WireTaskData
from verifiers.v1.trace import Trace, TraceTask
from verifiers.v1.types import AssistantMessage, UserMessage

import kdsl
import kdsl.integrations.verifiers
from kdsl.errors import KdslError

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "landsat_landcover.kd"
ROWS = [json.loads(line) for line in (ROOT / "examples" / "landsat_completions.jsonl").read_text().splitlines()]
PROGRAM = kdsl.load(SPEC)


class LandcoverData(vf.TaskData):
    label: str | None = None
    sr: list[float] | None = None


class CountingReward(kdsl.integrations.verifiers.SpecReward):
    calls = 0

    def score_rows(self, completions, rows):
        self.calls += 1
        return super().score_rows(completions, rows)


def task_rewarded_by(spec_reward):
    """A task class whose one reward method awaits the spec, as a user writes it."""

    class LandcoverTask(vf.Task[LandcoverData]):
        @vf.reward
        async def knowledge(self, task, trace) -> float:
            return await spec_reward(task, trace)

    return LandcoverTask


def trace_for(data, completion: str) -> Trace:
    return Trace(task=TraceTask(type="LandcoverTask", data=data),
                 agent=vf.AgentInfo(config=vf.AgentConfig()), ok=True, is_completed=True,
                 nodes=[MessageNode(message=UserMessage(content="Classify this Landsat 8 pixel.")),
                        MessageNode(parent=0, message=AssistantMessage(content=completion), sampled=True)])


def expected_scores(completions, labels, srs):
    scores = PROGRAM.score(completions, label=labels, sr=srs)
    return scores.reward.tolist(), {name: v.tolist() for name, v in scores.levels.items()}


def test_a_task_reward_method_scores_each_rollout_as_the_program_does_in_one_batch():
    spec_reward = CountingReward(SPEC)

    LandcoverTask = task_rewarded_by(spec_reward)
    rows = ROWS + [{**ROWS[0], "label": None}]  # a row whose label is missing: no accuracy claim
    tasks = [LandcoverTask(LandcoverData(idx=i, prompt="p", label=r["label"], sr=r["sr"]))
             for i, r in enumerate(rows)]
    traces = [trace_for(t.data, r["completion"]) for t, r in zip(tasks, rows)]

    async def score_all():
        await asyncio.gather(*(t.score(tr) for t, tr in zip(tasks, traces)))

    asyncio.run(score_all())
    rewards, levels = expected_scores([r["completion"] for r in rows], [r["label"] for r in rows],
                                      [r["sr"] for r in rows])
    assert spec_reward.calls == 1  # every rollout scored in the same turn shares one program call
    assert len(set(rewards)) > 1  # the example's completions are not all scored alike
    for i, trace in enumerate(traces):
        assert trace.rewards["knowledge"].score == pytest.approx(rewards[i])
        assert trace.reward == pytest.approx(rewards[i])
        for name, values in levels.items():
            assert trace.metrics[f"kdsl.level.{name}"] == pytest.approx(values[i])
        assert not any(key.startswith("kdsl.level.") for key in trace.rewards)  # logged, not summed


def test_verifiers_replay_rescores_a_saved_run_with_the_reward_plugged_in_by_config(tmp_path, monkeypatch):
    # The user's own taskset, which knows nothing of kdsl: the reward comes from the config.
    (tmp_path / "landcover_taskset.py").write_text(
        "import verifiers.v1 as vf\n\n"
        "class LandcoverData(vf.TaskData):\n"
        "    answer: str | None = None\n"
        "    sr: list[float] | None = None\n\n"
        "class LandcoverTask(vf.Task[LandcoverData]):\n"
        "    pass\n\n"
        "class LandcoverTaskset(vf.Taskset[LandcoverTask]):\n"
        "    def load(self):\n"
        "        return []\n\n"
        "__all__ = ['LandcoverTaskset']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KDSL_VERIFIERS_SPEC", str(SPEC))
    monkeypatch.setenv("KDSL_VERIFIERS_INPUTS", json.dumps({"label": "answer"}))
    from verifiers.v1.cli.replay import run_replay
    from verifiers.v1.utils.trace_store import append_trace

    source, out = tmp_path / "run", tmp_path / "replayed"
    (source / "configs" / "resolved").mkdir(parents=True)
    (source / "configs" / "resolved" / "eval.json").write_text(
        json.dumps({"env": {"taskset": {"id": "landcover_taskset"}}}))
    out.mkdir()

    async def replay():
        lock = asyncio.Lock()
        for i, r in enumerate(ROWS):
            data = WireTaskData(idx=i, prompt="p", answer=r["label"], sr=r["sr"])
            await append_trace(source, trace_for(data, r["completion"]), lock)
        config = ReplayConfig(taskset={"id": "landcover_taskset", "task": {
            "rewards": {"kdsl": {"fn": "kdsl.integrations.verifiers:reward", "weight": 2.0}}}},
            rich=False, output_dir=out)
        return await run_replay(config, source, out)

    traces = asyncio.run(replay())
    rewards, levels = expected_scores([r["completion"] for r in ROWS], [r["label"] for r in ROWS],
                                      [r["sr"] for r in ROWS])
    assert [t.rewards["kdsl"].score for t in traces] == pytest.approx(rewards)
    assert [t.reward for t in traces] == pytest.approx([2 * r for r in rewards])  # the config's weight
    saved = [json.loads(line)["traces"][0] for line in (out / "traces.jsonl").read_text().splitlines()]
    assert len(saved) == len(ROWS)
    by_idx = {s["task"]["data"]["idx"]: s for s in saved}
    for i in range(len(ROWS)):
        assert by_idx[i]["rewards"]["kdsl"]["score"] == pytest.approx(rewards[i])
        assert by_idx[i]["metrics"]["kdsl.level.knowledge"] == pytest.approx(levels["knowledge"][i])


def test_a_task_without_an_input_fails_alone_with_its_task_and_field_named():
    spec_reward = kdsl.integrations.verifiers.SpecReward(SPEC)

    LandcoverTask = task_rewarded_by(spec_reward)
    good = [LandcoverTask(LandcoverData(idx=i, prompt="p", label=r["label"], sr=r["sr"]))
            for i, r in enumerate(ROWS[:3])]
    bad = LandcoverTask(WireTaskData(idx=7, prompt="p", label="Water"))  # no sr field at all
    traces = [trace_for(t.data, r["completion"]) for t, r in zip(good, ROWS)]
    bad_trace = trace_for(bad.data, ROWS[0]["completion"])

    async def score_all():
        return await asyncio.gather(*(t.score(tr) for t, tr in zip(good + [bad], traces + [bad_trace])),
                                    return_exceptions=True)

    results = asyncio.run(score_all())
    assert results[:3] == [None, None, None]
    assert isinstance(results[3], TaskError)
    message = str(results[3])
    assert "task idx 7" in message and "`sr`" in message and "landsat_landcover" in message
    rewards, _ = expected_scores([r["completion"] for r in ROWS[:3]], [r["label"] for r in ROWS[:3]],
                                 [r["sr"] for r in ROWS[:3]])
    assert [t.reward for t in traces] == pytest.approx(rewards)


def test_hostile_completions_are_scored_as_text():
    spec_reward = kdsl.integrations.verifiers.SpecReward(SPEC)
    hostile = ["<think>__import__('os').system('touch /tmp/kdsl-pwned')</think><answer>Water</answer>",
               "<answer>" * 20_000, "\x00\ud800<think>" + "a" * 200_000, ""]

    LandcoverTask = task_rewarded_by(spec_reward)
    tasks = [LandcoverTask(LandcoverData(idx=i, prompt="p", label="Water", sr=ROWS[2]["sr"]))
             for i in range(len(hostile))]
    traces = [trace_for(t.data, c) for t, c in zip(tasks, hostile)]

    async def score_all():
        await asyncio.gather(*(t.score(tr) for t, tr in zip(tasks, traces)))

    asyncio.run(score_all())
    assert all(math.isfinite(t.reward) for t in traces)
    assert traces[0].metrics["kdsl.level.format"] < 1  # five words of reasoning are not there
    assert not Path("/tmp/kdsl-pwned").exists()


def test_configuration_errors_say_what_to_write(monkeypatch):
    with pytest.raises(KdslError, match="does not read"):
        kdsl.integrations.verifiers.SpecReward(SPEC, inputs={"labels": "answer"})
    data = LandcoverData(idx=0, prompt="p", label="Water", sr=ROWS[2]["sr"])
    trace = trace_for(data, ROWS[2]["completion"])
    monkeypatch.delenv("KDSL_VERIFIERS_SPEC", raising=False)
    with pytest.raises(KdslError, match="KDSL_VERIFIERS_SPEC"):
        asyncio.run(kdsl.integrations.verifiers.reward(data, trace))
    monkeypatch.setenv("KDSL_VERIFIERS_SPEC", str(SPEC))
    monkeypatch.setenv("KDSL_VERIFIERS_INPUTS", "{label: answer}")
    with pytest.raises(KdslError, match="not JSON"):
        asyncio.run(kdsl.integrations.verifiers.reward(data, trace))
    monkeypatch.setenv("KDSL_VERIFIERS_INPUTS", "")
    assert asyncio.run(kdsl.integrations.verifiers.reward(data, trace)) == pytest.approx(
        expected_scores([ROWS[2]["completion"]], ["Water"], [ROWS[2]["sr"]])[0][0])
    monkeypatch.setenv("KDSL_VERIFIERS_SPEC", str(SPEC.with_name("no_such_spec.kd")))
    with pytest.raises(KdslError, match="cannot read the spec"):
        asyncio.run(kdsl.integrations.verifiers.reward(data, trace))


def test_the_module_does_not_import_verifiers_or_torch_until_scoring():
    # `kdsl check` and friends stay light: the module itself pulls in neither package.
    code = ("import sys, kdsl.integrations.verifiers; "
            "print(any(m == 'verifiers' or m.startswith('verifiers.') for m in sys.modules), 'torch' in sys.modules)")
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_spec_task_rewards_are_the_levels_weighted_as_the_spec_weighs_them():
    spec_reward = CountingReward(SPEC)
    LandcoverTask = kdsl.integrations.verifiers.spec_task(spec_reward, LandcoverData)
    tasks = [LandcoverTask(LandcoverData(idx=i, prompt="p", label=r["label"], sr=r["sr"]))
             for i, r in enumerate(ROWS)]
    traces = [trace_for(t.data, r["completion"]) for t, r in zip(tasks, ROWS)]

    async def score_all():
        await asyncio.gather(*(t.score(tr) for t, tr in zip(tasks, traces)))

    asyncio.run(score_all())
    rewards, levels = expected_scores([r["completion"] for r in ROWS], [r["label"] for r in ROWS],
                                      [r["sr"] for r in ROWS])
    assert LandcoverTask.__name__ == "LandsatLandcoverTask"
    assert spec_reward.calls == 1  # three levels of every rollout, one program call
    weights = {"format": 1.0, "accuracy": 2.0, "knowledge": 0.5}  # the example's level weights
    for i, trace in enumerate(traces):
        assert set(trace.rewards) == {f"kdsl_{name}" for name in weights}
        for name, weight in weights.items():
            assert trace.rewards[f"kdsl_{name}"].score == pytest.approx(levels[name][i])
            assert trace.rewards[f"kdsl_{name}"].weight == weight
        assert trace.reward == pytest.approx(rewards[i])  # verifiers' weighted sum is the spec's reward
    with pytest.raises(KdslError, match="has no level `style`"):
        spec_reward.level("style")


def test_a_trace_scored_again_after_its_reply_changed_is_scored_again():
    spec_reward = CountingReward(SPEC)
    data = LandcoverData(idx=0, prompt="p", label=ROWS[0]["label"], sr=ROWS[0]["sr"])
    trace = trace_for(data, ROWS[0]["completion"])

    async def twice():
        first = await spec_reward(data, trace)
        again = await spec_reward(data, trace)  # the same reply: the shared result
        trace.nodes[-1].message.content = ROWS[1]["completion"]
        changed = await spec_reward(data, trace)
        return first, again, changed

    first, again, changed = asyncio.run(twice())
    rewards, _ = expected_scores([ROWS[0]["completion"], ROWS[1]["completion"]],
                                 [ROWS[0]["label"]] * 2, [ROWS[0]["sr"]] * 2)
    assert (first, again, changed) == pytest.approx([rewards[0], rewards[0], rewards[1]])
    assert spec_reward.calls == 2
