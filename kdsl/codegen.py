"""Stage 3: ``ir.ProgramIR`` -> the source of a standalone Python module.

The module depends only on torch and ``kdsl.runtime``. Its ``extract`` runs the text phase (each
extractor once per batch), its ``evaluate`` is a pure tensor function of a dict of tensors. One
generated line per IR node, each ending in a ``# file.kd:line`` comment naming the spec line it
came from. Spec strings appear only as ``repr`` literals. The same IR gives byte-identical source.
"""

from __future__ import annotations

import io
import math
import re
import tokenize
from pathlib import PurePath

from kdsl import __version__
from kdsl.analysis import demand as demand_analysis
from kdsl.errors import Span
from kdsl.ir import (
    EXTRACTOR_OPS,
    JUDGED_OPS,
    Node,
    ProgramIR,
    TableIR,
    groups_name,
    mask_name,
    span_name,
    value_name,
)
from kdsl.operators import OPERATIONS
from kdsl.operators import TEXT_OPS as TEXT_OPERATIONS
from kdsl.runtime.text import normalize_term

BOOL_LOOKUP = {"yes": 1, "true": 1, "y": 1, "no": 0, "false": 0, "n": 0}

WIDTH = 99  # generated lines stay under 100 characters, unless one name or string is longer
TAG_COLUMN = 60  # where a line's spec tag starts when the code leaves room


class _Writer:
    """Lines of code, each optionally tagged with the spec line it came from."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str = "", span: Span | None = None, indent: int = 0,
             site: Span | None = None) -> None:
        """One statement, tagged with ``span`` (and with ``site``, the call of the def it was
        inlined from), wrapped at commas inside brackets when it would pass ``WIDTH``."""
        code = "    " * indent + text
        comment = f"  # {_tag(span, site)}" if span is not None and span.line else ""
        if len(code) + len(comment) <= WIDTH:
            if comment and len(code) < TAG_COLUMN and TAG_COLUMN + len(comment) <= WIDTH:
                code = f"{code:<{TAG_COLUMN}}"
            self.lines.append((code + comment).rstrip())
            return
        if comment:  # the tag does not fit beside the code: it goes on a line of its own above
            self.lines.append("    " * indent + comment.lstrip())
        self.lines.extend(_wrapped(code, WIDTH, "    " * (indent + 2)))

    def blank(self) -> None:
        self.lines.append("")


def _tag(span: Span, site: Span | None) -> str:
    here = f"{quote(PurePath(span.file).name)}:{span.line}"
    if site is None or not site.line or (site.file, site.line) == (span.file, span.line):
        return here
    return f"{quote(PurePath(site.file).name)}:{site.line} <- def at {here}"


def _wrapped(code: str, width: int, continuation: str) -> list[str]:
    """``code`` split after commas (or opening brackets) inside brackets, each piece filled up to
    ``width``; continuation lines start with ``continuation``. Code that cannot be split (one
    long string) stays on one line."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):  # pragma: no cover - generated code tokenizes
        return [code]
    commas, openings, depth = [], [], 0
    for tok in tokens:
        if tok.type != tokenize.OP:
            continue
        if tok.string in "([{":
            depth += 1
            openings.append(tok.end[1])
        elif tok.string in ")]}":
            depth -= 1
        elif tok.string == "," and depth >= 1:
            commas.append(tok.end[1])
    lines, start, limit = [], 0, width
    while len(code) - start > limit - (len(continuation) if lines else 0):
        room = start + limit - (len(continuation) if lines else 0)
        fits = [b for b in commas if start < b <= room] or [b for b in openings if start < b <= room]
        cut = fits[-1] if fits else next((b for b in sorted(commas + openings) if b > start), None)
        if cut is None or cut >= len(code.rstrip()):
            break
        piece = code[start:cut].rstrip()
        lines.append(piece if not lines else continuation + piece.lstrip())
        start, limit = cut, WIDTH
    tail = code[start:]
    lines.append(tail if not lines else continuation + tail.lstrip())
    return lines


