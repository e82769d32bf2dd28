"""Messages that finish the job: where a brace was left open, what to write for a look-alike
character, which import was meant, one error for a missing import, data errors without a fake file."""

import pytest

import kdsl
from kdsl.compiler import check_source
from kdsl.errors import KdslDataError, KdslError
from kdsl.frontend.parser import parse
from kdsl.io.resources import library_dir


def syntax_error(text: str):
    with pytest.raises(KdslError) as caught:
        parse(text, "spec.kd")
    (diagnostic,) = caught.value.diagnostics
    return diagnostic


def test_a_block_left_open_is_reported_at_its_brace():
    d = syntax_error("spec s version 1\ninput { x: float }\nlevel main {\n  rule a: x > 0\n\n"
                     "level other {\n  rule b: x < 1\n}\n")
    assert (d.span.line, d.span.column) == (3, 12)
    assert d.message == "this `{` is not closed (`level` at 6:1 comes before its `}`)"


def test_a_block_open_at_the_end_of_the_file_is_reported_at_its_brace():
    d = syntax_error("spec s version 1\ninput { x: float }\nlevel main {\n  rule a: x > 0\n")
    assert (d.span.line, d.span.column) == (3, 12)
    assert d.message == "this `{` is not closed (the file ends before its `}`)"


def test_a_stray_token_inside_a_closed_block_is_still_an_unexpected_token():
    d = syntax_error("spec s version 1\nlevel main {\n  rule a: 1 < 2\n  rules b: 1 < 2\n}\n")
    assert d.span.line == 4
    assert d.message.startswith("unexpected `b`") or d.message.startswith("unexpected `rules`")


@pytest.mark.parametrize("char, write", [("≥", ">="), ("≤", "<="), ("≠", "!="), ("×", "*"),
                                         ("−", "-"), ("÷", "/")])
def test_look_alike_operators_say_what_to_write(char, write):
    d = syntax_error(f"spec s version 1\ninput {{ x: float }}\nlevel l {{\n  rule a: x {char} 1\n}}\n")
    assert (d.span.line, d.span.column) == (4, 13)
    assert d.message.endswith(f"is not kdsl syntax; write `{write}`")
    assert d.message.startswith(f"`{char}` (")


def test_curly_quotes_say_to_write_straight_ones():
    d = syntax_error('spec s version 1\noutput { a: tag “answer” }\n')
    assert d.message == '`“` (curly quote) is not kdsl syntax; write `"`'


MISSING_IMPORT = """spec imp version 1
import "spectral/indicez.kd" as idx

input { sr: vector[7] bands(B1, B2, B3, B4, B5, B6, B7)
  cover: idx.Cover }

let wet = idx.ndwi(sr.B3, sr.B5)

level main {
  rule a: idx.ndvi(sr.B5, sr.B4) > 0.3 and wet > 0
  rule b: idx.Cover.Water == cover
}
"""


def test_a_missing_import_is_one_error_with_the_closest_library_spec():
    result = check_source(MISSING_IMPORT, "imp.kd")
    assert [d.message for d in result.errors] == [
        'cannot find the spec "spectral/indicez.kd" (did you mean "spectral/indices.kd"?); looked '
        "beside imp.kd, in --spec-path and KDSL_PATH folders and in kdsl's domain_specs library"]
    assert result.errors[0].span.line == 2


def test_an_import_suggestion_keeps_the_way_the_path_was_written(tmp_path):
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "ratios.kd").write_text("spec ratios version 1\n", encoding="utf-8")
    spec = tmp_path / "main.kd"
    spec.write_text('spec main version 1\nimport "helpers/ratio" as r\n', encoding="utf-8")
    from kdsl.compiler import check_file

    (error,) = check_file(spec).errors
    assert '(did you mean "helpers/ratios"?)' in error.message


def test_a_name_unrelated_to_a_failed_import_is_still_reported():
    text = MISSING_IMPORT.rstrip().removesuffix("}") + "  rule c: dry > 0\n}\n"
    messages = [d.message for d in check_source(text, "imp.kd").errors]
    assert len(messages) == 2 and messages[1].startswith("unknown name `dry`")


def test_data_errors_from_python_name_no_file():
    program = kdsl.loads("spec s version 1\ninput { x: float }\nlevel l { rule r: x > 0 }\n")
    with pytest.raises(KdslDataError) as caught:
        program.score(["a"], x=["fast"])
    assert str(caught.value) == "error: row 0, column `x`: expected a number, got 'fast'"


def test_a_misspelled_member_names_the_enum_and_its_members():
    text = ('spec s version 1\ninput { label: enum Cover { Forest, Water } }\noutput { a: tag "a" as Cover }\n'
            'level l {\n  rule r: a == Forrest\n  rule s: label == Cover.Watr\n}\n')
    errors = check_source(text, "s.kd").errors
    assert [(d.span.line, d.message) for d in errors] == [
        (5, "`Forrest` is not a member of enum Cover (did you mean `Forest`?); its members are Forest, Water"),
        (6, "`Watr` is not a member of enum Cover (did you mean `Water`?); its members are Forest, Water")]


LIBRARY_CALL = """spec lib version 1
import "spectral/indices.kd" as idx

input { sr: vector[7] bands(B1, B2, B3, B4, B5, B6, B7) }

level main {
  rule a: RULE
}
"""


def test_a_warning_inside_a_library_def_is_reported_where_the_spec_calls_it():
    text = LIBRARY_CALL.replace("RULE", "idx.NDVI(N = sr.B5, R = sr.B4) > 0.3")
    (warning,) = check_source(text, "lib.kd").warnings
    assert warning.message == "denominator `sr.B5 + sr.B4` can be zero, e.g. when sr.B5 = 0, sr.B4 = 0"
    assert (warning.span.file, warning.span.line, warning.span.column) == ("lib.kd", 7, 11)
    assert warning.notes[0].startswith("the division is in the imported def, at ")
    library = (library_dir() / "spectral" / "indices.kd").read_text(encoding="utf-8").splitlines()
    line = next(i for i, text in enumerate(library, 1) if text.startswith("def NDVI("))
    assert warning.notes[0].endswith(f"indices.kd:{line}:18")


def test_a_guard_at_the_call_site_silences_the_library_warning():
    text = LIBRARY_CALL.replace("RULE", "when sr.B5 + sr.B4 > 0: idx.NDVI(N = sr.B5, R = sr.B4) > 0.3")
    assert check_source(text, "lib.kd").warnings == []
