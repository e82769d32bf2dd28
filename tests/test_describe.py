"""The plain-language rendering of specs (kdsl.tools.describe): a golden file per shipped spec in
tests/fixtures/describe/NAME.txt (KDSL_UPDATE_GOLDEN=1 rewrites them, to be read before they are
committed), sentences for each construct, the level filter and the prompt guidance."""

from pathlib import Path

import pytest

import kdsl
from conftest import FIXTURES, golden
from kdsl.compiler import compile_ir, read_spec_file
from kdsl.errors import KdslError
from kdsl.runtime.program import Program
from kdsl.tools.describe import GUIDANCE_HEADER, describe, guidance

REPO = Path(__file__).resolve().parents[1]
# The spectral library is generated (280-odd index formulas, rewritten whenever spyndex is
# upgraded) and has no levels: its golden file would be its own source again, with nothing for an
# expert to review. test_library_without_levels checks it instead.
NO_GOLDEN = {"indices"}
SHIPPED = sorted([*REPO.glob("examples/**/*.kd"), *REPO.glob("domain_specs/**/*.kd")])


def _program(path: Path) -> Program:
    """A shipped spec as a program; a library without levels, which `kdsl.load` refuses to
    score, is compiled all the same, since it can still be described."""
    ir, _ = compile_ir(read_spec_file(path), str(path))
    return Program(ir) if not ir.levels else kdsl.load(path)


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.stem not in NO_GOLDEN],
                         ids=lambda p: p.stem)
def test_shipped_spec_golden(path: Path):
    golden(FIXTURES / "describe" / f"{path.stem}.txt", describe(_program(path)))


def test_every_shipped_spec_has_a_golden_file():
    stems = [p.stem for p in SHIPPED]
    assert len(stems) == len(set(stems)), "two shipped specs would share a golden file"
    have = {p.stem for p in (FIXTURES / "describe").glob("*.txt")}
    assert have == set(stems) - NO_GOLDEN


