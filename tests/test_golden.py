"""Golden-file tests, one per stage: the parse outline, the checker's exact messages, the
generated module. Each `tests/fixtures/<stage>/NAME.kd` sits beside its expected output."""

from pathlib import Path

import pytest

from conftest import FIXTURES, golden
from kdsl.compiler import check_source
from kdsl.errors import KdslError
from kdsl.frontend.ast import summary
from kdsl.frontend.parser import parse


def _cases(stage: str) -> list[Path]:
    return sorted((FIXTURES / stage).glob("*.kd"))


def _relative(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("path", _cases("parse"), ids=lambda p: p.stem)
def test_parse(path: Path):
    text = path.read_text(encoding="utf-8")
    try:
        actual = summary(parse(text, _relative(path))) + "\n"
    except KdslError as err:
        actual = err.render() + "\n"
    golden(path.with_suffix(".out"), actual)


@pytest.mark.parametrize("path", _cases("check"), ids=lambda p: p.stem)
def test_check(path: Path, monkeypatch):
    monkeypatch.chdir(FIXTURES)  # imports resolve beside the spec, named relative to fixtures/
    result = check_source(path.read_text(encoding="utf-8"), _relative(path))
    actual = "\n".join(d.render() for d in result.diagnostics) + "\n"
    golden(path.with_suffix(".out"), actual)


@pytest.mark.parametrize("path", _cases("codegen"), ids=lambda p: p.stem)
def test_codegen(path: Path, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    from kdsl.codegen import generate
    from kdsl.compiler import compile_ir

    ir, _ = compile_ir(path.read_text(encoding="utf-8"), _relative(path))
    golden(path.with_suffix(".py.out"), generate(ir))
