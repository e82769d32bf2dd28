"""Units on numbers: automatic, exact conversions within a dimension, located errors across them."""

import pytest
import torch

import kdsl
from kdsl import units
from kdsl.compiler import check_source
from kdsl.tools.explain import explain, render_text

SPEC = """spec units version 1
input {
  size: float mm in 0..50
  limit: float cm
  temp: float degC
  rate: float /min
}
table plan(size: float cm) -> float {
  < 0.6 -> 0
  >= 0.6 -> 1
}
level l {
  rule bigger: size > limit
  rule warm: temp as K > 300
  rule planned: plan(size) == 1
  rule sum: size + limit > 10
  rule doubled: 2 * size > limit
  rule fast: rate > 100
}
"""


def score(**columns):
    program = kdsl.loads(SPEC, "units.kd")
    n = len(next(iter(columns.values())))
    return program.score([""] * n, dtype=torch.float64, **columns).rules


def test_values_in_compatible_units_are_converted_before_they_meet():
    rules = score(size=[7.0, 4.0], limit=[0.5, 0.5], temp=[30.0, 20.0], rate=[120.0, 60.0])
    assert rules["bigger"].tolist() == [1.0, 0.0]  # 7 mm > 5 mm; 4 mm < 5 mm
    assert rules["warm"].tolist() == [1.0, 0.0]  # 303.15 K; 293.15 K
    assert rules["planned"].tolist() == [1.0, 0.0]  # 0.7 cm >= 0.6; 0.4 cm < 0.6
    assert rules["sum"].tolist() == [1.0, 0.0]  # 7 + 5 = 12 mm; 4 + 5 = 9 mm
    assert rules["doubled"].tolist() == [1.0, 1.0]  # 14 mm, 8 mm against 5 mm
    assert rules["fast"].tolist() == [1.0, 0.0]  # a plain number is in the value's unit


@pytest.mark.parametrize("source, target, value, expected", [
    ("mm", "cm", 7.0, 0.7), ("degC", "K", 30.0, 303.15), ("degF", "degC", 212.0, 100.0),
    ("mg/dL", "g/L", 150.0, 1.5), ("kPa", "mmHg", 13.3322387415, 100.0), ("%", "fraction", 45.0, 0.45),
    ("h", "min", 1.5, 90.0),
])
def test_conversion_factors(source, target, value, expected):
    factor, offset = units.conversion(units.unit_named(source), units.unit_named(target))
    assert value * factor + offset == pytest.approx(expected, rel=1e-12)


def test_units_of_different_dimensions_are_a_located_error():
    text = "spec u version 1\ninput {\n  urea: float mmol/L\n  bun: float mg/dL\n}\nlevel l {\n  rule r: urea > bun\n}\n"
    (error,) = check_source(text, "u.kd").errors
    assert error.message == ("`>`: `mg/dL` and `mmol/L` do not convert (mg/dL is a mass "
                             "concentration and mmol/L a molar concentration)")
    assert (error.span.line, error.span.column) == (7, 11)
    assert "molar mass" in error.notes[0]


def test_a_documented_factor_converts_what_units_cannot():
    text = ("spec u version 1\ninput {\n  urea: float mmol/L\n  bun: float mg/dL\n}\n"
            "def urea_from_bun(bun): mmol/L = bun * 10 / 28.014\nlevel l {\n  rule r: urea > urea_from_bun(bun)\n}\n")
    assert check_source(text, "u.kd").errors == []
    program = kdsl.loads(text, "u.kd")
    rules = program.score(["", ""], urea=[7.2, 7.0], bun=[20.0, 20.0], dtype=torch.float64).rules
    assert rules["r"].tolist() == [1.0, 0.0]  # BUN 20 mg/dL is urea 7.139 mmol/L
    without = text.replace("): mmol/L =", ") =")
    assert "do not convert" in check_source(without, "u.kd").errors[0].message


@pytest.mark.parametrize("decl, message", [
    ("x: float mmol/l", "unknown unit `mmol/l` (did you mean `mmol/L`?)"),
    ("x: float furlong", "unknown unit `furlong`"),
    ("x: bool mm", "only numbers have units; this is bool"),
])
def test_bad_units_are_named(decl, message):
    text = f"spec u version 1\ninput {{\n  {decl}\n}}\nlevel l {{\n  rule r: x\n}}\n"
    errors = [d.message for d in check_source(text, "u.kd").errors]
    assert errors[0] == message


