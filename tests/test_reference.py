"""The compiled, batched program agrees with the reference interpreter on random batches,
invalid values, NaNs and nodata pixels included."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import kdsl
from kdsl.compiler import check_source
from tests.reference import Reference

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_PROGRAMS: dict[str, tuple] = {}


def compiled(spec: str):
    if spec not in _PROGRAMS:
        _PROGRAMS[spec] = (kdsl.loads(spec, "t.kd"), Reference(spec))
    return _PROGRAMS[spec]


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def agree(spec: str, completions: list[str], columns: dict) -> None:
    program, reference = compiled(spec)
    scores = program.score(completions, dtype=torch.float64, **columns)
    for i, completion in enumerate(completions):
        row = {k: v[i] for k, v in columns.items()}
        expected = reference.score(completion, row)
        where = f"sample {i}: {completion!r} {row}"
        assert close(scores.reward[i].item(), expected["reward"]), where
        for name, truth in expected["rules"].items():
            assert close(scores.rules[name][i].item(), truth), f"rule {name}, {where}"
            assert bool(scores.applies[name][i]) == expected["applies"][name], f"applies {name}, {where}"
        for name, value in expected["levels"].items():
            assert close(scores.levels[name][i].item(), value), f"level {name}, {where}"
        for name, value in expected["values"].items():
            if isinstance(value, str) or name not in scores.values:
                continue
            got = scores.values[name][i].item() if scores.valid[name][i] else None
            assert close(got, value), f"let {name}, {where}"


NUMBERS = st.one_of(st.none(), st.just(float("nan")), st.just(0.0), st.just(2.0),
                    st.floats(-50, 50, allow_nan=False), st.sampled_from([1.0, -1.0, 0.5, 3.0]))


def expressions():
    leaves = st.sampled_from(["x", "y", "z", "2", "0.5", "3", "0"])
    unary = st.sampled_from(["abs({})", "-({})", "floor({})", "sqrt({})", "log({})", "exp(({}) / 8)",
                             "default({}, 1)"])
    binary = st.sampled_from(["({}) + ({})", "({}) - ({})", "({}) * ({})", "({}) / ({})", "({}) % ({})",
                              "min({}, {})", "max({}, {})", "({}) ** 2 + ({})",
                              "(if {} > 0 then {} else 1)"])
    return st.recursive(leaves, lambda inner: st.one_of(
        st.builds(lambda f, a: f.format(a), unary, inner),
        st.builds(lambda f, a, b: f.format(a, b), binary, inner, inner)), max_leaves=5)


CONDITIONS = st.sampled_from(["e > 1", "e <= 0 or z > 0", "not (e == 2) and x < y",
                              "e >= 0.5 and y != 0", "e in 0..4", "e in {0, 2, 3}"])
LOGICS = st.sampled_from(["product", "godel", "lukasiewicz"])


@SETTINGS
@given(expressions(), CONDITIONS, LOGICS, st.sampled_from(["", " soft 0.5"]),
       st.sampled_from(["fail", "pass", "skip"]),
       st.lists(st.tuples(NUMBERS, NUMBERS, NUMBERS), min_size=1, max_size=6))
def test_random_expressions(expr, condition, logic, soft, invalid, rows):
    spec = f"""
