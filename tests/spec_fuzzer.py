"""A grammar-aware mutator of specs, and the run of one mutant through the whole pipeline.

Mutants start from the shipped specs (``domain_specs/``, ``examples/``, the test fixtures). Each
applies one to four edits chosen to reach the corners where compilers break: tokens swapped for
others of their kind or for keywords, builtins and import aliases; numbers and strings swapped for
hostile ones (``1e309``, 5,000 digits, ``"\\x"``, ``"\\U00110000"``, lone surrogates, control and
bidirectional characters); expressions nested hundreds of levels deep or chained very long; lines
and blocks deleted, duplicated, swapped and spliced in from another spec. A mutant that checks
cleanly is compiled, loaded and scored on a batch built from its inputs' types with hostile
completions, so code generation and the runtime are fuzzed too.

``run_case`` returns what happened; anything but a ``KdslError`` escaping it is a bug. The test
suite runs a bounded slice (tests/test_fuzz_specs.py); ``benchmarks/fuzz_specs.py`` runs long
campaigns and times every case.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The spectral index library is a 72 KB list of defs: as a seed it makes every mutant slow and
# teaches little that the smaller specs do not; specs that import it still exercise it.
_SKIPPED_SEEDS = {"indices.kd"}

_TOKEN = re.compile(r'''(?P<string>"(?:[^"\\\n]|\\.)*")
                      |(?P<number>(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?)
                      |(?P<name>[A-Za-z_]\w*)
                      |(?P<comment>\#[^\n]*)
                      |(?P<newline>\n)
                      |(?P<space>[ \t]+)
                      |(?P<op>\*\*|\.\.|->|<=|>=|==|!=|\+-|.)''', re.X | re.S)

KEYWORDS = ("and", "or", "not", "in", "as", "if", "then", "else", "when", "soft", "weight", "on",
            "invalid", "rule", "level", "gate", "let", "def", "table", "input", "output", "enum",
            "import", "spec", "version", "advantage", "mask", "example", "expect", "tag", "regex",
            "within", "first", "last", "only", "true", "false", "none", "fixture", "skip",
            "logic", "bands", "nodata", "vector", "raster", "float", "int", "bool", "str", "box",
            "boxes", "completion", "_")
BUILTINS = ("present", "valid", "count", "length", "mentions", "mention_count", "repetition",
            "choice", "number", "matches", "match_count", "occurrences", "math_verify",
            "similarity", "normalize", "min", "max", "clamp", "iou", "area", "box_count",
            "matched_boxes", "default", "mean", "sum", "std", "frac", "quantile", "abs", "sqrt",
            "log", "exp", "floor", "ceil", "round", "cos", "sin", "batch_min", "batch_max",
            "batch_mean", "words", "chars", "tokens", "grpo", "rloo", "group", "batch", "sum",
            "per_level", "per_rule", "product", "godel", "lukasiewicz", "after", "before")
HOSTILE_NUMBERS = ("0", "1", "0.5", "1e309", "1e39", "3.4e38", "1e-400", "99999999999999999999",
                   "9" * 5000, ".5e5", "00", "4096", "4097", "2147483648", "1e300", "255", "-0")
ORDINARY_NUMBERS = ("0", "1", "2", "3", "0.5", "0.25", "0.3", "10", "100", "1e-3", "0.999")
OPERATOR_FAMILIES = (("<", "<=", ">", ">=", "==", "!="), ("+", "-", "*", "/", "%", "**"))
HOSTILE_STRINGS = ('""', '"\\x"', '"\\xZZ"', '"\\U00110000"', '"\\ud800"', '"\\udfff"', '"\\d+"',
                   '"\\b"', '"\\"', '"a\\"b"', '"\\n"', '"\r"', '"\x0c"', '"\\u202e"', '"\u202e"',
                   '"' + "a" * 10_000 + '"', '"(a+)+$"', '"(?P<x>a)(?P<x>b)"', '"["', '"answer"',
                   '"think"', '"<answer>"', '"a b"', '"../../../../etc/passwd"', '"/etc/passwd"',
                   '"/proc/self/environ"', '"\\x00"', '"\U0001F600"', '"\\\\"', '"*"', '"(?i)x"',
                   '"\\p{Nd}+"', '"' + "(" * 300 + '"', '"\\u0000"', '"~/x.kd"', '"C:/x.kd"')
HOSTILE_CHARACTERS = ("\x00", "\r", "\x0b", "\x1b", "\x7f", "\x85", "\u2028", "\u202e", "\u2066",
                      "\ud800", "\udfff", "\ufeff", "\U0001F600", "\t", "\\", '"', "{", "}", "(",
                      ")", "[", "]", ":", ",", "\n", "#")
HOSTILE_COMPLETIONS = ("", "<answer>1</answer>", "<think>a b c d e f</think><answer>0.5</answer>",
                       "a\ud800b<answer>x</answer>", "<answer>" * 500, "</answer>" * 500,
                       "1" * 2000, "(1,1)" * 500, "[0, 0, 10, 10]", "\x00\u202e\U0001F600",
                       "<answer>1e309</answer>", "<answer>nan</answer>",
                       "<think>" + "water " * 300 + "</think><answer>Water</answer>")


@dataclass
class Mutant:
    seed: Path
    text: str
    edits: tuple[str, ...]


@dataclass
class Outcome:
    kind: str  # "scored": checked, compiled and scored | "rejected": a KdslError
    stage: str  # how far it got: check | compile | score


def seed_specs() -> list[Path]:
    found = sorted((ROOT / "domain_specs").rglob("*.kd")) + sorted((ROOT / "examples").rglob("*.kd"))
    found += sorted((ROOT / "tests" / "fixtures").rglob("*.kd"))
    return [p for p in found if p.name not in _SKIPPED_SEEDS]


def tokens(text: str) -> list[tuple[str, str]]:
    return [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text)]


class Mutator:
    """Makes mutants of the seed specs, reproducibly from ``seed``."""

    def __init__(self, seed: int = 0, seeds: list[Path] | None = None):
        self.random = random.Random(seed)
        self.seeds = seeds or seed_specs()
        self.texts = {p: p.read_text(encoding="utf-8") for p in self.seeds}
        self.lines = [line for text in self.texts.values() for line in text.splitlines() if line.strip()]

    def mutant(self) -> Mutant:
        seed = self.random.choice(self.seeds)
        text = self.texts[seed]
        edits = []
        for _ in range(self.random.choice((1, 1, 2, 3, 4))):
            edit = self.random.choice(self._EDITS)
            text, what = edit(self, text)
            edits.append(what)
        return Mutant(seed, text, tuple(edits))

    # ---- edits: each returns the new text and a short description --------------------------------
    def _pick(self, toks, kinds):
        places = [i for i, (kind, _) in enumerate(toks) if kind in kinds]
        return self.random.choice(places) if places else None

    def replace_token(self, text):
        toks = tokens(text)
        i = self._pick(toks, ("name", "number", "string", "op"))
        if i is None:
            return text, "none"
        kind, old = toks[i]
        names = [t for k, t in toks if k == "name"]
        # Half the edits stay plausible (a name of the same spec, an ordinary number, an operator
        # of the same kind), so mutants get past the checker and reach code generation and the
        # runtime; the other half are hostile.
        plausible = self.random.random() < 0.5
        if kind == "name":
            new = self.random.choice(names if plausible else (*KEYWORDS, *BUILTINS, "x" * 300))
        elif kind == "number":
            new = self.random.choice(ORDINARY_NUMBERS if plausible else HOSTILE_NUMBERS)
        elif kind == "string":
            new = self.random.choice(HOSTILE_STRINGS)
        else:
            family = next((f for f in OPERATOR_FAMILIES if old in f), None)
            new = self.random.choice(family if plausible and family else (
                "+", "-", "*", "/", "%", "**", "<", ">=", "==", "..", ".", ",", ":", "(", ")",
                "{", "}", "[", "]", "->", "=", "|"))
        toks[i] = (kind, new)
        return "".join(t for _, t in toks), f"replace {old[:20]!r} -> {new[:20]!r}"

    def _edit_token(self, text, edit, verb):
        toks = tokens(text)
        i = self._pick(toks, ("name", "number", "string", "op"))
        if i is None:
            return text, "none"
        old = toks[i][1]
        edit(toks, i)
        return "".join(t for _, t in toks), f"{verb} {old[:20]!r}"

    def delete_token(self, text):
        return self._edit_token(text, lambda toks, i: toks.pop(i), "delete")

    def duplicate_token(self, text):
        return self._edit_token(text, lambda toks, i: toks.insert(i, toks[i]), "duplicate")

    def edit_lines(self, text):
        lines = text.split("\n")
        i = self.random.randrange(len(lines))
        choice = self.random.randrange(4)
        if choice == 0:
            del lines[i]
            what = "delete line"
        elif choice == 1:
            lines.insert(i, lines[i])
            what = "duplicate line"
        elif choice == 2:
            j = self.random.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            what = "swap lines"
        else:
            lines.insert(i, self.random.choice(self.lines))
            what = "splice a line from another spec"
        return "\n".join(lines), what

    def duplicate_block(self, text):
        starts = [m.start() for m in re.finditer(r"^(?:level|table|input|output|enum|example)\b",
                                                 text, re.M)]
        if not starts:
            return text, "none"
        start = self.random.choice(starts)
        end = text.find("\n}", start)
        if end < 0:
            return text, "none"
        block = text[start:end + 2]
        return text + "\n" + block + "\n", "duplicate block"

    def nest(self, text):
        toks = tokens(text)
        i = self._pick(toks, ("name", "number"))
        if i is None:
            return text, "none"
        depth = self.random.choice((2, 10, 50, 199, 201, 400, 1000, 3000))
        form = self.random.randrange(5)
        inner = toks[i][1]
        if form == 0:
            new = "not " * depth + inner
        elif form == 1:
            new = "-" * depth + inner
        elif form == 2:
            new = "(" * depth + inner + ")" * depth
        elif form == 3:
            new = f"{inner} ** " * depth + "1"
        else:
            new = f"if {inner} > 0 then 1 else " * depth + "0"
        toks[i] = (toks[i][0], new)
        return "".join(t for _, t in toks), f"nest {depth} deep (form {form})"

    def chain(self, text):
        toks = tokens(text)
        i = self._pick(toks, ("name", "number"))
        if i is None:
            return text, "none"
        length = self.random.choice((10, 100, 300, 2000))
        op = self.random.choice(("+", "*", "and", "or", "-"))
        inner = toks[i][1]
        toks[i] = (toks[i][0], f" {op} ".join([inner] * length))
        return "".join(t for _, t in toks), f"chain {length} x {op}"

    def insert_character(self, text):
        at = self.random.randrange(len(text) + 1)
        char = self.random.choice(HOSTILE_CHARACTERS)
        return text[:at] + char + text[at:], f"insert U+{ord(char):04X}"

    def many_lets(self, text):
        count = self.random.choice((50, 250, 1000))
        chained = self.random.random() < 0.5
        lines = [f"let zz0 = {self.random.choice(HOSTILE_NUMBERS[:4])}"]
        for k in range(1, count):
            lines.append(f"let zz{k} = zz{k - 1} + 1" if chained else f"let zz{k} = {k}")
        return text + "\n" + "\n".join(lines) + "\n", f"{count} {'chained ' if chained else ''}lets"

    def def_tower(self, text):
        depth = self.random.choice((5, 30, 60, 300))
        lines = ["def zf0(x) = x + 1"]
        lines += [f"def zf{k}(x) = zf{k - 1}(x) + zf{k - 1}(x)" for k in range(1, depth)]
        lines.append(f"let zftop = zf{depth - 1}(1)")
        return text + "\n" + "\n".join(lines) + "\n", f"{depth} defs calling defs twice"

    _EDITS = (replace_token, replace_token, replace_token, delete_token, duplicate_token,
              edit_lines, edit_lines, duplicate_block, nest, chain, insert_character, many_lets,
              def_tower)


# ---- running a mutant ----------------------------------------------------------------------------
def _column(kind: str, options: dict, n: int, rng: np.random.Generator, module) -> list:
    """Values of one input for ``n`` rows: ordinary ones and the edge cases a dataset can hold."""
    if kind in ("float", "int"):
        pool = [0.5, -1.0, 0, 3, None, math.nan, math.inf, 10**400, 1e30]
    elif kind == "bool":
        pool = [True, False, None]
    elif kind == "enum":
        members = module.ENUMS[options["enum"]]
        pool = [members[0], members[-1], None]
    elif kind == "str":
        pool = ["a", "", "a\ud800b", None, "Water"]
    elif kind == "vector":
        size = options["size"]
        pool = [[0.1] * size, [math.nan] * size, None, list(rng.uniform(-1, 1, size))]
    elif kind == "box":
        pool = [[0, 0, 10, 10], [5, 5, 1, 1], None, [0, 0, math.inf, 1]]
    elif kind == "boxes":
        pool = [[[0, 0, 10, 10]], [], None, [[0, 0, 1, 1], [2, 2, 3, 3]]]
    elif kind == "raster":
        size = options["size"]
        patch = rng.uniform(0, 1, (size, 3, 3))
        patch[0, 0, 0] = math.nan
        pool = [patch, None, np.zeros((size, 2, 2))]
    else:  # pragma: no cover - the checker admits no other kinds
        raise AssertionError(kind)
    return [pool[i % len(pool)] for i in range(n)]


def run_case(mutant: Mutant) -> Outcome:
    """Check the mutant; if it checks, compile, load and score it. Raises whatever the pipeline
    raises but a ``KdslError``."""
    from kdsl.compiler import check_source
    from kdsl.errors import KdslError
    from kdsl.runtime.program import Program

    # Named after its seed, so the seed's imports resolve beside it as they would for the seed.
    result = check_source(mutant.text, str(mutant.seed))
    if result.errors or result.program is None or not result.program.levels:
        return Outcome("rejected", "check")
    try:
        program = Program(result.program, result.warnings)
    except KdslError:
        return Outcome("rejected", "compile")
    n = len(HOSTILE_COMPLETIONS)
    rng = np.random.default_rng(0)
    columns = {name: _column(kind, options, n, rng, program.module)
               for name, kind, _node, options in program.module.INPUTS}
    try:
        scores = program.score(list(HOSTILE_COMPLETIONS), **columns)
    except KdslError:
        return Outcome("rejected", "score")
    if not bool(scores.reward.isfinite().all()):
        raise AssertionError(f"a non-finite reward: {scores.reward.tolist()}")
    return Outcome("scored", "score")
