"""``kdsl train`` end to end with a tiny model built locally: kdsl metrics in TRL's logs, the run
folder, checkpoints, Ctrl-C, resume, dataset checks and ``kdsl report``."""

from __future__ import annotations

import json
import signal

import pytest

from kdsl.cli import main
from kdsl.training.train import TrainOptions, last_checkpoint, train

SPEC = """
spec tiny_train version 1
input {
  gold: float
}
output {
  reply: tag "answer"
  value: reply as float
}
level format gate {
  rule has_answer: present(reply)
}
level accuracy weight 2 {
  rule exact: value == gold
}
advantage grpo(scale = batch, aggregate = per_level)
"""

CONFIG = """
num_generations: 4
per_device_train_batch_size: 4
max_completion_length: 12
learning_rate: 0.001
save_steps: 2
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tests.tiny import byte_level_tokenizer, tiny_causal_lm

    root = tmp_path_factory.mktemp("train")
    tokenizer = byte_level_tokenizer()
    tiny_causal_lm(tokenizer).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    (root / "spec.kd").write_text(SPEC)
    (root / "train.yaml").write_text(CONFIG)
    with open(root / "data.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"prompt": f"What is {i} + 1? <answer>", "gold": i + 1}) + "\n")
    return root


def run_cli(workspace, out, *extra, capsys=None):
    return main(["train", str(workspace / "spec.kd"), "--model", str(workspace / "model"), "--dataset",
                 str(workspace / "data.jsonl"), "--config", str(workspace / "train.yaml"),
                 "--output-dir", str(out), "--table-every", "1", *extra])


def test_train_logs_kdsl_metrics_and_keeps_a_run_folder(workspace, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(workspace, out, "--max-steps", "3") == 0
    captured = capsys.readouterr()
    assert "level/accuracy" in captured.err + captured.out  # the rule table was printed
    state = json.loads((out / "kdsl_run" / "trainer_state.json").read_text())
    steps = [e for e in state["log_history"] if "kdsl/level/format" in e]
    assert [e["step"] for e in steps] == [1, 2, 3]
    for entry in steps:
        assert {"kdsl/level/accuracy", "kdsl/rule/has_answer", "rewards/format/mean", "reward"} <= set(entry)
        assert entry["reward"] == pytest.approx(entry["kdsl/level/format"] + 2 * entry["kdsl/level/accuracy"],
                                                abs=1e-5)
    folder = out / "kdsl_run"
    assert (folder / "spec.kd").read_text() == SPEC
    import hashlib

    digest = hashlib.sha256()
    digest.update(str(workspace / "spec.kd").encode() + b"\0" + SPEC.encode() + b"\0")
    assert (folder / "spec.sha256").read_text().strip() == digest.hexdigest()
    config = json.loads((folder / "config.json").read_text())
    assert config["num_generations"] == 4 and config["max_steps"] == 3 and config["learning_rate"] == 0.001
    assert last_checkpoint(out).name == "checkpoint-3"
    # kdsl report writes a PNG
    assert main(["report", str(out)]) == 0
    png = out / "kdsl_report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prompts_beyond_the_models_positions_are_warned_about(workspace, tmp_path, capsys):
    from transformers import AutoTokenizer

    from kdsl.training.train import longest_prompt

    tokenizer = AutoTokenizer.from_pretrained(workspace / "model")
    long = "guidance " * 120 + "What is 1 + 1? <answer>"
    assert longest_prompt(tokenizer, ["short", long]) == len(tokenizer(long)["input_ids"]) > 512
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "gold": 2}) + "\n" for p in ("short <answer>", long)))
    assert main(["train", str(workspace / "spec.kd"), "--model", str(workspace / "model"), "--dataset",
                 str(data), "--config", str(workspace / "train.yaml"), "--output-dir",
                 str(tmp_path / "run"), "--max-steps", "1", "--table-every", "0"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"prompts of up to {longest_prompt(tokenizer, [long])} tokens plus 12 completion tokens exceed " \
           "the model's 512 positions" in err


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(workspace, tmp_path):
    from transformers import TrainerCallback

    class PressCtrlC(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                signal.raise_signal(signal.SIGINT)

    out = tmp_path / "run"
    options = TrainOptions(spec=str(workspace / "spec.kd"), model=str(workspace / "model"),
                           dataset=str(workspace / "data.jsonl"), config=str(workspace / "train.yaml"),
                           output_dir=str(out), overrides={"max_steps": 6, "save_steps": 100},
                           callbacks=[PressCtrlC()])
    summary = train(options)
    assert summary["steps"] == 2  # stopped after the step during which Ctrl-C came
    assert last_checkpoint(out).name == "checkpoint-2"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed = train(TrainOptions(spec=options.spec, model=options.model, dataset=options.dataset,
                                 config=options.config, output_dir=str(out), resume=True,
                                 overrides={"max_steps": 4, "save_steps": 100}))
    assert resumed["steps"] == 4
    state = json.loads((out / "kdsl_run" / "trainer_state.json").read_text())
    logged = [e["step"] for e in state["log_history"] if "kdsl/level/format" in e]
    assert logged == [1, 2, 3, 4]  # steps 1-2 from the first run, 3-4 after resuming


def test_dataset_problems_are_named_before_training(workspace, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "gold": 1}\n{"prompt": "b", "gold": "seven"}\n')
    code = main(["train", str(workspace / "spec.kd"), "--model", str(workspace / "model"),
                 "--dataset", str(bad), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "row 1, column `gold`: expected a number, got 'seven'" in err
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"question": "a"}\n')
    code = main(["train", str(workspace / "spec.kd"), "--model", str(workspace / "model"),
                 "--dataset", str(missing), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "missing column `prompt`" in err and "missing column `gold` (float input at spec.kd:4" in err
    assert not (tmp_path / "o").exists()  # nothing started


def test_a_bad_dataset_is_reported_before_the_trainer_stack_is_imported(workspace, tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "gold": "seven"}\n')
    probe = ("import sys; from kdsl.cli import main; rc = main(sys.argv[1:]); "
             "print('loaded:', sorted(m for m in ('trl', 'transformers', 'peft') if m in sys.modules)); "
             "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", probe, "train", str(workspace / "spec.kd"), "--dataset",
                           str(bad), "--output-dir", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "row 0, column `gold`: expected a number, got 'seven'" in done.stderr
    assert "loaded: []" in done.stdout


def test_train_usage_errors(workspace, tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.kd")]) == 2
    assert main(["train", str(workspace / "spec.kd"), "--dataset", str(tmp_path / "nope.jsonl")]) == 2
    assert main(["train", str(workspace / "spec.kd"), "--model", str(workspace / "model"), "--dataset",
                 str(workspace / "data.jsonl"), "--output-dir", str(tmp_path / "r"), "--resume"]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("num_generation: 4\n")
    assert main(["train", str(workspace / "spec.kd"), "--model", str(workspace / "model"), "--dataset",
                 str(workspace / "data.jsonl"), "--config", str(tmp_path / "bad.yaml"),
                 "--output-dir", str(tmp_path / "r")]) == 1
    assert "num_generation is not a GRPOConfig field" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_lora_trains_an_adapter_with_the_given_settings(workspace, tmp_path):
    out = tmp_path / "lora"
    code = run_cli(workspace, out, "--lora", "--lora-r", "4", "--lora-alpha", "8",
                   "--lora-targets", "q_proj,v_proj", "--max-steps", "2")
    assert code == 0
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all("lora_" in name for name in weights)
    assert any("q_proj" in name for name in weights) and not any("k_proj" in name for name in weights)


def test_every_dataset_format_loads_the_same_rows(workspace, tmp_path):
    import datasets

    from kdsl.io.rows import load_dataset

    rows = [json.loads(line) for line in (workspace / "data.jsonl").read_text().splitlines()]
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "data.parquet"))
    table.to_csv(str(tmp_path / "data.csv"), index=False)
    table.to_csv(str(tmp_path / "data.tsv"), index=False, sep="\t")
    (tmp_path / "data.json").write_text(json.dumps(rows))
    table.save_to_disk(str(tmp_path / "saved"))
    for source in ("data.parquet", "data.csv", "data.tsv", "data.json", "saved"):
        loaded = load_dataset(str(tmp_path / source))
        assert [(r["prompt"], float(r["gold"])) for r in loaded] == \
            [(r["prompt"], float(r["gold"])) for r in rows], source
    (tmp_path / "data.xlsx").write_text("not a table")
    from kdsl.errors import KdslDataError

    with pytest.raises(KdslDataError, match="unknown dataset format .xlsx"):
        load_dataset(str(tmp_path / "data.xlsx"))


VQA_SPEC = """spec easy_vqa version 1
input {
  answer: str
}
output {
  reply: tag "answer"
  said: reply as str
}
level format gate {
  rule has_answer: present(reply)
}
level accuracy weight 2 {
  rule correct: said == answer
}
"""


def test_vision_language_model_trains_on_easy_vqa_images(tmp_path):
    """Two GRPO steps of a tiny vision-language model on real easy-vqa images and questions, from
    a saved `datasets` folder, through TRL's multimodal path (the images reach the vision tower)."""
    from datasets import Dataset, Image
    from easy_vqa import get_train_image_paths, get_train_questions
    from transformers import TrainerCallback

    from tests.tiny import save_tiny_vision_language_model

    save_tiny_vision_language_model(tmp_path / "vlm")
    questions, answers, image_ids = get_train_questions()
    paths = get_train_image_paths()
    rows = [{"prompt": [{"role": "user", "content": f"{questions[i]} Answer in <answer></answer>."}],
             "image": paths[image_ids[i]], "answer": answers[i]} for i in range(8)]
    Dataset.from_list(rows).cast_column("image", Image()).save_to_disk(str(tmp_path / "data"))
    (tmp_path / "vqa.kd").write_text(VQA_SPEC)
    (tmp_path / "train.yaml").write_text("num_generations: 2\nper_device_train_batch_size: 2\n"
                                         "max_completion_length: 8\n")
    images_seen = []

    class WatchVisionTower(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            tower = model.model.vision_tower if hasattr(model, "model") else model.vision_tower
            tower.register_forward_hook(lambda module, inputs, output: images_seen.append(inputs[0].shape))

    summary = train(TrainOptions(spec=str(tmp_path / "vqa.kd"), model=str(tmp_path / "vlm"),
                                 dataset=str(tmp_path / "data"), config=str(tmp_path / "train.yaml"),
                                 output_dir=str(tmp_path / "out"), overrides={"max_steps": 2},
                                 callbacks=[WatchVisionTower()]))
    assert summary["steps"] == 2
    assert images_seen and all(shape[-3:] == (3, 28, 28) for shape in images_seen)
    state = json.loads((tmp_path / "out" / "kdsl_run" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "kdsl/rule/correct" in e] == [1, 2]


KILL_WHILE_SAVING = """
import os, signal, sys
import transformers
import kdsl.training.checkpoints
from kdsl.cli import main

step, where = int(sys.argv[1]), sys.argv[2]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if where == "optimizer":  # the model is written, the optimizer and trainer state are not
    save = transformers.Trainer._save_optimizer_and_scheduler
    def saving(self, output_dir):
        if self.state.global_step == step:
            die()
        return save(self, output_dir)
    transformers.Trainer._save_optimizer_and_scheduler = saving
else:  # every file is written; the run dies before marking the checkpoint complete
    mark = kdsl.training.checkpoints.mark_complete
    def marking(folder, at):
        if at == step:
            die()
        return mark(folder, at)
    kdsl.training.checkpoints.mark_complete = marking
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("where", ["optimizer", "marker"])
def test_a_kill_while_saving_leaves_the_previous_checkpoint_usable(workspace, tmp_path, capsys, where):
    import subprocess
    import sys

    out = tmp_path / "run"
    (tmp_path / "train.yaml").write_text(CONFIG.replace("save_steps: 2", "save_steps: 1\n"
                                                        "save_total_limit: 1"))
    args = ["train", str(workspace / "spec.kd"), "--model", str(workspace / "model"), "--dataset",
            str(workspace / "data.jsonl"), "--config", str(tmp_path / "train.yaml"),
            "--output-dir", str(out), "--max-steps", "3"]
    killed = subprocess.run([sys.executable, "-c", KILL_WHILE_SAVING, "2", where, *args],
                            capture_output=True, text=True)
    assert killed.returncode == -9
    # checkpoint-1 was not rotated away: old checkpoints go only once the new one is complete
    assert (out / "checkpoint-1" / "kdsl-checkpoint.json").is_file()
    assert not (out / "checkpoint-2" / "kdsl-checkpoint.json").exists()
    assert main([*args, "--resume"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    # and folds a path longer than the console's width (pytest-xdist's temporary paths are)
    unfolded = "".join(err.split())
    if where == "optimizer":
        assert ("--resume: skipped checkpoint-2: it has no trainer_state.json (the run stopped "
                "while saving it); moved it to incomplete-checkpoint-2") in err
        assert f"resumingfrom{out / 'checkpoint-1'}" in unfolded
        assert (out / "incomplete-checkpoint-2" / "model.safetensors").is_file()
    else:  # written in full by transformers, only the marker is missing: usable
        assert f"resumingfrom{out / 'checkpoint-2'}" in unfolded
    state = json.loads((out / "kdsl_run" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-3"]


def test_checkpoint_problems_are_named(tmp_path):
    from kdsl.training import checkpoints

    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    assert checkpoints.problem(folder) == ("it has no trainer_state.json (the run stopped while "
                                           "saving it)")
    (folder / "trainer_state.json").write_text('{"global_step": ')
    assert checkpoints.problem(folder) == ("its trainer_state.json is cut short (the run stopped "
                                           "while saving it)")
    (folder / "trainer_state.json").write_text("{}")
    assert checkpoints.problem(folder) == "it holds no model weights"
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    assert checkpoints.problem(folder) is None
    checkpoints.mark_complete(folder, 5)
    assert checkpoints.problem(folder) is None
    (folder / "model.safetensors").write_bytes(b"x" * 4)
    assert checkpoints.problem(folder) == ("model.safetensors has 4 bytes, not the 10 it was "
                                           "saved with")
    found, skipped = checkpoints.newest_complete(tmp_path)
    assert found is None and [s.folder.name for s in skipped] == ["checkpoint-5"]


def test_resuming_a_model_with_tied_weights_loads_them_without_a_warning(tmp_path):
    """The embedded model ties lm_head to the embedding; its checkpoints hold the tensor once."""
    import logging

    from safetensors.torch import load_file
    from transformers import TrainerCallback

    out = tmp_path / "run"
    options = dict(spec="examples/landsat_landcover.kd", output_dir=str(out), evaluate=False)
    train(TrainOptions(**options, overrides={"max_steps": 1, "save_steps": 1}))
    saved = load_file(str(out / "checkpoint-1" / "model.safetensors"))
    assert "lm_head.weight" not in saved
    seen = {}

    class Look(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["tied"] = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
            seen["loaded"] = bool((model.lm_head.weight.detach().cpu() ==
                                   saved["model.embed_tokens.weight"]).all())

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    logging.getLogger("transformers").addHandler(handler)
    try:
        train(TrainOptions(**options, resume=True, overrides={"max_steps": 2, "save_steps": 1},
                           callbacks=[Look()]))
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert seen == {"tied": True, "loaded": True}
    assert not [m for m in records if "missing keys" in m]


@pytest.mark.parametrize("init", ["gaussian", "pissa"])
def test_lora_initialisations_and_adapters_that_load_on_the_original_base(workspace, tmp_path, init):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, TrainerCallback

    probe = torch.tensor([[5, 6, 7, 8, 9]])
    seen = {}

    class FinalLogits(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            with torch.no_grad():
                seen["logits"] = model(probe.to(model.device)).logits.float().cpu()

    out = tmp_path / init
    train(TrainOptions(spec=str(workspace / "spec.kd"), model=str(workspace / "model"),
                       dataset=str(workspace / "data.jsonl"), config=str(workspace / "train.yaml"),
                       output_dir=str(out), lora=True, lora_r=4, lora_init=init, table_every=0,
                       overrides={"max_steps": 2}, callbacks=[FinalLogits()]))
    run = json.loads((out / "kdsl_run" / "run.json").read_text())
    assert run["adapter"] == {"r": 4, "alpha": 16, "targets": "all-linear", "init": init}
    adapter = json.loads((out / "adapter_config.json").read_text())
    # A PiSSA adapter is saved converted (rank 2r) for the base as it was, not the residual one.
    assert adapter["r"] == (8 if init == "pissa" else 4)
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(workspace / "model")
        loaded = PeftModel.from_pretrained(base, out)(probe).logits
    # The saved adapter on the original base is the trained model.
    assert torch.allclose(loaded, seen["logits"], atol=1e-4)
    if init == "pissa":
        # Unconverted, a PiSSA adapter on the original base would count the principal part twice.
        with torch.no_grad():
            base = AutoModelForCausalLM.from_pretrained(workspace / "model")
            unconverted = PeftModel.from_pretrained(base, out / "kdsl_run" / "initial_adapter")(probe).logits
        assert not torch.allclose(unconverted, seen["logits"], atol=1e-3)


def test_an_unknown_lora_initialisation_is_a_usage_error(workspace, tmp_path, capsys):
    assert run_cli(workspace, tmp_path / "x", "--lora", "--lora-init", "eva") == 2
    assert "--lora-init eva: choose one of default, gaussian, orthogonal, pissa, olora" in capsys.readouterr().err
