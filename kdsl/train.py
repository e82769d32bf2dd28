"""Stage 6: ``kdsl train``: a spec, a model and a dataset become a GRPO run with TRL.

Before the first step the dataset is checked against the spec's inputs (every missing or mistyped
column is named, with the first bad row). The run folder keeps what reproduces the run: a copy of
the spec and of every spec it imports, their SHA-256, the resolved ``GRPOConfig`` and the command.
A progress bar (TRL's), a table of level rewards and rule satisfaction every ``table_every`` steps,
and Ctrl-C saves a checkpoint that ``--resume`` continues from.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from kdsl.errors import KdslDataError, KdslError, Span

RUN_FOLDER = "kdsl_run"
EMBEDDED_MODEL = Path(__file__).resolve().parent / "models" / "tiny_landcover"


@dataclass
class TrainOptions:
    spec: str
    model: str | None = None
    dataset: str | None = None
    config: str | None = None
    output_dir: str | None = None
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: list[str] = field(default_factory=list)
    resume: bool = False
    table_every: int = 10
    overrides: dict = field(default_factory=dict)
    evaluate: bool = True  # held-out evaluation before and after, when the embedded data is used
    strict: bool = False  # missing or non-finite dataset values stop the run instead of a warning
    callbacks: list = field(default_factory=list)  # more transformers TrainerCallbacks


# ---- data ---------------------------------------------------------------------------------------

def load_rows(source: str):
    """A ``datasets.Dataset`` from jsonl/json, parquet, csv, a ``save_to_disk`` folder or a hub id."""
    import datasets

    path = Path(source)
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                loaded = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
            return loaded
        if suffix in (".jsonl", ".json"):
            return datasets.load_dataset("json", data_files=str(path), split="train")
        if suffix == ".parquet":
            return datasets.load_dataset("parquet", data_files=str(path), split="train")
        if suffix in (".csv", ".tsv"):
            return datasets.load_dataset("csv", data_files=str(path), split="train",
                                         delimiter="\t" if suffix == ".tsv" else ",")
        if path.exists():
            raise KdslDataError(f"{source}: unknown dataset format {suffix or '(no suffix)'}; use "
                                ".jsonl, .json, .parquet, .csv or a folder saved with save_to_disk")
        return datasets.load_dataset(source, split="train")
    except KdslError:
        raise
    except Exception as err:  # datasets raises many kinds; the user needs the message, not a trace
        raise KdslDataError(f"cannot load dataset {source}: {type(err).__name__}: {err}") from None


def check_dataset(program, dataset, invalid=None) -> list[str]:
    """Problems that would stop training: each missing column, and for each mistyped column
    its first bad row (numbered from 0, as in the file). ``invalid`` (a
    ``columns.InvalidValues``) counts the missing and non-finite values, which train as invalid."""
    from kdsl.runtime import columns as col
    from kdsl.runtime.execute import prepare_columns

    module = program.module
    names = set(dataset.column_names)
    problems = []
    if "prompt" not in names:
        problems.append("missing column `prompt` (the prompt each completion answers)")
    n = len(dataset)
    if n == 0:
        problems.append("the dataset has no rows")
        return problems
    import torch

    ref = torch.zeros(n)
    for entry in module.INPUTS:
        name, kind, _node, options = entry
        if name not in names:
            problems.append(f"missing column `{name}` ({kind} {options.get('where', 'input')} of "
                            f"{module.SPEC})")
            continue
        single = SimpleNamespace(INPUTS=(entry,), ENUM_LOOKUP=module.ENUM_LOOKUP, ENUMS=module.ENUMS)
        try:
            prepare_columns(single, {name: dataset[name]}, n, ref, col.Interner(module.STRINGS),
                            invalid=invalid)
        except KdslDataError as err:
            problems.append(err.message)
    return problems


def _embedded_rows():
    from kdsl import landsat

    rows = landsat.landsat_rows()
    return landsat.train_heldout_split(rows)


# ---- run folder ---------------------------------------------------------------------------------

def spec_digest(program) -> str:
    digest = hashlib.sha256()
    for name in sorted(program.ir.sources):
        digest.update(name.encode() + b"\0" + program.ir.sources[name].encode() + b"\0")
    return digest.hexdigest()


def write_run_folder(out: Path, program, spec_path: Path, config, options: TrainOptions, argv) -> Path:
    folder = out / RUN_FOLDER
    (folder / "specs").mkdir(parents=True, exist_ok=True)
    for name, text in program.ir.sources.items():
        (folder / "specs" / Path(name).name).write_text(text, encoding="utf-8")
    (folder / "spec.kd").write_text(spec_path.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "spec.sha256").write_text(spec_digest(program) + "\n")
    resolved = {k: v for k, v in config.to_dict().items() if _jsonable(v)}
    (folder / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True, default=str) + "\n")
    import torch

    import kdsl

    run = {"argv": list(argv or sys.argv), "spec": str(spec_path), "model": options.model or "embedded",
           "dataset": options.dataset or "embedded", "lora": options.lora, "kdsl": kdsl.__version__,
           "torch": torch.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (folder / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return folder


def _jsonable(value) -> bool:
    try:
        json.dumps(value, default=str)
        return True
    except (TypeError, ValueError):
        return False


# ---- callbacks ----------------------------------------------------------------------------------

def _callbacks(table_every: int, console):
    from transformers import TrainerCallback

    class RuleTable(TrainerCallback):
        """Every ``table_every`` steps: level rewards and rule satisfaction, from TRL's logs."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not state.is_world_process_zero or table_every <= 0:
                return
            if state.global_step % table_every and state.global_step != state.max_steps:
                return
            rows = [(k, v) for k, v in logs.items() if k.startswith("kdsl/")]
            if not rows:
                return
            from rich.table import Table

            table = Table(title=f"step {state.global_step}: reward {logs.get('reward', float('nan')):.3f}")
            table.add_column("level / rule")
            table.add_column("mean", justify="right")
            for key, value in rows:
                table.add_row(key.removeprefix("kdsl/"), f"{value:.3f}")
            console.print(table)

    class SaveOnInterrupt(TrainerCallback):
        """The first Ctrl-C asks for a checkpoint at the end of the current step, then stops;
        a second one stops at once."""

        def __init__(self):
            self.requested = False
            self.previous = None

        def on_train_begin(self, args, state, control, **kwargs):
            def handler(signum, frame):
                if self.requested:
                    raise KeyboardInterrupt
                self.requested = True
                console.print("[yellow]interrupted: saving a checkpoint after this step "
                              "(Ctrl-C again to stop at once)[/yellow]")

            try:
                self.previous = signal.signal(signal.SIGINT, handler)
            except ValueError:  # not the main thread: leave signals alone
                self.previous = None

        def on_step_end(self, args, state, control, **kwargs):
            if self.requested:
                control.should_save = True
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kwargs):
            if self.previous is not None:
                signal.signal(signal.SIGINT, self.previous)

    return [RuleTable(), SaveOnInterrupt()]


