"""An example's values are checked against the inputs by `kdsl check`, each bad field located."""

import pytest

from kdsl.cli import main
from kdsl.compiler import check_source

INPUTS = """spec values version 1

input {
  n: int
  x: float
  ok: bool
  name: str
  sr: vector[3]
  box: box
  gold: boxes
  label: enum Cover { Forest ("woodland"), Water }
}

level main {
  rule r: n > 1 and x > 0 and ok and name == "a" and sr[0] > 0 and box.x2 > 0
  rule s: box_count(gold) >= 0 and label == Forest
}
"""


def errors_of(fields: str) -> list[tuple[int, int, str]]:
    text = INPUTS + f'\nexample "case" {{\n  completion: "x"\n{fields}\n  expect r\n}}\n'
    result = check_source(text, "values.kd")
    first = text.count("\n", 0, text.index('example "case"')) + 3  # the line of the first field
    return [(d.span.line - first, d.span.column, d.message) for d in result.errors]


def test_every_bad_field_is_its_own_located_error():
    found = errors_of('  n: "fast"\n  ok: maybe\n  sr: [1, 2]\n  label: Forrest\n  box: [0, 0, "a", 1]')
    assert [(line, column) for line, column, _ in found] == [(0, 6), (1, 7), (2, 7), (3, 10), (4, 15)]
    messages = [m for _, _, m in found]
    assert messages[0] == '`n` is an int input: expected a number, got "fast"'
    assert messages[1] == "`ok` is a bool input: expected true or false, got `maybe`"
    assert messages[2] == "`sr` is a vector[3] input: expected 3 numbers, got 2"
    assert messages[3] == ("`Forrest` is not a member of enum Cover (did you mean `Forest`?); its "
                           "members are Forest, Water")
    assert messages[4] == '`box` is a box input: expected numbers, got "a"'


@pytest.mark.parametrize("fields", [
    '  n: 3\n  x: 2.5\n  ok: true\n  name: "a"\n  sr: [1, 2, 3]\n  box: [0, 0, 1, 1]\n  gold: [[0, 0, 1, 1]]\n  label: Water',
    '  ok: yes\n  label: woodland\n  name: Forest',  # bool words, enum synonyms and bare names as scoring reads them
    '  ok: 1\n  label: 1\n  gold: []',  # 0/1 for a bool, a member's index, no boxes
    '  n: none\n  sr: [1, none, 3]\n  label: none',  # missing values are allowed
    '  x: true',  # a bool is a number to scoring
])
def test_values_scoring_accepts_are_accepted(fields):
    assert errors_of(fields) == []


@pytest.mark.parametrize("fields, message", [
    ("  n: 2.5", "`n` is an int input: expected a whole number, got 2.5"),
    ("  x: [1]", "`x` is a float input: expected a number, got [1]"),
    ("  name: 3", "`name` is a str input: expected a string, got 3"),
    ("  sr: 0.5", "`sr` is a vector[3] input: expected 3 numbers, got 0.5"),
    ("  gold: [0, 0, 1, 1]", "`gold` is a boxes input: expected a list of boxes [[x1, y1, x2, y2], "
                           "...], got [0, 0, 1, 1]"),
    ("  gold: [[0, 0, 1]]", "`gold` is a boxes input: expected a box [x1, y1, x2, y2], got 3"),
    ("  label: 2", "`label` is enum Cover: expected one of Forest, Water (or an index below 2), got 2"),
    ('  label: "Sea"', "`Sea` is not a member of enum Cover; its members are Forest, Water"),
    ("  label: [1, 2, 3, 4, 5, 6, 7]", "`label` is enum Cover: expected one of Forest, Water, got a "
                                      "list of 7 values"),
    ("  ok: 2", "`ok` is a bool input: expected true or false, got 2"),
])
def test_wrong_values_say_what_was_expected(fields, message):
    assert [m for _, _, m in errors_of(fields)] == [message]


def test_kdsl_test_reports_the_bad_example_not_a_cascade(tmp_path, capsys):
    spec = tmp_path / "cascade.kd"
    spec.write_text(INPUTS + '''
example "broken" {
  completion: "x"
  n: "fast"
  expect not r
}

example "better" {
  completion: "x"
  n: 3
  expect reward > "broken"
}
''', encoding="utf-8")
    assert main(["test", str(spec)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert '`n` is an int input: expected a number, got "fast"' in text
    assert "could not be scored" not in text
