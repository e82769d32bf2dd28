"""`kdsl score --data FILE --out FILE`: streaming a large file through the scorer, with bad rows
reported (row number and field), counted, and written with an error instead of being dropped."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import kdsl
from kdsl.cli import Console, main
from kdsl.errors import KdslDataError
from kdsl.runtime import execute

SPEC = """\
spec stream version 1
input {
  label: enum Label { Forest, River, Urban ("built-up") }
  gold: float
  sr: vector[3] bands(a, b, c)
}
output {
  reply: tag "answer"
  answer: reply as Label
  value: number(tag "estimate")
}
level format gate {
  rule has_answer: present(reply)
  rule known: present(answer)
}
level accuracy weight 2 {
  rule correct: answer == label
  rule close: value >= gold - 1 and value <= gold + 1 soft 2
}
level knowledge weight 0.5 {
  rule river_is_wet: when answer == River: sr.a > sr.b
}
"""
ROWS = 100_000
CLASSES = ["Forest", "River", "Urban", "built-up", "forest"]


def good_row(rng: random.Random) -> dict:
    label = rng.choice(CLASSES)
    claimed = label if rng.random() < 0.6 else rng.choice(CLASSES)
    gold = float(rng.randint(0, 20))
    value = gold + rng.choice([0, 1, 2, 5])
    kind = rng.random()
    if kind < 0.8:
        completion = f"<answer>{claimed}</answer> <estimate>{value:g}</estimate>"
    elif kind < 0.9:
        completion = f"{claimed}, <estimate>{value:g}</estimate>"  # no answer tag
    else:
        completion = f"<answer>no idea</answer> {'x' * rng.randint(0, 50)}"
    row = {"completion": completion, "label": label, "gold": gold,
           "sr": [round(rng.random(), 3) for _ in range(3)]}
    if rng.random() < 0.01:
        row["gold"] = None  # a missing value: scored as invalid, not a bad row
    return row


# Bad lines at fixed rows: (row, the line's text, the field named, the message's end)
BAD = {
    17: ('{"completion": "<answer>River</answer>", "label": "River"', None, "not a JSON object ("),
    1_000: ('{"label": "River", "gold": 1, "sr": [1, 2, 3]}', "completion",
            "missing; every row needs a completion"),
    25_000: ('{"completion": "<answer>River 3</answer>", "label": "River", "gold": "seven", '
             '"sr": [1, 2, 3]}', "gold", "expected a number, got 'seven'"),
    50_001: ('{"completion": "<answer>Lake</answer>", "label": "Lake", "gold": 1, "sr": [1, 2, 3]}',
             "label", "expected one of Forest, River, Urban, got 'Lake'"),
    77_777: ('{"completion": "<answer>Urban 2</answer>", "label": "Urban", "gold": 2, "sr": [1, 2]}',
             "sr", "expected 3 numbers, not 2, got [1, 2]"),
    99_998: ('{"completion": 42, "label": "Urban", "gold": 2, "sr": [1, 2, 3]}', "completion",
             "expected a string or a list of chat messages, got 42"),
}
BLANK_BEFORE_ROW = 30_000  # a blank line here: it is no row, and later lines are one further on


def run(*argv: str, err=None) -> tuple[int, str, str]:
    out, err = io.StringIO(), err or io.StringIO()
    code = main(list(argv), Console(out, err))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("stream")
    spec = folder / "stream.kd"
    spec.write_text(SPEC)
    rng = random.Random(7)
    rows: list[dict | None] = []
    lines: list[str] = []
    line_of: dict[int, int] = {}
    for row in range(ROWS):
        if row == BLANK_BEFORE_ROW:
            lines.append("")
        if row in BAD:
            lines.append(BAD[row][0])
            rows.append(None)
        else:
            good = good_row(rng)
            lines.append(json.dumps(good))
            rows.append(good)
        line_of[row] = len(lines)
    path = folder / "completions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return {"folder": folder, "spec": spec, "path": path, "rows": rows, "line_of": line_of,
            "program": kdsl.load(spec)}


def expected_scores(program, rows: list[dict]):
    return program.score([r["completion"] for r in rows], label=[r["label"] for r in rows],
                         gold=[r["gold"] for r in rows], sr=[r["sr"] for r in rows])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_large_file_with_bad_rows(data):
    out_path = data["folder"] / "scores.jsonl"
    code, out, err = run("score", str(data["spec"]), "--data", str(data["path"]), "--out",
                         str(out_path), "--json", "--workers", "1")
    assert code == 1, err  # bad rows: exit 1 (see --max-bad-rows)

    # each bad row on stderr: file, line, row number, field and what was wrong
    source, line_of = str(data["path"]), data["line_of"]
    for row, (_, fieldname, message) in BAD.items():
        where = f"{source}:{line_of[row]}:"
        expected = (f"{where} {message}" if fieldname is None
                    else f"{where} row {row}, column `{fieldname}`: {message}")
        assert expected in err, f"row {row} not reported as {expected!r}:\n{err}"
    assert err.count(source) == len(BAD)

    written = read_jsonl(out_path)
    assert [w["row"] for w in written] == list(range(ROWS))
    assert [w["line"] for w in written] == [line_of[r] for r in range(ROWS)]
    for row, (_, fieldname, message) in BAD.items():
        assert written[row]["reward"] is None and message in written[row]["error"]
        assert set(written[row]["rules"].values()) == {None}
        if fieldname:
            assert f"column `{fieldname}`" in written[row]["error"]

    # every good row scores exactly as Program.score scores the same rows in one batch
    good = [r for r in range(ROWS) if r not in BAD]
    scores = expected_scores(data["program"], [data["rows"][r] for r in good])
    reward = scores.reward.tolist()
    assert all("error" not in written[r] for r in good)
    assert max(abs(written[r]["reward"] - reward[k]) for k, r in enumerate(good)) < 1e-6
    for name in data["program"].rule_names:
        truth, applies = scores.rules[name].tolist(), scores.applies[name].tolist()
        for k, r in enumerate(good):
            value = written[r]["rules"][name]
            assert (value is None) == (not applies[k])
            assert value is None or abs(value - truth[k]) < 1e-6

    # the summary: counts, mean reward, level means, rule applied counts and rates
    summary = json.loads(out)
    assert (summary["rows"], summary["scored"], summary["bad"]) == (ROWS, len(good), len(BAD))
    assert summary["mean_reward"] == pytest.approx(sum(reward) / len(good), abs=1e-6)
    for name, level in scores.levels.items():
        assert summary["levels"][name] == pytest.approx(level.double().mean().item(), abs=1e-6)
    for name in data["program"].rule_names:
        applies = scores.applies[name]
        rule = summary["rules"][name]
        assert rule["applied"] == int(applies.sum())
        assert rule["rate"] == pytest.approx(scores.rules[name][applies].double().mean().item(),
                                             abs=1e-6)
    assert summary["rules"]["river_is_wet"]["applied"] < len(good)  # a `when` rule
    missing_gold = sum(data["rows"][r]["gold"] is None for r in good)
    assert summary["missing"] == {"label": 0, "gold": missing_gold, "sr": 0} and missing_gold > 0


def test_workers_write_what_one_process_writes(data, tmp_path):
    part = tmp_path / "part.jsonl"  # the first 40,000 rows: 3 bad ones and the blank line
    part.write_text("\n".join(data["path"].read_text().splitlines()[:40_001]) + "\n")
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    assert run("score", str(data["spec"]), "--data", str(part), "--out", str(one),
               "--workers", "1", "--batch-size", "7000")[0] == 1
    code, _, err = run("score", str(data["spec"]), "--data", str(part), "--out", str(two),
                       "--workers", "2", "--batch-size", "7000")
    assert code == 1
    assert one.read_text() == two.read_text()
    assert err.count(str(part)) == 3
    header = one.read_text().splitlines()[0]
    assert header.split(",")[:4] == ["row", "line", "reward", "level.format"]
    assert header.endswith(",rule.river_is_wet,error")
    bad = next(csv.reader([one.read_text().splitlines()[1 + 25_000]]))
    assert bad[:2] == ["25000", str(data["line_of"][25_000])] and bad[2] == ""
    assert bad[-1] == "column `gold`: expected a number, got 'seven'"


def test_parquet_in_and_out(data, tmp_path):
    rows = [r for r in data["rows"][:5000] if r is not None]
    table = pa.table({"completion": [r["completion"] for r in rows],
                      "label": [r["label"] for r in rows],
                      "gold": pa.array([r["gold"] for r in rows], pa.float64()),
                      "sr": [r["sr"] for r in rows]})
    # bad values that parquet's types allow: a null completion, an unknown member, a short vector
    completion, label, sr = (table.column(n).to_pylist() for n in ("completion", "label", "sr"))
    completion[10], label[200], sr[3000] = None, "Lake", [1.0]
    table = table.set_column(0, "completion", pa.array(completion))
    table = table.set_column(1, "label", pa.array(label))
    table = table.set_column(3, "sr", pa.array(sr))
    source = tmp_path / "rows.parquet"
    pq.write_table(table, source, row_group_size=1500)
    target = tmp_path / "scores.parquet"

    code, out, err = run("score", str(data["spec"]), "--data", str(source), "--out", str(target),
                         "--batch-size", "1024")
    assert code == 1
    assert f"{source}: row 10, column `completion`: null; every row needs a completion" in err
    assert f"{source}: row 200, column `label`: expected one of Forest, River, Urban, got 'Lake'" in err
    assert f"{source}: row 3000, column `sr`: expected 3 numbers, not 1, got [1.0]" in err
    assert f"{source}: {len(rows):,} rows, {len(rows) - 3:,} scored, 3 bad" in out

    written = pq.read_table(target)
    assert written.column_names[:3] == ["row", "reward", "level.format"]
    assert written.column("row").to_pylist() == list(range(len(rows)))
    errors = written.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e] == [10, 200, 3000]
    good = [i for i in range(len(rows)) if i not in (10, 200, 3000)]
    scores = expected_scores(data["program"], [rows[i] for i in good])
    reward = written.column("reward").to_numpy(zero_copy_only=False)
    assert torch.equal(torch.from_numpy(reward[good]), scores.reward)  # float32, exact
    assert written.column("reward").null_count == 3
    correct = written.column("rule.river_is_wet").to_pylist()
    applies = scores.applies["river_is_wet"].tolist()
    assert [correct[i] is not None for i in good] == applies


def test_clean_file_exits_0_and_blank_lines_are_not_rows(data, tmp_path):
    lines = [json.dumps(r) for r in data["rows"][:50] if r is not None]
    source = tmp_path / "clean.jsonl"
    # a byte order mark, blank lines (one of spaces) and no newline at the end
    source.write_text("\ufeff" + "\n".join(lines[:20]) + "\n\n   \n" + "\n".join(lines[20:]))
    code, out, err = run("score", str(data["spec"]), "--data", str(source), "--json")
    assert code == 0 and err.startswith(f"{source}: 49 rows, 49 scored, 0 bad")
    written = [json.loads(line) for line in out.splitlines()]
    assert [w["row"] for w in written] == list(range(49))
    assert written[20]["line"] == 23 and written[-1]["line"] == 51


def test_max_bad_rows_and_usage_errors(data, tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(data["path"].read_text().splitlines()[:40]) + "\n")
    (tmp_path / "rows.xlsx").write_text("completion,label\nx,River\n")
    spec = str(data["spec"])
    assert run("score", spec, "--data", str(small), "--out", str(tmp_path / "s.jsonl"))[0] == 1
    assert run("score", spec, "--data", str(small), "--out", str(tmp_path / "s.jsonl"),
               "--max-bad-rows", "1")[0] == 0
    for argv, message in [
        (["--data", str(tmp_path / "missing.jsonl")], "no such file"),
        (["--data", str(small), "--out", str(tmp_path / "s.txt")], "cannot tell the output format"),
        (["--data", str(small), "--out", str(tmp_path / "no" / "s.jsonl")], "no such folder"),
        (["--data", str(small), "--out", str(small)], "names the --data file"),
        (["--data", str(small), "--completion", "x"], "--completion and --set"),
        (["--data", str(small), "--batch-size", "0"], "--batch-size"),
        (["--data", str(tmp_path / "rows.xlsx")], "unknown dataset format .xlsx; use .jsonl, .json, "
                                                  ".parquet, .csv, .tsv"),
        (["--completion", "x", "--out", str(tmp_path / "s.jsonl")], "--out needs --data"),
    ]:
        code, _, err = run("score", spec, *argv)
        assert code == 2 and message in err, (argv, err)
    code, _, err = run("score", str(tmp_path / "missing.kd"), "--data", str(small))
    assert code == 2 and "no such file" in err
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    code, _, err = run("score", spec, "--data", str(broken))
    assert code == 1 and "cannot read it as parquet" in err and "Traceback" not in err
    assert not list(tmp_path.glob(".*.partial"))


def test_progress_bar_on_a_terminal(data, tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(data["path"].read_text().splitlines()[:10]) + "\n")
    err = Terminal()
    code, _, shown = run("score", str(data["spec"]), "--data", str(small), "--out",
                         str(tmp_path / "s.jsonl"), err=err)
    assert code == 0 and "scoring" in shown and "10 rows" in shown and "100%" in shown
    code, _, shown = run("score", str(data["spec"]), "--data", str(small), "--out",
                         str(tmp_path / "s.jsonl"), "--no-progress", err=Terminal())
    assert code == 0 and "scoring" not in shown


def test_columns_collect_problems_instead_of_raising(data):
    module = data["program"].module
    columns = {"label": ["River", "Lake", None], "gold": [1.0, "seven", 2.0],
               "sr": [[1, 2, 3], [1, 2, 3], [1, 2]]}
    ref = torch.zeros(3)
    with pytest.raises(KdslDataError, match="row 1, column `label`"):
        execute.prepare_columns(module, columns, 3, ref, execute.col.Interner())
    problems: list = []
    env = execute.prepare_columns(module, columns, 3, ref, execute.col.Interner(), problems)
    assert problems == [(1, "label", "expected one of Forest, River, Urban, got 'Lake'"),
                        (1, "gold", "expected a number, got 'seven'"),
                        (2, "sr", "expected 3 numbers, not 2, got [1, 2]")]
    masks = [env[f"m{node}"] for _, _, node, _ in module.INPUTS]
    assert [m.tolist() if m.dim() == 1 else m.all(1).tolist() for m in masks] == [
        [True, False, False], [True, False, True], [True, True, False]]


def test_only_the_first_bad_rows_are_printed_but_all_are_counted(data, tmp_path):
    source = tmp_path / "many_bad.jsonl"
    source.write_text("".join("{broken\n" if i % 3 == 0 else json.dumps(data["rows"][100 + i]) + "\n"
                              for i in range(1, 91)))
    out_path = tmp_path / "scores.jsonl"
    code, out, err = run("score", str(data["spec"]), "--data", str(source), "--out", str(out_path),
                         "--json")
    assert code == 1
    reported = [line for line in err.splitlines() if "not a JSON object" in line]
    assert len(reported) == 20 and reported[0].startswith(f"{source}:3: ")
    assert f"{source}: 10 more bad rows not shown (30 in all)" in err
    assert json.loads(out)["bad"] == 30
    assert sum("error" in row for row in read_jsonl(out_path)) == 30


def _as_csv(records: list, delimiter: str = ",") -> str:
    """Rows (dicts) and raw records (lists of cells) as csv text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(["completion", "label", "gold", "sr"])
    for row in records:
        writer.writerow(row if isinstance(row, list) else
                        [row["completion"], row["label"], "" if row["gold"] is None else row["gold"],
                         json.dumps(row["sr"])])
    return buffer.getvalue()


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_csv_rows_are_read_by_the_inputs_types(data, tmp_path, suffix, delimiter):
    """A csv cell is text: kdsl reads it as the input it fills needs (a number, a JSON list, a
    member); an empty cell is a missing value. The scores are those of the same rows as jsonl."""
    rows = [r for r in data["rows"][:300] if r is not None]
    rows[5] = {**rows[5], "completion": 'a "quoted", two-line\n<answer>River</answer>'}
    bad_at = 40  # a record with a fifth cell, and a gold that is no number
    records = [*rows[:bad_at], ["<answer>Urban</answer>", "Urban", "3", "[1, 2, 3]", "extra"],
               ["<answer>Urban</answer>", "Urban", "seven", "[1, 2, 3]"], *rows[bad_at:]]
    source = tmp_path / f"rows{suffix}"
    source.write_text(_as_csv(records, delimiter))
    out = tmp_path / "scores.jsonl"
    code, _, err = run("score", str(data["spec"]), "--data", str(source), "--out", str(out),
                       "--max-bad-rows", "2")
    assert code == 0, err
    written = read_jsonl(out)
    assert len(written) == len(rows) + 2
    good = [w for w in written if "error" not in w]
    scores = expected_scores(data["program"], rows)
    assert [w["reward"] for w in good] == pytest.approx(scores.reward.tolist(), abs=1e-5)
    # the quoted cell spans two lines: every later record starts one line further on
    assert [w["line"] for w in written[:8]] == [2, 3, 4, 5, 6, 7, 9, 10]
    extra, seven = written[bad_at], written[bad_at + 1]
    assert extra["error"] == "a record of 5 cells, where the header names 4 columns"
    assert seven["error"] == "column `gold`: expected a number, got 'seven'"
    line = extra["line"]
    assert f"{source}:{line}: a record of 5 cells, where the header names 4 columns" in err
    assert f"{source}:{line + 1}: row {bad_at + 1}, column `gold`: expected a number, got 'seven'" in err


def test_a_saved_dataset_folder_scores_like_its_jsonl(data, tmp_path):
    import datasets

    rows = [r for r in data["rows"][:200] if r is not None]
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    out = tmp_path / "scores.csv"
    code, _, err = run("score", str(data["spec"]), "--data", str(folder), "--out", str(out))
    assert code == 0, err
    written = list(csv.DictReader(out.read_text().splitlines()))
    assert "line" not in written[0]  # rows of a dataset have no lines
    scores = expected_scores(data["program"], rows)
    assert [float(w["reward"]) for w in written] == pytest.approx(scores.reward.tolist(), abs=1e-5)
