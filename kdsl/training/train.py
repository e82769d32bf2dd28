"""Stage 6: ``kdsl train``: a spec, a model and a dataset become a GRPO run with TRL.

Before the first step the dataset is checked against the spec's inputs (every missing or mistyped
column is named, with the first bad row). The run folder keeps what reproduces the run: a copy of
the spec and of every spec it imports, their SHA-256, the resolved ``GRPOConfig`` and the command.
A progress bar (TRL's), a table of level rewards and rule satisfaction every ``table_every`` steps,
and Ctrl-C saves a checkpoint that ``--resume`` continues from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from kdsl.errors import KdslDataError, KdslError, Span
from kdsl.io.rows import load_dataset

RUN_FOLDER = "kdsl_run"
EMBEDDED_MODEL = Path(__file__).resolve().parent.parent / "example" / "tiny_landcover"


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
    lora_init: str = "default"  # PEFT's init_lora_weights: default, gaussian, orthogonal, pissa, ...
    resume: bool = False
    table_every: int = 10
    overrides: dict = field(default_factory=dict)
    evaluate: bool = True  # held-out evaluation before and after, when there are held-out rows
    eval_dataset: str | list | None = None  # held-out rows (default: the embedded held-out part)
    eval_every: int = 0  # evaluate on the held-out rows every N steps as well (0: before and after)
    eval_rows: str | None = None  # `--rows` of the held-out rows: N or START:STOP
    metric: str | None = None  # the rule or level the held-out figures lead with
    eval_max_new_tokens: int | None = None  # default: the config's max_completion_length
    eval_batch_size: int = 32
    strict: bool = False  # missing or non-finite dataset values stop the run instead of a warning
    callbacks: list = field(default_factory=list)  # more transformers TrainerCallbacks
    program: object | None = None  # a loaded kdsl.Program to train with instead of loading `spec`
    eval_program: object | None = None  # the program held-out rows are scored by (default: program)
    defaults: dict | None = None  # GRPOConfig fields under the config file (default: the embedded
    # example's with the embedded data)
    argv: list | None = None


# ---- data ---------------------------------------------------------------------------------------

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
        single = SimpleNamespace(INPUTS=(entry,), ENUM_LOOKUP=module.ENUM_LOOKUP, ENUMS=module.ENUMS,
                                CONSTANTS=())
        try:
            prepare_columns(single, {name: dataset[name]}, n, ref, col.Interner(module.STRINGS),
                            invalid=invalid)
        except KdslDataError as err:
            problems.append(err.message)
    return problems


def _embedded_rows():
    from kdsl.example import landsat

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
    text = program.ir.sources.get(program.ir.file)
    if text is None:
        text = spec_path.read_text(encoding="utf-8")
    (folder / "spec.kd").write_text(text, encoding="utf-8")
    (folder / "spec.sha256").write_text(spec_digest(program) + "\n")
    resolved = {k: v for k, v in config.to_dict().items() if _jsonable(v)}
    (folder / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True, default=str) + "\n")
    import torch

    import kdsl

    run = {"argv": list(argv or sys.argv), "spec": str(spec_path), "model": options.model or "embedded",
           "dataset": options.dataset or "embedded", "lora": options.lora, "kdsl": kdsl.__version__,
           "adapter": ({"r": options.lora_r, "alpha": options.lora_alpha,
                        "targets": options.lora_targets or "all-linear", "init": options.lora_init}
                       if options.lora else None),
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

        console_only = True  # held-out figures are printed on their own line, not as a table

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
        console_only = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ProgressBarOnly())


# ---- the run ------------------------------------------------------------------------------------

# ---- LoRA initialisations -----------------------------------------------------------------------

# The choices of PEFT's `init_lora_weights` that need nothing but the model. PiSSA and OLoRA also
# move the base weights (the adapter starts from the principal part of each layer, the base keeps
# the rest), so their adapters are converted at save time to adapters of the original base.
LORA_INITS = ("default", "gaussian", "orthogonal", "pissa", "olora")
BASE_CHANGING_INITS = ("pissa", "olora")


def lora_init_weights(name: str):
    """`--lora-init NAME` as PEFT's `init_lora_weights` value (`pissa_niter_N`: fast PiSSA)."""
    if name == "default":
        return True
    if name in LORA_INITS or re.fullmatch(r"pissa_niter_[1-9][0-9]*", name):
        return name
    raise KdslError(f"--lora-init {name}: choose one of {', '.join(LORA_INITS)} or pissa_niter_N "
                    "(initialisations that need data or a quantisation config, such as eva, corda "
                    "and loftq, are not offered)")


