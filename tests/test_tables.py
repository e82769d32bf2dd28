"""Decision-table checks: gaps and overlaps found exactly, with inputs that really show them."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from kdsl.analysis.tables import (
    BoolDomain,
    EnumDomain,
    NumberDomain,
    cell_matches,
    row_matches,
)
from kdsl.analysis.tables import check_table as check_ir_table
from kdsl.frontend.parser import parse
from kdsl.semantic import table_rows


def table(rows: str, params: str = "kind: Kind, size: float"):
    spec = parse(f"spec t version 1\ntable t({params}) -> Plan {{\n{rows}\n}}\n")
    return spec.tables[0]


def check_table(t, domains):
    """The analysis of a parsed table, its rows as the IR holds them."""
    return check_ir_table(t.name, t.span, [p.name for p in t.params], table_rows(t), domains)


KIND = EnumDomain(("Solid", "GroundGlass"))


def kinds(findings):
    return [(f.kind, f.severity) for f in findings]


def test_complete_table_with_decided_boundaries():
    t = table("Solid, < 6 -> A\nSolid, 6..8 -> B\nSolid, > 8 -> C\nGroundGlass, _ -> B")
    assert check_table(t, [KIND, NumberDomain(False)]) == []


def test_gap_exactly_at_a_boundary():
    t = table("Solid, < 6 -> A\nSolid, > 6 -> B\nGroundGlass, _ -> B")
    findings = check_table(t, [KIND, NumberDomain(False)])
    assert [f.message for f in findings] == ["table `t` has no row for kind = Solid, size = 6"]
    assert findings[0].example == {"kind": "Solid", "size": 6.0}


def test_overlap_error_and_redundant_overlap_warning():
    t = table("Solid, <= 6 -> A\nSolid, >= 6 -> B\nGroundGlass, _ -> B\nGroundGlass, 1..2 -> B")
    findings = check_table(t, [KIND, NumberDomain(False)])
    assert kinds(findings) == [("overlap", "error"), ("overlap", "warning")]
    assert "size = 6 matches both (A and B)" in findings[0].message
    assert "row 4 is redundant" in findings[1].message


def test_whole_numbers_close_gaps_that_floats_leave():
    rows = "<= 17 -> A\n18..64 -> B\n>= 65 -> C"
    assert check_table(table(rows, "age: int"), [NumberDomain(True)]) == []
    floats = check_table(table(rows, "age: float"), [NumberDomain(False)])
    assert [f.example for f in floats] == [{"age": 17.5}, {"age": 64.5}]


def test_declared_range_limits_the_domain():
    rows = "0..17 -> A\n18..120 -> B"
    assert check_table(table(rows, "age: int"), [NumberDomain(True, 0, 120)]) == []
    unbounded = check_table(table(rows, "age: int"), [NumberDomain(True)])
    assert [f.example["age"] for f in unbounded] == [-1.0, 121.0]


def test_bad_cells_are_named():
    t = table("Soild, < 6 -> A\nSolid, big -> B\nSolid -> C")
    messages = [f.message for f in check_table(t, [KIND, NumberDomain(False)])]
    assert messages == [
        "`Soild` is not one of Solid, GroundGlass (column `kind`) (did you mean `Solid`?)",
        "column `size` holds numbers; `big` is not a number",
        "row 3 of table `t` has 1 cell, but the table has 2 columns (kind, size)",
    ]


def test_not_equal_and_bool_cells():
    t = table("true, != 3 -> A\ntrue, 3 -> B\nfalse, _ -> C", "flag: bool, n: int")
    assert check_table(t, [BoolDomain(), NumberDomain(True)]) == []
    row = t.rows[0]
    assert row_matches(row, [True, 4]) and not row_matches(row, [True, 3])
    assert not cell_matches(t.rows[2].cells[0], True)


def test_wide_table_is_checked_without_enumerating_every_input(monkeypatch):
    from kdsl.analysis import tables

    calls = 0
    matches = tables.cell_matches

    def counted(*args):
        nonlocal calls
        calls += 1
        return matches(*args)

    monkeypatch.setattr(tables, "cell_matches", counted)
    domain = EnumDomain(tuple(f"V{i}" for i in range(10)))
    rows = "\n".join(", ".join(["V0"] * i + ["{V1, V2, V3, V4, V5, V6, V7, V8, V9}"] + ["_"] * (11 - i))
                     + " -> A" for i in range(12))
    rows += "\n" + ", ".join(["V0"] * 12) + " -> B"
    params = ", ".join(f"c{i}: E" for i in range(12))
    findings = check_table(table(rows, params), [domain] * 12)
    assert findings == []
    assert calls < 10_000  # 10**12 inputs, covered in a few thousand cell tests


CELLS = st.sampled_from(["_", "< 2", "<= 2", "> 2", ">= 2", "1..3", "2", "!= 2", "< 0", "> 4", "0..2"])
ENUM_CELLS = st.sampled_from(["_", "A", "B", "{A, B}", "C"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(ENUM_CELLS, CELLS, st.sampled_from(["X", "Y"])), min_size=1, max_size=5),
       st.booleans())
def test_findings_agree_with_brute_force(rows, whole):
    text = "\n".join(f"{e}, {n} -> {r}" for e, n, r in rows)
    t = table(text, f"e: E, n: {'int' if whole else 'float'}")
    enum = EnumDomain(("A", "B", "C"))
    findings = check_table(t, [enum, NumberDomain(whole)])
    grid = [x / 4 for x in range(-8, 25)]
    if whole:
        grid = [float(x) for x in range(-2, 7)]
    points = list(itertools.product(enum.members, grid))
    uncovered = [p for p in points if not any(row_matches(r, p) for r in t.rows)]
    gaps = [f for f in findings if f.kind == "gap" and f.example]
    assert bool(gaps) == bool(uncovered)
    for f in gaps:
        assert not any(row_matches(r, [f.example["e"], f.example["n"]]) for r in t.rows)
    for f in (f for f in findings if f.kind == "overlap"):
        point = [f.example["e"], f.example["n"]]
        assert sum(row_matches(r, point) for r in t.rows) >= 2
    for i, j in itertools.combinations(range(len(t.rows)), 2):
        shared = any(row_matches(t.rows[i], p) and row_matches(t.rows[j], p) for p in points)
        reported = any(f.kind == "overlap" and f.message.startswith(f"rows {i + 1} and {j + 1} ")
                       for f in findings)
        assert shared == reported
