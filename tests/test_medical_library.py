"""The medical specs of the bundled library, as a whole.

Every spec under domain_specs/medical/ checks without a warning, its labelled cases (example
blocks and NAME.kdtest.jsonl) pass, they reach every rule outcome and every table row (100%
coverage), and they catch every mutant `kdsl test --mutate` makes of the spec's thresholds,
comparisons and table cells. The pytest plugin runs the same cases one by one; this test keeps the
coverage and the mutation score from slipping when a spec or its cases change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import kdsl
from kdsl.tools import testing
from kdsl.tools.mutation import mutate

MEDICAL = Path(__file__).resolve().parent.parent / "domain_specs" / "medical"
SPECS = sorted(MEDICAL.glob("*.kd"))


def test_the_library_holds_the_medical_specs():
    names = {p.stem for p in SPECS}
    assert {"curb65", "cha2ds2_vasc", "fleischner", "tirads", "vqa", "pneumonia_perspectives"} <= names


@pytest.fixture(scope="module", params=SPECS, ids=lambda p: p.stem)
def suite(request):
    return testing.run_suite(testing.load_suite(request.param))


def test_checks_without_warnings(suite):
    program = kdsl.load(suite.spec)
    assert program.warnings == [], [w.message for w in program.warnings]


def test_cases_pass(suite):
    assert len(suite.outcomes) >= 10
    failed = [(o.case.name, o.error or [c.expectation for c in o.failures])
              for o in suite.outcomes if not o.passed]
    assert not failed


def test_cases_cover_every_rule_outcome_and_table_row(suite):
    cov = testing.coverage(suite)
    assert cov.percent == 100.0, testing.format_coverage(suite, cov)


def test_cases_catch_every_mutant(suite):
    report = mutate(suite)
    assert report.caught, "no mutant was made"
    assert not report.survived, [f"line {m.line}: {m.describe()}" for m in report.survived]
