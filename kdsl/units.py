"""Units of measurement on numbers: the small table of units the clinical and remote-sensing
specs use, and the exact conversions between units of one dimension.

A unit is a dimension and how a value in it maps to the dimension's base unit:
``base = value * scale + offset`` (the offset is for temperatures only). Units of different
dimensions never convert: a mass concentration (``mg/dL``) is not a molar one (``mmol/L``)
without the substance's molar mass, which a spec states itself (``curb65.urea_mmol_per_l_from_bun``
for blood urea nitrogen). This is deliberately not a units library: a unit that is not in the
table is a located error that lists the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    name: str
    dimension: str
    scale: float
    offset: float = 0.0


def _units() -> dict[str, Unit]:
    table: list[tuple[str, str, float, float]] = [
        # length (base: metre)
        ("km", "length", 1000.0, 0.0), ("m", "length", 1.0, 0.0), ("cm", "length", 0.01, 0.0),
        ("mm", "length", 0.001, 0.0), ("um", "length", 1e-6, 0.0), ("nm", "length", 1e-9, 0.0),
        # area (base: square metre)
        ("m2", "area", 1.0, 0.0), ("ha", "area", 1e4, 0.0), ("km2", "area", 1e6, 0.0),
        # temperature (base: kelvin)
        ("K", "temperature", 1.0, 0.0), ("degC", "temperature", 1.0, 273.15),
        ("degF", "temperature", 5.0 / 9.0, 273.15 - 32.0 * 5.0 / 9.0),
        # time (base: second)
        ("s", "time", 1.0, 0.0), ("min", "time", 60.0, 0.0), ("h", "time", 3600.0, 0.0),
        ("d", "time", 86400.0, 0.0), ("wk", "time", 604800.0, 0.0),
        # rate (base: per minute): heart and respiratory rates
        ("/min", "rate", 1.0, 0.0), ("bpm", "rate", 1.0, 0.0), ("/h", "rate", 1.0 / 60.0, 0.0),
        ("/s", "rate", 60.0, 0.0),
        # mass (base: gram)
        ("kg", "mass", 1000.0, 0.0), ("g", "mass", 1.0, 0.0), ("mg", "mass", 1e-3, 0.0),
        ("ug", "mass", 1e-6, 0.0),
        # mass concentration (base: gram per litre)
        ("g/L", "mass concentration", 1.0, 0.0), ("g/dL", "mass concentration", 10.0, 0.0),
        ("mg/dL", "mass concentration", 0.01, 0.0), ("mg/L", "mass concentration", 1e-3, 0.0),
        ("ug/L", "mass concentration", 1e-6, 0.0), ("ng/mL", "mass concentration", 1e-6, 0.0),
        # amount concentration (base: mole per litre)
        ("mol/L", "molar concentration", 1.0, 0.0), ("mmol/L", "molar concentration", 1e-3, 0.0),
        ("umol/L", "molar concentration", 1e-6, 0.0),
        # pressure (base: pascal)
        ("Pa", "pressure", 1.0, 0.0), ("kPa", "pressure", 1000.0, 0.0),
        ("mmHg", "pressure", 133.322387415, 0.0),
        # fractions (base: 1)
        ("%", "fraction", 0.01, 0.0), ("fraction", "fraction", 1.0, 0.0),
        # angle (base: degree)
        ("deg", "angle", 1.0, 0.0), ("rad", "angle", 57.29577951308232, 0.0),
    ]
    return {name: Unit(name, dim, scale, offset) for name, dim, scale, offset in table}


UNITS: dict[str, Unit] = _units()


def unit_named(name: str) -> Unit | None:
    return UNITS.get(name)


class IncompatibleUnits(ValueError):
    pass


def conversion(source: Unit, target: Unit) -> tuple[float, float]:
    """``(factor, offset)`` with ``value_in_target = value_in_source * factor + offset``;
    ``IncompatibleUnits`` when the dimensions differ."""
    if source.dimension != target.dimension:
        raise IncompatibleUnits(f"{source.name} is a {source.dimension} and {target.name} a "
                                f"{target.dimension}")
    factor = source.scale / target.scale
    offset = (source.offset - target.offset) / target.scale
    return factor, offset


def known_units() -> str:
    by_dimension: dict[str, list[str]] = {}
    for unit in UNITS.values():
        by_dimension.setdefault(unit.dimension, []).append(unit.name)
    return "; ".join(f"{dim}: {', '.join(names)}" for dim, names in by_dimension.items())
