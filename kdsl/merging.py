"""``kdsl merge``: one adapter from several LoRA experts trained from one base, through PEFT's
``add_weighted_adapter``.

An expert is a ``kdsl train --lora`` output folder (or any folder holding a PEFT LoRA adapter).
Before anything is loaded, the experts are checked against each other: one base model, LoRA
adapters only, and ranks the method can combine (``linear``, ``ties``, ``dare_ties``,
``dare_linear`` and ``magnitude_prune`` need equal ranks; ``cat`` and the ``svd`` methods do not).
The merged adapter is written as a plain PEFT adapter, so it loads wherever an adapter does
(``kdsl eval --adapter``, ``kdsl train --adapter``, ``PeftModel.from_pretrained``), with
``kdsl_merge.json`` beside it saying what it was made from.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from kdsl.errors import KdslError

METHODS = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune", "cat", "svd", "ties_svd",
           "dare_ties_svd", "dare_linear_svd", "magnitude_prune_svd")
SAME_RANK = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune")
WITH_DENSITY = ("ties", "dare_ties", "dare_linear", "magnitude_prune", "ties_svd", "dare_ties_svd",
                "dare_linear_svd", "magnitude_prune_svd")
MERGED = "merged"


@dataclass(frozen=True)
class Expert:
    folder: Path
    config: dict

    @property
    def base(self) -> str:
        return str(self.config.get("base_model_name_or_path") or "")

    @property
    def rank(self) -> int:
        ranks = [self.config.get("r", 0), *(self.config.get("rank_pattern") or {}).values()]
        return max(int(r) for r in ranks)


def read_expert(path: str | Path) -> Expert:
    folder = Path(path)
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise KdslError(f"{folder}: no adapter_config.json; an expert is a `kdsl train --lora` output "
                        "folder or a folder holding a PEFT adapter")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise KdslError(f"{config_path}: cannot read it ({err})") from None
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise KdslError(f"{folder}: a {config.get('peft_type')} adapter; only LoRA adapters merge")
    return Expert(folder, config)


def _same_base(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_experts(experts: list[Expert], method: str, weights: list[float], density: float | None) -> None:
    """Every reason the experts cannot be merged this way, as one error."""
    problems = []
    if len(experts) < 2:
        problems.append("give at least two experts to merge")
    if method not in METHODS:
        problems.append(f"--method {method}: choose one of {', '.join(METHODS)}")
    if len(weights) != len(experts):
        problems.append(f"{len(weights)} weights for {len(experts)} experts")
    if density is not None and not 0.0 < density <= 1.0:
        problems.append(f"--density must be in (0, 1], not {density:g}")
    if method in WITH_DENSITY and density is None:
        problems.append(f"--method {method} needs --density (the share of each update kept)")
    if experts:
        first = experts[0]
        for other in experts[1:]:
            if not _same_base(first.base, other.base):
                problems.append(f"{other.folder} was trained from {other.base or 'an unknown base'}, "
                                f"{first.folder} from {first.base or 'an unknown base'}: experts must "
                                "share their base model")
        ranks = {e.folder: e.rank for e in experts}
        if method in SAME_RANK and len(set(ranks.values())) > 1:
            shown = ", ".join(f"{folder} r={rank}" for folder, rank in ranks.items())
            problems.append(f"--method {method} needs adapters of one rank ({shown}); use cat or an svd "
                            "method")
    if problems:
        raise KdslError("cannot merge: " + "; ".join(problems))


def load_experts(experts: list[Expert], base: str | None = None, device: str | None = None):
    """The base model with every expert loaded as adapters ``expert0``, ``expert1``, ..."""
    from peft import PeftModel

    from kdsl.loading import load_model

    model, processing_class = load_model(base or experts[0].base, device=device or "cpu")
    peft_model = PeftModel.from_pretrained(model, str(experts[0].folder), adapter_name="expert0")
    for index, expert in enumerate(experts[1:], start=1):
        peft_model.load_adapter(str(expert.folder), adapter_name=f"expert{index}")
    return peft_model, processing_class


def merge(paths: list[str], method: str, weights: list[float] | None, density: float | None,
          out: str | Path, base: str | None = None, device: str | None = None) -> Path:
    experts = [read_expert(p) for p in paths]
    weights = list(weights) if weights else [1.0 / len(experts)] * len(experts)
    check_experts(experts, method, weights, density)
    model, processing_class = load_experts(experts, base, device)
    names = [f"expert{i}" for i in range(len(experts))]
    model.add_weighted_adapter(names, weights, adapter_name=MERGED, combination_type=method,
                               density=density)
    model.set_adapter(MERGED)
    out = Path(out)
    staging = out / ".kdsl-merge"
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(str(staging), selected_adapters=[MERGED])
    saved = staging / MERGED if (staging / MERGED).is_dir() else staging
    out.mkdir(parents=True, exist_ok=True)
    for item in saved.iterdir():
        shutil.move(str(item), str(out / item.name))
    shutil.rmtree(staging, ignore_errors=True)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base or experts[0].base
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if processing_class is not None:
        processing_class.save_pretrained(str(out))
    provenance = {"method": method, "weights": weights, "density": density,
                  "base": base or experts[0].base,
                  "experts": [{"folder": str(e.folder), "r": e.rank} for e in experts]}
    (out / "kdsl_merge.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return out
