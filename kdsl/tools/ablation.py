"""Stage 9: ``kdsl ablate``: what the knowledge in a spec is worth.

Variants of one spec train with the same model, data, budget and seeds, and every run is
evaluated on the same held-out rows every K steps with the *full* spec, so the figures of all
variants are measured with one yardstick:

- ``full``: the spec as written;
- ``without LEVEL...``: those levels removed from the reward (``without knowledge`` leaves the
  accuracy-only reward);
- ``prompt LEVEL...``: those levels removed from the reward and their rules written into the
  prompt (``kdsl describe``'s guidance) instead: knowledge in the input, not in the reward;
- ``advantage sum|per_level|per_rule``: the same reward, with the advantages aggregated another
  way (``advantage sum`` against a spec's ``per_level``: summed rewards against per-perspective
  advantages).

Each run is a ``kdsl train`` run folder under ``OUT/VARIANT/seed-S[/fold-F]``; a run that
finished is kept and one that was stopped resumes from its last checkpoint, so ``kdsl ablate``
can be run again until every run is there. With ``folds`` > 1 the rows are split into folds and
every row is held out once; a seed's figure at a step pools its folds' held-out rows.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kdsl.errors import KdslError, did_you_mean

AGGREGATES = ("sum", "per_level", "per_rule")


@dataclass
class Variant:
    kind: str  # full, without, prompt or advantage
    levels: tuple[str, ...] = ()
    aggregate: str = ""  # for `advantage`

    @property
    def name(self) -> str:
        if self.kind == "advantage":
            return f"advantage {self.aggregate}"
        return self.kind if self.kind == "full" else f"{self.kind} {' '.join(self.levels)}"

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name)


def parse_variant(text: str, level_names: Sequence[str]) -> Variant:
    words = text.split()
    if words == ["full"]:
        return Variant("full")
    if len(words) >= 2 and words[0] in ("without", "prompt"):
        for level in words[1:]:
            if level not in level_names:
                raise KdslError(f"variant `{text}`: no level `{level}`"
                                f"{did_you_mean(level, level_names)} (levels: {', '.join(level_names)})")
        if len(set(words[1:])) == len(level_names):
            raise KdslError(f"variant `{text}` removes every level: nothing would be left to reward")
        return Variant(words[0], tuple(words[1:]))
    if words[:1] == ["advantage"]:
        if len(words) != 2 or words[1] not in AGGREGATES:
            raise KdslError(f"variant `{text}`: write `advantage` and one of {', '.join(AGGREGATES)}")
        return Variant("advantage", aggregate=words[1])
    raise KdslError(f"unknown variant `{text}`: write `full`, `without LEVEL...`, `prompt LEVEL...` "
                    f"or `advantage {'|'.join(AGGREGATES)}`")


def default_variants(program, metric: str | None) -> list[Variant]:
    """``full``, and ``without L`` for each level that is not a gate and does not hold the metric."""
    variants = [Variant("full")]
    for level in program.ir.levels:
        holds_metric = metric == level.name or any(r.name == metric for r in level.rules)
        if not level.gate and not holds_metric:
            variants.append(Variant("without", (level.name,)))
    return variants


def without_levels(program, levels: Sequence[str]) -> str:
    """The spec's text with those level blocks (and the labelled examples) cut out; the rest,
    comments included, as written."""
    source = program.ir.sources[program.ir.file]
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    cuts = []
    for level in program.ir.levels:
        if level.name in levels:
            span = level.span
            if span.file != program.ir.file:
                raise KdslError(f"level `{level.name}` comes from {span.file}; only levels of "
                                f"{program.ir.file} itself can be removed")
            cuts.append((starts[span.line - 1] + span.column - 1,
                         starts[span.end_line - 1] + span.end_column - 1))
    # Labelled examples are tests of the full spec (they name its rules), not part of a reward.
    from kdsl.tools.testing import spec_examples

    examples = [(e.span, "example") for e in spec_examples(program)]
    for span, _ in examples:
        cuts.append((starts[span.line - 1] + span.column - 1,
                     starts[span.end_line - 1] + span.end_column - 1))
    for start, end in sorted(cuts, reverse=True):
        removed = source[start:end]
        # the removed lines stay as comments, so every other line keeps its number
        source = source[:start] + "\n".join("# (removed by kdsl ablate)" for _ in removed.split("\n")) \
            + source[end:]
    return source


def with_aggregate(program, aggregate: str) -> str:
    """The spec's text with its ``advantage`` statement (or the default one) aggregating the
    advantages as ``aggregate``; estimator and scale as the spec has them. The statement is
    rewritten in place on its first line, so every other line keeps its number."""
    from kdsl.frontend.parser import parse

    settings = {**program.ir.advantage, "aggregate": aggregate}
    estimator = settings.pop("estimator")
    statement = f"advantage {estimator}({', '.join(f'{k} = {v}' for k, v in settings.items())})"
    source = program.ir.sources[program.ir.file]
    written = parse(source, program.ir.file).advantage
    if written is None:
        return source.rstrip("\n") + "\n" + statement + "\n"
    lines = source.split("\n")
    span = written.span
    head = lines[span.line - 1][:span.column - 1]
    tail = lines[span.end_line - 1][span.end_column - 1:]
    lines[span.line - 1:span.end_line] = [head + statement + tail] + [""] * (span.end_line - span.line)
    return "\n".join(lines)


def variant_text(program, variant: Variant) -> str:
    """The spec text a variant other than ``full`` trains with."""
    if variant.kind == "advantage":
        return with_aggregate(program, variant.aggregate)
    return without_levels(program, variant.levels)


def variant_program(program, variant: Variant):
    """The program a variant trains with (imports resolve as for the spec itself)."""
    import kdsl

    if variant.kind == "full":
        return program
    return kdsl.loads(variant_text(program, variant), program.ir.file)


def with_guidance(rows: Sequence[dict], text: str) -> list[dict]:
    """Rows whose prompt starts with ``text``: before a plain-text prompt, or as a system message
    before chat messages."""
    out = []
    for row in rows:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = f"{text}\n{prompt}"
        else:
            prompt = [{"role": "system", "content": text}, *prompt]
        out.append({**row, "prompt": prompt})
    return out


def folds_of(rows: Sequence[dict], folds: int, seed: int, stratify: str | None) -> list[tuple[list, list]]:
    """(train, held-out) pairs; every row is held out once. Rows are dealt to folds in a seeded
    order, per value of ``stratify`` (a column) when given, so each fold keeps the class mix."""
    rng = random.Random(seed)
    groups: dict = {}
    for index, row in enumerate(rows):
        groups.setdefault(row.get(stratify) if stratify else None, []).append(index)
    fold_of: dict[int, int] = {}
    dealt = 0
    for key in sorted(groups, key=str):
        indices = groups[key][:]
        rng.shuffle(indices)
        for index in indices:
            fold_of[index] = dealt % folds
            dealt += 1
    return [([r for i, r in enumerate(rows) if fold_of[i] != f], [r for i, r in enumerate(rows) if fold_of[i] == f])
            for f in range(folds)]


def keep_labels(rows: Sequence[dict], fraction: float, column: str, seed: int) -> list[dict]:
    """Rows where only ``fraction`` of each class keeps its ``column`` value (the others have it
    missing), chosen with ``seed``: the same rows for every variant and seed."""
    if not 0.0 < fraction <= 1.0:
        raise KdslError(f"--keep-labels takes a fraction in (0, 1], not {fraction}")
    rng = random.Random(seed)
    groups: dict = {}
    for index, row in enumerate(rows):
        groups.setdefault(row.get(column), []).append(index)
    kept: set[int] = set()
    for key in sorted(groups, key=str):
        indices = groups[key]
        kept.update(rng.sample(indices, max(1, round(fraction * len(indices)))))
    return [row if i in kept else {**row, column: None} for i, row in enumerate(rows)]


@dataclass
class AblationOptions:
    spec: str
    variants: list[str] = field(default_factory=list)  # empty: default_variants
    seeds: int = 2
    first_seed: int = 0
    model: str | None = None
    dataset: str | None = None
    eval_dataset: str | None = None
    config: str | None = None
    output_dir: str = "runs/ablation"
    eval_every: int = 50
    metric: str | None = None
    target: float | None = None  # steps until the held-out metric first reaches this
    folds: int = 1
    split_seed: int = 0
    stratify: str | None = "label"
    keep_labels: float | None = None
    label_column: str = "label"
    max_steps: int | None = None
    lora: bool = False
    eval_rows: str | None = None
    overrides: dict = field(default_factory=dict)


def _runs(options: AblationOptions, program, variants, console):
    """Every (variant, seed, fold, run folder, train rows, held-out rows, program) to train."""
    from kdsl.example import landsat
    from kdsl.io.rows import load_dataset
    from kdsl.tools import evaluation

    if options.dataset is None:
        rows = landsat.landsat_rows()
    else:
        rows = evaluation.as_rows(load_dataset(options.dataset))
    if options.eval_dataset is not None:
        splits = [(rows, evaluation.as_rows(load_dataset(options.eval_dataset)))]
    elif options.folds > 1:
        splits = folds_of(rows, options.folds, options.split_seed, options.stratify)
    elif options.dataset is None:
        splits = [landsat.train_heldout_split(rows, seed=options.split_seed)]
    else:
        raise KdslError("give --eval-dataset, or --folds K to hold out every row once")
    if options.keep_labels is not None:
        splits = [(keep_labels(train, options.keep_labels, options.label_column, options.split_seed), held)
                  for train, held in splits]
    out = Path(options.output_dir)
    for variant in variants:
        trained_with = variant_program(program, variant)
        text = None
        if variant.kind == "prompt":
            from kdsl.tools.describe import guidance

            text = guidance(program, variant.levels)
        for seed in range(options.first_seed, options.first_seed + options.seeds):
            for fold, (train_rows, held) in enumerate(splits):
                folder = out / variant.folder / f"seed-{seed}"
                if len(splits) > 1:
                    folder = folder / f"fold-{fold}"
                if text is not None:
                    train_rows, held = with_guidance(train_rows, text), with_guidance(held, text)
                yield variant, seed, fold, folder, train_rows, held, trained_with


def run(options: AblationOptions, console=None) -> dict:
    """Train every run that is not finished yet, then summarise all of them."""
    from rich.console import Console

    import kdsl
    from kdsl.example import landsat
    from kdsl.tools.evaluation import metric_name
    from kdsl.training.train import TrainOptions, train

    console = console or Console(stderr=True)
    program = kdsl.load(options.spec)
    metric = metric_name(program, options.metric)
    if metric is None:
        raise KdslError(f"{program.name} has no rule named `correct`: name the held-out metric "
                        "with --metric RULE_OR_LEVEL")
    variants = ([parse_variant(v, program.level_names) for v in options.variants]
                or default_variants(program, metric))
    if options.seeds < 1:
        raise KdslError(f"--seeds must be at least 1, not {options.seeds}")
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        if variant.kind != "full":
            (out / variant.folder).mkdir(parents=True, exist_ok=True)
            (out / variant.folder / "spec.kd").write_text(variant_text(program, variant), encoding="utf-8")
    for variant, seed, fold, folder, train_rows, held, trained_with in _runs(options, program, variants, console):
        if (folder / "kdsl_run" / "summary.json").is_file():
            continue
        from kdsl.training.checkpoints import newest_complete

        resume = folder.is_dir() and newest_complete(folder)[0] is not None
        if folder.is_dir() and not resume:
            (folder / "kdsl_run" / "heldout.jsonl").unlink(missing_ok=True)  # a run that never saved
        console.print(f"[bold]{variant.name}[/bold], seed {seed}" + (f", fold {fold}" if fold else "")
                      + (" (resuming)" if resume else ""))
        overrides = dict(options.overrides)
        defaults = dict(landsat.DEFAULT_TRAINING) if options.dataset is None else {}
        overrides["seed"] = seed
        if options.max_steps:
            overrides["max_steps"] = options.max_steps
        train(TrainOptions(spec=options.spec, program=trained_with, eval_program=program,
                           model=options.model, dataset=train_rows, eval_dataset=held,
                           config=options.config, output_dir=str(folder), resume=resume,
                           lora=options.lora, table_every=0, defaults=defaults,
                           overrides=overrides, eval_every=options.eval_every, metric=metric,
                           eval_rows=options.eval_rows, argv=["kdsl", "ablate", options.spec]),
              console=console)
    result = summarise(options, variants, metric)
    (out / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / "ablation.png")
    return result


def _read_heldout(folder: Path) -> dict[int, dict]:
    """Step -> held-out figures of one run (a step evaluated twice, around a resume, once)."""
    path = folder / "kdsl_run" / "heldout.jsonl"
    by_step: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                by_step[entry["step"]] = entry
    return by_step


def summarise(options: AblationOptions, variants: Sequence[Variant], metric: str) -> dict:
    """Per variant: each seed's held-out metric along the steps (folds pooled by their rows), the
    final figure's mean, spread and range over seeds, and the steps until ``target``."""
    out = Path(options.output_dir)
    seeds = range(options.first_seed, options.first_seed + options.seeds)
    result: dict = {"spec": options.spec, "metric": metric, "seeds": list(seeds), "folds": options.folds,
                    "target": options.target, "keep_labels": options.keep_labels, "variants": {}}
    for variant in variants:
        per_seed = {}
        for seed in seeds:
            base = out / variant.folder / f"seed-{seed}"
            folders = [base / f"fold-{f}" for f in range(options.folds)] if options.folds > 1 else [base]
            runs = [_read_heldout(f) for f in folders]
            finished = all((f / "kdsl_run" / "summary.json").is_file() for f in folders)
            steps = sorted(set.intersection(*(set(r) for r in runs))) if runs and all(runs) else []
            curve = []
            for step in steps:
                entries = [r[step] for r in runs]
                rows = sum(e["rows"] for e in entries)
                value = [e["metric_value"] for e in entries]
                if any(v is None for v in value):
                    continue
                curve.append({"step": step, "metric": sum(v * e["rows"] for v, e in zip(value, entries)) / rows,
                              "reward": sum(e["reward"] * e["rows"] for e in entries) / rows, "rows": rows})
            reached = next((c["step"] for c in curve if options.target is not None
                            and c["metric"] >= options.target - 1e-9), None)
            per_seed[str(seed)] = {"finished": finished, "curve": curve, "steps_to_target": reached}
        finals = [s["curve"][-1]["metric"] for s in per_seed.values() if s["finished"] and s["curve"]]
        rewards = [s["curve"][-1]["reward"] for s in per_seed.values() if s["finished"] and s["curve"]]
        reached = [s["steps_to_target"] for s in per_seed.values() if s["finished"]]
        result["variants"][variant.name] = {
            "seeds": per_seed, "finished_seeds": len(finals),
            "final_metric": _spread(finals), "final_reward": _spread(rewards),
            "steps_to_target": {"reached": sum(r is not None for r in reached), "of": len(reached),
                                "mean": statistics.fmean([r for r in reached if r is not None])
                                if any(r is not None for r in reached) else None}}
    result["comparisons"] = compare(result)
    return result


