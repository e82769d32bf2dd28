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
    def origin(self) -> str:
        """What the expert was trained from. A `kdsl train` run on a GGUF file trains from the
        dequantised copy it saves in its own ``base_model/``, so two runs on one GGUF file name
        two folders; their origin is the file the run records."""
        base = self.base
        own_copy = self.folder / "base_model"
        run = self.folder / "kdsl_run" / "run.json"
        if base and run.is_file() and Path(base).resolve() == own_copy.resolve():
            try:
                model = json.loads(run.read_text(encoding="utf-8")).get("model")
            except (OSError, json.JSONDecodeError):
                model = None
            if isinstance(model, str) and model.lower().endswith(".gguf"):
                return model
        return base

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
            if not _same_base(first.origin, other.origin):
                problems.append(f"{other.folder} was trained from {other.origin or 'an unknown base'}, "
                                f"{first.folder} from {first.origin or 'an unknown base'}: experts "
                                "must share their base model")
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

    from kdsl.io.loading import load_model

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
    return write_merged(model, processing_class, experts, method, weights, density, out, base)


def write_merged(model, processing_class, experts: list[Expert], method: str, weights: list[float],
                 density: float | None, out: str | Path, base: str | None = None) -> Path:
    """Merge the loaded experts (adapters ``expert0``...) and write the result as a plain adapter."""
    names = [f"expert{i}" for i in range(len(experts))]
    _seeded()  # DARE drops at random: the same command gives the same adapter
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


# ---- conflicts between experts ------------------------------------------------------------------

def expert_deltas(expert: Expert) -> dict:
    """Each adapted layer's update ``B @ A x alpha / r`` (float32, on the CPU), by module name."""
    from safetensors.torch import load_file

    files = [expert.folder / "adapter_model.safetensors"]
    if not files[0].is_file():
        raise KdslError(f"{expert.folder}: no adapter_model.safetensors")
    weights = load_file(str(files[0]))
    alpha = float(expert.config.get("lora_alpha", expert.config.get("r", 1)))
    out = {}
    for name, a in weights.items():
        if ".lora_A." not in name:
            continue
        b = weights.get(name.replace(".lora_A.", ".lora_B."))
        if b is None:
            continue
        module = name.split(".lora_A.")[0].removeprefix("base_model.model.")
        rank = a.shape[0]
        scale = alpha / rank if not expert.config.get("use_rslora") else alpha / rank ** 0.5
        out[module] = (b.float() @ a.float()) * scale
    return out


