"""CURB-65 and CHA2DS2-VASc of domain_specs/medical against the calculators of medcalc-bench.

Random patients (seeded, with many values exactly at the published thresholds) are scored twice:
in one batch by a small spec that imports the library specs, and one by one by medcalc-bench.
The two agree on every patient except where medcalc-bench departs from the published CURB-65
(Lim et al., Thorax 2003); there the library follows the paper, and the test asserts the size
and place of each departure instead of copying it:

- urea given in mmol/L: medcalc-bench rounds the amount to whole millimoles on its way to
  mg/dL (3.5 mmol/L becomes 11.2 mg/dL instead of 9.8) and then compares BUN with 19 mg/dL, so
  urea from 6.5 to 7.0 mmol/L earns a point that the paper's "urea > 7 mmol/L" does not give;
- BUN given in mg/dL: "> 19 mg/dL" is the paper's threshold rounded down (7 mmol/L of urea is
  19.61 mg/dL of BUN), so a fractional BUN above 19 and up to 19.61 mg/dL earns an extra point;
- blood pressure: medcalc-bench truncates to whole mmHg before comparing, so a diastolic pressure
  above 60 and below 61 mmHg counts as "60 or less" (unless the systolic already scores).

CHA2DS2-VASc agrees with the published definition (Lip et al., Chest 2010) everywhere.
"""

from __future__ import annotations

import medcalc.cha2ds2_vasc_score as medcalc_cha2ds2_vasc
import medcalc.curb_65 as medcalc_curb65
import numpy as np
import pytest
import torch

import kdsl

PATIENTS = 2000
SEED = 20240611

# BUN (mg/dL) that is exactly 7 mmol/L of urea: 7 x 2 x 14.007 mg of nitrogen per dL / 10.
BUN_EQUIVALENT_OF_7_MMOL_UREA = 7 * 28.014 / 10

SPEC = """
spec medical_scores_against_medcalc version 1
import "medical/curb65" as curb65
import "medical/cha2ds2_vasc" as cha2ds2_vasc

input {
  age_years: int
  female: bool
  confusion: bool
  urea_mmol_per_l: float
  bun_mg_per_dl: float
  respiratory_rate: float
  systolic_bp: float
  diastolic_bp: float
  congestive_heart_failure: bool
  hypertension: bool
  diabetes: bool
  stroke_tia_or_thromboembolism: bool
  vascular_disease: bool
}

let curb65_from_urea = curb65.score(confusion, urea_mmol_per_l, respiratory_rate, systolic_bp, \\
                                    diastolic_bp, age_years)
let curb65_from_bun = curb65.score(confusion, curb65.urea_mmol_per_l_from_bun(bun_mg_per_dl), \\
                                   respiratory_rate, systolic_bp, diastolic_bp, age_years)
let cha2ds2_vasc_score = cha2ds2_vasc.score(age_years, female, congestive_heart_failure, \\
                                            hypertension, diabetes, stroke_tia_or_thromboembolism, \\
                                            vascular_disease)

level scores {
  rule computed: valid(cha2ds2_vasc_score)
}
"""


def _mix(rng: np.random.Generator, n: int, spread: np.ndarray, at_thresholds: list[float],
         share_at_thresholds: float = 0.35) -> np.ndarray:
    """Values from `spread`, with a share of them replaced by values at or next to a threshold."""
    values = spread.astype(float)
    pick = rng.random(n) < share_at_thresholds
    values[pick] = rng.choice(at_thresholds, size=int(pick.sum()))
    return values


def random_patients(n: int = PATIENTS, seed: int = SEED) -> list[dict]:
    rng = np.random.default_rng(seed)
    ages = _mix(rng, n, rng.integers(18, 101, n), [64, 65, 66, 74, 75, 76]).astype(int)
    respiratory = _mix(rng, n, rng.integers(8, 46, n), [29, 29.5, 29.9, 30, 30.5, 31])
    systolic = _mix(rng, n, rng.integers(60, 201, n), [88, 89, 89.5, 90, 90.5, 91])
    diastolic = _mix(rng, n, rng.integers(30, 121, n), [59, 59.5, 60, 60.2, 60.5, 60.9, 61, 62])
    # Urea in mmol/L to one decimal (as UK laboratories report it), or BUN in mg/dL, mostly
    # whole numbers (as US laboratories report it) with some tenths around the threshold.
    urea = _mix(rng, n, np.round(rng.uniform(1.0, 30.0, n), 1),
                [6.0, 6.4, 6.5, 6.8, 6.9, 7.0, 7.1, 7.5, 8.0])
    bun = _mix(rng, n, rng.integers(4, 90, n), [18, 19, 19.3, 19.6, 19.7, 20, 21])
    in_mmol = rng.random(n) < 0.5
    flags = rng.random((n, 9)) < 0.35
    patients = []
    for i in range(n):
        patients.append({
            "age_years": int(ages[i]),
            "female": bool(flags[i, 0]),
            "confusion": bool(flags[i, 1]),
            "lab_unit": "mmol/L" if in_mmol[i] else "mg/dL",
            "lab_value": float(urea[i] if in_mmol[i] else bun[i]),
            "respiratory_rate": float(respiratory[i]),
            "systolic_bp": float(systolic[i]),
            "diastolic_bp": float(diastolic[i]),
            "congestive_heart_failure": bool(flags[i, 2]),
            "hypertension": bool(flags[i, 3]),
            "diabetes": bool(flags[i, 4]),
            "stroke": bool(flags[i, 5]),
            "tia": bool(flags[i, 6] and rng.random() < 0.5),
            "thromboembolism": bool(flags[i, 7] and rng.random() < 0.5),
            "vascular_disease": bool(flags[i, 8]),
        })
    return patients


