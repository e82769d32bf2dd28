"""Why one completion got its reward (``kdsl explain``).

``explain(program, completion, columns)`` scores one completion with the program's generated
module, asking both of its phases for their intermediate values (``execute.run(..., trace=)``),
and returns a JSON-able dict: what each output found and where in the completion, each ``let``,
each rule (whether it applies, its truth and what it read), each level's score, the gate that
closed, and the reward with its arithmetic. ``render_text`` prints it as plain text (for test
failure reports), ``render`` with rich (for the terminal).

Every reward, level score, rule truth, applicability and let value is the compiled program's own;
this module reads them, labels them with the spec's source text and shows how they combine.

The explanation (all numbers are floats rounded to 7 significant digits, float32's precision):

- ``spec``, ``version``, ``file``, ``logic``; ``completion``: the text that was scored.
- ``inputs``: a list of ``{name, type, value, valid, unit}``: the value the program read for each input
  it uses (an enum member's canonical name, ``null`` when missing; a raster as ``{"shape": [C, H,
  W], "valid_pixels": N}``).
- ``outputs``: a list of ``{name, type, source, found, value, span, text, reason, groups}``.
  ``span`` is ``[start, end)`` in the completion (for a parsed value, the span of the text it was
  parsed from), ``text`` the text there, ``reason`` why nothing was found; ``groups`` only for a
  regex: group name -> ``{text, span}``.
- ``lets``: a list of ``{name, type, valid, value, reason, reads}``; ``reason`` says why an invalid
  let has no value; ``reads``: see rules.
- ``levels``: a list of ``{name, gate, weight, score, score_before_gate, zeroed_by,
  contribution, arithmetic, rules}``. ``score`` is the program's (after gating),
  ``score_before_gate`` the weighted mean of the level's applicable rules, ``zeroed_by`` the gate
  that closed before this level, ``contribution`` = weight x score.
- each rule: ``{name, line, condition, when, applies, truth, valid, weight, soft, invalid, on,
  verdict, reason, reads}``. ``when`` is ``null`` or ``{condition, holds, value}`` (``holds`` is
  ``null`` when the condition has no value); ``valid`` says whether the body had a value
  (otherwise ``truth`` is the ``invalid`` policy's); ``verdict`` is one of ``holds``,
  ``partly holds``, ``fails``, ``no value`` (counted by the ``invalid`` policy), ``does not
  apply``; ``reads``: the values the rule is computed from, a list of ``{name, type, value,
  valid}``.
- ``tables``: a list of ``{table, args, row, line, file, row_text, result, type, valid}``, one per decision-
  table call (``args``: ``{name, type, value, valid, from}`` per column; ``row`` is 1-based, and
  ``null`` when no row matched).
- ``points``: a list of ``{sheet, line, file, total, valid, criteria}``, one per points-sheet call;
  each criterion ``{name, points, line, holds, gives}``.
- ``gate_closed``: ``null``, or ``{level, score, zeroed}``: the first gate level that was not fully
  satisfied, its score, and the later levels it set to 0.
- ``reward`` and ``reward_arithmetic`` (``"1 x 1 + 2 x 0 + 0.5 x 0 = 1"``).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdsl.errors import KdslError, Span
from kdsl.io.rows import COMPLETION, read_row
from kdsl.ir import JUDGED_OPS, Node, ProgramIR, groups_name, mask_name, span_name, value_name
from kdsl.operators import OPERATIONS
from kdsl.operators import TEXT_OPS as TEXT_OPERATIONS

if TYPE_CHECKING:
    from kdsl.runtime.program import Program

# A gate counts as closed below this score (the runtime's tolerance, kdsl.runtime.ops).
GATE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class _Words:
    """What an operation's ``missing`` sentence may use (``kdsl.operators.Words``)."""

    explainer: object
    where_lost: str  # " in `...` (line N)", or "" where the node itself lost the value

    def label(self, node: Node) -> str:
        return self.explainer.label(node)

    def shown(self, node: Node) -> str:
        return self.explainer.shown(node)

    def where(self, node: Node) -> str:
        return self.where_lost

    def asked(self, node: Node) -> dict | None:
        return self.explainer.trace.get("judged", {}).get(node.id, [None])[0]


# ---- building an explanation ------------------------------------------------------------------

