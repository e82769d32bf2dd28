"""Lists of boxes: `boxes` inputs, `as boxes` from text, box_count() and matched_boxes() for
detection rewards, against the reference interpreter and hand-computed cases."""

from __future__ import annotations

import random
import textwrap

import pytest
import torch

import kdsl
from kdsl.errors import KdslDataError, KdslError
from kdsl.runtime import text as tx
from tests.reference import Reference, greedy_matches

DETECTION = textwrap.dedent("""\
    spec detection version 1
    input {
      gold: boxes
    }
    output {
      answer: tag "answer"
      predicted: answer as boxes
    }
    let predicted_count = box_count(predicted)
    let gold_count = box_count(gold)
    let found = matched_boxes(predicted, gold, 0.5)
    let false_alarms = predicted_count - found
    let misses = gold_count - found
    let total = predicted_count + gold_count
    let f1 = if total == 0 then 1 else 2 * found / max(total, 1)
    level detection {
      rule answered: present(predicted)
      rule detection_f1: f1
      rule no_false_alarms: false_alarms == 0
      rule no_misses: misses == 0
    }
    """)


def test_to_boxes_reads_every_written_form():
    text = "ships at [0, 0, 10, 10], (20,20,30,30) and (40, 40),(50, 50); not [1, 2, 3]"
    assert tx.to_boxes([text], [(0, len(text))]) == [[[0, 0, 10, 10], [20, 20, 30, 30],
                                                      [40, 40, 50, 50]]]
    assert tx.to_boxes(["none"], [(0, 4)]) == [[]]
    assert tx.to_boxes(["x"], [None]) == [None]


def test_hand_computed_detection_scores():
    completions = [
        "<answer>[0,0,10,10], [20,20,30,30]</answer>",          # both found
        "<answer>no ships</answer>",                             # nothing to find, nothing said
        "no answer tag",                                         # no answer at all
        "<answer>(0,0),(10,10) (50,50,60,60) [21,21,31,31]</answer>",  # 2 of 3 found, 1 false alarm
        "<answer>[0,0,10,10][0,0,10,10]</answer>",               # one box twice: one match only
        "<answer>[0,0,10,10]</answer>",                          # IoU 0.25 with the gold box
    ]
    gold = [[[0, 0, 10, 10], [20, 20, 30, 30]], [], [[1, 1, 2, 2]],
            [[0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110]], [[0, 0, 10, 10]],
            [[0, 0, 5, 20]]]
    scores = kdsl.loads(DETECTION).score(completions, gold=gold)
    found = scores.values["found"].tolist()
    assert scores.valid["found"].tolist() == [True, True, False, True, True, True]
    assert [found[i] for i in (0, 1, 3, 4, 5)] == [2, 0, 2, 1, 0]
    assert [scores.values["false_alarms"][i].item() for i in (0, 3, 4, 5)] == [0, 1, 1, 1]
    assert [scores.values["misses"][i].item() for i in (0, 3, 4, 5)] == [0, 1, 0, 1]
    assert scores.rules["detection_f1"].tolist() == pytest.approx([1, 1, 0, 2 * 2 / 6, 2 / 3, 0])
    assert scores.rules["answered"].tolist() == [1, 1, 0, 1, 1, 1]


def _random_box(rng: random.Random) -> list[float]:
    x, y = rng.randint(0, 40), rng.randint(0, 40)
    return [x, y, x + rng.randint(0, 20), y + rng.randint(0, 20)]


def test_matched_boxes_agrees_with_the_reference_on_random_scenes():
    rng = random.Random(7)
    completions, gold = [], []
    for _ in range(300):
        truth = [_random_box(rng) for _ in range(rng.randint(0, 5))]
        guesses = [[v + rng.randint(-4, 4) for v in box] for box in truth if rng.random() < 0.7]
        guesses += [_random_box(rng) for _ in range(rng.randint(0, 3))]
        rng.shuffle(guesses)
        completions.append("<answer>" + ", ".join(str(b) for b in guesses) + "</answer>")
        gold.append(truth)
    scores = kdsl.loads(DETECTION).score(completions, gold=gold, dtype=torch.float64)
    expected = Reference(DETECTION).score_batch(completions, [{"gold": g} for g in gold])
    for i, ref in enumerate(expected):
        for name in ("found", "false_alarms", "misses", "f1"):
            assert scores.values[name][i].item() == pytest.approx(ref["values"][name]), (name, i)
    assert sum(scores.values["found"].tolist()) > 150  # the scenes really have matches (174)