def kdsl_scores(patients: list[dict]) -> dict[str, np.ndarray]:
    program = kdsl.loads(SPEC, "tests/medical_scores_against_medcalc.kd")
    columns = {
        "age_years": [p["age_years"] for p in patients],
        "female": [p["female"] for p in patients],
        "confusion": [p["confusion"] for p in patients],
        "urea_mmol_per_l": [p["lab_value"] if p["lab_unit"] == "mmol/L" else None for p in patients],
        "bun_mg_per_dl": [p["lab_value"] if p["lab_unit"] == "mg/dL" else None for p in patients],
        "respiratory_rate": [p["respiratory_rate"] for p in patients],
        "systolic_bp": [p["systolic_bp"] for p in patients],
        "diastolic_bp": [p["diastolic_bp"] for p in patients],
        "congestive_heart_failure": [p["congestive_heart_failure"] for p in patients],
        "hypertension": [p["hypertension"] for p in patients],
        "diabetes": [p["diabetes"] for p in patients],
        "stroke_tia_or_thromboembolism": [p["stroke"] or p["tia"] or p["thromboembolism"]
                                          for p in patients],
        "vascular_disease": [p["vascular_disease"] for p in patients],
    }
    scores = program.score([""] * len(patients), **columns)
    from_mmol = np.array([p["lab_unit"] == "mmol/L" for p in patients])
    urea_valid = scores.valid["curb65_from_urea"].cpu().numpy()
    bun_valid = scores.valid["curb65_from_bun"].cpu().numpy()
    # Each patient has one laboratory value; the other column is missing, so its score is invalid.
    assert (urea_valid == from_mmol).all() and (bun_valid == ~from_mmol).all()
    assert scores.valid["cha2ds2_vasc_score"].all()
    curb65 = torch.where(torch.from_numpy(from_mmol), scores.values["curb65_from_urea"],
                         scores.values["curb65_from_bun"])
    return {"curb65": curb65.cpu().numpy(),
            "cha2ds2_vasc": scores.values["cha2ds2_vasc_score"].cpu().numpy()}


def medcalc_curb65_score(p: dict) -> int:
    return medcalc_curb65.curb_65_explanation({
        "age": (p["age_years"], "years"),
        "confusion": p["confusion"],
        "bun": (p["lab_value"], p["lab_unit"]),
        "respiratory_rate": (p["respiratory_rate"], "breaths per minute"),
        "sys_bp": (p["systolic_bp"], "mm hg"),
        "dia_bp": (p["diastolic_bp"], "mm hg"),
    })["Answer"]


def medcalc_cha2ds2_vasc_score(p: dict) -> int:
    return medcalc_cha2ds2_vasc.generate_cha2ds2_vasc_explanation({
        "age": (p["age_years"], "years"),
        "sex": "Female" if p["female"] else "Male",
        "chf": p["congestive_heart_failure"],
        "hypertension": p["hypertension"],
        "diabetes": p["diabetes"],
        "stroke": p["stroke"],
        "tia": p["tia"],
        "thromboembolism": p["thromboembolism"],
        "vascular_disease": p["vascular_disease"],
    })["Answer"]


def medcalc_extra_urea_point(p: dict) -> bool:
    """Where medcalc-bench gives the urea point and the published "urea > 7 mmol/L" does not."""
    value = p["lab_value"]
    if p["lab_unit"] == "mmol/L":
        return 6.5 <= value <= 7.0
    return 19 < value <= BUN_EQUIVALENT_OF_7_MMOL_UREA


def medcalc_extra_blood_pressure_point(p: dict) -> bool:
    """Where medcalc-bench's truncation to whole mmHg makes a diastolic above 60 count as 60."""
    return 60 < p["diastolic_bp"] < 61 and p["systolic_bp"] >= 90


@pytest.fixture(scope="module")
def patients_and_scores():
    patients = random_patients()
    return patients, kdsl_scores(patients)


