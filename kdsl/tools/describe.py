"""A spec in plain language: for the clinicians and domain experts who review it, and as the
guidance a prompt carries when a model is told the rules instead of being rewarded for them.

``describe(program)`` gives the whole spec: its name and version, the dataset columns, what is
read from the completion, the categories, how levels combine, one section per level with one
sentence per rule, the definitions the rules use, the functions those definitions call, and the
training settings. ``describe(program, levels)`` gives only those levels and the definitions their
rules use; ``guidance(program, levels)`` is that text under a "Guidance:" line.

The text is rendered from the syntax tree (parsed again from ``program.ir.sources``), because the
IR is hash-consed: a let, an output and an expanded def become shared nodes and lose the names
the expert gave them. The IR still answers what the tree cannot: the type of a let or an output,
and whether a rule is graded. Numbers are printed as the spec writes them. Everything is walked
in spec order, so the same spec always gives the same text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from kdsl.errors import KdslError, Span, did_you_mean
from kdsl.frontend import ast
from kdsl.frontend.parser import parse
from kdsl.semantic.builtins import BUILTINS

if TYPE_CHECKING:
    from kdsl.ir import ProgramIR
    from kdsl.runtime.program import Program

__all__ = ["describe", "guidance"]

GUIDANCE_HEADER = "Guidance:\nYour answer is judged by the rules below; follow them."

# Binding strength of each form, as in grammars/kdsl.lark: a child binding more loosely than its
# position needs is put in parentheses.
_IF, _OR, _AND, _NOT, _CMP, _SUM, _PRODUCT, _UNARY, _POWER, _POSTFIX, _ATOM = range(11)
_BINARY_PRECEDENCE = {"or": _OR, "and": _AND, "+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT,
                      "%": _PRODUCT, "**": _POWER}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_BOUND = {"<": "below", "<=": "at most", ">": "above", ">=": "at least"}
_QUANTITY = {"==": "exactly", ">=": "at least", "<=": "at most", ">": "more than", "<": "fewer than"}
_NUMBER = re.compile(r"(?<![\w.])-?\s*(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_UNITS = {"chars": "characters", "words": "words", "tokens": "tokens"}

# Each verb in the four moods a sentence needs: states, requires, denies, forbids.
_VERBS = {
    "be": ("is", "must be", "is not", "must not be"),
    "equal": ("equals", "must equal", "does not equal", "must not equal"),
    "contain": ("contains", "must contain", "does not contain", "must not contain"),
    "mention": ("mentions", "must mention", "does not mention", "must not mention"),
    "match": ("matches", "must match", "does not match", "must not match"),
    "have": ("has", "must have", "does not have", "must not have"),
    "hold": ("holds", "must hold", "does not hold", "must not hold"),
}

# The kind of value a builtin gives, as this module names kinds (`default` takes its operand's).
_DESCRIBED_KIND = {"number": "number", "truth": "bool", "text": "str"}

_SCORING = (
    "How the reward is computed: a rule scores 1 when it is met and 0 when it is not, or partial "
    "credit where it says so. A rule with a \"when\" condition counts only where the condition "
    "holds; elsewhere it is left out. A rule that cannot be computed (for example because the "
    "answer is missing) counts as not met, unless it says otherwise. A level scores the weighted "
    "mean of its rules that count (1 when none does). A gate level that is not fully met sets "
    "every later level to 0. The reward is the sum of each level's weight times its score."
)
_LOGICS = {
    "godel": "Partial truths combine by Goedel logic: \"and\" takes the smaller truth, \"or\" the "
             "larger, \"not\" is 1 minus the truth.",
    "lukasiewicz": "Partial truths combine by Lukasiewicz logic: a and b is max(0, a + b - 1), a or "
                   "b is min(1, a + b), not a is 1 - a.",
}


def describe(program: Program, levels: Sequence[str] | None = None) -> str:
    """The spec in plain language. With ``levels``, only those levels (in spec order) and the
    definitions their rules use, without the title, inputs and outputs: the form a prompt
    carries. An unknown level name raises ``KdslError``."""
    return _Describer(program.ir).render(levels)


def guidance(program: Program, levels: Sequence[str]) -> str:
    """The text to append to a prompt so that a model is told the rules of ``levels`` instead of
    being rewarded for them: a "Guidance:" line, then ``describe(program, levels)``."""
    return f"{GUIDANCE_HEADER}\n\n{describe(program, levels)}"


# ---- the specs behind a program ---------------------------------------------------------------

@dataclass
class _Scope:
    """One spec file of a program: its syntax tree, its declarations by name, and its imports.
    ``prefix`` is how the importing spec names its defs, tables and enums (``curb65.``)."""

    spec: ast.Spec
    prefix: str
    index: int
    imports: dict[str, _Scope] = field(default_factory=dict)
    inputs: dict[str, ast.InputDecl] = field(default_factory=dict)
    outputs: dict[str, ast.OutputDecl] = field(default_factory=dict)
    lets: dict[str, ast.Let] = field(default_factory=dict)
    defs: dict[str, ast.Def] = field(default_factory=dict)
    tables: dict[str, ast.Table] = field(default_factory=dict)
    enums: dict[str, ast.EnumDecl] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: ast.Spec, prefix: str, index: int) -> _Scope:
        scope = cls(spec, prefix, index)
        scope.inputs = {d.name: d for d in spec.inputs}
        scope.outputs = {d.name: d for d in spec.outputs}
        scope.lets = {d.name: d for d in spec.lets}
        scope.defs = {d.name: d for d in spec.defs}
        scope.tables = {d.name: d for d in spec.tables}
        scope.enums = {d.name: d for d in spec.enums}
        for decl in spec.inputs:
            if decl.type.enum is not None:
                scope.enums.setdefault(decl.type.enum.name, decl.type.enum)
        return scope


def _resolved(file: str) -> Path | None:
    try:
        path = Path(file)
        return path.resolve() if path.is_file() else None
    except (OSError, ValueError):
        return None


def _import_source(path: str, importer: str, root: Path | None,
                   sources: dict[str, str]) -> tuple[str, Path | None] | None:
    """The key in ``sources`` of the spec that ``import "path"`` in ``importer`` named, and the
    folder tree it may import from in turn; resolved as the compiler does, or, where the files
    have moved since the program was loaded, by the end of the path."""
    from kdsl.compiler import ImportRefused, resolve_import, search_folders

    importer_path = _resolved(importer)
    try:
        found = resolve_import(path, root, importer_path.parent if importer_path else None,
                               search_folders())
    except ImportRefused:
        found = None
    if found is not None:
        for key in sorted(sources):
            if _resolved(key) == found.path:
                return key, found.root
    name = path if path.endswith(".kd") else path + ".kd"
    for key in sorted(sources):
        if key.replace("\\", "/").endswith("/" + name) or key == name:
            place = _resolved(key)
            return key, place.parent if place else None
    return None


# ---- rendering --------------------------------------------------------------------------------

class _Describer:
    def __init__(self, ir: ProgramIR):
        self.ir = ir
        self.lines_of: dict[str, list[str]] = {}
        self.scopes: list[_Scope] = []
        self.functions: set[str] = set()  # builtins that a printed formula calls
        text = ir.sources.get(ir.file)
        if text is None:
            raise KdslError(f"cannot describe {ir.name}: the program does not hold the text of "
                            "its spec", Span(ir.file))
        start = _resolved(ir.file)
        self.root = self._scope(text, ir.file, "", start.parent if start else None)
        self.rules_ir = {(rule.level, rule.name): rule for rule in ir.rules}

    def _scope(self, text: str, file: str, prefix: str, root: Path | None) -> _Scope:
        self.lines_of[file] = text.split("\n")
        scope = _Scope.of(parse(text, file), prefix, len(self.scopes))
        self.scopes.append(scope)
        for imp in scope.spec.imports:
            found = _import_source(imp.path, file, root, self.ir.sources)
            if found is not None:
                key, child_root = found
                scope.imports[imp.alias] = self._scope(self.ir.sources[key], key,
                                                       f"{prefix}{imp.alias}.", child_root)
        return scope

    # ---- the document -----------------------------------------------------------------------
    def render(self, levels: Sequence[str] | None) -> str:
        spec = self.root.spec
        if levels is None:
            chosen = list(spec.levels)
        else:
            known = [lv.name for lv in spec.levels]
            for name in levels:
                if name not in known:
                    have = f"its levels are {', '.join(known)}" if known else "it has no levels"
                    raise KdslError(f"{spec.name} has no level `{name}`{did_you_mean(name, known)}; "
                                    f"{have}", Span(self.ir.file))
            chosen = [lv for lv in spec.levels if lv.name in set(levels)]
        roots = [(expr, self.root, frozenset()) for lv in chosen for rule in lv.rules
                 for expr in (rule.body, rule.when) if expr is not None]
        if levels is None:
            roots += [(d.value, self.root, frozenset()) for d in spec.outputs]
            if not spec.levels:  # a library: what it offers is all it has
                roots += [(d.value, self.root, frozenset()) for d in spec.lets]
                roots += [(d.body, self.root, frozenset(p.name for p in d.params))
                          for d in spec.defs]
        used = self._closure(roots)
        if not spec.levels and levels is None:
            used |= {("table", 0, t.name) for t in spec.tables}
            used |= {("def", 0, d.name) for d in spec.defs}
        sections: list[list[str]] = []
        if levels is None:
            sections += self._front_matter()
        sections += [self._level(level) for level in chosen]
        # Rendering the definitions records the functions they call, so they come first.
        definitions = self._definitions(used, with_outputs=levels is not None)
        if definitions:
            sections.append(definitions)
        if self.functions:
            sections.append(["## Functions"] + [f"- {BUILTINS[name].sentence}." for name in BUILTINS
                                                if name in self.functions])
        if levels is None:
            training = self._training()
            if training:
                sections.append(training)
        return "\n\n".join("\n".join(section) for section in sections) + "\n" if sections else ""

    def _front_matter(self) -> list[list[str]]:
        spec = self.root.spec
        title = [f"# {spec.name}, version {spec.version}"]
        if spec.imports:
            title.append("It uses the definitions of " + _join(
                [f"{imp.path} (as {imp.alias})" for imp in spec.imports]) + ".")
        sections = [title]
        if spec.inputs:
            sections.append(["## Inputs (columns of the dataset)"] + [
                f"- {d.name}: {self._input_type(d.type, self.root)}" for d in spec.inputs])
        if spec.outputs:
            sections.append(["## Read from the completion"] + [
                f"- {d.name}: {self._extraction(d.value, self.root)}" for d in spec.outputs])
        categories = self._categories()
        if categories:
            sections.append(categories)
        if spec.levels:
            scoring = [_SCORING]
            if spec.logic in _LOGICS:
                scoring.append(_LOGICS[spec.logic])
            sections.append(["## Scoring", " ".join(scoring)])
        else:
            sections.append(["This spec has no levels, so it gives no reward by itself; other "
                             "specs import its definitions."])
        return sections

    def _level(self, level: ast.Level) -> list[str]:
        weight = self._written(level.span, level.weight, upto="{")
        flags = (["gate"] if level.gate else []) + [f"weight {weight}"]
        lines = [f"## Level {level.name} ({', '.join(flags)})"]
        if level.gate:
            lines.append("Gate: unless every rule of this level is fully met, every later level "
                         "scores 0.")
        if level.weight == 0:
            lines.append("Weight 0: its score is computed and reported, but adds nothing to the "
                         "reward.")
        for rule in level.rules:
            lines.append(f"- {rule.name}: {self._rule(rule, level.name)}")
        return lines

    def _training(self) -> list[str]:
        spec = self.root.spec
        lines = []
        if spec.advantage is not None:
            settings = {"estimator": spec.advantage.estimator,
                        **{s.name: s.value for s in spec.advantage.settings}}
            lines.append("- " + _advantage(settings))
        for mask in spec.masks:
            lines.append(f"- The tokens {mask.mode} {_quote(mask.marker)} are left out of the "
                         "training loss.")
        return ["## Training"] + lines if lines else []

    # ---- inputs, outputs, categories --------------------------------------------------------
    def _input_type(self, t: ast.TypeExpr, scope: _Scope) -> str:
        span = (f" from {self._written(t.span, t.low, last=False)} to "
                f"{self._written(t.span, t.high)}" if t.low is not None else "")
        if t.low is not None and (t.low_open or t.high_open):
            span += f" ({_ends(t.low_open, t.high_open)})"
        unit = f" in {t.unit}" if t.unit else ""
        if t.kind == "float":
            return "a number" + unit + span
        if t.kind == "int":
            return "a whole number" + unit + span
        simple = {"bool": "true or false", "str": "text", "box": "a box (x1, y1, x2, y2)",
                  "boxes": "a list of boxes, each x1, y1, x2, y2 (empty when there are none)"}
        if t.kind in simple:
            return simple[t.kind]
        bands = f" ({', '.join(t.bands)})" if t.bands else ""
        if t.kind == "vector":
            return (f"{t.size} numbers" + (f" named {', '.join(t.bands)}" if t.bands else "")
                    + (f", each{unit}{span}" if span or unit else ""))
        if t.kind == "raster":
            missing = (f"; pixels equal to {self._written(t.span, t.nodata)} are missing (no data)"
                       if t.nodata is not None else "")
            return f"an image of {t.size} bands{bands}{missing}"
        found = self._enum(t.kind, scope)
        if t.enum is not None or found is not None:
            decl, owner = (t.enum, scope) if t.enum is not None else found
            return f"one of {_members(decl)} ({owner.prefix}{decl.name})"
        return t.kind

    def _enum(self, name: str, scope: _Scope) -> tuple[ast.EnumDecl, _Scope] | None:
        alias, _, rest = name.rpartition(".")
        if alias:
            child = scope.imports.get(alias.split(".")[0])
            return self._enum(name.split(".", 1)[1], child) if child is not None else None
        decl = scope.enums.get(rest)
        return (decl, scope) if decl is not None else None

    def _extraction(self, e: ast.Expr, scope: _Scope) -> str:
        """What an output reads from the completion."""
        if isinstance(e, ast.TagExtractor):
            where = f", searched within {self._noun(e.within, scope)}" if e.within else ""
            tags = f"<{e.tag}>...</{e.tag}>"
            if e.position == "only":
                return f"the text inside {tags}, only where it occurs exactly once{where}"
            return f"the text inside the {e.position} {tags}{where}"
        if isinstance(e, ast.RegexExtractor):
            where = f" in {self._noun(e.within, scope)}" if e.within else ""
            groups = re.findall(r"\(\?P<(\w+)>", e.pattern)
            parts = f", with the named part {_join(groups)}" if groups else ""
            return f"the first match of the pattern {_quote(e.pattern)}{where}{parts}"
        if isinstance(e, ast.Name) and e.id == "completion":
            return "the whole completion"
        if isinstance(e, ast.Convert):
            source = self._noun(e.obj, scope)
            if e.type_name in ("float", "int"):
                return f"the first number in {source}"
            if e.type_name == "str":
                return f"{source} as text, without surrounding spaces"
            if e.type_name == "bool":
                return f"{source} read as yes or no"
            if e.type_name == "box":
                return f"the first four numbers in {source}, as a box (x1, y1, x2, y2)"
            if e.type_name == "boxes":
                return f"every box written in {source} (none found: an empty list)"
            found = self._enum(e.type_name, scope)
            if found is not None:
                return f"{source} read as one of {_members(found[0])} (when it says nothing else)"
            return f"{source} read as {e.type_name}"
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "choice" \
                and len(e.args) == 2 and isinstance(e.args[1], ast.String):
            letters = _join(list(e.args[1].value), "or")
            return f"the option letter ({letters}) that {self._noun(e.args[0], scope)} gives"
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "number" \
                and len(e.args) == 1:
            return f"the first number in {self._noun(e.args[0], scope)}"
        return self._formula(e, scope)

    def _categories(self) -> list[str]:
        found: dict[tuple[int, str], tuple[ast.EnumDecl, _Scope]] = {}

        def add(name: str, scope: _Scope) -> None:
            hit = self._enum(name, scope)
            if hit is not None:
                found.setdefault((hit[1].index, hit[0].name), hit)

        for decl in self.root.spec.inputs:
            if decl.type.enum is not None:
                found.setdefault((0, decl.type.enum.name), (decl.type.enum, self.root))
            else:
                add(decl.type.kind, self.root)
        for decl in self.root.spec.outputs:
            for node in _walk(decl.value):
                if isinstance(node, ast.Convert):
                    add(node.type_name, self.root)
        for kind, index, name in sorted(self._closure(
                [(rule_expr, self.root, frozenset()) for lv in self.root.spec.levels
                 for rule in lv.rules for rule_expr in (rule.body, rule.when) if rule_expr])):
            if kind == "table":
                scope = self.scopes[index]
                table = scope.tables[name]
                for type_name in (*(p.type_name for p in table.params), table.result_type):
                    add(type_name, scope)
        if not found:
            return []
        lines = ["## Categories",
                 "A text names a category when, apart from case, surrounding punctuation and "
                 "repeated spaces, it is the category's name or one of the other wordings listed."]
        for decl, scope in found.values():
            lines.append(f"- {scope.prefix}{decl.name}: {', '.join(m.name for m in decl.members)}")
            for member in decl.members:
                if member.synonyms:
                    lines.append(f"  - {member.name}: also {', '.join(map(_quote, member.synonyms))}")
        return lines

    # ---- definitions ------------------------------------------------------------------------
    def _closure(self, roots: list[tuple[ast.Expr, _Scope, frozenset]]) -> set[tuple[str, int, str]]:
        """The outputs, lets, defs and tables that the expressions use, directly or through one
        another, as (kind, scope index, name)."""
        used: set[tuple[str, int, str]] = set()
        stack = list(roots)
        while stack:
            expr, scope, params = stack.pop()
            for node in _walk(expr):
                if isinstance(node, ast.Name) and node.id not in params:
                    for kind, table in (("let", scope.lets), ("output", scope.outputs)):
                        decl = table.get(node.id)
                        if decl is not None and (kind, scope.index, node.id) not in used:
                            used.add((kind, scope.index, node.id))
                            stack.append((decl.value, scope, frozenset()))
                elif isinstance(node, ast.Call):
                    target = self._callee(node.func, scope)
                    if target is None:
                        continue
                    kind, owner, decl = target
                    key = (kind, owner.index, decl.name)
                    if key not in used:
                        used.add(key)
                        if kind == "def":
                            stack.append((decl.body, owner, frozenset(p.name for p in decl.params)))
        return used

    def _callee(self, func: ast.Expr, scope: _Scope):
        """The def or table a call names, as (kind, its scope, its declaration), or None for a
        builtin."""
        if isinstance(func, ast.Name):
            if func.id in scope.defs:
                return "def", scope, scope.defs[func.id]
            if func.id in scope.tables:
                return "table", scope, scope.tables[func.id]
            return None
        if isinstance(func, ast.Attr) and isinstance(func.obj, ast.Name):
            child = scope.imports.get(func.obj.id)
            if child is not None:
                return self._callee(ast.Name(func.name), child)
        return None

    def _definitions(self, used: set[tuple[str, int, str]], with_outputs: bool) -> list[str]:
        lines: list[str] = []
        if with_outputs:
            for decl in self.root.spec.outputs:
                if ("output", 0, decl.name) in used:
                    lines.append(f"- {decl.name}: {self._extraction(decl.value, self.root)}")
        for scope in self.scopes:
            items = [(decl.span.line, decl.span.column, kind, decl)
                     for kind, table in (("let", scope.lets), ("def", scope.defs),
                                         ("table", scope.tables))
                     for decl in table.values() if (kind, scope.index, decl.name) in used]
            for _, _, kind, decl in sorted(items, key=lambda item: item[:2]):
                if kind == "let":
                    lines.append(f"- {decl.name} = {self._let(decl, scope)}")
                elif kind == "def" and decl.criteria:
                    lines.extend(self._points(decl, scope))
                elif kind == "def":
                    params = ", ".join(p.name if p.default is None else
                                       f"{p.name} = {self._written(p.span, p.default)}"
                                       for p in decl.params)
                    lines.append(f"- {scope.prefix}{decl.name}({params}) = "
                                 f"{self._formula(decl.body, scope)}")
                else:
                    lines.extend(self._table(decl, scope))
        return ["## Definitions"] + lines if lines else []

    def _let(self, let: ast.Let, scope: _Scope) -> str:
        """A let's formula; a let that calls one short def also gets the def's formula with the
        let's own arguments in place of the parameters."""
        call = let.value
        models = {m.name: m for m in scope.spec.models}
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in models:
            return self._judged(models[call.func.id], call, scope)
        text = self._formula(let.value, scope)
        if isinstance(call, ast.Call):
            target = self._callee(call.func, scope)
            if target is not None and target[0] == "def":
                _, owner, d = target
                if not any(isinstance(n, ast.Call) and self._callee(n.func, owner)
                           for n in _walk(d.body)):
                    bound = self._bind(d, call, scope)
                    if bound is not None:
                        expanded = self._formula(d.body, owner, bound)
                        if len(expanded) <= 80 and expanded != text:
                            text += f" = {expanded}"
        return text

    def _judged(self, model: ast.ModelDecl, call: ast.Call, scope: _Scope) -> str:
        """A rubric item or a reward model's score, in words: who grades what, on which scale."""
        if model.kind == "judge":
            shown = call.args[1:]
            given = {k.name: k.value for k in call.kwargs}.get("choices")
            choices = given.values if isinstance(given, ast.Strings) else (
                (given.value,) if isinstance(given, ast.String) else ("no", "yes"))
            criterion = call.args[0].value if call.args and isinstance(call.args[0], ast.String) else ""
            named = [self._formula(a, scope) for a in shown]
            parts = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)
            scale = ", ".join(f'"{c}"' for c in choices)
            return (f'the grade the judge {model.name} gives, from {scale} (0 to 1), to how well '
                    f'{parts} {"meet" if len(named) > 1 else "meets"}: "{criterion}"')
        parts = ", ".join(self._formula(a, scope) for a in call.args)
        return f"the score the reward model {model.name} gives to {parts}"

    def _bind(self, d: ast.Def, call: ast.Call, scope: _Scope):
        bound: dict[str, tuple[ast.Expr, _Scope]] = {}
        for param, arg in zip(d.params, call.args):
            bound[param.name] = (arg, scope)
        for kw in call.kwargs:
            bound[kw.name] = (kw.value, scope)
        for param in d.params:
            if param.name not in bound:
                if param.default is None:
                    return None
                bound[param.name] = (ast.Number(param.default), scope)
        return bound

    def _points(self, sheet: ast.Def, scope: _Scope) -> list[str]:
        """A points sheet as it is printed: each criterion with its points, and the range."""
        params = ", ".join(p.name for p in sheet.params)
        head = (f"- {scope.prefix}{sheet.name}({params}): a points sheet; the total of the points "
                "of every criterion that holds.")
        grid = [["criterion", "condition", "points"]] + [
            [c.name, self._cond(c.condition, scope), self._written(c.span, c.points)]
            for c in sheet.criteria]
        return [head, *_grid(grid)]

    def _table(self, table: ast.Table, scope: _Scope) -> list[str]:
        columns = [p.name for p in table.params]
        head = (f"- {scope.prefix}{table.name}({', '.join(columns)}) -> {table.result_type}: a "
                "decision table; the first row that matches gives the result, and where no row "
                "matches there is no value.")
        rows = [[self._cell(cell) for cell in row.cells] + [
            row.result if isinstance(row.result, str) else self._written(row.span, row.result)]
            for row in table.rows]
        result = "result" if table.result_type in ("float", "int") else table.result_type
        return [head, *_grid([[*columns, result], *rows])]

    def _cell(self, cell: ast.Cell) -> str:
        written = re.sub(r"\s+", " ", self._source(cell.span) or "").strip()
        if cell.kind == "any":
            return "any"
        if cell.kind == "name":
            return cell.names[0]
        if cell.kind == "set":
            return _join(list(cell.names), "or")
        if cell.kind == "range":
            low, _, high = written.partition("..")
            if not high:
                low, high = _fmt(cell.low), _fmt(cell.high)
            if cell.low_open or cell.high_open:
                # An interval: the ends say it, `[0.1, 0.27)` is ">= 0.1 and < 0.27".
                return (f"{'>' if cell.low_open else '>='} {_fmt(cell.low)} and "
                        f"{'<' if cell.high_open else '<='} {_fmt(cell.high)}")
            return f"{low.strip()} to {high.strip()}"
        if cell.kind == "compare":
            number = written[len(cell.op):].strip() if written.startswith(cell.op) else _fmt(cell.low)
            return f"{cell.op} {number}"
        return written or _fmt(cell.low)

    # ---- rules ------------------------------------------------------------------------------
    def _rule(self, rule: ast.Rule, level: str) -> str:
        scope = self.root
        lowered = self.rules_ir.get((level, rule.name))
        graded = lowered is not None and lowered.body.op == "truth"
        body = self._graded(rule.body, scope) if graded else self._cond(rule.body, scope, modal=True)
        text = f"when {self._cond(rule.when, scope)}, {body}" if rule.when is not None else body
        notes = []
        if rule.soft is not None:
            notes.append(self._soft(rule, scope))
        if rule.invalid == "pass":
            notes.append("Where it cannot be computed (a value is missing), it counts as met.")
        elif rule.invalid == "skip":
            notes.append("Where it cannot be computed (a value is missing), it is left out.")
        if rule.weight != 1:
            notes.append(f"It weighs {self._written(rule.span, rule.weight)} in the weighted mean "
                         "of its level.")
        if rule.on is not None:
            decl = scope.outputs.get(rule.on)
            where = f", {self._extraction(decl.value, scope)}" if decl is not None else ""
            notes.append(f"It judges {rule.on}{where}: in training, its credit goes to those "
                         "tokens.")
        return " ".join([text + "."] + notes)

    def _graded(self, body: ast.Expr, scope: _Scope) -> str:
        if isinstance(body, ast.If):
            value = (f"{self._noun(body.then, scope)} where {self._cond(body.condition, scope)}, "
                     f"otherwise {self._noun(body.otherwise, scope)}")
        else:
            value = self._noun(body, scope)
        return (f"the rule earns {value} (a graded score: below 0 counts as 0, above 1 as 1)")

    def _soft(self, rule: ast.Rule, scope: _Scope) -> str:
        margin = self._written(rule.span, rule.soft)
        count, inside_defs = self._soft_comparisons(rule.body, scope, frozenset())
        if count == 0:
            return f"Soft {margin} changes nothing here: the rule compares no numbers."
        if inside_defs:
            return (f"Soft {margin}: each comparison of numbers gives partial credit, falling "
                    f"linearly from full credit at its threshold to none {margin} past it.")
        pairs = list(self._soft_pairs(rule.body, scope))
        if len(pairs) == 1:  # the requirement already names the value compared
            return f"Partial credit {self._ramp(*pairs[0], scope, margin, named=False)}."
        clauses = [self._ramp(left, op, right, scope, margin) for left, op, right in pairs]
        return "Partial credit: " + "; ".join(clauses) + "."

    def _soft_pairs(self, body: ast.Expr, scope: _Scope) -> Iterator[tuple[ast.Expr, str, ast.Expr]]:
        """The comparisons of numbers that `soft` makes ramps of, each as (value, operator,
        threshold), the threshold on the right."""
        for node in _walk(body):
            if isinstance(node, ast.Compare):
                for a, op, b in zip(node.operands, node.ops, node.operands[1:]):
                    if {self._kind(a, scope, frozenset()), self._kind(b, scope, frozenset())} & {
                            "enum", "str", "bool"}:
                        continue
                    if isinstance(a, ast.Number) and not isinstance(b, ast.Number):
                        a, op, b = b, _FLIPPED[op], a
                    yield a, op, b
            elif isinstance(node, ast.In) and isinstance(node.collection, ast.RangeLiteral):
                yield node.element, ">" if node.collection.low_open else ">=", node.collection.low
                yield node.element, "<" if node.collection.high_open else "<=", node.collection.high

    def _ramp(self, left: ast.Expr, op: str, right: ast.Expr, scope: _Scope, margin: str,
              named: bool = True) -> str:
        """Where one soft comparison gives partial credit, as a clause: "ndvi below 0.45 earns
        credit falling linearly to none at 0.25", or without the value's name, "below 0.45,
        falling linearly to none at 0.25"."""
        threshold = self._noun(right, scope)
        difference = _absolute_difference(left)
        if difference is not None and op in ("<", "<="):
            end = f"a difference of {_shift(right, threshold, margin, +1)}"
            if not named:
                return f"beyond a difference of {threshold}, falling linearly to none at {end}"
            a, b = (self._noun(x, scope) for x in difference)
            return f"{a} further than {threshold} from {b} earns credit falling linearly to none at {end}"
        if op in (">", ">=", "<", "<="):
            side = "below" if op in (">", ">=") else "above"
            end = _shift(right, threshold, margin, -1 if side == "below" else +1)
            if not named:
                return f"{side} {threshold}, falling linearly to none at {end}"
            return (f"{self._noun(left, scope)} {side} {threshold} earns credit falling linearly to "
                    f"none at {end}")
        subject = f"{self._noun(left, scope)} " if named else ""
        if op == "==":
            return (f"{subject}{'other than' if named else 'near'} {threshold}"
                    f"{' earns credit' if named else ','} falling linearly to none at a difference "
                    f"of {margin}")
        return (f"{subject}closer than {margin} to {threshold}"
                f"{' earns credit' if named else ','} in proportion to the difference (none where "
                "they are equal)")

    def _soft_comparisons(self, e: ast.Expr, scope: _Scope, params: frozenset,
                          depth: int = 0) -> tuple[int, bool]:
        """How many comparisons `soft` turns into ramps (those of numbers, in the body and in
        the defs it calls; lets are computed without it), and whether some are inside defs."""
        count, inside = 0, False
        for node in _walk(e):
            if isinstance(node, ast.Compare):
                for a, b in zip(node.operands, node.operands[1:]):
                    if not ({self._kind(a, scope, params), self._kind(b, scope, params)}
                            & {"enum", "str", "bool"}):
                        count += 1
                        inside = inside or depth > 0
            elif isinstance(node, ast.In) and isinstance(node.collection, ast.RangeLiteral):
                count += 2
                inside = inside or depth > 0
            elif isinstance(node, ast.Call) and depth < 20:
                target = self._callee(node.func, scope)
                if target is not None and target[0] == "def":
                    _, owner, d = target
                    inner, _ = self._soft_comparisons(d.body, owner, frozenset(p.name for p in d.params),
                                                      depth + 1)
                    count += inner
                    inside = inside or inner > 0
        return count, inside

    # ---- sentences --------------------------------------------------------------------------
    def _cond(self, e: ast.Expr, scope: _Scope, modal: bool = False, negated: bool = False) -> str:
        """A condition as a sentence: stated (``modal`` false) or required."""
        if isinstance(e, ast.Unary) and e.op == "not":
            return self._cond(e.operand, scope, modal, not negated)
        if isinstance(e, ast.Binary) and e.op in ("and", "or"):
            if negated:
                lead = "it must not be the case that " if modal else "it is not the case that "
                return lead + self._cond(e, scope)
            parts = _flatten(e, e.op)
            if e.op == "and":
                texts = [self._cond(p, scope, modal) for p in parts]
                return (", and " if modal else " and ").join(texts)
            texts = [self._cond(p, scope) for p in parts]
            if modal:
                return "at least one of these must hold: " + "; or ".join(texts)
            return "either " + ", or ".join(f"({t})" if _is_and(p) else t
                                            for p, t in zip(parts, texts))
        if isinstance(e, ast.Compare):
            return self._compare(e, scope, modal, negated)
        if isinstance(e, ast.In):
            return self._membership(e, scope, modal, negated != e.negated)
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in (
                "present", "valid", "mentions", "matches", "math_verify") and \
                self._callee(e.func, scope) is None and e.args:
            return self._truth_call(e, scope, modal, negated)
        if isinstance(e, ast.Name) and self._kind(e, scope, frozenset()) == "bool":
            return _say(e.id, "be", "false" if negated else "true", modal, False)
        if isinstance(e, ast.If) and not negated and self._kind(e, scope, frozenset()) == "bool":
            return (f"if {self._cond(e.condition, scope)}, {self._cond(e.then, scope, modal)}; "
                    f"otherwise, {self._cond(e.otherwise, scope, modal)}")
        return _say(self._formula(e, scope), "hold", "", modal, negated)

    def _truth_call(self, e: ast.Call, scope: _Scope, modal: bool, negated: bool) -> str:
        name, args = e.func.id, e.args
        if name in ("present", "valid"):
            return self._presence(args[0], scope, modal, negated)
        subject = self._noun(args[0], scope)
        if name == "mentions" and len(args) == 2:
            terms = _terms(args[1])
            if len(terms) == 1:
                what = terms[0]
            else:
                what = ("any of " if negated else "at least one of ") + ", ".join(terms)
            return _say(subject, "mention", f"{what} (as a whole word, in any case)", modal, negated)
        if name == "matches" and len(args) == 2:
            return _say(subject, "match", f"the pattern {self._formula(args[1], scope)}", modal,
                        negated)
        if name == "math_verify" and len(args) >= 2:
            how = "checked with math-verify"
            if len(args) > 2 and isinstance(args[2], ast.String) and args[2].value == "open-r1-length":
                how += " the way open-r1's length rewards check it"
            return _say(f"the math answer in {subject}", "equal",
                        f"{self._noun(args[1], scope)} ({how})", modal, negated)
        return _say(self._formula(e, scope), "hold", "", modal, negated)

    def _presence(self, e: ast.Expr, scope: _Scope, modal: bool, negated: bool) -> str:
        subject = self._noun(e, scope)
        if isinstance(e, ast.Name):
            if e.id in scope.inputs:
                return _say(subject, "be", "given", modal, negated)
            output = scope.outputs.get(e.id)
            if output is not None:
                value = output.value
                if isinstance(value, (ast.TagExtractor, ast.RegexExtractor)) or (
                        isinstance(value, ast.Name) and value.id == "completion"):
                    return _say(subject, "be", "present", modal, negated)
                detail = "" if negated else self._readable(value, scope)
                return _say(subject, "be", "given" + (f" ({detail})" if detail else ""), modal,
                            negated)
        if isinstance(e, ast.Attr) and isinstance(e.obj, ast.Name) and e.obj.id in scope.outputs \
                and isinstance(scope.outputs[e.obj.id].value, ast.RegexExtractor):
            return _say(subject, "be", "present", modal, negated)
        return _say(subject, "have", "a value", modal, negated)

    def _readable(self, value: ast.Expr, scope: _Scope) -> str:
        """What makes an output read from text have a value, as a clause."""
        if not isinstance(value, ast.Convert):
            return ""
        source = self._noun(value.obj, scope)
        if value.type_name in ("float", "int"):
            return f"{source} contains a number"
        if value.type_name == "bool":
            return f"{source} says yes or no"
        if value.type_name == "box":
            return f"{source} contains a box"
        found = self._enum(value.type_name, scope)
        if found is not None:
            return f"{source} names one of {_members(found[0])} and nothing else"
        return ""

    def _compare(self, e: ast.Compare, scope: _Scope, modal: bool, negated: bool) -> str:
        if len(e.ops) == 1:
            return self._pair(e.operands[0], e.ops[0], e.operands[1], scope, modal, negated)
        if negated:
            lead = "it must not be the case that " if modal else "it is not the case that "
            return lead + self._compare(e, scope, False, False)
        first, middle, last = e.operands[0], e.operands[1], e.operands[-1]
        if len(e.ops) == 2 and all(op in _BOUND for op in e.ops):
            lower = _BOUND[_FLIPPED[e.ops[0]]]
            upper = _BOUND[e.ops[1]]
            return _say(self._noun(middle, scope), "be",
                        f"{lower} {self._noun(first, scope)} and {upper} {self._noun(last, scope)}",
                        modal, False)
        pairs = [self._pair(a, op, b, scope, modal, False)
                 for a, op, b in zip(e.operands, e.ops, e.operands[1:])]
        return " and ".join(pairs)

    def _pair(self, left: ast.Expr, op: str, right: ast.Expr, scope: _Scope, modal: bool,
              negated: bool) -> str:
        if isinstance(left, ast.Number) and not isinstance(right, ast.Number):
            left, op, right = right, _FLIPPED[op], left
        if op == "!=":
            op, negated = "==", not negated
        difference = _absolute_difference(left)
        if difference is not None and op in ("<=", "<"):
            a, b = difference
            near = "within" if op == "<=" else "less than"
            return _say(self._noun(a, scope), "be",
                        f"{near} {self._noun(right, scope)} of {self._noun(b, scope)}", modal, negated)
        call = _builtin_call(left)
        if call is not None and isinstance(right, ast.Number) and op in _QUANTITY:
            name, args = call
            number = self._formula(right, scope)
            if name == "count" and len(args) == 1:
                tag = self._tag_of(args[0], scope)
                if tag is not None:
                    tag_name, within = tag
                    where = self._noun(within, scope) if within is not None else "the completion"
                    if op == "==" and number == "1":
                        what = f"exactly one <{tag_name}> tag"
                    else:
                        what = f"{_QUANTITY[op]} {number} <{tag_name}> tags"
                    return _say(where, "contain", what, modal, negated)
            if name == "length" and len(args) == 2 and isinstance(args[1], ast.Name) \
                    and args[1].id in _UNITS:
                return _say(self._noun(args[0], scope), "be",
                            f"{_QUANTITY[op]} {number} {_UNITS[args[1].id]} long", modal, negated)
        other = _builtin_call(right)
        if call is not None and other is not None and call[0] == other[0] == "normalize" \
                and op == "==" and len(call[1]) == len(other[1]) == 1:
            return _say(self._noun(call[1][0], scope), "match",
                        f"{self._noun(other[1][0], scope)} word for word (in any case, ignoring "
                        "punctuation and the articles a, an and the)", modal, negated)
        subject, value = self._noun(left, scope), self._noun(right, scope)
        if op == "==":
            numeric = "number" in (self._kind(left, scope, frozenset()),
                                   self._kind(right, scope, frozenset()))
            return _say(subject, "equal" if numeric else "be", value, modal, negated)
        return _say(subject, "be", f"{_BOUND[op]} {value}", modal, negated)

    def _membership(self, e: ast.In, scope: _Scope, modal: bool, negated: bool) -> str:
        subject = self._noun(e.element, scope)
        if isinstance(e.collection, ast.RangeLiteral):
            low = self._noun(e.collection.low, scope)
            high = self._noun(e.collection.high, scope)
            return _say(subject, "be", f"between {low} and {high} "
                        f"({_ends(e.collection.low_open, e.collection.high_open)})", modal, negated)
        items = [self._formula(item, scope) for item in e.collection.items]
        what = items[0] if len(items) == 1 else "one of " + ", ".join(items)
        return _say(subject, "be", what, modal, negated)

    def _tag_of(self, e: ast.Expr, scope: _Scope) -> tuple[str, ast.Expr | None] | None:
        if isinstance(e, ast.Name) and e.id in scope.outputs:
            e = scope.outputs[e.id].value
        if isinstance(e, ast.TagExtractor):
            return e.tag, e.within
        return None

    def _noun(self, e: ast.Expr, scope: _Scope) -> str:
        """A value as a noun phrase: plain words for what reads the completion, a formula for
        the rest."""
        if isinstance(e, ast.Name) and e.id == "completion":
            return "the completion"
        if isinstance(e, ast.TagExtractor):
            where = f" within {self._noun(e.within, scope)}" if e.within else ""
            return f"the <{e.tag}> text{where}"
        if isinstance(e, ast.Convert):
            source = self._noun(e.obj, scope)
            if e.type_name in ("float", "int"):
                return f"the number in {source}"
            if e.type_name in ("box", "boxes"):
                return f"the {'box' if e.type_name == 'box' else 'boxes'} written in {source}"
            if e.type_name == "str":
                return f"the text of {source}"
            if e.type_name == "bool":
                return f"the yes or no of {source}"
            return f"the {e.type_name} that {source} names"
        call = _builtin_call(e)
        if call is not None and self._callee(e.func, scope) is None:
            name, args = call
            nouns = [self._noun(a, scope) for a in args]
            if name == "count" and len(args) == 1:
                tag = self._tag_of(args[0], scope)
                if tag is not None:
                    where = self._noun(tag[1], scope) if tag[1] is not None else "the completion"
                    return f"the number of <{tag[0]}> tags in {where}"
            if name == "length" and len(args) == 2 and isinstance(args[1], ast.Name) \
                    and args[1].id in _UNITS:
                return f"the length of {nouns[0]} in {_UNITS[args[1].id]}"
            if name == "similarity" and len(args) == 2:
                self.functions.add(name)
                return f"the similarity in meaning of {nouns[0]} and {nouns[1]}"
            if name == "mention_count" and len(args) == 2:
                return (f"the number of mentions of {', '.join(_terms(args[1]))} in {nouns[0]} "
                        "(as whole words, in any case)")
            if name == "occurrences" and len(args) == 2:
                return f"the number of times {nouns[0]} contains {self._formula(args[1], scope)}"
            if name == "match_count" and len(args) == 2:
                return (f"the number of matches of the pattern {self._formula(args[1], scope)} in "
                        f"{nouns[0]}")
            if name == "repetition" and len(args) == 2:
                return (f"the share of repeated {self._formula(args[1], scope)}-word sequences in "
                        f"{nouns[0]}")
            if name == "box_count" and len(args) == 1:
                written = nouns[0].removeprefix("the boxes written in ")
                return f"the number of boxes {'written ' if written != nouns[0] else ''}in {written}"
            if name == "iou" and len(args) == 2:
                return f"the overlap (IoU) of {nouns[0]} and {nouns[1]}"
            if name == "choice" and len(args) == 2:
                return f"the option letter that {nouns[0]} gives"
            if name == "normalize" and len(args) == 1:
                self.functions.add(name)
                return f"normalize({nouns[0]})"
        return self._formula(e, scope)

    # ---- formulas ---------------------------------------------------------------------------
    def _formula(self, e: ast.Expr, scope: _Scope, bound: dict | None = None) -> str:
        return self._form(e, scope, bound)[0]

    def _form(self, e: ast.Expr, scope: _Scope, bound: dict | None) -> tuple[str, int]:
        """An expression in the spec's own notation, and how tightly it binds. ``bound`` maps a
        def's parameters to the arguments of one call (expression and its scope)."""
        def sub(child: ast.Expr, need: int) -> str:
            text, precedence = self._form(child, scope, bound)
            return text if precedence >= need else f"({text})"

        if isinstance(e, ast.Number):
            return self._number(e), _UNARY if e.value < 0 else _ATOM
        if isinstance(e, ast.String):
            return _quote(e.value), _ATOM
        if isinstance(e, ast.Strings):
            return " | ".join(_quote(v) for v in e.values), _ATOM
        if isinstance(e, ast.Bool):
            return ("true" if e.value else "false"), _ATOM
        if isinstance(e, ast.Name):
            if bound is not None and e.id in bound:
                arg, arg_scope = bound[e.id]
                return self._form(arg, arg_scope, None)
            return e.id, _ATOM
        if isinstance(e, ast.Attr):
            return f"{sub(e.obj, _POSTFIX)}.{e.name}", _POSTFIX
        if isinstance(e, ast.Call):
            target = self._callee(e.func, scope)
            if target is not None:
                name = f"{target[1].prefix}{target[2].name}"
            elif isinstance(e.func, ast.Name):
                name = e.func.id
                if name in BUILTINS:
                    self.functions.add(name)
            else:
                name = sub(e.func, _POSTFIX)
            args = [self._form(a, scope, bound)[0] for a in e.args]
            args += [f"{kw.name} = {self._form(kw.value, scope, bound)[0]}" for kw in e.kwargs]
            return f"{name}({', '.join(args)})", _POSTFIX
        if isinstance(e, ast.Index):
            return f"{sub(e.obj, _POSTFIX)}[{self._form(e.index, scope, bound)[0]}]", _POSTFIX
        if isinstance(e, ast.Convert):
            return f"{sub(e.obj, _POSTFIX)} as {e.type_name}", _POSTFIX
        if isinstance(e, ast.Unary):
            if e.op == "not":
                return f"not {sub(e.operand, _NOT)}", _NOT
            return f"-{sub(e.operand, _UNARY)}", _UNARY
        if isinstance(e, ast.Binary):
            precedence = _BINARY_PRECEDENCE[e.op]
            if e.op == "**":
                return f"{sub(e.left, _POSTFIX)} ** {sub(e.right, _UNARY)}", _POWER
            return f"{sub(e.left, precedence)} {e.op} {sub(e.right, precedence + 1)}", precedence
        if isinstance(e, ast.Compare):
            parts = [sub(e.operands[0], _SUM)]
            for op, operand in zip(e.ops, e.operands[1:]):
                parts += [op, sub(operand, _SUM)]
            return " ".join(parts), _CMP
        if isinstance(e, ast.In):
            keyword = "not in" if e.negated else "in"
            return f"{sub(e.element, _SUM)} {keyword} {self._form(e.collection, scope, bound)[0]}", _CMP
        if isinstance(e, ast.SetLiteral):
            return "{" + ", ".join(self._form(i, scope, bound)[0] for i in e.items) + "}", _ATOM
        if isinstance(e, ast.RangeLiteral):
            if e.low_open or e.high_open:
                return (f"{'(' if e.low_open else '['}{sub(e.low, _SUM)}, {sub(e.high, _SUM)}"
                        f"{')' if e.high_open else ']'}"), _ATOM
            return f"{sub(e.low, _SUM)}..{sub(e.high, _SUM)}", _CMP
        if isinstance(e, ast.If):
            return (f"if {sub(e.condition, _OR)} then {sub(e.then, _OR)} else "
                    f"{sub(e.otherwise, _IF)}"), _IF
        if isinstance(e, ast.TagExtractor):
            position = "" if e.position == "first" else f"{e.position} "
            within = f" within {sub(e.within, _POSTFIX)}" if e.within is not None else ""
            return f"{position}tag {_quote(e.tag)}{within}", _ATOM if not within else _NOT
        if isinstance(e, ast.RegexExtractor):
            within = f" within {sub(e.within, _POSTFIX)}" if e.within is not None else ""
            return f"regex {_quote(e.pattern)}{within}", _ATOM if not within else _NOT
        return type(e).__name__, _ATOM  # pragma: no cover - every expression node is handled above

    def _number(self, e: ast.Number) -> str:
        written = (self._source(e.span) or "").replace(" ", "")
        try:
            if written and float(written) == e.value:
                return written
        except ValueError:
            pass
        return _fmt(e.value)

    def _written(self, span: Span, value: float, last: bool = True, upto: str | None = None) -> str:
        """A number of a declaration (a weight, a margin, a default) as the spec writes it: the
        last (or first) number in the declaration's text with that value."""
        text = self._source(span, multiline=True) or ""
        if upto is not None:
            text = text.split(upto, 1)[0]
        candidates = [m.replace(" ", "") for m in _NUMBER.findall(text)]
        for written in (reversed(candidates) if last else candidates):
            try:
                if float(written) == value:
                    return written
            except ValueError:  # pragma: no cover - the pattern matches numbers only
                continue
        return _fmt(value)

    def _source(self, span: Span, multiline: bool = False) -> str | None:
        lines = self.lines_of.get(span.file)
        if not lines or not span.line or span.line > len(lines) or span.end_line < span.line:
            return None
        if span.end_line == span.line:
            return lines[span.line - 1][span.column - 1:span.end_column - 1]
        if not multiline:
            return None
        inside = lines[span.line - 1:span.end_line]
        inside[-1] = inside[-1][:span.end_column - 1]
        inside[0] = inside[0][span.column - 1:]
        return "\n".join(inside)

    # ---- kinds of value ---------------------------------------------------------------------
    def _kind(self, e: ast.Expr, scope: _Scope, params: frozenset, depth: int = 0) -> str:
        """number, bool, enum, str, text or other: enough to choose words and to tell which
        comparisons `soft` affects. Parameters of a def count as numbers."""
        if isinstance(e, ast.Number):
            return "number"
        if isinstance(e, (ast.String, ast.Strings)):
            return "str"
        if isinstance(e, (ast.Bool, ast.Compare, ast.In)):
            return "bool"
        if isinstance(e, ast.Unary):
            return "bool" if e.op == "not" else "number"
        if isinstance(e, ast.Binary):
            return "bool" if e.op in ("and", "or") else "number"
        if isinstance(e, ast.If):
            kind = self._kind(e.then, scope, params, depth)
            return self._kind(e.otherwise, scope, params, depth) if kind == "other" else kind
        if isinstance(e, (ast.TagExtractor, ast.RegexExtractor)):
            return "text"
        if isinstance(e, ast.Convert):
            if e.type_name in ("float", "int"):
                return "number"
            if e.type_name in ("bool", "str"):
                return e.type_name
            return "enum" if self._enum(e.type_name, scope) else "other"
        if isinstance(e, ast.Index):
            return "number"
        if isinstance(e, ast.Name):
            return self._name_kind(e.id, scope, params)
        if isinstance(e, ast.Attr):
            if isinstance(e.obj, ast.Name) and e.obj.id in scope.inputs:
                return "number"  # a band of a vector or raster, a corner of a box
            if isinstance(e.obj, ast.Name) and e.obj.id in scope.outputs:
                return "text"  # a named group of a regex
            return "enum"
        if isinstance(e, ast.Call):
            target = self._callee(e.func, scope)
            if target is not None:
                kind, owner, decl = target
                if kind == "table":
                    return "number" if decl.result_type in ("float", "int") else "enum"
                if depth > 20:
                    return "other"
                return self._kind(decl.body, owner, frozenset(p.name for p in decl.params), depth + 1)
            name = e.func.id if isinstance(e.func, ast.Name) else ""
            result = BUILTINS[name].result if name in BUILTINS else None
            if result in _DESCRIBED_KIND:
                return _DESCRIBED_KIND[result]
            if name == "default" and e.args:
                return self._kind(e.args[0], scope, params, depth)
        return "other"

    def _name_kind(self, name: str, scope: _Scope, params: frozenset) -> str:
        if name in params:
            return "number"
        if name == "completion":
            return "text"
        if scope.index == 0:
            node = self.ir.lets.get(name) if name in scope.lets else (
                self.ir.outputs.get(name) if name in scope.outputs else None)
            if node is not None:
                return _type_kind(node.type)
        if name in scope.inputs:
            kind = scope.inputs[name].type.kind
            if kind in ("float", "int"):
                return "number"
            if kind in ("bool", "str"):
                return kind
            return "other" if kind in ("vector", "raster", "box", "boxes") else "enum"
        if name in scope.lets:
            return self._kind(scope.lets[name].value, scope, frozenset())
        if name in scope.outputs:
            return self._kind(scope.outputs[name].value, scope, frozenset())
        return "enum"  # a bare member of an enum