def _base_changing(name: str) -> bool:
    return name in BASE_CHANGING_INITS or name.startswith("pissa_niter_")


def _save_initial_adapter(trainer, folder: Path, resume_from) -> Path:
    """The adapter as initialised, before any step: what converts the trained one back to an
    adapter of the original base (PEFT's path_initial_model_for_weight_conversion)."""
    path = folder / "initial_adapter"
    if resume_from is not None and (path / "adapter_config.json").is_file():
        return path  # saved when the run started; the model now holds a checkpoint
    model = trainer.accelerator.unwrap_model(trainer.model)
    config = model.peft_config["default"]
    if trainer.accelerator.is_main_process:
        chosen, config.init_lora_weights = config.init_lora_weights, True  # loads without re-running it
        model.save_pretrained(str(path))
        config.init_lora_weights = chosen
    trainer.accelerator.wait_for_everyone()
    return path


def _save_converted_adapter(trainer, output_dir: Path, initial: Path) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.accelerator.is_main_process:
        model.save_pretrained(str(output_dir), path_initial_model_for_weight_conversion=str(initial))
    processing = getattr(trainer, "processing_class", None)
    if processing is not None and trainer.accelerator.is_main_process:
        processing.save_pretrained(str(output_dir))


# GRPOConfig fields that shape the advantages, which kdsl computes itself from the spec's
# `advantage` statement: the spec setting each one corresponds to, value by value.
_ADVANTAGE_FIELDS = {
    "scale_rewards": ("scale", {"group": "group", True: "group", "true": "group", "batch": "batch",
                                "none": "none", False: "none", "false": "none"}),
    "multi_objective_aggregation": ("aggregate", {"sum_then_normalize": "sum",
                                                  "normalize_then_sum": "per_level"}),
}


def check_advantage_fields(settings: dict, advantage: dict, where: str) -> None:
    """A GRPOConfig field that would change the advantages, set to something other than what the
    spec's ``advantage`` statement says, is an error: the kdsl trainer would silently ignore it."""
    for name, (setting, meaning) in _ADVANTAGE_FIELDS.items():
        if name not in settings:
            continue
        value = settings[name]
        key = value.lower() if isinstance(value, str) else value
        wanted = meaning.get(key)
        if wanted is not None and advantage.get(setting) == wanted:
            continue  # says what the spec says
        spec_form = (f"advantage {advantage['estimator']}({setting} = {wanted})" if wanted
                     else f"an `advantage` statement with `{setting}`")
        raise KdslError(f"{where}: `{name}: {value}` contradicts the spec, whose advantages are "
                        f"`{setting} = {advantage.get(setting)}`; kdsl computes the advantages from "
                        f"the spec, so write {spec_form} in the spec instead, or leave {name} out")


def build_config(options: TrainOptions, defaults: dict, output_dir: Path, advantage: dict | None = None):
    from trl import GRPOConfig

    chosen = _read_config(options.config) if options.config else {}
    chosen.update(options.overrides)
    if advantage is not None:  # what the user set, not kdsl's own defaults
        check_advantage_fields(chosen, advantage, options.config or "config")
    settings = {**defaults, **chosen}
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
    """The newest complete checkpoint in ``output_dir`` (see :mod:`kdsl.training.checkpoints`)."""
    from kdsl.training.checkpoints import newest_complete

    return newest_complete(Path(output_dir))[0]


