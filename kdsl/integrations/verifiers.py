"""A kdsl spec as a reward of a `verifiers` task (``verifiers.v1``, ``pip install 'kdsl[verifiers]'``).

verifiers scores one rollout at a time: a task's ``@vf.reward`` methods, and the functions its
config plugs in by import path, are called with the task's data (``task``) and the rollout's
trace (``trace``). :class:`SpecReward` is such a function for a spec. Rollouts scored in the same
turn of the event loop (a group, or the many rollouts an env finishes together) are scored in one
batched program call, off the event loop's thread. The reward is the spec's reward; each level's
score goes to the trace's metrics as ``kdsl.level.NAME`` (metrics are logged, not summed), so
``traces.jsonl`` shows what a reward is made of.

In a task::

    import verifiers.v1 as vf
    from kdsl.integrations.verifiers import SpecReward

    landcover = SpecReward("specs/landsat_landcover.kd", inputs={"label": "answer"})

    class LandcoverTask(vf.Task[LandcoverData]):
        @vf.reward
        async def knowledge(self, task, trace) -> float:
            return await landcover(task, trace)

Or a task whose rewards are the spec's levels, weighted as the spec weighs them (the rollout's
reward is the spec's reward, and the trace shows each level)::

    LandcoverTask = spec_task("specs/landsat_landcover.kd", LandcoverData, inputs={"label": "answer"})

Or plugged through a task config, without code::

    rewards = {"kdsl": RewardFunctionConfig(fn="kdsl.integrations.verifiers:reward")}

with the spec in ``KDSL_VERIFIERS_SPEC`` and, if the task data's field names differ from the
spec's input names, a JSON mapping in ``KDSL_VERIFIERS_INPUTS`` (``{"label": "answer"}``).

Each spec input is read from the task data: the field the mapping names (a dotted path reaches
into a dict field: ``"info.sr"``), or else the field with the input's own name. A task without
it is an error naming the task and the field. The completion is ``trace.last_reply``.
"""

from __future__ import annotations

import asyncio
import json
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdsl.errors import KdslDataError, KdslError

LEVEL_METRIC = "kdsl.level.{}"
_SHARED_RESULTS = 4096  # rollouts whose scores are kept for their other rewards


def _task_name(task: Any) -> str:
    for field in ("id", "idx", "name"):
        value = getattr(task, field, None)
        if value is not None:
            return f"task {field} {value!r}"
    return "task"