# ---- helpers ----------------------------------------------------------------------------------

def _walk(e: ast.Node) -> Iterator[ast.Node]:
    """Every node of an expression, the expression first, children in source order."""
    stack = [e]
    while stack:
        node = stack.pop()
        yield node
        children = []
        for f in fields(node):
            value = getattr(node, f.name)
            if isinstance(value, ast.Node):
                children.append(value)
            elif isinstance(value, tuple):
                children.extend(v for v in value if isinstance(v, ast.Node))
        stack.extend(reversed(children))


def _flatten(e: ast.Expr, op: str) -> list[ast.Expr]:
    if isinstance(e, ast.Binary) and e.op == op:
        return _flatten(e.left, op) + _flatten(e.right, op)
    return [e]


def _is_and(e: ast.Expr) -> bool:
    return isinstance(e, ast.Binary) and e.op == "and"


def _builtin_call(e: ast.Expr) -> tuple[str, tuple[ast.Expr, ...]] | None:
    if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and not e.kwargs:
        return e.func.id, e.args
    return None


def _absolute_difference(e: ast.Expr) -> tuple[ast.Expr, ast.Expr] | None:
    """``a`` and ``b`` of ``abs(a - b)``."""
    call = _builtin_call(e)
    if call is not None and call[0] == "abs" and len(call[1]) == 1:
        inner = call[1][0]
        if isinstance(inner, ast.Binary) and inner.op == "-":
            return inner.left, inner.right
    return None


