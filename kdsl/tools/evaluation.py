"""Stage 8: ``kdsl eval``: a model's completions on held-out rows, scored by a spec.

A dataset row gives a prompt (plain text, or chat messages with an optional ``image`` /
``images`` column for vision-language models) and the spec's input columns. The model writes
``samples`` completions per row, in batches, with the prompt tokenized exactly as TRL's GRPO
trainer tokenizes it, so the figures describe the policy that training sees. The spec scores
every completion; the table gives the reward, each level and each rule as a mean with a
bootstrap 95% interval (rows are resampled, not completions, since the samples of one prompt are
not independent), the metric the user names (a rule or level) with pass@k, and the share of
completions that each gate closed on. ``kdsl train`` uses the same code for its held-out figures.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kdsl.errors import KdslDataError, KdslError, Span, did_you_mean

# A level or rule value at or above this counts as fully satisfied (the gate's threshold too).
SATISFIED = 1.0 - 1e-6


@dataclass
class EvalConfig:
    """How completions are generated and summarised."""

    samples: int = 1  # completions per row; pass@k uses k = samples
    temperature: float | None = None  # None: greedy for one sample, 1.0 for several
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 16  # prompts per generate call (each gives `samples` sequences)
    metric: str | None = None  # a rule or level name; None: a rule named `correct` if there is one
    seed: int = 0
    bootstrap: int = 1000  # resamples for the intervals
    confidence: float = 0.95

    def __post_init__(self):
        if self.samples < 1:
            raise KdslError(f"--samples must be at least 1, not {self.samples}")
        if self.batch_size < 1:
            raise KdslError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.max_new_tokens < 1:
            raise KdslError(f"--max-new-tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature is not None and self.temperature < 0:
            raise KdslError(f"--temperature cannot be negative ({self.temperature})")
        if self.samples > 1 and self.temperature == 0:
            raise KdslError(f"--samples {self.samples} with --temperature 0 would give the same "
                            "completion every time; give a temperature above 0 for pass@k")

    @property
    def sampling(self) -> bool:
        return self.samples > 1 or bool(self.temperature)

    @property
    def sampling_temperature(self) -> float:
        return 1.0 if self.temperature is None else self.temperature


@dataclass
class Stat:
    """One line of the table: a mean over the completions it applies to, and its interval."""

    name: str
    kind: str  # reward, level, rule or metric
    mean: float
    low: float
    high: float
    count: int  # completions it applied to

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "mean": _finite(self.mean),
                "low": _finite(self.low), "high": _finite(self.high), "count": self.count}


@dataclass
class Evaluation:
    """What ``evaluate`` measured. ``completions[i * samples + j]`` is sample ``j`` of row ``i``."""

    spec: str
    rows: int
    samples: int
    completions: list[str]
    scores: object  # kdsl.Scores of every completion
    stats: list[Stat]
    metric: str | None = None
    pass_at_k: float | None = None  # rows where at least one of the k samples satisfies the metric
    pass_at_1: float | None = None  # the unbiased estimate from the same samples
    gates: dict[str, float] = field(default_factory=dict)  # gate level -> share it closed on
    generate_seconds: float = 0.0
    score_seconds: float = 0.0
    invalid_values: list[str] = field(default_factory=list)
    confidence_label: str = "95%"

    def stat(self, name: str, kind: str | None = None) -> Stat:
        for item in self.stats:
            if item.name == name and (kind is None or item.kind == kind):
                return item
        raise KeyError(name)

    @property
    def reward(self) -> float:
        return self.stat("reward", "reward").mean

    @property
    def metric_value(self) -> float | None:
        return self.stat(self.metric, "metric").mean if self.metric else None

    def summary(self) -> dict:
        """Every figure, as JSON-ready numbers (``None`` where a mean has no completion)."""
        out = {"spec": self.spec, "rows": self.rows, "samples": self.samples,
               "completions": len(self.completions), "reward": _finite(self.reward),
               "metric": self.metric, "metric_value": _finite(self.metric_value),
               "pass_at_k": _finite(self.pass_at_k), "pass_at_1": _finite(self.pass_at_1),
               "gates_closed": {k: _finite(v) for k, v in self.gates.items()},
               "generate_seconds": round(self.generate_seconds, 3),
               "score_seconds": round(self.score_seconds, 3),
               "stats": [s.as_dict() for s in self.stats]}
        if self.invalid_values:
            out["invalid_values"] = list(self.invalid_values)
        return out

    def render(self, console) -> None:
        """The table, on a rich console."""
        from rich.table import Table

        title = (f"{self.spec}: {self.rows} rows x {self.samples} "
                 f"{'sample' if self.samples == 1 else 'samples'}")
        table = Table(title=title)
        for column, justify in (("", "left"), ("kind", "left"), ("mean", "right"),
                                (f"{self.confidence_label} interval", "right"), ("n", "right")):
            table.add_column(column, justify=justify)
        for item in self.stats:
            interval = ("-" if not math.isfinite(item.low)
                        else f"{item.low:.3f} - {item.high:.3f}")
            mean = f"{item.mean:.3f}" if math.isfinite(item.mean) else "-"
            table.add_row(item.name, item.kind, mean, interval, str(item.count))
        console.print(table)
        if self.metric and self.pass_at_k is not None and self.samples > 1:
            console.print(f"{self.metric}: pass@{self.samples} {self.pass_at_k:.3f}, "
                          f"pass@1 {self.pass_at_1:.3f}")
        for gate, share in self.gates.items():
            console.print(f"gate {gate} closed on {share:.1%} of the completions")

    def write_jsonl(self, path: str | Path, rows: Sequence[dict], input_names: Sequence[str]) -> None:
        """One line per completion: the row's prompt and inputs, the completion and its scores.

        Inputs stay at the top level and the completion is ``completion``, so ``kdsl explain
        --data F --row N`` and ``kdsl score --data F`` read the file as it is."""
        scores = self.scores
        levels = {name: scores.levels[name].tolist() for name in scores.levels}
        rules = {name: scores.rules[name].tolist() for name in scores.rules}
        applies = {name: scores.applies[name].tolist() for name in scores.applies}
        rewards = scores.reward.tolist()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for index, completion in enumerate(self.completions):
                row = rows[index // self.samples]
                line = {"dataset_row": index // self.samples, "sample": index % self.samples}
                prompt = _jsonable(row.get("prompt"))
                if prompt is not None:
                    line["prompt"] = prompt
                for name in input_names:
                    line[name] = _jsonable(row.get(name))
                line["completion"] = completion
                line["scores"] = {
                    "reward": round(rewards[index], 6),
                    "levels": {k: round(v[index], 6) for k, v in levels.items()},
                    "rules": {k: (round(v[index], 6) if applies.get(k, [True] * len(v))[index] else None)
                              for k, v in rules.items()}}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")


# ---- prompts and generation -----------------------------------------------------------------

def text_tokenizer(processing_class):
    """The tokenizer inside a processor, or the tokenizer itself."""
    return getattr(processing_class, "tokenizer", None) or processing_class


def _is_conversational(prompt) -> bool:
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict) and "role" in prompt[0]


def _row_images(row: dict):
    if row.get("images") is not None:
        return list(row["images"])
    if row.get("image") is not None:
        return [row["image"]]
    return None


def encode_prompts(processing_class, rows: Sequence[dict]):
    """The model inputs for a batch of rows, left-padded, tokenized as TRL's GRPO trainer does:
    plain-text prompts through the tokenizer (its special tokens included), chat prompts through
    the chat template with the generation prompt, images placed in the first user message."""
    prompts = [row["prompt"] for row in rows]
    tokenizer = text_tokenizer(processing_class)
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        if _is_conversational(prompts[0]):
            from trl.data_utils import prepare_multimodal_messages

            images = [_row_images(row) for row in rows]
            multimodal = hasattr(processing_class, "image_processor")
            if multimodal:
                prompts = [prepare_multimodal_messages(p, images=i) if i else prepare_multimodal_messages(p)
                           for p, i in zip(prompts, images)]
            elif any(images):
                raise KdslDataError("the rows have images but the model's processing class has no "
                                    "image processor: is --model a vision-language model?")
            return processing_class.apply_chat_template(
                conversation=prompts, add_generation_prompt=True, tokenize=True, return_dict=True,
                padding=True, return_tensors="pt")
        if any(_row_images(row) for row in rows):
            raise KdslDataError("rows with images need chat prompts (a list of {role, content} "
                                "messages): the images go into the first user message")
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise KdslDataError(f"column `prompt`: expected text or a list of chat messages, "
                                    f"got {type(prompt).__name__}", Span(f"row {index}"))
        return processing_class(text=prompts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = previous_side


def generate(model, processing_class, rows: Sequence[dict], config: EvalConfig,
             progress: Callable[[int], None] | None = None) -> list[str]:
    """``config.samples`` completions for each row, row-major, in batches of ``config.batch_size``
    rows. ``progress(n)`` is called after each batch with the rows it finished."""
    import torch

    tokenizer = text_tokenizer(processing_class)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    options = {"max_new_tokens": config.max_new_tokens, "pad_token_id": pad_id,
               "eos_token_id": tokenizer.eos_token_id, "num_return_sequences": config.samples}
    if config.sampling:
        options.update(do_sample=True, temperature=config.sampling_temperature, top_p=config.top_p,
                       top_k=0)
    else:
        # Greedy: the sampling settings a model's generation config may carry do not apply.
        options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    was_training = model.training
    model.eval()  # in training mode, gradient checkpointing turns the cache off
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    texts: list[str] = []
    try:
        for start in range(0, len(rows), config.batch_size):
            batch_rows = rows[start:start + config.batch_size]
            batch = encode_prompts(processing_class, batch_rows).to(device)
            with torch.no_grad():
                out = model.generate(**batch, **options)
            new = out[:, batch["input_ids"].shape[1]:]
            texts.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
            if progress is not None:
                progress(len(batch_rows))
    finally:
        model.train(was_training)
        torch.random.set_rng_state(generator_state)
    return texts


# ---- scoring and summaries ------------------------------------------------------------------

def metric_name(program, requested: str | None) -> str | None:
    """The rule or level the metric reads: the one asked for (checked), else `correct` if the
    spec has such a rule, else none."""
    names = list(program.rule_names) + [n for n in program.level_names if n not in program.rule_names]
    if requested is None:
        return "correct" if "correct" in program.rule_names else None
    if requested not in names:
        raise KdslError(f"--metric {requested}: {program.name} has no rule or level called "
                        f"`{requested}`{did_you_mean(requested, names)}")
    return requested


def bootstrap_interval(values, applies, samples: int, resamples: int, confidence: float,
                       seed: int) -> tuple[float, float, float, int]:
    """Mean of ``values`` where ``applies``, and a percentile bootstrap interval that resamples
    dataset rows (each row's ``samples`` completions together). Returns (mean, low, high, n)."""
    import torch

    v = values.detach().to(torch.float64).cpu().reshape(-1, samples)
    a = applies.detach().to(torch.float64).cpu().reshape(-1, samples)
    row_sums = (v * a).sum(1)
    row_counts = a.sum(1)
    count = int(row_counts.sum())
    if count == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(row_sums.sum() / count)
    rows = v.shape[0]
    if resamples <= 0 or rows < 2:
        return mean, math.nan, math.nan, count
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(rows, (resamples, rows), generator=generator)
    totals = row_counts[picks].sum(1)
    means = row_sums[picks].sum(1) / totals
    means = means[totals > 0]
    tail = (1.0 - confidence) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=means.dtype)).tolist()
    return mean, low, high, count


