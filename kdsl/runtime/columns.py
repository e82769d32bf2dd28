"""Dataset columns -> (value, mask) tensors, one input at a time.

Two kinds of bad value, kept apart:

- A value of the wrong kind (text in a float column, a vector of the wrong length, ``"nan"`` where
  a number belongs: text is never read as a number) is a data error that names the row and the
  column; it is never silently turned into an invalid value. A caller that would rather keep
  going (scoring a large file, where one bad row should not stop the rest) passes a ``problems``
  list: each wrong value is then appended to it as ``(row, column, message)`` and that row's
  value is made invalid, so the caller can report the row and leave its scores out.
- A value of the right kind that cannot be used is *invalid*, as the language defines it (rules
  on it are unsatisfied, or follow their `invalid` policy), the same way in every kind of column:
  *missing* (``None``; NaN where one number belongs, as pandas writes a missing number) or *not
  finite* (an infinity, a number beyond float range such as ``1e309``, NaN inside a vector or a
  box, an infinite pixel), or a list of more than ``MAX_BOXES`` boxes. A caller that passes an
  ``InvalidValues`` gets each one counted per column, with its first rows, to report (and, with
  ``--strict``, to refuse). NaN pixels of a raster are its nodata, like the declared ``nodata``
  value, and are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from kdsl.errors import KdslDataError
from kdsl.limits import MAX_BOXES
from kdsl.runtime.text import clean_text, normalize_term

_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f"}

MISSING = "missing"
NOT_FINITE = "not a finite number"
TOO_MANY_BOXES = f"more than {MAX_BOXES} boxes"
FIRST_ROWS = 5  # rows shown per column and reason


@dataclass
class InvalidValues:
    """Invalid values seen in columns: per column and reason, how many and the first rows.

    Plain dicts, so scoring workers can send theirs back to be merged."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    keep: int | None = FIRST_ROWS  # rows kept per column and reason (None: all of them)

    def note(self, column: str, row: int, reason: str) -> None:
        per_column = self.counts.setdefault(column, {})
        per_column[reason] = per_column.get(reason, 0) + 1
        first = self.rows.setdefault(column, {}).setdefault(reason, [])
        if self.keep is None or len(first) < self.keep:
            first.append(row)

    def note_mask(self, column: str, invalid: Tensor, reason: str) -> None:
        """Every row where ``invalid`` (a (B, ...) bool tensor) holds anywhere (one host sync;
        only callers that asked for a count pay it)."""
        rows = torch.nonzero(invalid.reshape(invalid.shape[0], -1).any(1)).flatten().tolist()
        for row in rows:
            self.note(column, row, reason)

    def merge(self, other: InvalidValues, offset: int = 0) -> None:
        """Add another batch's findings, its rows shifted by ``offset``."""
        for column, reasons in other.counts.items():
            for reason, count in reasons.items():
                per_column = self.counts.setdefault(column, {})
                per_column[reason] = per_column.get(reason, 0) + count
                first = self.rows.setdefault(column, {}).setdefault(reason, [])
                room = None if self.keep is None else max(self.keep - len(first), 0)
                first.extend(r + offset for r in other.rows[column][reason][:room])

    def __bool__(self) -> bool:
        return bool(self.counts)

    def by_row(self) -> dict[int, list[tuple[str, str]]]:
        """Each kept row's ``(column, reason)`` pairs (every row, when ``keep`` is None)."""
        out: dict[int, list[tuple[str, str]]] = {}
        for column, reasons in self.rows.items():
            for reason, rows in reasons.items():
                for row in rows:
                    out.setdefault(row, []).append((column, reason))
        return out

    def keep_first(self) -> None:
        """Keep only the first rows of each column and reason (after every row was needed)."""
        self.keep = FIRST_ROWS
        self.rows = {column: {reason: rows[:FIRST_ROWS] for reason, rows in reasons.items()}
                     for column, reasons in self.rows.items()}

    def as_dict(self) -> dict:
        """``{column: {reason: {"count": n, "rows": [first rows]}}}``, for JSON."""
        return {column: {reason: {"count": count, "rows": self.rows[column][reason]}
                         for reason, count in sorted(reasons.items())}
                for column, reasons in sorted(self.counts.items())}

    def lines(self) -> list[str]:
        """One line per column: ``column `v`: 2 missing (rows 3, 9), 1 not a finite number
        (row 4)``, rows counted from 0."""
        out = []
        for column in sorted(self.counts):
            parts = []
            for reason, count in sorted(self.counts[column].items()):
                rows = self.rows[column][reason]
                more = ", ..." if count > len(rows) else ""
                label = "row" if len(rows) == 1 and not more else "rows"
                parts.append(f"{count:,} {reason} ({label} {', '.join(map(str, rows))}{more})")
            out.append(f"column `{column}`: " + "; ".join(parts))
        return out


