"""Text semantics for the reference interpreter, one completion at a time, written from
docs/language.md and independent of ``kdsl.runtime.text``: Python's ``re`` where the runtime uses
RE2, plain loops where it uses batched tricks. A bug in either shows up as a disagreement.

A span is ``(start, end)`` into the completion, or ``None`` (nothing found).
"""

from __future__ import annotations

import math
import re
import unicodedata

from kdsl.limits import MAX_BOXES  # a documented limit, not a helper

Span = tuple[int, int] | None

# Characters stripped from the ends of a term before it is compared ("**Forest.**" -> forest).
EDGE_PUNCTUATION = frozenset(" \t\r\n\"'`*_.,;:!?()[]{}<>")
# \w in the runtime's patterns is ASCII (RE2's); these are spelled out so Python's Unicode \w
# does not creep in.
WORD = "A-Za-z0-9_"


def strip_edges(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] in EDGE_PUNCTUATION:
        start += 1
    while end > start and text[end - 1] in EDGE_PUNCTUATION:
        end -= 1
    return text[start:end]


def normalize_term(text: str) -> str:
    words = strip_edges(text).casefold().split()
    return strip_edges(" ".join(words))


def piece(completion: str, span: Span) -> str:
    return completion[span[0]:span[1]]


# ---- extractors -----------------------------------------------------------------------------------
def tag(completion: str, within: Span, name: str, position: str) -> Span:
    """The content of <name>...</name> in ``within``: after the first, last or only opening tag,
    up to the next closing tag."""
    if within is None:
        return None
    opening, closing = f"<{name}>", f"</{name}>"
    start, end = within
    openings = []
    at = start
    while True:
        found = completion.find(opening, at, end)
        if found < 0:
            break
        openings.append(found)
        at = found + len(opening)
    if not openings or (position == "only" and len(openings) > 1):
        return None
    begin = (openings[-1] if position == "last" else openings[0]) + len(opening)
    close = completion.find(closing, begin, end)
    return None if close < 0 else (begin, close)


def tag_count(completion: str, within: Span, name: str) -> float | None:
    if within is None:
        return None
    return float(len(re.findall(re.escape(f"<{name}>"), piece(completion, within))))


def regex_groups(completion: str, within: Span, pattern: str) -> dict:
    """The first match in ``within``: each named group's span, and 0 for the whole match. The
    pattern sees the span alone (its `^` is the span's start)."""
    compiled = re.compile(pattern)
    names = list(compiled.groupindex)
    match = None if within is None else compiled.search(piece(completion, within))
    out = {}
    for group in names + [0]:
        if match is None or match.start(group) < 0:
            out[group] = None
        else:
            out[group] = (within[0] + match.start(group), within[0] + match.end(group))
    return out


def matches(completion: str, span: Span, pattern: str) -> float:
    return 0.0 if re.search(pattern, piece(completion, span)) is None else 1.0


def match_count(completion: str, span: Span, pattern: str) -> float:
    return float(sum(1 for _ in re.finditer(pattern, piece(completion, span))))


def occurrences(completion: str, span: Span, literal: str) -> float:
    return float(piece(completion, span).count(literal))


# ---- conversions ----------------------------------------------------------------------------------
# A number as written in prose: optional sign, digits with or without thousands groups, a
# fraction, an exponent and a trailing percent sign (which is dropped: "45%" is 45).
_NUMBER = re.compile(
    r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?%?"
    r"|[+-]?\.[0-9]+(?:[eE][+-]?[0-9]+)?%?")
_PLAIN = r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"


def _finite(token: str) -> float | None:
    value = float(token.rstrip("%").replace(",", ""))
    return value if math.isfinite(value) else None


def number(completion: str, span: Span) -> float | None:
    if span is None:
        return None
    found = _NUMBER.search(piece(completion, span))
    return None if found is None else _finite(found.group())


def text_value(completion: str, span: Span) -> str | None:
    return None if span is None else piece(completion, span).strip()


def box(completion: str, span: Span) -> list | None:
    """The first four numbers of the span as x1, y1, x2, y2, when the corners are in order."""
    if span is None:
        return None
    numbers = []
    for token in re.findall(_PLAIN, piece(completion, span)):
        value = _finite(token)
        if value is None:
            break
        numbers.append(value)
        if len(numbers) == 4:
            break
    if len(numbers) < 4 or numbers[2] < numbers[0] or numbers[3] < numbers[1]:
        return None
    return numbers


_N = rf"\s*({_PLAIN})\s*"
_BOX = re.compile(rf"\[{_N},{_N},{_N},{_N}\]|\({_N},{_N},{_N},{_N}\)|\({_N},{_N}\)\s*,?\s*\({_N},{_N}\)")


