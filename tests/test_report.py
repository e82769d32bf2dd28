"""`kdsl report`: smoothed lines over faint raw values, held-out points, integer step ticks, a
readable range for constant lines, the legend outside the data, rules that never applied named."""

import json

import pytest

from kdsl.cli import main
from kdsl.tools.report import build_figure, never_applied, series, smooth, y_limits

SPEC = """spec reported version 1
input { x: float }
output { a: tag "answer" }
level format gate {
  rule has_answer: present(a)
}
level main {
  rule big: x > 1
  rule rare: when x > 100: present(a)
}
"""


def history(steps: int) -> list[dict]:
    entries = []
    for step in range(1, steps + 1):
        entries.append({"step": step, "reward": 0.5 + 0.01 * step, "kdsl/level/format": 1.0,
                        "kdsl/level/main": 0.25 * (step % 4), "kdsl/rule/has_answer": 1.0,
                        "kdsl/rule/big": (step % 2) * 1.0, "loss": 0.1})
    entries.append({"step": 0, "heldout/reward": 0.4, "heldout/correct": 0.3, "heldout/rule/big": 0.5})
    entries.append({"step": steps, "heldout/reward": 0.9, "heldout/correct": 0.6})
    return entries


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "kdsl_run").mkdir()
    (tmp_path / "kdsl_run" / "spec.kd").write_text(SPEC, encoding="utf-8")
    (tmp_path / "kdsl_run" / "trainer_state.json").write_text(json.dumps({"log_history": history(30)}))
    return tmp_path


def test_series_separates_training_and_held_out_figures():
    data = series(history(3))
    assert sorted(data) == ["level/format", "level/main", "reward", "rule/big", "rule/has_answer"]
    assert data["reward"][0] == [1, 2, 3]
    held = series(history(3), prefix="heldout/")
    assert held["reward"] == ([0, 3], [0.4, 0.9])
    assert held["metric/correct"] == ([0, 3], [0.3, 0.6])
    assert held["rule/big"] == ([0], [0.5])


def test_smoothing_starts_at_the_first_value_and_follows_a_step():
    line = smooth([1.0] * 5 + [0.0] * 20)
    assert line[0] == pytest.approx(1.0)
    assert line[4] == pytest.approx(1.0)
    assert 0.0 < line[6] < 1.0 and line[-1] < 0.05


def test_constant_lines_get_a_readable_range():
    assert y_limits([1.0, 1.0]) == (0.5, 1.5)
    assert y_limits([1.0, 1.0], -0.05, 1.05) == (0.5, 1.05)
    low, high = y_limits([0.0, 2.0])
    assert low == pytest.approx(-0.1) and high == pytest.approx(2.1)


def test_rules_that_never_applied_are_named(run_dir):
    from kdsl.tools.report import rule_names

    data = series(history(5))
    assert rule_names(run_dir) == ["has_answer", "big", "rare"]
    assert never_applied(rule_names(run_dir), data) == ["rare"]
    assert never_applied(None, data) == []


def test_the_figure_marks_held_out_points_and_keeps_legends_outside(run_dir):
    data, held = series(history(30)), series(history(30), prefix="heldout/")
    fig = build_figure("run", data, held, ["rare"])
    top, bottom = fig.axes
    labels = [line.get_label() for line in top.lines]
    assert "held-out reward" in labels and "reward" in labels
    # Every training line of 30 points is drawn twice: raw (faint, unlabelled) and smoothed.
    faint = [line for line in top.lines if line.get_alpha() == 0.2]
    assert len(faint) == 3
    assert "held-out correct" in [line.get_label() for line in bottom.lines]
    for axis in (top, bottom):
        anchor = axis.get_legend().get_bbox_to_anchor().transformed(axis.transAxes.inverted())
        assert anchor.x0 > 1.0  # to the right of the data
        assert all(float(t).is_integer() for t in axis.get_xticks())
    assert bottom.get_ylim()[0] >= -0.05 and bottom.get_ylim()[1] <= 1.05
    assert any("never applied during the run: rare" in t.get_text() for t in fig.texts)


def test_kdsl_report_writes_the_png(run_dir):
    assert main(["report", str(run_dir)]) == 0
    png = run_dir / "kdsl_report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
