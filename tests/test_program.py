"""The compiled program end to end: scores, semantics, validity, devices and safety."""

import math

import pytest
import torch

import kdsl
from kdsl.errors import KdslDataError, KdslError

LANDCOVER = """
spec demo version 1
input {
  label: enum LandCover { Forest ("woodland"), River, SeaLake ("sea", "lake") }
  ndvi: float
}
output {
  think: tag "think"
  reply: tag "answer"
  answer: reply as LandCover
}
level format gate {
  rule has_think: present(think)
  rule one_answer: count(reply) == 1
}
level accuracy weight 2 {
  rule correct: answer == label
}
level knowledge weight 0.5 {
  rule green_forest: when answer == Forest: ndvi >= 0.6 soft 0.2
  rule water_cited: when answer in {River, SeaLake}: mentions(think, "water" | "NDWI")
}
"""


@pytest.fixture(scope="module")
def demo():
    return kdsl.loads(LANDCOVER, "demo.kd")


def test_scores_follow_the_contract(demo):
    completions = [
        "<think>dense canopy</think><answer>Forest</answer>",
        "<think>open water, high NDWI</think><answer>lake</answer>",
        "<answer>Forest</answer>",
        "<think>x</think><answer>River</answer><answer>Forest</answer>",
        "<think>green</think><answer>woodland</answer>",
    ]
    scores = demo.score(completions, label=["Forest", "SeaLake", "Forest", "River", "River"],
                        ndvi=[0.7, 0.1, 0.7, 0.2, 0.5])
    assert scores.reward.dtype == torch.float32 and scores.reward.shape == (5,)
    assert set(scores.rules) == {"has_think", "one_answer", "correct", "green_forest", "water_cited"}
    assert set(scores.levels) == {"format", "accuracy", "knowledge"}
    # 0: all satisfied: 1 + 2 * 1 + 0.5 * 1
    # 1: lake is a synonym of SeaLake; water cited
    # 2: no think: the gate closes, later levels are zeroed
    # 3: two answers: the gate closes
    # 4: woodland = Forest, wrong label; ndvi 0.5 is halfway down a ramp of width 0.2 -> 0.5
    assert scores.reward.tolist() == pytest.approx([3.5, 3.5, 0.5, 0.5, 1.25])
    assert scores.levels["knowledge"].tolist() == pytest.approx([1, 1, 0, 0, 0.5])
    assert scores.applies["green_forest"].tolist() == [True, False, True, False, True]
    assert scores.applies["water_cited"].tolist() == [False, True, False, True, False]
    assert scores.rules["green_forest"][4].item() == pytest.approx(0.5)


def test_reward_is_weighted_sum_of_gated_levels(demo):
    scores = demo.score(["<think>a</think><answer>Forest</answer>", "<answer>x</answer>"],
                        label=["River", "River"], ndvi=[0.9, None])
    total = scores.levels["format"] + 2 * scores.levels["accuracy"] + 0.5 * scores.levels["knowledge"]
    assert torch.allclose(scores.reward, total)


def test_invalid_values_never_make_nan(demo):
    completions = ["", "<answer>", "<think></think><answer>nonsense</answer>", "\x00\ufffd"]
    scores = demo.score(completions, label=[None, "Forest", "River", None],
                        ndvi=[float("nan"), float("inf"), None, -1e30])
    for tensor in [scores.reward, *scores.rules.values(), *scores.levels.values()]:
        assert torch.isfinite(tensor.float()).all()


def test_when_not_applicable_is_not_satisfied():
    program = kdsl.loads("""
spec t version 1
input {
  x: float
}
level l {
  rule big: when x > 0: x > 10
  rule small: when x <= 0: x > -1
}
""")
    scores = program.score(["", "", ""], x=[20.0, 5.0, -5.0])
    assert scores.levels["l"].tolist() == [1.0, 0.0, 0.0]
    assert scores.applies["big"].tolist() == [True, True, False]
    assert scores.applies["small"].tolist() == [False, False, True]


def test_a_level_where_nothing_applies_scores_one():
    program = kdsl.loads("""
spec t version 1
input {
  x: float
}
level l {
  rule big: when x > 0: x > 10
}
""")
    assert program.score([""], x=[-1.0]).levels["l"].tolist() == [1.0]


