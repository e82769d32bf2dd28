"""Knowledge checks over the checked IR: value ranges and contradictions.

Interval arithmetic gives every numeric node a range (declared input ranges, the natural ranges
of extractors and reductions); a rule whose body can never be true is an error, one that always
holds or a `when` that never applies is a warning, and a denominator whose range holds 0 gets a
warning with a concrete input that makes it zero (solved exactly for linear denominators, with
sympy for the rest). Contradictions between conditions on the same value (`x > 5 and x < 3`,
`answer == A and answer == B`, a body against its `when`) are found by intersecting the bounds
that each side of an `and` puts on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kdsl.analysis.interval import EVERYTHING, INF, Interval, fmt
from kdsl.errors import DiagnosticSink
from kdsl.ir import Node, ProgramIR, RuleIR
from kdsl.operators import OPERATIONS


class Ranges:
    """The range of every node, computed once per node."""

    def __init__(self, program: ProgramIR):
        self.program = program
        self.memo: dict[int, Interval | None] = {}

    def of(self, node: Node) -> Interval | None:
        found = self.memo.get(node.id, False)
        if found is not False:
            return found
        result = self._compute(node)
        self.memo[node.id] = result
        return result

    def _compute(self, n: Node) -> Interval | None:
        """A leaf's range from the program; an operation's from its rule in ``kdsl.operators``."""
        op = n.op
        args = [self.of(a) for a in n.args]
        if op == "const":
            value = n.attr("value")
            return Interval(value, value, float(value).is_integer())
        if op == "input":
            spec = self.program.inputs[n.attr("name")]
            kind = spec.type.kind
            if kind in ("float", "int", "vector", "raster"):  # a vector's range holds for each element
                lo = -INF if spec.low is None else spec.low
                hi = INF if spec.high is None else spec.high
                return Interval(lo, hi, kind == "int", spec.low_open and spec.low is not None,
                                spec.high_open and spec.high is not None)
            if kind == "bool":
                return Interval(0.0, 1.0, True)
            if kind == "enum":
                return Interval(0.0, len(spec.type.enum.members) - 1.0, True)
            return EVERYTHING if kind == "box" else None
        if op == "table":
            table = self.program.tables.get(n.attr("table"))
            if table is None:
                return EVERYTHING
            if table.result.kind == "enum":
                return Interval(0.0, len(table.result.enum.members) - 1.0, True)
            values = [float(r.result) for r in table.rows if not isinstance(r.result, str)]
            return Interval(min(values), max(values), all(v.is_integer() for v in values)) \
                if values else EVERYTHING
        if op in OPERATIONS:
            return OPERATIONS[op].value_range(n, args)
        return None if any(a is None for a in args) else EVERYTHING  # a string constant: no claim


_COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne"}
_SYMBOL = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq", "ne": "ne"}


# ---- printing IR as spec text ------------------------------------------------------------------------
class Printer:
    def __init__(self, program: ProgramIR):
        self.names = {node.id: name for name, node in program.outputs.items()}
        self.names.update({node.id: name for name, node in program.lets.items()})
        self.program = program

    def __call__(self, n: Node) -> str:  # noqa: C901 - one case per operation
        if n.id in self.names:
            return self.names[n.id]
        op, a = n.op, n.args
        if op == "input":
            return n.attr("name")
        if op == "const":
            if n.type.kind == "enum":
                return n.type.enum.members[int(n.attr("value"))]
            if n.type.kind == "bool":
                return "true" if n.attr("value") else "false"
            return fmt(n.attr("value"))
        if op == "str_const":
            return repr(n.attr("value")).replace("'", '"')
        if op in ("band", "element"):
            band = n.attr("band")
            return f"{self(a[0])}.{band}" if not band.isdigit() else f"{self(a[0])}[{band}]"
        if op == "lift":
            return self(a[0])
        infix = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%", "pow": "**",
                 "and": "and", "or": "or", **_SYMBOL}
        if op in infix:
            level = _PRECEDENCE[op]
            # The right operand of a left-associative operator needs parentheses at equal level.
            return (f"{self._wrap(a[0], level)} {infix[op]} "
                    f"{self._wrap(a[1], level + (0 if op == 'pow' else 0.5))}")
        if op == "neg":
            return f"-{self._wrap(a[0], 6)}"
        if op == "not":
            return f"not {self._wrap(a[0], 3)}"
        if op == "tag":
            return f"tag \"{n.attr('name')}\""
        if op == "tag_count":
            tag = next((name for name, node in self.program.outputs.items()
                        if node.op == "tag" and node.attr("name") == n.attr("name")), None)
            return f"count({tag})" if tag else f"count(tag \"{n.attr('name')}\")"
        if op == "length":
            return f"length({self(a[0])}, {n.attr('unit')})"
        if op in ("mentions", "mention_count"):
            terms = " | ".join(f'"{t}"' for t in n.attr("terms"))
            return f"{op}({self(a[0])}, {terms})"
        if op == "text_present" or op == "present":
            return f"present({self(a[0])})"
        if op == "to_number":
            return f"{self(a[0])} as {'int' if n.attr('integer') else 'float'}"
        if op == "to_enum":
            return f"{self(a[0])} as {n.attr('enum')}"
        if op.startswith("reduce_"):
            extra = f", {fmt(n.attr('q'))}" if op == "reduce_quantile" else ""
            return f"{op[7:]}({self(a[0])}{extra})"
        if op == "truth":
            return self(a[0])
        if op == "table":
            return f"{n.attr('table')}({', '.join(self(x) for x in a)})"
        if op in ("in_set", "in_str"):
            values = n.attr("values")
            if a[0].type.kind == "enum":
                shown = [a[0].type.enum.members[int(v)] for v in values]
            elif op == "in_str":
                shown = [f'"{v}"' for v in values]
            else:
                shown = [fmt(v) for v in values]
            return f"{self._wrap(a[0], 4)} in {{{', '.join(shown)}}}"
        return f"{op}({', '.join(self(x) for x in a)})"

    def _wrap(self, n: Node, outer: float) -> str:
        text = self(n)
        inner = _PRECEDENCE.get(n.op, 9) if n.id not in self.names else 9
        return f"({text})" if inner < outer else text


# Binding strength of operators when printed: higher binds tighter.
_PRECEDENCE = {"or": 1, "and": 2, "not": 3, "lt": 4, "le": 4, "gt": 4, "ge": 4, "eq": 4, "ne": 4,
               "in_set": 4, "in_str": 4, "add": 5, "sub": 5, "mul": 6, "div": 6, "mod": 6,
               "neg": 7, "pow": 8}


# ---- conditions: bounds that conjunctions put on one value -----------------------------------------------
@dataclass
class _Bounds:
    lo: float = -INF
    lo_strict: bool = False
    hi: float = INF
    hi_strict: bool = False
    allowed: frozenset | None = None  # exact values allowed (==, in {...})
    excluded: frozenset = frozenset()
    integral: bool = False

    def add(self, op: str, value: float) -> None:
        if op in ("gt", "ge") and (value > self.lo or (value == self.lo and op == "gt")):
            self.lo, self.lo_strict = value, op == "gt"
        elif op in ("lt", "le") and (value < self.hi or (value == self.hi and op == "lt")):
            self.hi, self.hi_strict = value, op == "lt"
        elif op == "eq":
            self.allowed = frozenset({value}) if self.allowed is None else self.allowed & {value}
        elif op == "ne":
            self.excluded = self.excluded | {value}

    def allow(self, values: frozenset) -> None:
        self.allowed = values if self.allowed is None else self.allowed & values

    def empty(self) -> bool:
        def inside(v: float) -> bool:
            return (v > self.lo or (v == self.lo and not self.lo_strict)) and (
                v < self.hi or (v == self.hi and not self.hi_strict)) and v not in self.excluded and (
                not self.integral or float(v).is_integer())

        if self.allowed is not None:
            return not any(inside(v) for v in self.allowed)
        if self.lo > self.hi or (self.lo == self.hi and (self.lo_strict or self.hi_strict)):
            return True
        if self.lo == self.hi:
            return not inside(self.lo)
        if self.integral:
            first = math.floor(self.lo) + 1 if self.lo_strict or not float(self.lo).is_integer() \
                else self.lo
            if math.isfinite(self.lo) and math.isfinite(self.hi):
                candidates = [v for v in range(int(first), int(math.floor(self.hi)) + 1)
                              if inside(v)] if self.hi - first < 64 else [None]
                return not candidates
        return False


def _atoms(node: Node) -> list[Node]:
    """The conjuncts of an `and` chain."""
    if node.op == "and":
        return _atoms(node.args[0]) + _atoms(node.args[1])
    return [node]


def _as_bound(atom: Node) -> tuple[Node, str, object] | None:
    """``value OP constant`` (either way round), or ``value in {...}``."""
    if atom.op in _COMPARISONS and atom.attr("soft", 0.0) == 0.0:
        left, right = atom.args
        if right.op == "const" and left.op != "const":
            return left, atom.op, right.attr("value")
        if left.op == "const" and right.op != "const":
            return right, _FLIP[atom.op], left.attr("value")
    if atom.op == "in_set":
        return atom.args[0], "in", frozenset(atom.attr("values"))
    return None


def _contradiction(atoms: list[Node], ranges: Ranges) -> list[Node] | None:
    """The atoms that cannot hold together, or None."""
    groups: dict[int, list[tuple[Node, str, object]]] = {}
    for atom in atoms:
        bound = _as_bound(atom)
        if bound is not None:
            groups.setdefault(bound[0].id, []).append((atom, bound[1], bound[2]))
    for items in groups.values():
        if len(items) < 2:
            continue
        subject = _as_bound(items[0][0])[0]
        r = ranges.of(subject)
        bounds = _Bounds(integral=bool(r and r.integral))
        if r is not None:
            bounds.add("ge", r.lo)
            bounds.add("le", r.hi)
        for _, op, value in items:
            if op == "in":
                bounds.allow(value)
            else:
                bounds.add(op, value)
        if bounds.empty():
            return [atom for atom, _, _ in items]
    return None


# ---- truth ranges ---------------------------------------------------------------------------------------
def _truth(node: Node, ranges: Ranges) -> tuple[float, float]:
    """The lowest and highest truth a condition can have (ignoring invalid values)."""
    op = node.op
    if op in _COMPARISONS:
        a, b = (ranges.of(x) for x in node.args)
        if a is None or b is None or node.args[0].type.kind in ("str",):
            return 0.0, 1.0
        soft = node.attr("soft", 0.0) or 0.0
        return _compare_truth(op, a, b, soft)
    if op == "and":
        (alo, ahi), (blo, bhi) = _truth(node.args[0], ranges), _truth(node.args[1], ranges)
        return alo * blo if node.attr("logic") != "lukasiewicz" else max(0.0, alo + blo - 1), \
            min(ahi, bhi) if node.attr("logic") == "godel" else (
                ahi * bhi if node.attr("logic") == "product" else max(0.0, ahi + bhi - 1))
    if op == "or":
        (alo, ahi), (blo, bhi) = _truth(node.args[0], ranges), _truth(node.args[1], ranges)
        return max(alo, blo), min(1.0, ahi + bhi)
    if op == "not":
        lo, hi = _truth(node.args[0], ranges)
        return 1.0 - hi, 1.0 - lo
    if op == "in_set":
        r = ranges.of(node.args[0])
        values = node.attr("values")
        if r is not None and not any(v in r for v in values):
            return 0.0, 0.0
        if r is not None and r.integral and math.isfinite(r.lo) and math.isfinite(r.hi) and \
                r.hi - r.lo < 256 and all(float(v) in values for v in range(int(r.lo), int(r.hi) + 1)):
            return 1.0, 1.0
        return 0.0, 1.0
    r = ranges.of(node)
    if r is None:
        return 0.0, 1.0
    return max(0.0, min(1.0, r.lo)), max(0.0, min(1.0, r.hi))


def _compare_truth(op: str, a: Interval, b: Interval, soft: float) -> tuple[float, float]:
    if op in ("gt", "ge"):
        return _compare_truth({"gt": "lt", "ge": "le"}[op], b, a, soft)
    if op in ("lt", "le"):
        # margin = b - a; holds when margin > 0 (lt) or >= 0 (le)
        lo_margin, hi_margin = b.lo - a.hi, b.hi - a.lo
        if soft > 0:
            def ramp(m: float) -> float:
                return max(0.0, min(1.0, 1.0 + m / soft))
            return ramp(lo_margin), ramp(hi_margin)
        strict = op == "lt"
        always = lo_margin > 0 or (not strict and lo_margin >= 0)
        if a.integral and b.integral and strict and lo_margin >= 1:
            always = True
        never = hi_margin < 0 or (strict and hi_margin <= 0)
        return (1.0 if always else 0.0), (0.0 if never else 1.0)
    if op == "eq":
        if soft > 0:
            gap = max(a.lo - b.hi, b.lo - a.hi, 0.0)
            hi = max(0.0, 1.0 - gap / soft)
            same = a.lo == a.hi == b.lo == b.hi
            return (1.0 if same else 0.0), hi
        disjoint = a.hi < b.lo or b.hi < a.lo
        point = a.lo == a.hi and b.lo == b.hi and a.lo == b.lo
        if a.lo == a.hi and b.integral and not float(a.lo).is_integer():
            disjoint = True
        if b.lo == b.hi and a.integral and not float(b.lo).is_integer():
            disjoint = True
        return (1.0 if point else 0.0), (0.0 if disjoint else 1.0)
    lo, hi = _compare_truth("eq", a, b, soft)
    return 1.0 - hi, 1.0 - lo


# ---- denominators --------------------------------------------------------------------------------------
def _linear(node: Node) -> tuple[dict[int, float], dict[int, Node], float] | None:
    """``sum(coef * leaf) + const`` for sums, differences and constant multiples, else None."""
    if node.op == "const":
        return {}, {}, node.attr("value")
    if node.op in ("add", "sub"):
        left, right = _linear(node.args[0]), _linear(node.args[1])
        if left is None or right is None:
            return None
        sign = 1.0 if node.op == "add" else -1.0
        coefs = dict(left[0])
        for key, value in right[0].items():
            coefs[key] = coefs.get(key, 0.0) + sign * value
        return coefs, {**left[1], **right[1]}, left[2] + sign * right[2]
    if node.op == "mul":
        for scalar, other in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
            if scalar.op == "const":
                inner = _linear(other)
                if inner is None:
                    return None
                k = scalar.attr("value")
                return {key: k * v for key, v in inner[0].items()}, inner[1], k * inner[2]
        return None
    if node.op == "neg":
        inner = _linear(node.args[0])
        return None if inner is None else ({k: -v for k, v in inner[0].items()}, inner[1], -inner[2])
    if node.op == "lift":
        return _linear(node.args[0])
    return {node.id: 1.0}, {node.id: node}, 0.0


def _zero_example(den: Node, ranges: Ranges, show: Printer) -> str | None:
    """An assignment of the denominator's leaves that makes it zero, as text."""
    linear = _linear(den)
    if linear is not None and linear[0]:
        coefs, leaves, const = linear
        keys = [k for k in coefs if coefs[k] != 0]
        if not keys:
            return None
        # Prefer 0 for the other leaves when their range allows it, else the value nearest to 0.
        chosen: dict[int, float] = {}
        for k in keys[1:]:
            r = ranges.of(leaves[k]) or EVERYTHING
            chosen[k] = min(max(0.0, r.lo), r.hi)
        free = keys[0]
        value = -(const + sum(coefs[k] * chosen[k] for k in keys[1:])) / coefs[free]
        r = ranges.of(leaves[free]) or EVERYTHING
        if value not in r or (r.integral and not float(value).is_integer()):
            return None
        chosen = {free: value, **chosen}
        return ", ".join(f"{show(leaves[k])} = {fmt(v)}" for k, v in chosen.items())
    return _sympy_zero(den, show)


