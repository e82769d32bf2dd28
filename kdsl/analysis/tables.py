"""Decision-table checks: bad cells, overlapping rows and gaps, each with a concrete input.

Every numeric column is split at the boundaries its cells mention, into points and the open
intervals between them; a cell is true or false on a whole piece, so checking one value per
piece is exact. Gaps are searched column by column, keeping only the rows that can still match,
so tables whose rows cover whole subtrees are never enumerated point by point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kdsl.errors import DiagnosticSink, Span, did_you_mean
from kdsl.ir import TableCell, TableColumn, TableIR, TableRow

MAX_GAPS_SHOWN = 3
GAP_COUNT_LIMIT = 1000


@dataclass(frozen=True)
class EnumDomain:
    members: tuple[str, ...]


@dataclass(frozen=True)
class BoolDomain:
    pass


@dataclass(frozen=True)
class NumberDomain:
    is_int: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False


Domain = EnumDomain | BoolDomain | NumberDomain


@dataclass(frozen=True)
class TableFinding:
    kind: str  # gap | overlap | bad_cell
    message: str
    span: Span
    severity: str = "error"
    example: dict = field(default_factory=dict)
    code: str = ""  # the diagnostic's KD code (docs/errors.md)


def fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return f"{value:.6g}"
    return str(value)


# ---- cell semantics -------------------------------------------------------------------------------
def cell_matches(cell: TableCell, value) -> bool:
    """Whether one cell accepts a value (an enum member's name, a bool, or a number)."""
    kind = cell.kind
    if kind == "any":
        return True
    if kind in ("name", "set"):
        if isinstance(value, bool):
            return ("true" if value else "false") in cell.names
        return value in cell.names
    if isinstance(value, (bool, str)):
        return False
    if kind == "compare":
        bound = cell.low
        return {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound,
                "==": value == bound, "!=": value != bound}[cell.op]
    if cell.low_open and value <= cell.low or cell.high_open and value >= cell.high:
        return False
    return cell.low <= value <= cell.high  # range, or a single number (low == high)


def row_matches(row: TableRow, values: Sequence) -> bool:
    return all(cell_matches(c, v) for c, v in zip(row.cells, values))


# ---- pieces of a column's domain ------------------------------------------------------------------
def _pieces(domain: Domain, cells: list[TableCell]) -> list:
    """Representative values, one per piece on which every cell of the column is constant."""
    if isinstance(domain, EnumDomain):
        return list(domain.members)
    if isinstance(domain, BoolDomain):
        return [False, True]
    bounds = sorted({b for c in cells for b in (c.low, c.high) if b is not None and c.kind != "any"})
    low = -math.inf if domain.low is None else domain.low
    high = math.inf if domain.high is None else domain.high
    if domain.is_int:
        low, high = math.ceil(low) if low != -math.inf else low, math.floor(high) if high != math.inf else high
    bounds = [b for b in bounds if low <= b <= high]
    edges = [low, *bounds, high]
    values: list[float] = []
    for i, b in enumerate(bounds):
        values.append(b)
        del i
    # One value inside each open interval between consecutive edges (and at finite domain ends).
    for left, right in zip(edges, edges[1:]):
        inside = _inside(left, right, domain.is_int)
        if inside is not None:
            values.append(inside)
    for end in (low, high):
        if math.isfinite(end) and end not in values:
            values.append(end)
    if domain.is_int:
        values = [v for v in values if float(v).is_integer()]
    if domain.low_open:
        values = [v for v in values if v != low]
    if domain.high_open:
        values = [v for v in values if v != high]
    return sorted(set(values))


def _inside(left: float, right: float, is_int: bool) -> float | None:
    if left == right:
        return None
    if is_int:
        candidate = (math.floor(left) + 1) if math.isfinite(left) else (
            math.ceil(right) - 1 if math.isfinite(right) else 0)
        return float(candidate) if left < candidate < right else None
    if not math.isfinite(left) and not math.isfinite(right):
        return 0.0
    if not math.isfinite(left):
        return right - 1.0
    if not math.isfinite(right):
        return left + 1.0
    return (left + right) / 2.0


# ---- the check ------------------------------------------------------------------------------------
def _bad_cells(table: _Table, domains: Sequence[Domain]) -> tuple[list[TableFinding], set[int]]:
    findings: list[TableFinding] = []
    bad_rows: set[int] = set()
    names = table.columns
    for index, row in enumerate(table.rows):
        if len(row.cells) != len(domains):
            findings.append(TableFinding(
                "bad_cell", f"row {index + 1} of table `{table.name}` has {len(row.cells)} cell{'' if len(row.cells) == 1 else 's'}, "
                f"but the table has {len(domains)} columns ({', '.join(names)})", row.span, code="KD091"))
            bad_rows.add(index)
            continue
        for cell, domain, column in zip(row.cells, domains, names):
            message = _cell_problem(cell, domain, column)
            if message:
                findings.append(TableFinding("bad_cell", message, cell.span, code="KD092"))
                bad_rows.add(index)
    return findings, bad_rows


def _cell_problem(cell: TableCell, domain: Domain, column: str) -> str | None:
    if cell.kind == "any":
        return None
    if isinstance(domain, EnumDomain):
        if cell.kind not in ("name", "set"):
            return f"column `{column}` holds {', '.join(domain.members)}, not numbers"
        for name in cell.names:
            if name not in domain.members:
                return (f"`{name}` is not one of {', '.join(domain.members)} (column `{column}`)"
                        f"{did_you_mean(name, domain.members)}")
        return None
    if isinstance(domain, BoolDomain):
        if cell.kind not in ("name", "set") or any(n not in ("true", "false") for n in cell.names):
            return f"column `{column}` is true or false"
        return None
    if cell.kind in ("name", "set"):
        return f"column `{column}` holds numbers; `{cell.names[0]}` is not a number"
    if domain.is_int:
        for bound in (cell.low, cell.high):
            if bound is not None and cell.kind in ("number", "range") and not float(bound).is_integer() \
                    and not (cell.low_open or cell.high_open):
                return f"column `{column}` holds whole numbers; {fmt(bound)} never occurs"
    return None


def _describe(names: Sequence[str], values: Sequence) -> str:
    return ", ".join(f"{n} = {fmt(v)}" for n, v in zip(names, values))


@dataclass(frozen=True)
class _Table:
    name: str
    span: Span
    columns: Sequence[str]
    rows: Sequence[TableRow]


def check_table(name: str, span: Span, columns: Sequence[str], rows: Sequence[TableRow],
                domains: Sequence[Domain]) -> list[TableFinding]:
    """Bad cells, overlapping rows and gaps of one table (``name`` as its spec writes it, the
    column names, the rows)."""
    table = _Table(name, span, columns, rows)
    findings, bad_rows = _bad_cells(table, domains)
    rows = [(i, r) for i, r in enumerate(table.rows) if i not in bad_rows]
    names = list(table.columns)
    columns = [[r.cells[k] for _, r in rows] for k in range(len(domains))]
    pieces = [_pieces(d, cells) for d, cells in zip(domains, columns)]
    findings += _overlaps(table, rows, pieces, names)
    if not bad_rows:
        findings += _gaps(table, rows, pieces, names)
    return findings


def _overlaps(table, rows, pieces, names) -> list[TableFinding]:
    found: list[TableFinding] = []
    for a in range(len(rows)):
        ia, row_a = rows[a]
        for b in range(a + 1, len(rows)):
            ib, row_b = rows[b]
            example = []
            for k, values in enumerate(pieces):
                shared = next((v for v in values if cell_matches(row_a.cells[k], v)
                               and cell_matches(row_b.cells[k], v)), None)
                if shared is None:
                    break
                example.append(shared)
            else:
                same = row_a.result == row_b.result
                where = _describe(names, example)
                if same:
                    message = (f"rows {ia + 1} and {ib + 1} of table `{table.name}` overlap (lines "
                               f"{row_a.span.line} and {row_b.span.line}): {where} matches both; both "
                               f"give {fmt(row_a.result)}, so row {ib + 1} is redundant there")
                else:
                    message = (f"rows {ia + 1} and {ib + 1} of table `{table.name}` overlap (lines "
                               f"{row_a.span.line} and {row_b.span.line}): {where} matches both "
                               f"({fmt(row_a.result)} and {fmt(row_b.result)}); the first matching "
                               "row wins, so make the rows disjoint")
                found.append(TableFinding("overlap", message, row_b.span,
                                          "warning" if same else "error", dict(zip(names, example)),
                                          "KD094" if same else "KD093"))
    return found


def _gaps(table, rows, pieces, names) -> list[TableFinding]:
    gaps: list[list] = []
    count = 0

    def search(k: int, active: list, prefix: list) -> None:
        nonlocal count
        if count >= GAP_COUNT_LIMIT:
            return
        if not active:
            count += 1
            if len(gaps) < MAX_GAPS_SHOWN:
                gaps.append((prefix + [values[0] for values in pieces[k:]], len(prefix)))
            return
        if k == len(pieces):
            return
        if any(all(r.cells[j].kind == "any" for j in range(k, len(pieces))) for r in active):
            return  # a row accepts everything from here on
        for value in pieces[k]:
            search(k + 1, [r for r in active if cell_matches(r.cells[k], value)], prefix + [value])

    if pieces and all(pieces):
        search(0, [r for _, r in rows], [])
    findings = []
    for example, decided in gaps:
        where = _describe(names[:decided], example[:decided])
        if decided < len(names):
            free = names[decided:]
            where += (f" and any {', '.join(free)} (e.g. "
                      f"{_describe(free, example[decided:])})")
        findings.append(TableFinding(
            "gap", f"table `{table.name}` has no row for {where}", table.span,
            "error", dict(zip(names, example)), "KD095"))
    if count > len(gaps):
        more = f"at least {count - len(gaps)}" if count >= GAP_COUNT_LIMIT else str(count - len(gaps))
        findings.append(TableFinding(
            "gap", f"table `{table.name}` leaves {more} more uncovered regions", table.span,
            code="KD095"))
    return findings


# ---- the pass ---------------------------------------------------------------------------------------
def domain(column: TableColumn) -> Domain:
    """The values a column can take."""
    kind = column.type.kind
    if kind == "enum":
        return EnumDomain(column.type.enum.members)
    if kind == "bool":
        return BoolDomain()
    return NumberDomain(kind == "int", column.low, column.high, column.low_open, column.high_open)


def analyze(tables: Iterable[TableIR], sink: DiagnosticSink) -> None:
    """Report every table's bad cells, overlaps (errors) and gaps (errors or warnings)."""
    for table in tables:
        domains = [domain(c) for c in table.columns]
        names = [c.name for c in table.columns]
        for finding in check_table(table.written_name or table.name, table.span, names, table.rows,
                                   domains):
            notes = ("add a row for it",) if finding.kind == "gap" else ()
            report = sink.warning if finding.severity == "warning" else sink.error
            report(finding.code, finding.message, finding.span, *notes)
