"""domain_specs/common/r1.kd against open-r1's reward functions.

The references below are written for this test from the definitions in huggingface/open-r1,
``src/open_r1/rewards.py``: ``accuracy_reward``, ``format_reward``, ``tag_count_reward``,
``reasoning_steps_reward``, ``len_reward``, ``get_cosine_scaled_reward``,
``get_repetition_penalty_reward`` and ``get_soft_overlong_punishment``. They use Python's ``re``
and math-verify directly, never kdsl's text functions.

A corpus of completions (written by hand, plus seeded variants of them) is scored in batches by
the spec, in float64, and every let must equal its reference to 1e-6: the exact open-r1 value,
including None (an invalid let) where open-r1 returns None. The rescaled levels, the reward, the
GRPO advantages and the corrected length rewards are checked against the same references.
"""

from __future__ import annotations

import logging
import math
import random
import re
from functools import cache
from pathlib import Path

import pytest
import torch
from latex2sympy2_extended import NormalizationConfig
from math_verify import LatexExtractionConfig, parse, verify

import kdsl

SPEC = Path(__file__).resolve().parents[1] / "domain_specs" / "common" / "r1.kd"
TOLERANCE = 1e-6

# math-verify logs a deprecation warning for `equations=True`, which open-r1 still passes.
logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)


# ---- references: open-r1's definitions ----------------------------------------------------------

def _answer_extraction(boxed):
    """How open-r1 reads a completion's answer: proper LaTeX, \\boxed{} first, no bare text."""
    normalization = NormalizationConfig(nits=False, malformed_operators=False, basic_latex=True,
                                        equations=True, boxed=boxed, units=True)
    return [LatexExtractionConfig(normalization_config=normalization, boxed_match_priority=0,
                                  try_extract_without_anchor=False)]


@cache
def ref_accuracy(content: str, solution: str) -> float | None:
    """accuracy_reward: None when the gold does not parse or verify raises."""
    gold = parse(solution, extraction_mode="first_match")
    if len(gold) == 0:
        return None
    answer = parse(content, extraction_config=_answer_extraction("all"), extraction_mode="first_match")
    try:
        return float(verify(gold, answer))
    except Exception:  # noqa: BLE001 - open-r1 returns None for any failure of verify
        return None


@cache
def ref_length_correctness(content: str, solution: str) -> bool | None:
    """The check inside len_reward and cosine_scaled_reward: the gold read as LaTeX only, the
    answer read with ``boxed=True``, ``verify(answer, gold)``. None where the gold does not parse
    (open-r1 then counts the answer as correct in len_reward and gives 1.0 in
    cosine_scaled_reward)."""
    gold = parse(solution, extraction_mode="first_match", extraction_config=[LatexExtractionConfig()])
    if len(gold) == 0:
        return None
    answer = parse(content, extraction_config=_answer_extraction(True), extraction_mode="first_match")
    return bool(verify(answer, gold))


def ref_format(content: str) -> float:
    """format_reward."""
    pattern = r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$"
    return 1.0 if re.match(pattern, content, re.DOTALL | re.MULTILINE) else 0.0


TAGS = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")


def ref_tag_count(content: str) -> float:
    """tag_count_reward: a quarter for each tag string that occurs exactly once."""
    return sum(0.25 for tag in TAGS if content.count(tag) == 1)


STEP_MARKERS = re.compile(r"(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)")


def ref_reasoning_steps(content: str) -> float:
    """reasoning_steps_reward."""
    return min(1.0, len(STEP_MARKERS.findall(content)) / 3)


def ref_len_reward(contents: list[str], solutions: list[str]) -> list[float]:
    """len_reward (Kimi 1.5) over one scored batch."""
    correct = []
    for content, solution in zip(contents, solutions):
        check = ref_length_correctness(content, solution)
        correct.append(True if check is None else check)
    lengths = [len(c) for c in contents]
    shortest, longest = min(lengths), max(lengths)
    if shortest == longest:
        return [0.0] * len(contents)
    rewards = []
    for length, ok in zip(lengths, correct):
        lam = 0.5 - (length - shortest) / (longest - shortest)
        rewards.append(float(lam if ok else min(0, lam)))
    return rewards


