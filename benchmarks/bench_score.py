"""Offline scoring of a file: `kdsl score SPEC --data FILE --out OUT.jsonl` against a hand-written
one-pass Python scorer that reads the same file and writes the same output.

The data is synthetic: N rows (default 200,000) of generated completions of about 2 KB (seeded; a
mix of well-formed and malformed answers, as in bench_text.py) with a `label` and a `gold` column,
written to a jsonl file of about 2 KB a row. The spec is generated too: 20 rules over 6
extractors (three tags, an enum answer, a number, a term count) in 3 levels, the first a gate.

kdsl runs through `kdsl.cli.main` in this process (file reading, parsing, scoring and writing
included), with its default workers (one process per core for a file this size) and with
`--workers 1`, and as a `kdsl` subprocess (process start to exit, so torch's import and the
spec's compilation are in it). The hand-written scorer parses each completion once with `re`, evaluates
the 20 rules in a loop and writes each row with `json.dumps`. Both outputs must agree on every
reward before anything is timed.

    python benchmarks/bench_score.py [--n 200000] [--repeats 3] [--workers 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from timing import median_time

from kdsl import cli

CLASSES = ["Forest", "River", "Highway", "Industrial", "Pasture", "SeaLake"]
TERMS = ["ndvi", "water", "canopy", "asphalt"]
WORDS = ("the patch shows a bright response in the near infrared band while red stays low which "
         "points at dense vegetation but some pixels look like bare soil or roofs").split()
WEIGHTS = {"format": 1.0, "accuracy": 2.0, "knowledge": 0.5}
LEVELS = ("format", "accuracy", "knowledge")


# ---- data and spec (generated) ------------------------------------------------------------------------
def write_data(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocabulary = WORDS + TERMS
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            think = " ".join(rng.choices(vocabulary, k=385))
            label = rng.choice(CLASSES)
            gold = float(rng.randint(0, 100))
            claimed = label if rng.random() < 0.5 else rng.choice(CLASSES)
            value = gold + rng.choice([0, 0, 1, 5, 20])
            answer = claimed.lower() if rng.random() < 0.3 else claimed
            estimate = f"<estimate>{value:g}</estimate>"
            kind = rng.random()
            if kind < 0.75:
                text = f"<think>{think}</think><answer>{answer}</answer>{estimate}"
            elif kind < 0.85:
                text = f"<answer>{answer}</answer>{estimate}"  # no reasoning
            elif kind < 0.93:
                text = f"<think>{think}</think>{answer} {estimate}"  # no answer tag
            else:
                text = f"<think>{think}</think><answer>{answer}</answer><answer>?</answer>{estimate}"
            f.write(json.dumps({"completion": text, "label": label, "gold": gold}) + "\n")


def make_rules(seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rules = [
        {"level": "format", "kind": "present", "what": "think"},
        {"level": "format", "kind": "present", "what": "reply"},
        {"level": "format", "kind": "present", "what": "answer"},
        {"level": "format", "kind": "present", "what": "value"},
        {"level": "format", "kind": "cites", "k": 1},
    ]
    rules += [{"level": "accuracy", "kind": "close", "k": float(k)} for k in (0, 1, 2, 5, 10)]
    for _ in range(10):
        cls = rng.choice(CLASSES)
        if rng.random() < 0.5:
            rules.append({"level": "knowledge", "kind": "when_cites", "cls": cls, "k": rng.randint(1, 40)})
        else:
            rules.append({"level": "knowledge", "kind": "when_value", "cls": cls,
                          "t": float(rng.randint(0, 100))})
    for i, rule in enumerate(rules):
        rule["name"] = f"r{i:02d}"
    return rules


def make_spec(rules: list[dict]) -> str:
    terms = " | ".join(f'"{t}"' for t in TERMS)
    lines = ["spec bench_score version 1", "input {",
             f"  label: enum Label {{ {', '.join(CLASSES)} }}", "  gold: float", "}",
             "output {", '  think: tag "think"', '  reply: tag "answer"', "  answer: reply as Label",
             '  value: number(tag "estimate")', f"  cites: mention_count(think, {terms})", "}"]
    bodies = {
        "present": lambda r: f"present({r['what']})",
        "cites": lambda r: f"cites >= {r['k']}",
        "close": lambda r: f"answer == label and value >= gold - {r['k']:g} and value <= gold + {r['k']:g}",
        "when_cites": lambda r: f"when answer == {r['cls']}: cites >= {r['k']}",
        "when_value": lambda r: f"when answer == {r['cls']}: value > {r['t']:g}",
    }
    for level, header in (("format", "level format gate {"), ("accuracy", "level accuracy weight 2 {"),
                          ("knowledge", "level knowledge weight 0.5 {")):
        lines.append(header)
        lines += [f"  rule {r['name']}: {bodies[r['kind']](r)}" for r in rules if r["level"] == level]
        lines.append("}")
    return "\n".join(lines) + "\n"


# ---- the hand-written scorer -----------------------------------------------------------------------
THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
ESTIMATE = re.compile(r"<estimate>(.*?)</estimate>", re.DOTALL)
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?|[-+]?\.\d+(?:[eE][-+]?\d+)?%?")
TERMS_RE = re.compile("(?:" + "|".join(rf"\b{re.escape(t)}\b" for t in sorted(TERMS, key=len, reverse=True))
                      + ")", re.IGNORECASE)
LOOKUP = {c.lower(): c for c in CLASSES}
EDGE = " \t\r\n\"'`*_.,;:!?()[]{}<>"


def parse(completion: str) -> dict:
    think = THINK.search(completion)
    reply = ANSWER.search(completion)
    estimate = ESTIMATE.search(completion)
    think_text = think.group(1) if think else None
    reply_text = reply.group(1) if reply else None
    answer = value = None
    if reply_text is not None:
        answer = LOOKUP.get(" ".join(reply_text.strip(EDGE).casefold().split()).strip(EDGE))
    if estimate is not None:
        number = NUMBER.search(estimate.group(1))
        if number is not None:
            value = float(number.group().rstrip("%").replace(",", ""))
    return {"think": think_text, "reply": reply_text, "answer": answer, "value": value,
            "cites": None if think_text is None else len(TERMS_RE.findall(think_text))}


def truth(rule: dict, p: dict, label: str, gold: float) -> tuple[float, bool]:
    """(truth, applies) of one rule on a parsed completion, with kdsl's semantics."""
    kind = rule["kind"]
    if kind == "present":
        return float(p[rule["what"]] is not None), True
    if kind == "cites":
        return float(p["cites"] is not None and p["cites"] >= rule["k"]), True
    if kind == "close":
        v, a = p["value"], p["answer"]
        return float(a is not None and a == label and v is not None
                     and gold - rule["k"] <= v <= gold + rule["k"]), True
    applies = p["answer"] == rule["cls"]
    if kind == "when_cites":
        return float(p["cites"] is not None and p["cites"] >= rule["k"]), applies
    return float(p["value"] is not None and p["value"] > rule["t"]), applies


