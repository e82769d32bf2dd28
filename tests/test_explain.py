"""`kdsl explain` and `kdsl.tools.explain`: one completion's reward, traced through the compiled program.

Every number of an explanation is checked against `program.score` on the same rows, and the
spans, the closed gate and the reward's arithmetic against what the spec says by hand.
"""

import io
import json
from pathlib import Path

import pytest
import torch

import kdsl
from kdsl.cli import Console, main
from kdsl.tools.explain import explain, render, render_text

SPEC = """\
spec pets version 1

input {
  label: enum Animal { Cat ("kitten", "feline"), Dog ("puppy") }
  legs: float
  mass: float
}
output {
  think: tag "think"
  reply: tag "answer"
  answer: reply as Animal
  note: tag "note"
  conf: regex "confidence: (?P<value>[0-9.]+)"
}
let legs_per_kg = legs / mass

level format gate {
  rule has_answer: present(answer)
  rule reasons: present(think)
}
level accuracy weight 2 {
  rule correct: answer == label
}
level style weight 0.5 {
  rule dog_barks: when answer == Dog: mentions(think, "bark")
  rule confident: conf.value as float >= 0.9 soft 0.2
  rule noted: present(note) weight 3
  rule sturdy: legs_per_kg >= 1
}
"""

# Everything but the note passes the gate; the answer is a synonym; the mass makes the let invalid.
CAT = "<think>It purrs and has four legs.</think><answer>kitten</answer> confidence: 0.8"
CAT_COLUMNS = {"label": "Cat", "legs": 4.0, "mass": 0.0}
# No reasoning: the gate closes and zeroes the later levels.
DOG = "<answer>Dog</answer>"
DOG_COLUMNS = {"label": "Cat", "legs": 4, "mass": 2}


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explain") / "pets.kd"
    path.write_text(SPEC, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def program(spec_path):
    return kdsl.load(spec_path)


@pytest.fixture(scope="module")
def cat(program) -> dict:
    return explain(program, CAT, CAT_COLUMNS)


@pytest.fixture(scope="module")
def dog(program) -> dict:
    return explain(program, DOG, DOG_COLUMNS)


def by_name(items: list[dict]) -> dict[str, dict]:
    return {item["name"]: item for item in items}


def rules_of(explanation: dict) -> dict[str, dict]:
    return {rule["name"]: rule for level in explanation["levels"] for rule in level["rules"]}


# ---- the numbers are the compiled program's ------------------------------------------------------

def test_every_number_is_the_compiled_programs(program, cat, dog):
    scores = program.score([CAT, DOG], **{name: [CAT_COLUMNS[name], DOG_COLUMNS[name]]
                                          for name in CAT_COLUMNS})
    for i, explanation in enumerate((cat, dog)):
        assert explanation["reward"] == pytest.approx(float(scores.reward[i]), abs=1e-6)
        levels = by_name(explanation["levels"])
        for name, value in scores.levels.items():
            assert levels[name]["score"] == pytest.approx(float(value[i]), abs=1e-6)
        rules = rules_of(explanation)
        for name, truth in scores.rules.items():
            assert rules[name]["truth"] == pytest.approx(float(truth[i]), abs=1e-6)
            assert rules[name]["applies"] == bool(scores.applies[name][i])
        lets = by_name(explanation["lets"])
        for name, value in scores.values.items():
            assert lets[name]["valid"] == bool(scores.valid[name][i])
            if lets[name]["valid"]:
                assert lets[name]["value"] == pytest.approx(float(value[i]), rel=1e-6)


def test_explanation_is_plain_json(cat):
    assert json.loads(json.dumps(cat)) == cat
    assert cat["spec"] == "pets" and cat["version"] == 1 and cat["completion"] == CAT


# ---- outputs: values and spans ------------------------------------------------------------------

def test_spans_are_where_the_text_is(cat):
    outputs = by_name(cat["outputs"])
    think = "It purrs and has four legs."
    assert outputs["think"]["span"] == [CAT.find(think), CAT.find(think) + len(think)]
    assert outputs["think"]["found"] and outputs["think"]["value"] == think
    start = CAT.find("kitten")
    assert outputs["reply"]["span"] == [start, start + len("kitten")]
    conf = outputs["conf"]
    assert conf["span"] == [CAT.find("confidence: 0.8"), len(CAT)]
    assert conf["value"] == "confidence: 0.8"
    assert conf["groups"]["value"] == {"text": "0.8", "span": [CAT.find("0.8"), len(CAT)]}


def test_enum_answer_is_the_member_with_the_span_it_was_read_from(cat):
    answer = by_name(cat["outputs"])["answer"]
    assert answer["found"] and answer["value"] == "Cat" and answer["type"] == "enum Animal"
    assert answer["text"] == "kitten"
    assert answer["span"] == [CAT.find("kitten"), CAT.find("kitten") + 6]
    assert answer["source"] == "reply as Animal"


def test_an_output_that_is_not_found(cat, program):
    note = by_name(cat["outputs"])["note"]
    assert note == {"name": "note", "type": "text", "source": 'tag "note"', "found": False,
                    "value": None, "span": None, "text": None,
                    "reason": "no <note>...</note> in the completion"}
    unknown = by_name(explain(program, "<answer>maybe</answer>", CAT_COLUMNS)["outputs"])["answer"]
    assert not unknown["found"] and unknown["value"] is None and unknown["text"] == "maybe"
    assert unknown["reason"] == '"maybe" names no Animal member or synonym'


def test_inputs_as_the_program_read_them(cat):
    assert cat["inputs"] == [
        {"name": "label", "type": "enum Animal", "value": "Cat", "valid": True, "unit": None},
        {"name": "legs", "type": "float", "value": 4.0, "valid": True, "unit": None},
        {"name": "mass", "type": "float", "value": 0.0, "valid": True, "unit": None},
    ]


# ---- lets and rules ------------------------------------------------------------------------------

def test_an_invalid_let_says_why(cat, dog):
    let = by_name(cat["lets"])["legs_per_kg"]
    assert let["valid"] is False and let["value"] is None
    assert let["reason"] == "a division by zero: `mass` is 0"
    assert let["reads"] == [{"name": "legs", "type": "float", "value": 4.0, "valid": True},
                            {"name": "mass", "type": "float", "value": 0.0, "valid": True}]
    assert by_name(dog["lets"])["legs_per_kg"] == {
        "name": "legs_per_kg", "type": "float", "valid": True, "value": 2.0, "reason": None,
        "reads": [{"name": "legs", "type": "float", "value": 4.0, "valid": True},
                  {"name": "mass", "type": "float", "value": 2.0, "valid": True}]}


def test_rules_say_whether_they_apply_and_how_true_they_are(cat):
    rules = rules_of(cat)
    dog_barks = rules["dog_barks"]
    assert dog_barks["applies"] is False and dog_barks["verdict"] == "does not apply"
    assert dog_barks["when"] == {"condition": "answer == Dog", "holds": False, "value": False}
    assert dog_barks["reason"] == "`when answer == Dog` does not hold"

    confident = rules["confident"]  # 0.8 against 0.9 with a ramp of 0.2: halfway
    assert confident["applies"] and confident["verdict"] == "partly holds"
    assert confident["truth"] == pytest.approx(0.5, abs=1e-6) and confident["soft"] == 0.2
    assert confident["reads"] == [{"name": "conf.value as float", "type": "float", "value": 0.8,
                                   "valid": True}]

    assert rules["noted"]["weight"] == 3.0 and rules["noted"]["verdict"] == "fails"
    sturdy = rules["sturdy"]  # its let has no value: counted as a failure
    assert sturdy["applies"] and not sturdy["valid"] and sturdy["verdict"] == "no value"
    assert sturdy["reason"] == ("a division by zero: `mass` is 0 in `legs_per_kg` (line 15); "
                                "counted as fail (0) by `invalid fail`")
    assert rules["correct"]["verdict"] == "holds" and rules["correct"]["condition"] == "answer == label"
    assert rules["correct"]["reads"] == [
        {"name": "answer", "type": "enum Animal", "value": "Cat", "valid": True},
        {"name": "label", "type": "enum Animal", "value": "Cat", "valid": True}]


def test_a_rule_whose_body_has_no_value_but_applies(dog):
    dog_barks = rules_of(dog)["dog_barks"]
    assert dog_barks["when"]["holds"] is True and dog_barks["applies"]
    assert dog_barks["verdict"] == "no value" and dog_barks["truth"] == 0.0
    assert dog_barks["reason"].startswith("`think` was not found (no <think>...</think> in the "
                                          "completion)")


# ---- levels, gate, reward --------------------------------------------------------------------

def test_levels_and_reward_arithmetic_when_every_gate_passes(cat):
    levels = by_name(cat["levels"])
    assert cat["gate_closed"] is None
    assert levels["format"]["arithmetic"] == "(1 + 1) / 2 = 1"
    # style: dog_barks does not apply; (1 x 0.5 + 3 x 0 + 1 x 0) / (1 + 3 + 1)
    assert levels["style"]["score"] == pytest.approx(0.1, abs=1e-6)
    assert levels["style"]["arithmetic"] == "(0.5 + 3 x 0 + 0) / 5 = 0.1"
    assert cat["reward"] == pytest.approx(1 * 1 + 2 * 1 + 0.5 * 0.1, abs=1e-6)
    assert cat["reward_arithmetic"] == "1 x 1 + 2 x 1 + 0.5 x 0.1 = 3.05"
    assert sum(lv["contribution"] for lv in cat["levels"]) == pytest.approx(cat["reward"])


def test_the_gate_that_closed_zeroes_the_later_levels(dog):
    assert dog["gate_closed"] == {"level": "format", "score": 0.5, "zeroed": ["accuracy", "style"]}
    levels = by_name(dog["levels"])
    assert levels["format"]["score"] == 0.5 and levels["format"]["zeroed_by"] is None
    for name in ("accuracy", "style"):
        assert levels[name]["score"] == 0.0 and levels[name]["zeroed_by"] == "format"
    # style on its own: dog_barks 0 (no value), confident 0 (no confidence), noted 0, sturdy 1
    assert levels["style"]["score_before_gate"] == pytest.approx(1 / 6, abs=1e-6)
    assert levels["style"]["arithmetic"] == ("gate `format` closed; its rules alone give "
                                             "(0 + 0 + 3 x 0 + 1) / 6 = 0.1667")
    assert dog["reward"] == 0.5
    assert dog["reward_arithmetic"] == "1 x 0.5 + 2 x 0 + 0.5 x 0 = 0.5"


def test_chat_messages_are_explained_like_their_text(program, cat):
    messages = [{"role": "user", "content": "what is it?"}, {"role": "assistant", "content": CAT}]
    assert explain(program, messages, CAT_COLUMNS) == cat


def test_rasters_and_computed_outputs():
    import numpy as np

    program = kdsl.loads("""
spec field version 1
input {
  pixels: raster[2] bands(R, N) nodata 0
}
output {
  reply: tag "answer"
  doubled: reply as float * 2
}
let greenness = mean(pixels.N - pixels.R)
level l {
  rule green: greenness > 0.1
  rule big: doubled > 5
}
""")
    pixels = np.array([[[0.1, 0.0], [0.2, 0.3]], [[0.5, 0.0], [0.6, 0.1]]])
    explanation = explain(program, "<answer>3</answer>", {"pixels": pixels})
    assert explanation["inputs"] == [{"name": "pixels", "type": "raster[2]",
                                      "value": {"shape": [2, 2, 2], "valid_pixels": 3},
                                      "valid": True, "unit": None}]
    assert by_name(explanation["lets"])["greenness"]["value"] == pytest.approx(0.2, abs=1e-6)
    doubled = by_name(explanation["outputs"])["doubled"]
    assert doubled["value"] == 6.0 and doubled["span"] == [8, 9] and doubled["text"] == "3"


# ---- rendering ------------------------------------------------------------------------------------

def test_plain_text_trace(cat, dog):
    text = render_text(cat)
    assert "\x1b" not in text
    for line in ("reward 1 x 1 + 2 x 1 + 0.5 x 0.1 = 3.05",
                 "every gate passed",
                 f"    {CAT}",
                 '    think   found  at 7..34  "It purrs and has four legs."',
                 '    answer  = Cat  at 50..56  "kitten"',
                 "    note    not found  (no <note>...</note> in the completion)",
                 "    legs_per_kg invalid: a division by zero: `mass` is 0  <- legs = 4, mass = 0",
                 "  style (weight 0.5): 0.1 = (0.5 + 3 x 0 + 0) / 5 = 0.1",
                 "    rule dog_barks: does not apply: `when answer == Dog` does not hold",
                 "    rule confident: partly holds (0.5): within the soft margin 0.2 of its threshold",
                 "        conf.value as float >= 0.9 soft 0.2"):
        assert line in text.splitlines(), line
    closed = render_text(dog).splitlines()
    assert ("gate `format` closed: it scored 0.5 < 1, so `accuracy`, `style` count 0") in closed
    assert ("  accuracy (weight 2): 0 (gate `format` closed; its rules alone give 0 / 1 = 0)"
            in closed)


def test_plain_text_wraps_the_completion_to_the_width(program):
    long = "<think>" + " ".join(["purring"] * 40) + "</think><answer>Cat</answer>"
    text = render_text(explain(program, long, CAT_COLUMNS), width=60)
    start = text.index("completion (")
    block = text[start:text.index("outputs:")].splitlines()[1:-1]
    assert len(block) > 3 and all(len(line) <= 60 and line.startswith("    ") for line in block)


def test_rich_rendering_marks_each_span(cat):
    from rich.console import Console as RichConsole

    out = io.StringIO()
    render(cat, RichConsole(file=out, force_terminal=True, color_system="standard", width=120))
    shown = out.getvalue()
    assert "\x1b[4;36mIt purrs and has four legs.\x1b[0m" in shown  # underlined, in think's colour
    assert "\x1b[4;35mkitten\x1b[0m" in shown  # reply and answer share one span and one colour
    plain = io.StringIO()
    render(cat, RichConsole(file=plain, width=120))
    assert "\x1b" not in plain.getvalue()
    assert plain.getvalue().splitlines() == render_text(cat, width=120).splitlines()


# ---- the command line -----------------------------------------------------------------------------

def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Console(out, err))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    lines = [{"completion": CAT, **CAT_COLUMNS, "source": "hand"},
             {"completion": DOG, **DOG_COLUMNS},
             {"completion": DOG, "label": "Parrot", "legs": 2, "mass": 1}]
    path.write_text(json.dumps(lines[0]) + "\n\n" + "\n".join(json.dumps(r) for r in lines[1:]) + "\n")
    return path


