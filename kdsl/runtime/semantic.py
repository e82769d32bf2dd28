"""Text checks that need a library: math answers (``math_verify``) and meaning (``similarity``),
and the models they and token counts load by path (sentence-transformers models, tokenizers).

Both run in the text phase, once per batch, and take each completion's text with a reference
text (from a dataset column or from the completion). The libraries are optional: kdsl imports
them only when a spec uses these functions, and says what to install when they are missing.

math-verify guards its parsing and comparison with a ``SIGALRM`` timeout, which Python allows only
in the main thread. Off the main thread (a data loader or a reward server worker) the timeout is
turned off rather than letting every answer fail; the length cap below bounds the work instead.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from functools import lru_cache

from kdsl.errors import KdslDataError

# math-verify's extraction regexes are run on at most this many characters of an answer: the
# last ones, where a final answer (and its \boxed{}) is. Policy text can be megabytes long.
MATH_VERIFY_MAX_CHARS = 20_000
MATH_VERIFY_TIMEOUT_S = 5

MATH_VERIFY_MODES = ("default", "open-r1-length")


def _math_verify():
    try:
        import math_verify
        from latex2sympy2_extended import NormalizationConfig
    except ImportError:
        raise KdslDataError("this spec checks math answers with math_verify(); install the "
                            "math-verify package: pip install math-verify") from None
    return math_verify, NormalizationConfig


def _answer_config(math_verify, normalization, boxed):
    # What an answer must look like: proper LaTeX (no malformed operators), a \boxed{} tried
    # first, and no guessing from bare text, as open-r1's math rewards read it. (open-r1 also sets
    # `equations=True`, which math-verify now ignores: its parser handles equations itself.)
    return [math_verify.LatexExtractionConfig(
        normalization_config=normalization(nits=False, malformed_operators=False, basic_latex=True,
                                           boxed=boxed, units=True),
        boxed_match_priority=0, try_extract_without_anchor=False)]


def math_verify(answers: Sequence[str | None], golds: Sequence[str | None],
                mode: str = "default") -> tuple[list[float], list[bool]]:
    """Whether each answer is mathematically equal to its gold answer.

    ``default``: the gold is read with math-verify's default extraction (LaTeX, then plain
    expressions), the answer as LaTeX with every ``\\boxed{}`` considered, and the comparison is
    ``verify(gold, answer)``, as open-r1's ``accuracy_reward`` does. ``open-r1-length``: the check
    inside open-r1's ``len_reward`` and ``cosine_scaled_reward``: the gold read as LaTeX only, the
    boxed answer left unnormalised (``boxed=True``: a box with units is not read), and
    ``verify(answer, gold)`` (math-verify's comparison is not symmetric, so this order can differ).
    With several boxes, math-verify reads the last one in both modes. Invalid where the gold
    cannot be parsed, where either text is missing, or where the comparison fails or times out.

    A group's completions share their gold answer: each distinct gold is parsed once."""
    if mode not in MATH_VERIFY_MODES:
        raise ValueError(f"unknown math_verify mode {mode!r}")
    mv, normalization = _math_verify()
    timeout = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    if mode == "default":
        gold_config = [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]
        answer_config = _answer_config(mv, normalization, "all")
    else:
        gold_config = [mv.LatexExtractionConfig()]
        answer_config = _answer_config(mv, normalization, True)
    values: list[float] = []
    valid: list[bool] = []
    parsed_golds: dict[str, list] = {}
    for answer, gold in zip(answers, golds):
        if answer is None or gold is None:
            values.append(0.0)
            valid.append(False)
            continue
        # Any failure of math-verify on one row (hostile text can reach corners of its parser)
        # makes that row's value unknown; it never stops the batch.
        try:
            if gold not in parsed_golds:
                parsed_golds[gold] = mv.parse(gold[-MATH_VERIFY_MAX_CHARS:],
                                              extraction_config=gold_config,
                                              extraction_mode="first_match", parsing_timeout=timeout)
            gold_parsed = parsed_golds[gold]
            if not gold_parsed:
                values.append(0.0)
                valid.append(False)
                continue
            answer_parsed = mv.parse(answer[-MATH_VERIFY_MAX_CHARS:], extraction_config=answer_config,
                                     extraction_mode="first_match", parsing_timeout=timeout)
            first, second = (gold_parsed, answer_parsed) if mode == "default" else (
                answer_parsed, gold_parsed)
            equal = mv.verify(first, second, timeout_seconds=timeout)
        except Exception:  # noqa: BLE001 - see above
            values.append(0.0)
            valid.append(False)
            continue
        values.append(1.0 if equal else 0.0)
        valid.append(True)
    return values, valid


# ---- meaning ------------------------------------------------------------------------------------
_MODELS: dict[tuple, object] = {}
# An embedding model reads at most its `max_seq_length` tokens and every token holds at least one
# character that is not a space; a text is cut after this many such characters per token the
# model reads (no vocabulary has longer pieces), so a megabyte completion is not tokenised whole
# for the few hundred tokens the model looks at, and the embedding is the same.
READ_FACTOR = 32


def _head(text: str, characters: int) -> str:
    """``text`` up to its first ``characters`` characters that are not whitespace."""
    if len(text) <= characters:
        return text
    found = _non_space(characters).match(text)
    return text if found is None else text[:found.end()]


@lru_cache(maxsize=8)
def _non_space(count: int):
    return re.compile(rf"(?:\s*\S){{{count}}}")


def sentence_model(model, device):
    """A sentence-embedding model: an object with ``encode`` (used as it is), or a local path or
    hub id loaded once per device with sentence-transformers."""
    if not isinstance(model, (str, os.PathLike)):
        return model
    key = (str(model), str(device))
    if key not in _MODELS:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise KdslDataError("this spec compares meaning with similarity(); install "
                                "sentence-transformers: pip install sentence-transformers") from None
        from transformers.utils import logging as transformers_logging

        bars = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()  # no weight-loading bar in kdsl's output
        try:
            _MODELS[key] = SentenceTransformer(str(model), device=str(device))
        except (OSError, ValueError) as err:
            raise KdslDataError(f"cannot load the similarity model {model!r}: {err}") from None
        finally:
            if bars:
                transformers_logging.enable_progress_bar()
    return _MODELS[key]


def similarity(texts: Sequence[str | None], others: Sequence[str | None], model,
               device) -> tuple[list[float], list[bool]]:
    """Cosine similarity of the sentence embeddings of each pair, in -1..1; invalid where either
    text is missing. Each distinct text of the batch is embedded once, in one call (a group's
    completions share their reference)."""
    import torch

    if model is None:
        raise KdslDataError("this spec compares meaning with similarity(); give a sentence-"
                            "transformers model: kdsl.load(spec, similarity_model=PATH), "
                            "--similarity-model PATH, or the KDSL_SIMILARITY_MODEL variable")
    pairs = [i for i, (a, b) in enumerate(zip(texts, others)) if a is not None and b is not None]
    values = [0.0] * len(texts)
    valid = [False] * len(texts)
    if not pairs:
        return values, valid
    encoder = sentence_model(model, device)
    reads = READ_FACTOR * (getattr(encoder, "max_seq_length", None) or 512)
    texts = [None if t is None else _head(t, reads) for t in texts]
    others = [None if t is None else _head(t, reads) for t in others]
    distinct = list(dict.fromkeys([texts[i] for i in pairs] + [others[i] for i in pairs]))
    row = {text: k for k, text in enumerate(distinct)}
    embedded = encoder.encode(distinct, convert_to_tensor=True).float()
    left = embedded[[row[texts[i]] for i in pairs]]
    right = embedded[[row[others[i]] for i in pairs]]
    cosine = torch.nn.functional.cosine_similarity(left, right, dim=-1)
    for i, value in zip(pairs, cosine.tolist()):
        values[i] = value
        valid[i] = True
    return values, valid


# ---- tokenizers ---------------------------------------------------------------------------------
_TOKENIZERS: dict[str, object] = {}


def tokenizer_from(path: str):
    """A transformers tokenizer from a local path or hub id, loaded once (for specs that count
    `tokens` when no tokenizer object is passed: ``--tokenizer`` or ``KDSL_TOKENIZER``)."""
    if path not in _TOKENIZERS:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise KdslDataError("counting tokens needs transformers: pip install transformers") from None
        try:
            _TOKENIZERS[path] = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise KdslDataError(f"cannot load the tokenizer {path!r}: {err}") from None
    return _TOKENIZERS[path]
