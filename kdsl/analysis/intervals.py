"""Interval reasoning over the checked IR (placeholder until the full analysis lands)."""

from __future__ import annotations

from kdsl.errors import DiagnosticSink
from kdsl.ir import ProgramIR


def analyze(program: ProgramIR, sink: DiagnosticSink) -> None:
    return None
