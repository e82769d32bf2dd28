"""Tensor operations of compiled programs. Every value is a pair ``(x, m)``: a batch tensor and
a boolean validity mask of the same shape. Every function here is branch-free tensor code (no
``.item()``, no Python loop over samples), so compiled programs run unchanged on any device and
under ``torch.compile(fullgraph=True)``.

Invariant: ``x`` is finite everywhere, and where ``m`` is false it holds an arbitrary finite
value that nothing reads (reductions multiply by the mask, logic selects by it). Inputs are made
finite where they enter (columns, text, raster bands); divisions and partial functions guard
their domain. So no operation needs to zero its result, and a chain of arithmetic costs one pass
per operation; only an overflow to inf can break finiteness, and it is caught where values are
observed (reductions, rule truths, let values). This matters on the CPU, where ``torch.where`` and
``isfinite`` cost several times a plain arithmetic pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Pairs in, pairs out. Names follow the IR operation they implement.


# On the CPU (eager), torch's kernels that write bool tensors are several times slower than
# the same kernels writing bytes or floats (benchmarks/bench_raster.py, one (32, 64, 64) part of
# a batch: a float comparison 100 us into bool against 26 us into float, then 11 us from float to
# bool; a broadcast `&` 53 us on bool against 8 us on bytes). A bool tensor viewed as uint8 is
# the same memory, so the helpers below give the same values at the faster kernels' cost. Under
# torch.compile and on a GPU they take the plain kernels: inductor's C++ code does not vectorise
# bool viewed as bytes, and a GPU's bool kernels are as fast.
def _cpu_eager(t: Tensor) -> bool:
    return t.is_cpu and not torch.compiler.is_compiling()


def both(ma: Tensor, mb: Tensor) -> Tensor:
    """``ma & mb``."""
    if ma.shape == mb.shape or not _cpu_eager(ma):
        return ma & mb
    return (ma.view(torch.uint8) & mb.view(torch.uint8)).view(torch.bool)


def as_number(m: Tensor, dtype: torch.dtype) -> Tensor:
    """A bool tensor as 0/1 numbers of ``dtype``."""
    return m.view(torch.uint8).to(dtype) if _cpu_eager(m) else m.to(dtype)


def _float_result(a: Tensor, b, dtype: torch.dtype) -> Tensor | None:
    """An empty tensor of ``dtype`` for the comparison of ``a`` and ``b`` to write into, where
    the CPU's float kernels apply (both operands of that float type, or a Python number). It
    has no elements, so the comparison sizes it to the broadcast shape."""
    if not (dtype.is_floating_point and a.dtype == dtype and _cpu_eager(a)):
        return None
    if isinstance(b, Tensor) and b.dtype != dtype:
        return None
    return a.new_empty(0)


# Below this many entries the float detour of `compare` costs more than it saves (4,096 entries:
# 6.5 against 3.6 us; 16,384: 9.5 against 12).
_FLOAT_DETOUR_FROM = 1 << 14


def compare(op, a: Tensor, b) -> Tensor:
    """``op(a, b)`` for a torch comparison (``torch.lt``, ``torch.eq``, ...), as a bool tensor."""
    out = _float_result(a, b, a.dtype) if a.numel() >= _FLOAT_DETOUR_FROM else None
    return op(a, b) if out is None else op(a, b, out=out).to(torch.bool)


def compare_as(op, a: Tensor, b, dtype: torch.dtype) -> Tensor:
    """``op(a, b)`` as 0/1 numbers of ``dtype``."""
    out = _float_result(a, b, dtype)
    return as_number(op(a, b), dtype) if out is None else op(a, b, out=out)


def clean(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Zero the invalid entries and mark non-finite values invalid."""
    if x.is_floating_point():
        m = m & torch.isfinite(x)
    return torch.where(m, x, torch.zeros_like(x)), m


