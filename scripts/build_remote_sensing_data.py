"""Build the test cases of the remote-sensing specs and the data of examples/remote_sensing/ from
the samples that ship with spyndex.

    python scripts/build_remote_sensing_data.py          # write the files
    python scripts/build_remote_sensing_data.py --check  # exit 1 if a file is out of date

Every pixel is real: the Landsat 8 surface-reflectance samples of ``spyndex.datasets.open
("spectral")`` (sample numbers are their rows) and crops of the Sentinel-2 sample image
(``spyndex.datasets.open("sentinel")``). The completions are written here from templates, and
every expectation (which rule holds, fails or does not apply; the reward; the shares of a crop) is
computed here in plain numpy (scripts/remote_sensing_data.py), independently of kdsl, so
``kdsl test`` compares kdsl with a second implementation of the same knowledge.

Writes:
  domain_specs/remote_sensing/landcover_key.kdtest.jsonl     index values of real pixels
  domain_specs/remote_sensing/landcover.kdtest.jsonl         Landsat pixels and claims
  domain_specs/remote_sensing/landcover_raster.kdtest.jsonl  Sentinel-2 crops and reports
  domain_specs/remote_sensing/fixtures/s2_*.npy              the crops (int16, 0 = nodata)
  examples/remote_sensing/landcover_train.jsonl              prompts for kdsl train (90 rows)
  examples/remote_sensing/landcover_heldout.jsonl            held-out rows (30)
  examples/remote_sensing/landcover_completions.jsonl        completions for kdsl score

Index values and reflectances are written rounded to 6 decimals, and every expectation is
computed from the rounded values. A pixel is only chosen where each index is at least 1e-4 from
the thresholds, so float32 scoring decides it the same way.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import remote_sensing_data as rs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "domain_specs" / "remote_sensing"
EXAMPLE = ROOT / "examples" / "remote_sensing"
THRESHOLDS = {"mndwi": (0.0,), "ndwi": (0.0,), "ndvi": (0.2, 0.5), "ndbi": (0.0,)}
MARGIN = 1e-4
CROP = 20
# (name, top, left): crops of the Sentinel-2 sample chosen for what covers them (the 20 x 20
# blocks with the largest share of each class on a 20-pixel grid).
CROPS = (("s2_forest", 0, 0), ("s2_fields", 120, 200), ("s2_bare", 120, 120), ("s2_water", 0, 100))
BORDER = 3  # nodata pixels added around s2_water for s2_water_nodata


# ---- helpers ------------------------------------------------------------------------------------

def r6(x: float) -> float:
    return round(float(x), 6)


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def expect_rules(truths: dict[str, bool | float | None]) -> list[str]:
    """`NAME` (holds), `not NAME` (fails), `skip NAME` (does not apply), or the partial truth of
    a `soft` rule."""
    out = []
    for name, truth in truths.items():
        if truth is None:
            out.append(f"skip {name}")
        elif 0 < float(truth) < 1:
            out.append(f"rule.{name} == {float(truth):.4f} +- 1e-3")
        else:
            out.append(name if float(truth) == 1 else f"not {name}")
    return out


def soft_at_most(value: float, limit: float, margin: float) -> float:
    """The truth of `value <= limit soft margin`: 1 up to the limit, 0 from limit + margin."""
    return float(min(1.0, max(0.0, 1.0 - (value - limit) / margin)))


def level(truths: list[float | None], weights: list[float] | None = None) -> float:
    """A level's score: the (weighted) mean of the rules that apply, 1 when none does."""
    weights = weights or [1.0] * len(truths)
    pairs = [(t, w) for t, w in zip(truths, weights) if t is not None]
    return sum(t * w for t, w in pairs) / sum(w for _, w in pairs) if pairs else 1.0


def safe(values: dict[str, float]) -> bool:
    return all(abs(values[k] - t) >= MARGIN for k, ts in THRESHOLDS.items() if k in values
               for t in ts)


