"""The syntax tree of a spec: frozen dataclasses that only declare, each carrying its span.

The parser builds it; the checker reads it; nothing here has behaviour beyond ``summary``,
which prints a compact, stable outline used by the parser's golden tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from kdsl.errors import NO_SPAN, Span


@dataclass(frozen=True)
class Node:
    span: Span = field(default=NO_SPAN, compare=False, repr=False, kw_only=True)


# ---- expressions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Expr(Node):
    pass


@dataclass(frozen=True)
class Number(Expr):
    value: float
    is_int: bool = False


@dataclass(frozen=True)
class String(Expr):
    value: str


@dataclass(frozen=True)
class Strings(Expr):
    """``"a" | "b" | "c"``: a set of terms (for ``mentions`` and similar)."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class Bool(Expr):
    value: bool


@dataclass(frozen=True)
class Name(Expr):
    id: str


@dataclass(frozen=True)
class Attr(Expr):
    obj: Expr
    name: str


@dataclass(frozen=True)
class KeywordArg(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class Call(Expr):
    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[KeywordArg, ...] = ()


@dataclass(frozen=True)
class Index(Expr):
    obj: Expr
    index: Expr


@dataclass(frozen=True)
class Convert(Expr):
    """``x as Type``: parse text into a number, enum or box."""

    obj: Expr
    type_name: str


@dataclass(frozen=True)
class Unary(Expr):
    op: str  # "-" | "not"
    operand: Expr


@dataclass(frozen=True)
class Binary(Expr):
    op: str  # + - * / % ** and or
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Compare(Expr):
    """``a < b <= c``: a chain, read as ``a < b and b <= c``."""

    operands: tuple[Expr, ...]
    ops: tuple[str, ...]
    op_spans: tuple[Span, ...] = field(default=(), compare=False, repr=False)  # where each operator is written


@dataclass(frozen=True)
class SetLiteral(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class RangeLiteral(Expr):
    """``a..b`` (both ends included) or an interval ``[a, b)``, ``(a, b]``, ``(a, b)``, ``[a, b]``."""

    low: Expr
    high: Expr
    low_open: bool = False  # the low end itself is outside: `(a, ...`
    high_open: bool = False  # the high end itself is outside: `..., b)`


@dataclass(frozen=True)
class In(Expr):
    element: Expr
    collection: Expr  # SetLiteral | RangeLiteral
    negated: bool = False


@dataclass(frozen=True)
class If(Expr):
    condition: Expr
    then: Expr
    otherwise: Expr
    criterion: str | None = None  # a points sheet's criterion, for messages: not written as `if`


@dataclass(frozen=True)
class TagExtractor(Expr):
    position: str  # first | last | only
    tag: str
    within: Expr | None = None


@dataclass(frozen=True)
class RegexExtractor(Expr):
    pattern: str
    within: Expr | None = None


# ---- declarations ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Import(Node):
    path: str
    alias: str


@dataclass(frozen=True)
class EnumMember(Node):
    name: str
    synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnumDecl(Node):
    name: str
    members: tuple[EnumMember, ...]


@dataclass(frozen=True)
class TypeExpr(Node):
    """``kind`` is the type's name (float, int, bool, str, box, an enum's name), or vector/raster."""

    kind: str
    size: int | None = None
    bands: tuple[str, ...] = ()
    nodata: float | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # `in (0, 1]`: the low end itself is outside the range
    high_open: bool = False
    enum: EnumDecl | None = None  # an enum declared inline
    unit: str | None = None  # `float mmol/L`: the unit the values are in


@dataclass(frozen=True)
class InputDecl(Node):
    name: str
    type: TypeExpr


@dataclass(frozen=True)
class OutputDecl(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class Let(Node):
    name: str
    value: Expr
    unit: str | None = None  # `let size_cm: cm = size`: the value converted to (or stated in) a unit


@dataclass(frozen=True)
class Param(Node):
    name: str
    default: float | None = None
    unit: str | None = None  # `urea: mmol/L`: arguments in other units are converted to it


@dataclass(frozen=True)
class Criterion(Node):
    """One line of a points sheet: ``name: condition -> points``."""

    name: str
    condition: Expr
    points: float
    points_span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Def(Node):
    name: str
    params: tuple[Param, ...]
    body: Expr
    # A points sheet: its criteria, and ``body`` their sum (`if condition then points else 0`
    # for each), so the sheet is checked, imported and called as the def it is.
    criteria: tuple[Criterion, ...] = ()
    # `def f(x): mmol/L = ...`: the unit of the result, for a conversion only the spec knows
    # (a mass to a molar concentration through a molar mass)
    unit: str | None = None


@dataclass(frozen=True)
class TableParam(Node):
    name: str
    type_name: str
    # `score: int in 0..5`: the values the column can take, so gaps are looked for only there
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    unit: str | None = None


@dataclass(frozen=True)
class Cell(Node):
    """One condition of a table row: ``_``, a name, ``{a, b}``, ``< 6``, ``6..8``, an interval
    such as ``[0.1, 0.27)`` (kind ``range`` with an open end) or ``6``."""

    kind: str  # any | name | set | compare | range | number
    names: tuple[str, ...] = ()
    op: str | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # range: the low end itself does not match
    high_open: bool = False  # range: the high end itself does not match
    # Where the operator and the numbers are written (a number cell: low_span only).
    op_span: Span = field(default=NO_SPAN, compare=False, repr=False)
    low_span: Span = field(default=NO_SPAN, compare=False, repr=False)
    high_span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class TableRow(Node):
    cells: tuple[Cell, ...]
    result: str | float
    result_span: Span = field(default=NO_SPAN, compare=False, repr=False)  # where the result is written


@dataclass(frozen=True)
class Table(Node):
    name: str
    params: tuple[TableParam, ...]
    result_type: str
    rows: tuple[TableRow, ...]


@dataclass(frozen=True)
class Rule(Node):
    name: str
    body: Expr
    when: Expr | None = None
    soft: float | None = None
    weight: float = 1.0
    on: str | None = None
    invalid: str = "fail"


@dataclass(frozen=True)
class Level(Node):
    name: str
    rules: tuple[Rule, ...]
    gate: bool = False
    weight: float = 1.0


@dataclass(frozen=True)
class Setting(Node):
    name: str
    value: str | float


@dataclass(frozen=True)
class Advantage(Node):
    estimator: str
    settings: tuple[Setting, ...] = ()


@dataclass(frozen=True)
class ModelDecl(Node):
    """`judge NAME` or `reward_model NAME`: a model the spec calls, bound when it is loaded."""

    kind: str  # judge | reward_model
    name: str


@dataclass(frozen=True)
class Mask(Node):
    mode: str  # after | before
    marker: str


@dataclass(frozen=True)
class ExampleValue(Node):
    kind: str  # string | number | bool | none | name | list | fixture
    value: object = None


@dataclass(frozen=True)
class ExampleField(Node):
    name: str
    value: ExampleValue


@dataclass(frozen=True)
class Expectation(Node):
    kind: str  # holds | violated | inapplicable | compare | relative | judge
    target: tuple[str, ...]
    op: str | None = None
    value: float | None = None
    tolerance: float | None = None
    other: str | None = None  # relative: the example compared with; judge: the choice


@dataclass(frozen=True)
class Example(Node):
    title: str
    fields: tuple[ExampleField, ...]
    expectations: tuple[Expectation, ...]


@dataclass(frozen=True)
class Spec(Node):
    name: str
    version: int
    logic: str = "product"
    imports: tuple[Import, ...] = ()
    enums: tuple[EnumDecl, ...] = ()
    inputs: tuple[InputDecl, ...] = ()
    outputs: tuple[OutputDecl, ...] = ()
    lets: tuple[Let, ...] = ()
    defs: tuple[Def, ...] = ()
    tables: tuple[Table, ...] = ()
    levels: tuple[Level, ...] = ()
    advantage: Advantage | None = None
    masks: tuple[Mask, ...] = ()
    examples: tuple[Example, ...] = ()
    models: tuple[ModelDecl, ...] = ()
    file: str = "<string>"


def summary(node: object, indent: int = 0) -> str:
    """A compact outline of a tree: one node a line, fields inline when they are plain values."""
    pad = "  " * indent
    if isinstance(node, tuple):
        return "\n".join(summary(item, indent) for item in node)
    if not isinstance(node, Node):
        return pad + repr(node)
    plain, nested = [], []
    for f in fields(node):
        if f.name == "file" or not f.compare:  # where things are written: shown as @line:column
            continue
        value = getattr(node, f.name)
        if isinstance(value, Node) or (isinstance(value, tuple) and value and isinstance(value[0], Node)):
            nested.append((f.name, value))
        elif not (value is None or value is False or value == ()) or f.name == "value":
            plain.append(f"{f.name}={_plain(value)}")
    where = f" @{node.span.line}:{node.span.column}" if node.span.line else ""
    lines = [f"{pad}{type(node).__name__}({', '.join(plain)}){where}"]
    for name, value in nested:
        lines.append(f"{pad}  .{name}:")
        lines.append(summary(value, indent + 2))
    return "\n".join(lines)


def _plain(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return repr(value)
