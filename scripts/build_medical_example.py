"""Build the data of examples/medical/: CURB-65 and CHA2DS2-VASc patients as training sets, and a
few scored completions of each.

medcalc-bench (the `medcalc` package) ships its calculators only, no patient notes or test data,
so the patients are generated here (seeded): values spread over their clinical range with a share
placed exactly at the CURB-65 thresholds, written up as short admission notes, half with urea in
mmol/L (UK) and half with blood urea nitrogen in mg/dL (US). Each patient is scored twice, by the
example spec (through medical/curb65) and by medcalc-bench's calculator; the two agree on every
patient except where medcalc-bench rounds urea given in mmol/L (6.5-7.0 mmol/L earns it a point
that the published "urea > 7 mmol/L" does not; see tests/test_medical_scores.py), which the
script counts and checks.

The CHA2DS2-VASc patients (atrial fibrillation, for the stroke-risk score) are generated the same
way, from their own seed: ages at and around 65 and 75, each risk factor present or explicitly
absent in the note, stroke, TIA or systemic embolism named as such. Both calculators agree on
every one of them (there is no rounding in this score); the script checks it.

Writes:
  examples/medical/curb65_patients.jsonl     `prompt` (one user message), the spec's input columns, and
                                             `medcalc_bench_score` for reference
  examples/medical/curb65_completions.jsonl  hand-shaped completions for three patients, with
                                             their input columns, for `kdsl score`
  examples/medical/cha2ds2_vasc_patients.jsonl, cha2ds2_vasc_completions.jsonl: the same for
                                             cha2ds2_vasc_grading.kd

    python scripts/build_medical_example.py [--rows 96] [--seed 7] [--out-dir examples/medical]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import medcalc.cha2ds2_vasc_score as medcalc_cha2ds2_vasc
import medcalc.curb_65 as medcalc_curb65
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "medical" / "curb65_grading.kd"
AF_SPEC = ROOT / "examples" / "medical" / "cha2ds2_vasc_grading.kd"
INSTRUCTION = ("Work through the five CURB-65 criteria inside <think>...</think>, then give the "
               "score alone inside <answer>...</answer> and the risk group (low, moderate or high) "
               "inside <risk>...</risk>.")
PRESENTATIONS = [
    "fever, productive cough and pleuritic chest pain for three days",
    "two days of cough, breathlessness and rigors",
    "fever and cough with green sputum since yesterday",
    "a week of malaise, cough and rising breathlessness",
]
FINDINGS = ["right lower lobe consolidation", "left lower lobe consolidation",
            "patchy right middle lobe shadowing", "bilateral basal consolidation"]


def chat(text: str) -> list[dict]:
    """The prompt as one user message, so an instruction-tuned model gets its chat template."""
    return [{"role": "user", "content": text}]


def pick(rng: np.random.Generator, spread, thresholds, share: float = 0.35):
    """A value from `spread`, or with probability `share` one at or next to a threshold."""
    return rng.choice(thresholds) if rng.random() < share else spread()


def patient(rng: np.random.Generator) -> dict:
    uk = rng.random() < 0.5
    return {
        "age_years": int(pick(rng, lambda: rng.integers(19, 96), [64, 65, 66])),
        "sex": "woman" if rng.random() < 0.5 else "man",
        "confusion": bool(rng.random() < 0.25),
        "urea_mmol_per_l": round(float(pick(rng, lambda: rng.uniform(2.0, 25.0), [6.9, 7.0, 7.1])), 1)
        if uk else None,
        "bun_mg_per_dl": float(pick(rng, lambda: rng.integers(5, 81), [19, 20])) if not uk else None,
        "respiratory_rate": float(pick(rng, lambda: rng.integers(12, 41), [29, 30, 31])),
        "systolic_bp": float(pick(rng, lambda: rng.integers(75, 181), [89, 90, 91])),
        "diastolic_bp": float(pick(rng, lambda: rng.integers(40, 101), [59, 60, 61])),
        "presentation": str(rng.choice(PRESENTATIONS)),
        "finding": str(rng.choice(FINDINGS)),
    }


def note(p: dict) -> str:
    mental = ("He" if p["sex"] == "man" else "She") + (
        " is newly confused and disoriented to time and place (abbreviated mental test 6/10)."
        if p["confusion"] else " is alert and fully oriented (abbreviated mental test 10/10).")
    lab = (f"Serum urea {p['urea_mmol_per_l']:.1f} mmol/L." if p["urea_mmol_per_l"] is not None
           else f"Blood urea nitrogen {p['bun_mg_per_dl']:.0f} mg/dL.")
    return (f"A {p['age_years']}-year-old {p['sex']} presents with {p['presentation']}. Chest X-ray "
            f"shows {p['finding']}. {mental} Respiratory rate {p['respiratory_rate']:.0f}/min, "
            f"blood pressure {p['systolic_bp']:.0f}/{p['diastolic_bp']:.0f} mmHg. {lab} "
            f"What is the patient's CURB-65 score? {INSTRUCTION}")


def medcalc_score(p: dict) -> int:
    lab = ((p["urea_mmol_per_l"], "mmol/L") if p["urea_mmol_per_l"] is not None
           else (p["bun_mg_per_dl"], "mg/dL"))
    return int(medcalc_curb65.curb_65_explanation({
        "age": (p["age_years"], "years"), "confusion": p["confusion"], "bun": lab,
        "respiratory_rate": (p["respiratory_rate"], "breaths per minute"),
        "sys_bp": (p["systolic_bp"], "mm hg"), "dia_bp": (p["diastolic_bp"], "mm hg"),
    })["Answer"])


COLUMNS = ("age_years", "confusion", "urea_mmol_per_l", "bun_mg_per_dl", "respiratory_rate",
           "systolic_bp", "diastolic_bp")


def spec_scores(patients: list[dict]) -> list[int]:
    import kdsl

    program = kdsl.load(SPEC)
    scores = program.score([""] * len(patients), **{c: [p[c] for p in patients] for c in COLUMNS})
    assert bool(scores.valid["curb65_score"].all())
    return [int(v) for v in scores.values["curb65_score"].tolist()]


def group(score: int) -> str:
    return "low" if score <= 1 else "moderate" if score == 2 else "high"


def worked_answer(p: dict, score: int, stated: int | None = None) -> str:
    """A completion that goes through the criteria by the published thresholds."""
    if p["urea_mmol_per_l"] is not None:
        urea = f"urea {p['urea_mmol_per_l']:.1f} mmol/L"
        urea_point = p["urea_mmol_per_l"] > 7
    else:
        urea = f"BUN {p['bun_mg_per_dl']:.0f} mg/dL ({p['bun_mg_per_dl'] * 10 / 28.014:.1f} mmol/L urea)"
        urea_point = p["bun_mg_per_dl"] * 10 / 28.014 > 7
    points = [
        f"Confusion: {'yes' if p['confusion'] else 'no'} ({int(p['confusion'])}).",
        f"Urea: {urea}, {'above' if urea_point else 'not above'} 7 mmol/L ({int(urea_point)}).",
        f"Respiratory rate {p['respiratory_rate']:.0f}/min ({int(p['respiratory_rate'] >= 30)}).",
        f"Blood pressure {p['systolic_bp']:.0f}/{p['diastolic_bp']:.0f} "
        f"({int(p['systolic_bp'] < 90 or p['diastolic_bp'] <= 60)}).",
        f"Age {p['age_years']} ({int(p['age_years'] >= 65)}).",
    ]
    said = score if stated is None else stated
    return f"<think>{' '.join(points)}</think><answer>{said}</answer><risk>{group(said)}</risk>"


# ---- CHA2DS2-VASc: stroke risk in atrial fibrillation ------------------------------------------
AF_INSTRUCTION = ("Work through the seven CHA2DS2-VASc criteria inside <think>...</think>, then give "
                  "the score alone inside <answer>...</answer> and the stroke-risk group (low, "
                  "moderate or high) inside <risk>...</risk>.")
AF_PRESENTATIONS = [
    "palpitations for two days; the ECG shows atrial fibrillation at 118/min",
    "atrial fibrillation found on a routine pulse check",
    "breathlessness on exertion; the ECG shows atrial fibrillation",
    "a first episode of atrial fibrillation after a chest infection",
]
# How the note says each factor is present, and absent (the absent ones are written too, so the
# answer is in the note).
AF_FACTORS = {
    "congestive_heart_failure": (["heart failure with an ejection fraction of 35%",
                                  "congestive heart failure"],
                                 "no heart failure"),
    "hypertension": (["hypertension treated with amlodipine", "long-standing hypertension"],
                     "no hypertension"),
    "diabetes": (["type 2 diabetes on metformin", "insulin-treated diabetes"], "no diabetes"),
    "vascular_disease": (["a myocardial infarction four years ago", "peripheral artery disease"],
                         "no vascular disease"),
}
AF_EVENTS = ["an ischaemic stroke two years ago", "a transient ischaemic attack last year",
             "a systemic embolism to the leg"]
AF_COLUMNS = ("age_years", "sex", "congestive_heart_failure", "hypertension", "diabetes",
              "stroke_tia_or_thromboembolism", "vascular_disease")


def af_patient(rng: np.random.Generator) -> dict:
    p = {
        "age_years": int(pick(rng, lambda: rng.integers(40, 96), [64, 65, 66, 74, 75, 76], share=0.4)),
        "sex": "woman" if rng.random() < 0.5 else "man",
        "congestive_heart_failure": bool(rng.random() < 0.2),
        "hypertension": bool(rng.random() < 0.5),
        "diabetes": bool(rng.random() < 0.25),
        "vascular_disease": bool(rng.random() < 0.2),
        "stroke_tia_or_thromboembolism": bool(rng.random() < 0.2),
        "presentation": str(rng.choice(AF_PRESENTATIONS)),
    }
    p["event"] = int(rng.integers(len(AF_EVENTS))) if p["stroke_tia_or_thromboembolism"] else None
    p["phrasing"] = [int(rng.integers(2)) for _ in AF_FACTORS]
    return p


def af_note(p: dict) -> str:
    present, absent = [], []
    for (column, (yes, no)), choice in zip(AF_FACTORS.items(), p["phrasing"]):
        if p[column]:
            present.append(yes[choice])
        else:
            absent.append(no)
    if p["stroke_tia_or_thromboembolism"]:
        present.append(AF_EVENTS[p["event"]])
    else:
        absent.append("no previous stroke, TIA or embolism")
    history = []
    if present:
        history.append("Past history: " + "; ".join(present) + ".")
    if absent:
        history.append("There is " + ", ".join(absent) + ".")
    return (f"A {p['age_years']}-year-old {p['sex']} presents with {p['presentation']}. "
            f"{' '.join(history)} What is the patient's CHA2DS2-VASc score? {AF_INSTRUCTION}")


def af_medcalc_score(p: dict) -> int:
    event = p["event"]
    return int(medcalc_cha2ds2_vasc.generate_cha2ds2_vasc_explanation({
        "age": (p["age_years"], "years"), "sex": "Female" if p["sex"] == "woman" else "Male",
        "chf": p["congestive_heart_failure"], "hypertension": p["hypertension"],
        "diabetes": p["diabetes"], "vascular_disease": p["vascular_disease"],
        "stroke": event == 0, "tia": event == 1, "thromboembolism": event == 2,
    })["Answer"])


def af_spec_scores(patients: list[dict]) -> list[int]:
    import kdsl

    program = kdsl.load(AF_SPEC)
    scores = program.score([""] * len(patients), **{c: [p[c] for p in patients] for c in AF_COLUMNS})
    assert bool(scores.valid["cha2ds2_vasc_score"].all())
    return [int(v) for v in scores.values["cha2ds2_vasc_score"].tolist()]


def af_group(female: bool, score: int) -> str:
    low_end = 1 if female else 0  # the 2020 ESC thresholds, one point higher for women
    return "Low" if score <= low_end else "Moderate" if score == low_end + 1 else "High"


def af_worked_answer(p: dict, score: int, stated: int | None = None) -> str:
    """A completion that goes through the seven criteria."""
    age = p["age_years"]
    age_points = 2 if age >= 75 else 1 if age >= 65 else 0
    female = p["sex"] == "woman"
    points = [
        f"Congestive heart failure: {'yes' if p['congestive_heart_failure'] else 'no'} "
        f"({int(p['congestive_heart_failure'])}).",
        f"Hypertension: {'yes' if p['hypertension'] else 'no'} ({int(p['hypertension'])}).",
        f"Age {age} ({age_points}).",
        f"Diabetes: {'yes' if p['diabetes'] else 'no'} ({int(p['diabetes'])}).",
        f"Stroke, TIA or embolism: {'yes' if p['stroke_tia_or_thromboembolism'] else 'no'} "
        f"({2 * int(p['stroke_tia_or_thromboembolism'])}).",
        f"Vascular disease: {'yes' if p['vascular_disease'] else 'no'} ({int(p['vascular_disease'])}).",
        f"Sex: {'female' if female else 'male'} ({int(female)}).",
    ]
    said = score if stated is None else stated
    return (f"<think>{' '.join(points)}</think><answer>{said}</answer>"
            f"<risk>{af_group(female, said).lower()}</risk>")


def build_af(rows: int, seed: int, out_dir: Path) -> int:
    rng = np.random.default_rng(seed)
    patients = [af_patient(rng) for _ in range(rows)]
    ours = af_spec_scores(patients)
    theirs = [af_medcalc_score(p) for p in patients]
    for p, a, b in zip(patients, ours, theirs):
        if a != b:
            print(f"unexpected disagreement: {p} spec {a}, medcalc-bench {b}", file=sys.stderr)
            return 1
    with open(out_dir / "cha2ds2_vasc_patients.jsonl", "w", encoding="utf-8") as f:
        for p, b in zip(patients, theirs):
            f.write(json.dumps({"prompt": chat(af_note(p)), **{c: p[c] for c in AF_COLUMNS},
                                "medcalc_bench_score": b}) + "\n")
    with open(out_dir / "cha2ds2_vasc_completions.jsonl", "w", encoding="utf-8") as f:
        for p, score in list(zip(patients, ours))[:3]:
            off = score + 1 if score < 9 else score - 1
            group = af_group(p["sex"] == "woman", score).lower()
            for completion in (af_worked_answer(p, score), af_worked_answer(p, score, stated=off),
                               f"<answer>{score}</answer><risk>{group}</risk>"):
                f.write(json.dumps({"completion": completion, **{c: p[c] for c in AF_COLUMNS}}) + "\n")
    counts = np.bincount(ours, minlength=10).tolist()
    print(f"wrote {rows} patients to {out_dir / 'cha2ds2_vasc_patients.jsonl'} "
          f"(CHA2DS2-VASc 0-9: {counts}); medcalc-bench agrees on all {rows}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--af-rows", type=int, default=96)
    parser.add_argument("--af-seed", type=int, default=11)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "examples" / "medical")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    patients = [patient(rng) for _ in range(args.rows)]
    ours = spec_scores(patients)
    theirs = [medcalc_score(p) for p in patients]
    departures = 0
    for p, a, b in zip(patients, ours, theirs):
        if a == b:
            continue
        # The only documented departure possible with these values (whole-number BUN and blood
        # pressure): medcalc-bench's extra urea point for 6.5-7.0 mmol/L.
        urea = p["urea_mmol_per_l"]
        if not (urea is not None and 6.5 <= urea <= 7.0 and b == a + 1):
            print(f"unexpected disagreement: {p} spec {a}, medcalc-bench {b}", file=sys.stderr)
            return 1
        departures += 1

    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": chat(note(p)), **{c: p[c] for c in COLUMNS}, "medcalc_bench_score": b}
            for p, b in zip(patients, theirs)]
    with open(args.out_dir / "curb65_patients.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")

    # Completions for three patients on which both calculators agree: a worked right answer, a
    # worked answer one point off (with the group of the stated score), and an answer without
    # reasoning (which the format gate stops).
    agreed = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a == b][:3]
    with open(args.out_dir / "curb65_completions.jsonl", "w", encoding="utf-8") as f:
        for i in agreed:
            p, score = patients[i], ours[i]
            off = score + 1 if score < 5 else score - 1
            for completion in (worked_answer(p, score), worked_answer(p, score, stated=off),
                               f"<answer>{score}</answer><risk>{group(score)}</risk>"):
                f.write(json.dumps({"completion": completion, **{c: p[c] for c in COLUMNS}}) + "\n")

    counts = np.bincount(ours, minlength=6).tolist()
    print(f"wrote {len(rows)} patients to {args.out_dir / 'curb65_patients.jsonl'} "
          f"(CURB-65 0-5: {counts}); medcalc-bench agrees on {len(rows) - departures}, "
          f"departs on {departures} (urea 6.5-7.0 mmol/L)")
    print(f"wrote {3 * len(agreed)} completions to {args.out_dir / 'curb65_completions.jsonl'}")
    return build_af(args.af_rows, args.af_seed, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
