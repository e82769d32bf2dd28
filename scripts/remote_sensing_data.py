"""The data and a plain numpy reference for the remote-sensing specs.

- :func:`landsat_samples`: the 120 labelled Landsat 8 surface-reflectance samples that ship with
  spyndex (``spyndex.datasets.open("spectral")``), at full precision.
- :func:`sentinel_image`: the Sentinel-2 sample image that ships with spyndex (bands B02, B03,
  B04, B08 at 10 m, 300 x 300 pixels, L2A integers). ``spyndex.datasets.open("sentinel")`` wraps
  it in an xarray ``DataArray``; the array itself is read from the package's JSON file, so xarray
  is not needed.
- The land-cover key of ``domain_specs/remote_sensing/landcover_key.kd`` written again in numpy,
  threshold for threshold, as an independent reference for tests and reports.

Used by ``scripts/build_remote_sensing_data.py``, ``scripts/landcover_agreement.py`` and
``tests/test_remote_sensing_specs.py``.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

LANDSAT_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7")
SENTINEL_BANDS = ("B02", "B03", "B04", "B08")
LABELS = ("Vegetation", "Urban", "Water")
# The members of key.LandCover, in declaration order (the order of the enum's indices).
CLASSES = ("Water", "Vegetation", "BuiltUp", "BareSoil", "Mixed", "NonVegetated")
# A dataset label names the key class it corresponds to ("Urban" is a synonym of BuiltUp).
LABEL_CLASS = {"Vegetation": "Vegetation", "Urban": "BuiltUp", "Water": "Water"}


def landsat_samples() -> tuple[np.ndarray, list[str]]:
    """Surface reflectance of OLI bands 1-7 (120 x 7, float64, as stored) and the labels."""
    import spyndex

    table = spyndex.datasets.open("spectral")
    sr = np.array(table[[f"SR_{band}" for band in LANDSAT_BANDS]].to_numpy(dtype=np.float64))
    labels = [str(label) for label in table["class"]]
    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise ValueError(f"unexpected classes in the spyndex samples: {unknown}")
    return sr, labels


def sentinel_image() -> np.ndarray:
    """The spyndex Sentinel-2 sample: (4, 300, 300) float64, bands B02, B03, B04, B08."""
    path = resources.files("spyndex") / "data" / "S2_10m.json"
    image = np.asarray(json.loads(path.read_text(encoding="utf-8")), dtype=np.float64)
    if image.shape != (4, 300, 300):
        raise ValueError(f"unexpected shape of the spyndex Sentinel-2 sample: {image.shape}")
    return image


def normalized_difference(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.asarray(a) - b) / (np.asarray(a) + b)


def landsat_indices(sr: np.ndarray) -> dict[str, np.ndarray]:
    """NDVI, NDWI, MNDWI and NDBI of Landsat 8/9 reflectance rows (..., 7)."""
    b3, b4, b5, b6 = sr[..., 2], sr[..., 3], sr[..., 4], sr[..., 5]
    return {"ndvi": normalized_difference(b5, b4), "ndwi": normalized_difference(b3, b5),
            "mndwi": normalized_difference(b3, b6), "ndbi": normalized_difference(b6, b5)}


def sentinel_indices(image: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pixel NDWI and NDVI of a (4, H, W) Sentinel-2 10 m image; NaN where a band used is 0
    (nodata) or a denominator is 0."""
    image = np.where(image == 0, np.nan, np.asarray(image, dtype=np.float64))
    g, r, n = image[1], image[2], image[3]
    ndwi, ndvi = normalized_difference(g, n), normalized_difference(n, r)
    return {"ndwi": np.where(np.isfinite(ndwi), ndwi, np.nan),
            "ndvi": np.where(np.isfinite(ndvi), ndvi, np.nan)}


def key_class(mndwi: float, ndvi: float, ndbi: float) -> str | None:
    """The class of ``table landcover`` (None where an index is not finite)."""
    if not all(np.isfinite(v) for v in (mndwi, ndvi, ndbi)):
        return None
    if mndwi > 0:
        return "Water"
    if ndvi > 0.5:
        return "Vegetation"
    if ndbi > 0:
        return "BuiltUp"
    if ndvi >= 0.2:
        return "Mixed"
    return "BareSoil"


