"""The builtin functions of the language, one ``Builtin`` entry each.

An entry says what a spec may write and what it means: the name, the usage shown in messages and
in ``kdsl describe`` (``usage``, ``meaning``), what kind of value it gives (``result``: a number,
a truth value, text, or the type of its operands) and its type rule (``lower``): a function that
checks the arguments and returns the IR node the call becomes. The checker looks a call up here
and has no case of its own for any builtin; what each IR operation then does at run time, in
interval analysis and in ``kdsl explain`` is in ``kdsl.operators``.

The type rules are given the checker (``c``) and use its public helpers (``lower``, ``node``,
``error``, ``text_arg``, ...). This module stays free of torch: ``kdsl check`` imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from kdsl import types as T
from kdsl.errors import Span, did_you_mean
from kdsl.frontend import ast

if TYPE_CHECKING:  # the checker imports this module; its type is only named here
    from kdsl.ir import Node
    from kdsl.semantic.lower import Lowering

LENGTH_UNITS = ("chars", "words", "tokens")
MATH_VERIFY_MODES = ("default", "open-r1-length")

Result = Literal["number", "truth", "text", "value"]


@dataclass(frozen=True)
class Call:
    """One call of a builtin as the checker meets it: the name, the argument expressions, where it
    is written and the checker's lowering context (scope and def parameters)."""

    name: str
    args: tuple
    span: Span
    ctx: object

    def arity(self, c: Lowering, *counts: int) -> None:
        if len(self.args) not in counts:
            want = " or ".join(str(n) for n in counts)
            raise c.error("KD083", f"{self.name}() takes {want} argument{'s' if counts != (1,) else ''}, "
                          f"got {len(self.args)}", self.span)


@dataclass(frozen=True)
class Builtin:
    name: str
    usage: str  # how it is written, e.g. `mentions(t, "a" | "b")`
    meaning: str  # what it gives, in the words of docs/language.md
    result: Result
    lower: Callable[[Lowering, Call], Node]

    @property
    def sentence(self) -> str:
        """The glossary line of ``kdsl describe``."""
        return f"{self.usage}: {self.meaning}"


# ---- type rules ----------------------------------------------------------------------------------
def _present(c: Lowering, call: Call) -> Node:
    call.arity(c, 1)
    x = c.lower(call.args[0], call.ctx)
    if x.type.is_text:
        return c.node("text_present", (c.as_text(x),), T.BOOL, call.span)
    if x.type.kind == "boxes":
        return c.node("boxes_present", (x,), T.BOOL, call.span)
    if x.type.kind == "box":
        return c.node("box_present", (x,), T.BOOL, call.span)
    return c.node("present", (x,), T.BOOL if not x.type.extra_dims else x.type, call.span)


def _count(c: Lowering, call: Call) -> Node:
    call.arity(c, 1)
    x = c.lower(call.args[0], call.ctx)
    if x.op != "tag":
        raise c.error("KD086", "count() counts the occurrences of a tag, e.g. count(answer) for "
                      "`answer: tag \"answer\"`", call.args[0].span)
    return c.node("tag_count", x.args, T.INT, call.span, name=x.attr("name"))


def _length(c: Lowering, call: Call) -> Node:
    call.arity(c, 1, 2)
    text = c.text_arg(call.args[0], call.ctx)
    unit = "chars"
    if len(call.args) == 2:
        unit_expr = call.args[1]
        unit = unit_expr.id if isinstance(unit_expr, ast.Name) else (
            unit_expr.value if isinstance(unit_expr, ast.String) else None)
        if unit not in LENGTH_UNITS:
            raise c.error("KD086", f"length() counts {', '.join(LENGTH_UNITS)}"
                          f"{did_you_mean(str(unit), LENGTH_UNITS)}", unit_expr.span)
    return c.node("length", (text,), T.INT, call.span, unit=unit)


