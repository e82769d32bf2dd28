"""The generated spectral index library, ``domain_specs/spectral/indices.kd``.

- The file is what ``scripts/build_spectral_indices.py`` writes from the installed spyndex
  catalogue, byte for byte.
- Every index of ``spyndex.indices``, computed by kdsl through the library's ``def`` (one spec with
  one ``let`` per index, scored in float64), equals ``spyndex.computeIndex`` on the same numpy
  float64 values within rtol 1e-9. It is invalid where spyndex gives NaN or an infinity, and also
  where spyndex's finite value went through a division by zero (EBI with B = 0: ``G / B`` is inf
  and the whole is 0 in numpy; in kdsl a division by zero has no value), and valid everywhere
  else. The rows are random reflectances plus adversarial ones: all bands zero (sums in
  denominators are zero), all bands equal (differences in denominators are zero), negative bands
  (fractional powers of negative numbers) and bands of both signs.
- Indices with optional constants are checked twice: once with the catalogue defaults (the def's
  default values) and once with every constant given, at random values, by keyword.
- The kernel defs (``kernel_linear``, ``kernel_poly``, ``kernel_rbf``) equal
  ``spyndex.computeKernel``.
"""

from __future__ import annotations

import ast as python_ast
import importlib.util
import sys
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import spyndex
import torch

import kdsl

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_spectral_indices.py"
LIBRARY = ROOT / "domain_specs" / "spectral" / "indices.kd"
# Relative tolerance of every comparison with spyndex (measured: at most 1.4e-13, from pow and exp,
# which numpy and torch may round differently in the last unit).
RTOL = 1e-9


@lru_cache(maxsize=1)
def _script():
    """scripts/build_spectral_indices.py as a module (registered, since it defines dataclasses)."""
    name = "kdsl_scripts_build_spectral_indices"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---- the file is current -----------------------------------------------------------------------

def test_library_file_is_current():
    script = _script()
    assert LIBRARY.read_text(encoding="utf-8") == script.render(), (
        "domain_specs/spectral/indices.kd is out of date: run scripts/build_spectral_indices.py")


def test_check_mode_passes(capsys):
    assert _script().main(["--check"]) == 0
    assert capsys.readouterr().err == ""


def test_render_is_deterministic():
    script = _script()
    assert script.render() == script.render()


# ---- the values ---------------------------------------------------------------------------------

KERNEL_BANDS = {"kNN": ("N", "N"), "kNR": ("N", "R"), "kNB": ("N", "B"), "kNL": ("N", "L"),
                "kGG": ("G", "G"), "kGR": ("G", "R"), "kGB": ("G", "B")}
N_RANDOM = 224


def _defaults() -> dict:
    return {name: spyndex.constants[name].default for name in spyndex.constants}


def _signature(name: str) -> tuple[list[str], list[str], list[str]]:
    """An index's bands (and kernel values), its required constants and its optional ones."""
    defaults = _defaults()
    params = list(dict.fromkeys(spyndex.indices[name].bands))
    bands = [p for p in params if p not in defaults]
    required = [p for p in params if p in defaults and defaults[p] is None]
    optional = [p for p in params if p in defaults and defaults[p] is not None]
    return bands, required, optional


def _columns() -> dict[str, np.ndarray]:
    """Band and constant columns: random rows, then the adversarial rows."""
    rng = np.random.default_rng(20240611)
    defaults = _defaults()
    letters = sorted({b for n in spyndex.indices for b in _signature(n)[0]} - set(KERNEL_BANDS)
                     | {"N", "R", "B", "G"})
    rows: dict[str, list] = {b: [] for b in letters}

    def add(values: dict):
        for b in letters:
            rows[b].append(values[b])

    for _ in range(N_RANDOM):  # surface reflectance, with a few noisy negatives
        add({b: rng.uniform(-0.02, 0.8) for b in letters})
    add({b: 0.0 for b in letters})                                  # sums in denominators are 0
    add({b: 0.25 for b in letters})                                 # differences are 0
    add({b: 1.0 for b in letters})                                  # differences are 0, 1 - x is 0
    add({b: -0.3 for b in letters})                                 # fractional powers of negatives
    add({b: (0.3 if i % 2 else -0.3) for i, b in enumerate(letters)})   # a + b is 0 for many pairs
    add({b: (-0.4 if i % 2 else 0.2) for i, b in enumerate(letters)})
    for _ in range(26):  # both signs, and exact zeros, at random
        add({b: rng.choice([0.0, rng.uniform(-1, 1), 0.5, -0.5]) for b in letters})
    n = len(rows["N"])
    columns = {b: np.asarray(v, dtype=np.float64) for b, v in rows.items()}
    # Radar backscatter columns (VV, VH, HH, HV) take the same values as the optical bands: the
    # formulas must agree on any value. Kernel values are computed from the bands (_with_kernels).
    # Constants without a default: wavelengths (nm) and PAR.
    for name, default in defaults.items():
        if default is None:
            columns[name] = rng.uniform(400.0, 2300.0, n) if name.startswith("lambda") else (
                rng.uniform(0.0, 2000.0, n))
    # Optional constants at random values (for the second pass), around their defaults.
    for name, default in defaults.items():
        if default is not None:
            columns["c_" + name] = np.asarray(default, dtype=np.float64) * rng.uniform(0.5, 1.5, n) + (
                rng.uniform(0.0, 0.5, n) if default == 0 else 0.0)
    return columns