def _quiet_progress_bar(trainer) -> None:
    """Keep TRL's progress bar but not its dump of every log dict: the rule table shows the
    metrics that matter, and every metric still reaches the trainer's loggers."""
    from transformers.trainer_callback import ProgressCallback

    class ProgressBarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ProgressBarOnly())


# ---- the run ------------------------------------------------------------------------------------

def build_config(options: TrainOptions, defaults: dict, output_dir: Path):
    from trl import GRPOConfig

    settings = dict(defaults)
    if options.config:
        settings.update(_read_config(options.config))
    settings.update(options.overrides)
    settings["output_dir"] = str(output_dir)
    settings.setdefault("report_to", "none")
    settings.setdefault("logging_steps", 1)
    settings.setdefault("save_strategy", "steps")
    settings.setdefault("save_steps", 50)
    import torch

    if not torch.cuda.is_available():
        settings.setdefault("use_cpu", True)
        settings.setdefault("bf16", False)
    known = set(GRPOConfig.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise KdslError(f"{options.config or 'config'}: {', '.join(unknown)} "
                        f"{'is not a GRPOConfig field' if len(unknown) == 1 else 'are not GRPOConfig fields'}")
    try:
        return GRPOConfig(**settings)
    except (ValueError, TypeError) as err:
        raise KdslError(f"{options.config or 'config'}: {err}") from None


def _read_config(path: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise KdslError(f"cannot read {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise KdslError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KdslError(f"{path}: expected a mapping of GRPOConfig fields, got {type(data).__name__}")
    return data


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint in ``output_dir`` (see :mod:`kdsl.checkpoints`)."""
    from kdsl.checkpoints import newest_complete

    return newest_complete(Path(output_dir))[0]


def _resume_point(output_dir: Path, console) -> Path:
    """The checkpoint ``--resume`` continues from; newer incomplete ones are named and set aside."""
    from kdsl.checkpoints import newest_complete, set_aside

    found, skipped = newest_complete(output_dir)
    for item in skipped:
        moved = set_aside(item.folder)
        console.print(f"[yellow]--resume: skipped {item.folder.name}: {item.reason}; moved it to "
                      f"{moved.name}[/yellow]", markup=True)
    if found is None:
        raise KdslError(f"--resume: no checkpoint to resume from in {output_dir}"
                        + (f" ({len(skipped)} incomplete ones set aside)" if skipped else ""))
    console.print(f"resuming from {found}")
    return found


def train(options: TrainOptions, console=None, argv: Sequence[str] | None = None) -> dict:
    """Run GRPO on a spec; returns a summary (run folder, steps, metrics, evaluation)."""
    from rich.console import Console

    import kdsl

    console = console or Console(stderr=True)
    spec_path = Path(options.spec)
    program = kdsl.load(spec_path)
    embedded = options.dataset is None
    heldout = None
    defaults: dict = {}
    if embedded:
        from datasets import Dataset

        from kdsl import landsat

        train_rows, heldout = _embedded_rows()
        dataset = Dataset.from_list(train_rows)
        defaults = dict(landsat.DEFAULT_TRAINING)
    else:
        dataset = load_rows(options.dataset)
    from kdsl.runtime.columns import InvalidValues

    invalid = InvalidValues()
    problems = check_dataset(program, dataset, invalid)
    if invalid:
        lines = invalid.lines()
        if options.strict:
            problems += [f"{line} (--strict)" for line in lines]
        else:
            console.print("[yellow]invalid values in the dataset, trained on as invalid "
                          "(--strict stops instead):[/yellow]")
            for line in lines:
                console.print(f"  {line}", markup=False)
    if problems:
        where = options.dataset or "embedded dataset"
        raise KdslDataError(f"the dataset does not fit spec {program.name}:\n" +
                            "\n".join(f"  - {p}" for p in problems), Span(where))
    model = options.model or str(EMBEDDED_MODEL)
    if options.model is None and not EMBEDDED_MODEL.exists():
        raise KdslError(f"the embedded model is missing from {EMBEDDED_MODEL}; pass --model")
    output_dir = Path(options.output_dir or Path("runs") / f"{program.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    resume_from = None
    if options.resume:
        resume_from = _resume_point(output_dir, console)
    config = build_config(options, defaults, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    folder = write_run_folder(output_dir, program, spec_path, config, options, argv)

    peft_config = None
    if options.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=options.lora_r, lora_alpha=options.lora_alpha,
                                 target_modules=options.lora_targets or "all-linear", task_type="CAUSAL_LM")
    from kdsl.trl import KdslGRPOTrainer

    trainer = KdslGRPOTrainer(program, model=model, args=config, train_dataset=dataset,
                              peft_config=peft_config,
                              callbacks=_callbacks(options.table_every, console) + list(options.callbacks))
    _quiet_progress_bar(trainer)
    evaluation: dict = {}
    if embedded and options.evaluate and heldout:
        evaluation["before"] = _evaluate(trainer, program, heldout)
        console.print(f"before training: held-out accuracy {evaluation['before']['accuracy']:.3f}, "
                      f"mean reward {evaluation['before']['reward']:.3f} on {len(heldout)} held-out rows")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    trainer.save_model(str(output_dir))
    trainer.state.save_to_json(str(folder / "trainer_state.json"))
    if embedded and options.evaluate and heldout:
        evaluation["after"] = _evaluate(trainer, program, heldout)
        console.print(f"after training: held-out accuracy {evaluation['after']['accuracy']:.3f}, "
                      f"mean reward {evaluation['after']['reward']:.3f}")
    summary = {"output_dir": str(output_dir), "run_folder": str(folder), "steps": trainer.state.global_step,
               "train_seconds": round(seconds, 2), "evaluation": evaluation}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _evaluate(trainer, program, rows) -> dict:
    from kdsl import landsat

    model = trainer.accelerator.unwrap_model(trainer.model)
    tokenizer = getattr(trainer.processing_class, "tokenizer", None) or trainer.processing_class
    was_training = model.training
    model.eval()
    try:
        result = landsat.heldout_evaluation(model, tokenizer, rows, program)
    finally:
        model.train(was_training)
    return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in result.items()}
