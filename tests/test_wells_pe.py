"""The Wells score for PE of domain_specs/medical against medcalc-bench's calculator, and its
likelihood and work-up tables against the published cut-off (above 4: PE likely) and NICE NG158."""

from __future__ import annotations

import medcalc.wells_criteria_pe as medcalc_wells
import numpy as np
import pytest
import torch

import kdsl
from kdsl.io.resources import library_dir

SPEC = """
spec wells_against_medcalc version 1
import "medical/wells_pe" as wells

input {
  dvt_signs: bool
  pe_most_likely: bool
  heart_rate: float
  immobilised: bool
  recent_surgery: bool
  previous_pe: bool
  previous_dvt: bool
  haemoptysis: bool
  malignancy: bool
  d_dimer: wells.DDimer
}

let total = wells.score(dvt_signs, pe_most_likely, heart_rate, immobilised, recent_surgery,
                        previous_pe, previous_dvt, haemoptysis, malignancy)
output {
  risk_text: tag "risk"
  stated: risk_text as wells.Likelihood
  next_text: tag "next"
  stated_next: next_text as wells.NextStep
}

level l {
  rule likelihood: stated == wells.likelihood(total)
  rule next: stated_next == wells.next_step(total, d_dimer)
}
"""
FLAGS = ("dvt_signs", "pe_most_likely", "immobilised", "recent_surgery", "previous_pe", "previous_dvt",
         "haemoptysis", "malignancy")


def random_patients(n: int = 1500, seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    rates = rng.integers(50, 150, n).astype(float)
    at = rng.random(n) < 0.35
    rates[at] = rng.choice([99.0, 99.5, 100.0, 100.5, 101.0], size=int(at.sum()))
    flags = rng.random((n, len(FLAGS))) < 0.3
    results = rng.choice(["NotDone", "Negative", "Positive"], size=n)
    return [{**{name: bool(flags[i, k]) for k, name in enumerate(FLAGS)}, "heart_rate": float(rates[i]),
             "d_dimer": str(results[i])} for i in range(n)]


def medcalc_score(p: dict) -> float:
    return medcalc_wells.calculate_pe_wells_explanation({
        "clinical_dvt": p["dvt_signs"], "pe_number_one": p["pe_most_likely"],
        "heart_rate": (p["heart_rate"], "beats per minute"),
        "immobilization_for_3days": p["immobilised"], "surgery_in_past4weeks": p["recent_surgery"],
        "previous_pe": p["previous_pe"], "previous_dvt": p["previous_dvt"],
        "hemoptysis": p["haemoptysis"], "malignancy_with_treatment": p["malignancy"]})["Answer"]


def test_the_score_matches_medcalc_bench_on_every_patient():
    patients = random_patients()
    program = kdsl.loads(SPEC, "wells_against_medcalc.kd")
    columns = {name: [p[name] for p in patients] for name in patients[0]}
    scores = program.score([""] * len(patients), dtype=torch.float64, **columns)
    ours = scores.values["total"].tolist()
    theirs = [medcalc_score(p) for p in patients]
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert {99.5, 100.0, 100.5} <= {p["heart_rate"] for p in patients}
    assert min(theirs) == 0 and max(theirs) >= 9


@pytest.mark.parametrize("total, d_dimer, likelihood, step", [
    (0.0, "NotDone", "Unlikely", "DDimerTest"), (4.0, "NotDone", "Unlikely", "DDimerTest"),
    (4.0, "Negative", "Unlikely", "NoImaging"), (4.0, "Positive", "Unlikely", "CTPA"),
    (4.5, "NotDone", "Likely", "CTPA"), (4.5, "Negative", "Likely", "CTPA"), (12.5, "Positive", "Likely", "CTPA"),
])
def test_likelihood_and_work_up_follow_the_cut_off_and_nice(total, d_dimer, likelihood, step):
    # Totals from the sheet: 3 (DVT signs) + 1 + 0.5 steps built from the criteria.
    patient = {name: False for name in FLAGS} | {"heart_rate": 80.0, "d_dimer": d_dimer}
    remaining = total
    for name, points in (("dvt_signs", 3), ("pe_most_likely", 3), ("immobilised", 1.5), ("previous_pe", 1.5),
                         ("haemoptysis", 1), ("malignancy", 1)):
        if remaining >= points:
            patient[name], remaining = True, remaining - points
    if remaining == 1.5:
        patient["heart_rate"], remaining = 120.0, 0
    assert remaining == 0 and medcalc_score(patient) == total
    program = kdsl.loads(SPEC, "wells_against_medcalc.kd")
    completion = f"<risk>{likelihood}</risk><next>{step}</next>"
    scores = program.score([completion], **{k: [v] for k, v in patient.items()})
    assert scores.rules["likelihood"].item() == 1.0 and scores.rules["next"].item() == 1.0


def test_the_library_spec_is_a_points_sheet():
    from kdsl.frontend.parser import parse

    spec = parse((library_dir() / "medical" / "wells_pe.kd").read_text(encoding="utf-8"))
    (sheet,) = [d for d in spec.defs if d.criteria]
    assert [c.points for c in sheet.criteria] == [3, 3, 1.5, 1.5, 1.5, 1, 1]