class Interner:
    """Maps strings to int64 ids for one batch, so string equality is a tensor comparison.

    The spec's own string literals come first, in a fixed order, so compiled code can name them
    by id.
    """

    def __init__(self, literals: Sequence[str] = ()):
        self.ids: dict[str, int] = {}
        for literal in literals:
            self.id(literal)

    def id(self, value: str) -> int:
        found = self.ids.get(value)
        if found is None:
            found = self.ids[value] = len(self.ids)
        return found


def _rows(column, name: str, n: int) -> list:
    if isinstance(column, Tensor):
        column = column.detach().cpu().numpy()
    if isinstance(column, np.ndarray):
        if column.shape[:1] != (n,):
            raise KdslDataError(f"column `{name}` has {column.shape[0] if column.ndim else 0} rows, "
                                f"but there are {n} completions")
        return list(column)
    if isinstance(column, (str, bytes)) or not hasattr(column, "__len__"):
        raise KdslDataError(f"column `{name}` must be a list with one value per completion, "
                            f"not {type(column).__name__}")
    if len(column) != n:
        raise KdslDataError(f"column `{name}` has {len(column)} rows, but there are {n} completions")
    return list(column)


def _describe(value, expected: str) -> str:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"expected {expected}, got {shown}"


def _bad(name: str, row: int, value, expected: str) -> KdslDataError:
    return KdslDataError(f"row {row}, column `{name}`: {_describe(value, expected)}")


def _reject(problems: list | None, name: str, row: int, value, expected: str) -> None:
    """Raise the data error for a wrong value, or record it when the caller collects problems
    (the caller then stores an invalid value for the row)."""
    if problems is None:
        raise _bad(name, row, value, expected)
    problems.append((row, name, _describe(value, expected)))


def _scalar_number(value, name: str, row: int, problems: list | None,
                   invalid: InvalidValues | None) -> tuple[float, bool]:
    if value is None:
        return _invalid(invalid, name, row, MISSING)
    if isinstance(value, (bool, np.bool_)):
        return float(value), True
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            v = float(value)
        except OverflowError:  # an integer beyond float range: as invalid as infinity
            return _invalid(invalid, name, row, NOT_FINITE)
        if math.isnan(v):
            return _invalid(invalid, name, row, MISSING)
        return (v, True) if math.isfinite(v) else _invalid(invalid, name, row, NOT_FINITE)
    if isinstance(value, Tensor) and value.numel() == 1:
        return _scalar_number(value.item(), name, row, problems, invalid)
    if isinstance(value, np.ndarray) and value.size == 1:
        return _scalar_number(value.reshape(()).item(), name, row, problems, invalid)
    _reject(problems, name, row, value, "a number")
    return 0.0, False


def _invalid(invalid: InvalidValues | None, name: str, row: int, reason: str) -> tuple[float, bool]:
    if invalid is not None:
        invalid.note(name, row, reason)
    return 0.0, False


def _note_non_finite(invalid: InvalidValues | None, name: str, x: Tensor,
                     skip: set[int] = frozenset()) -> None:
    """Count the rows of a (B, ...) tensor that hold NaN (missing) or an infinity, but those in
    ``skip``."""
    if invalid is None:
        return
    for reason, found in ((MISSING, torch.isnan(x)), (NOT_FINITE, torch.isinf(x))):
        rows = found.reshape(found.shape[0], -1).any(1)
        if skip:
            rows[list(skip)] = False
        invalid.note_mask(name, rows, reason)


