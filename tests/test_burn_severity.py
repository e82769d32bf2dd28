"""remote_sensing/burn_severity against an independent reference: NBR from spyndex's own formula
and the USGS classes by numpy, on every ordered pair of the 120 real Landsat samples (a pairing
of real pixels, not real fires), and the half-open bins at their exact boundaries."""

from __future__ import annotations

import numpy as np
import pytest
import spyndex
import torch

import kdsl
from kdsl.example import landsat
from kdsl.io.resources import library_dir

CLASSES = ["EnhancedRegrowthHigh", "EnhancedRegrowthLow", "Unburned", "Low", "ModerateLow",
           "ModerateHigh", "High"]
# Key and Benson 2006 (USGS FIREMON), unscaled: a class holds its lower bound, not its upper one.
LOWER_BOUNDS = [-0.25, -0.1, 0.1, 0.27, 0.44, 0.66]


def reference_classes(pre_nir, pre_swir2, post_nir, post_swir2) -> np.ndarray:
    before = np.asarray(spyndex.computeIndex("NBR", params={"N": pre_nir, "S2": pre_swir2}))
    after = np.asarray(spyndex.computeIndex("NBR", params={"N": post_nir, "S2": post_swir2}))
    return np.digitize(before - after, LOWER_BOUNDS, right=False)


def test_every_pair_of_real_pixels_gets_the_reference_class():
    program = kdsl.load(library_dir() / "remote_sensing" / "burn_severity.kd")
    rows = landsat.landsat_rows()
    nir = np.array([r["sr"][4] for r in rows])
    swir2 = np.array([r["sr"][6] for r in rows])
    i, j = np.meshgrid(np.arange(len(rows)), np.arange(len(rows)), indexing="ij")
    keep = i != j
    i, j = i[keep], j[keep]
    expected = reference_classes(nir[i], swir2[i], nir[j], swir2[j])
    completions = [f"<think>NBR</think><answer>{CLASSES[k]}</answer>" for k in expected]
    scores = program.score(completions, pre=np.stack([nir[i], swir2[i]], 1),
                           post=np.stack([nir[j], swir2[j]], 1), dtype=torch.float64)
    assert scores.rules["severity_matches"].tolist() == [1.0] * len(expected)
    assert set(expected.tolist()) == set(range(7))  # every class occurs among the pairs


SPEC = """spec bins version 1
import "remote_sensing/burn_severity" as burn
input { dnbr: float }
output { reply: tag "answer"
  said: reply as burn.Severity }
level l { rule r: said == burn.severity(dnbr) }
"""


@pytest.mark.parametrize("bound", LOWER_BOUNDS)
def test_each_boundary_belongs_to_the_class_above_it(bound):
    program = kdsl.loads(SPEC, "bins.kd")
    k = LOWER_BOUNDS.index(bound) + 1
    below = np.nextafter(bound, -np.inf)
    scores = program.score([f"<answer>{CLASSES[k]}</answer>", f"<answer>{CLASSES[k - 1]}</answer>"],
                           dnbr=[bound, below], dtype=torch.float64)
    assert scores.rules["r"].tolist() == [1.0, 1.0]
