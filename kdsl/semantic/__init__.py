"""Stage 2, semantic analysis: ``ast.Spec`` -> ``ir.ProgramIR``.

``check`` runs the jobs of ``STEPS`` in that order, each in its own module:

- ``declare``: resolve names: enums, inputs, defs and tables are declared with their types
  and units (the only step an imported spec needs: ``declare_library``);
- ``lower``: outputs, lets and then rules become typed IR nodes; types are inferred node by
  node, calls (``calls``: defs, tables, builtins) and units (``unit_flow``) are mixed in;
- ``validate``: settings (advantage, masks), examples, unused names.

Every problem goes to one ``DiagnosticSink``; the compiler raises all errors together and then
runs the analyses of ``kdsl.analysis`` (``compiler.ANALYSES``) on a clean program.
"""

from __future__ import annotations

from kdsl.errors import DiagnosticSink
from kdsl.frontend import ast
from kdsl.ir import ProgramIR
from kdsl.semantic.declare import NameResolution
from kdsl.semantic.lower import Lowering
from kdsl.semantic.scope import Scope, enum_named, table_rows
from kdsl.semantic.validate import Validation

__all__ = ["STEPS", "Scope", "check", "declare_library", "enum_named", "table_rows"]


class _Run:
    """One spec going through the steps; each step reads what the ones before it made."""

    def __init__(self, spec: ast.Spec, scope: Scope, sink: DiagnosticSink):
        self.spec, self.scope, self.sink = spec, scope, sink
        self.program = ProgramIR(spec.name, spec.version, spec.logic, spec.file)
        self.names = NameResolution(spec, scope, sink, self.program)
        self.lowering: Lowering | None = None
        self.validation = Validation(spec, self.program, sink)


def _declare(run: _Run) -> None:
    run.names.declare_names()


def _lower(run: _Run) -> None:
    run.lowering = Lowering(run.spec, run.scope, run.sink, run.program, run.names.variables)
    run.lowering.lower_definitions()
    run.lowering.lower_rules()
    run.program.nodes = list(run.lowering.graph.order)


def _validate(run: _Run) -> None:
    run.validation.check_settings()
    run.validation.check_examples()
    run.validation.report_unused()


STEPS = (("declare", _declare), ("lower", _lower), ("validate", _validate))


def check(spec: ast.Spec, scope: Scope, sink: DiagnosticSink) -> ProgramIR:
    """Check a parsed spec whose imports are already resolved into ``scope.imports``."""
    run = _Run(spec, scope, sink)
    for _name, step in STEPS:
        step(run)
    run.program.sources = dict(sink.sources)  # the spec's and its imports' text
    return run.program


def declare_library(spec: ast.Spec, scope: Scope, sink: DiagnosticSink) -> None:
    """Fill an imported spec's scope: enums, defs and tables (its levels are checked on their own)."""
    NameResolution(spec, scope, sink, ProgramIR(spec.name, spec.version, spec.logic, spec.file)).declare_names()