def explain_row(program: Program, data: str | Path | None, row: int = 0, *, completion=None,
                overrides: dict | None = None, tokenizer=None) -> dict:
    """``explain`` for row ``row`` (from 0) of a data source (``kdsl.io.rows``), or for ``completion``
    given directly (``data`` None); ``overrides`` replace input values. A value that does not fit
    its input raises ``KdslError`` naming the file and the row (or ``--set``), as ``kdsl score``
    names them."""
    from kdsl.errors import KdslDataError

    if data is not None:
        if row < 0:
            raise IndexError(f"rows count from 0, so there is no row {row}")
        kinds = {name: kind for name, kind, _, _ in program.module.INPUTS}
        columns, where = read_row(data, row, program.input_names, kinds)
        completion = columns.pop(COMPLETION)
    else:
        columns, where = {}, Span("--set")
    columns.update(overrides or {})
    try:
        return explain(program, completion, columns, tokenizer=tokenizer)
    except KdslDataError as err:
        # One completion is scored as a batch of one: its row of the file is named instead.
        message = err.message.removeprefix("row 0, ")
        raise KdslError(f"row {row}, {message}" if data is not None else message, where) from None


def explain(program: Program, completion, columns: dict, *, tokenizer=None) -> dict:
    """Score one completion and say why it got its reward (the schema is in the module's doc).

    ``columns`` maps input names to plain values of one sample: numbers, strings, enum member
    names, lists for vectors and boxes, numpy arrays for rasters; an input left out is a missing
    value, as ``None`` is. ``completion`` is a string (or TRL's chat messages). A value that does
    not fit its input raises ``KdslDataError``.
    """
    from kdsl.errors import KdslDataError
    from kdsl.runtime import execute
    from kdsl.runtime.program import Scores

    try:
        text = execute.completion_texts([completion])[0]
    except KdslDataError as err:  # said of a batch ("completion 0: ..."); here there is one
        reason = err.message.split(": ", 1)[-1]
        raise KdslDataError(f"field `completion`: {reason}") from None
    batch = {name: [columns.get(name)] for name in program.input_names}
    trace: dict = {}
    out = execute.run(program.module, [text], batch, tokenizer=tokenizer, trace=trace,
                      similarity_model=program.similarity_model, judging=program.judging)
    return _Explainer(program.ir, trace, Scores.from_outputs(out)).explanation()


