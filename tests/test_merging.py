"""`kdsl merge`: LoRA experts of one base combined through PEFT, with the checks before loading."""

import json

import pytest
import torch

from kdsl.cli import main


def expert(base_dir, out, seed: int, r: int = 4, targets=("q_proj", "v_proj")):
    """A LoRA adapter with random A and B (peft's init_lora_weights=False), standing for a trained
    expert: training the tiny model for real would change these weights the same way."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    data = json.loads((out / "adapter_config.json").read_text())
    data["base_model_name_or_path"] = str(base_dir)
    (out / "adapter_config.json").write_text(json.dumps(data))
    return out


def deltas(folder, scaling: float) -> dict:
    """Each layer's update B @ A x scaling, from the saved adapter."""
    from safetensors.torch import load_file

    weights = load_file(str(folder / "adapter_model.safetensors"))
    out = {}
    for name, a in weights.items():
        if "lora_A" in name:
            b = weights[name.replace("lora_A", "lora_B")]
            out[name.replace(".lora_A.weight", "")] = (b @ a) * scaling
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from tests.tiny import byte_level_tokenizer, tiny_causal_lm

    root = tmp_path_factory.mktemp("merge")
    tokenizer = byte_level_tokenizer()
    tiny_causal_lm(tokenizer).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    return root


def test_cat_merges_the_weighted_sum_of_the_updates(base, tmp_path):
    a = expert(base / "base", tmp_path / "a", seed=1)
    b = expert(base / "base", tmp_path / "b", seed=2)
    out = tmp_path / "merged"
    assert main(["merge", str(a), str(b), "--method", "cat", "--weights", "0.7,0.3", "--out", str(out)]) == 0
    merged = json.loads((out / "adapter_config.json").read_text())
    assert merged["r"] == 8 and merged["base_model_name_or_path"] == str(base / "base")
    da, db, dm = deltas(a, 2.0), deltas(b, 2.0), deltas(out, merged["lora_alpha"] / merged["r"])
    assert set(dm) == set(da)
    for name in dm:
        assert torch.allclose(dm[name], 0.7 * da[name] + 0.3 * db[name], atol=1e-5)
    provenance = json.loads((out / "kdsl_merge.json").read_text())
    assert provenance["method"] == "cat" and provenance["weights"] == [0.7, 0.3]
    # The merged adapter loads like any other.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base / "base"), out)