# Two-sided 95% quantiles of Student's t, by degrees of freedom (more than 30: the normal's).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
        18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}


def _t95(df: int) -> float:
    if df in _T95:
        return _T95[df]
    return next((_T95[k] for k in sorted(_T95) if k >= df), 1.960)


def _area(curve: list[dict]) -> float | None:
    """The mean held-out metric over the evaluated steps (trapezoids over the steps, divided by
    the span): sample efficiency in one number, higher when the metric rises earlier."""
    if len(curve) < 2:
        return None
    total = sum((b["step"] - a["step"]) * (a["metric"] + b["metric"]) / 2 for a, b in zip(curve, curve[1:]))
    return total / (curve[-1]["step"] - curve[0]["step"])


def compare(result: dict) -> dict:
    """Each variant against the first, paired by seed (same data, folds and seed): the mean
    difference of the final metric and of the area under its curve, with a 95% t interval over
    the seeds both finished."""
    names = list(result["variants"])
    if len(names) < 2:
        return {}
    base = result["variants"][names[0]]["seeds"]
    out = {}
    for name in names[1:]:
        other = result["variants"][name]["seeds"]
        pairs = {"final": [], "area": []}
        for seed, mine in other.items():
            theirs = base.get(seed)
            if not (theirs and mine["finished"] and theirs["finished"] and mine["curve"] and theirs["curve"]):
                continue
            pairs["final"].append(mine["curve"][-1]["metric"] - theirs["curve"][-1]["metric"])
            a, b = _area(mine["curve"]), _area(theirs["curve"])
            if a is not None and b is not None:
                pairs["area"].append(a - b)
        out[name] = {"against": names[0], **{kind: _difference(values) for kind, values in pairs.items()}}
    return out


