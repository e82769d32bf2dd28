"""Calls: a def expanded inline at its call site, a decision table, or a builtin (whose type
rule is its entry in ``kdsl.semantic.builtins``). ``Lowering`` mixes this in."""

from __future__ import annotations

from kdsl import types as T
from kdsl import units
from kdsl.errors import did_you_mean
from kdsl.frontend import ast
from kdsl.ir import ModelSpec, Node, SheetCall, TableIR
from kdsl.semantic.builtins import BUILTINS, Call
from kdsl.semantic.scope import Context, Failed, Scope, plural
from kdsl.types import Type

DEFAULT_CHOICES = ("no", "yes")  # a judge's choices when the spec gives none
MAX_CALL_NOTES = 8  # "in `f`, called at ..." notes on one error, innermost first


class CallLowering:
    def lower_call(self, e: ast.Call, ctx: Context, hint) -> Node:
        func = e.func
        if isinstance(func, ast.Attr) and isinstance(func.obj, ast.Name):
            scope = ctx.scope.imports.get(func.obj.id)
            if scope is None and ctx.scope.through_failed_import(func.obj.id):
                raise Failed()
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

    def call_named(self, name: str, e: ast.Call, ctx: Context, scope: Scope, prefix: str) -> Node:
        if name in scope.failed:  # declared with errors, reported there
            raise Failed()
        if name in scope.defs:
            return self.expand_def(scope.defs[name], e, ctx, scope, prefix + name)
        if name in scope.tables:
            return self.call_table(scope.tables[name], e, ctx)
        if not prefix and name in BUILTINS:
            return self.call_builtin(name, e, ctx)
        if not prefix and scope is self.scope and name in self.program.models:
            return self.call_model(self.program.models[name], e, ctx)
        candidates = [prefix + c for c in (*scope.defs, *scope.tables)]
        if not prefix:
            candidates += [*BUILTINS, *(self.program.models if scope is self.scope else ())]
        raise self.error("KD082", f"unknown function `{prefix}{name}`{did_you_mean(prefix + name, candidates)}",
                         e.func.span)

    def expand_def(self, d: ast.Def, e: ast.Call, ctx: Context, scope: Scope, qualified: str) -> Node:
        if qualified in ctx.calls:
            raise self.error("KD042", f"def `{qualified}` calls itself; defs cannot be recursive", e.span)
        params = [p.name for p in d.params]
        if len(e.args) > len(params):
            raise self.error("KD083", f"`{qualified}` takes {plural(len(params), 'argument')}, "
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
        inner = Context(scope, bound, ctx.soft, (*ctx.calls, qualified))
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
        except Failed:
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

    def call_table(self, table: TableIR, e: ast.Call, ctx: Context) -> Node:
        if e.kwargs:
            raise self.error("KD084", "table arguments are given in column order, without names", e.span)
        if len(e.args) != len(table.params):
            raise self.error("KD084", f"table `{table.name}` takes {plural(len(table.params), 'argument')} "
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

    def text_or_column(self, expr: ast.Expr, ctx: Context,
                        wanted: str) -> tuple[tuple[Node, ...], str | None]:
        """A text operand of the text phase: text from the completion (a node, no column), or a
        `str` input column, read there by name (no node). ``wanted`` starts the error message."""
        node = self.lower(expr, ctx)
        if node.type.is_text:
            return (self.as_text(node),), None
        if node.op == "input" and node.type.kind == "str":
            return (), node.attr("name")
        raise self.error("KD085", f"{wanted}, not {node.type}", expr.span)

    def call_model(self, model: ModelSpec, e: ast.Call, ctx: Context) -> Node:
        """A judge's rubric item, `judge("criterion", text, ..., choices = "no" | "yes")`, a truth
        in 0..1 (the choices evenly spaced from worst to best); or a reward model's score of a
        text or a pair of texts, `preference(text)`, a number."""
        name = model.name
        if model.kind == "judge":
            usage = f'`{name}("the criterion", text, ..., choices = "no" | "partly" | "yes")`'
            if not e.args or not isinstance(e.args[0], ast.String) or not e.args[0].value.strip():
                raise self.error("KD101", f"a judge grades a criterion written as a string first: {usage}",
                                 e.args[0].span if e.args else e.span)
            criterion, shown = e.args[0].value.strip(), e.args[1:]
            if not shown:
                raise self.error("KD101", f"`{name}` is shown no text to grade: give the parts of the "
                                 f"completion (and `str` inputs) after the criterion, {usage}", e.span)
            choices: tuple[str, ...] = DEFAULT_CHOICES
            for kw in e.kwargs:
                if kw.name != "choices":
                    raise self.error("KD101", f"a judge takes one setting, `choices`, not `{kw.name}`"
                                     f"{did_you_mean(kw.name, ('choices',))}", kw.span)
                choices = self.judge_choices(kw.value)
        else:
            usage = f"`{name}(text)` or `{name}(prompt, text)`"
            if e.kwargs:
                raise self.error("KD101", f"a reward model takes no settings: {usage}", e.kwargs[0].span)
            if not 1 <= len(e.args) <= 2:
                raise self.error("KD101", f"a reward model scores one text or a pair: {usage}", e.span)
            shown = e.args
        operands: list[Node] = []
        parts: list[tuple[str, str | None]] = []
        for position, arg in enumerate(shown, 1):
            nodes, column = self.text_or_column(
                arg, ctx, f"`{name}` is shown text from the completion or a `str` input column")
            operands.extend(nodes)
            label = arg.id if isinstance(arg, ast.Name) else f"text {position}"
            if any(label == seen for seen, _ in parts):
                label = f"{label} ({position})"
            parts.append((label, column))
        if model.kind == "judge":
            return self.node("rubric", tuple(operands), T.BOOL, e.span, model=name,
                             criterion=criterion, choices=choices, parts=tuple(parts))
        return self.node("rm_score", tuple(operands), T.FLOAT, e.span, model=name, parts=tuple(parts))

    def judge_choices(self, expr: ast.Expr) -> tuple[str, ...]:
        """`choices = "no" | "partly" | "yes"`: at least two distinct words, worst first."""
        values = (expr.values if isinstance(expr, ast.Strings) else
                  (expr.value,) if isinstance(expr, ast.String) else None)
        if values is None:
            raise self.error("KD102", 'a judge\'s choices are strings from worst to best, '
                             'e.g. `choices = "no" | "partly" | "yes"`', expr.span)
        choices = tuple(v.strip() for v in values)
        if len(choices) < 2:
            raise self.error("KD102", "a judge needs at least two choices to grade with", expr.span)
        if any(not c for c in choices):
            raise self.error("KD102", "a judge's choice cannot be empty", expr.span)
        folded = [c.casefold() for c in choices]
        for i, c in enumerate(folded):
            if c in folded[:i]:
                raise self.error("KD102", f'the choice "{choices[i]}" is listed twice', expr.span)
        return choices

    @staticmethod
    def literal_number(expr: ast.Expr, ctx: Context) -> float | None:
        """A number written in the spec: a literal, or a def parameter bound to one (so a def can
        pass its n-gram size or threshold on to a builtin)."""
        if isinstance(expr, ast.Number):
            return float(expr.value)
        if isinstance(expr, ast.Unary) and expr.op == "-" and isinstance(expr.operand, ast.Number):
            return -float(expr.operand.value)
        if isinstance(expr, ast.Name) and expr.id in ctx.locals and ctx.locals[expr.id].op == "const":
            return float(ctx.locals[expr.id].attr("value"))
        return None

    def call_builtin(self, name: str, e: ast.Call, ctx: Context) -> Node:
        """A builtin's type rule, from its entry in ``kdsl.semantic.builtins``."""
        if e.kwargs:
            raise self.error("KD083", f"{name}() takes no keyword arguments", e.kwargs[0].span)
        return BUILTINS[name].lower(self, Call(name, tuple(e.args), e.span, ctx))

