"""Runs a compiled program module on one batch: completions and columns in, tensors out.

The order is fixed: columns -> tensors, the text phase (``module.extract``), then the tensor
phase (``module.evaluate``), which is a pure function of tensors passed by name.
"""

from __future__ import annotations

import linecache
import math
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from types import SimpleNamespace

import torch

from kdsl.errors import KdslDataError, KdslError, KdslRuntimeError, Span
from kdsl.ir import mask_name, value_name
from kdsl.runtime import columns as col
from kdsl.runtime import text as tx


def completion_texts(completions: Sequence) -> list[str]:
    """Plain strings, or TRL's conversational form (a list of messages: the last one's content).
    Lone surrogates become U+FFFD (``text.clean_text``), so every string a tokenizer or a dataset
    can hold scores."""
    if isinstance(completions, str):
        raise KdslDataError("completions must be a list of strings, not one string")
    texts = []
    for row, completion in enumerate(completions):
        if completion is None:
            texts.append("")
        elif isinstance(completion, str):
            texts.append(tx.clean_text(completion))
        elif isinstance(completion, (list, tuple)):
            texts.append(tx.clean_text(_message_text(completion, row)))
        elif isinstance(completion, Mapping) and "content" in completion:
            texts.append(tx.clean_text(_content(completion["content"], row)))
        else:
            raise KdslDataError(f"completion {row}: expected a string or a list of chat messages, "
                                f"got {type(completion).__name__}")
    return texts


def _message_text(messages: Sequence, row: int) -> str:
    if not messages:
        return ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role", "assistant") == "assistant":
            return _content(message.get("content"), row)
    last = messages[-1]
    if isinstance(last, Mapping):
        return _content(last.get("content"), row)
    raise KdslDataError(f"completion {row}: chat messages must be dicts with a `content` field")


def _content(content, row: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):  # multimodal content parts: keep the text parts
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, Mapping) and part.get("type", "text") == "text")
    raise KdslDataError(f"completion {row}: message content must be text")


def prepare_columns(module, columns: Mapping, n: int, ref: torch.Tensor, interner: col.Interner,
                    problems: list | None = None,
                    invalid: col.InvalidValues | None = None) -> dict:
    """Each input column as (value, mask) tensors in a new env, with ``ref`` and the program's
    constants (``k``: see ``constants``). A wrong value raises
    ``KdslDataError``, unless ``problems`` is a list: then it receives ``(row, column, message)``
    and the value is made invalid. ``invalid`` counts the missing and non-finite values (see
    :mod:`kdsl.runtime.columns`)."""
    env: dict = {"ref": ref, "k": constants(module.CONSTANTS, ref)}
    device, dtype = ref.device, ref.dtype
    for name, kind, node, options in module.INPUTS:
        if name not in columns:
            known = ", ".join(sorted(columns)) or "none"
            raise KdslDataError(f"missing column `{name}` ({options.get('where', 'an input')} of "
                                f"{module.SPEC}); columns given: {known}")
        column = columns[name]
        if kind in ("float", "int"):
            x, m = col.numbers(column, name, n, device, dtype, problems, invalid)
        elif kind == "bool":
            x, m = col.bools(column, name, n, device, dtype, problems, invalid)
        elif kind == "enum":
            x, m = col.enums(column, name, n, device, module.ENUM_LOOKUP[options["enum"]],
                             module.ENUMS[options["enum"]], problems, invalid)
        elif kind == "str":
            x, m = col.strings(column, name, n, device, interner, problems, invalid)
        elif kind == "vector":
            x, m = col.vectors(column, name, n, options["size"], device, dtype, problems, invalid)
        elif kind == "box":
            x, m = col.boxes(column, name, n, device, dtype, problems, invalid)
        elif kind == "boxes":
            x, m = col.box_lists(column, name, n, device, dtype, problems, invalid)
        elif kind == "raster":
            x, m = col.rasters(column, name, n, options["size"], options.get("nodata"), device, dtype,
                               problems, invalid, options.get("bands"))
        else:  # pragma: no cover - the checker admits no other input kinds
            raise KdslDataError(f"input `{name}` has an unknown kind {kind}")
        env[value_name(node)], env[mask_name(node)] = x, m
    return env