class _NoExample(Exception):
    """A denominator too hard to solve quickly."""


def _size(node: Node, limit: int = 1000) -> int:
    seen: set[int] = set()
    stack = [node]
    while stack and len(seen) < limit:
        n = stack.pop()
        if n.id not in seen:
            seen.add(n.id)
            stack.extend(n.args)
    return len(seen)


def _sympy_zero(den: Node, show: Printer) -> str | None:
    import sympy  # only for non-linear denominators, which are rare: keeps `kdsl check` fast

    symbols: dict[int, sympy.Symbol] = {}
    names: dict[int, str] = {}

    def build(n: Node):
        if n.op == "const":
            return sympy.nsimplify(n.attr("value"))
        binary = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
                  "mul": lambda a, b: a * b, "div": lambda a, b: a / b, "pow": lambda a, b: a ** b}
        if n.op == "pow":
            # Only small whole powers: a fractional exponent turns into a rational power of high
            # order, which sympy can take minutes to solve. No example is better than a hang.
            exponent = n.args[1]
            if exponent.op != "const" or not float(exponent.attr("value")).is_integer() or \
                    abs(exponent.attr("value")) > 4:
                raise _NoExample
        if n.op in binary:
            return binary[n.op](build(n.args[0]), build(n.args[1]))
        if n.op == "neg":
            return -build(n.args[0])
        if n.op == "lift":
            return build(n.args[0])
        if n.id not in symbols:
            symbols[n.id] = sympy.Symbol(f"s{n.id}", real=True)
            names[n.id] = show(n)
        return symbols[n.id]

    if _size(den) > 40:  # a long formula: solving it could take long; give no example
        return None
    try:
        expr = build(den)
        if not symbols:
            return None
        first, *rest = symbols
        substituted = expr.subs({symbols[k]: 1 for k in rest})
        solutions = [s for s in sympy.solve(substituted, symbols[first]) if s.is_real]
    except Exception:  # noqa: BLE001 - any failure just means no example to show
        return None
    if not solutions:
        return None
    parts = [f"{names[first]} = {fmt(float(solutions[0]))}"] + [f"{names[k]} = 1" for k in rest]
    return ", ".join(parts)


