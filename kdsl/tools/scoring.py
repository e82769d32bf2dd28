"""Scoring files of saved completions offline (``kdsl score SPEC --data FILE [--out FILE]``).

The source (any that ``kdsl.io.rows`` reads: jsonl, parquet, csv, a ``datasets`` folder or hub id)
streams through in chunks: each chunk is parsed, scored as one batch and written out before more
is read, so memory stays bounded however large the file is. With several workers, chunks are
scored in worker processes and written in input order.

A bad row (a line that is not JSON, a row without a completion, a value of the wrong type) never
stops the run and is never dropped: it is reported with its row number and field, counted in the
summary, and written with null scores and an ``error``. Rows are numbered from 0 in input order
(``row``); jsonl and csv messages also give the 1-based line number, as ``file:line:``, and
output rows carry it as ``line``.

Output formats, chosen by the suffix of ``--out``:

- ``.jsonl``: ``{"row", "line" (jsonl, csv input), "reward", "levels": {...}, "rules": {...}}`` per row,
  the same objects ``kdsl score --json`` prints; a rule is ``null`` where it does not apply; a bad
  row has every score ``null`` and an ``"error"``. Numbers are rounded to 6 decimals.
- ``.csv``: columns ``row``, ``line`` (jsonl, csv input), ``reward``, ``level.NAME``..., ``rule.NAME``...,
  ``error``; empty where null. Rounded to 6 decimals.
- ``.parquet``: the same columns as csv, scores as float32 (exact), nulls where null.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdsl.errors import KdslError
from kdsl.io.rows import Chunk, RowReader, open_source

DEFAULT_BATCH_SIZE = 4096
SHOWN_PROBLEMS = 20
OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
                  ".parquet": "parquet", ".pq": "parquet"}
# Below these sizes, starting worker processes costs more than it saves.
_PARALLEL_MIN_BYTES = 32 * 2**20
_PARALLEL_MIN_ROWS = 16384


class FormatError(ValueError):
    """A file whose format cannot be told from its name (a usage error for the command line)."""


def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise FormatError(f"cannot tell the output format of {path} from its name; end it in "
                          ".jsonl, .csv or .parquet")
    return OUTPUT_FORMATS[suffix]


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# ---- what travels between the reader, the workers and the writer ------------------------------------
@dataclass(frozen=True)
class Job:
    """What a worker needs to score chunks (picklable, for worker processes)."""

    spec: str
    source: str  # the data file, as messages name it
    input_format: str  # jsonl | parquet | csv | dataset (kdsl.io.rows.data_format)
    output_format: str  # jsonl | csv | parquet | text (human-readable lines)
    strict: bool = False  # a row with an invalid value (missing, not finite) is a bad row
    read_path: str | None = None  # where a worker opens the data file, if not at `source`


@dataclass
class Totals:
    """Sums over the good rows of some chunks, from which the summary's means come."""

    scored: int
    reward: float
    levels: np.ndarray  # (levels,) float64 sums
    applied: np.ndarray  # (rules,) int64 counts of rows a rule applied to
    truth: np.ndarray  # (rules,) float64 sums of truth where applied
    missing: np.ndarray  # (inputs,) int64 counts of good rows without a value

    @classmethod
    def zero(cls, levels: int, rules: int, inputs: int) -> Totals:
        return cls(0, 0.0, np.zeros(levels), np.zeros(rules, dtype=np.int64), np.zeros(rules),
                   np.zeros(inputs, dtype=np.int64))

    def add(self, other: Totals) -> None:
        self.scored += other.scored
        self.reward += other.reward
        self.levels += other.levels
        self.applied += other.applied
        self.truth += other.truth
        self.missing += other.missing


@dataclass
class ChunkResult:
    first_row: int
    rows: int
    size: int
    output: object  # text (jsonl, csv, text) or a pyarrow RecordBatch (parquet)
    bad: int
    messages: list[list[str]]  # the problems of the first bad rows, rendered, one list a row
    totals: Totals
    invalid: object = None  # columns.InvalidValues of the chunk, rows counted from its start
    judges: object = None  # judging.JudgeStats of the chunk: what its models were asked