def boxes(completion: str, span: Span) -> list | None:
    """Every box written in the span: [x1, y1, x2, y2], (x1, y1, x2, y2) or (x1, y1), (x2, y2);
    None past MAX_BOXES of them. Boxes with a non-finite number are left out."""
    if span is None:
        return None
    found = []
    for count, match in enumerate(_BOX.finditer(piece(completion, span))):
        if count == MAX_BOXES:
            return None
        values = [float(g) for g in match.groups() if g is not None]
        if all(math.isfinite(v) for v in values):
            found.append(values)
    return found


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation out, articles out, spaces collapsed."""
    lowered = text.casefold()
    no_punctuation = "".join(" " if unicodedata.category(c)[0] == "P" else c for c in lowered)
    words = [w for w in no_punctuation.split() if w not in ("a", "an", "the")]
    return " ".join(words)


# ---- measures -------------------------------------------------------------------------------------
def length(completion: str, span: Span, unit: str) -> float:
    text = piece(completion, span)
    return float(len(text) if unit == "chars" else len(text.split()))


def _term_pattern(terms) -> re.Pattern:
    # Whole words: no word character (Unicode's, as in Python) right before or after a term
    # that starts or ends with one. Longer terms first, so "open water" wins over "water".
    alternatives = []
    for term in sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True):
        left = r"(?<!\w)" if term[0].isalnum() or term[0] == "_" else ""
        right = r"(?!\w)" if term[-1].isalnum() or term[-1] == "_" else ""
        alternatives.append(left + re.escape(term) + right)
    return re.compile("|".join(alternatives) or r"(?!)", re.IGNORECASE)


def mentions(completion: str, span: Span, terms, count: bool) -> float:
    """Whether (or how often) a term occurs as a whole word or phrase, ignoring case."""
    found = _term_pattern(terms).findall(piece(completion, span))
    return float(len(found)) if count else float(bool(found))


def repetition(completion: str, span: Span, n: int) -> float:
    """1 - distinct word n-grams / all word n-grams (open-r1's measure; 0 when too short)."""
    words = piece(completion, span).lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def choice(completion: str, span: Span, letters: str) -> str | None:
    """The letter answered: the span itself once brackets and punctuation are stripped, or else
    the first of ``letters`` standing alone (no word character on either side)."""
    text = piece(completion, span)
    bare = strip_edges(text)
    if len(bare) == 1 and bare in letters:
        return bare
    for i, character in enumerate(text):
        if character not in letters:
            continue
        before = text[i - 1] if i > 0 else ""
        after = text[i + 1] if i + 1 < len(text) else ""
        if not re.fullmatch(f"[{WORD}]", before or "-") and not re.fullmatch(f"[{WORD}]", after or "-"):
            return character
    return None


# ---- decision tables ------------------------------------------------------------------------------
def cell_accepts(cell, value) -> bool:
    """Whether one table cell (a kdsl.frontend.ast.Cell) accepts a value: a member's name, a bool or a number."""
    if cell.kind == "any":
        return True
    if cell.kind in ("name", "set"):
        name = ("true" if value else "false") if isinstance(value, bool) else value
        return name in cell.names
    if isinstance(value, (bool, str)):
        return False
    if cell.kind == "compare":
        return {"<": value < cell.low, "<=": value <= cell.low, ">": value > cell.low,
                ">=": value >= cell.low, "==": value == cell.low, "!=": value != cell.low}[cell.op]
    above = value > cell.low if cell.low_open else value >= cell.low
    below = value < cell.high if cell.high_open else value <= cell.high
    return above and below


def row_accepts(row, values) -> bool:
    return all(cell_accepts(cell, value) for cell, value in zip(row.cells, values))


# ---- math answers and meaning: the libraries docs/language.md names, called directly ----------
MATH_CHARACTERS = 20_000  # "only the last 20,000 characters of an answer are read"


def math_equal(answer: str, gold: str, mode: str = "default") -> float | None:
    """docs/language.md's `math_verify(t, gold [, mode])`, as open-r1's rewards call math-verify:
    ``default`` is `accuracy_reward` (the gold with math-verify's default extraction, the answer
    as proper LaTeX with its boxes tried first, `verify(gold, answer)`), ``open-r1-length`` the
    check of `len_reward` (the gold as LaTeX only, a box left as written, `verify(answer, gold)`).
    None where the gold does not parse or math-verify fails."""
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    boxed = "all" if mode == "default" else True
    answer_config = [LatexExtractionConfig(
        normalization_config=NormalizationConfig(nits=False, malformed_operators=False,
                                                 basic_latex=True, boxed=boxed, units=True),
        boxed_match_priority=0, try_extract_without_anchor=False)]
    gold_config = ([LatexExtractionConfig(), ExprExtractionConfig()] if mode == "default"
                   else [LatexExtractionConfig()])
    try:
        gold_parsed = parse(gold[-MATH_CHARACTERS:], extraction_config=gold_config,
                            extraction_mode="first_match")
        if len(gold_parsed) == 0:
            return None
        answer_parsed = parse(answer[-MATH_CHARACTERS:], extraction_config=answer_config,
                              extraction_mode="first_match")
        if mode == "default":
            return 1.0 if verify(gold_parsed, answer_parsed) else 0.0
        return 1.0 if verify(answer_parsed, gold_parsed) else 0.0
    except Exception:  # noqa: BLE001 - any failure of the library on a row: no value
        return None


def cosine_similarity(text: str, other: str, model) -> float:
    """docs/language.md's `similarity(t, other)`: the cosine of the two sentence embeddings, one
    pair at a time (the runtime embeds a batch's distinct texts in one call)."""
    if isinstance(model, str):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(model, device="cpu")
    a, b = model.encode([text, other])
    dot = sum(float(x) * float(y) for x, y in zip(a, b))
    norm = math.sqrt(sum(float(x) ** 2 for x in a)) * math.sqrt(sum(float(y) ** 2 for y in b))
    return dot / norm
