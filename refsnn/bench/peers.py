"""Peer benchmarks (``refsnn[bench]``: torch, spikingjelly, snntorch, norse): refsnn against another
framework on the same workload, timed side by side in one process.

Every peer figure is ``peer_seconds / refsnn_seconds`` (above 1: refsnn is faster) and is measured
at a stated thread count on both sides: NumPy's BLAS through ``threadpoolctl.threadpool_limits``,
Numba through ``numba.set_num_threads`` and PyTorch through ``torch.set_num_threads``, restored
afterwards. A benchmark whose peer is not installed raises :class:`BenchSkipped`; ``refsnn bench``
then leaves its keys out.

* ``conv_fwd_bwd_speedup_vs_torch`` — conv2d forward + backward (``dx`` and ``dw``) on the four
  shapes of the STBP networks (issue 25: ``[128,32,28,28]x[64,32,3,3]``, ``[64,64,16,16]x[64,64,3,3]``,
  ``[128,1,28,28]x[32,1,3,3]``, ``[256,64,8,8]x[128,64,3,3]``, padding 1, float32), inputs 0/1 spikes
  at 10 % density (the input of a conv after a LIF layer), against ``torch.nn.functional.conv2d`` and
  autograd, one thread each; the key is the ratio of the summed times, with one key per shape.
"""
from __future__ import annotations

import contextlib

import numba
import numpy as np

from refsnn.bench.timing import time_side_by_side
from refsnn.kernels.conv import Conv2dWorkspace, conv2d_backward, conv2d_forward

__all__ = ["BenchSkipped", "threads", "bench_conv_vs_torch", "CONV_SHAPES"]

#: (N, C, H, W, O) of the STBP convolutions, 3x3, padding 1
CONV_SHAPES = ((128, 32, 28, 28, 64), (64, 64, 16, 16, 64), (128, 1, 28, 28, 32), (256, 64, 8, 8, 128))


class BenchSkipped(Exception):
    """A benchmark's peer framework is not installed (the reason is the message)."""


def _torch():
    try:
        import torch  # optional: refsnn[bench]
    except ImportError:
        raise BenchSkipped("torch is not installed (pip install refsnn[bench])") from None
    return torch


@contextlib.contextmanager
def threads(n: int, torch=None):
    """NumPy's BLAS, Numba and (if given) PyTorch limited to ``n`` threads inside the block."""
    try:
        from threadpoolctl import threadpool_limits  # optional: the test and bench extras
    except ImportError:
        raise BenchSkipped("threadpoolctl is not installed (pip install refsnn[bench])") from None
    old_nb = numba.get_num_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n, user_api="blas"):
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            numba.set_num_threads(old_nb)
            if torch is not None:
                torch.set_num_threads(old_torch)


def bench_conv_vs_torch(n_threads: int = 1) -> dict:
    """``conv_fwd_bwd_speedup_vs_torch`` (module docstring), plus ``conv_vs_torch_<N>x<C>x<H>x<W>_<O>``
    per shape and the summed milliseconds of each side."""
    torch = _torch()
    rng = np.random.default_rng(np.random.SeedSequence(25))
    total_t = total_r = 0.0
    out = {}
    with threads(n_threads, torch):
        for (N, C, H, W, O) in CONV_SHAPES:
            x = (rng.random((N, C, H, W)) < 0.1).astype(np.float32)
            w = (rng.standard_normal((O, C, 3, 3)) * 0.1).astype(np.float32)
            dy = rng.standard_normal((N, O, H, W)).astype(np.float32)
            peer, refsnn_side = _conv_pair(torch, x, w, dy)
            for name, a, b in zip(("y", "dx", "dw"), peer(), refsnn_side()):
                a = a.detach().numpy()
                if float(np.abs(a - b).max()) > 1e-4 * max(1.0, float(np.abs(a).max())):
                    raise AssertionError(f"bench_conv_vs_torch: {name} of refsnn and torch disagree, "
                                         f"shape {(N, C, H, W, O)}")
            t_s, r_s = time_side_by_side(peer, refsnn_side, repeats=5)
            out[f"conv_vs_torch_{N}x{C}x{H}x{W}_{O}"] = t_s / r_s
            total_t += t_s
            total_r += r_s
    out.update({"conv_fwd_bwd_speedup_vs_torch": total_t / total_r, "conv_torch_ms": total_t * 1e3,
                "conv_refsnn_ms": total_r * 1e3})
    return out


def _conv_pair(torch, x, w, dy):
    """``(torch forward+backward, refsnn forward+backward)`` of one conv shape; each returns ``(y, dx, dw)``."""
    tx, tw, tdy = (torch.from_numpy(a) for a in (x, w, dy))
    tx.requires_grad_(True)
    tw.requires_grad_(True)
    ws = Conv2dWorkspace()     # as a Conv2d layer does: work arrays reused call after call

    def peer():
        y = torch.nn.functional.conv2d(tx, tw, padding=1)
        dx, dw = torch.autograd.grad(y, (tx, tw), tdy)
        return y, dx, dw

    def refsnn_side():
        y, ctx = conv2d_forward(x, w, padding=1, workspace=ws)
        dx, dw, _ = conv2d_backward(dy, ctx, workspace=ws)
        return y, dx, dw
    return peer, refsnn_side