# ---- the pass ---------------------------------------------------------------------------------------------
def analyze(program: ProgramIR, sink: DiagnosticSink) -> None:
    """Report rules that cannot hold or always hold, dead `when`s and zero denominators."""
    ranges = Ranges(program)
    show = Printer(program)
    for rule in program.rules:
        _check_rule(rule, ranges, show, sink)
    seen: set[int] = set()
    exposed = _unguarded_divisions(program)
    for node in program.live_nodes():
        if node.op in ("div", "mod") and node.id not in seen and node.id in exposed:
            seen.add(node.id)
            den = node.args[1]
            r = ranges.of(den)
            if r is None or 0.0 not in r or (r.lo == r.hi == 0.0 and den.op == "const"):
                if den.op == "const" and den.attr("value") == 0:
                    sink.error("KD096", f"division by zero: `{show(node)}`", node.span)
                continue
            example = _zero_example(den, ranges, show)
            where = f", e.g. when {example}" if example else ""
            span, notes = node.span, []
            site = program.call_sites.get(node.id)
            if site is not None and site.file != node.span.file:
                # Inside an imported def: say it where this spec calls it, the library line a note.
                span, notes = site, [f"the division is in the imported def, at {node.span}"]
            sink.warning("KD097", f"denominator `{show(den)}` can be zero{where}", span, *notes,
                         "there the value is invalid (a masked safe division), so rules using it "
                         "fail unless they say `invalid pass` or `invalid skip`")