def test_greedy_matching_takes_the_best_pair_first():
    # The prediction overlaps both gold boxes; the better pair wins and the other gold box is missed.
    assert greedy_matches([[0, 0, 10, 10]], [[0, 0, 10, 9], [0, 0, 10, 10]], 0.5) == 1
    # Two predictions on one gold box: one match, one false alarm.
    assert greedy_matches([[0, 0, 10, 10], [1, 1, 10, 10]], [[0, 0, 10, 10]], 0.5) == 1
    # The threshold is inclusive.
    assert greedy_matches([[0, 0, 10, 10]], [[0, 0, 10, 5]], 0.5) == 1


def test_boxes_columns_are_checked_with_row_and_column():
    program = kdsl.loads(DETECTION)
    with pytest.raises(KdslDataError, match=r"row 1.*`gold`"):
        program.score(["<answer></answer>"] * 2, gold=[[[0, 0, 1, 1]], [[0, 0, 1]]])
    problems: list = []
    from kdsl.runtime import execute

    execute.run(program.module, ["", ""], {"gold": [[[0, 0, 1, 1]], "ships"]}, problems=problems)
    assert problems and problems[0][:2] == (1, "gold")


@pytest.mark.parametrize(("body", "message"), [
    ("matched_boxes(gold, gold, 2) > 0", "matched_boxes() takes the IoU threshold as a number in (0, 1]"),
    ("box_count(x) > 0", "box_count() takes lists of boxes"),
    ("gold + 1 > 0", "`+` needs a number, not boxes"),
])
def test_checker_messages(body, message):
    spec = f"spec bad version 1\ninput {{\n  gold: boxes\n  x: float\n}}\nlevel l {{\n  rule r: {body}\n}}\n"
    with pytest.raises(KdslError) as err:
        kdsl.loads(spec, "bad.kd")
    assert message in str(err.value)


def test_matching_compiles_with_fullgraph():
    from compiled import eager_and_fullgraph

    completions = ["<answer>[0,0,10,10]</answer>", "<answer>[5,5,9,9] [0,0,2,2]</answer>"]
    eager, compiled = eager_and_fullgraph(kdsl.loads(DETECTION).module, completions,
                                          {"gold": [[[0, 0, 10, 10]], []]})
    assert torch.equal(compiled["reward"], eager["reward"])


def test_box_parsing_is_linear_on_hostile_text():
    from growth import growth

    program = kdsl.loads(DETECTION)
    for unit in ("(" + "1" * 9, "[1, ", "(1,1)", "[0,0,1,1] "):
        ratio = growth(lambda n, unit=unit: f"<answer>{unit * n}</answer>",
                       lambda text: program.score([text], gold=[[]]), 25_000)
        assert ratio < 24, unit  # eight times the text; a quadratic path would take 64 times


def test_a_hostile_box_list_reads_a_bounded_number_of_matches(monkeypatch):
    from kdsl.limits import MAX_BOXES
    from kdsl.runtime import text as tx

    read = 0

    class Counting:
        def __init__(self, pattern):
            self.pattern = pattern

        def finditer(self, text):
            nonlocal read
            for match in self.pattern.finditer(text):
                read += 1
                yield match

    monkeypatch.setattr(tx, "_BOX", Counting(tx._BOX))
    scores = kdsl.loads(DETECTION).score(["<answer>" + "(1,1)" * 200_000 + "</answer>"], gold=[[]])
    assert read == MAX_BOXES + 1  # then the list is invalid: too many boxes to be an answer
    assert scores.rules["answered"].tolist() == [0.0]


def test_present_of_a_box_needs_all_four_coordinates():
    spec = ("spec p version 1\ninput {\n  gold: box\n}\nlevel l {\n"
            "  rule has_box: present(gold)\n}\n")
    scores = kdsl.loads(spec).score(["", "", ""], gold=[[0, 0, 1, 1], None, [0, 0, float("nan"), 1]])
    assert scores.rules["has_box"].tolist() == [1.0, 0.0, 0.0]
    expected = Reference(spec).score_batch(["", "", ""], [{"gold": [0, 0, 1, 1]}, {},
                                                          {"gold": [0, 0, float("nan"), 1]}])
    assert [e["rules"]["has_box"] for e in expected] == [1.0, 0.0, 0.0]
