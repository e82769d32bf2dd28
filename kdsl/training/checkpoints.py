"""Checkpoints that survive a crash: each is marked complete only once every file is written,
older ones are deleted only after that, and ``--resume`` takes the newest complete one.

transformers writes ``checkpoint-N`` in place, so a run killed while saving leaves a folder that
looks like a checkpoint but is not one. ``KdslGRPOTrainer`` writes ``kdsl-checkpoint.json`` (each
file's size) into a folder after saving it, atomically, and only then lets old checkpoints be
rotated away: at every moment the previous complete checkpoint is still on disk.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

MARKER = "kdsl-checkpoint.json"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
# A checkpoint written without kdsl's marker (by stock transformers) counts as complete when its
# trainer state, written last, reads back and it holds model or adapter weights.
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin",
            "model.safetensors.index.json", "adapter_model.bin")


def mark_complete(folder: Path, step: int) -> None:
    """Record that ``folder`` holds a whole checkpoint: the size of every file in it."""
    files = {str(p.relative_to(folder)): p.stat().st_size
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}
    partial = folder / f".{MARKER}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump({"step": step, "files": files}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, folder / MARKER)


def problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or ``None`` when it is one."""
    marker = folder / MARKER
    if marker.exists():
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"its {MARKER} cannot be read"
        for name, size in recorded.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size:,} bytes, not the {size:,} it was saved with"
        return None
    state = folder / TRAINER_STATE
    if not state.is_file():
        return f"it has no {TRAINER_STATE} (the run stopped while saving it)"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"its {TRAINER_STATE} is cut short (the run stopped while saving it)"
    if not any((folder / name).is_file() for name in _WEIGHTS):
        return "it holds no model weights"
    return None


@dataclass
class Skipped:
    folder: Path
    reason: str


def checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders, newest (highest N) first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and _CHECKPOINT.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def newest_complete(output_dir: Path) -> tuple[Path | None, list[Skipped]]:
    """The newest complete checkpoint, and the newer ones that were skipped, with the reason."""
    skipped = []
    for folder in checkpoints(output_dir):
        reason = problem(folder)
        if reason is None:
            return folder, skipped
        skipped.append(Skipped(folder, reason))
    return None, skipped


def set_aside(folder: Path) -> Path:
    """Rename an incomplete checkpoint out of the way (``incomplete-checkpoint-N``), so that
    neither transformers' rotation nor a later save into the same step mixes it with new files.
    Nothing is deleted: the folder stays for whoever wants to look at it."""
    target = folder.with_name(f"incomplete-{folder.name}")
    counter = 1
    while target.exists():
        counter += 1
        target = folder.with_name(f"incomplete-{folder.name}-{counter}")
    folder.rename(target)
    return target