def key_class_vnir(ndwi: float, ndvi: float) -> str | None:
    """The class of ``table landcover_vnir`` (None where an index is not finite)."""
    if not (np.isfinite(ndwi) and np.isfinite(ndvi)):
        return None
    if ndwi > 0:
        return "Water"
    if ndvi > 0.5:
        return "Vegetation"
    if ndvi >= 0.2:
        return "Mixed"
    return "NonVegetated"


def _kleene_and(*terms: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``and`` of (value, known) pairs in Kleene's logic: false if any term is known false,
    true if all are known true, unknown otherwise (as kdsl's connectives)."""
    value = np.logical_and.reduce([v & k for v, k in terms])
    false = np.logical_or.reduce([~v & k for v, k in terms])
    return value, value | false


def vnir_shares(image: np.ndarray) -> dict[str, float]:
    """The shares that remote_sensing/landcover_raster.kd computes from a (4, H, W) image: each
    the fraction of the pixels where its condition is known (kdsl's ``frac``), with conditions
    combined in Kleene's logic; then the vegetated share, the mean NDVI and the largest class."""
    idx = sentinel_indices(image)
    ndwi, ndvi = idx["ndwi"], idx["ndvi"]
    wk, vk = np.isfinite(ndwi), np.isfinite(ndvi)
    with np.errstate(invalid="ignore"):
        water = (ndwi > 0, wk)
        not_water = (ndwi <= 0, wk)
        dense = (ndvi > 0.5, vk)
        middle = ((ndvi >= 0.2) & (ndvi <= 0.5), vk)
        low = (ndvi < 0.2, vk)

    def share(condition: tuple[np.ndarray, np.ndarray]) -> float:
        value, known = condition
        return float(value[known].mean()) if known.any() else float("nan")

    out = {"water": share(water), "vegetation": share(_kleene_and(not_water, dense)),
           "mixed": share(_kleene_and(not_water, middle)),
           "nonvegetated": share(_kleene_and(not_water, low))}
    out["vegetated"] = out["vegetation"] + out["mixed"]
    out["mean_ndvi"] = float(ndvi[vk].mean()) if vk.any() else float("nan")
    out["largest"] = dominant(out["water"], out["vegetation"], out["mixed"], out["nonvegetated"])
    return out


def dominant(water: float, vegetation: float, mixed: float, nonvegetated: float) -> str:
    """``key.dominant_vnir``: the largest share, ties to the class earlier in the hierarchy."""
    if water >= max(vegetation, mixed, nonvegetated):
        return "Water"
    if vegetation >= max(mixed, nonvegetated):
        return "Vegetation"
    if mixed >= nonvegetated:
        return "Mixed"
    return "NonVegetated"


# ---- the knowledge rules of remote_sensing/landcover.kd, for one claim ------------------------

def knowledge_rules(claim: str | None, implied: str | None) -> dict[str, bool | None]:
    """Each rule of the `knowledge` level: True (holds), False (fails) or None (does not apply)."""
    def rule(applies: bool, holds: bool) -> bool | None:
        return holds if applies else None

    if claim is None or implied is None:
        # An unknown claim or class: a `when` on it does not hold, a body on it fails.
        return {
            "water_claim_needs_water": None if claim != "Water" else False,
            "water_is_claimed": None if implied != "Water" else False,
            "dense_vegetation_is_claimed": None if implied != "Vegetation" else False,
            "vegetation_claim_needs_green": None if claim != "Vegetation" else False,
            "builtup_claim_fits": None if claim != "BuiltUp" else False,
            "baresoil_claim_fits": None if claim != "BareSoil" else False,
        }
    return {
        "water_claim_needs_water": rule(claim == "Water", implied == "Water"),
        "water_is_claimed": rule(implied == "Water", claim == "Water"),
        "dense_vegetation_is_claimed": rule(implied == "Vegetation", claim == "Vegetation"),
        "vegetation_claim_needs_green": rule(claim == "Vegetation", implied in ("Vegetation", "Mixed")),
        "builtup_claim_fits": rule(claim == "BuiltUp", implied in ("BuiltUp", "Mixed", "BareSoil")),
        "baresoil_claim_fits": rule(claim == "BareSoil", implied in ("BareSoil", "BuiltUp")),
    }
