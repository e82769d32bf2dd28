"""Text rules: kdsl against the two ways people write the same rewards in Python today.

4,096 generated completions of about 2 KB (seeded; a mix of well-formed and malformed answers) are
scored by a generated spec of 50 rules over 5 extractors in 3 levels (the first a gate), and by
(a) 50 TRL-style reward functions, one per rule, each parsing the completion itself, and
(b) one hand-written function that parses each completion once and loops over the 50 rules.
All three must agree on every reward before anything is timed.

    python benchmarks/bench_text.py [--n 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import re

import torch
from timing import median_time, results_path

import kdsl
from kdsl.runtime import execute

CLASSES = ["Forest", "River", "Highway", "Industrial", "Pasture", "SeaLake"]
TERMS = ["ndvi", "water", "canopy", "asphalt"]
WORDS = ("the patch shows a bright response in the near infrared band while red stays low which "
         "points at dense vegetation but some pixels look like bare soil or roofs").split()


# ---- data (generated) -------------------------------------------------------------------------------
def make_batch(n: int, seed: int = 0) -> tuple[list[str], list[str], list[float]]:
    rng = random.Random(seed)
    completions, labels, golds = [], [], []
    for _ in range(n):
        words = [rng.choice(WORDS + TERMS) for _ in range(385)]
        think = " ".join(words)
        label = rng.choice(CLASSES)
        gold = float(rng.randint(0, 100))
        claimed = label if rng.random() < 0.5 else rng.choice(CLASSES)
        value = gold + rng.choice([0, 0, 1, 5, 20])
        answer = f"{claimed.lower() if rng.random() < 0.3 else claimed}, estimated {value:g}"
        kind = rng.random()
        if kind < 0.75:
            text = f"<think>{think}</think><answer>{answer}</answer>"
        elif kind < 0.85:
            text = f"<answer>{answer}</answer>"  # no reasoning
        elif kind < 0.93:
            text = f"<think>{think}</think>{answer}"  # no answer tag
        else:
            text = f"<think>{think}</think><answer>{answer}</answer><answer>{claimed}</answer>"
        completions.append(text)
        labels.append(label)
        golds.append(gold)
    return completions, labels, golds


# ---- the 50 rules, as data from which the spec and both baselines are written ---------------------------
def make_rules(seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rules = [
        {"level": "format", "kind": "present", "what": "think"},
        {"level": "format", "kind": "present", "what": "reply"},
        {"level": "format", "kind": "known"},
        {"level": "format", "kind": "has_value"},
        {"level": "format", "kind": "cites", "k": 1},
    ]
    for i in range(15):
        rules.append({"level": "accuracy", "kind": "close", "k": float(i % 5 + i // 5 * 3)})
    for _ in range(30):
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
    lines = ["spec bench_text version 1", "input {",
             f"  label: enum Label {{ {', '.join(CLASSES)} }}", "  gold: float", "}",
             "output {", '  think: tag "think"', '  reply: tag "answer"', "  answer: reply as Label",
             "  value: number(reply)",
             f"  cites: mention_count(think, {' | '.join(repr(t).replace(chr(39), chr(34)) for t in TERMS)})",
             "}"]
    bodies = {
        "present": lambda r: f"present({r['what']})",
        "known": lambda r: "present(answer)",
        "has_value": lambda r: "present(value)",
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


WEIGHTS = {"format": 1.0, "accuracy": 2.0, "knowledge": 0.5}
THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?|[-+]?\.\d+(?:[eE][-+]?\d+)?%?")
TERMS_RE = re.compile(r"(?:" + "|".join(rf"\b{re.escape(t)}\b" for t in sorted(TERMS, key=len, reverse=True)) + ")",
                      re.IGNORECASE)
LOOKUP = {c.lower(): c for c in CLASSES}
_EDGE = " \t\r\n\"'`*_.,;:!?()[]{}<>"


def _enum(text: str | None):
    if text is None:
        return None
    return LOOKUP.get(" ".join(text.strip(_EDGE).casefold().split()).strip(_EDGE))


def _number(text: str | None):
    if text is None:
        return None
    m = NUMBER.search(text)
    if m is None:
        return None
    token = m.group()
    return float(token.rstrip("%").replace(",", ""))


def parse(completion: str) -> dict:
    think = THINK.search(completion)
    reply = ANSWER.search(completion)
    think_text = think.group(1) if think else None
    reply_text = reply.group(1) if reply else None
    return {"think": think_text, "reply": reply_text, "answer": _enum(reply_text),
            "value": _number(reply_text),
            "cites": None if think_text is None else len(TERMS_RE.findall(think_text))}


def truth(rule: dict, p: dict, label: str, gold: float) -> tuple[float, bool]:
    """(truth, applies) of one rule on a parsed completion, with kdsl's semantics."""
    kind = rule["kind"]
    if kind == "present":
        return float(p[rule["what"]] is not None), True
    if kind == "known":
        return float(p["answer"] is not None), True
    if kind == "has_value":
        return float(p["value"] is not None), True
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