def run(module, completions: Sequence, columns: Mapping, *, device=None, dtype=torch.float32,
        tokenizer=None, evaluate=None, spans: dict | None = None,
        trace: dict | None = None, problems: list | None = None,
        similarity_model=None, invalid: col.InvalidValues | None = None,
        judging=None) -> dict[str, torch.Tensor]:
    """Score one batch with a compiled program module (or its globals); returns the dict of
    ``module.evaluate`` (or of ``evaluate``, a compiled version of it). If ``spans`` is a dict, it
    receives the character spans of the outputs that rules act ``on``: name -> per completion
    ``(start, end)`` or ``None``.

    If ``trace`` is a dict, it receives every intermediate value of both phases, named as in the
    generated code (``s7``: a text's spans, ``g9``: a regex's group spans, ``x12``/``m12``: a
    value and its mask, ``t_NAME``/``a_NAME``: a rule's truth and applicability), plus ``texts``
    (the completions as strings) and ``strings`` (the text of each interned string id). It is for
    explaining a score (``kdsl.tools.explain``); scoring without it does no extra work.

    If ``problems`` is a list, a wrong column value does not raise: it is appended as ``(row,
    column, message)`` and scored as an invalid value (for scorers that report bad rows and go on).
    If ``invalid`` is a ``columns.InvalidValues``, it counts the missing and non-finite values.

    ``similarity_model`` (a path, hub id, or an object with ``encode``) backs ``similarity()``;
    without it the ``KDSL_SIMILARITY_MODEL`` environment variable is used."""
    if isinstance(module, Mapping):
        module = SimpleNamespace(**module)
    texts = completion_texts(completions)
    n = len(texts)
    if device is None:
        device = next((c.device for c in columns.values() if isinstance(c, torch.Tensor)), "cpu")
    ref = torch.zeros(n, dtype=dtype, device=device)
    interner = col.Interner(module.STRINGS)
    env = prepare_columns(module, columns, n, ref, interner, problems, invalid)
    if module.NEEDS_TOKENIZER and tokenizer is None:
        if not os.environ.get("KDSL_TOKENIZER"):
            raise KdslDataError(f"{module.SPEC} counts tokens: pass tokenizer= (a transformers "
                                "tokenizer) when scoring, --tokenizer PATH on the command line, "
                                "or set KDSL_TOKENIZER")
        from kdsl.runtime.semantic import tokenizer_from

        tokenizer = tokenizer_from(os.environ["KDSL_TOKENIZER"])
    extraction = Extraction(texts, ref, interner, tokenizer, columns,
                            similarity_model or os.environ.get("KDSL_SIMILARITY_MODEL") or None)
    with spec_lines(module):
        if trace is None:
            module.extract(texts, env, extraction)
            _judge(module, env, extraction, judging, ref, None)
            if evaluate is not None:  # compiled: one fused pass over the whole batch
                out = evaluate(**env)
            else:
                rows = rows_per_part(module, env, n)
                out = module.evaluate(**env) if rows is None else in_parts(module.evaluate, env, n, rows)
        else:  # every local of both phases goes into the trace; the generated code has no hook
            with keeping_locals(trace, module.extract, module.evaluate):
                module.extract(texts, env, extraction)
                _judge(module, env, extraction, judging, ref, trace)
                out = module.evaluate(**env)
            trace["table_rows"] = module.traced_table_rows(trace)
        if spans is not None:
            spans.update(extraction.kept_spans)
    shared = {x.data_ptr() for pair in env["k"] for x in pair}
    for name, value in out.items():  # a constant passed straight through must not be shared
        if isinstance(value, torch.Tensor) and value.data_ptr() in shared:
            out[name] = value.clone()
    if trace is not None:
        trace["texts"] = texts
        trace["strings"] = list(interner.ids)  # ids are given in insertion order
    return out


def _judge(module, env: dict, extraction: Extraction, judging, ref, trace: dict | None) -> None:
    """Between the phases: the values the spec's models give, asked for where they can change
    the reward (``kdsl.runtime.judging``)."""
    if not getattr(module, "JUDGED", ()):
        return
    from kdsl.runtime import judging as judged

    if judging is None:  # a module run on its own: models and cache from the environment
        judging = judged.Judging(cache=judged.cache_from_environment())
    need = module.demand(**env)
    judging.fill(module, env, extraction.shown, need, ref, trace)


