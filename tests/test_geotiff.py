"""Raster inputs read from GeoTIFF files (rasterio) and from xarray DataArrays: the Sentinel-2
sample image that ships in spyndex (4 x 300 x 300, bands B02 B03 B04 B08), written by the test
as GeoTIFFs with a nodata border, scale and offset, scored against numpy on the same pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import spyndex
import xarray
from rasterio.transform import from_origin

import kdsl
from kdsl.errors import KdslDataError

# (band, x, y): B02, B03, B04, B08; the file holds DNs, reflectance x 10,000
SAMPLE = np.array(json.loads((Path(spyndex.__file__).parent / "data" / "S2_10m.json").read_text()),
                  dtype=np.float64) / 10000.0
NAMES = ("B02", "B03", "B04", "B08")
BORDER = 10  # pixels of nodata around the edge
NODATA = 0

SPEC = """
spec s2 version 1
input {
  scene: raster[2] bands(B04, B08)
}
let ndvi = (scene.B08 - scene.B04) / (scene.B08 + scene.B04)
level vegetation {
  rule green_cover: frac(ndvi > 0.4) >= 0.5
  rule mean_ndvi: mean(ndvi) >= 0.3
}
"""


def numpy_ndvi(red: np.ndarray, nir: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    red, nir = red.astype(np.float32), nir.astype(np.float32)  # as programs compute
    ndvi = (nir - red) / (nir + red)
    ndvi = ndvi[valid]
    return float(np.mean(ndvi > 0.4)), float(np.mean(ndvi))


def write_scene(path: Path, bands=NAMES, scale: float = 1e-4, offset: float = 0.0, tags=None,
                band_tags=None) -> np.ndarray:
    """The sample as integer DNs (reflectance = DN * scale + offset), a nodata border, band
    descriptions; returns the validity mask."""
    index = [NAMES.index(b) for b in bands]
    dn = np.round((SAMPLE[index] - offset) / scale).astype(np.uint16)
    valid = np.ones(dn.shape[1:], dtype=bool)
    valid[:BORDER], valid[-BORDER:], valid[:, :BORDER], valid[:, -BORDER:] = False, False, False, False
    dn[:, ~valid] = NODATA
    with rasterio.open(path, "w", driver="GTiff", height=dn.shape[1], width=dn.shape[2], count=len(bands),
                       dtype="uint16", nodata=NODATA, crs="EPSG:32633",
                       transform=from_origin(500000, 4500000, 10, 10)) as dst:
        dst.write(dn)
        for k, name in enumerate(bands, start=1):
            dst.set_band_description(k, name)
        dst.scales = [scale] * len(bands)
        dst.offsets = [offset] * len(bands)
        if tags:
            dst.update_tags(**tags)
        for k, extra in (band_tags or {}).items():
            dst.update_tags(k, **extra)
    return valid


def expected(valid: np.ndarray, window=None) -> tuple[float, float]:
    red, nir = SAMPLE[NAMES.index("B04")], SAMPLE[NAMES.index("B08")]
    # the file holds DNs rounded to 1e-4: compare with the same rounding
    red, nir = np.round(red / 1e-4) * 1e-4, np.round(nir / 1e-4) * 1e-4
    if window is not None:
        col, row, width, height = window
        sl = (slice(row, row + height), slice(col, col + width))
        red, nir, valid = red[sl], nir[sl], valid[sl]
    return numpy_ndvi(red, nir, valid)


def test_a_geotiff_path_is_read_by_band_name_with_nodata_and_scale(tmp_path):
    valid = write_scene(tmp_path / "scene.tif")
    frac, mean = expected(valid)
    got = kdsl.loads(_probe_spec()).score([""], scene=[str(tmp_path / "scene.tif")])
    assert float(got.values["fraction"][0]) == pytest.approx(frac, abs=1e-6)
    assert float(got.values["average"][0]) == pytest.approx(mean, abs=1e-5)
    rules = kdsl.loads(SPEC).score([""], scene=[str(tmp_path / "scene.tif")]).rules
    assert rules["green_cover"].tolist() == [float(frac >= 0.5)]
    assert rules["mean_ndvi"].tolist() == [float(mean >= 0.3)]


def _probe_spec() -> str:
    return SPEC.replace("level vegetation {", "let fraction = frac(ndvi > 0.4)\nlet average = mean(ndvi)\n"
                        "level vegetation {\n  rule uses: fraction + average >= 0")


def test_windows_band_maps_and_file_order(tmp_path):
    probe = kdsl.loads(_probe_spec())
    valid = write_scene(tmp_path / "scene.tif")
    window = [40, 20, 100, 120]
    # bands given by the row: the file's band 3 is B04, band 4 is B08
    value = {"path": str(tmp_path / "scene.tif"), "window": window, "bands": {"B04": 3, "B08": 4}}
    got = probe.score([""], scene=[value])
    frac, mean = expected(valid, window)
    assert float(got.values["fraction"][0]) == pytest.approx(frac, abs=1e-6)
    assert float(got.values["average"][0]) == pytest.approx(mean, abs=1e-5)
    # a file with exactly the spec's two bands and no descriptions matching: taken in file order
    write_scene(tmp_path / "two.tif", bands=("B04", "B08"))
    with rasterio.open(tmp_path / "two.tif", "r+") as dst:
        dst.set_band_description(1, "red")
        dst.set_band_description(2, "nir")
    got = probe.score([""], scene=[str(tmp_path / "two.tif")])
    frac, mean = expected(valid)
    assert float(got.values["average"][0]) == pytest.approx(mean, abs=1e-5)


def test_sentinel2_l2a_reflectance_offset(tmp_path):
    """L2A DNs: reflectance = (DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE."""
    probe = kdsl.loads(_probe_spec())
    # DNs written as (reflectance * 10000 + 1000), the offset -1000 in each band's tags
    valid = write_scene(tmp_path / "l2a.tif", scale=1.0, offset=0.0,
                        tags={"BOA_QUANTIFICATION_VALUE": "10000"},
                        band_tags={k: {"BOA_ADD_OFFSET": "-1000"} for k in range(1, 5)})
    with rasterio.open(tmp_path / "l2a.tif", "r+") as dst:
        data = dst.read()
        shifted = np.where(valid, np.round(SAMPLE * 10000) + 1000, NODATA).astype(np.uint16)
        dst.write(shifted)
        assert data.shape == shifted.shape
    got = probe.score([""], scene=[str(tmp_path / "l2a.tif")])
    frac, mean = expected(valid)
    assert float(got.values["average"][0]) == pytest.approx(mean, abs=1e-5)


def test_an_xarray_data_array_is_accepted():
    probe = kdsl.loads(_probe_spec())
    array = xarray.DataArray(SAMPLE, dims=("band", "x", "y"), coords={"band": list(NAMES)})
    got = probe.score([""], scene=[array])
    valid = np.ones(SAMPLE.shape[1:], dtype=bool)
    frac, mean = numpy_ndvi(SAMPLE[2], SAMPLE[3], valid)
    assert float(got.values["fraction"][0]) == pytest.approx(frac, abs=1e-6)
    assert float(got.values["average"][0]) == pytest.approx(mean, abs=1e-5)


def test_bad_raster_values_are_row_errors(tmp_path):
    probe = kdsl.loads(_probe_spec())
    write_scene(tmp_path / "scene.tif")
    cases = {
        str(tmp_path / "missing.tif"): "no such raster file",
        "https://example.com/scene.tif": "only local raster files are read",
        "/vsicurl/https://example.com/scene.tif": "only local raster files are read",
        json.dumps("x"): "no such raster file",
    }
    for value, message in cases.items():
        with pytest.raises(KdslDataError, match=f"row 0, column `scene`: .*{message}"):
            probe.score([""], scene=[value])
    with pytest.raises(KdslDataError, match=r"window \[290, 0, 20, 20\] is not inside the 300 x 300 image"):
        probe.score([""], scene=[{"path": str(tmp_path / "scene.tif"), "window": [290, 0, 20, 20]}])
    write_scene(tmp_path / "no_nir.tif", bands=("B02", "B03", "B04"))
    with pytest.raises(KdslDataError, match=r"has 3 bands \(described as: B02, B03, B04\), the spec's "
                                            r"raster 2 \(B04, B08\); give them as"):
        probe.score([""], scene=[str(tmp_path / "no_nir.tif")])
    (tmp_path / "text.tif").write_text("not a tiff")
    with pytest.raises(KdslDataError, match="cannot read it as a raster"):
        probe.score([""], scene=[str(tmp_path / "text.tif")])
    # a scorer that collects problems keeps going: the bad row is reported, the good one scored
    from kdsl.tools.scoring import evaluate_rows

    collected: dict = {}
    values, _ = evaluate_rows(probe, ["", ""], {"scene": [str(tmp_path / "missing.tif"),
                                                          str(tmp_path / "scene.tif")]}, collected)
    assert list(collected) == [0] and collected[0][0][0] == "scene"
    assert np.isfinite(values[1]).all()