@pytest.mark.parametrize("logic, expected_and, expected_or", [
    ("product", 0.25, 0.75),
    ("godel", 0.5, 0.5),
    ("lukasiewicz", 0.0, 1.0),
])
def test_fuzzy_logics(logic, expected_and, expected_or):
    program = kdsl.loads(f"""
spec t version 1 logic {logic}
input {{
  x: float
}}
level l {{
  rule both: x >= 1 and x >= 1 soft 1
  rule either: x >= 1 or x >= 1 soft 1
}}
""")
    scores = program.score([""], x=[0.5])
    assert scores.rules["both"].item() == pytest.approx(expected_and)
    assert scores.rules["either"].item() == pytest.approx(expected_or)


def test_unknown_operands_follow_kleene_logic():
    program = kdsl.loads("""
spec t version 1
input {
  x: float
  flag: bool
}
level l {
  rule or_true: x > 0 or flag
  rule and_false: x > 0 and flag
}
""")
    scores = program.score(["", "", ""], x=[None, None, None], flag=[True, False, None])
    assert scores.rules["or_true"].tolist() == [1.0, 0.0, 0.0]
    assert scores.rules["and_false"].tolist() == [0.0, 0.0, 0.0]


def test_invalid_policies():
    program = kdsl.loads("""
spec t version 1
output {
  answer: tag "answer"
}
level l {
  rule fails: number(answer) > 1
  rule passes: number(answer) > 1 invalid pass
  rule skipped: number(answer) > 1 invalid skip
}
""")
    scores = program.score(["<answer>none</answer>", "<answer>5</answer>"])
    assert scores.rules["fails"].tolist() == [0.0, 1.0]
    assert scores.rules["passes"].tolist() == [1.0, 1.0]
    assert scores.applies["skipped"].tolist() == [False, True]


def test_division_by_zero_is_invalid_not_inf():
    program = kdsl.loads("""
spec t version 1
input {
  a: float
  b: float
}
let ratio = a / b
level l {
  rule r: ratio > 1
}
""")
    scores = program.score(["", ""], a=[1.0, 4.0], b=[0.0, 2.0])
    assert scores.valid["ratio"].tolist() == [False, True]
    assert scores.values["ratio"][1].item() == 2.0
    assert scores.rules["r"].tolist() == [0.0, 1.0]


RASTER = """
spec raster version 1
input {
  pixels: raster[3] bands(B03, B04, B08) nodata 0
}
def nd(a, b) = (a - b) / (a + b)
let ndvi = mean(nd(pixels.B08, pixels.B04))
let green = frac(nd(pixels.B08, pixels.B04) > 0.5)
let spread = std(pixels.B08)
let median = quantile(pixels.B08, 0.5)
let low = min(pixels.B04)
level l {
  rule vegetated: ndvi > 0.3 and green > 0.5 and spread >= 0 and median > 0 and low >= 0
}
"""


def test_masked_raster_reductions_match_numpy():
    import numpy as np

    rng = np.random.default_rng(0)
    patches = rng.uniform(0.01, 0.5, size=(4, 3, 8, 8)).astype(np.float32)
    patches[:, :, 0, :] = 0  # a nodata border
    patches[1, 2, 3, 3] = np.nan
    patches[3] = 0  # nothing valid at all
    program = kdsl.loads(RASTER)
    scores = program.score([""] * 4, pixels=list(patches), dtype=torch.float64)
    for i in range(3):
        nir, red = patches[i, 2].astype(np.float64), patches[i, 1].astype(np.float64)
        valid = (nir != 0) & (red != 0) & np.isfinite(nir) & np.isfinite(red)
        with np.errstate(invalid="ignore", divide="ignore"):
            nd = (nir - red) / (nir + red)
        assert scores.values["ndvi"][i].item() == pytest.approx(nd[valid].mean())
        assert scores.values["green"][i].item() == pytest.approx((nd[valid] > 0.5).mean())
        nir_valid = nir[(nir != 0) & np.isfinite(nir)]
        assert scores.values["spread"][i].item() == pytest.approx(nir_valid.std())
        assert scores.values["median"][i].item() == pytest.approx(np.quantile(nir_valid, 0.5))
        assert scores.values["low"][i].item() == pytest.approx(red[(red != 0)].min())
    assert not scores.valid["ndvi"][3] and scores.rules["vegetated"][3] == 0