def _with_kernels(columns: dict) -> dict:
    """Kernel values k(x, y) as columns, with the RBF kernel at a per-row sigma."""
    out = dict(columns)
    n = len(columns["N"])
    out["sigma"] = np.random.default_rng(7).uniform(0.2, 1.0, n)
    L = np.full(n, float(spyndex.constants["L"].default))
    for name, (x, y) in KERNEL_BANDS.items():
        a = L if x == "L" else columns[x]
        b = L if y == "L" else columns[y]
        out[name] = spyndex.computeKernel("RBF", a=a, b=b, sigma=out["sigma"])
    return out


def _kdsl_name(name: str) -> str:
    return _script().kdsl_name(name, _script().kdsl_keywords())


@lru_cache(maxsize=1)
def _scored():
    """Score every index with kdsl and with spyndex. Returns (spyndex values, kdsl values, kdsl
    validity, rows where kdsl's semantics give no value, number of rows); the dicts are keyed by
    let name: ``i_NAME`` with the catalogue defaults, ``i_NAME__c`` with every constant given."""
    script = _script()
    keywords = script.kdsl_keywords()
    name_of = lambda n: script.kdsl_name(n, keywords)  # noqa: E731
    columns = _with_kernels(_columns())
    n = len(columns["N"])
    defaults = _defaults()

    inputs = sorted({p for name in spyndex.indices for group in _signature(name)[:2] for p in group})
    optional = sorted({p for name in spyndex.indices for p in _signature(name)[2]})
    lines = ["spec every_index version 1", 'import "spectral/indices" as si', "input {"]
    lines += [f"  {name_of(p)}: float" for p in inputs]
    lines += [f"  c_{name_of(p)}: float" for p in optional]
    lines += ["}"]
    expected: dict[str, np.ndarray] = {}
    undefined: dict[str, np.ndarray] = {}

    def let(key: str, name: str, arguments: dict[str, str]) -> None:
        call = f"si.{name_of(name)}({', '.join(f'{name_of(p)} = {v}' for p, v in arguments.items())})"
        lines.append(f"let {key} = {call}")

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for name in sorted(spyndex.indices):
            bands, required, opt = _signature(name)
            given = {p: name_of(p) for p in bands + required}
            key = f"i_{name_of(name)}"
            let(key, name, given)
            params = {p: columns[p] for p in given}
            params.update({p: np.full(n, float(defaults[p])) for p in opt})
            expected[key] = np.asarray(spyndex.computeIndex(name, params=params), dtype=np.float64)
            undefined[key] = _undefined(spyndex.indices[name].formula, params, n)
            if opt:
                let(key + "__c", name, {**given, **{p: f"c_{name_of(p)}" for p in opt}})
                params = {p: columns[p] for p in given}
                params.update({p: columns["c_" + p] for p in opt})
                expected[key + "__c"] = np.asarray(spyndex.computeIndex(name, params=params),
                                                   dtype=np.float64)
                undefined[key + "__c"] = _undefined(spyndex.indices[name].formula, params, n)
    lines += ["level all {", "  rule scored: true", "}"]
    program = kdsl.loads("\n".join(lines) + "\n", "every_index.kd")
    feed = {name_of(p): columns[p] for p in inputs}
    feed.update({f"c_{name_of(p)}": columns["c_" + p] for p in optional})
    scores = program.score([""] * n, dtype=torch.float64, **feed)
    got = {k: scores.values[k].numpy() for k in expected}
    valid = {k: scores.valid[k].numpy() for k in expected}
    return expected, got, valid, undefined, n


