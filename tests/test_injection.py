"""No text from a spec or the file system can run code through the generated module.

Every position where such text reaches generated source is tried with values built to break out
of every quoting context (docstrings, both quote characters, comments, every kind of line break)
and with generated ones; a canary file that the payloads try to create fails the test if anything
ran. The module must still load and score, and carry the text back unchanged."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path, PurePath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdsl
from kdsl.cli import main
from kdsl.codegen import generated_name, quote


def payloads(canary: Path) -> list[str]:
    code = f"__import__('pathlib').Path({str(canary)!r}).touch()"
    return [
        f'x""";{code};"""y', f"x''';{code};'''y", f"x';{code};'y", f'x";{code};"y',
        f"x\n{code}\n", f"x\r{code}\r", f"x\r\n{code}\r\n", f"x\x0c\n{code}", f"x\x0b{code}",
        f"x\u2028{code}", f"x\x85{code}", f"x\\\n{code}", "x\\", f'x\\"""\n{code}\n#',
        f"x{{{code}}}", f"x\x00{code}", f"x\ud800{code}", f"#\n{code}", f"x\u202e{code}",
    ]


# Fragments that matter to Python's tokenizer, mixed with arbitrary text.
FRAGMENTS = st.sampled_from(['"""', "'''", '"', "'", "\\", "\n", "\r", "\x0b", "\x0c", "\x1c",
                             "\x85", "\u2028", "\u2029", "#", "\x00", "\ud800", "{", "}", "%",
                             "__import__('os')", ";", "\t", " ", "\u202e", "é", "\U0001F600"])
HOSTILE_TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=8)), min_size=1, max_size=12).map("".join)

SPEC = ('spec injected version 1\noutput {\n  reply: tag "answer"\n}\n'
        "level l {\n  rule r: present(reply)\n}\n")


def kd_string(text: str) -> str:
    """``text`` as a kdsl string literal (the spec syntax's escapes)."""
    out = []
    for char in text:
        if char in '\\"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif not char.isprintable() or "\ud800" <= char <= "\udfff":
            out.append(f"\\U{ord(char):08x}" if ord(char) > 0xFFFF else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def loads_and_scores(text: str, name: str) -> kdsl.Program | None:
    try:
        program = kdsl.loads(text, name)
    except kdsl.KdslError:
        return None
    assert program.score(["<answer>x</answer>", ""]).reward.shape == (2,)
    return program


def test_quote_round_trips_and_leaves_no_line_break():
    for text in payloads(Path("/nonexistent")) + ["plain", "", "é \U0001F600"]:
        quoted = quote(text)
        assert "\n" not in quoted and "\r" not in quoted and quoted.isprintable()
        assert ast.literal_eval(f"'{quoted}'") == text
        assert ast.literal_eval(f'"""{quoted}"""') == text


@given(HOSTILE_TEXT)
@settings(max_examples=300, deadline=None)
def test_quote_round_trips_generated_text(text):
    quoted = quote(text)
    assert quoted.isprintable()
    assert ast.literal_eval(f"'{quoted}'") == text
    assert ast.literal_eval(f'"""{quoted}"""') == text


def test_spec_names_given_to_loads_cannot_run_code(tmp_path):
    canary = tmp_path / "CANARY"
    for name in payloads(canary):
        program = loads_and_scores(SPEC, name)
        assert program is not None
        docstring = ast.get_docstring(ast.parse(program.source))
        assert PurePath(name).name in docstring
    assert not canary.exists()


@given(name=HOSTILE_TEXT)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_spec_names_cannot_run_code(tmp_path, name):
    assert loads_and_scores(SPEC, name) is not None
    assert not any(tmp_path.iterdir())


def file_names(canary: Path) -> list[str]:
    """The payloads that a file system accepts as one file name (no `/`, no NUL, encodable)."""
    names = []
    for payload in payloads(canary):
        name = payload.replace("/", "_").replace("\x00", "_") + ".kd"
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            continue
        names.append(name)
    return names


def test_file_names_cannot_run_code_in_load_compile_and_score(tmp_path):
    canary = tmp_path / "CANARY"
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"completion": "<answer>1</answer>"}) + "\n")
    for index, name in enumerate(file_names(canary)):
        folder = tmp_path / f"case{index}"
        folder.mkdir()
        spec = folder / name
        spec.write_text(SPEC)
        assert kdsl.load(spec).score(["<answer>1</answer>"]).reward.tolist() == [1.0]
        module_path = folder / "compiled.py"
        assert main(["compile", str(spec), "-o", str(module_path)]) == 0
        loaded = importlib.util.spec_from_file_location(f"compiled_{index}", module_path)
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
        assert module.score(["<answer>1</answer>"])["reward"].tolist() == [1.0]
        assert main(["score", str(spec), "--data", str(data), "--out", str(folder / "o.jsonl")]) == 0
    assert not canary.exists()


