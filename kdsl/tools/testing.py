"""Stage 6: labelled examples run against a spec (``kdsl test`` and the pytest plugin).

A *case* is one completion, the dataset values it is scored with, and expectations about the
result. Cases come from ``example`` blocks inside a spec and from ``*.kdtest.jsonl`` files beside
it (``landcover.kd`` reads ``landcover.kdtest.jsonl`` and ``landcover.*.kdtest.jsonl``), one case
a line::

    {"name": "water, argued", "completion": "<answer>Water</answer>",
     "columns": {"label": "Water", "sr": [0.01, 0.02, 0.04, 0.01, 0.005, 0.02, 0.02]},
     "expect": ["correct", "not urban_claim", "skip vegetation_claim", "reward >= 3",
                "level.knowledge == 1 +- 0.01", "reward > \\"no reasoning\\""]}

Input columns may also sit at the top level of the object instead of under ``columns``; a raster
value is ``{"fixture": "patch.npy"}`` (a numpy file beside the jsonl file). Expectations are
written as in an ``example`` block.

All cases of a spec are scored in one batch by the compiled program, so a thousand examples take
milliseconds after the spec is compiled. What each expectation means:

- ``NAME``: the rule applies and holds fully (truth 1); ``not NAME``: it applies and does not
  hold fully; ``skip NAME``: it does not apply.
- ``TARGET OP NUMBER [+- TOL]`` with TARGET ``reward``, ``level.NAME``, ``rule.NAME``, ``let.NAME``
  or a bare name (rule, then level, then let). ``==``, ``!=``, ``<=``, ``>=`` allow float noise
  (1e-6) unless a tolerance is given; ``<`` and ``>`` are strict unless a tolerance is given.
- ``TARGET OP "other example"``: compares with the same target of another case of the spec, e.g.
  ``reward < "well argued"`` (this completion scores lower than that one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kdsl.errors import Diagnostic, KdslDataError, KdslError, Span
from kdsl.frontend import ast
from kdsl.io.rows import COMPLETION, completion_problem, completion_text

NOISE = 1e-6
JSONL_SUFFIX = ".kdtest.jsonl"
_RESERVED = {"name", "completion", "columns", "expect"}


# ---- cases ------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    spec: str  # the spec file the case tests
    file: str  # where the case is written (the spec, or a .kdtest.jsonl file)
    line: int
    completion: str
    columns: dict
    expectations: tuple[ast.Expectation, ...]

    @property
    def id(self) -> str:
        return f"{Path(self.spec).name}::{self.name}"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def expectation_text(e: ast.Expectation) -> str:
    target = ".".join(e.target)
    if e.kind == "holds":
        return target
    if e.kind == "violated":
        return f"not {target}"
    if e.kind == "inapplicable":
        return f"skip {target}"
    if e.kind in ("relative", "judge"):
        return f'{target} {e.op} "{e.other}"'
    tolerance = f" +- {e.tolerance:g}" if e.tolerance is not None else ""
    return f"{target} {e.op} {e.value:g}{tolerance}"


def _fixture(path: str, base: Path, where: str, name: str):
    import numpy as np

    full = (base / path).resolve()
    if full.suffix != ".npy":
        raise KdslError(f"{where}: column `{name}`: fixture {path} must be a .npy file")
    try:
        return np.load(full, allow_pickle=False)  # never unpickle: fixtures may come from anyone
    except (OSError, ValueError) as err:
        raise KdslError(f"{where}: column `{name}`: cannot read fixture {full}: {err}") from None


def _example_value(value: ast.ExampleValue, base: Path, where: str, name: str):
    if value.kind == "list":
        return [_example_value(v, base, where, name) for v in value.value]
    if value.kind == "fixture":
        return _fixture(value.value, base, where, name)
    return value.value


def spec_examples(program) -> list:
    """The ``example`` blocks of a program's own spec, read from its text (they are test data,
    not part of the program, so the IR does not hold them)."""
    from kdsl.frontend.parser import parse

    ir = program.ir
    return list(parse(ir.sources[ir.file], ir.file).examples) if ir.file in ir.sources else []


def spec_cases(program, spec_path: str) -> list[Case]:
    """The ``example`` blocks of a compiled program's spec."""
    base = Path(spec_path).parent
    cases = []
    for example in spec_examples(program):
        where = f"{spec_path}:{example.span.line}"
        completion, columns = "", {}
        for f in example.fields:
            value = _example_value(f.value, base, where, f.name)
            if f.name == "completion":
                completion = value if isinstance(value, str) else json.dumps(value)
            else:
                columns[f.name] = value
        cases.append(Case(example.title, spec_path, spec_path, example.span.line, completion, columns,
                          example.expectations))
    return cases