def _nonzero_when(cond: Node, holds: bool) -> set[int]:
    """Nodes that cannot be zero where ``cond`` holds (``holds``) or fails (not ``holds``):
    ``x != 0``, ``x > 0``, ``x < 0`` guard ``x`` where they hold; ``x == 0`` and ``a == b``
    guard ``x`` and ``a - b`` where they fail; ``and`` guards with both sides where it holds."""
    def zero(node: Node) -> bool:
        return node.op == "const" and node.attr("value") == 0
    out: set[int] = set()
    if cond.op == "and" and holds:
        return _nonzero_when(cond.args[0], True) | _nonzero_when(cond.args[1], True)
    if cond.op == "or" and not holds:
        return _nonzero_when(cond.args[0], False) | _nonzero_when(cond.args[1], False)
    if cond.op == "not":
        return _nonzero_when(cond.args[0], not holds)
    if cond.op not in _COMPARISONS or len(cond.args) != 2 or cond.attr("soft"):
        return out
    a, b = cond.args
    differs = (cond.op == "ne" and holds) or (cond.op == "eq" and not holds)
    if differs:
        out |= {a.id} if zero(b) else set()
        out |= {b.id} if zero(a) else set()
        out |= {("sub", a.id, b.id), ("sub", b.id, a.id)}  # a - b and b - a
    if holds and cond.op in ("gt", "lt"):  # x > 0, 0 < x, x < 0, 0 > x, a > b (a - b is not 0)
        out |= {a.id} if zero(b) else set()
        out |= {b.id} if zero(a) else set()
        out |= {("sub", a.id, b.id), ("sub", b.id, a.id)}
    return out


