"""``kdsl serve``: a spec as a reward server, for engines that call rewards over HTTP.

One compiled program behind a Starlette app on uvicorn. Requests that arrive while a batch is
being scored wait in a queue and are scored together in one program call (up to ``max_batch``
rows), in one scoring thread, so the event loop keeps accepting requests meanwhile.

Endpoints:

- ``POST /score``, kdsl's shape: ``{"rows": [{"completion": ..., INPUT: value, ...}, ...]}`` ->
  ``{"results": [{"reward": r, "levels": {...}, "rules": {NAME: truth or null}}, ...]}``
  (``null``: the rule does not apply to that row).
- ``POST /get_reward``, OpenRLHF's remote reward shape: ``{"query": [...], "prompts": [...],
  "labels": [...]}`` -> ``{"rewards": [...], "scores": [...], "extra_logs": {...}}``. The
  completion is the query with its prompt cut off the front; a label is either an object of input
  values or one value for ``label_input``.
- ``GET /health``: ``{"status": "ok"}``, without a token.

Failures are 4xx JSON bodies ``{"error": ...}`` that name the field and row at fault: 400 for a
body that is not the shape above, 401 for a missing or wrong token, 413 for a body or batch over
the limits, 422 for rows whose values do not fit the spec (``problems`` lists them), 503 when
scoring takes longer than the request timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from kdsl.errors import KdslError, printable

SHOWN_PROBLEMS = 20


@dataclass
class ServeOptions:
    spec: str
    host: str = "127.0.0.1"
    port: int = 8000
    token_file: str | None = None  # read at start-up, so the token is in no argument list
    max_batch: int = 4096  # rows in one request, and in one program call
    max_body_bytes: int = 16 * 2**20
    timeout_s: float = 60.0  # a request's wait for its scores, queueing included
    label_input: str | None = None  # the input an OpenRLHF label that is not an object fills
    workers: int = 1


class RequestError(Exception):
    def __init__(self, status: int, message: str, problems: list | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise KdslError(f"--token-file {printable(path)}: cannot read it ({err})") from None
    if not token:
        raise KdslError(f"--token-file {printable(path)} is empty")
    return token


def check_bind(options: ServeOptions) -> None:
    """Loopback by default; anywhere else only behind a token."""
    if not is_loopback(options.host) and options.token_file is None:
        raise KdslError(f"kdsl serve: refusing to listen on {printable(options.host)} without a "
                        "token: any host that reaches it could use it; give --token-file F, or "
                        "listen on 127.0.0.1")
    for name in ("max_batch", "max_body_bytes", "workers"):
        if getattr(options, name) < 1:
            raise KdslError(f"kdsl serve: --{name.replace('_', '-')} must be at least 1")
    if not options.timeout_s > 0:
        raise KdslError("kdsl serve: --timeout must be above 0 seconds")


class BatchScorer:
    """Scores the rows of concurrent requests together, one program call at a time."""

    def __init__(self, program, max_batch: int):
        self.program = program
        self.max_batch = max_batch
        self.levels = program.level_names
        self.rules = program.rule_names
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        # One thread: the program is not called from two threads at once.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdsl-score")
        self.requests = 0  # requests received
        self.batches = 0  # program calls made

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def score(self, texts: list[str], columns: dict[str, list]) -> tuple:
        future = asyncio.get_running_loop().create_future()
        self.requests += 1
        await self._queue.put((texts, columns, future))
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self._queue.get()]
            rows = len(pending[0][0])
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if rows + len(nxt[0]) > self.max_batch:
                    await self._score_batch(loop, pending)
                    pending, rows = [], 0
                pending.append(nxt)
                rows += len(nxt[0])
            await self._score_batch(loop, pending)

    async def _score_batch(self, loop, pending: list) -> None:
        pending = [p for p in pending if not p[2].cancelled()]  # timed out while queued
        if not pending:
            return
        texts: list[str] = []
        columns: dict[str, list] = {name: [] for name in self.program.input_names}
        for part_texts, part_columns, _ in pending:
            texts += part_texts
            for name in columns:
                columns[name] += part_columns.get(name) or [None] * len(part_texts)
        try:
            values, applies, problems = await loop.run_in_executor(
                self._executor, self._evaluate, texts, columns)
        except Exception as err:  # noqa: BLE001 - a failed batch fails its requests, not the server
            for _, _, future in pending:
                if not future.done():
                    future.set_exception(err)
            return
        self.batches += 1
        start = 0
        for part_texts, _, future in pending:
            end = start + len(part_texts)
            mine = {i - start: p for i, p in problems.items() if start <= i < end}
            if not future.done():
                future.set_result((values[start:end], applies[start:end], mine))
            start = end

    def _evaluate(self, texts, columns):
        from kdsl.tools.scoring import evaluate_rows

        problems: dict = {}
        values, applies = evaluate_rows(self.program, texts, columns, problems)
        return values, applies, problems


def _completion_text(value, row: int) -> str:
    from kdsl.runtime.execute import completion_texts

    if isinstance(value, str):
        return value
    if value is None:
        raise RequestError(400, f"row {row}, field `completion`: missing; every row needs a completion")
    try:
        return completion_texts([value])[0]
    except (KdslError, AttributeError, TypeError):
        raise RequestError(400, f"row {row}, field `completion`: expected a string or a list of "
                           "chat messages") from None


def kdsl_rows(body, inputs: Sequence[str]) -> tuple[list[str], dict[str, list]]:
    """Texts and columns of a ``/score`` body."""
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        raise RequestError(400, "expected a JSON object with `rows`, a list of row objects")
    texts: list[str] = []
    columns: dict[str, list] = {name: [] for name in inputs}
    for i, row in enumerate(body["rows"]):
        if not isinstance(row, dict):
            raise RequestError(400, f"row {i}: expected an object with `completion` and the "
                               "spec's inputs")
        texts.append(_completion_text(row.get("completion"), i))
        for name in inputs:
            columns[name].append(row.get(name))
    return texts, columns


def openrlhf_rows(body, inputs: Sequence[str], label_input: str | None) -> tuple[list[str], dict[str, list]]:
    """Texts and columns of an OpenRLHF ``/get_reward`` body."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), list):
        raise RequestError(400, "expected a JSON object with `query`, a list of strings "
                           "(prompt and response), and optionally `prompts` and `labels`")
    queries = body["query"]
    n = len(queries)
    prompts = body.get("prompts")
    labels = body.get("labels")
    for name, value in (("prompts", prompts), ("labels", labels)):
        if value is not None and (not isinstance(value, list) or len(value) != n):
            raise RequestError(400, f"field `{name}`: expected a list as long as `query` ({n})")
    texts: list[str] = []
    columns: dict[str, list] = {name: [None] * n for name in inputs}
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise RequestError(400, f"row {i}, field `query`: expected a string")
        prompt = prompts[i] if prompts is not None else None
        if prompt is not None and not isinstance(prompt, str):
            raise RequestError(400, f"row {i}, field `prompts`: expected a string")
        # OpenRLHF sends the prompt and the response as one text; the reward reads the response.
        texts.append(query[len(prompt):] if prompt and query.startswith(prompt) else query)
        if labels is None or labels[i] is None:
            continue
        label = labels[i]
        if isinstance(label, str) and label.lstrip().startswith("{"):
            try:  # OpenRLHF passes a dataset's label column as text; objects arrive as JSON
                label = json.loads(label)
            except ValueError:
                pass
        if isinstance(label, dict):
            for name, value in label.items():
                if name in columns:
                    columns[name][i] = value
        elif label_input is None:
            raise RequestError(400, f"row {i}, field `labels`: a label that is not an object "
                               "needs `kdsl serve --label-input NAME` (the input it fills)")
        else:
            columns[label_input][i] = label
    return texts, columns


