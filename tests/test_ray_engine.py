"""`kdsl score --engine ray` on a local Ray cluster the test starts: the same output, summary and
bad-row reports as the local engine, for jsonl and parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

import kdsl
from kdsl.tools import scoring

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "landsat_landcover.kd"
ROWS = [json.loads(line) for line in (ROOT / "examples" / "landsat_completions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_data(path: Path) -> None:
    """240 rows: the example rows repeated, with bad ones among them (not JSON, no completion, an
    unknown label, a vector of the wrong length) and a blank line."""
    lines = []
    for i in range(240):
        row = dict(ROWS[i % len(ROWS)])
        if i % 37 == 5:
            lines.append("{not json")
            continue
        if i % 41 == 7:
            row.pop("completion")
        if i % 43 == 9:
            row["label"] = "Glacier"
        if i % 47 == 11:
            row["sr"] = [0.1, 0.2]
        lines.append(json.dumps(row))
        if i == 100:
            lines.append("")
    path.write_text("\n".join(lines) + "\n")


def run(engine: str, data: Path, out: Path) -> tuple[str, dict, list[str]]:
    program = kdsl.load(SPEC)
    reports: list[str] = []
    summary = scoring.score_file(program, data, out=out, batch_size=32, workers=2, report=reports.append,
                                 spec=SPEC, engine=engine)
    return out.read_text() if out.suffix != ".parquet" else out.read_bytes(), summary.as_dict(), reports


def test_ray_engine_writes_what_the_local_engine_writes(cluster, tmp_path):
    data = tmp_path / "rows.jsonl"
    write_data(data)
    local = run("local", data, tmp_path / "local.jsonl")
    on_ray = run("ray", data, tmp_path / "ray.jsonl")
    assert on_ray[0] == local[0]
    summary_local, summary_ray = local[1], on_ray[1]
    summary_local.pop("seconds", None), summary_ray.pop("seconds", None)
    assert summary_ray == summary_local
    assert on_ray[2] == local[2] and local[2]  # the same bad rows, reported the same way
    assert summary_local["bad"] > 0 and summary_local["rows"] == 240


def test_ray_engine_on_parquet(cluster, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [ROWS[i % len(ROWS)] for i in range(100)]
    table = pa.table({"completion": [r["completion"] for r in rows], "label": [r["label"] for r in rows],
                      "sr": [r["sr"] for r in rows]})
    pq.write_table(table, tmp_path / "rows.parquet")
    local = run("local", tmp_path / "rows.parquet", tmp_path / "local.csv")
    on_ray = run("ray", tmp_path / "rows.parquet", tmp_path / "ray.csv")
    assert on_ray[0] == local[0] and local[0].count("\n") == 101


def test_the_command_takes_engine_ray(cluster, tmp_path):
    from kdsl.cli import main

    data = tmp_path / "rows.jsonl"
    write_data(data)
    assert main(["score", str(SPEC), "--data", str(data), "--out", str(tmp_path / "a.jsonl"),
                 "--engine", "ray", "--workers", "2", "--max-bad-rows", "100", "--no-progress"]) == 0
    assert main(["score", str(SPEC), "--data", str(data), "--out", str(tmp_path / "b.jsonl"),
                 "--max-bad-rows", "100", "--no-progress"]) == 0
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()