def combine(per_rule: list[list[tuple[float, bool]]], rules: list[dict]) -> list[float]:
    rewards = []
    for sample in zip(*per_rule):
        reward, gate_open = 0.0, 1.0
        for level in ("format", "accuracy", "knowledge"):
            num = den = 0.0
            for (t, applies), rule in zip(sample, rules):
                if rule["level"] == level and applies:
                    num += t
                    den += 1.0
            score = num / den if den else 1.0
            reward += WEIGHTS[level] * score * gate_open
            if level == "format":
                gate_open = 1.0 if score >= 1 - 1e-6 else 0.0
        rewards.append(reward)
    return rewards


def trl_style(completions, labels, golds, rules) -> list[float]:
    """(a): one reward function per rule, each parsing every completion itself."""
    def make(rule):
        def reward_func(completions, label, gold, **kwargs):
            return [truth(rule, parse(c), lb, g) for c, lb, g in zip(completions, label, gold)]
        reward_func.__name__ = rule["name"]
        return reward_func
    funcs = [make(r) for r in rules]
    per_rule = [f(completions, label=labels, gold=golds) for f in funcs]
    return combine(per_rule, rules)


def one_pass(completions, labels, golds, rules) -> list[float]:
    """(b): parse each completion once, then evaluate all rules in a loop."""
    rewards = []
    for c, label, gold in zip(completions, labels, golds):
        p = parse(c)
        reward, gate_open = 0.0, 1.0
        sums = {"format": [0.0, 0.0], "accuracy": [0.0, 0.0], "knowledge": [0.0, 0.0]}
        for rule in rules:
            t, applies = truth(rule, p, label, gold)
            if applies:
                s = sums[rule["level"]]
                s[0] += t
                s[1] += 1.0
        for level in ("format", "accuracy", "knowledge"):
            num, den = sums[level]
            score = num / den if den else 1.0
            reward += WEIGHTS[level] * score * gate_open
            if level == "format":
                gate_open = 1.0 if score >= 1 - 1e-6 else 0.0
        rewards.append(reward)
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="where the tensor phase runs (the text "
                        "phase is Python on the host whatever the device)")
    parser.add_argument("--skip-trl-style", action="store_true", help="leave out baseline (a), "
                        "which takes seconds a run (for a quick check of kdsl on a device)")
    args = parser.parse_args()
    torch.set_num_threads(2)

    completions, labels, golds = make_batch(args.n)
    rules = make_rules()
    program = kdsl.loads(make_spec(rules), "bench_text.kd")

    ours = program.score(completions, label=labels, gold=golds, device=args.device).reward.tolist()
    b = one_pass(completions, labels, golds, rules)
    a = b if args.skip_trl_style else trl_style(completions, labels, golds, rules)
    for i, (x, y, z) in enumerate(zip(ours, a, b)):
        assert abs(x - y) < 1e-5 and abs(x - z) < 1e-5, f"completion {i}: kdsl {x}, (a) {y}, (b) {z}"

    t_a = None if args.skip_trl_style else median_time(
        lambda: trl_style(completions, labels, golds, rules), max(1, args.repeats // 2))
    t_b = median_time(lambda: one_pass(completions, labels, golds, rules), args.repeats)
    t_kdsl = median_time(lambda: program.score(completions, label=labels, gold=golds,
                                               device=args.device), args.repeats)

    module = program.module
    ref = torch.zeros(len(completions), device=args.device)
    interner = execute.col.Interner(module.STRINGS)

    def text_phase():
        env = execute.prepare_columns(module, {"label": labels, "gold": golds}, len(completions), ref,
                                      interner)
        module.extract(completions, env, execute.Extraction(completions, ref, interner))
        return env

    env = text_phase()
    t_text = median_time(text_phase, args.repeats)
    t_tensor = median_time(lambda: module.evaluate(**env), args.repeats)

    size = sum(len(c) for c in completions) / len(completions)
    results = {
        "completions": len(completions), "mean_chars": round(size), "rules": len(rules),
        "extractors": 5, "seconds": {"trl_style_50_functions": t_a, "hand_written_one_pass": t_b,
                                     "kdsl": t_kdsl, "kdsl_columns_and_text_phase": t_text,
                                     "kdsl_tensor_phase": t_tensor},
        "speedup_vs_trl_style": None if t_a is None else t_a / t_kdsl,
        "speedup_vs_one_pass": t_b / t_kdsl,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    print(f"{len(completions)} completions of ~{size:.0f} chars, {len(rules)} rules over 5 extractors")
    print(f"{'scorer':<40}{'seconds':>10}{'completions/s':>16}{'kdsl speed-up':>16}")
    for name, t in (("(a) 50 TRL-style reward functions", t_a), ("(b) hand-written one-pass loop", t_b),
                    ("kdsl (end to end)", t_kdsl)):
        if t is None:
            continue
        print(f"{name:<40}{t:>10.4f}{len(completions) / t:>16,.0f}{t / t_kdsl:>15.1f}x")
    print(f"  kdsl columns + text phase {t_text:.4f} s, tensor phase {t_tensor:.4f} s")
    results["device"] = args.device
    out = results_path("bench_text", args.device)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