def create_app(program, options: ServeOptions):
    """The Starlette app serving ``program``."""
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    if options.label_input is not None and options.label_input not in program.input_names:
        raise KdslError(f"kdsl serve: --label-input `{printable(options.label_input)}` is not an "
                        f"input of {program.name} (inputs: {', '.join(program.input_names)})")
    label_input = options.label_input
    if label_input is None and len(program.input_names) == 1:
        label_input = program.input_names[0]
    scorer = BatchScorer(program, options.max_batch)
    token = read_token(options.token_file) if options.token_file is not None else None
    expected = f"Bearer {token}".encode() if token is not None else None

    def fail(status: int, message: str, problems: list | None = None) -> JSONResponse:
        body = {"error": message}
        if problems:
            body["problems"] = problems
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(body, status_code=status, headers=headers)

    async def read_body(request) -> object:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):  # constant time: no timing oracle
                raise RequestError(401, "missing or wrong bearer token")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > options.max_body_bytes):
            raise RequestError(413, f"the body is over {options.max_body_bytes:,} bytes")
        data = bytearray()
        async for part in request.stream():  # bounded even when no length is declared
            data += part
            if len(data) > options.max_body_bytes:
                raise RequestError(413, f"the body is over {options.max_body_bytes:,} bytes")
        try:
            return json.loads(data)
        except ValueError as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
            raise RequestError(400, f"the body is not JSON ({reason})") from None

    async def scored(texts: list[str], columns: dict[str, list]):
        if len(texts) > options.max_batch:
            raise RequestError(413, f"{len(texts)} rows; a request holds at most "
                               f"{options.max_batch} (kdsl serve --max-batch)")
        if not texts:
            return None
        try:
            values, applies, problems = await asyncio.wait_for(scorer.score(texts, columns),
                                                               options.timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(503, f"scoring took longer than {options.timeout_s:g} s") from None
        if problems:
            listed = [{"row": i, "field": field, "message": message}
                      for i in sorted(problems) for field, message in problems[i]][:SHOWN_PROBLEMS]
            first = listed[0]
            where = f"row {first['row']}" + (f", field `{first['field']}`" if first["field"] else "")
            raise RequestError(422, f"{len(problems)} rows do not fit {program.name}; first: "
                               f"{where}: {first['message']}", listed)
        return values, applies

    def results(values, applies) -> list[dict]:
        levels, rules = scorer.levels, scorer.rules
        out = []
        for row, applied in zip(values.tolist(), applies.tolist()):
            out.append({"reward": row[0],
                        "levels": dict(zip(levels, row[1:1 + len(levels)])),
                        "rules": {name: (v if a else None)
                                  for name, v, a in zip(rules, row[1 + len(levels):], applied)}})
        return out

    def kdsl_answer(found) -> dict:
        return {"spec": program.name, "results": [] if found is None else results(*found)}

    def openrlhf_answer(found) -> dict:
        if found is None:
            return {"rewards": [], "scores": [], "extra_logs": {}}
        values, _ = found
        rewards = values[:, 0].tolist()
        logs = {f"level.{name}": values[:, 1 + k].tolist() for k, name in enumerate(scorer.levels)}
        return {"rewards": rewards, "scores": rewards, "extra_logs": logs}

    async def respond(request, parse, answer) -> JSONResponse:
        try:
            texts, columns = parse(await read_body(request))
            found = await scored(texts, columns)
        except RequestError as err:
            return fail(err.status, str(err), err.problems)
        except ClientDisconnect:
            return fail(400, "the client closed the connection before sending the whole body")
        return JSONResponse(answer(found))

    async def score(request):
        return await respond(request, lambda body: kdsl_rows(body, program.input_names), kdsl_answer)

    async def get_reward(request):
        return await respond(request, lambda body: openrlhf_rows(body, program.input_names, label_input),
                             openrlhf_answer)

    async def health(request):
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/score", score, methods=["POST"]),
                            Route("/get_reward", get_reward, methods=["POST"]),
                            Route("/health", health, methods=["GET"])],
                    lifespan=_lifespan_context(scorer))
    app.state.scorer = scorer
    return app


def _lifespan_context(scorer: BatchScorer):
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        scorer.start()
        try:
            yield
        finally:
            await scorer.stop()

    return lifespan


_CONFIG_VARIABLE = "KDSL_SERVE_OPTIONS"


def app_from_environment():
    """The app of each uvicorn worker process when ``--workers`` > 1 (options in the environment)."""
    import kdsl

    options = ServeOptions(**json.loads(os.environ[_CONFIG_VARIABLE]))
    return create_app(kdsl.load(options.spec), options)


def serve(options: ServeOptions) -> None:
    """Run the server until interrupted."""
    import uvicorn

    import kdsl

    check_bind(options)
    program = kdsl.load(options.spec)  # a spec with errors fails here, before binding
    if options.workers > 1:
        os.environ[_CONFIG_VARIABLE] = json.dumps(asdict(options))
        uvicorn.run("kdsl.integrations.serve:app_from_environment", factory=True, host=options.host,
                    port=options.port, workers=options.workers, log_level="warning")
        return
    uvicorn.run(create_app(program, options), host=options.host, port=options.port,
                log_level="warning")