def _terms(e: ast.Expr) -> list[str]:
    if isinstance(e, ast.Strings):
        return [_quote(v) for v in e.values]
    if isinstance(e, ast.String):
        return [_quote(e.value)]
    return [type(e).__name__]


def _say(subject: str, verb: str, complement: str, modal: bool, negated: bool) -> str:
    form = _VERBS[verb][(2 if negated else 0) + (1 if modal else 0)]
    return f"{subject} {form} {complement}".rstrip()


def _type_kind(t) -> str:
    if t.kind in ("float", "int") or (t.kind == "field" and t.element == "float"):
        return "number"
    if t.kind == "field":
        return "bool" if t.element == "bool" else "enum"
    if t.kind in ("bool", "enum", "str"):
        return t.kind
    if t.is_text:
        return "text"
    return "other"


def _members(decl: ast.EnumDecl) -> str:
    return ", ".join(m.name for m in decl.members)


def _join(items: list[str], word: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def _fmt(value: float) -> str:
    """A number with no written form at hand (a weight, a soft margin): the shortest text that
    reads back as the same float, without a trailing .0."""
    if float(value).is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


def _shift(threshold: ast.Expr, written: str, margin: str, sign: int) -> str:
    """The end of a soft ramp, computed in decimal from the numbers as written; for a threshold
    that is not a number, the ramp's width from it."""
    if isinstance(threshold, ast.Number):
        try:
            end = Decimal(written) + sign * Decimal(margin)
        except InvalidOperation:
            pass
        else:
            text = format(end.normalize(), "f")
            return "0" if text in ("-0", "0") else text
    return f"{margin} {'above' if sign > 0 else 'below'} it"


def _quote(text: str) -> str:
    escaped = []
    for char in text:
        if char == '"':
            escaped.append('\\"')
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\t":
            escaped.append("\\t")
        elif char == "\r":
            escaped.append("\\r")
        elif not char.isprintable():
            escaped.append(char.encode("unicode_escape").decode("ascii"))
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _advantage(settings: dict) -> str:
    estimator = settings.get("estimator", "grpo")
    aggregate = settings.get("aggregate", "sum")
    written = ", ".join(f"{k} = {v}" for k, v in settings.items() if k != "estimator")
    head = f"Advantages: {estimator}({written})"
    part = {"per_level": "each level's score", "per_rule": "each rule's truth"}.get(aggregate)
    if estimator == "rloo":
        what = part or "each completion's reward"
        how = (f"{what}, minus its mean over the other completions for the same prompt"
               + (", summed with the weights" if part else ""))
        return f"{head}: {how}."
    scale = settings.get("scale", "group")
    divided = {"group": ", divided by their standard deviation",
               "batch": ", divided by the standard deviation over the batch",
               "none": " (not scaled)"}.get(scale, "")
    if part:
        return (f"{head}: {part} minus its mean over the completions for the same prompt{divided}; "
                "the weighted sum of these is then normalised over the batch.")
    return f"{head}: the reward minus its mean over the completions for the same prompt{divided}."


def _grid(rows: list[list[str]]) -> list[str]:
    """Rows of cells as an indented text table, the first row its header."""
    widths = [max(len(line[i]) for line in rows) for i in range(len(rows[0]))]
    lines = []
    for index, line in enumerate(rows):
        lines.append("    " + " | ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip())
        if index == 0:
            lines.append("    " + "-+-".join("-" * w for w in widths))
    return lines


def _ends(low_open: bool, high_open: bool) -> str:
    """Which ends of an interval belong to it, in words."""
    if low_open and high_open:
        return "both excluded"
    if low_open:
        return "the low end excluded, the high end included"
    if high_open:
        return "the low end included, the high end excluded"
    return "both included"