def const(ref: Tensor, value: float, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    x = torch.full_like(ref, value, dtype=dtype or ref.dtype)
    return x, torch.ones_like(ref, dtype=torch.bool)


def lift(x: Tensor, m: Tensor, dims: int) -> tuple[Tensor, Tensor]:
    """A per-sample value against per-element operands: (B,) -> (B, 1, ...)."""
    shape = x.shape + (1,) * dims
    return x.reshape(shape), m.reshape(shape)


def select(x: Tensor, m: Tensor, index: int) -> tuple[Tensor, Tensor]:
    """An element of a vector (B, N) -> (B,)."""
    return x[:, index], m[:, index]


def band(x: Tensor, present: Tensor, index: int, nodata: float | None) -> tuple[Tensor, Tensor]:
    """One band of a raster (B, C, H, W) -> (B, H, W). Rasters travel unmasked (``present`` says
    which rows have one at all); a band's pixel mask is computed only when the band is used."""
    raw = x[:, index]
    if nodata is None:
        xb = torch.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
        mb = compare(torch.eq, xb, raw)  # false exactly where raw was NaN or infinite
    else:  # NaN and infinities become nodata, so that one comparison finds every invalid pixel
        xb = torch.nan_to_num(raw, nan=nodata, posinf=nodata, neginf=nodata)
        mb = compare(torch.ne, xb, nodata)
    return xb, both(mb, present[:, None, None])


def observe(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """A value as it leaves the program (a let): non-finite values are invalid, invalid are 0."""
    return clean(x, m)


# ---- arithmetic -----------------------------------------------------------------------------
def add(a, ma, b, mb):
    return a + b, both(ma, mb)


def sub(a, ma, b, mb):
    return a - b, both(ma, mb)


def mul(a, ma, b, mb):
    return a * b, both(ma, mb)


def div(a, ma, b, mb):
    """Safe division: a zero denominator makes the result invalid instead of inf or NaN."""
    zero = compare(torch.eq, b, 0)
    # Adding the zeros as numbers turns 0 into 1 and leaves the rest exact, a cheap select.
    return a / (b + as_number(zero, b.dtype)), both(both(ma, mb), ~zero)


def mod(a, ma, b, mb):
    zero = compare(torch.eq, b, 0)
    return torch.remainder(a, b + as_number(zero, b.dtype)), both(both(ma, mb), ~zero)


def pow(a, ma, b, mb):  # noqa: A001 - named after the IR operation
    # A negative base with a fractional exponent has no real value: invalid, not NaN.
    defined = (a >= 0) | (torch.floor(b) == b)
    base = torch.where(defined, a, torch.ones_like(a))
    return clean(torch.pow(base, b), both(both(ma, mb), defined))


def neg(a, ma):
    return -a, ma


def abs(a, ma):  # noqa: A001
    return torch.abs(a), ma


def sqrt(a, ma):
    ok = a >= 0
    return clean(torch.sqrt(torch.where(ok, a, torch.zeros_like(a))), ma & ok)


def log(a, ma):
    ok = a > 0
    return clean(torch.log(torch.where(ok, a, torch.ones_like(a))), ma & ok)


def exp(a, ma):
    return clean(torch.exp(a), ma)


def floor(a, ma):
    return torch.floor(a), ma


def ceil(a, ma):
    return torch.ceil(a), ma


def round(a, ma):  # noqa: A001
    return torch.round(a), ma


def cos(a, ma):
    return torch.cos(a), ma


def sin(a, ma):
    return torch.sin(a), ma


def min(a, ma, b, mb):  # noqa: A001
    return torch.minimum(a, b), both(ma, mb)


def max(a, ma, b, mb):  # noqa: A001
    return torch.maximum(a, b), both(ma, mb)


# ---- comparisons: truth values in [0, 1] -------------------------------------------------------
def _truth(value: Tensor, m: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return (as_number(value, dtype) if value.dtype == torch.bool else value.to(dtype)), m


def _finite(a: Tensor, ma: Tensor, b: Tensor, mb: Tensor) -> Tensor:
    return both(ma, mb)


def _ramp(margin: Tensor, soft: float) -> Tensor:
    # margin >= 0 means the crisp comparison holds; below it, truth falls linearly to 0 at -soft.
    return torch.clamp(1.0 + margin / soft, 0.0, 1.0)


def lt(a, ma, b, mb, soft: float, dtype):
    m = _finite(a, ma, b, mb)
    if soft > 0:
        return _truth(_ramp((b - a).to(dtype), soft), m, dtype)
    return compare_as(torch.lt, a, b, dtype), m


def le(a, ma, b, mb, soft: float, dtype):
    m = _finite(a, ma, b, mb)
    if soft > 0:
        return _truth(_ramp((b - a).to(dtype), soft), m, dtype)
    return compare_as(torch.le, a, b, dtype), m


def gt(a, ma, b, mb, soft: float, dtype):
    return lt(b, mb, a, ma, soft, dtype)


def ge(a, ma, b, mb, soft: float, dtype):
    return le(b, mb, a, ma, soft, dtype)


def eq(a, ma, b, mb, soft: float, dtype):
    m = _finite(a, ma, b, mb)
    if soft > 0:
        return _truth(torch.clamp(1.0 - torch.abs(a - b).to(dtype) / soft, 0.0, 1.0), m, dtype)
    return compare_as(torch.eq, a, b, dtype), m


def ne(a, ma, b, mb, soft: float, dtype):
    m = _finite(a, ma, b, mb)
    if soft > 0:
        return _truth(torch.clamp(torch.abs(a - b).to(dtype) / soft, 0.0, 1.0), m, dtype)
    return compare_as(torch.ne, a, b, dtype), m


def in_set(a, ma, values: tuple, dtype):
    hit = torch.zeros_like(ma)
    for value in values:  # unrolled over the spec's literal set, not over samples
        hit = hit | (a == value)
    return _truth(hit, ma, dtype)


# ---- fuzzy logic with unknowns ----------------------------------------------------------------
# An invalid operand is unknown: the result is valid only where the known operand decides it
# (false and-anything is false; true or-anything is true), as in Kleene's three-valued logic.
def and_(a, ma, b, mb, logic: str):
    if logic == "godel":
        value = torch.minimum(a, b)
    elif logic == "lukasiewicz":
        value = torch.clamp(a + b - 1.0, min=0.0)
    else:
        value = a * b
    known = both(ma, mb)
    decided = known | both(ma, compare(torch.eq, a, 0)) | both(mb, compare(torch.eq, b, 0))
    return torch.where(known, value, torch.zeros_like(value)), decided


def or_(a, ma, b, mb, logic: str):
    if logic == "godel":
        value = torch.maximum(a, b)
    elif logic == "lukasiewicz":
        value = torch.clamp(a + b, max=1.0)
    else:
        value = a + b - a * b
    known = both(ma, mb)
    decided = known | both(ma, compare(torch.eq, a, 1)) | both(mb, compare(torch.eq, b, 1))
    value = torch.where(known, value, torch.ones_like(value))
    return torch.where(decided, value, torch.zeros_like(value)), decided


def not_(a, ma, logic: str):
    return torch.where(ma, 1.0 - a, torch.zeros_like(a)), ma


def if_(c, mc, a, ma, b, mb):
    take = c >= 0.5
    x = torch.where(take, a, b)
    m = mc & torch.where(take, ma, mb)
    return torch.where(m, x, torch.zeros_like(x)), m


def present(a, ma, dtype):
    if a.is_floating_point():
        ma = ma & torch.isfinite(a)
    return as_number(ma, dtype), torch.ones_like(ma)


def default(a, ma, b, mb):
    if a.is_floating_point():
        ma = ma & torch.isfinite(a)
    x = torch.where(ma, a, b)
    return x, ma | mb


def truth(a, ma):
    """A number used as a rule's truth value: clamped to [0, 1]."""
    a, ma = clean(a, ma)
    return torch.clamp(a, 0.0, 1.0), ma


# ---- reductions over a vector (B, N) or a field (B, H, W) -------------------------------------
def _flat(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Flattened values with NaN (from an overflow) made invalid and every invalid entry 0, the
    mask as 0/1 numbers, and the count of valid entries (summing a float mask is far faster
    than summing a bool one). A valid infinity stays: the reduction is then not finite, and
    invalid where it is observed."""
    x, m = x.flatten(1), m.flatten(1)
    if x.is_floating_point():
        m = m & compare(torch.eq, x, x)
        x = torch.where(m, x, 0.0)  # an overflow in an invalid entry: 0 * inf would be NaN
    weights = as_number(m, x.dtype if x.is_floating_point() else torch.float32)
    return x, weights, weights.sum(dim=1)


def _total(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the sum of the valid entries and how many there are (NaN entries left out)."""
    if x.is_floating_point() and _cpu_eager(x):
        # A NaN can only come from an overflow (the invariant above), so sum as if there were
        # none first: where no product is NaN, these are _flat's numbers in _flat's order, and a
        # NaN anywhere makes its row's total NaN. Reading that back is no device sync on the CPU,
        # and it saves _flat's three passes over every entry.
        flat = x.flatten(1)
        w = as_number(m.flatten(1), x.dtype)
        total = (flat * w).sum(dim=1)
        if not bool(torch.isnan(total).any()):
            return total, w.sum(dim=1)
    x, w, count = _flat(x, m)
    return (x * w).sum(dim=1), count


def _summary(value: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """A reduction's result per row: invalid, and 0, where no entry was valid or it is not
    finite (a valid entry overflowed); one value per row, so this costs nothing per entry."""
    valid = valid & torch.isfinite(value)
    return torch.where(valid, value, torch.zeros_like(value)), valid


def reduce_sum(x, m):
    total, count = _total(x, m)
    return _summary(total, count > 0)


def reduce_mean(x, m):
    total, count = _total(x, m)
    return _summary(total / count.clamp(min=1), count > 0)


reduce_frac = reduce_mean


def reduce_std(x, m):
    x, w, count = _flat(x, m)
    valid = count > 0
    mean = (x * w).sum(dim=1) / count.clamp(min=1)
    dev = (x - mean[:, None]) * w
    return _summary(torch.sqrt((dev * dev).sum(dim=1) / count.clamp(min=1)), valid)


def reduce_min(x, m):
    x, w, count = _flat(x, m)
    valid = count > 0
    return _summary(x.masked_fill(w == 0, float("inf")).amin(dim=1), valid)


def reduce_max(x, m):
    x, w, count = _flat(x, m)
    valid = count > 0
    return _summary(x.masked_fill(w == 0, float("-inf")).amax(dim=1), valid)


# ---- reductions over the batch: one value, given back to every sample --------------------------
# The batch is what one call scores: under TRL, the completions of one process's step.
def _batch(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    if x.is_floating_point():
        m = m & torch.isfinite(x)
    return x, m


def batch_min(x, m):
    x, m = _batch(x, m)
    value = x.masked_fill(~m, float("inf")).amin()
    valid = m.any()
    return torch.where(valid, value, 0.0).expand_as(x), valid.expand_as(m)


def batch_max(x, m):
    x, m = _batch(x, m)
    value = x.masked_fill(~m, float("-inf")).amax()
    valid = m.any()
    return torch.where(valid, value, 0.0).expand_as(x), valid.expand_as(m)


def batch_mean(x, m):
    x, m = _batch(x, m)
    weights = as_number(m, x.dtype)
    count = weights.sum()
    value = (torch.where(m, x, 0.0) * weights).sum() / count.clamp(min=1)
    return value.expand_as(x), (count > 0).expand_as(m)


def reduce_quantile(x, m, q: float):
    """Linear-interpolation quantile over the valid entries (``torch.quantile``'s default)."""
    x, w, count = _flat(x, m)
    m = w > 0
    count = count.long()
    valid = count > 0
    ordered, _ = torch.sort(torch.where(m, x, torch.full_like(x, float("inf"))), dim=1)
    last = (count - 1).clamp(min=0)
    position = q * last.to(x.dtype)
    low = torch.floor(position).long()
    high = torch.minimum(low + 1, last)
    weight = position - low.to(x.dtype)
    low_v = ordered.gather(1, low[:, None]).squeeze(1)
    high_v = ordered.gather(1, high[:, None]).squeeze(1)
    low_v = torch.where(valid, low_v, torch.zeros_like(low_v))
    high_v = torch.where(valid, high_v, torch.zeros_like(high_v))
    return _summary(low_v + (high_v - low_v) * weight, valid)


# ---- boxes (B, 4): x1, y1, x2, y2 ----------------------------------------------------------------
# Boxes are the last dimension (x1, y1, x2, y2), so these also take broadcast lists of boxes.
def area(b, mb):
    w = (b[..., 2] - b[..., 0]).clamp(min=0)
    h = (b[..., 3] - b[..., 1]).clamp(min=0)
    return w * h, mb.all(dim=-1)


def iou(a, ma, b, mb):
    x1 = torch.maximum(a[..., 0], b[..., 0])
    y1 = torch.maximum(a[..., 1], b[..., 1])
    x2 = torch.minimum(a[..., 2], b[..., 2])
    y2 = torch.minimum(a[..., 3], b[..., 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area_a, va = area(a, ma)
    area_b, vb = area(b, mb)
    union = area_a + area_b - inter
    return div(inter, va & vb, union, va & vb)


def box_present(x, m):
    """A box is there when all four coordinates are (the validity of its area)."""
    valid = area(x, m)[1]
    return valid.to(x.dtype), torch.ones_like(valid)


# ---- lists of boxes: values (B, K, 4), mask (B, 1 + K) (column 0: the row has a list) --------
def boxes_present(x, m):
    return m[:, 0].to(x.dtype), torch.ones_like(m[:, 0])


def box_count(x, m):
    return m[:, 1:].to(x.dtype).sum(dim=1), m[:, 0]


def matched_boxes(px, pm, gx, gm, threshold: float):
    """How many predicted boxes match a gold box one to one with IoU >= threshold: greedily, the
    pair with the highest IoU first (ties: the earlier prediction, then the earlier gold box).
    The loop runs min(P, G) times, a bound from the shapes, not from the data."""
    p, g = px[:, :, None, :], gx[:, None, :, :]  # every predicted box against every gold box
    overlap, defined = iou(p, torch.ones_like(p, dtype=torch.bool), g,
                           torch.ones_like(g, dtype=torch.bool))
    overlap = torch.where(defined, overlap, 0.0)  # two empty boxes overlap nothing
    pairs = pm[:, 1:, None] & gm[:, None, 1:]
    score = torch.where(pairs & (overlap >= threshold), overlap, -1.0)
    batch, predicted, gold = score.shape
    rows = torch.arange(predicted, device=px.device)
    cols = torch.arange(gold, device=px.device)
    matched = torch.zeros(batch, dtype=px.dtype, device=px.device)
    for _ in range(predicted if predicted < gold else gold):  # (this module shadows min)
        best, index = score.flatten(1).max(dim=1)
        hit = best >= 0
        matched = matched + hit.to(px.dtype)
        taken_row = (rows[None, :] == (index // gold)[:, None]) & hit[:, None]
        taken_col = (cols[None, :] == (index % gold)[:, None]) & hit[:, None]
        score = score.masked_fill(taken_row[:, :, None] | taken_col[:, None, :], -1.0)
    return matched, pm[:, 0] & gm[:, 0]


# ---- decision tables ---------------------------------------------------------------------------
def cell_in(x: Tensor, values: tuple) -> Tensor:
    hit = torch.zeros_like(x, dtype=torch.bool)
    for value in values:
        hit = hit | (x == value)
    return hit


# ---- rules, levels and the reward ---------------------------------------------------------------
def rule(t, mt, w, mw, invalid: str):
    """A rule's truth and applicability. ``w is None`` when it has no ``when``."""
    fill = 1.0 if invalid == "pass" else 0.0
    truth_value = torch.where(mt, t, torch.full_like(t, fill))
    applies = torch.ones_like(mt) if w is None else (mw & (w >= 0.5))
    if invalid == "skip":
        applies = applies & mt
    return truth_value, applies


def level(parts: list[tuple[Tensor, Tensor, float]], ref: Tensor) -> Tensor:
    """Weighted mean of the applicable rules' truths; 1 where no rule applies (nothing violated)."""
    num = torch.zeros_like(ref)
    den = torch.zeros_like(ref)
    for t, a, weight in parts:  # unrolled over the level's rules
        w = a.to(ref.dtype) * weight
        num = num + w * t
        den = den + w
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.ones_like(ref))


GATE_TOLERANCE = 1e-6


def gate(score: Tensor) -> Tensor:
    """1 where a gate level is fully satisfied, else 0."""
    return (score >= 1.0 - GATE_TOLERANCE).to(score.dtype)


# ---- where a judged value can change the reward (the generated `demand`) ---------------------------
def may_open(parts: list[tuple[Tensor, Tensor]], ref: Tensor) -> Tensor:
    """Whether a gate level can still be open: no applicable rule of it that needs no model is
    below 1 (such a rule closes the gate whatever the models say)."""
    closed = torch.zeros_like(ref, dtype=torch.bool)
    for t, a in parts:
        closed = closed | (a & (t < 1.0 - GATE_TOLERANCE))
    return ~closed


def holds(w: Tensor, mw: Tensor) -> Tensor:
    """Where a `when` holds (valid and at least 0.5), as ``rule`` reads it."""
    return mw & (w >= 0.5)


def unless_false(need: Tensor, x: Tensor, m: Tensor) -> Tensor:
    """``need``, except where the other operand of an `and` is a known false."""
    return need & ~(m & (x == 0))


def unless_true(need: Tensor, x: Tensor, m: Tensor) -> Tensor:
    """``need``, except where the other operand of an `or` is a known true."""
    return need & ~(m & (x == 1))


def in_any_row(need: Tensor) -> Tensor:
    """Every row, where any row needs a value that a reduction over the batch reads."""
    return need.any().expand_as(need)


def unless_branch(need: Tensor, c: Tensor, mc: Tensor, then: bool) -> Tensor:
    """``need`` for a branch of an `if`, except where the known condition takes the other one."""
    other = (c < 0.5) if then else (c >= 0.5)
    return need & ~(mc & other)