def test_as_a_unit_needs_a_value_with_a_unit():
    text = "spec u version 1\ninput { x: float }\nlevel l { rule r: x as mm > 1 }\n"
    (error,) = check_source(text, "u.kd").errors
    assert error.message.startswith("`as mm` converts a value that has a unit; this one has none")


def test_explain_and_describe_show_units(tmp_path):
    program = kdsl.loads(SPEC, "units.kd")
    e = explain(program, "", {"size": 7.0, "limit": 0.5, "temp": 30.0, "rate": 80.0})
    assert [i["unit"] for i in e["inputs"]] == ["mm", "cm", "degC", "/min"]
    assert "    size = 7 mm" in render_text(e)
    from kdsl.tools.describe import describe

    path = tmp_path / "units.kd"
    path.write_text(SPEC, encoding="utf-8")
    assert "- size: a number in mm from 0 to 50" in describe(kdsl.load(path))


CALLER = """spec caller version 1
import "medical/curb65" as curb65
input {
  urea: float UREA_UNIT
  rate: float /min
  sbp: float kPa
  dbp: float mmHg
  age: int
  confused: bool
}
let total = curb65.score(confused, UREA, rate, sbp, dbp, age)
level l { rule r: total >= 1 }
"""


def test_library_parameters_convert_units_of_one_kind_and_refuse_the_others():
    bun = CALLER.replace("UREA_UNIT", "mg/dL")
    (error,) = check_source(bun.replace("UREA", "urea"), "caller.kd").errors
    assert error.message.startswith("`urea_mmol_per_l` of `curb65.score`: `mg/dL` and `mmol/L` do not convert")
    converted = bun.replace("UREA,", "curb65.urea_mmol_per_l_from_bun(urea),")
    program = kdsl.loads(converted, "caller.kd")
    # systolic 11.9 kPa is 89.3 mmHg: a point; 12.1 kPa is 90.8 mmHg: none
    rules = program.score(["", ""], urea=[10.0, 10.0], rate=[20.0, 20.0], sbp=[11.9, 12.1], dbp=[70.0, 70.0],
                          age=[50, 50], confused=[False, False], dtype=torch.float64).rules
    assert rules["r"].tolist() == [1.0, 0.0]


def test_a_let_converts_to_its_unit_or_states_it():
    text = ("spec u version 1\ninput {\n  size: float mm\n  other: float\n}\n"
            "let size_cm: cm = size\nlet stated: cm = other * 2\nlevel l {\n"
            "  rule r: size_cm > 1\n  rule s: stated > size\n}\n")
    program = kdsl.loads(text, "u.kd")
    scores = program.score(["", ""], size=[12.0, 8.0], other=[1.0, 0.3], dtype=torch.float64)
    assert scores.values["size_cm"].tolist() == pytest.approx([1.2, 0.8])
    assert scores.rules["r"].tolist() == [1.0, 0.0]
    assert scores.rules["s"].tolist() == [1.0, 0.0]  # 2 cm > 12 mm; 0.6 cm < 8 mm
    bad = text.replace("let size_cm: cm = size", "let size_cm: kPa = size")
    assert "`let size_cm`: `mm` and `kPa` do not convert" in check_source(bad, "u.kd").errors[0].message


def test_a_vector_with_a_unit_converts_element_by_element():
    text = ("spec u version 1\ninput {\n  sizes: vector[3] mm\n  limit: float cm\n}\n"
            "level l {\n  rule r: mean(sizes as cm) > limit\n  rule s: sizes[0] > limit\n}\n")
    program = kdsl.loads(text, "u.kd")
    scores = program.score([""], sizes=[[10.0, 20.0, 30.0]], limit=[1.5], dtype=torch.float64)
    assert scores.rules["r"].tolist() == [1.0]  # 2 cm > 1.5 cm
    assert scores.rules["s"].tolist() == [0.0]  # 10 mm < 15 mm
