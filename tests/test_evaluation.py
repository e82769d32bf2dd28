"""``kdsl eval`` and the held-out evaluation ``kdsl train`` runs: a model whose outputs are known
gives exactly the table and the jsonl worked out by hand; training logs held-out figures every N
steps; a dataset that does not fit the spec is named before anything is generated."""

from __future__ import annotations

import json

import pytest
import torch

import kdsl
from kdsl.cli import main
from kdsl.errors import KdslError
from kdsl.example import landsat
from kdsl.tools import evaluation

SPEC_PATH = "examples/landsat_landcover.kd"


class ScriptedModel(torch.nn.Module):
    """A causal LM stand-in whose greedy completion of each prompt is written in advance: it
    appends the scripted reply's tokens to the prompt, as ``generate`` does."""

    def __init__(self, tokenizer, replies: dict[str, str]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer
        self.replies = replies
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask, **options):
        self.calls.append({"batch": input_ids.shape[0], **options})
        prompts = self.tokenizer.batch_decode(input_ids, skip_special_tokens=True)
        new = [self.tokenizer(self.replies[p], add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(len(ids) for ids in new)
        pad = self.tokenizer.pad_token_id
        tail = torch.tensor([ids + [pad] * (width - len(ids)) for ids in new])
        return torch.cat([input_ids, tail], dim=1)


@pytest.fixture(scope="module")
def program():
    return kdsl.load(SPEC_PATH)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from kdsl.training.train import EMBEDDED_MODEL

    return AutoTokenizer.from_pretrained(EMBEDDED_MODEL)


def _mndwi(row):
    b3, b6 = row["sr"][2], row["sr"][5]
    return (b3 - b6) / (b3 + b6)


@pytest.fixture(scope="module")
def picked_rows():
    """A water pixel with MNDWI above 0, a built-up one, and a vegetation pixel with MNDWI at or
    below -0.2 (where `water_claim_needs_water`'s ramp has reached 0): real spyndex samples."""
    rows = landsat.landsat_rows()
    water = next(r for r in rows if r["label"] == "Water" and _mndwi(r) > 0.05)
    urban = next(r for r in rows if r["label"] == "Urban")
    vegetation = next(r for r in rows if r["label"] == "Vegetation" and _mndwi(r) <= -0.25)
    return [water, urban, vegetation]


REPLIES = [
    # right, reasoned, cites MNDWI: format 1, accuracy 1, knowledge 1 -> 1 + 2 + 0.5 = 3.5
    "<think>MNDWI is clearly positive here, so this is water</think><answer>Water</answer>",
    # right but no reasoning: format 2 of 3, the gate closes -> 2/3; `correct` still holds
    "<answer>Urban</answer>",
    # wrong: the water rule fails (MNDWI <= -0.2), NDVI is cited -> knowledge 1/2 -> 1 + 0 + 0.25
    "<think>the NDVI says nothing here so I call it water</think><answer>Water</answer>",
]


def test_a_scripted_model_gives_the_table_worked_out_by_hand(program, tokenizer, picked_rows, tmp_path):
    model = ScriptedModel(tokenizer, {r["prompt"]: reply for r, reply in zip(picked_rows, REPLIES)})
    result = evaluation.evaluate(program, model, tokenizer, picked_rows,
                                 evaluation.EvalConfig(batch_size=2, max_new_tokens=40))
    assert result.completions == REPLIES
    assert [c["batch"] for c in model.calls] == [2, 1]  # batches of --batch-size rows
    assert model.calls[0]["do_sample"] is False and model.calls[0]["max_new_tokens"] == 40
    assert result.scores.reward.tolist() == pytest.approx([3.5, 2 / 3, 1.25], abs=1e-6)
    assert result.metric == "correct"
    assert result.metric_value == pytest.approx(2 / 3)  # the rule's truth, before any gate
    assert result.reward == pytest.approx((3.5 + 2 / 3 + 1.25) / 3, abs=1e-6)
    levels = {s.name: s for s in result.stats if s.kind == "level"}
    assert levels["format"].mean == pytest.approx((1 + 2 / 3 + 1) / 3, abs=1e-6)
    assert levels["accuracy"].mean == pytest.approx(1 / 3, abs=1e-6)  # gated on row 2
    rules = {s.name: s for s in result.stats if s.kind == "rule"}
    assert rules["water_claim_needs_water"].count == 2  # two completions answer Water
    assert rules["water_claim_needs_water"].mean == pytest.approx(0.5, abs=1e-6)
    assert rules["urban_claim_needs_builtup"].count == 1
    assert rules["reasons_first"].mean == pytest.approx(2 / 3)
    assert result.gates == {"format": pytest.approx(1 / 3)}
    for stat in result.stats:
        if stat.count:
            assert stat.low - 1e-9 <= stat.mean <= stat.high + 1e-9
    assert rules["one_answer"].low == rules["one_answer"].high == 1.0  # constant: no spread
    assert result.pass_at_k == pytest.approx(2 / 3) and result.pass_at_1 == pytest.approx(2 / 3)

    out = tmp_path / "completions.jsonl"
    result.write_jsonl(out, picked_rows, program.input_names)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["dataset_row"], line["sample"]) for line in lines] == [(0, 0), (1, 0), (2, 0)]
    assert [line["completion"] for line in lines] == REPLIES
    assert lines[1]["label"] == "Urban" and lines[1]["sr"] == picked_rows[1]["sr"]
    assert lines[1]["scores"]["levels"]["accuracy"] == 0.0
    assert lines[0]["scores"]["rules"]["urban_claim_needs_builtup"] is None  # does not apply
    assert lines[2]["scores"]["reward"] == pytest.approx(1.25)
    # kdsl explain opens any line of it, and finds the same reward
    assert main(["explain", SPEC_PATH, "--data", str(out), "--row", "2", "--format", "json"]) == 0