class _Explainer:
    """Reads one completion's values out of a trace, by IR node, and labels them."""

    def __init__(self, ir: ProgramIR, trace: dict, scores):
        self.ir = ir
        self.trace = trace
        self.scores = scores
        self.text: str = trace["texts"][0]
        self.strings: list[str] = trace["strings"]
        self.names: dict[int, str] = {}
        for name, node in ir.lets.items():
            self.names.setdefault(node.id, name)
        for name, node in ir.outputs.items():  # an output's name wins over a let aliasing it
            self.names[node.id] = name
        self.outputs = {node.id for node in ir.outputs.values()}
        self.lets = {node.id for node in ir.lets.values()}

    def explanation(self) -> dict:
        levels, gate_closed = self.levels()
        reward = _round(self._first(self.scores.reward))
        terms = [f"{_number(lv['weight'])} x {_number(lv['score'])}" for lv in levels]
        return {
            "spec": self.ir.name,
            "version": self.ir.version,
            "file": self.ir.file,
            "logic": self.ir.logic,
            "completion": self.text,
            "inputs": self.inputs(),
            "outputs": [self.output(name, node) for name, node in self.ir.outputs.items()],
            "lets": [self.let(name, node) for name, node in self.ir.lets.items()],
            "tables": self.table_calls(),
            "points": self.sheet_calls(),
            "judged": self.judged(),
            "levels": levels,
            "gate_closed": gate_closed,
            "reward": reward,
            "reward_arithmetic": f"{' + '.join(terms) or '0'} = {_number(reward)}",
        }

    def judged(self) -> list[dict]:
        """Each value a model gave (or did not): the exact prompt, the raw answer, the value."""
        items = []
        for node in self.ir.nodes:
            record = self.trace.get("judged", {}).get(node.id, [None])[0]
            if node.op not in JUDGED_OPS or record is None:
                continue
            items.append({
                "name": self.names.get(node.id), "model": node.attr("model"), "kind": node.op,
                "line": node.span.line, "criterion": node.attr("criterion"),
                "choices": list(node.attr("choices") or ()), "status": record["status"],
                "prompt": (list(record["prompt"]) if isinstance(record.get("prompt"), tuple)
                           else record.get("prompt")), "answer": record.get("answer"),
                "value": record.get("value"), "error": record.get("error"),
                "seconds": record.get("seconds")})
        return items

    # ---- reading the trace ----------------------------------------------------------------
    @staticmethod
    def _first(tensor):
        return tensor.reshape(-1)[0].item()

    def span(self, node: Node) -> tuple[int, int] | None:
        """Where a text node is in the completion (a regex: its whole match)."""
        if node.op == "regex":
            groups = self.trace.get(groups_name(node.id), {})
            if 0 in groups:
                return _span(groups[0][0])
            # The program asked only for the named groups it uses; the whole match comes from
            # the same search the text phase runs, on the same text.
            from kdsl.runtime import text as tx

            within = self.span(node.args[0])
            found = tx.regex_groups([self.text], [within], node.attr("pattern"), [0])
            return _span(found[0][0])
        if node.op == "regex_group":
            groups = self.trace.get(groups_name(node.args[0].id), {})
            group = node.attr("group")
            if group in groups:
                return _span(groups[group][0])
            return self.span(node.args[0]) if group == 0 else None
        return _span(self.trace[span_name(node.id)][0])

    def excerpt(self, span) -> str | None:
        return None if span is None else self.text[span[0]:span[1]]

    def pair(self, node: Node):
        """This completion's (value, mask) tensors of a tensor-phase node, or None."""
        x, m = self.trace.get(value_name(node.id)), self.trace.get(mask_name(node.id))
        if x is None or m is None:
            return None
        return x[0], m[0]

    def value(self, node: Node):
        """(JSON-able value, valid) of a node for this completion."""
        kind = node.type.kind
        if kind == "text":
            span = self.span(node)
            return self.excerpt(span), span is not None
        if kind == "record":  # a regex: the text of its whole match (groups: see `output`)
            span = self.span(node)
            return self.excerpt(span), span is not None
        pair = self.pair(node)
        if pair is None:
            return None, False
        x, m = pair
        if kind in ("field", "raster"):  # per-pixel values: only whether any pixel has a value
            return None, bool(m.any())
        if kind == "boxes":  # m[0]: the sample has a list; m[1 + k]: slot k holds a box
            flags = m.tolist()
            if not flags[0]:
                return None, False
            return [[_round(v) for v in box] for box, ok in zip(x.tolist(), flags[1:]) if ok], True
        if kind in ("vector", "box"):
            items = [_round(v) if ok else None for v, ok in zip(x.tolist(), m.tolist())]
            valid = all(v is not None for v in items) if kind == "box" else any(
                v is not None for v in items)
            return (items if valid else None), valid
        if not bool(m):
            return None, False
        return self.scalar(node, x.item()), True

    def span_of_group(self, regex: Node, group: str):
        groups = self.trace.get(groups_name(regex.id), {})
        if group in groups:
            return _span(groups[group][0])
        from kdsl.runtime import text as tx

        found = tx.regex_groups([self.text], [self.span(regex.args[0])], regex.attr("pattern"),
                                [group])
        return _span(found[group][0])

    def scalar(self, node: Node, raw):
        kind = node.type.kind
        if kind == "enum":
            return node.type.enum.members[int(raw)]
        if kind == "str":
            return self.strings[int(raw)]
        if kind == "bool":
            return bool(raw) if raw in (0.0, 1.0) else _round(raw)
        if kind == "int" and float(raw).is_integer():
            return int(raw)
        return _round(raw)

    def invalid(self, node: Node) -> bool:
        """Whether a node has no value at all for this completion."""
        if node.op == "const":
            return False
        if node.type.is_text:
            return self.span(node) is None
        pair = self.pair(node)
        if pair is None:
            return False
        return not bool(pair[1].any())

    # ---- labels and reasons ---------------------------------------------------------------
    def label(self, node: Node) -> str:
        if node.id in self.names:
            return self.names[node.id]
        if node.op == "input":
            return node.attr("name")
        return _source(self.ir, node.span) or node.op

    def reads(self, *roots: Node | None) -> list[dict]:
        """The named and extracted values an expression is computed from, in reading order."""
        found: dict[int, Node] = {}

        def visit(node: Node) -> None:
            if node.id in found or node.op in ("const", "str_const"):
                return
            leaf = node.id in self.names or node.op in TEXT_OPERATIONS or (
                node.op == "input" and node.type.kind != "raster") or (
                node.op == "element" and node.args[0].op == "input")
            if leaf:
                found[node.id] = node
                return
            for arg in node.args:
                visit(arg)

        for root in roots:
            if root is not None:
                visit(root)
        readings = []
        for node in found.values():
            value, valid = self.value(node)
            if node.id in self.lets and node.id not in self.outputs:
                value, valid = self.let_value(self.names[node.id], node)
            readings.append({"name": self.label(node), "type": str(node.type), "value": value,
                             "valid": valid})
        return readings

    def origin(self, node: Node) -> Node:
        """The innermost node without a value whose operands all have one: where it was lost."""
        for arg in node.args:
            if self.invalid(arg):
                return self.origin(arg)
        return node

    def why_invalid(self, node: Node) -> str:
        """Why a node has no value, said at the place where the value was lost."""
        origin = self.origin(node)
        op = origin.op
        if origin.is_text_phase or origin.id in self.outputs:
            reason = self.not_found(origin)
            if origin is node:
                return reason
            if origin.type.is_text:
                return f"`{self.label(origin)}` was not found ({reason})"
            return f"`{self.label(origin)}`: {reason}"
        where = ""
        if origin is not node and origin.span.line:
            where = f" in `{self.label(origin)}` (line {origin.span.line})"
        if op == "input":
            return f"input `{origin.attr('name')}` has no value (missing, null or NaN)"
        if op in ("element", "band") and origin.args[0].op == "input":
            return f"`{self.label(origin)}` has no value (missing, null or NaN)"
        if op == "table":
            return f"no row of table `{origin.attr('table')}` matches{where}"
        missing = OPERATIONS[op].missing if op in OPERATIONS else None
        if missing is not None:
            return missing(origin, _Words(self, where))
        return f"`{self.label(origin)}` has no value{where}"

    def not_found(self, node: Node) -> str:
        """Why a text or a value parsed from text was not found in the completion."""
        if node.op == "completion":
            return "no completion"
        if node.args and node.args[0].type.is_text and self.span(node.args[0]) is None:
            return f"`{self.label(node.args[0])}` was not found ({self.not_found(node.args[0])})"
        if node.op == "tag":
            return self._tag_missing(node)
        if node.op == "regex" or (node.op == "regex_group" and self.span(node.args[0]) is None):
            return "the regex does not match"
        if node.op == "regex_group":
            return f"the group `{node.attr('group')}` took no part in the match"
        missing = TEXT_OPERATIONS[node.op].missing if node.op in TEXT_OPERATIONS else None
        if missing is not None:
            return missing(node, _Words(self, ""))
        return f"`{self.label(node)}` has no value"

    def shown(self, node: Node) -> str:
        """The text a node reads (its first operand's span), quoted and shortened for a sentence."""
        source = self.excerpt(self.span(node.args[0])) if node.args else None
        return json.dumps(_shorten(source or "", 40), ensure_ascii=False)

    def _tag_missing(self, node: Node) -> str:
        within = self.span(node.args[0])
        tag = node.attr("name")
        opening = f"<{tag}>"
        where = "the completion" if node.args[0].op == "completion" else f"`{self.label(node.args[0])}`"
        find = self.text.rfind if node.attr("position") == "last" else self.text.find
        start = find(opening, within[0], within[1])
        if start < 0:
            return f"no {opening}...</{tag}> in {where}"
        if node.attr("position") == "only" and self.text.find(opening, start + len(opening),
                                                               within[1]) >= 0:
            return f"{opening} occurs more than once in {where} (`only` needs exactly one)"
        return f"{opening} is never closed by </{tag}> in {where}"

    # ---- sections -------------------------------------------------------------------------
    def inputs(self) -> list[dict]:
        """What the program read from each input it uses, in declaration order."""
        nodes = {node.attr("name"): node for node in self.ir.live_nodes() if node.op == "input"}
        shown = []
        for name in self.ir.inputs:
            node = nodes.get(name)
            if node is None:
                continue
            if node.type.kind == "raster":
                x, present = self.pair(node)
                valid = 0
                if bool(present):
                    nodata = node.type.nodata
                    pixels = x.isfinite() if nodata is None else (x.isfinite() & (x != nodata))
                    valid = int(pixels.all(dim=0).sum())
                value, known = {"shape": list(x.shape), "valid_pixels": valid}, bool(present)
            else:
                value, known = self.value(node)
            shown.append({"name": name, "type": str(node.type), "value": value, "valid": known,
                          "unit": self.ir.inputs[name].unit})
        return shown

    def output(self, name: str, node: Node) -> dict:
        value, found = self.value(node)
        text_node = node if node.type.is_text else self._text_source(node)
        span = None if text_node is None else self.span(text_node)
        entry = {
            "name": name,
            "type": str(node.type),
            "source": _source(self.ir, node.span),
            "found": found,
            "value": value,
            "span": None if span is None else list(span),
            "text": self.excerpt(span),
            "reason": None if found else self.why_invalid(node),
        }
        if node.op == "regex":
            entry["groups"] = {}
            for group in node.type.groups:
                group_span = self.span_of_group(node, group)
                entry["groups"][group] = {"text": self.excerpt(group_span),
                                          "span": None if group_span is None else list(group_span)}
        return entry

    def _text_source(self, node: Node) -> Node | None:
        """The one text a value was read from (None if it reads several, or none)."""
        texts: dict[int, Node] = {}
        stack = [node]
        while stack:
            current = stack.pop()
            if current.type.is_text:
                texts[current.id] = current
                continue
            stack.extend(current.args)
        return next(iter(texts.values())) if len(texts) == 1 else None

    def let_value(self, name: str, node: Node):
        if name in self.scores.values:  # scalar lets leave the program: report its own values
            valid = bool(self._first(self.scores.valid[name]))
            raw = self._first(self.scores.values[name])
            return (self.scalar(node, raw) if valid else None), valid
        return self.value(node)

    def let(self, name: str, node: Node) -> dict:
        value, valid = self.let_value(name, node)
        reason = None
        if not valid and node.type.kind not in ("field", "raster"):
            pair = self.pair(node)
            if pair is not None and bool(pair[1].all()):
                reason = "its value is out of float range (an overflow)"
            else:
                reason = self.why_invalid(node)
        return {"name": name, "type": str(node.type), "valid": valid, "value": value,
                "reason": reason, "reads": self.reads(*node.args)}

    def table_calls(self) -> list[dict]:
        """Each decision-table call: the values it saw, the row that decided it (with its spec
        line and text) and the result; a call that saw the same values twice is shown once."""
        nodes = {node.id: node for node in self.ir.nodes}
        calls = []
        for name, decided_by, call in self.trace.get("table_rows", []):
            node, table = nodes.get(call), self.ir.tables.get(name)
            if node is None or table is None:
                continue
            args = []
            for (param, _), arg in zip(table.params, node.args):
                value, valid = self.value(arg)
                args.append({"name": param, "type": str(arg.type), "value": value, "valid": valid,
                             "from": self.label(arg)})
            index = int(decided_by.reshape(-1)[0])
            value, valid = self.value(node)
            row = table.rows[index] if index >= 0 else None
            calls.append({"table": name, "args": args, "row": index + 1 if row else None,
                          "line": row.span.line if row else None,
                          "file": row.span.file if row else None,
                          "row_text": _source(self.ir, row.span) if row else None,
                          "result": value, "type": str(node.type), "valid": valid})
        return calls

    def sheet_calls(self) -> list[dict]:
        """Each points-sheet call: every criterion, whether it held and the points it gave."""
        calls = []
        for call in self.ir.sheet_calls:
            total, valid = self.value(call.total)
            if self.pair(call.total) is None:
                continue  # not computed: no rule or let uses this call
            criteria = []
            for name, points, condition, span in call.criteria:
                held, known = self.value(condition)
                criteria.append({"name": name, "points": _round(points), "line": span.line,
                                 "holds": bool(held) if known else None,
                                 "gives": _round(points) if known and held else 0.0})
            calls.append({"sheet": call.sheet, "line": call.span.line, "file": call.span.file, "total": total,
                          "valid": valid, "criteria": criteria})
        return calls

    def levels(self) -> tuple[list[dict], dict | None]:
        levels: list[dict] = []
        closed: dict | None = None
        for level in self.ir.levels:
            rules = [self.rule(rule) for rule in level.rules]
            score = _round(self._first(self.scores.levels[level.name]))
            applying = [r for r in rules if r["applies"]]
            total = sum(r["weight"] for r in applying)
            before = _round(sum(r["weight"] * r["truth"] for r in applying) / total) if total else 1.0
            if applying:
                terms = [_number(r["truth"]) if r["weight"] == 1 else
                         f"{_number(r['weight'])} x {_number(r['truth'])}" for r in applying]
                shown = terms[0] if len(terms) == 1 else f"({' + '.join(terms)})"
                arithmetic = f"{shown} / {_number(total)} = {_number(before)}"
            else:
                arithmetic = "no rule applies, so 1"
            if closed is not None:
                arithmetic = f"gate `{closed['level']}` closed; its rules alone give {arithmetic}"
            levels.append({
                "name": level.name, "gate": level.gate, "weight": float(level.weight),
                "score": score, "score_before_gate": before,
                "zeroed_by": None if closed is None else closed["level"],
                "contribution": _round(float(level.weight) * score),
                "arithmetic": arithmetic, "rules": rules,
            })
            if closed is None and level.gate and score < 1.0 - GATE_TOLERANCE:
                closed = {"level": level.name, "score": score, "zeroed": []}
            elif closed is not None:
                closed["zeroed"].append(level.name)
        return levels, closed

    def rule(self, rule) -> dict:
        truth = _round(self._first(self.scores.rules[rule.name]))
        applies = bool(self._first(self.scores.applies[rule.name]))
        valid = not self.invalid(rule.body)
        when = None
        if rule.when is not None:
            value, known = self.value(rule.when)
            holds = None if not known else (value is True or (
                not isinstance(value, bool) and value >= 0.5))
            when = {"condition": self.label(rule.when), "holds": holds,
                    "value": value if known else None}
        reason = None
        if not applies:
            verdict = "does not apply"
            if when is not None and when["holds"] is None:
                reason = f"`when` has no value: {self.why_invalid(rule.when)}"
            elif when is not None and not when["holds"]:
                reason = f"`when {when['condition']}` does not hold"
            else:
                reason = f"no value, and it says `invalid skip`: {self.why_invalid(rule.body)}"
        elif not valid:
            verdict = "no value"
            counted = "pass (1)" if rule.invalid == "pass" else "fail (0)"
            reason = f"{self.why_invalid(rule.body)}; counted as {counted} by `invalid {rule.invalid}`"
        elif truth >= 1.0 - GATE_TOLERANCE:
            verdict = "holds"
        elif truth <= GATE_TOLERANCE:
            verdict = "fails"
        else:
            verdict = "partly holds"
            if rule.soft:
                reason = f"within the soft margin {_number(rule.soft)} of its threshold"
        return {
            "name": rule.name, "line": rule.span.line,
            "condition": self.label(rule.body), "when": when,
            "applies": applies, "truth": truth, "valid": valid, "weight": float(rule.weight),
            "soft": None if rule.soft is None else float(rule.soft), "invalid": rule.invalid,
            "on": rule.on, "verdict": verdict, "reason": reason,
            "reads": self.reads(rule.when, rule.body),
        }


