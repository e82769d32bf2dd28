"""The text phase of compiled programs: extractors over a batch of completions.

Completions come from a policy model and may be hostile (huge, adversarial), so every function
here runs in time linear in the text: literal searches with ``str.find``/``str.count``, and RE2
(``re2``, linear-time) for patterns. A span list has one ``(start, end)`` or ``None`` (not found)
per sample; value functions return plain lists ``(values, valid)`` that the caller turns into
tensors.
"""

from __future__ import annotations

import math
import re
import unicodedata
from functools import lru_cache

import re2

from kdsl.limits import MAX_BOXES

Span = tuple[int, int] | None

# Python's `re` is used only for these fixed patterns, which cannot backtrack badly: each is a
# sequence of simple classes with no nested quantifiers.
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?|[-+]?\.\d+(?:[eE][-+]?\d+)?%?")
# Coordinates are separated by commas, so a box reads plain numbers without thousands separators.
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_WORD_EDGE_PUNCT = " \t\r\n\"'`*_.,;:!?()[]{}<>"
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (the replacement character).

    A Python string can hold lone surrogates (``"a\\ud800b"``: a tokenizer or a JSON file can make
    them) although they are not characters, and UTF-8 cannot encode them, so RE2 and the
    libraries behind math_verify() and similarity() reject them. Replacing each by one character
    keeps every character offset, so spans still point into the original text.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def normalize_term(text: str) -> str:
    """The form used to match enum members and synonyms: case-folded, spaces collapsed,
    surrounding quotes, brackets and punctuation removed ("**Forest.**" -> "forest")."""
    return " ".join(text.strip(_WORD_EDGE_PUNCT).casefold().split()).strip(_WORD_EDGE_PUNCT)


def whole(texts: list[str]) -> list[Span]:
    return [(0, len(t)) for t in texts]


def _slice(text: str, span: Span) -> str:
    return text[span[0]:span[1]]


# ---- tags ---------------------------------------------------------------------------------------
def tag(texts: list[str], within: list[Span], name: str, position: str) -> list[Span]:
    """The content of ``<name>...</name>`` inside each span (first, last or only occurrence)."""
    open_tag, close_tag = f"<{name}>", f"</{name}>"
    width = len(open_tag)
    out: list[Span] = []
    append = out.append
    for text, span in zip(texts, within):
        if span is None:
            append(None)
            continue
        start, end = span
        if position == "last":
            i = text.rfind(open_tag, start, end)
        else:
            i = text.find(open_tag, start, end)
            if position == "only" and i >= 0 and text.find(open_tag, i + width, end) >= 0:
                append(None)
                continue
        if i < 0:
            append(None)
            continue
        j = text.find(close_tag, i + width, end)
        append(None if j < 0 else (i + width, j))
    return out


def tag_count(texts: list[str], within: list[Span], name: str) -> tuple[list[float], list[bool]]:
    """How many times ``<name>`` opens inside each span (a closing tag is not required, as in
    open-r1's tag-count reward, which counts the literal opening and closing strings)."""
    open_tag = f"<{name}>"
    values = [0.0 if s is None else float(t.count(open_tag, s[0], s[1])) for t, s in zip(texts, within)]
    return values, [s is not None for s in within]


# ---- regexes ------------------------------------------------------------------------------------
class RegexError(ValueError):
    """RE2 rejects a pattern; ``reason`` says why in RE2's words."""

    def __init__(self, pattern: str, reason: str):
        super().__init__(f"invalid or non-linear regex {pattern!r}: {reason}")
        self.reason = reason


def _options():
    options = re2.Options()
    options.log_errors = False  # the reason reaches the user in a diagnostic, not on stderr
    return options


_OPTIONS = _options()


