"""Build the tiny default model of ``kdsl train`` (``kdsl/example/tiny_landcover/``) from scratch.

    python scripts/build_tiny_model.py [--out kdsl/example/tiny_landcover] [--seed 0]

Everything is seeded and local (no hub access):

1. a byte-level BPE tokenizer, trained with ``tokenizers`` on the training prompts of the real
   spyndex Landsat 8 samples (``kdsl.example.landsat``) and on the synthetic completions below. Digits are
   single tokens and the four tags are added tokens, so every prompt has the same layout and a
   reply is about 20 tokens;
2. a small Llama-architecture causal LM with random weights (2 layers, tied embeddings);
3. a short supervised warm-up on SYNTHETIC completions for the training prompts only:
   ``<think>`` one of three sentences that restate the pixel's red (B4) and near-infrared (B5)
   reflectance from the prompt and name NDVI ``</think><answer>X</answer>`` and the end-of-text
   token, where X is drawn uniformly at random and afresh at every step, never taken from the
   label. The warm-up teaches the reply format and nothing about land cover: the
   model answers each class about a third of the time, whatever the pixel, so its accuracy starts
   near chance and reinforcement learning with ``examples/landsat_landcover.kd`` has the whole
   classification to learn.

The model folder's README.md records how it was made and what it measured.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "kdsl" / "example" / "tiny_landcover"
EOS, PAD = "<|endoftext|>", "<|pad|>"
TAGS = ("<think>", "</think>", "<answer>", "</answer>")

# The reasoning restates the pixel's red (B4) and near-infrared (B5) reflectance from the prompt,
# and names an index (the spec's cites_evidence rule). Copying the two values next to the answer
# puts the evidence a few tokens before the decision, where a two-layer model can learn to use
# it; none of the sentences favours a class, so the answer after them is the model's decision.
THINKING = (
    "NDVI from red B4 {B4} and NIR B5 {B5} reflectance.",
    "Red B4 is {B4} and NIR B5 is {B5}, which sets NDVI.",
    "B4 {B4} and B5 {B5}: NDVI compares red with infrared.",
)

MODEL = {"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 4, "max_position_embeddings": 256}
VOCAB_SIZE = 512
WARMUP = {"steps": 300, "batch_size": 32, "learning_rate": 3e-3}


# What GRPO does with this model, measured with `kdsl.example.landsat.DEFAULT_TRAINING`; update it when
# the model or the settings change.
TRAINING_RESULT = """
## GRPO on this model

`kdsl train examples/landsat_landcover.kd` (no `--model`, no `--dataset`) with
`kdsl.example.landsat.DEFAULT_TRAINING` (learning rate 3e-4 constant, beta 0.04, 8 completions for each
of 8 prompts a step, completions of at most 48 tokens, temperature 1.0, 300 steps), on a 2-core
CPU: 160-175 s of training, about 3 minutes for the whole command. Greedy, on the 30 held-out rows:

| | accuracy | mean reward |
|---|---:|---:|
| before | 0.367 | 2.081 |
| after 300 steps | 0.967 | 3.425 |

