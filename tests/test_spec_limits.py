"""Spec text that used to crash the compiler (a traceback, not a KdslError) is a located error now:
string escapes, characters no spec may hold, numbers beyond float32, deep nesting, oversized
declarations, and names that clash with imports. Each test asserts the message and where it
points."""

import pytest

import kdsl
from kdsl.errors import KdslError
from kdsl.limits import MAX_NESTING


def error_of(text: str, name: str = "t.kd") -> KdslError:
    with pytest.raises(KdslError) as caught:
        kdsl.loads(text, name)
    return caught.value


def regex_spec(literal: str) -> str:
    return f'spec t version 1\noutput {{\n  a: regex {literal}\n}}\nlevel l {{\n  rule r: present(a)\n}}\n'


@pytest.mark.parametrize("literal, column, message", [
    ('"an\\xswer"', 15, "`\\x` takes exactly 2 hexadecimal digits"),
    ('"\\U00110000"', 13, "`\\U00110000` is not a Unicode character"),
    ('"\\ud800"', 13, "`\\ud800` is not a Unicode character"),
    ('"a\\d+"', 14, "unknown escape `\\d` in a string; the escapes are"),
    ('"\\b"', 13, "(a regex writes `\\\\b` for `\\b`)"),
    ('"a\rb"', 14, "a string cannot hold a raw carriage return; write \\r"),
    ('"a\x0cb"', 14, "a string cannot hold a raw form feed; write \\x0c"),
])
def test_bad_string_escapes_are_located(literal, column, message):
    err = error_of(regex_spec(literal))
    assert message in err.message
    assert (err.line, err.column) == (3, column)
    assert "^" in str(err)  # rendered with the source line and a caret


def test_string_escapes_that_are_allowed():
    program = kdsl.loads(regex_spec('"a\\\\d\\t\\x41\\u00e9\\U0001F600\\"\\n"'))
    assert program.ir.outputs["a"].attr("pattern") == 'a\\d\tA\u00e9\U0001F600"\n'


