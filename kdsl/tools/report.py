"""Stage 7: ``kdsl report RUN_DIR``: a PNG of level rewards and rule satisfaction over steps,
read from the trainer state that the run saved (its log history).

Training curves are noisy step to step, so each line is smoothed (an exponential moving average,
as TensorBoard draws it) with the raw values faint behind it; held-out evaluations (``kdsl train
--eval-dataset``) are drawn as marked points; rules that never applied to a completion during the
run are named under the plot, since they have no line at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from kdsl.errors import KdslError, Span

# Weight of the running average in the smoothed line; short runs are drawn raw.
SMOOTHING = 0.8
SMOOTH_FROM_POINTS = 12


def find_state(run_dir: Path) -> Path:
    """The newest trainer_state.json of a run: the run folder's, else the last checkpoint's."""
    candidates = [run_dir / "kdsl_run" / "trainer_state.json", run_dir / "trainer_state.json"]
    checkpoints = sorted((p for p in run_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                         key=lambda p: int(p.name.split("-")[-1]))
    candidates += [p / "trainer_state.json" for p in reversed(checkpoints)]
    for path in candidates:
        if path.is_file():
            return path
    raise KdslError(f"no trainer_state.json in {run_dir} (nor in its checkpoints): is it a "
                    "`kdsl train` output folder?", Span(str(run_dir)))


def series(history: list[dict], prefix: str = "") -> dict[str, tuple[list[int], list[float]]]:
    """Metric name -> (steps, values) for the reward and every kdsl metric in the log history;
    with ``prefix="heldout/"``, the held-out figures instead (names without the prefix)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for entry in history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if prefix:
                if not key.startswith(prefix):
                    continue
                key = key.removeprefix(prefix)
                key = "reward" if key == "reward" else (key if "/" in key else f"metric/{key}")
            elif not (key == "reward" or key.startswith("kdsl/")):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                steps, values = out.setdefault(key.removeprefix("kdsl/"), ([], []))
                steps.append(int(step))
                values.append(float(value))
    return out


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average with TensorBoard's start-up correction (the first points are
    not pulled towards zero)."""
    out, average, total = [], 0.0, 0.0
    for value in values:
        average = weight * average + (1 - weight) * value
        total = weight * total + (1 - weight)
        out.append(average / total)
    return out


def y_limits(values: list[float], low: float | None = None, high: float | None = None) -> tuple[float, float]:
    """A y-range that shows the data: a margin of 5%, and a band of 1 around a constant line
    (matplotlib would zoom into float noise); ``low``/``high`` clamp it (rule rates lie in 0..1)."""
    lo, hi = min(values), max(values)
    span = hi - lo
    if span < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    else:
        lo, hi = lo - 0.05 * span, hi + 0.05 * span
    if low is not None:
        lo = max(lo, low)
    if high is not None:
        hi = min(hi, high)
    if hi - lo < 1e-9:
        hi = lo + 1.0
    return lo, hi


def rule_names(run_dir: Path) -> list[str] | None:
    """The rules of the spec the run trained on (its copy in the run folder), or None when it
    cannot be read; checked without compiling, so no torch."""
    from kdsl.compiler import check_file

    spec = run_dir / "kdsl_run" / "spec.kd"
    if not spec.is_file():
        return None
    try:
        result = check_file(spec, spec_path=[run_dir / "kdsl_run" / "specs"])
    except KdslError:
        return None
    if result.program is None or result.errors:
        return None
    return [rule.name for rule in result.program.rules]


def never_applied(rules: list[str] | None, data: dict) -> list[str]:
    """Rules without a single logged satisfaction rate: no completion made them apply."""
    if rules is None:
        return []
    return [name for name in rules if f"rule/{name}" not in data]


def build_figure(title: str, data: dict, heldout: dict, missing: list[str]):
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = {"top": (top, []), "bottom": (bottom, [])}
    for index, (key, (steps, values)) in enumerate(sorted(data.items())):
        if key == "reward" or key.startswith("level/"):
            axis, collected = panels["top"]
        elif key.startswith("rule/"):
            axis, collected = panels["bottom"]
        else:
            continue
        color = colors[index % len(colors)]
        label = key.split("/", 1)[-1]
        if len(values) >= SMOOTH_FROM_POINTS:
            axis.plot(steps, values, color=color, alpha=0.2, linewidth=1)
            axis.plot(steps, smooth(values), color=color, label=label,
                      linewidth=2.5 if key == "reward" else 1.5)
        else:
            axis.plot(steps, values, color=color, label=label, marker=".",
                      linewidth=2.5 if key == "reward" else 1.5)
        collected.extend(values)
    for key, (steps, values) in sorted(heldout.items()):
        if key == "reward":
            axis, collected = panels["top"]
            label = "held-out reward"
        elif key.startswith("metric/"):
            axis, collected = panels["bottom"]
            label = f"held-out {key.removeprefix('metric/')}"
        else:
            continue
        axis.plot(steps, values, linestyle="--", marker="o", markersize=6, color="black", label=label)
        collected.extend(values)
    top.set_ylabel("reward / level score")
    top.set_title(f"{title}: rewards per level")
    bottom.set_ylabel("rule satisfaction (where it applies)")
    bottom.set_xlabel("step")
    for name, (axis, collected) in panels.items():
        if collected:
            axis.set_ylim(*y_limits(collected, *((-0.05, 1.05) if name == "bottom" else (None, None))))
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axis.lines and axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if missing:
        fig.text(0.01, 0.01, "never applied during the run: " + ", ".join(missing), fontsize=9)
    fig.tight_layout(rect=(0, 0.03 if missing else 0, 1, 1))
    return fig


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    run_dir = Path(run_dir)
    state_path = find_state(run_dir)
    history = json.loads(state_path.read_text(encoding="utf-8")).get("log_history", [])
    data = series(history)
    if not data:
        raise KdslError(f"{state_path} has no reward or kdsl metrics logged", Span(str(state_path)))
    heldout = series(history, prefix="heldout/")
    fig = build_figure(run_dir.name, data, heldout, never_applied(rule_names(run_dir), data))
    out = Path(output) if output else run_dir / "kdsl_report.png"
    fig.savefig(out, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out
