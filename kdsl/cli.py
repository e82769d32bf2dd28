"""The ``kdsl`` command line. ``main(argv) -> int`` is the whole CLI, testable with an argv list.

Exit codes: 0 success, 1 a problem in a spec or data (printed as file:line:col diagnostics),
2 a usage error. Heavy imports (torch) happen only in the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from kdsl.errors import Diagnostic, KdslError


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit; main() turns this into exit code 2
        raise _UsageError(f"{self.prog}: error: {message}")


class Console:
    """One place for output, so colour and plain text stay consistent (rich when available)."""

    def __init__(self, out=None, err=None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def print(self, text: str = "") -> None:
        print(text, file=self.out)

    def error(self, text: str) -> None:
        print(text, file=self.err)

    def diagnostics(self, items: Sequence[Diagnostic]) -> None:
        for d in items:
            print(d.render(), file=self.err)


def _build_parser() -> _Parser:
    parser = _Parser(prog="kdsl", description="Check, compile and run kdsl reward specs.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    check = sub.add_parser("check", help="check specs and print every problem")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--no-warnings", action="store_true", help="print errors only")
    check.add_argument("--werror", action="store_true", help="treat warnings as errors")

    comp = sub.add_parser("compile", help="compile a spec to a standalone Python module")
    comp.add_argument("file", metavar="FILE")
    comp.add_argument("-o", "--output", metavar="MODULE.py", help="write here instead of stdout")
    comp.add_argument("--emit", choices=("python", "ir"), default="python")

    score = sub.add_parser("score", help="score completions given on the command line or in a file")
    score.add_argument("file", metavar="SPEC")
    score.add_argument("--completion", action="append", default=[], metavar="TEXT")
    score.add_argument("--data", metavar="FILE.jsonl", help="rows with a `completion` field and columns")
    score.add_argument("--set", action="append", default=[], metavar="COLUMN=VALUE",
                       help="a column value for every completion")
    score.add_argument("--json", action="store_true", help="print one JSON object per completion")

    train = sub.add_parser("train", help="GRPO fine-tuning rewarded by a spec (needs the `train` extra)")
    train.add_argument("file", metavar="SPEC")
    train.add_argument("--model", help="a local path or hub id (default: the embedded tiny model)")
    train.add_argument("--dataset", help="jsonl, json, parquet, csv, a save_to_disk folder or a hub id "
                       "(default: the embedded Landsat rows)")
    train.add_argument("--config", metavar="TRAIN.yaml", help="GRPOConfig fields")
    train.add_argument("--output-dir", help="where checkpoints and the run folder go")
    train.add_argument("--lora", action="store_true", help="train a LoRA adapter (peft)")
    train.add_argument("--lora-r", type=int, default=8)
    train.add_argument("--lora-alpha", type=int, default=16)
    train.add_argument("--lora-targets", default="", help="comma-separated module names "
                       "(default: all linear layers)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint "
                       "in --output-dir")
    train.add_argument("--max-steps", type=int, help="shortcut for the GRPOConfig field")
    train.add_argument("--table-every", type=int, default=10, metavar="N",
                       help="print level rewards and rule satisfaction every N steps")
    train.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation of the "
                       "embedded example")

    report = sub.add_parser("report", help="plot level rewards and rule satisfaction of a run")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("-o", "--output", metavar="FILE.png")

    return parser


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    console = console or Console()
    parser = _build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except _UsageError as err:
        console.error(str(err))
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    if args.version:
        from kdsl import __version__

        console.print(f"kdsl {__version__}")
        return 0
    if args.command is None:
        console.error(parser.format_usage().rstrip())
        console.error("kdsl: error: choose a command: check, compile, score, train or report")
        return 2
    try:
        return _COMMANDS[args.command](args, console)
    except _UsageError as err:
        console.error(f"kdsl {args.command}: error: {err}")
        return 2
    except KdslError as err:
        console.diagnostics(err.diagnostics)
        return 1


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise _UsageError(f"no such file: {path}")
    return p


def cmd_check(args, console: Console) -> int:
    from kdsl.compiler import check_file

    failed = False
    for name in args.files:
        result = check_file(_existing(name))
        shown = result.errors if args.no_warnings else result.diagnostics
        console.diagnostics(shown)
        if result.errors or (args.werror and result.warnings):
            failed = True
        else:
            note = f" ({len(result.warnings)} warnings)" if result.warnings else ""
            console.print(f"{name}: ok{note}")
    return 1 if failed else 0


def cmd_compile(args, console: Console) -> int:
    from kdsl.codegen import generate
    from kdsl.compiler import compile_ir
    from kdsl.ir import dump

    path = _existing(args.file)
    ir, warnings = compile_ir(path.read_text(encoding="utf-8"), str(path))
    console.diagnostics(warnings)
    text = dump(ir) if args.emit == "ir" else generate(ir)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        console.print(f"wrote {args.output}")
    else:
        console.out.write(text)
    return 0


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_score(args, console: Console) -> int:
    import kdsl

    program = kdsl.load(_existing(args.file))
    if args.data:
        rows = []
        for number, line in enumerate(_existing(args.data).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise KdslError(f"{args.data}:{number}: not a JSON object ({err.msg})") from None
            if not isinstance(row, dict) or "completion" not in row:
                raise KdslError(f"{args.data}:{number}: each row needs a `completion` field")
            rows.append(row)
        completions = [r["completion"] for r in rows]
        columns = {name: [r.get(name) for r in rows] for name in program.input_names}
    else:
        if not args.completion:
            raise _UsageError("give --completion TEXT (repeatable) or --data FILE.jsonl")
        completions = list(args.completion)
        columns = {}
        for item in args.set:
            name, eq, value = item.partition("=")
            if not eq:
                raise _UsageError(f"--set takes COLUMN=VALUE, not `{item}`")
            columns[name] = [_parse_value(value)] * len(completions)
    scores = program.score(completions, **columns)
    _print_scores(console, program, completions, scores, as_json=args.json)
    return 0


def _print_scores(console: Console, program, completions, scores, as_json: bool = False) -> None:
    for i, completion in enumerate(completions):
        row = {
            "reward": round(float(scores.reward[i]), 6),
            "levels": {k: round(float(v[i]), 6) for k, v in scores.levels.items()},
            "rules": {k: (round(float(v[i]), 6) if bool(scores.applies[k][i]) else None)
                      for k, v in scores.rules.items()},
        }
        if as_json:
            console.print(json.dumps(row))
            continue
        shown = completion if isinstance(completion, str) else json.dumps(completion)
        shown = shown.replace("\n", "\\n")
        console.print(f"[{i}] reward {row['reward']:.3f}  {shown[:70]}")
        for name, value in row["levels"].items():
            console.print(f"     level {name:<16} {value:.3f}")
        for name, value in row["rules"].items():
            console.print(f"       rule {name:<22} {'n/a' if value is None else f'{value:.3f}'}")


def cmd_train(args, console: Console) -> int:
    try:
        from kdsl import train as training
        from kdsl.trl import KdslGRPOTrainer  # noqa: F401  (fails early without the extra)
    except ImportError as err:
        raise _UsageError(f"`kdsl train` needs the training extra: pip install 'kdsl[train]' "
                          f"({err})") from None
    _existing(args.file)
    data_suffixes = (".jsonl", ".json", ".parquet", ".csv", ".tsv")
    if args.dataset and Path(args.dataset).suffix.lower() in data_suffixes and not Path(args.dataset).exists():
        raise _UsageError(f"no such dataset file: {args.dataset}")
    if args.config:
        _existing(args.config)
    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    options = training.TrainOptions(
        spec=args.file, model=args.model, dataset=args.dataset, config=args.config,
        output_dir=args.output_dir, lora=args.lora, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_targets=[t for t in args.lora_targets.split(",") if t], resume=args.resume,
        table_every=args.table_every, overrides=overrides, evaluate=not args.no_eval)
    summary = training.train(options, argv=["kdsl", "train", *sys.argv[2:]])
    console.print(json.dumps(summary, indent=2))
    return 0


def cmd_report(args, console: Console) -> int:
    from kdsl.report import write_report

    if not Path(args.run_dir).is_dir():
        raise _UsageError(f"no such run folder: {args.run_dir}")
    console.print(str(write_report(args.run_dir, args.output)))
    return 0


_COMMANDS = {"check": cmd_check, "compile": cmd_compile, "score": cmd_score, "train": cmd_train,
             "report": cmd_report}


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
