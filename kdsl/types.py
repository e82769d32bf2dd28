"""The types of kdsl values, as the checker infers them.

A value lives in one of two phases: text (spans in a completion, handled in Python once per
extractor) or tensor (a batch tensor paired with a validity mask). Shapes: scalar (B,), vector
(B, N), field (B, H, W: one band of a raster, per pixel), raster (B, C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnumType:
    name: str
    members: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...] = ()  # per member, extra spellings accepted in text and data

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Type:
    kind: str  # float int bool str enum text record vector box boxes field raster terms
    enum: EnumType | None = None
    size: int | None = None  # vector length or raster band count
    bands: tuple[str, ...] = ()
    nodata: float | None = None
    element: str = "float"  # field: "float", "bool" or "enum" (then `enum` says which)
    groups: tuple[str, ...] = ()  # record: a regex's named groups

    def __str__(self) -> str:
        if self.kind == "enum":
            return f"enum {self.enum}"
        if self.kind == "vector":
            return f"vector[{self.size}]"
        if self.kind == "raster":
            return f"raster[{self.size}]"
        if self.kind == "field":
            if self.element == "enum":
                return f"per-pixel enum {self.enum}"
            return "per-pixel bool" if self.element == "bool" else "per-pixel float"
        if self.kind == "terms":
            return "term set"
        if self.kind == "record":
            return "regex match"
        return self.kind

    # ---- classification ----------------------------------------------------------------------
    @property
    def is_text(self) -> bool:
        return self.kind in ("text", "record")

    @property
    def is_numeric(self) -> bool:
        """Usable in arithmetic: numbers, and truth values read as 0..1."""
        return self.kind in ("float", "int", "bool") or (
            self.kind == "field" and self.element != "enum") or self.kind == "vector"

    @property
    def is_scalar(self) -> bool:
        return self.kind in ("float", "int", "bool", "str", "enum")

    @property
    def is_truth(self) -> bool:
        return self.kind == "bool" or (self.kind == "field" and self.element == "bool")

    @property
    def extra_dims(self) -> int:
        """Dimensions after the batch dimension."""
        return {"vector": 1, "box": 1, "boxes": 2, "field": 2, "raster": 3}.get(self.kind, 0)


FLOAT = Type("float")
INT = Type("int")
BOOL = Type("bool")
STR = Type("str")
TEXT = Type("text")
BOX = Type("box")
BOXES = Type("boxes")  # any number of boxes per sample
TERMS = Type("terms")
FIELD = Type("field")
BOOL_FIELD = Type("field", element="bool")


def enum_type(enum: EnumType) -> Type:
    return Type("enum", enum=enum)
