"""Stage 5: rewards become advantages for GRPO-style training.

A spec's ``advantage`` block picks the estimator. Every estimator here is, for fixed group
statistics, a sum of per-rule parts: ``advantage[b] == parts[b].sum()``. That decomposition is what
lets a rule ``on <extractor>`` shape only the tokens of its span: a token's advantage is the sum of
the parts whose span covers it (rules without ``on`` cover every token).

Statistics are masked tensor reductions (no NaN, no host sync), so the same code runs on any device
and over rewards gathered from several processes. Where the computation exists in TRL
(``scale_rewards``, ``multi_objective_aggregation``), the result equals TRL's to float precision:

- ``grpo(aggregate = sum)``: reward minus its group mean, divided by the group standard deviation
  (``scale = group``), the batch standard deviation (``batch``) or not at all (``none``, Dr. GRPO);
  TRL's ``sum_then_normalize``. The standard deviation is the unbiased one, plus 1e-4.
- ``grpo(aggregate = per_level | per_rule)``: each level (or rule) is normalised within its group,
  the weighted sum of those z-scores is normalised over the batch (GDPO; TRL's
  ``normalize_then_sum`` with one reward function per level or rule). A rule that does not apply
  to a completion takes no part in its group's statistics, as a TRL reward function returning
  ``None``. ``scale`` picks the per-component deviation (group, batch, none).
- ``rloo``: reward minus the mean reward of the other completions of its group. With
  ``per_rule``, each rule's baseline uses only the completions it applies to.

Degenerate cases never give NaN: a group whose rewards are all equal gets advantage 0; a group of
one completion (no baseline) gets 0; a completion to which no rule applies at all (``per_rule``)
gets 0 and is left out of every statistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

EPSILON = 1e-4  # added to standard deviations, as TRL does
GATE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AdvantageConfig:
    estimator: str = "grpo"  # grpo | rloo
    scale: str = "group"  # group | batch | none (grpo only)
    aggregate: str = "sum"  # sum | per_level | per_rule

    @classmethod
    def from_settings(cls, settings: dict) -> AdvantageConfig:
        return cls(settings.get("estimator", "grpo"), settings.get("scale", "group"),
                   settings.get("aggregate", "sum"))

    def __post_init__(self):
        if self.estimator not in ("grpo", "rloo"):
            raise ValueError(f"unknown advantage estimator {self.estimator!r}; choose grpo or rloo")
        if self.scale not in ("group", "batch", "none"):
            raise ValueError(f"scale must be group, batch or none, not {self.scale!r}")
        if self.aggregate not in ("sum", "per_level", "per_rule"):
            raise ValueError(f"aggregate must be sum, per_level or per_rule, not {self.aggregate!r}")


@dataclass
class Components:
    """A batch's reward split into per-rule parts, each tagged with its level.

    Column k of ``share`` is rule k's part of its level's score (``weight * applies * truth /
    applicable weight``, zero where the level's gate is closed); one extra column per level holds
    the score a level earns where none of its rules applies. ``sum over a level's columns`` is the
    level's gated score, and ``sum over all columns * level weight`` is the reward.
    """

    share: Tensor  # (N, K) float
    level_of: Tensor  # (K,) long: level index of each column
    level_weight: Tensor  # (L,) float
    rule_truth: Tensor  # (N, R) float, gated truth of each rule
    rule_applies: Tensor  # (N, R) bool
    rule_weight: Tensor  # (R,) float: level weight x rule weight / the level's total rule weight
    names: list[str]  # K column names: rule names, then "<level>:none" columns
    rule_names: list[str]
    level_names: list[str]

    @property
    def reward(self) -> Tensor:
        return (self.share * self.level_weight[self.level_of]).sum(dim=1)

    def level_scores(self) -> Tensor:
        """(N, L) gated level scores."""
        out = torch.zeros(self.share.shape[0], len(self.level_names), dtype=self.share.dtype,
                          device=self.share.device)
        return out.index_add(1, self.level_of, self.share)

    def to(self, device) -> Components:
        return Components(self.share.to(device), self.level_of.to(device), self.level_weight.to(device),
                          self.rule_truth.to(device), self.rule_applies.to(device),
                          self.rule_weight.to(device), self.names, self.rule_names, self.level_names)

    def stacked(self) -> Tensor:
        """All per-row data as one float tensor, for a single gather across processes."""
        return torch.cat([self.share, self.rule_truth, self.rule_applies.to(self.share.dtype)], dim=1)

    def with_rows(self, stacked: Tensor) -> Components:
        """The same components with the rows of ``stacked`` (from :meth:`stacked`, e.g. gathered)."""
        k, r = self.share.shape[1], self.rule_truth.shape[1]
        return Components(stacked[:, :k], self.level_of, self.level_weight, stacked[:, k:k + r],
                          stacked[:, k + r:] > 0.5, self.rule_weight, self.names, self.rule_names,
                          self.level_names)


def column_names(module) -> list[str]:
    """The columns of :func:`components` for a program module: each level's rules, then
    ``<level>:none``."""
    return [name for level, _gate, _weight, rules in module.LEVELS for name in (*rules, f"{level}:none")]


def components(module, scores) -> Components:
    """Split ``scores`` (a ``kdsl.Scores``) of a program's generated ``module`` into per-rule parts."""
    ref = scores.reward
    dtype, device = torch.float32, ref.device
    n = ref.shape[0]
    level_index = {name: i for i, (name, *_rest) in enumerate(module.LEVELS)}
    rule_weight_of = {name: weight for name, _level, weight in module.RULES}
    columns, level_of, names = [], [], []
    truths, applies, rule_weights, rule_names = [], [], [], []
    open_gate = torch.ones(n, dtype=dtype, device=device)
    level_weights = []
    for name, is_gate, weight, rules in module.LEVELS:
        level_weights.append(float(weight))
        total = sum(rule_weight_of[r] for r in rules)
        den = torch.zeros(n, dtype=dtype, device=device)
        parts = []
        for r in rules:
            a = scores.applies[r].to(dtype)
            t = scores.rules[r].to(dtype)
            parts.append(rule_weight_of[r] * a * t)
            den = den + rule_weight_of[r] * a
            truths.append(t * open_gate)
            applies.append(scores.applies[r].bool())
            rule_weights.append(weight * rule_weight_of[r] / total if total > 0 else 0.0)
            rule_names.append(r)
        safe = torch.where(den > 0, den, torch.ones_like(den))
        for r, part in zip(rules, parts):
            columns.append(open_gate * part / safe)
            level_of.append(level_index[name])
            names.append(r)
        columns.append(open_gate * (den <= 0).to(dtype))
        level_of.append(level_index[name])
        names.append(f"{name}:none")
        if is_gate:
            open_gate = open_gate * (scores.levels[name].to(dtype) >= 1.0 - GATE_TOLERANCE).to(dtype)
    empty = torch.zeros(n, 0, dtype=dtype, device=device)
    return Components(
        share=torch.stack(columns, dim=1),
        level_of=torch.tensor(level_of, dtype=torch.long, device=device),
        level_weight=torch.tensor(level_weights, dtype=dtype, device=device),
        rule_truth=torch.stack(truths, dim=1) if truths else empty,
        rule_applies=torch.stack(applies, dim=1) if applies else empty.bool(),
        rule_weight=torch.tensor(rule_weights, dtype=dtype, device=device),
        names=names, rule_names=rule_names, level_names=list(level_index),
    )


# ---- masked statistics ---------------------------------------------------------------------------
# ``x`` (G, S, K) or (N, K) with a boolean mask of the same shape; statistics over dim 1 (a group)
# or dim 0 (the batch). ``count < 2`` leaves a deviation undefined (``ok`` false), like TRL's NaN.


def _mean(x: Tensor, m: Tensor, dim: int) -> Tensor:
    mf = m.to(x.dtype)
    return (x * mf).sum(dim, keepdim=True) / mf.sum(dim, keepdim=True).clamp(min=1.0)


def _std(x: Tensor, m: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    mf = m.to(x.dtype)
    count = mf.sum(dim, keepdim=True)
    mean = (x * mf).sum(dim, keepdim=True) / count.clamp(min=1.0)
    var = (((x - mean) ** 2) * mf).sum(dim, keepdim=True) / (count - 1.0).clamp(min=1.0)
    return var.sqrt(), count > 1.5


def _grouped(x: Tensor, group_size: int) -> Tensor:
    return x.reshape(-1, group_size, *x.shape[1:])


def advantages(comp: Components, group_size: int, config: AdvantageConfig) -> tuple[Tensor, Tensor]:
    """Advantages (N,) and their per-column parts (N, K) for rows in groups of ``group_size``
    consecutive completions of one prompt (TRL's layout). ``parts.sum(1) == advantages``."""
    n = comp.share.shape[0]
    if n % group_size:
        raise ValueError(f"a batch of {n} completions does not split into groups of {group_size}")
    if config.aggregate == "per_rule":
        rule_parts = _per_rule(comp, group_size, config)
        # Rule parts map onto the rule columns; the "<level>:none" columns get nothing.
        parts = torch.zeros_like(comp.share)
        rule_columns = [i for i, name in enumerate(comp.names) if not name.endswith(":none")]
        parts[:, rule_columns] = rule_parts
        return parts.sum(1), parts
    weighted = comp.share * comp.level_weight[comp.level_of]
    if config.estimator == "rloo" or config.aggregate == "sum":
        parts = _centered_sum(weighted, group_size, config)
    else:
        parts = _per_level(comp, group_size, config)
    return parts.sum(1), parts


def _centered_sum(weighted: Tensor, group_size: int, config: AdvantageConfig) -> Tensor:
    """Parts of ``(reward - group mean) / deviation``; the mean is linear, so each column is
    centred by its own group mean and all share the reward's deviation."""
    g = _grouped(weighted, group_size)  # (Gn, S, K)
    every = torch.ones_like(g, dtype=torch.bool)
    centred = g - _mean(g, every, 1)
    if config.estimator == "rloo":
        if group_size < 2:
            return torch.zeros_like(weighted)
        return (centred * (group_size / (group_size - 1.0))).reshape(weighted.shape)
    reward = g.sum(2, keepdim=True)  # (Gn, S, 1)
    if config.scale == "none":
        return centred.reshape(weighted.shape)
    if config.scale == "group":
        std, ok = _std(reward, torch.ones_like(reward, dtype=torch.bool), 1)
        out = torch.where(ok, centred / (std + EPSILON), torch.zeros_like(centred))
        return out.reshape(weighted.shape)
    flat = reward.reshape(-1, 1)
    std, ok = _std(flat, torch.ones_like(flat, dtype=torch.bool), 0)
    if flat.shape[0] < 2:  # TRL: a single reward has deviation 0, not an undefined one
        std, ok = torch.zeros_like(std), torch.ones_like(ok)
    out = torch.where(ok, centred.reshape(weighted.shape) / (std + EPSILON), torch.zeros_like(weighted))
    return out


def _component_scale(values: Tensor, valid: Tensor, group_size: int, scale: str) -> tuple[Tensor, Tensor]:
    """Deviation (broadcastable to the grouped (Gn, S, C) layout) used to normalise components."""
    g, gm = _grouped(values, group_size), _grouped(valid, group_size)
    if scale == "group":
        if group_size < 2:  # TRL: deviation 0 with one generation, so z = 0 / eps
            return torch.zeros_like(g[:, :1]), torch.ones_like(gm[:, :1])
        return _std(g, gm, 1)
    if scale == "batch":
        std, ok = _std(values, valid, 0)
        return std.unsqueeze(0), ok.unsqueeze(0)
    return torch.ones_like(g[:, :1]) - EPSILON, torch.ones_like(gm[:, :1])


def _batch_normalised(z_parts: Tensor, scorable: Tensor, scale: str) -> Tensor:
    """Parts of ``(S - batch mean S) / (batch std S + eps)`` with ``S = z_parts.sum(1)``, over the
    scorable rows; unscorable rows get 0."""
    rows = scorable.unsqueeze(1)
    centred = z_parts - _mean(z_parts, rows.expand_as(z_parts), 0)
    if scale == "none":
        return torch.where(rows, centred, torch.zeros_like(centred))
    total = z_parts.sum(1, keepdim=True)
    if int(z_parts.shape[0]) < 2:
        std, ok = torch.zeros_like(total[:1]), torch.ones_like(rows[:1])
    else:
        std, ok = _std(total, rows, 0)
    out = torch.where(ok & rows, centred / (std + EPSILON), torch.zeros_like(centred))
    return out


def _per_level(comp: Components, group_size: int, config: AdvantageConfig) -> Tensor:
    levels = comp.level_scores()  # (N, L)
    valid = torch.ones_like(levels, dtype=torch.bool)
    std, ok = _component_scale(levels, valid, group_size, config.scale)  # (Gn|1, 1, L)
    g = _grouped(comp.share, group_size)  # (Gn, S, K)
    centred = g - _mean(g, torch.ones_like(g, dtype=torch.bool), 1)
    column_std, column_ok = std[..., comp.level_of], ok[..., comp.level_of]
    weight = comp.level_weight[comp.level_of]
    z = torch.where(column_ok, weight * centred / (column_std + EPSILON), torch.zeros_like(centred))
    z = z.reshape(comp.share.shape)
    scorable = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
    return _batch_normalised(z, scorable, config.scale)


def _per_rule(comp: Components, group_size: int, config: AdvantageConfig) -> Tensor:
    values, valid = comp.rule_truth, comp.rule_applies
    g, gm = _grouped(values, group_size), _grouped(valid, group_size)
    gmf = gm.to(values.dtype)
    if config.estimator == "rloo":
        total = (g * gmf).sum(1, keepdim=True)
        others = gmf.sum(1, keepdim=True) - gmf
        baseline = (total - g * gmf) / others.clamp(min=1.0)
        z = torch.where(gm & (others > 0.5), g - baseline, torch.zeros_like(g))
        return (z * comp.rule_weight).reshape(values.shape)
    std, ok = _component_scale(values, valid, group_size, config.scale)
    centred = g - _mean(g, gm, 1)
    z = torch.where(gm & ok, comp.rule_weight * centred / (std + EPSILON), torch.zeros_like(g))
    z = z.reshape(values.shape)
    scorable = valid.any(dim=1)
    return _batch_normalised(z, scorable, config.scale)


def token_advantages(seq_advantages: Tensor, parts: Tensor, span_columns: list[tuple[int, Tensor]]
                     ) -> Tensor:
    """(B, T) advantages: each token gets the parts whose span covers it.

    ``span_columns`` pairs a column of ``parts`` with a (B, T) boolean mask of the tokens its rule
    acts on (rules ``on`` an extractor); every other column covers all tokens. A rule whose span was
    not found in a completion acts on no token of it.
    """
    if not span_columns:
        raise ValueError("token_advantages needs at least one rule with a span")
    first = span_columns[0][1]
    out = seq_advantages.to(first.device).unsqueeze(1).expand(first.shape).clone()
    for column, mask in span_columns:
        out = out - parts[:, column:column + 1] * (~mask).to(out.dtype)
    return out
