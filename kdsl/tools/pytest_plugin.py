"""pytest plugin: a spec's labelled examples as test items.

Registered through the ``pytest11`` entry point, so installing kdsl is enough: ``pytest specs/``
collects every ``.kd`` file that has ``example`` blocks and every ``*.kdtest.jsonl`` file, one item
per case, named after the case (so ``-k`` selects by case name, and ``-x`` and pytest-xdist work as
for any test). All cases of one spec are scored together, once per process, the first time one of
them runs. A spec that does not check or cases that cannot be read give one failing item with
kdsl's diagnostics.

Nothing heavy is imported until a spec is actually collected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_SUITES = pytest.StashKey[dict]()


def pytest_addoption(parser):
    group = parser.getgroup("kdsl", "kdsl spec examples")
    group.addoption("--kdsl-mutate", action="store_true",
                    help="add one item per spec that mutation-tests its examples and fails when a "
                         "mutant survives (or the score is under --kdsl-fail-under-mutation)")
    group.addoption("--kdsl-fail-under-mutation", type=float, metavar="PERCENT", default=None,
                    help="the mutation score a spec needs (implies --kdsl-mutate)")


def pytest_configure(config):
    config.stash[_SUITES] = {}


def _mutation_threshold(config) -> float | None:
    """The score a spec's mutation item needs, or None when mutation testing is off."""
    threshold = config.getoption("kdsl_fail_under_mutation", None)
    if threshold is None and config.getoption("kdsl_mutate", False):
        return 100.0
    return threshold


def pytest_collect_file(file_path: Path, parent):
    name = file_path.name
    if name.endswith(".kdtest.jsonl"):
        return KdslCasesFile.from_parent(parent, path=file_path)
    if name.endswith(".kd"):
        try:
            text = file_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        from kdsl.tools.testing import has_example_blocks  # light: no torch, no lark

        if has_example_blocks(text):
            return KdslCasesFile.from_parent(parent, path=file_path)
    return None


def _suite(config, spec: str):
    """The run suite of a spec, or the KdslError that stopped it (cached per process)."""
    from kdsl.errors import KdslError
    from kdsl.tools import testing

    cache = config.stash[_SUITES]
    if spec not in cache:
        try:
            cache[spec] = testing.load_suite(spec)
        except KdslError as err:
            cache[spec] = err
    return cache[spec]


class KdslCasesFile(pytest.File):
    """The cases written in one file (a spec's examples, or a .kdtest.jsonl file)."""

    def collect(self):
        from kdsl.errors import KdslError
        from kdsl.tools import testing

        path = self.path
        try:
            spec = str(testing.spec_for_jsonl(path)) if path.name.endswith(testing.JSONL_SUFFIX) else str(path)
        except KdslError as err:
            yield KdslProblemItem.from_parent(self, name="cases", error=err)
            return
        suite = _suite(self.config, spec)
        if isinstance(suite, KdslError):
            yield KdslProblemItem.from_parent(self, name="check", error=suite)
            return
        here = path.resolve()
        for case in suite.cases:
            if Path(case.file).resolve() == here:
                yield KdslCaseItem.from_parent(self, name=case.name, spec=spec, case_name=case.name,
                                               line=case.line)
        threshold = _mutation_threshold(self.config)
        if threshold is not None and Path(spec).resolve() == here:
            yield KdslMutationItem.from_parent(self, name="mutation", spec=spec, threshold=threshold)


class KdslCaseFailed(Exception):
    def __init__(self, report: str):
        super().__init__(report)
        self.report = report


class _ReportsKdslFailures:
    """Items whose failure is a kdsl report, shown as it is (not as a Python traceback)."""

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, KdslCaseFailed):
            return excinfo.value.report
        return super().repr_failure(excinfo, style)


class KdslCaseItem(pytest.Item):
    def __init__(self, *, spec: str, case_name: str, line: int, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.case_name = case_name
        self.line = line

    def runtest(self):
        from kdsl.tools import testing

        suite = _suite(self.config, self.spec)
        if not suite.outcomes:
            testing.run_suite(suite)
        outcome = next(o for o in suite.outcomes if o.case.name == self.case_name)
        if outcome.passed:
            return
        if outcome.error is not None:
            raise KdslCaseFailed(outcome.error)
        lines = [f"expected `{c.expectation}`: {c.observed}" for c in outcome.failures]
        lines += ["", *testing.trace(suite, outcome).splitlines()]
        raise KdslCaseFailed("\n".join(lines))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, KdslCaseFailed):
            return f"{self.path}:{self.line}: example \"{self.case_name}\" failed\n{excinfo.value.report}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, self.line - 1, self.case_name


class KdslMutationItem(_ReportsKdslFailures, pytest.Item):
    """Mutation-tests one spec's cases; fails when its score is under the threshold, naming
    every surviving mutant by its spec line."""

    def __init__(self, *, spec: str, threshold: float, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.threshold = threshold

    def runtest(self):
        from kdsl.tools import testing
        from kdsl.tools.mutation import format_report, mutate

        suite = _suite(self.config, self.spec)
        if not suite.outcomes:
            testing.run_suite(suite)
        report = mutate(suite)
        if report.score < self.threshold:
            raise KdslCaseFailed(format_report(self.spec, report, self.threshold))

    def reportinfo(self):
        return self.path, 0, self.name


class KdslProblemItem(_ReportsKdslFailures, pytest.Item):
    """Stands for a spec or case file that could not be loaded, and fails with the reason."""

    def __init__(self, *, error, **kwargs):
        super().__init__(**kwargs)
        self.error = error

    def runtest(self):
        raise KdslCaseFailed(str(self.error))

    def reportinfo(self):
        return self.path, 0, f"{self.path.name}::{self.name}"
