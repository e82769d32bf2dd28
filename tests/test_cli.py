"""The command line through ``main(argv)``: every command and every error exit path."""

import io
import json
from pathlib import Path

import pytest

from kdsl.cli import Console, main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "landsat_landcover.kd"
DATA = ROOT / "examples" / "landsat_completions.jsonl"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Console(out, err))
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str, name: str = "spec.kd") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_check_ok():
    code, out, err = run("check", str(EXAMPLE))
    assert code == 0, err
    assert out.strip().startswith(f"{EXAMPLE}: ok")


def test_check_reports_every_error_and_exits_1(tmp_path):
    spec = write(tmp_path, "spec t version 1\ninput {\n  x: float\n}\nlevel l {\n"
                           "  rule a: y > 1\n  rule b: x > zz\n}\n")
    code, out, err = run("check", str(spec))
    assert code == 1
    assert f"{spec}:6:11: error: unknown name `y`" in err
    assert f"{spec}:7:15: error: unknown name `zz`" in err
    assert "    ^" in err


def test_check_syntax_error(tmp_path):
    spec = write(tmp_path, "spec t version 1\nlevel l {\n  rule a x > 1\n}\n")
    code, _, err = run("check", str(spec))
    assert code == 1
    assert err.startswith(f"{spec}:3:10: error: unexpected `x`; expected `:`")


def test_check_several_files_and_werror(tmp_path):
    good = write(tmp_path, "spec t version 1\ninput {\n  x: float\n  unused: float\n}\n"
                           "level l {\n  rule a: x > 1\n}\n", "good.kd")
    bad = write(tmp_path, "spec t version 1\nlevel l {\n  rule a: q > 1\n}\n", "bad.kd")
    code, out, err = run("check", str(good), str(bad))
    assert code == 1
    assert "good.kd: ok (1 warnings)" in out and "bad.kd:3:11: error" in err
    code, _, err = run("check", "--werror", str(good))
    assert code == 1 and "warning: input `unused` is never used" in err
    code, _, err = run("check", "--no-warnings", str(good))
    assert code == 0 and err == ""


def test_usage_errors_exit_2(tmp_path):
    assert run()[0] == 2
    assert run("frobnicate")[0] == 2
    assert run("check")[0] == 2
    code, _, err = run("check", str(tmp_path / "missing.kd"))
    assert code == 2 and "no such file" in err
    assert run("compile", str(EXAMPLE), "--emit", "wasm")[0] == 2
    assert run("score", str(EXAMPLE))[0] == 2
    assert run("score", str(EXAMPLE), "--completion", "x", "--set", "novalue")[0] == 2


def test_compile_writes_a_module(tmp_path):
    target = tmp_path / "reward.py"
    code, out, err = run("compile", str(EXAMPLE), "-o", str(target))
    assert code == 0, err
    source = target.read_text()
    assert "def evaluate(ref, " in source and "landsat_landcover.kd:" in source
    code2, _, _ = run("compile", str(EXAMPLE), "-o", str(tmp_path / "again.py"))
    assert (tmp_path / "again.py").read_text() == source


def test_compile_emit_ir():
    code, out, _ = run("compile", str(EXAMPLE), "--emit", "ir")
    assert code == 0
    assert out.startswith("program landsat_landcover version 1 logic product")
    assert "rule correct:" in out


def test_compile_error_exits_1(tmp_path):
    spec = write(tmp_path, "spec t version 1\nlevel l {\n  rule a: q > 1\n}\n")
    code, out, err = run("compile", str(spec))
    assert code == 1 and out == "" and "unknown name `q`" in err


def test_score_data_file():
    code, out, err = run("score", str(EXAMPLE), "--data", str(DATA), "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 6
    assert rows[0]["levels"]["format"] == 1.0 and rows[0]["reward"] > 3
    assert rows[1]["rules"]["correct"] == 0.0


def test_score_inline_completion():
    code, out, err = run("score", str(EXAMPLE), "--completion", "<answer>Water</answer>",
                         "--set", "label=Water", "--set", "sr=[0.01,0.02,0.04,0.01,0.005,0.01,0.01]")
    assert code == 0, err
    # no reasoning: the format gate is not fully satisfied (2 of 3 rules), later levels are zeroed
    assert "reward 0.667" in out and "level accuracy         0.000" in out


def test_score_bad_data_rows(tmp_path):
    data = write(tmp_path, '{"completion": "x", "label": "Water", "sr": [1, 2]}\n', "rows.jsonl")
    code, _, err = run("score", str(EXAMPLE), "--data", str(data))
    assert code == 1 and "row 0, column `sr`: expected 7 numbers, not 2" in err
    broken = write(tmp_path, '{"completion": "x"\n', "broken.jsonl")
    code, _, err = run("score", str(EXAMPLE), "--data", str(broken))
    assert code == 1 and "broken.jsonl:1: not a JSON object" in err


def test_version():
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("kdsl ")


@pytest.mark.parametrize("argv", [["check", "--help"], ["--help"]])
def test_help_exits_0(argv):
    assert run(*argv)[0] == 0


def test_set_names_an_unknown_input_in_score_as_in_explain(capsys):
    from pathlib import Path

    spec = str(Path(__file__).resolve().parents[1] / "examples" / "landsat_landcover.kd")
    for command in ("score", "explain"):
        assert main([command, spec, "--completion", "<answer>Water</answer>", "--set", "lable=Water"]) == 2
        assert "--set lable: `lable` is not an input of landsat_landcover (did you mean `label`?)" in \
            capsys.readouterr().err
