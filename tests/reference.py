"""A reference interpreter: the semantics of docs/language.md, one sample at a time, in plain Python.

It walks the AST directly (no IR, no torch): numbers are floats, an invalid value is ``None``,
per-pixel values are lists. It is written to be read, not to be fast; the property tests check
that compiled, batched programs agree with it. Text semantics are in
``tests/reference_text.py``, written apart from ``kdsl.runtime.text``, and so is table-row matching
(apart from ``kdsl.analysis.tables``): a bug in either shows as a disagreement. It shares the
parser with the compiler (it reads the same AST) and, for ``math_verify()`` and ``similarity()``,
the adapters to the math-verify package and the sentence model, which ``test_r1_rewards.py``
checks against open-r1's own definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kdsl.frontend import ast
from kdsl.frontend.parser import parse
from tests import reference_text as tx

GATE_TOLERANCE = 1e-6


@dataclass
class Field:
    """Per-pixel values (flattened); ``None`` marks an invalid pixel."""

    values: list


@dataclass
class Text:
    span: tuple[int, int] | None


@dataclass
class Match:
    groups: dict


@dataclass
class Enum:
    name: str
    members: list[str]
    lookup: dict[str, str] = field(default_factory=dict)


class Reference:
    def __init__(self, spec_text: str):
        self.batch: list | None = None  # while score_batch runs: every (completion, columns)
        self.similarity_model = None
        self.spec = parse(spec_text)
        if self.spec.imports:
            raise NotImplementedError("the reference interpreter does not follow imports")
        self.enums: dict[str, Enum] = {}
        for decl in [*self.spec.enums] + [i.type.enum for i in self.spec.inputs if i.type.enum]:
            enum = Enum(decl.name, [m.name for m in decl.members])
            for m in decl.members:
                for spelling in (m.name, *m.synonyms):
                    enum.lookup.setdefault(tx.normalize_term(spelling), m.name)
            self.enums[decl.name] = enum
        self.inputs = {i.name: i.type for i in self.spec.inputs}
        self.defs = {d.name: d for d in self.spec.defs}
        self.tables = {t.name: t for t in self.spec.tables}
        self.definitions = {d.name: d.value for d in (*self.spec.outputs, *self.spec.lets)}
        self.model_kinds = {m.name: m.kind for m in self.spec.models}
        self.models: dict = {}  # name -> a Python judge (messages -> answer) or reward model

    # ---- a batch -------------------------------------------------------------------------------
    def score_batch(self, completions: list[str], rows: list[dict], similarity_model=None,
                    models: dict | None = None) -> list[dict]:
        """Score each sample; ``batch_min`` and friends see the whole batch. ``models`` are
        Python judges and reward models by name, asked about every sample."""
        self.batch = list(zip(completions, rows))
        self.similarity_model = similarity_model
        self.models = models or {}
        try:
            return [self.score(c, r) for c, r in self.batch]
        finally:
            self.batch = None

    def across_batch(self, expr: ast.Expr, local: dict) -> list:
        """The value of ``expr`` in every sample of the batch (this one alone outside one)."""
        if local:
            raise NotImplementedError("batch reductions of def parameters")
        here = (self.completion, self.columns, self.cache)
        values = []
        for completion, columns in self.batch or [(self.completion, self.columns)]:
            self.completion, self.columns, self.cache = completion, columns, {}
            values.append(self.evaluate(expr, {}, None))
        self.completion, self.columns, self.cache = here
        return values

    # ---- one sample ---------------------------------------------------------------------------
    def score(self, completion: str, columns: dict) -> dict:
        self.completion = completion
        self.columns = columns
        self.cache: dict[str, object] = {}
        rules, applies, levels = {}, {}, {}
        reward, gate_open = 0.0, 1.0
        for level in self.spec.levels:
            num = den = 0.0
            for rule in level.rules:
                truth, applied = self.rule(rule)
                rules[rule.name], applies[rule.name] = truth, applied
                if applied:
                    num += rule.weight * truth
                    den += rule.weight
            score = num / den if den > 0 else 1.0
            levels[level.name] = score * gate_open
            reward += level.weight * levels[level.name]
            if level.gate and score < 1.0 - GATE_TOLERANCE:
                gate_open = 0.0
        values = {}
        for let in self.spec.lets:
            value = self.variable(let.name)
            if not isinstance(value, (Field, Text, Match, list)):
                values[let.name] = value
        return {"reward": reward, "rules": rules, "applies": applies, "levels": levels,
                "values": values}

    def rule(self, rule: ast.Rule) -> tuple[float, bool]:
        applied = True
        if rule.when is not None:
            when = self.evaluate(rule.when, {}, None)
            applied = when is not None and when >= 0.5
        value = self.evaluate(rule.body, {}, rule.soft)
        if isinstance(value, (int, float)) and value is not None:
            value = min(max(float(value), 0.0), 1.0)
        if value is None:
            if rule.invalid == "skip":
                return 0.0, False
            return (1.0 if rule.invalid == "pass" else 0.0), applied
        return value, applied

    # ---- names ------------------------------------------------------------------------------------
    def variable(self, name: str):
        if name not in self.cache:
            if name in self.inputs:
                self.cache[name] = self.column(name, self.inputs[name])
            else:
                self.cache[name] = self.evaluate(self.definitions[name], {}, None)
        return self.cache[name]

    def column(self, name: str, t: ast.TypeExpr):
        value = self.columns.get(name)
        if value is None:
            return None
        if t.kind in ("float", "int"):
            value = float(value)
            return value if math.isfinite(value) else None
        if t.kind == "bool":
            return 1.0 if value in (True, 1, "true", "yes") else 0.0
        if t.kind == "str":
            return str(value).strip()
        if t.kind == "boxes":
            return [[float(v) for v in box] for box in value]
        if t.kind in ("vector", "box"):
            numbers = [None if v is None or not math.isfinite(float(v)) else float(v) for v in value]
            if t.kind == "box" and (None in numbers or numbers[2] < numbers[0] or numbers[3] < numbers[1]):
                return [None] * 4
            return numbers
        if t.kind == "raster":
            return [[None if (not math.isfinite(float(px)) or (t.nodata is not None and px == t.nodata))
                     else float(px) for px in band.reshape(-1).tolist()] for band in value]
        enum = self.enums[t.kind]
        return enum.lookup.get(tx.normalize_term(str(value)))

    def member(self, name: str):
        owners = [e for e in self.enums.values() if name in e.members]
        return name if len(owners) == 1 else None

    # ---- expressions ------------------------------------------------------------------------------
    def evaluate(self, e: ast.Expr, local: dict, soft: float | None):  # noqa: C901 - one case per node
        if isinstance(e, ast.Number):
            return float(e.value)
        if isinstance(e, ast.Bool):
            return 1.0 if e.value else 0.0
        if isinstance(e, ast.String):
            return e.value.strip()
        if isinstance(e, ast.Name):
            if e.id in local:
                return local[e.id]
            if e.id in self.inputs or e.id in self.definitions:
                return self.variable(e.id)
            if e.id == "completion":
                return Text((0, len(self.completion)))
            return self.member(e.id)
        if isinstance(e, ast.Attr):
            if isinstance(e.obj, ast.Name) and e.obj.id in self.enums:
                return e.name
            obj = self.evaluate(e.obj, local, soft)
            if isinstance(e.obj, ast.Name) and isinstance(obj, Match):
                return Text(obj.groups.get(e.name))
            t = self.inputs.get(e.obj.id) if isinstance(e.obj, ast.Name) else None
            if t is not None and t.kind == "raster":
                return None if obj is None else Field(obj[t.bands.index(e.name)])
            if t is not None and t.kind == "box":
                return None if obj is None else obj[("x1", "y1", "x2", "y2").index(e.name)]
            return None if obj is None else obj[t.bands.index(e.name)]
        if isinstance(e, ast.Index):
            obj = self.evaluate(e.obj, local, soft)
            t = self.inputs.get(e.obj.id) if isinstance(e.obj, ast.Name) else None
            if obj is None:
                return None
            item = obj[int(e.index.value)]
            return Field(item) if t is not None and t.kind == "raster" else item
        if isinstance(e, ast.TagExtractor):
            within = self.text(e.within, local) if e.within is not None else (0, len(self.completion))
            return Text(tx.tag(self.completion, within, e.tag, e.position))
        if isinstance(e, ast.RegexExtractor):
            within = self.text(e.within, local) if e.within is not None else (0, len(self.completion))
            return Match(tx.regex_groups(self.completion, within, e.pattern))
        if isinstance(e, ast.Convert):
            return self.convert(self.evaluate(e.obj, local, soft), e.type_name)
        if isinstance(e, ast.Unary):
            x = self.evaluate(e.operand, local, soft)
            if e.op == "not":
                return self.lift1(x, lambda v: 1.0 - v)
            return self.lift1(x, lambda v: -v)
        if isinstance(e, ast.Binary):
            if e.op in ("and", "or"):
                return self.logic(e.op, self.evaluate(e.left, local, soft), self.evaluate(e.right, local, soft))
            return self.arith(e.op, self.evaluate(e.left, local, soft), self.evaluate(e.right, local, soft))
        if isinstance(e, ast.Compare):
            values = [self.evaluate(x, local, soft) for x in e.operands]
            for i, x in enumerate(e.operands):  # a grade against one of its choices, by name
                if isinstance(x, ast.String):
                    for j in (i - 1, i + 1):
                        choices = self.grade_choices(e.operands[j]) if 0 <= j < len(values) else None
                        if choices:
                            values[i] = choices.index(x.value) / (len(choices) - 1)
            result = None
            for op, a, b in zip(e.ops, values, values[1:]):
                truth = self.compare(op, a, b, soft)
                result = truth if result is None else self.logic("and", result, truth)
            return result
        if isinstance(e, ast.In):
            x = self.evaluate(e.element, local, soft)
            if isinstance(e.collection, ast.RangeLiteral):
                lo = self.evaluate(e.collection.low, local, soft)
                hi = self.evaluate(e.collection.high, local, soft)
                low_op = ">" if e.collection.low_open else ">="
                high_op = "<" if e.collection.high_open else "<="
                result = self.logic("and", self.compare(low_op, x, lo, soft),
                                    self.compare(high_op, x, hi, soft))
            else:
                items = [self.evaluate(i, local, soft) for i in e.collection.items]
                if isinstance(x, Text):
                    x = self.text_as(x, items[0])
                result = self.lift1(x, lambda v: 1.0 if v in items else 0.0)
            return self.lift1(result, lambda v: 1.0 - v) if e.negated else result
        if isinstance(e, ast.If):
            c = self.evaluate(e.condition, local, soft)
            a, b = self.evaluate(e.then, local, soft), self.evaluate(e.otherwise, local, soft)
            if isinstance(c, Field) or isinstance(a, Field) or isinstance(b, Field):
                n = self.size(c, a, b)
                cs, as_, bs = self.pixels(c, n), self.pixels(a, n), self.pixels(b, n)
                return Field([None if ci is None else (ai if ci >= 0.5 else bi)
                              for ci, ai, bi in zip(cs, as_, bs)])
            if c is None:
                return None
            return a if c >= 0.5 else b
        if isinstance(e, ast.Call):
            return self.call(e, local, soft)
        raise NotImplementedError(type(e).__name__)

    # ---- helpers ------------------------------------------------------------------------------------
    def literal(self, expr: ast.Expr, local: dict) -> float:
        """A number written in the spec, or a def parameter bound to one."""
        return float(self.evaluate(expr, local, None))

    def reference_text(self, expr: ast.Expr, local: dict, soft) -> str | None:
        """The text a completion is compared with: a `str` column's raw value, or a span."""
        if isinstance(expr, ast.Name) and expr.id in self.inputs:
            value = self.columns.get(expr.id)
            return None if value is None or value != value else str(value)
        span = self.spans(self.evaluate(expr, local, soft))
        return None if span is None else self.completion[span[0]:span[1]]

    def table_row(self, table: ast.Table, values: list) -> int | None:
        """The index of the first row of ``table`` that matches ``values``, or None."""
        for index, row in enumerate(table.rows):
            if tx.row_accepts(row, values):
                return index
        return None

    def text(self, e: ast.Expr, local: dict):
        value = self.evaluate(e, local, None)
        if isinstance(value, Match):
            return value.groups[0]
        return value.span

    def spans(self, value) -> tuple[int, int] | None:
        return value.groups[0] if isinstance(value, Match) else value.span

    def convert(self, value, type_name: str):
        span = self.spans(value)
        if type_name in ("float", "int"):
            number = tx.number(self.completion, span)
            if number is None or (type_name == "int" and not float(number).is_integer()):
                return None
            return number
        if type_name == "str":
            return tx.text_value(self.completion, span)
        if type_name == "boxes":
            return tx.boxes(self.completion, span)
        if type_name == "box":
            box = tx.box(self.completion, span)
            return box if box is not None else [None] * 4
        if type_name == "bool":
            if span is None:
                return None
            word = tx.normalize_term(self.completion[span[0]:span[1]])
            return {"yes": 1.0, "true": 1.0, "y": 1.0, "no": 0.0, "false": 0.0, "n": 0.0}.get(word)
        if span is None:
            return None
        return self.enums[type_name].lookup.get(tx.normalize_term(self.completion[span[0]:span[1]]))

    def text_as(self, text: Text, other):
        """Text compared with a typed value is parsed as that value's type."""
        if isinstance(other, str):
            owners = [e for e in self.enums.values() if other in e.members]
            if owners:
                return self.convert(text, owners[0].name)
            return self.convert(text, "str")
        if isinstance(other, list):
            return self.convert(text, "box")
        return self.convert(text, "float")

    @staticmethod
    def size(*values) -> int:
        return next(len(v.values) for v in values if isinstance(v, Field))

    @staticmethod
    def pixels(value, n: int) -> list:
        return value.values if isinstance(value, Field) else [value] * n

    def lift1(self, x, f):
        if isinstance(x, Field):
            return Field([None if v is None else f(v) for v in x.values])
        if isinstance(x, list):
            return [None if v is None else f(v) for v in x]
        return None if x is None else f(x)

    def lift2(self, a, b, f):
        if isinstance(a, Field) or isinstance(b, Field):
            n = self.size(a, b)
            return Field([f(x, y) for x, y in zip(self.pixels(a, n), self.pixels(b, n))])
        if isinstance(a, list) or isinstance(b, list):
            n = len(a) if isinstance(a, list) else len(b)
            xs = a if isinstance(a, list) else [a] * n
            ys = b if isinstance(b, list) else [b] * n
            return [f(x, y) for x, y in zip(xs, ys)]
        return f(a, b)

    def arith(self, op: str, a, b):
        def apply(x, y):
            if x is None or y is None:
                return None
            if op == "+":
                return x + y
            if op == "-":
                return x - y
            if op == "*":
                return x * y
            if op in ("/", "%"):
                if y == 0:
                    return None
                return x / y if op == "/" else x % y  # Python's % has the divisor's sign, like torch
            if x < 0 and not float(y).is_integer():
                return None
            try:
                result = x ** y
            except (OverflowError, ZeroDivisionError):
                return None
            return result if isinstance(result, float) and math.isfinite(result) else (
                float(result) if isinstance(result, int) else None)
        return self.lift2(a, b, apply)

    def compare(self, op: str, a, b, soft: float | None):
        if isinstance(a, Text):
            a = self.text_as(a, b)
        if isinstance(b, Text):
            b = self.text_as(b, a)

        def apply(x, y):
            if x is None or y is None:
                return None
            if isinstance(x, str) or isinstance(y, str):
                return float((x == y) if op == "==" else (x != y))
            if soft:
                margin = {"<": y - x, "<=": y - x, ">": x - y, ">=": x - y}.get(op)
                if margin is not None:
                    return min(max(1.0 + margin / soft, 0.0), 1.0)
                if op == "==":
                    return min(max(1.0 - abs(x - y) / soft, 0.0), 1.0)
                return min(max(abs(x - y) / soft, 0.0), 1.0)
            return float({"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y, "==": x == y,
                          "!=": x != y}[op])
        return self.lift2(a, b, apply)

    def logic(self, op: str, a, b):
        kind = self.spec.logic

        def apply(x, y):
            if x is None and y is None:
                return None
            if op == "and":
                if x is None or y is None:
                    known = y if x is None else x
                    return 0.0 if known == 0 else None
                if kind == "godel":
                    return min(x, y)
                if kind == "lukasiewicz":
                    return max(0.0, x + y - 1.0)
                return x * y
            if x is None or y is None:
                known = y if x is None else x
                return 1.0 if known == 1 else None
            if kind == "godel":
                return max(x, y)
            if kind == "lukasiewicz":
                return min(1.0, x + y)
            return x + y - x * y
        return self.lift2(a, b, apply)

    def grade_choices(self, expr: ast.Expr) -> tuple[str, ...] | None:
        """The choices of the judge call ``expr`` is (directly or through a let), else None."""
        while isinstance(expr, ast.Name) and expr.id in self.definitions:
            expr = self.definitions[expr.id]
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and \
                self.model_kinds.get(expr.func.id) == "judge":
            given = {k.name: k.value for k in expr.kwargs}.get("choices")
            return tuple(given.values) if given is not None else ("no", "yes")
        return None

    def judged(self, name: str, e: ast.Call, local: dict, soft):
        """A judge's grade (the place of its exact answer among the choices, 0 to 1) or a reward
        model's score, of the texts the call shows; None where a text is missing."""
        kind = self.model_kinds[name]
        shown = e.args[1:] if kind == "judge" else e.args
        texts = [self.reference_text(a, local, soft) for a in shown]
        if any(t is None for t in texts):
            return None
        if kind == "reward_model":
            return float(self.models[name]([tuple(texts)])[0])
        from kdsl.runtime.judging import judge_messages  # the documented prompt, a data format

        labels = [a.id if isinstance(a, ast.Name) else f"text {i}" for i, a in enumerate(shown, 1)]
        choices = self.grade_choices(e)
        answer = str(self.models[name](judge_messages(e.args[0].value.strip(), list(zip(labels, texts)),
                                                      choices))).strip()
        folded = [c.lower() for c in choices]
        return folded.index(answer.lower()) / (len(choices) - 1) if answer.lower() in folded else None

    def call(self, e: ast.Call, local: dict, soft: float | None):  # noqa: C901 - one case per builtin
        name = e.func.id if isinstance(e.func, ast.Name) else None
        if name in self.model_kinds:
            return self.judged(name, e, local, soft)
        if name in self.defs:
            d = self.defs[name]
            bound = {p.name: self.evaluate(a, local, soft) for p, a in zip(d.params, e.args)}
            bound.update({k.name: self.evaluate(k.value, local, soft) for k in e.kwargs})
            for p in d.params:
                bound.setdefault(p.name, p.default)
            return self.evaluate(d.body, bound, soft)
        if name in self.tables:
            table = self.tables[name]
            args = [self.evaluate(a, local, soft) for a in e.args]

            def lookup(*column_values):
                if any(a is None for a in column_values):
                    return None
                values = [(a >= 0.5) if p.type_name == "bool" else a
                          for p, a in zip(table.params, column_values)]
                index = self.table_row(table, values)
                if index is None:
                    return None
                result = table.rows[index].result
                return result if isinstance(result, str) else float(result)

            if any(isinstance(a, Field) for a in args):  # per-pixel values: pixel by pixel
                n = self.size(*args)
                return Field([lookup(*pixel) for pixel in zip(*(self.pixels(a, n) for a in args))])
            return lookup(*args)
        args = e.args
        if name in ("present", "valid"):
            x = self.evaluate(args[0], local, soft)
            if isinstance(x, (Text, Match)):
                return 0.0 if self.spans(x) is None else 1.0
            if isinstance(x, Field):
                return Field([0.0 if v is None else 1.0 for v in x.values])
            if isinstance(x, list) and len(x) == 4 and not isinstance(x[0], list):  # a box
                return 0.0 if None in x else 1.0
            return 0.0 if x is None else 1.0
        if name == "count":
            tag = args[0]
            while isinstance(tag, ast.Name):
                tag = self.definitions[tag.id]
            within = self.text(tag.within, local) if tag.within is not None else (0, len(self.completion))
            return tx.tag_count(self.completion, within, tag.tag)
        if name in ("batch_min", "batch_max", "batch_mean"):
            valid = [v for v in self.across_batch(args[0], local) if v is not None]
            if not valid:
                return None
            return {"batch_min": min, "batch_max": max,
                    "batch_mean": lambda vs: sum(vs) / len(vs)}[name](valid)
        if name == "normalize":
            text = self.reference_text(args[0], local, soft)
            return None if text is None else tx.normalize_answer(text)
        if name in ("math_verify", "similarity"):
            span = self.spans(self.evaluate(args[0], local, soft))
            other = self.reference_text(args[1], local, soft)
            text = None if span is None else self.completion[span[0]:span[1]]
            if text is None or other is None:
                return None
            if name == "math_verify":
                return tx.math_equal(text, other, args[2].value if len(args) > 2 else "default")
            return tx.cosine_similarity(text, other, self.similarity_model)
        if name in ("length", "mentions", "mention_count", "repetition", "choice", "number", "matches",
                    "match_count", "occurrences"):
            span = self.spans(self.evaluate(args[0], local, soft))
            if span is None:
                return None
            if name == "length":
                unit = args[1].id if len(args) > 1 else "chars"
                return tx.length(self.completion, span, unit)
            if name in ("mentions", "mention_count"):
                terms = args[1].values if isinstance(args[1], ast.Strings) else (args[1].value,)
                return tx.mentions(self.completion, span, terms, name == "mention_count")
            if name == "repetition":
                return tx.repetition(self.completion, span, int(self.literal(args[1], local)) if len(args) > 1 else 3)
            if name == "choice":
                return tx.choice(self.completion, span, args[1].value)
            if name == "number":
                return self.convert(Text(span), "float")
            if name == "match_count":
                return tx.match_count(self.completion, span, args[1].value)
            if name == "occurrences":
                return tx.occurrences(self.completion, span, args[1].value)
            return tx.matches(self.completion, span, args[1].value)
        values = [self.evaluate(a, local, soft) for a in args]
        if name in ("abs", "sqrt", "log", "exp", "floor", "ceil", "round", "cos", "sin"):
            def unary(v):
                if name == "sqrt":
                    return math.sqrt(v) if v >= 0 else None
                if name == "log":
                    return math.log(v) if v > 0 else None
                if name == "exp":
                    try:
                        return math.exp(v)
                    except OverflowError:
                        return None
                if name == "round":
                    return float(round(v))
                if name in ("cos", "sin"):
                    return getattr(math, name)(v)
                return float({"abs": abs, "floor": math.floor, "ceil": math.ceil}[name](v))
            return self.lift1(values[0], unary)
        if name in ("min", "max") and len(values) > 1:
            result = values[0]
            for other in values[1:]:
                result = self.lift2(result, other, lambda x, y: None if x is None or y is None
                                    else (min(x, y) if name == "min" else max(x, y)))
            return result
        if name == "clamp":
            x, lo, hi = values
            low = self.lift2(x, lo, lambda a, b: None if a is None or b is None else max(a, b))
            return self.lift2(low, hi, lambda a, b: None if a is None or b is None else min(a, b))
        if name == "default":
            return self.lift2(values[0], values[1], lambda a, b: b if a is None else a)
        if name in ("box_count", "matched_boxes"):
            lists = [tx.boxes(self.completion, v.span) if isinstance(v, Text) else v
                     for v in values[:2]]
            if any(b is None for b in lists):
                return None
            if name == "box_count":
                return float(len(lists[0]))
            return float(greedy_matches(lists[0], lists[1], self.literal(args[2], local)))
        if name in ("iou", "area"):
            boxes = [self.convert(v, "box") if isinstance(v, Text) else v for v in values]
            if any(b is None or None in b for b in boxes):
                return None
            return box_area(boxes[0]) if name == "area" else box_iou(*boxes)
        # reductions over a vector or per-pixel values
        x = values[0]
        items = x.values if isinstance(x, Field) else x
        if items is None:
            return None
        valid = [v for v in items if v is not None]
        if not valid:
            return None
        if name in ("mean", "frac"):
            return sum(valid) / len(valid)
        if name == "sum":
            return sum(valid)
        if name == "min":
            return min(valid)
        if name == "max":
            return max(valid)
        if name == "std":
            mean = sum(valid) / len(valid)
            return math.sqrt(sum((v - mean) ** 2 for v in valid) / len(valid))
        if name == "quantile":
            ordered = sorted(valid)
            position = self.literal(args[1], local) * (len(ordered) - 1)
            low = math.floor(position)
            high = min(low + 1, len(ordered) - 1)
            return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
        raise NotImplementedError(name)


def box_area(box: list) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def box_iou(a: list, b: list) -> float | None:
    """Intersection over union; None (invalid) when both boxes are empty."""
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    union = box_area(a) + box_area(b) - inter
    return None if union == 0 else inter / union


def greedy_matches(predicted: list, gold: list, threshold: float) -> int:
    """One-to-one matches at IoU >= threshold, the highest IoU first (ties: earlier prediction,
    then earlier gold box)."""
    pairs = sorted(((box_iou(p, g) or 0.0, -i, -j) for i, p in enumerate(predicted)
                    for j, g in enumerate(gold)), reverse=True)
    used_p, used_g, count = set(), set(), 0
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if -i in used_p or -j in used_g:
            continue
        used_p.add(-i)
        used_g.add(-j)
        count += 1
    return count


def reference_score(spec_text: str, completion: str, columns: dict) -> dict:
    """Score one completion with the reference interpreter."""
    return Reference(spec_text).score(completion, columns)