@dataclass
class Summary:
    """What a scoring run found: counts, mean reward, level means and per-rule rates."""

    source: str
    rows: int
    scored: int
    bad: int
    seconds: float
    mean_reward: float | None
    levels: dict[str, float | None]
    rules: dict[str, dict]  # name -> {"level", "applied", "rate"}
    missing: dict[str, int]  # input -> good rows without a value (absent or null)
    invalid: object = None  # columns.InvalidValues: per column, missing and non-finite values
    judges: object = None  # judging.JudgeStats: what the spec's models were asked, per model

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict:
        return {"source": self.source, "rows": self.rows, "scored": self.scored, "bad": self.bad,
                "seconds": round(self.seconds, 3), "mean_reward": self.mean_reward,
                "levels": self.levels, "rules": self.rules, "missing": self.missing,
                "invalid": self.invalid.as_dict() if self.invalid else {},
                "models": self.judges.as_dict() if self.judges else {}}

    def render(self) -> str:
        def number(value, digits=4):
            return "n/a" if value is None else f"{value:.{digits}f}"

        lines = [f"{self.source}: {self.rows:,} rows, {self.scored:,} scored, {self.bad:,} bad "
                 f"in {self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)",
                 f"mean reward {number(self.mean_reward)}"]
        if self.invalid:
            lines.append("invalid values, scored as invalid (--strict makes their rows bad rows):")
            lines += [f"  {line}" for line in self.invalid.lines()]
        if self.judges and self.judges.models:
            lines.append("models (asked only where a value could change the reward):")
            lines += [f"  {line}" for line in self.judges.lines()]
        width = max([len("level")] + [len(name) for name in self.levels])
        lines += ["", f"{'level':<{width}}  {'mean':>8}"]
        lines += [f"{name:<{width}}  {number(value):>8}" for name, value in self.levels.items()]
        rule_width = max([len("rule")] + [len(name) for name in self.rules])
        lines += ["", f"{'rule':<{rule_width}}  {'level':<{width}}  {'applied':>11}  {'satisfied':>9}"]
        for name, info in self.rules.items():
            lines.append(f"{name:<{rule_width}}  {info['level']:<{width}}  {info['applied']:>11,}  "
                         f"{number(info['rate']):>9}")
        lines.append("(satisfied: a rule's mean truth over the rows it applied to; bad rows are "
                     "left out of every mean)")
        return "\n".join(lines)


# ---- one row, rendered for people (also used for --completion) --------------------------------------
def text_lines(index: int, completion: str, reward: float, levels: dict[str, float],
               rules: dict[str, float | None]) -> list[str]:
    shown = completion.replace("\n", "\\n")
    lines = [f"[{index}] reward {reward:.3f}  {shown[:70]}"]
    lines += [f"     level {name:<16} {value:.3f}" for name, value in levels.items()]
    lines += [f"       rule {name:<22} {'n/a' if value is None else f'{value:.3f}'}"
              for name, value in rules.items()]
    return lines


# ---- scoring one chunk --------------------------------------------------------------------------
class _NumberTexts(dict):
    """The JSON text of each rounded number, cached.

    A chunk holds few distinct values (truths are mostly 0 and 1, levels a few fractions), and a
    dict lookup is several times cheaper than formatting a float. Growth stops at a bound, so
    continuous values cannot fill memory; they are then formatted each time."""

    def __init__(self, null: str, seeded: dict | None = None):
        super().__init__(seeded or {})
        self.null = null

    def __missing__(self, value: float) -> str:
        text = repr(value) if math.isfinite(value) else self.null
        if len(self) < 1 << 16:
            self[value] = text
        return text


# Truths lie in [0, 1], so this marks a rule that does not apply while numbers become text.
_NOT_APPLICABLE = -1.0