def numbers(column, name: str, n: int, device, dtype, problems: list | None = None,
            invalid: InvalidValues | None = None) -> tuple[Tensor, Tensor]:
    if isinstance(column, Tensor) and column.dim() == 1 and column.shape[0] == n and (
            column.is_floating_point() or not column.dtype.is_complex):
        x = column.to(device=device, dtype=dtype)
        _note_non_finite(invalid, name, x)
        m = torch.isfinite(x)
        return torch.where(m, x, torch.zeros_like(x)), m
    values, valid = [], []
    for row, value in enumerate(_rows(column, name, n)):
        v, ok = _scalar_number(value, name, row, problems, invalid)
        values.append(v)
        valid.append(ok)
    x = torch.tensor(values, dtype=dtype, device=device)
    m = torch.tensor(valid, dtype=torch.bool, device=device)
    # Finite in float64 but beyond the program's dtype (1e39 in float32): as invalid as infinity.
    # Masked without asking whether any exists, which would wait for the device.
    overflow = m & ~torch.isfinite(x)
    if invalid is not None:
        invalid.note_mask(name, overflow, NOT_FINITE)
    m = m & ~overflow
    return torch.where(m, x, torch.zeros_like(x)), m


def _is_missing(value) -> bool:
    """None, or NaN standing for one missing value (pandas writes a missing entry as NaN)."""
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def bools(column, name: str, n: int, device, dtype, problems: list | None = None,
          invalid: InvalidValues | None = None) -> tuple[Tensor, Tensor]:
    values, valid = [], []
    for row, value in enumerate(_rows(column, name, n)):
        if _is_missing(value):
            _invalid(invalid, name, row, MISSING)
            values.append(0.0)
            valid.append(False)
        elif isinstance(value, (bool, np.bool_, int, np.integer)) and value in (0, 1):
            values.append(float(value))
            valid.append(True)
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            values.append(1.0 if value.strip().lower() in _TRUE else 0.0)
            valid.append(True)
        else:
            _reject(problems, name, row, value, "true or false")
            values.append(0.0)
            valid.append(False)
    return (torch.tensor(values, dtype=dtype, device=device),
            torch.tensor(valid, dtype=torch.bool, device=device))


def enums(column, name: str, n: int, device, lookup: dict[str, int], members: Sequence[str],
          problems: list | None = None, invalid: InvalidValues | None = None):
    values, valid = [], []
    seen: dict[str, int | None] = {}
    for row, value in enumerate(_rows(column, name, n)):
        if _is_missing(value):
            _invalid(invalid, name, row, MISSING)
            values.append(0)
            valid.append(False)
            continue
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if not 0 <= int(value) < len(members):
                _reject(problems, name, row, value, f"one of {', '.join(members)} (or an index "
                                                    f"below {len(members)})")
                values.append(0)
                valid.append(False)
                continue
            values.append(int(value))
            valid.append(True)
            continue
        index = None
        if isinstance(value, str):
            index = seen.get(value, -1)
            if index == -1:  # labels repeat: normalise each distinct spelling once
                index = seen[value] = lookup.get(normalize_term(value))
        if index is None:
            _reject(problems, name, row, value, f"one of {', '.join(members)}")
            values.append(0)
            valid.append(False)
            continue
        values.append(index)
        valid.append(True)
    return (torch.tensor(values, dtype=torch.long, device=device),
            torch.tensor(valid, dtype=torch.bool, device=device))


def strings(column, name: str, n: int, device, interner: Interner, problems: list | None = None,
            invalid: InvalidValues | None = None):
    values, valid = [], []
    for row, value in enumerate(_rows(column, name, n)):
        if _is_missing(value):
            _invalid(invalid, name, row, MISSING)
            values.append(-1)
            valid.append(False)
        elif isinstance(value, str):
            values.append(interner.id(clean_text(value.strip())))
            valid.append(True)
        else:
            _reject(problems, name, row, value, "a string")
            values.append(-1)
            valid.append(False)
    return (torch.tensor(values, dtype=torch.long, device=device),
            torch.tensor(valid, dtype=torch.bool, device=device))


