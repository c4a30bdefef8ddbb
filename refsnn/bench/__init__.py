"""``refsnn bench``: speed ratios against plain-NumPy baselines, measured side by side.

Each benchmark builds its inputs once, then times the baseline and the refsnn implementation
alternately in the same process (interleaved repeats, best of N for each), and reports
``baseline_seconds / refsnn_seconds``: a ratio, so it means the same on a loaded machine as on an
idle one, and no test ever asserts a wall time. Cold start (a fresh interpreter importing refsnn and
calling every kernel once with an empty Numba cache) and warm start (the same with the cache
populated) are measured in subprocesses.

A benchmark is a function ``bench_xxx() -> dict`` returning at least ``{"key": ratio}``; register
it in BENCHES as ``(key, "module:function", description)``. The benchmarks live in this package,
one module per layer: :mod:`.kernels`, :mod:`.stbp`, :mod:`.ec`, :mod:`.nas`; nothing below imports it.
"""
from __future__ import annotations

import importlib

from refsnn.bench.timing import startup_seconds, time_side_by_side
from refsnn.io import atomic_write_json

__all__ = ["BENCHES", "time_side_by_side", "startup_seconds"]

# (result key, "module:function", what it measures)
BENCHES: list[tuple[str, str, str]] = [
    ("lif_fwd_bwd_speedup_vs_numpy", "refsnn.bench.kernels:bench_lif",
     "multi-step LIF forward+backward, T=8, 2M neurons, float32, vs a vectorised NumPy loop over T"),
    ("conv_fwd_bwd_speedup_vs_numpy", "refsnn.bench.kernels:bench_conv", "conv2d forward+backward [64,64,16,16] 3x3 64 filters float32 vs NumPy sliding-window im2col + matmul"),
    ("rsnn_packed_speedup_vs_dense", "refsnn.bench.ec:bench_rsnn_packed",
     "EC RSNN env step (33 substeps, N=256, 64 members, own connectivity): bit-packed Numba vs NumPy float32 batched matmul"),
    ("ec_policy_overhead", "refsnn.bench.ec:bench_policy_overhead",
     "seconds in the RSNN policy / seconds in env.step during one Hopper-v5 EC generation (lower is better, target <= 0.25)"),
    ("bie_speedup_vs_train_epoch", "refsnn.bench.nas:bench_bie_speedup", "one STBP training epoch of a 3-cell MSE-NAS genotype on mnist5k (measured on 4 steps, scaled to 63) / scoring it with the BIE fitness (target >= 50)"),
    ("stbp_step_speedup_vs_numpy", "refsnn.bench.stbp:bench_stbp_step", "one STBP training step of csnn (T=4, batch 32, AdamW) vs the same network in straightforward NumPy"),
]


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
