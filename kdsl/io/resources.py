"""Where the grammar and the bundled spec library live: inside the wheel (``kdsl/_data``) or,
in a source checkout or editable install, at the repository root."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the kdsl package


def data_dir(name: str) -> Path:
    """The folder ``grammars`` or ``domain_specs``, wherever this install keeps it."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"kdsl's `{name}` folder is missing from this installation")


def grammar_path() -> Path:
    return data_dir("grammars") / "kdsl.lark"


def library_dir() -> Path:
    return data_dir("domain_specs")