def _mentions(c: Lowering, call: Call) -> Node:
    call.arity(c, 2)
    text = c.text_arg(call.args[0], call.ctx)
    terms = call.args[1]
    if isinstance(terms, ast.String):
        values = (terms.value,)
    elif isinstance(terms, ast.Strings):
        values = terms.values
    else:
        raise c.error("KD086", f"{call.name}() takes the terms as strings: \"a\" | \"b\"", terms.span)
    if any(not v.strip() for v in values):
        raise c.error("KD086", "an empty term can never be mentioned", terms.span)
    out = T.BOOL if call.name == "mentions" else T.INT
    return c.node(call.name, (text,), out, call.span, terms=tuple(values))


def _repetition(c: Lowering, call: Call) -> Node:
    call.arity(c, 1, 2)
    text = c.text_arg(call.args[0], call.ctx)
    n = 3
    if len(call.args) == 2:
        value = c.literal_number(call.args[1], call.ctx)
        if value is None or not float(value).is_integer() or value < 1:
            raise c.error("KD086", "repetition() takes the n-gram size as a whole number >= 1",
                          call.args[1].span)
        n = int(value)
    return c.node("repetition", (text,), T.FLOAT, call.span, n=n)


def _choice(c: Lowering, call: Call) -> Node:
    call.arity(c, 2)
    text = c.text_arg(call.args[0], call.ctx)
    letters_expr = call.args[1]
    if not isinstance(letters_expr, ast.String) or not letters_expr.value:
        raise c.error("KD086", "choice() takes the letters as a string, e.g. choice(answer, \"ABCD\")",
                      letters_expr.span)
    letters = letters_expr.value
    if len(set(letters)) != len(letters) or not letters.isalnum():
        raise c.error("KD086", "choice() letters must be distinct letters or digits", letters_expr.span)
    return c.node("choice", (text,), T.STR, call.span, letters=letters)


def _number(c: Lowering, call: Call) -> Node:
    call.arity(c, 1)
    return c.convert_text(c.text_arg(call.args[0], call.ctx), "float", call.ctx.scope, call.span)


def _pattern(c: Lowering, call: Call) -> Node:
    """matches() and match_count(): a regex written as a string, compiled here only to report a
    bad pattern at check time."""
    call.arity(c, 2)
    text = c.text_arg(call.args[0], call.ctx)
    pattern = call.args[1]
    if not isinstance(pattern, ast.String):
        raise c.error("KD086", f"{call.name}() takes a regex written as a string", pattern.span)
    c.lower_regexextractor(ast.RegexExtractor(pattern.value, span=pattern.span), call.ctx, None)
    out = T.BOOL if call.name == "matches" else T.INT
    return c.node(call.name, (text,), out, call.span, pattern=pattern.value)


def _occurrences(c: Lowering, call: Call) -> Node:
    call.arity(c, 2)
    text = c.text_arg(call.args[0], call.ctx)
    literal = call.args[1]
    if not isinstance(literal, ast.String) or not literal.value:
        raise c.error("KD086", "occurrences() takes the text to count as a non-empty string, "
                      "e.g. occurrences(completion, \"<think>\\n\")", literal.span)
    return c.node("occurrences", (text,), T.INT, call.span, literal=literal.value)


def _normalize(c: Lowering, call: Call) -> Node:
    call.arity(c, 1)
    operands, column = c.text_or_column(
        call.args[0], call.ctx, "normalize() takes text from the completion or a `str` input column")
    return c.node("normalize", operands, T.STR, call.span, column=column)


def _compare_texts(c: Lowering, call: Call) -> Node:
    """math_verify() and similarity(): the completion's text against a reference text."""
    name, args = call.name, call.args
    call.arity(c, 2, 3) if name == "math_verify" else call.arity(c, 2)
    text = c.text_arg(args[0], call.ctx)
    other, column = c.text_or_column(
        args[1], call.ctx, f"{name}() compares the text with a reference text: a `str` input "
        "column or text from the completion")
    attrs: dict = {"column": column}
    if name == "math_verify":
        attrs["mode"] = "default"
        if len(args) == 3:
            mode = args[2]
            if not isinstance(mode, ast.String) or mode.value not in MATH_VERIFY_MODES:
                raise c.error("KD086", "math_verify() takes a mode: "
                              + " or ".join(f'"{m}"' for m in MATH_VERIFY_MODES), mode.span)
            attrs["mode"] = mode.value
    out = T.BOOL if name == "math_verify" else T.FLOAT
    return c.node(name, (text, *other), out, call.span, **attrs)