def _resume_point(output_dir: Path, console) -> Path:
    """The checkpoint ``--resume`` continues from; newer incomplete ones are named and set aside."""
    from kdsl.training.checkpoints import newest_complete, set_aside

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
    """Run GRPO on a spec; returns a summary (run folder, steps, seconds, held-out figures)."""
    from rich.console import Console

    import kdsl

    console = console or Console(stderr=True)
    spec_path = Path(options.spec)
    program = options.program or kdsl.load(spec_path)
    embedded = options.dataset is None
    heldout = None
    defaults: dict = {}
    if embedded:
        from datasets import Dataset

        from kdsl.example import landsat

        train_rows, heldout = _embedded_rows()
        dataset = Dataset.from_list(train_rows)
        defaults = dict(landsat.DEFAULT_TRAINING)
    else:
        dataset = load_dataset(options.dataset)
    if options.defaults is not None:
        defaults = dict(options.defaults)
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
        where = options.dataset if isinstance(options.dataset, str) else "embedded dataset"
        raise KdslDataError(f"the dataset does not fit spec {program.name}:\n" +
                            "\n".join(f"  - {p}" for p in problems), Span(where))
    eval_program = options.eval_program or program
    heldout = _heldout_rows(eval_program, options, heldout, console)
    model = options.model or str(EMBEDDED_MODEL)
    if options.model is None and not EMBEDDED_MODEL.exists():
        raise KdslError(f"the embedded model is missing from {EMBEDDED_MODEL}; pass --model")
    output_dir = Path(options.output_dir or Path("runs") / f"{program.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    resume_from = None
    if options.resume:
        resume_from = _resume_point(output_dir, console)
    config = build_config(options, defaults, output_dir, program.ir.advantage)
    output_dir.mkdir(parents=True, exist_ok=True)
    folder = write_run_folder(output_dir, program, spec_path, config, options, argv or options.argv)

    peft_config = None
    if options.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=options.lora_r, lora_alpha=options.lora_alpha,
                                 target_modules=options.lora_targets or "all-linear", task_type="CAUSAL_LM",
                                 init_lora_weights=lora_init_weights(options.lora_init))
    from kdsl.training.trl import KdslGRPOTrainer

    if str(model).lower().endswith(".gguf"):
        from kdsl.io.loading import load_model

        # TRL rebuilds its reference model from the model's folder, which a GGUF file does not
        # have: the dequantised model is saved once in the run folder and trained from there.
        base = output_dir / "base_model"
        if not (base / "config.json").is_file():
            dtype = "bfloat16" if config.bf16 else "float16" if config.fp16 else "float32"
            loaded, processing_class = load_model(model, dtype=dtype, device="cpu")
            loaded.save_pretrained(base)
            processing_class.save_pretrained(base)
            del loaded
        model = str(base)
    held_out_callbacks = []
    if heldout and options.evaluate:
        held_out_callbacks.append(held_out_evaluation(eval_program, heldout, _eval_config(options, config),
                                                    folder, console, every=options.eval_every))
    trainer = KdslGRPOTrainer(program, model=model, args=config, train_dataset=dataset,
                              peft_config=peft_config,
                              callbacks=_callbacks(options.table_every, console) + held_out_callbacks
                              + list(options.callbacks))
    for callback in held_out_callbacks:
        callback.trainer = trainer
    _quiet_progress_bar(trainer)
    _warn_beyond_context(trainer, dataset, config.max_completion_length, console)
    initial_adapter = None
    if options.lora and _base_changing(options.lora_init):
        initial_adapter = _save_initial_adapter(trainer, folder, resume_from)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    if initial_adapter is not None:
        _save_converted_adapter(trainer, output_dir, initial_adapter)
    else:
        trainer.save_model(str(output_dir))
    trainer.state.save_to_json(str(folder / "trainer_state.json"))
    evaluation: dict = {}
    for callback in held_out_callbacks:
        evaluation = callback.figures
        seconds -= callback.seconds  # the training time, without the held-out evaluations
    summary = {"output_dir": str(output_dir), "run_folder": str(folder), "steps": trainer.state.global_step,
               "train_seconds": round(seconds, 2), "evaluation": evaluation}
    if program.judge_stats.models:  # what the spec's judges and reward models were asked
        summary["models"] = program.judge_stats.as_dict()
        for line in program.judge_stats.lines():
            console.print(f"models: {line}", markup=False)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def longest_prompt(processing_class, prompts, sample: int = 256) -> int:
    """The token count of the longest of (the first ``sample``) prompts, as the trainer feeds them."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    longest = 0
    for prompt in list(prompts)[:sample]:
        if isinstance(prompt, str):
            ids = tokenizer(prompt)["input_ids"]
        else:
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            ids = ids.get("input_ids", ids) if hasattr(ids, "get") else ids
        longest = max(longest, len(ids))
    return longest


def _warn_beyond_context(trainer, dataset, completion_length: int, console) -> None:
    """Say so when prompts plus completions are longer than the model's positions (a `prompt`
    variant's guidance can make them so): such a model reads them badly, and slowly."""
    limit = getattr(getattr(trainer.model, "config", None), "max_position_embeddings", None)
    if not isinstance(limit, int) or "prompt" not in dataset.column_names:
        return
    try:
        head = dataset.select(range(min(len(dataset), 256)))  # not the whole column of a large set
        longest = longest_prompt(trainer.processing_class, head["prompt"])
    except (TypeError, ValueError, KeyError, AttributeError):  # a processor this check does not
        # know: training itself will say what is wrong, if anything is
        return
    if longest + completion_length > limit:
        console.print(f"[yellow]warning: prompts of up to {longest} tokens plus {completion_length} "
                      f"completion tokens exceed the model's {limit} positions[/yellow]")


