"""The GPU claims, checked in one run: device tests, host syncs, fullgraph compiles, the raster and
text benchmarks on the device, kdsl's share of a GRPO step, and a short `kdsl train`.

    bash benchmarks/gpu_check.sh              # a fresh virtual environment, the install, then this
    python benchmarks/gpu_check.py [--device cuda] [--budget 480]

Every step runs in its own process with a time limit, so one that hangs or fails still leaves the
others' results. Writes benchmarks/results/gpu_check.json (each check: passed or not, seconds, the
figures) and prints a table. ``--device cpu`` runs the same steps on the CPU (the CUDA-only checks
then report themselves skipped), to try the script where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run(command: list[str], limit: float, env: dict | None = None) -> dict:
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                              env={**os.environ, **(env or {})})
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or "") + (err.stderr or "") if isinstance(err.stdout, str) else ""
        output += f"\nstopped after {limit:.0f} s"
        code = None
    return {"passed": code == 0, "seconds": round(time.perf_counter() - started, 1),
            "tail": output[-2000:]}


def read(name: str, device: str) -> dict:
    kind = device.split(":")[0]
    path = RESULTS / (f"{name}.json" if kind == "cpu" else f"{name}.{kind}.json")
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget", type=float, default=480, help="seconds for all the steps")
    args = parser.parse_args()
    python = sys.executable
    started = time.perf_counter()
    environment = {"python": sys.version.split()[0]}
    probe = subprocess.run([python, "-c", "import torch; print(torch.__version__, "
                            "torch.cuda.is_available(), torch.cuda.get_device_name(0) "
                            "if torch.cuda.is_available() else '-')"],
                           capture_output=True, text=True)
    environment["torch, cuda, gpu"] = probe.stdout.strip()
    if args.device.startswith("cuda") and " True " not in f" {probe.stdout} ":
        print(f"no CUDA device here ({probe.stdout.strip() or probe.stderr.strip()}); "
              "run with --device cpu to try the script")
        sys.exit(2)

    checks: dict[str, dict] = {}
    device_env = {"KDSL_TEST_DEVICE": args.device}
    # 1-3: device tests, host syncs and fullgraph compiles of every shipped spec (tests/test_device.py)
    checks["device tests (values, host syncs, fullgraph)"] = step = run(
        [python, "-m", "pytest", "tests/test_device.py", "-m", "device", "-o", "addopts=", "-q",
         "-rs", "-p", "no:cacheprovider"], 0.5 * args.budget, device_env)
    summary = re.findall(r"(\d+) (passed|failed|skipped|error)", step["tail"])
    step["figures"] = {kind: int(count) for count, kind in summary}
    # 4: the benchmarks on the device
    step = checks["bench_raster.py"] = run([python, "benchmarks/bench_raster.py", "--device",
                                            args.device], 0.12 * args.budget)
    raster = read("bench_raster", args.device)
    if raster:
        step["figures"] = {"compiled GB/s (bands read)": raster["bandwidth_gb_s"]["kdsl_compiled_bands_read"],
                           "eager GB/s (bands read)": raster["bandwidth_gb_s"]["kdsl_tensor_phase_bands_read"],
                           "plain copy GB/s (read + write)": raster["bandwidth_gb_s"]["tensor_copy_read_plus_write"],
                           "compiled vs numpy loop": raster["speedup_compiled_vs_numpy_loop"]}
    step = checks["bench_text.py"] = run([python, "benchmarks/bench_text.py", "--device", args.device,
                                          "--repeats", "3", "--skip-trl-style"], 0.12 * args.budget)
    text = read("bench_text", args.device)
    if text:
        step["figures"] = {"kdsl s": text["seconds"]["kdsl"],
                           "tensor phase s": text["seconds"]["kdsl_tensor_phase"],
                           "text phase s": text["seconds"]["kdsl_columns_and_text_phase"]}
    step = checks["bench_train_share.py"] = run(
        [python, "benchmarks/bench_train_share.py", "--device", args.device, "--steps", "10",
         "--repeats", "3"], 0.12 * args.budget)
    share = read("bench_train_share", args.device)
    if share:
        step["figures"] = {"kdsl ms a step": share["tiny_run"]["kdsl_ms_per_step"],
                           "step ms": share["tiny_run"]["step_ms"],
                           "share": share["tiny_run"]["share"],
                           "7B-sized batch, kdsl ms": share["seven_b_batch"]["kdsl_ms"]}
    # 5: a short training run of the bundled example on the device
    with tempfile.TemporaryDirectory() as out:
        step = checks["kdsl train (20 steps)"] = run(
            [python, "-m", "kdsl.cli", "train", "examples/landsat_landcover.kd", "--max-steps", "20",
             "--no-eval", "--output-dir", out], 0.12 * args.budget)
        config = Path(out) / "kdsl_run" / "config.json"
        if config.exists():
            on_cpu = json.loads(config.read_text()).get("use_cpu")
            step["figures"] = {"trained on": "cpu" if on_cpu else args.device}
            if not args.device.startswith("cpu") and on_cpu:
                step["passed"] = False

    results = {"device": args.device, "environment": environment,
               "seconds": round(time.perf_counter() - started, 1), "checks": checks,
               "all_passed": all(c["passed"] for c in checks.values())}
    RESULTS.mkdir(exist_ok=True)
    kind = args.device.split(":")[0]
    (RESULTS / f"gpu_check.{kind}.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| check | result | seconds | figures |\n|---|---|---:|---|")
    for name, check in checks.items():
        figures = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in check.get("figures", {}).items())
        print(f"| {name} | {'passed' if check['passed'] else 'FAILED'} | {check['seconds']} | "
              f"{figures} |")
    print(f"\n{environment['torch, cuda, gpu']}; {results['seconds']} s in all")
    for name, check in checks.items():
        if not check["passed"]:
            print(f"\n--- {name} ---\n{check['tail']}")
    sys.exit(0 if results["all_passed"] else 1)


if __name__ == "__main__":
    main()
