"""Missing and non-finite dataset values: one rule for every kind of column, counted per column
with their first rows by `kdsl score`, `kdsl test` and `kdsl train`'s dataset check, and refused
with `--strict`."""

import json
import math

import numpy as np
import pytest

import kdsl
from kdsl.cli import main
from kdsl.errors import KdslDataError
from kdsl.runtime.columns import MISSING, NOT_FINITE, InvalidValues

SPEC = """spec values version 1
input {
  v: float
  flag: bool
  kind: enum Kind { A, B }
  text: str
  sr: vector[3]
  box: box
  gold: boxes
  pixels: raster[1] bands(P)
}
level l {
  rule r: v > 0 and flag and kind == A and text == "x" and sr[0] > 0 and box.x2 > 0
  rule s: box_count(gold) >= 0 and mean(pixels.P) > 0
}
"""
GOOD = {"v": 1.0, "flag": True, "kind": "A", "text": "x", "sr": [1, 2, 3], "box": [0, 0, 1, 1],
        "gold": [[0, 0, 1, 1]], "pixels": np.ones((1, 2, 2))}


@pytest.fixture(scope="module")
def program():
    return kdsl.loads(SPEC, "values.kd")


def found(program, **changes) -> dict:
    row = {**GOOD, **changes}
    invalid = InvalidValues()
    scores = program.score(["", ""], invalid=invalid, **{k: [GOOD[k], row[k]] for k in GOOD})
    assert scores.reward.isfinite().all()
    assert scores.reward[0].item() == 1.0  # the good row beside it is untouched
    return {column: {reason: rows for reason, rows in reasons.items()}
            for column, reasons in invalid.rows.items()}


@pytest.mark.parametrize("column, value, reason", [
    ("v", None, MISSING), ("v", math.nan, MISSING), ("v", math.inf, NOT_FINITE),
    ("v", 10**400, NOT_FINITE), ("v", 1e39, NOT_FINITE),  # beyond float32: as invalid as inf
    ("flag", None, MISSING), ("flag", math.nan, MISSING),
    ("kind", None, MISSING), ("kind", math.nan, MISSING),
    ("text", None, MISSING), ("text", math.nan, MISSING),
    ("sr", None, MISSING), ("sr", [1, math.nan, 3], MISSING), ("sr", [1, None, 3], MISSING),
    ("sr", [1, math.inf, 3], NOT_FINITE), ("sr", [1e39, 2, 3], NOT_FINITE),
    ("box", None, MISSING), ("box", [0, 0, math.nan, 1], MISSING),
    ("box", [0, 0, math.inf, 1], NOT_FINITE),
    ("box", [5, 5, 1, 1], "a box with x2 < x1 or y2 < y1"),
    ("gold", None, MISSING), ("gold", [[0, 0, math.nan, 1]], MISSING),
    ("gold", [[0, 0, math.inf, 1]], NOT_FINITE), ("gold", [[0, 0, 1, 1]] * 1001, "more than 1000 boxes"),
    ("pixels", None, MISSING), ("pixels", np.full((1, 2, 2), np.inf), NOT_FINITE),
])
def test_one_rule_for_every_kind_of_column(program, column, value, reason):
    assert found(program, **{column: value}) == {column: {reason: [1]}}


def test_nan_pixels_are_nodata_not_counted(program):
    pixels = np.ones((1, 2, 2))
    pixels[0, 0, 0] = np.nan
    assert found(program, pixels=pixels) == {}


@pytest.mark.parametrize("column, value", [
    ("v", "nan"), ("v", "1.5"), ("sr", ["nan", 2, 3]), ("sr", ["1", "2", "3"]),
    ("box", ["0", 0, 1, 1]), ("gold", [["nan", 0, 1, 1]]),
])
def test_text_is_never_read_as_a_number(program, column, value):
    row = {**GOOD, column: value}
    with pytest.raises(KdslDataError) as caught:
        program.score([""], **{k: [row[k]] for k in GOOD})
    assert caught.value.message.startswith(f"row 0, column `{column}`: expected")