def landsat_rows() -> list[dict]:
    """Each spyndex Landsat sample with its rounded reflectance, indices and key classes."""
    sr, labels = rs.landsat_samples()
    rows = []
    for sample, (values, label) in enumerate(zip(sr, labels)):
        rounded = np.array([r6(v) for v in values])
        idx = {k: float(v) for k, v in rs.landsat_indices(rounded).items()}
        rows.append({"sample": sample, "label": label, "sr": [float(v) for v in rounded],
                     "indices": idx, "implied": rs.key_class(idx["mndwi"], idx["ndvi"], idx["ndbi"]),
                     "implied_vnir": rs.key_class_vnir(idx["ndwi"], idx["ndvi"])})
    return rows


def first(rows: list[dict], **conditions) -> dict:
    """The first sample (table order) meeting every condition, away from the thresholds."""
    for row in rows:
        if not safe(row["indices"]):
            continue
        if all(fn(row) if callable(fn) else row[key] == fn for key, fn in conditions.items()):
            return row
    raise LookupError(f"no spyndex sample with {conditions}")


# ---- landcover_key.kdtest.jsonl -------------------------------------------------------------------

def key_cases(rows: list[dict]) -> list[dict]:
    cases = []

    def case(row: dict, text: str, claim: str, swir: bool, vnir: bool, why: str):
        idx = row["indices"]
        columns = {}
        if swir:
            columns.update(mndwi=r6(idx["mndwi"]), ndvi=r6(idx["ndvi"]), ndbi=r6(idx["ndbi"]))
        if vnir:
            columns.update(ndwi=r6(idx["ndwi"]), ndvi=r6(idx["ndvi"]))
        # Expectations from the rounded values the case carries.
        v = {k: columns.get(k, float("nan")) for k in ("mndwi", "ndwi", "ndvi", "ndbi")}
        key = rs.key_class(v["mndwi"], v["ndvi"], v["ndbi"])
        key_vnir = rs.key_class_vnir(v["ndwi"], v["ndvi"])
        truths = {"names_a_class": True,
                  "follows_key": None if key is None else claim == key,
                  "follows_vnir_key": None if key_vnir is None else claim == key_vnir}
        scores = [t for t in (truths["follows_key"], truths["follows_vnir_key"]) if t is not None]
        reward = 1 + level([float(t) for t in scores])
        cases.append({"name": f"sample {row['sample']} ({row['label']}): {why}",
                      "completion": f"<answer>{text}</answer>", **columns,
                      "expect": expect_rules(truths) + [f"reward == {reward:g}"]})

    water = first(rows, implied="Water", clear=lambda r: r["indices"]["mndwi"] > 0.2)
    turbid = first(rows, implied="Water", turbid=lambda r: r["indices"]["mndwi"] < 0.1)
    forest = first(rows, implied="Vegetation")
    builtup = first(rows, implied="BuiltUp", implied_vnir="NonVegetated")
    builtup_mixed = first(rows, implied="BuiltUp", implied_vnir="Mixed")
    mixed = first(rows, implied="Mixed")
    bare = first(rows, implied="BareSoil")
    case(water, "Water", "Water", True, True, "MNDWI and NDWI above 0 read water")
    case(turbid, "lake", "Water", True, True, "MNDWI just above 0 still reads water")
    case(water, "built-up", "BuiltUp", True, False,
         "water before built-up although NDBI is positive")
    case(forest, "forest", "Vegetation", True, True, "NDVI above 0.5 reads vegetation")
    case(builtup, "Urban", "BuiltUp", True, False, "NDBI above 0 reads built-up")
    case(builtup, "non-vegetated", "NonVegetated", False, True,
         "without SWIR, NDVI below 0.2 reads non-vegetated")
    case(builtup_mixed, "Urban", "BuiltUp", True, True, "built-up with SWIR, mixed without")
    case(mixed, "Mixed", "Mixed", True, True, "NDVI 0.2-0.5 with NDBI at most 0 reads mixed")
    case(bare, "bare soil", "BareSoil", True, False,
         "NDVI below 0.2 with NDBI at most 0 reads bare soil")
    case(mixed, "Vegetation", "Vegetation", False, True, "a vegetation claim on a mixed pixel")
    return cases