The mean training reward over steps 1-30 was 1.99 (accuracy level 0.34) and over steps
271-300 3.36 (0.95); GRPO seeds 1 and 2 gave the same held-out accuracy, 0.967. The reward is at
most 3.5 (format 1 + accuracy 2 x 1 + knowledge 0.5 x 1).
"""


def completion(sr, rng: random.Random) -> str:
    from kdsl.example.landsat import BANDS, CLASSES

    values = {band: f"{float(v):.3f}" for band, v in zip(BANDS, sr)}
    thinking = rng.choice(THINKING).format(**values)
    # The class is random on purpose: the warm-up must not teach the labels (see the docstring).
    return f"<think>{thinking}</think><answer>{rng.choice(CLASSES)}</answer>"


def build_tokenizer(rows: list[dict], seed: int):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from kdsl.example.landsat import CLASSES

    rng = random.Random(seed)
    corpus = [r["prompt"] for r in rows]
    corpus += [completion(r["sr"], rng) for r in rows for _ in range(4)]
    corpus += [f"<answer>{c}</answer>" for c in CLASSES] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # The tags become added tokens, so the merges are learned on the text around them.
    for tag in TAGS:
        corpus = [text.replace(tag, "\n") for text in corpus]
    tok.train_from_iterator(corpus, trainer)
    # Added after training: the trainer numbers its special tokens from 0 and would take their ids.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                        clean_up_tokenization_spaces=False, model_max_length=256,
                                        padding_side="left")  # generation pads on the left
    return tokenizer


def build_model(tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id, **MODEL)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id,
                                               bos_token_id=tokenizer.eos_token_id)
    return model


def warm_up(model, tokenizer, rows: list[dict], seed: int) -> dict:
    """Teacher forcing on prompt + synthetic completion; the loss is on the completion only."""
    import torch

    rng = random.Random(seed + 1)
    torch.manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=WARMUP["learning_rate"], weight_decay=0.0)
    steps = WARMUP["steps"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20)
                                                 * max(0.05, 1 - s / steps))
    prompt_ids = [tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows]
    model.train()
    started = time.perf_counter()
    losses = []
    for _step in range(steps):
        batch = [rng.randrange(len(rows)) for _ in range(WARMUP["batch_size"])]
        seqs, targets = [], []
        for i in batch:
            reply = tokenizer(completion(rows[i]["sr"], rng), add_special_tokens=False)["input_ids"]
            reply.append(tokenizer.eos_token_id)
            seqs.append(prompt_ids[i] + reply)
            targets.append([-100] * len(prompt_ids[i]) + reply)
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
        labels = torch.full((len(seqs), width), -100)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, t) in enumerate(zip(seqs, targets)):  # left padding, as in generation
            ids[i, width - len(s):] = torch.tensor(s)
            labels[i, width - len(s):] = torch.tensor(t)
            mask[i, width - len(s):] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return {"seconds": round(time.perf_counter() - started, 1), "final_loss": round(sum(losses[-20:]) / 20, 4)}


def check(model, tokenizer, train, heldout) -> dict:
    """Greedy replies: how many pass the spec's format gate, and held-out accuracy and reward."""
    from collections import Counter

    import kdsl
    from kdsl.example import landsat

    program = kdsl.load(ROOT / "examples" / "landsat_landcover.kd")
    replies = landsat.generate_completions(model, tokenizer, [r["prompt"] for r in train])
    scores = program.score(replies, label=[r["label"] for r in train], sr=[r["sr"] for r in train])
    answers = Counter(program_answer(t) for t in replies)
    sampled = Counter(program_answer(t) for t in sample_replies(model, tokenizer, train, 4))
    total = sum(sampled.values())
    shares = {k: round(sampled[k] / total, 3) for k in landsat.CLASSES}
    shares["no class"] = round(1 - sum(sampled[k] for k in landsat.CLASSES) / total, 3)
    result = landsat.heldout_evaluation(model, tokenizer, heldout, program)
    reply_tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in replies]
    copied = [f"{r['sr'][3]:.3f}" in t and f"{r['sr'][4]:.3f}" in t for r, t in zip(train, replies)]
    return {"train_format_pass": round(float((scores.levels["format"] >= 1.0 - 1e-6).float().mean()), 4),
            "train_copies_b4_b5": round(sum(copied) / len(copied), 4),
            "train_greedy_answers": dict(answers), "train_sampled_answers": shares, "heldout": result,
            "reply_tokens_mean": round(sum(reply_tokens) / len(reply_tokens), 1), "example_reply": replies[0]}


def sample_replies(model, tokenizer, rows, per_prompt: int) -> list[str]:
    import torch

    torch.manual_seed(0)
    prompts = [r["prompt"] for r in rows for _ in range(per_prompt)]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=48, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def program_answer(text: str) -> str:
    start, end = text.find("<answer>"), text.find("</answer>")
    return text[start + len("<answer>"):end] if 0 <= start < end else "(none)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from kdsl.example import landsat

    torch.set_num_threads(min(2, torch.get_num_threads()))
    rows = landsat.landsat_rows()
    train, heldout = landsat.train_heldout_split(rows)
    prompts = [r["prompt"] for r in train]
    tokenizer = build_tokenizer(train, args.seed)
    model = build_model(tokenizer, args.seed)
    parameters = sum(p.numel() for p in model.parameters())
    warm = warm_up(model, tokenizer, train, args.seed)
    measured = check(model, tokenizer, train, heldout)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    # transformers 5 writes its new class name; the older name loads in transformers 4 and 5 alike.
    config_path = args.out / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
    for path in args.out.iterdir():
        path.chmod(0o644)  # safetensors writes its file readable by the owner only
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file() and f.name != "README.md")
    info = {"seed": args.seed, "parameters": parameters, "vocab_size": len(tokenizer), "model": MODEL,
            "warmup": {**WARMUP, **warm}, "train_rows": len(train), "heldout_rows": len(heldout),
            "prompt_tokens": len(tokenizer(prompts[0], add_special_tokens=False)["input_ids"]),
            "bytes_on_disk": size, **measured}
    print(json.dumps(info, indent=2))
    (args.out / "README.md").write_text(readme(info), encoding="utf-8")
    return 0


