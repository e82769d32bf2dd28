"""The text phase: each extractor on ordinary, malformed and hostile completions."""


import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdsl.runtime import text as tx


def spans_text(texts, spans):
    return [None if s is None else t[s[0]:s[1]] for t, s in zip(texts, spans)]


TAGS = ["<a>1</a><a>2</a>", "<a>only</a>", "none", "<a>open", "", "<a>é—ü</a> <a>ß</a>"]


@pytest.mark.parametrize("position, expected", [
    ("first", ["1", "only", None, None, None, "é—ü"]),
    ("last", ["2", "only", None, None, None, "ß"]),
    ("only", [None, "only", None, None, None, None]),
])
def test_tag_positions(position, expected):
    spans = tx.tag(TAGS, tx.whole(TAGS), "a", position)
    assert spans_text(TAGS, spans) == expected


def test_tag_within_another_span_and_counts():
    texts = ["<think><b>x</b></think><b>y</b>", "<b>y</b>"]
    think = tx.tag(texts, tx.whole(texts), "think", "first")
    assert spans_text(texts, tx.tag(texts, think, "b", "first")) == ["x", None]
    assert tx.tag_count(texts, tx.whole(texts), "b") == ([2.0, 1.0], [True, True])
    assert tx.tag_count(texts, think, "b") == ([1.0, 0.0], [True, False])


def test_regex_groups_and_rejection():
    texts = ["score: 42 and 7", "no score", "score: x"]
    groups = tx.regex_groups(texts, tx.whole(texts), r"score: (?P<value>\d+)", ["value", 0])
    assert spans_text(texts, groups["value"]) == ["42", None, None]
    assert spans_text(texts, groups[0]) == ["score: 42", None, None]
    assert tx.regex_matches(texts, tx.whole(texts), r"\d") == ([1.0, 0.0, 0.0], [True, True, True])
    with pytest.raises(ValueError, match="invalid or non-linear regex"):
        tx.compile_regex(r"(\w+) \1")


@pytest.mark.parametrize("text, value", [
    ("42", 42.0), ("-3.5", -3.5), ("+2e3", 2000.0), ("1,234.5 units", 1234.5), ("45%", 45.0),
    ("about .5", 0.5), ("x=7, y=8", 7.0), ("1e999", None), ("no digits", None), ("", None),
])
def test_numbers(text, value):
    values, valid = tx.to_number([text], tx.whole([text]))
    assert valid == [value is not None]
    if value is not None:
        assert values == [value]


def test_enum_lookup_normalises_case_space_and_punctuation():
    lookup = {tx.normalize_term(k): v for k, v in
              {"Forest": 0, "woodland": 0, "Sea Lake": 1, "river": 2}.items()}
    texts = ["FOREST", " **Woodland.** ", "sea   lake", "'river'", "desert", "x" * 10_000]
    values, valid = tx.to_enum(texts, tx.whole(texts), lookup)
    assert valid == [True, True, True, True, False, False]
    assert values[:4] == [0, 0, 1, 2]


def test_mentions_whole_words_case_insensitive():
    texts = ["High NDVI and ndwi.", "waterproofing", "open water, water", "", "NDVI"]
    found, valid = tx.mentions(texts, tx.whole(texts), ["water", "NDWI", "NDVI"], count=False)
    assert found == [1.0, 0.0, 1.0, 0.0, 1.0]
    counts, _ = tx.mentions(texts, tx.whole(texts), ["water", "NDWI", "NDVI"], count=True)
    assert counts == [2.0, 0.0, 2.0, 0.0, 1.0]
    phrase, _ = tx.mentions(["it is open water here"], [(0, 21)], ["open water"], count=False)
    assert phrase == [1.0]


def test_lengths_and_missing_spans():
    texts = ["one two  three", "héllo"]
    assert tx.length(texts, tx.whole(texts), "words") == ([3.0, 1.0], [True, True])
    assert tx.length(texts, [None, (0, 5)], "chars") == ([0.0, 5.0], [False, True])


def _open_r1_repetition(text: str, n: int) -> float:
    words = text.lower().split()
    if len(words) < n:
        return 0.0
    ngrams = list(zip(*[words[i:] for i in range(n)]))
    return 1 - len(set(ngrams)) / len(ngrams)


@given(st.lists(st.sampled_from(["a", "b", "c", "A"]), max_size=20).map(" ".join),
       st.integers(1, 4))
def test_repetition_matches_open_r1(text, n):
    values, valid = tx.repetition([text], tx.whole([text]), n)
    assert valid == [True]
    assert values[0] == pytest.approx(_open_r1_repetition(text, n))


@pytest.mark.parametrize("text, index, exact", [
    ("B", 1, True), ("(B)", 1, True), ("B.", 1, True), ("**C**", 2, True),
    ("Answer: B", 1, False), ("The answer is D because", 3, False), ("An apple", None, False),
    ("E", None, False),
])
def test_choice_letters(text, index, exact):
    values, valid, exact_ = tx.choice([text], tx.whole([text]), "ABCD")
    assert valid == [index is not None]
    if index is not None:
        assert values == [index] and exact_ == [exact]


def test_boxes():
    texts = ["[10, 20, 110, 220]", "(10,20),(110,220)", "[5, 5, 1, 1]", "[1, 2, 3]"]
    values, valid = tx.to_box(texts, tx.whole(texts))
    assert valid == [True, True, False, False]
    assert values[0] == (10.0, 20.0, 110.0, 220.0)


@pytest.mark.parametrize("make", [
    lambda: "<answer>" * 125_000,
    lambda: "a" * 1_000_000,
    lambda: "1," * 500_000,
    lambda: ("water " * 170_000)[:1_000_000],
])
def test_hostile_megabyte_texts_take_linear_time(make):
    from growth import growth

    def run(text):
        texts, whole = [text], tx.whole([text])
        tx.tag(texts, whole, "answer", "only")
        tx.tag(texts, whole, "answer", "last")
        tx.tag_count(texts, whole, "answer")
        tx.regex_groups(texts, whole, r"(?P<x>(a+)+b)", ["x"])
        tx.regex_count(texts, whole, r"a|1")
        tx.to_number(texts, whole)
        tx.to_box(texts, whole)
        tx.to_boxes(texts, whole)
        tx.mentions(texts, whole, ["water", "a"], count=True)
        tx.length(texts, whole, "words")
        tx.repetition(texts, whole, 3)
        tx.choice(texts, whole, "ABCD")
        tx.to_enum(texts, whole, {"water": 0})

    text = make()
    # an eighth of the text, then all of it: linear work grows about eight times
    assert growth(lambda n: text[:n], run, len(text) // 8) < 24


@given(st.lists(st.sampled_from(["water", "Water", "waterproof", "ndvi", "_water", "é", "water2", " ",
                                 ", ", ".", "\n", "NDVI-based", "x"]), max_size=12).map("".join),
       st.booleans())
def test_fast_and_pattern_mentions_agree(text, count):
    terms = ["water", "NDVI"]
    fast, _ = tx.mentions([text], tx.whole([text]), terms, count)
    slow = tx._terms_pattern(tuple(terms))
    expected = len(slow.findall(text)) if count else float(slow.search(text) is not None)
    assert fast == [float(expected)]