def test_library_without_levels():
    text = describe(_program(REPO / "domain_specs/spectral/indices.kd"))
    assert text.startswith("# indices, version 1\n")
    assert "This spec has no levels, so it gives no reward by itself" in text
    assert "- NDVI(N, R) = (N - R) / (N + R)\n" in text
    written = (REPO / "domain_specs/spectral/indices.kd").read_text(encoding="utf-8")
    defs = sum(1 for line in written.splitlines() if line.startswith("def "))
    listed = text.split("## Definitions\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(listed) == defs
    assert "## Level" not in text and "## Scoring" not in text


CONSTRUCTS = '''
spec constructs version 1
input {
  label: enum Cover { Forest ("woodland"), Water }
  sr: vector[2] bands(Red, Nir)
  age: int in 0..120
  flag: bool
  reference: str
  solution: str
}
output {
  think: tag "think"
  reply: tag "answer"
  answer: reply as Cover
  stated: reply as float
}
def ratio(a, b) = (a - b) / (a + b)
let ndvi = ratio(sr.Nir, sr.Red)
table band(x: float) -> Cover {
  < 0.3  -> Water
  >= 0.3 -> Forest
}
level format gate {
  rule has_answer: count(reply) == 1
  rule reasons: length(think, words) >= 5 on think
}
level accuracy weight 2 {
  rule correct: when present(label): answer == label
  rule graded: clamp(stated / 10, 0, 1)
  rule solved: math_verify(reply, solution) invalid pass
}
level knowledge weight 0.5 {
  rule green: when answer == Forest: ndvi >= 0.450 soft 0.2
  rule both_soft: ndvi <= 0.9 and stated > -1.5 soft 0.1
  rule near: abs(stated - ndvi) <= 0.05 soft 0.05
  rule table_agrees: answer == band(ndvi) invalid skip
  rule ranged: age in 18..65
  rule either: answer not in {Forest} or not flag
  rule chain: 0 <= ndvi < 1
  rule cites: mentions(think, "NDVI" | "infrared")
  rule quiet: not mentions(think, "guess")
  rule same: normalize(reply) == normalize(reference) weight 2
  rule close: similarity(reply, reference) >= 0.8
  rule no_steps: not matches(think, "Step [0-9]") and stated != 3
  rule tiny: stated > 1e-3
}
advantage rloo(aggregate = per_rule)
mask after "</answer>"
'''


@pytest.fixture(scope="module")
def constructs() -> Program:
    return kdsl.loads(CONSTRUCTS)


def _bullet(text: str, rule: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(f"- {rule}: ")]
    assert len(lines) == 1, f"rule {rule} is described {len(lines)} times"
    return lines[0].removeprefix(f"- {rule}: ")


def _section(text: str, heading: str) -> str:
    return text.split(f"{heading}\n", 1)[1].split("\n\n", 1)[0]


@pytest.mark.parametrize("rule, sentence", [
    ("has_answer", "the completion must contain exactly one <answer> tag."),
    ("correct", "when label is given, answer must be label."),
    ("green", "when answer is Forest, ndvi must be at least 0.450. Partial credit below 0.450, "
              "falling linearly to none at 0.25."),
    ("both_soft", "ndvi must be at most 0.9, and stated must be above -1.5. Partial credit: ndvi "
                  "above 0.9 earns credit falling linearly to none at 1; stated below -1.5 earns "
                  "credit falling linearly to none at -1.6."),
    ("near", "stated must be within 0.05 of ndvi. Partial credit beyond a difference of 0.05, "
             "falling linearly to none at a difference of 0.1."),
    ("graded", "the rule earns clamp(stated / 10, 0, 1) (a graded score: below 0 counts as 0, "
               "above 1 as 1)."),
    ("reasons", "think must be at least 5 words long. It judges think, the text inside the first "
                "<think>...</think>: in training, its credit goes to those tokens."),
    ("solved", "the math answer in reply must equal solution (checked with math-verify). Where it "
               "cannot be computed (a value is missing), it counts as met."),
    ("table_agrees", "answer must be band(ndvi). Where it cannot be computed (a value is "
                     "missing), it is left out."),
    ("ranged", "age must be between 18 and 65 (both included)."),
    ("either", "at least one of these must hold: answer is not Forest; or flag is false."),
    ("chain", "ndvi must be at least 0 and below 1."),
    ("cites", 'think must mention at least one of "NDVI", "infrared" (as a whole word, in any '
              'case).'),
    ("quiet", 'think must not mention "guess" (as a whole word, in any case).'),
    ("same", "reply must match reference word for word (in any case, ignoring punctuation and the "
             "articles a, an and the). It weighs 2 in the weighted mean of its level."),
    ("close", "the similarity in meaning of reply and reference must be at least 0.8."),
    ("no_steps", 'think must not match the pattern "Step [0-9]", and stated must not equal 3.'),
    ("tiny", "stated must be above 1e-3."),
])
def test_rule_sentences(constructs: Program, rule: str, sentence: str):
    assert _bullet(describe(constructs), rule) == sentence


def test_levels_gates_and_weights(constructs: Program):
    text = describe(constructs)
    gate = "Gate: unless every rule of this level is fully met, every later level scores 0."
    assert f"## Level format (gate, weight 1)\n{gate}\n" in text
    assert "## Level accuracy (weight 2)\n- correct:" in text
    assert text.count(gate) == 1
    assert text.index("## Level format") < text.index("## Level accuracy") < text.index(
        "## Level knowledge")
    assert "A gate level that is not fully met sets every later level to 0." in text


def test_table_rows(constructs: Program):
    text = describe(constructs)
    assert ("- band(x) -> Cover: a decision table; the first row that matches gives the result, "
            "and where no row matches there is no value.\n"
            "    x      | Cover\n"
            "    -------+-------\n"
            "    < 0.3  | Water\n"
            "    >= 0.3 | Forest\n") in text


def test_definitions_once(constructs: Program):
    text = describe(constructs)
    definition = "- ndvi = ratio(sr.Nir, sr.Red) = (sr.Nir - sr.Red) / (sr.Nir + sr.Red)"
    assert text.count(definition) == 1
    assert text.count("(sr.Nir - sr.Red)") == 1  # the rules name the let, never its formula
    assert "- ratio(a, b) = (a - b) / (a + b)" in _section(text, "## Definitions")


def test_front_matter(constructs: Program):
    text = describe(constructs)
    assert text.startswith("# constructs, version 1\n")
    assert "- label: one of Forest, Water (Cover)" in _section(text, "## Inputs (columns of the dataset)")
    assert "- sr: 2 numbers named Red, Nir" in text
    assert "- age: a whole number from 0 to 120" in text
    outputs = _section(text, "## Read from the completion")
    assert "- reply: the text inside the first <answer>...</answer>" in outputs
    assert "- answer: reply read as one of Forest, Water (when it says nothing else)" in outputs
    assert "- stated: the first number in reply" in outputs
    assert '  - Forest: also "woodland"' in _section(text, "## Categories")


def test_functions_and_training(constructs: Program):
    text = describe(constructs)
    functions = _section(text, "## Functions")
    assert functions.startswith("- similarity(a, b): ")
    assert "- clamp(x, low, high): " in functions
    training = _section(text, "## Training")
    assert training.splitlines() == [
        "- Advantages: rloo(aggregate = per_rule): each rule's truth, minus its mean over the "
        "other completions for the same prompt, summed with the weights.",
        '- The tokens after "</answer>" are left out of the training loss.',
    ]


def test_logic_is_said_when_not_the_default():
    text = describe(kdsl.loads(CONSTRUCTS.replace("version 1", "version 1 logic godel", 1)))
    assert "Partial truths combine by Goedel logic" in text
    assert "Partial truths combine" not in describe(kdsl.loads(CONSTRUCTS))


def test_levels_filter(constructs: Program):
    text = describe(constructs, ["knowledge"])
    assert text.startswith("## Level knowledge (weight 0.5)\n")
    for absent in ("# constructs", "## Inputs", "## Read from the completion", "## Scoring",
                   "## Categories", "## Training", "## Level format", "## Level accuracy",
                   "has_answer", "graded"):
        assert absent not in text
    definitions = _section(text, "## Definitions").splitlines()
    # Only what the knowledge rules use: the outputs they read, then lets, defs and tables.
    assert definitions[:4] == [
        "- think: the text inside the first <think>...</think>",
        "- reply: the text inside the first <answer>...</answer>",
        "- answer: reply read as one of Forest, Water (when it says nothing else)",
        "- stated: the first number in reply",
    ]
    assert "- ndvi = ratio(sr.Nir, sr.Red) = (sr.Nir - sr.Red) / (sr.Nir + sr.Red)" in definitions
    format_only = describe(constructs, ["format"])
    assert "## Definitions\n- think: " in format_only
    assert "ndvi" not in format_only and "- answer:" not in format_only


def test_levels_follow_spec_order(constructs: Program):
    assert describe(constructs, ["knowledge", "format"]) == describe(constructs, ["format", "knowledge"])
    text = describe(constructs, ["knowledge", "format"])
    assert text.index("## Level format") < text.index("## Level knowledge")


def test_unknown_level(constructs: Program):
    with pytest.raises(KdslError, match=r"no level `knowledg` \(did you mean `knowledge`\?\)"):
        describe(constructs, ["knowledg"])
    with pytest.raises(KdslError, match="its levels are format, accuracy, knowledge"):
        guidance(constructs, ["style"])


def test_guidance_holds_exactly_the_levels_asked(constructs: Program):
    text = guidance(constructs, ["accuracy", "knowledge"])
    assert text.startswith("Guidance:\n")
    assert text == f"{GUIDANCE_HEADER}\n\n{describe(constructs, ['accuracy', 'knowledge'])}"
    asked = {"correct", "graded", "solved", "green", "both_soft", "near", "table_agrees", "ranged",
             "either", "chain", "cites", "quiet", "same", "close", "no_steps", "tiny"}
    described = {line[2:].split(":", 1)[0] for line in text.splitlines()
                 if line.startswith("- ") and line[2:].split(":", 1)[0] in constructs.rule_names}
    assert described == asked
    assert "has_answer" not in text and "## Level format" not in text


def test_guidance_for_landsat_knowledge():
    program = kdsl.load(REPO / "examples/landsat_landcover.kd")
    text = guidance(program, ["knowledge"])
    assert ("- water_claim_needs_water: when answer is Water, mndwi must be above 0. Partial "
            "credit below 0, falling linearly to none at -0.2.") in text
    assert "- mndwi = normalized_difference(sr.B3, sr.B6) = (sr.B3 - sr.B6) / (sr.B3 + sr.B6)" in text
    for other in ("reasons_first", "one_answer", "known_class", "correct:"):
        assert other not in text


def test_imported_definitions_keep_their_qualified_names():
    text = describe(kdsl.load(REPO / "examples/medical/curb65_grading.kd"))
    assert "It uses the definitions of medical/curb65 (as curb65)." in text
    assert ("- risk_group_matches: stated_risk must be curb65.risk_group(curb65_score). It judges "
            "risk_text") in text
    assert ("- curb65.score(confusion, urea_mmol_per_l, respiratory_rate, systolic_bp, diastolic_bp, "
            "age_years): a points sheet") in text
    assert "    urea_above_7                | urea_mmol_per_l is above 7" in text
    assert "- curb65.risk_group(score) -> RiskGroup: a decision table" in text
    assert "- curb65.RiskGroup: Low, Moderate, High" in text


def test_deterministic():
    path = REPO / "domain_specs/medical/vqa.kd"
    assert describe(kdsl.load(path)) == describe(kdsl.load(path))
    assert describe(kdsl.loads(CONSTRUCTS)) == describe(kdsl.loads(CONSTRUCTS))