def test_data_errors_name_row_and_column(demo):
    with pytest.raises(KdslDataError, match=r"row 1, column `ndvi`: expected a number, got 'high'"):
        demo.score(["a", "b"], label=["Forest", "River"], ndvi=[0.1, "high"])
    with pytest.raises(KdslDataError, match=r"row 0, column `label`: expected one of Forest, River, SeaLake"):
        demo.score(["a"], label=["Desert"], ndvi=[0.1])
    with pytest.raises(KdslDataError, match="missing column `ndvi`"):
        demo.score(["a"], label=["Forest"])
    with pytest.raises(KdslDataError, match="column `ndvi` has 1 rows, but there are 2 completions"):
        demo.score(["a", "b"], label=["Forest", "River"], ndvi=[0.1])


def test_conversational_completions(demo):
    chat = [[{"role": "assistant", "content": "<think>t</think><answer>Forest</answer>"}]]
    plain = ["<think>t</think><answer>Forest</answer>"]
    a = demo.score(chat, label=["Forest"], ndvi=[0.9]).reward
    b = demo.score(plain, label=["Forest"], ndvi=[0.9]).reward
    assert a.tolist() == b.tolist() == [3.5]


def test_tensor_columns_and_float64(demo):
    scores = demo.score(["<think>t</think><answer>Forest</answer>"], label=["Forest"],
                        ndvi=torch.tensor([0.55], dtype=torch.float64), dtype=torch.float64)
    assert scores.rules["green_forest"].dtype == torch.float64
    assert scores.rules["green_forest"].item() == pytest.approx(0.75)


def test_decision_table_first_matching_row():
    program = kdsl.loads("""
spec t version 1
enum Kind { Solid, GroundGlass }
enum Plan { Nothing, CT12, CT6 }
input {
  kind: Kind
  size: float
}
table plan(kind: Kind, size: float) -> Plan {
  Solid, < 6 -> Nothing
  Solid, 6..8 -> CT12
  Solid, > 8 -> CT6
  GroundGlass, _ -> CT12
}
output {
  answer: tag "answer"
}
level l {
  rule follows_table: answer == plan(kind, size)
}
""")
    rows = [("Solid", 5.9, "Nothing"), ("Solid", 6.0, "CT12"), ("Solid", 8.0, "CT12"),
            ("Solid", 8.01, "CT6"), ("GroundGlass", 30, "CT12")]
    scores = program.score([f"<answer>{r[2]}</answer>" for r in rows],
                           kind=[r[0] for r in rows], size=[r[1] for r in rows])
    assert scores.rules["follows_table"].tolist() == [1.0] * 5
    wrong = program.score(["<answer>CT6</answer>", "<answer>CT6</answer>"], kind=["Solid", None],
                          size=[7.0, 7.0])
    assert wrong.rules["follows_table"].tolist() == [0.0, 0.0]


def test_str_columns_and_choice_letters():
    program = kdsl.loads("""
spec t version 1
input {
  gold: str
}
output {
  answer: tag "answer"
}
level l {
  rule letter: choice(answer, "ABCD") == gold
  rule literal: answer as str in {"yes", "maybe"}
}
""")
    scores = program.score(["<answer>(B)</answer>", "<answer>yes</answer>", "<answer>A</answer>"],
                           gold=["B", "C", "C"])
    assert scores.rules["letter"].tolist() == [1.0, 0.0, 0.0]
    assert scores.rules["literal"].tolist() == [0.0, 1.0, 0.0]