def _layer_type(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def conflicts(experts: list[Expert], density: float | None = None) -> dict:
    """How much the experts' updates disagree, per layer, per layer type and overall: the share of
    parameters with opposite signs among those every expert changes, the mean cosine between
    each pair of experts' updates, and (at ``density``) the share of the kept values that TIES's
    sign election drops."""
    import torch

    deltas = [expert_deltas(e) for e in experts]
    shared = sorted(set.intersection(*(set(d) for d in deltas)))
    if not shared:
        raise KdslError("the experts adapt no layer in common")
    keep = density if density is not None else 0.2
    rows = []
    for module in shared:
        stack = torch.stack([d[module].reshape(-1) for d in deltas])
        changed = (stack != 0).all(0)
        signs = torch.sign(stack)
        opposite = changed & (signs.max(0).values != signs.min(0).values)
        pairs = [(i, j) for i in range(len(deltas)) for j in range(i + 1, len(deltas))]
        cosines = [float(torch.nn.functional.cosine_similarity(stack[i], stack[j], dim=0)) for i, j in pairs]
        # TIES: keep each expert's top `keep` share by magnitude, elect a sign per parameter by the
        # sum of the kept values, and drop kept values of the other sign.
        k = max(1, int(round(keep * stack.shape[1])))
        kept = torch.zeros_like(stack, dtype=torch.bool)
        top = stack.abs().topk(k, dim=1).indices
        kept.scatter_(1, top, True)
        trimmed = torch.where(kept, stack, torch.zeros_like(stack))
        elected = torch.sign(trimmed.sum(0))
        dropped = kept & (torch.sign(trimmed) != elected) & (elected != 0)
        rows.append({"module": module, "type": _layer_type(module), "params": int(stack.shape[1]),
                     "both_changed": int(changed.sum()), "opposite": int(opposite.sum()),
                     "cosine": sum(cosines) / len(cosines), "kept": int(kept.sum()),
                     "ties_dropped": int(dropped.sum())})

    def summary(selected: list[dict]) -> dict:
        changed = sum(r["both_changed"] for r in selected)
        kept = sum(r["kept"] for r in selected)
        weight = sum(r["params"] for r in selected)
        return {"layers": len(selected),
                "opposite_sign_share": sum(r["opposite"] for r in selected) / changed if changed else 0.0,
                "cosine": sum(r["cosine"] * r["params"] for r in selected) / weight if weight else 0.0,
                "ties_dropped_share": sum(r["ties_dropped"] for r in selected) / kept if kept else 0.0}

    types = sorted({r["type"] for r in rows})
    for r in rows:
        r["opposite_sign_share"] = r["opposite"] / r["both_changed"] if r["both_changed"] else 0.0
        r["ties_dropped_share"] = r["ties_dropped"] / r["kept"] if r["kept"] else 0.0
    return {"experts": [str(e.folder) for e in experts], "density": keep, "layers": rows,
            "by_type": {t: summary([r for r in rows if r["type"] == t]) for t in types},
            "overall": summary(rows)}


def render_conflicts(report: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"conflicts between {len(report['experts'])} experts (TIES at density "
                        f"{report['density']:g})")
    for column in ("layer type", "layers", "opposite signs", "cosine", "TIES drops"):
        table.add_column(column, justify="left" if column == "layer type" else "right")
    for name, s in [*report["by_type"].items(), ("all", report["overall"])]:
        table.add_row(name, str(s["layers"]), f"{s['opposite_sign_share']:.1%}", f"{s['cosine']:+.3f}",
                      f"{s['ties_dropped_share']:.1%}")
    console.print(table)


def plot_conflicts(report: dict, path: Path) -> Path:
    """A heat map over layers: opposite-sign share, cosine and TIES drops per adapted module."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["layers"]
    columns = (("opposite_sign_share", "opposite signs"), ("cosine", "cosine"),
               ("ties_dropped_share", "TIES drops"))
    values = [[r[key] for key, _ in columns] for r in rows]
    fig, ax = plt.subplots(figsize=(6, max(3, 0.22 * len(rows) + 1.5)))
    image = ax.imshow(values, aspect="auto", cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_xticks(range(len(columns)), [label for _, label in columns])
    ax.set_yticks(range(len(rows)), [r["module"] for r in rows], fontsize=6)
    ax.set_title("conflicts between experts, per adapted layer")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- choosing the merge by the guidelines ----------------------------------------------------------

def _seeded(seed: int = 0) -> None:
    import torch

    torch.manual_seed(seed)


def default_grid(experts: list[Expert]) -> list[dict]:
    """The candidates `--select-on` tries: equal weights; cat (exact), and where the ranks agree
    linear; TIES at densities 0.3, 0.5 and 0.7; DARE-TIES and magnitude pruning at 0.5."""
    equal = [1.0 / len(experts)] * len(experts)
    same_rank = len({e.rank for e in experts}) == 1
    grid = [{"method": "cat", "density": None}]
    if same_rank:
        grid.append({"method": "linear", "density": None})
        grid += [{"method": "ties", "density": d} for d in (0.3, 0.5, 0.7)]
        grid += [{"method": "dare_ties", "density": 0.5}, {"method": "magnitude_prune", "density": 0.5}]
    else:
        grid += [{"method": "ties_svd", "density": d} for d in (0.3, 0.5, 0.7)]
    return [{**g, "weights": equal} for g in grid]


def _label(candidate: dict) -> str:
    density = f" d={candidate['density']:g}" if candidate["density"] is not None else ""
    weights = ",".join(f"{w:g}" for w in candidate["weights"])
    return f"{candidate['method']}{density} w={weights}"


def select(paths: list[str], specialties: list[tuple[str, str]], out: str | Path, *,
           criterion: str = "worst", grid: list[dict] | None = None, base: str | None = None,
           max_new_tokens: int = 64, rows: str | None = None, batch_size: int = 16,
           device: str | None = None, console=None) -> dict:
    """Evaluate candidate merges on each specialty's held-out rows with its own spec (the spec's
    metric: its `correct` rule, or else the mean reward) and keep the best by the worst-case (or
    mean) specialty; writes the chosen adapter to ``out`` and every figure to
    ``out/kdsl_selection.json``."""
    import kdsl
    from kdsl.io.rows import load_dataset
    from kdsl.tools import evaluation

    if criterion not in ("worst", "mean"):
        raise KdslError(f"--select must be worst or mean, not {criterion}")
    experts = [read_expert(p) for p in paths]
    grid = grid or default_grid(experts)
    for candidate in grid:
        check_experts(experts, candidate["method"], candidate["weights"], candidate["density"])
    judges = []
    for spec_path, heldout in specialties:
        program = kdsl.load(spec_path)
        held = evaluation.select_rows(evaluation.as_rows(load_dataset(heldout)), rows)
        for line in evaluation.check_rows(program, held, heldout):
            if console is not None:
                console.print(f"{heldout}: {line} (scored as invalid)")
        judges.append((spec_path, program, held, evaluation.metric_name(program, None)))
    model, processing_class = load_experts(experts, base, device)
    names = [f"expert{i}" for i in range(len(experts))]
    results = []
    for index, candidate in enumerate(grid):
        name = f"candidate{index}"
        _seeded()  # as `merge` does, so the chosen candidate is the adapter written
        model.add_weighted_adapter(names, candidate["weights"], adapter_name=name,
                                   combination_type=candidate["method"], density=candidate["density"])
        model.set_adapter(name)
        scores = {}
        for spec_path, program, held, metric in judges:
            config = evaluation.EvalConfig(max_new_tokens=max_new_tokens, batch_size=batch_size,
                                           metric=metric)
            found = evaluation.evaluate(program, model, processing_class, held, config)
            scores[spec_path] = found.metric_value if metric else found.reward
        values = list(scores.values())
        chosen_by = min(values) if criterion == "worst" else sum(values) / len(values)
        results.append({**candidate, "label": _label(candidate), "scores": scores, "criterion": chosen_by})
        if console is not None:
            console.print(f"{_label(candidate)}: " + ", ".join(f"{Path(s).stem} {v:.3f}" for s, v in scores.items()))
        model.set_adapter(names[0])
        model.delete_adapter(name)
    best = max(range(len(results)), key=lambda i: results[i]["criterion"])  # the first of equals
    winner = results[best]
    # The base and the experts are loaded already: merge the winner from them (seeded as each
    # candidate was) instead of loading them again.
    write_merged(model, processing_class, experts, winner["method"], winner["weights"],
                 winner["density"], out, base)
    selection = {"criterion": criterion, "specialties": [s for s, _ in specialties],
                 "metrics": {s: m or "reward" for s, _, _, m in judges},
                 "candidates": results, "chosen": winner["label"]}
    (Path(out) / "kdsl_selection.json").write_text(json.dumps(selection, indent=2) + "\n", encoding="utf-8")
    return selection
