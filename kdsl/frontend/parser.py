"""Stage 1: spec text -> ``kdsl.frontend.ast.Spec``.

Lark (LALR, positions propagated) does the parsing; one Transformer builds the frozen AST; Lark's
exceptions are turned into ``KdslSyntaxError`` here, at the boundary, with a message that says what
was expected in words a spec author knows.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from functools import lru_cache
from pathlib import Path

import lark
from lark import Token, Transformer, v_args
from lark.exceptions import (
    GrammarError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from kdsl.errors import Diagnostic, KdslError, KdslSyntaxError, Span, printable, source_line
from kdsl.frontend import ast
from kdsl.io.resources import grammar_path
from kdsl.limits import MAX_BANDS, MAX_NESTING, MAX_NUMBER, MAX_VERSION


class _SpecError(Exception):
    def __init__(self, code: str, message: str, span: Span):
        super().__init__(message)
        self.code = code
        self.span = span


class _DropBracketedNewlines:
    """Post-lexer: a newline inside (...) or [...] continues the statement.

    Lark holds one post-lexer per parser, and the parser is built once per process, so what it
    remembers of the text being parsed (read again to word a syntax error) is kept per thread:
    two threads parsing at once each see their own brackets."""

    always_accept = ("_NL",)

    def __init__(self) -> None:
        self._state = threading.local()

    @property
    def open(self) -> list[Token]:
        """Brackets still open, for "`(` at 2:14 is not closed"."""
        return getattr(self._state, "open", [])

    @property
    def blocks(self) -> list[Token]:
        """Braces still open, for "this `{` is not closed"."""
        return getattr(self._state, "blocks", [])

    def process(self, stream):
        self._state.open = opened = []
        self._state.blocks = blocks = []
        for token in stream:
            if token.type in ("LPAR", "LSQB"):
                opened.append(token)
            elif token.type in ("RPAR", "RSQB"):
                if opened:
                    opened.pop()
            elif token.type == "LBRACE":
                blocks.append(token)
            elif token.type == "RBRACE" and blocks:
                blocks.pop()
            elif token.type == "_NL" and opened:
                continue
            yield token


_POSTLEX = _DropBracketedNewlines()

# Words the grammar reserves in some positions; a slip like `and and` makes Lark read the second
# one as a name, so the error is reported at the keyword itself.
_KEYWORDS = frozenset({
    "and", "or", "not", "in", "as", "if", "then", "else", "when", "soft", "weight", "on", "invalid",
    "rule", "level", "gate", "let", "def", "table", "input", "output", "enum", "import", "spec",
    "version", "advantage", "mask", "example", "expect", "tag", "regex", "within", "first", "last",
    "only", "true", "false", "judge", "reward_model",
})
# Named by Lark; the anonymous multi-character operators (`**`, `..`, `+-`) are told by their text.
_OPERATORS = frozenset({"PLUS", "MINUS", "STAR", "SLASH", "PERCENT", "CMP_OP", "AND", "OR", "IN",
                        "NOT", "DOT", "LPAR", "LSQB", "AS"})
_OPERATOR_TEXTS = ("**", "..", "+-")


# What the parser can read on its own: a whole spec, or one expectation (`kdsl test` cases).
START_RULES = ("start", "expectation")


@lru_cache(maxsize=1)
def _lark() -> lark.Lark:
    grammar = grammar_path().read_text(encoding="utf-8")
    return build_lark(grammar, _cache_file(grammar))


def build_lark(grammar: str, cache_file: str | None) -> lark.Lark:
    """The LALR parser for ``grammar``. Building its tables takes most of a ``kdsl check`` run
    (about 0.2 s), so with ``cache_file`` Lark stores them there and later runs load them (about
    0.02 s); Lark checks the file against the grammar, its options and its own version, and
    rebuilds (and rewrites) it when they differ or the file cannot be read."""
    return lark.Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True,
                     postlex=_POSTLEX, cache=cache_file or False, start=list(START_RULES))


def cache_folder() -> Path | None:
    """Where kdsl keeps files it can rebuild: ``$KDSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdsl``,
    else ``~/.cache/kdsl``; None when ``KDSL_CACHE_DIR`` is empty (no cache) or the folder is not
    private to this user. Lark's cache is a pickle, so a folder someone else can write to (the
    shared temporary folder Lark uses by default, for one) is never used."""
    configured = os.environ.get("KDSL_CACHE_DIR")
    if configured == "":
        return None
    if configured:
        folder = Path(configured).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = Path(base) / "kdsl"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder if _private(folder) else None
    except OSError:  # a read-only home, say: parse without a cache
        return None


def _private(path: Path) -> bool:
    """Owned by this user and writable by no one else (always true where there are no uids)."""
    if not hasattr(os, "getuid"):
        return True
    info = path.stat()
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def _cache_file(grammar: str) -> str | None:
    folder = cache_folder()
    if folder is None:
        return None
    digest = hashlib.sha256(grammar.encode("utf-8")).hexdigest()[:16]
    path = folder / f"grammar-{digest}-lark-{lark.__version__}.cache"
    try:
        if path.exists() and not _private(path):
            return None
    except OSError:
        return None
    return str(path)


# Named terminals as a spec author would read them in "expected ..." messages; the others are
# shown as the literal text they match.
_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "a new line",
    "CMP_OP": "a comparison",
}


@lru_cache(maxsize=1)
def _terminal_patterns() -> dict[str, str]:
    return {t.name: t.pattern.value for t in _lark().terminals if t.pattern.type == "str"}


def _expected(names: set[str], end: str = "the end of the file") -> str:
    words = {end} if "$END" in names else set()
    names = names - {"$END"}
    patterns = _terminal_patterns()
    operators = {n for n in names if n in _OPERATORS or patterns.get(n) in _OPERATOR_TEXTS}
    if "NAME" in names or "NUMBER" in names:  # a value can start here: `(`, `-` and `not` begin one
        operators -= {"LPAR", "MINUS", "NOT"}
    if len(names) > 6 and len(operators) > 2:
        names = names - operators
        words.add("an operator")
    for name in names:
        if name in _TOKEN_WORDS:
            words.add(_TOKEN_WORDS[name])
        elif name in _terminal_patterns():
            words.add(f"`{_terminal_patterns()[name]}`")
    ordered = sorted(words, key=lambda w: (w.startswith("`"), w))
    if len(ordered) > 10:
        ordered = ordered[:10] + ["..."]
    return ", ".join(ordered)


def _span(meta_or_token, file: str) -> Span:
    def get(name: str, missing: int = 0) -> int:
        value = getattr(meta_or_token, name, None)
        return missing if value is None else value

    return Span(file, get("line"), get("column"), get("end_line"), get("end_column"),
                get("start_pos", -1), get("end_pos", -1))


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
# Characters a spec may not hold anywhere (outside a string they are meaningless, inside one they
# are invisible): C0 and C1 controls other than tab, newline, carriage return and form feed; the
# bidirectional embedding, override and isolate controls, which make text read differently from
# what it does ("Trojan source"); and lone surrogates, which are not characters at all.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
                        "\ud800-\udfff]")


def _char_name(char: str) -> str:
    import unicodedata

    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def _forbidden_character(text: str, file: str) -> KdslSyntaxError | None:
    """A located error for the first character that no spec may hold, or ``None``."""
    found = _FORBIDDEN.search(text)
    if found is None:
        return None
    line = text.count("\n", 0, found.start()) + 1
    column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
    char = found.group()
    hint = f"; inside a string, write it as the escape \\u{ord(char):04x}"
    if "\ud800" <= char <= "\udfff":
        what, hint = f"a lone surrogate (U+{ord(char):04X}), which is not a character", ""
    elif "\u202a" <= char <= "\u2069":
        what = (f"the invisible bidirectional control {_char_name(char)}, which can make a spec "
                "read differently from what it does")
    else:
        what = f"the control character {_char_name(char)}"
    span = Span(file, line, column, line, column + 1)
    return KdslSyntaxError(Diagnostic("error", f"the spec holds {what}{hint}", span,
                                      source_line(text, line), code="KD004"))


def _unquote(token: Token, file: str) -> str:
    """The value of a string token. Escapes: ``\\\\ \\" \\n \\t \\r \\xNN \\uNNNN \\UNNNNNNNN``;
    anything else after a backslash is an error (``"\\d"`` in a regex means ``"\\\\d"``), as is a
    raw control character or an escape that names no character."""
    body = str(token)[1:-1]
    if "\\" not in body and "\r" not in body and "\x0c" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char in "\r\x0c":
            name, escape = ("carriage return", "\\r") if char == "\r" else ("form feed", "\\x0c")
            raise _string_error(token, i, 1, f"a string cannot hold a raw {name}; write {escape}",
                                file)
        if char != "\\":
            out.append(char)
            i += 1
            continue
        code = body[i + 1:i + 2]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
            continue
        if code in _HEX_ESCAPES:
            digits = body[i + 2:i + 2 + _HEX_ESCAPES[code]]
            if len(digits) != _HEX_ESCAPES[code] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise _string_error(token, i, 2 + len(digits), f"`\\{code}` takes exactly "
                                    f"{_HEX_ESCAPES[code]} hexadecimal digits", file)
            value = int(digits, 16)
            if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise _string_error(token, i, 2 + len(digits), f"`\\{code}{digits}` is not a "
                                    "Unicode character", file)
            out.append(chr(value))
            i += 2 + len(digits)
            continue
        shown = code if code.isprintable() else f"U+{ord(code):04X}" if code else ""
        raise _string_error(token, i, 2, f"unknown escape `\\{shown}` in a string; the escapes "
                            "are \\\\ \\\" \\n \\t \\r \\xNN \\uNNNN \\UNNNNNNNN (a regex writes "
                            f"`\\\\{shown}` for `\\{shown}`)", file)
    return "".join(out)


def _string_error(token: Token, offset: int, width: int, message: str, file: str) -> _SpecError:
    column = token.column + 1 + offset  # the opening quote is column `token.column`
    return _SpecError("KD007", message, Span(file, token.line, column, token.line, column + width))


def _number_value(token: Token, file: str) -> float:
    value = float(str(token))
    if value > MAX_NUMBER:
        text = str(token) if len(str(token)) <= 24 else str(token)[:20] + "..."
        raise _SpecError("KD008", f"the number {text} is too large: numbers in a spec are at most "
                         f"{MAX_NUMBER:.4g} (the float32 range reward programs compute in)",
                         Span(file, token.line, token.column, token.end_line, token.end_column))
    return value


@v_args(meta=True, inline=True)
class _Builder(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _call_userfunc(self, tree, new_children=None):
        # Transformer would wrap each method in a new v_args wrapper on every node it visits,
        # which is most of the time it spends on large specs (a spec with a thousand examples);
        # calling the plain functions directly does the same work.
        children = new_children if new_children is not None else tree.children
        build = _BUILD.get(tree.data)
        if build is None:
            return Transformer._call_userfunc(self, tree, new_children)
        try:
            return build(self, tree.meta, *children)
        except GrammarError:
            raise
        except Exception as err:
            raise VisitError(tree.data, tree, err) from err

    def s(self, meta) -> Span:
        return _span(meta, self.file)

    def _tok(self, token: Token) -> Span:
        return _span(token, self.file)

    # ---- top level --------------------------------------------------------------------------
    def start(self, meta, header, *statements):
        name, version, logic, header_span = header
        groups: dict[str, list] = {k: [] for k in (
            "imports", "enums", "inputs", "outputs", "lets", "defs", "tables", "levels", "masks",
            "examples", "models")}
        advantage = None
        for item in statements:
            if isinstance(item, ast.Import):
                groups["imports"].append(item)
            elif isinstance(item, ast.EnumDecl):
                groups["enums"].append(item)
            elif isinstance(item, tuple) and item and isinstance(item[0], ast.InputDecl):
                groups["inputs"].extend(item)
            elif isinstance(item, tuple) and item and isinstance(item[0], ast.OutputDecl):
                groups["outputs"].extend(item)
            elif isinstance(item, tuple):
                continue  # an empty input or output block
            elif isinstance(item, ast.Let):
                groups["lets"].append(item)
            elif isinstance(item, ast.Def):
                groups["defs"].append(item)
            elif isinstance(item, ast.Table):
                groups["tables"].append(item)
            elif isinstance(item, ast.Level):
                groups["levels"].append(item)
            elif isinstance(item, ast.Mask):
                groups["masks"].append(item)
            elif isinstance(item, ast.Example):
                groups["examples"].append(item)
            elif isinstance(item, ast.ModelDecl):
                groups["models"].append(item)
            elif isinstance(item, ast.Advantage):
                if advantage is not None:
                    raise _SpecError("KD012", "a spec has at most one `advantage` statement", item.span)
                advantage = item
        return ast.Spec(name=name, version=version, logic=logic, advantage=advantage, file=self.file,
                        span=header_span, **{k: tuple(v) for k, v in groups.items()})

    def header(self, meta, name, version, logic):
        if "." in str(version) or "e" in str(version).lower():
            raise _SpecError("KD010", "a spec version is a whole number, such as `version 1`", self._tok(version))
        if len(str(version).lstrip("0")) > 10 or int(str(version)) > MAX_VERSION:
            raise _SpecError("KD010", f"a spec version is at most {MAX_VERSION}", self._tok(version))
        # The header's span stands for the whole spec in messages: the file's start may be a
        # comment, which would put a caret at the end of an unrelated line.
        return str(name), int(str(version)), logic or "product", self.s(meta)

    def logic(self, meta, name):
        return str(name)

    def import_stmt(self, meta, path, alias):
        return ast.Import(_unquote(path, self.file), str(alias), span=self.s(meta))

    # ---- types --------------------------------------------------------------------------------
    def enum_decl(self, meta, name, members):
        return ast.EnumDecl(str(name), members, span=self.s(meta))

    def enum_body(self, meta, *members):
        return tuple(members)

    def enum_member(self, meta, name, synonyms):
        return ast.EnumMember(str(name), synonyms or (), span=self.s(meta))

    def synonyms(self, meta, *strings):
        return tuple(_unquote(s, self.file) for s in strings)

    def input_block(self, meta, *decls):
        return tuple(d for d in decls if d is not None)

    def input_decl(self, meta, name, type_expr):
        return ast.InputDecl(str(name), type_expr, span=self.s(meta))

    def named_type(self, meta, name, unit, range_):
        return ast.TypeExpr(str(name), **self._range_fields(range_), unit=unit, span=self.s(meta))

    def unit(self, meta, *names):
        return "/".join(str(n) for n in names)

    def unit_per(self, meta, name):
        return f"/{name}"

    def unit_percent(self, meta):
        return "%"

    @staticmethod
    def _range_fields(range_) -> dict:
        if not range_:
            return {}
        low, high, low_open, high_open = range_
        return {"low": low, "high": high, "low_open": low_open, "high_open": high_open}

    def inline_enum_type(self, meta, name, members):
        decl = ast.EnumDecl(str(name), members, span=self.s(meta))
        return ast.TypeExpr(str(name), enum=decl, span=self.s(meta))

    def _size(self, token: Token) -> int:
        value = _number_value(token, self.file)
        if not value.is_integer() or value < 1:
            raise _SpecError("KD009", f"a size must be a positive whole number, not `{token}`", self._tok(token))
        if value > MAX_BANDS:
            raise _SpecError("KD009", f"a vector or raster has at most {MAX_BANDS} bands, not {value:.0f}",
                             self._tok(token))
        return int(value)

    def vector_type(self, meta, size, bands, unit, range_):
        return ast.TypeExpr("vector", size=self._size(size), bands=bands or (), unit=unit,
                            **self._range_fields(range_), span=self.s(meta))

    def raster_type(self, meta, size, bands, nodata, unit, range_):
        return ast.TypeExpr("raster", size=self._size(size), bands=bands or (), nodata=nodata,
                            unit=unit, **self._range_fields(range_), span=self.s(meta))

    def _declared_range(self, meta, low, high, low_open: bool, high_open: bool):
        if low.value > high.value or (low.value == high.value and (low_open or high_open)):
            raise _SpecError("KD011", "an empty range: no value lies in it", self.s(meta))
        return (low.value, high.value, low_open, high_open)

    def range(self, meta, low, high):
        return self._declared_range(meta, low, high, False, False)

    def range_closed_open(self, meta, low, high):
        return self._declared_range(meta, low, high, False, True)

    def range_open_closed(self, meta, low, high):
        return self._declared_range(meta, low, high, True, False)

    def range_open(self, meta, low, high):
        return self._declared_range(meta, low, high, True, True)

    def band_names(self, meta, *names):
        return tuple(str(n) for n in names)

    def nodata(self, meta, value):
        return value.value

    def output_block(self, meta, *decls):
        return tuple(d for d in decls if d is not None)

    def output_decl(self, meta, name, value):
        return ast.OutputDecl(str(name), value, span=self.s(meta))

    # ---- definitions --------------------------------------------------------------------------
    def let_stmt(self, meta, name, unit, value):
        return ast.Let(str(name), value, unit=unit, span=self.s(meta))

    def def_stmt(self, meta, name, *rest):
        *params, unit, body = rest
        params = tuple(p for p in params if p is not None)
        return ast.Def(str(name), params, body, unit=unit, span=self.s(meta))

    def points_decl(self, meta, name, *rest):
        params = tuple(r for r in rest if isinstance(r, ast.Param))
        criteria = tuple(r for r in rest if isinstance(r, ast.Criterion))
        span = self.s(meta)
        if not criteria:
            raise _SpecError("KD013", f"points sheet `{name}` has no criteria; write one per line, "
                             "`name: condition -> points`", span)
        seen: dict[str, ast.Criterion] = {}
        for c in criteria:
            if c.name in seen:
                raise _SpecError("KD014", f"criterion `{c.name}` is already on this sheet (line "
                                 f"{seen[c.name].span.line})", c.span)
            seen[c.name] = c
        body: ast.Expr | None = None
        for c in criteria:
            term = ast.If(c.condition, ast.Number(c.points, is_int=float(c.points).is_integer(), span=c.span),
                          ast.Number(0.0, is_int=True, span=c.span), criterion=c.name, span=c.span)
            body = term if body is None else ast.Binary("+", body, term, span=c.span)
        return ast.Def(str(name), params, body, criteria, span=span)

    def criterion(self, meta, name, condition, points):
        return ast.Criterion(str(name), condition, points.value, span=self.s(meta),
                             points_span=points.span)

    def param(self, meta, name, unit, default):
        return ast.Param(str(name), default.value if default is not None else None, unit=unit,
                         span=self.s(meta))

    def table_decl(self, meta, name, *rest):
        params = tuple(r for r in rest if isinstance(r, ast.TableParam))
        result_type = next(r for r in rest if isinstance(r, str))
        rows = tuple(r for r in rest if isinstance(r, ast.TableRow))
        return ast.Table(str(name), params, str(result_type), rows, span=self.s(meta))

    def type_name(self, meta, *names):
        return ".".join(str(n) for n in names)

    def table_param(self, meta, name, type_name, unit, range_):
        return ast.TableParam(str(name), str(type_name), **self._range_fields(range_), unit=unit,
                              span=self.s(meta))

    def table_row(self, meta, *items):
        *cells, (result, result_span) = items
        return ast.TableRow(tuple(cells), result, span=self.s(meta), result_span=result_span)

    def result_name(self, meta, name):
        return str(name), self._tok(name)

    def result_number(self, meta, number):
        return number.value, number.span

    def cell_any(self, meta):
        return ast.Cell("any", span=self.s(meta))

    def cell_name(self, meta, name):
        return ast.Cell("name", names=(str(name),), span=self.s(meta))

    def cell_set(self, meta, *names):
        return ast.Cell("set", names=tuple(str(n) for n in names), span=self.s(meta))

    def cell_compare(self, meta, op, number):
        return ast.Cell("compare", op=str(op), low=number.value, span=self.s(meta), op_span=self._tok(op),
                        low_span=number.span)

    def cell_range(self, meta, low, high):
        if low.value > high.value:
            raise _SpecError("KD011", f"empty range `{low.value:g}..{high.value:g}`: the low end is above the high end",
                             self.s(meta))
        return ast.Cell("range", low=low.value, high=high.value, span=self.s(meta), low_span=low.span,
                        high_span=high.span)

    def _interval_cell(self, meta, low, high, low_open: bool, high_open: bool):
        written = f"{'(' if low_open else '['}{low.value:g}, {high.value:g}{')' if high_open else ']'}"
        if low.value > high.value or (low.value == high.value and (low_open or high_open)):
            raise _SpecError("KD011", f"empty interval `{written}`: no number lies in it", self.s(meta))
        return ast.Cell("range", low=low.value, high=high.value, low_open=low_open,
                        high_open=high_open, span=self.s(meta), low_span=low.span, high_span=high.span)

    def cell_closed(self, meta, low, high):
        return self._interval_cell(meta, low, high, False, False)

    def cell_closed_open(self, meta, low, high):
        return self._interval_cell(meta, low, high, False, True)

    def cell_open_closed(self, meta, low, high):
        return self._interval_cell(meta, low, high, True, False)

    def cell_open(self, meta, low, high):
        return self._interval_cell(meta, low, high, True, True)

    def cell_number(self, meta, number):
        return ast.Cell("number", low=number.value, high=number.value, span=self.s(meta),
                        low_span=number.span)

    # ---- levels and rules --------------------------------------------------------------------
    def level_block(self, meta, name, *rest):
        options = [r for r in rest if isinstance(r, tuple)]
        rules = tuple(r for r in rest if isinstance(r, ast.Rule))
        gate = any(o[0] == "gate" for o in options)
        weight = next((o[1] for o in options if o[0] == "weight"), 1.0)
        return ast.Level(str(name), rules, gate=gate, weight=weight, span=self.s(meta))

    def gate(self, meta):
        return ("gate", True)

    def weight(self, meta, value):
        return ("weight", value.value)

    def soft(self, meta, value):
        if value.value <= 0:
            raise _SpecError("KD016", "`soft` needs a width above 0", self.s(meta))
        return ("soft", value.value)

    def on_span(self, meta, name):
        return ("on", str(name))

    def invalid_policy(self, meta, name):
        if str(name) not in ("fail", "pass", "skip"):
            raise _SpecError("KD015", f"`invalid` takes fail, pass or skip, not `{name}`", self._tok(name))
        return ("invalid", str(name))

    def rule_decl(self, meta, name, when, body, *options):
        settings = {}
        for key, value in options:
            settings[key] = value
        return ast.Rule(str(name), body, when=when, span=self.s(meta), **settings)

    def when(self, meta, expr):
        return expr

    def advantage_stmt(self, meta, name, *settings):
        return ast.Advantage(str(name), tuple(s for s in settings if s is not None), span=self.s(meta))

    def setting(self, meta, name, value):
        value = value.value if isinstance(value, ast.Number) else str(value)
        return ast.Setting(str(name), value, span=self.s(meta))

    def judge_decl(self, meta, name):
        return ast.ModelDecl("judge", str(name), span=self.s(meta))

    def reward_model_decl(self, meta, name):
        return ast.ModelDecl("reward_model", str(name), span=self.s(meta))

    def mask_stmt(self, meta, mode, marker):
        if str(mode) not in ("after", "before"):
            raise _SpecError("KD015", f"`mask` takes `after` or `before`, not `{mode}`", self._tok(mode))
        return ast.Mask(str(mode), _unquote(marker, self.file), span=self.s(meta))

    # ---- examples -----------------------------------------------------------------------------
    def example_block(self, meta, title, *items):
        items = [i for i in items if i is not None]
        fields_ = tuple(i for i in items if isinstance(i, ast.ExampleField))
        expectations = tuple(e for i in items if isinstance(i, tuple) for e in i)
        return ast.Example(_unquote(title, self.file), fields_, expectations, span=self.s(meta))

    def example_field(self, meta, name, value):
        return ast.ExampleField(str(name), value, span=self.s(meta))

    def example_expect(self, meta, *expectations):
        return tuple(expectations)

    def ex_string(self, meta, s):
        return ast.ExampleValue("string", _unquote(s, self.file), span=self.s(meta))

    def ex_number(self, meta, n):
        return ast.ExampleValue("number", n.value, span=self.s(meta))

    def ex_true(self, meta):
        return ast.ExampleValue("bool", True, span=self.s(meta))

    def ex_false(self, meta):
        return ast.ExampleValue("bool", False, span=self.s(meta))

    def ex_none(self, meta):
        return ast.ExampleValue("none", None, span=self.s(meta))

    def ex_name(self, meta, name):
        return ast.ExampleValue("name", str(name), span=self.s(meta))

    def ex_list(self, meta, *values):
        return ast.ExampleValue("list", tuple(v for v in values if v is not None), span=self.s(meta))

    def ex_fixture(self, meta, path):
        return ast.ExampleValue("fixture", _unquote(path, self.file), span=self.s(meta))

    def dotted(self, meta, *names):
        return tuple(str(n) for n in names)

    def expect_holds(self, meta, target):
        return ast.Expectation("holds", target, span=self.s(meta))

    def expect_violated(self, meta, target):
        return ast.Expectation("violated", target, span=self.s(meta))

    def expect_inapplicable(self, meta, target):
        return ast.Expectation("inapplicable", target, span=self.s(meta))

    def expect_compare(self, meta, target, op, value, tolerance):
        return ast.Expectation("compare", target, op=str(op), value=value.value,
                               tolerance=tolerance, span=self.s(meta))

    def expect_relative(self, meta, target, op, other):
        # `judge.NAME == "partly"`: a judge's grade of a rubric item, against one of its choices
        kind = "judge" if len(target) == 2 and target[0] == "judge" else "relative"
        return ast.Expectation(kind, target, op=str(op), other=_unquote(other, self.file), span=self.s(meta))

    def tolerance(self, meta, value):
        return abs(value.value)

    # ---- expressions --------------------------------------------------------------------------
    def if_expr(self, meta, cond, then, otherwise):
        return ast.If(cond, then, otherwise, span=self.s(meta))

    def _binary(op):  # noqa: N805 - a factory used while the class body runs
        def build(self, meta, left, right):
            return ast.Binary(op, left, right, span=self.s(meta))
        return build

    or_op = _binary("or")
    and_op = _binary("and")
    add = _binary("+")
    sub = _binary("-")
    mul = _binary("*")
    div = _binary("/")
    mod = _binary("%")
    pow = _binary("**")
    del _binary

    def not_op(self, meta, operand):
        return ast.Unary("not", operand, span=self.s(meta))

    def neg(self, meta, operand):
        if isinstance(operand, ast.Number):
            return ast.Number(-operand.value, operand.is_int, span=self.s(meta))
        return ast.Unary("-", operand, span=self.s(meta))

    def compare(self, meta, first, *rest):
        ops = tuple(str(t) for t in rest[0::2])
        operands = (first, *rest[1::2])
        return ast.Compare(operands, ops, span=self.s(meta), op_spans=tuple(self._tok(t) for t in rest[0::2]))

    def in_op(self, meta, element, collection):
        return ast.In(element, collection, span=self.s(meta))

    def not_in_op(self, meta, element, collection):
        return ast.In(element, collection, negated=True, span=self.s(meta))

    def set_literal(self, meta, *items):
        return ast.SetLiteral(tuple(i for i in items if i is not None), span=self.s(meta))

    def range_literal(self, meta, low, high):
        return ast.RangeLiteral(low, high, span=self.s(meta))

    def interval_closed(self, meta, low, high):
        return ast.RangeLiteral(low, high, span=self.s(meta))

    def interval_closed_open(self, meta, low, high):
        return ast.RangeLiteral(low, high, high_open=True, span=self.s(meta))

    def interval_open_closed(self, meta, low, high):
        return ast.RangeLiteral(low, high, low_open=True, span=self.s(meta))

    def interval_open(self, meta, low, high):
        return ast.RangeLiteral(low, high, low_open=True, high_open=True, span=self.s(meta))

    def attr(self, meta, obj, name):
        return ast.Attr(obj, str(name), span=self.s(meta))

    def call(self, meta, func, *args):
        args = [a for a in args if a is not None]
        positional = tuple(a for a in args if not isinstance(a, ast.KeywordArg))
        keywords = tuple(a for a in args if isinstance(a, ast.KeywordArg))
        seen_keyword = False
        for a in args:
            if isinstance(a, ast.KeywordArg):
                seen_keyword = True
            elif seen_keyword:
                raise _SpecError("KD017", "a positional argument cannot follow a keyword argument", a.span)
        return ast.Call(func, positional, keywords, span=self.s(meta))

    def keyword_arg(self, meta, name, value):
        return ast.KeywordArg(str(name), value, span=self.s(meta))

    def index(self, meta, obj, index):
        return ast.Index(obj, index, span=self.s(meta))

    def convert(self, meta, obj, name):
        return ast.Convert(obj, str(name), span=self.s(meta))

    def number(self, meta, token):
        text = str(token)
        return ast.Number(_number_value(token, self.file), is_int=text.isdigit(), span=self._tok(token))

    def negative_number(self, meta, token):
        text = str(token)
        return ast.Number(-_number_value(token, self.file), is_int=text.isdigit(), span=self.s(meta))

    def strings(self, meta, *tokens):
        values = tuple(_unquote(t, self.file) for t in tokens)
        if len(values) == 1:
            return ast.String(values[0], span=self.s(meta))
        return ast.Strings(values, span=self.s(meta))

    def true(self, meta):
        return ast.Bool(True, span=self.s(meta))

    def false(self, meta):
        return ast.Bool(False, span=self.s(meta))

    def name(self, meta, token):
        return ast.Name(str(token), span=self._tok(token))

    def tag_position(self, meta, token):
        return str(token)

    def tag_extractor(self, meta, position, tag, within):
        name = _unquote(tag, self.file)
        if not name or any(c in name for c in "<>/ \t\n"):
            raise _SpecError("KD018", f"a tag name is a bare word such as \"answer\", not {tag}", self._tok(tag))
        return ast.TagExtractor(position or "first", name, within, span=self.s(meta))

    def regex_extractor(self, meta, pattern, within):
        return ast.RegexExtractor(_unquote(pattern, self.file), within, span=self.s(meta))


# Rule name -> the builder's plain method (see `_Builder._call_userfunc`).
_BUILD = {name: attr.base_func for name, attr in vars(_Builder).items() if hasattr(attr, "base_func")}


_FRIENDLY = {
    "RBRACE": "a block ends with `}` on its own line",
}


def parse(text: str, file: str = "<string>") -> ast.Spec:
    """Parse spec text into an ``ast.Spec``; raise ``KdslSyntaxError`` on any syntax error.

    >>> spec = parse('spec demo version 1\\nlevel l {\\n  rule r: 1 < 2\\n}\\n')
    >>> spec.name, [r.name for r in spec.levels[0].rules]
    ('demo', ['r'])
    """
    if not text.endswith("\n"):
        text += "\n"
    return _parse_rule(text, file, "start")


def parse_expectation(text: str, file: str = "<expectation>") -> ast.Expectation:
    """Parse one expectation as an ``example`` block writes it (``reward >= 1``, ``not correct``),
    with the grammar's own ``expectation`` rule; ``KdslSyntaxError`` on a syntax error.

    >>> parse_expectation("reward >= 1").op
    '>='
    """
    return _parse_rule(text, file, "expectation")


def _parse_rule(text: str, file: str, start: str):
    forbidden = _forbidden_character(text, file)
    if forbidden is not None:
        raise forbidden
    try:
        tree = _parse_bounded(text, file, start)
    except UnexpectedInput as err:
        raise _syntax_error(err, text, file, "file" if start == "start" else start) from None
    too_deep = _first_too_deep(tree)
    if too_deep is not None:
        raise _too_deep(_span(too_deep.meta, file), text)
    try:
        return _Builder(file).transform(tree)
    except VisitError as err:
        inner = err.orig_exc
        if isinstance(inner, _SpecError):
            raise KdslSyntaxError(Diagnostic("error", str(inner), inner.span,
                                             source_line(text, inner.span.line),
                                             code=inner.code)) from None
        raise


# The LALR parser's stack grows by one to five states per level of right-nested expression
# (`not not ...`, `if ... else if ...`, `a ** b ** ...`). Past this many states no expression can
# stay within MAX_NESTING, so parsing stops there instead of building a tree that is refused anyway
# (10,000 nested `if`s took seconds to parse).
_MAX_PARSER_STATES = 6 * MAX_NESTING


def _parse_bounded(text: str, file: str, start: str = "start") -> lark.Tree:
    parser = _lark().parse_interactive(text, start=start)
    last = None
    try:
        for last in parser.iter_parse():
            if len(parser.parser_state.state_stack) > _MAX_PARSER_STATES:
                raise _too_deep(Span(file, last.line, last.column, last.end_line, last.end_column),
                                text)
        return parser.feed_eof(last)
    except UnexpectedInput as err:
        # What Lark's own parse loop does: the parser at the point of failure answers
        # `accepts`, the terminals that could have come next.
        err.interactive_parser = parser
        raise


def _too_deep(span: Span, text: str) -> KdslSyntaxError:
    return KdslSyntaxError(Diagnostic(
        "error", f"this expression nests more than {MAX_NESTING} levels deep; split it into lets",
        span, source_line(text, span.line), code="KD005"))


def _first_too_deep(tree: lark.Tree) -> lark.Tree | None:
    """The first node nested deeper than ``MAX_NESTING`` (searched without recursion, since the
    point is to refuse trees that recursive stages could not handle)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            return node
        stack.extend((child, depth + 1) for child in reversed(node.children)
                     if isinstance(child, lark.Tree))
    return None