# ---- landcover.kdtest.jsonl -------------------------------------------------------------------------

def think_text(row: dict, conclusion: str, ndvi_offset: float = 0.0,
               mndwi_offset: float = 0.0) -> str:
    idx = row["indices"]
    return (f"NDVI {idx['ndvi'] + ndvi_offset:.2f}, MNDWI {idx['mndwi'] + mndwi_offset:.2f}, "
            f"NDBI {idx['ndbi']:.2f}: {conclusion}")


def pixel_case(row: dict, name: str, completion: str, claim: str | None, *, label: bool = True,
               answers: int = 1, think: str | None = None, quotes: dict | None = None) -> dict:
    """A case of landcover.kd with every rule's expectation and the reward computed here."""
    implied = row["implied"]
    label_class = rs.LABEL_CLASS[row["label"]]
    truths: dict[str, bool | None] = {
        "one_answer": answers == 1,
        "known_class": claim is not None,
        "correct": (claim == label_class) if label else None,
    }
    truths.update(rs.knowledge_rules(claim, implied))
    mentions = think is not None and any(w in think.replace(",", " ").replace(":", " ").split()
                                         for w in ("NDVI", "NDWI", "MNDWI", "NDBI"))
    truths["reasons_with_indices"] = mentions
    for rule, index in (("quotes_ndvi_correctly", "ndvi"), ("quotes_mndwi_correctly", "mndwi")):
        quoted = (quotes or {}).get(index)
        truths[rule] = None if quoted is None else soft_at_most(
            abs(quoted - row["indices"][index]), 0.05, 0.05)
    fmt = level([float(truths["one_answer"]), float(truths["known_class"])])
    knowledge_names = list(rs.knowledge_rules(claim, implied))
    reward = fmt
    if fmt >= 1 - 1e-6:
        reward += 2 * level([None if truths["correct"] is None else float(truths["correct"])])
        reward += level([None if truths[n] is None else float(truths[n]) for n in knowledge_names])
        reward += 0.5 * level([None if truths[n] is None else float(truths[n]) for n in
                               ("reasons_with_indices", "quotes_ndvi_correctly",
                                "quotes_mndwi_correctly")])
    case = {"name": f"sample {row['sample']} ({row['label']}, {implied}): {name}",
            "completion": completion}
    if label:
        case["label"] = row["label"]
    case["sr"] = row["sr"]
    case["expect"] = expect_rules(truths) + [f"reward == {reward:.6g} +- 1e-4"]
    return case


