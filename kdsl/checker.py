"""Stage 2: ``ast.Spec`` -> ``ir.ProgramIR``.

Passes, in the order ``check`` runs them: ``declare_names`` (enums, inputs, tables, duplicates),
``lower_definitions`` (outputs and lets, types inferred), ``lower_rules``, ``check_settings``
(advantage, masks, examples), ``report_unused``; then the knowledge analyses of
``kdsl.analysis`` (tables, intervals). Every problem goes to one ``DiagnosticSink`` and all
errors are raised together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kdsl import ast, units
from kdsl import types as T
from kdsl.builtins import BUILTINS, Call, band_hint
from kdsl.errors import DiagnosticSink, Span, did_you_mean
from kdsl.ir import (
    GraphBuilder,
    InputSpec,
    LevelIR,
    Node,
    ProgramIR,
    RuleIR,
    SheetCall,
    TableCell,
    TableColumn,
    TableIR,
    TableRow,
)
from kdsl.limits import MAX_NESTING, MAX_NUMBER
from kdsl.types import EnumType, Type

SCALAR_TYPE_NAMES = ("float", "int", "bool", "str", "box", "boxes")
LOGICS = ("product", "godel", "lukasiewicz")
ESTIMATORS = {"grpo": {"scale": ("group", "batch", "none"), "aggregate": ("sum", "per_level", "per_rule")},
              "rloo": {"aggregate": ("sum", "per_level", "per_rule")}}
ADVANTAGE_DEFAULTS = {"grpo": {"scale": "group", "aggregate": "sum"}, "rloo": {"aggregate": "sum"}}
MAX_CALL_NOTES = 8  # "in `f`, called at ..." notes on one error, innermost first
_CMP_OPS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}


@dataclass
class Scope:
    """What one spec file exports to the specs that import it: enums, defs and tables."""

    file: str
    prefix: str = ""
    enums: dict[str, EnumType] = field(default_factory=dict)
    defs: dict[str, ast.Def] = field(default_factory=dict)
    tables: dict[str, TableIR] = field(default_factory=dict)
    imports: dict[str, Scope] = field(default_factory=dict)
    # Aliases whose import failed (already reported): names through them are not errors again.
    unavailable: set[str] = field(default_factory=set)
    # Tables declared with errors (already reported): calls to them are not errors again.
    failed: set[str] = field(default_factory=set)
    # Every table whose columns and result could be resolved, with errors in its rows or not.
    declared_tables: list[TableIR] = field(default_factory=list)

    def through_failed_import(self, name: str) -> bool:
        """Whether ``name`` (``alias`` or ``alias.rest``) goes through an import that failed."""
        return name.partition(".")[0] in self.unavailable


@dataclass
class _Ctx:
    scope: Scope
    locals: dict[str, Node] = field(default_factory=dict)
    soft: float | None = None
    calls: tuple[str, ...] = ()  # defs being expanded, to catch recursion


class _Failed(Exception):
    """Raised after an error has been reported, to abandon the expression being lowered."""


class Checker:
    def __init__(self, spec: ast.Spec, scope: Scope, sink: DiagnosticSink,
                 builder: GraphBuilder | None = None):
        self.spec = spec
        self.scope = scope
        self.sink = sink
        self.graph = builder or GraphBuilder()
        self.program = ProgramIR(spec.name, spec.version, spec.logic, spec.file)
        self._variables: dict[str, ast.Node] = {}  # module-level names: inputs, outputs, lets
        self._lowered: dict[str, Node | None] = {}
        self._lowering: list[str] = []
        self._used: set[str] = set()
        self._completion: Node | None = None
        self._depth = 0  # how deep `lower` is nested now
        # Each def call with the same argument nodes lowers to the same node (the graph merges
        # them anyway); remembering it keeps defs that call defs twice from taking exponential time.
        self._expanded: dict[tuple, Node] = {}
        self._library_call: Span | None = None  # the call of an imported def being expanded
        self._def_call: Span | None = None  # the spec's own call of the def being expanded
        self._units: dict[int, units.Unit] = {}  # node id -> the unit its values are in

    # ---- entry ----------------------------------------------------------------------------------
    def run(self) -> ProgramIR:
        for step in (self.declare_names, self.lower_definitions, self.lower_rules,
                     self.check_settings, self.report_unused):
            step()
        self.program.nodes = list(self.graph.order)
        self.program.sources = dict(self.sink.sources)  # the spec's and its imports' text
        return self.program

    def error(self, code: str, message: str, span: Span, *notes: str) -> _Failed:
        self.sink.error(code, message, span, *notes)
        return _Failed()

    # ---- pass: declare_names -------------------------------------------------------------------
    def declare_names(self) -> None:
        spec = self.spec
        if spec.logic not in LOGICS:
            self.sink.error("KD031", f"unknown logic `{spec.logic}`; choose one of {', '.join(LOGICS)}"
                            f"{did_you_mean(spec.logic, LOGICS)}", spec.span)
            self.program.logic = "product"
        for enum in spec.enums:
            self.declare_enum(enum)
        for decl in spec.inputs:
            if decl.type.enum is not None:
                self.declare_enum(decl.type.enum)
        seen: dict[str, ast.Node] = {}
        for decl in (*spec.inputs, *spec.outputs, *spec.lets):
            name = decl.name
            if name in seen:
                self.sink.error("KD032", f"`{name}` is already defined at line {seen[name].span.line}", decl.span)
                continue
            if name in self.scope.imports:
                self.sink.error("KD032", f"`{name}` is already the name of an import", decl.span)
                continue
            seen[name] = decl
            self._variables[name] = decl
        for decl in spec.inputs:
            type_ = self.resolve_type(decl.type)
            unit = self.declared_unit(decl.type.unit, type_, decl.span)
            if type_ is not None:
                self.program.inputs[decl.name] = InputSpec(
                    decl.name, type_, decl.span, decl.type.low, decl.type.high,
                    decl.type.low_open, decl.type.high_open, unit)
        for d in spec.defs:
            if d.name in self.scope.defs:
                self.sink.error("KD032", f"def `{d.name}` is already defined at line "
                                f"{self.scope.defs[d.name].span.line}", d.span)
            self.scope.defs[d.name] = d
            # Units are checked where the def is written, whether or not anything calls it.
            named = [(p.unit, f"`{p.name}` of `{d.name}`", p.span) for p in d.params if p.unit]
            if d.unit:
                named.append((d.unit, f"the result of `{d.name}`", d.span))
            for unit, what, span in named:
                if units.unit_named(unit) is None:
                    self.sink.error("KD034", f"unknown unit `{unit}` for {what}"
                                    f"{did_you_mean(unit, units.UNITS)}", span)
                    self.scope.failed.add(d.name)
        for table in spec.tables:
            self.declare_table(table, self.scope)
        self.program.enums = dict(self.scope.enums)
        self.program.tables.update({t.name: t for t in self.scope.tables.values()})

    def declare_enum(self, decl: ast.EnumDecl) -> None:
        if decl.name in SCALAR_TYPE_NAMES:
            self.sink.error("KD032", f"`{decl.name}` is a built-in type; give the enum another name",
                            decl.span)
            return
        if decl.name in self.scope.enums:
            self.sink.error("KD032", f"enum `{decl.name}` is already defined", decl.span)
            return
        names = [m.name for m in decl.members]
        for i, member in enumerate(decl.members):
            if member.name in names[:i]:
                self.sink.error("KD033", f"enum `{decl.name}` lists `{member.name}` twice", member.span)
        # An imported spec's enum is named with its alias (`fleischner.FollowUp`): that is how
        # messages show it, and it keeps it apart from an enum of the same name here.
        self.scope.enums[decl.name] = EnumType(
            self.scope.prefix + decl.name, tuple(dict.fromkeys(names)),
            tuple(m.synonyms for m in decl.members if m.name in names))

    def declared_unit(self, name: str | None, type_: Type | None, span: Span) -> str | None:
        """A unit written after a type: known, and on a number."""
        if name is None:
            return None
        if units.unit_named(name) is None:
            self.sink.error("KD034", f"unknown unit `{name}`{did_you_mean(name, units.UNITS)}", span,
                            f"kdsl knows: {units.known_units()}")
            return None
        if type_ is not None and type_.kind not in ("float", "int", "vector", "raster"):
            self.sink.error("KD035", f"only numbers have units; this is {type_}", span)
            return None
        return name

    def resolve_type(self, t: ast.TypeExpr) -> Type | None:
        if t.kind == "vector":
            if t.bands and len(t.bands) != t.size:
                self.sink.error("KD036", f"vector[{t.size}] names {len(t.bands)} bands; name all "
                                f"{t.size} or none", t.span)
            elif len(set(t.bands)) != len(t.bands):
                self.sink.error("KD037", "a vector names the same band twice", t.span)
            return Type("vector", size=t.size, bands=t.bands)
        if t.kind == "raster":
            if t.bands and len(t.bands) != t.size:
                self.sink.error("KD036", f"raster[{t.size}] names {len(t.bands)} bands; name all "
                                f"{t.size} or none", t.span)
                return None
            if len(set(t.bands)) != len(t.bands):
                self.sink.error("KD037", "a raster names the same band twice", t.span)
            return Type("raster", size=t.size, bands=t.bands, nodata=t.nodata)
        if t.kind in ("float", "int"):
            if t.low is not None and t.high is not None and t.low > t.high:
                self.sink.error("KD011", f"empty range {t.low:g}..{t.high:g}", t.span)  # pragma: no cover - the parser refuses it first
            return Type(t.kind)
        if t.low is not None:
            self.sink.error("KD038", f"only number inputs (float, int, vector, raster) take a range, "
                            f"not {t.kind}", t.span)
        if t.kind in ("bool", "str", "box", "boxes"):
            return Type(t.kind)
        if t.kind in ("text",):
            self.sink.error("KD039", "an input cannot be text: inputs are dataset columns; use `str`", t.span)
            return None
        enum = enum_named(t.kind, self.scope)
        if enum is not None:
            return T.enum_type(enum)
        if self.scope.through_failed_import(t.kind):
            return None
        candidates = (*SCALAR_TYPE_NAMES, "vector", "raster", *self.scope.enums)
        self.sink.error("KD040", f"unknown type `{t.kind}`{did_you_mean(t.kind, candidates)}", t.span)
        return None

    def declare_table(self, table: ast.Table, scope: Scope) -> None:
        params: list[tuple[str, Type]] = []
        for p in table.params:
            type_ = self._type_by_name(p.type_name, scope, p.span, allow=("float", "int", "bool"))
            if type_ is None:
                scope.failed.add(table.name)
                return
            params.append((p.name, type_))
        result = self._type_by_name(table.result_type, scope, table.span, allow=("float", "int"))
        if result is None:
            scope.failed.add(table.name)
            return
        if table.name in scope.tables:
            self.sink.error("KD032", f"table `{table.name}` is already defined", table.span)
            return
        ok = True
        for row in table.rows:
            if isinstance(row.result, str):
                if result.kind != "enum":
                    self.sink.error("KD090", f"table `{table.name}` gives a {result}, not `{row.result}`", row.span)
                    ok = False
                elif row.result not in result.enum.members:
                    self.sink.error("KD065", not_a_member(row.result, result.enum), row.span)
                    ok = False
            elif result.kind == "enum":
                self.sink.error("KD090", f"table `{table.name}` gives a {result.enum.name}, not a number", row.span)
                ok = False
        columns = [TableColumn(p.name, t, self.declared_unit(p.unit, t, p.span), p.low, p.high, p.low_open,
                               p.high_open, p.span) for p, (_, t) in zip(table.params, params)]
        for column in columns:
            if column.low is not None and column.type.kind not in ("float", "int"):
                self.sink.error("KD038", f"only a number column has a range; `{column.name}` is "
                                f"{column.type}", column.span)
        ir_table = TableIR(scope.prefix + table.name, columns, result, table_rows(table), table.span,
                           table.name)
        scope.declared_tables.append(ir_table)  # analysed for gaps and overlaps, errors or not
        if ok:
            scope.tables[table.name] = ir_table
        else:
            scope.failed.add(table.name)

    def _type_by_name(self, name: str, scope: Scope, span: Span, allow: tuple[str, ...]) -> Type | None:
        if name in allow:
            return Type(name)
        enum = enum_named(name, scope)
        if enum is not None:
            return T.enum_type(enum)
        if scope.through_failed_import(name):
            return None
        self.sink.error("KD040", f"unknown type `{name}`{did_you_mean(name, (*allow, *scope.enums))}", span)
        return None

    # ---- pass: lower_definitions ----------------------------------------------------------------
    def lower_definitions(self) -> None:
        for decl in (*self.spec.outputs, *self.spec.lets):
            if self._variables.get(decl.name) is not decl:
                continue  # a duplicate, or a clash with an import: already reported
            node = self.variable(decl.name, decl.span, count_use=False)
            if node is None:
                continue
            if isinstance(decl, ast.OutputDecl):
                self.program.outputs[decl.name] = node
            else:
                self.program.lets[decl.name] = node

    def variable(self, name: str, span: Span, count_use: bool = True) -> Node | None:
        """The node of a module-level name, lowering a let or output on first use."""
        if count_use:
            self._used.add(name)
        if name in self._lowered:
            return self._lowered[name]
        decl = self._variables[name]
        if name in self._lowering:
            cycle = " -> ".join([*self._lowering[self._lowering.index(name):], name])
            raise self.error("KD041", f"`{name}` is defined in terms of itself: {cycle}", span)
        self._lowering.append(name)
        try:
            if isinstance(decl, ast.InputDecl):
                spec = self.program.inputs.get(name)
                node = None if spec is None else self.graph.node(
                    "input", (), spec.type, {"name": name}, decl.span)
                if node is not None and spec.unit is not None:
                    self._units[node.id] = units.unit_named(spec.unit)
            else:
                node = self.lower(decl.value, _Ctx(self.scope))
                if isinstance(decl, ast.Let) and decl.unit is not None:
                    node = self.let_in_unit(node, decl)
        except _Failed:
            node = None
        finally:
            self._lowering.pop()
        self._lowered[name] = node
        return node

    # ---- pass: lower_rules -----------------------------------------------------------------------
    def lower_rules(self) -> None:
        names: dict[str, Span] = {}
        for level in self.spec.levels:
            if level.name in names:
                self.sink.error("KD032", f"level `{level.name}` is already defined", level.span)
            names[level.name] = level.span
            if level.weight < 0:
                self.sink.error("KD043", "a level's weight cannot be negative", level.span)
            rules = []
            for rule in level.rules:
                if rule.name in names:
                    self.sink.error("KD032", f"`{rule.name}` is already the name of a rule or level "
                                    f"(line {names[rule.name].line})", rule.span)
                    continue
                names[rule.name] = rule.span
                lowered = self.lower_rule(rule, level.name)
                if lowered is not None:
                    rules.append(lowered)
            if not level.rules:
                self.sink.error("KD044", f"level `{level.name}` has no rules", level.span)
            if sum(max(float(r.weight), 0.0) for r in level.rules) > MAX_NUMBER:
                self.sink.error("KD045", f"the rule weights of level `{level.name}` add up to more than "
                                f"{MAX_NUMBER:.4g}, so its weighted mean would overflow float32",
                                level.span)
            self.program.levels.append(LevelIR(level.name, level.gate, level.weight, rules, level.span))
        if sum(max(float(lv.weight), 0.0) for lv in self.spec.levels) > MAX_NUMBER:
            self.sink.error("KD045", f"the level weights add up to more than {MAX_NUMBER:.4g}, so the "
                            "reward would overflow float32", self.spec.levels[0].span)
        if not self.spec.levels:
            self.sink.warning("KD046", "this spec has no levels, so it gives no reward; it can still be "
                              "imported for its enums, defs and tables", self.spec.span)

    def lower_rule(self, rule: ast.Rule, level: str) -> RuleIR | None:
        if rule.weight < 0:
            self.sink.error("KD043", "a rule's weight cannot be negative", rule.span)
        when = None
        try:
            if rule.when is not None:
                when = self.lower(rule.when, _Ctx(self.scope))
                if when.type.kind != "bool":
                    raise self.error("KD047", f"a `when` condition must be true or false, not {self._kind(when)}",
                                     rule.when.span)
            body = self.lower(rule.body, _Ctx(self.scope, soft=rule.soft))
        except _Failed:
            return None
        kind = body.type.kind
        if kind in ("field", "raster") or (kind == "vector"):
            self.sink.error("KD048",
                f"rule `{rule.name}` gives a {self._kind(body)}, not one truth value per sample; "
                "reduce it first, e.g. frac(...), mean(...), min(...) or max(...)", rule.body.span)
            return None
        if kind in ("int", "float"):
            body = self.graph.node("truth", (body,), T.BOOL, {}, rule.body.span)
        elif kind != "bool":
            self.sink.error("KD049", f"rule `{rule.name}` must be a condition or a number in 0..1, not "
                            f"{self._kind(body)}", rule.body.span)
            return None
        if rule.on is not None:
            target = self._variables.get(rule.on)
            node = self._lowered.get(rule.on)
            if target is None or node is None or node.op not in ("tag", "regex", "regex_group"):
                outputs = [o.name for o in self.spec.outputs]
                if rule.on in outputs:
                    self.sink.error("KD050", f"`on {rule.on}`: `{rule.on}` is a value read from the text, not "
                                    "a span of it; name the tag or regex output it is read from",
                                    rule.span)
                else:
                    self.sink.error("KD050", f"`on {rule.on}`: expected the name of a tag or regex output"
                                    f"{did_you_mean(rule.on, outputs)}", rule.span)
            else:
                self._used.add(rule.on)
        return RuleIR(rule.name, level, body, when, rule.weight, rule.soft, rule.invalid, rule.on,
                      rule.span)

    # ---- pass: check_settings ---------------------------------------------------------------------
    def check_settings(self) -> None:
        adv = self.spec.advantage
        if adv is not None:
            options = ESTIMATORS.get(adv.estimator)
            if options is None:
                self.sink.error("KD051", f"unknown advantage estimator `{adv.estimator}`; choose "
                                f"{' or '.join(ESTIMATORS)}{did_you_mean(adv.estimator, ESTIMATORS)}",
                                adv.span)
            else:
                settings = {"estimator": adv.estimator, **ADVANTAGE_DEFAULTS[adv.estimator]}
                for s in adv.settings:
                    allowed = options.get(s.name)
                    if allowed is None:
                        self.sink.error("KD052", f"`{adv.estimator}` has no setting `{s.name}`; it takes "
                                        f"{', '.join(options)}{did_you_mean(s.name, options)}", s.span)
                    elif s.value not in allowed:
                        shown = f"{s.value:g}" if isinstance(s.value, float) else s.value
                        self.sink.error("KD053", f"`{s.name}` takes {', '.join(allowed)}, not `{shown}`"
                                        f"{did_you_mean(str(s.value), allowed)}", s.span)
                    else:
                        settings[s.name] = s.value
                self.program.advantage = settings
        self.program.masks = [(m.mode, m.marker) for m in self.spec.masks]
        for m in self.spec.masks:
            if not m.marker:
                self.sink.error("KD054", "a mask marker cannot be empty", m.span)
        self.check_examples()

    def check_examples(self) -> None:
        rules = {r.name for r in self.program.rules}
        # Rules written in the spec whose body has an error (already reported) are not unknown.
        written = {r.name for lv in self.spec.levels for r in lv.rules}
        levels = {lv.name for lv in self.program.levels}
        lets = set(self.program.lets)
        titles: set[str] = set()
        for example in self.spec.examples:
            if example.title in titles:
                self.sink.error("KD032", f"two examples are called \"{example.title}\"", example.span)
            titles.add(example.title)
        for example in self.spec.examples:
            for e in example.expectations:
                if e.kind == "relative" and e.other not in titles:
                    self.sink.error("KD055", f"example \"{example.title}\" is compared with \"{e.other}\", which "
                                    f"is not an example of this spec{did_you_mean(e.other, titles)}",
                                    e.span)
                elif e.kind == "relative" and e.other == example.title:
                    self.sink.error("KD055", f"example \"{example.title}\" is compared with itself", e.span)
            columns = set(self.program.inputs) | {"completion"}
            for f in example.fields:
                if f.name not in columns:
                    self.sink.error("KD056", f"example sets `{f.name}`, which is not an input of this spec"
                                    f"{did_you_mean(f.name, columns)}", f.span)
                elif f.name in self.program.inputs:
                    self.check_example_value(f.name, self.program.inputs[f.name].type, f.value)
            for e in example.expectations:
                head, *rest = e.target
                if head == "reward" and not rest:
                    if e.kind not in ("compare", "relative"):
                        self.sink.error("KD057", "expect a comparison for the reward, e.g. `reward >= 1`", e.span)
                    continue
                if head in ("level", "rule", "let") and rest:
                    pool = {"level": levels, "rule": rules, "let": lets}[head]
                    name = rest[0]
                else:
                    pool, name = rules | levels | lets, head
                if name not in pool and name in written - rules:
                    continue
                if name not in pool:
                    self.sink.error("KD058", f"example expects `{'.'.join(e.target)}`, which is not a rule, "
                                    f"level or let{did_you_mean(name, pool)}", e.span)
                elif e.kind in ("holds", "violated", "inapplicable") and name not in rules:
                    self.sink.error("KD059", f"`{name}` is not a rule; compare it instead, e.g. "
                                    f"`{name} >= 0.5`", e.span)

    def check_example_value(self, name: str, type_: Type, value: ast.ExampleValue) -> None:
        """An example's value for input ``name``, held to what scoring accepts for that input, so
        a bad value is a located error here and not an unscorable case in ``kdsl test``. Every
        bad field (and every bad element of a list) is its own error."""
        if value.kind in ("none", "fixture"):  # missing is allowed; a fixture is read by kdsl test
            return
        kind = type_.kind
        problem = None
        if kind in ("float", "int"):
            if value.kind != "number" and value.kind != "bool":
                problem = "a number"
            elif kind == "int" and value.kind == "number" and not float(value.value).is_integer():
                problem = "a whole number"
        elif kind == "bool":
            if not (value.kind == "bool" or (value.kind == "number" and value.value in (0, 1))
                    or (value.kind in ("name", "string") and str(value.value).strip().lower() in _BOOL_WORDS)):
                problem = "true or false"
        elif kind == "str":
            if value.kind not in ("string", "name"):
                problem = "a string"
        elif kind == "enum":
            self.check_example_member(name, type_.enum, value)
            return
        elif kind in ("vector", "box"):
            size = 4 if kind == "box" else type_.size
            self.check_example_numbers(name, type_, value, size, f"{size} numbers")
            return
        elif kind == "boxes":
            if value.kind != "list" or any(box.kind != "list" for box in value.value):
                problem = "a list of boxes [[x1, y1, x2, y2], ...]"
            else:
                for box in value.value:
                    self.check_example_numbers(name, type_, box, 4, "a box [x1, y1, x2, y2]")
                return
        if problem is not None:
            self.sink.error("KD060", f"`{name}` is {_a(str(type_))} input: expected {problem}, got "
                            f"{_shown(value)}", value.span)

    def check_example_numbers(self, name: str, type_: Type, value: ast.ExampleValue, size: int,
                              expected: str) -> None:
        head = f"`{name}` is {_a(str(type_))} input: expected"
        if value.kind != "list":
            self.sink.error("KD060", f"{head} {expected}, got {_shown(value)}", value.span)
            return
        for element in value.value:
            if element.kind not in ("number", "none"):
                self.sink.error("KD060", f"{head} numbers, got {_shown(element)}", element.span)
        if len(value.value) != size:
            self.sink.error("KD060", f"{head} {expected}, got {len(value.value)}", value.span)

    def check_example_member(self, name: str, enum: EnumType, value: ast.ExampleValue) -> None:
        from kdsl.runtime.text import normalize_term

        members = ", ".join(enum.members)
        if value.kind == "number":
            if float(value.value).is_integer() and 0 <= value.value < len(enum.members):
                return
            self.sink.error("KD060", f"`{name}` is enum {enum.name}: expected one of {members} (or an index "
                            f"below {len(enum.members)}), got {_shown(value)}", value.span)
            return
        if value.kind not in ("name", "string"):
            self.sink.error("KD060", f"`{name}` is enum {enum.name}: expected one of {members}, got "
                            f"{_shown(value)}", value.span)
            return
        spellings = {normalize_term(m) for m in enum.members}
        for synonyms in enum.synonyms:
            spellings.update(normalize_term(s) for s in synonyms)
        if normalize_term(str(value.value)) not in spellings:
            self.sink.error("KD065", not_a_member(str(value.value), enum), value.span)

    # ---- pass: report_unused ---------------------------------------------------------------------
    def report_unused(self) -> None:
        """Warn about inputs, outputs and lets that no rule reaches (read from the syntax, so a
        name is not reported as unused just because an error stopped its rule from lowering)."""
        refs: dict[str, set[str]] = {}
        for d in (*self.spec.outputs, *self.spec.lets):
            refs.setdefault(d.name, set()).update(_names_in(d.value))
        reachable: set[str] = set()
        stack = [name for level in self.spec.levels for rule in level.rules
                 for expr in (rule.body, rule.when) if expr is not None for name in _names_in(expr)]
        stack += [rule.on for level in self.spec.levels for rule in level.rules if rule.on]
        while stack:
            name = stack.pop()
            if name in reachable:
                continue
            reachable.add(name)
            stack.extend(refs.get(name, ()))
        for kind, decls in (("input", self.spec.inputs), ("output", self.spec.outputs),
                            ("let", self.spec.lets)):
            for decl in decls:
                if decl.name not in reachable:
                    reachable.add(decl.name)  # one warning per name, even if it is defined twice
                    self.sink.warning("KD061", f"{kind} `{decl.name}` is never used", decl.span)

    # ---- expressions -------------------------------------------------------------------------------
    def node(self, op: str, args: tuple[Node, ...], type_: Type, span: Span, **attrs) -> Node:
        known = len(self.graph.order)
        node = self.graph.node(op, args, type_, attrs, span)
        if self._def_call is not None and len(self.graph.order) > known:  # made for this call
            self.program.inlined_at[node.id] = self._def_call
        if self._library_call is not None:
            self.program.call_sites.setdefault(node.id, self._library_call)
        if node.id not in self._units:
            unit = self._unit_of(op, args)
            if unit is not None:
                self._units[node.id] = unit
        if node.depth > MAX_NESTING:
            raise self.error("KD005", f"this value is computed through more than {MAX_NESTING} nested "
                             "operations (counting the lets and defs it uses); compute less of it "
                             "in one chain", span)
        return node

    # ---- units ------------------------------------------------------------------------------
    def _unit_of(self, op: str, args: tuple[Node, ...]) -> units.Unit | None:
        """The unit of a new node's values: kept through selection, reduction, rounding, sums
        of values already in one unit, and scaling by a plain number; lost otherwise."""
        found = [self._units.get(a.id) for a in args]
        if op in _UNIT_KEEPING:
            return next((u for u in found if u is not None), None)
        if op == "if":
            return next((u for u in found[1:] if u is not None), None)
        if op == "mul" and sum(u is not None for u in found) == 1:
            return next(u for u in found if u is not None)
        if op == "div" and found and found[0] is not None and found[1] is None:
            return found[0]
        return None

    def in_unit(self, node: Node, target: units.Unit, span: Span, what: str) -> Node:
        """``node`` converted to ``target`` (an error when the dimensions differ); a node without
        a unit is taken to be in ``target`` already, as a plain number is."""
        source = self._units.get(node.id)
        if source is None or source == target:
            return node
        try:
            factor, offset = units.conversion(source, target)
        except units.IncompatibleUnits as err:
            concentrations = {source.dimension, target.dimension} == {"mass concentration",
                                                                       "molar concentration"}
            notes = ("a mass and a molar concentration convert only through the substance's "
                     "molar mass: write that conversion as a def with a result unit (as "
                     "medical/curb65 does for urea and BUN)",) if concentrations else ()
            raise self.error("KD062", f"{what}: `{source.name}` and `{target.name}` do not convert ({err})",
                             span, *notes) from None
        out = node
        for op, value in (("mul", factor), ("add", offset)):
            if value == (1.0 if op == "mul" else 0.0):
                continue
            left, const, shape = self.broadcast(out, self.node("const", (), T.FLOAT, span, value=value), span)
            kind = shape if shape.extra_dims else T.FLOAT
            out = self.node(op, (left, const), kind, span)
        self._units[out.id] = target
        return out

    def with_unit(self, node: Node, name: str, span: Span, qualified: str) -> Node:
        """The value of a def that declares its result's unit, in that unit (a node of its own,
        so the same formula used elsewhere keeps its own unit)."""
        unit = units.unit_named(name)
        if unit is None:  # pragma: no cover - reported where the def is declared, never called
            raise self.error("KD034", f"unknown unit `{name}` for the result of `{qualified}`", span)  # pragma: no cover
        self.require_numeric(node, span, f"the unit of `{qualified}`")
        one = self.node("const", (), T.FLOAT, span, value=1.0)
        out = self.node("mul", (node, one), node.type if node.type.kind != "int" else T.FLOAT, span,
                        unit=name)
        self._units[out.id] = unit
        return out

    def let_in_unit(self, node: Node, let: ast.Let) -> Node:
        """`let x: UNIT = ...`: a value with a unit is converted to UNIT; a plain value is stated
        to be in it."""
        unit = units.unit_named(let.unit)
        if unit is None:
            raise self.error("KD034", f"unknown unit `{let.unit}`{did_you_mean(let.unit, units.UNITS)}", let.span)
        if node.id in self._units:
            return self.in_unit(node, unit, let.span, f"`let {let.name}`")
        return self.with_unit(node, let.unit, let.span, let.name)

    def align_units(self, left: Node, right: Node, span: Span, what: str) -> tuple[Node, Node]:
        """Two operands in one unit: the right one converted to the left one's."""
        unit = self._units.get(left.id)
        if unit is None:
            return left, right
        return left, self.in_unit(right, unit, span, what)

    def completion(self) -> Node:
        if self._completion is None:
            self._completion = self.node("completion", (), T.TEXT, Span(self.spec.file))
        return self._completion

    def _kind(self, node: Node) -> str:
        return str(node.type)

    def lower(self, expr: ast.Expr, ctx: _Ctx, hint: Type | None = None) -> Node:
        method: Callable = getattr(self, f"lower_{type(expr).__name__.lower()}")
        # Lowering recurses through expressions and into the defs they call; bounding it keeps a
        # deep chain of defs a located error instead of a RecursionError.
        if self._depth >= MAX_NESTING:
            raise self.error("KD005", f"this expression nests more than {MAX_NESTING} levels deep, counting "
                             "the defs it calls; split it into lets", expr.span)
        self._depth += 1
        try:
            return method(expr, ctx, hint)
        finally:
            self._depth -= 1

    def lower_number(self, e: ast.Number, ctx: _Ctx, hint) -> Node:
        return self.node("const", (), T.INT if e.is_int else T.FLOAT, e.span, value=float(e.value))

    def lower_bool(self, e: ast.Bool, ctx: _Ctx, hint) -> Node:
        return self.node("const", (), T.BOOL, e.span, value=1.0 if e.value else 0.0)

    def lower_string(self, e: ast.String, ctx: _Ctx, hint) -> Node:
        return self.node("str_const", (), T.STR, e.span, value=e.value)

    def lower_strings(self, e: ast.Strings, ctx: _Ctx, hint) -> Node:
        raise self.error("KD064", "a set of strings (`\"a\" | \"b\"`) can only be an argument of mentions() "
                         "or mention_count()", e.span)

    def lower_name(self, e: ast.Name, ctx: _Ctx, hint: Type | None) -> Node:
        if e.id in ctx.locals:
            return ctx.locals[e.id]
        if ctx.scope is self.scope and e.id in self._variables:
            node = self.variable(e.id, e.span)
            if node is None:
                raise _Failed()
            return node
        if e.id == "completion":
            return self.completion()
        member = self._enum_member(e.id, ctx.scope, hint, e.span)
        if member is not None:
            return member
        if hint is not None and hint.enum is not None and e.id[:1].isupper() and \
                e.id not in ctx.scope.enums:
            # Compared with an enum value: a capitalised unknown name is a misspelled member.
            raise self.error("KD065", not_a_member(e.id, hint.enum), e.span)
        names = list(ctx.locals) + (list(self._variables) if ctx.scope is self.scope else [])
        members = [m for enum in ctx.scope.enums.values() for m in enum.members]
        hint_text = ""
        if e.id in ctx.scope.defs or e.id in ctx.scope.tables or e.id in BUILTINS:
            hint_text = f"; `{e.id}` is a function: call it with arguments"
        raise self.error("KD066", f"unknown name `{e.id}`{did_you_mean(e.id, names + members)}{hint_text}",
                         e.span)

    def _enum_member(self, name: str, scope: Scope, hint: Type | None, span: Span) -> Node | None:
        if hint is not None and hint.enum is not None and name in hint.enum.members:
            return self._member_node(hint.enum, name, span)
        owners = [enum for enum in scope.enums.values() if name in enum.members]
        if len(owners) == 1:
            return self._member_node(owners[0], name, span)
        if len(owners) > 1:
            raise self.error("KD067", f"`{name}` is a member of {' and '.join(o.name for o in owners)}; "
                             f"write {owners[0].name}.{name}", span)
        return None

    def _member_node(self, enum: EnumType, name: str, span: Span) -> Node:
        return self.node("const", (), T.enum_type(enum), span, value=float(enum.members.index(name)))

    def lower_attr(self, e: ast.Attr, ctx: _Ctx, hint) -> Node:
        inner = e.obj
        leftmost = inner
        while isinstance(leftmost, ast.Attr):
            leftmost = leftmost.obj
        if isinstance(leftmost, ast.Name) and leftmost.id not in ctx.locals and \
                ctx.scope.through_failed_import(leftmost.id) and leftmost.id not in self._variables:
            raise _Failed()
        if isinstance(inner, ast.Attr) and isinstance(inner.obj, ast.Name) and \
                inner.obj.id in ctx.scope.imports and inner.obj.id not in ctx.locals:
            # alias.Enum.Member: a member of an imported enum, written in full
            enum = ctx.scope.imports[inner.obj.id].enums.get(inner.name)
            if enum is None:
                raise self.error("KD068", f"`{inner.obj.id}` has no enum `{inner.name}`"
                                 f"{did_you_mean(inner.name, ctx.scope.imports[inner.obj.id].enums)}",
                                 inner.span)
            if e.name not in enum.members:
                raise self.error("KD065", not_a_member(e.name, enum), e.span)
            return self._member_node(enum, e.name, e.span)
        if isinstance(e.obj, ast.Name) and e.obj.id not in ctx.locals and not (
                ctx.scope is self.scope and e.obj.id in self._variables):
            enum = ctx.scope.enums.get(e.obj.id)
            if enum is not None:
                if e.name not in enum.members:
                    raise self.error("KD065", not_a_member(e.name, enum), e.span)
                return self._member_node(enum, e.name, e.span)
            imported = ctx.scope.imports.get(e.obj.id)
            if imported is not None:
                if e.name in imported.enums:
                    raise self.error("KD069", f"`{e.obj.id}.{e.name}` is an enum: use one of its "
                                     f"members, e.g. `{e.obj.id}.{e.name}.{imported.enums[e.name].members[0]}`",
                                     e.span)
                if e.name in imported.defs or e.name in imported.tables:
                    kind = "a def" if e.name in imported.defs else "a table"
                    raise self.error("KD069", f"`{e.obj.id}.{e.name}` is {kind}: call it with "
                                     "arguments", e.span)
                names = [*imported.enums, *imported.defs, *imported.tables]
                raise self.error("KD069", f"`{e.obj.id}` has no `{e.name}`"
                                 f"{did_you_mean(e.name, names)}; it exports "
                                 f"{', '.join(f'`{n}`' for n in sorted(names)) or 'nothing'}", e.span)
        obj = self.lower(e.obj, ctx)
        kind = obj.type.kind
        if kind in ("raster", "vector") and obj.type.bands:
            if e.name not in obj.type.bands:
                raise self.error("KD070", f"{obj.type} has no band `{e.name}`"
                                 f"{did_you_mean(e.name, obj.type.bands)}", e.span)
            index = obj.type.bands.index(e.name)
            out = T.FIELD if kind == "raster" else T.FLOAT
            return self.node("band" if kind == "raster" else "element", (obj,), out, e.span,
                             index=index, band=e.name)
        if kind == "box":
            coords = ("x1", "y1", "x2", "y2")
            if e.name not in coords:
                raise self.error("KD070", f"a box has x1, y1, x2, y2, not `{e.name}`"
                                 f"{did_you_mean(e.name, coords)}", e.span)
            return self.node("element", (obj,), T.FLOAT, e.span, index=coords.index(e.name), band=e.name)
        if kind == "record":
            if e.name not in obj.type.groups:
                raise self.error("KD070", f"the regex has no named group `{e.name}`"
                                 f"{did_you_mean(e.name, obj.type.groups)}", e.span)
            return self.node("regex_group", (obj,), T.TEXT, e.span, group=e.name)
        if kind in ("raster", "vector"):
            raise self.error("KD070", f"{obj.type} has no band names; declare them with bands(...) "
                             "or index it like x[0]", e.span)
        raise self.error("KD070", f"a {obj.type} has no attribute `{e.name}`", e.span)

    def lower_index(self, e: ast.Index, ctx: _Ctx, hint) -> Node:
        obj = self.lower(e.obj, ctx)
        if obj.type.kind not in ("vector", "raster", "box"):
            raise self.error("KD071", f"only vectors, rasters and boxes can be indexed, not {obj.type}", e.span)
        if not (isinstance(e.index, ast.Number) and e.index.is_int):
            raise self.error("KD071", "an index must be a whole number written in the spec, like x[0]",
                             e.index.span)
        size = 4 if obj.type.kind == "box" else obj.type.size
        index = int(e.index.value)
        if not 0 <= index < size:
            raise self.error("KD071", f"index {index} is out of range for {obj.type} (0..{size - 1})",
                             e.index.span)
        if obj.type.kind == "raster":
            return self.node("band", (obj,), T.FIELD, e.span, index=index, band=str(index))
        return self.node("element", (obj,), T.FLOAT, e.span, index=index, band=str(index))

    def lower_convert(self, e: ast.Convert, ctx: _Ctx, hint) -> Node:
        obj = self.lower(e.obj, ctx)
        target = e.type_name
        unit = units.unit_named(target)
        if unit is not None and target not in ctx.scope.enums and obj.type.is_numeric:
            if obj.id not in self._units:
                raise self.error("KD063", f"`as {target}` converts a value that has a unit; this one has "
                                 "none (give its input a unit, e.g. `size: float mm`)", e.span)
            return self.in_unit(obj, unit, e.span, f"`as {target}`")
        if not obj.type.is_text:
            if target in ("float", "int") and obj.type.kind in ("float", "int", "bool"):
                return obj if target == "float" or obj.type.kind != "float" else self.node(
                    "floor", (obj,), T.INT, e.span)
            raise self.error("KD063", f"`as {target}` converts text taken from the completion (or a "
                             f"number to float or int); this is {_a(str(obj.type))}", e.span)
        return self.convert_text(obj, target, ctx.scope, e.span)

    def convert_text(self, obj: Node, target: str, scope: Scope, span: Span) -> Node:
        text = self.as_text(obj)
        if target in ("float", "int"):
            return self.node("to_number", (text,), Type(target), span, integer=target == "int")
        if target == "str":
            return self.node("to_str", (text,), T.STR, span)
        if target == "box":
            return self.node("to_box", (text,), T.BOX, span)
        if target == "boxes":
            return self.node("to_boxes", (text,), T.BOXES, span)
        if target == "bool":
            return self.node("to_enum", (text,), T.BOOL, span, enum="bool")
        enum = enum_named(target, scope)
        if enum is None and scope.through_failed_import(target):
            raise _Failed()
        if enum is None:
            raise self.error("KD040", f"unknown type `{target}`"
                             f"{did_you_mean(target, (*SCALAR_TYPE_NAMES, *scope.enums))}", span)
        return self.node("to_enum", (text,), T.enum_type(enum), span, enum=enum.name)

    def as_text(self, node: Node) -> Node:
        if node.type.kind == "record":
            return self.node("regex_group", (node,), T.TEXT, node.span, group=0)
        return node

    def lower_tagextractor(self, e: ast.TagExtractor, ctx: _Ctx, hint) -> Node:
        within = self.text_arg(e.within, ctx) if e.within is not None else self.completion()
        return self.node("tag", (within,), T.TEXT, e.span, name=e.tag, position=e.position)

    def lower_regexextractor(self, e: ast.RegexExtractor, ctx: _Ctx, hint) -> Node:
        from kdsl.runtime.text import RegexError, compile_regex

        within = self.text_arg(e.within, ctx) if e.within is not None else self.completion()
        try:
            compiled = compile_regex(e.pattern)
        except RegexError as err:
            raise self.error("KD072", f"this regex is not accepted ({err.reason}); kdsl regexes use RE2 "
                             "syntax, which runs in linear time: no backreferences or lookaround",
                             e.span) from None
        groups = tuple(sorted(compiled.groupindex, key=compiled.groupindex.get))
        return self.node("regex", (within,), Type("record", groups=groups), e.span, pattern=e.pattern)

    def text_arg(self, expr: ast.Expr, ctx: _Ctx) -> Node:
        node = self.lower(expr, ctx)
        if not node.type.is_text:
            raise self.error("KD073", f"expected text from the completion (a tag or regex), not {node.type}",
                             expr.span)
        return self.as_text(node)

    # ---- operators -------------------------------------------------------------------------------
    def lower_unary(self, e: ast.Unary, ctx: _Ctx, hint) -> Node:
        operand = self.lower(e.operand, ctx)
        if e.op == "not":
            self._require_truth(operand, e.operand.span, "`not`")
            return self.node("not", (operand,), operand.type, e.span, logic=self.program.logic)
        self.require_numeric(operand, e.operand.span, "`-`")
        # A negated vector or per-pixel value keeps its shape, as the unary math functions do.
        out = operand.type if operand.type.extra_dims else self.arith_type(
            operand.type, operand.type, "-")
        return self.node("neg", (operand,), out, e.span)

    def lower_binary(self, e: ast.Binary, ctx: _Ctx, hint) -> Node:
        left = self.lower(e.left, ctx)
        right = self.lower(e.right, ctx)
        if e.op in ("and", "or"):
            self._require_truth(left, e.left.span, f"`{e.op}`")
            self._require_truth(right, e.right.span, f"`{e.op}`")
            left, right, shape = self.broadcast(left, right, e.span)
            return self.node(e.op, (left, right), shape, e.span, logic=self.program.logic)
        self.require_numeric(left, e.left.span, f"`{e.op}`")
        self.require_numeric(right, e.right.span, f"`{e.op}`")
        if e.op in ("+", "-"):
            left, right = self.align_units(left, right, e.span, f"`{e.op}`")
        left, right, shape = self.broadcast(left, right, e.span)
        op = {"+": "add", "-": "sub", "*": "mul", "/": "div", "%": "mod", "**": "pow"}[e.op]
        return self.node(op, (left, right), self.arith_type(left.type, right.type, e.op, shape),
                         e.span)

    def arith_type(self, a: Type, b: Type, op: str, shape: Type | None = None) -> Type:
        if shape is not None and shape.kind in ("field", "vector"):
            return Type(shape.kind, size=shape.size)
        whole = a.kind in ("int", "bool") and b.kind in ("int", "bool")
        return T.INT if whole and op in ("+", "-", "*", "%") else T.FLOAT

    def broadcast(self, a: Node, b: Node, span: Span) -> tuple[Node, Node, Type]:
        """Lift a per-sample scalar against a vector or field operand; shapes must agree."""
        da, db = a.type.extra_dims, b.type.extra_dims
        # Boxes never get here today (arithmetic, comparisons and `default` ask for numbers first);
        # the guard keeps a box from being lifted like a number if a new path brings one.
        if a.type.kind == "box" or b.type.kind == "box":  # pragma: no cover
            raise self.error("KD074", "boxes take no arithmetic; use iou(), area() or .x1/.y1/.x2/.y2", span)  # pragma: no cover
        if a.type.kind == "boxes" or b.type.kind == "boxes":  # pragma: no cover
            raise self.error("KD074", "a list of boxes takes no arithmetic; use box_count() or matched_boxes()", span)  # pragma: no cover
        if a.type.kind == "raster" or b.type.kind == "raster":
            raster = a if a.type.kind == "raster" else b
            raise self.error("KD074", f"{raster.type} holds {raster.type.size} bands: select one "
                             f"({band_hint(raster)}) before computing with it", span)
        if da == db:
            if a.type.kind == "vector" and b.type.kind == "vector" and a.type.size != b.type.size:
                raise self.error("KD074", f"vector sizes differ: {a.type} and {b.type}", span)
            shape = a.type if da else T.BOOL
            return a, b, shape
        if da and db:
            raise self.error("KD074", f"cannot combine a {a.type} with a {b.type}", span)
        if da:
            return a, self.node("lift", (b,), b.type, span, dims=da), a.type
        return self.node("lift", (a,), a.type, span, dims=db), b, b.type

    def require_numeric(self, node: Node, span: Span, what: str) -> None:
        if node.type.is_text:
            raise self.error("KD075", f"{what} needs a number, but this is text from the completion; "
                             "convert it, e.g. `answer as float` or number(answer)", span)
        if not node.type.is_numeric:
            raise self.error("KD075", f"{what} needs a number, not {node.type}", span)

    def _require_truth(self, node: Node, span: Span, what: str) -> None:
        if not node.type.is_truth and not (node.type.kind == "vector" and node.type.element == "bool"):
            hint = ""
            if node.type.is_text:
                hint = "; test text with present(...), mentions(...) or matches(...)"
            raise self.error("KD076", f"{what} needs a condition (true or false), not {node.type}{hint}", span)

    def lower_compare(self, e: ast.Compare, ctx: _Ctx, hint) -> Node:
        result = None
        operands = list(e.operands)
        lowered: list[Node | None] = [None] * len(operands)
        for i, (op, left_expr, right_expr) in enumerate(zip(e.ops, operands, operands[1:])):
            left = lowered[i] if lowered[i] is not None else self._lower_operand(left_expr, right_expr, ctx)
            right = self._lower_operand(right_expr, left_expr, ctx, left.type)
            lowered[i], lowered[i + 1] = left, right
            pair = self.compare(op, left, right, e.span, ctx)
            if result is None:
                result = pair
            else:
                result = self.node("and", (result, pair), T.BOOL if not pair.type.extra_dims else pair.type,
                                   e.span, logic=self.program.logic)
        return result

    def _lower_operand(self, expr: ast.Expr, other: ast.Expr, ctx: _Ctx, hint: Type | None = None) -> Node:
        if hint is None and isinstance(expr, ast.Name) and not self._is_variable(expr.id, ctx):
            # A bare enum member on the left: take its enum from the other side.
            other_node = self.lower(other, ctx)
            hint = other_node.type
        return self.lower(expr, ctx, hint)

    def _is_variable(self, name: str, ctx: _Ctx) -> bool:
        return name in ctx.locals or (ctx.scope is self.scope and name in self._variables) or (
            name == "completion")

    def compare(self, op: str, left: Node, right: Node, span: Span, ctx: _Ctx) -> Node:
        left, right = self._unify_text(left, right, ctx, span)
        kinds = {left.type.kind, right.type.kind}
        name = _CMP_OPS[op]
        if "enum" in (left.type.element, right.type.element):  # only fields have enum elements
            # per-pixel classes (a table applied to per-pixel values) against a class
            enums = {t.enum for t in (left.type, right.type)}
            if len(enums) != 1 or not {left.type.kind, right.type.kind} <= {"field", "enum"}:
                raise self.error("KD077", f"cannot compare {left.type} with {right.type}", span)
            if op not in ("==", "!="):
                raise self.error("KD077", f"{left.type} values can only be compared with == or !=", span)
            left, right = (self.node("lift", (n,), n.type, n.span, dims=2)
                           if n.type.kind == "enum" else n for n in (left, right))
            return self.node(name, (left, right), T.BOOL_FIELD, span, soft=0.0)
        if "enum" in kinds or "str" in kinds or kinds == {"bool"}:
            if left.type != right.type and not (kinds <= {"bool"}):
                raise self.error("KD077", f"cannot compare {left.type} with {right.type}", span)
            if op not in ("==", "!="):
                raise self.error("KD077", f"{left.type} values can only be compared with == or !=", span)
            return self.node(name, (left, right), T.BOOL, span, soft=0.0)
        if left.type.is_text or right.type.is_text:
            raise self.error("KD077", "convert text before comparing it, e.g. `answer as float`", span)
        self.require_numeric(left, span, f"`{op}`")
        self.require_numeric(right, span, f"`{op}`")
        left, right = self.align_units(left, right, span, f"`{op}`")
        left, right, shape = self.broadcast(left, right, span)
        out = T.BOOL if not shape.extra_dims else Type(shape.kind, size=shape.size, element="bool")
        return self.node(name, (left, right), out, span, soft=float(ctx.soft or 0.0))

    def _unify_text(self, left: Node, right: Node, ctx: _Ctx, span: Span) -> tuple[Node, Node]:
        """Text compared with a typed value is parsed as that type (`answer == label`)."""
        if left.type.is_text and not right.type.is_text:
            return self._parse_as(left, right.type, ctx, span), right
        if right.type.is_text and not left.type.is_text:
            return left, self._parse_as(right, left.type, ctx, span)
        return left, right

    def _parse_as(self, text: Node, target: Type, ctx: _Ctx, span: Span) -> Node:
        if target.kind == "enum":
            text = self.as_text(text)
            return self.node("to_enum", (text,), target, span, enum=target.enum.name)
        if target.kind in ("float", "int", "str", "bool", "box", "boxes"):
            return self.convert_text(text, target.kind, ctx.scope, span)
        raise self.error("KD077", f"cannot compare text with {target}", span)

    def lower_in(self, e: ast.In, ctx: _Ctx, hint) -> Node:
        element = self.lower(e.element, ctx)
        if isinstance(e.collection, ast.RangeLiteral):
            low = self.lower(e.collection.low, ctx)
            high = self.lower(e.collection.high, ctx)
            if element.type.is_text:
                element = self.convert_text(element, "float", ctx.scope, e.span)
            lo = self.compare(">" if e.collection.low_open else ">=", element, low, e.span, ctx)
            hi = self.compare("<" if e.collection.high_open else "<=", element, high, e.span, ctx)
            result = self.node("and", (lo, hi), lo.type, e.span, logic=self.program.logic)
        else:
            items = e.collection.items
            if not items:
                raise self.error("KD078", "an empty set: `in {}` can never hold", e.collection.span)
            if element.type.is_text:
                first = self._try_member_type(items[0], ctx)
                element = self._parse_as(element, first or T.STR, ctx, e.span) if first else (
                    self.convert_text(element, "str", ctx.scope, e.span))
            values = []
            for item in items:
                node = self.lower(item, ctx, element.type)
                if node.op not in ("const", "str_const"):
                    raise self.error("KD078", "a set lists values written in the spec", item.span)
                per_pixel_member = element.type.element == "enum" and node.type.kind == "enum" and (
                    node.type.enum == element.type.enum)
                if node.type != element.type and not per_pixel_member and not (
                        node.type.kind in ("int", "float") and element.type.kind in ("int", "float")):
                    raise self.error("KD078", f"{node.type} in a set of {element.type} values", item.span)
                values.append(node.attr("value"))
            op = "in_str" if element.type.kind == "str" else "in_set"
            out = T.BOOL if not element.type.extra_dims else Type(
                element.type.kind, size=element.type.size, element="bool")
            result = self.node(op, (element,), out, e.span, values=tuple(values))
        if e.negated:
            result = self.node("not", (result,), result.type, e.span, logic=self.program.logic)
        return result

    def _try_member_type(self, item: ast.Expr, ctx: _Ctx) -> Type | None:
        if isinstance(item, ast.Name) and not self._is_variable(item.id, ctx):
            owners = [en for en in ctx.scope.enums.values() if item.id in en.members]
            if len(owners) == 1:
                return T.enum_type(owners[0])
        if isinstance(item, ast.Number):
            return T.FLOAT
        return None

    def lower_if(self, e: ast.If, ctx: _Ctx, hint) -> Node:
        cond = self.lower(e.condition, ctx)
        self._require_truth(cond, e.condition.span,
                            f"criterion `{e.criterion}`" if e.criterion else "`if`")
        then = self.lower(e.then, ctx, hint)
        other = self.lower(e.otherwise, ctx, then.type)
        if then.type.is_numeric and other.type.is_numeric:
            then, other = self.align_units(then, other, e.span, "the branches of `if`")
        if then.type.kind != other.type.kind and not (then.type.is_numeric and other.type.is_numeric):
            raise self.error("KD080", f"the branches of `if` differ: {then.type} and {other.type}", e.span)
        if then.type.is_numeric:
            then, other, shape = self.broadcast(then, other, e.span)
            out = self.arith_type(then.type, other.type, "+", shape)
            if then.type.kind == "bool" and other.type.kind == "bool":
                out = T.BOOL
            if cond.type.extra_dims < shape.extra_dims:
                cond = self.node("lift", (cond,), cond.type, e.span, dims=shape.extra_dims)
            elif cond.type.extra_dims > shape.extra_dims:
                raise self.error("KD080", "a per-pixel condition needs per-pixel branches", e.span)
        else:
            if cond.type.extra_dims:
                raise self.error("KD080", "a per-pixel condition needs numeric branches", e.span)
            out = then.type
        return self.node("if", (cond, then, other), out, e.span)

    def lower_setliteral(self, e: ast.SetLiteral, ctx: _Ctx, hint) -> Node:
        raise self.error("KD079", "a set `{...}` can only follow `in`", e.span)  # pragma: no cover - the grammar allows it nowhere else

    def lower_rangeliteral(self, e: ast.RangeLiteral, ctx: _Ctx, hint) -> Node:
        raise self.error("KD079", "a range `a..b` can only follow `in`", e.span)  # pragma: no cover - the grammar allows it nowhere else

    # ---- calls -------------------------------------------------------------------------------------
    def lower_call(self, e: ast.Call, ctx: _Ctx, hint) -> Node:
        func = e.func
        if isinstance(func, ast.Attr) and isinstance(func.obj, ast.Name):
            scope = ctx.scope.imports.get(func.obj.id)
            if scope is None and ctx.scope.through_failed_import(func.obj.id):
                raise _Failed()
            if scope is None and (func.obj.id in ctx.locals or (ctx.scope is self.scope and func.obj.id in self._variables)):
                raise self.error("KD030", f"`{func.obj.id}` is a value, not an import: functions take "
                                 f"it as an argument, e.g. `{func.name}({func.obj.id})`", func.obj.span)
            if scope is None:
                raise self.error("KD030", f"unknown import `{func.obj.id}`"
                                 f"{did_you_mean(func.obj.id, ctx.scope.imports)}", func.obj.span)
            return self.call_named(func.name, e, ctx, scope, f"{func.obj.id}.")
        if not isinstance(func, ast.Name):
            raise self.error("KD081", "only named functions, defs and tables can be called", func.span)
        return self.call_named(func.id, e, ctx, ctx.scope, "")

    def call_named(self, name: str, e: ast.Call, ctx: _Ctx, scope: Scope, prefix: str) -> Node:
        if name in scope.failed:  # declared with errors, reported there
            raise _Failed()
        if name in scope.defs:
            return self.expand_def(scope.defs[name], e, ctx, scope, prefix + name)
        if name in scope.tables:
            return self.call_table(scope.tables[name], e, ctx)
        if not prefix and name in BUILTINS:
            return self.call_builtin(name, e, ctx)
        candidates = [prefix + c for c in (*scope.defs, *scope.tables)]
        if not prefix:
            candidates += BUILTINS
        raise self.error("KD082", f"unknown function `{prefix}{name}`{did_you_mean(prefix + name, candidates)}",
                         e.func.span)

    def expand_def(self, d: ast.Def, e: ast.Call, ctx: _Ctx, scope: Scope, qualified: str) -> Node:
        if qualified in ctx.calls:
            raise self.error("KD042", f"def `{qualified}` calls itself; defs cannot be recursive", e.span)
        params = [p.name for p in d.params]
        if len(e.args) > len(params):
            raise self.error("KD083", f"`{qualified}` takes {_count(len(params), 'argument')}, "
                             f"got {len(e.args)}", e.span)
        bound: dict[str, Node] = {}
        for p, arg in zip(d.params, e.args):
            bound[p.name] = self.lower(arg, ctx)
        for kw in e.kwargs:
            if kw.name not in params:
                raise self.error("KD083", f"`{qualified}` has no parameter `{kw.name}`"
                                 f"{did_you_mean(kw.name, params)}; it takes {', '.join(params)}",
                                 kw.span)
            if kw.name in bound:
                raise self.error("KD083", f"`{kw.name}` is given twice", kw.span)
            bound[kw.name] = self.lower(kw.value, ctx)
        for p in d.params:
            if p.name not in bound:
                if p.default is None:
                    raise self.error("KD083", f"`{qualified}` needs a value for `{p.name}`", e.span)
                bound[p.name] = self.node("const", (), T.FLOAT, p.span, value=float(p.default))
            elif p.unit is not None:
                unit = units.unit_named(p.unit)
                if unit is None:  # pragma: no cover - reported where the def is declared, never called
                    raise self.error("KD034", f"unknown unit `{p.unit}` for `{p.name}` of `{qualified}`", p.span)  # pragma: no cover
                bound[p.name] = self.in_unit(bound[p.name], unit, e.span,
                                             f"`{p.name}` of `{qualified}`")
        key = (id(d), tuple((name, node.id) for name, node in sorted(bound.items())), ctx.soft)
        if key in self._expanded:
            return self._expanded[key]
        inner = _Ctx(scope, bound, ctx.soft, (*ctx.calls, qualified))
        outermost = self._library_call is None and scope is not self.scope
        if outermost:
            self._library_call = e.span
        first_call = self._def_call is None
        if first_call:
            self._def_call = e.span
        try:
            node = self.lower(d.body, inner)
            if d.unit is not None:
                node = self.with_unit(node, d.unit, d.span, qualified)
            self._expanded[key] = node
            if d.criteria:
                # The conditions lower to the nodes the total already uses (the graph merges them).
                criteria = tuple((c.name, c.points, self.lower(c.condition, inner), c.span)
                                 for c in d.criteria)
                self.program.sheet_calls.append(SheetCall(qualified, e.span, node, criteria))
            return node
        except _Failed:
            last = self.sink.diagnostics[-1]
            if len(last.notes) < MAX_CALL_NOTES:
                note = f"in `{qualified}`, called at {e.span}"
            elif len(last.notes) == MAX_CALL_NOTES:
                note = "... (more def calls)"
            else:
                raise
            self.sink.diagnostics[-1] = last.__class__(**{**last.__dict__,
                                                          "notes": (*last.notes, note)})
            raise
        finally:
            if outermost:
                self._library_call = None
            if first_call:
                self._def_call = None

    def call_table(self, table: TableIR, e: ast.Call, ctx: _Ctx) -> Node:
        if e.kwargs:
            raise self.error("KD084", "table arguments are given in column order, without names", e.span)
        if len(e.args) != len(table.params):
            raise self.error("KD084", f"table `{table.name}` takes {_count(len(table.params), 'argument')} "
                             f"({', '.join(p for p, _ in table.params)}), got {len(e.args)}", e.span)
        args = []
        for (pname, ptype), arg in zip(table.params, e.args):
            node = self.lower(arg, ctx, ptype)
            if node.type.is_text:
                node = self._parse_as(node, ptype, ctx, arg.span)
            t = node.type
            ok = t == ptype or (ptype.kind in ("float", "int") and t.kind in (
                "float", "int", "bool")) or (ptype.kind == "bool" and t.kind == "bool")
            if t.kind == "field":  # per-pixel values: the table is applied pixel by pixel
                ok = (ptype.kind in ("float", "int") and t.element in ("float", "bool")) or (
                    ptype.kind == "bool" and t.element == "bool") or (
                    ptype.kind == "enum" and t.element == "enum" and t.enum == ptype.enum)
            if not ok:
                raise self.error("KD084", f"column `{pname}` of table `{table.name}` is {ptype}, "
                                 f"not {node.type}", arg.span)
            column_unit = table.units[len(args)] if len(table.units) > len(args) else None
            if column_unit is not None:
                node = self.in_unit(node, units.unit_named(column_unit), arg.span,
                                    f"column `{pname}` of table `{table.name}`")
            args.append(node)
        self.program.tables[table.name] = table
        result = table.result
        if any(a.type.kind == "field" for a in args):
            args = [a if a.type.kind == "field" else self.node("lift", (a,), a.type, a.span, dims=2)
                    for a in args]
            result = T.FIELD if result.kind != "enum" else Type("field", enum=result.enum,
                                                                 element="enum")
        return self.node("table", tuple(args), result, e.span, table=table.name)

    def text_or_column(self, expr: ast.Expr, ctx: _Ctx,
                        wanted: str) -> tuple[tuple[Node, ...], str | None]:
        """A text operand of the text phase: text from the completion (a node, no column), or a
        `str` input column, read there by name (no node). ``wanted`` starts the error message."""
        node = self.lower(expr, ctx)
        if node.type.is_text:
            return (self.as_text(node),), None
        if node.op == "input" and node.type.kind == "str":
            return (), node.attr("name")
        raise self.error("KD085", f"{wanted}, not {node.type}", expr.span)

    @staticmethod
    def literal_number(expr: ast.Expr, ctx: _Ctx) -> float | None:
        """A number written in the spec: a literal, or a def parameter bound to one (so a def can
        pass its n-gram size or threshold on to a builtin)."""
        if isinstance(expr, ast.Number):
            return float(expr.value)
        if isinstance(expr, ast.Unary) and expr.op == "-" and isinstance(expr.operand, ast.Number):
            return -float(expr.operand.value)
        if isinstance(expr, ast.Name) and expr.id in ctx.locals and ctx.locals[expr.id].op == "const":
            return float(ctx.locals[expr.id].attr("value"))
        return None

    def call_builtin(self, name: str, e: ast.Call, ctx: _Ctx) -> Node:
        """A builtin's type rule, from its entry in ``kdsl.builtins``."""
        if e.kwargs:
            raise self.error("KD083", f"{name}() takes no keyword arguments", e.kwargs[0].span)
        return BUILTINS[name].lower(self, Call(name, tuple(e.args), e.span, ctx))


