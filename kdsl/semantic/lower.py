"""Lowering: each expression of a spec becomes a typed IR node (types are inferred here, node
by node), each rule a ``RuleIR`` in its level. Calls and units are their own modules, mixed in."""

from __future__ import annotations

from collections.abc import Callable

from kdsl import types as T
from kdsl import units
from kdsl.errors import DiagnosticSink, Span, did_you_mean
from kdsl.frontend import ast
from kdsl.ir import GraphBuilder, LevelIR, Node, ProgramIR, RuleIR
from kdsl.limits import MAX_NESTING, MAX_NUMBER
from kdsl.semantic.builtins import BUILTINS, band_hint
from kdsl.semantic.calls import CallLowering
from kdsl.semantic.scope import (
    SCALAR_TYPE_NAMES,
    Context,
    Failed,
    Scope,
    enum_named,
    not_a_member,
    with_article,
)
from kdsl.semantic.unit_flow import UnitLowering
from kdsl.types import EnumType, Type

_CMP_OPS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}


class Lowering(CallLowering, UnitLowering):
    def __init__(self, spec: ast.Spec, scope: Scope, sink: DiagnosticSink, program: ProgramIR,
                 variables: dict[str, ast.Node], builder: GraphBuilder | None = None):
        self.spec = spec
        self.scope = scope
        self.sink = sink
        self.program = program
        self.graph = builder or GraphBuilder()
        self._variables = variables  # module-level names: inputs, outputs, lets
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

    def error(self, code: str, message: str, span: Span, *notes: str) -> Failed:
        self.sink.error(code, message, span, *notes)
        return Failed()

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
                node = self.lower(decl.value, Context(self.scope))
                if isinstance(decl, ast.Let) and decl.unit is not None:
                    node = self.let_in_unit(node, decl)
        except Failed:
            node = None
        finally:
            self._lowering.pop()
        self._lowered[name] = node
        return node

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
                when = self.lower(rule.when, Context(self.scope))
                if when.type.kind != "bool":
                    raise self.error("KD047", f"a `when` condition must be true or false, not {self._kind(when)}",
                                     rule.when.span)
            body = self.lower(rule.body, Context(self.scope, soft=rule.soft))
        except Failed:
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

    def completion(self) -> Node:
        if self._completion is None:
            self._completion = self.node("completion", (), T.TEXT, Span(self.spec.file))
        return self._completion

    def _kind(self, node: Node) -> str:
        return str(node.type)

    def lower(self, expr: ast.Expr, ctx: Context, hint: Type | None = None) -> Node:
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

    def lower_number(self, e: ast.Number, ctx: Context, hint) -> Node:
        return self.node("const", (), T.INT if e.is_int else T.FLOAT, e.span, value=float(e.value))

    def lower_bool(self, e: ast.Bool, ctx: Context, hint) -> Node:
        return self.node("const", (), T.BOOL, e.span, value=1.0 if e.value else 0.0)

    def lower_string(self, e: ast.String, ctx: Context, hint) -> Node:
        return self.node("str_const", (), T.STR, e.span, value=e.value)

    def lower_strings(self, e: ast.Strings, ctx: Context, hint) -> Node:
        raise self.error("KD064", "a set of strings (`\"a\" | \"b\"`) can only be an argument of mentions() "
                         "or mention_count()", e.span)

    def lower_name(self, e: ast.Name, ctx: Context, hint: Type | None) -> Node:
        if e.id in ctx.locals:
            return ctx.locals[e.id]
        if ctx.scope is self.scope and e.id in self._variables:
            node = self.variable(e.id, e.span)
            if node is None:
                raise Failed()
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
        if ctx.scope is self.scope and e.id in self.program.models:
            model = self.program.models[e.id]
            usage = (f'{e.id}("criterion", text, ...)' if model.kind == "judge" else f"{e.id}(text)")
            raise self.error("KD101", f"`{e.id}` is a {'judge' if model.kind == 'judge' else 'reward model'}, "
                             f"not a value: call it, `{usage}`", e.span)
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

    def lower_attr(self, e: ast.Attr, ctx: Context, hint) -> Node:
        inner = e.obj
        leftmost = inner
        while isinstance(leftmost, ast.Attr):
            leftmost = leftmost.obj
        if isinstance(leftmost, ast.Name) and leftmost.id not in ctx.locals and \
                ctx.scope.through_failed_import(leftmost.id) and leftmost.id not in self._variables:
            raise Failed()
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

    def lower_index(self, e: ast.Index, ctx: Context, hint) -> Node:
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

    def lower_convert(self, e: ast.Convert, ctx: Context, hint) -> Node:
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
                             f"number to float or int); this is {with_article(str(obj.type))}", e.span)
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
            raise Failed()
        if enum is None:
            raise self.error("KD040", f"unknown type `{target}`"
                             f"{did_you_mean(target, (*SCALAR_TYPE_NAMES, *scope.enums))}", span)
        return self.node("to_enum", (text,), T.enum_type(enum), span, enum=enum.name)

    def as_text(self, node: Node) -> Node:
        if node.type.kind == "record":
            return self.node("regex_group", (node,), T.TEXT, node.span, group=0)
        return node

    def lower_tagextractor(self, e: ast.TagExtractor, ctx: Context, hint) -> Node:
        within = self.text_arg(e.within, ctx) if e.within is not None else self.completion()
        return self.node("tag", (within,), T.TEXT, e.span, name=e.tag, position=e.position)

    def lower_regexextractor(self, e: ast.RegexExtractor, ctx: Context, hint) -> Node:
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

    def text_arg(self, expr: ast.Expr, ctx: Context) -> Node:
        node = self.lower(expr, ctx)
        if not node.type.is_text:
            raise self.error("KD073", f"expected text from the completion (a tag or regex), not {node.type}",
                             expr.span)
        return self.as_text(node)

    def lower_unary(self, e: ast.Unary, ctx: Context, hint) -> Node:
        operand = self.lower(e.operand, ctx)
        if e.op == "not":
            self._require_truth(operand, e.operand.span, "`not`")
            return self.node("not", (operand,), operand.type, e.span, logic=self.program.logic)
        self.require_numeric(operand, e.operand.span, "`-`")
        # A negated vector or per-pixel value keeps its shape, as the unary math functions do.
        out = operand.type if operand.type.extra_dims else self.arith_type(
            operand.type, operand.type, "-")
        return self.node("neg", (operand,), out, e.span)

    def lower_binary(self, e: ast.Binary, ctx: Context, hint) -> Node:
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

    def lower_compare(self, e: ast.Compare, ctx: Context, hint) -> Node:
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

    def _lower_operand(self, expr: ast.Expr, other: ast.Expr, ctx: Context, hint: Type | None = None) -> Node:
        if hint is None and isinstance(expr, ast.Name) and not self._is_variable(expr.id, ctx):
            # A bare enum member on the left: take its enum from the other side.
            other_node = self.lower(other, ctx)
            hint = other_node.type
        return self.lower(expr, ctx, hint)

    def _is_variable(self, name: str, ctx: Context) -> bool:
        return name in ctx.locals or (ctx.scope is self.scope and name in self._variables) or (
            name == "completion")

    def compare(self, op: str, left: Node, right: Node, span: Span, ctx: Context) -> Node:
        left, right = self._grades(left, right)
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

    def _grades(self, left: Node, right: Node) -> tuple[Node, Node]:
        """A judge's grade compared with one of its choices (`grade >= "partly"`) is compared with
        that choice's value; compared with a number outside 0..1 it could never be told apart."""
        pair = [left, right]
        for i in (0, 1):
            grade, other = pair[i], pair[1 - i]
            if grade.op != "rubric":
                continue
            choices = grade.attr("choices")
            shown = ", ".join(f'"{c}"' for c in choices)
            if other.op == "str_const":
                word = other.attr("value").strip().casefold()
                folded = [c.casefold() for c in choices]
                if word not in folded:
                    raise self.error("KD103", f'"{other.attr("value")}" is not a choice of this '
                                     f"`{grade.attr('model')}` item; its choices are {shown}", other.span)
                pair[1 - i] = self.node("const", (), T.FLOAT, other.span,
                                        value=folded.index(word) / (len(choices) - 1))
            elif other.op == "const" and other.type.kind in ("float", "int") and \
                    not 0.0 <= other.attr("value") <= 1.0:
                raise self.error("KD103", f"a `{grade.attr('model')}` grade is a number from 0 "
                                 f'("{choices[0]}") to 1 ("{choices[-1]}"), never '
                                 f"{other.attr('value'):g}: compare it with a number in 0..1 or a "
                                 f"choice ({shown})", other.span)
        return pair[0], pair[1]

    def _unify_text(self, left: Node, right: Node, ctx: Context, span: Span) -> tuple[Node, Node]:
        """Text compared with a typed value is parsed as that type (`answer == label`)."""
        if left.type.is_text and not right.type.is_text:
            return self._parse_as(left, right.type, ctx, span), right
        if right.type.is_text and not left.type.is_text:
            return left, self._parse_as(right, left.type, ctx, span)
        return left, right

    def _parse_as(self, text: Node, target: Type, ctx: Context, span: Span) -> Node:
        if target.kind == "enum":
            text = self.as_text(text)
            return self.node("to_enum", (text,), target, span, enum=target.enum.name)
        if target.kind in ("float", "int", "str", "bool", "box", "boxes"):
            return self.convert_text(text, target.kind, ctx.scope, span)
        raise self.error("KD077", f"cannot compare text with {target}", span)

    def lower_in(self, e: ast.In, ctx: Context, hint) -> Node:
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

    def _try_member_type(self, item: ast.Expr, ctx: Context) -> Type | None:
        if isinstance(item, ast.Name) and not self._is_variable(item.id, ctx):
            owners = [en for en in ctx.scope.enums.values() if item.id in en.members]
            if len(owners) == 1:
                return T.enum_type(owners[0])
        if isinstance(item, ast.Number):
            return T.FLOAT
        return None

    def lower_if(self, e: ast.If, ctx: Context, hint) -> Node:
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

    def lower_setliteral(self, e: ast.SetLiteral, ctx: Context, hint) -> Node:
        raise self.error("KD079", "a set `{...}` can only follow `in`", e.span)  # pragma: no cover - the grammar allows it nowhere else

    def lower_rangeliteral(self, e: ast.RangeLiteral, ctx: Context, hint) -> Node:
        raise self.error("KD079", "a range `a..b` can only follow `in`", e.span)  # pragma: no cover - the grammar allows it nowhere else

