"""The land-cover example's data (the real spyndex Landsat 8 samples), its split, and the tiny
default model of ``kdsl train`` shipped in ``kdsl/example/tiny_landcover``. Nothing here needs the
network."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from kdsl.example import landsat

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "kdsl" / "example" / "tiny_landcover"
SPEC = ROOT / "examples" / "landsat_landcover.kd"


@pytest.fixture(scope="module")
def rows():
    return landsat.landsat_rows()


@pytest.fixture(scope="module")
def program():
    import kdsl

    return kdsl.load(SPEC)


@pytest.fixture(scope="module")
def tiny(monkeypatch_module):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(MODEL, local_files_only=True)
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield patch


def test_rows_are_the_real_spyndex_samples(rows):
    import spyndex

    assert len(rows) == 120
    assert Counter(r["label"] for r in rows) == {"Vegetation": 46, "Urban": 37, "Water": 37}
    assert [r["sample"] for r in rows] == list(range(120))
    # sample 60 is the water pixel of the spec's examples
    assert rows[60]["label"] == "Water"
    assert rows[60]["sr"] == [0.0089, 0.0164, 0.0354, 0.0119, 0.0048, 0.0159, 0.0161]
    table = spyndex.datasets.open("spectral")
    for sample in (0, 60, 100):
        record = table.iloc[sample]
        assert rows[sample]["sr"] == [round(float(record[f"SR_B{b}"]), 4) for b in range(1, 8)]
        assert rows[sample]["label"] == record["class"]
    for row in rows:
        assert len(row["sr"]) == 7 and all(0.0 < v < 1.0 for v in row["sr"])
        assert row["prompt"] == landsat.prompt_for(row["sr"])


def test_the_prompt_states_the_seven_reflectances_and_the_reply_format():
    prompt = landsat.prompt_for([0.0089, 0.0164, 0.0354, 0.0119, 0.0048, 0.0159, 0.0161])
    assert "B1 0.009 B2 0.016 B3 0.035 B4 0.012 B5 0.005 B6 0.016 B7 0.016" in prompt
    assert "<think>" in prompt and "<answer>" in prompt
    assert all(name in prompt for name in landsat.CLASSES)
    with pytest.raises(ValueError):
        landsat.prompt_for([0.1] * 6)


def test_the_split_is_stratified_disjoint_and_deterministic(rows):
    train, heldout = landsat.train_heldout_split(rows)
    assert len(train) == 90 and len(heldout) == 30
    assert Counter(r["label"] for r in heldout) == {"Vegetation": 12, "Urban": 9, "Water": 9}
    assert Counter(r["label"] for r in train) == {"Vegetation": 34, "Urban": 28, "Water": 28}
    train_ids = {r["sample"] for r in train}
    heldout_ids = {r["sample"] for r in heldout}
    assert not train_ids & heldout_ids and train_ids | heldout_ids == set(range(120))
    again = landsat.train_heldout_split(landsat.landsat_rows())
    assert again == (train, heldout)
    other = landsat.train_heldout_split(rows, seed=1)[1]
    assert {r["sample"] for r in other} != heldout_ids
    assert [r["sample"] for r in train] == sorted(train_ids)  # input order kept


def test_default_training_settings_are_grpo_config_fields():
    import trl

    assert set(landsat.DEFAULT_TRAINING) <= set(trl.GRPOConfig.__dataclass_fields__)
    settings = landsat.DEFAULT_TRAINING
    assert settings["per_device_train_batch_size"] % settings["num_generations"] == 0


def test_the_shipped_model_is_small_and_answers_in_the_spec_format(tiny, rows, program):
    model, tokenizer = tiny
    size = sum(f.stat().st_size for f in MODEL.iterdir() if f.is_file())
    assert size < 3_000_000
    assert (MODEL / "model.safetensors").exists() and (MODEL / "README.md").exists()
    assert tokenizer.eos_token is not None and tokenizer.pad_token is not None
    train, _ = landsat.train_heldout_split(rows)
    replies = landsat.generate_completions(model, tokenizer, [r["prompt"] for r in train])
    scores = program.score(replies, label=[r["label"] for r in train], sr=[r["sr"] for r in train])
    passed = float((scores.levels["format"] >= 1.0 - 1e-6).float().mean())
    assert passed >= 0.9, replies[:3]


def test_heldout_accuracy_counts_the_answers_that_name_the_label(tiny, rows, program):
    model, tokenizer = tiny
    _, heldout = landsat.train_heldout_split(rows)
    accuracy = landsat.heldout_accuracy(model, tokenizer, heldout, program)
    # Counted by hand from the same greedy completions: the class inside <answer> is the label.
    import re

    replies = landsat.generate_completions(model, tokenizer, [r["prompt"] for r in heldout])
    named = [re.search(r"<answer>\s*(\w+)\s*</answer>", reply) for reply in replies]
    right = sum(m is not None and m.group(1).lower() == r["label"].lower() for m, r in zip(named, heldout))
    assert accuracy == pytest.approx(right / len(heldout))
    result = landsat.heldout_evaluation(model, tokenizer, heldout, program)
    assert result["rows"] == 30 and result["accuracy"] == accuracy and result["format"] >= 0.9
