"""Decision tables applied pixel by pixel: per-pixel arguments give per-pixel results (numbers or
classes), which rules compare and reduce. Compiled programs against numpy, the reference
interpreter and torch.compile; the checker's messages; row coverage counts pixels."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

import kdsl
from kdsl.errors import KdslError
from tests.reference import Reference

SPEC = textwrap.dedent("""\
    spec per_pixel version 1
    enum Cover { Water, Green, Other }
    input {
      scene: raster[2] bands(G, N) nodata 0
      shallow_counts: bool
    }
    table cover(ndwi: float, shallow: bool) -> Cover {
      > 0.2, _      -> Water
      0..0.2, true  -> Water
      0..0.2, false -> Other
      < 0, _        -> Green
    }
    table weight(ndwi: float) -> float {
      > 0  -> 1
      <= 0 -> 0.5
    }
    let ndwi = if scene.G + scene.N != 0 then (scene.G - scene.N) / (scene.G + scene.N) else 0
    let water_share = frac(cover(ndwi, shallow_counts) == Water)
    let green_share = frac(Cover.Green == cover(ndwi, shallow_counts))
    let not_water_share = frac(cover(ndwi, shallow_counts) != Water)
    let mean_weight = mean(weight(ndwi))
    let wet_or_green = frac(cover(ndwi, shallow_counts) in {Water, Green})
    level l {
      rule mostly_water: water_share > 0.5
      rule some_green: green_share > 0.1
      rule weighted: mean_weight > 0.6
    }
    """)


def _scenes(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scenes = rng.uniform(0.01, 0.5, (4, 2, 12, 12))
    scenes[0, :, :3, :] = 0.0           # a nodata border
    scenes[1, 1, 5:7, 5:7] = 0.0        # nodata in one band only
    return scenes


def test_per_pixel_tables_match_numpy_and_the_reference():
    scenes = _scenes()
    shallow = [True, False, True, False]
    scores = kdsl.loads(SPEC).score([""] * 4, scene=list(scenes), shallow_counts=shallow,
                                    dtype=torch.float64)
    for i, scene in enumerate(scenes):
        g, n = scene
        valid = (g != 0) & (n != 0)
        ndwi = np.divide(g - n, g + n, out=np.zeros_like(g), where=(g + n) != 0)
        water = (ndwi > 0.2) | ((ndwi >= 0) & (ndwi <= 0.2) & shallow[i])
        assert scores.values["water_share"][i].item() == pytest.approx(water[valid].mean())
        assert scores.values["not_water_share"][i].item() == pytest.approx(1 - water[valid].mean())
        assert scores.values["green_share"][i].item() == pytest.approx((ndwi < 0)[valid].mean())
        assert scores.values["mean_weight"][i].item() == pytest.approx(
            np.where(ndwi > 0, 1.0, 0.5)[valid].mean())
    expected = Reference(SPEC).score_batch(
        [""] * 4, [{"scene": s, "shallow_counts": b} for s, b in zip(scenes, shallow)])
    assert scores.values["wet_or_green"].tolist() == pytest.approx(
        (scores.values["water_share"] + scores.values["green_share"]).tolist())
    for name in ("water_share", "green_share", "not_water_share", "mean_weight", "wet_or_green"):
        assert scores.values[name].tolist() == pytest.approx([e["values"][name] for e in expected])


def test_per_pixel_tables_compile_with_fullgraph():
    from compiled import eager_and_fullgraph

    eager, compiled = eager_and_fullgraph(kdsl.loads(SPEC).module, [""] * 4,
                                          {"scene": list(_scenes(1)), "shallow_counts": [True] * 4})
    assert torch.equal(compiled["reward"], eager["reward"])


@pytest.mark.parametrize(("body", "message"), [
    ("frac(cover(ndwi, true) == Fish.Trout) > 0", "cannot compare per-pixel enum Cover with enum Fish"),
    ("frac(cover(ndwi, true) < Water) > 0", "per-pixel enum Cover values can only be compared with =="),
    ("mean(cover(ndwi, true)) > 0", "needs a number, not per-pixel enum Cover"),
])
def test_checker_messages(body, message):
    spec = SPEC.replace("enum Cover", "enum Fish { Trout }\nenum Cover").replace(
        "  rule weighted: mean_weight > 0.6", f"  rule weighted: mean_weight > 0.6\n  rule bad: {body}")
    with pytest.raises(KdslError) as err:
        kdsl.loads(spec, "bad.kd")
    assert message in str(err.value)


def test_row_coverage_counts_pixels(tmp_path):
    from kdsl.tools.testing import coverage, load_suite, run_suite

    scene = np.full((2, 2, 2), 0.3)
    scene[1] = [[0.1, 0.3], [0.5, 0.3]]            # NDWI 0.5, 0, -0.25, 0 across the pixels
    np.save(tmp_path / "scene.npy", scene)
    spec = tmp_path / "pixels.kd"
    spec.write_text(SPEC + textwrap.dedent("""\
        example "four pixels" {
          completion: ""
          scene: fixture "scene.npy"
          shallow_counts: true
          expect let.water_share == 0.75
        }
        """), encoding="utf-8")
    cov = coverage(run_suite(load_suite(spec)))
    # cover(): one pixel above 0.2, two at 0 (shallow counts), one below 0; weight(): 3 and 1
    assert cov.table_rows == {"cover": [1, 2, 0, 1], "weight": [1, 3]}