def _batch_reduction(c: Lowering, call: Call) -> Node:
    call.arity(c, 1)
    x = c.lower(call.args[0], call.ctx)
    if not (x.type.is_numeric and x.type.extra_dims == 0):
        raise c.error("KD087", f"{call.name}() reduces one number per sample over the batch, not "
                      f"{x.type}", call.args[0].span)
    return c.node(call.name, (x,), T.FLOAT, call.span)


def _unary_math(c: Lowering, call: Call) -> Node:
    call.arity(c, 1)
    x = c.lower(call.args[0], call.ctx)
    c.require_numeric(x, call.args[0].span, f"{call.name}()")
    whole = call.name in ("floor", "ceil", "round") or (call.name == "abs" and x.type.kind == "int")
    out = x.type if x.type.extra_dims else (T.INT if whole else T.FLOAT)
    return c.node(call.name, (x,), out, call.span)


def _extreme(c: Lowering, call: Call) -> Node:
    """min() and max(): of one vector or field, its extreme element; of several values, elementwise."""
    name, args = call.name, call.args
    if len(args) == 1:
        x = c.lower(args[0], call.ctx)
        if x.type.kind not in ("vector", "field") or x.type.element == "enum":
            raise c.error("KD087", f"{name}() of one argument reduces a vector or per-pixel "
                          f"numbers; this is {x.type}", args[0].span)
        return c.node(f"reduce_{name}", (x,), T.FLOAT, call.span)
    if not args:
        call.arity(c, 1, 2)
    result = c.lower(args[0], call.ctx)
    c.require_numeric(result, args[0].span, f"{name}()")
    for arg in args[1:]:
        other = c.lower(arg, call.ctx)
        c.require_numeric(other, arg.span, f"{name}()")
        a, b, shape = c.broadcast(result, other, call.span)
        result = c.node(name, (a, b), c.arith_type(a.type, b.type, "+", shape), call.span)
    return result


def _reduction(c: Lowering, call: Call) -> Node:
    name, args = call.name, call.args
    call.arity(c, 2 if name == "quantile" else 1)
    x = c.lower(args[0], call.ctx)
    if x.type.kind == "raster":
        raise c.error("KD087", f"{name}() of a whole {x.type}: select a band first, "
                      f"e.g. {band_hint(x)}", args[0].span)
    if x.type.kind not in ("vector", "field"):
        raise c.error("KD087", f"{name}() reduces a vector or per-pixel values, not {x.type}",
                      args[0].span)
    if x.type.element == "enum":
        raise c.error("KD087", f"{name}() needs a number, not {x.type}; count classes with "
                      "frac(... == Member)", args[0].span)
    if name == "frac" and not (x.type.element == "bool"):
        raise c.error("KD087", "frac() gives the fraction of valid pixels where a condition "
                      "holds, e.g. frac(ndvi > 0.3)", args[0].span)
    attrs = {}
    if name == "quantile":
        q = c.literal_number(args[1], call.ctx)
        if q is None or not 0 <= q <= 1:
            raise c.error("KD086", "quantile() takes q as a number in 0..1 written in the spec",
                          args[1].span)
        attrs["q"] = float(q)
    return c.node(f"reduce_{name}", (x,), T.FLOAT, call.span, **attrs)


def _clamp(c: Lowering, call: Call) -> Node:
    call.arity(c, 3)
    x, lo, hi = (c.lower(a, call.ctx) for a in call.args)
    for node, arg in zip((x, lo, hi), call.args):
        c.require_numeric(node, arg.span, "clamp()")
    lo_x, lo_b, shape = c.broadcast(x, lo, call.span)
    raised = c.node("max", (lo_x, lo_b), c.arith_type(x.type, lo.type, "+", shape), call.span)
    a, b, shape = c.broadcast(raised, hi, call.span)
    return c.node("min", (a, b), c.arith_type(raised.type, hi.type, "+", shape), call.span)


