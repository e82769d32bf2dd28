"""A kdsl spec as verl's (and EasyR1's) custom reward function, in the batch form.

In verl's config::

    reward:
      reward_manager:
        name: batch
      custom_reward_function:
        path: <the file of this module: python -c "import kdsl.integrations.verl; print(kdsl.integrations.verl.__file__)">
        name: compute_score
        reward_kwargs:
          spec: specs/landcover.kd
          inputs: {label: ground_truth, sr: extra_info.sr}

verl's ``BatchRewardManager`` calls ``compute_score(data_sources=..., solution_strs=...,
ground_truths=..., extra_infos=..., **reward_kwargs)`` once per batch; the spec scores the whole
batch in one program call. Each result is a dict: ``score`` (the spec's reward) and
``level.NAME`` per level, which verl gathers into its ``reward_extra_info`` and logs.

``inputs`` maps each of the spec's inputs to where its value is: ``ground_truth``,
``ground_truth.KEY`` (when the ground truth is an object), ``extra_info.KEY`` or ``data_source``.
Without a mapping, an input is read from ``extra_info[NAME]``, and a spec's single input not found
there from the ground truth. The spec may also come from ``KDSL_VERL_SPEC``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from kdsl.errors import KdslDataError, KdslError

_PROGRAMS: dict[tuple[str, int], object] = {}  # (spec path, mtime) -> program, per process


def _program(spec: str | None):
    spec = spec or os.environ.get("KDSL_VERL_SPEC")
    if not spec:
        raise KdslError("kdsl.integrations.verl.compute_score needs the spec: reward_kwargs.spec in verl's "
                        "custom_reward_function config, or KDSL_VERL_SPEC")
    path = Path(spec).resolve()
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError as err:
        raise KdslError(f"kdsl.integrations.verl: cannot read the spec {spec}: {err.strerror or err}") from None
    if key not in _PROGRAMS:
        import kdsl

        _PROGRAMS.clear()  # one spec per run; an edited spec is compiled again
        _PROGRAMS[key] = kdsl.load(path)
    return _PROGRAMS[key]


def _lookup(source: str, row: int, data_source, ground_truth, extra_info):
    head, _, key = source.partition(".")
    if head == "data_source" and not key:
        return data_source
    if head == "ground_truth":
        if not key:
            return ground_truth
        holder, where = ground_truth, "ground_truth"
    elif head == "extra_info" and key:
        holder, where = extra_info, "extra_info"
    else:
        raise KdslError(f"kdsl.integrations.verl: input source `{source}`: write ground_truth, ground_truth.KEY, "
                        "extra_info.KEY or data_source")
    if not isinstance(holder, Mapping) or key not in holder:
        raise KdslDataError(f"row {row}: {where} has no `{key}`"
                            + (f" (it has {', '.join(sorted(map(str, holder)))})" if isinstance(holder, Mapping) else ""))
    return holder[key]


def columns_for(program, data_sources: Sequence, ground_truths: Sequence, extra_infos: Sequence | None,
                inputs: Mapping[str, str] | None = None) -> dict[str, list]:
    """The spec's input columns from verl's per-sample fields (see the module docstring)."""
    n = len(ground_truths)
    extra_infos = list(extra_infos) if extra_infos is not None else [{}] * n
    data_sources = list(data_sources) if data_sources is not None else [None] * n
    mapping = dict(inputs or {})
    unknown = sorted(set(mapping) - set(program.input_names))
    if unknown:
        raise KdslError(f"kdsl.integrations.verl: inputs maps {', '.join(unknown)}, which {program.name} does not "
                        f"read (its inputs: {', '.join(program.input_names)})")
    columns: dict[str, list] = {}
    for name in program.input_names:
        source = mapping.get(name)
        values = []
        for i in range(n):
            extra = extra_infos[i] if isinstance(extra_infos[i], Mapping) else {}
            if source is not None:
                values.append(_lookup(source, i, data_sources[i], ground_truths[i], extra))
            elif name in extra:
                values.append(extra[name])
            elif len(program.input_names) == 1:
                values.append(ground_truths[i])
            else:
                raise KdslDataError(f"row {i}: no value for input `{name}` of {program.name}: "
                                    "put it in extra_info, or map it with reward_kwargs.inputs")
        columns[name] = values
    return columns


def compute_score(data_sources=None, solution_strs=None, ground_truths=None, extra_infos=None, *,
                  spec: str | None = None, inputs: Mapping[str, str] | None = None, **_) -> list[dict]:
    """verl's batch reward function: one dict per sample, ``score`` and ``level.NAME``."""
    program = _program(spec)
    if solution_strs is None:
        raise KdslDataError("kdsl.integrations.verl.compute_score needs solution_strs")
    ground_truths = list(ground_truths) if ground_truths is not None else [None] * len(solution_strs)
    columns = columns_for(program, data_sources, ground_truths, extra_infos, inputs)
    scores = program.score(list(solution_strs), **columns)
    rewards = scores.reward.tolist()
    levels = {name: values.tolist() for name, values in scores.levels.items()}
    return [{"score": reward, **{f"level.{name}": values[i] for name, values in levels.items()}}
            for i, reward in enumerate(rewards)]
