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
    (TRL hands the same list object to every reward function of one batch).

    It pickles as the spec's text and file name (and the tokenizer), and compiles the spec again
    when unpickled, so reward functions can be sent to another process (TRL's asynchronous GRPO
    trainer scores in a spawned child). Reward functions pickled together keep sharing one cache."""

    def __init__(self, program, tokenizer=None, device=None):
        self.program = program
        self.tokenizer = tokenizer
        self.device = device
        self.completions: Sequence | None = None
        self.scores = None

    def __getstate__(self) -> dict:
        ir = self.program.ir
        return {"text": ir.sources[ir.file], "file": ir.file, "tokenizer": self.tokenizer,
                "device": None if self.device is None else str(self.device)}

    def __setstate__(self, state: dict) -> None:
        import kdsl

        # Compiled from the text, not read from the file again: the child scores with the very
        # spec the parent was given (imports resolve from the spec's folder, as they did there).
        self.__init__(kdsl.loads(state["text"], state["file"]), state["tokenizer"], state["device"])

    def get(self, completions: Sequence, columns: dict, log_metric: Callable | None = None,
            log_extra: Callable | None = None):
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
        if log_extra is not None:  # a column of TRL's completions table (log_completions)
            log_extra("kdsl", verdicts(self.program, self.scores))
        return self.scores


def verdicts(program, scores) -> list[str]:
    """One line per completion saying what decided its reward: the gate that closed (and its
    failed rules), or the rules that failed, or that every rule held."""
    rules = program.ir.rules
    if not rules:
        return ["no rules"] * len(scores.reward)
    failed = torch.stack([(scores.rules[r.name] < 1.0 - 1e-6) & scores.applies[r.name].bool()
                          for r in rules], 1).tolist()  # one host transfer for the batch
    gates = {lv.name for lv in program.ir.levels if lv.gate}
    out = []
    for row in failed:
        names: list[str] = []
        verdict = None
        for level in program.ir.levels:
            here = [r.name for r, bad in zip(rules, row) if bad and r.level == level.name]
            if level.name in gates and here:
                verdict = f"gate {level.name} closed: {', '.join(here)} failed"
                break
            names += here
        out.append(verdict or (f"failed: {', '.join(names)}" if names else "every rule that applies holds"))
    return out


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

    if per == "reward":
        return [RewardFunction(cache, "reward", program.name)]
    names = program.level_names if per == "level" else program.rule_names
    return [RewardFunction(cache, per, name) for name in names]


class RewardFunction:
    """One reward function of a spec, called as TRL calls reward functions, named after what it
    returns (so TRL logs ``rewards/<name>/mean``) and picklable (see ``ScoreCache``)."""

    def __init__(self, cache: ScoreCache, kind: str, name: str):
        self.kdsl_cache = cache
        self.kind = kind  # reward | level | rule
        self.__name__ = self.__qualname__ = name
        self.__doc__ = f"{name} of spec {cache.program.name} (kdsl)"

    def __call__(self, prompts=None, completions=None, completion_ids=None, **columns):
        if completions is None:
            raise KdslDataError("a kdsl reward function needs `completions`")
        scores = self.kdsl_cache.get(completions, columns, columns.get("log_metric"),
                                     columns.get("log_extra"))
        if self.kind == "reward":
            return scores.reward.tolist()
        if self.kind == "level":
            return scores.levels[self.__name__].tolist()
        return _gated_rule(scores, self.kdsl_cache.program, self.__name__)

    def __repr__(self) -> str:
        return f"<kdsl reward function {self.__name__} of {self.kdsl_cache.program.name}>"


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