spec t version 1 logic {logic}
input {{
  x: float
  y: float
  z: float
}}
let e = {expr}
level first gate {{
  rule c: {condition}{soft} invalid {invalid}
}}
level second weight 2 {{
  rule d: when x > 0: e < 10 or y > 1
  rule n: e
}}
"""
    # A constant expression can make a rule impossible, which the checker rightly rejects.
    assume(not check_source(spec, "t.kd").errors)
    agree(spec, [""] * len(rows), {"x": [r[0] for r in rows], "y": [r[1] for r in rows],
                                   "z": [r[2] for r in rows]})


TEXT_SPEC = """
spec text version 1 logic {logic}
input {{
  label: enum LandCover {{ Forest ("woodland"), River, SeaLake ("lake") }}
  gold: float
  ok: bool
}}
output {{
  think: tag "think"
  reply: last tag "answer"
  single: only tag "answer"
  answer: reply as LandCover
  value: regex "value: (?P<v>[0-9.]+)" within think
}}
level format gate {{
  rule has_think: present(think) and length(think, words) >= 2
  rule one: count(single) == 1 or not ok
}}
level accuracy weight 2 {{
  rule correct: answer == label
  rule close: value.v as float >= gold - 1 and value.v as float <= gold + 1 soft 0.5 invalid skip
}}
level knowledge weight 0.5 {{
  rule water: when answer in {{River, SeaLake}}: mentions(think, "water" | "NDWI")
  rule forest: when answer == Forest: mention_count(think, "green" | "canopy") >= 2 or ok
}}
"""
FRAGMENTS = st.sampled_from([
    "<think>", "</think>", "<answer>", "</answer>", "Forest", "woodland", "lake", "River", "water",
    "green canopy", "NDWI high", "value: 3.5", "value: 7", " ", "Desert", "canopy", "x",
])


@SETTINGS
@given(LOGICS, st.lists(st.tuples(st.lists(FRAGMENTS, max_size=12).map("".join),
                                  st.sampled_from(["Forest", "River", "lake", None]),
                                  st.one_of(st.none(), st.sampled_from([3.0, 4.0, 7.5])),
                                  st.one_of(st.none(), st.booleans())), min_size=1, max_size=6))
def test_text_rules(logic, rows):
    agree(TEXT_SPEC.format(logic=logic), [r[0] for r in rows],
          {"label": [r[1] for r in rows], "gold": [r[2] for r in rows], "ok": [r[3] for r in rows]})



# Every text operation, on fragments chosen where implementations tend to differ: Unicode letters
# next to a term or a choice letter, thousands separators, percents, exponents, signs, boxes in
# three spellings, punctuation and articles for normalize, repeated words.
TEXT_OPERATIONS_SPEC = """
spec ops version 1
input {
  gold: str
}
output {
  reply: tag "answer"
  reason: tag "think"
  code: regex "id-(?P<n>[0-9]+)"
}
level l {
  rule number: number(reply) > 10 invalid skip
  rule integer: reply as int >= 0 invalid skip
  rule text: reply as str == "B" invalid skip
  rule yes: reply as bool invalid skip
  rule picked: choice(reply, "ABCD") == "B" invalid skip
  rule terms: mentions(reason, "ndvi" | "open water") invalid skip
  rule term_count: mention_count(completion, "water" | "ndvi") >= 2
  rule pattern: matches(reason, "^[a-z]") invalid skip
  rule pattern_count: match_count(completion, "[0-9]+") >= 3
  rule literal: occurrences(completion, "ab") >= 2
  rule repeated: repetition(reason, 2) < 0.3 invalid skip
  rule words: length(reason, words) >= 3 invalid skip
  rule chars: length(reply, chars) <= 6 invalid skip
  rule boxes: box_count(completion as boxes) >= 1
  rule first_box: iou(reply as box, completion as box) > 0.5 invalid skip
  rule normalized: normalize(reply) == normalize(gold) invalid skip
  rule code: code.n as int > 5 invalid skip
}
"""
OPERATION_FRAGMENTS = st.sampled_from([
    "<answer>", "</answer>", "<think>", "</think>", "B", "(B)", "éB", "B2", " A ", "**C**", "yes",
    "No.", "1,234.5", "45%", "-3e2", "+.5", "7", "1,23", "NDVI", "ÉNDVI", "ndvi_x", "open water",
    "Open  water", "water", "waterfall", "ab", "aab", "[1, 2, 11, 12]", "(0,0),(5,5)", "(1, 2, 3, 4)",
    "[3, 3, 1, 1]", "The B!", "an answer", "id-7", "id-x", "the the the", " ", "x", "\n", "é",
])


PIECES = st.lists(OPERATION_FRAGMENTS, max_size=5).map("".join)
# Mostly well-formed replies, so the operations see their tags' contents; the fragments still
# hold stray tags that make them malformed now and then.
OPERATION_COMPLETIONS = st.builds("<think>{}</think>{}<answer>{}</answer>{}".format,
                                  PIECES, PIECES, PIECES, PIECES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(OPERATION_COMPLETIONS,
                          st.sampled_from(["B", "the b", "An answer!", "1,234.5", None])),
                min_size=1, max_size=8))
def test_text_operations(rows):
    agree(TEXT_OPERATIONS_SPEC, [r[0] for r in rows], {"gold": [r[1] for r in rows]})


RASTER_SPEC = """
spec raster version 1
input {
  pixels: raster[2] bands(Red, Nir) nodata 0
  sr: vector[3]
}
let ndvi = mean((pixels.Nir - pixels.Red) / (pixels.Nir + pixels.Red))
let green = frac((pixels.Nir - pixels.Red) / (pixels.Nir + pixels.Red) > 0.2)
let top = max(pixels.Nir)
let low = min(pixels.Red)
let spread = std(pixels.Nir)
let q = quantile(pixels.Red, 0.25)
let total = sum(sr)
let v = mean(sr) + sr[1]
level l {
  rule vegetated: ndvi > 0.1 and green >= 0.5
  rule stats: top > low and spread < 0.3 and q >= 0 soft 0.1
  rule vec: total > 1 or v < 0.5
}
"""
PIXELS = st.one_of(st.just(0.0), st.just(float("nan")), st.floats(0.01, 1.0))


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 3),
       st.lists(st.tuples(st.booleans(), st.lists(st.one_of(st.none(), st.floats(-1, 2)), min_size=3,
                                                  max_size=3)), min_size=1, max_size=4),
       st.data())
def test_rasters_and_vectors(height, width, rows, data):
    rasters, vectors = [], []
    for present, vector in rows:
        raster = None
        if present:
            values = data.draw(st.lists(PIXELS, min_size=2 * height * width, max_size=2 * height * width))
            raster = np.array(values, dtype=np.float64).reshape(2, height, width)
        rasters.append(raster)
        vectors.append([math.nan if v is None else v for v in vector])
    agree(RASTER_SPEC, [""] * len(rows), {"pixels": rasters, "sr": vectors})


TABLE_SPEC = """
spec table version 1
enum Kind { Solid, GroundGlass }
enum Plan { Nothing, CT12, CT6 }
input {
  kind: Kind
  size: float
  urgent: bool
}
table plan(kind: Kind, size: float, urgent: bool) -> Plan {
  Solid, < 6, false -> Nothing
  Solid, 6..8, false -> CT12
  Solid, > 8, _ -> CT6
  Solid, <= 8, true -> CT6
  GroundGlass, _, _ -> CT12
}
output {
  reply: tag "answer"
}
level l {
  rule follows: reply == plan(kind, size, urgent)
}
"""


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["Solid", "GroundGlass", None]),
                          st.one_of(st.none(), st.sampled_from([5.99, 6.0, 7.0, 8.0, 8.01, 30.0])),
                          st.one_of(st.none(), st.booleans()),
                          st.sampled_from(["Nothing", "CT12", "CT6", "ct12", "none"])),
                min_size=1, max_size=6))
def test_tables(rows):
    agree(TABLE_SPEC, [f"<answer>{r[3]}</answer>" for r in rows],
          {"kind": [r[0] for r in rows], "size": [r[1] for r in rows], "urgent": [r[2] for r in rows]})


def test_reference_by_hand():
    reference = Reference(TEXT_SPEC.format(logic="product"))
    result = reference.score("<think>water water NDWI value: 3.5</think><answer>lake</answer>",
                             {"label": "SeaLake", "gold": 3.0, "ok": True})
    assert result["rules"]["correct"] == 1.0 and result["applies"]["water"]
    assert result["levels"] == {"format": 1.0, "accuracy": 1.0, "knowledge": 1.0}
    assert result["reward"] == pytest.approx(3.5)