def test_pass_at_k_counts_a_row_once_one_sample_passes():
    passed = torch.tensor([1, 0, 0, 0, 1, 1], dtype=torch.bool)
    applies = torch.tensor([1, 1, 1, 1, 1, 1], dtype=torch.bool)
    at_k, at_1 = evaluation.pass_at_k(passed, applies, samples=2)
    assert at_k == pytest.approx(2 / 3) and at_1 == pytest.approx(0.5)
    # a row the metric applies to in no sample is left out
    at_k, at_1 = evaluation.pass_at_k(passed, torch.tensor([1, 1, 0, 0, 1, 1], dtype=torch.bool), 2)
    assert at_k == pytest.approx(1.0) and at_1 == pytest.approx(0.75)


def test_the_bootstrap_resamples_rows_not_completions():
    # Two rows, each with 3 identical samples: resampling rows gives means of 0, 0.5 or 1 only.
    values = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    applies = torch.ones(6, dtype=torch.bool)
    mean, low, high, count = evaluation.bootstrap_interval(values, applies, 3, 2000, 0.95, seed=0)
    assert (mean, low, high, count) == (0.5, 0.0, 1.0, 6)
    again = evaluation.bootstrap_interval(values, applies, 3, 2000, 0.95, seed=0)
    assert again == (mean, low, high, count)
    assert evaluation.bootstrap_interval(values, torch.zeros(6, dtype=torch.bool), 3, 10, 0.95, 0)[3] == 0