def _cosine(length: int, correct: bool, min_value_wrong=-1.0, max_value_wrong=-0.5,
            min_value_correct=0.5, max_value_correct=1.0, max_len=1000) -> float:
    cosine = math.cos(length / max_len * math.pi)
    if correct:
        low, high = min_value_correct, max_value_correct
    else:  # open-r1 swaps the two for wrong answers: short and wrong is worst
        low, high = max_value_wrong, min_value_wrong
    return float(low + 0.5 * (high - low) * (1.0 + cosine))


def ref_cosine(content: str, solution: str) -> float:
    """get_cosine_scaled_reward() with its default parameters."""
    check = ref_length_correctness(content, solution)
    if check is None:
        return 1.0
    return _cosine(len(content), check)


def ref_repetition(content: str, ngram_size: int = 3, max_penalty: float = -1.0) -> float:
    """get_repetition_penalty_reward(ngram_size, max_penalty)."""
    if content == "":
        return 0.0
    words = content.lower().split()
    if len(words) < ngram_size:
        return 0.0
    ngrams = list(zip(*(words[i:] for i in range(ngram_size))))
    return (1 - len(set(ngrams)) / len(ngrams)) * max_penalty


def ref_soft_overlong(length: int, max_completion_len: int, soft_punish_cache: int) -> float:
    """get_soft_overlong_punishment(max_completion_len, soft_punish_cache) on a token count."""
    if length <= max_completion_len - soft_punish_cache:
        return 0.0
    if length <= max_completion_len:
        return (max_completion_len - soft_punish_cache - length) / soft_punish_cache
    return -1.0


# The corrected length rewards of the spec: correctness is accuracy_reward's check, an unparseable
# gold gives None (the rule skips the row), and the cosine's progress stops at 1.
def fixed_len_reward(contents: list[str], solutions: list[str]) -> list[float | None]:
    lengths = [len(c) for c in contents]
    shortest, longest = min(lengths), max(lengths)
    rewards = []
    for content, solution, length in zip(contents, solutions, lengths):
        accuracy = ref_accuracy(content, solution)
        if accuracy is None:
            rewards.append(None)
            continue
        lam = 0.0 if shortest == longest else 0.5 - (length - shortest) / (longest - shortest)
        rewards.append(lam if accuracy == 1.0 else min(0.0, lam))
    return rewards


def fixed_cosine(content: str, solution: str) -> float | None:
    accuracy = ref_accuracy(content, solution)
    if accuracy is None:
        return None
    return _cosine(min(len(content), 1000), accuracy == 1.0)


def open_r1_rewards(contents: list[str], solutions: list[str]) -> dict[str, list]:
    """What each open-r1 reward function returns for one batch (None where it returns None)."""
    return {
        "accuracy": [ref_accuracy(c, s) for c, s in zip(contents, solutions)],
        "format": [ref_format(c) for c in contents],
        "tag_count": [ref_tag_count(c) for c in contents],
        "reasoning_steps": [ref_reasoning_steps(c) for c in contents],
        "kimi_length": ref_len_reward(contents, solutions),
        "cosine": [ref_cosine(c, s) for c, s in zip(contents, solutions)],
        "repetition_penalty": [ref_repetition(c) for c in contents],
    }


# Each open-r1 reward's let, its level, its range (low, high) and whether it counts by default.
LEVELS = {
    "accuracy": ("accuracy", 0.0, 1.0, True),
    "format": ("format", 0.0, 1.0, True),
    "tag_count": ("tag_count", 0.0, 1.0, True),
    "reasoning_steps": ("reasoning_steps", 0.0, 1.0, False),
    "kimi_length": ("length", -0.5, 0.5, False),
    "cosine": ("cosine", -1.0, 1.0, False),
    "repetition_penalty": ("repetition_penalty", -1.0, 0.0, False),
}
FIXED_LEVELS = {"kimi_length_fixed": ("length_fixed", -0.5, 0.5), "cosine_fixed": ("cosine_fixed", -1.0, 1.0)}


# ---- the corpus ---------------------------------------------------------------------------------
# Eight prompts, each with five completions written by hand and ten seeded variants of them, so
# every prompt is a group of fifteen consecutive rows. The gold answers cover LaTeX, a worked
# solution, a plain number (which open-r1's length check cannot parse) and text with no answer.