def hand_written(data: Path, out: Path, rules: list[dict]) -> None:
    with open(data, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as w:
        for number, line in enumerate(f):
            row = json.loads(line)
            p = parse(row["completion"])
            sums = {level: [0.0, 0.0] for level in LEVELS}
            values = {}
            for rule in rules:
                t, applies = truth(rule, p, row["label"], row["gold"])
                values[rule["name"]] = t if applies else None
                if applies:
                    s = sums[rule["level"]]
                    s[0] += t
                    s[1] += 1.0
            reward, gate_open, levels = 0.0, 1.0, {}
            for level in LEVELS:
                num, den = sums[level]
                score = (num / den if den else 1.0) * gate_open
                levels[level] = round(score, 6)
                reward += WEIGHTS[level] * score
                if level == "format":
                    gate_open = 1.0 if score >= 1 - 1e-6 else 0.0
            w.write(json.dumps({"row": number, "line": number + 1, "reward": round(reward, 6),
                                "levels": levels, "rules": values}) + "\n")


# ---- timing ---------------------------------------------------------------------------------------
def rewards(path: Path) -> list[float]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["reward"] for line in f]


def kdsl_in_process(spec: Path, data: Path, out: Path, workers: int) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cli.main(["score", str(spec), "--data", str(data), "--out", str(out), "--workers", str(workers)],
                    cli.Console(stdout, stderr))
    assert code == 0, stderr.getvalue()


