"""Raster rules: masked NDVI mean and fraction over multi-band patches with a nodata border.

1,024 generated patches (seeded) of 13 x 64 x 64 float32 reflectances, with a 4-pixel nodata
border (0) and a few NaNs, scored by kdsl and by a numpy loop over patches computing the same
masked mean and fraction. Both must agree before anything is timed. A plain tensor copy of the
same input, measured in the same run, shows what the memory system allows.

    python benchmarks/bench_raster.py [--n 1024] [--size 64] [--repeats 11]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from timing import interleaved_medians, results_path

import kdsl
from kdsl.runtime import execute

BANDS = "B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12"
SPEC = f"""
spec bench_raster version 1
input {{
  pixels: raster[13] bands({BANDS}) nodata 0
}}
let ndvi = mean((pixels.B08 - pixels.B04) / (pixels.B08 + pixels.B04))
let green = frac((pixels.B08 - pixels.B04) / (pixels.B08 + pixels.B04) > 0.3)
level knowledge {{
  rule vegetated: ndvi > 0.2 and green > 0.5
}}
"""
RED, NIR = 3, 7


def make_patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    patches = rng.uniform(0.0, 0.6, size=(n, 13, size, size)).astype(np.float32)
    patches[:, :, :4, :] = 0
    patches[:, :, -4:, :] = 0
    patches[:, :, :, :4] = 0
    patches[:, :, :, -4:] = 0
    holes = rng.integers(0, n, size=n // 8)
    patches[holes, NIR, size // 2, size // 2] = np.nan
    return patches


def numpy_loop(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    means, fractions = np.zeros(len(patches)), np.zeros(len(patches))
    for i, patch in enumerate(patches):
        nir, red = patch[NIR], patch[RED]
        valid = (nir != 0) & (red != 0) & np.isfinite(nir) & np.isfinite(red)
        total = nir + red
        valid &= total != 0
        nd = (nir[valid] - red[valid]) / total[valid]
        means[i] = nd.mean() if nd.size else np.nan
        fractions[i] = (nd > 0.3).mean() if nd.size else np.nan
    return means, fractions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    args = parser.parse_args()
    torch.set_num_threads(2)

    patches = make_patches(args.n, args.size)
    tensor = torch.from_numpy(patches).to(args.device)
    program = kdsl.loads(SPEC, "bench_raster.kd")
    blanks = [""] * args.n

    scores = program.score(blanks, pixels=tensor)
    means, fractions = numpy_loop(patches)
    assert np.allclose(scores.values["ndvi"].cpu().numpy(), means, rtol=1e-4, atol=1e-6)
    assert np.allclose(scores.values["green"].cpu().numpy(), fractions, rtol=1e-4, atol=1e-6)

    module = program.module
    ref = torch.zeros(args.n, device=args.device)
    env = execute.prepare_columns(module, {"pixels": tensor}, args.n, ref, execute.col.Interner())

    rows = execute.rows_per_part(module, env, args.n)
    timed = {"numpy": lambda: numpy_loop(patches),
             "kdsl": lambda: program.score(blanks, pixels=tensor),
             "whole": lambda: module.evaluate(**env),
             "copy": lambda: tensor.clone()}
    if rows is not None:
        timed["parts"] = lambda: execute.in_parts(module.evaluate, env, args.n, rows)
    t_compile = None
    if not args.no_compile:
        compiled = kdsl.loads(SPEC, "bench_raster.kd").compile(dynamic=False)
        start = time.perf_counter()
        fused = compiled.score(blanks, pixels=tensor)
        t_compile = time.perf_counter() - start
        assert np.allclose(fused.values["ndvi"].cpu().numpy(), means, rtol=1e-4, atol=1e-6)
        timed["compiled"] = lambda: compiled.score(blanks, pixels=tensor)
    # Every scorer is warmed up before any is timed (the first seconds of a process are slower
    # on this machine, whichever scorer runs in them), then they are timed in rounds.
    for _ in range(3):
        for fn in timed.values():
            fn()
    t = interleaved_medians(timed, args.repeats)
    t_numpy, t_kdsl, t_tensor, t_copy = t["numpy"], t["kdsl"], t["whole"], t["copy"]
    t_parts, t_compiled = t.get("parts"), t.get("compiled")

    # Bytes the rules must read: the two bands they use (the copy reads and writes everything).
    used = 2 * args.n * args.size * args.size * 4
    whole = tensor.numel() * 4
    results = {
        "patches": args.n, "shape": [13, args.size, args.size], "device": args.device,
        "rows_per_part": rows,
        "seconds": {"numpy_loop": t_numpy, "kdsl": t_kdsl, "kdsl_tensor_phase": t_tensor,
                    "kdsl_tensor_phase_in_parts": t_parts,
                    "kdsl_compiled": t_compiled, "kdsl_compile_once": t_compile,
                    "tensor_copy": t_copy},
        "speedup_vs_numpy_loop": t_numpy / t_kdsl,
        "speedup_tensor_phase_whole_batch_vs_numpy_loop": t_numpy / t_tensor,
        "speedup_compiled_vs_numpy_loop": None if t_compiled is None else t_numpy / t_compiled,
        "bandwidth_gb_s": {"kdsl_tensor_phase_bands_read": used / t_tensor / 1e9,
                           "kdsl_compiled_bands_read": None if t_compiled is None else used / t_compiled / 1e9,
                           "tensor_copy_read_plus_write": 2 * whole / t_copy / 1e9},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    print(f"{args.n} patches of 13x{args.size}x{args.size} float32 ({whole / 1e6:.0f} MB), nodata border")
    print(f"{'scorer':<34}{'seconds':>10}{'patches/s':>14}{'kdsl speed-up':>16}")
    table = [("numpy loop over patches", t_numpy), ("kdsl (end to end)", t_kdsl),
             ("kdsl tensor phase, whole batch", t_tensor)]
    if t_parts is not None:
        table.append((f"kdsl tensor phase, {rows} rows a part", t_parts))
    if t_compiled is not None:
        table.append(("kdsl compiled (end to end)", t_compiled))
    for name, t in table:
        print(f"{name:<34}{t:>10.4f}{args.n / t:>14,.0f}{t_numpy / t:>15.1f}x")
    if t_compiled is not None:
        print(f"  compiled: {used / t_compiled / 1e9:.1f} GB/s of the two bands read; "
              f"compiling took {t_compile:.1f} s once")
    print(f"bandwidth: kdsl tensor phase {results['bandwidth_gb_s']['kdsl_tensor_phase_bands_read']:.1f} GB/s "
          f"of the two bands read; plain copy {results['bandwidth_gb_s']['tensor_copy_read_plus_write']:.1f} "
          f"GB/s read + write ({t_copy:.4f} s)")
    out = results_path("bench_raster", args.device)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