# The tag code generation gives a statement: `  # spec.kd:30` (or `  # spec.kd:30 <- def at ...`)
# at the end of its line, or on a comment line of its own just above it where it does not fit.
_LINE_TAG = re.compile(r"(?:^\s*|  )# (?P<file>[^#]+?):(?P<line>[0-9]+)(?: <- [^#]*)?\s*$")
_CONTINUATION = 12  # statements are indented 4 or 8; their continuation lines 8 more
_CALL = re.compile(r"\b(?:ex|ops)\.(?P<name>\w+)\(")


# On a CPU, the tensor phase of per-pixel rules runs over the batch in parts of this many pixels
# per value: each operation makes a pass over its operands, and a pass over values that fit in
# the cache costs a fraction of one over main memory, while every part pays each operation's
# fixed cost of a few microseconds once. In benchmarks/bench_raster.py (2^15 to 2^21 tried),
# parts got faster up to 2^20 pixels (4 MB a float32 value) and fell off a cliff at 2^21, where
# a part's values leave the cache; 2^19 keeps a margin for CPUs with smaller caches. A GPU, and
# a compiled tensor phase (which fuses the passes), take the whole batch at once.
PIXELS_PER_PART = 2**19


def rows_per_part(module, env: dict, n: int) -> int | None:
    """How many rows of the batch one part holds, or None to evaluate the batch at once."""
    ref = env["ref"]
    if ref.device.type != "cpu" or getattr(module, "ACROSS_ROWS", True):
        return None
    pixels = max((t[0].numel() // (t.shape[1] if t.dim() == 4 else 1) for t in env.values()
                  if isinstance(t, torch.Tensor) and t.dim() >= 3 and len(t) == n), default=0)
    if pixels == 0:  # no per-pixel values: one part
        return None
    rows = max(1, PIXELS_PER_PART // pixels)
    return rows if rows < n else None


# Constants of the tensor phase as tensors, by (CONSTANTS, device, dtype, batch size): a
# training run scores batches of one size on one device, so they are made once, not per batch.
_CONSTANTS: OrderedDict = OrderedDict()
_CONSTANTS_KEPT = 64


def constants(values: tuple, ref: torch.Tensor) -> tuple:
    """``(x, mask)`` for each ``(value, integer)`` of a module's ``CONSTANTS``, shaped like ``ref``.
    Shared between calls: the generated code only reads them, and ``run`` copies an output that
    is one of them."""
    key = (values, str(ref.device), ref.dtype, ref.shape[0])
    made = _CONSTANTS.get(key)
    if made is None:
        ones = torch.ones_like(ref, dtype=torch.bool)
        made = tuple((torch.full_like(ref, value, dtype=torch.long if integer else ref.dtype), ones)
                     for value, integer in values)
        _CONSTANTS[key] = made
        while len(_CONSTANTS) > _CONSTANTS_KEPT:
            _CONSTANTS.popitem(last=False)
    else:
        _CONSTANTS.move_to_end(key)
    return made


def in_parts(evaluate, env: dict, n: int, rows: int) -> dict:
    """The tensor phase run on consecutive parts of ``rows`` rows, its outputs concatenated: the
    same values as one call on the whole batch (no output depends on other rows)."""
    _keep_parts_on_the_heap()
    outs = []
    for start in range(0, n, rows):
        part = {name: value[start:start + rows] if isinstance(value, torch.Tensor) and value.dim()
                and len(value) == n else value for name, value in env.items()}
        part["k"] = constants_part(env["k"], start, rows)
        outs.append(evaluate(**part))
    return {name: torch.cat([o[name] for o in outs]) for name in outs[0]}


_HEAP_READY = False


def _keep_parts_on_the_heap() -> None:
    """glibc's malloc maps fresh pages for a block above its mmap threshold (128 KB at first),
    each page faulted in when first written, and raises the threshold to the size of such a
    block once it is freed. A part's values are such blocks, made and freed by every operation,
    so until a large block has been freed in the process every operation pays page faults: in a
    fresh process the parts ran at 0.58x of the numpy loop instead of 1.2x
    (benchmarks/bench_raster.py). Freeing one untouched block larger than any value of a part
    (a float64 value of PIXELS_PER_PART pixels, four times over) raises the threshold once per
    process; with another allocator it costs one allocation."""
    global _HEAP_READY
    if not _HEAP_READY:
        block = torch.empty(4 * 8 * PIXELS_PER_PART, dtype=torch.uint8)
        del block
        _HEAP_READY = True


def constants_part(made: tuple, start: int, rows: int) -> tuple:
    """The rows ``start:start + rows`` of each constant (views, no copy)."""
    return tuple((x[start:start + rows], m[start:start + rows]) for x, m in made)


@contextmanager
def keeping_locals(trace: dict, *functions):
    """While active, copy the local variables of each call of ``functions`` into ``trace`` as the
    call returns (a profile hook of this thread: scoring without a trace never pays for it)."""
    codes = {f.__code__ for f in functions}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code in codes:
            trace.update((k, v) for k, v in frame.f_locals.items() if not k.startswith("_"))

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)