# Characters that word processors and papers use for operators kdsl spells in ASCII.
_LOOK_ALIKES = {
    "≥": ("greater than or equal", ">="), "≤": ("less than or equal", "<="),
    "≠": ("not equal", "!="), "×": ("times", "*"), "·": ("times", "*"), "÷": ("divided by", "/"),
    "−": ("minus sign", "-"), "–": ("en dash", "-"), "—": ("em dash", "-"),
    "±": ("plus-minus", "+-"), "…": ("ellipsis", ".."), "→": ("arrow", "->"),
    "“": ("curly quote", '"'), "”": ("curly quote", '"'), "„": ("curly quote", '"'),
    "‘": ("curly quote", '"'), "’": ("curly quote", '"'), "＝": ("full-width equals", "=="),
}

# What starts a declaration at the top of a spec: found at the start of a line inside a block,
# it means the block above was not closed.
_BLOCK_KEYWORDS = frozenset({"spec", "import", "input", "output", "let", "def", "level", "table",
                             "advantage", "mask", "example", "enum"})


def _unclosed_brace(brace: Token, where: str, text: str, file: str) -> KdslSyntaxError:
    span = Span(file, brace.line, brace.column, brace.line, brace.column + 1)
    return KdslSyntaxError(Diagnostic(
        "error", f"this `{{` is not closed ({where} before its `}}`)", span,
        source_line(text, brace.line), code="KD002"))


