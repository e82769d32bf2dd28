"""The checked program: a typed expression graph plus the rule, level and reward structure.

Nodes are hash-consed by ``GraphBuilder``: the same operation on the same operands is one node,
so an extractor, a ``let`` or a shared sub-expression is computed once however often it is used.
``dump`` prints the graph for ``kdsl compile --emit ir``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdsl.errors import NO_SPAN, Span
from kdsl.operators import JUDGED_OPS as JUDGED_OPERATIONS
from kdsl.operators import TEXT_OPS as TEXT_OPERATIONS
from kdsl.types import EnumType, Type

# Operations of the text phase: they read completions and run once per batch in Python (their
# entries are in `kdsl.operators`). Those of phase "value" give a tensor value: the boundary to the
# tensor phase.
TEXT_OPS = frozenset(TEXT_OPERATIONS)
EXTRACTOR_OPS = frozenset(name for name, op in TEXT_OPERATIONS.items() if op.phase == "value")
# Operations a model gives the value of (a judge's rubric item, a reward model's score): between
# the two phases, for the rows where the value can change the reward (`kdsl.runtime.judging`).
JUDGED_OPS = frozenset(name for name, op in JUDGED_OPERATIONS.items())

# The names generated code gives a node's values. Code generation writes them and `kdsl explain`
# reads them back from a traced run, so both go through these.
GENERATED_PREFIX = {"span": "s", "groups": "g", "value": "x", "mask": "m"}


def generated_name(kind: str, node_id: int) -> str:
    """The variable holding one node's ``span`` list, regex ``groups``, tensor ``value`` or ``mask``."""
    return f"{GENERATED_PREFIX[kind]}{node_id}"


def span_name(node_id: int) -> str:
    return generated_name("span", node_id)


def groups_name(node_id: int) -> str:
    return generated_name("groups", node_id)


def value_name(node_id: int) -> str:
    return generated_name("value", node_id)


def mask_name(node_id: int) -> str:
    return generated_name("mask", node_id)


@dataclass(eq=False)
class Node:
    op: str
    args: tuple[Node, ...]
    type: Type
    attrs: tuple = ()
    span: Span = NO_SPAN
    id: int = 0
    depth: int = 1  # the longest chain of operations below and including this one

    @property
    def is_text_phase(self) -> bool:
        return self.op in TEXT_OPS

    def attr(self, key: str, default=None):
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    def __repr__(self) -> str:
        return f"%{self.id}"


class GraphBuilder:
    """Creates nodes, merging structurally identical ones (common sub-expression elimination)."""

    def __init__(self) -> None:
        self._nodes: dict[tuple, Node] = {}
        self.order: list[Node] = []

    def node(self, op: str, args: tuple[Node, ...], type_: Type, attrs: dict | None = None,
             span: Span = NO_SPAN) -> Node:
        frozen_attrs = tuple(sorted((attrs or {}).items()))
        key = (op, tuple(a.id for a in args), frozen_attrs, type_)
        found = self._nodes.get(key)
        if found is not None:
            return found
        created = Node(op, args, type_, frozen_attrs, span, id=len(self.order) + 1,
                       depth=1 + max((a.depth for a in args), default=0))
        self._nodes[key] = created
        self.order.append(created)
        return created


@dataclass(frozen=True)
class SheetCall:
    """A call of a points sheet: its total, and per criterion (name, points, condition node, the
    criterion's span), so explanations can show which criteria gave which points."""

    sheet: str
    span: Span
    total: Node
    criteria: tuple[tuple[str, float, Node, Span], ...]


@dataclass(frozen=True)
class ModelSpec:
    """A model the spec calls (`judge NAME`, `reward_model NAME`), bound when it is loaded."""

    name: str
    kind: str  # judge | reward_model
    span: Span = NO_SPAN


@dataclass
class InputSpec:
    name: str
    type: Type
    span: Span
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    unit: str | None = None


@dataclass
class RuleIR:
    name: str
    level: str
    body: Node
    when: Node | None
    weight: float
    soft: float | None
    invalid: str
    on: str | None
    span: Span


@dataclass
class LevelIR:
    name: str
    gate: bool
    weight: float
    rules: list[RuleIR]
    span: Span


@dataclass(frozen=True)
class TableCell:
    """One condition of a table row (see ``ast.Cell``): ``_`` (kind ``any``), members (``name``,
    ``set``), a comparison, a range (with open ends) or a number."""

    kind: str  # any | name | set | compare | range | number
    names: tuple[str, ...] = ()
    op: str | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    span: Span = NO_SPAN


