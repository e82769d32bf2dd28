"""Per-perspective advantages of domain_specs/medical/pneumonia_perspectives.kd.

The spec scores a pneumonia answer from three perspectives (differential, analytical, Bayesian),
each a level, with ``advantage grpo(scale = group, aggregate = per_level)``. On hand-made groups
the advantages must be: each level's score z-scored within its group (unbiased deviation plus
1e-4), weighted by the level weight and summed, and that sum z-scored over the batch. A
perspective on which every completion of a group ties adds exactly nothing to that group.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import kdsl
from kdsl.training import advantages as adv
from kdsl.training.advantages import AdvantageConfig

SPEC = "domain_specs/medical/pneumonia_perspectives.kd"
EPS = 1e-4
WEIGHTS = {"differential": 1.0, "analytical": 2.0, "bayesian": 1.0}

# Patient 1: 70 years, urea 9 mmol/L, otherwise unremarkable: CURB-65 2, moderate, 9.2%.
PATIENT_1 = dict(age_years=70, confusion=False, urea_mmol_per_l=9.0, respiratory_rate=20,
                 systolic_bp=120, diastolic_bp=70)
# Patient 2: as patient 1 with a respiratory rate of 32: CURB-65 3, high, 22%.
PATIENT_2 = {**PATIENT_1, "respiratory_rate": 32}

BROAD = "<differential>Pneumonia; consider pulmonary embolism and heart failure</differential>"
NARROW = "<differential>Pneumonia</differential>"
NONE = "<differential>Viral upper respiratory infection</differential>"


def answer(differential: str, score: int, group: str, mortality: str) -> str:
    return f"{differential}<score>{score}</score><group>{group}</group><mortality>{mortality}</mortality>"


def ramp(ratio: float) -> float:
    """The Bayesian rule by hand: 1 within a factor 2 of the published figure, 0 beyond 3."""
    x = abs(math.log(ratio))
    return min(1.0, max(0.0, 1.0 - (x - math.log(2)) / 0.405))


# Group 1 (patient 1): the differential ties (all broad); analytical and Bayesian differ.
GROUP_1 = [
    (answer(BROAD, 2, "moderate", "9%"), {"differential": 1, "analytical": 1, "bayesian": 1}),
    (answer(BROAD, 3, "high", "22%"), {"differential": 1, "analytical": 0, "bayesian": ramp(22 / 9.2)}),
    (answer(BROAD, 2, "moderate", "40%"), {"differential": 1, "analytical": 1, "bayesian": 0}),
    (answer(BROAD, 1, "low", "1.5%"), {"differential": 1, "analytical": 0, "bayesian": 0}),
]
# Group 2 (patient 2): the Bayesian estimate ties (all 22%); the differential and analytical differ.
GROUP_2 = [
    (answer(BROAD, 3, "high", "22%"), {"differential": 1, "analytical": 1, "bayesian": 1}),
    (answer(NARROW, 3, "high", "22%"), {"differential": 0.5, "analytical": 1, "bayesian": 1}),
    (answer(NONE, 3, "moderate", "22%"), {"differential": 0, "analytical": 0.5, "bayesian": 1}),
    (answer(NARROW, 2, "moderate", "22%"), {"differential": 0.5, "analytical": 0, "bayesian": 1}),
]


@pytest.fixture(scope="module")
def program():
    return kdsl.load(SPEC)


def score(program, groups):
    completions = [c for group in groups for c, _ in group]
    patients = [PATIENT_1] * len(GROUP_1) + [PATIENT_2] * len(GROUP_2)
    columns = {name: [p[name] for p in patients] for name in PATIENT_1}
    return program.score(completions, **columns)


def expected_per_level(level_scores: dict[str, np.ndarray], group_size: int) -> np.ndarray:
    """GDPO by hand: per-level z-scores within groups, weighted sum, z-score over the batch."""
    total = 0.0
    for name, weight in WEIGHTS.items():
        s = level_scores[name].reshape(-1, group_size)
        mean = s.mean(axis=1, keepdims=True)
        std = s.std(axis=1, ddof=1, keepdims=True)
        total = total + weight * ((s - mean) / (std + EPS)).reshape(-1)
    return (total - total.mean()) / (total.std(ddof=1) + EPS)


def test_the_spec_asks_for_per_level_normalisation(program):
    assert program.advantage_config == AdvantageConfig("grpo", "group", "per_level")


def test_level_scores_are_the_hand_computed_ones(program):
    scores = score(program, [GROUP_1, GROUP_2])
    for name in WEIGHTS:
        want = [levels[name] for group in (GROUP_1, GROUP_2) for _, levels in group]
        np.testing.assert_allclose(scores.levels[name].numpy(), want, atol=1e-5, err_msg=name)
    # The 2.5-fold miss of group 1's second answer is a partial credit, not 0 or 1.
    assert 0.4 < scores.levels["bayesian"][1].item() < 0.6


def test_advantages_are_per_level_normalised(program):
    scores = score(program, [GROUP_1, GROUP_2])
    hand = {name: np.array([levels[name] for group in (GROUP_1, GROUP_2) for _, levels in group])
            for name in WEIGHTS}
    got = program.advantages(scores, group_size=4).numpy()
    np.testing.assert_allclose(got, expected_per_level(hand, 4), atol=1e-4)
    # The best answer of each group gets the largest advantage.
    assert got[:4].argmax() == 0 and got[4:].argmax() == 0


def test_a_tied_perspective_contributes_nothing(program):
    scores = score(program, [GROUP_1, GROUP_2])
    comp = adv.components(program.module, scores)
    _, parts = adv.advantages(comp, 4, program.advantage_config)
    by_level = {name: parts[:, [i for i, level in enumerate(comp.level_of.tolist())
                                if comp.level_names[level] == name]].sum(1)
                for name in WEIGHTS}
    # Group 1 ties on the differential, group 2 on the Bayesian estimate (zero up to float noise
    # from the batch centring).
    assert by_level["differential"][:4].abs().max() < 1e-6
    assert by_level["bayesian"][4:].abs().max() < 1e-6
    # The other perspectives do move those groups.
    assert by_level["analytical"][:4].abs().sum() > 0 and by_level["bayesian"][:4].abs().sum() > 0
    assert by_level["differential"][4:].abs().sum() > 0


def test_a_tie_adds_nothing_whatever_its_value(program):
    """Group 1 with every differential broad (all 1) or every differential missing (all 0):
    the same advantages, because a tied perspective is centred away within its group."""
    def with_differential(text):
        return [(c.replace(BROAD, text), levels) for c, levels in GROUP_1]

    broad = program.advantages(score(program, [GROUP_1, GROUP_2]), group_size=4)
    none = program.advantages(score(program, [with_differential(NONE), GROUP_2]), group_size=4)
    torch.testing.assert_close(broad, none, atol=1e-6, rtol=0)


def test_per_level_differs_from_summing_first(program):
    """With the default sum, the analytical level (weight 2, scores 0 or 1) dominates; per level,
    the Bayesian perspective's small spread in group 1 is scaled up to the same footing."""
    scores = score(program, [GROUP_1, GROUP_2])
    per_level = program.advantages(scores, group_size=4)
    summed = program.advantages(scores, group_size=4, config=AdvantageConfig("grpo", "group", "sum"))
    assert not torch.allclose(per_level, summed, atol=1e-3)
    reward = scores.reward.reshape(2, 4)
    want = ((reward - reward.mean(1, keepdim=True)) / (reward.std(1, keepdim=True) + EPS)).reshape(-1)
    torch.testing.assert_close(summed, want, atol=1e-5, rtol=0)