def test_curb65_matches_medcalc_bench_except_where_it_departs_from_the_paper(patients_and_scores):
    patients, scores = patients_and_scores
    assert len(patients) >= 1000
    mismatches = []
    departures = {"urea_mmol": 0, "urea_bun": 0, "blood_pressure": 0}
    for i, p in enumerate(patients):
        extra_urea = medcalc_extra_urea_point(p)
        extra_bp = medcalc_extra_blood_pressure_point(p)
        if extra_urea:
            departures["urea_mmol" if p["lab_unit"] == "mmol/L" else "urea_bun"] += 1
        departures["blood_pressure"] += extra_bp
        expected_from_medcalc = medcalc_curb65_score(p) - extra_urea - extra_bp
        if scores["curb65"][i] != expected_from_medcalc:
            mismatches.append((i, p, float(scores["curb65"][i]), expected_from_medcalc))
    assert not mismatches, f"{len(mismatches)} patients differ, first: {mismatches[:3]}"
    # The departures are really exercised, and most patients are compared one for one.
    assert all(count >= 20 for count in departures.values()), departures
    assert sum(departures.values()) < len(patients) / 4


def test_cha2ds2_vasc_matches_medcalc_bench_on_every_patient(patients_and_scores):
    patients, scores = patients_and_scores
    expected = np.array([medcalc_cha2ds2_vasc_score(p) for p in patients])
    different = np.flatnonzero(scores["cha2ds2_vasc"] != expected)
    assert different.size == 0, [(patients[i], scores["cha2ds2_vasc"][i], expected[i])
                                 for i in different[:3]]
    # Every score from 0 to 9 occurs, so every combination of points is reachable.
    assert set(expected.tolist()) == set(range(10))


def test_patients_sit_on_every_threshold():
    patients = random_patients()
    ages = {p["age_years"] for p in patients}
    assert {64, 65, 74, 75} <= ages
    assert {29.9, 30.0} <= {p["respiratory_rate"] for p in patients}
    assert {89.5, 90.0} <= {p["systolic_bp"] for p in patients}
    assert {60.0, 60.5, 61.0} <= {p["diastolic_bp"] for p in patients}
    assert 7.0 in {p["lab_value"] for p in patients if p["lab_unit"] == "mmol/L"}
    assert {19.0, 20.0} <= {p["lab_value"] for p in patients if p["lab_unit"] == "mg/dL"}


# Published thresholds, one criterion at a time, with both libraries where they agree.
BASE = {"age_years": 40, "confusion": False, "lab_unit": "mmol/L", "lab_value": 5.0,
        "respiratory_rate": 16.0, "systolic_bp": 120.0, "diastolic_bp": 80.0, "female": False,
        "congestive_heart_failure": False, "hypertension": False, "diabetes": False,
        "stroke": False, "tia": False, "thromboembolism": False, "vascular_disease": False}


@pytest.mark.parametrize(("change", "curb65_points", "medcalc_agrees"), [
    ({}, 0, True),
    ({"age_years": 64}, 0, True),
    ({"age_years": 65}, 1, True),
    ({"confusion": True}, 1, True),
    ({"lab_value": 7.0}, 0, False),          # the paper: "urea > 7 mmol/L"
    ({"lab_value": 7.1}, 1, True),
    ({"lab_unit": "mg/dL", "lab_value": 19.0}, 0, True),
    ({"lab_unit": "mg/dL", "lab_value": 19.5}, 0, False),   # 6.96 mmol/L of urea
    ({"lab_unit": "mg/dL", "lab_value": 20.0}, 1, True),
    ({"respiratory_rate": 29.9}, 0, True),
    ({"respiratory_rate": 30.0}, 1, True),
    ({"systolic_bp": 90.0}, 0, True),
    ({"systolic_bp": 89.5}, 1, True),
    ({"diastolic_bp": 60.0}, 1, True),
    ({"diastolic_bp": 60.5}, 0, False),      # the paper: "diastolic <= 60 mmHg"
    ({"diastolic_bp": 61.0}, 0, True),
    ({"age_years": 80, "confusion": True, "lab_value": 12.0, "respiratory_rate": 32.0,
      "systolic_bp": 85.0}, 5, True),
])
def test_curb65_thresholds(change, curb65_points, medcalc_agrees):
    patient = {**BASE, **change}
    assert kdsl_scores([patient])["curb65"][0] == curb65_points
    assert (medcalc_curb65_score(patient) == curb65_points) == medcalc_agrees


@pytest.mark.parametrize(("change", "points"), [
    ({}, 0),
    ({"age_years": 64}, 0),
    ({"age_years": 65}, 1),
    ({"age_years": 74}, 1),
    ({"age_years": 75}, 2),
    ({"female": True}, 1),
    ({"tia": True}, 2),
    ({"stroke": True, "thromboembolism": True}, 2),     # one criterion, however many events
    ({"age_years": 90, "female": True, "congestive_heart_failure": True, "hypertension": True,
      "diabetes": True, "stroke": True, "vascular_disease": True}, 9),
])
def test_cha2ds2_vasc_thresholds(change, points):
    patient = {**BASE, **change}
    assert kdsl_scores([patient])["cha2ds2_vasc"][0] == points
    assert medcalc_cha2ds2_vasc_score(patient) == points
