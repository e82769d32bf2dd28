"""Labelled examples: every expectation kind passing and failing, .kdtest.jsonl files with raster
fixtures, `kdsl test` (table, traces, -k, JUnit XML, coverage, mutation), and the pytest plugin."""

from __future__ import annotations

import json
import textwrap
from xml.etree import ElementTree

import numpy as np
import pytest

from kdsl.cli import main
from kdsl.errors import KdslError
from kdsl.tools.testing import compare, jsonl_cases, load_suite, run_suite

SPEC = """\
spec nodules version 1
input {
  kind: enum Kind { Solid, GroundGlass ("ground-glass", "ggo") }
  size_mm: float in 0..100
  patch: raster[2] bands(red, nir) nodata -1
}
output {
  reply: tag "answer"
  plan: reply as FollowUp
  size: tag "size" as float
}
enum FollowUp { Nothing, CT12, CT6 }
table followup(kind: Kind, size_mm: float) -> FollowUp {
  Solid, < 6 -> Nothing
  Solid, 6..8 -> CT12
  Solid, > 8 -> CT6
  GroundGlass, _ -> CT12
}
let expected = followup(kind, size_mm)
let error_mm = abs(size - size_mm)
level format gate {
  rule answers: present(plan)
}
level guideline weight 2 {
  rule follows_table: plan == expected
  rule size_close: error_mm <= 1 soft 1
  rule big_needs_ct: when size_mm > 8: plan == CT6
}
level image weight 0.5 {
  rule green_patch: mean((patch.nir - patch.red) / (patch.nir + patch.red)) > 0.2
}
example "small solid, right" {
  completion: "<size>4</size><answer>Nothing</answer>"
  kind: Solid
  size_mm: 4
  patch: fixture "green.npy"
  expect answers, follows_table, size_close, skip big_needs_ct, green_patch, reward == 3.5
}
example "big solid, wrong" {
  completion: "<size>12</size><answer>CT12</answer>"
  kind: Solid
  size_mm: 12
  expect not follows_table, not big_needs_ct, level.guideline == 0.333 +- 0.01, reward < "small solid, right"
}
"""


@pytest.fixture
def spec(tmp_path):
    green = np.stack([np.full((4, 4), 0.05), np.full((4, 4), 0.4)])
    green[:, 0, 0] = -1  # a nodata pixel
    np.save(tmp_path / "green.npy", green)
    path = tmp_path / "nodules.kd"
    path.write_text(SPEC)
    return path


def write_cases(path, cases):
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))


def outcomes_by_name(spec_path):
    suite = run_suite(load_suite(spec_path))
    return {o.case.name: o for o in suite.outcomes}


def test_examples_in_the_spec_pass(spec):
    outcomes = outcomes_by_name(spec)
    assert all(o.passed for o in outcomes.values()), {n: o.failures for n, o in outcomes.items()}
    assert outcomes["big solid, wrong"].observed["lets"]["expected"] is not None


EXPECTATIONS = [  # (expectation, holds for "<size>5</size><answer>Nothing</answer>", Solid, 5 mm)
    ("follows_table", True), ("not follows_table", False),
    ("skip big_needs_ct", True), ("big_needs_ct", False), ("not big_needs_ct", False),
    ("skip follows_table", False),
    ("reward == 3", True), ("reward == 3.01", False), ("reward == 3.01 +- 0.05", True),
    ("reward != 3", False), ("reward >= 3", True), ("reward > 3", False), ("reward > 3 +- 0.1", True),
    ("reward <= 2.9", False), ("reward < 3.5", True), ("reward < 3", False),
    ("level.guideline == 1", True), ("guideline >= 0.99", True), ("level.image == 1", False),
    ("rule.size_close == 1", True), ("size_close < 1", False),
    ("let.error_mm == 0", True), ("error_mm > 0", False),
    ("rule.big_needs_ct == 1", False),  # it does not apply, so it has no value
    ('reward > "worse"', True), ('reward < "worse"', False), ('level.format == "worse"', True),
]


