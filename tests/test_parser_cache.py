"""The analysed grammar is cached in a private folder, and a bad or foreign cache is never used."""

import os
import stat
import subprocess
import sys

from kdsl import parser
from kdsl.resources import grammar_path

SPEC = "spec cached version 1\n\ninput {\n  x: float\n}\n\nlevel main {\n  rule positive: x > 0\n}\n"


def grammar() -> str:
    return grammar_path().read_text(encoding="utf-8")


def test_a_cached_parser_parses_as_a_fresh_one(tmp_path):
    cache = tmp_path / "grammar.cache"
    fresh = parser.build_lark(grammar(), None).parse(SPEC)
    first = parser.build_lark(grammar(), str(cache)).parse(SPEC)
    assert cache.stat().st_size > 0
    written = cache.stat().st_mtime_ns
    loaded = parser.build_lark(grammar(), str(cache)).parse(SPEC)
    assert cache.stat().st_mtime_ns == written  # read, not rebuilt
    assert fresh == first == loaded


def test_a_corrupt_cache_is_rebuilt(tmp_path):
    cache = tmp_path / "grammar.cache"
    cache.write_bytes(b"not a cache\n\x80\x04garbage")
    tree = parser.build_lark(grammar(), str(cache)).parse(SPEC)
    assert tree == parser.build_lark(grammar(), None).parse(SPEC)
    assert not cache.read_bytes().startswith(b"not a cache")


def test_a_changed_grammar_gets_its_own_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSL_CACHE_DIR", str(tmp_path))
    one = parser._cache_file(grammar())
    other = parser._cache_file(grammar() + "\n// changed\n")
    assert one != other
    assert os.path.dirname(one) == os.path.dirname(other) == str(tmp_path)


def test_the_cache_folder_is_created_private(tmp_path, monkeypatch):
    folder = tmp_path / "new" / "kdsl"
    monkeypatch.setenv("KDSL_CACHE_DIR", str(folder))
    assert parser.cache_folder() == folder
    if hasattr(os, "getuid"):
        assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0


def test_an_empty_cache_dir_turns_the_cache_off(monkeypatch):
    monkeypatch.setenv("KDSL_CACHE_DIR", "")
    assert parser.cache_folder() is None
    assert parser._cache_file(grammar()) is None


def test_a_folder_others_can_write_is_not_used(tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    monkeypatch.setenv("KDSL_CACHE_DIR", str(folder))
    assert parser.cache_folder() is None
    folder.chmod(0o700)
    assert parser.cache_folder() == folder
    planted = folder / os.path.basename(parser._cache_file(grammar()))
    planted.write_bytes(b"")
    planted.chmod(0o666)
    assert parser._cache_file(grammar()) is None


def test_kdsl_check_writes_and_then_reads_the_cache(tmp_path):
    env = dict(os.environ, KDSL_CACHE_DIR=str(tmp_path / "cache"))
    spec = tmp_path / "cached.kd"
    spec.write_text(SPEC, encoding="utf-8")
    command = [sys.executable, "-m", "kdsl.cli", "check", str(spec)]
    for _ in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "ok" in done.stdout
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].name.startswith("grammar-")
