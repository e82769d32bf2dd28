"""The pipeline: read a spec and its imports, parse, check, analyse; ``kdsl.load`` builds on it.

``check_source`` runs every stage up to the checked IR and returns all diagnostics (errors and
warnings) without importing torch, so ``kdsl check`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdsl import ast
from kdsl.checker import Checker, Scope, check
from kdsl.errors import Diagnostic, DiagnosticSink, KdslCheckError, KdslError, Span
from kdsl.ir import ProgramIR
from kdsl.parser import parse
from kdsl.resources import library_dir


@dataclass
class CheckResult:
    program: ProgramIR | None
    diagnostics: list[Diagnostic]
    sources: dict[str, str]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]


def resolve_import(path: str, importer: str) -> Path | None:
    """A relative path from the importing file first, then the bundled ``domain_specs`` library."""
    names = [path] if path.endswith(".kd") else [path + ".kd", path]
    bases = []
    importer_path = Path(importer)
    if importer_path.is_file():
        bases.append(importer_path.parent)
    bases.append(library_dir())
    for base in bases:
        for name in names:
            candidate = (base / name).resolve()
            if candidate.is_file():
                return candidate
    return None


class _Importer:
    def __init__(self, sink: DiagnosticSink):
        self.sink = sink
        self.loaded: dict[Path, Scope] = {}

    def resolve(self, spec: ast.Spec, scope: Scope, stack: tuple[Path, ...]) -> None:
        for imp in spec.imports:
            if imp.alias in scope.imports:
                self.sink.error(f"the import name `{imp.alias}` is used twice", imp.span)
                continue
            target = resolve_import(imp.path, spec.file)
            if target is None:
                self.sink.error(f"cannot find the spec \"{imp.path}\" (looked beside "
                                f"{Path(spec.file).name} and in kdsl's domain_specs library)", imp.span)
                continue
            if target in stack:
                chain = " -> ".join(p.name for p in (*stack[stack.index(target):], target))
                self.sink.error(f"import cycle: {chain}", imp.span)
                continue
            if target not in self.loaded:
                text = target.read_text(encoding="utf-8")
                file = _display_name(target)
                self.sink.sources[file] = text
                try:
                    imported = parse(text, file)
                except KdslError as err:
                    self.sink.diagnostics.extend(err.diagnostics)
                    self.sink.error(f"the imported spec \"{imp.path}\" has errors", imp.span)
                    continue
                child = Scope(file, prefix=f"{imp.alias}.")
                self.resolve(imported, child, (*stack, target))
                Checker(imported, child, self.sink).declare_names()
                self.loaded[target] = child
            scope.imports[imp.alias] = self.loaded[target]


def _display_name(path: Path) -> str:
    """A path relative to the working directory when it is below it, as compilers print them."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_source(text: str, file: str = "<string>") -> CheckResult:
    """Parse and check spec text (with its imports); collect every diagnostic."""
    sink = DiagnosticSink(sources={file: text})
    try:
        spec = parse(text, file)
    except KdslError as err:
        return CheckResult(None, err.diagnostics, sink.sources)
    scope = Scope(file)
    start = Path(file).resolve() if Path(file).is_file() else None
    _Importer(sink).resolve(spec, scope, (start,) if start else ())
    program = check(spec, scope, sink)
    program.examples = list(spec.examples)
    if not sink.has_errors:
        from kdsl.analysis import intervals

        intervals.analyze(program, sink)
    program.sources = dict(sink.sources)
    return CheckResult(program, sink.sorted(), sink.sources)


def check_file(path: str | Path) -> CheckResult:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise KdslError(f"cannot read {path}: {err.strerror or err}", Span(str(path))) from None
    except UnicodeDecodeError:
        raise KdslError(f"{path} is not UTF-8 text", Span(str(path))) from None
    return check_source(text, str(path))


def compile_ir(text: str, file: str = "<string>") -> tuple[ProgramIR, list[Diagnostic]]:
    """The checked IR of a spec, or ``KdslCheckError`` with every error found."""
    result = check_source(text, file)
    if result.errors:
        raise KdslCheckError(result.errors)
    assert result.program is not None
    return result.program, result.warnings