@pytest.mark.parametrize(("expectation", "holds"), EXPECTATIONS, ids=[e for e, _ in EXPECTATIONS])
def test_each_expectation_passes_and_fails(spec, tmp_path, expectation, holds):
    write_cases(tmp_path / "nodules.kdtest.jsonl", [
        {"name": "probe", "completion": "<size>5</size><answer>Nothing</answer>", "kind": "Solid",
         "size_mm": 5, "expect": [expectation]},
        {"name": "worse", "completion": "<size>9</size><answer>CT6</answer>", "kind": "solid",
         "size_mm": 5},
    ])
    outcome = outcomes_by_name(spec)["probe"]
    assert outcome.error is None
    assert outcome.passed is holds, outcome.checks
    if not holds:
        (check,) = outcome.failures
        assert check.expectation == expectation and check.observed


def test_failure_messages_say_what_was_seen(spec, tmp_path):
    write_cases(tmp_path / "nodules.kdtest.jsonl", [
        {"name": "probe", "completion": "<answer>CT6</answer>", "columns": {"kind": "Solid", "size_mm": 5},
         "expect": ["follows_table", "big_needs_ct", "let.error_mm < 1", "reward >= 3"]}])
    checks = {c.expectation: c.observed for c in outcomes_by_name(spec)["probe"].failures}
    assert checks == {"follows_table": "rule `follows_table` scored 0",
                      "big_needs_ct": "rule `big_needs_ct` did not apply",
                      "let.error_mm < 1": "let `error_mm` is invalid",
                      "reward >= 3": "reward is 1"}


def test_compare_tolerances():
    assert compare("==", 1.0000004, 1.0, None) and not compare("==", 1.01, 1.0, None)
    assert compare(">=", 0.9999995, 1.0, None) and not compare(">", 1.0, 1.0, None)
    assert compare("<", 1.05, 1.0, 0.1) and not compare("<", 1.0, 1.0, None)


def test_jsonl_raster_fixture_and_bad_lines(spec, tmp_path):
    brown = np.stack([np.full((3, 3), 0.3), np.full((3, 3), 0.32)])
    np.save(tmp_path / "brown.npy", brown)
    write_cases(tmp_path / "nodules.kdtest.jsonl", [
        {"name": "brown patch", "completion": "<answer>Nothing</answer>", "kind": "Solid", "size_mm": 3,
         "patch": {"fixture": "brown.npy"}, "expect": ["not green_patch", "level.image == 0"]}])
    assert outcomes_by_name(spec)["brown patch"].passed
    bad = tmp_path / "bad.kdtest.jsonl"
    bad.write_text('{"name": "a", "expect": ["reward >="]}\nnot json\n'
                   '{"name": "c", "patch": {"fixture": "missing.npy"}}\n{"name": "d", "columns": 3}\n')
    with pytest.raises(KdslError) as err:
        jsonl_cases(bad, str(spec))
    lines = [(d.span.line, d.message) for d in err.value.diagnostics]
    assert [line for line, _ in lines] == [1, 2, 3, 4]
    # Read with the grammar's expectation rule: worded for one expectation, not for a spec file.
    assert lines[0][1] == ('cannot read expectation "reward >=": unexpected end of expectation; '
                           'expected a number, a string, `-`')
    assert "not a JSON object" in lines[1][1]
    assert "column `patch`: cannot read fixture" in lines[2][1]
    assert "field `columns` must be an object" in lines[3][1]


def test_unknown_names_in_jsonl_cases_are_reported(spec, tmp_path):
    write_cases(tmp_path / "nodules.kdtest.jsonl", [
        {"name": "x", "sise_mm": 3, "expect": ["follows_tabel", "skip level.format", 'reward < "nobody"']}])
    with pytest.raises(KdslError) as err:
        load_suite(spec)
    messages = [d.message for d in err.value.diagnostics]
    assert len(messages) == 4 and all(d.span.line == 1 for d in err.value.diagnostics)
    assert "compared with \"nobody\", which is not a case" in messages[0]
    assert "sets `sise_mm`, which is not an input of the spec (did you mean `size_mm`?)" in messages[1]
    assert "expects `follows_tabel`, which is not a rule, level or let (did you mean `follows_table`?)" \
        in messages[2]
    assert "`format` is not a rule; compare it instead" in messages[3]


