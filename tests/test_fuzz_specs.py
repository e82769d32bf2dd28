"""A bounded slice of the spec fuzzer (tests/spec_fuzzer.py) in every test run: mutants of the
shipped specs go through check, compile, load and score, and nothing but a KdslError may come out.
benchmarks/fuzz_specs.py runs the long campaigns."""

import pytest
from spec_fuzzer import Mutator, run_case


@pytest.mark.parametrize("seed", range(4))
def test_mutated_specs_raise_nothing_but_kdsl_errors(seed):
    mutator = Mutator(seed=10_000 + seed)
    outcomes = []
    for _ in range(150):
        mutant = mutator.mutant()
        try:
            outcomes.append(run_case(mutant).kind)
        except Exception as err:  # noqa: BLE001 - the finding, reported with its reproducer
            pytest.fail(f"{type(err).__name__}: {err}\nseed spec {mutant.seed.name}, edits "
                        f"{'; '.join(mutant.edits)}\n--- mutant ---\n{mutant.text[:3000]}")
    assert "scored" in outcomes and "rejected" in outcomes  # the slice reaches both ends


def test_the_fuzzer_is_reproducible():
    one, two = Mutator(seed=7), Mutator(seed=7)
    first = [one.mutant().text for _ in range(20)]
    assert first == [two.mutant().text for _ in range(20)]
    assert len(set(first)) > 10
