"""An exception raised while a compiled program scores a batch names the spec line it was
computing, and keeps the original exception as its cause."""

import pytest

import kdsl
from kdsl.errors import KdslDataError, KdslRuntimeError
from kdsl.runtime import ops

SPEC = """spec t version 1
input {
  gold: str
  x: float
  y: float
}
output {
  a: tag "a"
}
let close = similarity(a, gold)
let ratio = x / y
level l {
  rule near: close > 0.5
  rule small: ratio < 2
}
"""


class _FailingEncoder:
    def encode(self, texts, **kwargs):
        raise RuntimeError("the embedding server is down")


def test_a_failure_in_the_text_phase_names_the_spec_line():
    program = kdsl.loads(SPEC, "t.kd", similarity_model=_FailingEncoder())
    with pytest.raises(KdslRuntimeError) as caught:
        program.score(["<a>x</a>"], gold=["y"], x=[1.0], y=[2.0])
    err = caught.value
    assert (err.file, err.line) == ("t.kd", 10)
    assert "scoring failed in similarity(): RuntimeError: the embedding server is down" in str(err)
    assert isinstance(err.__cause__, RuntimeError)


def test_a_failure_in_the_tensor_phase_names_the_spec_line(monkeypatch):
    program = kdsl.loads(SPEC.replace("let close = similarity(a, gold)", "let close = 1"), "t.kd")

    def failing_div(*args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(ops, "div", failing_div)
    with pytest.raises(KdslRuntimeError) as caught:
        program.score(["<a>x</a>"], gold=["y"], x=[1.0], y=[2.0])
    assert (caught.value.file, caught.value.line) == ("t.kd", 11)
    assert "in div(): RuntimeError: CUDA out of memory" in str(caught.value)


def test_the_line_comes_from_a_compiled_file_too(tmp_path, monkeypatch):
    """A module written by `kdsl compile` and imported as a file maps its lines the same way."""
    import importlib.util

    from kdsl.codegen import generate
    from kdsl.compiler import compile_ir
    from kdsl.runtime import execute

    path = tmp_path / "reward_t.py"
    path.write_text(generate(compile_ir(SPEC.replace("let close = similarity(a, gold)",
                                                     "let close = 1"), "t.kd")[0]), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("reward_t", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(ops, "div", lambda *args: 1 / 0)
    with pytest.raises(KdslRuntimeError, match="ZeroDivisionError") as caught:
        execute.run(module, ["<a>x</a>"], {"gold": ["y"], "x": [1.0], "y": [2.0]})
    assert caught.value.line == 11


def test_kdsl_errors_pass_unchanged():
    program = kdsl.loads(SPEC, "t.kd")
    with pytest.raises(KdslDataError):
        program.score(["<a>x</a>"], gold=["y"], x=["not a number"], y=[2.0])
