"""The land-cover specs of domain_specs/remote_sensing/ and the example of examples/remote_sensing/.

- The generated cases, fixtures and example data are what scripts/build_remote_sensing_data.py
  writes.
- The key's per-pixel conditions (defs) hold exactly where its decision tables give their class,
  on a grid of index values that puts every threshold on, just below and just above a grid point;
  dominant_vnir picks the largest share.
- On the 120 labelled Landsat 8 samples of spyndex, landcover.kd computes the indices and the
  class that numpy computes, and scripts/landcover_agreement.py prints counts equal to the spec's
  and to a numpy recount. Measured: the key's class is the label on 106 of 120 samples (88.3%:
  Water 37/37, Vegetation 45/46, Urban 24/37); every label passes the knowledge rules (120/120);
  227 of the 240 wrong labels fail one. The test requires at least 88% and 120/120.
- landcover_raster.kd on the Sentinel-2 sample image of spyndex (4 bands, 300 x 300): with a
  nodata border added by this test, the shares equal those of the image without it, and equal
  numpy's shares of the same pixels; nodata holes in one band follow Kleene's logic as numpy's
  reference does; rasters of different sizes in one batch score as they do alone.
- The example spec checks, its dataset fits it as `kdsl train` checks it, and `kdsl score` gives
  the rewards its README states.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import sys
import textwrap
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

import kdsl

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SPECS = ROOT / "domain_specs" / "remote_sensing"
EXAMPLE = ROOT / "examples" / "remote_sensing"
KEY_AGREEMENT_AT_LEAST = 0.88  # measured 106 / 120 = 0.883


def _script(name: str):
    module_name = f"kdsl_scripts_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(module_name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def rs():
    return _script("remote_sensing_data")


@cache
def program(path: str) -> kdsl.Program:
    return kdsl.load(ROOT / path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- generated files --------------------------------------------------------------------------

def test_generated_files_are_current(capsys):
    assert _script("build_remote_sensing_data").main(["--check"]) == 0, capsys.readouterr().err


# ---- the key: tables and per-pixel conditions agree ------------------------------------------------

GRID = (-1.0, -0.3, -1e-6, 0.0, 1e-6, 0.1, 0.2 - 1e-6, 0.2, 0.2 + 1e-6, 0.35, 0.5 - 1e-6, 0.5,
        0.5 + 1e-6, 0.8, 1.0)

KEY_CHECK = """
spec key_check version 1
import "remote_sensing/landcover_key" as key
input {
  mndwi: float
  ndwi: float
  ndvi: float
  ndbi: float
}
let swir = key.landcover(mndwi, ndvi, ndbi)
let vnir = key.landcover_vnir(ndwi, ndvi)
let water = key.is_water(mndwi)
let vegetation = key.is_vegetation(mndwi, ndvi)
let builtup = key.is_builtup(mndwi, ndvi, ndbi)
let mixed = key.is_mixed(mndwi, ndvi, ndbi)
let baresoil = key.is_baresoil(mndwi, ndvi, ndbi)
let water_vnir = key.is_water_vnir(ndwi)
let vegetation_vnir = key.is_vegetation_vnir(ndwi, ndvi)
let mixed_vnir = key.is_mixed_vnir(ndwi, ndvi)
let nonvegetated_vnir = key.is_nonvegetated_vnir(ndwi, ndvi)
level all {
  rule scored: valid(swir)
}
"""


def test_per_pixel_conditions_hold_exactly_where_the_tables_give_their_class():
    grid = np.array(list(itertools.product(GRID, GRID, GRID)), dtype=np.float64)
    n = len(grid)
    mndwi, ndvi, ndbi = grid[:, 0], grid[:, 1], grid[:, 2]
    scores = kdsl.loads(KEY_CHECK, "key_check.kd").score(
        [""] * n, mndwi=mndwi, ndwi=mndwi, ndvi=ndvi, ndbi=ndbi, dtype=torch.float64)
    classes = rs().CLASSES
    swir = [classes[int(i)] for i in scores.values["swir"]]
    vnir = [classes[int(i)] for i in scores.values["vnir"]]
    assert bool(scores.valid["swir"].all()) and bool(scores.valid["vnir"].all())
    # The tables are the numpy reference's classes.
    assert swir == [rs().key_class(*row) for row in zip(mndwi, ndvi, ndbi)]
    assert vnir == [rs().key_class_vnir(a, b) for a, b in zip(mndwi, ndvi)]
    for let, cls, table in (("water", "Water", swir), ("vegetation", "Vegetation", swir),
                            ("builtup", "BuiltUp", swir), ("mixed", "Mixed", swir),
                            ("baresoil", "BareSoil", swir), ("water_vnir", "Water", vnir),
                            ("vegetation_vnir", "Vegetation", vnir), ("mixed_vnir", "Mixed", vnir),
                            ("nonvegetated_vnir", "NonVegetated", vnir)):
        holds = (scores.values[let] >= 0.5).tolist()
        assert holds == [c == cls for c in table], let
    # Every class of each table is reached on the grid.
    assert set(swir) == {"Water", "Vegetation", "BuiltUp", "Mixed", "BareSoil"}
    assert set(vnir) == {"Water", "Vegetation", "Mixed", "NonVegetated"}


def test_dominant_vnir_picks_the_largest_share_ties_to_the_earlier_class():
    shares = [(0.5, 0.2, 0.2, 0.1), (0.1, 0.6, 0.2, 0.1), (0.0, 0.3, 0.5, 0.2), (0.0, 0.1, 0.2, 0.7),
              (0.4, 0.4, 0.1, 0.1), (0.0, 0.4, 0.4, 0.2), (0.0, 0.2, 0.4, 0.4), (0.25,) * 4]
    text = ('spec dominant_check version 1\nimport "remote_sensing/landcover_key" as key\n'
            "input {\n  w: float\n  v: float\n  m: float\n  n: float\n}\n"
            "let largest = key.dominant_vnir(w, v, m, n)\n"
            "level all {\n  rule scored: valid(largest)\n}\n")
    w, v, m, n = (list(c) for c in zip(*shares))
    scores = kdsl.loads(text, "dominant_check.kd").score([""] * len(shares), w=w, v=v, m=m, n=n)
    got = [rs().CLASSES[int(i)] for i in scores.values["largest"]]
    assert got == [rs().dominant(*s) for s in shares]
    assert got == ["Water", "Vegetation", "Mixed", "NonVegetated", "Water", "Vegetation", "Mixed",
                   "Water"]


# ---- Landsat samples: landcover.kd and the agreement script -------------------------------------

def test_landcover_spec_computes_numpy_indices_and_classes_on_the_landsat_samples():
    sr, labels = rs().landsat_samples()
    scores = program("domain_specs/remote_sensing/landcover.kd").score(
        [f"<answer>{label}</answer>" for label in labels], label=labels, sr=sr, dtype=torch.float64)
    reference = rs().landsat_indices(sr)
    for name in ("ndvi", "mndwi", "ndbi"):
        np.testing.assert_allclose(scores.values[name].numpy(), reference[name], rtol=1e-12)
    implied = [rs().CLASSES[int(i)] for i in scores.values["implied"]]
    assert implied == [rs().key_class(*v) for v in zip(reference["mndwi"], reference["ndvi"],
                                                        reference["ndbi"])]
    # Water comes before built-up: most water samples have a positive NDBI.
    water = [i for i, label in enumerate(labels) if label == "Water"]
    assert sum(reference["ndbi"][i] > 0 for i in water) > len(water) / 2
    assert all(implied[i] == "Water" for i in water)


def test_agreement_script_prints_the_spec_counts_and_they_clear_the_threshold(capsys):
    script = _script("landcover_agreement")
    assert script.main([]) == 0
    printed = capsys.readouterr().out
    result = script.agreement()
    assert printed == script.render(result)

    # Recount from the spec's own scores, and independently with numpy.
    sr, labels = rs().landsat_samples()
    scores = program("domain_specs/remote_sensing/landcover.kd").score(
        [f"<answer>{label}</answer>" for label in labels], label=labels, sr=sr, dtype=torch.float64)
    implied = [rs().CLASSES[int(i)] for i in scores.values["implied"]]
    assert implied == result["implied"]
    idx = rs().landsat_indices(sr)
    numpy_implied = [rs().key_class(*v) for v in zip(idx["mndwi"], idx["ndvi"], idx["ndbi"])]
    assert numpy_implied == implied
    numpy_passes = [all(v is not False for v in rs().knowledge_rules(rs().LABEL_CLASS[label], cls).values())
                    for label, cls in zip(labels, numpy_implied)]
    assert numpy_passes == result["passes"]
    for (i, other), caught in result["caught"].items():
        rules = rs().knowledge_rules(rs().LABEL_CLASS[other], numpy_implied[i])
        assert caught == any(v is False for v in rules.values()), (i, other)

    summary, confusion = printed.split("Key class (rows) against label (columns):")
    for label in rs().LABELS:
        rows = [i for i, x in enumerate(labels) if x == label]
        counts = result["by_label"][label]
        assert counts["samples"] == len(rows)
        assert counts["key_agrees"] == sum(numpy_implied[i] == rs().LABEL_CLASS[label] for i in rows)
        line = next(x for x in summary.splitlines() if x.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:3] == [str(len(rows)), str(counts["key_agrees"])]
        assert cells[4] == str(counts["passes"])
        assert cells[6] == f"{counts['caught']} of {counts['wrong']}"
    for cls, row in result["confusion"].items():
        line = next(x for x in confusion.splitlines() if x.startswith(f"| {cls} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:] == [str(row[label]) for label in rs().LABELS] + [str(sum(row.values()))]
        assert all(row[label] == sum(1 for i, x in enumerate(labels) if x == label and
                                     numpy_implied[i] == cls) for label in rs().LABELS)

    agree = sum(v["key_agrees"] for v in result["by_label"].values())
    assert agree / len(labels) >= KEY_AGREEMENT_AT_LEAST
    assert (agree, len(labels)) == (106, 120)
    assert all(result["passes"])
    assert sum(result["caught"].values()) == 227


def test_agreement_is_the_same_in_float32():
    script = _script("landcover_agreement")
    assert script.agreement(torch.float32)["implied"] == script.agreement()["implied"]


# ---- the raster form on the Sentinel-2 sample ------------------------------------------------------

BORDER = 10  # nodata pixels added by this test around the spyndex image


def _raster_scores(images: list[np.ndarray]):
    completions = ["<think>NDVI 0.47</think><water>0%</water><vegetated>93%</vegetated>"
                   "<dominant>Mixed</dominant>"] * len(images)
    return program("domain_specs/remote_sensing/landcover_raster.kd").score(
        completions, scene=images, dtype=torch.float64)


LETS = ("water", "vegetation", "mixed", "nonvegetated", "vegetated", "mean_ndvi")


def test_raster_nodata_border_is_excluded_and_shares_are_numpys():
    image = rs().sentinel_image()
    assert image.shape == (4, 300, 300) and (image != 0).all()  # no nodata of its own
    bordered = np.zeros((4, 300 + 2 * BORDER, 300 + 2 * BORDER))
    bordered[:, BORDER:-BORDER, BORDER:-BORDER] = image
    scores = _raster_scores([bordered, image])
    reference = rs().vnir_shares(image)
    for let in LETS:
        with_border, interior = (float(v) for v in scores.values[let])
        assert with_border == pytest.approx(interior, rel=1e-12, abs=1e-15), let
        assert interior == pytest.approx(reference[let], rel=1e-12, abs=1e-15), let
    assert bool(scores.valid["water"].all())
    # The shares themselves, from the pixels directly.
    g, r, n = image[1], image[2], image[3]
    ndwi, ndvi = (g - n) / (g + n), (n - r) / (n + r)
    assert float(scores.values["water"][0]) == pytest.approx((ndwi > 0).mean(), rel=1e-12)
    assert float(scores.values["vegetation"][0]) == pytest.approx(((ndwi <= 0) & (ndvi > 0.5)).mean(),
                                                                 rel=1e-12)
    assert float(scores.values["mixed"][0]) == pytest.approx(
        ((ndwi <= 0) & (ndvi >= 0.2) & (ndvi <= 0.5)).mean(), rel=1e-12)
    assert float(scores.values["nonvegetated"][0]) == pytest.approx(((ndwi <= 0) & (ndvi < 0.2)).mean(),
                                                                   rel=1e-12)
    assert float(scores.values["mean_ndvi"][0]) == pytest.approx(ndvi.mean(), rel=1e-12)
    shares = [float(scores.values[k][0]) for k in ("water", "vegetation", "mixed", "nonvegetated")]
    assert sum(shares) == pytest.approx(1.0, abs=1e-12)
    assert rs().CLASSES[int(scores.values["largest"][0])] == "Mixed"
    # The completion states the shares of this image: every rule holds for both rasters.
    assert scores.reward.tolist() == [4.5, 4.5]


def test_raster_nodata_in_one_band_follows_kleene_logic():
    image = rs().sentinel_image()
    rng = np.random.default_rng(11)
    holes = image.copy()
    for band in (1, 2, 3):  # green, red, NIR: each hole removes one index or both
        ys, xs = rng.integers(0, 300, 4000), rng.integers(0, 300, 4000)
        holes[band, ys, xs] = 0
    scores = _raster_scores([holes])
    reference = rs().vnir_shares(holes)
    for let in LETS:
        assert float(scores.values[let][0]) == pytest.approx(reference[let], rel=1e-12, abs=1e-15), let
    # The holes matter: the shares are not those of the full image.
    assert float(scores.values["mean_ndvi"][0]) != pytest.approx(rs().vnir_shares(image)["mean_ndvi"],
                                                                rel=1e-9)


def test_rasters_of_different_sizes_in_one_batch():
    image = rs().sentinel_image()
    crops = [image[:, :40, :40], image[:, 100:130, 50:120], image[:, 200:, 200:]]
    together = _raster_scores(crops)
    for i, crop in enumerate(crops):
        alone = _raster_scores([crop])
        reference = rs().vnir_shares(crop)
        for let in LETS:
            assert float(together.values[let][i]) == pytest.approx(float(alone.values[let][0]),
                                                                   rel=1e-12, abs=1e-15)
            assert float(alone.values[let][0]) == pytest.approx(reference[let], rel=1e-12, abs=1e-15)


# ---- the example ------------------------------------------------------------------------------------------

def test_example_spec_checks_and_its_dataset_fits():
    from kdsl.compiler import check_file

    result = check_file(EXAMPLE / "pixel_landcover.kd")
    assert result.errors == []
    train, heldout = read_jsonl(EXAMPLE / "landcover_train.jsonl"), read_jsonl(EXAMPLE / "landcover_heldout.jsonl")
    assert (len(train), len(heldout)) == (90, 30)
    assert sorted(r["sample"] for r in train + heldout) == list(range(120))
    from kdsl.io.rows import load_dataset
    from kdsl.training.train import check_dataset

    prog = program("examples/remote_sensing/pixel_landcover.kd")
    for name in ("landcover_train.jsonl", "landcover_heldout.jsonl"):
        assert check_dataset(prog, load_dataset(str(EXAMPLE / name))) == []


def test_kdsl_score_gives_the_rewards_of_the_readme(tmp_path):
    from kdsl.cli import Console, main

    out_file = tmp_path / "scored.jsonl"
    out, err = io.StringIO(), io.StringIO()
    code = main(["score", str(EXAMPLE / "pixel_landcover.kd"), "--data",
                 str(EXAMPLE / "landcover_completions.jsonl"), "--out", str(out_file), "--no-progress"],
                Console(out, err))
    assert code == 0, err.getvalue()
    rewards = [round(row["reward"], 3) for row in read_jsonl(out_file)]
    assert rewards == [3.5, 1.25, 0.667] * 3


def test_the_key_table_applied_pixel_by_pixel_equals_its_conditions_on_the_sentinel_image():
    image = rs().sentinel_image()
    program = kdsl.loads(textwrap.dedent("""\
        spec key_per_pixel version 1
        import "remote_sensing/landcover_key" as key
        input {
          scene: raster[4] bands(B02, B03, B04, B08) nodata 0
        }
        let ndwi = (scene.B03 - scene.B08) / (scene.B03 + scene.B08)
        let ndvi = (scene.B08 - scene.B04) / (scene.B08 + scene.B04)
        let water_by_table = frac(key.landcover_vnir(ndwi, ndvi) == Water)
        let water_by_condition = frac(key.is_water(ndwi))
        let vegetation_by_table = frac(key.landcover_vnir(ndwi, ndvi) == key.LandCover.Vegetation)
        level l {
          rule same: water_by_table == water_by_condition
        }
        """), "key_per_pixel.kd")
    scores = program.score([""], scene=[image], dtype=torch.float64)
    shares = rs().vnir_shares(image)
    assert scores.rules["same"].item() == 1.0
    assert scores.values["water_by_table"].item() == pytest.approx(shares["water"], rel=1e-12)
    assert scores.values["vegetation_by_table"].item() == pytest.approx(shares["vegetation"], rel=1e-12)