@dataclass(frozen=True)
class TableRow:
    cells: tuple[TableCell, ...]
    result: str | float
    span: Span = NO_SPAN


@dataclass(frozen=True)
class TableColumn:
    name: str
    type: Type
    unit: str | None = None  # its unit's name
    # `score: int in 0..5`: the values the column can take, so gaps are looked for only there
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    span: Span = NO_SPAN


@dataclass
class TableIR:
    name: str  # qualified: `alias.table` for an imported table
    columns: list[TableColumn]
    result: Type
    rows: list[TableRow]
    span: Span
    written_name: str = ""  # as its spec declares it, for messages about the table itself

    @property
    def params(self) -> list[tuple[str, Type]]:
        return [(c.name, c.type) for c in self.columns]

    @property
    def units(self) -> tuple:
        return tuple(c.unit for c in self.columns)


@dataclass
class ProgramIR:
    name: str
    version: int
    logic: str
    file: str
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    enums: dict[str, EnumType] = field(default_factory=dict)
    outputs: dict[str, Node] = field(default_factory=dict)
    lets: dict[str, Node] = field(default_factory=dict)
    tables: dict[str, TableIR] = field(default_factory=dict)
    levels: list[LevelIR] = field(default_factory=list)
    advantage: dict = field(default_factory=lambda: {"estimator": "grpo", "scale": "group",
                                                      "aggregate": "sum"})
    masks: list = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    # Node id -> where this spec calls the imported def the node was made for: diagnostics about
    # a library's code are reported there, in the spec the user can change.
    call_sites: dict[int, Span] = field(default_factory=dict)
    # Node id -> the call (in this spec) of the def whose body the node was made from: generated
    # code tags such a line with both places (`spec.kd:30 <- def at lib.kd:12`).
    inlined_at: dict[int, Span] = field(default_factory=dict)
    sheet_calls: list = field(default_factory=list)  # SheetCall, one per distinct points-sheet call
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def rules(self) -> list[RuleIR]:
        return [rule for level in self.levels for rule in level.rules]

    def live_nodes(self) -> list[Node]:
        """Nodes reachable from rules, lets and outputs, in creation (topological) order."""
        roots = [r.body for r in self.rules] + [r.when for r in self.rules if r.when is not None]
        roots += list(self.lets.values()) + list(self.outputs.values())
        seen = reachable(roots)
        return [n for n in self.nodes if n.id in seen]


def reachable(roots) -> set[int]:
    """The ids of ``roots`` and of every node they are computed from."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        stack.extend(node.args)
    return seen


def format_attr(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, EnumType):
        return value.name
    if isinstance(value, tuple):
        return "(" + ", ".join(format_attr(v) for v in value) + ")"
    return repr(value)


def dump(program: ProgramIR) -> str:
    """The IR as text: one node a line, then lets, rules, levels and the advantage settings."""
    lines = [f"program {program.name} version {program.version} logic {program.logic}"]
    for spec in program.inputs.values():
        lines.append(f"input {spec.name}: {spec.type}")
    for model in program.models.values():
        lines.append(f"{model.kind} {model.name}")
    for node in program.live_nodes():
        args = ", ".join(repr(a) for a in node.args)
        attrs = " ".join(f"{k}={format_attr(v)}" for k, v in node.attrs)
        where = f"  # {_short(node.span)}" if node.span.line else ""
        lines.append(f"%{node.id} = {node.op}({args}){(' ' + attrs) if attrs else ''} : {node.type}{where}")
    for name, node in program.outputs.items():
        lines.append(f"output {name} = {node!r}")
    for name, node in program.lets.items():
        lines.append(f"let {name} = {node!r}")
    for level in program.levels:
        flags = (" gate" if level.gate else "") + f" weight {format_attr(level.weight)}"
        lines.append(f"level {level.name}{flags}")
        for rule in level.rules:
            parts = [f"  rule {rule.name}: {rule.body!r}"]
            if rule.when is not None:
                parts.append(f"when {rule.when!r}")
            parts.append(f"weight {format_attr(rule.weight)} invalid {rule.invalid}")
            if rule.on:
                parts.append(f"on {rule.on}")
            lines.append(" ".join(parts))
    settings = ", ".join(f"{k} = {v}" for k, v in program.advantage.items() if k != "estimator")
    lines.append(f"advantage {program.advantage['estimator']}({settings})")
    return "\n".join(lines) + "\n"


def _short(span: Span) -> str:
    return f"{span.file.rsplit('/', 1)[-1]}:{span.line}"