def _unguarded_divisions(program: ProgramIR) -> set[int]:
    """Divisions reachable from a rule, `when`, let or output without an enclosing `if` (or the
    rule's `when`) that rules out a zero denominator: `if total == 0 then 1 else x / total`."""
    found: set[int] = set()
    visited: set[tuple] = set()

    def guarded(den: Node, safe: frozenset) -> bool:
        if den.id in safe:
            return True
        return den.op == "sub" and ("sub", den.args[0].id, den.args[1].id) in safe

    def visit(node: Node, safe: frozenset) -> None:
        key = (node.id, safe)
        if key in visited:
            return
        visited.add(key)
        if node.op in ("div", "mod") and not guarded(node.args[1], safe):
            found.add(node.id)
        if node.op == "if":
            cond, then, otherwise = node.args
            visit(cond, safe)
            visit(then, safe | _nonzero_when(cond, True))
            visit(otherwise, safe | _nonzero_when(cond, False))
            return
        for arg in node.args:
            visit(arg, safe)

    for rule in program.rules:
        guard = frozenset(_nonzero_when(rule.when, True)) if rule.when is not None else frozenset()
        visit(rule.body, guard)
        if rule.when is not None:
            visit(rule.when, frozenset())
    for node in [*program.lets.values(), *program.outputs.values()]:
        visit(node, frozenset())
    return found