def _single_boxes(c: Lowering, call: Call) -> Node:
    """iou() and area(): single boxes, read from text where the argument is text."""
    call.arity(c, 2 if call.name == "iou" else 1)
    boxes = []
    for arg in call.args:
        node = c.lower(arg, call.ctx)
        if node.type.is_text:
            node = c.convert_text(node, "box", call.ctx.scope, arg.span)
        if node.type.kind != "box":
            what = "a list of boxes" if node.type.kind == "boxes" else str(node.type)
            raise c.error("KD088", f"{call.name}() takes two single boxes, not {what}", arg.span)
        boxes.append(node)
    return c.node(call.name, tuple(boxes), T.FLOAT, call.span)


def _box_lists(c: Lowering, call: Call) -> Node:
    """box_count() and matched_boxes(): lists of boxes, read from text where the argument is text."""
    name = call.name
    call.arity(c, 1 if name == "box_count" else 3)
    lists = []
    for arg in call.args[:2]:
        node = c.lower(arg, call.ctx)
        if node.type.is_text:
            node = c.convert_text(node, "boxes", call.ctx.scope, arg.span)
        if node.type.kind != "boxes":
            raise c.error("KD088", f"{name}() takes lists of boxes (a `boxes` input or text read "
                          f"`as boxes`), not {node.type}", arg.span)
        lists.append(node)
    if name == "box_count":
        return c.node("box_count", tuple(lists), T.INT, call.span)
    threshold = c.literal_number(call.args[2], call.ctx)
    if threshold is None or not 0 < threshold <= 1:
        raise c.error("KD086", "matched_boxes() takes the IoU threshold as a number in (0, 1] "
                      "written in the spec, e.g. 0.5", call.args[2].span)
    return c.node("matched_boxes", tuple(lists), T.INT, call.span, threshold=float(threshold))


def _default(c: Lowering, call: Call) -> Node:
    call.arity(c, 2)
    x = c.lower(call.args[0], call.ctx)
    y = c.lower(call.args[1], call.ctx, x.type)
    if x.type.is_text or y.type.is_text:
        raise c.error("KD089", "default() takes values, not text; convert the text first", call.span)
    if x.type.kind != y.type.kind and not (x.type.is_numeric and y.type.is_numeric):
        raise c.error("KD089", f"default() needs two values of one type, not {x.type} and {y.type}",
                      call.span)
    if x.type.extra_dims != y.type.extra_dims:
        x, y, _ = c.broadcast(x, y, call.span)
    return c.node("default", (x, y), x.type if x.type.kind != "int" else y.type, call.span)


def band_hint(node: Node) -> str:
    """How to select one band of a raster or vector value, in its own names."""
    name = node.attr("name") if node.op == "input" else None
    size = node.type.size
    if name and node.type.bands:
        return f"`{name}.{node.type.bands[0]}` or `{name}[0]`"
    if name:
        return f"`{name}[0]` to `{name}[{size - 1}]`"
    return f"a band by its name or an index in 0..{size - 1}"


