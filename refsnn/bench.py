"""``refsnn bench``: speed ratios against plain-NumPy baselines, measured side by side.

Each benchmark builds its inputs once, then times the baseline and the refsnn implementation
alternately in the same process (interleaved repeats, best of N for each), and reports
``baseline_seconds / refsnn_seconds``: a ratio, so it means the same on a loaded machine as on an
idle one, and no test ever asserts a wall time. Cold start (a fresh interpreter importing refsnn and
calling every kernel once with an empty Numba cache) and warm start (the same with the cache
populated) are measured in subprocesses.

A benchmark is a function ``bench_xxx() -> dict`` returning at least ``{"key": ratio}``; register
it in BENCHES as ``(key, "module:function", description)``.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable

from refsnn.io import atomic_write_json

# (result key, "module:function", what it measures)
BENCHES: list[tuple[str, str, str]] = [
    ("lif_fwd_bwd_speedup_vs_numpy", "refsnn.kernels.lif:bench_lif",
     "multi-step LIF forward+backward, T=8, 2M neurons, float32, vs a vectorised NumPy loop over T"),
    ("conv_fwd_bwd_speedup_vs_numpy", "refsnn.kernels.conv:bench_conv", "conv2d forward+backward [64,64,16,16] 3x3 64 filters float32 vs NumPy sliding-window im2col + matmul"),
    ("rsnn_packed_speedup_vs_dense", "refsnn.ec.bench:bench_rsnn_packed",
     "EC RSNN env step (33 substeps, N=256, 64 members, own connectivity): bit-packed Numba vs NumPy float32 batched matmul"),
    ("ec_policy_overhead", "refsnn.ec.bench:bench_policy_overhead",
     "seconds in the RSNN policy / seconds in env.step during one Hopper-v5 EC generation (lower is better, target <= 0.25)"),
    ("bie_speedup_vs_train_epoch", "refsnn.nas.fitness:bench_bie_speedup", "one STBP training epoch of a 3-cell MSE-NAS genotype on mnist5k (measured on 4 steps, scaled to 63) / scoring it with the BIE fitness (target >= 50)"),
    ("stbp_step_speedup_vs_numpy", "refsnn.snn.bench:bench_stbp_step", "one STBP training step of csnn (T=4, batch 32, AdamW) vs the same network in straightforward NumPy"),
]


def time_side_by_side(baseline: Callable[[], object], candidate: Callable[[], object], *,
                      repeats: int = 5, min_seconds: float = 0.05) -> tuple[float, float]:
    """Best-of-``repeats`` seconds per call of ``baseline`` and ``candidate``, interleaved.

    Both are called once first (warm-up: JIT compilation, page faults). Each timing sample runs a
    function ``n`` times, with ``n`` chosen so a sample lasts at least ``min_seconds``.
    """
    baseline()
    candidate()

    def calls_for(fn):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        return max(1, int(min_seconds / max(dt, 1e-9)))

    nb, nc = calls_for(baseline), calls_for(candidate)
    best_b = best_c = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(nb):
            baseline()
        best_b = min(best_b, (time.perf_counter() - t0) / nb)
        t0 = time.perf_counter()
        for _ in range(nc):
            candidate()
        best_c = min(best_c, (time.perf_counter() - t0) / nc)
    return best_b, best_c


_STARTUP_SNIPPET = "import time; t=time.perf_counter(); import refsnn.kernels.warmup as w; w.warmup(); print(time.perf_counter()-t)"


def startup_seconds(*, cold: bool) -> float:
    """Seconds for a fresh interpreter to import refsnn's kernels and call each once.

    ``cold=True`` points ``NUMBA_CACHE_DIR`` at an empty temporary directory (so every kernel is
    compiled); ``cold=False`` uses a cache directory populated by a previous cold run.
    """
    env = dict(os.environ)
    cache = tempfile.mkdtemp(prefix="refsnn-numba-cache-")
    env["NUMBA_CACHE_DIR"] = cache
    try:
        def run() -> float:
            out = subprocess.run([sys.executable, "-c", _STARTUP_SNIPPET], env=env, check=True,
                                 capture_output=True, text=True)
            return float(out.stdout.strip().splitlines()[-1])
        first = run()
        return first if cold else run()
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def add_arguments(p) -> None:
    p.add_argument("--json", metavar="FILE", help="also write a flat JSON object name -> number")
    p.add_argument("--only", metavar="KEY", action="append",
                   help="run only this benchmark key (repeatable)")
    p.add_argument("--no-startup", action="store_true", help="skip the cold/warm start-up timing")


def run(args) -> int:
    results: dict[str, float] = {}
    rows = []
    selected = [b for b in BENCHES if not args.only or b[0] in args.only]
    if args.only:
        unknown = set(args.only) - {b[0] for b in BENCHES}
        if unknown:
            raise ValueError(f"--only: unknown benchmark key(s) {sorted(unknown)}; "
                             f"known: {[b[0] for b in BENCHES]}")
    for key, target, what in selected:
        modname, fname = target.split(":")
        fn = getattr(importlib.import_module(modname), fname)
        out = fn()
        results.update(out)
        rows.append((key, out[key], what))
        extra = {k: v for k, v in out.items() if k != key}
        print(f"{key:<36} {out[key]:8.2f}x   {what}" + (f"  {extra}" if extra else ""), flush=True)
    if not args.no_startup:
        cold = startup_seconds(cold=True)
        warm = startup_seconds(cold=False)
        results["cold_start_seconds"] = cold
        results["warm_start_seconds"] = warm
        print(f"{'cold_start_seconds':<36} {cold:8.2f}s   import + first call of every kernel, empty Numba cache")
        print(f"{'warm_start_seconds':<36} {warm:8.2f}s   the same with the cache populated")
    if args.json:
        atomic_write_json(args.json, {k: float(v) for k, v in results.items()})
        print(f"wrote {args.json}")
    return 0
