"""KdslGRPOTrainer end to end on scripted completions: rules ``on`` a tag shape only that tag's
tokens and ``mask after`` removes tokens from the loss, as (B, T) tensors that TRL's loss takes.

The expected values are computed here the slow, obvious way: each token's bytes come from the
byte-level vocabulary one token at a time, and the spans from Python's ``str.find``."""

from __future__ import annotations

import tempfile

import pytest
import torch

import kdsl
from kdsl.training.advantages import AdvantageConfig, advantages, column_names, components

SPEC = """
spec spans version 1
input {
  gold: float
}
output {
  think: tag "think"
  reply: tag "answer"
  value: reply as float
}
level format gate {
  rule has_answer: present(reply)
}
level accuracy weight 2 {
  rule exact: value == gold on reply
}
level reasoning weight 0.5 {
  rule thinks: length(think, words) >= 2 on think
}
mask after "</answer>"
advantage grpo(scale = none)
"""

# Multi-byte text on purpose: token offsets are byte offsets, spans are character offsets.
COMPLETIONS = [
    "<think>só é 4</think><answer>4</answer> and some trailing chatter",
    "<think>x</think><answer>5</answer>",
    "<answer>4</answer>",
    "<think>two words ✓</think><answer>4</answer>\n\n\n¿más?",
    "no tags at all, ünïcode",
    "<think>a b c</think><answer>6</answer>",
    "<think>ok</think><answer>4</answer></answer>",
    "<think>just thinking 思考</think>",
]
GOLD = [4.0] * 4 + [4.0] * 4
GROUP = 4


def byte_ranges(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """Each token's byte range in the UTF-8 completion, read off the byte-level vocabulary (GPT-2's
    byte table, as transformers defines it); special tokens are empty."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids)
    out, position = [], 0
    for token_id, piece in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        size = 0 if token_id in special else len(bytes(byte_of[c] for c in piece))
        out.append((position, position + size))
        position += size
    return out


def as_bytes(text: str, span: tuple[int, int] | None) -> tuple[int, int] | None:
    return None if span is None else (len(text[:span[0]].encode()), len(text[:span[1]].encode()))


def tag_span(text: str, name: str) -> tuple[int, int] | None:
    """Character range of the content of the first ``<name>...</name>`` element: the text that the
    spec's ``tag`` extracts, which is what a rule ``on`` it acts on."""
    start = text.find(f"<{name}>")
    if start < 0:
        return None
    start += len(name) + 2
    end = text.find(f"</{name}>", start)
    return None if end < 0 else (start, end)


@pytest.fixture(scope="module")
def batch():
    from datasets import Dataset
    from trl import GRPOConfig

    from kdsl.training.trl import KdslGRPOTrainer
    from tests.tiny import byte_level_tokenizer, tiny_causal_lm

    program = kdsl.loads(SPEC)
    tokenizer = byte_level_tokenizer()
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
           for c in COMPLETIONS]
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == COMPLETIONS

    def rollout(prompts, trainer):
        return {"prompt_ids": [tokenizer("q")["input_ids"] for _ in prompts], "completion_ids": ids,
                "logprobs": [[0.0] * len(i) for i in ids]}

    config = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="kdsl-tokens-"), use_cpu=True,
                        per_device_train_batch_size=len(COMPLETIONS), num_generations=GROUP,
                        max_completion_length=128, report_to="none", beta=0.0, bf16=False)
    rows = [{"prompt": "q", "gold": g} for g in GOLD]
    trainer = KdslGRPOTrainer(program, tiny_causal_lm(tokenizer), config,
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                              rollout_func=rollout)
    trainer.model.train()
    output = trainer._generate_and_score_completions(rows)
    return program, tokenizer, ids, trainer, output


def expected_parts(program):
    scores = program.score(COMPLETIONS, gold=GOLD)
    return advantages(components(program.module, scores), GROUP, AdvantageConfig(scale="none"))


def test_rules_on_a_tag_shape_only_its_tokens(batch):
    program, tokenizer, ids, _, output = batch
    token_advantages = output["advantages"]
    assert token_advantages.shape == output["completion_ids"].shape
    seq, parts = expected_parts(program)
    names = column_names(program.module)
    exact, thinks = names.index("exact"), names.index("thinks")
    assert parts[:, exact].abs().sum() > 0 and parts[:, thinks].abs().sum() > 0
    for row, text in enumerate(COMPLETIONS):
        answer, think = as_bytes(text, tag_span(text, "answer")), as_bytes(text, tag_span(text, "think"))
        raw = text.encode()
        for t, (lo, hi) in enumerate(byte_ranges(tokenizer, ids[row])):
            value = seq[row].item()
            if answer is None or not (lo < answer[1] and hi > answer[0] and hi > lo):
                value -= parts[row, exact].item()
            if think is None or not (lo < think[1] and hi > think[0] and hi > lo):
                value -= parts[row, thinks].item()
            assert token_advantages[row, t].item() == pytest.approx(value, abs=1e-6), (row, t, raw[lo:hi])


def test_mask_after_the_marker_leaves_the_loss_and_recounts_items(batch):
    _, tokenizer, ids, trainer, output = batch
    keep = output["tool_mask"]
    completion_mask = output["completion_mask"]
    for row, text in enumerate(COMPLETIONS):
        raw = text.encode()
        marker = raw.find(b"</answer>")
        edge = None if marker < 0 else marker + len(b"</answer>")
        for t, (lo, hi) in enumerate(byte_ranges(tokenizer, ids[row])):
            dropped = edge is not None and (lo > edge or (lo == edge and hi > lo))
            assert keep[row, t].item() == (0 if dropped else 1), (row, t, raw[lo:hi])
        # the end-of-sequence token stays in the loss only where nothing trails the answer
        trails = edge is not None and edge < len(raw)
        assert keep[row, len(ids[row]) - 1].item() == (0 if trails else 1)
    kept = (keep * completion_mask).sum(1)
    assert kept[0] < len(ids[0]) and kept[1] == len(ids[1])
    assert output["num_items_in_batch"].item() == (completion_mask * keep).sum().item()
    assert output["num_items_in_batch"].item() < completion_mask.sum().item()


def test_a_training_step_runs_on_token_level_advantages(batch):
    _, _, _, trainer, output = batch
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.1)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() in a real run
    loss = trainer.compute_loss(trainer.model, output, num_items_in_batch=output["num_items_in_batch"])
    assert torch.isfinite(loss)
    loss.backward()
    trainer.optimizer.step()
    changed = any(not torch.equal(a, p.detach()) for a, p in zip(before, trainer.model.parameters()))
    assert changed