# ---- held-out evaluation ------------------------------------------------------------------------

def _heldout_rows(program, options: TrainOptions, embedded_heldout, console) -> list[dict] | None:
    """The rows the held-out figures come from: ``eval_dataset`` (checked like the training
    data), else the embedded held-out part when the embedded data is used."""
    from kdsl.tools import evaluation

    if options.eval_dataset is not None:
        source = options.eval_dataset
        rows = evaluation.as_rows(load_dataset(source))
        where = source if isinstance(source, str) else "eval dataset"
        for line in evaluation.check_rows(program, rows, where, strict=options.strict):
            console.print(f"[yellow]held-out rows:[/yellow] {line}")
    elif embedded_heldout is not None:
        rows = list(embedded_heldout)
    else:
        if options.eval_every:
            raise KdslError("--eval-every needs held-out rows: give --eval-dataset")
        return None
    rows = evaluation.select_rows(rows, options.eval_rows)
    if not rows:
        raise KdslDataError("there are no held-out rows to evaluate on", Span(str(options.eval_dataset)))
    return rows


def _eval_config(options: TrainOptions, config):
    from kdsl.tools.evaluation import EvalConfig

    return EvalConfig(samples=1, max_new_tokens=options.eval_max_new_tokens or config.max_completion_length,
                      batch_size=options.eval_batch_size, metric=options.metric, seed=config.seed)


def compact(result) -> dict:
    """The figures of an evaluation that a run's summary and log keep."""
    out = {"rows": result.rows, "reward": round(result.reward, 4), "metric": result.metric}
    if result.metric:
        out["metric_value"] = round(result.metric_value, 4) if math.isfinite(result.metric_value) else None
        out[result.metric] = out["metric_value"]
    out["gates_closed"] = {k: round(v, 4) for k, v in result.gates.items()}
    out["levels"] = {s.name: round(s.mean, 4) for s in result.stats if s.kind == "level"}
    out["rules"] = {s.name: (round(s.mean, 4) if math.isfinite(s.mean) else None)
                    for s in result.stats if s.kind == "rule"}
    return out


def _log_entry(step: int, figures: dict) -> dict:
    entry = {"step": step, "heldout/reward": figures["reward"]}
    if figures.get("metric"):
        entry[f"heldout/{figures['metric']}"] = figures["metric_value"]
    entry.update({f"heldout/level/{k}": v for k, v in figures["levels"].items()})
    entry.update({f"heldout/rule/{k}": v for k, v in figures["rules"].items() if v is not None})
    return entry


