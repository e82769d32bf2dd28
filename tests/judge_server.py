"""A small OpenAI-compatible chat server on 127.0.0.1 (starlette, run by uvicorn in a thread), for
the judge client's failure paths: what it answers, how slowly and how often it fails is set per
test. It answers from the last user message, as a judge would read it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Behaviour:
    answer: object = "yes"  # a string, or a function of the user message's text
    fail_first: int = 0  # answer the first N requests with HTTP 503
    status: int = 503
    delay: float = 0.0  # seconds before answering
    logprobs: dict | None = None  # token -> log-probability, sent as the first token's alternatives
    requests: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    seen: list = field(default_factory=list)


def _app(behaviour: Behaviour):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    lock = threading.Lock()

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "test-judge", "object": "model"}]})

    async def chat(request):
        body = await request.json()
        with lock:
            behaviour.requests += 1
            number = behaviour.requests
            behaviour.in_flight += 1
            behaviour.most_in_flight = max(behaviour.most_in_flight, behaviour.in_flight)
            behaviour.seen.append(body)
        try:
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
            if number <= behaviour.fail_first:
                return JSONResponse({"error": "busy"}, status_code=behaviour.status)
            text = body["messages"][-1]["content"]
            answer = behaviour.answer(text) if callable(behaviour.answer) else behaviour.answer
            choice = {"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": answer}}
            if body.get("logprobs") and behaviour.logprobs is not None:
                choice["logprobs"] = {"content": [{"token": answer[:1], "logprob": 0.0, "top_logprobs": [
                    {"token": t, "logprob": v} for t, v in behaviour.logprobs.items()]}]}
            return JSONResponse({"id": str(number), "object": "chat.completion", "model": body["model"],
                                 "choices": [choice]})
        finally:
            with lock:
                behaviour.in_flight -= 1

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat,
                                                                  methods=["POST"])])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(behaviour: Behaviour):
    """The server's base URL (``http://127.0.0.1:PORT/v1``) while the block runs."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app(behaviour), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):  # it starts in a fraction of a second; the loop only bounds a broken start
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
