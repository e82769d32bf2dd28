"""Checks that need the lowered program but make no nodes: the advantage and mask settings, the
spec's examples (names, values against input types), and unused names (warnings)."""

from __future__ import annotations

from kdsl.errors import DiagnosticSink, did_you_mean
from kdsl.frontend import ast
from kdsl.ir import ProgramIR
from kdsl.semantic.scope import not_a_member, shown_value, with_article
from kdsl.types import EnumType, Type

ESTIMATORS = {"grpo": {"scale": ("group", "batch", "none"), "aggregate": ("sum", "per_level", "per_rule")},
              "rloo": {"aggregate": ("sum", "per_level", "per_rule")}}

ADVANTAGE_DEFAULTS = {"grpo": {"scale": "group", "aggregate": "sum"}, "rloo": {"aggregate": "sum"}}

_BOOL_WORDS = frozenset({"true", "yes", "y", "1", "t", "false", "no", "n", "0", "f"})  # as scoring reads


class Validation:
    def __init__(self, spec: ast.Spec, program: ProgramIR, sink: DiagnosticSink):
        self.spec = spec
        self.program = program
        self.sink = sink

    def check_settings(self) -> None:
        adv = self.spec.advantage
        if adv is not None:
            options = ESTIMATORS.get(adv.estimator)
            if options is None:
                self.sink.error("KD051", f"unknown advantage estimator `{adv.estimator}`; choose "
                                f"{' or '.join(ESTIMATORS)}{did_you_mean(adv.estimator, ESTIMATORS)}",
                                adv.span)
            else:
                settings = {"estimator": adv.estimator, **ADVANTAGE_DEFAULTS[adv.estimator]}
                for s in adv.settings:
                    allowed = options.get(s.name)
                    if allowed is None:
                        self.sink.error("KD052", f"`{adv.estimator}` has no setting `{s.name}`; it takes "
                                        f"{', '.join(options)}{did_you_mean(s.name, options)}", s.span)
                    elif s.value not in allowed:
                        shown = f"{s.value:g}" if isinstance(s.value, float) else s.value
                        self.sink.error("KD053", f"`{s.name}` takes {', '.join(allowed)}, not `{shown}`"
                                        f"{did_you_mean(str(s.value), allowed)}", s.span)
                    else:
                        settings[s.name] = s.value
                self.program.advantage = settings
        self.program.masks = [(m.mode, m.marker) for m in self.spec.masks]
        for m in self.spec.masks:
            if not m.marker:
                self.sink.error("KD054", "a mask marker cannot be empty", m.span)

    def check_examples(self) -> None:
        rules = {r.name for r in self.program.rules}
        # Rules written in the spec whose body has an error (already reported) are not unknown.
        written = {r.name for lv in self.spec.levels for r in lv.rules}
        levels = {lv.name for lv in self.program.levels}
        lets = set(self.program.lets)
        titles: set[str] = set()
        for example in self.spec.examples:
            if example.title in titles:
                self.sink.error("KD032", f"two examples are called \"{example.title}\"", example.span)
            titles.add(example.title)
        for example in self.spec.examples:
            for e in example.expectations:
                if e.kind == "relative" and e.other not in titles:
                    self.sink.error("KD055", f"example \"{example.title}\" is compared with \"{e.other}\", which "
                                    f"is not an example of this spec{did_you_mean(e.other, titles)}",
                                    e.span)
                elif e.kind == "relative" and e.other == example.title:
                    self.sink.error("KD055", f"example \"{example.title}\" is compared with itself", e.span)
            columns = set(self.program.inputs) | {"completion"}
            for f in example.fields:
                if f.name not in columns:
                    self.sink.error("KD056", f"example sets `{f.name}`, which is not an input of this spec"
                                    f"{did_you_mean(f.name, columns)}", f.span)
                elif f.name in self.program.inputs:
                    self.check_example_value(f.name, self.program.inputs[f.name].type, f.value)
            for e in example.expectations:
                head, *rest = e.target
                if e.kind == "judge":
                    self.check_judge_expectation(e)
                    continue
                if head == "reward" and not rest:
                    if e.kind not in ("compare", "relative"):
                        self.sink.error("KD057", "expect a comparison for the reward, e.g. `reward >= 1`", e.span)
                    continue
                if head in ("level", "rule", "let") and rest:
                    pool = {"level": levels, "rule": rules, "let": lets}[head]
                    name = rest[0]
                else:
                    pool, name = rules | levels | lets, head
                if name not in pool and name in written - rules:
                    continue
                if name not in pool:
                    self.sink.error("KD058", f"example expects `{'.'.join(e.target)}`, which is not a rule, "
                                    f"level or let{did_you_mean(name, pool)}", e.span)
                elif e.kind in ("holds", "violated", "inapplicable") and name not in rules:
                    self.sink.error("KD059", f"`{name}` is not a rule; compare it instead, e.g. "
                                    f"`{name} >= 0.5`", e.span)

    def check_judge_expectation(self, e: ast.Expectation) -> None:
        """`expect judge.NAME == "choice"`: NAME is a let holding a rubric item, the word one of
        its choices."""
        name = e.target[1]
        node = self.program.lets.get(name)
        if node is None or node.op != "rubric":
            graded = [n for n, node in self.program.lets.items() if node.op == "rubric"]
            self.sink.error("KD104", f"`judge.{name}` expects a judge's grade, but `{name}` is not a let "
                            f"holding a rubric item{did_you_mean(name, graded)}", e.span)
            return
        choices = node.attr("choices")
        if e.other.strip().casefold() not in [c.casefold() for c in choices]:
            self.sink.error("KD103", f'"{e.other}" is not a choice of `{name}`; its choices are '
                            + ", ".join(f'"{c}"' for c in choices), e.span)

    def check_example_value(self, name: str, type_: Type, value: ast.ExampleValue) -> None:
        """An example's value for input ``name``, held to what scoring accepts for that input, so
        a bad value is a located error here and not an unscorable case in ``kdsl test``. Every
        bad field (and every bad element of a list) is its own error."""
        if value.kind in ("none", "fixture"):  # missing is allowed; a fixture is read by kdsl test
            return
        kind = type_.kind
        problem = None
        if kind in ("float", "int"):
            if value.kind != "number" and value.kind != "bool":
                problem = "a number"
            elif kind == "int" and value.kind == "number" and not float(value.value).is_integer():
                problem = "a whole number"
        elif kind == "bool":
            if not (value.kind == "bool" or (value.kind == "number" and value.value in (0, 1))
                    or (value.kind in ("name", "string") and str(value.value).strip().lower() in _BOOL_WORDS)):
                problem = "true or false"
        elif kind == "str":
            if value.kind not in ("string", "name"):
                problem = "a string"
        elif kind == "enum":
            self.check_example_member(name, type_.enum, value)
            return
        elif kind in ("vector", "box"):
            size = 4 if kind == "box" else type_.size
            self.check_example_numbers(name, type_, value, size, f"{size} numbers")
            return
        elif kind == "boxes":
            if value.kind != "list" or any(box.kind != "list" for box in value.value):
                problem = "a list of boxes [[x1, y1, x2, y2], ...]"
            else:
                for box in value.value:
                    self.check_example_numbers(name, type_, box, 4, "a box [x1, y1, x2, y2]")
                return
        if problem is not None:
            self.sink.error("KD060", f"`{name}` is {with_article(str(type_))} input: expected {problem}, got "
                            f"{shown_value(value)}", value.span)

    def check_example_numbers(self, name: str, type_: Type, value: ast.ExampleValue, size: int,
                              expected: str) -> None:
        head = f"`{name}` is {with_article(str(type_))} input: expected"
        if value.kind != "list":
            self.sink.error("KD060", f"{head} {expected}, got {shown_value(value)}", value.span)
            return
        for element in value.value:
            if element.kind not in ("number", "none"):
                self.sink.error("KD060", f"{head} numbers, got {shown_value(element)}", element.span)
        if len(value.value) != size:
            self.sink.error("KD060", f"{head} {expected}, got {len(value.value)}", value.span)

    def check_example_member(self, name: str, enum: EnumType, value: ast.ExampleValue) -> None:
        from kdsl.runtime.text import normalize_term

        members = ", ".join(enum.members)
        if value.kind == "number":
            if float(value.value).is_integer() and 0 <= value.value < len(enum.members):
                return
            self.sink.error("KD060", f"`{name}` is enum {enum.name}: expected one of {members} (or an index "
                            f"below {len(enum.members)}), got {shown_value(value)}", value.span)
            return
        if value.kind not in ("name", "string"):
            self.sink.error("KD060", f"`{name}` is enum {enum.name}: expected one of {members}, got "
                            f"{shown_value(value)}", value.span)
            return
        spellings = {normalize_term(m) for m in enum.members}
        for synonyms in enum.synonyms:
            spellings.update(normalize_term(s) for s in synonyms)
        if normalize_term(str(value.value)) not in spellings:
            self.sink.error("KD065", not_a_member(str(value.value), enum), value.span)

    def report_unused(self) -> None:
        """Warn about inputs, outputs and lets that no rule reaches (read from the syntax, so a
        name is not reported as unused just because an error stopped its rule from lowering)."""
        refs: dict[str, set[str]] = {}
        for d in (*self.spec.outputs, *self.spec.lets):
            refs.setdefault(d.name, set()).update(_names_in(d.value))
        reachable: set[str] = set()
        stack = [name for level in self.spec.levels for rule in level.rules
                 for expr in (rule.body, rule.when) if expr is not None for name in _names_in(expr)]
        stack += [rule.on for level in self.spec.levels for rule in level.rules if rule.on]
        while stack:
            name = stack.pop()
            if name in reachable:
                continue
            reachable.add(name)
            stack.extend(refs.get(name, ()))
        named = [*(("input", d) for d in self.spec.inputs), *(("output", d) for d in self.spec.outputs),
                 *(("let", d) for d in self.spec.lets),
                 *(("judge" if m.kind == "judge" else "reward model", m) for m in self.spec.models)]
        for kind, decl in named:
            if decl.name not in reachable:
                reachable.add(decl.name)  # one warning per name, even if it is defined twice
                self.sink.warning("KD061", f"{kind} `{decl.name}` is never used", decl.span)


def _names_in(expr: ast.Node) -> set[str]:
    """Every bare name an expression mentions (its variables, and words that may be members)."""
    found: set[str] = set()
    stack: list = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Node):
            for value in node.__dict__.values():
                if isinstance(value, ast.Node):
                    stack.append(value)
                elif isinstance(value, tuple):
                    stack.extend(v for v in value if isinstance(v, ast.Node))
    return found