class ChunkScorer:
    """Parses, scores and formats chunks of one file for one program (in a worker or in-process)."""

    def __init__(self, program, job: Job):
        self.program = program
        self.job = job
        self.inputs = program.input_names
        self.levels = program.level_names
        self.rules = program.rule_names
        self.rule_levels = {r.name: r.level for r in program.ir.rules}
        self.with_line = job.input_format in ("jsonl", "csv")
        self.reader = RowReader(job.source, self.inputs,
                                {name: kind for name, kind, _, _ in program.module.INPUTS},
                                job.read_path)
        self._keys = (["reward"] + [f"level.{name}" for name in self.levels]
                      + [f"rule.{name}" for name in self.rules])
        self._null_scores = {"reward": None, "levels": dict.fromkeys(self.levels),
                             "rules": dict.fromkeys(self.rules)}
        null = "" if job.output_format == "csv" else "null"
        self._score_texts = _NumberTexts(null)
        self._rule_texts = _NumberTexts(null, {_NOT_APPLICABLE: null})

    # -- headers and templates --
    def csv_header(self) -> str:
        names = ["row"] + (["line"] if self.with_line else []) + self._keys + ["error"]
        return ",".join(_csv_field(name) for name in names) + "\n"

    def parquet_schema(self):
        import pyarrow as pa

        fields = [pa.field("row", pa.int64())]
        if self.with_line:
            fields.append(pa.field("line", pa.int64()))
        fields += [pa.field(key, pa.float32()) for key in self._keys]
        fields.append(pa.field("error", pa.string()))
        return pa.schema(fields)

    def _row_template(self) -> str:
        """A %-template of one output row: the keys are written once here, and each row only
        fills in the texts of its numbers, far cheaper than ``json.dumps`` of a dict per row."""
        if self.job.output_format == "csv":
            return ",".join(["%s"] * (len(self._keys) + 1 + self.with_line)) + ",\n"

        def obj(names):
            return "{" + ", ".join(json.dumps(name).replace("%", "%%") + ": %s" for name in names) + "}"

        head = '{"row": %s, "line": %s, ' if self.with_line else '{"row": %s, '
        return (head + '"reward": %s, "levels": ' + obj(self.levels) + ', "rules": '
                + obj(self.rules) + "}\n")

    # -- scoring --
    def score(self, chunk: Chunk) -> ChunkResult:
        from kdsl.runtime import columns as col
        from kdsl.runtime.judging import JudgeStats

        problems: dict[int, list[tuple[str | None, str]]] = {}
        columns, texts = self.reader.read(chunk, problems)
        n = len(texts)
        invalid = col.InvalidValues(keep=None if self.job.strict else col.FIRST_ROWS)
        judging = self.program.judging
        kept, judging.stats = judging.stats, JudgeStats()  # this chunk's, for the summary
        try:
            values, applies = evaluate_rows(self.program, texts, columns, problems, self.job.strict,
                                            invalid)
        finally:
            judges, judging.stats = judging.stats, kept
            kept.merge(judges)
        bad = np.zeros(n, dtype=bool)
        if problems:
            bad[list(problems)] = True
        totals = self._totals(values, applies, bad, columns)
        messages = [[self._message(chunk, i, fieldname, message) for fieldname, message in problems[i]]
                    for i in sorted(problems)[:SHOWN_PROBLEMS]]
        errors = {i: "; ".join(m if f is None else f"column `{f}`: {m}" for f, m in problems[i])
                  for i in sorted(problems)}
        output = getattr(self, f"_format_{self.job.output_format}")(chunk, values, applies, bad,
                                                                    errors, texts)
        if self.job.strict:
            invalid.keep_first()  # only the first rows travel back to the summary
        return ChunkResult(chunk.first_row, n, chunk.size, output, len(problems), messages, totals,
                           invalid, judges)

    def _totals(self, values, applies, bad, columns) -> Totals:
        levels = len(self.levels)
        rules = values[:, 1 + levels:]
        if bad.any():
            good = ~bad
            values, rules, applies = values[good], rules[good], applies[good]
        missing = np.array([_count_missing(columns[name], bad) for name in self.inputs],
                           dtype=np.int64)
        return Totals(scored=len(values), reward=float(values[:, 0].sum(dtype=np.float64)),
                      levels=values[:, 1:1 + levels].sum(0, dtype=np.float64),
                      applied=applies.sum(0, dtype=np.int64),
                      truth=np.where(applies, rules, 0.0).sum(0, dtype=np.float64),
                      missing=missing)

    def _message(self, chunk: Chunk, i: int, fieldname: str | None, message: str) -> str:
        row = chunk.first_row + i
        # jsonl, csv: the line first, as editors expect; the row is what the output carries
        where = f"{self.job.source}:{self.reader.line(chunk, i)}:" if self.with_line else f"{self.job.source}:"
        if fieldname is None:
            return f"{where} {message}" if self.with_line else f"{where} row {row}: {message}"
        return f"{where} row {row}, column `{fieldname}`: {message}"

    # -- formatting --
    def _ids(self, chunk: Chunk, n: int) -> list[list[str]]:
        ids = [list(map(str, range(chunk.first_row, chunk.first_row + n)))]
        if self.with_line:
            lines = (chunk.line_numbers if chunk.line_numbers is not None
                     else range(chunk.first_line, chunk.first_line + n))
            ids.append(list(map(str, lines)))
        return ids

    def _format_rows(self, chunk: Chunk, values, applies, bad, errors: dict, error_row) -> str:
        """Every row through one template (jsonl, csv); bad rows through ``error_row``."""
        n = len(values)
        scores = 1 + len(self.levels)
        rounded = np.round(values.astype(np.float64), 6)
        rounded[bad] = 0.0  # written as an error row instead
        rule_values = rounded[:, scores:]
        rule_values[~applies] = _NOT_APPLICABLE
        ids = self._ids(chunk, n)
        cells = np.empty((n, len(ids) + rounded.shape[1]), dtype=object)
        for k, column in enumerate(ids):
            cells[:, k] = column
        first = len(ids)
        # map() over a dict's lookup runs in C: one cached text per number
        cells[:, first:first + scores] = np.array(
            list(map(self._score_texts.__getitem__, rounded[:, :scores].ravel().tolist())),
            dtype=object).reshape(n, scores)
        if self.rules:
            cells[:, first + scores:] = np.array(
                list(map(self._rule_texts.__getitem__, rule_values.ravel().tolist())),
                dtype=object).reshape(n, len(self.rules))
        flat = cells.ravel().tolist()
        width = cells.shape[1]
        template = self._row_template()
        parts = []
        start = 0
        for i in [*errors, n]:  # runs of good rows in one %-formatting each
            if i > start:
                parts.append((template * (i - start)) % tuple(flat[start * width:i * width]))
            if i < n:
                parts.append(error_row(chunk, i, errors[i]))
            start = i + 1
        return "".join(parts)

    def _format_jsonl(self, chunk, values, applies, bad, errors, texts) -> str:
        return self._format_rows(chunk, values, applies, bad, errors, self._error_json)

    def _format_csv(self, chunk, values, applies, bad, errors, texts) -> str:
        return self._format_rows(chunk, values, applies, bad, errors, self._error_csv)

    def _error_json(self, chunk: Chunk, i: int, error: str) -> str:
        row = {"row": chunk.first_row + i}
        if self.with_line:
            row["line"] = self.reader.line(chunk, i)
        row.update(self._null_scores)
        row["error"] = error
        return json.dumps(row) + "\n"

    def _error_csv(self, chunk: Chunk, i: int, error: str) -> str:
        ids = f"{chunk.first_row + i}" + (f",{self.reader.line(chunk, i)}" if self.with_line else "")
        return f"{ids}{',' * len(self._keys)},{_csv_field(error)}\n"

    def _format_parquet(self, chunk, values, applies, bad, errors, texts):
        import pyarrow as pa

        n = len(values)
        arrays = [pa.array(np.arange(chunk.first_row, chunk.first_row + n, dtype=np.int64))]
        if self.with_line:
            lines = (np.array(chunk.line_numbers, dtype=np.int64) if chunk.line_numbers is not None
                     else np.arange(chunk.first_line, chunk.first_line + n, dtype=np.int64))
            arrays.append(pa.array(lines))
        scores = 1 + len(self.levels)
        for k in range(values.shape[1]):
            null = bad if k < scores else bad | ~applies[:, k - scores]
            arrays.append(pa.array(values[:, k], mask=null if null.any() else None))
        error_texts = [None] * n
        for i, error in errors.items():
            error_texts[i] = error
        arrays.append(pa.array(error_texts, type=pa.string()))
        return pa.RecordBatch.from_arrays(arrays, schema=self.parquet_schema())

    def _format_text(self, chunk, values, applies, bad, errors, texts) -> str:
        lines = []
        levels = len(self.levels)
        for i in range(len(values)):
            row = chunk.first_row + i
            if i in errors:
                lines.append(f"[{row}] error: {errors[i]}")
                continue
            numbers = values[i]
            lines += text_lines(
                row, texts[i], float(numbers[0]),
                {name: float(numbers[1 + k]) for k, name in enumerate(self.levels)},
                {name: float(numbers[1 + levels + k]) if applies[i, k] else None
                 for k, name in enumerate(self.rules)})
        return "".join(line + "\n" for line in lines)