def _span(found) -> tuple[int, int] | None:
    return None if found is None else (int(found[0]), int(found[1]))


def _round(value: float) -> float:
    """float32's precision, without the noise of its binary expansion (0.1 -> 0.1)."""
    return float(f"{float(value):.7g}")


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "no value"
    if isinstance(value, bool):
        return "true" if value else "false"
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"


def _shorten(text: str, limit: int) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[:max(limit - 3, 1)] + "..."


def _source(ir: ProgramIR, span: Span) -> str | None:
    """The spec text a span covers, on one line (None where the span has no end)."""
    text = ir.sources.get(span.file)
    if text is None or not span.line or not span.end_line:
        return None
    lines = text.splitlines()
    if span.end_line > len(lines):
        return None
    if span.line == span.end_line:
        piece = lines[span.line - 1][span.column - 1:span.end_column - 1]
    else:
        first = lines[span.line - 1][span.column - 1:]
        middle = lines[span.line:span.end_line - 1]
        last = lines[span.end_line - 1][:span.end_column - 1]
        piece = " ".join([first, *middle, last])
    return " ".join(piece.replace("\\\n", " ").split()) or None


# ---- rendering --------------------------------------------------------------------------------

# Colours of the outputs' spans in the terminal; outputs with the same span share one.
_SPAN_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")
_VERDICT_STYLES = {"holds": "green", "partly holds": "yellow", "fails": "red",
                   "no value": "red", "does not apply": "dim"}


