"""GGUF in both directions with the embedded tiny model: ``write_gguf`` writes it as llama.cpp
would, ``load_model`` reads it back through transformers to the same tokens, logits and greedy
replies; and ``load_model``'s errors for what a user can get wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import pytest
import torch

import kdsl
from kdsl.errors import KdslError
from kdsl.example.landsat import landsat_rows, prompt_for
from kdsl.io.loading import load_model, write_gguf

EMBEDDED_MODEL = Path(kdsl.__file__).parent / "example" / "tiny_landcover"


@pytest.fixture(scope="module")
def original():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_MODEL)
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_MODEL, dtype=torch.float32).eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def gguf_path(original, tmp_path_factory):
    model, tokenizer = original
    return write_gguf(model, tokenizer, tmp_path_factory.mktemp("gguf") / "tiny_landcover.gguf")


@pytest.fixture(scope="module")
def loaded(gguf_path):
    return load_model(gguf_path, device="cpu")


@pytest.fixture(scope="module")
def prompts():
    return [row["prompt"] for row in landsat_rows()[:4]]


def test_the_file_has_llama_cpp_names_and_metadata(gguf_path, original):
    model, tokenizer = original
    reader = gguf.GGUFReader(str(gguf_path))
    value = lambda key: reader.fields[key].contents()  # noqa: E731
    names = {tensor.name for tensor in reader.tensors}
    assert value("general.architecture") == "llama"
    assert {"token_embd.weight", "output_norm.weight", "blk.1.attn_q.weight", "blk.1.attn_k.weight",
            "blk.1.ffn_gate.weight", "blk.1.ffn_norm.weight"} <= names
    assert "output.weight" not in names  # tied: the embedding matrix is the output projection
    assert all(tensor.tensor_type == gguf.GGMLQuantizationType.F32 for tensor in reader.tensors)
    assert value("llama.embedding_length") == model.config.hidden_size
    assert value("llama.attention.head_count") == model.config.num_attention_heads
    assert value("llama.rope.dimension_count") == model.config.head_dim
    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == "starcoder"  # digits split off before GPT-2's split
    assert len(value("tokenizer.ggml.tokens")) == model.config.vocab_size
    assert value("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert value("tokenizer.ggml.padding_token_id") == tokenizer.pad_token_id
    assert value("tokenizer.ggml.add_bos_token") is False


def test_the_tokenizer_round_trips(original, loaded, prompts):
    tokenizer = original[1]
    gguf_tokenizer = loaded[1]
    reply = "<think>Red B4 is 0.166 and NIR B5 is 0.269.</think><answer>Vegetation</answer><|endoftext|>"
    texts = prompts + [prompt_for([0.01, 0.02, 0.03, 0.04, 0.35, 0.2, 0.1]), reply,
                       "spaces  before 12   digits\n\t7 and 0.5"]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert gguf_tokenizer(text)["input_ids"] == ids, text
        assert gguf_tokenizer.decode(ids) == tokenizer.decode(ids)
    assert (gguf_tokenizer.eos_token, gguf_tokenizer.pad_token) == (tokenizer.eos_token, tokenizer.pad_token)


def test_the_logits_match(original, loaded, prompts):
    model, tokenizer = original
    batch = tokenizer(prompts[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**batch).logits
        actual = loaded[0](**batch).logits
    assert loaded[0].dtype == torch.float32
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_greedy_replies_are_the_same(original, loaded, prompts):
    model, tokenizer = original
    for prompt in prompts:
        batch = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            expected = model.generate(**batch, do_sample=False, max_new_tokens=24)
            actual = loaded[0].generate(**batch, do_sample=False, max_new_tokens=24)
        assert actual.tolist() == expected.tolist(), tokenizer.decode(expected[0])


def test_the_loaded_model_trains_and_saves_like_any_other(original, gguf_path, tmp_path):
    from transformers.trainer_utils import validate_quantization_for_training

    model, tokenizer = original
    loaded = load_model(gguf_path, device="cpu")[0]
    assert not getattr(loaded, "is_quantized", False)
    validate_quantization_for_training(loaded)  # what the trainer checks before fine-tuning
    loaded.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    saved = load_model(str(tmp_path / "saved"), device="cpu")[0]
    batch = tokenizer("Land cover: Vegetation, Urban or Water?", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(saved(**batch).logits, model(**batch).logits, atol=1e-4, rtol=0)


def test_a_lora_adapter_loads_on_top_of_a_gguf_model(original, gguf_path, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = original
    base = load_model(gguf_path, device="cpu")[0]
    # random B matrices, so that the adapter changes the logits
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False)).eval()
    adapted.save_pretrained(tmp_path / "adapter", save_embedding_layers=False)
    batch = tokenizer("Landsat 8 surface reflectance: B1 0.012", return_tensors="pt")
    with torch.no_grad():
        expected = adapted(**batch).logits
        reloaded = load_model(gguf_path, device="cpu", adapter=str(tmp_path / "adapter"))[0]
        actual = reloaded(**batch).logits
        plain = model(**batch).logits
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(actual, plain, atol=1e-3)


def test_a_model_folder_loads_with_its_tokenizer(original):
    model, processing_class = load_model(str(EMBEDDED_MODEL), device="cpu")
    assert model.dtype == torch.float32 and not model.training
    assert processing_class.pad_token == original[1].pad_token


def test_which_configs_are_vision_language_models():
    from transformers import LlamaConfig, LlavaConfig

    from kdsl.io.loading import _is_vision_language

    assert _is_vision_language(LlavaConfig())
    assert not _is_vision_language(LlamaConfig())


# ---- errors -------------------------------------------------------------------------------------

def test_a_missing_gguf_file(tmp_path):
    with pytest.raises(KdslError, match="no such GGUF file"):
        load_model(str(tmp_path / "missing.gguf"), device="cpu")


def test_the_gguf_package_missing(gguf_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` fail
    with pytest.raises(KdslError, match=r"pip install 'kdsl\[gguf\]'"):
        load_model(gguf_path, device="cpu")


def test_an_architecture_transformers_cannot_load(tmp_path):
    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv7")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(KdslError, match="cannot load GGUF architecture 'rwkv7'") as caught:
        load_model(str(path), device="cpu")
    assert "llama" in str(caught.value) and "GGUF support lists" in str(caught.value)


def test_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("not a model\n")
    with pytest.raises(KdslError, match="not a readable GGUF file"):
        load_model(str(path), device="cpu")


def test_a_folder_without_config(tmp_path):
    with pytest.raises(KdslError, match="has no config.json"):
        load_model(str(tmp_path), device="cpu")
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(KdslError, match="LoRA adapter folder"):
        load_model(str(tmp_path), device="cpu")


def test_an_adapter_folder_without_adapter_config(tmp_path):
    with pytest.raises(KdslError, match="has no adapter_config.json"):
        load_model(str(EMBEDDED_MODEL), device="cpu", adapter=str(tmp_path))
    with pytest.raises(KdslError, match="no such adapter folder"):
        load_model(str(EMBEDDED_MODEL), device="cpu", adapter=str(tmp_path / "missing"))


def test_a_hub_id_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(KdslError, match=r"hub cannot be reached \(offline\?\)"):
        load_model("kdsl-tests/no-such-model", device="cpu")


def test_a_missing_local_folder_and_a_bad_dtype(tmp_path):
    with pytest.raises(KdslError, match="no such model folder"):
        load_model(str(tmp_path / "missing"), device="cpu")
    with pytest.raises(KdslError, match="unknown dtype float8"):
        load_model(str(EMBEDDED_MODEL), device="cpu", dtype="float8")


def test_kdsl_train_and_eval_take_a_gguf_file(gguf_path, tmp_path, capsys):
    """A GGUF file trains with a KL term (TRL's reference model comes from the dequantised copy
    in the run folder) and evaluates through `kdsl eval`, with the figures of the original."""
    import json

    from kdsl.cli import main

    out = tmp_path / "run"
    (tmp_path / "train.yaml").write_text("per_device_train_batch_size: 4\nnum_generations: 4\n"
                                         "max_completion_length: 16\nbeta: 0.04\nsave_steps: 100\n")
    assert main(["train", "examples/landsat_landcover.kd", "--model", str(gguf_path), "--config",
                 str(tmp_path / "train.yaml"), "--max-steps", "1", "--eval-rows", "2",
                 "--output-dir", str(out)]) == 0
    summary = json.loads((out / "kdsl_run" / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["evaluation"]["after"]["rows"] == 2
    assert (out / "base_model" / "config.json").is_file()
    capsys.readouterr()
    figures = []
    for model in (str(gguf_path), str(EMBEDDED_MODEL)):
        assert main(["eval", "examples/landsat_landcover.kd", "--model", model, "--rows", "4",
                     "--max-new-tokens", "48", "--json", "--no-progress"]) == 0
        figures.append(json.loads(capsys.readouterr().out))
    assert figures[0]["reward"] == figures[1]["reward"]
    assert figures[0]["metric_value"] == figures[1]["metric_value"]