def test_cli_explains_a_row_of_a_file(spec_path, rows, program, dog):
    code, out, err = run("explain", str(spec_path), "--data", str(rows), "--row", "1")
    assert code == 0, err
    assert "gate `format` closed: it scored 0.5 < 1, so `accuracy`, `style` count 0" in out
    assert "reward 1 x 0.5 + 2 x 0 + 0.5 x 0 = 0.5" in out
    code, out, err = run("explain", str(spec_path), "--data", str(rows), "--row", "1",
                         "--format", "json")
    assert code == 0, err
    assert json.loads(out) == dog


def test_cli_explains_a_completion_given_on_the_command_line(spec_path, cat):
    code, out, err = run("explain", str(spec_path), "--completion", CAT, "--set", "label=Cat",
                         "--set", "legs=4", "--set", "mass=0", "--format", "json")
    assert code == 0, err
    assert json.loads(out) == cat
    code, out, _ = run("explain", str(spec_path), "--completion", CAT, "--set", "label=Cat",
                       "--set", "legs=4", "--set", "mass=0")
    assert code == 0 and "    note    not found  (no <note>...</note> in the completion)" in out


def test_cli_set_replaces_a_value_of_the_row(spec_path, rows):
    code, out, err = run("explain", str(spec_path), "--data", str(rows), "--row", "0",
                         "--set", "mass=2", "--format", "json")
    assert code == 0, err
    assert by_name(json.loads(out)["lets"])["legs_per_kg"]["value"] == 2.0


