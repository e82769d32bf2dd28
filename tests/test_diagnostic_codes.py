"""Every diagnostic the compiler can emit has a stable code, a page in docs/errors.md whose
example still produces exactly the output shown, and (below) a case per place in the compiler
that emits it, asserting its text and location."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from kdsl.compiler import check_file
from kdsl.errors import KdslError, error_pages, explain

ROOT = Path(__file__).resolve().parents[1]
PAGES = error_pages()
_BLOCK = re.compile(r"^```(\w+)(?: ([\w./-]+))?\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


def emitted_codes() -> Counter:
    """How many places in the compiler emit each code (lines Lark can never reach excluded)."""
    counts: Counter = Counter()
    for path in (ROOT / "kdsl").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "pragma: no cover" not in line:
                counts.update(re.findall(r"\"(KD\d{3})\"", line))
    return counts


def page_example(page: str) -> tuple[dict[str, str], str | None]:
    """The files of a page's example (```kd blocks; ```kd NAME.kd names an extra file, the
    first unnamed one is spec.kd) and its expected output (the ```text block)."""
    files, expected = {}, None
    for kind, name, body in _BLOCK.findall(page):
        if kind == "kd":
            files[name or "spec.kd"] = body
        elif kind == "text" and expected is None:
            expected = body
    return files, expected


def output_for(code: str, files: dict[str, str], folder: Path) -> str:
    """What `kdsl check spec.kd` prints for ``code``, run in ``folder`` holding ``files``."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    try:
        diagnostics = check_file(Path("spec.kd")).diagnostics
    except KdslError as err:  # a spec that cannot even be read
        diagnostics = err.diagnostics
    return "".join(d.render() + "\n" for d in diagnostics if d.code == code)


# Codes whose example cannot be a spec text (a file that is too large, unreadable or not
# UTF-8); each is triggered by a test of its own below.
FILE_CODES = {"KD020", "KD021", "KD022", "KD023"}


def test_every_emitted_code_has_a_page_and_every_page_a_code():
    emitted = set(emitted_codes())
    assert emitted, "no codes found in the compiler"
    assert sorted(emitted - set(PAGES)) == [], "codes without a page in docs/errors.md"
    assert sorted(set(PAGES) - emitted) == [], "pages for codes nothing emits"


@pytest.mark.parametrize("code", sorted(set(PAGES) - FILE_CODES))
def test_page_example_gives_the_output_shown(code, tmp_path, monkeypatch):
    files, expected = page_example(PAGES[code])
    assert "spec.kd" in files and expected, f"{code}: the page needs a ```kd and a ```text block"
    monkeypatch.chdir(tmp_path)
    assert output_for(code, files, tmp_path) == expected


def test_explain_prints_the_page(capsys):
    from kdsl.cli import main

    assert main(["check", "--explain", "KD066"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## KD066: ") and "```kd" in out and "[KD066]" in out
    assert explain("kd066") == explain("66") == out


def test_explain_an_unknown_code_says_which_exist(capsys):
    from kdsl.cli import main

    assert main(["check", "--explain", "KD999"]) != 0
    err = capsys.readouterr().err
    assert "no diagnostic has the code `KD999`" in err and "KD001" in err


def test_check_points_at_explain_once(tmp_path, capsys):
    from kdsl.cli import main

    spec = tmp_path / "s.kd"
    spec.write_text("spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: y > 0\n"
                    "  rule q: z > 0\n}\n", encoding="utf-8")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert err.count("[KD066]") == 2
    assert err.count("kdsl check --explain") == 1 and "--explain KD066" in err


def test_a_folder_is_not_a_spec_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.kd").mkdir()
    assert output_for("KD020", {}, tmp_path) == "spec.kd: error: spec.kd is a folder, not a spec file [KD020]\n"


def test_a_spec_file_too_large(tmp_path, monkeypatch):
    from kdsl.limits import MAX_SPEC_BYTES

    monkeypatch.chdir(tmp_path)
    size = MAX_SPEC_BYTES + 1
    assert output_for("KD021", {"spec.kd": "#" * size}, tmp_path) == (
        f"spec.kd: error: spec.kd has {size:,} bytes; a spec file has at most "
        f"{MAX_SPEC_BYTES:,} [KD021]\n")


def test_an_unreadable_spec_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.kd").symlink_to(tmp_path / "missing.kd")  # stat follows it and fails
    assert output_for("KD022", {}, tmp_path) == (
        "spec.kd: error: cannot read spec.kd: No such file or directory [KD022]\n")


def test_a_file_name_with_a_nul_byte(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KdslError) as caught:
        check_file("spec\0.kd")
    assert caught.value.code == "KD022"
    assert caught.value.render() == ("spec\\x00.kd: error: cannot read spec\\x00.kd: a file name "
                                     "cannot hold a NUL byte [KD022]")


def test_a_spec_file_that_is_not_utf8(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.kd").write_bytes(b"spec s version 1\n# caf\xe9\n")
    assert output_for("KD023", {}, tmp_path) == (
        "spec.kd: error: spec.kd is not UTF-8 text (byte 22 is not), so it is not a spec file "
        "[KD023]\n")


# One case per place in the compiler that emits a diagnostic: (code, the spec, or its files when
# it imports others, the first line `kdsl check spec.kd` prints for it: text and location).
CASES: list[tuple[str, str | dict[str, str], str]] = [
]


@pytest.mark.parametrize("code, files, head", CASES,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_case(code, files, head, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = {"spec.kd": files} if isinstance(files, str) else files
    heads = [line for line in output_for(code, files, tmp_path).splitlines()
             if line.startswith("spec.kd") or line.startswith(tuple(files))]
    assert head in heads, "\n".join(heads) or f"no {code} diagnostic"


def test_every_place_that_emits_a_code_has_a_case():
    messages = {(code, head.split(": ", 1)[1]) for code, _, head in CASES}
    cases_per_code = Counter(code for code, _ in messages)
    short = {code: (places, cases_per_code[code]) for code, places in emitted_codes().items()
             if cases_per_code[code] < places and code not in FILE_CODES}
    assert short == {}, "code: (places that emit it, distinct cases)"
