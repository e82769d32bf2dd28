"""The end-to-end CURB-65 and CHA2DS2-VASc examples of examples/medical/: their data is what the
build script writes, each dataset fits its spec as `kdsl train` checks it, and `kdsl score` gives
the rewards the README states."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import kdsl
from kdsl.cli import Console, main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "medical"
SPEC = EXAMPLE / "curb65_grading.kd"
PATIENTS = EXAMPLE / "curb65_patients.jsonl"
COMPLETIONS = EXAMPLE / "curb65_completions.jsonl"
AF_SPEC = EXAMPLE / "cha2ds2_vasc_grading.kd"
AF_PATIENTS = EXAMPLE / "cha2ds2_vasc_patients.jsonl"
AF_COMPLETIONS = EXAMPLE / "cha2ds2_vasc_completions.jsonl"


def build_script():
    spec = importlib.util.spec_from_file_location("build_medical_example",
                                                  ROOT / "scripts" / "build_medical_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_script_writes_the_committed_data(tmp_path):
    assert build_script().main(["--out-dir", str(tmp_path)]) == 0
    for name in (PATIENTS.name, COMPLETIONS.name, AF_PATIENTS.name, AF_COMPLETIONS.name):
        assert (tmp_path / name).read_text() == (EXAMPLE / name).read_text(), name


def test_the_dataset_fits_the_spec():
    from kdsl.io.rows import load_dataset
    from kdsl.training.train import check_dataset

    program = kdsl.load(SPEC)
    dataset = load_dataset(str(PATIENTS))
    assert check_dataset(program, dataset) == []
    assert len(dataset) == 96 and "prompt" in dataset.column_names


def test_every_row_has_one_laboratory_value_and_a_note_that_states_it():
    for row in read_jsonl(PATIENTS):
        urea, bun = row["urea_mmol_per_l"], row["bun_mg_per_dl"]
        assert (urea is None) != (bun is None)
        (message,) = row["prompt"]  # one user message, for the model's chat template
        assert message["role"] == "user"
        note = message["content"]
        assert (f"urea {urea:.1f} mmol/L" if urea is not None else f"nitrogen {bun:.0f} mg/dL") in note
        assert f"{row['age_years']}-year-old" in note
        assert f"{row['systolic_bp']:.0f}/{row['diastolic_bp']:.0f} mmHg" in note


def test_the_spec_agrees_with_medcalc_bench_except_on_urea_of_6_5_to_7():
    rows = read_jsonl(PATIENTS)
    columns = {name: [row[name] for row in rows] for name in kdsl.load(SPEC).input_names}
    scores = kdsl.load(SPEC).score([""] * len(rows), **columns)
    ours = [int(v) for v in scores.values["curb65_score"].tolist()]
    departures = [(row, a) for row, a in zip(rows, ours) if a != row["medcalc_bench_score"]]
    assert all(row["urea_mmol_per_l"] is not None and 6.5 <= row["urea_mmol_per_l"] <= 7.0
               and row["medcalc_bench_score"] == a + 1 for row, a in departures)
    assert 0 < len(departures) < len(rows) / 4
    assert set(ours) == set(range(6))  # every score from 0 to 5 occurs


def test_kdsl_score_gives_the_rewards_of_the_readme(tmp_path):
    out_file = tmp_path / "scored.jsonl"
    out, err = io.StringIO(), io.StringIO()
    code = main(["score", str(SPEC), "--data", str(COMPLETIONS), "--out", str(out_file)],
                Console(out, err))
    assert code == 0, err.getvalue()
    rewards = [round(row["reward"], 3) for row in read_jsonl(out_file)]
    assert rewards == [3.5, 1.5, 0.667] * 3


def test_the_cha2ds2_vasc_dataset_fits_its_spec_and_agrees_with_medcalc_bench():
    from kdsl.io.rows import load_dataset
    from kdsl.training.train import check_dataset

    program = kdsl.load(AF_SPEC)
    dataset = load_dataset(str(AF_PATIENTS))
    assert check_dataset(program, dataset) == []
    rows = read_jsonl(AF_PATIENTS)
    scores = program.score([""] * len(rows), **{n: [r[n] for r in rows] for n in program.input_names})
    ours = [int(v) for v in scores.values["cha2ds2_vasc_score"].tolist()]
    assert ours == [row["medcalc_bench_score"] for row in rows]
    assert len(set(ours)) >= 8  # the scores spread over the range
    for row in rows:  # every factor is stated in the note, present or absent
        (message,) = row["prompt"]
        note = message["content"]
        assert f"{row['age_years']}-year-old {row['sex']}" in note
        assert ("heart failure" in note) and ("hypertension" in note) and ("diabetes" in note)
        assert row["stroke_tia_or_thromboembolism"] == ("no previous stroke" not in note)


def test_kdsl_score_gives_the_cha2ds2_vasc_rewards_of_the_readme(tmp_path):
    out_file = tmp_path / "scored.jsonl"
    out, err = io.StringIO(), io.StringIO()
    code = main(["score", str(AF_SPEC), "--data", str(AF_COMPLETIONS), "--out", str(out_file)],
                Console(out, err))
    assert code == 0, err.getvalue()
    rewards = [round(row["reward"], 3) for row in read_jsonl(out_file)]
    # worked right answer; one point off (2.5 when the group stays the same, 1.5 when it changes);
    # no reasoning (the gate closes)
    assert rewards == [3.5, 2.5, 0.667, 3.5, 1.5, 0.667, 3.5, 2.5, 0.667]