def parse_expectation(text: str, where: Span) -> ast.Expectation:
    """One expectation written as in an ``example`` block, e.g. ``"reward >= 1"``."""
    from kdsl.frontend.parser import parse_expectation as parse_one

    if not isinstance(text, str) or "\n" in text or "\r" in text:
        raise KdslError(f"an expectation must be one line of text such as \"reward >= 1\", not "
                        f"{json.dumps(text)}", where)
    try:
        return parse_one(text)
    except KdslError as err:
        raise KdslError(f"cannot read expectation {json.dumps(text)}: {err.message}", where) from None


def jsonl_cases(path: str | Path, spec_path: str) -> list[Case]:
    """Cases of a ``.kdtest.jsonl`` file; every bad line is reported (file, line, field)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise KdslError(f"cannot read {path}: {err.strerror or err}", Span(str(path))) from None
    cases, problems, names = [], [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = Span(str(path), number, 1)
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(Diagnostic("error", f"not a JSON object ({err.msg})", where))
            continue
        if not isinstance(row, dict):
            problems.append(Diagnostic("error", "each line must be a JSON object", where))
            continue
        name = row.get("name", f"line {number}")
        if not isinstance(name, str) or name in names:
            problems.append(Diagnostic("error", f"field `name`: {json.dumps(name)} must be a string "
                                       "that no other case of the file uses", where))
            continue
        names.add(name)
        # A case may leave the completion out (a case about input columns only: the completion is
        # empty, as in an `example` block); one that is there is read as `kdsl score` reads it.
        completion = row.get(COMPLETION, "")
        problem = completion_problem(completion)
        if problem is not None:  # as kdsl score and kdsl explain say it
            problems.append(Diagnostic("error", f"column `completion`: {problem}", where))
            continue
        completion = completion_text(completion)
        columns = row.get("columns", {})
        if not isinstance(columns, dict):
            problems.append(Diagnostic("error", "field `columns` must be an object", where))
            continue
        columns = {**{k: v for k, v in row.items() if k not in _RESERVED}, **columns}
        expect = row.get("expect", [])
        if isinstance(expect, str):
            expect = [expect]
        try:
            for key, value in columns.items():
                if isinstance(value, dict) and set(value) == {"fixture"}:
                    columns[key] = _fixture(value["fixture"], path.parent, f"{path}:{number}", key)
            expectations = tuple(parse_expectation(e, where) for e in expect)
        except KdslError as err:
            problems.append(Diagnostic("error", err.message, where))
            continue
        cases.append(Case(name, spec_path, str(path), number, completion, columns, expectations))
    if problems:
        raise KdslError(problems)
    return cases


EXAMPLE_BLOCK = re.compile(r"^\s*example\s+\"", re.MULTILINE)


def has_example_blocks(spec_text: str) -> bool:
    """Whether a spec's text holds `example` blocks (found without parsing it)."""
    return EXAMPLE_BLOCK.search(spec_text) is not None