def evaluate_rows(program, texts: list[str], columns: dict, problems: dict, strict: bool = False,
                  invalid=None) -> tuple[np.ndarray, np.ndarray]:
    """Score rows whose completions are already texts. Returns ``(values, applies)``: per row the
    reward, the level scores and the rule truths (float32, one column each, in that order) and
    whether each rule applied. A wrong column value does not raise: it is added to ``problems``
    (row -> ``[(column, message)]``) and that row scores as invalid; with ``strict``, so is a
    missing or non-finite value (counted in ``invalid``, a ``columns.InvalidValues``)."""
    import torch

    from kdsl.runtime import columns as col
    from kdsl.runtime import execute

    if invalid is None:
        invalid = col.InvalidValues(keep=None if strict else col.FIRST_ROWS)
    column_problems: list[tuple[int, str, str]] = []
    with torch.no_grad():
        out = execute.run(program.module, texts, columns, problems=column_problems,
                          evaluate=getattr(program, "_evaluate", None),
                          similarity_model=getattr(program, "similarity_model", None),
                          invalid=invalid, judging=getattr(program, "judging", None))
    for i, name, message in column_problems:
        problems.setdefault(i, []).append((name, message))
    if strict:
        for i, found in invalid.by_row().items():
            for name, reason in found:
                problems.setdefault(i, []).append((name, f"{reason} (--strict)"))
    levels, rules = program.level_names, program.rule_names
    values = torch.stack([out["reward"]] + [out[f"level.{name}"] for name in levels]
                         + [out[f"rule.{name}"] for name in rules], 1).to(torch.float32).numpy()
    applies = (torch.stack([out[f"applies.{name}"] for name in rules], 1).numpy()
               if rules else np.zeros((len(texts), 0), dtype=bool))
    return values, applies


