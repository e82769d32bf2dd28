"""The ``kdsl`` command line. ``main(argv) -> int`` is the whole CLI, testable with an argv list.

Exit codes: 0 success, 1 a problem in a spec or data (printed as file:line:col diagnostics),
2 a usage error. Heavy imports (torch) happen only in the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
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
    check.add_argument("files", nargs="*", metavar="FILE")
    check.add_argument("--explain", metavar="KD0xx", help="print what a diagnostic code means, "
                       "with an example and the fix (docs/errors.md), and exit")
    check.add_argument("--no-warnings", action="store_true", help="print errors only")
    check.add_argument("--werror", action="store_true", help="treat warnings as errors")

    comp = sub.add_parser("compile", help="compile a spec to a standalone Python module")
    comp.add_argument("file", metavar="FILE")
    comp.add_argument("-o", "--output", metavar="MODULE.py", help="write here instead of stdout")
    comp.add_argument("--emit", choices=("python", "ir"), default="python")

    score = sub.add_parser(
        "score", help="score completions given on the command line or in a file",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""\
--data streams the source in batches, so files of millions of rows fit in memory. Each
output row carries `row` (0-based, input order) and, for jsonl and csv input, `line` (1-based),
then the reward, level scores and rule values (null where a rule does not apply): as
nested objects in .jsonl, as columns `reward`, `level.NAME`, `rule.NAME` and `error` in
.csv and .parquet.

A bad row (not JSON, no completion, a value of the wrong type) is reported on stderr
(the first 20: `FILE:LINE: row N, column `c`: ...` for jsonl and csv, `FILE: row N,
column `c`: ...` for the others), counted in the summary, and written with null scores and an `error`;
every other row is still scored and written.

exit status: 0 when every row was scored (or at most --max-bad-rows were bad); 1 when
more rows were bad, or the spec has errors; 2 on usage errors (a missing file, an
output name whose format is unknown).""")
    score.add_argument("file", metavar="SPEC")
    score.add_argument("--completion", action="append", default=[], metavar="TEXT",
                       help="a completion to score (repeatable)")
    score.add_argument("--data", metavar="SOURCE", help="rows with a `completion` field and one "
                       "field per input: .jsonl (one JSON object a line), .parquet, .csv, .tsv, a "
                       "save_to_disk folder or a hub id")
    score.add_argument("--out", metavar="FILE", help="write per-row results here (.jsonl, .csv or "
                       ".parquet) and print a summary; without it, rows are printed")
    score.add_argument("--batch-size", type=int, default=4096, metavar="N",
                       help="rows read and scored at a time (default 4096)")
    score.add_argument("--workers", type=int, default=0, metavar="N",
                       help="processes that score (default: one per core for large files)")
    score.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this machine's processes (default); ray: Ray actors through "
                            "Ray Data (pip install 'kdsl[ray]'), --workers of them")
    score.add_argument("--address", metavar="ADDR", help="with --engine ray: the Ray cluster to "
                       "join (`auto` for the one this machine is in; default: start a local one)")
    score.add_argument("--max-bad-rows", type=int, default=0, metavar="N",
                       help="exit 0 as long as at most N rows are bad (default 0)")
    score.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    score.add_argument("--strict", action="store_true", help="a row with a missing or non-finite "
                       "value (None, NaN, inf, 1e309) is a bad row, not an invalid value")
    score.add_argument("--set", action="append", default=[], metavar="COLUMN=VALUE",
                       help="a column value for every --completion")
    score.add_argument("--json", action="store_true", help="print one JSON object per completion "
                       "(with --out: print the summary as one JSON object)")

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
    train.add_argument("--lora-init", default="default", metavar="NAME",
                       help="how the adapter starts (PEFT's init_lora_weights): default, gaussian, "
                            "orthogonal, pissa, pissa_niter_N, olora; PiSSA and OLoRA adapters are "
                            "saved converted for the original base")
    train.add_argument("--lora-targets", default="", help="comma-separated module names "
                       "(default: all linear layers)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint "
                       "in --output-dir")
    train.add_argument("--max-steps", type=int, help="shortcut for the GRPOConfig field")
    train.add_argument("--table-every", type=int, default=10, metavar="N",
                       help="print level rewards and rule satisfaction every N steps")
    train.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation of the "
                       "embedded example")
    train.add_argument("--strict", action="store_true", help="stop when a dataset value is missing "
                       "or not finite, instead of training on it as invalid")

    train.add_argument("--eval-dataset", metavar="D", help="held-out rows for the figures before "
                       "and after training (default: the embedded held-out Landsat rows, with the "
                       "embedded data)")
    train.add_argument("--eval-every", type=int, default=0, metavar="N",
                       help="also evaluate on the held-out rows every N steps")
    train.add_argument("--eval-rows", metavar="N|A:B", help="only these held-out rows")
    train.add_argument("--metric", metavar="NAME", help="the rule or level the held-out figures "
                       "lead with (default: a rule named `correct`)")

    evaluate = sub.add_parser(
        "eval", help="generate completions on held-out rows and score them with a spec",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""\
The table gives the reward, each level and each rule (mean over the completions it applies to,
with a bootstrap interval over rows), the --metric with pass@k when --samples k > 1, and the
share of completions each gate closed on. --out writes one line per completion (the row's prompt
and inputs, `completion`, and `scores`), which `kdsl explain --data F --row N` opens.

Without --model and --dataset: the embedded tiny model on the embedded held-out Landsat rows.""")
    evaluate.add_argument("file", metavar="SPEC")
    evaluate.add_argument("--model", help="a .gguf file, a local folder or a hub id (default: the "
                          "embedded tiny model)")
    evaluate.add_argument("--adapter", metavar="DIR", help="a LoRA adapter folder (peft) to load "
                          "on the model, e.g. a `kdsl train --lora` output")
    evaluate.add_argument("--dataset", help="jsonl, json, parquet, csv, a save_to_disk folder or a "
                          "hub id (default: the embedded held-out Landsat rows)")
    evaluate.add_argument("--split", default="train", help="the split of a folder or hub dataset")
    evaluate.add_argument("--rows", metavar="N|A:B", help="the first N rows, or rows A to B-1")
    evaluate.add_argument("--samples", type=int, default=1, metavar="K", help="completions per row "
                          "(pass@K); above 1 they are sampled")
    evaluate.add_argument("--temperature", type=float, metavar="T", help="sampling temperature "
                          "(default: greedy for one sample, 1.0 for several)")
    evaluate.add_argument("--top-p", type=float, default=1.0)
    evaluate.add_argument("--max-new-tokens", type=int, default=256, metavar="N")
    evaluate.add_argument("--batch-size", type=int, default=16, metavar="N",
                          help="rows per generate call (default 16)")
    evaluate.add_argument("--metric", metavar="NAME", help="the rule or level to report first, "
                          "with pass@k (default: a rule named `correct`)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--dtype", default=None, help="float32, bfloat16, float16 or auto "
                          "(default: float32 on a CPU, the model's own on a GPU)")
    evaluate.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda "
                          "when there is one)")
    evaluate.add_argument("--out", metavar="FILE.jsonl", help="every completion with its scores")
    evaluate.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    evaluate.add_argument("--strict", action="store_true", help="stop when a dataset value is "
                          "missing or not finite, instead of scoring it as invalid")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")

    ablate = sub.add_parser(
        "ablate", help="train variants of a spec (full, without LEVEL, prompt LEVEL, advantage A) over seeds "
                       "and compare them on the same held-out rows",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""\
Variants: `full` (the spec), `without LEVEL...` (those levels removed from the reward), `prompt
LEVEL...` (removed from the reward and written into the prompt as `kdsl describe` guidance),
`advantage sum|per_level|per_rule` (the same reward, its advantages aggregated that way).
Every run is evaluated with the full spec on the same held-out rows every --eval-every steps.
Writes OUT/ablation.json (every figure), OUT/ablation.png (held-out metric over steps, mean and
min-max band over seeds) and one `kdsl train` run folder per variant, seed and fold; run the same
command again to resume what did not finish.""")
    ablate.add_argument("file", metavar="SPEC")
    ablate.add_argument("--variant", action="append", default=[], metavar="VARIANT",
                        help="repeatable (default: full, and without each level that is not a gate "
                             "and does not hold the metric)")
    ablate.add_argument("--seeds", type=int, default=2, metavar="N")
    ablate.add_argument("--first-seed", type=int, default=0, metavar="S")
    ablate.add_argument("--model", help="as for kdsl train (default: the embedded tiny model)")
    ablate.add_argument("--dataset", help="as for kdsl train (default: the embedded Landsat rows)")
    ablate.add_argument("--eval-dataset", metavar="D", help="held-out rows (default: the embedded "
                        "split, or --folds)")
    ablate.add_argument("--folds", type=int, default=1, metavar="K", help="k-fold: every row is "
                        "held out once (K runs per variant and seed)")
    ablate.add_argument("--split-seed", type=int, default=0, metavar="S",
                        help="the seed of the split, the folds and --keep-labels")
    ablate.add_argument("--keep-labels", type=float, metavar="FRACTION", help="only this fraction "
                        "of the training rows keeps its label (per class); the others have it missing")
    ablate.add_argument("--label-column", default="label", metavar="NAME")
    ablate.add_argument("--stratify", default="label", metavar="COLUMN", help="folds and the "
                        "--keep-labels rows keep the mix of this column's values (default: label)")
    ablate.add_argument("--config", metavar="TRAIN.yaml", help="GRPOConfig fields, the same for "
                        "every run")
    ablate.add_argument("--max-steps", type=int, metavar="N")
    ablate.add_argument("--eval-every", type=int, default=50, metavar="K")
    ablate.add_argument("--eval-rows", metavar="N|A:B")
    ablate.add_argument("--metric", metavar="NAME", help="the held-out rule or level compared "
                        "(default: a rule named `correct`)")
    ablate.add_argument("--target", type=float, metavar="X", help="report the steps until the "
                        "held-out metric first reaches X")
    ablate.add_argument("--lora", action="store_true")
    ablate.add_argument("--output-dir", default="runs/ablation", metavar="OUT")

    serve = sub.add_parser(
        "serve", help="serve a spec's reward over HTTP (kdsl's JSON shape and OpenRLHF's)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""\
POST /score {"rows": [{"completion": ..., INPUT: value, ...}]} -> {"results": [{"reward", "levels",
"rules"}]}; POST /get_reward (OpenRLHF's --remote_rm_url) {"query", "prompts", "labels"} ->
{"rewards", "scores", "extra_logs"}; GET /health. Concurrent requests are scored together in one
program call. Listens on 127.0.0.1 unless --host says otherwise, and elsewhere only with a token
(clients send `Authorization: Bearer TOKEN`).""")
    serve.add_argument("file", metavar="SPEC")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token-file", metavar="F", help="require this bearer token (the file's "
                       "text); needed to listen on anything but loopback")
    serve.add_argument("--max-batch", type=int, default=4096, metavar="N",
                       help="rows per request, and per program call (default 4096)")
    serve.add_argument("--max-body-bytes", type=int, default=16 * 2**20, metavar="B",
                       help="largest request body (default 16 MiB)")
    serve.add_argument("--timeout", type=float, default=60.0, metavar="S",
                       help="a request's longest wait for its scores, in seconds (default 60)")
    serve.add_argument("--label-input", metavar="NAME", help="the input an OpenRLHF label fills "
                       "when it is not an object of inputs (default: the only input)")
    serve.add_argument("--workers", type=int, default=1, metavar="W", help="server processes")

    merge = sub.add_parser("merge", help="merge LoRA experts trained from one base into one adapter "
                                         "(PEFT's add_weighted_adapter)")
    merge.add_argument("experts", nargs="+", metavar="RUN",
                       help="`kdsl train --lora` output folders (or PEFT adapter folders)")
    merge.add_argument("--method", default="ties",
                       help="linear, ties, dare_ties, dare_linear, magnitude_prune, cat, svd (and the "
                            "*_svd variants); default ties")
    merge.add_argument("--weights", default=None, metavar="W1,W2,...",
                       help="one weight per expert (default: equal, summing to 1)")
    merge.add_argument("--density", type=float, default=None,
                       help="the share of each update kept, for ties, dare_* and magnitude_prune")
    merge.add_argument("--base", default=None, help="the base model (default: the experts' own)")
    merge.add_argument("--out", metavar="DIR", help="where the merged adapter goes (not needed with --report)")
    merge.add_argument("--select-on", action="append", default=[], metavar="SPEC=HELDOUT",
                       help="choose the merge by the guidelines: evaluate a small grid of merges on "
                            "each specialty's held-out rows with its spec (repeatable) and keep the best")
    merge.add_argument("--select", choices=("worst", "mean"), default="worst",
                       help="with --select-on: keep the best worst-case (default) or mean specialty score")
    merge.add_argument("--max-new-tokens", type=int, default=64, help="with --select-on")
    merge.add_argument("--rows", default=None, metavar="N|A:B", help="with --select-on: held-out rows used")
    merge.add_argument("--report", action="store_true",
                       help="only report how the experts' updates conflict (a table and, with --out, "
                            "a PNG), without merging")

    describe = sub.add_parser("describe", help="the rules of a spec in plain language")
    describe.add_argument("file", metavar="SPEC")
    describe.add_argument("--level", action="append", default=[], metavar="LEVEL",
                          help="only these levels (repeatable)")
    describe.add_argument("--guidance", action="store_true", help="the text `kdsl ablate` writes "
                          "into prompts for `prompt LEVEL...` (needs --level)")

    test = sub.add_parser("test", help="run a spec's labelled examples (example blocks and "
                                       "NAME.kdtest.jsonl beside NAME.kd)")
    test.add_argument("paths", nargs="+", metavar="SPEC",
                      help="specs, .kdtest.jsonl files or folders (searched for *.kd)")
    test.add_argument("-k", dest="pattern", metavar="PATTERN",
                      help="only cases whose SPEC::NAME contains PATTERN (`not PATTERN` inverts)")
    test.add_argument("--junit-xml", metavar="FILE", help="also write a JUnit XML report")
    test.add_argument("--coverage", action="store_true",
                      help="report whether examples make each rule apply, hold and fail, and "
                           "reach each table row")
    test.add_argument("--fail-under", type=float, metavar="PERCENT",
                      help="exit 1 when coverage is below PERCENT (implies --coverage)")
    test.add_argument("--strict", action="store_true",
                      help="a case with a missing or non-finite column value is an error")
    test.add_argument("--record", action="store_true",
                      help="ask the spec's judges and reward models (bound with --model-for) and "
                           "keep their answers in NAME.kdjudge.jsonl beside the spec; later runs "
                           "without the models bound answer from that file")
    test.add_argument("--mutate", action="store_true",
                      help="nudge thresholds, comparisons and table cells and report the "
                           "mutations no example catches")
    test.add_argument("--fail-under-mutation", type=float, metavar="PERCENT",
                      help="exit 1 when a spec's mutation score is below PERCENT (implies --mutate)")

    explain = sub.add_parser(
        "explain", help="show why one completion got its reward: what each output found, each "
                        "let, rule and level, the gate that closed and the reward's arithmetic")
    explain.add_argument("file", metavar="SPEC")
    explain.add_argument("--data", metavar="SOURCE", help="rows with a `completion` field and one "
                         "field per input: .jsonl (one JSON object a line), .parquet, .csv, .tsv, "
                         "a save_to_disk folder or a hub id")
    explain.add_argument("--row", type=int, default=0, metavar="N",
                         help="which row of --data to explain, counting from 0 (default 0)")
    explain.add_argument("--completion", metavar="TEXT", help="the completion to explain")
    explain.add_argument("--set", action="append", default=[], metavar="COLUMN=VALUE",
                         help="an input value (read as JSON when it parses, else as a string); "
                              "with --data, it replaces the row's value")
    explain.add_argument("--format", choices=("text", "json"), default="text",
                         help="json: one JSON object, for tools")

    for command in (check, comp, score, train, evaluate, ablate, describe, test, explain):
        command.add_argument("--spec-path", action="append", default=[], metavar="DIR",
                             help="a folder that imports may also come from (repeatable; added "
                                  "before the folders of KDSL_PATH)")
    for command in (score, train, evaluate, test, explain):
        command.add_argument("--similarity-model", metavar="PATH", help="sentence-transformers model "
                             "(local path or hub id) for specs that use similarity()")
    for command in (score, train, evaluate, ablate, test, explain):
        command.add_argument("--model-for", action="append", default=[], metavar="NAME=PATH_OR_URL",
                             help="bind the spec's judge or reward model NAME to a model folder, hub "
                                  "id or .gguf file, or an OpenAI-compatible server's URL "
                                  "(http://host:port/v1[?model=M]) (repeatable; also "
                                  "KDSL_MODEL_NAME)")
        command.add_argument("--judge-cache", metavar="FILE", help="keep the models' answers in this "
                             "file, so later runs ask only what is new (also KDSL_JUDGE_CACHE)")
    for command in (score, test, explain):
        command.add_argument("--tokenizer", metavar="PATH", help="transformers tokenizer (local "
                             "path or hub id) for specs that count tokens")

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
        console.error("kdsl: error: choose a command: check, compile, score, test, explain, describe, eval, train, ablate, merge, serve or report")
        return 2
    # Options that reach the code that reads them through the environment, in this process and in
    # scoring workers alike, for the length of the command.
    settings = {}
    if getattr(args, "similarity_model", None):
        settings["KDSL_SIMILARITY_MODEL"] = args.similarity_model
    if getattr(args, "tokenizer", None):
        settings["KDSL_TOKENIZER"] = args.tokenizer
    if getattr(args, "model_for", None) or getattr(args, "judge_cache", None):
        from kdsl.runtime.judging import CACHE_VARIABLE, MODEL_VARIABLE

        for item in args.model_for:
            name, eq, value = item.partition("=")
            if not eq or not name.isidentifier() or not value:
                console.error(f"kdsl {args.command}: error: --model-for takes NAME=PATH_OR_URL, "
                              f"not `{item}`")
                return 2
            settings[MODEL_VARIABLE.format(name.upper())] = value
        if args.judge_cache:
            settings[CACHE_VARIABLE] = args.judge_cache
    if getattr(args, "spec_path", None):
        from kdsl.compiler import SPEC_PATH_VARIABLE

        for folder in args.spec_path:
            if not Path(folder).is_dir():
                console.error(f"kdsl {args.command}: error: --spec-path {folder} is not a folder")
                return 2
        given = [str(Path(f).resolve()) for f in args.spec_path]
        settings[SPEC_PATH_VARIABLE] = os.pathsep.join(
            [*given, *filter(None, os.environ.get(SPEC_PATH_VARIABLE, "").split(os.pathsep))])
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        return _COMMANDS[args.command](args, console)
    except _UsageError as err:
        console.error(f"kdsl {args.command}: error: {err}")
        return 2
    except KdslError as err:
        console.diagnostics(err.diagnostics)
        return 1
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise _UsageError(f"no such file: {path}")
    return p


def _dataset_file(source: str | None) -> str | None:
    """A data source's format (``kdsl.io.rows.data_format``); a file that does not exist, or whose
    format its name does not tell, is a usage error."""
    from kdsl.errors import KdslDataError
    from kdsl.io.rows import data_format

    if source is None:
        return None
    try:
        return data_format(source)
    except KdslDataError as err:
        raise _UsageError(err.message) from None


def cmd_check(args, console: Console) -> int:
    from kdsl.compiler import check_file
    from kdsl.errors import explain

    if args.explain:
        console.out.write(explain(args.explain))
        return 0
    if not args.files:
        raise _UsageError("kdsl check: give the spec files to check (or --explain KD0xx)")
    failed = False
    first_code = None
    for name in args.files:
        result = check_file(_existing(name))
        shown = result.errors if args.no_warnings else result.diagnostics
        console.diagnostics(shown)
        # Point at an error's code when there is one: that is what stops the spec.
        first_code = first_code or next((d.code for d in sorted(shown, key=lambda d: d.severity != "error")
                                         if d.code), None)
        if result.errors or (args.werror and result.warnings):
            failed = True
        else:
            note = f" ({len(result.warnings)} warnings)" if result.warnings else ""
            console.print(f"{name}: ok{note}")
    if first_code:
        console.error(f"`kdsl check --explain {first_code}` explains a code, with an example and the fix")
    return 1 if failed else 0


def cmd_compile(args, console: Console) -> int:
    from kdsl.codegen import generate
    from kdsl.compiler import compile_ir, read_spec_file
    from kdsl.ir import dump

    path = _existing(args.file)
    ir, warnings = compile_ir(read_spec_file(path), str(path))
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
    from kdsl.tools import scoring

    spec = _existing(args.file)
    if args.batch_size < 1 or args.workers < 0 or args.max_bad_rows < 0:
        raise _UsageError("--batch-size must be at least 1; --workers and --max-bad-rows at least 0")
    if args.data:
        if args.completion or args.set:
            raise _UsageError("--completion and --set give rows on the command line; with --data, "
                              "completions and columns come from the file")
        data = Path(args.data)
        _dataset_file(args.data)
        try:
            if args.out:
                scoring.output_format(args.out)
        except scoring.FormatError as err:
            raise _UsageError(str(err)) from None
        if args.out:
            out = Path(args.out)
            if not out.parent.is_dir():
                raise _UsageError(f"no such folder for --out: {out.parent}")
            if out.resolve() == data.resolve():
                raise _UsageError("--out names the --data file itself")
        program = kdsl.load(spec)

        def terminal(stream) -> bool:
            return bool(getattr(stream, "isatty", lambda: False)())

        rows_on_stdout = not args.out
        # The bar goes to stderr, and not while rows are printed to the same terminal.
        show_bar = (not args.no_progress and terminal(console.err)
                    and not (rows_on_stdout and terminal(console.out)))
        try:
            summary = scoring.score_file(
                program, data, out=args.out, stream=console.out,
                output="jsonl" if args.json else "text", batch_size=args.batch_size,
                workers=args.workers, report=console.error,
                progress=console.err if show_bar else None, spec=spec, strict=args.strict,
                engine=args.engine, address=args.address)
            if args.json and not rows_on_stdout:
                console.print(json.dumps(summary.as_dict()))
            elif args.json:  # stdout carries the rows as JSON lines only
                console.error(summary.render())
            else:
                console.print(("\n" if rows_on_stdout else "") + summary.render())
        except KeyboardInterrupt:
            console.error("kdsl score: interrupted" + (f"; {args.out} was not written" if args.out
                                                       else ""))
            return 130
        except BrokenPipeError:  # the reader of stdout stopped early (`| head`): end quietly
            import os

            if hasattr(console.out, "fileno"):
                os.dup2(os.open(os.devnull, os.O_WRONLY), console.out.fileno())
            return 1
        return 1 if summary.bad > args.max_bad_rows else 0

    if args.out:
        raise _UsageError("--out needs --data FILE")
    if not args.completion:
        raise _UsageError("give --completion TEXT (repeatable) or --data FILE")
    program = kdsl.load(spec)
    completions = list(args.completion)
    columns = {name: [value] * len(completions) for name, value in _set_values(args.set, program).items()}
    scores = program.score(completions, **columns)
    _print_scores(console, program, completions, scores, as_json=args.json)
    return 0


def _set_values(items: list[str], program) -> dict:
    """`--set COLUMN=VALUE` options as {input: value}: the value read as JSON when it parses,
    else as a string; a column that is not an input of the spec is a usage error."""
    from kdsl.errors import did_you_mean

    values = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq:
            raise _UsageError(f"--set takes COLUMN=VALUE, not `{item}`")
        if name not in program.input_names:
            raise _UsageError(f"--set {name}: `{name}` is not an input of {program.name}"
                              f"{did_you_mean(name, program.input_names)}")
        values[name] = _parse_value(value)
    return values


def _print_scores(console: Console, program, completions, scores, as_json: bool = False) -> None:
    from kdsl.tools.scoring import text_lines

    for i, completion in enumerate(completions):
        row = {
            "row": i,
            "reward": round(float(scores.reward[i]), 6),
            "levels": {k: round(float(v[i]), 6) for k, v in scores.levels.items()},
            "rules": {k: (round(float(v[i]), 6) if bool(scores.applies[k][i]) else None)
                      for k, v in scores.rules.items()},
        }
        if as_json:
            console.print(json.dumps(row))
            continue
        shown = completion if isinstance(completion, str) else json.dumps(completion)
        for line in text_lines(i, shown, row["reward"], row["levels"], row["rules"]):
            console.print(line)


def cmd_test(args, console: Console) -> int:
    from kdsl.tools import testing

    try:
        targets = testing.test_targets(args.paths)
    except KdslError as err:  # a path that does not exist
        raise _UsageError(err.message) from err
    run = testing.run_tests(targets, args.pattern, strict=args.strict, record=args.record)
    suites = run.suites
    console.diagnostics(run.problems)
    console.print(testing.format_results(suites, run.shown))
    console.print(run.summary())
    if args.junit_xml:
        Path(args.junit_xml).write_text(run.junit_xml(), encoding="utf-8")
    status = 0 if run.ok else 1
    if run.nothing_found():
        console.error(run.nothing_found())
    if args.coverage or args.fail_under is not None:
        for suite in suites:
            cov = testing.coverage(suite)
            console.print(testing.format_coverage(suite, cov))
            if args.fail_under is not None and cov.percent < args.fail_under:
                console.error(f"{suite.spec}: coverage {cov.percent:.1f}% is under {args.fail_under:g}%")
                status = 1
    if args.mutate or args.fail_under_mutation is not None:
        from kdsl.tools.mutation import format_report, mutate

        for suite in suites:
            report = mutate(suite)
            console.print(format_report(suite.spec, report, args.fail_under_mutation))
            if args.fail_under_mutation is not None and report.score < args.fail_under_mutation:
                status = 1
    return status


# What `kdsl train` and `kdsl ablate` need installed (the `train` extra), looked up without being
# imported: importing the trainer stack takes seconds, and a bad dataset should be reported first.
_TRAINING_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "yaml")


def _require_training_extra(command: str) -> None:
    import importlib.util

    missing = [name for name in _TRAINING_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise _UsageError(f"`kdsl {command}` needs the training extra: pip install 'kdsl[train]' "
                          f"(not installed: {', '.join(missing)})")


def cmd_train(args, console: Console) -> int:
    _require_training_extra("train")
    from kdsl.training import train as training

    if args.lora:
        try:
            training.lora_init_weights(args.lora_init)
        except KdslError as err:
            raise _UsageError(err.message) from None

    _existing(args.file)
    _dataset_file(args.dataset)
    _dataset_file(args.eval_dataset)
    if args.config:
        _existing(args.config)
    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    options = training.TrainOptions(
        spec=args.file, model=args.model, dataset=args.dataset, config=args.config,
        output_dir=args.output_dir, lora=args.lora, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_targets=[t for t in args.lora_targets.split(",") if t], lora_init=args.lora_init,
        resume=args.resume,
        table_every=args.table_every, overrides=overrides, evaluate=not args.no_eval,
        strict=args.strict, eval_dataset=args.eval_dataset, eval_every=args.eval_every,
        eval_rows=args.eval_rows, metric=args.metric)
    if args.eval_every < 0:
        raise _UsageError(f"--eval-every must be 0 or more, not {args.eval_every}")
    summary = training.train(options, argv=["kdsl", "train", *sys.argv[2:]])
    console.print(json.dumps(summary, indent=2))
    return 0


def cmd_eval(args, console: Console) -> int:
    try:
        from kdsl.io.loading import load_model
        from kdsl.io.rows import load_dataset
        from kdsl.tools import evaluation
        from kdsl.training.train import EMBEDDED_MODEL
    except ImportError as err:
        raise _UsageError(f"`kdsl eval` needs the training extra: pip install 'kdsl[train]' "
                          f"({err})") from None
    import kdsl

    spec = _existing(args.file)
    _dataset_file(args.dataset)
    if args.model and args.model.lower().endswith(".gguf") and not Path(args.model).is_file():
        raise _UsageError(f"no such model file: {args.model}")
    if args.adapter and not Path(args.adapter).is_dir():
        raise _UsageError(f"no such adapter folder: {args.adapter}")
    if args.out and Path(args.out).suffix.lower() != ".jsonl":
        raise _UsageError(f"--out writes jsonl: name the file NAME.jsonl, not {args.out}")
    config = evaluation.EvalConfig(samples=args.samples, temperature=args.temperature, top_p=args.top_p,
                                   max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                   metric=args.metric, seed=args.seed)
    program = kdsl.load(spec)
    evaluation.metric_name(program, args.metric)
    if args.dataset is None:
        from kdsl.example import landsat

        rows, where = landsat.train_heldout_split(landsat.landsat_rows())[1], "embedded held-out rows"
    else:
        rows, where = evaluation.as_rows(load_dataset(args.dataset, split=args.split)), args.dataset
    rows = evaluation.select_rows(rows, args.rows)
    for line in evaluation.check_rows(program, rows, where, strict=args.strict):
        console.error(f"warning: {line} (scored as invalid; --strict stops instead)")
    model, processing_class = load_model(args.model or str(EMBEDDED_MODEL), dtype=args.dtype,
                                         device=args.device, adapter=args.adapter)
    from rich.console import Console as RichConsole
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                        TimeRemainingColumn(), console=RichConsole(file=console.err),
                        disable=args.no_progress, transient=True)
    with progress:
        task = progress.add_task("rows", total=len(rows))
        result = evaluation.evaluate(program, model, processing_class, rows, config,
                                     progress=lambda n: progress.advance(task, n))
    for line in result.invalid_values:
        console.error(f"warning: {line} (scored as invalid)")
    if args.out:
        result.write_jsonl(args.out, rows, program.input_names)
    if args.json:
        summary = result.summary()
        if args.out:
            summary["out"] = args.out
        console.print(json.dumps(summary, indent=2))
    else:
        result.render(RichConsole(file=console.out, highlight=False, width=_table_width(console)))
        if args.out:
            console.print(f"{len(result.completions)} completions with their scores: {args.out}")
    return 0


def cmd_ablate(args, console: Console) -> int:
    _require_training_extra("ablate")
    from kdsl.tools import ablation

    _existing(args.file)
    if args.config:
        _existing(args.config)
    _dataset_file(args.dataset)
    _dataset_file(args.eval_dataset)
    if args.folds < 1:
        raise _UsageError(f"--folds must be at least 1, not {args.folds}")
    if args.eval_every < 1:
        raise _UsageError(f"--eval-every must be at least 1, not {args.eval_every}")
    options = ablation.AblationOptions(
        spec=args.file, variants=args.variant, seeds=args.seeds, first_seed=args.first_seed,
        model=args.model, dataset=args.dataset, eval_dataset=args.eval_dataset, config=args.config,
        output_dir=args.output_dir, eval_every=args.eval_every, metric=args.metric, target=args.target,
        folds=args.folds, split_seed=args.split_seed, keep_labels=args.keep_labels,
        label_column=args.label_column, max_steps=args.max_steps, lora=args.lora,
        stratify=args.stratify or None,
        eval_rows=args.eval_rows)
    from rich.console import Console as RichConsole

    result = ablation.run(options, console=RichConsole(file=console.err))
    ablation.render(result, RichConsole(file=console.out, highlight=False, width=_table_width(console)))
    out = Path(args.output_dir)
    console.print(f"{out / 'ablation.json'}\n{out / 'ablation.png'}")
    return 0


def _table_width(console: Console) -> int | None:
    """A terminal's own width; 120 columns in a file or pipe, so names are not wrapped."""
    return None if getattr(console.out, "isatty", lambda: False)() else 120


def cmd_serve(args, console: Console) -> int:
    import importlib.util

    missing = [name for name in ("uvicorn", "starlette") if importlib.util.find_spec(name) is None]
    if missing:
        raise _UsageError(f"`kdsl serve` needs the serve extra: pip install 'kdsl[serve]' "
                          f"(not installed: {', '.join(missing)})")
    from kdsl.integrations.serve import ServeOptions, serve

    options = ServeOptions(spec=str(_existing(args.file)), host=args.host, port=args.port,
                           token_file=args.token_file, max_batch=args.max_batch,
                           max_body_bytes=args.max_body_bytes, timeout_s=args.timeout,
                           label_input=args.label_input, workers=args.workers)
    where = f"http://{args.host}:{args.port}"
    console.error(f"kdsl serve: {args.file} on {where} (POST /score, POST /get_reward, GET /health)")
    serve(options)
    return 0


def cmd_merge(args, console: Console) -> int:
    _require_training_extra("merge")
    from kdsl.training import merging

    for expert in args.experts:
        if not Path(expert).is_dir():
            raise _UsageError(f"no such expert folder: {expert}")
    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise _UsageError(f"--weights takes numbers separated by commas, not `{args.weights}`") from None
    if args.method not in merging.METHODS:
        raise _UsageError(f"--method {args.method}: choose one of {', '.join(merging.METHODS)}")
    if not args.report and not args.out:
        raise _UsageError("give --out DIR for the merged adapter, or --report to see the conflicts only")
    from rich.console import Console as RichConsole

    experts = [merging.read_expert(p) for p in args.experts]
    report = merging.conflicts(experts, args.density)
    merging.render_conflicts(report, RichConsole(file=console.out, width=_table_width(console)))
    if args.select_on:
        if not args.out or args.report:
            raise _UsageError("--select-on writes the chosen adapter: give --out DIR (and no --report)")
        specialties = []
        for item in args.select_on:
            spec, eq, heldout = item.partition("=")
            if not eq or not spec or not heldout:
                raise _UsageError(f"--select-on takes SPEC=HELDOUT, not `{item}`")
            _existing(spec)
            _dataset_file(heldout)
            specialties.append((spec, heldout))
        selection = merging.select(args.experts, specialties, args.out, criterion=args.select,
                                   base=args.base, max_new_tokens=args.max_new_tokens, rows=args.rows,
                                   console=console)
        console.print(f"chosen: {selection['chosen']} ({args.select} specialty score); every "
                      f"candidate in {Path(args.out) / 'kdsl_selection.json'}")
    if args.out:
        out = Path(args.out)
        if not args.report and not args.select_on:
            merging.merge(args.experts, args.method, weights, args.density, out, base=args.base)
            console.print(f"merged {len(args.experts)} experts ({args.method}) into {out}")
        out.mkdir(parents=True, exist_ok=True)
        (out / "kdsl_conflicts.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        console.print(f"conflicts: {merging.plot_conflicts(report, out / 'kdsl_conflicts.png')}")
    return 0


def cmd_describe(args, console: Console) -> int:
    import kdsl
    from kdsl.tools import describe

    program = kdsl.load(_existing(args.file))
    if args.guidance:
        if not args.level:
            raise _UsageError("--guidance needs the levels it is for: --level LEVEL ...")
        console.print(describe.guidance(program, args.level))
    else:
        console.print(describe.describe(program, args.level or None))
    return 0


def cmd_explain(args, console: Console) -> int:
    import kdsl
    from kdsl.tools import explain as explaining

    spec = _existing(args.file)
    if (args.data is None) == (args.completion is None):
        raise _UsageError("give --data FILE [--row N] or --completion TEXT [--set COLUMN=VALUE ...]")
    program = kdsl.load(spec)
    overrides = _set_values(args.set, program)
    data = None
    if args.data is not None:
        data = args.data
        _dataset_file(data)
        if args.row < 0:
            raise _UsageError(f"--row counts rows from 0, so it cannot be {args.row}")
    try:
        explanation = explaining.explain_row(program, data, args.row, completion=args.completion,
                                             overrides=overrides)
    except IndexError as err:
        raise _UsageError(str(err)) from None
    if args.format == "json":
        console.print(json.dumps(explanation, indent=2, ensure_ascii=False))
    else:
        from rich.console import Console as RichConsole

        explaining.render(explanation, RichConsole(file=console.out, highlight=False))
    return 0


def cmd_report(args, console: Console) -> int:
    from kdsl.tools.report import write_report

    if not Path(args.run_dir).is_dir():
        raise _UsageError(f"no such run folder: {args.run_dir}")
    console.print(str(write_report(args.run_dir, args.output)))
    return 0


_COMMANDS = {"check": cmd_check, "compile": cmd_compile, "score": cmd_score, "test": cmd_test,
             "explain": cmd_explain, "eval": cmd_eval, "ablate": cmd_ablate,
             "describe": cmd_describe, "merge": cmd_merge, "serve": cmd_serve,
             "train": cmd_train,
             "report": cmd_report}


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
