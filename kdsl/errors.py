"""One error family for every stage: diagnostics that carry a file position and render like a
compiler's (``file:line:col: error: message``, the source line, a caret under the span)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """Where a node came from: 1-based line and column, end exclusive."""

    file: str = "<string>"
    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0
    # Offsets into the text (characters, end exclusive; -1: not known), so a tool can edit the
    # text at a node (mutation testing). Not part of a span's identity.
    start: int = field(default=-1, compare=False)
    end: int = field(default=-1, compare=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


NO_SPAN = Span()


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error" | "warning" | "note"
    message: str
    span: Span = NO_SPAN
    source_line: str | None = None
    notes: tuple[str, ...] = ()
    # A spec diagnostic's stable code (``KD041``), explained in docs/errors.md and by
    # ``kdsl check --explain``; data errors have none.
    code: str = ""

    def render(self) -> str:
        message = f"{self.message} [{self.code}]" if self.code else self.message
        if self.span.line:
            head = f"{self.span}: {self.severity}: {message}"
        elif self.span.file in ("", "<string>"):  # no place to name: data given from Python
            head = f"{self.severity}: {message}"
        else:
            head = f"{self.span.file}: {self.severity}: {message}"
        lines = [head]
        if self.source_line is not None and self.span.line:
            text = self.source_line.rstrip("\n").expandtabs(1)
            lines.append(f"    {text}")
            start = max(self.span.column - 1, 0)
            if self.span.end_line == self.span.line and self.span.end_column > self.span.column:
                width = self.span.end_column - self.span.column
            else:
                width = 1
            width = max(1, min(width, max(len(text) - start, 1)))
            lines.append("    " + " " * start + "^" + "~" * (width - 1))
        lines.extend(f"    note: {note}" for note in self.notes)
        return "\n".join(lines)


class KdslError(Exception):
    """Raised for any problem in a spec or in data given to a program.

    ``diagnostics`` holds every error found (semantic errors are collected, not raised one by
    one); ``str(error)`` renders them all the way ``kdsl check`` prints them.
    """

    def __init__(self, diagnostics: Diagnostic | Iterable[Diagnostic] | str, span: Span = NO_SPAN,
                 code: str = ""):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic("error", diagnostics, span, code=code)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        first = self.diagnostics[0] if self.diagnostics else Diagnostic("error", "unknown error")
        self.file = first.span.file
        self.line = first.span.line
        self.column = first.span.column
        self.end_line = first.span.end_line
        self.end_column = first.span.end_column
        self.message = first.message
        self.code = first.code
        super().__init__(self.render())

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)


class KdslSyntaxError(KdslError):
    """The spec text does not follow the grammar."""


class KdslCheckError(KdslError):
    """The spec parses but names, types or knowledge are wrong."""


class KdslDataError(KdslError):
    """Data given to a compiled program (columns, completions) does not fit the spec."""


class KdslRuntimeError(KdslError):
    """Scoring failed inside a compiled program (a model behind `similarity()` raised, the device
    ran out of memory, ...); the span is the spec line whose code was running."""


@dataclass
class DiagnosticSink:
    """Collects diagnostics so a pass can report every problem, not only the first."""

    sources: dict[str, str] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    _lines: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def _line(self, span: Span) -> str | None:
        text = self.sources.get(span.file)
        if text is None or span.line <= 0:
            return None
        if span.file not in self._lines:  # split once per file, however many diagnostics it has
            self._lines[span.file] = _split_lines(text)
        lines = self._lines[span.file]
        return lines[span.line - 1] if span.line <= len(lines) else None

    def error(self, code: str, message: str, span: Span, *notes: str) -> None:
        self.diagnostics.append(Diagnostic("error", message, span, self._line(span), notes, code))

    def warning(self, code: str, message: str, span: Span, *notes: str) -> None:
        self.diagnostics.append(Diagnostic("warning", message, span, self._line(span), notes, code))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.diagnostics, key=lambda d: (d.span.file, d.span.line, d.span.column))

    def raise_if_errors(self, cls: type[KdslError] = KdslCheckError) -> None:
        if self.has_errors:
            raise cls([d for d in self.sorted() if d.severity == "error"])


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` for the closest candidate, or an empty string."""
    candidates = sorted(set(candidates))
    # The same name in other letters (`ndvi` for `NDVI`) is the likeliest slip of all.
    lowered = {c.lower(): c for c in candidates}
    close = [lowered[name.lower()]] if name.lower() in lowered and name not in candidates else []
    if not close:
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def printable(text: str) -> str:
    """Text from outside (a file name, an import path) as a message line shows it: characters
    that would break the line or hide in it (a newline, a NUL, a bidirectional mark) escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _split_lines(text: str) -> list[str]:
    """Lines as the parser counts them: ended by a newline only (a form feed or a vertical tab
    inside a line does not start a new one, as ``str.splitlines`` would have it)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def source_line(text: str, line: int) -> str | None:
    lines = _split_lines(text)
    return lines[line - 1] if 0 < line <= len(lines) else None


_SECTION = re.compile(r"^## (KD\d{3}): ", re.MULTILINE)


def error_pages() -> dict[str, str]:
    """Every diagnostic code's section of docs/errors.md (``## KD041: title`` up to the next
    section), the text ``kdsl check --explain`` prints."""
    from kdsl.io.resources import data_dir

    text = (data_dir("docs") / "errors.md").read_text(encoding="utf-8")
    starts = list(_SECTION.finditer(text))
    pages = {}
    for match, following in zip(starts, [*starts[1:], None]):
        end = following.start() if following is not None else len(text)
        pages[match.group(1)] = text[match.start():end].rstrip() + "\n"
    return pages


def explain(code: str) -> str:
    """The page of one diagnostic code, or ``KdslError`` naming the closest codes."""
    pages = error_pages()
    wanted = code.strip().upper()
    if wanted.isdigit():  # `--explain 41` for KD041
        wanted = f"KD{int(wanted):03d}"
    if wanted not in pages:
        raise KdslError(f"no diagnostic has the code `{printable(code)}`"
                        f"{did_you_mean(wanted, pages)}; the codes run from {min(pages)} to "
                        f"{max(pages)} (docs/errors.md)")
    return pages[wanted]