def _syntax_error(err: UnexpectedInput, text: str, file: str, unit: str = "file") -> KdslError:
    """The diagnostic for a syntax error in ``text``, a whole ``file`` or one ``expectation``."""
    end = f"the end of the {unit}"
    line, column = getattr(err, "line", 0) or 0, getattr(err, "column", 0) or 0
    code = "KD001"
    if isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        if char == "'":
            message, code = "strings are written in double quotes, like \"answer\"", "KD003"
        elif char in _LOOK_ALIKES:
            message = f"`{char}` ({_LOOK_ALIKES[char][0]}) is not kdsl syntax; write `{_LOOK_ALIKES[char][1]}`"
            code = "KD003"
        elif char == "\n":
            message = f"unexpected end of line; expected {_expected(set(err.allowed or ()), end)}"
        else:
            message = f"unexpected character `{printable(char)}`"
            if err.allowed:
                message += f"; expected {_expected(set(err.allowed), end)}"
        span = Span(file, line, column, line, column + 1)
    elif isinstance(err, UnexpectedEOF):
        lines = text.rstrip("\n").splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        if _POSTLEX.blocks and "RBRACE" in set(err.expected):
            return _unclosed_brace(_POSTLEX.blocks[-1], "the file ends", text, file)
        message = f"unexpected end of {unit}; expected {_expected(set(err.expected), end)}"
        span = Span(file, line, column, line, column + 1)
    elif isinstance(err, UnexpectedToken):
        token = err.token
        # `accepts` is the parser's own view; `expected` also holds the always-accepted newline.
        expected = set(getattr(err, "accepts", None) or err.expected)
        if _POSTLEX.blocks and "RBRACE" in expected and (
                token.type == "$END" or (str(token) in _BLOCK_KEYWORDS and token.column == 1)):
            # A block keyword at the start of a line, or the end of the file, where a `}` could
            # close the block: the brace left open is the mistake, so point there.
            where = "the file ends" if token.type == "$END" else f"`{token}` at {token.line}:{token.column} comes"
            return _unclosed_brace(_POSTLEX.blocks[-1], where, text, file)
        if token.type == "$END":
            lines = text.rstrip("\n").splitlines() or [""]
            line, column = len(lines), len(lines[-1]) + 1
            found = f"end of {unit}"
        elif token.type == "_NL":
            found = "end of line"
            prev = err.token_history[-1] if getattr(err, "token_history", None) else None
            if prev is not None:
                line, column = prev.end_line, prev.end_column
        else:
            found = f"`{token}`"
        prev = err.token_history[-1] if getattr(err, "token_history", None) else None
        if (prev is not None and _POSTLEX.blocks and str(prev) in _BLOCK_KEYWORDS
                and prev.column == 1 and prev.line > _POSTLEX.blocks[-1].line):
            # `input {` left open and `level` read as the next input's name: the brace is the
            # mistake, not the keyword.
            return _unclosed_brace(_POSTLEX.blocks[-1], f"`{prev}` at {prev.line}:{prev.column} comes",
                                   text, file)
        if prev is not None and prev.type == "NAME" and str(prev) in _KEYWORDS:
            token, line, column = prev, prev.line, prev.column
            message, code = f"unexpected `{prev}` (a keyword cannot be used here)", "KD006"
        else:
            wanted = _expected(expected, end)
            # Lark can fail in a state that lists nothing it would have taken; then say no more.
            message = f"unexpected {found}" + (f"; expected {wanted}" if wanted else "")
        if _POSTLEX.open and token.type != "$END":
            bracket, code = _POSTLEX.open[-1], "KD002"
            closing = ")" if str(bracket) == "(" else "]"
            message = (f"unexpected {found}: the `{bracket}` at {bracket.line}:{bracket.column} "
                       f"is not closed (expected `{closing}` before it)")
        end = column + (len(str(token)) if token.type not in ("_NL", "$END") else 1)
        span = Span(file, line, column, line, end)
    else:  # pragma: no cover - Lark raises only the three kinds above
        message, span = str(err), Span(file, line, column)
    return KdslSyntaxError(Diagnostic("error", message, span, source_line(text, span.line), code=code))