def test_a_bad_value_is_an_error_of_that_case_only(spec, tmp_path):
    write_cases(tmp_path / "nodules.kdtest.jsonl", [
        {"name": "typo", "completion": "<answer>CT6</answer>", "kind": "Solidd", "size_mm": 9},
        {"name": "fine", "completion": "<answer>CT6</answer>", "kind": "Solid", "size_mm": 9,
         "expect": ["follows_table"]}])
    outcomes = outcomes_by_name(spec)
    assert outcomes["fine"].passed and outcomes["small solid, right"].passed
    assert "nodules.kdtest.jsonl:1" in outcomes["typo"].error and "`kind`" in outcomes["typo"].error


def test_relative_example_names_are_checked_in_the_spec(tmp_path):
    path = tmp_path / "r.kd"
    path.write_text('spec r version 1\nlevel l {\n  rule r: 1 < 2\n}\n'
                    'example "a" {\n  expect reward < "b"\n}\n')
    assert main(["check", str(path)]) == 1


# ---- the command -------------------------------------------------------------------------------

def test_cli_table_traces_junit_and_k(spec, tmp_path, capsys):
    write_cases(tmp_path / "nodules.kdtest.jsonl", [
        {"name": "wrong on purpose", "completion": "<size>7</size><answer>CT6</answer>", "kind": "Solid",
         "size_mm": 7, "expect": ["follows_table", "reward > 3"]}])
    junit = tmp_path / "report.xml"
    code = main(["test", str(spec), "--junit-xml", str(junit)])
    out = capsys.readouterr().out
    assert code == 1
    assert "PASS    small solid, right" in out and "FAIL    wrong on purpose" in out
    assert "expected `follows_table`: rule `follows_table` scored 0" in out
    assert "2 passed, 1 failed" in out
    root = ElementTree.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    failure = root.find(".//testcase[@name='wrong on purpose']/failure")
    assert "follows_table: rule `follows_table` scored 0" in failure.get("message")
    assert main(["test", str(spec), "-k", "solid"]) == 0
    out = capsys.readouterr().out
    assert "2 passed, 0 failed" in out and "wrong on purpose" not in out
    assert main(["test", str(tmp_path / "nodules.kdtest.jsonl"), "-k", "not solid"]) == 1
    assert "0 passed, 1 failed" in capsys.readouterr().out
    assert main(["test", str(spec), "-k", "nothing matches"]) == 1
    assert "no cases found" in capsys.readouterr().err
    assert main(["test", str(tmp_path / "nope.kd")]) == 2


def test_cli_reports_spec_problems(tmp_path, capsys):
    path = tmp_path / "broken.kd"
    path.write_text('spec b version 1\nlevel l {\n  rule r: x > 1\n}\nexample "e" {\n  expect r\n}\n')
    assert main(["test", str(path)]) == 1
    assert "broken.kd:3:11: error: unknown name `x`" in capsys.readouterr().err


GAPS = """\
spec gaps version 1
input {
  size: float in 0..50
}
enum Plan { Wait, Scan }
table plan_for(size: float) -> Plan {
  < 6 -> Wait
  >= 6 -> Scan
}
output {
  reply: tag "answer"
  said: reply as Plan
}
level l {
  rule follows: said == plan_for(size)
  rule small_is_fine: when size < 6: said == Wait
}
example "small waits" {
  completion: "<answer>Wait</answer>"
  size: 3
  expect follows, small_is_fine
}
"""