def pass_at_k(passed, applies, samples: int) -> tuple[float | None, float | None]:
    """(pass@k with k = samples, unbiased pass@1) over the rows the metric applies to: a row
    passes at k when one of its k samples is fully satisfied."""
    import torch

    ok = (passed & applies).reshape(-1, samples)
    counted = applies.reshape(-1, samples)
    n = counted.sum(1)
    rows = n > 0
    if not bool(rows.any()):
        return None, None
    c = ok.sum(1)[rows].to(torch.float64)
    n = n[rows].to(torch.float64)
    at_k = float((c > 0).to(torch.float64).mean())
    at_1 = float((c / n).mean())
    return at_k, at_1


def score(program, rows: Sequence[dict], completions: Sequence[str], samples: int,
          tokenizer=None, device=None, invalid=None):
    """Scores of row-major completions, each row's columns repeated for its samples."""
    columns = {name: [row.get(name) for row in rows for _ in range(samples)]
               for name in program.input_names}
    return program.score(list(completions), tokenizer=tokenizer, device=device, invalid=invalid,
                         **columns)


def summarise(program, scores, samples: int, config: EvalConfig, metric: str | None) -> tuple:
    """The table's lines, pass@k and the gates' closing shares."""
    import torch

    def line(name, kind, values, applies):
        mean, low, high, count = bootstrap_interval(values, applies, samples, config.bootstrap,
                                                    config.confidence, config.seed)
        return Stat(name, kind, mean, low, high, count)

    everywhere = torch.ones_like(scores.reward, dtype=torch.bool)
    stats = []
    at_k = at_1 = None
    if metric is not None:
        if metric in scores.rules:
            values = scores.rules[metric]
            applies = scores.applies.get(metric, everywhere)
        else:
            values, applies = scores.levels[metric], everywhere
        stats.append(line(metric, "metric", values, applies))
        at_k, at_1 = pass_at_k(values >= SATISFIED, applies.bool(), samples)
    stats.append(line("reward", "reward", scores.reward, everywhere))
    for level in program.ir.levels:
        stats.append(line(level.name, "level", scores.levels[level.name], everywhere))
        for rule in level.rules:
            stats.append(line(rule.name, "rule", scores.rules[rule.name],
                              scores.applies.get(rule.name, everywhere)))
    gates = {level.name: float((scores.levels[level.name] < SATISFIED).to(torch.float64).mean())
             for level in program.ir.levels if level.gate}
    return stats, at_k, at_1, gates


