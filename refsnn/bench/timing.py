"""Timing primitives of ``refsnn bench``: side-by-side ratios and interpreter start-up times."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable


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


_STARTUP_SNIPPET = ("import time; t=time.perf_counter(); import refsnn.bench.warmup as w; w.warmup(); "
                    "print(time.perf_counter()-t)")


def startup_seconds(*, cold: bool) -> float:
    """Seconds for a fresh interpreter to import refsnn's data sets, algorithms and kernels and call
    each kernel once (:func:`refsnn.bench.warmup.warmup`).

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