def test_coverage_and_mutation_on_a_spec_with_known_gaps(tmp_path, capsys):
    path = tmp_path / "gaps.kd"
    path.write_text(GAPS)
    assert main(["test", str(path), "--coverage", "--fail-under", "60", "--mutate"]) == 1
    out, err = capsys.readouterr()
    # follows applies and holds but never fails; small_is_fine also is never skipped; the second
    # table row is never reached: 5 of 9 goals.
    assert "follows        l      yes (1)  yes (1)  NO (0)  -" in out
    assert "small_is_fine  l      yes (1)  yes (1)  NO (0)  NO (0)" in out
    assert "row 2  line 8  NO (0)" in out
    assert "55.6% covered (5 of 9 goals)" in out
    assert "coverage 55.6% is under 60%" in err
    # Moving a table boundary opens a gap or an overlap, which the checker rejects; what no
    # example pins down is the `when` boundary and the result of the row never reached.
    assert "(3 of 7 mutants caught; 6 rejected by the checker)" in out
    assert "gaps.kd:8:11: survived: result `Scan` -> `Wait`" in out
    assert "gaps.kd:16:33: survived: comparison `<` -> `<=`" in out
    assert "gaps.kd:16:35: survived: threshold `6` -> `5`" in out
    assert "gaps.kd:7:10: survived" not in out  # Wait -> Scan breaks the example: caught
    # Examples at the boundary and on the other side catch them.
    (tmp_path / "gaps.kdtest.jsonl").write_text(
        json.dumps({"name": "six scans", "completion": "<answer>Scan</answer>", "size": 6,
                    "expect": ["follows", "skip small_is_fine"]}) + "\n" +
        json.dumps({"name": "just under", "completion": "<answer>Scan</answer>", "size": 5.9,
                    "expect": ["not follows", "not small_is_fine"]}) + "\n")
    assert main(["test", str(path), "--coverage", "--fail-under", "100", "--mutate"]) == 0
    out = capsys.readouterr().out
    assert "100.0% covered (9 of 9 goals)" in out
    assert "row 2  line 8  yes (1)" in out
    assert "100.0% (7 of 7 mutants caught" in out and "survived" not in out


def test_a_mutation_score_under_the_threshold_fails_the_run(tmp_path, capsys):
    path = tmp_path / "gaps.kd"
    path.write_text(GAPS)
    assert main(["test", str(path), "--fail-under-mutation", "50"]) == 1  # implies --mutate
    out = capsys.readouterr().out
    assert "(3 of 7 mutants caught; 6 rejected by the checker)" in out
    assert "gaps.kd:16:35: survived: threshold `6` -> `5`" in out
    assert out.rstrip().endswith("gaps.kd: mutation score 42.9% is under 50%")
    assert main(["test", str(path), "--fail-under-mutation", "40"]) == 0
    assert "is under" not in capsys.readouterr().out


# ---- the pytest plugin ---------------------------------------------------------------------------

pytest_plugins = ["pytester"]


def make_project(pytester):
    pytester.makefile(".kd", gaps=GAPS)
    pytester.makefile(".kdtest.jsonl", gaps=textwrap.dedent("""\
        {"name": "six scans", "completion": "<answer>Scan</answer>", "size": 6, "expect": ["follows"]}
        {"name": "wrong on purpose", "completion": "<answer>Wait</answer>", "size": 40, "expect": ["follows"]}
        """))


def test_pytest_collects_examples_and_jsonl_cases(pytester):
    make_project(pytester)
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*gaps.kd::small waits PASSED*", "*gaps.kdtest.jsonl::six scans PASSED*",
                                 "*gaps.kdtest.jsonl::wrong on purpose FAILED*"])
    result.stdout.fnmatch_lines(["*example \"wrong on purpose\" failed*",
                                 "*expected `follows`: rule `follows` scored 0*"])


def test_pytest_k_and_x(pytester):
    make_project(pytester)
    pytester.runpytest("-k", "scans", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.runpytest("-k", "not wrong", "-p", "no:cacheprovider").assert_outcomes(passed=2)
    result = pytester.runpytest("-x", "-k", "wrong or scans", "-p", "no:cacheprovider")
    assert result.parseoutcomes().get("failed") == 1
    assert "stopping after 1 failures" in result.stdout.str()


def test_pytest_xdist(pytester):
    make_project(pytester)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)