def _difference(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": round(mean, 4), "low": None, "high": None, "n": 1}
    half = _t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": round(mean, 4), "low": round(mean - half, 4), "high": round(mean + half, 4),
            "n": len(values)}


def _spread(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {"mean": round(statistics.fmean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4), "n": len(values)}


def render(result: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"{result['spec']}: held-out {result['metric']} "
                        f"({len(result['seeds'])} seeds" + (f", {result['folds']} folds" if result["folds"] > 1 else "")
                        + ")")
    for column in ("variant", "finished", "final mean", "sd", "min - max", "final reward"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    if result["target"] is not None:
        table.add_column(f"steps to {result['target']}", justify="right")
    for name, figures in result["variants"].items():
        final, reward = figures["final_metric"], figures["final_reward"]
        cells = [name, f"{figures['finished_seeds']}/{len(result['seeds'])}",
                 _cell(final["mean"]), _cell(final["sd"]),
                 "-" if final["min"] is None else f"{final['min']:.3f} - {final['max']:.3f}",
                 _cell(reward["mean"])]
        if result["target"] is not None:
            target = figures["steps_to_target"]
            cells.append(f"{target['mean']:.0f} ({target['reached']}/{target['of']} reached)"
                         if target["mean"] is not None else f"not reached (0/{target['of']})")
        table.add_row(*cells)
    console.print(table)
    for name, diff in result.get("comparisons", {}).items():
        parts = []
        for kind, label in (("final", "final"), ("area", "area under the curve")):
            d = diff[kind]
            if d["mean"] is None:
                continue
            interval = f" (95% interval {d['low']:+.3f} to {d['high']:+.3f})" if d["low"] is not None else ""
            parts.append(f"{label} {d['mean']:+.3f}{interval}")
        if parts:
            console.print(f"{name} - {diff['against']}, paired by seed over {diff['final']['n']} seeds: "
                          + "; ".join(parts))


def _cell(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def plot(result: dict, path: Path) -> Path:
    """Held-out metric over steps: per variant the mean over seeds, and a band from min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, figures in result["variants"].items():
        curves = [s["curve"] for s in figures["seeds"].values() if s["curve"]]
        if not curves:
            continue
        steps = sorted(set.intersection(*(set(c["step"] for c in curve) for curve in curves)))
        if not steps:
            continue
        at = [[next(c["metric"] for c in curve if c["step"] == step) for curve in curves] for step in steps]
        ax.plot(steps, [statistics.fmean(v) for v in at], label=f"{name} ({len(curves)} seeds)", linewidth=2)
        ax.fill_between(steps, [min(v) for v in at], [max(v) for v in at], alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(f"held-out {result['metric']}")
    ax.set_title(f"{result['spec']}: held-out {result['metric']} per variant (band: min-max over seeds)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