def readme(info: dict) -> str:
    import textwrap

    m, held, warm = info["model"], info["heldout"], info["warmup"]
    greedy = ", ".join(f"{k} for {v}" for k, v in info["train_greedy_answers"].items())
    sampled = ", ".join(f"{k} {v:.0%}" for k, v in info["train_sampled_answers"].items())
    paragraphs = [
        f"- **Data**: the {info['train_rows']} training rows of `kdsl.example.landsat.train_heldout_split` "
        f"(seed 0) of the 120 real labelled Landsat 8 samples shipped in `spyndex`; the "
        f"{info['heldout_rows']} held-out rows are never seen, not even by the tokenizer.",
        f"- **Tokenizer**: byte-level BPE trained with `tokenizers` on those prompts and on the synthetic "
        f"completions, {info['vocab_size']} tokens; digits are single tokens; `<think>`, `</think>`, "
        f"`<answer>` and `</answer>` are added tokens; `<|endoftext|>` ends a text and `<|pad|>` pads. "
        f"A prompt is {info['prompt_tokens']} tokens.",
        f"- **Model**: `LlamaForCausalLM`, {m['num_hidden_layers']} layers, hidden size "
        f"{m['hidden_size']}, MLP {m['intermediate_size']}, {m['num_attention_heads']} heads, tied "
        f"embeddings, {info['parameters']:,} parameters ({info['bytes_on_disk'] / 1e6:.2f} MB on disk "
        f"with the tokenizer, float32 safetensors).",
        f"- **Warm-up**: {warm['steps']} steps of supervised training (AdamW, learning rate "
        f"{warm['learning_rate']}, batches of {warm['batch_size']}, loss on the completion only; "
        f"{warm['seconds']} s on a 2-core CPU) on *synthetic* completions: `<think>` one of three "
        f"sentences restating the pixel's red (B4) and near-infrared (B5) reflectance from the prompt "
        f"and naming NDVI `</think><answer>X</answer>`, with X drawn uniformly at random at every step, "
        f"**not** the true label. The model learns the reply format and to restate the evidence, and "
        f"nothing about land cover, so its accuracy starts near chance and GRPO has the whole "
        f"classification to learn.",
        f"Measured after the build: greedy replies to the training prompts pass the spec's format gate "
        f"for {info['train_format_pass']:.0%} of them (about {info['reply_tokens_mean']} tokens each) "
        f"and restate B4 and B5 correctly for {info['train_copies_b4_b5']:.0%}; the greedy answer is "
        f"{greedy} of the {info['train_rows']} training prompts; sampled at temperature 1 (4 replies a "
        f"prompt) the answers are {sampled}. Held-out accuracy {held['accuracy']:.3f} and mean reward "
        f"{held['reward']:.3f} on {held['rows']} held-out rows (greedy). Example reply:",
    ]
    wrapped = []
    for text in paragraphs:
        indent = "  " if text.startswith("- ") else ""
        wrapped.append(textwrap.fill(text, width=100, subsequent_indent=indent, break_on_hyphens=False))
    return ("# tiny_landcover\n\nThe default model of `kdsl train` (used when no `--model` is given) for\n"
            "`examples/landsat_landcover.kd`. It is made from scratch, with no pretrained weights, by\n\n"
            f"    python scripts/build_tiny_model.py --seed {info['seed']}\n\n"
            + "\n".join(wrapped[:4]) + "\n\n" + wrapped[4] + "\n\n"
            + f"    {info['example_reply']}\n" + TRAINING_RESULT)


if __name__ == "__main__":
    raise SystemExit(main())