@contextmanager
def spec_lines(module):
    """Re-raise an exception from a compiled program's code as a ``KdslRuntimeError`` at the spec
    line that code was generated from (the innermost generated line with a tag), with the
    original exception chained. Errors of kdsl's own, and code without a tag, pass unchanged."""
    try:
        yield
    except KdslError:
        raise
    except Exception as err:
        where = _generated_line(module, err)
        if where is None:
            raise
        file, line, code = where
        call = _CALL.search(code)
        doing = f" in {call.group('name').rstrip('_')}()" if call else ""
        raise KdslRuntimeError(f"scoring failed{doing}: {type(err).__name__}: {err}",
                               Span(file, line, 1)) from err


def _generated_line(module, err: BaseException) -> tuple[str, int, str] | None:
    spec = getattr(module, "__spec__", None)  # generated modules are not files: their origin names them
    filename = getattr(spec, "origin", None) or getattr(module, "__file__", None)
    found = None
    tb = err.__traceback__
    while tb is not None:  # outermost first: the last generated frame is the innermost
        if filename and tb.tb_frame.f_code.co_filename == filename:
            found = _statement_tag(filename, tb.tb_lineno) or found
        tb = tb.tb_next
    return found


def _statement_tag(filename: str, number: int) -> tuple[str, int, str] | None:
    """The spec place of the statement that line ``number`` belongs to, and its first line."""
    code = linecache.getline(filename, number)
    while number > 1 and len(code) - len(code.lstrip(" ")) >= _CONTINUATION:
        number -= 1
        code = linecache.getline(filename, number)
    for candidate in (code, linecache.getline(filename, number - 1)):
        tag = _LINE_TAG.search(candidate)
        if tag and (candidate is code or not candidate.split("#")[0].strip()):
            return tag.group("file"), int(tag.group("line")), code
    return None


