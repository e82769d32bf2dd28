"""Stage 7: ``kdsl report RUN_DIR``: a PNG of level rewards and rule satisfaction over steps,
read from the trainer state that the run saved (its log history)."""

from __future__ import annotations

import json
from pathlib import Path

from kdsl.errors import KdslError, Span


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


def series(history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Metric name -> (steps, values) for the reward and every kdsl metric in the log history."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for entry in history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if (key == "reward" or key.startswith("kdsl/")) and isinstance(value, (int, float)):
                steps, values = out.setdefault(key, ([], []))
                steps.append(int(step))
                values.append(float(value))
    return out


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    run_dir = Path(run_dir)
    state_path = find_state(run_dir)
    history = json.loads(state_path.read_text(encoding="utf-8")).get("log_history", [])
    data = series(history)
    if not data:
        raise KdslError(f"{state_path} has no reward or kdsl metrics logged", Span(str(state_path)))
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    for key, (steps, values) in sorted(data.items()):
        if key == "reward" or key.startswith("kdsl/level/"):
            top.plot(steps, values, label=key.removeprefix("kdsl/level/"),
                     linewidth=2.5 if key == "reward" else 1.5)
        elif key.startswith("kdsl/rule/"):
            bottom.plot(steps, values, label=key.removeprefix("kdsl/rule/"))
    top.set_ylabel("reward / level score")
    top.set_title(f"{run_dir.name}: rewards per level")
    bottom.set_ylabel("rule satisfaction")
    bottom.set_xlabel("step")
    bottom.set_ylim(-0.05, 1.05)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out = Path(output) if output else run_dir / "kdsl_report.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
