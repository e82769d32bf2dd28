"""On a CPU the tensor phase of per-pixel rules runs over the batch in parts (execute.in_parts):
the scores are the same as one call on the whole batch, and programs whose values depend on other
rows (batch_min() and friends) are never split."""

import numpy as np
import pytest
import torch

import kdsl
from kdsl.runtime import execute

SPEC = """spec parts version 1
input {
  pixels: raster[2] bands(red, nir) nodata 0
  x: float
}
let ndvi = mean((pixels.nir - pixels.red) / (pixels.nir + pixels.red))
let green = frac((pixels.nir - pixels.red) / (pixels.nir + pixels.red) > 0.3)
level knowledge {
  rule vegetated: ndvi > 0.2 and green > 0.5
  rule high: quantile(pixels.nir, 0.9) > x
}
"""


def _batch(n=23, size=8, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0.0, 0.6, size=(n, 2, size, size)).astype(np.float32)
    pixels[: n // 2, 1] += 0.5  # vegetation in the first half: high near-infrared
    pixels[:, :, :2, :] = 0  # nodata border
    pixels[::5, 1, 3, 3] = np.nan
    pixels[7] = 0  # a row with no valid pixel at all
    return torch.from_numpy(pixels), rng.uniform(0.0, 0.6, size=n).tolist()


def _scores(program, pixels, x, monkeypatch, pixels_per_part):
    monkeypatch.setattr(execute, "PIXELS_PER_PART", pixels_per_part)
    return program.score([""] * len(x), pixels=pixels, x=x)


def test_parts_give_the_scores_of_the_whole_batch(monkeypatch):
    program = kdsl.loads(SPEC, "parts.kd")
    pixels, x = _batch()
    ref = torch.zeros(len(x))
    env = execute.prepare_columns(program.module, {"pixels": pixels, "x": x}, len(x), ref,
                                  execute.col.Interner())
    monkeypatch.setattr(execute, "PIXELS_PER_PART", 3 * 64)
    assert execute.rows_per_part(program.module, env, len(x)) == 3  # 8 parts, the last of 2 rows
    parts = _scores(program, pixels, x, monkeypatch, 3 * 64)
    whole = _scores(program, pixels, x, monkeypatch, 10**9)
    assert execute.rows_per_part(program.module, env, len(x)) is None
    assert torch.equal(parts.reward, whole.reward)
    for name in whole.rules:
        assert torch.equal(parts.rules[name], whole.rules[name])
        assert torch.equal(parts.applies[name], whole.applies[name])
    for name in whole.values:
        assert torch.equal(parts.valid[name], whole.valid[name])
        assert torch.allclose(parts.values[name], whole.values[name], equal_nan=True)
    assert not bool(whole.valid["ndvi"][7])  # the empty row stays invalid in its part
    assert 0 < float(whole.rules["vegetated"].mean()) < 1  # the batch is not all alike


def test_a_program_that_reads_other_rows_is_never_split(monkeypatch):
    program = kdsl.loads(SPEC.replace("rule high: quantile(pixels.nir, 0.9) > x",
                                      "rule high: ndvi >= batch_mean(ndvi)"), "parts.kd")
    assert program.module.ACROSS_ROWS
    pixels, x = _batch()
    ref = torch.zeros(len(x))
    env = execute.prepare_columns(program.module, {"pixels": pixels, "x": x}, len(x), ref,
                                  execute.col.Interner())
    monkeypatch.setattr(execute, "PIXELS_PER_PART", 64)
    assert execute.rows_per_part(program.module, env, len(x)) is None
    scores = program.score([""] * len(x), pixels=pixels, x=x)
    mean = scores.values["ndvi"][scores.valid["ndvi"]].mean()
    assert torch.equal(scores.rules["high"].bool() & scores.applies["high"],
                       (scores.values["ndvi"] >= mean) & scores.valid["ndvi"])


def test_only_per_pixel_values_on_a_cpu_are_split():
    program = kdsl.loads(SPEC, "parts.kd")
    pixels, x = _batch()
    env = execute.prepare_columns(program.module, {"pixels": pixels, "x": x}, len(x),
                                  torch.zeros(len(x)), execute.col.Interner())
    assert execute.rows_per_part(program.module, {**env, "ref": torch.zeros(len(x), device="meta")},
                                 len(x)) is None  # another device: the whole batch at once
    scalar = kdsl.loads("spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0\n}\n")
    env = execute.prepare_columns(scalar.module, {"x": x}, len(x), torch.zeros(len(x)),
                                  execute.col.Interner())
    assert execute.rows_per_part(scalar.module, env, len(x)) is None


OVERFLOW = """spec overflow version 1
input {
  pixels: raster[2] bands(a, b)
}
let spread = mean(pixels.a * 1e30 - pixels.b * 1e30)
let total = sum(pixels.a * 1e30 - pixels.b * 1e30)
let low = min(pixels.a * 1e30 - pixels.b * 1e30)
let top = max(pixels.a * 1e30 - pixels.b * 1e30)
level l {
  rule r: spread > 0
}
"""


def test_reductions_leave_out_the_nan_an_overflow_makes():
    """inf - inf is NaN: that pixel is left out of the reduction, on the CPU's path for batches
    without such a pixel and on the general one alike; a valid inf makes the reduction invalid
    (docs/language.md: a non-finite value is made invalid where it is summarised)."""
    program = kdsl.loads(OVERFLOW, "overflow.kd")
    pixels = np.zeros((3, 2, 2, 2), dtype=np.float32)
    pixels[:, 0] = [[1.0, 2.0], [3.0, 4.0]]  # a - b = 1, 2, 3, 4 (times 1e30)
    pixels[1, :, 0, 0] = 1e10  # both overflow to inf at one pixel: inf - inf is NaN, left out
    pixels[2, 0, 0, 0] = 1e10  # only a overflows: the difference is inf, a valid entry
    together = program.score([""] * 3, pixels=torch.from_numpy(pixels))
    expected = {"spread": [2.5e30, 3e30, None], "total": [10e30, 9e30, None],
                "low": [1e30, 2e30, 2e30], "top": [4e30, 4e30, None]}
    for row in range(3):
        alone = program.score([""], pixels=torch.from_numpy(pixels[row:row + 1]))
        for scores, index in ((together, row), (alone, 0)):
            for name, values in expected.items():
                if values[row] is None:
                    assert not bool(scores.valid[name][index]), (name, row)
                else:
                    assert bool(scores.valid[name][index]), (name, row)
                    assert float(scores.values[name][index]) == pytest.approx(values[row], rel=1e-6)
            assert float(scores.rules["r"][index]) == (0.0 if row == 2 else 1.0)