def kdsl_subprocess(spec: Path, data: Path, out: Path, workers: int) -> None:
    kdsl = Path(sys.executable).with_name("kdsl")
    command = [str(kdsl)] if kdsl.exists() else [sys.executable, "-m", "kdsl.cli"]
    result = subprocess.run(command + ["score", str(spec), "--data", str(data), "--out", str(out),
                                       "--workers", str(workers)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="kdsl score --workers (0: automatic)")
    parser.add_argument("--keep", metavar="DIR", help="write (and reuse) the data file here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / f"bench_score_{args.n}.jsonl"
        if not data.exists():
            print(f"writing {args.n:,} generated rows to {data} ...")
            write_data(data, args.n)
        rules = make_rules()
        spec = folder / "bench_score.kd"
        spec.write_text(make_spec(rules), encoding="utf-8")
        ours, theirs = Path(scratch) / "kdsl.jsonl", Path(scratch) / "hand.jsonl"

        kdsl_in_process(spec, data, ours, args.workers)
        hand_written(data, theirs, rules)
        a, b = rewards(ours), rewards(theirs)
        assert len(a) == len(b) == args.n, (len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            assert abs(x - y) < 1e-5, f"row {i}: kdsl {x}, hand-written {y}"

        def timed(fn):  # every run reads and writes whole files: no warm-up run
            return median_time(fn, args.repeats, warm_up=False)

        t_hand = timed(lambda: hand_written(data, theirs, rules))
        t_kdsl = timed(lambda: kdsl_in_process(spec, data, ours, args.workers))
        t_one = timed(lambda: kdsl_in_process(spec, data, ours, 1))
        t_process = timed(lambda: kdsl_subprocess(spec, data, ours, args.workers))
        size = data.stat().st_size

    from kdsl.tools.scoring import available_cores

    rows = args.n
    results = {
        "rows": rows, "mb": round(size / 2**20, 1), "bytes_per_row": round(size / rows),
        "rules": len(rules), "extractors": 6, "cores": available_cores(),
        "workers": args.workers or "automatic",
        "seconds": {"hand_written_one_pass": t_hand, "kdsl_score_in_process": t_kdsl,
                    "kdsl_score_in_process_one_worker": t_one, "kdsl_score_subprocess": t_process},
        "rows_per_second": {"hand_written_one_pass": rows / t_hand,
                            "kdsl_score_in_process": rows / t_kdsl,
                            "kdsl_score_in_process_one_worker": rows / t_one,
                            "kdsl_score_subprocess": rows / t_process},
        "torch": torch.__version__, "python": sys.version.split()[0],
    }
    print(f"{rows:,} rows, {size / 2**20:.0f} MB ({size / rows:,.0f} bytes a row), {len(rules)} rules "
          f"over 6 extractors, {available_cores()} cores")
    print(f"{'scorer (jsonl in, jsonl out)':<44}{'seconds':>10}{'rows/s':>12}{'vs hand-written':>17}")
    for name, t in (("hand-written one-pass Python", t_hand),
                    ("kdsl score, in-process (kdsl.cli.main)", t_kdsl),
                    ("kdsl score --workers 1, in-process", t_one),
                    ("kdsl score, subprocess (start to exit)", t_process)):
        print(f"{name:<44}{t:>10.2f}{rows / t:>12,.0f}{t_hand / t:>16.1f}x")
    out = Path(__file__).parent / "results" / "bench_score.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