def table_rows(table: ast.Table) -> list[TableRow]:
    """A table's rows as the IR holds them."""
    return [TableRow(tuple(TableCell(c.kind, c.names, c.op, c.low, c.high, c.low_open, c.high_open, c.span)
                           for c in row.cells), row.result, row.span) for row in table.rows]


def enum_named(name: str, scope: Scope) -> EnumType | None:
    """An enum of this spec by name, or of an imported one as `alias.Enum`."""
    if "." in name:
        alias, _, inner = name.partition(".")
        imported = scope.imports.get(alias)
        return None if imported is None else enum_named(inner, imported)
    return scope.enums.get(name)


def check(spec: ast.Spec, scope: Scope, sink: DiagnosticSink) -> ProgramIR:
    """Check a parsed spec whose imports are already resolved into ``scope.imports``."""
    program = Checker(spec, scope, sink).run()
    return program


def declare_library(spec: ast.Spec, scope: Scope, sink: DiagnosticSink) -> None:
    """Fill an imported spec's scope: enums, defs and tables (its levels are checked on their own)."""
    checker = Checker(spec, scope, sink)
    checker.declare_names()


def _names_in(expr: ast.Node) -> set[str]:
    """Every bare name an expression mentions (its variables, and words that may be members)."""
    found: set[str] = set()
    stack: list = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Node):
            for value in node.__dict__.values():
                if isinstance(value, ast.Node):
                    stack.append(value)
                elif isinstance(value, tuple):
                    stack.extend(v for v in value if isinstance(v, ast.Node))
    return found