FILLER = " ".join(f"Check case {i}: the bound holds for n = {i}." for i in range(30))

PROMPTS: list[tuple[str, list[str]]] = [
    ("$4$", [  # What is 2 + 2?
        "<think>\nFirst, I add 2 and 2. That gives 4.\n</think>\n<answer>\nThe answer is $\\boxed{4}$\n</answer>",
        "<think>\nStep 1: Start with 2.\nStep 2: Add 2 more.\nStep 3: Count them: 4.\n</think>\n<answer>\n$\\boxed{4}$\n</answer>",
        "<think>2+2=4</think><answer>\\boxed{4}</answer>",
        "<think>\nTwo plus two is five, I think.\n</think>\n<answer>\n\\boxed{5}\n</answer>",
        "The answer is 4.",
    ]),
    ("$\\frac{1}{2}$", [  # Simplify 6/12.
        "<think>\nDivide numerator and denominator by 6.\n- numerator: 1\n- denominator: 2\n</think>\n<answer>\n$\\boxed{\\frac{1}{2}}$\n</answer>",
        "<think>\n6 over 12 is one half.\n</think>\n<answer>\nThe final answer is $\\boxed{0.5}$\n</answer>",
        "<think>\n1. Find the gcd: 6.\n2. Divide: 1/2.\n</think>\n<answer>\n\\boxed{\\frac{2}{4}}\n</answer>",
        "1. Divide by 6.\n2. Get 1/2.\nSo the answer is $\\boxed{\\frac{1}{3}}$",
        "<think>\n* simplify\n* reduce\n* check\n</think>\n<answer>\n\\boxed{1/2}\n</answer>\n",
    ]),
    ("$2, 3$", [  # Solve x^2 - 5x + 6 = 0.
        "<think>\nFactor: (x-2)(x-3) = 0. Next, set each factor to zero.\n</think>\n<answer>\nThe roots are $\\boxed{2, 3}$\n</answer>",
        "<think>\nFactor it as (x-2)(x-3). Finally, x = 2 or x = 3.\n</think>\n<answer>\n$\\boxed{3, 2}$\n</answer>",
        "<think>\nthe roots are the roots are the roots are the roots are the roots\n</think>\n<answer>\n\\boxed{2}\n</answer>",
        "<think>\nUse the quadratic formula.\n</think>\n<answer>\n\\boxed{2, 3}\n</answer>\n<answer>\n\\boxed{2, 3}\n</answer>",
        "",
    ]),
    ("$(-\\infty, 3)$", [  # Solve 2x < 6.
        "<think>\nDivide both sides by 2.\n</think>\n<answer>\nThe answer is $\\boxed{x < 3}$\n</answer>",
        "<think>\nDivide by 2: x < 3, the numbers below 3.\n</think>\n<answer>\nThe answer is $\\boxed{(-\\infty, 3)}$\n</answer>",
        "<think>\nx < 3\n</think>\n<answer>\nThe answer is $\\boxed{x \\leq 3}$\n</answer>",
        "<think>\nFirst, nothing to subtract. Second, divide by 2. Next, write the interval. Finally, check.\n</think>\n<answer>\nThe answer is $\\boxed{(-\\infty, 3]}$\n</answer>",
        "<think>\n\n</think>\n<answer>\n\n</answer>",
    ]),
    ("42", [  # What is 6 times 7? (a plain gold answer)
        "<think>\n6 times 7 is 42.\n</think>\n<answer>\nThe answer is $\\boxed{42}$\n</answer>",
        "<think>\n6*7 = 48? No, wait.\n</think>\n<answer>\n$\\boxed{48}$\n</answer>",
        "\\boxed{42}",
        "<think>\nLet me think. Let me think. Let me think. Let me think.\n</think>\n<answer>\n\\boxed{42}\n</answer>",
        "<think>\nStep 1: 6*7.\n</think>\n<answer>\n42\n</answer>",
    ]),
    ("see the shaded region in the figure", [  # a gold with no answer in it
        "<think>\nThe region is shaded.\n</think>\n<answer>\n$\\boxed{7}$\n</answer>",
        "<think>\nI cannot see the figure.\n</think>\n<answer>\nunknown\n</answer>",
        "\\boxed{1}",
        "<think>\nStep 1: look. Step 2: look again. Step 3: guess.\n</think>\n<answer>\nThe answer is $\\boxed{12}$\n</answer>",
        "no no no no no no no no",
    ]),
    ("We have $3 \\cdot 5 = 15$, so the answer is $\\boxed{15}$.", [  # a worked solution as gold
        "<think>\n3 times 5.\n</think>\n<answer>\nThe answer is $\\boxed{15}$\n</answer>",
        "<think>\nKeep it symbolic.\n</think>\n<answer>\n$\\boxed{3 \\cdot 5}$\n</answer>",
        "<think>\n3 * 5 = 16.\n</think>\n<answer>\n$\\boxed{16}$\n</answer>",
        f"<think>\n{FILLER}\n</think>\n<answer>\nThe answer is $\\boxed{{15}}$\n</answer>",
        f"<think>\n{FILLER} {FILLER}\n</think>\n<answer>\nThe answer is $\\boxed{{14}}$\n</answer>",
    ]),
    ("$6$", [  # The area of a 2 cm by 3 cm rectangle, in square centimetres.
        "<think>\nArea = 2 * 3 = 6 square centimetres.\n</think>\n<answer>\nThe area is $\\boxed{6 \\text{ cm}^2}$\n</answer>",
        "<think>\nArea is length times width.\n</think>\n<answer>\nThe area is $\\boxed{6}$\n</answer>",
        "<think>\nArea is 2 + 3.\n</think>\n<answer>\n\\boxed{5}\n</answer>",
        "<think>\nالخطوة ١. Step ٢: multiply. Step 3: done.\n</think>\n<answer>\n$\\boxed{6}$\n</answer>",
        # about 2,000 characters: open-r1's cosine is periodic in the length (cos(2 pi) = 1)
        "<think>\n" + ("Area again. " * 162) + "\n</think>\n<answer>\n$\\boxed{6}$\n</answer>",
    ]),
]


