"""Points sheets: clinical scores written as the papers print them, checked, typed and ranged."""

import itertools

import pytest

import kdsl
from kdsl.compiler import check_source
from kdsl.errors import KdslError
from kdsl.frontend.parser import parse
from kdsl.tools.mutation import find_mutants

# The Wells score for pulmonary embolism (Wells et al., Thromb Haemost 2000), as printed.
WELLS = """spec wells version 1

points wells(dvt_signs, pe_most_likely, heart_rate, immobilised, previous_vte, haemoptysis, malignancy) {
  clinical_signs_of_dvt: dvt_signs -> 3
  pe_most_likely_diagnosis: pe_most_likely -> 3
  heart_rate_above_100: heart_rate > 100 -> 1.5
  immobilisation_or_recent_surgery: immobilised -> 1.5
  previous_dvt_or_pe: previous_vte -> 1.5
  haemoptysis: haemoptysis -> 1
  malignancy: malignancy -> 1
}

input {
  dvt_signs: bool
  pe_likely: bool
  hr: float in 0..300
  immobile: bool
  previous: bool
  blood: bool
  cancer: bool
}

enum Likelihood { Unlikely, Likely }
output {
  reply: tag "answer"
  said: reply as float
}

let total = wells(dvt_signs, pe_likely, hr, immobile, previous, blood, cancer)

table two_tier(score: float in 0..12.5) -> Likelihood {
  <= 4 -> Unlikely
  > 4 -> Likely
}

level l {
  rule right: said == total
  rule likely_needs_points: when two_tier(total) == Likely: said > 4
}
"""

POINTS = {"dvt_signs": 3, "pe_likely": 3, "immobile": 1.5, "previous": 1.5, "blood": 1, "cancer": 1}


def wells_reference(row: dict) -> float:
    """The published sheet, added up by hand."""
    return sum(p for name, p in POINTS.items() if row[name]) + (1.5 if row["hr"] > 100 else 0)


def test_the_total_is_the_sum_of_the_points_of_the_criteria_that_hold():
    program = kdsl.loads(WELLS, "wells.kd")
    rows = []
    for flags in itertools.product([False, True], repeat=6):
        for hr in (80.0, 100.0, 100.5):
            rows.append({**dict(zip(POINTS, flags)), "hr": hr})
    columns = {name: [r[name] for r in rows] for name in rows[0]}
    expected = [wells_reference(r) for r in rows]
    scores = program.score([f"<answer>{e:g}</answer>" for e in expected], **columns)
    assert scores.rules["right"].tolist() == [1.0] * len(rows)
    assert set(expected) >= {0.0, 12.5}


def test_the_checker_knows_the_range_of_the_total():
    text = WELLS.replace("rule right: said == total", "rule right: total <= 12.5")
    (warning,) = check_source(text, "wells.kd").warnings
    assert warning.message.startswith("rule `right` always holds")
    assert "(total lies in 0..12.5)" in warning.message


def test_cut_offs_are_checked_for_gaps_within_the_range():
    text = WELLS.replace("  > 4 -> Likely", "  > 4.5 -> Likely")
    assert [d.message for d in check_source(text, "wells.kd").errors] == [
        "table `two_tier` has no row for score = 4.25", "table `two_tier` has no row for score = 4.5"]


def test_whole_points_give_a_whole_number_total():
    text = """spec curb version 1
points curb(confusion, urea) {
  confusion: confusion -> 1
  urea_above_7: urea > 7 -> 1
}
input { c: bool
  u: float }
let total = curb(c, u)
level l { rule r: total >= 1 }
"""
    assert check_source(text, "curb.kd").program.lets["total"].type.kind == "int"
    fractional = text.replace("urea > 7 -> 1\n", "urea > 7 -> 1.5\n")
    assert check_source(fractional, "curb.kd").program.lets["total"].type.kind == "float"


@pytest.mark.parametrize("body, message", [
    ("", "points sheet `s` has no criteria"),
    ("  a: x > 1 -> 1\n  a: x > 2 -> 1\n", "criterion `a` is already on this sheet (line 4)"),
])
def test_malformed_sheets_are_syntax_errors(body, message):
    with pytest.raises(KdslError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(f"spec p version 1\ninput {{ x: float }}\npoints s(x) {{\n{body}}}\n", "p.kd")


def test_a_criterion_that_is_not_a_condition_is_named():
    text = "spec p version 1\ninput { hr: float }\npoints s(hr) {\n  fast: hr -> 1\n}\nlevel l { rule r: s(hr) > 0 }\n"
    (error,) = check_source(text, "p.kd").errors
    assert error.message == "criterion `fast` needs a condition (true or false), not float"
    assert (error.span.line, error.span.column) == (4, 9)


def test_shipped_clinical_scores_are_points_sheets():
    from kdsl.io.resources import library_dir

    for name, criteria in (("curb65", 5), ("cha2ds2_vasc", 8)):
        spec = parse((library_dir() / "medical" / f"{name}.kd").read_text(encoding="utf-8"))
        (sheet,) = [d for d in spec.defs if d.criteria]
        assert sheet.name == "score" and len(sheet.criteria) == criteria


def test_mutation_nudges_the_points_of_each_criterion():
    program = kdsl.loads(WELLS, "wells.kd")
    points = {(m.line, m.original, m.replacement) for m in find_mutants(WELLS, program) if m.kind == "points"}
    assert (4, "3", "2") in points and (4, "3", "4") in points
    assert (6, "1.5", "1.35") in points