@lru_cache(maxsize=256)
def compile_regex(pattern: str):
    """A compiled RE2 pattern; ``RegexError`` with the reason when RE2 rejects it."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as err:
        reason = err.args[0] if err.args else ""
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise RegexError(pattern, reason) from None


def regex_groups(texts: list[str], within: list[Span], pattern: str,
                 groups: list) -> dict[object, list[Span]]:
    """The first match inside each span; for each named group (or 0, the whole match) its span."""
    compiled = compile_regex(pattern)
    numbers = [g if isinstance(g, int) else compiled.groupindex[g] for g in groups]
    out: dict[object, list[Span]] = {g: [] for g in groups}
    for text, span in zip(texts, within):
        match = None
        if span is not None:
            match = compiled.search(_within(text, span))
        for g, number in zip(groups, numbers):
            if match is None:
                out[g].append(None)
                continue
            start, end = match.span(number)
            out[g].append(None if start < 0 else (span[0] + start, span[0] + end))
    return out


def _within(text: str, span: tuple[int, int]) -> str:
    """The text a pattern searches: the span alone, so `^`, `$`, `\\A` and word boundaries
    see the span's own edges (the content of a tag starts at its `^`). Slicing is linear."""
    return text if span == (0, len(text)) else text[span[0]:span[1]]


def regex_matches(texts: list[str], within: list[Span], pattern: str) -> tuple[list[float], list[bool]]:
    compiled = compile_regex(pattern)
    values = [0.0 if s is None or compiled.search(_within(t, s)) is None else 1.0
              for t, s in zip(texts, within)]
    return values, [s is not None for s in within]


@lru_cache(maxsize=256)
def _compile_bytes_regex(pattern: str):
    return re2.compile(pattern.encode("utf-8"), _OPTIONS)


def regex_count(texts: list[str], within: list[Span], pattern: str) -> tuple[list[float], list[bool]]:
    """How many non-overlapping matches each span holds (Python's ``len(re.findall(...))``).

    ASCII text is searched as bytes: the wrapper then skips converting every match's offsets
    back to characters, which costs more than the matching itself when a hostile text holds
    hundreds of thousands of matches. Other text is searched as a string, so an empty match never
    lands inside a multi-byte character."""
    compiled = compile_regex(pattern)
    values = []
    for text, span in zip(texts, within):
        if span is None:
            values.append(0.0)
            continue
        piece = _within(text, span)
        if piece.isascii():
            matches = _compile_bytes_regex(pattern).finditer(piece.encode("ascii"))
        else:
            matches = compiled.finditer(piece)
        values.append(float(sum(1 for _ in matches)))
    return values, [s is not None for s in within]


def occurrences(texts: list[str], within: list[Span], literal: str) -> tuple[list[float], list[bool]]:
    """Non-overlapping occurrences of a literal string (Python's ``str.count``)."""
    values = [0.0 if s is None else float(t.count(literal, s[0], s[1])) for t, s in zip(texts, within)]
    return values, [s is not None for s in within]


def span_texts(texts: list[str], spans: list[Span]) -> list[str | None]:
    """The text of each span, unstripped (``None`` where nothing was found)."""
    return [None if s is None else t[s[0]:s[1]] for t, s in zip(texts, spans)]


_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_answer(text: str) -> str:
    """The usual normalisation of short answers for exact match (as in SQuAD's evaluation):
    case-folded, punctuation removed, the articles a/an/the dropped, spaces collapsed."""
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.casefold())
    return " ".join(_ARTICLES.sub(" ", text).split())