def _field(task: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of a dotted path into the task data: attributes, then dict keys."""
    holder: Any = task
    for part in path.split("."):
        if isinstance(holder, Mapping):
            if part not in holder:
                return False, None
            holder = holder[part]
            continue
        extra = getattr(holder, "model_extra", None) or {}
        if part in extra:
            holder = extra[part]
        elif hasattr(holder, part) and not callable(getattr(holder, part)):
            holder = getattr(holder, part)
        else:
            return False, None
    return True, holder


class SpecReward:
    """A spec as a verifiers reward: ``await reward(task, trace)`` is the rollout's reward.

    ``spec`` is a path to a ``.kd`` file or a compiled program (``kdsl.load``); ``inputs`` maps a
    spec input to the task data field it is read from (by default the field of the same name).
    """

    def __init__(self, spec, inputs: Mapping[str, str] | None = None) -> None:
        if isinstance(spec, (str, os.PathLike)):
            import kdsl

            spec = kdsl.load(Path(spec))
        self.program = spec
        self.inputs = dict(inputs or {})
        unknown = sorted(set(self.inputs) - set(self.program.input_names))
        if unknown:
            raise KdslError(f"kdsl.integrations.verifiers: inputs maps {', '.join(unknown)}, which "
                            f"{self.program.name} does not read (its inputs: "
                            f"{', '.join(self.program.input_names)})")
        self._pending: list[tuple[str, dict, Any, asyncio.Future]] = []
        self._by_trace: dict[int, tuple[Any, str, asyncio.Future]] = {}

    def input_values(self, task: Any) -> dict[str, Any]:
        """The spec's inputs for one task, or a KdslDataError naming the task and the field."""
        values = {}
        for name in self.program.input_names:
            path = self.inputs.get(name, name)
            found, value = _field(task, path)
            if not found:
                raise KdslDataError(f"{_task_name(task)}: no field `{path}` for input `{name}` of "
                                    f"{self.program.name}"
                                    + ("" if name in self.inputs else
                                       " (name the field with inputs={...} or KDSL_VERIFIERS_INPUTS)"))
            values[name] = value
        return values

    def score_rows(self, completions: list[str], rows: list[dict]) -> list[tuple[float, dict[str, float]]]:
        """(reward, {level: score}) per completion, in one program call."""
        columns = {name: [row[name] for row in rows] for name in self.program.input_names}
        scores = self.program.score(completions, **columns)
        levels = {name: values.tolist() for name, values in scores.levels.items()}
        return [(reward, {name: values[i] for name, values in levels.items()})
                for i, reward in enumerate(scores.reward.tolist())]

    async def __call__(self, task: Any, trace: Any) -> float:
        reward, _ = await self.scores(task, trace)
        return reward

    def level(self, name: str):
        """An async ``(task, trace) -> float``: one level's score (0..1, after the spec's gates)."""
        if name not in self.level_weights:
            raise KdslError(f"{self.program.name} has no level `{name}` (its levels: "
                            f"{', '.join(self.level_weights)})")

        async def level_score(task, trace) -> float:
            _, levels = await self.scores(task, trace)
            return levels[name]

        level_score.__name__ = f"kdsl_{name}"
        return level_score

    @property
    def level_weights(self) -> dict[str, float]:
        """Each level's weight: the spec's reward is the weighted sum of its level scores."""
        names = [level.name for level in self.program.ir.levels]
        return dict(zip(names, self.program.reward_weights("level")))

    def scores(self, task: Any, trace: Any) -> asyncio.Future:
        """(reward, {level: score}) for one rollout. Every reward of the same trace awaits the same
        result, and the rollouts asked for in one turn of the event loop share one program call."""
        reply = trace.last_reply
        shared = self._by_trace.get(id(trace))
        if shared is not None and shared[0] is trace and shared[1] == reply:
            return shared[2]
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        # Read the inputs now, so a bad row fails its own rollout and not its batch-mates.
        try:
            row = self.input_values(task)
        except KdslDataError as err:
            done.set_exception(err)
            return done
        # The trace is held with its result (so its id cannot be reused while the entry lives);
        # the oldest entries go once there are more than a few batches of them.
        self._by_trace[id(trace)] = (trace, reply, done)
        while len(self._by_trace) > _SHARED_RESULTS:
            self._by_trace.pop(next(iter(self._by_trace)))
        self._pending.append((reply, row, trace, done))
        if len(self._pending) == 1:
            loop.call_soon(lambda: asyncio.ensure_future(self._flush()))
        return done

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            results = await asyncio.to_thread(self.score_rows, [c for c, _, _, _ in batch],
                                              [row for _, row, _, _ in batch])
        except Exception as err:  # handed to each rollout, whose own scoring reports it
            for *_, done in batch:
                if not done.done():
                    done.set_exception(err)
            return
        for (_, _, trace, done), (reward, levels) in zip(batch, results):
            trace.record_metrics({LEVEL_METRIC.format(name): value for name, value in levels.items()})
            if not done.done():
                done.set_result((reward, levels))


def spec_task(spec, data_type=None, inputs: Mapping[str, str] | None = None, name: str | None = None):
    """A ``verifiers.v1.Task`` class whose rewards are the spec's levels, each weighted as the spec
    weighs it (``kdsl_NAME``, so the rollout's reward is the spec's reward and the trace shows each
    level). ``data_type`` is the task's ``TaskData`` class; subclass the result to add the rest of
    the task (``setup``, tools, metrics)."""
    import verifiers.v1 as vf

    spec_reward = spec if isinstance(spec, SpecReward) else SpecReward(spec, inputs)
    data_type = data_type or vf.TaskData
    methods = {}
    for level, weight in spec_reward.level_weights.items():
        score = spec_reward.level(level)

        async def method(self, task, trace, _score=score) -> float:
            return await _score(task, trace)

        method.__name__ = score.__name__
        methods[score.__name__] = vf.reward(method, weight=weight)
    methods["spec_reward"] = spec_reward
    class_name = name or "".join(part.title() for part in spec_reward.program.name.split("_")) + "Task"
    return types.new_class(class_name, (vf.Task[data_type],), exec_body=lambda ns: ns.update(methods))


_FROM_ENVIRONMENT: dict[tuple, SpecReward] = {}


def _spec_from_environment() -> SpecReward:
    spec = os.environ.get("KDSL_VERIFIERS_SPEC")
    if not spec:
        raise KdslError("kdsl.integrations.verifiers.reward needs the spec in KDSL_VERIFIERS_SPEC")
    raw_inputs = os.environ.get("KDSL_VERIFIERS_INPUTS", "")
    try:
        inputs = json.loads(raw_inputs) if raw_inputs.strip() else {}
    except json.JSONDecodeError as err:
        raise KdslError(f"KDSL_VERIFIERS_INPUTS is not JSON ({err.msg} at character {err.pos}): "
                        'write {"input": "field", ...}') from None
    if not isinstance(inputs, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in inputs.items()):
        raise KdslError('KDSL_VERIFIERS_INPUTS must be a JSON object of strings: {"input": "field"}')
    path = Path(spec).resolve()
    try:
        key = (str(path), path.stat().st_mtime_ns, raw_inputs)
    except OSError as err:
        raise KdslError(f"kdsl.integrations.verifiers: cannot read the spec {spec}: {err.strerror or err}") from None
    if key not in _FROM_ENVIRONMENT:
        _FROM_ENVIRONMENT.clear()  # one spec per process; an edited spec is compiled again
        _FROM_ENVIRONMENT[key] = SpecReward(path, inputs)
    return _FROM_ENVIRONMENT[key]


async def reward(task, trace) -> float:
    """The spec of ``KDSL_VERIFIERS_SPEC`` as a plugged reward (``fn="kdsl.integrations.verifiers:reward"``)."""
    return await _spec_from_environment()(task, trace)
