"""What the semantic stage shares: a file's ``Scope``, the lowering ``Context``, ``Failed``,
and the wording helpers its messages use."""

from __future__ import annotations

from dataclasses import dataclass, field

from kdsl.errors import did_you_mean
from kdsl.frontend import ast
from kdsl.ir import Node, TableCell, TableIR, TableRow
from kdsl.types import EnumType

SCALAR_TYPE_NAMES = ("float", "int", "bool", "str", "box", "boxes")


@dataclass
class Scope:
    """What one spec file exports to the specs that import it: enums, defs and tables."""

    file: str
    prefix: str = ""
    enums: dict[str, EnumType] = field(default_factory=dict)
    defs: dict[str, ast.Def] = field(default_factory=dict)
    tables: dict[str, TableIR] = field(default_factory=dict)
    imports: dict[str, Scope] = field(default_factory=dict)
    # Aliases whose import failed (already reported): names through them are not errors again.
    unavailable: set[str] = field(default_factory=set)
    # Tables declared with errors (already reported): calls to them are not errors again.
    failed: set[str] = field(default_factory=set)
    # Every table whose columns and result could be resolved, with errors in its rows or not.
    declared_tables: list[TableIR] = field(default_factory=list)

    def through_failed_import(self, name: str) -> bool:
        """Whether ``name`` (``alias`` or ``alias.rest``) goes through an import that failed."""
        return name.partition(".")[0] in self.unavailable


@dataclass
class Context:
    scope: Scope
    locals: dict[str, Node] = field(default_factory=dict)
    soft: float | None = None
    calls: tuple[str, ...] = ()  # defs being expanded, to catch recursion


class Failed(Exception):
    """Raised after an error has been reported, to abandon the expression being lowered."""


def table_rows(table: ast.Table) -> list[TableRow]:
    """A table's rows as the IR holds them."""
    return [TableRow(tuple(TableCell(c.kind, c.names, c.op, c.low, c.high, c.low_open, c.high_open, c.span)
                           for c in row.cells), row.result, row.span) for row in table.rows]


def enum_named(name: str, scope: Scope) -> EnumType | None:
    """An enum of this spec by name, or of an imported one as `alias.Enum`."""
    if "." in name:
        alias, _, inner = name.partition(".")
        imported = scope.imports.get(alias)
        return None if imported is None else enum_named(inner, imported)
    return scope.enums.get(name)


def not_a_member(name: str, enum: EnumType) -> str:
    return (f"`{name}` is not a member of enum {enum.name}{did_you_mean(name, enum.members)}; its "
            f"members are {', '.join(enum.members)}")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def with_article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def shown_value(value: ast.ExampleValue) -> str:
    """An example value as the spec wrote it, for messages."""
    if value.kind == "string":
        text = str(value.value)
        return '"' + (text if len(text) <= 40 else text[:37] + "...") + '"'
    if value.kind == "list":
        if len(value.value) > 6:
            return f"a list of {len(value.value)} values"
        return "[" + ", ".join(shown_value(v) for v in value.value) + "]"
    if value.kind == "bool":
        return "true" if value.value else "false"
    if value.kind == "number":
        return f"{value.value:g}" if isinstance(value.value, float) else str(value.value)
    return f"`{value.value}`" if value.kind == "name" else value.kind
