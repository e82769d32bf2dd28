"""Dataset columns -> (value, mask) tensors, one input at a time.

Missing values (None, NaN, a nodata pixel) become invalid entries. A value of the wrong kind
(text in a float column, a vector of the wrong length) is a data error that names the row and
the column: it is never silently turned into an invalid value. A caller that would rather keep
going (scoring a large file, where one bad row should not stop the rest) passes a ``problems``
list: each wrong value is then appended to it as ``(row, column, message)`` and that row's value
is made invalid, so the caller can report the row and leave its scores out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from kdsl.errors import KdslDataError
from kdsl.runtime.text import normalize_term

_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f"}


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


def _scalar_number(value, name: str, row: int, problems: list | None = None) -> tuple[float, bool]:
    if value is None:
        return 0.0, False
    if isinstance(value, (bool, np.bool_)):
        return float(value), True
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            v = float(value)
        except OverflowError:  # an integer beyond float range: as invalid as infinity
            return 0.0, False
        return (v, True) if math.isfinite(v) else (0.0, False)
    if isinstance(value, Tensor) and value.numel() == 1:
        return _scalar_number(value.item(), name, row, problems)
    if isinstance(value, np.ndarray) and value.size == 1:
        return _scalar_number(value.reshape(()).item(), name, row, problems)
    _reject(problems, name, row, value, "a number")
    return 0.0, False


def numbers(column, name: str, n: int, device, dtype,
            problems: list | None = None) -> tuple[Tensor, Tensor]:
    if isinstance(column, Tensor) and column.dim() == 1 and column.shape[0] == n and (
            column.is_floating_point() or not column.dtype.is_complex):
        x = column.to(device=device, dtype=dtype)
        m = torch.isfinite(x)
        return torch.where(m, x, torch.zeros_like(x)), m
    values, valid = [], []
    for row, value in enumerate(_rows(column, name, n)):
        v, ok = _scalar_number(value, name, row, problems)
        values.append(v)
        valid.append(ok)
    return (torch.tensor(values, dtype=dtype, device=device),
            torch.tensor(valid, dtype=torch.bool, device=device))


def bools(column, name: str, n: int, device, dtype,
          problems: list | None = None) -> tuple[Tensor, Tensor]:
    values, valid = [], []
    for row, value in enumerate(_rows(column, name, n)):
        if value is None:
            values.append(0.0)
            valid.append(False)
        elif isinstance(value, (bool, np.bool_, int, np.integer)) and value in (0, 1):
            values.append(float(value))
            valid.append(True)
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            values.append(1.0 if value.strip().lower() in _TRUE else 0.0)
            valid.append(True)
        elif isinstance(value, float) and math.isnan(value):
            values.append(0.0)
            valid.append(False)
        else:
            _reject(problems, name, row, value, "true or false")
            values.append(0.0)
            valid.append(False)
    return (torch.tensor(values, dtype=dtype, device=device),
            torch.tensor(valid, dtype=torch.bool, device=device))


def enums(column, name: str, n: int, device, lookup: dict[str, int], members: Sequence[str],
          problems: list | None = None):
    values, valid = [], []
    seen: dict[str, int | None] = {}
    for row, value in enumerate(_rows(column, name, n)):
        if value is None or (isinstance(value, float) and math.isnan(value)):
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


def strings(column, name: str, n: int, device, interner: Interner, problems: list | None = None):
    values, valid = [], []
    for row, value in enumerate(_rows(column, name, n)):
        if value is None:
            values.append(-1)
            valid.append(False)
        elif isinstance(value, str):
            values.append(interner.id(value.strip()))
            valid.append(True)
        else:
            _reject(problems, name, row, value, "a string")
            values.append(-1)
            valid.append(False)
    return (torch.tensor(values, dtype=torch.long, device=device),
            torch.tensor(valid, dtype=torch.bool, device=device))


def vectors(column, name: str, n: int, size: int, device, dtype,
            problems: list | None = None) -> tuple[Tensor, Tensor]:
    if isinstance(column, (Tensor, np.ndarray)) and tuple(column.shape) == (n, size):
        x = torch.as_tensor(np.asarray(column.detach().cpu() if isinstance(column, Tensor) else column,
                                       dtype=np.float64)).to(device=device, dtype=dtype)
    else:
        rows = []
        for row, value in enumerate(_rows(column, name, n)):
            if value is None:
                rows.append([math.nan] * size)
                continue
            try:
                array = np.asarray(value, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                _reject(problems, name, row, value, f"{size} numbers")
                rows.append([math.nan] * size)
                continue
            if array.shape[0] != size:
                _reject(problems, name, row, value, f"{size} numbers, not {array.shape[0]}")
                rows.append([math.nan] * size)
                continue
            rows.append(array)
        x = torch.as_tensor(np.array(rows, dtype=np.float64).reshape(n, size)).to(device=device,
                                                                                   dtype=dtype)
    m = torch.isfinite(x)
    return torch.where(m, x, torch.zeros_like(x)), m


def boxes(column, name: str, n: int, device, dtype,
          problems: list | None = None) -> tuple[Tensor, Tensor]:
    x, m = vectors(column, name, n, 4, device, dtype, problems)
    ordered = (x[:, 2] >= x[:, 0]) & (x[:, 3] >= x[:, 1])
    m = m & ordered[:, None]
    return torch.where(m, x, torch.zeros_like(x)), m


def box_lists(column, name: str, n: int, device, dtype,
              problems: list | None = None) -> tuple[Tensor, Tensor]:
    """Rows of any number of boxes ``[[x1, y1, x2, y2], ...]`` (an empty list: no boxes) as
    ``(B, K, 4)`` values and a ``(B, 1 + K)`` mask: column 0 says whether the row has a list at
    all, the others which of the K slots (padded to the longest row) hold a box."""
    lists: list[list | None] = []
    for row, value in enumerate(_rows(column, name, n)):
        if value is None:
            lists.append(None)
            continue
        try:
            array = np.asarray(value, dtype=np.float64)
            if array.size == 0:
                array = array.reshape(0, 4)
        except (TypeError, ValueError):
            array = None
        if array is None or array.ndim != 2 or array.shape[1] != 4 or not np.isfinite(array).all():
            _reject(problems, name, row, value, "a list of boxes [[x1, y1, x2, y2], ...] of numbers")
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
            problems: list | None = None):
    """(B, C, H, W) values, as given (NaN and nodata pixels included), and a (B,) mask of the rows
    that have a raster at all. Pixel masks are made per band where a band is used (ops.band).
    Rows of different sizes are padded with NaN (invalid) to the largest height and width."""
    del nodata  # applied per band in ops.band
    if isinstance(column, Tensor) and column.dim() == 4 and tuple(column.shape[:2]) == (n, bands):
        x = column.to(device=device, dtype=dtype)
        return x, torch.ones(n, dtype=torch.bool, device=device)
    arrays = []
    for row, value in enumerate(_rows(column, name, n)):
        if value is None:
            arrays.append(None)
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
