"""Continuous bins as guidelines print them: interval cells such as `[0.1, 0.27)`, `x in [a, b)`,
and open ranges on inputs (`sr: vector[7] in (0, 1]`), with gaps and overlaps proved at the
boundary values."""

import pytest

import kdsl
from kdsl.analysis.tables import cell_matches
from kdsl.compiler import check_source
from kdsl.errors import KdslError
from kdsl.frontend import ast
from kdsl.frontend.parser import parse
from kdsl.tools.describe import describe
from kdsl.tools.mutation import find_mutants

# USGS burn severity classes from dNBR (Key and Benson), written as the table prints them.
DNBR = """spec burn version 1

input { dnbr: float }
enum Severity { Enhanced, Unburned, Low, ModerateLow, ModerateHigh, High }
output {
  reply: tag "answer"
  said: reply as Severity
}

table severity(dnbr: float) -> Severity {
  < -0.1 -> Enhanced
  [-0.1, 0.1) -> Unburned
  [0.1, 0.27) -> Low
  [0.27, 0.44) -> ModerateLow
  [0.44, 0.66) -> ModerateHigh
  >= 0.66 -> High
}

level l {
  rule right: said == severity(dnbr)
  rule low_band: when dnbr in [0.1, 0.27): said == Low
}
"""


def cell(text: str) -> ast.Cell:
    spec = parse(f"spec t version 1\ntable t(x: float) -> float {{\n  {text} -> 1\n}}\n")
    return spec.tables[0].rows[0].cells[0]


@pytest.mark.parametrize("text, inside, outside", [
    ("[0.1, 0.27)", [0.1, 0.2, 0.2699], [0.0999, 0.27, 0.3]),
    ("(0.1, 0.27]", [0.1001, 0.27], [0.1, 0.2701]),
    ("(0.1, 0.27)", [0.2], [0.1, 0.27]),
    ("[0.1, 0.27]", [0.1, 0.27], [0.0999, 0.2701]),
    ("0.1..0.27", [0.1, 0.27], [0.0999, 0.2701]),
])
def test_interval_cells_include_exactly_their_closed_ends(text, inside, outside):
    parsed = cell(text)
    assert all(cell_matches(parsed, v) for v in inside)
    assert not any(cell_matches(parsed, v) for v in outside)


def test_the_dnbr_classes_check_without_gaps_or_overlaps():
    result = check_source(DNBR, "burn.kd")
    assert result.errors == [] and result.warnings == []


def test_an_open_boundary_is_a_gap_at_the_boundary_value():
    result = check_source(DNBR.replace("[0.27, 0.44)", "(0.27, 0.44)"), "burn.kd")
    assert [d.message for d in result.errors] == ["table `severity` has no row for dnbr = 0.27"]


def test_a_closed_boundary_on_both_sides_is_an_overlap_at_the_boundary_value():
    result = check_source(DNBR.replace("[0.1, 0.27)", "[0.1, 0.27]"), "burn.kd")
    (error,) = result.errors
    assert error.message.startswith("rows 3 and 4 of table `severity` overlap (lines 13 and 14): "
                                    "dnbr = 0.27 matches both (Low and ModerateLow)")


@pytest.mark.parametrize("dnbr, expected", [(-0.2, "Enhanced"), (-0.1, "Unburned"), (0.0999, "Unburned"),
                                            (0.1, "Low"), (0.2699, "Low"), (0.27, "ModerateLow"),
                                            (0.44, "ModerateHigh"), (0.6599, "ModerateHigh"),
                                            (0.66, "High"), (1.3, "High")])
def test_compiled_bins_give_the_class_of_each_boundary(dnbr, expected):
    program = kdsl.loads(DNBR, "burn.kd")
    scores = program.score([f"<answer>{expected}</answer>", "<answer>Enhanced</answer>"],
                           dnbr=[dnbr, dnbr], dtype=__import__("torch").float64)
    assert scores.rules["right"].tolist()[0] == 1.0
    assert scores.rules["right"].tolist()[1] == (1.0 if expected == "Enhanced" else 0.0)
    applies = scores.applies["low_band"].tolist()[0]
    assert applies == (0.1 <= dnbr < 0.27)


def test_interval_membership_in_expressions():
    text = ("spec m version 1\ninput { x: float }\nlevel l {\n  rule a: x in (0.2, 0.5]\n"
            "  rule b: x not in [0, 1)\n  rule c: x in (x - 1) .. 5\n}\n")
    program = kdsl.loads(text, "m.kd")
    scores = program.score(["", "", "", ""], x=[0.2, 0.5, 1.0, 0.0])
    assert scores.rules["a"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert scores.rules["b"].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert scores.rules["c"].tolist() == [1.0, 1.0, 1.0, 1.0]  # a parenthesised low end is still a range


@pytest.mark.parametrize("text", ["[0.3, 0.3)", "(0.3, 0.3]", "[0.5, 0.2]"])
def test_an_empty_interval_is_an_error(text):
    with pytest.raises(KdslError, match="empty interval"):
        cell(text)


def test_an_int_column_takes_intervals_with_fractional_ends():
    text = "spec t version 1\ntable t(n: int) -> float {\n  [0, 2.5) -> 1\n  >= 2.5 -> 2\n  < 0 -> 0\n}\n"
    assert check_source(text, "t.kd").errors == []


def test_reflectance_bounds_silence_the_zero_denominators_they_rule_out():
    spec = ("spec s version 1\ninput {{\n  sr: vector[2] bands(Red, Nir) {range}\n}}\n"
            "level l {{\n  rule green: (sr.Nir - sr.Red) / (sr.Nir + sr.Red) > 0.4\n}}\n")
    messages = [d.message for d in check_source(spec.format(range=""), "s.kd").warnings]
    assert messages == ["denominator `sr.Nir + sr.Red` can be zero, e.g. when sr.Nir = 0, sr.Red = 0"]
    assert len(check_source(spec.format(range="in 0..1"), "s.kd").warnings) == 1  # both may be 0
    assert check_source(spec.format(range="in (0, 1]"), "s.kd").warnings == []


def test_an_open_input_range_still_lets_the_other_end_be_zero():
    spec = "spec s version 1\ninput {\n  x: float in [0, 1)\n  y: float in (0, 5]\n}\nlevel l {\n  rule a: x / y > 0\n  rule b: y / x > 0\n}\n"
    (warning,) = check_source(spec, "s.kd").warnings
    assert warning.message == "denominator `x` can be zero, e.g. when x = 0"


def test_describe_says_which_ends_belong(tmp_path):
    path = tmp_path / "burn.kd"
    path.write_text(DNBR, encoding="utf-8")
    text = describe(kdsl.load(path))
    assert ">= 0.1 and < 0.27  | Low" in text
    assert "when dnbr is between 0.1 and 0.27 (the low end included, the high end excluded)" in text


def test_mutation_nudges_interval_ends():
    program = kdsl.loads(DNBR, "burn.kd")
    nudged = {(m.line, m.original) for m in find_mutants(DNBR, program) if m.kind in ("cell", "threshold")}
    assert (13, "0.27") in nudged and (13, "0.1") in nudged and (21, "0.27") in nudged
