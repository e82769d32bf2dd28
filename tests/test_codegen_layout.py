"""The shape of generated modules: short lines, every statement tagged with its spec line (and a
def's body with the call it was inlined for), no line that only moves a value."""

import re
from pathlib import Path

import pytest

from kdsl.codegen import WIDTH, generate
from kdsl.compiler import compile_ir

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted([*ROOT.glob("examples/**/*.kd"), *ROOT.glob("domain_specs/**/*.kd")])


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_specs_compile_to_lines_under_100_characters(path):
    source = generate(compile_ir(path.read_text(encoding="utf-8"), str(path))[0])
    long = [line for line in source.splitlines() if len(line) > WIDTH]
    assert not long, long[:3]
    # No pass-through line: the tensor phase takes the text phase's values as parameters.
    assert not re.search(r"^\s+x\d+, m\d+ = env\[", source, re.M)
    # Tracing is not the hot functions' business (a profile hook keeps their locals, and only
    # traced_table_rows says which table row decided a sample).
    assert "locals()" not in source and "trace" not in source.partition("def traced_table_rows")[0]
    # Constants come from `k`, made once per device (execute.constants), not on every batch.
    assert "ops.const(" not in source


def test_a_def_body_is_tagged_with_its_call_and_its_def():
    spec = """spec t version 1
input {
  x: float
}
def doubled(v) = v * 2 + 1
let y = doubled(x)
level l {
  rule big: y > 3
}
"""
    source = generate(compile_ir(spec, "t.kd")[0])
    mul = next(line for line in source.splitlines() if "ops.mul(" in line)
    assert mul.rstrip().endswith("# t.kd:6 <- def at t.kd:5")
    compare = next(line for line in source.splitlines() if "ops.gt(" in line)
    assert compare.rstrip().endswith("# t.kd:8")


def test_a_tag_that_does_not_fit_goes_above_its_statement():
    terms = " | ".join(f'"term number {i}"' for i in range(12))
    spec = f"""spec t version 1
output {{
  a: tag "a"
}}
level l {{
  rule named: mentions(a, {terms})
}}
"""
    lines = generate(compile_ir(spec, "t.kd")[0]).splitlines()
    at = next(i for i, line in enumerate(lines) if "ex.mentions(" in line)
    assert lines[at - 1].strip() == "# t.kd:6"
    assert all(len(line) <= WIDTH for line in lines)
    assert lines[at + 1].startswith(" " * 12)  # the call continues on the next line
