"""Benchmarks of ``refsnn bench`` (:mod:`refsnn.commands.bench`): speed ratios against plain-NumPy
baselines, measured side by side.

Each benchmark builds its inputs once, then times the baseline and the refsnn implementation
alternately in the same process (interleaved repeats, best of N for each), and reports
``baseline_seconds / refsnn_seconds``: a ratio, so it means the same on a loaded machine as on an
idle one, and no test ever asserts a wall time. Cold start (a fresh interpreter importing refsnn and
calling every kernel once with an empty Numba cache) and warm start (the same with the cache
populated) are measured in subprocesses.

A benchmark is a function ``bench_xxx() -> dict`` returning at least ``{"key": ratio}``; register
it in BENCHES as ``(key, "module:function", description)``. The benchmarks live in this package,
one module per layer: :mod:`.kernels`, :mod:`.stbp`, :mod:`.ec`, :mod:`.nas`, and :mod:`.peers` for the
comparisons with other frameworks (``refsnn[bench]``; a benchmark raises :class:`BenchSkipped` when its
peer is missing and its keys are left out); nothing below imports it.
"""
from __future__ import annotations

import importlib

from refsnn.bench.peers import BenchSkipped
from refsnn.bench.timing import startup_seconds, time_side_by_side

__all__ = ["BENCHES", "time_side_by_side", "startup_seconds", "run_benches"]

# (result key, "module:function", what it measures)
BENCHES: list[tuple[str, str, str]] = [
    ("lif_fwd_bwd_speedup_vs_numpy", "refsnn.bench.kernels:bench_lif",
     "multi-step LIF forward+backward, T=8, 2M neurons, float32, vs a vectorised NumPy loop over T"),
    ("conv_fwd_bwd_speedup_vs_numpy", "refsnn.bench.kernels:bench_conv",
     "conv2d forward+backward [64,64,16,16] 3x3 64 filters float32 vs NumPy sliding-window im2col + matmul"),
    ("rsnn_packed_speedup_vs_dense", "refsnn.bench.ec:bench_rsnn_packed",
     "EC RSNN env step (33 substeps, N=256, 64 members, own connectivity): bit-packed Numba vs NumPy float32 "
     "batched matmul"),
    ("ec_policy_overhead", "refsnn.bench.ec:bench_policy_overhead",
     "seconds in the RSNN policy / seconds in env.step during one Hopper-v5 EC generation (lower is better, "
     "target <= 0.25)"),
    ("bie_speedup_vs_train_epoch", "refsnn.bench.nas:bench_bie_speedup",
     "one STBP training epoch of a 3-cell MSE-NAS genotype on mnist5k (measured on 4 steps, scaled to 63) / "
     "scoring it with the BIE fitness (target >= 50)"),
    ("stbp_step_speedup_vs_numpy", "refsnn.bench.stbp:bench_stbp_step",
     "one STBP training step of csnn (T=4, batch 32, AdamW) vs the same network in straightforward NumPy"),
    # peers (refsnn[bench]); left out when the peer is not installed
    ("conv_fwd_bwd_speedup_vs_torch", "refsnn.bench.peers:bench_conv_vs_torch",
     "conv2d forward+backward on the 4 STBP shapes, 10 % spike inputs, float32, 1 thread each: torch / refsnn"),
    ("stbp_epoch_speedup_vs_spikingjelly", "refsnn.bench.peers:bench_stbp_vs_spikingjelly",
     "one STBP epoch of mnist5k with refsnn train's recipe vs the same network in SpikingJelly 2.0, each side at "
     "its best of 1 and 2 threads (both thread counts also reported)"),
    ("onb_min_speedup", "refsnn.bench.peers:bench_onb",
     "Open Neuromorphic workload Linear(n,n)->LIF, T=500, batch 16, fwd+bwd, n=512/4096/16384, all cores: "
     "the smallest peer / refsnn ratio (every peer and size in onb_<peer>_<n>_speedup)"),
]


def run_benches(keys=None, *, say=print) -> dict[str, float]:
    """Run the benchmarks of :data:`BENCHES` (all, or those whose key is in ``keys``) one after the
    other; one line per benchmark; returns every figure they report."""
    known = [k for k, _, _ in BENCHES]
    unknown = sorted(set(keys or ()) - set(known))
    if unknown:
        raise ValueError(f"only: unknown benchmark key(s) {unknown}; known: {known}")
    results: dict[str, float] = {}
    for key, target, what in BENCHES:
        if keys and key not in keys:
            continue
        modname, fname = target.split(":")
        try:
            out = getattr(importlib.import_module(modname), fname)()
        except BenchSkipped as e:
            say(f"{key:<36} skipped: {e}")
            continue
        results.update(out)
        extra = {k: v for k, v in out.items() if k != key}
        say(f"{key:<36} {out[key]:8.2f}x   {what}" + (f"  {extra}" if extra else ""))
    return results
