"""How often the land-cover knowledge of domain_specs/remote_sensing/landcover.kd agrees with the
labels of the 120 Landsat 8 surface-reflectance samples that ship with spyndex.

    python scripts/landcover_agreement.py            # markdown tables on stdout
    python scripts/landcover_agreement.py --float32  # score in float32, as training does

Each sample is scored by the spec with its label as the model's answer
(``<answer>Urban</answer>``), so two things are measured:

- **key = label**: the class the indices imply (``key.landcover``, the spec's ``implied``) is the
  labelled class (BuiltUp for "Urban");
- **label passes**: every applicable rule of the ``knowledge`` level holds for the labelled
  class, i.e. the spec's knowledge never penalises the right answer on this sample;
- **wrong answers caught**: of the two other labels given as the answer, how many fail some
  knowledge rule (the knowledge level is below 1).

The confusion table counts the key's class against the label. All numbers come from the spec's
own scores (``Scores.values["implied"]`` and ``Scores.levels["knowledge"]``);
tests/test_remote_sensing_specs.py recomputes them independently with numpy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import remote_sensing_data as rs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "domain_specs" / "remote_sensing" / "landcover.kd"


def agreement(dtype: torch.dtype = torch.float64) -> dict:
    """Per-sample results and the counts of the tables.

    Returns ``labels``, ``implied`` (the key's class of each sample), ``passes`` (whether the
    label passes every knowledge rule), ``caught`` ((sample, other label) -> whether that wrong
    answer fails a knowledge rule), ``by_label`` (label -> samples, key_agrees, passes, wrong,
    caught) and
    ``confusion`` (key class -> label -> count, every key class and label listed)."""
    import kdsl

    program = kdsl.load(SPEC)
    members = program.ir.inputs["label"].type.enum.members
    sr, labels = rs.landsat_samples()
    scores = program.score([f"<answer>{label}</answer>" for label in labels], label=labels, sr=sr,
                           dtype=dtype)
    if not bool(scores.valid["implied"].all()):
        raise RuntimeError("the key gives no class for some sample")
    implied = [members[int(i)] for i in scores.values["implied"]]
    passes = [bool(v >= 1 - 1e-6) for v in scores.levels["knowledge"]]
    # Every sample once more with each of the two other labels as the answer.
    wrong = [(i, other) for i, label in enumerate(labels) for other in rs.LABELS if other != label]
    wrong_scores = program.score([f"<answer>{other}</answer>" for _, other in wrong],
                                 label=[labels[i] for i, _ in wrong], sr=sr[[i for i, _ in wrong]],
                                 dtype=dtype)
    caught = [bool(v < 1 - 1e-6) for v in wrong_scores.levels["knowledge"]]
    by_label = {}
    for label in rs.LABELS:
        rows = [i for i, x in enumerate(labels) if x == label]
        by_label[label] = {
            "samples": len(rows),
            "key_agrees": sum(implied[i] == rs.LABEL_CLASS[label] for i in rows),
            "passes": sum(passes[i] for i in rows),
            "wrong": sum(1 for (i, _) in wrong if labels[i] == label),
            "caught": sum(c for (i, _), c in zip(wrong, caught) if labels[i] == label),
        }
    confusion = {cls: {label: sum(1 for i, x in enumerate(labels) if x == label and implied[i] == cls)
                       for label in rs.LABELS} for cls in members}
    return {"labels": labels, "implied": implied, "passes": passes,
            "caught": dict(zip(wrong, caught)), "by_label": by_label,
            "confusion": confusion, "dtype": str(dtype).replace("torch.", "")}


def _pct(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "-"


def render(result: dict) -> str:
    by_label = result["by_label"]
    total = {key: sum(v[key] for v in by_label.values())
             for key in ("samples", "key_agrees", "passes", "wrong", "caught")}
    lines = [f"Land-cover knowledge against the labels of the spyndex Landsat 8 samples "
             f"(domain_specs/remote_sensing/landcover.kd, scored in {result['dtype']})", "",
             "| label | samples | key class = label | % | label passes the knowledge rules | % "
             "| wrong answers caught | % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, row in [*by_label.items(), ("all", total)]:
        name = f"**{label}**" if label == "all" else label
        lines.append(f"| {name} | {row['samples']} | {row['key_agrees']} | "
                     f"{_pct(row['key_agrees'], row['samples'])} | {row['passes']} | "
                     f"{_pct(row['passes'], row['samples'])} | {row['caught']} of {row['wrong']} | "
                     f"{_pct(row['caught'], row['wrong'])} |")
    lines += ["", "Key class (rows) against label (columns):", "",
              "| key class | " + " | ".join(rs.LABELS) + " | total |",
              "|---|" + "---:|" * (len(rs.LABELS) + 1)]
    for cls, counts in result["confusion"].items():
        lines.append(f"| {cls} | " + " | ".join(str(counts[label]) for label in rs.LABELS)
                     + f" | {sum(counts.values())} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--float32", action="store_true", help="score in float32 (default float64)")
    args = parser.parse_args(argv)
    result = agreement(torch.float32 if args.float32 else torch.float64)
    sys.stdout.write(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