def test_boxes_iou():
    program = kdsl.loads("""
spec t version 1
input {
  gold: box
}
output {
  answer: tag "answer"
}
level l {
  rule overlap: iou(answer as box, gold)
}
""")
    scores = program.score(["<answer>[0, 0, 10, 10]</answer>", "<answer>[0,0,5,10]</answer>",
                            "<answer>none</answer>"], gold=[[0, 0, 10, 10]] * 3)
    assert scores.rules["overlap"].tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_generated_module_is_deterministic_and_standalone(tmp_path, demo):
    import importlib.util

    from kdsl.codegen import generate
    from kdsl.compiler import compile_ir

    first = generate(compile_ir(LANDCOVER, "demo.kd")[0])
    second = generate(compile_ir(LANDCOVER, "demo.kd")[0])
    assert first == second
    path = tmp_path / "demo_reward.py"
    path.write_text(first)
    spec = importlib.util.spec_from_file_location("demo_reward", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    completions = ["<think>t</think><answer>Forest</answer>", "<answer>River</answer>"]
    out = module.score(completions, label=["Forest", "River"], ndvi=[0.9, 0.1])
    expected = demo.score(completions, label=["Forest", "River"], ndvi=[0.9, 0.1])
    assert torch.equal(out["reward"], expected.reward)


def test_spec_strings_are_quoted_literals_never_code():
    hostile = 'x\\"); import os; os.system(\\"echo pwned\\"); (\\"'
    program = kdsl.loads(f"""
spec t version 1
output {{
  answer: tag "answer"
}}
level l {{
  rule r: mentions(answer, "{hostile}")
}}
""")
    assert "os.system" in program.source  # present only inside a string literal
    compiled = compile(program.source, "<generated>", "exec")
    names = set(compiled.co_names)
    assert "system" not in names and "os" not in names
    assert program.score(["<answer>hi</answer>"]).rules["r"].tolist() == [0.0]


def test_evaluate_compiles_with_fullgraph(demo):
    from kdsl.runtime import execute

    completions = ["<think>t</think><answer>Forest</answer>", "<answer>River</answer>"]
    columns = {"label": ["Forest", "River"], "ndvi": [0.9, 0.1]}
    module = demo.module
    ref = torch.zeros(2)
    interner = execute.col.Interner(module.STRINGS)
    env = execute.prepare_columns(module, columns, 2, ref, interner)
    module.extract(execute.completion_texts(completions), env,
                   execute.Extraction(completions, ref, interner))
    eager = module.evaluate(**env)
    compiled = torch.compile(module.evaluate, fullgraph=True, backend="eager")
    out = compiled(**env)
    assert torch.equal(out["reward"], eager["reward"])


def test_raster_program_compiles_with_fullgraph():
    import numpy as np
    from compiled import eager_and_fullgraph

    patches = np.random.default_rng(1).uniform(0, 1, size=(3, 3, 4, 4)).astype(np.float32)
    eager, compiled = eager_and_fullgraph(kdsl.loads(RASTER).module, [""] * 3, {"pixels": list(patches)})
    assert torch.allclose(compiled["reward"], eager["reward"])


def test_megabyte_completion_scores_in_linear_time(demo):
    from growth import growth

    def make(size: int) -> str:
        return "<think>" + ("water " * (size // 6)) + "<answer>" * 1000 + "</think>"

    # eight times the text: about eight times the work, far from the 64 of a quadratic path
    assert growth(make, lambda text: demo.score([text], label=["River"], ndvi=[0.1]),
                  125_000) < 24


def test_load_errors_carry_position():
    with pytest.raises(KdslError) as info:
        kdsl.loads("spec t version 1\nlevel l {\n  rule r: nope > 1\n}\n", "t.kd")
    err = info.value
    assert (err.file, err.line, err.column) == ("t.kd", 3, 11)
    assert "unknown name `nope`" in str(err) and "^" in str(err)


def test_scores_have_no_nan_for_empty_batch(demo):
    scores = demo.score([], label=[], ndvi=[])
    assert scores.reward.shape == (0,)
    assert math.isfinite(float(scores.reward.sum()))


class _WhitespaceTokenizer:
    """The part of the transformers tokenizer interface that token lengths use."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[hash(w) % 1000 for w in t.split()] for t in texts]}


def test_token_lengths_use_the_given_tokenizer():
    program = kdsl.loads("""
spec t version 1
output {
  think: tag "think"
}
level l {
  rule short: length(think, tokens) <= 3
}
""")
    completions = ["<think>one two three</think>", "<think>one two three four</think>"]
    scores = program.score(completions, tokenizer=_WhitespaceTokenizer())
    assert scores.rules["short"].tolist() == [1.0, 0.0]
    with pytest.raises(KdslDataError, match="counts tokens: pass tokenizer="):
        program.score(completions)


def test_a_rule_on_a_regex_output_keeps_the_whole_match():
    program = kdsl.loads('spec r version 1\ninput {\n  gold: float\n}\noutput {\n'
                         '  m: regex "final: (?P<v>[0-9]+)"\n  v: m.v as float\n}\n'
                         'level l {\n  rule right: v == gold on m\n}\n')
    scores = program.score(["so final: 42 ok", "none"], gold=[42, 1])
    assert scores.spans["m"] == [(3, 12), None]
    assert scores.rules["right"].tolist() == [1.0, 0.0]


def test_on_a_parsed_value_names_the_problem():
    with pytest.raises(kdsl.KdslError, match="`answer` is a value read from the text, not a span"):
        kdsl.loads('spec r version 1\ninput {\n  gold: float\n}\noutput {\n  reply: tag "a"\n'
                   '  answer: reply as float\n}\nlevel l {\n  rule right: answer == gold on answer\n}\n')