def test_tensor_columns_are_counted_too(program):
    import torch

    invalid = InvalidValues()
    columns = {k: [GOOD[k]] * 3 for k in GOOD}
    columns["v"] = torch.tensor([1.0, float("nan"), float("inf")])
    program.score(["", "", ""], invalid=invalid, **columns)
    assert invalid.rows == {"v": {MISSING: [1], NOT_FINITE: [2]}}
    assert invalid.lines() == ["column `v`: 1 missing (row 1); 1 not a finite number (row 2)"]


def test_counts_keep_the_first_rows_and_merge_across_batches():
    first, second = InvalidValues(), InvalidValues()
    for row in range(7):
        first.note("v", row, MISSING)
    second.note("v", 1, MISSING)
    first.merge(second, offset=100)
    assert first.counts == {"v": {MISSING: 8}}
    assert first.lines() == ["column `v`: 8 missing (rows 0, 1, 2, 3, 4, ...)"]


def write_rows(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


SMALL = "spec small version 1\ninput {\n  v: float\n  sr: vector[2]\n}\nlevel l {\n  rule r: v > 0 and sr[0] > 0\n}\n"


def test_kdsl_score_reports_invalid_values_and_strict_refuses_them(tmp_path, capsys):
    spec = tmp_path / "small.kd"
    spec.write_text(SMALL)
    data = tmp_path / "rows.jsonl"
    data.write_text('{"completion": "", "v": 1, "sr": [1, 2]}\n'
                    '{"completion": "", "v": NaN, "sr": [1, 2]}\n'
                    '{"completion": "", "v": 1e309, "sr": [Infinity, 2]}\n'
                    '{"completion": "", "v": null, "sr": null}\n')
    out = tmp_path / "out.jsonl"
    assert main(["score", str(spec), "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "invalid values, scored as invalid (--strict makes their rows bad rows):" in printed
    assert "column `v`: 2 missing (rows 1, 3); 1 not a finite number (row 2)" in printed
    assert "column `sr`: 1 missing (row 3); 1 not a finite number (row 2)" in printed
    assert main(["score", str(spec), "--data", str(data), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["invalid"]["v"] == {"missing": {"count": 2, "rows": [1, 3]},
                                       "not a finite number": {"count": 1, "rows": [2]}}
    assert main(["score", str(spec), "--data", str(data), "--out", str(out), "--strict"]) == 1
    err = capsys.readouterr().err
    assert f"{data}:3: row 2, column `v`: not a finite number (--strict)" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reward"] is None for r in rows] == [False, True, True, True]
    assert rows[1]["error"] == "column `v`: missing (--strict)"


def test_kdsl_test_reports_invalid_values_and_strict_makes_them_errors(tmp_path, capsys):
    spec = tmp_path / "small.kd"
    spec.write_text(SMALL)
    write_rows(tmp_path / "small.kdtest.jsonl", [
        {"name": "fine", "completion": "", "v": 1, "sr": [1, 1], "expect": ["r"]},
        {"name": "no value", "completion": "", "v": None, "sr": [1, 1], "expect": ["not r"]}])
    assert main(["test", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "invalid values, scored as invalid (--strict makes these cases errors):" in out
    assert f"no value ({tmp_path / 'small.kdtest.jsonl'}:2): column `v`: missing" in out
    assert main(["test", str(spec), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "column `v`: missing (--strict)" in out


def test_the_training_dataset_check_counts_invalid_values(tmp_path, capsys):
    from kdsl.io.rows import load_dataset
    from kdsl.training.train import check_dataset

    spec = tmp_path / "small.kd"
    spec.write_text(SMALL)
    data = tmp_path / "train.jsonl"
    write_rows(data, [{"prompt": "p", "v": 1.0, "sr": [1, 1]}, {"prompt": "p", "v": None, "sr": [1, 1]},
                      {"prompt": "p", "v": 2.0, "sr": [1, None]}])
    invalid = InvalidValues()
    assert check_dataset(kdsl.load(spec), load_dataset(str(data)), invalid) == []
    assert invalid.lines() == ["column `sr`: 1 missing (row 2)", "column `v`: 1 missing (row 1)"]
    # --strict stops before any model is loaded (the model named here does not exist)
    assert main(["train", str(spec), "--dataset", str(data), "--model", str(tmp_path / "none"),
                 "--strict"]) == 1
    err = capsys.readouterr().err
    assert "column `v`: 1 missing (row 1) (--strict)" in err
