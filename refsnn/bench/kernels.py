"""Kernel benchmarks: ``lif_fwd_bwd_speedup_vs_numpy`` and ``conv_fwd_bwd_speedup_vs_numpy``.

Each compares a refsnn kernel pair (forward + backward) with the straightforward NumPy formulation
of the same equations, timed side by side (:func:`refsnn.bench.timing.time_side_by_side`).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from refsnn.bench.timing import time_side_by_side
from refsnn.kernels.conv import Conv2dWorkspace, conv2d_backward, conv2d_forward
from refsnn.kernels.lif import PRESETS, lif_backward, lif_forward


def bench_lif() -> dict:
    """Multi-step LIF forward+backward, T=8, B*C*H*W = 2M, float32, MSE-NAS neuron.

    Baseline: the same equations as a straightforward vectorised NumPy loop over T (what one
    writes first; no validation overhead), forward storing H and S, backward through time.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 0.6, size=(8, 32, 64, 32, 32)).astype(np.float32)  # 32*64*32*32 = 2M
    g = rng.normal(size=x.shape).astype(np.float32)
    p = PRESETS["msenas"]
    f32 = np.float32
    tau, vth, a = f32(p.tau), f32(p.v_th), f32(p.surrogate_alpha)

    def baseline():
        h_all = np.empty_like(x)
        s_all = np.empty_like(x)
        v = np.zeros(x.shape[1:], f32)
        for t in range(x.shape[0]):
            h = v + (x[t] - v) / tau
            s = (h - vth > 0).astype(f32)
            v = h * (1 - s)
            h_all[t], s_all[t] = h, s
        gx = np.empty_like(x)
        gv = np.zeros(x.shape[1:], f32)
        for t in range(x.shape[0] - 1, -1, -1):
            sgd = np.maximum(f32(0), a - a * a * np.abs(h_all[t] - vth))
            gh = g[t] * sgd + gv * (1 - s_all[t])
            gx[t] = gh / tau
            gv = gh * (1 - 1 / tau)
        return gx

    work = (np.empty_like(x), np.empty_like(x), np.empty_like(x))

    def candidate():  # as the STBP engine calls it: outputs in reused workspace buffers
        s, h = lif_forward(x, p, out=work[:2])
        return lif_backward(g, h, p, out=work[2])

    def candidate_alloc():  # fresh output arrays every call (page faults included)
        s, h = lif_forward(x, p)
        return lif_backward(g, h, p)

    tb, tc = time_side_by_side(baseline, candidate, repeats=3)
    tb2, ta = time_side_by_side(baseline, candidate_alloc, repeats=3)
    return {"lif_fwd_bwd_speedup_vs_numpy": tb / tc,
            "lif_fwd_bwd_alloc_speedup_vs_numpy": tb2 / ta,
            "lif_fwd_bwd_ms": tc * 1e3, "lif_fwd_bwd_numpy_ms": tb * 1e3}


def bench_conv() -> dict:
    """conv2d forward + backward (dx, dw), x ``[64, 64, 16, 16]`` float32, 3x3, 64 filters, padding 1.

    Baseline: NumPy im2col through ``sliding_window_view`` + matmul for the forward pass; matmul
    plus a NumPy col2im looping over the kernel offsets for the backward pass. Both use the same
    (multithreaded) BLAS. Returns ``{"conv_fwd_bwd_speedup_vs_numpy": baseline_s / refsnn_s}``.
    """
    rng = np.random.default_rng(np.random.SeedSequence(2024))
    N, C, H, W, O, k, pad = 64, 64, 16, 16, 64, 3, 1
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((O, C, k, k)) * 0.05).astype(np.float32)
    dy = rng.standard_normal((N, O, H, W)).astype(np.float32)

    def baseline():
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        Ho, Wo = xp.shape[2] - k + 1, xp.shape[3] - k + 1
        win = sliding_window_view(xp, (k, k), axis=(2, 3))           # (N, C, Ho, Wo, k, k)
        col = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * k * k)
        w_col = w.reshape(O, C * k * k)
        y = (col @ w_col.T).reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2)
        y = np.ascontiguousarray(y)
        dy_mat = dy.transpose(0, 2, 3, 1).reshape(N * Ho * Wo, O)
        dw = (dy_mat.T @ col).reshape(O, C, k, k)
        dcol = (dy_mat @ w_col).reshape(N, Ho, Wo, C, k, k)
        dxp = np.zeros_like(xp)
        for i in range(k):
            for j in range(k):
                dxp[:, :, i:i + Ho, j:j + Wo] += dcol[..., i, j].transpose(0, 3, 1, 2)
        dx = dxp[:, :, pad:pad + H, pad:pad + W]
        return y, dx, dw

    ws = Conv2dWorkspace()   # as a Conv2d layer does: its work arrays are reused call after call

    def candidate():
        y, ctx = conv2d_forward(x, w, padding=pad, workspace=ws)
        dx, dw, _ = conv2d_backward(dy, ctx, workspace=ws)
        return y, dx, dw

    # sanity: both compute the same thing
    yb, dxb, dwb = baseline()
    yc, dxc, dwc = candidate()
    for name, a, c in (("y", yb, yc), ("dx", dxb, dxc), ("dw", dwb, dwc)):
        scale = float(np.abs(a).max()) or 1.0
        if float(np.abs(a - c).max()) > 1e-4 * scale:
            raise AssertionError(f"bench_conv: {name} of refsnn and the NumPy baseline disagree")
    base_s, cand_s = time_side_by_side(baseline, candidate)
    return {"conv_fwd_bwd_speedup_vs_numpy": base_s / cand_s}