def _number_array(value) -> np.ndarray | None:
    """A value as a float64 array of numbers (``None`` entries become NaN, missing), or ``None``
    when it holds anything that is not a number: text is not read as a number here either."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # ragged nested lists
        return None
    if array.dtype.kind in "biuf":
        return array.astype(np.float64)
    if array.dtype.kind != "O":
        return None
    flat = array.reshape(-1)
    if not all(v is None or (isinstance(v, (int, float, np.integer, np.floating))) for v in flat):
        return None
    return np.array([math.nan if v is None else _float_or_inf(v) for v in flat],
                    dtype=np.float64).reshape(array.shape)


def _float_or_inf(value) -> float:
    """A number as a float; an integer beyond float range as the infinity it overflows to."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def vectors(column, name: str, n: int, size: int, device, dtype, problems: list | None = None,
            invalid: InvalidValues | None = None) -> tuple[Tensor, Tensor]:
    rejected: set[int] = set()
    if isinstance(column, (Tensor, np.ndarray)) and tuple(column.shape) == (n, size) and (
            _number_array(column[:0]) is not None):
        x = torch.as_tensor(np.asarray(column.detach().cpu() if isinstance(column, Tensor) else column,
                                       dtype=np.float64)).to(device=device, dtype=dtype)
    else:
        rows = []
        for row, value in enumerate(_rows(column, name, n)):
            if value is None:  # missing: all NaN, counted with the others below
                rows.append(np.full(size, math.nan))
                continue
            array = _number_array(value)
            if array is None:
                _reject(problems, name, row, value, f"{size} numbers")
                rows.append(np.full(size, math.nan))
                rejected.add(row)
                continue
            array = array.reshape(-1)
            if array.shape[0] != size:
                _reject(problems, name, row, value, f"{size} numbers, not {array.shape[0]}")
                rows.append(np.full(size, math.nan))
                rejected.add(row)
                continue
            rows.append(array)
        x = torch.as_tensor(np.array(rows, dtype=np.float64).reshape(n, size)).to(device=device,
                                                                                   dtype=dtype)
    # NaN entries are missing, infinities (and numbers beyond the dtype's range) not finite; a
    # row of the wrong kind is already a problem of its own.
    _note_non_finite(invalid, name, x, rejected)
    m = torch.isfinite(x)
    return torch.where(m, x, torch.zeros_like(x)), m


def boxes(column, name: str, n: int, device, dtype, problems: list | None = None,
          invalid: InvalidValues | None = None) -> tuple[Tensor, Tensor]:
    x, m = vectors(column, name, n, 4, device, dtype, problems, invalid)
    ordered = (x[:, 2] >= x[:, 0]) & (x[:, 3] >= x[:, 1])
    if invalid is not None:
        invalid.note_mask(name, m.all(1) & ~ordered, "a box with x2 < x1 or y2 < y1")
    m = m & ordered[:, None]
    return torch.where(m, x, torch.zeros_like(x)), m


def box_lists(column, name: str, n: int, device, dtype, problems: list | None = None,
              invalid: InvalidValues | None = None) -> tuple[Tensor, Tensor]:
    """Rows of any number of boxes ``[[x1, y1, x2, y2], ...]`` (an empty list: no boxes) as
    ``(B, K, 4)`` values and a ``(B, 1 + K)`` mask: column 0 says whether the row has a list at
    all, the others which of the K slots (padded to the longest row) hold a box. A list with a
    coordinate that is not finite, or with more than ``MAX_BOXES`` boxes, is invalid as a whole:
    dropping one box would silently change what is counted and matched."""
    lists: list[list | None] = []
    for row, value in enumerate(_rows(column, name, n)):
        if value is None:
            _invalid(invalid, name, row, MISSING)
            lists.append(None)
            continue
        array = _number_array(value)
        if array is not None and array.size == 0:
            array = array.reshape(0, 4)
        if array is None or array.ndim != 2 or array.shape[1] != 4:
            _reject(problems, name, row, value, "a list of boxes [[x1, y1, x2, y2], ...] of numbers")
            lists.append(None)
            continue
        if not np.isfinite(array).all():
            _invalid(invalid, name, row, MISSING if np.isnan(array).any() else NOT_FINITE)
            lists.append(None)
            continue
        if array.shape[0] > MAX_BOXES:
            _invalid(invalid, name, row, TOO_MANY_BOXES)
            lists.append(None)
            continue
        lists.append(array.tolist())
    slots = max([1] + [len(boxes) for boxes in lists if boxes is not None])
    return pack_boxes(lists, slots, device, dtype)


