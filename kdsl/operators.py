"""The operations of the IR, one ``OpDef`` entry each.

An entry holds everything the stages after type checking need to know about an operation, so
none of them has a case of its own for it:

- ``phase``: ``"span"`` (text phase: it finds character spans: the completion, a tag, a regex and
  its groups), ``"value"`` (text phase: it reads a value and a validity mask out of spans, the
  boundary to the tensor phase), ``"judged"`` (a model's value, asked for between the phases
  where it can change the reward; its text-phase line records what the model is shown) or
  ``"tensor"`` (torch over the batch);
- ``emit``: the call the generated module makes, given the node and what code generation offers
  (``Operands``: literals, its operands' generated names);
- ``runtime``: the functions that call may use: methods of ``kdsl.runtime.execute.Extraction``
  in the text phase, functions of ``kdsl.runtime.ops`` in the tensor phase (checked by a test,
  so an entry cannot name one that does not exist);
- ``value_range``: the values it can take given its operands' ranges, for interval analysis
  (``kdsl.analysis.intervals``);
- ``missing``: why it has no value in a row, as ``kdsl explain`` says it (``None``: the generic
  sentence).

The leaves and declarations' calls (``input``, ``const``, ``str_const``, ``table``) are not
operations: each stage reads them from the program. What a spec may write, and the type rule that
makes a call into one of these nodes, is in ``kdsl.semantic.builtins`` (a builtin may lower to several
operations, e.g. ``present()`` to ``text_present`` or to ``present``). The reference interpreter
in ``tests/`` gives every builtin its meaning independently; ``tests/test_operators.py`` checks
that every entry is complete. This module stays free of torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from kdsl.analysis.interval import (
    COUNT,
    EVERYTHING,
    INF,
    NONNEGATIVE,
    Interval,
    hull,
    products,
    safe,
)

if TYPE_CHECKING:
    from kdsl.ir import Node

Ranges = list  # the operands' intervals, in order (None: not a number)


class Operands(Protocol):
    """What code generation gives an ``emit`` function."""

    def lit(self, value) -> str: ...  # a Python literal of a value from the spec

    def quote(self, text: str) -> str: ...  # spec text made safe for a comment

    def spans(self, node: Node, position: int = 0) -> str: ...  # the span list of an operand

    def texts(self, node: Node, position: int) -> str: ...  # a text operand: spans or a `str` column

    def regex_groups(self, node: Node) -> tuple: ...  # the groups of a regex that something reads

    def pairs(self, node: Node) -> str: ...  # the operands' values and masks, `x1, m1, x2, m2`

    def string_id(self, value: str) -> int: ...  # a string constant's id in the program's table


class Words(Protocol):
    """What ``kdsl explain`` gives a ``missing`` function."""

    def label(self, node: Node) -> str: ...  # how the spec writes a node

    def shown(self, node: Node) -> str: ...  # the quoted excerpt of the text a node reads

    def where(self, node: Node) -> str: ...  # " in `...` (line N)" where the value was lost inside

    def asked(self, node: Node) -> dict | None: ...  # what a judged value's model was asked and said


@dataclass(frozen=True)
class OpDef:
    name: str
    phase: Literal["span", "value", "judged", "tensor"]
    emit: Callable[[Node, Operands], str]
    runtime: tuple[str, ...]
    value_range: Callable[[Node, Ranges], Interval | None]
    missing: Callable[[Node, Words], str] | None = None


TRUTH = Interval(0.0, 1.0, True)


def _always(found: Interval | None) -> Callable[[Node, Ranges], Interval | None]:
    return lambda node, args: found


def _method(method: str, *attrs: str) -> Callable[[Node, Operands], str]:
    """``ex.METHOD(spans of the first operand, the node's ATTRS as literals...)``."""
    def emit(n: Node, o: Operands) -> str:
        return f"ex.{method}({', '.join([o.spans(n), *(o.lit(n.attr(a)) for a in attrs)])})"
    return emit


def _to_enum(n: Node, o: Operands) -> str:
    if n.attr("enum") == "bool":
        return f"ex.to_bool({o.spans(n)}, BOOL_LOOKUP)"
    return f"ex.to_enum({o.spans(n)}, ENUM_LOOKUP[{o.lit(n.attr('enum'))}])"


def _enum_range(n: Node, args: Ranges) -> Interval:
    enum = n.type.enum
    return TRUTH if enum is None else Interval(0.0, len(enum.members) - 1.0, True)


def _enum_missing(n: Node, say: Words) -> str:
    if n.attr("enum") == "bool":
        return f"{say.shown(n)} is not yes, no, true or false"
    return f"{say.shown(n)} names no {n.attr('enum')} member or synonym"


def _number_missing(n: Node, say: Words) -> str:
    return f"no {'whole number' if n.attr('integer') else 'number'} in {say.shown(n)}"


def _compare_texts(n: Node, o: Operands) -> str:
    mode = f", {o.lit(n.attr('mode'))}" if n.op == "math_verify" else ""
    return f"ex.{n.op}({o.spans(n)}, {o.texts(n, 1)}{mode})"


_TEXT_ENTRIES = (
    # spans
    OpDef("completion", "span", lambda n, o: "ex.whole()", ("whole",), _always(EVERYTHING)),
    OpDef("tag", "span", _method("tag", "name", "position"), ("tag",), _always(EVERYTHING)),
    OpDef("regex", "span",
          lambda n, o: f"ex.regex({o.spans(n)}, {o.lit(n.attr('pattern'))}, {o.lit(o.regex_groups(n))})",
          ("regex",), _always(EVERYTHING)),
    # a group of a regex's match: an element of what the regex gave, no call of its own
    OpDef("regex_group", "span", lambda n, o: f"{o.spans(n)}[{o.lit(n.attr('group'))}]", (),
          _always(EVERYTHING)),
    # values read from spans
    OpDef("text_present", "value", _method("present"), ("present",), _always(TRUTH)),
    OpDef("tag_count", "value", _method("tag_count", "name"), ("tag_count",), _always(COUNT)),
    OpDef("to_number", "value", lambda n, o: f"ex.to_number({o.spans(n)}, integer={n.attr('integer')})",
          ("to_number",), lambda n, args: Interval(-INF, INF, bool(n.attr("integer"))),
          _number_missing),
    OpDef("to_enum", "value", _to_enum, ("to_enum", "to_bool"), _enum_range, _enum_missing),
    OpDef("to_str", "value", _method("to_str"), ("to_str",), _always(EVERYTHING)),
    OpDef("to_box", "value", _method("to_box"), ("to_box",), _always(EVERYTHING),
          lambda n, say: f"{say.shown(n)} does not give four coordinates x1, y1, x2, y2 "
          "(x1 <= x2, y1 <= y2)"),
    OpDef("to_boxes", "value", _method("to_boxes"), ("to_boxes",), _always(EVERYTHING)),
    OpDef("mentions", "value",
          lambda n, o: f"ex.mentions({o.spans(n)}, {o.lit(n.attr('terms'))}, count=False)",
          ("mentions",), _always(TRUTH)),
    OpDef("mention_count", "value",
          lambda n, o: f"ex.mentions({o.spans(n)}, {o.lit(n.attr('terms'))}, count=True)",
          ("mentions",), _always(COUNT)),
    OpDef("length", "value", _method("length", "unit"), ("length",), _always(COUNT)),
    OpDef("repetition", "value", lambda n, o: f"ex.repetition({o.spans(n)}, {n.attr('n')})",
          ("repetition",), _always(Interval(0.0, 1.0))),
    OpDef("choice", "value", _method("choice", "letters"), ("choice",), _always(EVERYTHING),
          lambda n, say: f"no letter of {n.attr('letters')} is given in {say.shown(n)}"),
    OpDef("matches", "value", _method("matches", "pattern"), ("matches",), _always(TRUTH)),
    OpDef("match_count", "value", _method("match_count", "pattern"), ("match_count",), _always(COUNT)),
    OpDef("occurrences", "value", _method("occurrences", "literal"), ("occurrences",), _always(COUNT)),
    OpDef("normalize", "value", lambda n, o: f"ex.normalized({o.texts(n, 0)})", ("normalized",),
          _always(EVERYTHING)),
    OpDef("math_verify", "value", _compare_texts, ("math_verify",), _always(TRUTH)),
    OpDef("similarity", "value", _compare_texts, ("similarity",), _always(Interval(-1.0, 1.0))),
)



# ---- the tensor phase ------------------------------------------------------------------------------
def _call(function: str, *extra: Callable[[Node, Operands], str]) -> Callable[[Node, Operands], str]:
    """``ops.FUNCTION(operands' values and masks, EXTRA...)``."""
    def emit(n: Node, o: Operands) -> str:
        return f"ops.{function}({', '.join([o.pairs(n), *(e(n, o) for e in extra)])})"
    return emit


def _attr(name: str, as_float: bool = False) -> Callable[[Node, Operands], str]:
    return lambda n, o: o.lit(float(n.attr(name)) if as_float else n.attr(name))


def _raw(name: str) -> Callable[[Node, Operands], str]:
    return lambda n, o: str(n.attr(name))


def _dtype(n: Node, o: Operands) -> str:
    return "dt"


def _strict(rule: Callable[..., Interval]) -> Callable[[Node, Ranges], Interval | None]:
    """A range computed from every operand's: none where an operand is not a number."""
    return lambda n, args: None if any(a is None for a in args) else rule(*args)


def _first_or_everything(n: Node, args: Ranges) -> Interval:
    """Selecting or summarising elements keeps the range of each (a vector's range holds for each)."""
    return args[0] if args and args[0] is not None else EVERYTHING


def _abs(a: Interval) -> Interval:
    if a.lo >= 0:
        return a
    if a.hi <= 0:
        return Interval(-a.hi, -a.lo, a.integral)
    return Interval(0.0, max(-a.lo, a.hi), a.integral)


def _add(a: Interval, b: Interval) -> Interval:
    # an end of the sum is reached only where both ends are
    return Interval(a.lo + b.lo, a.hi + b.hi, a.integral and b.integral, a.lo_open or b.lo_open,
                    a.hi_open or b.hi_open)


def _div(a: Interval, b: Interval) -> Interval:
    if b.lo > 0 or b.hi < 0:
        inverse = Interval(1.0 / b.hi if b.hi not in (0, INF, -INF) else 0.0,
                           1.0 / b.lo if b.lo not in (0, INF, -INF) else 0.0)
        return products(a, Interval(min(inverse.lo, inverse.hi), max(inverse.lo, inverse.hi)))
    return EVERYTHING


def _mod(a: Interval, b: Interval) -> Interval:
    bound = max(abs(b.lo), abs(b.hi))
    # `x % 0` has no value (it is invalid, and reported as a division by zero): no claim
    return Interval(-bound, bound) if 0 < bound < INF else EVERYTHING


def _rounding(f: Callable[[float], float]) -> Callable[[Interval], Interval]:
    def rule(a: Interval) -> Interval:
        lo = a.lo if not math.isfinite(a.lo) else float(f(a.lo))
        hi = a.hi if not math.isfinite(a.hi) else float(f(a.hi))
        return Interval(lo, hi, True)
    return rule


def _log(a: Interval) -> Interval:
    return Interval(-INF if a.lo <= 0 else math.log(a.lo),
                    -INF if a.hi <= 0 else (INF if a.hi == INF else math.log(a.hi)))


def _reduce_sum(n: Node, args: Ranges) -> Interval:
    a = args[0] or EVERYTHING
    return NONNEGATIVE if a.lo >= 0 else (Interval(-INF, 0.0) if a.hi <= 0 else EVERYTHING)


def _division_by_zero(n: Node, say: Words) -> str:
    return f"a division by zero: `{say.label(n.args[1])}` is 0{say.where(n)}"


def _nothing_to_summarise(n: Node, say: Words) -> str:
    return f"`{say.label(n)}` has no valid value to summarise"


def _partial(reason: str) -> Callable[[Node, Words], str]:
    return lambda n, say: reason + say.where(n)


def _band(n: Node, o: Operands) -> str:
    nodata = n.args[0].type.nodata
    nodata = None if nodata is None else float(nodata)
    return f"ops.band({o.pairs(n)}, {n.attr('index')}, {o.lit(nodata)})  # {o.quote(n.attr('band'))}"


def _in_str(n: Node, o: Operands) -> str:
    ids = tuple(o.string_id(v) for v in n.attr("values"))
    return f"ops.in_set({o.pairs(n)}, {o.lit(ids)}, dt)"


def _arith(name: str, rule: Callable[..., Interval], missing=None) -> OpDef:
    return OpDef(name, "tensor", _call(name), (name,), _strict(rule), missing)


def _comparison(name: str) -> OpDef:
    return OpDef(name, "tensor", _call(name, _attr("soft", as_float=True), _dtype), (name,),
                 _always(TRUTH))


def _logic(name: str) -> OpDef:
    return OpDef(name, "tensor", _call(f"{name}_", _attr("logic")), (f"{name}_",), _always(TRUTH))


def _reduction(name: str, value_range, *extra) -> OpDef:
    return OpDef(name, "tensor", _call(name, *extra), (name,), value_range, _nothing_to_summarise)


_TENSOR_ENTRIES = (
    OpDef("lift", "tensor", _call("lift", _raw("dims")), ("lift",), _first_or_everything),
    OpDef("band", "tensor", _band, ("band",), _first_or_everything),
    OpDef("element", "tensor",
          lambda n, o: f"ops.select({o.pairs(n)}, {n.attr('index')})  # {o.quote(n.attr('band'))}",
          ("select",), _first_or_everything),
    _arith("add", _add),
    _arith("sub", lambda a, b: Interval(a.lo - b.hi, a.hi - b.lo, a.integral and b.integral)),
    _arith("mul", products),
    _arith("div", _div, _division_by_zero),
    _arith("mod", _mod, _division_by_zero),
    _arith("pow", lambda a, b: EVERYTHING, _partial("a power with no real value, or out of float range")),
    _arith("min", lambda a, b: Interval(min(a.lo, b.lo), min(a.hi, b.hi), a.integral and b.integral)),
    _arith("max", lambda a, b: Interval(max(a.lo, b.lo), max(a.hi, b.hi), a.integral and b.integral)),
    _arith("neg", lambda a: Interval(-a.hi, -a.lo, a.integral)),
    _arith("abs", _abs),
    _arith("sqrt", lambda a: Interval(math.sqrt(max(a.lo, 0.0)), math.sqrt(a.hi) if a.hi >= 0 else 0.0),
           _partial("the square root of a negative number")),
    _arith("log", _log, _partial("the logarithm of a number that is not positive")),
    _arith("exp", lambda a: Interval(safe(math.exp, a.lo, 0.0), safe(math.exp, a.hi, INF)),
           _partial("an exponential out of float range")),
    _arith("floor", _rounding(math.floor)),
    _arith("ceil", _rounding(math.ceil)),
    _arith("round", _rounding(round)),
    OpDef("cos", "tensor", _call("cos"), ("cos",), _always(Interval(-1.0, 1.0))),
    OpDef("sin", "tensor", _call("sin"), ("sin",), _always(Interval(-1.0, 1.0))),
    OpDef("default", "tensor", _call("default"), ("default",), _strict(hull)),
    OpDef("if", "tensor", _call("if_"), ("if_",), _strict(lambda c, a, b: hull(a, b))),
    _comparison("lt"), _comparison("le"), _comparison("gt"), _comparison("ge"), _comparison("eq"),
    _comparison("ne"),
    OpDef("in_set", "tensor", _call("in_set", lambda n, o: o.lit(tuple(n.attr("values"))), _dtype),
          ("in_set",), _always(TRUTH)),
    OpDef("in_str", "tensor", _in_str, ("in_set",), _always(TRUTH)),
    _logic("and"), _logic("or"), _logic("not"),
    OpDef("present", "tensor", _call("present", _dtype), ("present",), _always(TRUTH)),
    OpDef("truth", "tensor", _call("truth"), ("truth",), _always(Interval(0.0, 1.0))),
    OpDef("batch_min", "tensor", _call("batch_min"), ("batch_min",), _first_or_everything),
    OpDef("batch_max", "tensor", _call("batch_max"), ("batch_max",), _first_or_everything),
    OpDef("batch_mean", "tensor", _call("batch_mean"), ("batch_mean",), _first_or_everything),
    _reduction("reduce_mean", _first_or_everything),
    _reduction("reduce_min", _first_or_everything),
    _reduction("reduce_max", _first_or_everything),
    _reduction("reduce_quantile", _first_or_everything, _attr("q", as_float=True)),
    _reduction("reduce_sum", _reduce_sum),
    _reduction("reduce_std", _always(NONNEGATIVE)),
    _reduction("reduce_frac", _always(Interval(0.0, 1.0))),
    OpDef("area", "tensor", _call("area"), ("area",), _always(NONNEGATIVE)),
    OpDef("iou", "tensor", _call("iou"), ("iou",), _always(Interval(0.0, 1.0)),
          _partial("the boxes have no area together")),
    OpDef("box_present", "tensor", _call("box_present"), ("box_present",), _always(TRUTH)),
    OpDef("boxes_present", "tensor", _call("boxes_present"), ("boxes_present",), _always(TRUTH)),
    OpDef("box_count", "tensor", _call("box_count"), ("box_count",), _always(COUNT)),
    OpDef("matched_boxes", "tensor", _call("matched_boxes", _attr("threshold", as_float=True)),
          ("matched_boxes",), _always(COUNT)),
)

# ---- values a model gives, between the two phases -----------------------------------------------
def _show(n: Node, o: Operands) -> str:
    """The text phase's line for a judged value: what the model is shown, part by part (a text
    of the completion, or a `str` column), recorded for ``kdsl.runtime.judging`` to ask about."""
    parts, position = [], 0
    for label, column in n.attr("parts"):
        if column:
            texts = f"ex.column_texts({o.lit(column)})"
        else:
            texts = f"ex.span_texts({o.spans(n, position)})"
            position += 1
        parts.append(f"({o.lit(label)}, {texts})")
    return f"ex.show({n.id}, ({', '.join(parts)},))"


def _not_judged(n: Node, say: Words) -> str:
    model, what = n.attr("model"), ("grade" if n.op == "rubric" else "score")
    record = say.asked(n) or {}
    if record.get("status") == "skipped":
        return f"`{model}` was not asked: its {what} could not change the reward here"
    if record.get("error"):
        return f"`{model}` gave no {what}: {record['error']}"
    return f"`{model}` gave no {what}"


_JUDGED_ENTRIES = (
    OpDef("rubric", "judged", _show, ("show",), _always(TRUTH), _not_judged),
    OpDef("rm_score", "judged", _show, ("show",), _always(EVERYTHING), _not_judged),
)

OPERATIONS: dict[str, OpDef] = {op.name: op for op in (*_TEXT_ENTRIES, *_TENSOR_ENTRIES,
                                                        *_JUDGED_ENTRIES)}
TEXT_OPS: dict[str, OpDef] = {name: op for name, op in OPERATIONS.items()
                              if op.phase in ("span", "value")}
JUDGED_OPS: dict[str, OpDef] = {name: op for name, op in OPERATIONS.items() if op.phase == "judged"}
