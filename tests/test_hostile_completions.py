"""Every shipped spec scores every string a policy could generate: megabyte completions, 100k
nested or unclosed tags, long runs, NUL bytes, lone surrogates, bidirectional marks, emoji,
numbers too large for a float, ``nan``, empty text. Each gets a finite reward, and no hostile row
changes the scores of the ordinary rows beside it. (How the time grows with the size is measured
in benchmarks/bench_hostile.py.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import kdsl

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000


def hostile_completions(size: int = MB) -> list[str]:
    return [
        "a" * size,
        "a" * size + "!",
        "<answer>" * (size // 8),
        "<think>" * (size // 7),
        "<a>" * 100_000 + "</a>" * 100_000,
        "<answer>" + "(1,1)" * (size // 5) + "</answer>",
        "<answer>" + "[1, " * (size // 4) + "</answer>",
        "1" * 10_000,
        "<answer>1e309</answer>",
        "<answer>nan</answer>",
        "<answer>" + "9" * 10_000 + "</answer>",
        "",
        "\x00" * 1000 + "<answer>\x00</answer>",
        "a\ud800b<answer>\udfff</answer>\ud83d",
        "\u202e<answer>\u2066Water\u2069</answer>\u202c",
        "\U0001F600" * 10_000 + "<think>\U0001F4A7</think><answer>\U0001F30A</answer>",
        "\\boxed{" * 100_000,
        "<think>" + "water NDVI " * (size // 11) + "</think><answer>Water</answer>",
    ]


def shipped_specs() -> list[Path]:
    specs = sorted((ROOT / "domain_specs").rglob("*.kd")) + sorted((ROOT / "examples").rglob("*.kd"))
    return [p for p in specs if "level " in p.read_text(encoding="utf-8")]


def ordinary_columns(module, n: int) -> dict:
    """Plain, valid values for every input of a program, one per row."""
    rng = np.random.default_rng(0)
    columns = {}
    for name, kind, _node, options in module.INPUTS:
        if kind in ("float", "int"):
            values = [1.0] * n
        elif kind == "bool":
            values = [True] * n
        elif kind == "enum":
            values = [module.ENUMS[options["enum"]][0]] * n
        elif kind == "str":
            values = ["$2$"] * n
        elif kind == "vector":
            values = [list(rng.uniform(0.05, 0.5, options["size"]))] * n
        elif kind == "box":
            values = [[0, 0, 10, 10]] * n
        elif kind == "boxes":
            values = [[[0, 0, 10, 10]]] * n
        else:
            values = [rng.uniform(0.05, 0.5, (options["size"], 4, 4))] * n
        columns[name] = values
    return columns


@pytest.fixture(scope="module")
def tokenizer():
    from tests.tiny import byte_level_tokenizer

    return byte_level_tokenizer()


@pytest.mark.parametrize("spec", shipped_specs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_spec_scores_hostile_completions(spec, tokenizer):
    program = kdsl.load(spec)
    ordinary = "<think>The reflectance is high in NIR, so NDVI is high: vegetation.</think>" \
               "<answer>Vegetation</answer>"
    hostile = hostile_completions()
    completions = [ordinary, *hostile, ordinary]
    columns = ordinary_columns(program.module, len(completions))
    with torch.no_grad():
        scores = program.score(completions, tokenizer=tokenizer, **columns)
        alone = program.score([ordinary], tokenizer=tokenizer,
                              **{k: v[:1] for k, v in columns.items()})
    assert scores.reward.isfinite().all(), scores.reward
    for key in ("reward", *(f"rule.{r}" for r in program.rule_names)):
        got = scores.reward if key == "reward" else scores.rules[key[5:]]
        want = alone.reward if key == "reward" else alone.rules[key[5:]]
        assert got[0].item() == pytest.approx(want[0].item()), key
        assert got[-1].item() == pytest.approx(want[0].item()), key
    for name, value in scores.values.items():
        assert not torch.isnan(value).any(), name


def test_a_lone_surrogate_does_not_fail_its_batch():
    spec = ('spec s version 1\noutput {\n  reply: tag "answer"\n  found: regex "(?P<n>[0-9]+)"\n'
            '  boxes_given: reply as boxes\n}\nlevel l {\n  rule has: present(found)\n'
            '  rule counted: match_count(completion, "[a-z]") >= 1\n'
            "  rule boxed: box_count(boxes_given) >= 0\n}\n")
    program = kdsl.loads(spec)
    scores = program.score(["a\ud800b 12", "x 3 <answer>[0,0,1,1]</answer>"])
    assert scores.rules["has"].tolist() == [1.0, 1.0]
    assert scores.rules["counted"].tolist() == [1.0, 1.0]
    # spans still point into the text as given: the surrogate stands for one character
    found = kdsl.loads(spec.replace("rule has: present(found)",
                                    "rule has: present(found) on found")).score(["a\ud800b 12"])
    assert found.spans["found"] == [(4, 6)]


def test_box_and_count_extraction_stay_bounded_on_hostile_text():
    from kdsl.limits import MAX_BOXES
    from kdsl.runtime import text as tx

    many = "(1,1)" * 200_000
    assert tx.to_boxes([many], [(0, len(many))]) == [None]  # more than MAX_BOXES: invalid
    few = "[0, 0, 1, 1] " * MAX_BOXES
    assert len(tx.to_boxes([few], [(0, len(few))])[0]) == MAX_BOXES
    text = "a" * 100_000
    assert tx.regex_count([text], [(0, len(text))], "a")[0] == [100_000.0]
    unicode_text = "é" * 1000
    assert tx.regex_count([unicode_text], [(0, 1000)], "x*")[0] == [1001.0]  # as Python's re
    assert math.isfinite(sum(tx.to_number(["9" * 400], [(0, 400)])[0]))


def test_similarity_reads_only_what_the_model_reads():
    import os

    from kdsl.runtime import semantic

    path = os.environ["KDSL_SIMILARITY_MODEL"]
    model = semantic.sentence_model(path, "cpu")
    words = np.random.default_rng(0).choice(["water", "vegetation", "the", "internationalization"],
                                            20_000)
    text = " ".join(words)
    assert len(semantic._head(text, semantic.READ_FACTOR * model.max_seq_length)) < len(text)
    values, valid = semantic.similarity([text], ["water body"], path, "cpu")
    embedded = model.encode([text, "water body"], convert_to_tensor=True)
    direct = torch.nn.functional.cosine_similarity(embedded[:1], embedded[1:]).item()
    assert valid == [True] and values[0] == pytest.approx(direct, abs=1e-6)