# ---- the registry ----------------------------------------------------------------------------------
_ENTRIES = (
    Builtin("present", "present(x)", "whether x has a value (the text was found, the value could be "
            "read)", "truth", _present),
    Builtin("valid", "valid(x)", "whether x has a value (the text was found, the value could be read)",
            "truth", _present),
    Builtin("count", "count(t)", "how many times the tag of t opens in the text it is searched in",
            "number", _count),
    Builtin("length", "length(t, unit)", "the length of t in chars (characters), words (separated by "
            "spaces) or tokens (of the model's tokenizer)", "number", _length),
    Builtin("mentions", "mentions(t, \"a\" | \"b\")", "whether t contains any of the terms as a whole "
            "word, in any case", "truth", _mentions),
    Builtin("mention_count", "mention_count(t, \"a\" | \"b\")", "how many times t contains the terms "
            "as whole words, in any case", "number", _mentions),
    Builtin("repetition", "repetition(t, n)", "the share of repeated n-word sequences in t (0 to 1)",
            "number", _repetition),
    Builtin("choice", "choice(t, \"ABCD\")", "the multiple-choice letter that t gives", "text",
            _choice),
    Builtin("number", "number(t)", "the first number written in t", "number", _number),
    Builtin("matches", "matches(t, pattern)", "whether the regular expression (RE2) occurs in t",
            "truth", _pattern),
    Builtin("match_count", "match_count(t, pattern)", "how many non-overlapping matches of the regular "
            "expression t holds", "number", _pattern),
    Builtin("occurrences", "occurrences(t, \"text\")", "how many non-overlapping times the literal "
            "text occurs in t", "number", _occurrences),
    Builtin("math_verify", "math_verify(t, gold)", "whether the math answer in t (its \\boxed{} answer "
            "first) equals gold, checked with the math-verify package; no value where gold cannot "
            "be parsed", "truth", _compare_texts),
    Builtin("similarity", "similarity(a, b)", "how close a and b are in meaning, the cosine "
            "similarity of their sentence embeddings (-1 to 1)", "number", _compare_texts),
    Builtin("normalize", "normalize(t)", "t in lower case, punctuation made spaces, the articles a, "
            "an and the dropped, spaces collapsed", "text", _normalize),
    Builtin("abs", "abs(x)", "the absolute value of x", "number", _unary_math),
    Builtin("sqrt", "sqrt(x)", "the square root of x (no value below 0)", "number", _unary_math),
    Builtin("log", "log(x)", "the natural logarithm of x (no value at 0 or below)", "number",
            _unary_math),
    Builtin("exp", "exp(x)", "e to the power x", "number", _unary_math),
    Builtin("floor", "floor(x)", "x rounded down to a whole number", "number", _unary_math),
    Builtin("ceil", "ceil(x)", "x rounded up to a whole number", "number", _unary_math),
    Builtin("round", "round(x)", "x rounded to the nearest whole number (halves to the even one)",
            "number", _unary_math),
    Builtin("cos", "cos(x)", "the cosine of x (in radians)", "number", _unary_math),
    Builtin("sin", "sin(x)", "the sine of x (in radians)", "number", _unary_math),
    Builtin("min", "min(a, b, ...)", "the smallest of the values (of one value: its smallest valid "
            "element or pixel)", "number", _extreme),
    Builtin("max", "max(a, b, ...)", "the largest of the values (of one value: its largest valid "
            "element or pixel)", "number", _extreme),
    Builtin("clamp", "clamp(x, low, high)", "x, raised to low or lowered to high where it lies outside",
            "number", _clamp),
    Builtin("default", "default(x, fallback)", "x where it has a value, otherwise fallback", "value",
            _default),
    Builtin("iou", "iou(a, b)", "the overlap of two boxes, intersection over union (0 to 1)", "number",
            _single_boxes),
    Builtin("area", "area(b)", "the area of box b", "number", _single_boxes),
    Builtin("box_count", "box_count(boxes)", "how many boxes the list holds", "number", _box_lists),
    Builtin("matched_boxes", "matched_boxes(predicted, gold, t)", "how many predicted boxes match a "
            "gold box one to one with an IoU of at least t, the best overlaps paired first", "number",
            _box_lists),
    Builtin("mean", "mean(x)", "the mean of the valid elements or pixels of x", "number", _reduction),
    Builtin("sum", "sum(x)", "the sum of the valid elements or pixels of x", "number", _reduction),
    Builtin("std", "std(x)", "the standard deviation of the valid elements or pixels of x", "number",
            _reduction),
    Builtin("quantile", "quantile(x, q)", "the q-quantile of the valid elements or pixels of x",
            "number", _reduction),
    Builtin("frac", "frac(condition)", "the share of valid pixels where the condition holds (0 to 1)",
            "number", _reduction),
    Builtin("batch_min", "batch_min(x)", "the smallest x over the completions scored together",
            "number", _batch_reduction),
    Builtin("batch_max", "batch_max(x)", "the largest x over the completions scored together",
            "number", _batch_reduction),
    Builtin("batch_mean", "batch_mean(x)", "the mean x over the completions scored together", "number",
            _batch_reduction),
)

BUILTINS: dict[str, Builtin] = {b.name: b for b in _ENTRIES}