def _lines(explanation: dict, width: int) -> tuple[list, dict]:
    """The trace as lines of (text, style) segments, shared by the plain and rich renderings;
    the completion itself is the marker line ``None``. Also returns each span's style."""
    e = explanation
    lines: list = []
    add = lines.append
    styles: dict[tuple, str] = {}
    whole = (0, len(e["completion"]))
    for output in e["outputs"]:
        span = tuple(output["span"]) if output["span"] else None
        if span and span != whole and span not in styles:
            styles[span] = f"underline {_SPAN_STYLES[len(styles) % len(_SPAN_STYLES)]}"
    excerpt_width = max(20, width - 50)

    add([(f"{e['spec']} v{e['version']}", "bold"), (f" ({e['file']})", "dim")])
    add([("reward ", "bold"), (e["reward_arithmetic"], "bold")])
    closed = e["gate_closed"]
    if closed:
        zeroed = ", ".join(f"`{name}`" for name in closed["zeroed"])
        after = f", so {zeroed} count 0" if zeroed else " (no level comes after it)"
        add([(f"gate `{closed['level']}` closed", "bold red"),
             (f": it scored {_number(closed['score'])} < 1{after}", "")])
    elif any(level["gate"] for level in e["levels"]):
        add([("every gate passed", "green")])
    add([])
    add([(f"completion ({len(e['completion'])} characters):", "bold")])
    add(None)
    add([])

    if e["outputs"]:
        add([("outputs:", "bold")])
        name_width = max(len(o["name"]) for o in e["outputs"])
        for output in e["outputs"]:
            span = tuple(output["span"]) if output["span"] else None
            segments = [("    ", ""), (output["name"], styles.get(span, "bold")),
                        (" " * (name_width - len(output["name"]) + 2), "")]
            if output["found"]:
                if output["type"] in ("text", "regex match"):
                    segments.append(("found", "green"))
                else:
                    segments.append((f"= {_value(output['value'], output['type'])}", "green"))
            else:
                segments.append(("not found", "red"))
            if span:
                segments.append((f"  at {span[0]}..{span[1]}", ""))
                shown = json.dumps(_shorten(output["text"], excerpt_width), ensure_ascii=False)
                segments.append((f"  {shown}", "dim"))
            if output["reason"]:
                segments.append((f"  ({output['reason']})", "dim"))
            add(segments)
            for group, found in (output.get("groups") or {}).items():
                where = f"at {found['span'][0]}..{found['span'][1]}  " if found["span"] else ""
                text = json.dumps(found["text"], ensure_ascii=False) if found["text"] is not None else "not found"
                add([(f"    {'':<{name_width}}  .{group} {where}{text}", "dim")])
        add([])

    if e["inputs"]:
        add([("inputs:", "bold")])
        for item in e["inputs"]:
            shown = _shorten(_value(item["value"], item["type"]), width - 10)
            unit = f" {item['unit']}" if item.get("unit") and item["valid"] else ""
            add([(f"    {item['name']} = {shown}{unit}", "" if item["valid"] else "red")])
        add([])

    if e["lets"]:
        add([("lets:", "bold")])
        for let in e["lets"]:
            if let["valid"]:
                segments = [(f"    {let['name']} = {_value(let['value'], let['type'])}", "")]
            else:
                segments = [(f"    {let['name']} ", ""), ("invalid", "red"),
                            (f": {let['reason']}" if let["reason"] else "", "")]
            if let["reads"]:
                segments.append((f"  <- {_reads(let['reads'])}", "dim"))
            add(segments)
        add([])

    if e.get("judged"):
        add([("models:", "bold")])
        for item in e["judged"]:
            name = f"{item['name']} = " if item["name"] else ""
            if item["value"] is None:
                verdict = (item["status"], "red" if item["error"] else "dim")
            elif item["kind"] == "rubric":
                grade = item["choices"][round(item["value"] * (len(item["choices"]) - 1))]
                verdict = (f'"{grade}" ({_number(item["value"])})', "green")
            else:
                verdict = (_number(item["value"]), "green")
            seconds = f", {item['seconds']:.2f} s" if item.get("seconds") else ""
            add([(f"    {name}{item['model']} (line {item['line']}): ", ""), verdict,
                 (f"  {item['status']}{seconds}" if item["value"] is not None else "", "dim"),
                 (f": {item['error']}" if item["error"] else "", "")])
            prompt = item["prompt"]
            if prompt is not None:
                parts = ([f"{m['role']}: {m['content']}" for m in prompt]
                         if item["kind"] == "rubric" else [json.dumps(list(prompt), ensure_ascii=False)])
                add([("        prompt:", "dim")])
                for part in parts:
                    for line in part.split("\n"):
                        add([(f"          {line}", "dim")])
            if item["answer"] is not None:
                add([(f"        answer: {json.dumps(item['answer'], ensure_ascii=False)}", "dim")])
        add([])

    if e.get("points"):
        add([("points:", "bold")])
        for call in e["points"]:
            total = _value(call["total"]) if call["valid"] else "invalid"
            where = f"line {call['line']}" if call["file"] == e["file"] else (
                f"{Path(call['file']).name}:{call['line']}")
            add([(f"    {call['sheet']} ({where}) = {total}", "")])
            width_name = max(len(c["name"]) for c in call["criteria"])
            for c in call["criteria"]:
                held = {True: "holds", False: "no", None: "no value"}[c["holds"]]
                add([(f"        {c['name']:<{width_name}}  {held:<8}  {_number(c['gives'])} of "
                      f"{_number(c['points'])}", "" if c["holds"] else "dim")])
        add([])

    if e.get("tables"):
        add([("tables:", "bold")])
        for call in e["tables"]:
            args = ", ".join(f"{a['from'] if a['from'].isidentifier() else a['name']} = "
                             f"{_value(a['value'], a['type']) if a['valid'] else 'invalid'}"
                             for a in call["args"])
            if call["row"] is None:
                add([(f"    {call['table']}({args}) ", ""), ("no row matches", "red")])
            else:
                result = _value(call["result"], call["type"]) if call["valid"] else "invalid"
                where = f"line {call['line']}" if call["file"] == e["file"] else (
                    f"{Path(call['file']).name}:{call['line']}")
                add([(f"    {call['table']}({args}) -> {result}", ""),
                     (f"  row {call['row']}, {where}: {call['row_text']}", "dim")])
        add([])

    add([("levels:", "bold")])
    for level in e["levels"]:
        kind = ("gate, " if level["gate"] else "") + f"weight {_number(level['weight'])}"
        style = "red" if level["zeroed_by"] else ""
        add([(f"  {level['name']}", "bold"), (f" ({kind}): ", ""),
             (f"{_number(level['score'])}", style or "bold"),
             (f" = {level['arithmetic']}" if not level["zeroed_by"] else f" ({level['arithmetic']})",
              "dim" if level["zeroed_by"] else "")])
        for rule in level["rules"]:
            verdict = rule["verdict"]
            shown = verdict if verdict in ("does not apply", "no value") else (
                f"{verdict} ({_number(rule['truth'])})")
            add([(f"    rule {rule['name']}: ", ""), (shown, _VERDICT_STYLES[verdict]),
                 (f": {rule['reason']}" if rule["reason"] else "", "")])
            details = []
            if rule["when"] is not None:
                details.append(f"when {rule['when']['condition']}:")
            details.append(rule["condition"] or "")
            if rule["soft"] is not None:
                details.append(f"soft {_number(rule['soft'])}")
            if rule["weight"] != 1:
                details.append(f"weight {_number(rule['weight'])}")
            if rule["invalid"] != "fail":
                details.append(f"invalid {rule['invalid']}")
            if rule["on"]:
                details.append(f"on {rule['on']}")
            add([(f"        {' '.join(d for d in details if d)}", "dim")])
            if rule["reads"]:
                add([(f"        reads {_reads(rule['reads'])}", "dim")])
    return lines, styles