def pixel_cases(rows: list[dict]) -> list[dict]:
    water = first(rows, implied="Water", clear=lambda r: r["indices"]["mndwi"] > 0.2)
    forest = first(rows, implied="Vegetation", label="Vegetation")
    green_mixed = first(rows, implied="Mixed", label="Vegetation")
    builtup = first(rows, implied="BuiltUp")
    urban_mixed = first(rows, implied="Mixed", label="Urban")
    bare = first(rows, implied="BareSoil")
    cases = []

    def add(row, name, claim_text, claim, conclusion, *, quote_ndvi=True, quote_mndwi=True,
            ndvi_offset=0.0, mndwi_offset=0.0, **options):
        think = think_text(row, conclusion, ndvi_offset, mndwi_offset)
        idx = row["indices"]
        quotes = {"ndvi": round(idx["ndvi"] + ndvi_offset, 2),
                  "mndwi": round(idx["mndwi"] + mndwi_offset, 2)}
        if not quote_ndvi or not quote_mndwi:
            # Quote only the indices asked for.
            parts = [f"NDVI {quotes['ndvi']:.2f}"] if quote_ndvi else []
            parts += [f"MNDWI {quotes['mndwi']:.2f}"] if quote_mndwi else []
            think = (", ".join(parts) + ": " if parts else "") + conclusion
            quotes = {k: v for k, v in quotes.items() if (k == "ndvi" and quote_ndvi)
                      or (k == "mndwi" and quote_mndwi)}
        completion = f"<think>{think}</think><answer>{claim_text}</answer>"
        cases.append(pixel_case(row, name, completion, claim, think=think, quotes=quotes, **options))

    add(water, "water named, indices quoted", "Water", "Water", "green far above SWIR 1, open water.")
    add(water, "water called urban for its positive NDBI", "Urban", "BuiltUp",
        "SWIR 1 above NIR, roofs.", quote_mndwi=False)
    add(forest, "forest named", "forest", "Vegetation", "dense canopy.")
    add(forest, "dense vegetation called urban", "Urban", "BuiltUp", "a built-up block.")
    add(forest, "vegetation called water", "water", "Water", "dark, so water.", quote_ndvi=False,
        quote_mndwi=False)
    add(green_mixed, "vegetation label in the mixed NDVI range", "Vegetation", "Vegetation",
        "green, though not dense.")
    add(builtup, "built-up named", "Urban", "BuiltUp", "SWIR 1 above NIR: built-up.")
    add(builtup, "built-up called bare soil", "bare soil", "BareSoil", "bright and dry: bare soil.")
    add(urban_mixed, "urban pixel in the mixed range", "Urban", "BuiltUp", "roofs and trees.")
    add(urban_mixed, "urban pixel called vegetation", "Vegetation", "Vegetation", "some green.")
    add(urban_mixed, "urban pixel called bare soil", "bare", "BareSoil", "soil.")
    add(bare, "urban pixel the key reads as bare soil", "Urban", "BuiltUp", "low NDVI: built-up.")
    add(builtup, "built-up pixel called vegetation", "Vegetation", "Vegetation", "green roofs.")
    add(water, "wrong NDVI quoted", "Water", "Water", "water.", ndvi_offset=0.3)
    add(forest, "wrong MNDWI quoted", "Vegetation", "Vegetation", "canopy.", mndwi_offset=0.4)
    add(builtup, "NDVI and MNDWI quoted 0.07 off: part credit", "Urban", "BuiltUp", "built-up.",
        ndvi_offset=0.07, mndwi_offset=-0.07)
    add(builtup, "no label in the dataset", "Urban", "BuiltUp", "built-up.", label=False)

    # Format failures.
    row = water
    think = think_text(row, "water.")
    cases.append(pixel_case(row, "two answers close the gate",
                            f"<think>{think}</think><answer>Water</answer><answer>Urban</answer>",
                            "Water", answers=2, think=think,
                            quotes={"ndvi": round(row["indices"]["ndvi"], 2),
                                    "mndwi": round(row["indices"]["mndwi"], 2)}))
    cases.append(pixel_case(forest, "a class the key does not know",
                            "<answer>parking lot</answer>", None, think=None))
    return cases


# ---- the Sentinel-2 crops and landcover_raster.kdtest.jsonl ------------------------------------

def crops() -> dict[str, np.ndarray]:
    image = rs.sentinel_image()
    out = {}
    for name, top, left in CROPS:
        out[name] = image[:, top:top + CROP, left:left + CROP].astype(np.int16)
    water = out["s2_water"]
    padded = np.zeros((4, CROP + 2 * BORDER, CROP + 2 * BORDER), dtype=np.int16)
    padded[:, BORDER:BORDER + CROP, BORDER:BORDER + CROP] = water
    out["s2_water_nodata"] = padded
    return out


