"""``refsnn bench``: speed ratios against plain-NumPy baselines, measured side by side in one process
(:mod:`refsnn.bench`), then the interpreter's cold and warm start."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numba

from refsnn.bench import run_benches, startup_seconds
from refsnn.commands.config import option
from refsnn.io import atomic_write_json
from refsnn.provenance import blas_runtime
from refsnn.tuning import prefer_sleeping_threads

__all__ = ["BenchConfig", "CONFIG", "main"]


@dataclass
class BenchConfig:
    json: str | None = option(None, "also write a flat JSON object to this file: name -> figure, plus the BLAS "
                              "library, kernel and thread counts they were measured with", metavar="FILE")
    only: list[str] = option([], "run only this benchmark key (repeatable)", metavar="KEY")
    no_startup: bool = option(False, "skip the cold/warm start-up timing")

    def __post_init__(self):  # refuse an unwritable --json before minutes of benchmarks, not after
        if self.json is not None:
            target = Path(self.json)
            if target.is_dir() or not target.parent.is_dir():
                raise ValueError(f"json: {self.json} is a directory or its directory does not exist")
            if not os.access(target.parent, os.W_OK):
                raise ValueError(f"json: cannot write into {target.parent}")


CONFIG = BenchConfig


def main(cfg: BenchConfig) -> int:
    prefer_sleeping_threads()            # as refsnn train --threads N > 1 (refsnn.tuning)
    blas = blas_runtime()
    print("BLAS: " + (f"{blas.get('blas_library')} {blas.get('blas_version')}, kernel {blas.get('blas_kernel')}, "
                      f"{blas.get('blas_threads')} threads" if "blas_library" in blas
                      else "threadpoolctl not installed: library and kernel unknown")
          + "".join(f", {k}={blas[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_THREAD_TIMEOUT")
                    if k in blas)
          + f"; Numba threads {numba.get_num_threads()} ({numba.config.THREADING_LAYER} layer)", flush=True)
    results = run_benches(cfg.only, say=lambda s: print(s, flush=True))
    if not cfg.no_startup:
        results["cold_start_seconds"] = cold = startup_seconds(cold=True)
        results["warm_start_seconds"] = warm = startup_seconds(cold=False)
        print(f"{'cold_start_seconds':<36} {cold:8.2f}s   import + first call of every kernel, empty Numba cache")
        print(f"{'warm_start_seconds':<36} {warm:8.2f}s   the same with the cache populated")
    if cfg.json:
        out = {k: float(v) for k, v in results.items()}
        out.update(blas)        # the BLAS library, kernel and threads the figures were measured with
        out["numba_threads"] = numba.get_num_threads()
        out["numba_threading_layer"] = str(numba.config.THREADING_LAYER)
        atomic_write_json(cfg.json, out)
        print(f"wrote {cfg.json}")
    return 0