def _undefined(formula: str, params: dict, n: int) -> np.ndarray:
    """Rows where kdsl's semantics leave the formula without a value: a division by zero, a power
    that is not a finite real number (a fractional power of a negative number, 0 to a negative
    power), or a result that is not finite. numpy agrees with this except where an infinity from
    a division by zero is absorbed later (EBI with B = 0: ``G / B`` is inf and the whole is 0)."""
    bad = np.zeros(n, dtype=bool)

    def value(node):
        nonlocal bad
        if isinstance(node, python_ast.Constant):
            return node.value
        if isinstance(node, python_ast.Name):
            return params[node.id]
        if isinstance(node, python_ast.UnaryOp):
            return -value(node.operand) if isinstance(node.op, python_ast.USub) else value(node.operand)
        assert isinstance(node, python_ast.BinOp), python_ast.dump(node)
        left, right = value(node.left), value(node.right)
        if isinstance(node.op, python_ast.Div):
            bad = bad | np.broadcast_to(np.asarray(right) == 0, (n,))
            return np.divide(left, right)
        if isinstance(node.op, python_ast.Pow):
            out = np.power(np.asarray(left, dtype=np.float64), right)
            bad = bad | ~np.isfinite(np.broadcast_to(out, (n,)))
            return out
        op = {python_ast.Add: np.add, python_ast.Sub: np.subtract, python_ast.Mult: np.multiply}
        return op[type(node.op)](left, right)

    with np.errstate(all="ignore"):
        result = value(python_ast.parse(formula, mode="eval").body)
    return bad | ~np.isfinite(np.broadcast_to(result, (n,)))


def _params():
    out = []
    for name in sorted(spyndex.indices):
        out.append(pytest.param(name, "", id=name))
        if _signature(name)[2]:
            out.append(pytest.param(name, "__c", id=f"{name}-constants"))
    return out


@pytest.mark.parametrize("name, suffix", _params())
def test_index_matches_spyndex(name, suffix):
    expected, got, valid, undefined, n = _scored()
    key = f"i_{_kdsl_name(name)}{suffix}"
    want, have, ok, bad = expected[key], got[key], valid[key], undefined[key]
    assert want.shape == (n,)
    finite = np.isfinite(want)
    # Where spyndex has no finite value, kdsl has none either.
    wrong = np.flatnonzero(ok & ~finite)
    assert wrong.size == 0, f"{name}: kdsl valid where spyndex gives {want[wrong[0]]} (rows {wrong[:10]})"
    # Where spyndex's finite value came through a division by zero, kdsl has no value.
    wrong = np.flatnonzero(ok & bad)
    assert wrong.size == 0, f"{name}: kdsl valid after a division by zero (rows {wrong[:10]})"
    # Everywhere else, kdsl has spyndex's value.
    wrong = np.flatnonzero(~ok & ~bad)
    assert wrong.size == 0, (f"{name}: kdsl invalid where spyndex gives {want[wrong[0]]} "
                             f"(rows {wrong[:10].tolist()})")
    np.testing.assert_allclose(have[ok], want[ok], rtol=RTOL, atol=0.0, err_msg=name)


def test_adversarial_rows_do_their_job():
    """The adversarial rows reach what they are there for, and the random rows are mostly valid:
    zero denominators (all bands zero), fractional powers of negative numbers (AVI, a cube root),
    and finite spyndex values that pass through a division by zero (EBI with B = 0), where kdsl
    gives no value."""
    expected, got, valid, undefined, n = _scored()
    assert not valid["i_NDVI"][N_RANDOM]  # all bands zero: 0 / 0
    assert not valid["i_AVI"].all()
    absorbed = {k for k in expected if (undefined[k] & np.isfinite(expected[k])).any()}
    assert "i_EBI" in absorbed
    for key, ok in valid.items():
        assert ok[:N_RANDOM].mean() > 0.5, key
    assert sum(ok.all() for ok in valid.values()) < len(valid) / 2


@pytest.mark.parametrize("kernel, params", [
    ("linear", {}), ("poly", {"p": 2.0, "c": 1.0}), ("poly", {"p": 3.0, "c": 0.25}),
    ("RBF", {"sigma": 0.5}), ("RBF", {"sigma": 0.1})])
def test_kernel_defs_match_spyndex(kernel, params):
    rng = np.random.default_rng(3)
    a, b = rng.uniform(-0.1, 1.0, 64), rng.uniform(-0.1, 1.0, 64)
    name = {"linear": "kernel_linear", "poly": "kernel_poly", "RBF": "kernel_rbf"}[kernel]
    extra = "".join(f", {k} = {v!r}" for k, v in params.items())
    program = kdsl.loads(
        "spec kernels version 1\n"
        'import "spectral/indices" as si\n'
        "input {\n  a: float\n  b: float\n}\n"
        f"let k = si.{name}(a, b{extra})\n"
        "level all {\n  rule scored: true\n}\n", "kernels.kd")
    scores = program.score([""] * 64, dtype=torch.float64, a=a, b=b)
    want = spyndex.computeKernel(kernel, params={"a": a, "b": b, **params})
    assert scores.valid["k"].all()
    np.testing.assert_allclose(scores.values["k"].numpy(), want, rtol=RTOL, atol=0.0)
