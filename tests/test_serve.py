"""`kdsl serve` on a real uvicorn server on 127.0.0.1, called with real HTTP clients: the scores
are the in-process ones, concurrent requests are batched, and bad requests get the 4xx that
names what is wrong."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

import kdsl
from kdsl.errors import KdslError
from kdsl.integrations.serve import ServeOptions, check_bind, create_app

ROOT = Path(__file__).resolve().parents[1]
SPEC = str(ROOT / "examples" / "landsat_landcover.kd")
ROWS = [json.loads(line) for line in
        (ROOT / "examples" / "landsat_completions.jsonl").read_text().splitlines()]
PROGRAM = kdsl.load(SPEC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(condition, what: str, limit_s: float = 60.0) -> None:
    """Poll for a state the test needs before it goes on (not a timing assertion: the limit
    only stops a test that would otherwise hang)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


@contextmanager
def running(**options):
    port = free_port()
    app = create_app(PROGRAM, ServeOptions(spec=SPEC, port=port, **options))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_until(lambda: server.started or not thread.is_alive(), "the server to start")
    assert server.started
    try:
        yield port, app
    finally:
        server.should_exit = True
        thread.join()


def call(port: int, path: str, body=None, *, token: str | None = None, raw: bytes | None = None,
         method: str = "POST", headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    connection.request(method, path, body=data, headers=sent)
    response = connection.getresponse()
    status, payload = response.status, json.loads(response.read() or b"null")
    connection.close()
    return status, payload


def in_process(rows: list[dict]) -> list[dict]:
    scores = PROGRAM.score([r["completion"] for r in rows], label=[r["label"] for r in rows],
                           sr=[r["sr"] for r in rows])
    out = []
    for i in range(len(rows)):
        out.append({"reward": float(scores.reward[i]),
                    "levels": {name: float(v[i]) for name, v in scores.levels.items()},
                    "rules": {name: float(v[i]) if bool(scores.applies[name][i]) else None
                              for name, v in scores.rules.items()}})
    return out


def close(a: list[dict], b: list[dict]) -> bool:
    def numbers(results):
        return [(r["reward"], *r["levels"].values(), *(v if v is not None else -1.0 for v in r["rules"].values()))
                for r in results]
    return all(abs(x - y) < 1e-6 for ra, rb in zip(numbers(a), numbers(b)) for x, y in zip(ra, rb)) \
        and len(a) == len(b) and [list(r["rules"]) for r in a] == [list(r["rules"]) for r in b] \
        and [[v is None for v in r["rules"].values()] for r in a] == [[v is None for v in r["rules"].values()] for r in b]


def test_score_gives_the_in_process_scores():
    with running() as (port, _):
        assert call(port, "/health", method="GET") == (200, {"status": "ok"})
        status, body = call(port, "/score", {"rows": ROWS})
    assert status == 200 and body["spec"] == PROGRAM.name
    assert close(body["results"], in_process(ROWS))
    assert any(v is None for r in body["results"] for v in r["rules"].values())  # `when` rules


def test_openrlhf_shape():
    prompts = [f"Pixel {i}: classify it.\n" for i in range(len(ROWS))]
    labels = [{"label": r["label"], "sr": r["sr"]} for r in ROWS]
    labels[1] = json.dumps(labels[1])  # OpenRLHF passes a label column as text
    request = {"query": [p + r["completion"] for p, r in zip(prompts, ROWS)], "prompts": prompts,
               "labels": labels}
    with running() as (port, _):
        status, body = call(port, "/get_reward", request)
    assert status == 200
    expected = in_process(ROWS)
    assert body["rewards"] == pytest.approx([r["reward"] for r in expected], abs=1e-6)
    assert body["scores"] == body["rewards"]
    for name in PROGRAM.level_names:
        assert body["extra_logs"][f"level.{name}"] == pytest.approx(
            [r["levels"][name] for r in expected], abs=1e-6)


def test_a_label_that_is_not_an_object_fills_the_label_input():
    program = kdsl.loads('spec one version 1\ninput {\n  answer_key: str\n}\noutput {\n'
                         '  reply: tag "answer"\n}\nlevel l {\n  rule right: reply == answer_key\n}\n')
    port = free_port()
    app = create_app(program, ServeOptions(spec="", port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_until(lambda: server.started or not thread.is_alive(), "the server to start")
    try:
        status, body = call(port, "/get_reward", {"query": ["Q: <answer>4</answer>", "Q: <answer>5</answer>"],
                                                  "prompts": ["Q: ", "Q: "], "labels": ["4", "4"]})
    finally:
        server.should_exit = True
        thread.join()
    assert status == 200 and body["rewards"] == [1.0, 0.0]


def test_a_token_is_required_and_compared():
    with running(token_file=_token_file("s3cret")) as (port, _):
        assert call(port, "/score", {"rows": ROWS[:1]})[0] == 401
        status, body = call(port, "/score", {"rows": ROWS[:1]}, token="wrong")
        assert status == 401 and body == {"error": "missing or wrong bearer token"}
        assert call(port, "/score", {"rows": ROWS[:1]}, token="s3cret")[0] == 200
        assert call(port, "/health", method="GET")[0] == 200  # a probe needs no token


def _token_file(token: str) -> str:
    import tempfile

    handle = tempfile.NamedTemporaryFile("w", suffix=".token", delete=False)
    handle.write(token + "\n")
    handle.close()
    return handle.name


def test_bad_requests_name_what_is_wrong():
    with running(max_body_bytes=50_000, max_batch=8) as (port, _):
        status, body = call(port, "/score", raw=b"{not json")
        assert status == 400 and body["error"].startswith("the body is not JSON")
        assert call(port, "/score", {"completions": []}) == (
            400, {"error": "expected a JSON object with `rows`, a list of row objects"})
        status, body = call(port, "/score", {"rows": [ROWS[0], {"label": "Urban", "sr": ROWS[0]["sr"]}]})
        assert status == 400 and body["error"] == ("row 1, field `completion`: missing; every row "
                                                   "needs a completion")
        wrong = {**ROWS[0], "label": "Glacier"}
        status, body = call(port, "/score", {"rows": [ROWS[0], ROWS[1], wrong]})
        assert status == 422
        assert body["problems"][0]["row"] == 2 and body["problems"][0]["field"] == "label"
        assert "Glacier" in body["problems"][0]["message"] and "row 2, field `label`" in body["error"]
        status, body = call(port, "/score", {"rows": ROWS * 2})
        assert status == 413 and "at most 8" in body["error"]
        status, body = call(port, "/score", raw=b" " * 60_000)
        assert status == 413 and "50,000 bytes" in body["error"]
        status, body = call(port, "/get_reward", {"query": ["a", "b"], "prompts": ["a"]})
        assert status == 400 and "`prompts`" in body["error"]
        status, body = call(port, "/get_reward", {"query": ["a"], "labels": ["Urban"]})
        assert status == 400 and "--label-input" in body["error"]
        status, body = call(port, "/score", {"rows": []})
        assert status == 200 and body["results"] == []


def test_concurrent_requests_are_scored_in_one_program_call():
    with running() as (port, app):
        scorer = app.state.scorer
        release = threading.Event()
        scorer._executor.submit(release.wait)  # hold the scoring thread while requests arrive
        with ThreadPoolExecutor(16) as clients:
            futures = [clients.submit(call, port, "/score", {"rows": [ROWS[i % len(ROWS)]]})
                       for i in range(16)]
            try:  # the first batch waits on the held thread, every later request in the queue
                _wait_until(lambda: scorer.requests == 16, "16 requests to arrive")
            finally:
                release.set()
            answers = [f.result() for f in futures]
    assert [status for status, _ in answers] == [200] * 16
    for i, (_, body) in enumerate(answers):
        assert close(body["results"], in_process([ROWS[i % len(ROWS)]]))
    assert scorer.batches == 2


def test_a_request_that_waits_too_long_gets_503():
    with running(timeout_s=0.2) as (port, app):
        release = threading.Event()
        app.state.scorer._executor.submit(release.wait)
        try:
            status, body = call(port, "/score", {"rows": ROWS[:1]})
        finally:
            release.set()
        assert status == 503 and body == {"error": "scoring took longer than 0.2 s"}
        assert call(port, "/score", {"rows": ROWS[:1]})[0] == 200  # the server goes on


def test_bounded_load_loses_nothing():
    """8 clients x 24 requests at once: good batches of 1 to 64 rows, malformed bodies, wrong
    tokens and bad rows; every request gets its own answer."""
    token = "load-token"
    expected = in_process(ROWS)

    def client(k: int) -> list[bool]:
        ok = []
        for j in range(24):
            kind = (k + j) % 4
            if kind == 0:
                n = 1 + (k * 24 + j) % 64
                rows = [ROWS[i % len(ROWS)] for i in range(n)]
                status, body = call(port, "/score", {"rows": rows}, token=token)
                ok.append(status == 200 and close(body["results"], [expected[i % len(ROWS)] for i in range(n)]))
            elif kind == 1:
                ok.append(call(port, "/score", raw=b'{"rows": [', token=token)[0] == 400)
            elif kind == 2:
                ok.append(call(port, "/score", {"rows": ROWS}, token="nope")[0] == 401)
            else:
                status, body = call(port, "/score", {"rows": [{**ROWS[0], "sr": [1, 2]}]}, token=token)
                ok.append(status == 422 and body["problems"][0]["field"] == "sr")
        return ok

    with running(token_file=_token_file(token)) as (port, _):
        with ThreadPoolExecutor(8) as clients:
            results = [r for f in [clients.submit(client, k) for k in range(8)] for r in f.result()]
    assert len(results) == 8 * 24 and all(results)


def test_binding_beyond_loopback_needs_a_token():
    with pytest.raises(KdslError, match="refusing to listen on 0.0.0.0 without a token"):
        check_bind(ServeOptions(spec=SPEC, host="0.0.0.0"))
    check_bind(ServeOptions(spec=SPEC, host="0.0.0.0", token_file="t"))
    check_bind(ServeOptions(spec=SPEC, host="::1"))
    with pytest.raises(KdslError, match="--max-batch must be at least 1"):
        check_bind(ServeOptions(spec=SPEC, max_batch=0))


def test_the_command_serves_until_stopped(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "kdsl.cli", "serve", SPEC, "--port", str(port)],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def up() -> bool:
            assert process.poll() is None, process.stderr.read()
            try:
                return call(port, "/health", method="GET")[0] == 200
            except OSError:
                return False

        _wait_until(up, "kdsl serve to answer", limit_s=120)
        status, body = call(port, "/score", {"rows": ROWS[:2]})
        assert status == 200 and close(body["results"], in_process(ROWS[:2]))
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert "POST /score" in process.stderr.read()
