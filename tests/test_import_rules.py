"""Where imports may come from (docs/security.md): beside the importing spec inside its folder
tree, a --spec-path / KDSL_PATH folder, or kdsl's library; only bounded `.kd` text files; and no
file outside those places is ever read or quoted in a message."""

import os
from pathlib import Path

import pytest

import kdsl
from kdsl.cli import main
from kdsl.compiler import check_file
from kdsl.errors import KdslError
from kdsl.limits import MAX_SPEC_BYTES

HELPER = "spec helper version 1\ndef twice(x) = 2 * x\n"


def importing(path: str) -> str:
    return (f'spec main version 1\nimport "{path}" as h\ninput {{\n  v: float\n}}\n'
            "level l {\n  rule r: h.twice(v) > 1\n}\n")


def errors_of(tmp_path: Path, import_path: str) -> list[str]:
    main_spec = tmp_path / "project" / "main.kd"
    main_spec.parent.mkdir(exist_ok=True)
    main_spec.write_text(importing(import_path))
    result = check_file(main_spec)
    assert result.errors, "the import should have been refused"
    first = result.errors[0]
    assert (first.span.line, first.span.column) == (2, 1)
    return [d.render() for d in result.errors]


SECRET = "root:x:0:0:SECRET-LINE"


@pytest.fixture
def outside(tmp_path):
    """A file outside the project that no import may read: a secret and a `.kd` twin of it."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    (tmp_path / "secret.kd").write_text(SECRET + "\n")
    return secret


@pytest.mark.parametrize("path, reason", [
    ("../secret.kd", "leaves the folders imports may come from"),
    ("../../../../../../../../etc/passwd", "leaves the folders imports may come from"),
    ("sub/../../secret.kd", "leaves the folders imports may come from"),
    ("/etc/passwd", "never absolute"),
    ("/proc/self/environ", "never absolute"),
    ("~/secret.kd", "never absolute"),
    ("C:/secret.kd", "never absolute"),
    ("..\\\\secret.kd", "written with `/` and printable characters only"),
    ("a\\x00b.kd", "written with `/` and printable characters only"),
    ("a\\nb.kd", "written with `/` and printable characters only"),
    ("x" * 5000, "an import path has 1 to 1024 characters"),
    ("y" * 300 + ".kd", "a part of an import path has at most 255 characters"),
    ("", "an import path has 1 to 1024 characters"),
])
def test_imports_that_are_refused(tmp_path, outside, path, reason):
    messages = errors_of(tmp_path, path)
    assert reason in messages[0]
    assert "SECRET" not in "\n".join(messages)


def test_a_symlink_out_of_the_tree_is_refused(tmp_path, outside):
    project = tmp_path / "project"
    project.mkdir()
    (project / "link.kd").symlink_to(tmp_path / "secret.kd")
    messages = errors_of(tmp_path, "link.kd")
    assert "leaves the folders imports may come from" in messages[0]
    assert "SECRET" not in "\n".join(messages)


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b"spec x version 1\n\xff\xfe\x00binary"), "is not UTF-8 text"),
    (lambda p: p.write_bytes(b"#" * (MAX_SPEC_BYTES + 1)), "a spec file has at most 1,048,576"),
])
def test_kd_files_that_are_not_specs_are_not_read(tmp_path, make, reason):
    project = tmp_path / "project"
    project.mkdir()
    make(project / "bad.kd")
    messages = errors_of(tmp_path, "bad.kd")
    assert 'cannot import "bad.kd"' in messages[0] and reason in messages[0]
    assert "binary" not in "\n".join(messages)


def test_a_folder_named_like_a_spec_is_not_found(tmp_path):
    (tmp_path / "project" / "dir.kd").mkdir(parents=True)
    assert 'cannot find the spec "dir.kd"' in errors_of(tmp_path, "dir.kd")[0]


def test_only_kd_files_are_imported(tmp_path, outside):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text(SECRET)
    messages = errors_of(tmp_path, "notes.txt")
    assert 'cannot find the spec "notes.txt"' in messages[0]  # looked for notes.txt.kd only
    assert "SECRET" not in "\n".join(messages)


def test_imports_inside_the_tree_and_from_the_library(tmp_path):
    project = tmp_path / "project"
    (project / "lib").mkdir(parents=True)
    (project / "lib" / "helper.kd").write_text(HELPER)
    (project / "main.kd").write_text(importing("lib/../lib/helper"))
    assert kdsl.load(project / "main.kd").score([""], v=[1.0]).rules["r"].tolist() == [1.0]
    # a library spec imports another library spec by name (landcover imports landcover_key)
    assert kdsl.load(Path(kdsl.__file__).parent.parent / "domain_specs" / "remote_sensing" /
                     "landcover.kd").name == "landcover"


def test_spec_path_and_KDSL_PATH_add_folders(tmp_path, monkeypatch, capsys):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "helper.kd").write_text(HELPER)
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.kd").write_text(importing("helper"))
    with pytest.raises(KdslError, match='cannot find the spec "helper"'):
        kdsl.load(project / "main.kd")
    assert kdsl.load(project / "main.kd", spec_path=[shared]).name == "main"
    monkeypatch.setenv("KDSL_PATH", os.pathsep.join(["/nonexistent", str(shared)]))
    assert kdsl.load(project / "main.kd").name == "main"
    monkeypatch.delenv("KDSL_PATH")
    assert main(["check", str(project / "main.kd"), "--spec-path", str(shared)]) == 0
    assert main(["check", str(project / "main.kd")]) == 1
    assert main(["check", str(project / "main.kd"), "--spec-path", str(tmp_path / "none")]) == 2
    assert "--spec-path" in capsys.readouterr().err
    # a spec found in a search folder may not climb out of it either
    (shared / "climber.kd").write_text('spec c version 1\nimport "../project/main.kd" as m\n')
    (project / "uses.kd").write_text('spec u version 1\nimport "climber" as c\n'
                                     "level l {\n  rule r: true\n}\n")
    result = check_file(project / "uses.kd", spec_path=[shared])
    assert any("leaves the folders imports may come from" in d.message for d in result.errors)


@pytest.mark.parametrize("target, reason", [
    (lambda tmp: tmp, "is a folder, not a spec file"),
    (lambda tmp: Path("/dev/null"), "is not a regular file, not a spec file"),
    (lambda tmp: Path("/bin/ls"), "is not UTF-8 text"),
])
def test_loading_what_is_not_a_spec_is_a_clean_error(tmp_path, target, reason):
    with pytest.raises(KdslError) as caught:
        kdsl.load(target(tmp_path))
    assert reason in caught.value.message


def test_loading_impossible_names_is_a_clean_error(tmp_path):
    for name in ("a\x00b.kd", "x" * 5000 + ".kd"):
        with pytest.raises(KdslError) as caught:
            kdsl.load(tmp_path / name)
        assert "cannot read" in caught.value.message
