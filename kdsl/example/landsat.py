"""The land-cover example's data: real Landsat 8 samples, prompts, a split and an evaluation.

The rows come from the 120 labelled Landsat 8 surface-reflectance samples that ship
with the ``spyndex`` package (``spyndex.datasets.open("spectral")``: bands SR_B1..SR_B7, surface
temperature ST_B10 and a class, Vegetation (46), Urban (37) or Water (37)). Nothing is synthetic
and nothing is downloaded. ``examples/landsat_landcover.kd`` scores completions on them, and
``kdsl train`` without ``--dataset`` trains on :func:`train_heldout_split`'s training part and
evaluates on its held-out part before and after.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

CLASSES = ("Vegetation", "Urban", "Water")
BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7")

# GRPOConfig fields for the embedded tiny model on the embedded data, tuned on a 2-core CPU: 300
# steps take about 3 minutes, in which the mean reward and the held-out accuracy rise (measured
# numbers in kdsl/example/tiny_landcover/README.md). A model this small, trained from scratch, needs
# a much larger learning rate than a pretrained one; the KL term (beta) keeps the reasoning text
# from drifting while the answer is learned; 8 prompts x 8 completions a step keep the gradient
# steady enough that the policy does not settle on one class for every pixel.
DEFAULT_TRAINING: dict = {
    "learning_rate": 3e-4,
    "lr_scheduler_type": "constant",
    "num_generations": 8,
    "per_device_train_batch_size": 64,
    "max_completion_length": 48,
    "max_steps": 300,
    "temperature": 1.0,
    "beta": 0.04,
    "logging_steps": 1,
    "gradient_checkpointing": False,  # TRL turns it on; for a model this small it only costs time
    "save_steps": 100,
    "seed": 0,
}


def prompt_for(sr: Sequence[float]) -> str:
    """The prompt for one pixel: its seven reflectances B1..B7 with three decimals, and the reply
    format the spec's ``format`` level checks.

    Three fixed decimals keep the layout of every prompt the same, which is what lets a very small
    model find a band's value by its position."""
    if len(sr) != len(BANDS):
        raise ValueError(f"expected {len(BANDS)} reflectances (B1..B7), got {len(sr)}")
    values = " ".join(f"{band} {float(v):.3f}" for band, v in zip(BANDS, sr))
    return (f"Landsat 8 surface reflectance: {values}\n"
            f"Land cover: Vegetation, Urban or Water? Reply as <think>reasoning</think>"
            f"<answer>class</answer>\n")


def landsat_rows() -> list[dict]:
    """The 120 labelled Landsat 8 samples shipped in ``spyndex`` (the real sample set, not
    synthetic data), in table order, as rows for ``examples/landsat_landcover.kd``.

    Each row has ``prompt`` (plain text, :func:`prompt_for`), ``label`` (Vegetation, Urban or
    Water), ``sr`` (surface reflectance of bands 1..7, rounded to 4 decimals) and ``sample`` (the
    row's index in the spyndex table)."""
    import spyndex

    table = spyndex.datasets.open("spectral")
    columns = [f"SR_{band}" for band in BANDS]
    rows = []
    # The table's index labels are the positions as strings ("0".."119"); ``sample`` is the position.
    for sample, record in enumerate(table[columns + ["class"]].itertuples(index=False)):
        sr = [round(float(v), 4) for v in record[:len(BANDS)]]
        label = str(record[-1])
        if label not in CLASSES:
            raise ValueError(f"spyndex sample {sample}: unexpected class {label!r}")
        rows.append({"prompt": prompt_for(sr), "label": label, "sr": sr, "sample": sample})
    return rows


def train_heldout_split(rows: Sequence[dict], heldout_fraction: float = 0.25,
                        seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Split rows of the real spyndex samples into (train, held-out), stratified by ``label``:
    each class gives ``round(heldout_fraction * count)`` rows (at least one when it has two or
    more) to the held-out part, drawn with ``random.Random(seed)``. The same arguments always give
    the same split; both parts keep the input order."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_label.setdefault(row["label"], []).append(index)
    heldout: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label]
        k = round(heldout_fraction * len(indices))
        if heldout_fraction > 0 and k == 0 and len(indices) > 1:
            k = 1
        heldout.update(rng.sample(indices, k))
    train = [row for i, row in enumerate(rows) if i not in heldout]
    held = [row for i, row in enumerate(rows) if i in heldout]
    return train, held


def generate_completions(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 48,
                         batch_size: int = 32) -> list[str]:
    """Greedy completions of plain-text prompts, as ``kdsl eval`` generates them."""
    from kdsl.tools.evaluation import EvalConfig, generate

    return generate(model, tokenizer, [{"prompt": p} for p in prompts],
                    EvalConfig(max_new_tokens=max_new_tokens, batch_size=batch_size))


def heldout_evaluation(model, tokenizer, rows: Sequence[dict], program, max_new_tokens: int = 48,
                       batch_size: int = 32) -> dict:
    """Greedy completions for ``rows`` scored by ``program`` (``kdsl eval``'s code): ``accuracy``
    (the fraction whose ``correct`` rule holds), ``format`` (the fraction passing the format
    gate), the mean ``reward`` and the number of ``rows``."""
    if not rows:
        return {"accuracy": float("nan"), "format": float("nan"), "reward": float("nan"), "rows": 0}
    from kdsl.tools.evaluation import EvalConfig, evaluate

    result = evaluate(program, model, tokenizer, rows,
                      EvalConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, metric="correct"))
    closed = result.gates.get("format")
    return {"accuracy": result.metric_value,
            "format": float("nan") if closed is None else 1.0 - closed,
            "reward": result.reward, "rows": len(rows)}


def heldout_accuracy(model, tokenizer, rows: Sequence[dict], program, max_new_tokens: int = 48,
                     batch_size: int = 32) -> float:
    """The fraction of ``rows`` whose greedy completion satisfies the spec's ``correct`` rule."""
    return heldout_evaluation(model, tokenizer, rows, program, max_new_tokens, batch_size)["accuracy"]
