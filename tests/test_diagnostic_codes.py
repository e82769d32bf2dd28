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
# UTF-8, or imports one); each is triggered by a test of its own below.
FILE_CODES = {"KD020", "KD021", "KD022", "KD023", "KD028"}


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


def test_an_import_of_a_file_that_cannot_be_read(tmp_path, monkeypatch):
    from kdsl.limits import MAX_SPEC_BYTES

    monkeypatch.chdir(tmp_path)
    files = {"spec.kd": 'spec s version 1\nimport "big.kd" as big\n', "big.kd": "#" * (MAX_SPEC_BYTES + 1)}
    expected = page_example(PAGES["KD028"])[1]  # the page shows this very case
    assert output_for("KD028", files, tmp_path) == expected
    assert expected.startswith('spec.kd:2:1: error: cannot import "big.kd": big.kd has 1,048,577 bytes')


def test_a_spec_file_that_is_not_utf8(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.kd").write_bytes(b"spec s version 1\n# caf\xe9\n")
    assert output_for("KD023", {}, tmp_path) == (
        "spec.kd: error: spec.kd is not UTF-8 text (byte 22 is not), so it is not a spec file "
        "[KD023]\n")


# One case per place in the compiler that emits a diagnostic: (code, the spec, or its files when
# it imports others, the first line `kdsl check spec.kd` prints for it: text and location).
CASES: list[tuple[str, str | dict[str, str], str]] = [
    ("KD030", 'spec s version 1\ninput {\n  sr: vector[3]\n}\nlevel l {\n  rule r: sr.mean() > 0\n}\n',
     "spec.kd:6:11: error: `sr` is a value, not an import: functions take it as an argument, e.g. `mean(sr)` [KD030]"),
    ("KD032", 'spec s version 1\nenum float { A, B }\n',
     "spec.kd:2:1: error: `float` is a built-in type; give the enum another name [KD032]"),
    ("KD037", 'spec s version 1\ninput {\n  sr: vector[2] bands(B1, B1)\n}\nlevel l {\n  rule r: sr.B1 > 0\n}\n',
     "spec.kd:3:7: error: a vector names the same band twice [KD037]"),
    ("KD069", {"spec.kd": 'spec s version 1\nimport "lib.kd" as lib\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > lib.nothing\n}\n',
               "lib.kd": 'spec lib version 1\ndef half(v) = v / 2\ntable grade(v: float) -> float {\n  < 1 -> 0\n  >= 1 -> 1\n}\n'},
     "spec.kd:7:15: error: `lib` has no `nothing`; it exports `grade`, `half` [KD069]"),
    ("KD069", {"spec.kd": 'spec s version 1\nimport "lib.kd" as lib\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > lib.grade\n}\n',
               "lib.kd": 'spec lib version 1\ntable grade(v: float) -> float {\n  < 1 -> 0\n  >= 1 -> 1\n}\n'},
     "spec.kd:7:15: error: `lib.grade` is a table: call it with arguments [KD069]"),
    ('KD001', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0 $\n}\n', 'spec.kd:6:17: error: unexpected character `$`; expected a new line, an operator, `)`, `,`, `->`, `:`, `]`, `else`, `invalid`, `on`, ... [KD001]'),
    ('KD001', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x >\n}\n', 'spec.kd:6:14: error: unexpected end of line; expected a name, a number, a string, `(`, `-`, `false`, `first`, `last`, `only`, `regex`, ... [KD001]'),
    ('KD001', 'spec s version 1\nlet y = (1 +\n', 'spec.kd:2:13: error: unexpected end of file; expected a name, a number, a string, `(`, `-`, `false`, `first`, `last`, `only`, `regex`, ... [KD001]'),
    ('KD001', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > > 0\n}\n', 'spec.kd:6:15: error: unexpected `>`; expected a name, a number, a string, `(`, `-`, `false`, `first`, `last`, `only`, `regex`, ... [KD001]'),
    ('KD001', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0 soft\n}\n', 'spec.kd:6:21: error: unexpected end of line; expected a number, `-` [KD001]'),
    ('KD001', 'spec s version 1\ninput {\n  x: float @\n}\n', 'spec.kd:3:12: error: unexpected character `@`; expected a name, a new line, an operator, `(`, `)`, `,`, `->`, `-`, `:`, `]`, ... [KD001]'),
    ('KD001', 'spec s version 1\nlet y = 2 ^ 3\n', 'spec.kd:2:11: error: unexpected character `^`; expected a new line, an operator, `)`, `,`, `->`, `:`, `]`, `else`, `invalid`, `on`, ... [KD001]'),
    ('KD002', 'spec s version 1\ninput {\n  ndvi: float\n}\nlevel format {\n  rule green: ndvi > 0.4\nlevel accuracy {\n  rule dense: ndvi > 0.6\n}\n', 'spec.kd:5:14: error: this `{` is not closed (`level` at 7:1 comes before its `}`) [KD002]'),
    ('KD002', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: (x > 0\n}\n', 'spec.kd:7:1: error: unexpected `}`: the `(` at 6:11 is not closed (expected `)` before it) [KD002]'),
    ('KD003', "spec s version 1\noutput {\n  reply: tag 'answer'\n}\n", 'spec.kd:3:14: error: strings are written in double quotes, like "answer" [KD003]'),
    ('KD003', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x ≥ 0\n}\n', 'spec.kd:6:13: error: `≥` (greater than or equal) is not kdsl syntax; write `>=` [KD003]'),
    ('KD004', 'spec s version 1\ninput {\n  x: float  # note \u202e\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:3:20: error: the spec holds the invisible bidirectional control U+202E (RIGHT-TO-LEFT OVERRIDE), which can make a spec read differently from what it does; inside a string, write it as the escape \\u202e [KD004]'),
    ('KD005', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > -------------------------------------------------- \\\n-------------------------------------------------- \\\n-------------------------------------------------- \\\n-------------------------------------------------- x\n}\n', 'spec.kd:9:48: error: this expression nests more than 200 levels deep; split it into lets [KD005]'),
    ('KD005', 'spec s version 1\ninput {\n  x: float\n}\nlet a0 = x\nlet a1 = a0 + 1\nlet a2 = a1 + 1\nlet a3 = a2 + 1\nlet a4 = a3 + 1\nlet a5 = a4 + 1\nlet a6 = a5 + 1\nlet a7 = a6 + 1\nlet a8 = a7 + 1\nlet a9 = a8 + 1\nlet a10 = a9 + 1\nlet a11 = a10 + 1\nlet a12 = a11 + 1\nlet a13 = a12 + 1\nlet a14 = a13 + 1\nlet a15 = a14 + 1\nlet a16 = a15 + 1\nlet a17 = a16 + 1\nlet a18 = a17 + 1\nlet a19 = a18 + 1\nlet a20 = a19 + 1\nlet a21 = a20 + 1\nlet a22 = a21 + 1\nlet a23 = a22 + 1\nlet a24 = a23 + 1\nlet a25 = a24 + 1\nlet a26 = a25 + 1\nlet a27 = a26 + 1\nlet a28 = a27 + 1\nlet a29 = a28 + 1\nlet a30 = a29 + 1\nlet a31 = a30 + 1\nlet a32 = a31 + 1\nlet a33 = a32 + 1\nlet a34 = a33 + 1\nlet a35 = a34 + 1\nlet a36 = a35 + 1\nlet a37 = a36 + 1\nlet a38 = a37 + 1\nlet a39 = a38 + 1\nlet a40 = a39 + 1\nlet a41 = a40 + 1\nlet a42 = a41 + 1\nlet a43 = a42 + 1\nlet a44 = a43 + 1\nlet a45 = a44 + 1\nlet a46 = a45 + 1\nlet a47 = a46 + 1\nlet a48 = a47 + 1\nlet a49 = a48 + 1\nlet a50 = a49 + 1\nlet a51 = a50 + 1\nlet a52 = a51 + 1\nlet a53 = a52 + 1\nlet a54 = a53 + 1\nlet a55 = a54 + 1\nlet a56 = a55 + 1\nlet a57 = a56 + 1\nlet a58 = a57 + 1\nlet a59 = a58 + 1\nlet a60 = a59 + 1\nlet a61 = a60 + 1\nlet a62 = a61 + 1\nlet a63 = a62 + 1\nlet a64 = a63 + 1\nlet a65 = a64 + 1\nlet a66 = a65 + 1\nlet a67 = a66 + 1\nlet a68 = a67 + 1\nlet a69 = a68 + 1\nlet a70 = a69 + 1\nlet a71 = a70 + 1\nlet a72 = a71 + 1\nlet a73 = a72 + 1\nlet a74 = a73 + 1\nlet a75 = a74 + 1\nlet a76 = a75 + 1\nlet a77 = a76 + 1\nlet a78 = a77 + 1\nlet a79 = a78 + 1\nlet a80 = a79 + 1\nlet a81 = a80 + 1\nlet a82 = a81 + 1\nlet a83 = a82 + 1\nlet a84 = a83 + 1\nlet a85 = a84 + 1\nlet a86 = a85 + 1\nlet a87 = a86 + 1\nlet a88 = a87 + 1\nlet a89 = a88 + 1\nlet a90 = a89 + 1\nlet a91 = a90 + 1\nlet a92 = a91 + 1\nlet a93 = a92 + 1\nlet a94 = a93 + 1\nlet a95 = a94 + 1\nlet a96 = a95 + 1\nlet a97 = a96 + 1\nlet a98 = a97 + 1\nlet a99 = a98 + 1\nlet a100 = a99 + 1\nlet a101 = a100 + 1\nlet a102 = a101 + 1\nlet a103 = a102 + 1\nlet a104 = a103 + 1\nlet a105 = a104 + 1\nlet a106 = a105 + 1\nlet a107 = a106 + 1\nlet a108 = a107 + 1\nlet a109 = a108 + 1\nlet a110 = a109 + 1\nlet a111 = a110 + 1\nlet a112 = a111 + 1\nlet a113 = a112 + 1\nlet a114 = a113 + 1\nlet a115 = a114 + 1\nlet a116 = a115 + 1\nlet a117 = a116 + 1\nlet a118 = a117 + 1\nlet a119 = a118 + 1\nlet a120 = a119 + 1\nlet a121 = a120 + 1\nlet a122 = a121 + 1\nlet a123 = a122 + 1\nlet a124 = a123 + 1\nlet a125 = a124 + 1\nlet a126 = a125 + 1\nlet a127 = a126 + 1\nlet a128 = a127 + 1\nlet a129 = a128 + 1\nlet a130 = a129 + 1\nlet a131 = a130 + 1\nlet a132 = a131 + 1\nlet a133 = a132 + 1\nlet a134 = a133 + 1\nlet a135 = a134 + 1\nlet a136 = a135 + 1\nlet a137 = a136 + 1\nlet a138 = a137 + 1\nlet a139 = a138 + 1\nlet a140 = a139 + 1\nlet a141 = a140 + 1\nlet a142 = a141 + 1\nlet a143 = a142 + 1\nlet a144 = a143 + 1\nlet a145 = a144 + 1\nlet a146 = a145 + 1\nlet a147 = a146 + 1\nlet a148 = a147 + 1\nlet a149 = a148 + 1\nlet a150 = a149 + 1\nlet a151 = a150 + 1\nlet a152 = a151 + 1\nlet a153 = a152 + 1\nlet a154 = a153 + 1\nlet a155 = a154 + 1\nlet a156 = a155 + 1\nlet a157 = a156 + 1\nlet a158 = a157 + 1\nlet a159 = a158 + 1\nlet a160 = a159 + 1\nlet a161 = a160 + 1\nlet a162 = a161 + 1\nlet a163 = a162 + 1\nlet a164 = a163 + 1\nlet a165 = a164 + 1\nlet a166 = a165 + 1\nlet a167 = a166 + 1\nlet a168 = a167 + 1\nlet a169 = a168 + 1\nlet a170 = a169 + 1\nlet a171 = a170 + 1\nlet a172 = a171 + 1\nlet a173 = a172 + 1\nlet a174 = a173 + 1\nlet a175 = a174 + 1\nlet a176 = a175 + 1\nlet a177 = a176 + 1\nlet a178 = a177 + 1\nlet a179 = a178 + 1\nlet a180 = a179 + 1\nlet a181 = a180 + 1\nlet a182 = a181 + 1\nlet a183 = a182 + 1\nlet a184 = a183 + 1\nlet a185 = a184 + 1\nlet a186 = a185 + 1\nlet a187 = a186 + 1\nlet a188 = a187 + 1\nlet a189 = a188 + 1\nlet a190 = a189 + 1\nlet a191 = a190 + 1\nlet a192 = a191 + 1\nlet a193 = a192 + 1\nlet a194 = a193 + 1\nlet a195 = a194 + 1\nlet a196 = a195 + 1\nlet a197 = a196 + 1\nlet a198 = a197 + 1\nlet a199 = a198 + 1\nlet a200 = a199 + 1\nlet a201 = a200 + 1\nlevel l {\n  rule r: a201 > 0\n}\n', 'spec.kd:205:12: error: this value is computed through more than 200 nested operations (counting the lets and defs it uses); compute less of it in one chain [KD005]'),
    ('KD005', 'spec s version 1\ninput {\n  x: float\n}\ndef f0(a) = a\ndef f1(a) = f0(a) + 1\ndef f2(a) = f1(a) + 1\ndef f3(a) = f2(a) + 1\ndef f4(a) = f3(a) + 1\ndef f5(a) = f4(a) + 1\ndef f6(a) = f5(a) + 1\ndef f7(a) = f6(a) + 1\ndef f8(a) = f7(a) + 1\ndef f9(a) = f8(a) + 1\ndef f10(a) = f9(a) + 1\ndef f11(a) = f10(a) + 1\ndef f12(a) = f11(a) + 1\ndef f13(a) = f12(a) + 1\ndef f14(a) = f13(a) + 1\ndef f15(a) = f14(a) + 1\ndef f16(a) = f15(a) + 1\ndef f17(a) = f16(a) + 1\ndef f18(a) = f17(a) + 1\ndef f19(a) = f18(a) + 1\ndef f20(a) = f19(a) + 1\ndef f21(a) = f20(a) + 1\ndef f22(a) = f21(a) + 1\ndef f23(a) = f22(a) + 1\ndef f24(a) = f23(a) + 1\ndef f25(a) = f24(a) + 1\ndef f26(a) = f25(a) + 1\ndef f27(a) = f26(a) + 1\ndef f28(a) = f27(a) + 1\ndef f29(a) = f28(a) + 1\ndef f30(a) = f29(a) + 1\ndef f31(a) = f30(a) + 1\ndef f32(a) = f31(a) + 1\ndef f33(a) = f32(a) + 1\ndef f34(a) = f33(a) + 1\ndef f35(a) = f34(a) + 1\ndef f36(a) = f35(a) + 1\ndef f37(a) = f36(a) + 1\ndef f38(a) = f37(a) + 1\ndef f39(a) = f38(a) + 1\ndef f40(a) = f39(a) + 1\ndef f41(a) = f40(a) + 1\ndef f42(a) = f41(a) + 1\ndef f43(a) = f42(a) + 1\ndef f44(a) = f43(a) + 1\ndef f45(a) = f44(a) + 1\ndef f46(a) = f45(a) + 1\ndef f47(a) = f46(a) + 1\ndef f48(a) = f47(a) + 1\ndef f49(a) = f48(a) + 1\ndef f50(a) = f49(a) + 1\ndef f51(a) = f50(a) + 1\ndef f52(a) = f51(a) + 1\ndef f53(a) = f52(a) + 1\ndef f54(a) = f53(a) + 1\ndef f55(a) = f54(a) + 1\ndef f56(a) = f55(a) + 1\ndef f57(a) = f56(a) + 1\ndef f58(a) = f57(a) + 1\ndef f59(a) = f58(a) + 1\ndef f60(a) = f59(a) + 1\ndef f61(a) = f60(a) + 1\ndef f62(a) = f61(a) + 1\ndef f63(a) = f62(a) + 1\ndef f64(a) = f63(a) + 1\ndef f65(a) = f64(a) + 1\ndef f66(a) = f65(a) + 1\ndef f67(a) = f66(a) + 1\ndef f68(a) = f67(a) + 1\ndef f69(a) = f68(a) + 1\ndef f70(a) = f69(a) + 1\ndef f71(a) = f70(a) + 1\ndef f72(a) = f71(a) + 1\ndef f73(a) = f72(a) + 1\ndef f74(a) = f73(a) + 1\ndef f75(a) = f74(a) + 1\ndef f76(a) = f75(a) + 1\ndef f77(a) = f76(a) + 1\ndef f78(a) = f77(a) + 1\ndef f79(a) = f78(a) + 1\ndef f80(a) = f79(a) + 1\ndef f81(a) = f80(a) + 1\ndef f82(a) = f81(a) + 1\ndef f83(a) = f82(a) + 1\ndef f84(a) = f83(a) + 1\ndef f85(a) = f84(a) + 1\ndef f86(a) = f85(a) + 1\ndef f87(a) = f86(a) + 1\ndef f88(a) = f87(a) + 1\ndef f89(a) = f88(a) + 1\ndef f90(a) = f89(a) + 1\ndef f91(a) = f90(a) + 1\ndef f92(a) = f91(a) + 1\ndef f93(a) = f92(a) + 1\ndef f94(a) = f93(a) + 1\ndef f95(a) = f94(a) + 1\ndef f96(a) = f95(a) + 1\ndef f97(a) = f96(a) + 1\ndef f98(a) = f97(a) + 1\ndef f99(a) = f98(a) + 1\ndef f100(a) = f99(a) + 1\ndef f101(a) = f100(a) + 1\ndef f102(a) = f101(a) + 1\ndef f103(a) = f102(a) + 1\ndef f104(a) = f103(a) + 1\ndef f105(a) = f104(a) + 1\ndef f106(a) = f105(a) + 1\ndef f107(a) = f106(a) + 1\ndef f108(a) = f107(a) + 1\ndef f109(a) = f108(a) + 1\ndef f110(a) = f109(a) + 1\ndef f111(a) = f110(a) + 1\ndef f112(a) = f111(a) + 1\ndef f113(a) = f112(a) + 1\ndef f114(a) = f113(a) + 1\ndef f115(a) = f114(a) + 1\ndef f116(a) = f115(a) + 1\ndef f117(a) = f116(a) + 1\ndef f118(a) = f117(a) + 1\ndef f119(a) = f118(a) + 1\ndef f120(a) = f119(a) + 1\ndef f121(a) = f120(a) + 1\ndef f122(a) = f121(a) + 1\ndef f123(a) = f122(a) + 1\ndef f124(a) = f123(a) + 1\ndef f125(a) = f124(a) + 1\ndef f126(a) = f125(a) + 1\ndef f127(a) = f126(a) + 1\ndef f128(a) = f127(a) + 1\ndef f129(a) = f128(a) + 1\ndef f130(a) = f129(a) + 1\ndef f131(a) = f130(a) + 1\ndef f132(a) = f131(a) + 1\ndef f133(a) = f132(a) + 1\ndef f134(a) = f133(a) + 1\ndef f135(a) = f134(a) + 1\ndef f136(a) = f135(a) + 1\ndef f137(a) = f136(a) + 1\ndef f138(a) = f137(a) + 1\ndef f139(a) = f138(a) + 1\ndef f140(a) = f139(a) + 1\ndef f141(a) = f140(a) + 1\ndef f142(a) = f141(a) + 1\ndef f143(a) = f142(a) + 1\ndef f144(a) = f143(a) + 1\ndef f145(a) = f144(a) + 1\ndef f146(a) = f145(a) + 1\ndef f147(a) = f146(a) + 1\ndef f148(a) = f147(a) + 1\ndef f149(a) = f148(a) + 1\ndef f150(a) = f149(a) + 1\ndef f151(a) = f150(a) + 1\ndef f152(a) = f151(a) + 1\ndef f153(a) = f152(a) + 1\ndef f154(a) = f153(a) + 1\ndef f155(a) = f154(a) + 1\ndef f156(a) = f155(a) + 1\ndef f157(a) = f156(a) + 1\ndef f158(a) = f157(a) + 1\ndef f159(a) = f158(a) + 1\ndef f160(a) = f159(a) + 1\ndef f161(a) = f160(a) + 1\ndef f162(a) = f161(a) + 1\ndef f163(a) = f162(a) + 1\ndef f164(a) = f163(a) + 1\ndef f165(a) = f164(a) + 1\ndef f166(a) = f165(a) + 1\ndef f167(a) = f166(a) + 1\ndef f168(a) = f167(a) + 1\ndef f169(a) = f168(a) + 1\ndef f170(a) = f169(a) + 1\ndef f171(a) = f170(a) + 1\ndef f172(a) = f171(a) + 1\ndef f173(a) = f172(a) + 1\ndef f174(a) = f173(a) + 1\ndef f175(a) = f174(a) + 1\ndef f176(a) = f175(a) + 1\ndef f177(a) = f176(a) + 1\ndef f178(a) = f177(a) + 1\ndef f179(a) = f178(a) + 1\ndef f180(a) = f179(a) + 1\ndef f181(a) = f180(a) + 1\ndef f182(a) = f181(a) + 1\ndef f183(a) = f182(a) + 1\ndef f184(a) = f183(a) + 1\ndef f185(a) = f184(a) + 1\ndef f186(a) = f185(a) + 1\ndef f187(a) = f186(a) + 1\ndef f188(a) = f187(a) + 1\ndef f189(a) = f188(a) + 1\ndef f190(a) = f189(a) + 1\ndef f191(a) = f190(a) + 1\ndef f192(a) = f191(a) + 1\ndef f193(a) = f192(a) + 1\ndef f194(a) = f193(a) + 1\ndef f195(a) = f194(a) + 1\ndef f196(a) = f195(a) + 1\ndef f197(a) = f196(a) + 1\ndef f198(a) = f197(a) + 1\ndef f199(a) = f198(a) + 1\ndef f200(a) = f199(a) + 1\ndef f201(a) = f200(a) + 1\nlevel l {\n  rule r: f201(x) > 0\n}\n', 'spec.kd:108:20: error: this expression nests more than 200 levels deep, counting the defs it calls; split it into lets [KD005]'),
    ('KD006', 'spec s version 1\ninput {\n  x: float\n  y: float\n}\nlevel l {\n  rule r: x > 0 and and y > 0\n}\n', 'spec.kd:7:21: error: unexpected `and` (a keyword cannot be used here) [KD006]'),
    ('KD007', 'spec s version 1\noutput {\n  m: regex "\\d+"\n}\n', 'spec.kd:3:13: error: unknown escape `\\d` in a string; the escapes are \\\\ \\" \\n \\t \\r \\xNN \\uNNNN \\UNNNNNNNN (a regex writes `\\\\d` for `\\d`) [KD007]'),
    ('KD007', 'spec s version 1\noutput {\n  m: regex "\\x4"\n}\n', 'spec.kd:3:13: error: `\\x` takes exactly 2 hexadecimal digits [KD007]'),
    ('KD008', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 1e39\n}\n', 'spec.kd:6:15: error: the number 1e39 is too large: numbers in a spec are at most 3.403e+38 (the float32 range reward programs compute in) [KD008]'),
    ('KD009', 'spec s version 1\ninput {\n  sr: vector[2.5]\n}\n', 'spec.kd:3:14: error: a size must be a positive whole number, not `2.5` [KD009]'),
    ('KD009', 'spec s version 1\ninput {\n  sr: raster[5000]\n}\n', 'spec.kd:3:14: error: a vector or raster has at most 4096 bands, not 5000 [KD009]'),
    ('KD010', 'spec s version 1.5\n', 'spec.kd:1:16: error: a spec version is a whole number, such as `version 1` [KD010]'),
    ('KD010', 'spec s version 3000000000\n', 'spec.kd:1:16: error: a spec version is at most 2147483647 [KD010]'),
    ('KD011', 'spec s version 1\ninput {\n  x: float in 5..1\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:3:12: error: an empty range: no value lies in it [KD011]'),
    ('KD011', 'spec s version 1\ninput {\n  x: float\n}\ntable t(x: float) -> float {\n  5..1 -> 1\n  _ -> 0\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:6:3: error: empty range `5..1`: the low end is above the high end [KD011]'),
    ('KD011', 'spec s version 1\ninput {\n  x: float\n}\ntable t(x: float) -> float {\n  [1, 1) -> 1\n  _ -> 0\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:6:3: error: empty interval `[1, 1)`: no number lies in it [KD011]'),
    ('KD012', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0\n}\nadvantage grpo\nadvantage rloo\n', 'spec.kd:9:1: error: a spec has at most one `advantage` statement [KD012]'),
    ('KD013', 'spec s version 1\npoints wells(a) {\n}\n', 'spec.kd:2:1: error: points sheet `wells` has no criteria; write one per line, `name: condition -> points` [KD013]'),
    ('KD014', 'spec s version 1\npoints p(a, b) {\n  big: a > 1 -> 1\n  big: b > 1 -> 2\n}\n', 'spec.kd:4:3: error: criterion `big` is already on this sheet (line 3) [KD014]'),
    ('KD015', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0 invalid zero\n}\n', 'spec.kd:6:25: error: `invalid` takes fail, pass or skip, not `zero` [KD015]'),
    ('KD015', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0\n}\nmask behind "</answer>"\n', 'spec.kd:8:6: error: `mask` takes `after` or `before`, not `behind` [KD015]'),
    ('KD016', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0 soft -0.5\n}\n', 'spec.kd:6:17: error: `soft` needs a width above 0 [KD016]'),
    ('KD017', 'spec s version 1\ninput {\n  x: float\n}\ndef f(a, b) = a + b\nlevel l {\n  rule r: f(a = x, 2) > 0\n}\n', 'spec.kd:7:20: error: a positional argument cannot follow a keyword argument [KD017]'),
    ('KD018', 'spec s version 1\noutput {\n  reply: tag "answer "\n}\n', 'spec.kd:3:14: error: a tag name is a bare word such as "answer", not "answer " [KD018]'),
    ('KD024', {'spec.kd': 'spec s version 1\nimport "lib.kd" as a\nimport "lib.kd" as a\n', 'lib.kd': 'spec s version 1\n'}, 'spec.kd:3:1: error: the import name `a` is used twice [KD024]'),
    ('KD025', {'spec.kd': 'spec s version 1\nimport "../lib.kd" as a\n'}, 'spec.kd:2:1: error: cannot import "../lib.kd": the import path leaves the folders imports may come from (the importing spec\'s folder tree, --spec-path or KDSL_PATH folders and kdsl\'s library) [KD025]'),
    ('KD025', {'spec.kd': 'spec s version 1\nimport "/etc/lib.kd" as a\n'}, 'spec.kd:2:1: error: cannot import "/etc/lib.kd": an import path is relative (to the importing spec, a --spec-path folder or kdsl\'s library), never absolute [KD025]'),
    ('KD026', {'spec.kd': 'spec s version 1\nimport "libs.kd" as a\n', 'lib.kd': 'spec s version 1\n'}, 'spec.kd:2:1: error: cannot find the spec "libs.kd" (did you mean "lib.kd"?); looked beside spec.kd, in --spec-path and KDSL_PATH folders and in kdsl\'s domain_specs library [KD026]'),
    ('KD027', {'spec.kd': 'spec s version 1\nimport "lib.kd" as a\n', 'lib.kd': 'spec s version 1\nimport "spec.kd" as b\n'}, 'lib.kd:2:1: error: import cycle: spec.kd -> lib.kd -> spec.kd [KD027]'),
    ('KD029', {'spec.kd': 'spec s version 1\nimport "lib.kd" as a\n', 'lib.kd': 'spec s version 1\ndef f(x) = x +\n'}, 'spec.kd:2:1: error: the imported spec "lib.kd" has errors [KD029]'),
    ('KD030', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: si.NDVI(x, x) > 0\n}\n', 'spec.kd:6:11: error: unknown import `si` [KD030]'),
    ('KD031', 'spec s version 1 logic fuzzy\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:1:1: error: unknown logic `fuzzy`; choose one of product, godel, lukasiewicz [KD031]'),
    ('KD032', 'spec s version 1\ninput {\n  x: float\n}\nlet x = 2\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:5:1: error: `x` is already defined at line 3 [KD032]'),
    ('KD032', {'spec.kd': 'spec s version 1\nimport "lib.kd" as risk\ninput {\n  risk: float\n}\nlevel l {\n  rule r: risk > 0\n}\n', 'lib.kd': 'spec s version 1\n'}, 'spec.kd:4:3: error: `risk` is already the name of an import [KD032]'),
    ('KD032', 'spec s version 1\ninput {\n  x: float\n}\ndef f(a) = a\ndef f(a) = a + 1\nlevel l {\n  rule r: f(x) > 0\n}\n', 'spec.kd:6:1: error: def `f` is already defined at line 5 [KD032]'),
    ('KD032', 'spec s version 1\nenum Risk { Low, High }\nenum Risk { Low, High }\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:3:1: error: enum `Risk` is already defined [KD032]'),
    ('KD032', 'spec s version 1\ninput {\n  x: float\n}\ntable t(x: float) -> float {\n  _ -> 1\n}\ntable t(x: float) -> float {\n  _ -> 2\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:8:1: error: table `t` is already defined [KD032]'),
    ('KD032', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0\n}\nlevel l {\n  rule q: x > 1\n}\n', 'spec.kd:8:1: error: level `l` is already defined [KD032]'),
    ('KD032', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0\n  rule r: x < 5\n}\n', 'spec.kd:7:3: error: `r` is already the name of a rule or level (line 6) [KD032]'),
    ('KD032', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0\n}\nexample "a" {\n  x: 1\n}\nexample "a" {\n  x: 2\n}\n', 'spec.kd:11:1: error: two examples are called "a" [KD032]'),
    ('KD033', 'spec s version 1\nenum Risk { Low, High, Low }\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:2:24: error: enum `Risk` lists `Low` twice [KD033]'),
    ('KD034', 'spec s version 1\ninput {\n  x: float mmol\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:3:3: error: unknown unit `mmol` (did you mean `mmol/L`?) [KD034]'),
    ('KD034', 'spec s version 1\ninput {\n  x: float\n}\ndef f(a): mmol = a * 2\nlevel l {\n  rule r: f(x) > 0\n}\n', 'spec.kd:5:1: error: unknown unit `mmol` for the result of `f` (did you mean `mmol/L`?) [KD034]'),
    ('KD034', 'spec s version 1\ninput {\n  x: float\n}\nlet y: mgdl = x\nlevel l {\n  rule r: y > 0\n}\n', 'spec.kd:5:1: error: unknown unit `mgdl` (did you mean `mg/dL`?) [KD034]'),
    ('KD034', 'spec s version 1\ninput {\n  x: float\n}\ndef f(a: mmol) = a * 2\nlevel l {\n  rule r: f(x) > 0\n}\n', 'spec.kd:5:7: error: unknown unit `mmol` for `a` of `f` (did you mean `mmol/L`?) [KD034]'),
    ('KD035', 'spec s version 1\ninput {\n  x: float\n}\ntable t(c: bool mm) -> float {\n  _ -> 1\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:5:9: error: only numbers have units; this is bool [KD035]'),
    ('KD036', 'spec s version 1\ninput {\n  sr: vector[3] bands(B1, B2)\n}\nlevel l {\n  rule r: sr.B1 > 0\n}\n', 'spec.kd:3:7: error: vector[3] names 2 bands; name all 3 or none [KD036]'),
    ('KD036', 'spec s version 1\ninput {\n  px: raster[3] bands(B1, B2)\n}\nlevel l {\n  rule r: mean(px.B1) > 0\n}\n', 'spec.kd:3:7: error: raster[3] names 2 bands; name all 3 or none [KD036]'),
    ('KD037', 'spec s version 1\ninput {\n  px: raster[2] bands(B1, B1)\n}\nlevel l {\n  rule r: mean(px.B1) > 0\n}\n', 'spec.kd:3:7: error: a raster names the same band twice [KD037]'),
    ('KD038', 'spec s version 1\ninput {\n  x: float\n  name: str in 0..1\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:4:9: error: only number inputs (float, int, vector, raster) take a range, not str [KD038]'),
    ('KD038', 'spec s version 1\ninput {\n  x: float\n}\ntable t(x: bool in 0..1) -> float {\n  _ -> 1\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:5:9: error: only a number column has a range; `x` is bool [KD038]'),
    ('KD039', 'spec s version 1\ninput {\n  x: float\n  note: text\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:4:9: error: an input cannot be text: inputs are dataset columns; use `str` [KD039]'),
    ('KD040', 'spec s version 1\ninput {\n  x: flaot\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:3:6: error: unknown type `flaot` (did you mean `float`?) [KD040]'),
    ('KD040', 'spec s version 1\ninput {\n  x: float\n}\ntable t(x: real) -> float {\n  _ -> 1\n}\nlevel l {\n  rule r: x > 0\n}\n', 'spec.kd:5:9: error: unknown type `real` [KD040]'),
    ('KD040', 'spec s version 1\ninput {\n  x: float\n}\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: reply as Risk == x\n}\n', 'spec.kd:9:11: error: unknown type `Risk` [KD040]'),
    ('KD041', 'spec s version 1\ninput {\n  x: float\n}\nlet a = b + 1\nlet b = a * 2\nlevel l {\n  rule r: a > x\n}\n', 'spec.kd:6:9: error: `a` is defined in terms of itself: a -> b -> a [KD041]'),
    ('KD042', 'spec s version 1\ninput {\n  x: float\n}\ndef f(a) = f(a - 1)\nlevel l {\n  rule r: f(x) > 0\n}\n', 'spec.kd:5:12: error: def `f` calls itself; defs cannot be recursive [KD042]'),
    ('KD043', 'spec s version 1\ninput {\n  x: float\n}\nlevel l weight -1 {\n  rule r: x > 0\n}\n', "spec.kd:5:1: error: a level's weight cannot be negative [KD043]"),
    ('KD043', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0 weight -1\n}\n', "spec.kd:6:3: error: a rule's weight cannot be negative [KD043]"),
    ('KD044', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n}\n', 'spec.kd:5:1: error: level `l` has no rules [KD044]'),
    ('KD045', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 0 weight 3e38\n  rule q: x > 1 weight 3e38\n}\n', 'spec.kd:5:1: error: the rule weights of level `l` add up to more than 3.403e+38, so its weighted mean would overflow float32 [KD045]'),
    ('KD045', 'spec s version 1\ninput {\n  x: float\n}\nlevel l weight 3e38 {\n  rule r: x > 0\n}\nlevel m weight 3e38 {\n  rule q: x > 1\n}\n', 'spec.kd:5:1: error: the level weights add up to more than 3.403e+38, so the reward would overflow float32 [KD045]'),
    ('KD046', 'spec s version 1\n', 'spec.kd:1:1: warning: this spec has no levels, so it gives no reward; it can still be imported for its enums, defs and tables [KD046]'),
    ('KD047', 'spec s version 1\ninput {\n  ndvi: float\n}\nlevel l {\n  rule green: when ndvi: ndvi > 0.4\n}\n', 'spec.kd:6:20: error: a `when` condition must be true or false, not float [KD047]'),
    ('KD048', 'spec s version 1\ninput {\n  sr: vector[3]\n}\nlevel l {\n  rule bright: sr * 2\n}\n', 'spec.kd:6:16: error: rule `bright` gives a vector[3], not one truth value per sample; reduce it first, e.g. frac(...), mean(...), min(...) or max(...) [KD048]'),
    ('KD049', 'spec s version 1\ninput {\n  site: str\n}\nlevel l {\n  rule named: site\n}\n', 'spec.kd:6:15: error: rule `named` must be a condition or a number in 0..1, not str [KD049]'),
    ('KD050', 'spec s version 1\noutput {\n  reply: tag "answer"\n  value: reply as float\n}\nlevel l {\n  rule positive: value > 0 on value\n}\n', 'spec.kd:7:3: error: `on value`: `value` is a value read from the text, not a span of it; name the tag or regex output it is read from [KD050]'),
    ('KD050', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule answered: present(reply) on replay\n}\n', 'spec.kd:6:3: error: `on replay`: expected the name of a tag or regex output (did you mean `reply`?) [KD050]'),
    ('KD051', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule positive: x > 0\n}\nadvantage ppo\n', 'spec.kd:8:1: error: unknown advantage estimator `ppo`; choose grpo or rloo [KD051]'),
    ('KD052', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule positive: x > 0\n}\nadvantage grpo(aggregat = sum)\n', 'spec.kd:8:16: error: `grpo` has no setting `aggregat`; it takes scale, aggregate (did you mean `aggregate`?) [KD052]'),
    ('KD053', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule positive: x > 0\n}\nadvantage grpo(scale = groups)\n', 'spec.kd:8:16: error: `scale` takes group, batch, none, not `groups` (did you mean `group`?) [KD053]'),
    ('KD054', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule positive: x > 0\n}\nmask after ""\n', 'spec.kd:8:1: error: a mask marker cannot be empty [KD054]'),
    ('KD055', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule positive: x > 0\n}\nexample "low" {\n  x: -1\n  expect reward < "high"\n}\n', 'spec.kd:10:10: error: example "low" is compared with "high", which is not an example of this spec [KD055]'),
    ('KD055', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule positive: x > 0\n}\nexample "low" {\n  x: -1\n  expect reward < "low"\n}\n', 'spec.kd:10:10: error: example "low" is compared with itself [KD055]'),
    ('KD056', 'spec s version 1\ninput {\n  x: float\n}\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule positive: x > 0 and present(reply)\n}\nexample "e" {\n  reply: "yes"\n}\n', 'spec.kd:12:3: error: example sets `reply`, which is not an input of this spec [KD056]'),
    ('KD057', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule positive: x > 0\n}\nexample "e" {\n  x: 1\n  expect not reward\n}\n', 'spec.kd:10:10: error: expect a comparison for the reward, e.g. `reward >= 1` [KD057]'),
    ('KD058', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule positive: x > 0\n}\nexample "e" {\n  x: 1\n  expect level.positive >= 1\n}\n', 'spec.kd:10:10: error: example expects `level.positive`, which is not a rule, level or let [KD058]'),
    ('KD059', 'spec s version 1\ninput {\n  x: float\n}\nlet doubled = x * 2\nlevel l {\n  rule positive: doubled > 0\n}\nexample "e" {\n  x: 1\n  expect skip doubled\n}\n', 'spec.kd:11:10: error: `doubled` is not a rule; compare it instead, e.g. `doubled >= 0.5` [KD059]'),
    ('KD060', 'spec s version 1\ninput {\n  n: int\n}\nlevel l {\n  rule positive: n > 0\n}\nexample "e" {\n  n: 2.5\n}\n', 'spec.kd:9:6: error: `n` is an int input: expected a whole number, got 2.5 [KD060]'),
    ('KD060', 'spec s version 1\ninput {\n  sr: vector[3]\n}\nlevel l {\n  rule bright: sr[0] > 0.3\n}\nexample "e" {\n  sr: 0.5\n}\n', 'spec.kd:9:7: error: `sr` is a vector[3] input: expected 3 numbers, got 0.5 [KD060]'),
    ('KD060', 'spec s version 1\ninput {\n  gold: box\n}\nlevel l {\n  rule wide: gold.x2 - gold.x1 > 10\n}\nexample "e" {\n  gold: [1, 2, "three", 4]\n}\n', 'spec.kd:9:16: error: `gold` is a box input: expected numbers, got "three" [KD060]'),
    ('KD060', 'spec s version 1\ninput {\n  sr: vector[3]\n}\nlevel l {\n  rule bright: sr[0] > 0.3\n}\nexample "e" {\n  sr: [0.1, 0.2]\n}\n', 'spec.kd:9:7: error: `sr` is a vector[3] input: expected 3 numbers, got 2 [KD060]'),
    ('KD060', 'spec s version 1\ninput {\n  label: enum Cover { Forest, Water }\n}\nlevel l {\n  rule is_forest: label == Forest\n}\nexample "e" {\n  label: 2\n}\n', 'spec.kd:9:10: error: `label` is enum Cover: expected one of Forest, Water (or an index below 2), got 2 [KD060]'),
    ('KD060', 'spec s version 1\ninput {\n  label: enum Cover { Forest, Water }\n}\nlevel l {\n  rule is_forest: label == Forest\n}\nexample "e" {\n  label: true\n}\n', 'spec.kd:9:10: error: `label` is enum Cover: expected one of Forest, Water, got true [KD060]'),
    ('KD061', 'spec s version 1\ninput {\n  x: float\n}\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule positive: x > 0\n}\n', 'spec.kd:6:3: warning: output `reply` is never used [KD061]'),
    ('KD062', 'spec s version 1\ninput {\n  size: float mm\n  temp: float degC\n}\nlevel l {\n  rule r: size > temp\n}\n', 'spec.kd:7:11: error: `>`: `degC` and `mm` do not convert (degC is a temperature and mm a length) [KD062]'),
    ('KD063', 'spec s version 1\ninput {\n  size: float\n}\nlevel l {\n  rule small: size as cm < 1\n}\n', 'spec.kd:6:15: error: `as cm` converts a value that has a unit; this one has none (give its input a unit, e.g. `size: float mm`) [KD063]'),
    ('KD063', 'spec s version 1\ninput {\n  size: float mm\n}\nlevel l {\n  rule small: size as str == "1"\n}\n', 'spec.kd:6:15: error: `as str` converts text taken from the completion (or a number to float or int); this is a float [KD063]'),
    ('KD064', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule yes: reply == "yes" | "y"\n}\n', 'spec.kd:6:22: error: a set of strings (`"a" | "b"`) can only be an argument of mentions() or mention_count() [KD064]'),
    ('KD065', 'spec s version 1\ninput {\n  label: enum Cover { Forest, Water }\n}\nlevel l {\n  rule is_water: label == Lake\n}\n', 'spec.kd:6:27: error: `Lake` is not a member of enum Cover; its members are Forest, Water [KD065]'),
    ('KD065', 'spec s version 1\nimport "medical/fleischner" as fl\ninput {\n  risk: fl.PatientRisk\n}\nlevel l {\n  rule high: risk == fl.PatientRisk.Medium\n}\n', 'spec.kd:7:22: error: `Medium` is not a member of enum fl.PatientRisk; its members are Low, High [KD065]'),
    ('KD065', 'spec s version 1\ninput {\n  label: enum Cover { Forest, Water }\n}\nlevel l {\n  rule is_water: label == Cover.Sea\n}\n', 'spec.kd:6:27: error: `Sea` is not a member of enum Cover; its members are Forest, Water [KD065]'),
    ('KD065', 'spec s version 1\nenum Cover { Forest, Water }\ninput {\n  ndwi: float\n  label: Cover\n}\ntable cover(ndwi: float) -> Cover {\n  > 0.2 -> Marsh\n  <= 0.2 -> Forest\n}\nlevel l {\n  rule r: label == Water\n}\n', 'spec.kd:8:3: error: `Marsh` is not a member of enum Cover; its members are Forest, Water [KD065]'),
    ('KD065', 'spec s version 1\ninput {\n  label: enum Cover { Forest, Water }\n}\nlevel l {\n  rule is_forest: label == Forest\n}\nexample "e" {\n  label: "woodland"\n}\n', 'spec.kd:9:10: error: `woodland` is not a member of enum Cover; its members are Forest, Water [KD065]'),
    ('KD066', 'spec s version 1\ninput {\n  age: float\n}\nlevel l {\n  rule adult: agee >= 18\n}\n', 'spec.kd:6:15: error: unknown name `agee` (did you mean `age`?) [KD066]'),
    ('KD067', 'spec s version 1\ninput {\n  label: enum Cover { Forest, Water }\n  kind: enum Biome { Forest, Desert }\n}\nlevel l {\n  rule r: default(Forest, Desert) == kind and label == Water\n}\n', 'spec.kd:7:19: error: `Forest` is a member of Cover and Biome; write Cover.Forest [KD067]'),
    ('KD068', 'spec s version 1\nimport "medical/fleischner" as fl\ninput {\n  kind: fl.NoduleType\n}\nlevel l {\n  rule solid: kind == fl.Nodule.Solid\n}\n', 'spec.kd:7:23: error: `fl` has no enum `Nodule` (did you mean `NoduleType`?) [KD068]'),
    ('KD069', 'spec s version 1\nimport "medical/fleischner" as fl\ninput {\n  long_axis: float\n}\nlevel l {\n  rule r: fl.average_diameter_mm > 6 and long_axis > 0\n}\n', 'spec.kd:7:11: error: `fl.average_diameter_mm` is a def: call it with arguments [KD069]'),
    ('KD070', 'spec s version 1\ninput {\n  pixels: raster[2] bands(red, nir)\n}\nlevel l {\n  rule r: mean(pixels.B08) > 0.3\n}\n', 'spec.kd:6:16: error: raster[2] has no band `B08` [KD070]'),
    ('KD070', 'spec s version 1\ninput {\n  gold: box\n}\nlevel l {\n  rule r: gold.width > 10\n}\n', 'spec.kd:6:11: error: a box has x1, y1, x2, y2, not `width` [KD070]'),
    ('KD070', 'spec s version 1\noutput {\n  m: regex "score: (?P<value>[0-9.]+)"\n}\nlevel l {\n  rule r: m.score as float > 0\n}\n', 'spec.kd:6:11: error: the regex has no named group `score` [KD070]'),
    ('KD070', 'spec s version 1\ninput {\n  sr: vector[3]\n}\nlevel l {\n  rule r: sr.B4 > 0.3\n}\n', 'spec.kd:6:11: error: vector[3] has no band names; declare them with bands(...) or index it like x[0] [KD070]'),
    ('KD070', 'spec s version 1\ninput {\n  age: float\n}\nlevel l {\n  rule r: age.years > 18\n}\n', 'spec.kd:6:11: error: a float has no attribute `years` [KD070]'),
    ('KD071', 'spec s version 1\ninput {\n  age: float\n}\nlevel l {\n  rule r: age[0] > 18\n}\n', 'spec.kd:6:11: error: only vectors, rasters and boxes can be indexed, not float [KD071]'),
    ('KD071', 'spec s version 1\ninput {\n  sr: vector[3]\n  i: int\n}\nlevel l {\n  rule r: sr[i] > 0.3\n}\n', 'spec.kd:7:14: error: an index must be a whole number written in the spec, like x[0] [KD071]'),
    ('KD071', 'spec s version 1\ninput {\n  gold: box\n}\nlevel l {\n  rule r: gold[4] > 0\n}\n', 'spec.kd:6:16: error: index 4 is out of range for box (0..3) [KD071]'),
    ('KD072', 'spec s version 1\noutput {\n  m: regex "(\\\\w+) \\\\1"\n}\nlevel l {\n  rule r: present(m)\n}\n', 'spec.kd:3:6: error: this regex is not accepted (invalid escape sequence: \\1); kdsl regexes use RE2 syntax, which runs in linear time: no backreferences or lookaround [KD072]'),
    ('KD073', 'spec s version 1\ninput {\n  age: float\n}\noutput {\n  inner: tag "b" within age\n}\nlevel l {\n  rule r: present(inner)\n}\n', 'spec.kd:6:25: error: expected text from the completion (a tag or regex), not float [KD073]'),
    ('KD074', 'spec s version 1\ninput {\n  img: raster[2] mm\n}\nlet img_cm: cm = img\nlevel l {\n  rule r: mean(img_cm[0]) > 0\n}\n', 'spec.kd:5:1: error: raster[2] holds 2 bands: select one (`img[0]` to `img[1]`) before computing with it [KD074]'),
    ('KD074', 'spec s version 1\ninput {\n  a: vector[3]\n  b: vector[4]\n}\nlevel l {\n  rule r: sum(a + b) > 0\n}\n', 'spec.kd:7:15: error: vector sizes differ: vector[3] and vector[4] [KD074]'),
    ('KD074', 'spec s version 1\ninput {\n  pixels: raster[2] bands(red, nir)\n  sr: vector[2]\n}\nlevel l {\n  rule r: mean(pixels.nir - sr) > 0\n}\n', 'spec.kd:7:16: error: cannot combine a per-pixel float with a vector[2] [KD074]'),
    ('KD075', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: abs(reply) > 1\n}\n', 'spec.kd:6:15: error: abs() needs a number, but this is text from the completion; convert it, e.g. `answer as float` or number(answer) [KD075]'),
    ('KD075', 'spec s version 1\ninput {\n  gold: box\n}\nlevel l {\n  rule r: gold < 5\n}\n', 'spec.kd:6:11: error: `<` needs a number, not box [KD075]'),
    ('KD076', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: if reply then 1 else 0\n}\n', 'spec.kd:6:14: error: `if` needs a condition (true or false), not text; test text with present(...), mentions(...) or matches(...) [KD076]'),
    ('KD077', 'spec s version 1\nenum Cover { Bare, Green }\ninput {\n  pixels: raster[2] bands(red, nir)\n  kind: enum Kind { Rock, Sand }\n}\ntable cover(ndvi: float) -> Cover {\n  < 0.3 -> Bare\n  >= 0.3 -> Green\n}\nlevel l {\n  rule r: frac(cover(pixels.nir) == kind)\n}\n', 'spec.kd:12:16: error: cannot compare per-pixel enum Cover with enum Kind [KD077]'),
    ('KD077', 'spec s version 1\nenum Cover { Bare, Green }\ninput {\n  pixels: raster[2] bands(red, nir)\n}\ntable cover(ndvi: float) -> Cover {\n  < 0.3 -> Bare\n  >= 0.3 -> Green\n}\nlevel l {\n  rule r: frac(cover(pixels.nir) >= Green)\n}\n', 'spec.kd:11:16: error: per-pixel enum Cover values can only be compared with == or != [KD077]'),
    ('KD077', 'spec s version 1\ninput {\n  label: enum Cover { Forest, Water }\n  n: int\n}\nlevel l {\n  rule r: label == n\n}\n', 'spec.kd:7:11: error: cannot compare enum Cover with int [KD077]'),
    ('KD077', 'spec s version 1\ninput {\n  label: enum Risk { Low, High }\n}\nlevel l {\n  rule r: label > Low\n}\n', 'spec.kd:6:11: error: enum Risk values can only be compared with == or != [KD077]'),
    ('KD077', 'spec s version 1\noutput {\n  reply: tag "answer"\n  think: tag "think"\n}\nlevel l {\n  rule r: reply == think\n}\n', 'spec.kd:7:11: error: convert text before comparing it, e.g. `answer as float` [KD077]'),
    ('KD077', 'spec s version 1\ninput {\n  sr: vector[3]\n}\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: reply == sr\n}\n', 'spec.kd:9:11: error: cannot compare text with vector[3] [KD077]'),
    ('KD078', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x in {}\n}\n', 'spec.kd:6:16: error: an empty set: `in {}` can never hold [KD078]'),
    ('KD078', 'spec s version 1\ninput {\n  x: float\n  y: float\n}\nlevel l {\n  rule r: x in {y, 1}\n}\n', 'spec.kd:7:17: error: a set lists values written in the spec [KD078]'),
    ('KD078', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x in {1, "two"}\n}\n', 'spec.kd:6:20: error: str in a set of float values [KD078]'),
    ('KD080', 'spec s version 1\ninput {\n  x: float\n  flag: bool\n}\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: (if flag then x else reply) > 0\n}\n', 'spec.kd:10:12: error: the branches of `if` differ: float and text [KD080]'),
    ('KD080', 'spec s version 1\ninput {\n  scene: raster[2] bands(B04, B08) nodata 0\n  x: float\n}\nlevel l {\n  rule r: mean(if scene.B08 > 0.3 then x else 0) > 0\n}\n', 'spec.kd:7:16: error: a per-pixel condition needs per-pixel branches [KD080]'),
    ('KD080', 'spec s version 1\nenum Cover { Water, Land }\ninput {\n  scene: raster[2] bands(B04, B08) nodata 0\n}\nlevel l {\n  rule r: (if scene.B08 > 0.3 then Land else Water) == Land\n}\n', 'spec.kd:7:12: error: a per-pixel condition needs numeric branches [KD080]'),
    ('KD081', 'spec s version 1\ninput {\n  sr: vector[2]\n}\nlevel l {\n  rule r: sr[0](1) > 0\n}\n', 'spec.kd:6:11: error: only named functions, defs and tables can be called [KD081]'),
    ('KD082', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: sqr(x) > 0\n}\n', 'spec.kd:6:11: error: unknown function `sqr` (did you mean `sqrt`?) [KD082]'),
    ('KD083', 'spec s version 1\ninput {\n  x: float\n}\ndef half(a) = a / 2\nlevel l {\n  rule r: half(x, 1) > 0\n}\n', 'spec.kd:7:11: error: `half` takes 1 argument, got 2 [KD083]'),
    ('KD083', 'spec s version 1\ninput {\n  x: float\n}\ndef half(a) = a / 2\nlevel l {\n  rule r: half(b = x) > 0\n}\n', 'spec.kd:7:16: error: `half` has no parameter `b`; it takes a [KD083]'),
    ('KD083', 'spec s version 1\ninput {\n  x: float\n}\ndef half(a) = a / 2\nlevel l {\n  rule r: half(x, a = x) > 0\n}\n', 'spec.kd:7:19: error: `a` is given twice [KD083]'),
    ('KD083', 'spec s version 1\ninput {\n  x: float\n}\ndef scaled(a, k) = a * k\nlevel l {\n  rule r: scaled(x) > 0\n}\n', 'spec.kd:7:11: error: `scaled` needs a value for `k` [KD083]'),
    ('KD083', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: abs(value = x) > 0\n}\n', 'spec.kd:6:15: error: abs() takes no keyword arguments [KD083]'),
    ('KD083', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: abs(x, 2) > 0\n}\n', 'spec.kd:6:11: error: abs() takes 1 argument, got 2 [KD083]'),
    ('KD084', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n}\ntable grade(v: float) -> Risk {\n  < 5 -> Low\n  >= 5 -> High\n}\nlevel l {\n  rule r: grade(v = x) == High\n}\n', 'spec.kd:11:11: error: table arguments are given in column order, without names [KD084]'),
    ('KD084', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n}\ntable grade(v: float) -> Risk {\n  < 5 -> Low\n  >= 5 -> High\n}\nlevel l {\n  rule r: grade(x, x) == High\n}\n', 'spec.kd:11:11: error: table `grade` takes 1 argument (v), got 2 [KD084]'),
    ('KD084', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n}\ntable grade(v: bool) -> Risk {\n  true -> High\n  false -> Low\n}\nlevel l {\n  rule r: grade(x) == High\n}\n', 'spec.kd:11:17: error: column `v` of table `grade` is bool, not float [KD084]'),
    ('KD084', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  age: int\n}\ntable risk(age: int, smoker: bool) -> Risk {\n  < 50, false -> Low\n  < 50, true -> High\n  >= 50, _ -> High\n}\nlevel l {\n  rule r: risk(age) == Low\n}\n', 'spec.kd:12:11: error: table `risk` takes 2 arguments (age, smoker), got 1 [KD084]'),
    ('KD085', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: normalize(x) == "yes"\n}\n', 'spec.kd:6:21: error: normalize() takes text from the completion or a `str` input column, not float [KD085]'),
    ('KD085', 'spec s version 1\ninput {\n  x: float\n}\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: math_verify(reply, x)\n}\n', 'spec.kd:9:30: error: math_verify() compares the text with a reference text: a `str` input column or text from the completion, not float [KD085]'),
    ('KD086', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: count(reply as float) == 1\n}\n', 'spec.kd:6:17: error: count() counts the occurrences of a tag, e.g. count(answer) for `answer: tag "answer"` [KD086]'),
    ('KD086', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: length(reply, lines) < 100\n}\n', 'spec.kd:6:25: error: length() counts chars, words, tokens [KD086]'),
    ('KD086', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: mentions(reply, NDVI)\n}\n', 'spec.kd:6:27: error: mentions() takes the terms as strings: "a" | "b" [KD086]'),
    ('KD086', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: mentions(reply, "NDVI" | " ")\n}\n', 'spec.kd:6:27: error: an empty term can never be mentioned [KD086]'),
    ('KD086', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: repetition(reply, 2.5) < 0.5\n}\n', 'spec.kd:6:29: error: repetition() takes the n-gram size as a whole number >= 1 [KD086]'),
    ('KD086', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: choice(reply, ABCD) == "A"\n}\n', 'spec.kd:6:25: error: choice() takes the letters as a string, e.g. choice(answer, "ABCD") [KD086]'),
    ('KD086', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: choice(reply, "ABCA") == "A"\n}\n', 'spec.kd:6:25: error: choice() letters must be distinct letters or digits [KD086]'),
    ('KD086', 'spec s version 1\ninput {\n  pattern: str\n}\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: matches(reply, pattern)\n}\n', 'spec.kd:9:26: error: matches() takes a regex written as a string [KD086]'),
    ('KD086', 'spec s version 1\ninput {\n  pattern: str\n}\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: match_count(reply, pattern) > 1\n}\n', 'spec.kd:9:30: error: match_count() takes a regex written as a string [KD086]'),
    ('KD086', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: occurrences(reply, "") == 1\n}\n', 'spec.kd:6:30: error: occurrences() takes the text to count as a non-empty string, e.g. occurrences(completion, "<think>\\n") [KD086]'),
    ('KD086', 'spec s version 1\ninput {\n  solution: str\n}\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: math_verify(reply, solution, "strict")\n}\n', 'spec.kd:9:40: error: math_verify() takes a mode: "default" or "open-r1-length" [KD086]'),
    ('KD086', 'spec s version 1\ninput {\n  sr: vector[3]\n}\nlevel l {\n  rule r: quantile(sr, 50) > 0.1\n}\n', 'spec.kd:6:24: error: quantile() takes q as a number in 0..1 written in the spec [KD086]'),
    ('KD086', 'spec s version 1\ninput {\n  gold: boxes\n}\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: matched_boxes(reply, gold, 50) > 0\n}\n', 'spec.kd:9:38: error: matched_boxes() takes the IoU threshold as a number in (0, 1] written in the spec, e.g. 0.5 [KD086]'),
    ('KD087', 'spec s version 1\ninput {\n  sr: vector[3]\n}\nlevel l {\n  rule r: batch_max(sr) > 0\n}\n', 'spec.kd:6:21: error: batch_max() reduces one number per sample over the batch, not vector[3] [KD087]'),
    ('KD087', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: max(x) > 0\n}\n', 'spec.kd:6:15: error: max() of one argument reduces a vector or per-pixel numbers; this is float [KD087]'),
    ('KD087', 'spec s version 1\ninput {\n  scene: raster[2] bands(B04, B08) nodata 0\n}\nlevel l {\n  rule r: mean(scene) > 0.1\n}\n', 'spec.kd:6:16: error: mean() of a whole raster[2]: select a band first, e.g. `scene.B04` or `scene[0]` [KD087]'),
    ('KD087', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: mean(x) > 0.1\n}\n', 'spec.kd:6:16: error: mean() reduces a vector or per-pixel values, not float [KD087]'),
    ('KD087', 'spec s version 1\nenum Cover { Water, Land }\ntable cover(v: float) -> Cover {\n  > 0 -> Water\n  <= 0 -> Land\n}\ninput {\n  scene: raster[2] bands(B03, B08) nodata 0\n}\nlevel l {\n  rule r: mean(cover(scene.B03 - scene.B08)) > 0.1\n}\n', 'spec.kd:11:16: error: mean() needs a number, not per-pixel enum Cover; count classes with frac(... == Member) [KD087]'),
    ('KD087', 'spec s version 1\ninput {\n  scene: raster[2] bands(B04, B08) nodata 0\n}\nlevel l {\n  rule r: frac(scene.B08) > 0.5\n}\n', 'spec.kd:6:16: error: frac() gives the fraction of valid pixels where a condition holds, e.g. frac(ndvi > 0.3) [KD087]'),
    ('KD088', 'spec s version 1\ninput {\n  x: float\n  gold: box\n}\nlevel l {\n  rule r: iou(x, gold) > 0.5\n}\n', 'spec.kd:7:15: error: iou() takes two single boxes, not float [KD088]'),
    ('KD088', 'spec s version 1\ninput {\n  gold: box\n}\nlevel l {\n  rule r: box_count(gold) == 1\n}\n', 'spec.kd:6:21: error: box_count() takes lists of boxes (a `boxes` input or text read `as boxes`), not box [KD088]'),
    ('KD088', 'spec s version 1\ninput {\n  gold: box\n}\noutput {\n  reply: tag "answer"\n  boxes_found: reply as boxes\n}\nlevel l {\n  rule r: iou(boxes_found, gold) > 0.5\n}\n', 'spec.kd:10:15: error: iou() takes two single boxes, not a list of boxes [KD088]'),
    ('KD089', 'spec s version 1\noutput {\n  reply: tag "answer"\n}\nlevel l {\n  rule r: default(reply, "none") == "yes"\n}\n', 'spec.kd:6:11: error: default() takes values, not text; convert the text first [KD089]'),
    ('KD089', 'spec s version 1\ninput {\n  x: float\n  gold: box\n}\nlevel l {\n  rule r: default(x, gold) > 0\n}\n', 'spec.kd:7:11: error: default() needs two values of one type, not float and box [KD089]'),
    ('KD090', 'spec s version 1\ninput {\n  x: float\n}\ntable score(v: float) -> float {\n  < 5 -> Low\n  >= 5 -> 2\n}\nlevel l {\n  rule r: x > 1\n}\n', 'spec.kd:6:3: error: table `score` gives a float, not `Low` [KD090]'),
    ('KD090', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n}\ntable grade(v: float) -> Risk {\n  < 5 -> 0\n  >= 5 -> High\n}\nlevel l {\n  rule r: grade(x) == High\n}\n', 'spec.kd:7:3: error: table `grade` gives a Risk, not a number [KD090]'),
    ('KD091', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n  y: float\n}\ntable grade(v: float, w: float) -> Risk {\n  < 5, _ -> Low\n  >= 5 -> High\n}\nlevel l {\n  rule r: grade(x, y) == High\n}\n', 'spec.kd:9:3: error: row 2 of table `grade` has 1 cell, but the table has 2 columns (v, w) [KD091]'),
    ('KD092', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n}\ntable grade(v: float) -> Risk {\n  < 5 -> Low\n  High -> High\n}\nlevel l {\n  rule r: grade(x) == High\n}\n', 'spec.kd:8:3: error: column `v` holds numbers; `High` is not a number [KD092]'),
    ('KD092', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  r0: Risk\n}\ntable grade(v: Risk) -> Risk {\n  Low -> Low\n  Hgh -> High\n}\nlevel l {\n  rule r: grade(r0) == High\n}\n', 'spec.kd:8:3: error: `Hgh` is not one of Low, High (column `v`) (did you mean `High`?) [KD092]'),
    ('KD092', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  r0: Risk\n}\ntable grade(v: Risk) -> Risk {\n  Low -> Low\n  > 1 -> High\n}\nlevel l {\n  rule r: grade(r0) == High\n}\n', 'spec.kd:8:3: error: column `v` holds Low, High, not numbers [KD092]'),
    ('KD092', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  f: bool\n}\ntable grade(v: bool) -> Risk {\n  true -> Low\n  yes -> High\n}\nlevel l {\n  rule r: grade(f) == High\n}\n', 'spec.kd:8:3: error: column `v` is true or false [KD092]'),
    ('KD092', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  n: int\n}\ntable grade(v: int) -> Risk {\n  < 3 -> Low\n  3.5 -> High\n  >= 3 -> High\n}\nlevel l {\n  rule r: grade(n) == High\n}\n', 'spec.kd:8:3: error: column `v` holds whole numbers; 3.5 never occurs [KD092]'),
    ('KD093', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n}\ntable grade(v: float) -> Risk {\n  <= 5 -> Low\n  >= 5 -> High\n}\nlevel l {\n  rule r: grade(x) == High\n}\n', 'spec.kd:8:3: error: rows 1 and 2 of table `grade` overlap (lines 7 and 8): v = 5 matches both (Low and High); the first matching row wins, so make the rows disjoint [KD093]'),
    ('KD093', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n}\ntable grade(v: float) -> Risk {\n  < 5 -> Low\n  _ -> High\n}\nlevel l {\n  rule r: grade(x) == High\n}\n', 'spec.kd:8:3: error: rows 1 and 2 of table `grade` overlap (lines 7 and 8): v = 4 matches both (Low and High); the first matching row wins, so make the rows disjoint [KD093]'),
    ('KD094', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n}\ntable grade(v: float) -> Risk {\n  < 5 -> Low\n  3..8 -> Low\n  >= 5 -> High\n}\nlevel l {\n  rule r: grade(x) == High\n}\n', 'spec.kd:8:3: warning: rows 1 and 2 of table `grade` overlap (lines 7 and 8): v = 3 matches both; both give Low, so row 2 is redundant there [KD094]'),
    ('KD095', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n}\ntable grade(v: float) -> Risk {\n  < 5 -> Low\n  > 5 -> High\n}\nlevel l {\n  rule r: grade(x) == High\n}\n', 'spec.kd:6:1: error: table `grade` has no row for v = 5 [KD095]'),
    ('KD095', 'spec s version 1\nenum Risk { Low, High }\ninput {\n  x: float\n}\ntable grade(v: float) -> Risk {\n  1 -> Low\n  2 -> Low\n  3 -> Low\n  4 -> High\n}\nlevel l {\n  rule r: grade(x) == High\n}\n', 'spec.kd:6:1: error: table `grade` leaves 2 more uncovered regions [KD095]'),
    ('KD096', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x / 0 > 1\n}\n', 'spec.kd:6:11: error: division by zero: `x / 0` [KD096]'),
    ('KD096', 'spec s version 1\ninput {\n  n: int\n}\nlevel l {\n  rule r: n % 0 == 1\n}\n', 'spec.kd:6:11: error: division by zero: `n % 0` [KD096]'),
    ('KD097', 'spec s version 1\ninput {\n  a: float\n  b: float\n}\nlevel l {\n  rule r: a / b > 1\n}\n', 'spec.kd:7:11: warning: denominator `b` can be zero, e.g. when b = 0 [KD097]'),
    ('KD098', 'spec s version 1\ninput {\n  age: int in 0..120\n  x: float\n}\nlevel l {\n  rule r: when age > 150: x > 0\n}\n', 'spec.kd:7:3: warning: rule `r` never applies: `age > 150` never holds (age is a whole number in 0..120) [KD098]'),
    ('KD098', 'spec s version 1\ninput {\n  x: float\n  y: float\n}\nlevel l {\n  rule r: when x > 5 and x < 3: y > 0\n}\n', 'spec.kd:7:3: warning: rule `r` never applies: `x > 5` and `x < 3` cannot both hold [KD098]'),
    ('KD099', 'spec s version 1\ninput {\n  age: int in 0..120\n}\nlevel l {\n  rule r: age > 150\n}\n', 'spec.kd:6:3: error: rule `r` can never be satisfied: `age > 150` never holds (age is a whole number in 0..120) [KD099]'),
    ('KD099', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x > 5 and x < 3\n}\n', 'spec.kd:6:3: error: rule `r` can never be satisfied: `x > 5` and `x < 3` cannot both hold [KD099]'),
    ('KD099', 'spec s version 1\ninput {\n  x: float\n  y: float\n}\nlevel l {\n  rule r: when x > 5: x < 3 and y > 0\n}\n', 'spec.kd:7:3: error: rule `r` can never be satisfied when it applies: `x > 5` and `x < 3` cannot both hold [KD099]'),
    ('KD099', 'spec s version 1\ninput {\n  x: float\n}\nlevel l {\n  rule r: x in {1, 2} and x in {3, 4} soft 0.5\n}\n', 'spec.kd:6:3: warning: rule `r` can never be satisfied: `x in {1, 2}` and `x in {3, 4}` cannot both hold [KD099]'),
    ('KD100', 'spec s version 1\ninput {\n  age: int in 0..120\n}\nlevel l {\n  rule r: age >= 0\n}\n', 'spec.kd:6:3: warning: rule `r` always holds (whenever its values are present): `age >= 0` (age is a whole number in 0..120) [KD100]'),
    ('KD101', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician > 0.5\n}\n', 'spec.kd:11:11: error: `clinician` is a judge, not a value: call it, `clinician("criterion", text, ...)` [KD101]'),
    ('KD101', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician(think)\n}\n', 'spec.kd:11:21: error: a judge grades a criterion written as a string first: `clinician("the criterion", text, ..., choices = "no" | "partly" | "yes")` [KD101]'),
    ('KD101', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician("Cites the note.")\n}\n', 'spec.kd:11:11: error: `clinician` is shown no text to grade: give the parts of the completion (and `str` inputs) after the criterion, `clinician("the criterion", text, ..., choices = "no" | "partly" | "yes")` [KD101]'),
    ('KD101', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician("Cites the note.", think, scale = "no" | "yes")\n}\n', 'spec.kd:11:47: error: a judge takes one setting, `choices`, not `scale` [KD101]'),
    ('KD101', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: preference(think, choices = "no" | "yes") > 0\n}\n', 'spec.kd:11:29: error: a reward model takes no settings: `preference(text)` or `preference(prompt, text)` [KD101]'),
    ('KD101', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: preference(note, think, think) > 0\n}\n', 'spec.kd:11:11: error: a reward model scores one text or a pair: `preference(text)` or `preference(prompt, text)` [KD101]'),
    ('KD102', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician("Cites the note.", think, choices = 3)\n}\n', 'spec.kd:11:57: error: a judge\'s choices are strings from worst to best, e.g. `choices = "no" | "partly" | "yes"` [KD102]'),
    ('KD102', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician("Cites the note.", think, choices = "yes")\n}\n', 'spec.kd:11:57: error: a judge needs at least two choices to grade with [KD102]'),
    ('KD102', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician("Cites the note.", think, choices = "no" | " ")\n}\n', "spec.kd:11:57: error: a judge's choice cannot be empty [KD102]"),
    ('KD102', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician("Cites the note.", think, choices = "no" | "partly" | "No")\n}\n', 'spec.kd:11:57: error: the choice "No" is listed twice [KD102]'),
    ('KD103', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician("Cites the note.", think, choices = "no" | "partly" | "yes") >= "mostly"\n}\n', 'spec.kd:11:85: error: "mostly" is not a choice of this `clinician` item; its choices are "no", "partly", "yes" [KD103]'),
    ('KD103', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician("Cites the note.", think, choices = "no" | "partly" | "yes") >= 2\n}\n', 'spec.kd:11:85: error: a `clinician` grade is a number from 0 ("no") to 1 ("yes"), never 2: compare it with a number in 0..1 or a choice ("no", "partly", "yes") [KD103]'),
    ('KD085', 'spec s version 1\njudge clinician\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: clinician("Cites the note.", 3)\n}\n', 'spec.kd:11:40: error: `clinician` is shown text from the completion or a `str` input column, not int [KD085]'),
    ("KD104", 'spec s version 1\njudge clinician\noutput {\n  think: tag "think"\n}\nlet cites = clinician("Names the CURB-65 criteria.", think)\nlevel l {\n  rule r: cites\n}\nexample "e" {\n  completion: "<think>CURB-65</think>"\n  expect judge.cite == "yes"\n}\n',
     "spec.kd:12:10: error: `judge.cite` expects a judge's grade, but `cite` is not a let holding a rubric item (did you mean `cites`?) [KD104]"),
    ("KD103", 'spec s version 1\njudge clinician\noutput {\n  think: tag "think"\n}\nlet cites = clinician("Names the CURB-65 criteria.", think)\nlevel l {\n  rule r: cites\n}\nexample "e" {\n  completion: "<think>CURB-65</think>"\n  expect judge.cites == "partly"\n}\n',
     'spec.kd:12:10: error: "partly" is not a choice of `cites`; its choices are "no", "yes" [KD103]'),
    ("KD032", {"spec.kd": 'spec s version 1\nimport "lib.kd" as lib\njudge lib\ninput {\n  x: float\n}\nlevel l {\n  rule r: lib.half(x) > 0\n}\n',
               "lib.kd": 'spec lib version 1\ndef half(v) = v / 2\n'},
     "spec.kd:3:1: error: `lib` is already the name of an import [KD032]"),
    ('KD032', 'spec s version 1\njudge think\nreward_model preference\ninput {\n  note: str\n}\noutput {\n  think: tag "think"\n}\nlevel l {\n  rule r: present(think)\n}\n', 'spec.kd:2:1: error: `think` is also defined at line 8 [KD032]'),
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


def test_an_error_is_reported_once_not_again_where_the_broken_thing_is_used():
    from kdsl.compiler import check_source

    spec = ('spec s version 1\nenum R { Low, High }\ninput {\n  v: float\n}\n'
            'table t(v: float) -> R {\n  < 1 -> Lo\n  >= 1 -> High\n}\n'
            'def per_litre(x: mmol) = x\n'
            'level l {\n  rule r: t(v) == High\n  rule q: v > nothere\n  rule u: per_litre(v) > 1\n}\n'
            'example "e" {\n  v: 1\n  expect q\n}\n')
    codes = [d.code for d in check_source(spec, "spec.kd").diagnostics]
    # the bad table row, the unknown unit of the def, the unknown name: and nothing at the
    # table's call, the def's call or the example that names the broken rule
    assert sorted(codes) == ["KD034", "KD065", "KD066"]


def test_a_def_with_an_unknown_unit_is_an_error_even_when_nothing_calls_it():
    from kdsl.compiler import check_source

    result = check_source("spec s version 1\ndef f(a): mmol_per_l = a\n", "spec.kd")
    assert [d.render().splitlines()[0] for d in result.errors] == [
        "spec.kd:2:1: error: unknown unit `mmol_per_l` for the result of `f` [KD034]"]
