"""What a user gets from an install: the grammar and spec library inside the wheel, a `kdsl
check` that stays light, and imports from the bundled library by name."""

import subprocess
import sys
import zipfile
from pathlib import Path

import kdsl
from kdsl.compiler import check_source

ROOT = Path(__file__).resolve().parents[1]


def test_check_does_not_import_torch():
    code = ("import sys; from kdsl.cli import main; "
            f"rc = main(['check', {str(ROOT / 'examples' / 'landsat_landcover.kd')!r}]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_wheel_ships_grammar_and_library(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("kdsl-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "kdsl/_data/grammars/kdsl.lark" in names
    assert "kdsl/_data/domain_specs/common/formats.kd" in names
    assert "kdsl/_data/docs/errors.md" in names  # what `kdsl check --explain` prints
    assert "kdsl/runtime/ops.py" in names
    assert "kdsl/integrations/verifiers.py" in names
    assert not any("reference" in name for name in names)  # the test oracle stays in tests/
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert f"kdsl/example/tiny_landcover/{name}" in names


def test_import_from_the_library_by_name():
    program = kdsl.loads("""
spec t version 1
import "common/formats" as formats
input {
  words: float
}
level l {
  rule short_enough: formats.within(words, 10, 50, 10)
}
""")
    scores = program.score(["", "", ""], words=[30.0, 55.0, 100.0])
    assert scores.rules["short_enough"].tolist() == [1.0, 0.5, 0.0]


def test_relative_import_beside_the_spec(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "ratios.kd").write_text(
        "spec ratios version 1\ndef nd(a, b) = (a - b) / (a + b)\n")
    main = tmp_path / "main.kd"
    main.write_text('spec main version 1\nimport "lib/ratios.kd" as r\ninput {\n  a: float\n'
                    '  b: float\n}\nlevel l {\n  rule positive: r.nd(a, b) > 0\n}\n')
    scores = kdsl.load(main).score(["", ""], a=[3.0, 1.0], b=[1.0, 3.0])
    assert scores.rules["positive"].tolist() == [1.0, 0.0]


def test_import_cycle_is_reported(tmp_path):
    (tmp_path / "a.kd").write_text('spec a version 1\nimport "b.kd" as b\n')
    (tmp_path / "b.kd").write_text('spec b version 1\nimport "a.kd" as a\n')
    result = check_source((tmp_path / "a.kd").read_text(), str(tmp_path / "a.kd"))
    assert any("import cycle: a.kd -> b.kd -> a.kd" in d.message for d in result.errors)


def test_imported_enums_are_types_and_their_members_can_be_named(tmp_path):
    (tmp_path / "key.kd").write_text(
        'spec key version 1\nenum Cover { Water ("lake"), Forest }\n'
        "table cover(ndwi: float) -> Cover {\n  > 0 -> Water\n  <= 0 -> Forest\n}\n")
    main = tmp_path / "main.kd"
    main.write_text(
        'spec main version 1\nimport "key.kd" as key\n'
        "input {\n  label: key.Cover\n  ndwi: float\n}\n"
        'output {\n  answer: tag "answer" as key.Cover\n}\n'
        "let fallback = if ndwi > 0.5 then key.Cover.Water else key.Cover.Forest\n"
        "level l {\n  rule right: answer == label\n  rule as_the_key_says: answer == key.cover(ndwi)\n"
        "  rule lake_is_water: label == Water or fallback == Forest\n}\n")
    program = kdsl.load(main)
    scores = program.score(["<answer>lake</answer>", "<answer>forest</answer>"],
                           label=["Water", "water"], ndwi=[0.7, 0.2])
    assert scores.rules["right"].tolist() == [1.0, 0.0]
    assert scores.rules["as_the_key_says"].tolist() == [1.0, 0.0]
    assert scores.rules["lake_is_water"].tolist() == [1.0, 1.0]
    # A local enum of the same name is another type: comparing the two is an error.
    main.write_text('spec main version 1\nimport "key.kd" as key\nenum Cover { Water, Forest }\n'
                    'output {\n  answer: tag "answer" as Cover\n}\ninput {\n  ndwi: float\n}\n'
                    "level l {\n  rule r: answer == key.cover(ndwi)\n}\n")
    result = check_source(main.read_text(), str(main))
    assert [d.message for d in result.errors] == ["cannot compare enum Cover with enum key.Cover"]
