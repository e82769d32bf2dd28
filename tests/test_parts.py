"""On a CPU the tensor phase of per-pixel rules runs over the batch in parts (execute.in_parts):
the scores are the same as one call on the whole batch, and programs whose values depend on other
rows (batch_min() and friends) are never split."""

import numpy as np
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