def test_cli_reads_parquet(spec_path, tmp_path, dog):
    import pyarrow
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pyarrow.Table.from_pylist([{"completion": CAT, **CAT_COLUMNS},
                                              {"completion": DOG, "label": "Cat", "legs": 4.0,
                                               "mass": 2.0}]), path)
    code, out, err = run("explain", str(spec_path), "--data", str(path), "--row", "1",
                         "--format", "json")
    assert code == 0, err
    assert json.loads(out) == dog


def test_cli_reads_csv_and_dataset_folders(spec_path, tmp_path, dog):
    import datasets

    rows = [{"completion": CAT, **CAT_COLUMNS}, {"completion": DOG, **DOG_COLUMNS}]
    path = tmp_path / "rows.csv"  # cells are text, read as the inputs' types; 2 lines in a cell
    path.write_text('completion,label,legs,mass\n"<answer>Cat</answer>\n",Cat,4,0\n'
                    f"{DOG},Cat,4,2\n{DOG},Cat,four,2\n")
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    for data in (path, folder):
        code, out, err = run("explain", str(spec_path), "--data", str(data), "--row", "1",
                             "--format", "json")
        assert code == 0, err
        assert json.loads(out) == dog
    code, _, err = run("explain", str(spec_path), "--data", str(path), "--row", "2")
    assert code == 1
    assert err.strip() == f"{path}:5: error: row 2, column `legs`: expected a number, got 'four'"