def _count_missing(column: list, bad: np.ndarray) -> int:
    missing = column.count(None)
    if bad.any():
        missing -= sum(1 for i in np.flatnonzero(bad) if column[i] is None)
    return missing


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


# ---- writing ------------------------------------------------------------------------------------
class _TextSink:
    def __init__(self, stream, header: str = "", owned: bool = False):
        self.stream = stream
        self.owned = owned  # a file opened for this run, closed with it; not stdout
        if header:
            stream.write(header)

    def write(self, output) -> None:
        self.stream.write(output)

    def close(self) -> None:
        if self.owned:
            self.stream.close()


class _ParquetSink:
    def __init__(self, path: Path, schema):
        import pyarrow.parquet as pq

        self.writer = pq.ParquetWriter(path, schema)

    def write(self, output) -> None:
        if output.num_rows:
            self.writer.write_batch(output)

    def close(self) -> None:
        self.writer.close()


# ---- workers ------------------------------------------------------------------------------------
_parent_program: tuple[str, object] | None = None  # inherited by forked workers
_worker: ChunkScorer | None = None


def _start_worker(job: Job) -> None:
    global _worker
    import torch

    torch.set_num_threads(1)  # the workers already fill the cores
    # Ctrl-C is for the parent, which stops handing out chunks and shuts the workers down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _parent_program is not None and _parent_program[0] == job.spec:
        program = _parent_program[1]
    else:  # a spawned worker compiles the spec itself
        import kdsl

        program = kdsl.load(job.spec)
    _worker = ChunkScorer(program, job)