@pytest.mark.parametrize("char, what", [
    ("\x00", "the control character U+0000"),
    ("\x1b", "the control character U+001B"),
    ("\x85", "the control character U+0085"),
    ("\u202e", "the invisible bidirectional control U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("\u2066", "the invisible bidirectional control U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    ("\ud800", "a lone surrogate (U+D800), which is not a character"),
])
@pytest.mark.parametrize("inside_string", [True, False])
def test_characters_no_spec_may_hold(char, what, inside_string):
    text = regex_spec(f'"a{char}b"') if inside_string else regex_spec('"ab"').replace(
        "rule r", f"rule r{char}")
    err = error_of(text)
    assert err.message.startswith(f"the spec holds {what}")
    assert (err.line, err.column) == ((3, 14) if inside_string else (6, 9))
    if "surrogate" not in what:
        assert f"write it as the escape \\u{ord(char):04x}" in err.message


@pytest.mark.parametrize("text, line, column", [
    ("spec t version 1\nlevel l weight 1e309 {\n  rule r: true\n}\n", 2, 16),
    ("spec t version 1\ninput {\n  v: float\n}\nlevel l {\n  rule r: v > 1 soft 1e309\n}\n", 6, 22),
    ("spec t version 1\ninput {\n  v: float\n}\nlevel l {\n  rule r: v < 1e39\n}\n", 6, 15),
    ("spec t version 1\ninput {\n  v: float\n}\ntable big(v: float) -> float {\n  < 1e300 -> 1\n"
     "  _ -> 0\n}\nlevel l {\n  rule r: big(v) > 0\n}\n", 6, 5),
    ("spec t version 1\nlet x = " + "9" * 5000 + "\nlevel l {\n  rule r: x > 0\n}\n", 2, 9),
])
def test_numbers_beyond_float32_are_located_errors(text, line, column):
    err = error_of(text)
    assert "is too large: numbers in a spec are at most 3.403e+38" in err.message
    assert (err.line, err.column) == (line, column)


def test_the_largest_float32_number_is_allowed():
    program = kdsl.loads("spec t version 1\ninput {\n  v: float\n}\nlevel l {\n"
                         "  rule r: v < 3.4e38\n}\n")
    assert program.score([""], v=[1e38]).rules["r"].tolist() == [1.0]


def test_versions_and_band_counts_are_bounded():
    err = error_of("spec t version " + "9" * 5000 + "\nlevel l {\n  rule r: true\n}\n")
    assert (err.message, err.line, err.column) == ("a spec version is at most 2147483647", 1, 16)
    err = error_of("spec t version 1\ninput {\n  v: vector[5000]\n}\nlevel l {\n  rule r: v[0] > 0\n}\n")
    assert (err.message, err.line, err.column) == ("a vector or raster has at most 4096 bands, not 5000",
                                                   3, 13)


def nested(form: str, depth: int) -> str:
    body = {"not": "not " * depth + "v > 0", "neg": "-" * depth + "v > 0",
            "pow": "v ** " * depth + "1 > 0", "if": "if v > 0 then 1 else " * depth + "0 > 0",
            "sum": " + ".join(["v"] * depth) + " > 0"}[form]
    return f"spec t version 1\ninput {{\n  v: float\n}}\nlevel l {{\n  rule r: {body}\n}}\n"


@pytest.mark.parametrize("form", ["not", "neg", "pow", "if", "sum"])
@pytest.mark.parametrize("depth", [1000, 10_000])
def test_deep_nesting_is_a_located_error(form, depth):
    err = error_of(nested(form, depth))
    assert err.message == f"this expression nests more than {MAX_NESTING} levels deep; split it into lets"
    assert err.line == 6 and err.column > 9


@pytest.mark.parametrize("form", ["not", "neg", "pow", "sum"])
def test_nesting_within_the_limit_runs_every_stage(form):
    from kdsl.tools.explain import explain
    from tests.reference import Reference

    text = nested(form, 150)
    program = kdsl.loads(text)
    scores = program.score(["", ""], v=[0.5, 2.0])
    expected = Reference(text).score_batch(["", ""], [{"v": 0.5}, {"v": 2.0}])
    assert scores.reward.tolist() == pytest.approx([e["reward"] for e in expected])
    assert explain(program, "", {"v": 2.0})["reward"] == pytest.approx(scores.reward[1].item())


def test_defs_calling_defs_deeply_are_a_located_error():
    lines = ["def f0(x) = x"] + [f"def f{k}(x) = f{k - 1}(x)" for k in range(1, 400)]
    text = ("spec t version 1\ninput {\n  v: float\n}\n" + "\n".join(lines) +
            "\nlevel l {\n  rule r: f399(v) > 0\n}\n")
    err = error_of(text)
    assert err.message.startswith(f"this expression nests more than {MAX_NESTING} levels deep, "
                                  "counting the defs it calls")
    assert len(err.diagnostics[0].notes) <= 9  # the chain of calls is summarised, not listed


def test_chained_lets_deeper_than_the_limit_are_a_located_error():
    lets = ["let a0 = v"] + [f"let a{k} = a{k - 1} + 1" for k in range(1, 300)]
    text = ("spec t version 1\ninput {\n  v: float\n}\n" + "\n".join(lets) +
            "\nlevel l {\n  rule r: a299 > 0\n}\n")
    err = error_of(text)
    assert err.message.startswith(f"this value is computed through more than {MAX_NESTING} nested "
                                  "operations")
    assert err.line == 4 + MAX_NESTING + 1  # the let whose value first gets too deep


def test_defs_that_call_defs_twice_check_in_linear_time():
    # Without memoised expansion this is 2**40 lowerings; with it, forty.
    lines = ["def f0(x) = x + 1"] + [f"def f{k}(x) = f{k - 1}(x) * f{k - 1}(x)" for k in range(1, 40)]
    text = ("spec t version 1\ninput {\n  v: float\n}\n" + "\n".join(lines) +
            "\nlevel l {\n  rule r: f39(v) > 0\n}\n")
    program = kdsl.loads(text)
    assert len(program.ir.nodes) < 200
    assert program.score([""], v=[0.0]).rules["r"].tolist() == [1.0]  # 1 ** (2 ** 39)


def test_an_output_named_like_an_import_is_an_error_not_a_crash():
    err = error_of('spec t version 1\nimport "medical/curb65" as c\noutput {\n  c: tag "c"\n}\n'
                   "level l {\n  rule r: present(c)\n}\n")
    assert (err.message, err.line, err.column) == ("`c` is already the name of an import", 4, 3)


def test_a_negated_per_pixel_value_keeps_its_shape():
    import numpy as np

    text = ("spec t version 1\ninput {\n  pixels: raster[2] bands(A, B)\n  v: vector[3]\n}\n"
            "let green = frac((pixels.A - -pixels.B) > 0.3)\nlet low = mean(-v)\n"
            "level l {\n  rule r: green > 0 and low < 0\n}\n")
    patches = np.random.default_rng(0).uniform(0, 1, (2, 2, 4, 4))
    scores = kdsl.loads(text).score(["", ""], pixels=list(patches), v=[[1, 2, 3], [0.5, 0.5, 0.5]])
    assert scores.values["green"].tolist() == pytest.approx(
        ((patches[:, 0] + patches[:, 1]) > 0.3).mean((1, 2)).tolist())
    assert scores.values["low"].tolist() == [-2.0, -0.5]


def test_rejected_regexes_say_why_without_writing_to_stderr(capfd):
    err = error_of(regex_spec('"(?P<word>\\\\w+) (?P=word)"'))
    assert "this regex is not accepted (invalid perl operator: (?P" in err.message
    assert "re2.cc" not in capfd.readouterr().err


@pytest.mark.parametrize("text, message, line", [
    ("spec t version 1\ninput {\n  v: float\n}\nlevel a weight 3e38 {\n  rule r: v > 0\n}\n"
     "level b weight 3e38 {\n  rule q: v > 0\n}\n",
     "the level weights add up to more than 3.403e+38, so the reward would overflow float32", 5),
    ("spec t version 1\ninput {\n  v: float\n}\nlevel a {\n  rule r: v > 0 weight 3e38\n"
     "  rule s: v > 1 weight 3e38\n}\n",
     "the rule weights of level `a` add up to more than 3.403e+38, so its weighted mean would "
     "overflow float32", 5),
])
def test_weights_that_would_overflow_the_reward_are_errors(text, message, line):
    err = error_of(text)
    assert (err.message, err.line) == (message, line)
