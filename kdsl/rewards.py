"""Reward functions in the form TRL's ``GRPOTrainer`` calls them, made from a compiled program.

``program.reward_functions()`` gives one callable per level (``per="level"``, the default), per
rule (``per="rule"``) or a single one for the whole reward (``per="reward"``). Each is named, so TRL
logs ``rewards/<name>/mean``, and ``program.reward_weights(per)`` gives the ``reward_weights`` that
make TRL's weighted sum equal the spec's reward. The callables of one set share a cache: the batch
is scored once, by whichever is called first, and the others read the result.

The first call on a batch also reports, through TRL's ``log_metric``, each level's mean score
(``kdsl/level/<name>``) and each rule's satisfaction rate over the completions it applies to
(``kdsl/rule/<name>``), so they reach every tracker TRL reports to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from kdsl.errors import KdslDataError

PER = ("level", "rule", "reward")


class ScoreCache:
    """The scores of the last batch seen, keyed by the identity of TRL's ``completions`` list
    (TRL hands the same list object to every reward function of one batch)."""

    def __init__(self, program, tokenizer=None, device=None):
        self.program = program
        self.tokenizer = tokenizer
        self.device = device
        self.completions: Sequence | None = None
        self.scores = None

    def get(self, completions: Sequence, columns: dict, log_metric: Callable | None = None):
        if completions is self.completions and self.scores is not None:
            return self.scores
        missing = [name for name in self.program.input_names if name not in columns]
        if missing:
            known = ", ".join(sorted(k for k in columns if not k.startswith("_"))) or "none"
            raise KdslDataError(f"the dataset has no column {', '.join(f'`{m}`' for m in missing)}, "
                                f"which {self.program.name} reads; its columns: {known}")
        inputs = {name: columns[name] for name in self.program.input_names}
        self.scores = self.program.score(completions, device=self.device, tokenizer=self.tokenizer,
                                         **inputs)
        self.completions = completions
        if log_metric is not None:
            for name, value in metrics(self.scores).items():
                log_metric(name, value)
        return self.scores


def metrics(scores) -> dict[str, float]:
    """Level means and rule satisfaction rates of one batch (one host transfer for all)."""
    names, values = [], []
    for name, level in scores.levels.items():
        names.append(f"kdsl/level/{name}")
        values.append(level.float().mean())
    applied = []
    for name, truth in scores.rules.items():
        applies = scores.applies[name].float()
        names.append(f"kdsl/rule/{name}")
        values.append((truth.float() * applies).sum() / applies.sum().clamp(min=1.0))
        applied.append(applies.sum() > 0)
    if not values:
        return {}
    stacked = torch.stack(values).tolist()
    seen = torch.stack(applied).tolist() if applied else []
    n_levels = len(scores.levels)
    out = {}
    for i, (name, value) in enumerate(zip(names, stacked)):
        if i >= n_levels and not seen[i - n_levels]:
            continue  # a rule that applied to no completion has no satisfaction rate
        out[name] = value
    return out


def _gated_rule(scores, program, rule: str) -> list[float | None]:
    """A rule's truth where it applies (0 where an earlier gate closed), ``None`` elsewhere."""
    level = next(r.level for r in program.ir.rules if r.name == rule)
    open_gate = torch.ones_like(scores.reward)
    for lv in program.ir.levels:
        if lv.name == level:
            break
        if lv.gate:
            open_gate = open_gate * (scores.levels[lv.name] >= 1.0 - 1e-6).to(open_gate.dtype)
    truth = (scores.rules[rule] * open_gate).tolist()
    applies = scores.applies[rule].tolist()
    return [t if a else None for t, a in zip(truth, applies)]


def reward_functions(program, per: str = "level", tokenizer=None, device=None,
                     cache: ScoreCache | None = None) -> list[Callable]:
    if per not in PER:
        raise ValueError(f"per must be one of {', '.join(PER)}, not {per!r}")
    cache = cache or ScoreCache(program, tokenizer, device)

    def make(name: str, pick: Callable) -> Callable:
        def reward(prompts=None, completions=None, completion_ids=None, **columns):
            if completions is None:
                raise KdslDataError("a kdsl reward function needs `completions`")
            scores = cache.get(completions, columns, columns.get("log_metric"))
            return pick(scores)

        reward.__name__ = reward.__qualname__ = name
        reward.__doc__ = f"{name} of spec {program.name} (kdsl)"
        reward.kdsl_cache = cache
        return reward

    if per == "reward":
        return [make(program.name, lambda s: s.reward.tolist())]
    if per == "level":
        return [make(name, lambda s, name=name: s.levels[name].tolist()) for name in program.level_names]
    return [make(name, lambda s, name=name: _gated_rule(s, program, name)) for name in program.rule_names]


def reward_weights(program, per: str = "level") -> list[float]:
    if per not in PER:
        raise ValueError(f"per must be one of {', '.join(PER)}, not {per!r}")
    if per == "reward":
        return [1.0]
    if per == "level":
        return [float(lv.weight) for lv in program.ir.levels]
    out = []
    for lv in program.ir.levels:
        total = sum(float(r.weight) for r in lv.rules)
        out += [float(lv.weight) * float(r.weight) / total if total > 0 else 0.0 for r in lv.rules]
    return out
