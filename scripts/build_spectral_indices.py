"""Generate ``domain_specs/spectral/indices.kd`` from the Awesome Spectral Indices catalogue that
ships inside the installed ``spyndex`` package.

    python scripts/build_spectral_indices.py          # rewrite the library file
    python scripts/build_spectral_indices.py --check  # exit 1 if the file is out of date

Every index becomes one ``def`` whose parameters are its bands and constants; constants with a
default value in the catalogue keep it as the parameter's default. Formulas are Python expressions
in the catalogue; they are parsed with :mod:`ast` and printed again in kdsl syntax with the
parentheses that the kdsl grammar needs to build the same tree, so the evaluation order (and with
it every floating-point rounding) is the catalogue's. The output depends only on the catalogue and
the grammar: indices are sorted by name and nothing time-dependent is written, so running the
script twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import spyndex

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "domain_specs" / "spectral" / "indices.kd"
GRAMMAR = ROOT / "grammars" / "kdsl.lark"

# The kernels of spyndex.computeKernel, written as Python expressions like the catalogue formulas
# and translated the same way, so kernel indices (kNDVI, ...) can be fed from kdsl alone.
# Name, formula, the catalogue constants it takes, what it is.
KERNELS = (
    ("kernel_linear", "a * b", (), "linear kernel k(a, b) = a * b"),
    ("kernel_poly", "((a * b) + c) ** p", ("p", "c"),
     "polynomial kernel of degree p with trade-off c"),
    ("kernel_rbf", "exp((-1.0 * (a - b) ** 2.0) / (2.0 * sigma ** 2.0))", ("sigma",),
     "radial basis function kernel with length scale sigma; kernel_rbf(x, x) is 1"),
)

# Sensor columns of the band table: catalogue attribute, heading.
SENSORS = (("sentinel2a", "Sentinel-2"), ("landsat8", "Landsat 8/9"))

# Bands that formulas use but the catalogue's band table does not list.
RADAR_BANDS = {
    "VV": "Sentinel-1 backscatter, vertical transmit, vertical receive",
    "VH": "Sentinel-1 backscatter, vertical transmit, horizontal receive",
    "HH": "backscatter, horizontal transmit, horizontal receive (dual HH-HV polarisation)",
    "HV": "backscatter, horizontal transmit, vertical receive (dual HH-HV polarisation)",
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_0-9]*\Z")


def kdsl_keywords() -> frozenset[str]:
    """Every word the grammar spells out as a literal (``"if"``, ``"tag"``, ...). Some are usable
    as names in some positions, but a library name should never depend on which."""
    return frozenset(re.findall(r'"([A-Za-z_]+)"', GRAMMAR.read_text(encoding="utf-8")))


def kdsl_name(name: str, keywords: frozenset[str]) -> str:
    """The kdsl spelling of a catalogue name: characters outside ``[A-Za-z0-9_]`` become ``_``, a
    leading digit gets a ``_`` in front, and a keyword gets a ``_`` appended."""
    mapped = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not _IDENTIFIER.match(mapped):
        mapped = "_" + mapped
    if mapped in keywords:
        mapped += "_"
    return mapped


# Binding strength in the kdsl grammar, weakest first: `+ -`, `* / %`, unary `-`, `**`, atoms
# (numbers, names, calls, parenthesised expressions).
_SUM, _PRODUCT, _UNARY, _POWER, _ATOM = 1, 2, 3, 4, 5
_BINARY = {ast.Add: ("+", _SUM), ast.Sub: ("-", _SUM), ast.Mult: ("*", _PRODUCT),
           ast.Div: ("/", _PRODUCT), ast.Mod: ("%", _PRODUCT), ast.Pow: ("**", _POWER)}
# Python functions a formula may call, by the name written (``np.exp`` counts as ``exp``).
_FUNCTIONS = {"abs": "abs", "sqrt": "sqrt", "exp": "exp", "log": "log"}


class UnsupportedFormula(ValueError):
    pass


@dataclass
class Translator:
    """Prints a Python expression tree as kdsl text that parses to the same tree."""

    names: dict[str, str]

    def translate(self, formula: str) -> str:
        return self.emit(ast.parse(formula, mode="eval").body)[0]

    def emit(self, node: ast.expr) -> tuple[str, int]:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return repr(node.value), _ATOM  # repr round-trips a float exactly
        if isinstance(node, ast.Name):
            return self.names[node.id], _ATOM
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            symbol, strength = _BINARY[type(node.op)]
            if symbol == "**":
                # kdsl: postfix "**" unary. The base must be an atom; the exponent may be a
                # unary minus or another power (right-associative, as in Python).
                left = self.operand(node.left, _ATOM)
                right = self.operand(node.right, _UNARY)
            else:
                # Left-associative: an operand of equal strength on the right keeps its
                # parentheses, since a - (b - c) and a / (b * c) are different trees.
                left = self.operand(node.left, strength)
                right = self.operand(node.right, strength + 1)
            return f"{left} {symbol} {right}", strength
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = self.operand(node.operand, _UNARY)
            return f"-{operand}" if not operand.startswith("-") else f"- {operand}", _UNARY
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return self.emit(node.operand)
        if isinstance(node, ast.Call) and not node.keywords:
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                node.func, "id", None)
            if function in _FUNCTIONS:
                args = ", ".join(self.emit(a)[0] for a in node.args)
                return f"{_FUNCTIONS[function]}({args})", _ATOM
        raise UnsupportedFormula(f"no kdsl translation for `{ast.unparse(node)}`")

    def operand(self, node: ast.expr, needed: int) -> str:
        text, strength = self.emit(node)
        return text if strength >= needed else f"({text})"


def _constant_defaults() -> dict[str, float | int | None]:
    return {name: spyndex.constants[name].default for name in spyndex.constants}


def _parameters(index, defaults: dict) -> list[str]:
    """Bands (and kernel values) in catalogue order, then constants without a default, then
    constants with one, so positional calls never have to skip over a default."""
    constants = [b for b in index.bands if b in defaults]
    bands = [b for b in index.bands if b not in defaults]
    required = [c for c in constants if defaults[c] is None]
    optional = [c for c in constants if defaults[c] is not None]
    return bands + required + optional


def render() -> str:
    keywords = kdsl_keywords()
    indices = spyndex.indices
    defaults = _constant_defaults()
    catalogue_names = sorted({b for name in indices for b in indices[name].bands}
                             | {"a", "b", *defaults})
    names = {n: kdsl_name(n, keywords) for n in catalogue_names}
    index_names = {n: kdsl_name(n, keywords) for n in indices}
    for kind, mapping in (("parameter", names), ("index", index_names)):
        seen: dict[str, str] = {}
        for original, mapped in sorted(mapping.items()):
            if mapped in seen:
                raise SystemExit(f"{kind} names {seen[mapped]!r} and {original!r} both map to "
                                 f"{mapped!r}; extend kdsl_name")
            seen[mapped] = original
    translator = Translator(names)

    out: list[str] = []
    w = out.append
    w("# The Awesome Spectral Indices catalogue as kdsl defs: import \"spectral/indices\" as si,")
    w("# then si.NDVI(N = nir, R = red). docs/domain_specs/spectral.md shows complete specs.")
    w("#")
    w(f"# GENERATED by scripts/build_spectral_indices.py from spyndex {spyndex.__version__}; do not "
      "edit.")
    w("# Run the script again after upgrading spyndex; tests/test_spectral_indices.py compares every")
    w("# index with spyndex.computeIndex and this file with the script's output.")
    w("#")
    w("# Parameters are the catalogue's band letters and constants, named as in the catalogue.")
    w("# Constants with a catalogue default are optional parameters with that default; the other")
    w("# constants (wavelengths, PAR) must be given. Formulas are the catalogue's, with the same")
    w("# evaluation order; a division by zero, or a fractional power of a negative number, makes")
    w("# the index invalid where Python would give inf or NaN.")
    w("#")
    w("# Band letters, with the band to pass for Sentinel-2 (MSI) and Landsat 8/9 (OLI/TIRS):")
    w("#")
    rows = [("letter", "band", "nm", *(heading for _, heading in SENSORS))]
    for letter in spyndex.bands:
        band = spyndex.bands[letter]
        sensor_bands = [getattr(band, attr).band if hasattr(band, attr) else "-"
                        for attr, _ in SENSORS]
        rows.append((names[letter] if letter in names else letter, band.long_name,
                     f"{band.min_wavelength}-{band.max_wavelength}", *sensor_bands))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        w("#   " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    w("#")
    w("# Landsat 8/9 have one near-infrared band, B5, which the catalogue files under N2 (narrow")
    w("# NIR); indices written with N list Landsat OLI among their platforms and take B5 as N.")
    w("# Radar bands (backscatter, linear units):")
    for letter, meaning in RADAR_BANDS.items():
        w(f"#   {letter}  {meaning}")
    w("# Kernel indices (kNDVI, kEVI, ...) take kernel values: kNR is k(N, R), kNN is k(N, N),")
    w("# computed with kernel_linear, kernel_poly or kernel_rbf below (kernel_rbf(N, N) is 1).")
    w("#")
    w("# Constants (default, meaning):")
    for name in spyndex.constants:
        constant = spyndex.constants[name]
        default = "required" if constant.default is None else repr(constant.default)
        w(f"#   {names[name]} = {default}: {constant.long_name}")
    w("#")
    w("# Names: a catalogue name that is not a kdsl name is changed deterministically: characters")
    w("# other than letters, digits and _ become _, a leading digit gets a _ in front, and a word")
    w("# the kdsl grammar spells as a keyword gets a _ appended.")
    changed = sorted({**{k: v for k, v in names.items() if k != v},
                      **{k: v for k, v in index_names.items() if k != v}}.items())
    if changed:
        w("# Changed in this catalogue: " + ", ".join(f"{k} -> {v}" for k, v in changed) + ".")
    else:
        w(f"# No name in spyndex {spyndex.__version__} needs a change.")
    w("spec indices version 1")
    w("")
    for name, formula, constants, meaning in KERNELS:
        parameters = ["a", "b"] + [f"{names[c]} = {defaults[c]!r}" for c in constants]
        w(f"# {name}: the {meaning} (spyndex.computeKernel).")
        w(f"def {name}({', '.join(parameters)}) = {translator.translate(formula)}")
    for short_name in sorted(indices):
        index = indices[short_name]
        parameters = [names[p] if defaults.get(p) is None else f"{names[p]} = "
                      f"{defaults[p]!r}" for p in _parameters(index, defaults)]
        try:
            body = translator.translate(index.formula)
        except UnsupportedFormula as error:
            raise SystemExit(f"{short_name}: {error}") from None
        w("")
        w(f"# {index.long_name}. Domain: {index.application_domain}. Reference: "
          f"{index.reference}")
        w(f"# Platforms: {', '.join(index.platforms)}.")
        w(f"def {index_names[short_name]}({', '.join(parameters)}) = {body}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed file instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date; run {Path(__file__).name}",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {len(spyndex.indices)} indices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
