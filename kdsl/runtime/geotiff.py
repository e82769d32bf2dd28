"""Raster values that are not arrays: GeoTIFF / Cloud-Optimised GeoTIFF files read with rasterio
(the `geotiff` extra), and ``xarray.DataArray`` values given from Python.

A raster column's value may be:

- a path to a GeoTIFF (relative to the working directory);
- an object ``{"path": ..., "window": [col_off, row_off, width, height], "bands": {NAME: INDEX}}``
  (``window`` and ``bands`` optional; band indexes count from 1, as GDAL's do);
- an ``xarray.DataArray`` with a ``band`` dimension (or bands first).

Bands are chosen by the spec's band names: from ``bands`` when the value gives it, else from the
file's band descriptions, else, when the file has exactly as many bands as the spec's raster, in
file order. Pixels equal to the file's nodata value become NaN (invalid, like the spec's own
``nodata``); each band's scale and offset from the file's metadata are applied, and so is the
reflectance offset of Sentinel-2 L2A products (``BOA_ADD_OFFSET`` per band with
``BOA_QUANTIFICATION_VALUE``), so values arrive as reflectances.

Only local files are read: a value naming a URL or one of GDAL's virtual file systems
(``/vsicurl/``, ``/vsis3/``...) is refused, so a dataset cannot make the scorer reach the network.
A read is bounded (``MAX_PIXELS`` per band); a larger scene needs a ``window``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from kdsl.errors import KdslDataError, printable

MAX_PIXELS = 2**26  # per band and value: 8192 x 8192
_REMOTE = re.compile(r"^(/vsi|[a-zA-Z][a-zA-Z0-9+.-]*://)")


def is_raster_reference(value) -> bool:
    """Whether a raster column value is read here rather than taken as an array."""
    return isinstance(value, (str, os.PathLike, Mapping)) or is_data_array(value)


def is_data_array(value) -> bool:
    # duck-typed, so xarray is never imported for a column that holds none
    return all(hasattr(value, attr) for attr in ("dims", "coords", "values", "sel"))


def read(value, bands: Sequence[str] | None, size: int) -> np.ndarray:
    """The (size, height, width) float64 array of one raster value; ``KdslDataError`` with the
    reason when the value cannot be read as the spec's raster."""
    if is_data_array(value):
        return _from_data_array(value, bands, size)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"path", "window", "bands"})
        if unknown or "path" not in value:
            raise KdslDataError("a raster object has `path` and optionally `window` and `bands`"
                                + (f", not {', '.join(f'`{printable(str(k))}`' for k in unknown)}" if unknown else ""))
        path, window, band_map = value["path"], value.get("window"), value.get("bands")
    else:
        path, window, band_map = value, None, None
    path = os.fspath(path) if isinstance(path, os.PathLike) else path
    if not isinstance(path, str):
        raise KdslDataError("a raster path must be a string")
    return _read_file(path, window, band_map, bands, size)


def _read_file(path: str, window, band_map, bands, size: int) -> np.ndarray:
    shown = printable(path)
    if _REMOTE.match(path):
        raise KdslDataError(f"{shown}: only local raster files are read, not URLs or GDAL virtual "
                            "file systems")
    if not os.path.isfile(path):
        raise KdslDataError(f"{shown}: no such raster file")
    try:
        import rasterio
        from rasterio.windows import Window
    except ImportError:
        raise KdslDataError("reading GeoTIFF rasters needs rasterio: pip install 'kdsl[geotiff]'") from None
    try:
        with rasterio.open(path) as src:
            indexes = _band_indexes(src, band_map, bands, size, shown)
            win = None
            if window is not None:
                if (not isinstance(window, Sequence) or len(window) != 4
                        or not all(isinstance(v, int) and v >= 0 for v in window)):
                    raise KdslDataError(f"{shown}: a window is [col_off, row_off, width, height], "
                                        "four whole numbers >= 0")
                col, row, width, height = window
                if col + width > src.width or row + height > src.height or not width or not height:
                    raise KdslDataError(f"{shown}: window {list(window)} is not inside the "
                                        f"{src.width} x {src.height} image")
                win = Window(col, row, width, height)
            height, width = (win.height, win.width) if win is not None else (src.height, src.width)
            if height * width > MAX_PIXELS:
                raise KdslDataError(f"{shown}: {width} x {height} pixels is more than one value "
                                    f"reads ({MAX_PIXELS:,} per band); give a `window`")
            data = src.read(indexes, window=win, masked=True, out_dtype="float64")
            array = np.ma.filled(data, np.nan)
            tags = src.tags()
            quantification = _number(tags.get("BOA_QUANTIFICATION_VALUE"))
            for k, index in enumerate(indexes):
                scale, offset = src.scales[index - 1], src.offsets[index - 1]
                if scale != 1.0 or offset != 0.0:
                    array[k] = array[k] * scale + offset
                if quantification:  # Sentinel-2 L2A: reflectance = (DN + BOA_ADD_OFFSET) / Q
                    add = _number(src.tags(index).get("BOA_ADD_OFFSET")) or 0.0
                    array[k] = (array[k] + add) / quantification
            return array
    except KdslDataError:
        raise
    except Exception as err:  # noqa: BLE001 - GDAL's own errors, as a data error on this row
        raise KdslDataError(f"{shown}: cannot read it as a raster ({type(err).__name__}: "
                            f"{printable(str(err))[:200]})") from None


def _number(text) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _band_indexes(src, band_map, bands, size: int, shown: str) -> list[int]:
    if band_map is not None:
        if not isinstance(band_map, Mapping):
            raise KdslDataError(f"{shown}: `bands` maps the spec's band names to band indexes")
        names = list(bands) if bands else [str(i) for i in range(size)]
        missing = [n for n in names if n not in band_map]
        if missing:
            raise KdslDataError(f"{shown}: `bands` does not give {', '.join(missing)}")
        indexes = [band_map[n] for n in names]
        if not all(isinstance(i, int) and 1 <= i <= src.count for i in indexes):
            raise KdslDataError(f"{shown}: band indexes count from 1 to {src.count}")
        return indexes
    descriptions = [d or "" for d in src.descriptions]
    if bands:
        by_name = {d.upper(): i + 1 for i, d in enumerate(descriptions) if d}
        if all(b.upper() in by_name for b in bands):
            return [by_name[b.upper()] for b in bands]
    if src.count == size:
        return list(range(1, size + 1))
    named = ", ".join(d for d in descriptions if d) or "none"
    raise KdslDataError(f"{shown} has {src.count} bands (described as: {named}), the spec's raster "
                        f"{size}" + (f" ({', '.join(bands)})" if bands else "") + "; give them as "
                        '{"path": ..., "bands": {NAME: INDEX, ...}}')


def _from_data_array(value, bands, size: int) -> np.ndarray:
    dims = tuple(value.dims)
    if "band" in dims:
        if bands and "band" in value.coords:
            present = [str(b) for b in value.coords["band"].values]
            missing = [b for b in bands if b not in present]
            if missing:
                raise KdslDataError(f"the DataArray has bands {', '.join(present)}, not "
                                    f"{', '.join(missing)}")
            value = value.sel(band=list(bands))
        value = value.transpose("band", *[d for d in dims if d != "band"])
    array = np.asarray(value.values, dtype=np.float64)
    if array.ndim != 3 or array.shape[0] != size:
        raise KdslDataError(f"a DataArray of shape {array.shape} (dims {', '.join(dims)}); the spec's "
                            f"raster has {size} bands: give a `band` dimension")
    return array
