"""A row's completion is read one way by every tool (kdsl.io.rows): a missing, null or malformed
completion is reported by `kdsl score`, `kdsl explain` and `kdsl test` in the same words."""

import json

import pytest

from kdsl.errors import KdslError
from kdsl.io.rows import MISSING, completion_problem, completion_text
from kdsl.tools.testing import jsonl_cases
from tests.test_cli import run

SPEC = """spec s version 1
output {
  a: tag "a"
}
level l {
  rule r: present(a)
}
"""
BAD = {"null": None, "a number": 5, "a list of numbers": [1, 2]}


def test_completion_values():
    assert completion_text("<a>x</a>") == "<a>x</a>"
    assert completion_text([{"role": "assistant", "content": "<a>x</a>"}]) == "<a>x</a>"
    assert completion_problem("text") is None
    assert completion_problem(MISSING) == "missing; every row needs a completion"
    assert completion_problem(None) == "null; every row needs a completion"
    assert completion_problem(5).startswith("expected a string or a list of chat messages, got 5")


@pytest.mark.parametrize("kind", sorted(BAD))
def test_score_explain_and_test_say_the_same(kind, tmp_path):
    spec = tmp_path / "s.kd"
    spec.write_text(SPEC)
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"completion": BAD[kind]}) + "\n")
    problem = completion_problem(BAD[kind])
    words = f"column `completion`: {problem}"

    _, out, err = run("score", str(spec), "--data", str(data))
    assert f"row 0, {words}" in out + err
    code, _, err = run("explain", str(spec), "--data", str(data), "--row", "0")
    assert code == 1 and f"row 0, {words}" in err
    cases = tmp_path / "s.kdtest.jsonl"
    cases.write_text(json.dumps({"name": "case", "completion": BAD[kind], "expect": ["not r"]}) + "\n")
    with pytest.raises(KdslError) as caught:
        jsonl_cases(cases, str(spec))
    assert caught.value.diagnostics[0].message == words


def test_chat_completions_are_the_same_text_everywhere(tmp_path):
    spec = tmp_path / "s.kd"
    spec.write_text(SPEC)
    chat = [{"role": "assistant", "content": "<a>yes</a>"}]
    cases = tmp_path / "s.kdtest.jsonl"
    cases.write_text(json.dumps({"name": "chat", "completion": chat, "expect": ["r"]}) + "\n")
    (case,) = jsonl_cases(cases, str(spec))
    assert case.completion == "<a>yes</a>"
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"completion": chat}) + "\n")
    code, out, err = run("explain", str(spec), "--data", str(data), "--row", "0")
    assert code == 0, err
    assert "holds" in out or "1.000" in out
