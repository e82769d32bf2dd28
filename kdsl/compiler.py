"""The pipeline: read a spec and its imports, parse, check, analyse; ``kdsl.load`` builds on it.

``check_source`` runs every stage up to the checked IR and returns all diagnostics (errors and
warnings) without importing torch, so ``kdsl check`` stays fast.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

from kdsl.errors import Diagnostic, DiagnosticSink, KdslCheckError, KdslError, Span, printable
from kdsl.frontend import ast
from kdsl.frontend.parser import parse
from kdsl.io.resources import library_dir
from kdsl.ir import ProgramIR, TableIR
from kdsl.limits import MAX_IMPORT_PATH, MAX_SPEC_BYTES
from kdsl.semantic import Scope, check, declare_library


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


SPEC_PATH_VARIABLE = "KDSL_PATH"


def search_folders(spec_path: Sequence[str | Path] = ()) -> list[Path]:
    """Folders an import may also come from: those given (``--spec-path``), then those in the
    ``KDSL_PATH`` environment variable (separated like ``PATH``)."""
    from_env = os.environ.get(SPEC_PATH_VARIABLE, "")
    folders = [*spec_path, *(p for p in from_env.split(os.pathsep) if p)]
    return [Path(f).expanduser().resolve() for f in folders]


@dataclass(frozen=True)
class ImportedFile:
    """Where an import was found: the file, and the folder tree it may import from in turn."""

    path: Path
    root: Path


class ImportRefused(Exception):
    """An import that kdsl will not follow (outside the allowed folders, not a `.kd` file...)."""


def resolve_import(path: str, importer_root: Path | None, importer_dir: Path | None,
                   spec_path: Sequence[Path] = ()) -> ImportedFile | None:
    """The spec an ``import "path"`` names, or ``None`` when there is none; ``ImportRefused``
    when the path is not one kdsl follows.

    The rule (docs/security.md): ``path`` is relative, written with ``/``; it is looked up beside
    the importing spec, and must stay inside the importing spec's folder tree (the folder of the
    spec being checked, or the search folder or library the importer came from); then in each
    folder of ``spec_path`` (``--spec-path``, ``KDSL_PATH``) and in kdsl's bundled library, and
    must stay inside that folder. ``.kd`` may be left out. The target is a ``.kd`` file; nothing
    else is ever opened, so no file outside these folders can be read or quoted.
    """
    if not path or len(path) > MAX_IMPORT_PATH:
        raise ImportRefused(f"an import path has 1 to {MAX_IMPORT_PATH} characters")
    if "\\" in path or not path.isprintable():
        raise ImportRefused("an import path is written with `/` and printable characters only")
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("~") or (len(path) > 1 and path[1] == ":"):
        raise ImportRefused("an import path is relative (to the importing spec, a --spec-path "
                            "folder or kdsl's library), never absolute")
    if any(len(part) > 255 for part in pure.parts):
        raise ImportRefused("a part of an import path has at most 255 characters")
    name = path if path.endswith(".kd") else path + ".kd"
    # (where the path is read from, the folder it must stay inside)
    places = [(importer_dir, importer_root)] if importer_dir and importer_root else []
    places += [(folder, folder) for folder in (*spec_path, library_dir().resolve())]
    escaped = False
    for base, root in places:
        try:
            candidate = (base / name).resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, an unreadable folder
            continue
        if not candidate.is_relative_to(root):
            escaped = True
            continue
        try:
            if candidate.is_file():
                return ImportedFile(candidate, root)
        except OSError:
            continue
    if escaped:
        raise ImportRefused("the import path leaves the folders imports may come from (the "
                            "importing spec's folder tree, --spec-path or KDSL_PATH folders and "
                            "kdsl's library)")
    return None


def read_spec_file(path: Path) -> str:
    """The text of a spec file, or ``KdslError`` (never a traceback) when it is not one: not a
    regular file, too large, unreadable, or not UTF-8 text."""
    shown = _display_name(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise KdslError(f"{shown} is {what}, not a spec file", Span(shown), code="KD020")
        size = info.st_size
        if size > MAX_SPEC_BYTES:
            raise KdslError(f"{shown} has {size:,} bytes; a spec file has at most "
                            f"{MAX_SPEC_BYTES:,}", Span(shown), code="KD021")
        with path.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise KdslError(f"cannot read {shown}: {err.strerror or err}", Span(shown), code="KD022") from None
    except ValueError:  # a NUL byte in the name, which no file system allows
        raise KdslError(f"cannot read {shown}: a file name cannot hold a NUL byte",
                        Span(shown), code="KD022") from None
    if len(data) > MAX_SPEC_BYTES:
        raise KdslError(f"{shown} has more than {MAX_SPEC_BYTES:,} bytes; a spec file has at most "
                        f"{MAX_SPEC_BYTES:,}", Span(shown), code="KD021")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise KdslError(f"{shown} is not UTF-8 text (byte {err.start} is not), so it is not a "
                        "spec file", Span(shown), code="KD023") from None


class _Importer:
    def __init__(self, sink: DiagnosticSink, spec_path: Sequence[Path] = ()):
        self.sink = sink
        self.spec_path = tuple(spec_path)
        self.loaded: dict[Path, Scope] = {}

    def resolve(self, spec: ast.Spec, scope: Scope, stack: tuple[Path, ...],
                root: Path | None) -> None:
        importer_dir = stack[-1].parent if stack else None
        for imp in spec.imports:
            if imp.alias in scope.imports or imp.alias in scope.unavailable:
                self.sink.error("KD024", f"the import name `{imp.alias}` is used twice", imp.span)
                continue
            # Until it is loaded, the alias counts as failed: every error below is reported
            # once, here, and not again at each use of the alias.
            scope.unavailable.add(imp.alias)
            try:
                found = resolve_import(imp.path, root, importer_dir, self.spec_path)
            except ImportRefused as refused:
                self.sink.error("KD025", f"cannot import \"{_shown(imp.path)}\": {refused}", imp.span)
                continue
            if found is None:
                suggestion = _closest_spec(imp.path, importer_dir, self.spec_path)
                self.sink.error("KD026", f"cannot find the spec \"{_shown(imp.path)}\""
                                + (f" (did you mean \"{suggestion}\"?)" if suggestion else "")
                                + f"; looked beside {Path(spec.file).name}, in --spec-path and "
                                "KDSL_PATH folders and in kdsl's domain_specs library", imp.span)
                continue
            target = found.path
            if target in stack:
                chain = " -> ".join(p.name for p in (*stack[stack.index(target):], target))
                self.sink.error("KD027", f"import cycle: {chain}", imp.span)
                continue
            if target not in self.loaded:
                file = _display_name(target)
                try:
                    text = read_spec_file(target)
                except KdslError as err:
                    self.sink.error("KD028", f"cannot import \"{_shown(imp.path)}\": {err.message}", imp.span)
                    continue
                self.sink.sources[file] = text
                try:
                    imported = _parse_import(text, file)
                except KdslError as err:
                    self.sink.diagnostics.extend(err.diagnostics)
                    self.sink.error("KD029", f"the imported spec \"{_shown(imp.path)}\" has errors", imp.span)
                    continue
                child = Scope(file, prefix=f"{imp.alias}.")
                self.resolve(imported, child, (*stack, target), found.root)
                declare_library(imported, child, self.sink)
                self.loaded[target] = child
            scope.imports[imp.alias] = self.loaded[target]
            scope.unavailable.discard(imp.alias)


# A folder tree searched for a "did you mean" is walked this deep and this far, so a spec in a
# large folder (a home folder) does not make an error slow to report.
_SUGGEST_DEPTH = 3
_SUGGEST_FILES = 2000


def _closest_spec(path: str, importer_dir: Path | None, spec_path: Sequence[Path]) -> str | None:
    """The import path of the existing spec closest to ``path`` (as it would be written in the
    import, relative to the folder it is found from), or None."""
    import difflib

    wanted = path if path.endswith(".kd") else path + ".kd"
    candidates: set[str] = set()
    for base in (importer_dir, *spec_path, library_dir()):
        if base is None:
            continue
        seen = 0
        for folder, subfolders, files in os.walk(base):
            depth = len(Path(folder).relative_to(base).parts)
            if depth >= _SUGGEST_DEPTH:
                subfolders[:] = []
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            for name in files:
                if name.endswith(".kd"):
                    candidates.add((Path(folder) / name).relative_to(base).as_posix())
            seen += len(files)
            if seen > _SUGGEST_FILES:
                break
    close = difflib.get_close_matches(wanted, sorted(candidates), n=1, cutoff=0.75)
    if not close:
        return None
    return close[0] if path.endswith(".kd") else close[0].removesuffix(".kd")


@lru_cache(maxsize=32)
def _parse_import(text: str, file: str) -> ast.Spec:
    """An imported spec's syntax tree. The tree is immutable, so specs that a process checks
    again and again (the library's 280 spectral indices, in a test run or a fuzzer) are parsed
    once per text."""
    return parse(text, file)


def _shown(path: str) -> str:
    """An import path as a message shows it: escaped, and shortened when it is very long."""
    shown = path if len(path) <= 120 else path[:100] + "..." + path[-10:]
    return printable(shown).replace('"', '\\"')


def _display_name(path: Path) -> str:
    """A path relative to the working directory when it is below it, as compilers print them,
    with characters that would break a message line (a NUL, a newline) escaped."""
    try:
        shown = str(path.relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    return printable(shown)


def check_source(text: str, file: str = "<string>",
                 spec_path: Sequence[str | Path] = ()) -> CheckResult:
    """Parse and check spec text (with its imports); collect every diagnostic. ``spec_path``
    adds folders that imports may come from (see ``resolve_import``)."""
    sink = DiagnosticSink(sources={file: text})
    try:
        spec = parse(text, file)
    except KdslError as err:
        return CheckResult(None, err.diagnostics, sink.sources)
    scope = Scope(file)
    start = _existing_file(file)
    importer = _Importer(sink, search_folders(spec_path))
    importer.resolve(spec, scope, (start,) if start else (), start.parent if start else None)
    program = check(spec, scope, sink)
    tables = [*scope.declared_tables, *(t for child in importer.loaded.values() for t in child.declared_tables)]
    for _name, analysis in ANALYSES:
        analysis(program, tables, sink)
    return CheckResult(program, sink.sorted(), sink.sources)


def _tables(program: ProgramIR, tables: list[TableIR], sink: DiagnosticSink) -> None:
    from kdsl.analysis import tables as table_analysis

    table_analysis.analyze(tables, sink)


def _intervals(program: ProgramIR, tables: list[TableIR], sink: DiagnosticSink) -> None:
    if sink.has_errors:  # ranges are computed over a whole, well-typed program
        return
    from kdsl.analysis import intervals

    intervals.analyze(program, sink)


# The knowledge analyses that run after the checker, in this order, on every spec: gaps,
# overlaps and bad cells of every table (the spec's and its imports'), then value ranges
# (rules that never or always hold, divisions by zero). Each reports to the one sink.
ANALYSES = (("tables", _tables), ("intervals", _intervals))


def _existing_file(file: str) -> Path | None:
    """The resolved path of a spec given by file name, when it names a file on disk."""
    try:
        path = Path(file)
        return path.resolve() if path.is_file() else None
    except (OSError, ValueError):  # a name with a NUL byte, or too long for the file system
        return None


def check_file(path: str | Path, spec_path: Sequence[str | Path] = ()) -> CheckResult:
    return check_source(read_spec_file(Path(path)), str(path), spec_path)


def compile_ir(text: str, file: str = "<string>",
               spec_path: Sequence[str | Path] = ()) -> tuple[ProgramIR, list[Diagnostic]]:
    """The checked IR of a spec, or ``KdslCheckError`` with every error found."""
    result = check_source(text, file, spec_path)
    if result.errors:
        raise KdslCheckError(result.errors)
    assert result.program is not None
    return result.program, result.warnings
