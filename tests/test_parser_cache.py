"""The analysed grammar is cached in a private folder, and a bad or foreign cache is never used."""

import os
import stat
import subprocess
import sys

from kdsl.frontend import parser
from kdsl.io.resources import grammar_path

SPEC = "spec cached version 1\n\ninput {\n  x: float\n}\n\nlevel main {\n  rule positive: x > 0\n}\n"


def grammar() -> str:
    return grammar_path().read_text(encoding="utf-8")


def test_a_cached_parser_parses_as_a_fresh_one(tmp_path):
    cache = tmp_path / "grammar.cache"
    fresh = parser.build_lark(grammar(), None).parse(SPEC, start="start")
    first = parser.build_lark(grammar(), str(cache)).parse(SPEC, start="start")
    assert cache.stat().st_size > 0
    written = cache.stat().st_mtime_ns
    loaded = parser.build_lark(grammar(), str(cache)).parse(SPEC, start="start")
    assert cache.stat().st_mtime_ns == written  # read, not rebuilt
    assert fresh == first == loaded


def test_a_corrupt_cache_is_rebuilt(tmp_path):
    cache = tmp_path / "grammar.cache"
    cache.write_bytes(b"not a cache\n\x80\x04garbage")
    tree = parser.build_lark(grammar(), str(cache)).parse(SPEC, start="start")
    assert tree == parser.build_lark(grammar(), None).parse(SPEC, start="start")
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


UNCLOSED_BRACKET = "spec x version 1\nlet a = min(1,\n  2\nlet b = 3\n"
UNCLOSED_BRACE = "spec x version 1\nlevel l {\n  rule r: 1 < 2\nlevel m {\n  rule q: 1 < 2\n}\n"


def syntax_error(text: str) -> str:
    try:
        parser.parse(text)
    except parser.KdslSyntaxError as err:
        return str(err).splitlines()[0]
    raise AssertionError("no syntax error")


def test_what_the_post_lexer_remembers_is_the_parsing_threads_own():
    # The parser (and its post-lexer) is built once per process; the brackets it remembers to word
    # a syntax error must not be those of a text another thread parses at the same time.
    import threading

    from lark import Token

    postlex = parser._lark().options.postlex
    in_this_thread = postlex.process(iter([Token("LPAR", "(", 0, 1, 1), Token("NAME", "a", 1, 1, 2)]))
    next(in_this_thread)  # this thread has one `(` open
    seen = []
    other = threading.Thread(target=lambda: seen.append(syntax_error(UNCLOSED_BRACE)))
    other.start()
    other.join()
    assert seen == ["<string>:2:9: error: this `{` is not closed (`level` at 4:1 comes before its `}`) [KD002]"]
    assert [token.type for token in postlex.open] == ["LPAR"] and postlex.blocks == []


def test_threads_parsing_at_once_each_get_their_own_syntax_error():
    from concurrent.futures import ThreadPoolExecutor

    expected = {UNCLOSED_BRACKET: syntax_error(UNCLOSED_BRACKET), UNCLOSED_BRACE: syntax_error(UNCLOSED_BRACE)}
    assert "the `(` at 2:12 is not closed" in expected[UNCLOSED_BRACKET]
    texts = [UNCLOSED_BRACKET, UNCLOSED_BRACE] * 200
    with ThreadPoolExecutor(4) as pool:
        messages = list(pool.map(syntax_error, texts))
    assert messages == [expected[t] for t in texts]
