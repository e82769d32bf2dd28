"""``kdsl ablate`` end to end on the embedded tiny model: variants x seeds, each evaluated with
the full spec on the same held-out rows along the steps; the table, the JSON, the plot and a
resume that trains only what is missing."""

from __future__ import annotations

import json

import pytest

import kdsl
from kdsl.cli import main
from kdsl.errors import KdslError
from kdsl.tools import ablation

SPEC_PATH = "examples/landsat_landcover.kd"

CONFIG = """
per_device_train_batch_size: 8
num_generations: 4
max_completion_length: 48
save_steps: 100
"""


def test_two_variants_two_seeds_with_a_resume(tmp_path, capsys):
    (tmp_path / "train.yaml").write_text(CONFIG)
    out = tmp_path / "ablation"
    argv = ["ablate", SPEC_PATH, "--variant", "full", "--variant", "without knowledge",
            "--seeds", "2", "--max-steps", "2", "--eval-every", "1", "--eval-rows", "4",
            "--config", str(tmp_path / "train.yaml"), "--output-dir", str(out), "--target", "0.5"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "full" in table and "without knowledge" in table and "steps to 0.5" in table
    result = json.loads((out / "ablation.json").read_text())
    assert result["metric"] == "correct" and result["seeds"] == [0, 1]
    assert set(result["variants"]) == {"full", "without knowledge"}
    for figures in result["variants"].values():
        assert figures["finished_seeds"] == 2
        for seed in ("0", "1"):
            curve = figures["seeds"][seed]["curve"]
            assert [c["step"] for c in curve] == [0, 1, 2]
            assert all(c["rows"] == 4 and 0.0 <= c["metric"] <= 1.0 for c in curve)
    # the same held-out rows and the same start: step 0 is the same model, so the same figures
    starts = {json.dumps(f["seeds"][s]["curve"][0]) for f in result["variants"].values() for s in ("0", "1")}
    assert len(starts) == 1
    # the accuracy-only variant trained without the knowledge level, and was scored with it
    without = out / "without-knowledge"
    assert "level knowledge" not in (without / "spec.kd").read_text()
    assert "level knowledge" not in (without / "seed-0" / "kdsl_run" / "spec.kd").read_text()
    held = json.loads((without / "seed-0" / "kdsl_run" / "heldout.jsonl").read_text().splitlines()[-1])
    assert "knowledge" in held["levels"]
    trained = json.loads((without / "seed-0" / "kdsl_run" / "trainer_state.json").read_text())
    assert not any("kdsl/level/knowledge" in e for e in trained["log_history"])
    config = json.loads((out / "full" / "seed-1" / "kdsl_run" / "config.json").read_text())
    assert config["seed"] == 1 and config["max_steps"] == 2
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # run again: nothing is trained; remove one run: only that one is trained again
    kept = (out / "full" / "seed-0" / "kdsl_run" / "summary.json").stat().st_mtime_ns
    import shutil

    shutil.rmtree(out / "without-knowledge" / "seed-1")
    assert main(argv) == 0
    capsys.readouterr()
    assert (out / "full" / "seed-0" / "kdsl_run" / "summary.json").stat().st_mtime_ns == kept
    again = json.loads((out / "ablation.json").read_text())
    assert again["variants"]["without knowledge"]["finished_seeds"] == 2
    assert again["variants"]["full"] == result["variants"]["full"]


def test_variants_are_checked_against_the_levels():
    program = kdsl.load(SPEC_PATH)
    assert ablation.parse_variant("without knowledge", program.level_names).levels == ("knowledge",)
    assert ablation.parse_variant("prompt knowledge", program.level_names).kind == "prompt"
    with pytest.raises(KdslError, match="did you mean `knowledge`"):
        ablation.parse_variant("without knowlege", program.level_names)
    with pytest.raises(KdslError, match="removes every level"):
        ablation.parse_variant("without format accuracy knowledge", program.level_names)
    with pytest.raises(KdslError, match="unknown variant"):
        ablation.parse_variant("half", program.level_names)
    names = [v.name for v in ablation.default_variants(program, "correct")]
    assert names == ["full", "without knowledge"]
    text = ablation.without_levels(program, ["knowledge"])
    variant = kdsl.loads(text, program.ir.file)
    assert variant.level_names == ["format", "accuracy"]
    assert text.count("\n") == program.ir.sources[program.ir.file].count("\n")  # lines keep their numbers


def test_an_advantage_variant_keeps_the_reward_and_changes_the_aggregation():
    program = kdsl.load("domain_specs/medical/pneumonia_perspectives.kd")
    assert program.ir.advantage["aggregate"] == "per_level"
    variant = ablation.parse_variant("advantage sum", program.level_names)
    assert (variant.name, variant.folder) == ("advantage sum", "advantage-sum")
    summed = ablation.variant_program(program, variant)
    assert summed.ir.advantage == {**program.ir.advantage, "aggregate": "sum"}
    assert summed.advantage_config.aggregate == "sum"
    assert summed.level_names == program.level_names
    assert [r.name for r in summed.ir.rules] == [r.name for r in program.ir.rules]
    text = ablation.variant_text(program, variant)
    assert text.count("\n") == program.ir.sources[program.ir.file].count("\n")
    # a spec without an `advantage` statement gets one, with the default estimator
    bare = kdsl.loads("spec b version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0\n}\n")
    per_rule = ablation.variant_program(bare, ablation.parse_variant("advantage per_rule", ["l"]))
    assert per_rule.ir.advantage == {**bare.ir.advantage, "aggregate": "per_rule"}
    with pytest.raises(KdslError, match="one of sum, per_level, per_rule"):
        ablation.parse_variant("advantage mean", program.level_names)


def test_folds_hold_out_every_row_once_and_labels_can_be_scarce():
    rows = [{"prompt": str(i), "label": "AB"[i % 2]} for i in range(20)]
    folds = ablation.folds_of(rows, 4, seed=0, stratify="label")
    held = [r["prompt"] for _, h in folds for r in h]
    assert sorted(held) == sorted(r["prompt"] for r in rows)
    for train, h in folds:
        assert len(h) == 5 and len(train) == 15
        assert {r["prompt"] for r in train}.isdisjoint({r["prompt"] for r in h})
    scarce = ablation.keep_labels(rows, 0.2, "label", seed=0)
    assert sum(r["label"] is not None for r in scarce) == 4  # 2 of 10 per class
    assert scarce == ablation.keep_labels(rows, 0.2, "label", seed=0)
    assert [r["prompt"] for r in scarce] == [r["prompt"] for r in rows]


def test_a_prompt_variant_tells_the_rules_it_no_longer_rewards():
    from kdsl.tools.describe import guidance

    program = kdsl.load(SPEC_PATH)
    options = ablation.AblationOptions(spec=SPEC_PATH, seeds=1)
    variant = ablation.parse_variant("prompt knowledge", program.level_names)
    runs = list(ablation._runs(options, program, [variant], console=None))
    assert len(runs) == 1
    _, seed, _, folder, train_rows, held, trained_with = runs[0]
    text = guidance(program, ["knowledge"])
    assert "water_claim_needs_water" in text and "reasons_first" not in text
    assert all(r["prompt"].startswith(text + "\n") for r in train_rows + held)
    assert len(train_rows) == 90 and len(held) == 30
    assert trained_with.level_names == ["format", "accuracy"]
    assert folder.name == "seed-0" and folder.parent.name == "prompt-knowledge"
    chat = ablation.with_guidance([{"prompt": [{"role": "user", "content": "hi"}]}], "G")
    assert chat[0]["prompt"][0] == {"role": "system", "content": "G"}


def test_variants_are_compared_with_the_first_paired_by_seed():
    from kdsl.tools.ablation import compare

    def seed(values, finished=True):
        return {"finished": finished, "curve": [{"step": 10 * i, "metric": v} for i, v in enumerate(values)]}

    result = {"variants": {
        "full": {"seeds": {"0": seed([0.2, 0.6, 0.8]), "1": seed([0.2, 0.4, 0.6]), "2": seed([0.2, 0.5, 0.7])}},
        "without knowledge": {"seeds": {"0": seed([0.2, 0.3, 0.7]), "1": seed([0.2, 0.3, 0.6]),
                                        "2": seed([0.2, 0.2, 0.9], finished=False)}},
    }}
    diff = compare(result)["without knowledge"]
    assert diff["against"] == "full"
    # Seed 2 is not finished, so two pairs: final -0.1 and 0.0.
    assert diff["final"]["n"] == 2 and diff["final"]["mean"] == pytest.approx(-0.05)
    half = 12.706 * 0.0707107 / 2 ** 0.5
    assert diff["final"]["low"] == pytest.approx(-0.05 - half, abs=1e-3)
    # Areas (trapezoids over 20 steps, divided by 20): full 0.55 and 0.4, without 0.375 and 0.35.
    assert diff["area"]["mean"] == pytest.approx(((0.375 - 0.55) + (0.35 - 0.4)) / 2)
