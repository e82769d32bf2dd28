"""Mutation testing of a spec's examples (``kdsl test --mutate``).

Each mutant is the spec with one small change to its knowledge: a threshold nudged (an integer by
one, any other number by 10%), a comparison flipped at its boundary (``<`` and ``<=``, ``>`` and
``>=``, ``==`` and ``!=``; not the boundary of a ``soft`` rule, whose ramp is continuous there),
a table cell's bound nudged or its operator flipped, a table row's result replaced by another
member (or, for a number, nudged). A mutant is *caught* when some case's outcome changes (an
expectation that passed fails, or the other way round). Mutants that survive point at knowledge
that no example pins down. Mutants that ``kdsl check`` rejects (for example a nudged cell that
makes two table rows overlap) are counted apart: the checker already guards those.

Mutation works on the source text, at the positions the parsed spec's nodes carry (each span's
character offsets), so each mutant is exactly the spec a person would get by making that one edit;
examples and weights are never mutated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from kdsl.errors import KdslError, Span
from kdsl.frontend import ast
from kdsl.tools.testing import Case, Suite, run_suite

_FLIP = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}


@dataclass(frozen=True)
class Mutant:
    line: int
    column: int
    start: int
    end: int
    original: str
    replacement: str
    kind: str  # threshold | comparison | cell | result | points | judge
    node: int | None = None  # judge: the judged value whose answers the mutant reverses

    def describe(self) -> str:
        if self.kind == "judge":
            return f"the answers of {self.original} reversed ({self.replacement})"
        return f"{self.kind} `{self.original}` -> `{self.replacement}`"

    def apply(self, text: str) -> str:
        return text[:self.start] + self.replacement + text[self.end:]


@dataclass
class MutationReport:
    caught: list[Mutant] = field(default_factory=list)
    survived: list[Mutant] = field(default_factory=list)
    rejected: list[Mutant] = field(default_factory=list)

    @property
    def score(self) -> float:
        judged = len(self.caught) + len(self.survived)
        return 100.0 * len(self.caught) / judged if judged else 100.0


def format_report(spec: str, report: MutationReport, fail_under: float | None = None) -> str:
    """The mutation score and every survivor with its spec line, as ``kdsl test --mutate`` and
    the pytest plugin print it; with ``fail_under``, a last line when the score is below it."""
    judged = len(report.caught) + len(report.survived)
    lines = [f"mutation score of {spec}: {report.score:.1f}% ({len(report.caught)} of {judged} "
             "mutants caught" + (f"; {len(report.rejected)} rejected by the checker"
                                 if report.rejected else "") + ")"]
    source = Path(spec).read_text(encoding="utf-8").splitlines()
    for mutant in report.survived:
        lines.append(f"  {spec}:{mutant.line}:{mutant.column}: survived: {mutant.describe()}")
        lines.append(f"      {source[mutant.line - 1].strip()}")
    if fail_under is not None and report.score < fail_under:
        lines.append(f"{spec}: mutation score {report.score:.1f}% is under {fail_under:g}%")
    return "\n".join(lines)


def _number_text(value: float, integer: bool) -> str:
    if integer:
        return str(int(value))
    return f"{value:.6g}"


def _nudges(literal: str) -> list[float]:
    value = float(literal)
    if _is_integer(literal):
        return [value - 1, value + 1]
    step = abs(value) * 0.1 if value else 0.05
    return [value - step, value + step]


def _is_integer(literal: str) -> bool:
    return not any(c in literal for c in ".eE")


def _threshold_mutants(text: str, number, kind: str, in_expression: bool) -> list[Mutant]:
    """Nudges of a number literal written in the spec (``ast.Number``; a negative literal's span
    covers its minus sign). Anything else gives none."""
    if not isinstance(number, ast.Number) or number.span.start < 0:
        return []
    return _nudged(text, number.span, kind, in_expression)


def _nudged(text: str, span: Span, kind: str, in_expression: bool) -> list[Mutant]:
    literal = text[span.start:span.end].replace(" ", "")
    out = []
    for value in _nudges(literal):
        shown = _number_text(value, _is_integer(literal.lstrip("-")))
        if in_expression and value < 0:
            shown = f"({shown})"
        out.append(Mutant(span.line, span.column, span.start, span.end, literal, shown, kind))
    return out


def _operator_mutant(text: str, span: Span, kind: str) -> Mutant:
    written = text[span.start:span.end]
    return Mutant(span.line, span.column, span.start, span.end, written, _FLIP[written], kind)


def find_mutants(text: str, program) -> list[Mutant]:
    """Every mutant of a spec's text, in source order: found in the parsed spec, whose nodes say
    where in the text each operator and number is written."""
    from kdsl.frontend.parser import parse

    if not text.endswith("\n"):
        text += "\n"
    spec = parse(text)
    mutants: list[Mutant] = []

    def expression(node, soft: bool) -> None:
        if isinstance(node, ast.Compare):
            for op, span in zip(node.ops, node.op_spans):
                # A `soft` comparison is a continuous ramp, so `<` and `<=` (or `>` and `>=`)
                # give the same value everywhere: flipping them makes equivalent mutants.
                if not (soft and op in ("<", "<=", ">", ">=")):
                    mutants.append(_operator_mutant(text, span, "comparison"))
            for operand in node.operands:
                mutants.extend(_threshold_mutants(text, operand, "threshold", in_expression=True))
        elif isinstance(node, ast.RangeLiteral):
            for end in (node.low, node.high):
                mutants.extend(_threshold_mutants(text, end, "threshold", in_expression=True))
        for child in _children(node):
            expression(child, soft)

    for decl in (*spec.outputs, *spec.lets):
        expression(decl.value, False)
    for d in spec.defs:
        expression(d.body, False)
        for criterion in d.criteria:  # a points sheet: the points the guideline gives each
            expression(criterion.condition, False)
            if criterion.points_span.start >= 0:
                mutants.extend(_nudged(text, criterion.points_span, "points", in_expression=False))
    for level in spec.levels:
        for rule in level.rules:
            for part in (rule.body, rule.when):
                if part is not None:
                    expression(part, rule.soft is not None)
    for table in spec.tables:
        mutants.extend(_table_mutants(text, table, program))
    return sorted(set(mutants), key=lambda m: (m.start, m.replacement)) + judged_mutants(program)


def judged_mutants(program) -> list[Mutant]:
    """One mutant per judged value: its model's answers reversed (a grade g becomes 1 - g, the
    worst choice the best; a score s becomes -s). Cases that pin down what a judge should say
    about their completions catch it; the judge is asked nothing more (its answers are kept)."""
    from kdsl.ir import JUDGED_OPS

    names = {node.id: name for name, node in program.ir.lets.items()}
    out = []
    for node in program.ir.live_nodes():
        if node.op in JUDGED_OPS:
            what = f"`{names[node.id]}`" if node.id in names else f"`{node.attr('model')}`"
            scale = ("worst choice <-> best" if node.op == "rubric" else "score -> -score")
            out.append(Mutant(node.span.line, node.span.column, -1, -1, what, scale, "judge",
                              node.id))
    return out


def _children(node) -> list:
    """The nodes directly inside an expression (sub-expressions, keyword arguments)."""
    found = []
    for f in fields(node):
        value = getattr(node, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, ast.Node):
                found.append(item)
    return found


def _table_mutants(text: str, table: ast.Table, program) -> list[Mutant]:
    out = []
    for row in table.rows:
        for cell in row.cells:
            if cell.kind == "compare":
                out.append(_operator_mutant(text, cell.op_span, "cell"))
            for span in (cell.low_span, cell.high_span):
                if span.start >= 0:
                    out.extend(_nudged(text, span, "cell", in_expression=False))
        out.extend(_result_mutants(text, table, row, program))
    return out


def _result_mutants(text: str, table: ast.Table, row: ast.TableRow, program) -> list[Mutant]:
    span = row.result_span
    if span.start < 0:
        return []
    if not isinstance(row.result, str):
        return _nudged(text, span, "result", in_expression=False)
    ir_table = program.ir.tables.get(table.name)
    members = list(ir_table.result.enum.members) if ir_table and ir_table.result.enum else []
    others = [m for m in members if m != row.result]
    if not others:
        return []
    return [Mutant(span.line, span.column, span.start, span.end, row.result, others[0], "result")]


def _signature(suite: Suite) -> list:
    return [(o.error is not None, tuple(c.passed for c in o.checks)) for o in suite.outcomes]


def mutate(suite: Suite, progress=None) -> MutationReport:
    """Run the suite's cases against every mutant of its spec."""
    import kdsl

    text = open(suite.spec, encoding="utf-8").read()
    baseline = _signature(suite)
    report = MutationReport()
    mutants = find_mutants(text, suite.program)
    for mutant in mutants:
        if progress is not None:
            progress(mutant)
        if mutant.kind == "judge":
            judging = suite.program.judging
            judging.mutations = {mutant.node: (lambda v: 1.0 - v) if mutant.replacement.startswith("worst")
                                 else (lambda v: -v)}
            try:
                mutated = run_suite(Suite(suite.spec, suite.program, suite.cases))
            finally:
                judging.mutations = {}
            (report.caught if _signature(mutated) != baseline else report.survived).append(mutant)
            continue
        try:
            program = kdsl.loads(mutant.apply(text), suite.spec)
        except KdslError:
            report.rejected.append(mutant)
            continue
        program.judging = suite.program.judging  # the same models, and their answers so far
        cases: list[Case] = suite.cases
        mutated = run_suite(Suite(suite.spec, program, cases))
        (report.caught if _signature(mutated) != baseline else report.survived).append(mutant)
    return report