def _insert_steps(text: str) -> str:
    steps = "Step 1: read the problem.\nStep 2: solve it.\n"
    return text.replace("<think>\n", "<think>\n" + steps, 1) if "<think>\n" in text else steps + text


VARIANTS = [
    lambda t: t + "\nI hope this helps!",             # text on a new line after </answer>
    lambda t: t + " Done.",                           # text on the same line after </answer>
    lambda t: t.replace("\n", "\r\n"),                # Windows line breaks
    lambda t: t.replace("\n", ""),                    # no line breaks
    lambda t: " " + t,                                # a leading space
    lambda t: t + "\n" + t,                           # everything twice
    _insert_steps,
    lambda t: t.upper(),                              # \BOXED is no box
    lambda t: t.replace("<think>\n", "<think>\n" + FILLER + "\n", 1),  # over 1,000 characters
    lambda t: t.replace("<think>\n", "<think>\n" + "wait, " * 40 + "\n", 1),
    lambda t: t[: len(t) // 2],                       # cut off
    lambda t: t + "  \n",
    lambda t: t.replace("\n</answer>", "</answer>"),
    lambda t: "<think>\n" + t,
]


def corpus(variants_per_prompt: int = 10, seed: int = 13) -> tuple[list[str], list[str], int]:
    """Completions and solutions, prompt by prompt; returns the group size too."""
    rng = random.Random(seed)
    contents, solutions = [], []
    for solution, written in PROMPTS:
        group = list(written)
        for _ in range(variants_per_prompt):
            group.append(rng.choice(VARIANTS)(rng.choice(written)))
        contents += group
        solutions += [solution] * len(group)
    return contents, solutions, len(PROMPTS[0][1]) + variants_per_prompt


# ---- helpers -------------------------------------------------------------------------------------

@cache
def program():
    return kdsl.load(SPEC)


def score(contents, solutions, prog=None):
    return (prog or program()).score(contents, solution=solutions, dtype=torch.float64)


def let_values(scores, name: str) -> list[float | None]:
    values = scores.values[name].tolist()
    valid = scores.valid[name].tolist()
    return [v if ok else None for v, ok in zip(values, valid)]


def assert_close(name: str, contents, got: list, expected: list) -> None:
    bad = []
    for i, (g, e) in enumerate(zip(got, expected)):
        if (g is None) != (e is None) or (g is not None and abs(g - e) > TOLERANCE):
            bad.append(f"  row {i}: kdsl {g!r}, open-r1 {e!r}, completion {contents[i][:70]!r}")
    assert not bad, f"{name} differs from open-r1 on {len(bad)} rows:\n" + "\n".join(bad[:10])


def batches() -> dict[str, tuple[list[str], list[str]]]:
    contents, solutions, group = corpus()
    out = {"whole corpus": (contents, solutions)}
    for k in range(len(PROMPTS)):
        rows = slice(k * group, (k + 1) * group)
        out[f"prompt {k}"] = (contents[rows], solutions[rows])
    # Same length everywhere: len_reward gives 0 to all, right or wrong.
    same = [f"<think>\nx\n</think>\n<answer>\n$\\boxed{{{d}}}$\n</answer>" for d in range(10)]
    out["equal lengths"] = (same + ["y" * len(same[0])], ["$4$"] * 11)
    out["one completion"] = (["<think>\nok\n</think>\n<answer>\n$\\boxed{4}$\n</answer>"], ["$4$"])
    out["empty and short"] = (["", "a", "a b", "a b c", "x x x"], ["$1$", "no", "$1$", "1", "$x$"])
    return out


BATCHES = batches()


# ---- tests ---------------------------------------------------------------------------------------

def test_corpus_covers_the_corner_cases():
    contents, solutions, _group = corpus()
    assert len(contents) == 120 and all(isinstance(s, str) for s in solutions)
    rewards = open_r1_rewards(contents, solutions)
    assert None in rewards["accuracy"] and 0.0 in rewards["accuracy"] and 1.0 in rewards["accuracy"]
    assert {0.0, 1.0} <= set(rewards["format"])
    assert {0.0, 0.25, 0.5, 0.75, 1.0} <= set(rewards["tag_count"])
    assert {0.0, 1 / 3, 2 / 3, 1.0} <= set(rewards["reasoning_steps"])
    assert min(rewards["repetition_penalty"]) < -0.5
    assert "" in contents and max(len(c) for c in contents) > 2000
    # open-r1's two correctness checks disagree on some rows with a parseable gold
    disagree = [i for i, (c, s) in enumerate(zip(contents, solutions))
                if ref_accuracy(c, s) is not None and ref_length_correctness(c, s) is not None
                and ref_accuracy(c, s) != float(ref_length_correctness(c, s))]
    assert disagree
    # a gold only the accuracy check can read ("42"), and one nothing can read
    assert any(ref_accuracy(c, s) is not None and ref_length_correctness(c, s) is None
               for c, s in zip(contents, solutions))
    assert any(ref_accuracy(c, s) is None for c, s in zip(contents, solutions))


@pytest.mark.parametrize("batch", list(BATCHES))
def test_every_let_equals_open_r1(batch):
    contents, solutions = BATCHES[batch]
    scores = score(contents, solutions)
    for name, expected in open_r1_rewards(contents, solutions).items():
        assert_close(name, contents, let_values(scores, name), expected)


@pytest.mark.parametrize("batch", list(BATCHES))
def test_each_level_is_its_reward_mapped_onto_0_1(batch):
    contents, solutions = BATCHES[batch]
    scores = score(contents, solutions)
    weights = program().level_weights
    for let, (level, low, high, active) in LEVELS.items():
        assert weights[level] == (high - low if active else 0.0), level
        values = let_values(scores, let)
        rule_applies = scores.applies[next(r.name for r in program().ir.rules if r.level == level)]
        expected = [1.0 if v is None else (v - low) / (high - low) for v in values]
        assert_close(f"level {level}", contents, scores.levels[level].tolist(), expected)
        assert rule_applies.tolist() == [v is not None for v in values], level
    for let, (level, low, high) in FIXED_LEVELS.items():
        assert weights[level] == 0.0, level
        values = let_values(scores, let)
        expected = [1.0 if v is None else (v - low) / (high - low) for v in values]
        assert_close(f"level {level}", contents, scores.levels[level].tolist(), expected)


def test_corner_cases():
    scores = score(*BATCHES["equal lengths"])
    assert scores.values["kimi_length"].tolist() == [0.0] * 11
    assert scores.values["kimi_length_fixed"].tolist() == [0.0] * 11
    scores = score(*BATCHES["one completion"])
    assert scores.values["kimi_length"].tolist() == [0.0]
    contents, solutions = BATCHES["empty and short"]
    scores = score(contents, solutions)
    # empty text and fewer words than the n-gram size: no penalty; "x x x" is one 3-gram
    assert let_values(scores, "repetition_penalty") == [0.0, 0.0, 0.0, 0.0, 0.0]
    assert let_values(scores, "format") == [0.0] * 5
    # "no" holds no gold answer: accuracy is None (skipped), while open-r1's length rewards count
    # any answer to it as correct; here "a", 1 character in a batch of 0 to 5: 0.5 - 1 / 5
    assert let_values(scores, "accuracy")[1] is None
    assert scores.applies["answer_correct"].tolist()[1] is False
    assert let_values(scores, "kimi_length")[1] == pytest.approx(0.5 - 1 / 5)
    assert let_values(scores, "cosine")[1] == 1.0
    assert let_values(scores, "kimi_length_fixed")[1] is None


def _enable_every_open_r1_level(text: str) -> str:
    """The spec with every open-r1 level at the weight its comment gives."""
    for level, weight in (("reasoning_steps", 1), ("length", 1), ("cosine", 2), ("repetition_penalty", 1)):
        text, count = re.subn(rf"^level {level} weight 0 ", f"level {level} weight {weight} ", text,
                              flags=re.MULTILINE)
        assert count == 1, level
    return text


@cache
def program_with_every_open_r1_level():
    return kdsl.loads(_enable_every_open_r1_level(SPEC.read_text(encoding="utf-8")), str(SPEC))


def _open_r1_total(rewards: dict[str, list], names) -> list[float]:
    """TRL's sum of reward functions: a None counts as nothing (nansum)."""
    return [sum(0.0 if rewards[n][i] is None else rewards[n][i] for n in names)
            for i in range(len(rewards["format"]))]


def _grpo_group_advantages(rewards: list[float], group: int) -> torch.Tensor:
    """GRPO with group scaling, as TRL computes it: (r - group mean) / (group std + 1e-4)."""
    r = torch.tensor(rewards, dtype=torch.float64).view(-1, group)
    advantages = (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + 1e-4)
    return advantages.flatten()


@pytest.mark.parametrize("every_level", [False, True], ids=["default levels", "every open-r1 level"])
def test_reward_is_open_r1_sum_plus_a_constant_per_prompt(every_level):
    contents, solutions, group = corpus()
    prog = program_with_every_open_r1_level() if every_level else program()
    scores = score(contents, solutions, prog)
    rewards = open_r1_rewards(contents, solutions)
    names = [n for n, (_level, _lo, _hi, active) in LEVELS.items() if every_level or active]
    constant = -sum(LEVELS[n][1] for n in names)  # each level adds value - low
    total = _open_r1_total(rewards, names)
    # Where the gold cannot be parsed, open-r1's accuracy is None (nothing in TRL's sum) and the
    # accuracy level, with no rule applying, scores 1: one more for every completion of that
    # prompt, so the same for its whole group.
    skipped = [1.0 if a is None else 0.0 for a in rewards["accuracy"]]
    expected = [t + constant + s for t, s in zip(total, skipped)]
    assert_close("reward", contents, scores.reward.tolist(), expected)
    for k in range(len(PROMPTS)):
        assert len(set(skipped[k * group:(k + 1) * group])) == 1

    kdsl_advantages = prog.advantages(scores, group)
    open_r1_advantages = _grpo_group_advantages(total, group)
    difference = (kdsl_advantages.double() - open_r1_advantages).abs().max().item()
    # The program computes advantages in float32, the reference in float64.
    assert difference < TOLERANCE, difference
    assert open_r1_advantages.abs().max() > 1


def test_corrected_length_rewards_differ_only_where_intended():
    contents, solutions, _group = corpus()
    scores = score(contents, solutions)
    fixed_kimi = let_values(scores, "kimi_length_fixed")
    fixed_cos = let_values(scores, "cosine_fixed")
    assert_close("kimi_length_fixed", contents, fixed_kimi, fixed_len_reward(contents, solutions))
    assert_close("cosine_fixed", contents, fixed_cos, [fixed_cosine(c, s) for c, s in zip(contents, solutions)])

    kimi = let_values(scores, "kimi_length")
    cosine = let_values(scores, "cosine")
    reasons = {"unparseable gold": 0, "checks disagree": 0, "longer than max_len": 0}
    for i, (c, s) in enumerate(zip(contents, solutions)):
        accuracy, check = ref_accuracy(c, s), ref_length_correctness(c, s)
        if accuracy is None:  # skipped by the corrected rewards
            reasons["unparseable gold"] += 1
            assert fixed_kimi[i] is None and fixed_cos[i] is None
            continue
        same_verdict = (True if check is None else check) == (accuracy == 1.0)
        if not same_verdict:
            reasons["checks disagree"] += 1
        if len(c) > 1000:
            reasons["longer than max_len"] += 1
        if same_verdict:
            assert fixed_kimi[i] == pytest.approx(kimi[i], abs=TOLERANCE), c
        if same_verdict and check is not None and len(c) <= 1000:
            assert fixed_cos[i] == pytest.approx(cosine[i], abs=TOLERANCE), c
    assert all(reasons.values()), reasons
    # and the difference shows: the verdicts differ, so do the rewards
    assert any(a is not None and b is not None and abs(a - b) > 0.1 for a, b in zip(fixed_kimi, kimi))

    # An unparseable gold: the corrected cosine's level still scores 1 (rule passes), as open-r1's
    # 1.0 does; the corrected Kimi level scores 1 because its rule is skipped.
    unparseable = [i for i, a in enumerate(let_values(scores, "accuracy")) if a is None]
    assert unparseable
    for i in unparseable:
        assert scores.levels["cosine_fixed"][i].item() == 1.0 == scores.levels["cosine"][i].item()
        assert scores.levels["length_fixed"][i].item() == 1.0
        assert not scores.applies["short_if_correct_fixed"][i].item()


def test_format_and_step_patterns_follow_python_re():
    texts = [
        "<think>\na\n</think>\n<answer>\nb\n</answer>",
        "<think>\na\n</think>\n<answer>\nb\n</answer>\ntrailing line",
        "<think>\na\n</think>\n<answer>\nb\n</answer> trailing",
        "<think>\na\n</think>\n<answer>\nb\n</answer>\r\n",
        "<think>\r\na\r\n</think>\r\n<answer>\r\nb\r\n</answer>",
        " <think>\na\n</think>\n<answer>\nb\n</answer>",
        "x\n<think>\na\n</think>\n<answer>\nb\n</answer>",
        "<think>\n\n</think>\n<answer>\n\n</answer>",
        "<think>\n</think>\n<answer>\n</answer>",
        "<think>\na\n</think>\n<answer>\nb\n</answer>x\n</answer>",
        "<think>\na\n</think>\n<answer>\nb\n</answer>\n<answer>\nc\n</answer>",
        "1. one\n2. two\n3. three",
        "Step 1: a Step 22: b Step x: c",
        "Step ٣: Arabic-Indic digits ١. ٢.",
        "٤. starts with an Arabic-Indic digit",
        "\n-\n-\n*\n* First,Second,Next,Finally,",
        "first, second, next, finally,",
        "Step 1:Step 2:",
        "",
    ]
    scores = score(texts, ["$1$"] * len(texts))
    assert_close("format", texts, let_values(scores, "format"), [ref_format(t) for t in texts])
    assert_close("reasoning_steps", texts, let_values(scores, "reasoning_steps"),
                 [ref_reasoning_steps(t) for t in texts])
    assert_close("tag_count", texts, let_values(scores, "tag_count"), [ref_tag_count(t) for t in texts])


def test_soft_overlong_punishment_on_tokens():
    from tests.tiny import byte_level_tokenizer

    tokenizer = byte_level_tokenizer()
    spec = kdsl.loads(
        'spec r1_overlong version 1\n'
        'import "common/r1" as r1\n'
        'let n_tokens = length(completion, tokens)\n'
        'let overlong = r1.soft_overlong_punishment(n_tokens, 48, 16)\n'
        'let overlong_default = r1.soft_overlong_punishment(n_tokens)\n'
        'level overlong weight 1 {\n'
        '  rule within_budget: overlong + 1\n'
        '}\n')
    long = ("<think>\nStep 1: NDVI is high, 中文文本 🌍🌱, the near infrared is far above red.\n</think>\n"
            "<answer>\n$\\boxed{4}$\n</answer>") * 3
    texts = [long[:k] for k in range(len(long) + 1)]
    lengths = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    # every side of both thresholds: 32 (not punished), 33, 48 (-1 exactly), more than 48
    assert {0, 32, 33, 48} <= set(lengths) and max(lengths) > 48, lengths
    scores = spec.score(texts, tokenizer=tokenizer, dtype=torch.float64)
    assert_close("overlong", texts, let_values(scores, "overlong"),
                 [ref_soft_overlong(n, 48, 16) for n in lengths])
    assert_close("overlong_default", texts, let_values(scores, "overlong_default"),
                 [ref_soft_overlong(n, 16384, 4096) for n in lengths])


def test_other_specs_can_use_the_formulas():
    """The defs give open-r1's values in a spec that imports them (here in float32 scoring)."""
    spec = kdsl.loads(
        'spec r1_imported version 1\n'
        'import "common/r1" as r1\n'
        'input {\n'
        '  solution: str\n'
        '}\n'
        'let n_chars = length(completion, chars)\n'
        'let accuracy = r1.accuracy_reward(completion, solution)\n'
        'let format = r1.format_reward(completion)\n'
        'let cosine = r1.cosine_scaled_reward(n_chars, accuracy == 1, max_len = 500, min_value_wrong = 0)\n'
        'let repetition_penalty = r1.repetition_penalty_reward(repetition(completion, 2), max_penalty = -0.5)\n'
        'level accuracy weight 1 {\n'
        '  rule answer_correct: accuracy invalid skip\n'
        '}\n')
    contents, solutions = BATCHES["prompt 0"]
    scores = spec.score(contents, solution=solutions)
    assert_close("accuracy", contents, let_values(scores, "accuracy"),
                 [ref_accuracy(c, s) for c, s in zip(contents, solutions)])
    assert_close("format", contents, let_values(scores, "format"), [ref_format(c) for c in contents])
    expected = [_cosine(len(c), ref_accuracy(c, s) == 1.0, min_value_wrong=0.0, max_len=500)
                for c, s in zip(contents, solutions)]
    got = let_values(scores, "cosine")
    assert all(abs(g - e) < 1e-5 for g, e in zip(got, expected)), (got, expected)  # float32
    got = let_values(scores, "repetition_penalty")
    expected = [ref_repetition(c, 2, -0.5) for c in contents]
    assert all(abs(g - e) < 1e-6 for g, e in zip(got, expected)), (got, expected)


def test_dapo_example_spec_matches_open_r1_on_trl_completion_ids():
    """examples/r1/r1_dapo.kd counts the tokens of the decoded completion plus one, which is the
    length of the ids TRL hands open-r1: generation stops after an end-of-sequence token (kept)
    or at max_completion_length tokens (1024 in the example)."""
    from tests.tiny import byte_level_tokenizer

    tokenizer = byte_level_tokenizer()
    prog = kdsl.load(SPEC.parents[2] / "examples" / "r1" / "r1_dapo.kd")
    reasoning = "".join(f"Step {i}: the near infrared is far above red, so NDVI is high. " for i in range(80))
    generated = tokenizer(reasoning, add_special_tokens=False)["input_ids"]
    assert len(generated) > 1100
    # stopped by the end-of-sequence token after n tokens, on every side of both thresholds
    completion_ids = [generated[:n] + [tokenizer.eos_token_id]
                      for n in (0, 1, 200, 500, 766, 767, 768, 769, 800, 900, 1000, 1022, 1023)]
    completion_ids.append(generated[:1024])  # cut off at max_completion_length
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    scores = prog.score(texts, solution=["$4$"] * len(texts), tokenizer=tokenizer, dtype=torch.float64)
    assert_close("overlong", texts, let_values(scores, "overlong"),
                 [ref_soft_overlong(len(x), 1024, 256) for x in completion_ids])
    contents, solutions = BATCHES["prompt 2"]
    scores = prog.score(contents, solution=solutions, tokenizer=tokenizer, dtype=torch.float64)
    expected = open_r1_rewards(contents, solutions)
    for name in ("accuracy", "format", "tag_count"):
        assert_close(name, contents, let_values(scores, name), expected[name])