# ---- the one way outside text enters generated source ------------------------------------------
_KEEP = frozenset("\\'\"")  # characters quote() always escapes, printable or not
_SHORT_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def quote(text: str) -> str:
    """Text from a spec or the file system, escaped so it can stand anywhere in generated source:
    between quotes of either kind (``'...'``, ``\"\"\"...\"\"\"``) or in a ``#`` comment.

    Every text that reaches a generated module goes through here: spec strings and names, enum
    labels, file names and paths in docstrings and ``# file:line`` comments. Backslashes, both
    quote characters and every character that is not printable (line breaks of any kind, controls,
    bidirectional marks, lone surrogates) become escapes, so the result holds no line break and
    no quote that could end a string; read back as a string literal it is ``text`` again.

    >>> print(quote('say "hi"\\nnow'))
    say \\"hi\\"\\nnow
    """
    if text.isprintable() and not (_KEEP & set(text)):
        return text
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def generated_name(prefix: str, name: str) -> str:
    """The Python identifier of a spec name in generated code: ``prefix`` + ``_`` + the name, where
    ``_`` is written ``__`` and the ``.`` of an imported name ``_0``, so distinct names never meet
    (a local table ``a_b`` is ``table_a__b``, an imported ``a.b`` is ``table_a_0b``). A name that is
    not a (dotted) identifier is refused: only the grammar's names can get here."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a spec name: {name!r}")
    return f"{prefix}_" + name.replace("_", "__").replace(".", "_0")


def _lit(value) -> str:
    """A Python literal for a value from the spec (never spec text spliced into code)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no literal for the non-finite number {value}")
        if value.is_integer() and abs(value) < 1e15:
            return f"{value:.1f}"
        return repr(value)
    if isinstance(value, str):
        return f"'{quote(value)}'"
    if isinstance(value, (int, bool)) or value is None:
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(_lit(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no literal for {type(value).__name__}")


def _pieces(text: str, width: int) -> list[str]:
    """``text`` cut after spaces into pieces whose literals fit ``width``; written one a line
    inside brackets, Python joins them back into ``text``."""
    pieces, current = [], ""
    for word in re.split(r"(?<= )", text):
        if current and len(_lit(current + word)) > width:
            pieces.append(current)
            current = ""
        current += word
    return [*pieces, current]


def _pair(node: Node) -> str:
    return f"{value_name(node.id)}, {mask_name(node.id)}"


class Generator:
    def __init__(self, program: ProgramIR):
        self.program = program
        self.nodes = program.live_nodes()
        self.strings: list[str] = []
        for node in self.nodes:
            if node.op == "str_const":
                self._string(node.attr("value"))
            elif node.op == "in_str":
                for value in node.attr("values"):
                    self._string(value)

    def _string(self, value: str) -> int:
        value = value.strip()
        if value not in self.strings:
            self.strings.append(value)
        return self.strings.index(value)

    # ---- module --------------------------------------------------------------------------------
    def module(self) -> str:
        p = self.program
        w = _Writer()
        source = quote(PurePath(p.file).name)
        w.line(f'"""Reward program `{quote(p.name)}` version {p.version}, compiled by kdsl '
               f'{__version__}')
        w.line(f"from {source}.")
        w.blank()
        w.line(f"Generated code: edit the spec and run `kdsl compile {source}` instead of")
        w.line("editing this file.")
        w.line('"""')
        w.blank()
        w.line("import torch")
        w.blank()
        w.line("from kdsl.runtime import execute, ops")
        w.blank()
        self.constants(w)
        w.blank()
        w.blank()
        self.extract(w)
        for table in self._tables():
            w.blank()
            w.blank()
            self.table(w, table)
        w.blank()
        w.blank()
        self.evaluate(w)
        w.blank()
        w.blank()
        self.traced_table_rows(w)
        w.blank()
        w.blank()
        if any(n.op in JUDGED_OPS for n in self.nodes):
            self.demand(w)
            w.blank()
            w.blank()
        w.line("def score(completions, device=None, dtype=torch.float32, tokenizer=None, **columns):")
        w.line('"""Score a batch: a dict of tensors (reward, rule.*, applies.*, level.*, let.*, valid.*)."""',
               indent=1)
        w.line("return execute.run(globals(), completions, columns, device=device, dtype=dtype, "
               "tokenizer=tokenizer)", indent=1)
        return "\n".join(w.lines) + "\n"

    def constants(self, w: _Writer) -> None:
        p = self.program
        w.line(f"SPEC = {_lit(p.name)}")
        w.line(f"VERSION = {p.version}")
        w.line(f"LOGIC = {_lit(p.logic)}")
        w.line(f"STRINGS = {_lit(tuple(self.strings))}")
        enums = self._enums()
        w.line("ENUMS = {")
        for enum in enums:
            w.line(f"{_lit(enum.name)}: {_lit(enum.members)},", indent=1)
        w.line("}")
        w.line("ENUM_LOOKUP = {")
        for enum in enums:
            lookup: dict[str, int] = {}
            for index, member in enumerate(enum.members):
                lookup.setdefault(normalize_term(member), index)
            for index, synonyms in enumerate(enum.synonyms):
                for synonym in synonyms:
                    lookup.setdefault(normalize_term(synonym), index)
            w.line(f"{_lit(enum.name)}: {_lit(lookup)},", indent=1)
        w.line("}")
        w.line(f"BOOL_LOOKUP = {_lit(BOOL_LOOKUP)}")
        w.line("INPUTS = (")
        # The inputs the program reads: those with a live node, and `str` inputs that the text
        # phase reads by column name (normalize, math_verify, similarity), so a missing or bad
        # column is reported like any other.
        by_column = {n.attr("column") for n in self.nodes if n.attr("column")}
        by_column |= {column for n in self.nodes if n.op in JUDGED_OPS
                      for _, column in n.attr("parts") if column}
        live = {n.id for n in self.nodes}
        inputs = {n.attr("name"): n for n in p.nodes if n.op == "input" and (
            n.id in live or n.attr("name") in by_column)}
        for name, spec in p.inputs.items():
            node = inputs.get(name)
            if node is None:
                continue
            options = {"where": f"input at {PurePath(spec.span.file).name}:{spec.span.line}"}
            t = spec.type
            if t.kind == "enum":
                options["enum"] = t.enum.name
            if t.kind in ("vector", "raster"):
                options["size"] = t.size
            if t.kind == "raster" and t.nodata is not None:
                options["nodata"] = float(t.nodata)
            if t.kind == "raster" and t.bands:  # to pick a GeoTIFF's bands by name
                options["bands"] = tuple(t.bands)
            w.line(f"({_lit(name)}, {_lit(t.kind)}, {node.id}, {_lit(options)}),", spec.span, indent=1)
        w.line(")")
        w.line("RULES = (")
        for rule in p.rules:
            w.line(f"({_lit(rule.name)}, {_lit(rule.level)}, {_lit(float(rule.weight))}),", rule.span,
                   indent=1)
        w.line(")")
        w.line("LEVELS = (")
        for level in p.levels:
            names = tuple(r.name for r in level.rules)
            w.line(f"({_lit(level.name)}, {_lit(level.gate)}, {_lit(float(level.weight))}, "
                   f"{_lit(names)}),", level.span, indent=1)
        w.line(")")
        w.line(f"LETS = {_lit(tuple(self._scalar_lets()))}")
        w.line(f"ADVANTAGE = {_lit(dict(p.advantage))}")
        w.line(f"MASKS = {_lit(tuple(tuple(m) for m in p.masks))}")
        spans = {r.name: r.on for r in p.rules if r.on}
        w.line(f"RULE_SPANS = {_lit(spans)}")
        needs = any(n.op == "length" and n.attr("unit") == "tokens" for n in self.nodes)
        w.line(f"NEEDS_TOKENIZER = {needs}")
        # Whether a value of one row depends on other rows (batch_min() and friends): then the
        # tensor phase cannot run on a batch in parts (see execute.run).
        across = any(n.op in ("batch_min", "batch_max", "batch_mean") for n in self.nodes)
        w.line(f"ACROSS_ROWS = {across}")
        # The models the spec calls, bound when it is loaded, and each value a model gives:
        # (node, operation, model, criterion, choices, the labels of what it is shown).
        w.line(f"MODELS = {_lit(tuple((m.name, m.kind) for m in p.models.values()))}")
        judged = [n for n in self.nodes if n.op in JUDGED_OPS]
        w.line("JUDGED = (" if judged else "JUDGED = ()")
        for node in judged:
            labels = tuple(label for label, _ in node.attr("parts"))
            w.line(f"({node.id}, {_lit(node.op)}, {_lit(node.attr('model'))},", node.span, indent=1)
            pieces = _pieces(node.attr("criterion") or "", WIDTH - 16)  # one string, in pieces
            for i, piece in enumerate(pieces):
                w.line(_lit(piece) + ("," if i == len(pieces) - 1 else ""), indent=3)
            w.line(f"{_lit(tuple(node.attr('choices') or ()))}, {_lit(labels)}),", indent=3)
        if judged:
            w.line(")")
        # The tensor phase's constants, made into tensors by execute.constants once per device,
        # dtype and batch size (not on every batch); evaluate reads them from `k`.
        w.line("CONSTANTS = (  # (value, integer)")
        for node in self._constants():
            w.line(f"({_lit(self._constant_value(node))}, {node.op == 'str_const' or node.type.kind == 'enum'}),",
                   node.span, indent=1)
        w.line(")")

    def _constants(self) -> list[Node]:
        """The constants of the tensor phase, in the order of ``CONSTANTS``."""
        return [n for n in self.nodes if n.op in ("const", "str_const") and not n.is_text_phase]

    def _constant_value(self, node: Node):
        if node.op == "str_const":
            return self._string(node.attr("value"))
        value = node.attr("value")
        return int(value) if node.type.kind == "enum" else float(value)

    def _enums(self) -> list:
        """The spec's enums and every imported one that a value of the program has."""
        found = {enum.name: enum for enum in self.program.enums.values()}
        for node in self.nodes:
            if node.type.enum is not None:
                found.setdefault(node.type.enum.name, node.type.enum)
        for spec in self.program.inputs.values():
            if spec.type.enum is not None:
                found.setdefault(spec.type.enum.name, spec.type.enum)
        return list(found.values())

    def _scalar_lets(self) -> list[str]:
        return [name for name, node in self.program.lets.items()
                if node.type.extra_dims == 0 and not node.type.is_text]

    def _tables(self) -> list[TableIR]:
        used = {n.attr("table") for n in self.nodes if n.op == "table"}
        return [self.program.tables[name] for name in sorted(used)]

    # ---- text phase ----------------------------------------------------------------------------
    def extract(self, w: _Writer) -> None:
        w.line("def extract(texts, env, ex):")
        w.line('"""Text phase: each extractor runs once over the whole batch; results go into env."""',
               indent=1)
        text_nodes = [n for n in self.nodes if n.is_text_phase or n.op in JUDGED_OPS]
        if not text_nodes:
            w.line("return None", indent=1)
            return
        for node in text_nodes:
            w.line(self.text_line(node), node.span, indent=1, site=self.program.inlined_at.get(node.id))
        spans = sorted({r.on for r in self.program.rules if r.on})
        if spans:  # character spans of the outputs that rules act `on`, for token-level advantages
            kept = ", ".join(f"{_lit(name)}: {self._span_ref(self.program.outputs[name])}" for name in spans)
            w.line(f"ex.keep_spans({{{kept}}})", indent=1)

    def text_line(self, n: Node) -> str:
        """The line of a text-phase node: its registered call, bound to the node's names."""
        if n.op in JUDGED_OPS:  # records what the model is shown; the value comes later
            return OPERATIONS[n.op].emit(n, self)
        call = TEXT_OPERATIONS[n.op].emit(n, self)
        if n.op == "regex":
            return f"{groups_name(n.id)} = {call}"
        if n.op in EXTRACTOR_OPS:
            return f"env['{value_name(n.id)}'], env['{mask_name(n.id)}'] = {call}"
        return f"{span_name(n.id)} = {call}"

    # What an entry's `emit` is given (`kdsl.operators.Operands`).
    @staticmethod
    def lit(value) -> str:
        return _lit(value)

    @staticmethod
    def spans(n: Node, position: int = 0) -> str:
        """The generated name of the spans (a regex: its groups) that operand ``position`` gives."""
        operand = n.args[position].id if n.args else 0
        return groups_name(operand) if n.op == "regex_group" else span_name(operand)

    def texts(self, n: Node, position: int) -> str:
        return self._texts(n, position)

    @staticmethod
    def quote(text: str) -> str:
        return quote(text)

    @staticmethod
    def pairs(n: Node) -> str:
        return ", ".join(_pair(a) for a in n.args)

    def string_id(self, value: str) -> int:
        return self._string(value)

    def regex_groups(self, regex: Node) -> tuple:
        return tuple(sorted(self._regex_groups(regex), key=str))

    @staticmethod
    def _texts(n: Node, position: int) -> str:
        """The texts of a text operand: a `str` column's values, or the spans of argument
        ``position`` (see ``semantic.calls.CallLowering.text_or_column``)."""
        column = n.attr("column")
        return f"ex.column_texts({_lit(column)})" if column else f"ex.span_texts(s{n.args[position].id})"

    @staticmethod
    def _span_ref(node: Node) -> str:
        """The generated name holding an output's character spans (a regex: its whole match)."""
        return f"{groups_name(node.id)}[0]" if node.op == "regex" else span_name(node.id)

    def _regex_groups(self, regex: Node) -> set:
        groups = {n.attr("group") for n in self.nodes if n.op == "regex_group" and n.args[0] is regex}
        if any(self.program.outputs.get(r.on) is regex for r in self.program.rules if r.on):
            groups.add(0)  # a rule acts on the whole match
        return groups

    # ---- tables -------------------------------------------------------------------------------------
    def table(self, w: _Writer, table: TableIR) -> None:
        """A decision table as two functions: its values (called by ``evaluate``), and which row
        decided each sample (called only by ``traced_table_rows``, when a score is traced)."""
        fname = generated_name("table", table.name)
        params = ", ".join(f"a{i}, v{i}" for i in range(len(table.params)))
        valid = " & ".join(["done"] + [f"v{i}" for i in range(len(table.params))])
        w.line(f"def {fname}({params}, dt):", table.span)
        w.line(f'"""Decision table `{quote(table.name)}`: the first matching row gives the result."""',
               indent=1)
        numeric = table.result.kind != "enum"
        w.line(f"out = torch.zeros_like(a0, dtype={'dt' if numeric else 'torch.long'})", indent=1)
        w.line("done = torch.zeros_like(v0)", indent=1)
        for row, hit in zip(table.rows, self._row_hits(table)):
            result = row.result
            if isinstance(result, str):
                result = table.result.enum.members.index(result)
            w.line(f"hit = {hit}", row.span, indent=1)
            w.line(f"out = torch.where(hit & ~done, {_lit(result)}, out)", indent=1)
            w.line("done = done | hit", indent=1)
        w.line(f"valid = {valid}", indent=1)
        w.line("return torch.where(valid, out, torch.zeros_like(out)), valid", indent=1)
        w.blank()
        w.blank()
        w.line(f"def {generated_name('rows', table.name)}({params}):", table.span)
        w.line(f'"""Which row of table `{quote(table.name)}` decided each sample (-1: none).', indent=1)
        w.line('For row coverage and explanations: evaluate never calls it."""', indent=1)
        w.line("decided_by = torch.full_like(a0, -1, dtype=torch.long)", indent=1)
        w.line("done = torch.zeros_like(v0)", indent=1)
        for index, (row, hit) in enumerate(zip(table.rows, self._row_hits(table))):
            w.line(f"hit = {hit}", row.span, indent=1)
            w.line(f"decided_by = torch.where(hit & ~done, {index}, decided_by)", indent=1)
            w.line("done = done | hit", indent=1)
        w.line(f"return torch.where({valid}, decided_by, -1)", indent=1)

    def _row_hits(self, table: TableIR) -> list[str]:
        """Each row's condition over the arguments ``a0, a1, ...``."""
        hits = []
        for row in table.rows:
            terms = [self.cell(cell, f"a{i}", table.params[i][1]) for i, cell in enumerate(row.cells)]
            terms = [term for term in terms if term is not None]
            hits.append(" & ".join(terms) if terms else "torch.ones_like(done)")
        return hits

    def traced_table_rows(self, w: _Writer) -> None:
        """``traced_table_rows(values)``: for a traced score, which row decided each call of each table,
        from the traced arguments (outside the hot path: ``evaluate`` records nothing)."""
        calls = [n for n in self.nodes if n.op == "table"]
        w.line("def traced_table_rows(values):")
        w.line('"""(table, row that decided each sample or -1, call node) for every table call,', indent=1)
        w.line('from the values of a traced evaluate."""', indent=1)
        if not calls:
            w.line("return []", indent=1)
            return
        w.line("return [", indent=1)
        for n in calls:
            args = ", ".join(f"values[{_lit(name)}]" for a in n.args
                             for name in (value_name(a.id), mask_name(a.id)))
            w.line(f"({_lit(n.attr('table'))}, {generated_name('rows', n.attr('table'))}({args}), "
                   f"{n.id}),", n.span, indent=2)
        w.line("]", indent=1)

    def cell(self, cell, arg: str, type_) -> str | None:
        if cell.kind == "any":
            return None
        if cell.kind in ("name", "set"):
            if type_.kind == "bool":
                values = tuple(1.0 if name == "true" else 0.0 for name in cell.names)
            else:
                values = tuple(type_.enum.members.index(name) for name in cell.names)
            if len(values) == 1:
                return f"({arg} == {_lit(values[0])})"
            return f"ops.cell_in({arg}, {_lit(values)})"
        if cell.kind == "compare":
            return f"({arg} {cell.op} {_lit(float(cell.low))})"
        if cell.kind == "range":
            low, high = (">" if cell.low_open else ">="), ("<" if cell.high_open else "<=")
            return f"(({arg} {low} {_lit(float(cell.low))}) & ({arg} {high} {_lit(float(cell.high))}))"
        return f"({arg} == {_lit(float(cell.low))})"

    # ---- tensor phase -------------------------------------------------------------------------------
    def evaluate(self, w: _Writer) -> None:
        p = self.program
        # Its parameters are the values the columns and the text phase give (`execute.run`
        # passes them by name; columns the text phase reads as text arrive in `_unread`).
        params = self._given_params()
        w.line(f"def evaluate({params}):")
        w.line('"""Tensor phase: a pure function of tensors, free of Python loops over samples', indent=1)
        w.line('and of host syncs."""', indent=1)
        w.line("dt = ref.dtype", indent=1)
        names = {node.id: name for name, node in p.lets.items()}
        for node in self.nodes:
            if node.is_text_phase or node.op == "input" or node.op in JUDGED_OPS:
                continue
            code = self.tensor_line(node)
            if node.id in names:
                code = f"{code}  # let {quote(names[node.id])}"
            w.line(code, node.span, indent=1, site=p.inlined_at.get(node.id))
        gates = []
        reward_terms = []
        for level in p.levels:
            w.line(f"# level {quote(level.name)}{' (gate)' if level.gate else ''}", level.span,
                   indent=1)
            parts = []
            for rule in level.rules:
                when = f"{value_name(rule.when.id)}, {mask_name(rule.when.id)}" if rule.when is not None else "None, None"
                truth, applies = generated_name("t", rule.name), generated_name("a", rule.name)
                targets = f"{truth}, {applies}"
                if len(targets) > WIDTH // 2:  # in brackets, so the line can break between them
                    targets = f"({targets})"
                w.line(f"{targets} = ops.rule({value_name(rule.body.id)}, {mask_name(rule.body.id)}, "
                       f"{when}, {_lit(rule.invalid)})", rule.span, indent=1)
                parts.append(f"({truth}, {applies}, {_lit(float(rule.weight))})")
            score = f"ops.level([{', '.join(parts)}], ref)"
            if gates:
                score = f"{score} * {' * '.join(gates)}"
            level_name = generated_name("level", level.name)
            w.line(f"{level_name} = {score}", indent=1)
            if level.gate:
                w.line(f"{generated_name('open', level.name)} = ops.gate({level_name})", indent=1)
                gates.append(generated_name("open", level.name))
            reward_terms.append(f"{_lit(float(level.weight))} * {level_name}")
        if not reward_terms:
            w.line("reward = torch.zeros_like(ref)", indent=1)
        for index, term in enumerate(reward_terms):  # one level a line
            w.line(f"reward = {term}" if index == 0 else f"reward = reward + {term}", indent=1)
        w.line("out = {", indent=1)
        w.line("'reward': reward,", indent=2)

        def entry(key: str, value: str) -> None:
            if len(f"        {key}: {value},") > WIDTH:  # inside the braces a line may break anywhere
                w.line(f"{key}:", indent=2)
                w.line(f"{value},", indent=4)
            else:
                w.line(f"{key}: {value},", indent=2)

        for rule in p.rules:
            entry(_lit("rule." + rule.name), generated_name("t", rule.name))
            entry(_lit("applies." + rule.name), generated_name("a", rule.name))
        for level in p.levels:
            entry(_lit("level." + level.name), generated_name("level", level.name))
        w.line("}", indent=1)
        for name in self._scalar_lets():
            node = p.lets[name]
            w.line(f"out[{_lit('let.' + name)}], out[{_lit('valid.' + name)}] = "
                   f"ops.observe({value_name(node.id)}, {mask_name(node.id)})", indent=1)
        w.line("return out", indent=1)

    def _given_params(self, judged: bool = True) -> str:
        """The parameters of ``evaluate`` (and, without the ``judged`` values, of ``demand``): the
        values the columns, the text phase and the models give (``execute.run`` passes them by
        name; the others arrive in ``_unread``)."""
        given = [n for n in self.nodes if n.op in EXTRACTOR_OPS or n.op == "input"
                 or (judged and n.op in JUDGED_OPS)]
        self.constant_index = {n.id: i for i, n in enumerate(self._constants())}
        return ", ".join(["ref", "k", *(_pair(n) for n in given), "**_unread"])

    # ---- where judged values are needed ----------------------------------------------------------
    def demand(self, w: _Writer) -> None:
        """``demand``: per judged node, the rows where its value can change the reward, from the
        values that need no model (``kdsl.analysis.demand``); ``kdsl.runtime.judging`` asks the
        models only there."""
        p = self.program
        plan = demand_analysis.plan(p, self.nodes)
        w.line(f"def demand({self._given_params(judged=False)}):")
        w.line('"""Where each judged value can change the reward (a bool mask per judged node),', indent=1)
        w.line('from the values that need no model: a tensor function like evaluate."""', indent=1)
        w.line("dt = ref.dtype", indent=1)
        for node in plan.free:
            if node.is_text_phase or node.op == "input":
                continue
            w.line(self.tensor_line(node), node.span, indent=1, site=p.inlined_at.get(node.id))
        for level, rules in plan.gates:
            parts = []
            for rule in rules:
                when = (f"{value_name(rule.when.id)}, {mask_name(rule.when.id)}"
                        if rule.when is not None else "None, None")
                truth, applies = generated_name("t", rule.name), generated_name("a", rule.name)
                w.line(f"{truth}, {applies} = ops.rule({value_name(rule.body.id)}, "
                       f"{mask_name(rule.body.id)}, {when}, {_lit(rule.invalid)})", rule.span, indent=1)
                parts.append(f"({truth}, {applies})")
            w.line(f"{generated_name('open', level)} = ops.may_open([{', '.join(parts)}], ref)",
                   indent=1)
        levels = {rule.level for rule in plan.rules}
        for level in p.levels:
            if level.name not in levels:
                continue
            gates = [generated_name("open", g) for g in plan.reach[level.name]]
            reach = " & ".join(gates) if gates else "torch.ones_like(ref, dtype=torch.bool)"
            if not plan.counted[level.name]:
                reach = "torch.zeros_like(ref, dtype=torch.bool)  # it weighs nothing"
            w.line(f"{generated_name('reach', level.name)} = {reach}", level.span, indent=1)
        for rule in plan.rules:
            need = generated_name("reach", rule.level)
            if rule.weight == 0:
                need = "torch.zeros_like(ref, dtype=torch.bool)"
            elif rule.when is not None and rule.when.id not in {n.id for n in plan.dependent}:
                need = (f"{need} & ops.holds({value_name(rule.when.id)}, "
                        f"{mask_name(rule.when.id)})")
            w.line(f"{generated_name('need', rule.name)} = {need}", rule.span, indent=1)
        rules_by_name = {rule.name: rule for rule in plan.rules}
        for node in plan.dependent:
            terms = []
            for c in plan.contributions.get(node.id, []):
                if c.rule is not None:
                    source = generated_name("need", c.rule)
                    if c.when_of:  # a `when` counts wherever its level does
                        source = generated_name("reach", rules_by_name[c.rule].level)
                else:
                    source = f"n{c.parent}"
                if c.kind == "all":
                    terms.append(source)
                elif c.kind == "batch":
                    terms.append(f"ops.in_any_row({source})")
                elif c.kind in ("and", "or"):
                    decided = "ops.unless_false" if c.kind == "and" else "ops.unless_true"
                    terms.append(f"{decided}({source}, {value_name(c.other)}, {mask_name(c.other)})")
                else:
                    terms.append(f"ops.unless_branch({source}, {value_name(c.other)}, "
                                 f"{mask_name(c.other)}, {c.kind == 'then'})")
            need = " | ".join(terms) if terms else "torch.zeros_like(ref, dtype=torch.bool)"
            w.line(f"n{node.id} = {need}", node.span, indent=1)
        judged = ", ".join(f"{n.id}: n{n.id}" for n in plan.judged)
        w.line(f"return {{{judged}}}", indent=1)

    def tensor_line(self, n: Node) -> str:
        out = f"{value_name(n.id)}, {mask_name(n.id)} = "
        args = ", ".join(_pair(a) for a in n.args)
        op = n.op
        if op in ("const", "str_const"):
            code = out + f"k[{self.constant_index[n.id]}]"
            if op == "str_const":
                return code + "  # " + quote(n.attr("value")[:40])
            return code
        if op == "table":
            return out + f"{generated_name('table', n.attr('table'))}({args}, dt)"
        return out + OPERATIONS[op].emit(n, self)


def generate(program: ProgramIR) -> str:
    """The module source for a checked program."""
    return Generator(program).module()
