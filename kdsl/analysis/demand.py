"""Where a judged value can change the reward: the plan of the generated ``demand`` function.

A judge's grade or a reward model's score costs a model call per row, so it is asked for only
in the rows where it can make a difference (``kdsl.runtime.judging``). Before any model is called,
``demand`` computes, from the values that need no model, a mask per judged node. A row is left
out where

- a gate level before the judged value's level is closed by a rule that needs no model and
  weighs something (a gate with such a rule below 1 sets every later level to 0, whatever the
  model would say);
- the rule's `when` needs no model and does not hold (the rule does not apply);
- a sibling of an `and` on the way from the rule to the judged value is a known false (false and
  anything is false, in every logic), or a sibling of an `or` a known true; or an `if` takes the
  other branch;
- the rule, or its level, weighs nothing.

Everything else is conservative: a judged value that feeds a gate, a table or arithmetic is asked
for wherever its rule can count. A row left out gets no value (it is invalid), and by the rules
above that changes no reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdsl.ir import JUDGED_OPS, Node, ProgramIR, RuleIR, reachable


@dataclass(frozen=True)
class Contribution:
    """One way a node's value reaches the reward: through a rule's body or `when` (``rule``), or
    through a parent node (``parent``), on the condition ``kind`` of the sibling ``other``:
    ``all`` (none), ``and`` (unless ``other`` is a known false), ``or`` (unless a known true),
    ``then``/``else`` (unless the condition ``other`` takes the other branch); ``batch``: a
    reduction over the batch, so every row where any row needs it."""

    kind: str
    rule: str | None = None
    when_of: bool = False  # through the rule's `when`, not its body
    parent: int | None = None
    other: int | None = None


@dataclass
class DemandPlan:
    judged: list[Node]  # the judged nodes, in evaluation order
    free: list[Node]  # nodes that need no model and that the masks read, in evaluation order
    gates: list[tuple[str, list[RuleIR]]] = field(default_factory=list)  # gate level -> its rules that need no model
    reach: dict[str, list[str]] = field(default_factory=dict)  # level -> the gates before it
    counted: dict[str, bool] = field(default_factory=dict)  # level -> whether it can change the reward
    rules: list[RuleIR] = field(default_factory=list)  # rules whose body or `when` needs a model
    dependent: list[Node] = field(default_factory=list)  # nodes that need a model, last first
    contributions: dict[int, list[Contribution]] = field(default_factory=dict)


def plan(program: ProgramIR, live: list[Node]) -> DemandPlan | None:
    """The plan for ``program``'s live nodes, or None when no node needs a model."""
    judged = [n for n in live if n.op in JUDGED_OPS]
    if not judged:
        return None
    dependent: set[int] = set()
    for node in live:  # evaluation order: operands first
        if node.op in JUDGED_OPS or any(a.id in dependent for a in node.args):
            dependent.add(node.id)
    result = DemandPlan(judged, [])
    wanted: set[int] = set()  # free nodes the masks read

    gates_so_far: list[str] = []
    for level in program.levels:
        result.reach[level.name] = list(gates_so_far)
        result.counted[level.name] = level.gate or level.weight != 0
        if level.gate:
            # A rule that weighs nothing cannot lower its level's score, so cannot close it.
            free_rules = [r for r in level.rules if r.weight > 0 and r.body.id not in dependent
                          and (r.when is None or r.when.id not in dependent)]
            for rule in free_rules:
                wanted.add(rule.body.id)
                if rule.when is not None:
                    wanted.add(rule.when.id)
            result.gates.append((level.name, free_rules))
            gates_so_far.append(level.name)
        for rule in level.rules:
            body_needs = rule.body.id in dependent
            when_needs = rule.when is not None and rule.when.id in dependent
            if not (body_needs or when_needs):
                continue
            result.rules.append(rule)
            if rule.when is not None and not when_needs:
                wanted.add(rule.when.id)
            if body_needs:
                result.contributions.setdefault(rule.body.id, []).append(Contribution("all", rule=rule.name))
            if when_needs:
                result.contributions.setdefault(rule.when.id, []).append(
                    Contribution("all", rule=rule.name, when_of=True))

    by_id = {n.id: n for n in live}
    order = [n for n in live if n.id in dependent]
    for parent in reversed(order):  # parents before their operands
        for position, arg in enumerate(parent.args):
            if arg.id not in dependent:
                continue
            contribution = _through(parent, position, dependent)
            if contribution.other is not None:
                wanted.add(contribution.other)
            result.contributions.setdefault(arg.id, []).append(contribution)
    result.dependent = list(reversed(order))

    closure = reachable(by_id[i] for i in wanted)
    result.free = [n for n in live if n.id in closure]
    return result


def _through(parent: Node, position: int, dependent: set[int]) -> Contribution:
    """How operand ``position`` of ``parent`` reaches the reward through it."""
    others = [a for i, a in enumerate(parent.args) if i != position]
    if parent.op in ("and", "or") and len(others) == 1 and others[0].id not in dependent:
        return Contribution(parent.op, parent=parent.id, other=others[0].id)
    if parent.op == "if" and position in (1, 2) and parent.args[0].id not in dependent:
        return Contribution("then" if position == 1 else "else", parent=parent.id,
                            other=parent.args[0].id)
    if parent.op in ("batch_min", "batch_max", "batch_mean"):  # every row's value reaches every row
        return Contribution("batch", parent=parent.id)
    return Contribution("all", parent=parent.id)