class Extraction:
    """What the text phase of a generated module calls: the ``tx`` functions, made into tensors."""

    def __init__(self, texts: list[str], ref: torch.Tensor, interner: col.Interner, tokenizer=None,
                 columns: Mapping | None = None, similarity_model=None):
        self.texts = texts
        self.ref = ref
        self.interner = interner
        self.tokenizer = tokenizer
        self.columns = columns or {}
        self.similarity_model = similarity_model
        self.kept_spans: dict[str, list] = {}
        self._column_texts: dict[str, list] = {}
        self.shown: dict[int, list] = {}  # judged node -> [(label, text per row or None)]

    def show(self, node: int, parts) -> None:
        """What a model is shown for a judged value, part by part (``kdsl.runtime.judging``)."""
        self.shown[node] = list(parts)

    def keep_spans(self, spans: dict[str, list]) -> None:
        self.kept_spans.update(spans)

    def tensors(self, values, valid, long: bool = False):
        dtype = torch.long if long else self.ref.dtype
        x = torch.tensor(values, dtype=dtype, device=self.ref.device)
        m = torch.tensor(valid, dtype=torch.bool, device=self.ref.device)
        if not long:
            m = m & torch.isfinite(x)
        return torch.where(m, x, torch.zeros_like(x)), m

    # spans -------------------------------------------------------------------------------------
    def whole(self):
        return tx.whole(self.texts)

    def tag(self, within, name, position):
        return tx.tag(self.texts, within, name, position)

    def regex(self, within, pattern, groups):
        return tx.regex_groups(self.texts, within, pattern, list(groups))

    # values --------------------------------------------------------------------------------------
    def present(self, spans):
        return self.tensors([0.0 if s is None else 1.0 for s in spans], [True] * len(spans))

    def tag_count(self, within, name):
        return self.tensors(*tx.tag_count(self.texts, within, name))

    def to_number(self, spans, integer: bool):
        values, valid = tx.to_number(self.texts, spans)
        if integer:
            valid = [ok and float(v).is_integer() for v, ok in zip(values, valid)]
        return self.tensors(values, valid)

    def to_enum(self, spans, lookup):
        return self.tensors(*tx.to_enum(self.texts, spans, lookup), long=True)

    def to_bool(self, spans, lookup):
        values, valid = tx.to_enum(self.texts, spans, lookup)
        return self.tensors([float(v) for v in values], valid)

    def to_str(self, spans):
        strings = tx.to_str(self.texts, spans)
        ids = [-1 if s is None else self.interner.id(s) for s in strings]
        return self.tensors(ids, [s is not None for s in strings], long=True)

    def to_box(self, spans):
        values, valid = tx.to_box(self.texts, spans)
        rows = [list(v) for v in values]
        x, m = self.tensors(rows, [[ok] * 4 for ok in valid])
        return x, m

    def to_boxes(self, spans):
        lists = tx.to_boxes(self.texts, spans)
        slots = max([1] + [len(b) for b in lists if b is not None])
        return col.pack_boxes(lists, slots, self.ref.device, self.ref.dtype)

    def mentions(self, spans, terms, count: bool):
        return self.tensors(*tx.mentions(self.texts, spans, list(terms), count))

    def length(self, spans, unit):
        if unit == "tokens":
            return self.tokens(spans)
        return self.tensors(*tx.length(self.texts, spans, unit))

    def tokens(self, spans):
        pieces = [self.texts[i][s[0]:s[1]] if s is not None else "" for i, s in enumerate(spans)]
        encoded = self.tokenizer(pieces, add_special_tokens=False)["input_ids"]
        return self.tensors([float(len(ids)) for ids in encoded], [s is not None for s in spans])

    def repetition(self, spans, n):
        return self.tensors(*tx.repetition(self.texts, spans, n))

    def choice(self, spans, letters):
        values, valid, _exact = tx.choice(self.texts, spans, letters)
        ids = [self.interner.id(letters[v]) if ok else -1 for v, ok in zip(values, valid)]
        return self.tensors(ids, valid, long=True)

    def matches(self, spans, pattern):
        return self.tensors(*tx.regex_matches(self.texts, spans, pattern))

    def match_count(self, spans, pattern):
        return self.tensors(*tx.regex_count(self.texts, spans, pattern))

    def occurrences(self, spans, literal):
        return self.tensors(*tx.occurrences(self.texts, spans, literal))

    # reference texts for the checks that compare a completion with another text -------------------
    def span_texts(self, spans):
        return tx.span_texts(self.texts, spans)

    def column_texts(self, name):
        """A `str` column's raw values (missing values and NaN are ``None``), read once a batch
        however many checks compare with it."""
        if name not in self._column_texts:
            self._column_texts[name] = [
                None if value is None or (isinstance(value, float) and math.isnan(value))
                else tx.clean_text(str(value)) for value in list(self.columns[name])]
        return self._column_texts[name]

    def normalized(self, texts):
        """Each text normalised for exact match (``tx.normalize_answer``), as string ids."""
        strings = [None if t is None else tx.normalize_answer(t) for t in texts]
        ids = [-1 if t is None else self.interner.id(t) for t in strings]
        return self.tensors(ids, [t is not None for t in strings], long=True)

    def math_verify(self, spans, golds, mode):
        from kdsl.runtime import semantic

        return self.tensors(*semantic.math_verify(self.span_texts(spans), golds, mode))

    def similarity(self, spans, others):
        from kdsl.runtime import semantic

        return self.tensors(*semantic.similarity(self.span_texts(spans), others,
                                                 self.similarity_model, self.ref.device))