def raster_case(name: str, fixture: str, image: np.ndarray, *, water=None, vegetated=None,
                dominant=None, mean_ndvi=None, tags=("water", "vegetated", "dominant"),
                relative: str | None = None) -> dict:
    shares = rs.vnir_shares(image)
    water = round(100 * shares["water"]) if water is None else water
    vegetated = round(100 * shares["vegetated"]) if vegetated is None else vegetated
    dominant = shares["largest"] if dominant is None else dominant
    think = f"Mean NDVI {mean_ndvi:.2f}." if mean_ndvi is not None else "Looked at the bands."
    parts = {"water": f"<water>{water}%</water>", "vegetated": f"<vegetated>{vegetated}%</vegetated>",
             "dominant": f"<dominant>{dominant}</dominant>"}
    completion = f"<think>{think}</think>" + "".join(parts[t] for t in tags)

    def soft(diff: float) -> float:  # `d <= 5 soft 5`
        return soft_at_most(diff, 5.0, 5.0)

    truths = {"reports_shares": "water" in tags and "vegetated" in tags,
              "names_dominant_class": "dominant" in tags,
              "water_share": soft(abs(water - 100 * shares["water"])) if "water" in tags else None,
              "vegetated_share": soft(abs(vegetated - 100 * shares["vegetated"]))
              if "vegetated" in tags else None,
              "dominant_is_largest": (dominant == shares["largest"]) if "dominant" in tags else None,
              "quotes_mean_ndvi": None if mean_ndvi is None
              else soft_at_most(abs(mean_ndvi - shares["mean_ndvi"]), 0.05, 0.05)}
    expect = []
    for rule, truth in truths.items():
        if truth is None:
            # A rule whose output is missing is invalid and fails, unless its `when` says so.
            expect.append(f"skip {rule}" if rule == "quotes_mean_ndvi" else f"not {rule}")
        elif isinstance(truth, float) and 0 < truth < 1:
            expect.append(f"rule.{rule} == {truth:.4f} +- 1e-3")
        else:
            expect.append(rule if truth else f"not {rule}")
    fmt = level([float(truths["reports_shares"]), float(truths["names_dominant_class"])])
    reward = fmt
    if fmt >= 1 - 1e-6:
        reward += 2 * level([float(truths["water_share"]), float(truths["vegetated_share"])])
        reward += float(truths["dominant_is_largest"])
        reward += 0.5 * level([None if truths["quotes_mean_ndvi"] is None
                               else float(truths["quotes_mean_ndvi"])])
    expect.append(f"reward == {reward:.4f} +- 1e-3")
    for let in ("water", "vegetation", "mixed", "nonvegetated", "vegetated", "mean_ndvi"):
        expect.append(f"let.{let} == {shares[let]:.6f} +- 1e-5")
    if relative:
        expect.append(f'reward == "{relative}"')
    return {"name": name, "completion": completion, "scene": {"fixture": f"fixtures/{fixture}.npy"},
            "expect": expect}


def raster_cases(images: dict[str, np.ndarray]) -> list[dict]:
    cases = []
    for name, label in (("s2_forest", "forest crop"), ("s2_fields", "field crop"),
                        ("s2_bare", "bare crop"), ("s2_water", "river crop")):
        image = images[name]
        mean = rs.vnir_shares(image)["mean_ndvi"]
        cases.append(raster_case(f"{label}: right shares and class, mean NDVI quoted", name, image,
                                 mean_ndvi=round(mean, 2)))
    river = images["s2_water"]
    shares = rs.vnir_shares(river)
    cases.append(raster_case("river crop with a nodata border: the same shares", "s2_water_nodata",
                             images["s2_water_nodata"], mean_ndvi=round(shares["mean_ndvi"], 2),
                             relative="river crop: right shares and class, mean NDVI quoted"))
    cases.append(raster_case("river crop: water share 7 points off", "s2_water", river,
                             water=round(100 * shares["water"]) + 7))
    cases.append(raster_case("river crop: vegetated share far off, wrong class", "s2_water", river,
                             vegetated=10, dominant="Water"))
    cases.append(raster_case("forest crop: mean NDVI misquoted", "s2_forest", images["s2_forest"],
                             mean_ndvi=0.2))
    fields = rs.vnir_shares(images["s2_fields"])
    cases.append(raster_case("field crop: vegetated share 8 points off, mean NDVI 0.07 off",
                             "s2_fields", images["s2_fields"],
                             vegetated=round(100 * fields["vegetated"]) - 8,
                             mean_ndvi=round(fields["mean_ndvi"] + 0.07, 2)))
    cases.append(raster_case("field crop: no shares closes the gate", "s2_fields",
                             images["s2_fields"], tags=("dominant",)))
    cases.append(raster_case("bare crop: no class closes the gate", "s2_bare", images["s2_bare"],
                             tags=("water", "vegetated")))
    return cases