def _check_rule(rule: RuleIR, ranges: Ranges, show: Printer, sink: DiagnosticSink) -> None:
    body = rule.body
    if rule.when is not None:
        wlo, whi = _truth(rule.when, ranges)
        if whi < 0.5:
            sink.warning("KD098", f"rule `{rule.name}` never applies: `{show(rule.when)}` never holds"
                         f"{_reason(rule.when, ranges, show)}", rule.span)
            return
        clash = _contradiction(_atoms(rule.when), ranges)
        if clash is not None:
            sink.warning("KD098", f"rule `{rule.name}` never applies: {_clash_text(clash, show)}", rule.span)
            return
    lo, hi = _truth(body, ranges)
    soft = rule.soft is not None
    if hi <= 0.0:  # with `soft`, not even the ramp below the threshold is ever reached
        sink.error("KD099", f"rule `{rule.name}` can never be satisfied: `{show(body)}` never holds"
                   f"{_reason(body, ranges, show)}", rule.span)
        return
    clash = _contradiction(_atoms(body), ranges)
    if clash is not None:
        message = f"rule `{rule.name}` can never be satisfied: {_clash_text(clash, show)}"
        (sink.warning if soft else sink.error)("KD099", message, rule.span)
        return
    if rule.when is not None:
        clash = _contradiction(_atoms(rule.when) + _atoms(body), ranges)
        if clash is not None:
            sink.error("KD099", f"rule `{rule.name}` can never be satisfied when it applies: "
                       f"{_clash_text(clash, show)}", rule.span)
            return
    if lo >= 1.0:
        sink.warning("KD100", f"rule `{rule.name}` always holds (whenever its values are present): "
                     f"`{show(body)}`{_reason(body, ranges, show)}", rule.span,
                     "it adds the same amount to its level for every completion")


def _clash_text(atoms: list[Node], show: Printer) -> str:
    parts = [f"`{show(a)}`" for a in atoms]
    joined = " and ".join(parts) if len(parts) == 2 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{joined} cannot all hold" if len(parts) > 2 else f"{joined} cannot both hold"


def _reason(node: Node, ranges: Ranges, show: Printer) -> str:
    """`: x lies in 0..1` for the first comparison operand whose range decides the condition."""
    for atom in _atoms(node):
        if atom.op in _COMPARISONS or atom.op == "in_set":
            for operand in atom.args:
                r = ranges.of(operand)
                if operand.op == "const" or r is None or (r.lo == -INF and r.hi == INF):
                    continue
                return f" ({show(operand)} {_describe(r)})"
    return ""


def _describe(r: Interval) -> str:
    whole = "a whole number " if r.integral else ""
    if r.hi == INF:
        return f"is {whole}at least {fmt(r.lo)}"
    if r.lo == -INF:
        return f"is {whole}at most {fmt(r.hi)}"
    if r.lo == r.hi:
        return f"is always {fmt(r.lo)}"
    return f"is {whole}in {fmt(r.lo)}..{fmt(r.hi)}" if whole else f"lies in {fmt(r.lo)}..{fmt(r.hi)}"