# ---- conversions --------------------------------------------------------------------------------
def _parse_number(token: str) -> float | None:
    percent = token.endswith("%")
    if percent:
        token = token[:-1]
    try:
        value = float(token.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def to_number(texts: list[str], spans: list[Span]) -> tuple[list[float], list[bool]]:
    """The first number in each span: signs, decimals, exponents, ``1,234.5``, ``45%`` (-> 45)."""
    values: list[float] = []
    valid: list[bool] = []
    search = _NUMBER.search
    for text, span in zip(texts, spans):
        value = None
        if span is not None:
            match = search(text, span[0], span[1])
            if match is not None:
                value = _parse_number(match.group())
        values.append(0.0 if value is None else value)
        valid.append(value is not None)
    return values, valid


def to_enum(texts: list[str], spans: list[Span], lookup: dict[str, int]) -> tuple[list[int], list[bool]]:
    """The enum member a span names, through ``lookup`` (keys already ``normalize_term``-ed)."""
    values: list[int] = []
    valid: list[bool] = []
    longest = max((len(k) for k in lookup), default=0) * 4 + 64
    seen: dict[str, int | None] = {}  # answers repeat across a batch: normalise each spelling once
    for text, span in zip(texts, spans):
        index = None
        if span is not None and span[1] - span[0] <= longest:
            raw = text[span[0]:span[1]]
            index = seen.get(raw, -1)
            if index == -1:
                index = seen[raw] = lookup.get(normalize_term(raw))
        values.append(0 if index is None else index)
        valid.append(index is not None)
    return values, valid


def to_str(texts: list[str], spans: list[Span]) -> list[str | None]:
    return [None if s is None else text[s[0]:s[1]].strip() for text, s in zip(texts, spans)]


def to_box(texts: list[str], spans: list[Span]):
    """The first four numbers as (x1, y1, x2, y2): "[10, 20, 110, 220]" or "(10,20),(110,220)"."""
    values: list[tuple[float, float, float, float]] = []
    valid: list[bool] = []
    for text, span in zip(texts, spans):
        numbers: list[float] = []
        if span is not None:
            for match in _PLAIN_NUMBER.finditer(text, span[0], span[1]):
                number = _parse_number(match.group())
                if number is None:
                    break
                numbers.append(number)
                if len(numbers) == 4:
                    break
        ok = len(numbers) == 4 and numbers[2] >= numbers[0] and numbers[3] >= numbers[1]
        values.append(tuple(numbers) if ok else (0.0, 0.0, 0.0, 0.0))
        valid.append(ok)
    return values, valid


_NUM = rf"\s*({_PLAIN_NUMBER.pattern})\s*"  # a plain number as a group, spaces around
# One box: [x1, y1, x2, y2], (x1, y1, x2, y2) or the corner pairs (x1, y1), (x2, y2), on RE2.
_BOX = re2.compile(rf"\[{_NUM},{_NUM},{_NUM},{_NUM}\]|\({_NUM},{_NUM},{_NUM},{_NUM}\)"
                  rf"|\({_NUM},{_NUM}\)\s*,?\s*\({_NUM},{_NUM}\)")


def to_boxes(texts: list[str], spans: list[Span]) -> list[list | None]:
    """Every box written in each span, in order ([] where the text holds none; None where there
    is no text, or more than ``MAX_BOXES`` boxes: a batch pads every row to its longest list, so
    one hostile completion must not size the whole batch). A box with its corners out of order
    is kept: it overlaps nothing."""
    out: list[list | None] = []
    for text, span in zip(texts, spans):
        if span is None:
            out.append(None)
            continue
        boxes: list | None = []
        for count, match in enumerate(_BOX.finditer(_within(text, span))):
            if count == MAX_BOXES:  # written boxes, counted whether or not their numbers are finite
                boxes = None
                break
            numbers = [float(g) for g in match.groups() if g is not None]
            if all(math.isfinite(v) for v in numbers):
                boxes.append(numbers)
        out.append(boxes)
    return out


# ---- terms, lengths, repetition, choices -------------------------------------------------------------
@lru_cache(maxsize=256)
def _terms_pattern(terms: tuple[str, ...]) -> re.Pattern:
    # Whole words or phrases, case-insensitively. The pattern is an alternation of escaped
    # literals with word boundaries: no quantifiers, so Python's engine cannot backtrack beyond
    # one attempt per term at each position (linear in the text), and it is several times faster
    # than calling RE2 through its wrapper for every completion.
    parts = []
    for term in sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True):
        left = r"\b" if term[0].isalnum() or term[0] == "_" else ""
        right = r"\b" if term[-1].isalnum() or term[-1] == "_" else ""
        parts.append(f"{left}{re.escape(term)}{right}")
    return re.compile("(?:" + "|".join(parts) + ")" if parts else r"(?!)", re.IGNORECASE)


_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
# Every ASCII character that is not a word character becomes a space.
_NON_WORD_TO_SPACE = str.maketrans({chr(i): " " for i in range(128) if chr(i) not in _WORD_CHARS})