def test_eval_of_the_embedded_model_matches_the_api_and_writes_the_completions(program, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from kdsl.training.train import EMBEDDED_MODEL

    out = tmp_path / "eval.jsonl"
    assert main(["eval", SPEC_PATH, "--rows", "5", "--max-new-tokens", "48", "--json",
                 "--no-progress", "--out", str(out)]) == 0
    figures = json.loads(capsys.readouterr().out)
    heldout = landsat.train_heldout_split(landsat.landsat_rows())[1][:5]
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_MODEL)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(EMBEDDED_MODEL)
    expected = landsat.heldout_evaluation(model, tok, heldout, program)
    assert figures["rows"] == 5 and figures["samples"] == 1 and figures["metric"] == "correct"
    assert figures["metric_value"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert figures["reward"] == pytest.approx(expected["reward"], abs=1e-5)
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    assert [json.loads(line)["prompt"] for line in lines] == [r["prompt"] for r in heldout]

    # several samples: pass@k is reported, completions are k per row
    assert main(["eval", SPEC_PATH, "--rows", "3", "--samples", "3", "--max-new-tokens", "48",
                 "--json", "--no-progress", "--out", str(out)]) == 0
    sampled = json.loads(capsys.readouterr().out)
    assert sampled["completions"] == 9 and len(out.read_text().splitlines()) == 9
    assert 0.0 <= sampled["pass_at_1"] <= sampled["pass_at_k"] <= 1.0


def test_eval_names_what_does_not_fit_before_generating(tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "Land cover?", "label": "Water"}) + "\n"
                    + json.dumps({"prompt": "Land cover?", "label": "Desert"}) + "\n")
    assert main(["eval", SPEC_PATH, "--dataset", str(data), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "does not fit spec landsat_landcover" in err and "missing column `sr`" in err
    assert "row 1" in err and "Desert" in err
    assert main(["eval", SPEC_PATH, "--metric", "corect", "--no-progress"]) == 1
    assert "did you mean `correct`" in capsys.readouterr().err
    assert main(["eval", SPEC_PATH, "--samples", "2", "--temperature", "0"]) == 1
    assert "same completion every time" in capsys.readouterr().err
    assert main(["eval", SPEC_PATH, "--dataset", str(tmp_path / "absent.jsonl")]) == 2
    assert main(["eval", SPEC_PATH, "--out", str(tmp_path / "x.csv")]) == 2
    assert main(["eval", SPEC_PATH, "--rows", "a:b"]) == 1
    assert "--rows takes N or START:STOP" in capsys.readouterr().err


def test_select_rows():
    rows = [{"i": i} for i in range(6)]
    assert evaluation.select_rows(rows, "2") == rows[:2]
    assert evaluation.select_rows(rows, "2:4") == rows[2:4]
    assert evaluation.select_rows(rows, ":") == rows
    assert evaluation.select_rows(rows, None) == rows
    with pytest.raises(KdslError):
        evaluation.select_rows(rows, "x")


def test_train_logs_held_out_figures_every_n_steps(tmp_path):
    """The embedded example with a small budget: held-out figures at steps 0, 2, 4 and at the end,
    in the log history next to the training metrics, in heldout.jsonl, and the last evaluation's
    completions for kdsl explain; rows without a label train, and are not judged on accuracy."""
    from kdsl.training.train import TrainOptions, train

    rows = landsat.train_heldout_split(landsat.landsat_rows())[0][:16]
    for row in rows[::2]:
        row["label"] = None
    summary = train(TrainOptions(
        spec=SPEC_PATH, dataset=rows, eval_dataset=landsat.train_heldout_split(landsat.landsat_rows())[1],
        eval_rows="4", eval_every=2, output_dir=str(tmp_path / "run"),
        overrides={**landsat.DEFAULT_TRAINING, "max_steps": 5, "per_device_train_batch_size": 8,
                   "num_generations": 4, "save_steps": 100}))
    folder = tmp_path / "run" / "kdsl_run"
    held = [json.loads(line) for line in (folder / "heldout.jsonl").read_text().splitlines()]
    assert [h["step"] for h in held] == [0, 2, 4, 5]
    assert all(h["rows"] == 4 and h["metric"] == "correct" for h in held)
    assert summary["evaluation"]["before"]["step"] == 0 and summary["evaluation"]["after"]["step"] == 5
    state = json.loads((folder / "trainer_state.json").read_text())
    logged = [e["step"] for e in state["log_history"] if "heldout/reward" in e]
    assert logged == [0, 2, 4, 5]
    assert all("heldout/correct" in e and "heldout/level/knowledge" in e
               for e in state["log_history"] if "heldout/reward" in e)
    assert len([e for e in state["log_history"] if "kdsl/level/format" in e]) == 5
    # `correct` is logged only on steps whose batch held a labelled row
    assert 1 <= len([e for e in state["log_history"] if "kdsl/rule/correct" in e]) <= 5
    assert len((folder / "heldout_completions.jsonl").read_text().splitlines()) == 4
