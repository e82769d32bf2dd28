"""Tiny tokenizers and causal language models built locally (no hub access), for tests."""

from __future__ import annotations

from functools import cache

CORPUS = [
    "<think>NDVI is high, the near infrared is far above red.</think><answer>Vegetation</answer>",
    "<think>MNDWI is positive: green above shortwave infrared.</think><answer>Water</answer>",
    "<think>NDBI is positive and NDVI low: built-up land.</think><answer>Urban</answer>",
    "Classify the land cover from Landsat 8 reflectances B1 0.0123 B2 0.0456 B3 0.0789 B4 0.1011.",
    "Réflectance élevée, 中文文本, emoji 🌍🌱💧 and plain ASCII text 0123456789.",
]


@cache
def byte_level_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")


def tiny_causal_lm(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config)