def _value(value, type_name: str = "") -> str:
    if value is None:
        return "no value"
    if type_name.startswith("enum "):  # a member, written as in the spec
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value, 6)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict) and "shape" in value:
        return f"raster {'x'.join(str(s) for s in value['shape'])}, {value['valid_pixels']} valid pixels"
    return json.dumps(value, ensure_ascii=False)


def _reads(readings: list[dict]) -> str:
    return ", ".join(f"{_shorten(r['name'], 60)} = {_shorten(_value(r['value'], r['type']), 40)}"
                     for r in readings)


def render_text(explanation: dict, width: int = 100) -> str:
    """The explanation as plain text (no colour codes), for reports such as a failing test's.
    The completion is printed once, wrapped to ``width``; each output line gives its span."""
    lines, _ = _lines(explanation, width)
    out: list[str] = []
    for line in lines:
        if line is None:
            for paragraph in explanation["completion"].split("\n"):
                wrapped = textwrap.wrap(paragraph, width - 4, initial_indent="    ",
                                        subsequent_indent="    ", drop_whitespace=False,
                                        replace_whitespace=False)
                out.extend(piece.rstrip() for piece in wrapped or [""])
            continue
        out.append("".join(text for text, _style in line).rstrip())
    return "\n".join(out).rstrip() + "\n"


def render(explanation: dict, console) -> None:
    """Print the explanation on a rich ``Console``: the completion with each output's span
    underlined in its colour, verdicts coloured."""
    from rich.text import Text

    lines, styles = _lines(explanation, console.width)
    for line in lines:
        if line is None:
            completion = Text(explanation["completion"])
            for (start, end), style in styles.items():
                completion.stylize(style, start, end)
            for piece in completion.wrap(console, max(console.width - 4, 20)):
                piece.rstrip()
                console.print(Text("    ") + piece, soft_wrap=True)
            continue
        # Long lines are left to the terminal to wrap, and stay whole when piped to a file.
        console.print(Text.assemble(*line), soft_wrap=True)