def _score_in_worker(chunk: Chunk) -> ChunkResult:
    return _worker.score(chunk)


# ---- the whole file -----------------------------------------------------------------------------
@dataclass
class _Progress:
    """A rich progress bar on a terminal, refreshed as chunks finish."""

    stream: object
    total: int  # what the source's chunks count (Source.unit: bytes or rows)
    bar: object = None
    task: object = None
    last: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def start(self) -> None:
        from rich.console import Console as RichConsole
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        # Refreshed by hand when a chunk finishes, so no refresh thread runs beside the workers.
        self.bar = Progress(TextColumn("scoring"), BarColumn(bar_width=24), TaskProgressColumn(),
                            TextColumn("{task.fields[rows]:>11,} rows {task.fields[rate]:>7,.0f}/s"),
                            TimeRemainingColumn(), console=RichConsole(file=self.stream),
                            auto_refresh=False)
        self.bar.start()
        self.task = self.bar.add_task("scoring", total=self.total, rows=0, rate=0.0)

    def advance(self, amount: int, rows: int, final: bool = False) -> None:
        now = time.perf_counter()
        rate = rows / max(now - self.started, 1e-9)
        self.bar.update(self.task, advance=amount, rows=rows, rate=rate)
        if final or now - self.last > 0.1:
            self.bar.refresh()
            self.last = now

    def stop(self) -> None:
        self.bar.stop()


def score_file(program, data: str | Path, *, out: str | Path | None = None,
               stream=None, output: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
               workers: int = 0, report: Callable[[str], None] | None = None,
               progress=None, spec: str | Path | None = None, strict: bool = False,
               engine: str = "local", address: str | None = None) -> Summary:
    """Score every row of ``data`` (a source ``kdsl.io.rows`` reads) with ``program``, writing per-row results to
    ``out`` (format from its suffix) or, without ``out``, to ``stream`` as ``output`` ("jsonl" or
    "text"). Bad rows are passed to ``report`` (the first ``SHOWN_PROBLEMS``), counted and written
    with an error. ``workers``: processes to score in (0: one per core for large files, else 1).
    ``progress``: a terminal stream for a progress bar, or None. ``spec``: the spec's path, which
    worker processes that cannot inherit ``program`` compile again. Missing and non-finite column
    values are counted per column in the summary; ``strict`` makes each row holding one a bad
    row. ``engine="ray"`` scores the chunks on Ray actors through Ray Data (``address``: the
    cluster to join, ``"auto"`` for the one this machine belongs to; default: a local one) and
    writes the same output."""
    global _parent_program
    if engine not in ("local", "ray"):
        raise KdslError(f"--engine takes local or ray, not {engine}")
    out_format = output_format(out) if out is not None else (output or "jsonl")
    source = open_source(data, program.input_names)
    job = Job(spec=str(spec or program.ir.file), source=source.name, input_format=source.format,
              output_format=out_format, strict=strict)
    if program.module.NEEDS_TOKENIZER and not os.environ.get("KDSL_TOKENIZER"):
        raise KdslError(f"{program.name} counts tokens (`length(..., tokens)`), which needs a "
                        "tokenizer: give --tokenizer PATH (or set KDSL_TOKENIZER)")
    scorer = ChunkScorer(program, job)
    report = report or (lambda message: print(message, file=sys.stderr))
    started = time.perf_counter()

    total = source.total
    large = total >= (_PARALLEL_MIN_BYTES if source.unit == "bytes" else _PARALLEL_MIN_ROWS)
    if workers <= 0:
        workers = available_cores() if large else 1
    # Worker processes and Ray actors read their own chunks of a jsonl file.
    chunks = source.chunks(batch_size, keep_data=workers == 1 and engine == "local")

    target = Path(out) if out is not None else None
    partial = target.with_name(f".{target.name}.partial") if target is not None else None
    sink = None
    bar = None
    totals = Totals.zero(len(scorer.levels), len(scorer.rules), len(scorer.inputs))
    from kdsl.runtime.columns import InvalidValues
    from kdsl.runtime.judging import JudgeStats

    invalid = InvalidValues()
    judges = JudgeStats()
    rows = bad = shown = 0

    def start_bar() -> None:
        nonlocal bar
        if progress is not None:
            bar = _Progress(progress, total)
            bar.start()

    def finish(result: ChunkResult) -> None:
        nonlocal rows, bad, shown
        sink.write(result.output)
        rows += result.rows
        bad += result.bad
        totals.add(result.totals)
        if result.invalid:
            invalid.merge(result.invalid, result.first_row)
        if result.judges is not None:
            judges.merge(result.judges)
        for messages in result.messages[:SHOWN_PROBLEMS - shown]:
            for message in messages:
                report(message)
            shown += 1
        if bar is not None:
            bar.advance(result.size, rows)

    try:
        if target is None:
            sink = _TextSink(stream if stream is not None else sys.stdout)
        elif out_format == "parquet":
            sink = _ParquetSink(partial, scorer.parquet_schema())
        else:
            sink = _TextSink(open(partial, "w", encoding="utf-8", newline=""),
                             scorer.csv_header() if out_format == "csv" else "", owned=True)
        if engine == "ray":
            from kdsl.integrations.ray_engine import score_on_ray

            score_on_ray(program, job, chunks, workers, finish, start_bar, address)
        elif workers == 1:
            start_bar()
            for chunk in chunks:
                finish(scorer.score(chunk))
        else:
            _parent_program = (job.spec, program)
            _score_in_pool(job, chunks, workers, finish, start_bar)
        if bar is not None:
            bar.advance(0, rows, final=True)
        sink.close()
        sink = None
        if partial is not None:
            os.replace(partial, target)
    except BrokenPipeError:  # stdout closed by its reader: the caller decides what that means
        raise
    except OSError as err:
        raise KdslError(f"cannot write {target}: {err.strerror or err}" if target is not None
                        else f"cannot write the results: {err}") from None
    finally:
        _parent_program = None
        if bar is not None:
            bar.stop()
        if sink is not None:
            sink.close()
        if partial is not None and partial.exists():
            partial.unlink()

    if bad > shown:
        report(f"{source.name}: {bad - shown:,} more bad rows not shown ({bad:,} in all); each is in the "
               "output with its `error`")
    summary = _summary(scorer, source.name, rows, bad, totals, time.perf_counter() - started, invalid)
    summary.judges = judges
    return summary