def test_cli_usage_errors_exit_2_with_a_message(spec_path, rows, tmp_path):
    code, out, err = run("explain", str(spec_path), "--data", str(rows), "--row", "3")
    assert code == 2 and out == ""
    assert err.strip() == f"kdsl explain: error: row 3 is out of range: {rows} has 3 rows (0 to 2)"
    code, _, err = run("explain", str(spec_path), "--data", str(tmp_path / "missing.jsonl"))
    assert code == 2 and f"no such file: {tmp_path / 'missing.jsonl'}" in err
    code, _, err = run("explain", str(tmp_path / "missing.kd"), "--completion", "x")
    assert code == 2 and "no such file" in err
    code, _, err = run("explain", str(spec_path), "--data", str(rows), "--row", "-1")
    assert code == 2 and "--row counts rows from 0" in err
    for argv in ([], ["--data", str(rows), "--completion", "x"]):
        code, _, err = run("explain", str(spec_path), *argv)
        assert code == 2 and "give --data FILE [--row N] or --completion TEXT" in err
    code, _, err = run("explain", str(spec_path), "--completion", "x", "--set", "novalue")
    assert code == 2 and "--set takes COLUMN=VALUE" in err
    code, _, err = run("explain", str(spec_path), "--completion", "x", "--set", "lable=Cat")
    assert code == 2
    assert "--set lable: `lable` is not an input of pets (did you mean `label`?)" in err
    assert run("explain", str(spec_path), "--completion", "x", "--format", "yaml")[0] == 2