def held_out_evaluation(*args, **kwargs):
    """A :class:`HeldOutEvaluation` callback (built on first use, so importing this module does not
    import transformers)."""
    return _held_out_class()(*args, **kwargs)


@functools.cache
def _held_out_class():
    from transformers import TrainerCallback

    return type("HeldOutEvaluation", (HeldOutEvaluation, TrainerCallback), {})


class HeldOutEvaluation:
    """Held-out figures before the first step, every ``every`` steps and after the last, with the
    same code as ``kdsl eval``. Each evaluation goes into the trainer's log history (keys
    ``heldout/...``, next to the training metrics, so every logger and ``kdsl report`` see it) and
    into ``kdsl_run/heldout.jsonl``; the last one's completions into
    ``kdsl_run/heldout_completions.jsonl`` (for ``kdsl explain``)."""

    def __init__(self, program, rows, config, run_folder: Path, console, every: int = 0):
        self.program = program
        self.rows = rows
        self.config = config
        self.run_folder = Path(run_folder)
        self.console = console
        self.every = every
        self.trainer = None
        self.figures: dict = {}
        self.seconds = 0.0
        self.done_steps: set[int] = set()

    def _run(self, args, state, control, label: str):
        if state.global_step in self.done_steps:
            return
        from kdsl.tools.evaluation import evaluate, text_tokenizer

        self.done_steps.add(state.global_step)
        started = time.perf_counter()
        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        result = evaluate_sharded(self.program, model, trainer.processing_class, self.rows, self.config,
                                  trainer.accelerator, evaluate, text_tokenizer)
        figures = compact(result)
        figures["step"] = state.global_step
        self.seconds += time.perf_counter() - started
        if not state.is_world_process_zero:
            return
        self.figures[label] = figures
        entry = _log_entry(state.global_step, figures)
        state.log_history.append(entry)
        with (self.run_folder / "heldout.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(figures) + "\n")
        if label == "after":
            result.write_jsonl(self.run_folder / "heldout_completions.jsonl", self.rows,
                               self.program.input_names)
        # Loggers (wandb, tensorboard, ...) get the figures; kdsl's own console callbacks do not.
        for callback in trainer.callback_handler.callbacks:
            if callback is not self and not getattr(callback, "console_only", False):
                callback.on_log(args, state, control, logs=entry)
        lead = (f"{figures['metric']} {figures['metric_value']:.3f}, "
                if figures.get("metric") and figures["metric_value"] is not None else "")
        self.console.print(f"held-out at step {state.global_step} ({label}): {lead}mean reward "
                           f"{figures['reward']:.3f} on {len(self.rows)} rows")

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self._run(args, state, control, "before")

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self._run(args, state, control, f"step {state.global_step}")

    def on_train_end(self, args, state, control, **kwargs):
        self._run(args, state, control, "after")


def evaluate_sharded(program, model, processing_class, rows, config, accelerator, evaluate, text_tokenizer):
    """``evaluate`` with the rows shared out between processes: each generates for its share and
    every process scores all completions (so all hold the same figures)."""
    if accelerator is None or accelerator.num_processes <= 1:
        return evaluate(program, model, processing_class, rows, config)
    from accelerate.utils import gather_object

    from kdsl.tools import evaluation

    rank, world = accelerator.process_index, accelerator.num_processes
    share = rows[rank::world]
    local = evaluation.generate(model, processing_class, share, config) if share else []
    gathered = gather_object([(rank, local)])
    by_rank = dict(gathered)
    completions: list[str] = []
    k = config.samples
    for i in range(len(rows)):
        owner, position = i % world, i // world
        completions.extend(by_rank[owner][position * k:(position + 1) * k])
    return evaluation.evaluate_completions(program, rows, completions, config,
                                           tokenizer=text_tokenizer(processing_class))
