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
        console.error("kdsl: error: choose a command: check, compile or score")
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


_COMMANDS = {"check": cmd_check, "compile": cmd_compile, "score": cmd_score}


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
