"""Value ranges: the intervals the checker derives really contain every value a program computes."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kdsl
from kdsl.analysis.intervals import Interval, Ranges
from kdsl.compiler import check_source

HEADER = """
spec t version 1
input {
  x: float in -3..5
  y: float in 0.5..2
  n: int in 0..10
}
"""

LEAVES = st.sampled_from(["x", "y", "n", "2", "0.5", "3"])


def expressions(depth: int = 3):
    unary = st.sampled_from(["abs({})", "-({})", "floor({})", "sqrt({})", "exp(({}) / 4)", "log({})"])
    binary = st.sampled_from(["({}) + ({})", "({}) - ({})", "({}) * ({})", "({}) / ({})",
                              "min({}, {})", "max({}, {})", "clamp({}, -1, {})"])
    return st.recursive(
        LEAVES,
        lambda inner: st.one_of(
            st.builds(lambda f, a: f.format(a), unary, inner),
            st.builds(lambda f, a, b: f.format(a, b), binary, inner, inner)),
        max_leaves=6)


_PROGRAMS: dict[str, tuple] = {}


def _compiled(expr: str):
    if expr not in _PROGRAMS:
        text = HEADER + f"let e = {expr}\nlevel l {{\n  rule r: e > 0 or e <= 0\n}}\n"
        result = check_source(text, "t.kd")
        assert not result.errors, result.errors
        program = kdsl.loads(text, "t.kd")
        _PROGRAMS[expr] = (Ranges(result.program).of(result.program.lets["e"]), program)
    return _PROGRAMS[expr]


@settings(max_examples=120, deadline=None)
@given(expressions(), st.lists(st.tuples(st.floats(-3, 5), st.floats(0.5, 2), st.integers(0, 10)),
                               min_size=1, max_size=8))
def test_ranges_contain_every_computed_value(expr, points):
    interval, program = _compiled(expr)
    scores = program.score([""] * len(points), x=[p[0] for p in points], y=[p[1] for p in points],
                           n=[float(p[2]) for p in points], dtype=torch.float64)
    values, valid = scores.values["e"], scores.valid["e"]
    for value, ok in zip(values.tolist(), valid.tolist()):
        if ok:
            slack = 1e-9 * max(1.0, abs(value))
            assert interval.lo - slack <= value <= interval.hi + slack, (expr, value, interval)


def _ranges(body: str, lets: str = "") -> Interval:
    result = check_source(HEADER + lets + f"let e = {body}\nlevel l {{\n  rule r: e > 0 or e <= 0\n}}\n")
    return Ranges(result.program).of(result.program.lets["e"])


@pytest.mark.parametrize("body, lo, hi", [
    ("x + y", -2.5, 7), ("x * y", -6, 10), ("y / 2", 0.25, 1), ("abs(x)", 0, 5), ("n - x", -5, 13),
    ("floor(y)", 0, 2), ("min(x, y)", -3, 2), ("x / y", -6, 10),
])
def test_interval_arithmetic_by_hand(body, lo, hi):
    r = _ranges(body)
    assert (r.lo, r.hi) == (lo, hi)


def test_division_by_an_interval_holding_zero_is_unbounded():
    r = _ranges("y / x")
    assert (r.lo, r.hi) == (-math.inf, math.inf)


def test_whole_numbers_are_tracked():
    assert _ranges("n + 2").integral and not _ranges("n / 2").integral


def _messages(rules: str) -> list[str]:
    text = HEADER + "output {\n  reply: tag \"answer\"\n}\nlevel l {\n" + rules + "\n}\n"
    return [f"{d.severity}: {d.message}" for d in check_source(text, "t.kd").diagnostics
            if "never used" not in d.message]


def test_a_clean_rule_gets_no_message():
    assert _messages("  rule fine: when n >= 2: x > 1 and y < 1.5 and count(reply) == 1") == []


def test_unsatisfiable_and_trivial_rules():
    assert _messages("  rule r: x > 7") == [
        "error: rule `r` can never be satisfied: `x > 7` never holds (x lies in -3..5)"]
    assert _messages("  rule r: n != 2.5") == [
        "warning: rule `r` always holds (whenever its values are present): `n != 2.5` "
        "(n is a whole number in 0..10)"]
    assert _messages("  rule r: x > 1 and x < 1") == [
        "error: rule `r` can never be satisfied: `x > 1` and `x < 1` cannot both hold"]
    assert _messages("  rule r: n > 3 and n < 4") == [
        "error: rule `r` can never be satisfied: `n > 3` and `n < 4` cannot both hold"]


def test_soft_rules_near_the_range_are_only_partly_reachable():
    # x never exceeds 5, but within a ramp of width 1 below 5.5 it can reach truth 0.5
    assert _messages("  rule r: x > 5.5 soft 1") == []
    assert _messages("  rule r: x > 7 soft 1")[0].startswith("error: rule `r` can never be satisfied")


def test_zero_denominators_are_found_with_an_example():
    text = HEADER + "let q = x / (y - 1)\nlet safe = x / (1 + abs(y))\nlevel l {\n" \
                    "  rule r: q > 0 and safe > 0\n}\n"
    messages = [d.message for d in check_source(text, "t.kd").warnings if "never used" not in d.message]
    assert messages == ["denominator `y - 1` can be zero, e.g. when y = 1"]


@pytest.mark.parametrize(("body", "warned"), [
    ("if y == 1 then 0 else x / (y - 1) > 0", False),
    ("if y - 1 == 0 then 0 else x / (y - 1) > 0", False),
    ("if y != 1 then x / (y - 1) > 0 else false", False),
    ("if x > 0 and n > 1 then y / x > 0 else false", False),
    ("if not (x == 0) then y / x > 0 else false", False),
    ("when x > 0: y / x > 0", False),
    ("if y == 1 then x / (y - 1) > 0 else false", True),   # the guard points the wrong way
    ("if x >= 0 then y / x > 0 else false", True),          # x can still be 0
    ("if y == 2 then 0 else x / (y - 1) > 0", True),
    ("if x > y then n / (x - y) > 0 else false", False),
    ("if x >= y then n / (x - y) > 0 else false", True),
])
def test_divisions_guarded_by_an_if_or_when_are_not_reported(body, warned):
    messages = _messages(f"  rule r: {body}")
    assert any("can be zero" in m for m in messages) == warned, messages


def test_a_fractional_power_in_a_denominator_is_reported_without_solving_it():
    # sympy would turn x ** 0.36788 into a rational power of high order and take minutes.
    text = HEADER + "let q = 1 / (x ** 0.36788 * y + 1)\nlevel l {\n  rule r: q > 0\n}\n"
    messages = [d.message for d in check_source(text, "t.kd").warnings if "never used" not in d.message]
    assert messages == ["denominator `x ** 0.36788 * y + 1` can be zero"]