def companion_files(spec_path: str | Path) -> list[Path]:
    """``NAME.kdtest.jsonl`` and ``NAME.*.kdtest.jsonl`` beside ``NAME.kd``."""
    spec_path = Path(spec_path)
    stem = spec_path.name[:-3] if spec_path.name.endswith(".kd") else spec_path.stem
    found = [spec_path.with_name(stem + JSONL_SUFFIX)]
    found += sorted(spec_path.parent.glob(f"{glob_escape(stem)}.*{JSONL_SUFFIX}"))
    return [p for p in dict.fromkeys(found) if p.is_file()]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def spec_for_jsonl(path: str | Path) -> Path:
    """The spec a ``.kdtest.jsonl`` file tests: ``a.kdtest.jsonl`` and ``a.x.kdtest.jsonl`` test
    ``a.kd`` in the same folder."""
    path = Path(path)
    stem = path.name[: -len(JSONL_SUFFIX)]
    candidates = [stem] + ([stem.split(".")[0]] if "." in stem else [])
    for candidate in candidates:
        spec = path.with_name(candidate + ".kd")
        if spec.is_file():
            return spec
    raise KdslError(f"{path}: no spec for these cases: expected {path.with_name(candidates[-1] + '.kd')}",
                    Span(str(path)))


# ---- running ------------------------------------------------------------------------------------

@dataclass
class Check:
    expectation: str
    passed: bool
    observed: str


