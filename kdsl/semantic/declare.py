"""Resolving names: a spec's enums, inputs, defs and tables are declared in its ``Scope`` and
its program, with their types and units; duplicates and unknown types are reported here."""

from __future__ import annotations

from kdsl import types as T
from kdsl import units
from kdsl.errors import DiagnosticSink, Span, did_you_mean
from kdsl.frontend import ast
from kdsl.ir import InputSpec, ModelSpec, ProgramIR, TableColumn, TableIR
from kdsl.semantic.scope import SCALAR_TYPE_NAMES, Scope, enum_named, not_a_member, table_rows
from kdsl.types import EnumType, Type

LOGICS = ("product", "godel", "lukasiewicz")


class NameResolution:
    """Declares one spec's names. ``variables`` ends up holding its module-level names (inputs,
    outputs, lets) for lowering; an imported spec only needs its scope filled."""

    def __init__(self, spec: ast.Spec, scope: Scope, sink: DiagnosticSink, program: ProgramIR):
        self.spec = spec
        self.scope = scope
        self.sink = sink
        self.program = program
        self.variables: dict[str, ast.Node] = {}

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
            self.variables[name] = decl
        for model in spec.models:
            if model.name in seen or model.name in self.program.models:
                first = seen.get(model.name) or self.program.models[model.name]
                self.sink.error("KD032", f"`{model.name}` is also defined at line {first.span.line}",
                                model.span)
                continue
            if model.name in self.scope.imports:
                self.sink.error("KD032", f"`{model.name}` is already the name of an import", model.span)
                continue
            self.program.models[model.name] = ModelSpec(model.name, model.kind, model.span)
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