def test_cli_bad_values_exit_1_naming_the_row_and_field(spec_path, rows, tmp_path):
    code, out, err = run("explain", str(spec_path), "--data", str(rows), "--row", "2")
    assert code == 1 and out == ""
    assert err.strip() == (f"{rows}:4: error: row 2, column `label`: expected one of Cat, Dog, "
                           "got 'Parrot'")
    code, _, err = run("explain", str(spec_path), "--completion", "x", "--set", "label=Cat",
                       "--set", "legs=four", "--set", "mass=1")
    assert code == 1
    assert err.strip() == "--set: error: column `legs`: expected a number, got 'four'"
    # An input that is not given is a missing value, and the trace says so.
    code, out, err = run("explain", str(spec_path), "--completion", "x", "--set", "label=Cat")
    assert code == 0, err
    assert "    legs = no value" in out.splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"completion": "x"}\n{not json\n{"completion": 5}\n')
    nulls = tmp_path / "nulls.jsonl"
    nulls.write_text('{"completion": null}\n{"label": "Cat"}\n')
    code, _, err = run("explain", str(spec_path), "--data", str(broken), "--row", "2")
    # The words of `kdsl score` for the same row (kdsl.io.rows), at the row's line.
    assert code == 1 and err.strip() == (f"{broken}:3: error: row 2, column `completion`: expected a "
                                         "string or a list of chat messages, got 5")
    for row, problem in ((3, "null"), (4, "missing")):
        code, _, err = run("explain", str(spec_path), "--data", str(nulls), "--row", str(row - 3))
        assert code == 1 and err.strip() == (f"{nulls}:{row - 2}: error: row {row - 3}, column "
                                             f"`completion`: {problem}; every row needs a completion")
    code, _, err = run("explain", str(spec_path), "--data", str(broken), "--row", "1")
    assert code == 1 and err.startswith(f"{broken}:2: error: row 1 is not a JSON object")
    # A row without an input's field is scored with that value missing, as `kdsl score` does.
    code, out, err = run("explain", str(spec_path), "--data", str(broken), "--row", "0")
    assert code == 0, err
    assert "    label = no value" in out.splitlines()


def test_tracing_is_opt_in(program):
    """Scoring without a trace keeps nothing extra and gives the same numbers as with one."""
    from kdsl.runtime import execute

    columns = {name: [CAT_COLUMNS[name]] for name in CAT_COLUMNS}
    trace: dict = {}
    traced = execute.run(program.module, [CAT], columns, trace=trace)
    plain = execute.run(program.module, [CAT], columns)
    assert traced.keys() == plain.keys()
    for key in plain:
        assert torch.equal(traced[key], plain[key])
    reply, answer = program.ir.outputs["reply"], program.ir.outputs["answer"]
    assert trace[f"s{reply.id}"] == [(CAT.find("kitten"), CAT.find("kitten") + 6)]
    assert trace[f"x{answer.id}"].tolist() == [0] and trace["t_correct"].tolist() == [1.0]


KNOWLEDGE = """spec knowledge version 1
input {
  hr: float
  cancer: bool
  dnbr: float
}
enum Severity { Unburned, Low, High }
output {
  reply: tag "answer"
  said: reply as Severity
}
points wells(hr, cancer) {
  tachycardia: hr > 100 -> 1.5
  malignancy: cancer -> 1
}
table severity(dnbr: float in [-2, 0.5)) -> Severity {
  < 0.1 -> Unburned
  [0.1, 0.27) -> Low
  [0.27, 0.5) -> High
}
let total = wells(hr, cancer)
level l {
  rule right: said == severity(dnbr)
  rule scored: total >= 1
}
"""


def test_tables_show_the_row_that_decided_and_sheets_each_criterion():
    program = kdsl.loads(KNOWLEDGE, "knowledge.kd")
    e = explain(program, "<answer>High</answer>", {"hr": 120.0, "cancer": False, "dnbr": 0.27})
    (call,) = e["tables"]
    assert call["table"] == "severity" and call["result"] == "High" and call["valid"]
    assert (call["row"], call["line"], call["row_text"]) == (3, 19, "[0.27, 0.5) -> High")
    assert call["args"] == [{"name": "dnbr", "type": "float", "value": 0.27, "valid": True, "from": "dnbr"}]
    (sheet,) = e["points"]
    assert sheet["sheet"] == "wells" and sheet["total"] == 1.5 and sheet["line"] == 21
    assert [(c["name"], c["holds"], c["gives"]) for c in sheet["criteria"]] == [
        ("tachycardia", True, 1.5), ("malignancy", False, 0.0)]
    text = render_text(e)
    assert "    severity(dnbr = 0.27) -> High  row 3, line 19: [0.27, 0.5) -> High" in text
    assert "    wells (line 21) = 1.5" in text
    assert "        tachycardia  holds     1.5 of 1.5" in text


def test_a_table_call_that_no_row_matches_says_so():
    program = kdsl.loads(KNOWLEDGE, "knowledge.kd")
    e = explain(program, "<answer>High</answer>", {"hr": 80.0, "cancer": True, "dnbr": 0.9})
    (call,) = e["tables"]
    assert call["row"] is None and not call["valid"]
    assert "    severity(dnbr = 0.9) no row matches" in render_text(e)