def test_ties_keeps_the_given_density(base, tmp_path):
    a = expert(base / "base", tmp_path / "a", seed=3)
    b = expert(base / "base", tmp_path / "b", seed=4)
    assert main(["merge", str(a), str(b), "--method", "ties", "--density", "0.5", "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "kdsl_merge.json").read_text())["density"] == 0.5


def test_experts_that_cannot_merge_are_refused_before_loading(base, tmp_path, capsys):
    a = expert(base / "base", tmp_path / "a", seed=5, r=4)
    b = expert(base / "base", tmp_path / "b", seed=6, r=8)
    assert main(["merge", str(a), str(b), "--method", "linear", "--out", str(tmp_path / "x")]) == 1
    assert "--method linear needs adapters of one rank" in capsys.readouterr().err
    data = json.loads((b / "adapter_config.json").read_text())
    data["base_model_name_or_path"] = "someone/else"
    (b / "adapter_config.json").write_text(json.dumps(data))
    assert main(["merge", str(a), str(b), "--method", "cat", "--out", str(tmp_path / "x")]) == 1
    assert "experts must share their base model" in capsys.readouterr().err
    assert main(["merge", str(a), str(a), "--method", "ties", "--out", str(tmp_path / "x")]) == 1
    assert "--method ties needs --density" in capsys.readouterr().err
    assert main(["merge", str(a), str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_conflicts_are_measured_per_layer_type(base, tmp_path, capsys):
    from kdsl.training.merging import conflicts, read_expert

    a = expert(base / "base", tmp_path / "a", seed=7)
    same = tmp_path / "same"
    import shutil

    shutil.copytree(a, same)
    report = conflicts([read_expert(a), read_expert(same)], density=0.5)
    assert report["overall"]["opposite_sign_share"] == 0.0
    assert report["overall"]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert report["overall"]["ties_dropped_share"] == 0.0
    # The negated expert disagrees everywhere.
    from safetensors.torch import load_file, save_file

    weights = load_file(str(same / "adapter_model.safetensors"))
    save_file({k: -v if "lora_B" in k else v for k, v in weights.items()}, str(same / "adapter_model.safetensors"))
    report = conflicts([read_expert(a), read_expert(same)], density=0.5)
    assert report["overall"]["opposite_sign_share"] == 1.0
    assert report["overall"]["cosine"] == pytest.approx(-1.0, abs=1e-6)
    assert set(report["by_type"]) == {"q_proj", "v_proj"}
    assert main(["merge", str(a), str(same), "--report", "--density", "0.5", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "q_proj" in out and "100.0%" in out and "-1.000" in out
    assert (tmp_path / "r" / "kdsl_conflicts.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "r" / "adapter_config.json").exists()  # --report does not merge


SPEC_SHORT = """spec short version 1
input { n: float }
level l {
  rule correct: length(completion, chars) < n
}
"""
SPEC_VOWELS = """spec vowels version 1
input { n: float }
level l {
  rule correct: occurrences(completion, "e") >= n
}
"""


def test_select_on_keeps_the_best_worst_case_specialty(base, tmp_path, capsys):
    from kdsl.io.loading import load_model
    from kdsl.tools import evaluation

    a = expert(base / "base", tmp_path / "a", seed=11)
    b = expert(base / "base", tmp_path / "b", seed=12)
    rows = [{"prompt": f"row {i}: ", "n": float(n)} for i, n in enumerate([20, 30, 40, 50, 1, 2])]
    specs = []
    for name, text in (("short", SPEC_SHORT), ("vowels", SPEC_VOWELS)):
        (tmp_path / f"{name}.kd").write_text(text)
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        specs += ["--select-on", f"{tmp_path / name}.kd={tmp_path / name}.jsonl"]
    out = tmp_path / "chosen"
    assert main(["merge", str(a), str(b), *specs, "--max-new-tokens", "24", "--out", str(out)]) == 0
    selection = json.loads((out / "kdsl_selection.json").read_text())
    labels = [c["label"] for c in selection["candidates"]]
    assert labels == ["cat w=0.5,0.5", "linear w=0.5,0.5", "ties d=0.3 w=0.5,0.5", "ties d=0.5 w=0.5,0.5",
                      "ties d=0.7 w=0.5,0.5", "dare_ties d=0.5 w=0.5,0.5", "magnitude_prune d=0.5 w=0.5,0.5"]
    for c in selection["candidates"]:
        assert c["criterion"] == min(c["scores"].values())
    best = max(selection["candidates"], key=lambda c: c["criterion"])
    assert selection["chosen"] == best["label"]
    # The adapter written is the candidate chosen: evaluated again from disk, the same scores.
    model, tokenizer = load_model(str(base / "base"), adapter=str(out))
    import kdsl

    for spec, score in best["scores"].items():
        program = kdsl.load(spec)
        again = evaluation.evaluate(program, model, tokenizer, rows,
                                    evaluation.EvalConfig(max_new_tokens=24, metric="correct"))
        assert again.metric_value == pytest.approx(score)
    assert "chosen: " in capsys.readouterr().out


def test_runs_on_one_gguf_file_share_their_base_though_each_saved_its_own_copy(base, tmp_path, capsys):
    # `kdsl train --model F.gguf` trains from a dequantised copy in RUN/base_model, and the adapter
    # names that copy; the run records the GGUF file, which is what two experts must share.
    import shutil

    runs = []
    for seed, gguf in ((7, "/models/smollm2.gguf"), (8, "/models/smollm2.gguf"), (9, "/models/other.gguf")):
        run = tmp_path / f"run{seed}"
        shutil.copytree(base / "base", run / "base_model")
        expert(run / "base_model", run, seed=seed)
        (run / "kdsl_run").mkdir()
        (run / "kdsl_run" / "run.json").write_text(json.dumps({"model": gguf}))
        runs.append(run)
    out = tmp_path / "merged"
    assert main(["merge", str(runs[0]), str(runs[1]), "--method", "linear", "--out", str(out)]) == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(runs[0] / "base_model")
    assert main(["merge", str(runs[0]), str(runs[2]), "--method", "linear", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "was trained from /models/other.gguf" in err and "from /models/smollm2.gguf" in err
