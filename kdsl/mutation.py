"""Mutation testing of a spec's examples (``kdsl test --mutate``).

Each mutant is the spec with one small change to its knowledge: a threshold nudged (an integer by
one, any other number by 10%), a comparison flipped at its boundary (``<`` and ``<=``, ``>`` and
``>=``, ``==`` and ``!=``; not the boundary of a ``soft`` rule, whose ramp is continuous there),
a table cell's bound nudged or its operator flipped, a table row's result replaced by another
member. A mutant is *caught* when some case's outcome changes (an
expectation that passed fails, or the other way round). Mutants that survive point at knowledge
that no example pins down. Mutants that ``kdsl check`` rejects (for example a nudged cell that
makes two table rows overlap) are counted apart: the checker already guards those.

Mutation works on the source text, at positions the parser reports, so each mutant is exactly the
spec a person would get by making that one edit; examples and weights are never mutated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lark import Token, Tree

from kdsl.errors import KdslError
from kdsl.testing import Case, Suite, run_suite

_FLIP = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}


@dataclass(frozen=True)
class Mutant:
    line: int
    column: int
    start: int
    end: int
    original: str
    replacement: str
    kind: str  # threshold | comparison | cell | result | points

    def describe(self) -> str:
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


def _literal(node) -> tuple[str, int, int, int, int] | None:
    """(text, start, end, line, column) of a number literal, possibly negated, else None."""
    if isinstance(node, Tree) and node.data in ("number", "negative_number", "neg"):
        inner = node.children[-1]
        if node.data == "neg":
            if not (isinstance(inner, Tree) and inner.data == "number"):
                return None
            inner = inner.children[0]
        if not isinstance(inner, Token):
            return None
        sign = "-" if node.data in ("negative_number", "neg") else ""
        return (sign + str(inner), node.meta.start_pos, node.meta.end_pos, node.meta.line,
                node.meta.column)
    return None


def _threshold_mutants(node, kind: str, in_expression: bool) -> list[Mutant]:
    found = _literal(node)
    if found is None:
        return []
    literal, start, end, line, column = found
    out = []
    for value in _nudges(literal):
        text = _number_text(value, _is_integer(literal.lstrip("-")))
        if in_expression and value < 0:
            text = f"({text})"
        out.append(Mutant(line, column, start, end, literal, text, kind))
    return out


def _operator_mutant(token: Token, kind: str) -> Mutant:
    return Mutant(token.line, token.column, token.start_pos, token.end_pos, str(token),
                  _FLIP[str(token)], kind)


def find_mutants(text: str, program) -> list[Mutant]:
    """Every mutant of a spec's text, in source order."""
    from kdsl.parser import _lark

    if not text.endswith("\n"):
        text += "\n"
    tree = _lark().parse(text, start="start")
    mutants: list[Mutant] = []
    soft: list[bool] = []

    def visit(node):
        if not isinstance(node, Tree) or node.data == "example_block":
            return
        if node.data == "rule_decl":
            # A `soft` comparison is a continuous ramp, so `<` and `<=` (or `>` and `>=`) give
            # the same value everywhere: flipping them makes equivalent mutants, not tests.
            soft.append(any(isinstance(c, Tree) and c.data == "soft" for c in node.children))
            for child in node.children:
                visit(child)
            soft.pop()
            return
        if node.data == "compare":
            for child in node.children:
                if isinstance(child, Token) and child.type == "CMP_OP":
                    if not (soft and soft[-1] and str(child) in ("<", "<=", ">", ">=")):
                        mutants.append(_operator_mutant(child, "comparison"))
                else:
                    mutants.extend(_threshold_mutants(child, "threshold", in_expression=True))
        elif node.data in ("range_literal", "interval_closed", "interval_closed_open",
                           "interval_open_closed", "interval_open"):
            for child in node.children:
                mutants.extend(_threshold_mutants(child, "threshold", in_expression=True))
        elif node.data == "cell_compare":
            op, number = node.children
            mutants.append(_operator_mutant(op, "cell"))
            mutants.extend(_threshold_mutants(number, "cell", in_expression=False))
        elif node.data in ("cell_range", "cell_number", "cell_closed", "cell_closed_open",
                           "cell_open_closed", "cell_open"):
            for child in node.children:
                mutants.extend(_threshold_mutants(child, "cell", in_expression=False))
        elif node.data == "criterion":
            # A points sheet's points: the value the guideline gives the criterion.
            mutants.extend(_threshold_mutants(node.children[-1], "points", in_expression=False))
        elif node.data == "table_decl":
            mutants.extend(_result_mutants(node, program))
        for child in node.children:
            visit(child)

    visit(tree)
    return sorted(set(mutants), key=lambda m: (m.start, m.replacement))


def _result_mutants(table: Tree, program) -> list[Mutant]:
    name = str(table.children[0])
    ir_table = program.ir.tables.get(name)
    members = list(ir_table.result.enum.members) if ir_table and ir_table.result.enum else []
    out = []
    for row in table.find_data("table_row"):
        result = row.children[-1]
        if isinstance(result, Tree) and result.data == "result_name" and members:
            token = result.children[0]
            others = [m for m in members if m != str(token)]
            if others:
                out.append(Mutant(token.line, token.column, token.start_pos, token.end_pos, str(token),
                                  others[0], "result"))
        elif isinstance(result, Tree):
            out.extend(_threshold_mutants(result, "result", in_expression=False))
    return out


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
        try:
            program = kdsl.loads(mutant.apply(text), suite.spec)
        except KdslError:
            report.rejected.append(mutant)
            continue
        cases: list[Case] = suite.cases
        mutated = run_suite(Suite(suite.spec, program, cases))
        (report.caught if _signature(mutated) != baseline else report.survived).append(mutant)
    return report