@lru_cache(maxsize=256)
def _single_words(terms: tuple[str, ...]) -> tuple[str, ...] | None:
    """The padded forms `` term `` when every term is one ASCII word, else None."""
    words = {t.strip().lower() for t in terms if t.strip()}
    if words and all(w.isascii() and set(w) <= _WORD_CHARS for w in words):
        return tuple(f" {w} " for w in sorted(words))
    return None


def mentions(texts: list[str], spans: list[Span], terms: list[str], count: bool):
    """Whether (or how often) any term occurs as a whole word or phrase, ignoring case.

    For single-word terms in ASCII text the cheapest strategy is a few C-level substring counts:
    the span is lower-cased, every non-word character becomes a space and spaces are doubled, so
    each whole-word occurrence of a term appears as `` term `` exactly once. Anything else (phrases,
    non-ASCII text) uses the word-boundary pattern; both give the same answers.
    """
    pattern = _terms_pattern(tuple(terms))
    padded = _single_words(tuple(terms))
    values: list[float] = []
    append = values.append
    for text, span in zip(texts, spans):
        if span is None:
            append(0.0)
            continue
        piece = text[span[0]:span[1]]
        if padded is not None and piece.isascii():
            words = "  " + piece.lower().translate(_NON_WORD_TO_SPACE).replace(" ", "  ") + "  "
            if count:
                append(float(sum(words.count(p) for p in padded)))
            else:
                append(1.0 if any(p in words for p in padded) else 0.0)
        elif count:
            append(float(len(pattern.findall(piece))))
        else:
            append(0.0 if pattern.search(piece) is None else 1.0)
    return values, [s is not None for s in spans]


def length(texts: list[str], spans: list[Span], unit: str) -> tuple[list[float], list[bool]]:
    """Characters or whitespace-separated words ("tokens" needs a tokenizer; see execute.py)."""
    if unit == "chars":
        values = [0.0 if s is None else float(s[1] - s[0]) for s in spans]
    elif unit == "words":
        values = [0.0 if s is None else float(len(t[s[0]:s[1]].split())) for t, s in zip(texts, spans)]
    else:
        raise ValueError(f"unknown length unit {unit!r}")
    return values, [s is not None for s in spans]


def repetition(texts: list[str], spans: list[Span], n: int) -> tuple[list[float], list[bool]]:
    """open-r1's repetition measure: 1 - distinct word n-grams / all word n-grams (0 when shorter
    than n). The penalty is this times a (negative) maximum, which the spec writes itself."""
    values: list[float] = []
    for text, span in zip(texts, spans):
        if span is None:
            values.append(0.0)
            continue
        words = text[span[0]:span[1]].lower().split()
        total = len(words) - n + 1
        if total <= 0 or not words:
            values.append(0.0)
            continue
        distinct = len(set(zip(*[words[i:] for i in range(n)])))
        values.append(1.0 - distinct / total)
    return values, [s is not None for s in spans]


@lru_cache(maxsize=64)
def _choice_pattern(letters: str):
    klass = re2.escape(letters)
    # A letter standing alone: not inside a word ("A" in "An apple" does not count).
    return re2.compile(rf"(?:^|[^\w])([{klass}])(?:$|[^\w])")


def choice(texts: list[str], spans: list[Span], letters: str):
    """The multiple-choice letter given in each span ("B", "(B)", "B.", "Answer: B", "**B**").

    Returns ``(index, valid, exact)``: ``exact`` is true when the span holds only the letter,
    with optional brackets or punctuation around it.
    """
    pattern = _choice_pattern(letters)
    values: list[int] = []
    valid: list[bool] = []
    exact: list[bool] = []
    for text, span in zip(texts, spans):
        if span is None:
            values.append(0)
            valid.append(False)
            exact.append(False)
            continue
        stripped = text[span[0]:span[1]].strip(_WORD_EDGE_PUNCT)
        if len(stripped) == 1 and stripped in letters:
            values.append(letters.index(stripped))
            valid.append(True)
            exact.append(True)
            continue
        match = pattern.search(_within(text, span))
        if match is None:
            values.append(0)
            valid.append(False)
        else:
            values.append(letters.index(match.group(1)))
            valid.append(True)
        exact.append(False)
    return values, valid, exact