# ---- examples/remote_sensing ------------------------------------------------------------------------

INSTRUCTION = ("Which land cover is this pixel: Vegetation, Urban or Water? Reason with the spectral "
               "indices (NDVI, MNDWI, NDBI) inside <think>...</think>, then give the class inside "
               "<answer>...</answer>.")


def prompt(sr: list[float]) -> str:
    values = " ".join(f"{band} {v:.3f}" for band, v in zip(rs.LANDSAT_BANDS, sr))
    return f"Landsat 8 surface reflectance: {values}\n{INSTRUCTION}\n"


def example_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The 120 samples as prompts, split 90/30 with kdsl's stratified split (seed 0)."""
    from kdsl.example.landsat import train_heldout_split

    data = [{"prompt": prompt(r["sr"]), "label": r["label"], "sr": r["sr"], "sample": r["sample"]}
            for r in rows]
    return train_heldout_split(data, 0.25, seed=0)


def example_completions(rows: list[dict]) -> list[dict]:
    water = first(rows, implied="Water", clear=lambda r: r["indices"]["mndwi"] > 0.2)
    forest = first(rows, implied="Vegetation", label="Vegetation")
    urban = first(rows, implied="BuiltUp")
    out = []
    for row, good, wrong, why in ((water, "Water", "Urban", "green far above SWIR 1"),
                                  (forest, "Vegetation", "Water", "NIR far above red"),
                                  (urban, "Urban", "Vegetation", "SWIR 1 above NIR")):
        idx = row["indices"]
        think = (f"NDVI {idx['ndvi']:.2f}, MNDWI {idx['mndwi']:.2f}, NDBI {idx['ndbi']:.2f}: "
                 f"{why}.")
        for text in (f"<think>{think}</think><answer>{good}</answer>",
                     f"<think>{think}</think><answer>{wrong}</answer>",
                     f"<answer>{good}</answer>"):
            out.append({"completion": text, "label": row["label"], "sr": row["sr"],
                        "sample": row["sample"]})
    return out


# ---- main ----------------------------------------------------------------------------------------------

def outputs() -> dict[Path, bytes]:
    rows = landsat_rows()
    images = crops()
    files: dict[Path, bytes] = {
        SPECS / "landcover_key.kdtest.jsonl": jsonl(key_cases(rows)).encode(),
        SPECS / "landcover.kdtest.jsonl": jsonl(pixel_cases(rows)).encode(),
        SPECS / "landcover_raster.kdtest.jsonl": jsonl(raster_cases(images)).encode(),
    }
    for name, array in images.items():
        files[SPECS / "fixtures" / f"{name}.npy"] = npy_bytes(array)
    train, heldout = example_rows(rows)
    files[EXAMPLE / "landcover_train.jsonl"] = jsonl(train).encode()
    files[EXAMPLE / "landcover_heldout.jsonl"] = jsonl(heldout).encode()
    files[EXAMPLE / "landcover_completions.jsonl"] = jsonl(example_completions(rows)).encode()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the files on disk instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for path, data in outputs().items():
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date; run {Path(__file__).name}",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