def test_pytest_reports_a_broken_spec_as_one_failure(pytester):
    pytester.makefile(".kd", broken='spec b version 1\nlevel l {\n  rule r: x > 1\n}\n'
                      'example "e" {\n  expect r\n}\n')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*broken.kd:3:11: error: unknown name `x`*"])


def test_table_rows_are_covered_in_a_spec_that_imports_another(tmp_path):
    from kdsl.tools.testing import coverage

    (tmp_path / "lib.kd").write_text(textwrap.dedent("""\
        spec lib version 1
        table sign(x: float) -> int {
          < 0  -> -1
          >= 0 -> 1
        }
        """), encoding="utf-8")
    spec = tmp_path / "main.kd"
    spec.write_text(textwrap.dedent("""\
        spec main version 1
        import "lib.kd" as lib
        input {
          x: float
        }
        output {
          answer: tag "answer" as float
        }
        table size(x: float) -> int {
          < 10  -> 0
          10..100 -> 1
          > 100 -> 2
        }
        level correct {
          rule right_size: answer == size(x)
          rule right_sign: answer == lib.sign(x)
        }
        example "small" {
          completion: "<answer>0</answer>"
          x: 5
          expect right_size
        }
        example "large" {
          completion: "<answer>2</answer>"
          x: 500
          expect right_size
        }
        example "no value reaches no row" {
          completion: "<answer>1</answer>"
          expect reward == 0
        }
        """), encoding="utf-8")
    cov = coverage(run_suite(load_suite(spec)))
    assert cov.note == ""
    # Only the spec's own table is listed; rows 1 and 3 were reached once each, row 2 never.
    assert cov.table_rows == {"size": [1, 0, 1]}
    assert cov.table_lines == {"size": [10, 11, 12]}


def test_a_folder_run_leaves_out_library_specs_without_cases(tmp_path, capsys):
    (tmp_path / "lib.kd").write_text("spec lib version 1\ndef half(x) = x / 2\n", encoding="utf-8")
    (tmp_path / "main.kd").write_text(textwrap.dedent("""\
        spec main version 1
        import "lib.kd" as lib
        input {
          x: float
        }
        level l {
          rule small: lib.half(x) < 1
        }
        example "one" {
          completion: ""
          x: 1
          expect small
        }
        """), encoding="utf-8")
    assert main(["test", str(tmp_path)]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out
    # Named explicitly, a spec without levels is still reported.
    assert main(["test", str(tmp_path / "lib.kd")]) == 1


def test_pytest_gates_on_the_mutation_score(pytester):
    pytester.makefile(".kd", gaps=GAPS)
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", "--kdsl-fail-under-mutation", "50")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*gaps.kd::mutation FAILED*", "*gaps.kd:8:11: survived: result `Scan` -> `Wait`*",
                                 "*mutation score 42.9% is under 50%*"])
    pytester.runpytest("-p", "no:cacheprovider", "--kdsl-fail-under-mutation", "40").assert_outcomes(passed=2)
    pytester.runpytest("-p", "no:cacheprovider", "--kdsl-mutate").assert_outcomes(passed=1, failed=1)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)  # off unless asked


def test_an_expectation_with_extra_words_says_where_it_should_have_ended():
    from kdsl.errors import Span
    from kdsl.tools.testing import parse_expectation

    assert parse_expectation("level.knowledge == 1 +- 0.01", Span("cases")).tolerance == 0.01
    with pytest.raises(KdslError) as err:
        parse_expectation("not applies correct", Span("cases.kdtest.jsonl", 4, 1))
    assert err.value.diagnostics[0].message == (
        'cannot read expectation "not applies correct": unexpected `correct`; '
        "expected the end of the expectation, `.`")
    assert err.value.diagnostics[0].span.line == 4
