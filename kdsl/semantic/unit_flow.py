"""Units through lowering: which unit a node's values are in, and the conversion nodes where a
value meets a unit it is not in (``Lowering`` mixes this in)."""

from __future__ import annotations

from kdsl import types as T
from kdsl import units
from kdsl.errors import Span, did_you_mean
from kdsl.frontend import ast
from kdsl.ir import Node

_UNIT_KEEPING = frozenset({"lift", "band", "element", "reduce_mean", "reduce_min", "reduce_max",
                           "reduce_quantile", "batch_min", "batch_max", "batch_mean", "neg", "abs",
                           "floor", "ceil", "round", "add", "sub", "min", "max", "default"})


class UnitLowering:
    _units: dict[int, units.Unit]  # node id -> the unit its values are in

    def _unit_of(self, op: str, args: tuple[Node, ...]) -> units.Unit | None:
        """The unit of a new node's values: kept through selection, reduction, rounding, sums
        of values already in one unit, and scaling by a plain number; lost otherwise."""
        found = [self._units.get(a.id) for a in args]
        if op in _UNIT_KEEPING:
            return next((u for u in found if u is not None), None)
        if op == "if":
            return next((u for u in found[1:] if u is not None), None)
        if op == "mul" and sum(u is not None for u in found) == 1:
            return next(u for u in found if u is not None)
        if op == "div" and found and found[0] is not None and found[1] is None:
            return found[0]
        return None

    def in_unit(self, node: Node, target: units.Unit, span: Span, what: str) -> Node:
        """``node`` converted to ``target`` (an error when the dimensions differ); a node without
        a unit is taken to be in ``target`` already, as a plain number is."""
        source = self._units.get(node.id)
        if source is None or source == target:
            return node
        try:
            factor, offset = units.conversion(source, target)
        except units.IncompatibleUnits as err:
            concentrations = {source.dimension, target.dimension} == {"mass concentration",
                                                                       "molar concentration"}
            notes = ("a mass and a molar concentration convert only through the substance's "
                     "molar mass: write that conversion as a def with a result unit (as "
                     "medical/curb65 does for urea and BUN)",) if concentrations else ()
            raise self.error("KD062", f"{what}: `{source.name}` and `{target.name}` do not convert ({err})",
                             span, *notes) from None
        out = node
        for op, value in (("mul", factor), ("add", offset)):
            if value == (1.0 if op == "mul" else 0.0):
                continue
            left, const, shape = self.broadcast(out, self.node("const", (), T.FLOAT, span, value=value), span)
            kind = shape if shape.extra_dims else T.FLOAT
            out = self.node(op, (left, const), kind, span)
        self._units[out.id] = target
        return out

    def with_unit(self, node: Node, name: str, span: Span, qualified: str) -> Node:
        """The value of a def that declares its result's unit, in that unit (a node of its own,
        so the same formula used elsewhere keeps its own unit)."""
        unit = units.unit_named(name)
        if unit is None:  # pragma: no cover - reported where the def is declared, never called
            raise self.error("KD034", f"unknown unit `{name}` for the result of `{qualified}`", span)  # pragma: no cover
        self.require_numeric(node, span, f"the unit of `{qualified}`")
        one = self.node("const", (), T.FLOAT, span, value=1.0)
        out = self.node("mul", (node, one), node.type if node.type.kind != "int" else T.FLOAT, span,
                        unit=name)
        self._units[out.id] = unit
        return out

    def let_in_unit(self, node: Node, let: ast.Let) -> Node:
        """`let x: UNIT = ...`: a value with a unit is converted to UNIT; a plain value is stated
        to be in it."""
        unit = units.unit_named(let.unit)
        if unit is None:
            raise self.error("KD034", f"unknown unit `{let.unit}`{did_you_mean(let.unit, units.UNITS)}", let.span)
        if node.id in self._units:
            return self.in_unit(node, unit, let.span, f"`let {let.name}`")
        return self.with_unit(node, let.unit, let.span, let.name)

    def align_units(self, left: Node, right: Node, span: Span, what: str) -> tuple[Node, Node]:
        """Two operands in one unit: the right one converted to the left one's."""
        unit = self._units.get(left.id)
        if unit is None:
            return left, right
        return left, self.in_unit(right, unit, span, what)

