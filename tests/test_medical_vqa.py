"""The medical VQA rewards of domain_specs/medical/vqa.kd.

- Closed and open answers on real questions of the easy-VQA package (its test split: 7,136 yes/no
  questions and 2,537 one-word open ones). easy-VQA is not medical (coloured shapes), but its
  questions and answers have the form of closed and open VQA; the matching rules do not care what
  the words mean. For open answers the spec's medical vocabulary (enum Term) is swapped for
  easy-VQA's eleven answers; every rule stays word for word as in vqa.kd.
- Multiple-choice credit and the correctness-weighted length reward on hand-computed cases.
- Nodule follow-up: the answer must be what medical/fleischner's own table gives; checked against
  the fleischner spec on a grid of every nodule type, count and risk over sizes 2-15 mm.

Reward of one completion: format 1 (gate) + correctness 2 + consistency 0.5 (1 where its rule
does not apply) + brevity 0.5.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from easy_vqa import get_answers, get_test_questions

import kdsl

ROOT = Path(__file__).resolve().parent.parent
VQA = ROOT / "domain_specs/medical/vqa.kd"
FLEISCHNER = ROOT / "domain_specs/medical/fleischner.kd"
TERM_BLOCK = re.compile(r"^enum Term \{\n.*?^\}\n", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def program():
    return kdsl.load(VQA)


def columns_for(program, n: int, **given) -> dict:
    """Every input of the spec, missing (None) unless given: a row of one kind leaves the columns
    of the other kinds empty, as a mixed dataset does."""
    columns = {name: [None] * n for name in program.input_names}
    for name, value in given.items():
        columns[name] = value if isinstance(value, list) else [value] * n
    return columns


def score(program, completions: list[str], **given):
    return program.score(completions, **columns_for(program, len(completions), **given))


# ---- easy-VQA: closed questions --------------------------------------------------------------

@pytest.fixture(scope="module")
def easy_vqa_questions():
    questions, answers, _images = get_test_questions()
    return list(zip(questions, answers))


def test_easy_vqa_has_closed_and_open_questions(easy_vqa_questions):
    closed = [a for _, a in easy_vqa_questions if a in ("yes", "no")]
    assert len(closed) > 7000 and len(easy_vqa_questions) - len(closed) > 2500


@pytest.mark.parametrize("form", ["{}", "{}.", "{C}", "**{U}**", "  {C}!  "])
def test_easy_vqa_closed_answers_match_in_every_surface_form(program, easy_vqa_questions, form):
    closed = [(q, a) for q, a in easy_vqa_questions if a in ("yes", "no")]
    right = [f"<answer>{form.format(a, C=a.capitalize(), U=a.upper())}</answer>" for _, a in closed]
    flipped = ["<answer>{}</answer>".format("no" if a == "yes" else "yes") for _, a in closed]
    gold = [a for _, a in closed]
    scores = score(program, right + flipped, kind="Closed", gold_yes_no=gold + gold)
    n = len(closed)
    truth = scores.rules["yes_no_matches"].numpy()
    assert truth[:n].min() == 1 and truth[n:].max() == 0
    assert scores.applies["yes_no_matches"].all() and not scores.applies["term_matches"].any()
    # Right and short: 1 + 2 + 0.5 + 0.5; wrong: the brevity half-point is lost too.
    np.testing.assert_allclose(scores.reward.numpy()[:n], 4.0)
    np.testing.assert_allclose(scores.reward.numpy()[n:], 1.5)


def test_a_closed_answer_with_a_reason_is_not_closed(program):
    scores = score(program, ["<answer>Yes, there is a circle</answer>", "<answer>yes</answer>"],
                   kind="Closed", gold_yes_no="Yes")
    assert scores.rules["yes_no_matches"].tolist() == [0.0, 1.0]


# ---- easy-VQA: open questions ------------------------------------------------------------------

def easy_vqa_spec_text() -> str:
    """vqa.kd with its Term vocabulary replaced by the eleven open answers of easy-VQA."""
    words = [a for a in get_answers() if a not in ("yes", "no")]
    members = "\n".join(f"  {w.capitalize()}" + (' ("grey")' if w == "gray" else "") for w in words)
    text = VQA.read_text(encoding="utf-8")
    assert len(TERM_BLOCK.findall(text)) == 1
    return TERM_BLOCK.sub(lambda _m: "enum Term {\n" + members + "\n}\n", text)


def test_the_easy_vqa_variant_changes_only_the_vocabulary():
    original = VQA.read_text(encoding="utf-8")
    variant = easy_vqa_spec_text()
    assert TERM_BLOCK.sub("", original) == TERM_BLOCK.sub("", variant)
    assert "  Teal\n" in variant and "  Pneumothorax\n" not in variant


@pytest.fixture(scope="module")
def easy_vqa_program():
    # Named beside vqa.kd, so its import of medical/fleischner resolves as the original's does.
    return kdsl.loads(easy_vqa_spec_text(), str(VQA.with_name("vqa_easy_vqa_vocabulary.kd")))


@pytest.mark.parametrize("form", ["{}", "The {}.", "a {U}", "  {C}  ", "**{}**", "the   {C}!"])
def test_easy_vqa_open_answers_match_in_every_surface_form(easy_vqa_program, easy_vqa_questions, form):
    open_questions = [(q, a) for q, a in easy_vqa_questions if a not in ("yes", "no")]
    words = sorted({a for _, a in open_questions})
    assert len(words) == 11
    gold = [a for _, a in open_questions]
    right = [f"<answer>{form.format(a, C=a.capitalize(), U=a.upper())}</answer>" for a in gold]
    # A wrong answer: the next word of the vocabulary, in the same surface form.
    wrong_words = [words[(words.index(a) + 1) % len(words)] for a in gold]
    wrong = [f"<answer>{form.format(w, C=w.capitalize(), U=w.upper())}</answer>" for w in wrong_words]
    scores = score(easy_vqa_program, right + wrong, kind="Open", gold_term=gold + gold)
    n = len(gold)
    truth = scores.rules["term_matches"].numpy()
    assert truth[:n].min() == 1 and truth[n:].max() == 0
    np.testing.assert_allclose(scores.reward.numpy()[:n], 4.0)
    np.testing.assert_allclose(scores.reward.numpy()[n:], 1.5)


def test_open_answers_outside_the_vocabulary_or_with_inner_words_do_not_match(easy_vqa_program):
    completions = ["<answer>a red triangle</answer>", "<answer>circular</answer>",
                   "<answer>grey</answer>", "<answer>An circle</answer>"]
    scores = score(easy_vqa_program, completions, kind="Open",
                   gold_term=["triangle", "circle", "gray", "circle"])
    # "a red triangle" keeps "red" after dropping the article; "circular" is not a member; the
    # synonym "grey" is gray; "an" is dropped whatever noun follows.
    assert scores.rules["term_matches"].tolist() == [0.0, 0.0, 1.0, 1.0]


# ---- multiple choice ---------------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "gold", "credit"), [
    ("B", "B", 1.0),
    ("(B)", "B", 1.0),
    ("B.", "B", 1.0),
    ("**B**", "B", 1.0),
    ("[E]", "E", 1.0),
    ("B) Pleural effusion", "B", 0.5),
    ("The answer is B", "B", 0.5),
    ("Answer: B, because the costophrenic angle is blunted", "B", 0.5),
    ("B. B explains the effusion", "B", 0.5),
    ("A or B", "B", 0.0),
    ("B/C", "B", 0.0),
    ("A consolidation, so B", "B", 0.0),   # the capital article counts as option A
    ("b", "B", 0.0),                       # letters are capitals
    ("C", "B", 0.0),
    ("Pleural effusion", "B", 0.0),
    ("", "B", 0.0),
])
def test_multiple_choice_credit(program, answer, gold, credit):
    scores = score(program, [f"<answer>{answer}</answer>"], kind="MultipleChoice", gold_letter=gold)
    assert scores.rules["choice_letter"].item() == pytest.approx(credit)
    # correctness 2 x credit, brevity 0.5 only when some credit was earned.
    assert scores.reward.item() == pytest.approx(1 + 2 * credit + 0.5 + (0.5 if credit else 0))


# ---- length counts only for right answers --------------------------------------------------------

def with_words(n: int, answer: str) -> str:
    """A completion of exactly n whitespace-separated words (the answer glued to the last)."""
    return "<think>" + " ".join(["word"] * n) + f"</think><answer>{answer}</answer>"


def test_length_reward_counts_only_for_right_answers(program):
    lengths = list(range(1, 200, 7))
    right = [with_words(n, "yes") for n in lengths]
    wrong = [with_words(n, "no") for n in lengths]
    scores = score(program, right + wrong, kind="Closed", gold_yes_no="Yes")
    brevity = scores.rules["shorter_when_correct"].numpy()
    by_hand = [min(1.0, max(0.0, (130 - n) / 100)) for n in lengths]
    np.testing.assert_allclose(brevity[:len(lengths)], by_hand, atol=1e-6)
    assert brevity[len(lengths):].max() == 0
    reward = scores.reward.numpy()
    assert (np.diff(reward[:len(lengths)]) <= 1e-6).all()          # shorter never earns less
    assert reward[:len(lengths)].min() > reward[len(lengths):].max()  # right always beats wrong


def test_length_reward_for_each_kind_of_question(program):
    completions = [with_words(80, "Pneumothorax"), with_words(80, "C) Pneumothorax"),
                   with_words(80, "No routine follow-up"), with_words(80, "Atelectasis")]
    scores = program.score(completions, **{
        **columns_for(program, 4),
        "kind": ["Open", "MultipleChoice", "NoduleFollowUp", "Open"],
        "gold_term": ["Pneumothorax", None, None, "Pneumothorax"],
        "gold_letter": [None, "C", None, None],
        "nodule_type": [None, None, "Solid", None],
        "nodule_count": [None, None, "Single", None],
        "long_axis_mm": [None, None, 5, None],
        "short_axis_mm": [None, None, 4, None],
        "risk": [None, None, "Low", None],
    })
    # 80, 81 and 82 words (the answer's own words after the first count too): (130 - n) / 100
    # when right (a half-credit letter counts as right), nothing for the wrong open answer.
    np.testing.assert_allclose(scores.rules["shorter_when_correct"].numpy(), [0.5, 0.49, 0.48, 0.0],
                               atol=1e-6)


# ---- consistency with medical/fleischner's table ---------------------------------------------------

def nodule_grid():
    rows = []
    for nodule_type in ("Solid", "GroundGlass", "PartSolid"):
        for count in ("Single", "Multiple"):
            for risk in ("Low", "High"):
                for long_axis in np.arange(2.0, 15.5, 0.5):
                    for short_axis in (long_axis, long_axis - 1.0, long_axis - 1.5):
                        rows.append(dict(nodule_type=nodule_type, nodule_count=count, risk=risk,
                                         long_axis_mm=float(long_axis),
                                         short_axis_mm=float(max(short_axis, 1.0))))
    return rows


def test_follow_up_matches_the_fleischner_spec_on_every_case(program):
    fleischner = kdsl.load(FLEISCHNER)
    grid = nodule_grid()
    inputs = {k: [row[k] for row in grid] for k in grid[0]}
    table = fleischner.score([""] * len(grid), **inputs)
    members = fleischner.ir.enums["FollowUp"].members
    synonyms = fleischner.ir.enums["FollowUp"].synonyms
    recommended = [members[i] for i in table.values["recommended"].tolist()]
    assert len(set(recommended)) == len(members)  # the grid reaches every recommendation
    # The first published wording of the recommendation, and the wording of the next member.
    right = [f"<answer>{synonyms[members.index(m)][0]}</answer>" for m in recommended]
    wrong = [f"<answer>{synonyms[(members.index(m) + 1) % len(members)][0]}</answer>"
             for m in recommended]
    n = len(grid)
    scores = program.score(right + wrong, **{
        **columns_for(program, 2 * n), "kind": ["NoduleFollowUp"] * (2 * n),
        **{k: v + v for k, v in inputs.items()}})
    truth = scores.rules["follow_up_matches_fleischner"].numpy()
    assert truth[:n].min() == 1 and truth[n:].max() == 0
    np.testing.assert_array_equal(scores.values["nodule_size_mm"].numpy()[:n],
                                  table.values["size_mm"].numpy())


def test_follow_up_consistency_with_the_size_the_answer_reads(program):
    # Solid single nodule, 7 x 5 mm (6 mm), low risk: CT at 6-12 months, then consider 18-24.
    nodule = dict(kind="NoduleFollowUp", nodule_type="Solid", nodule_count="Single",
                  long_axis_mm=7, short_axis_mm=5, risk="Low")
    completions = [
        "<size>6 mm</size><answer>CT at 6-12 months, then consider CT at 18-24 months</answer>",
        "<size>4 mm</size><answer>No routine follow-up</answer>",         # misread, consistent
        "<size>9 mm</size><answer>No routine follow-up</answer>",         # misread, inconsistent
        "<size>5.5 mm</size><answer>No routine follow-up</answer>",       # 5.5 rounds to 6
        "<answer>CT at 6-12 months, then consider CT at 18-24 months</answer>",
    ]
    scores = score(program, completions, **nodule)
    assert scores.rules["follow_up_matches_fleischner"].tolist() == [1, 0, 0, 0, 1]
    consistent = scores.rules["follow_up_follows_stated_size"]
    applies = scores.applies["follow_up_follows_stated_size"]
    assert applies.tolist() == [True, True, True, True, False]
    assert consistent[:4].tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(scores.reward.numpy(), [4, 1.5, 1, 1, 4])