def pack_boxes(lists: list[list | None], slots: int, device, dtype) -> tuple[Tensor, Tensor]:
    x = np.zeros((len(lists), slots, 4), dtype=np.float64)
    m = np.zeros((len(lists), 1 + slots), dtype=bool)
    for row, boxes in enumerate(lists):
        if boxes is None:
            continue
        m[row, 0] = True
        if boxes:
            x[row, :len(boxes)] = boxes
            m[row, 1:1 + len(boxes)] = True
    return (torch.as_tensor(x).to(device=device, dtype=dtype),
            torch.as_tensor(m).to(device=device))


def rasters(column, name: str, n: int, bands: int, nodata: float | None, device, dtype,
            problems: list | None = None, invalid: InvalidValues | None = None,
            band_names: tuple[str, ...] | None = None):
    """(B, C, H, W) values, as given (NaN and nodata pixels included), and a (B,) mask of the rows
    that have a raster at all. Pixel masks are made per band where a band is used (ops.band).
    Rows of different sizes are padded with NaN (invalid) to the largest height and width.
    A value that is a GeoTIFF path (or ``{"path", "window", "bands"}``) or an ``xarray.DataArray``
    is read by :mod:`kdsl.runtime.geotiff`, its bands chosen by ``band_names``."""
    from kdsl.runtime import geotiff

    del nodata  # applied per band in ops.band
    if isinstance(column, Tensor) and column.dim() == 4 and tuple(column.shape[:2]) == (n, bands):
        x = column.to(device=device, dtype=dtype)
        if invalid is not None:
            invalid.note_mask(name, torch.isinf(x), NOT_FINITE)
        return x, torch.ones(n, dtype=torch.bool, device=device)
    arrays = []
    for row, value in enumerate(_rows(column, name, n)):
        if value is None:
            _invalid(invalid, name, row, MISSING)
            arrays.append(None)
            continue
        if geotiff.is_raster_reference(value):
            try:
                array = geotiff.read(value, band_names, bands)
            except KdslDataError as err:
                if problems is None:
                    raise KdslDataError(f"row {row}, column `{name}`: {err.message}") from None
                problems.append((row, name, err.message))
                arrays.append(None)
                continue
            if invalid is not None and np.isinf(array).any():
                invalid.note(name, row, NOT_FINITE)
            arrays.append(array)
            continue
        try:
            array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        except (TypeError, ValueError):  # ragged nested lists
            _reject(problems, name, row, value, f"a raster of shape ({bands}, height, width)")
            arrays.append(None)
            continue
        if array.ndim == 2 and bands == 1:
            array = array[None]
        if array.ndim != 3 or array.shape[0] != bands:
            _reject(problems, name, row, f"an array of shape {tuple(array.shape)}",
                    f"a raster of shape ({bands}, height, width)")
            arrays.append(None)
            continue
        if not np.issubdtype(array.dtype, np.number):
            _reject(problems, name, row, f"an array of {array.dtype}", "numbers")
            arrays.append(None)
            continue
        if invalid is not None and np.isinf(array).any():
            invalid.note(name, row, NOT_FINITE)
        arrays.append(array)
    shapes = [a.shape[1:] for a in arrays if a is not None] or [(1, 1)]
    height = max(s[0] for s in shapes)
    width = max(s[1] for s in shapes)
    batch = np.full((n, bands, height, width), np.nan, dtype=np.float64)
    for row, array in enumerate(arrays):
        if array is not None:
            batch[row, :, :array.shape[1], :array.shape[2]] = array
    x = torch.as_tensor(batch).to(device=device, dtype=dtype)
    present = torch.tensor([a is not None for a in arrays], dtype=torch.bool, device=device)
    return x, present