def as_rows(dataset) -> list[dict]:
    """A list of row dicts from a list of dicts or a ``datasets.Dataset``."""
    if isinstance(dataset, list):
        return dataset
    return [dict(row) for row in dataset]


def check_rows(program, rows: Sequence[dict] | object, where: str, strict: bool = False) -> list[str]:
    """The same check as ``kdsl train``: every missing or mistyped column, with its first bad row.
    Returns the lines about missing and non-finite values (scored as invalid) unless ``strict``,
    which makes them problems too. Raises ``KdslDataError`` when the rows do not fit."""
    from kdsl.runtime.columns import InvalidValues
    from kdsl.training.train import check_dataset

    if isinstance(rows, list):
        from datasets import Dataset

        dataset = Dataset.from_list(rows) if rows else Dataset.from_dict({})
    else:
        dataset = rows
    invalid = InvalidValues()
    problems = check_dataset(program, dataset, invalid)
    lines = invalid.lines() if invalid else []
    if strict:
        problems += [f"{line} (--strict)" for line in lines]
    if problems:
        raise KdslDataError(f"the dataset does not fit spec {program.name}:\n" +
                            "\n".join(f"  - {p}" for p in problems), Span(where))
    return lines


def evaluate(program, model, processing_class, rows: Sequence[dict], config: EvalConfig | None = None,
             *, progress: Callable[[int], None] | None = None, device=None) -> Evaluation:
    """Generate, score and summarise. ``rows`` are dicts with ``prompt`` and the spec's inputs
    (check them first with :func:`check_rows`)."""
    config = config or EvalConfig()
    metric_name(program, config.metric)  # a wrong name stops before anything is generated
    rows = as_rows(rows)
    if not rows:
        raise KdslDataError("there are no rows to evaluate on")
    started = time.perf_counter()
    completions = generate(model, processing_class, rows, config, progress)
    seconds = time.perf_counter() - started
    result = evaluate_completions(program, rows, completions, config,
                                  tokenizer=text_tokenizer(processing_class), device=device)
    result.generate_seconds = seconds
    return result


