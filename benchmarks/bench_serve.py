"""`kdsl serve` under load: requests/s, completions/s and latency at 1, 8 and 64 concurrent clients,
and what the server adds per request over an in-process `program.score` of the same batch.

The server is a `kdsl serve` subprocess on 127.0.0.1 (the land-cover example spec); the clients
are threads of this process, each on its own keep-alive connection, sending batches of real
example completions (`examples/landsat_completions.jsonl`, repeated to the batch size). Every
answer is checked against the in-process scores before anything is timed, and every request of
the timed runs must come back 200 with as many results as rows sent.

    python benchmarks/bench_serve.py [--batch 16] [--requests 400] [--clients 1 8 64]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from timing import median_time, results_path

import kdsl

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "landsat_landcover.kd"
ROWS = [json.loads(line) for line in (ROOT / "examples" / "landsat_completions.jsonl").read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, dict]:
    connection.request("POST", "/score", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def run_clients(port: int, clients: int, per_client: int, body: bytes, rows: int) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start_together = threading.Barrier(clients + 1)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        mine, bad = [], []
        start_together.wait()
        for _ in range(per_client):
            t0 = time.perf_counter()
            status, answer = post(connection, body)
            mine.append(time.perf_counter() - t0)
            if status != 200 or len(answer.get("results", ())) != rows:
                bad.append(f"{status}: {str(answer)[:200]}")
        connection.close()
        with lock:
            latencies.extend(mine)
            failures.extend(bad)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start_together.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    requests = clients * per_client
    ordered = sorted(latencies)
    return {"clients": clients, "requests": requests, "answered": len(latencies),
            "errors": len(failures), "first_error": failures[0] if failures else None,
            "seconds": round(wall, 3), "requests_per_second": round(requests / wall, 1),
            "completions_per_second": round(requests * rows / wall, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16, help="rows per request")
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()

    rows = [ROWS[i % len(ROWS)] for i in range(args.batch)]
    body = json.dumps({"rows": rows}).encode()
    program = kdsl.load(SPEC)
    columns = {"label": [r["label"] for r in rows], "sr": [r["sr"] for r in rows]}
    completions = [r["completion"] for r in rows]
    expected = program.score(completions, **columns).reward.tolist()

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kdsl.cli", "serve", str(SPEC), "--port", str(port)],
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                status, answer = post(connection, body)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("kdsl serve did not start") from None
                time.sleep(0.2)
        got = [r["reward"] for r in answer["results"]]
        assert status == 200 and all(abs(a - b) < 1e-6 for a, b in zip(got, expected)), (got, expected)

        # In-process: the same batch through program.score, and through one keep-alive request.
        in_process = median_time(lambda: program.score(completions, **columns), repeats=200)
        one_request = median_time(lambda: post(connection, body), repeats=200)
        connection.close()
        levels = [run_clients(port, c, max(1, args.requests // c), body, args.batch) for c in args.clients]
    finally:
        server.terminate()
        server.wait(timeout=60)

    result = {"spec": "examples/landsat_landcover.kd", "batch": args.batch, "threads": os.cpu_count(),
              "in_process_score_ms": round(1000 * in_process, 3),
              "one_request_p50_ms": round(1000 * one_request, 3),
              "server_adds_ms_p50": round(1000 * (one_request - in_process), 3),
              "levels": levels}
    print(f"batch of {args.batch}: in-process score {result['in_process_score_ms']} ms, one request "
          f"{result['one_request_p50_ms']} ms (median): the server adds {result['server_adds_ms_p50']} ms")
    print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>8} {'compl/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for level in levels:
        print(f"{level['clients']:>7} {level['requests']:>8} {level['errors']:>6} "
              f"{level['requests_per_second']:>8} {level['completions_per_second']:>9} "
              f"{level['p50_ms']:>7} {level['p99_ms']:>7}")
    results_path("bench_serve").write_text(json.dumps(result, indent=2) + "\n")
    if any(level["errors"] or level["answered"] != level["requests"] for level in levels):
        raise SystemExit("some requests failed or were lost")


if __name__ == "__main__":
    main()