def test_imported_file_names_cannot_run_code(tmp_path):
    canary = tmp_path / "CANARY"
    for index, name in enumerate(file_names(canary)):
        folder = tmp_path / f"case{index}"
        folder.mkdir()
        (folder / name).write_text("spec helper version 1\ndef twice(x) = 2 * x\n")
        (folder / "main.kd").write_text(
            f"spec main version 1\nimport {kd_string(name)} as h\ninput {{\n  v: float\n}}\n"
            "level l {\n  rule r: h.twice(v) > 1\n}\n")
        if not name.isprintable() or "\\" in name:  # refused before any file is read
            with pytest.raises(kdsl.KdslError, match="written with `/` and printable characters"):
                kdsl.load(folder / "main.kd")
            continue
        program = kdsl.load(folder / "main.kd")
        assert program.score([""], v=[1.0]).rules["r"].tolist() == [1.0]
        assert f"{quote(name)}:2" in program.source  # the inlined def's `# file:line` comment
    assert not canary.exists()


STRING_POSITIONS = """spec strings version 1
input {{
  label: enum Kind {{ Alpha ({s}), Beta }}
  text: str
}}
output {{
  reply: tag "answer"
  found: regex {s}
  kind: reply as Kind
  said: reply as str
}}
mask after {s}
level l {{
  rule a: mentions(reply, {s})
  rule b: occurrences(reply, {s}) >= 0
  rule c: said == {s} or said != {s}
  rule d: present(found) or kind == Alpha
  rule e: said in {{{s}, "x"}}
  rule f: normalize(text) == normalize(reply) or matches(reply, {s})
}}
"""


@pytest.mark.parametrize("index", range(len(payloads(Path("/x")))))
def test_spec_strings_cannot_run_code(tmp_path, index):
    canary = tmp_path / "CANARY"
    payload = payloads(canary)[index]
    literal = kd_string(payload)
    text = STRING_POSITIONS.format(s=literal)
    if any("\ud800" <= char <= "\udfff" for char in payload):  # not text: refused, not quoted
        with pytest.raises(kdsl.KdslError, match="is not a Unicode character"):
            kdsl.loads(text, "strings.kd")
        return
    try:
        program = kdsl.loads(text, "strings.kd")
    except kdsl.KdslError as err:
        # The only refusals allowed: a pattern RE2 rejects, a string that is not text.
        assert "regex is not accepted" in str(err) or "not a Unicode character" in str(err)
        program = kdsl.loads(text.replace(f"regex {literal}", 'regex "x"')
                             .replace(f"matches(reply, {literal})", 'matches(reply, "x")'),
                             "strings.kd")
    scores = program.score([f"<answer>{payload}</answer>", "<answer>Beta</answer>"],
                           text=[payload, None])
    assert scores.reward.isfinite().all()
    assert payload.strip() in program.module.STRINGS  # the string reached the program unchanged
    assert not canary.exists()


@given(st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}(\.[A-Za-z_][A-Za-z0-9_]{0,6})?",
                              fullmatch=True), min_size=2, max_size=8, unique=True))
@settings(max_examples=300, deadline=None)
def test_generated_names_never_collide(names):
    generated = [generated_name("table", name) for name in names]
    assert len(set(generated)) == len(names)
    assert all(g.isidentifier() for g in generated)


def test_generated_names_refuse_what_is_not_a_spec_name():
    for bad in ("a b", "a;b", "1a", "a..b", "", "a\nb", "a.", "é"):
        with pytest.raises(ValueError):
            generated_name("t", bad)


def test_a_local_table_and_an_imported_one_with_the_same_mangled_name_stay_apart(tmp_path):
    (tmp_path / "a.kd").write_text("spec a version 1\ntable b(x: float) -> float {\n  _ -> 1\n}\n")
    (tmp_path / "main.kd").write_text(
        'spec main version 1\nimport "a.kd" as a\ninput {\n  v: float\n}\n'
        "table a_b(x: float) -> float {\n  _ -> 2\n}\n"
        "let imported = a.b(v)\nlet local = a_b(v)\n"
        "level l {\n  rule r: imported == 1 and local == 2\n}\n")
    scores = kdsl.load(tmp_path / "main.kd").score([""], v=[0.0])
    assert scores.values["imported"].tolist() == [1.0] and scores.values["local"].tolist() == [2.0]