def evaluate_completions(program, rows: Sequence[dict], completions: Sequence[str],
                         config: EvalConfig, *, tokenizer=None, device=None) -> Evaluation:
    """Score and summarise completions already generated (``config.samples`` per row, row-major)."""
    from kdsl.runtime.columns import InvalidValues

    metric = metric_name(program, config.metric)
    if len(completions) != len(rows) * config.samples:
        raise KdslError(f"{len(completions)} completions for {len(rows)} rows x {config.samples} samples")
    started = time.perf_counter()
    invalid = InvalidValues()
    scores = score(program, rows, completions, config.samples, tokenizer=tokenizer, device=device,
                   invalid=invalid)
    stats, at_k, at_1, gates = summarise(program, scores, config.samples, config, metric)
    return Evaluation(spec=program.name, rows=len(rows), samples=config.samples,
                      completions=list(completions), scores=scores, stats=stats, metric=metric,
                      pass_at_k=at_k, pass_at_1=at_1, gates=gates,
                      score_seconds=time.perf_counter() - started,
                      invalid_values=invalid.lines() if invalid else [],
                      confidence_label=f"{config.confidence:.0%}")


def select_rows(rows: Sequence[dict], selection: str | None) -> list[dict]:
    """``--rows`` as ``A:B`` (Python slice, from 0), ``N`` (the first N) or ``None`` (all)."""
    rows = list(rows)
    if not selection:
        return rows
    text = selection.strip()
    try:
        if ":" in text:
            start, _, stop = text.partition(":")
            return rows[slice(int(start) if start else None, int(stop) if stop else None)]
        return rows[:int(text)]
    except ValueError:
        raise KdslError(f"--rows takes N or START:STOP (rows counted from 0), not `{selection}`") from None


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _jsonable(value):
    """A JSON form of a column value, or None for what JSON cannot hold (an image)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # tensors and numpy arrays
        return _jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray)):
        items = list(value)
        if items and all(_jsonable(v) is None and v is not None for v in items):
            return None  # e.g. a list of images
        return [_jsonable(v) for v in items]
    return None