@dataclass
class Outcome:
    case: Case
    checks: list[Check] = field(default_factory=list)
    observed: dict = field(default_factory=dict)
    error: str | None = None
    # columns of the case whose value was invalid (missing, not finite): `(column, reason)`
    invalid: list[tuple[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass
class Suite:
    """A spec, its compiled program, its cases and, once run, their outcomes."""

    spec: str
    program: object
    cases: list[Case]
    outcomes: list[Outcome] = field(default_factory=list)


RECORDED_SUFFIX = ".kdjudge.jsonl"


def recorded_answers_path(spec_path: str | Path) -> Path:
    """Where ``kdsl test --record`` keeps a spec's judges' answers: ``NAME.kdjudge.jsonl``."""
    path = Path(spec_path)
    return path.with_name(path.stem + RECORDED_SUFFIX)


def _play_recorded_answers(program, spec_path: str) -> None:
    """Models the spec calls that are not bound answer from the recorded file, if there is one."""
    from kdsl.runtime.judging import Recorded, read_recorded

    unbound = [name for name in program.ir.models if not program.judging.is_bound(name)]
    path = recorded_answers_path(spec_path)
    if unbound and path.is_file():
        entries = read_recorded(path)
        program.bind(**{name: Recorded(name, entries) for name in unbound})


def load_suite(spec_path: str | Path, extra_jsonl: Sequence[str | Path] = (),
               record: bool = False) -> Suite:
    """A spec's cases, with its program. Judges and reward models that are not bound answer
    from the spec's recorded answers (``record``: they must be bound, and every answer used is
    kept, for ``write_recorded_answers``)."""
    import kdsl

    spec_path = str(spec_path)
    program = kdsl.load(spec_path)
    if record:
        unbound = [name for name in program.ir.models if not program.judging.is_bound(name)]
        if unbound:
            raise KdslError(f"--record asks the spec's models and keeps their answers: bind "
                            f"{', '.join(f'`{n}`' for n in unbound)} with --model-for NAME=PATH_OR_URL",
                            Span(spec_path))
        program.judging.recording = {}
        program.judging.eager = True  # every case's answers, for mutants and later edits too
    else:
        _play_recorded_answers(program, spec_path)
    cases = spec_cases(program, spec_path)
    for path in [*companion_files(spec_path), *map(Path, extra_jsonl)]:
        cases += jsonl_cases(path, spec_path)
    names: dict[str, Case] = {}
    duplicates = []
    for case in cases:
        if case.name in names:
            duplicates.append(Diagnostic("error", f"two cases are called \"{case.name}\" (the other is at "
                                         f"{names[case.name].where})", Span(case.file, case.line, 1)))
        names[case.name] = case
    for case in cases:
        for e in case.expectations:
            if e.kind == "relative" and e.other not in names:
                duplicates.append(Diagnostic("error", f"\"{case.name}\" is compared with \"{e.other}\", "
                                             "which is not a case of this spec", Span(case.file, case.line, 1)))
    problems = duplicates + _target_problems(program, cases)
    if problems:
        raise KdslError(problems)
    return Suite(spec_path, program, cases)


def _target_problems(program, cases: Iterable[Case]) -> list[Diagnostic]:
    """Names in jsonl expectations must exist (spec examples are checked by the checker)."""
    rules = {r.name for r in program.ir.rules}
    levels = {lv.name for lv in program.ir.levels}
    lets = set(program.ir.lets)
    inputs = set(program.input_names)
    problems = []
    from kdsl.errors import did_you_mean

    for case in cases:
        if case.file == case.spec:
            continue
        where = Span(case.file, case.line, 1)
        for column in case.columns:
            if column not in inputs:
                problems.append(Diagnostic("error", f"case \"{case.name}\" sets `{column}`, which is not "
                                           f"an input of the spec{did_you_mean(column, inputs)}", where))
        for e in case.expectations:
            if e.kind == "judge":
                node = program.ir.lets.get(e.target[1])
                choices = [c.casefold() for c in node.attr("choices")] if node is not None and \
                    node.op == "rubric" else None
                if choices is None or e.other.strip().casefold() not in choices:
                    problems.append(Diagnostic("error", f"case \"{case.name}\" expects `judge."
                                               f"{e.target[1]}` to be \"{e.other}\", but that is not "
                                               "a let holding a rubric item with that choice", where))
                continue
            kind, name = _target_kind(e.target, rules, levels, lets)
            if kind is None:
                pool = rules | levels | lets
                problems.append(Diagnostic("error", f"case \"{case.name}\" expects `{'.'.join(e.target)}`, "
                                           f"which is not a rule, level or let{did_you_mean(name, pool)}",
                                           where))
            elif e.kind in ("holds", "violated", "inapplicable") and kind != "rule":
                problems.append(Diagnostic("error", f"`{name}` is not a rule; compare it instead, e.g. "
                                           f"`{name} >= 0.5`", where))
    return problems


def _target_kind(target: tuple[str, ...], rules, levels, lets) -> tuple[str | None, str]:
    head, *rest = target
    if head == "reward" and not rest:
        return "reward", "reward"
    if head in ("level", "rule", "let") and len(rest) == 1:
        pool = {"level": levels, "rule": rules, "let": lets}[head]
        return (head if rest[0] in pool else None), rest[0]
    if len(target) > 1:
        return None, ".".join(target)
    for kind, pool in (("rule", rules), ("level", levels), ("let", lets)):
        if head in pool:
            return kind, head
    return None, head


def _score(program, cases: Sequence[Case], invalid=None):
    names = program.input_names
    columns = {name: [c.columns.get(name) for c in cases] for name in names}
    return program.score([c.completion for c in cases], invalid=invalid, **columns)


def _observe(program, scores, count: int) -> list[dict]:
    """Plain Python values per case: one host transfer per tensor, not per case."""
    reward = scores.reward.tolist()
    levels = {k: v.tolist() for k, v in scores.levels.items()}
    truth = {k: v.tolist() for k, v in scores.rules.items()}
    applies = {k: v.tolist() for k, v in scores.applies.items()}
    lets = {k: v.tolist() for k, v in scores.values.items() if v.dim() == 1}
    valid = {k: scores.valid[k].tolist() for k in lets if k in scores.valid}
    out = []
    for i in range(count):
        out.append({
            "reward": reward[i],
            "levels": {k: v[i] for k, v in levels.items()},
            "rules": {k: (v[i] if applies[k][i] else None) for k, v in truth.items()},
            "lets": {k: (v[i] if valid.get(k, [True] * count)[i] else None) for k, v in lets.items()},
        })
    return out


def run_suite(suite: Suite, strict: bool = False) -> Suite:
    """Score every case (one batch; cases whose data cannot be used are reported one by one) and
    check its expectations. A case whose columns hold a missing or non-finite value is scored
    with that value invalid, and the outcome says so; ``strict`` makes such a case an error."""
    from kdsl.runtime.columns import InvalidValues

    program, cases = suite.program, suite.cases
    observed: list[dict | None] = [None] * len(cases)
    errors: list[str | None] = [None] * len(cases)
    found: dict[int, list[tuple[str, str]]] = {}
    if cases:
        good = list(range(len(cases)))
        invalid = InvalidValues(keep=None)
        try:
            batch = _observe(program, _score(program, cases, invalid), len(cases))
        except KdslDataError:
            good = []
            for i, case in enumerate(cases):
                try:
                    _score(program, [case])
                    good.append(i)
                except KdslDataError as err:
                    errors[i] = f"{case.where}: {err.message.replace('row 0, ', '')}"
            invalid = InvalidValues(keep=None)
            batch = _observe(program, _score(program, [cases[i] for i in good], invalid),
                             len(good)) if good else []
        for i, obs in zip(good, batch):
            observed[i] = obs
        found = {good[row]: values for row, values in invalid.by_row().items()}
    by_name = {c.name: obs for c, obs in zip(cases, observed)}
    choices = {name: node.attr("choices") for name, node in program.ir.lets.items()
               if node.op == "rubric"}
    outcomes = []
    for index, (case, obs, error) in enumerate(zip(cases, observed, errors)):
        invalid_here = found.get(index, [])
        if error is None and strict and invalid_here:
            error = f"{case.where}: " + "; ".join(f"column `{column}`: {reason}"
                                                  for column, reason in invalid_here) + " (--strict)"
        if error is not None:
            outcomes.append(Outcome(case, error=error, invalid=invalid_here))
            continue
        checks = [_check(e, obs, by_name, choices) for e in case.expectations]
        outcomes.append(Outcome(case, checks, obs, invalid=invalid_here))
    suite.outcomes = outcomes
    return suite


def _value(target: tuple[str, ...], obs: dict) -> tuple[float | None, str]:
    """The observed value of an expectation's target, or None with the reason."""
    kind, name = _target_kind(target, set(obs["rules"]), set(obs["levels"]), set(obs["lets"]))
    if kind == "reward":
        return obs["reward"], ""
    if kind == "level":
        return obs["levels"][name], ""
    if kind == "rule":
        value = obs["rules"][name]
        return value, "" if value is not None else f"rule `{name}` did not apply"
    if kind == "let":
        value = obs["lets"].get(name)
        return value, "" if value is not None else f"let `{name}` is invalid"
    return None, f"`{'.'.join(target)}` is not a rule, level or let"


def compare(op: str, x: float, y: float, tolerance: float | None) -> bool:
    t = NOISE if tolerance is None else tolerance
    if op == "==":
        return abs(x - y) <= t
    if op == "!=":
        return abs(x - y) > t
    if op == "<=":
        return x <= y + t
    if op == ">=":
        return x >= y - t
    strict = 0.0 if tolerance is None else tolerance
    return x < y + strict if op == "<" else x > y - strict


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _check(e: ast.Expectation, obs: dict, by_name: dict, choices: dict) -> Check:
    text = expectation_text(e)
    if e.kind == "judge":
        name, scale = e.target[1], choices[e.target[1]]
        grade = obs["lets"].get(name)
        if grade is None:
            return Check(text, False, f"`{name}` has no grade (the judge was not asked, or gave "
                                      "no choice: `kdsl explain` shows why)")
        given = scale[round(grade * (len(scale) - 1))]
        wanted = [c.casefold() for c in scale].index(e.other.strip().casefold()) / (len(scale) - 1)
        return Check(text, compare(e.op, grade, wanted, None), f'judge.{name} is "{given}"')
    if e.kind in ("holds", "violated", "inapplicable"):
        name = e.target[-1]
        truth = obs["rules"].get(name)
        seen = "did not apply" if truth is None else f"scored {_fmt(truth)}"
        if e.kind == "holds":
            ok = truth is not None and truth >= 1 - NOISE
        elif e.kind == "violated":
            ok = truth is not None and truth < 1 - NOISE
        else:
            ok = truth is None
        return Check(text, ok, f"rule `{name}` {seen}")
    x, why = _value(e.target, obs)
    label = ".".join(e.target)
    if x is None:
        return Check(text, False, why)
    if e.kind == "relative":
        other = by_name.get(e.other)
        if other is None:
            return Check(text, False, f"\"{e.other}\" could not be scored")
        y, why = _value(e.target, other)
        if y is None:
            return Check(text, False, f"in \"{e.other}\", {why}")
        return Check(text, compare(e.op, x, y, None),
                     f"{label} is {_fmt(x)}; in \"{e.other}\" it is {_fmt(y)}")
    return Check(text, compare(e.op, x, float(e.value), e.tolerance), f"{label} is {_fmt(x)}")


def select(cases: Sequence[Case], pattern: str | None) -> list[Case]:
    """Cases whose id contains ``pattern`` (case-insensitive); ``not X`` inverts. Cases that the
    selected ones compare with are kept for scoring but not reported."""
    if not pattern:
        return list(cases)
    negate = pattern.startswith("not ")
    needle = (pattern[4:] if negate else pattern).strip().lower()
    return [c for c in cases if (needle in c.id.lower()) != negate]


# ---- coverage -----------------------------------------------------------------------------------

@dataclass
class RuleCoverage:
    name: str
    level: str
    conditional: bool  # has a `when`, so "does not apply" is a behaviour worth an example too
    applied: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def goals(self) -> list[tuple[str, bool]]:
        goals = [("applies", self.applied > 0), ("holds", self.passed > 0), ("fails", self.failed > 0)]
        if self.conditional:
            goals.append(("does not apply", self.skipped > 0))
        return goals


@dataclass
class Coverage:
    rules: list[RuleCoverage]
    table_rows: dict[str, list[int]]  # table -> hits per row
    table_lines: dict[str, list[int]]
    note: str = ""

    @property
    def percent(self) -> float:
        goals = [ok for r in self.rules for _, ok in r.goals]
        goals += [hits > 0 for rows in self.table_rows.values() for hits in rows]
        return 100.0 * sum(goals) / len(goals) if goals else 100.0


def coverage(suite: Suite) -> Coverage:
    """Which rules the cases made apply, hold and fail, and which table rows they reached."""
    rules = {r.name: RuleCoverage(r.name, r.level, r.when is not None) for r in suite.program.ir.rules}
    for outcome in suite.outcomes:
        if outcome.error is not None:
            continue
        for name, truth in outcome.observed["rules"].items():
            r = rules[name]
            if truth is None:
                r.skipped += 1
            else:
                r.applied += 1
                if truth >= 1 - NOISE:
                    r.passed += 1
                else:
                    r.failed += 1
    rows, lines = _table_rows(suite)
    return Coverage(list(rules.values()), rows, lines)


def _table_rows(suite: Suite) -> tuple[dict, dict]:
    """Hits per row of the spec's own tables: the compiled program, run with a trace, records
    which row decided each call (imported tables, named `alias.table`, are covered by their own
    spec's cases)."""
    from kdsl.runtime import execute

    program = suite.program
    own = [t for name, t in program.ir.tables.items() if "." not in name]
    rows = {t.name: [0] * len(t.rows) for t in own}
    lines = {t.name: [r.span.line for r in t.rows] for t in own}
    cases = [o.case for o in suite.outcomes if o.error is None]
    if not rows or not cases:
        return rows, lines
    trace: dict = {}
    columns = {name: [c.columns.get(name) for c in cases] for name in program.input_names}
    execute.run(program.module, [c.completion for c in cases], columns, trace=trace,
                similarity_model=program.similarity_model, judging=program.judging)
    for name, decided_by, _call in trace.get("table_rows", []):
        if name in rows:  # a call of this spec's own table, once per call site
            for index in decided_by.reshape(-1).tolist():  # per sample, or per pixel
                if index >= 0:
                    rows[name][index] += 1
    return rows, lines


# ---- JUnit XML --------------------------------------------------------------------------------------

# ---- a whole `kdsl test` run -----------------------------------------------------------------------

def test_targets(paths: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Spec -> extra .kdtest.jsonl files named on the command line (companions are found anyway).
    A folder gives every spec in it that has cases, as the pytest plugin does (a library spec of
    defs and tables, such as spectral/indices, has none)."""
    targets: dict[str, list[Path]] = {}
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for spec in sorted(path.rglob("*.kd")):
                if companion_files(spec) or has_example_blocks(spec.read_text(encoding="utf-8")):
                    targets.setdefault(str(spec), [])
        elif path.is_file() and path.name.endswith(JSONL_SUFFIX):
            spec = spec_for_jsonl(path)
            extra = targets.setdefault(str(spec), [])
            if path.resolve() not in {p.resolve() for p in companion_files(spec)}:
                extra.append(path)
        elif path.is_file():
            targets.setdefault(str(path), [])
        else:
            raise KdslError(f"no such file or folder: {name}")
    return targets


@dataclass
class TestRun:
    """Every suite of a `kdsl test` run, the cases a ``-k`` pattern selected, and the specs that
    could not be tested (their diagnostics)."""

    __test__ = False  # not a pytest test class, despite the name

    suites: list[Suite]
    shown: dict[str, set[str]]
    problems: list[Diagnostic]
    pattern: str | None = None

    @property
    def outcomes(self) -> list[Outcome]:
        return [o for s in self.suites for o in s.outcomes if o.case.id in self.shown[s.spec]]

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(o.error is None and not o.passed for o in self.outcomes)

    @property
    def errors(self) -> int:
        return sum(o.error is not None for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and not (self.failed or self.errors or self.problems)

    def summary(self) -> str:
        return (f"{self.passed} passed, {self.failed} failed" + (f", {self.errors} errors" if self.errors else "")
                + (f", {len(self.problems)} spec problems" if self.problems else ""))

    def nothing_found(self) -> str | None:
        """The message for a run that found no case at all, or None."""
        if self.outcomes or self.problems:
            return None
        return "kdsl test: no cases found" + (f" matching -k {self.pattern!r}" if self.pattern else "")

    def junit_xml(self) -> str:
        """The JUnit report of the selected cases, with a trace for each failure."""
        traces = {o.case.id: trace(s, o) for s in self.suites for o in s.outcomes
                  if o.error is None and not o.passed and o.case.id in self.shown[s.spec]}
        kept = [Suite(s.spec, s.program, s.cases, [o for o in s.outcomes if o.case.id in self.shown[s.spec]])
                for s in self.suites]
        return junit_xml(kept, traces)


def write_recorded_answers(suite: Suite) -> Path | None:
    """The answers a recording run used, beside the spec (sorted, so a file changes only where an
    answer did); None when the spec calls no model."""
    recording = suite.program.judging.recording
    if recording is None or not suite.program.ir.models:
        return None
    path = recorded_answers_path(suite.spec)
    lines = [json.dumps(entry, ensure_ascii=False, sort_keys=True)
             for _key, entry in sorted(recording.items())]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def run_tests(targets: dict[str, list[Path]], pattern: str | None = None,
              strict: bool = False, record: bool = False) -> TestRun:
    """Run the cases of every spec of ``targets`` (see ``test_targets``); a spec that cannot be
    loaded is a problem of the run, and the others still run. ``record``: ask the bound models
    and keep their answers beside each spec (``write_recorded_answers``)."""
    suites, shown, problems = [], {}, []
    for spec, extra in targets.items():
        try:
            suite = run_suite(load_suite(spec, extra, record=record), strict=strict)
            if record:
                write_recorded_answers(suite)
        except KdslError as err:
            problems.extend(err.diagnostics)
            continue
        suites.append(suite)
        shown[spec] = {c.id for c in select(suite.cases, pattern)}
    return TestRun(suites, shown, problems, pattern)


def junit_xml(suites: Sequence[Suite], traces: dict[str, str] | None = None) -> str:
    """A JUnit XML report: one testsuite per spec, one testcase per case."""
    from xml.etree import ElementTree as ET

    traces = traces or {}
    root = ET.Element("testsuites")
    for suite in suites:
        failures = sum(1 for o in suite.outcomes if o.error is None and not o.passed)
        errors = sum(1 for o in suite.outcomes if o.error is not None)
        node = ET.SubElement(root, "testsuite", name=suite.spec, tests=str(len(suite.outcomes)),
                             failures=str(failures), errors=str(errors))
        for outcome in suite.outcomes:
            case = ET.SubElement(node, "testcase", classname=Path(suite.spec).name, name=outcome.case.name,
                                 file=outcome.case.file, line=str(outcome.case.line))
            if outcome.error is not None:
                ET.SubElement(case, "error", message=outcome.error).text = outcome.error
            elif not outcome.passed:
                message = "; ".join(f"{c.expectation}: {c.observed}" for c in outcome.failures)
                body = message + ("\n\n" + traces[outcome.case.id] if outcome.case.id in traces else "")
                ET.SubElement(case, "failure", message=message).text = body
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def trace(suite: Suite, outcome: Outcome) -> str:
    """The explanation of a failing case: what was extracted, each rule, level and the reward."""
    try:
        from kdsl.tools.explain import explain, render_text
    except ImportError:  # pragma: no cover - explain ships with kdsl
        return json.dumps(outcome.observed, indent=2)
    return render_text(explain(suite.program, outcome.case.completion, outcome.case.columns))



# ---- reports ------------------------------------------------------------------------------------

def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def format_results(suites: Sequence[Suite], shown: dict[str, set[str]]) -> str:
    """A table of cases and, for each failure, what was expected, what was seen and the trace."""
    lines = []
    for suite in suites:
        outcomes = [o for o in suite.outcomes if o.case.id in shown.get(suite.spec, set())]
        lines.append(f"{suite.spec}: {len(outcomes)} case{'s' if len(outcomes) != 1 else ''}")
        if not outcomes:
            continue
        rows = [["PASS" if o.passed else ("ERROR" if o.error else "FAIL"), o.case.name,
                 str(len(o.checks)), o.case.where] for o in outcomes]
        lines += ["  " + r for r in _table(rows, ["result", "case", "checks", "where"])]
        with_invalid = [o for o in outcomes if o.invalid and o.error is None]
        if with_invalid:
            lines.append("  invalid values, scored as invalid (--strict makes these cases errors):")
            for o in with_invalid:
                values = "; ".join(f"column `{column}`: {reason}" for column, reason in o.invalid)
                lines.append(f"    {o.case.name} ({o.case.where}): {values}")
        for outcome in outcomes:
            if outcome.passed:
                continue
            lines.append("")
            lines.append(f"{'ERROR' if outcome.error else 'FAIL'} {outcome.case.id} ({outcome.case.where})")
            if outcome.error:
                lines.append(f"  {outcome.error}")
                continue
            for check in outcome.failures:
                lines.append(f"  expected `{check.expectation}`: {check.observed}")
            lines += ["  | " + t for t in trace(suite, outcome).splitlines()]
        lines.append("")
    return "\n".join(lines)


def format_coverage(suite: Suite, cov: Coverage) -> str:
    mark = lambda ok: "yes" if ok else "NO"  # noqa: E731
    rows = []
    for r in cov.rules:
        goals = dict(r.goals)
        rows.append([r.name, r.level, f"{mark(goals['applies'])} ({r.applied})",
                     f"{mark(goals['holds'])} ({r.passed})", f"{mark(goals['fails'])} ({r.failed})",
                     f"{mark(goals['does not apply'])} ({r.skipped})" if r.conditional else "-"])
    lines = [f"coverage of {suite.spec}:"]
    lines += ["  " + x for x in _table(rows, ["rule", "level", "applies", "holds", "fails",
                                              "not applicable"])]
    for table, hits in cov.table_rows.items():
        rows = [[f"row {i + 1}", f"line {line}", mark(h > 0) + f" ({h})"]
                for i, (h, line) in enumerate(zip(hits, cov.table_lines[table]))]
        lines += [f"  table {table}:"] + ["    " + x for x in _table(rows, ["row", "where", "reached"])]
    if cov.note:
        lines.append(f"  note: {cov.note}")
    goals = [ok for r in cov.rules for _, ok in r.goals] + [h > 0 for t in cov.table_rows.values() for h in t]
    lines.append(f"  {cov.percent:.1f}% covered ({sum(goals)} of {len(goals)} goals)")
    return "\n".join(lines)