_BOOL_WORDS = frozenset({"true", "yes", "y", "1", "t", "false", "no", "n", "0", "f"})  # as scoring reads


def not_a_member(name: str, enum: EnumType) -> str:
    return (f"`{name}` is not a member of enum {enum.name}{did_you_mean(name, enum.members)}; its "
            f"members are {', '.join(enum.members)}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _shown(value: ast.ExampleValue) -> str:
    """An example value as the spec wrote it, for messages."""
    if value.kind == "string":
        text = str(value.value)
        return '"' + (text if len(text) <= 40 else text[:37] + "...") + '"'
    if value.kind == "list":
        if len(value.value) > 6:
            return f"a list of {len(value.value)} values"
        return "[" + ", ".join(_shown(v) for v in value.value) + "]"
    if value.kind == "bool":
        return "true" if value.value else "false"
    if value.kind == "number":
        return f"{value.value:g}" if isinstance(value.value, float) else str(value.value)
    return f"`{value.value}`" if value.kind == "name" else value.kind


# Operations whose values are in their operands' unit (after `align_units` for sums).
_UNIT_KEEPING = frozenset({"lift", "band", "element", "reduce_mean", "reduce_min", "reduce_max",
                           "reduce_quantile", "batch_min", "batch_max", "batch_mean", "neg", "abs",
                           "floor", "ceil", "round", "add", "sub", "min", "max", "default"})