def _summary(scorer: ChunkScorer, source: str, rows: int, bad: int, totals: Totals,
             seconds: float, invalid) -> Summary:
    def mean(total, count):
        return None if count == 0 else round(float(total) / count, 6)

    return Summary(
        source=source, rows=rows, scored=totals.scored, bad=bad, seconds=seconds,
        mean_reward=mean(totals.reward, totals.scored),
        levels={name: mean(totals.levels[k], totals.scored) for k, name in enumerate(scorer.levels)},
        rules={name: {"level": scorer.rule_levels[name], "applied": int(totals.applied[k]),
                      "rate": mean(totals.truth[k], totals.applied[k])}
               for k, name in enumerate(scorer.rules)},
        missing={name: int(totals.missing[k]) for k, name in enumerate(scorer.inputs)},
        invalid=invalid)


def _score_in_pool(job: Job, chunks: Iterator[Chunk], workers: int,
                   finish: Callable[[ChunkResult], None], started: Callable[[], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # Forked workers inherit the compiled program; elsewhere each compiles the spec again.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    in_flight: deque = deque()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(job,)) as pool:
        try:
            for chunk in chunks:
                in_flight.append(pool.submit(_score_in_worker, chunk))
                if len(in_flight) == 1:  # the workers are forked by now: threads may start
                    started()
                # Two chunks a worker: each has the next one queued while the parent writes.
                while len(in_flight) >= 2 * workers:
                    finish(in_flight.popleft().result())
            while in_flight:
                finish(in_flight.popleft().result())
        except BrokenProcessPool:
            raise KdslError(f"a worker process scoring {job.source} stopped unexpectedly (out of "
                            "memory?); try a smaller --batch-size or --workers 1") from None
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
