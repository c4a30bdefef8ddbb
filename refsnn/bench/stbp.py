"""Benchmark ``stbp_step_speedup_vs_numpy``: one STBP training step of the default network.

Network: ``csnn`` (conv32-BN-LIF-pool, conv64-BN-LIF-pool, linear) on mnist5k-shaped input,
T = 4, batch 32, float32, AdamW; one step = forward over all T steps, CE-of-mean loss, STBP
backward, optimiser update.

Baseline: the same network written the straightforward NumPy way (what one writes first): conv as
im2col through ``sliding_window_view`` + matmul on all ``T*B`` frames, col2im by a loop over kernel
offsets, BN / pooling / linear as array expressions, the LIF as a vectorised loop over T with
stored H and S, AdamW as array expressions. It starts from the same weights and is checked to give
the same loss and gradients before timing.

Both sides run with one BLAS thread and one Numba thread, the trainer's default (``--threads 1``;
on a busy 2-core machine multithreaded OpenBLAS is erratic, see :mod:`refsnn.tuning`).

Reported: ``stbp_step_speedup_vs_numpy`` (baseline seconds / refsnn seconds, the input as the
trainer gets it: a direct-encoded broadcast view, so refsnn computes the first conv + BN once
instead of T times), ``stbp_step_speedup_vs_numpy_full_input`` (refsnn given T explicit copies:
the kernels alone), and the per-step milliseconds.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from refsnn.bench.timing import time_side_by_side
from refsnn.datasets import iterate_batches, load
from refsnn.snn.archs import build_arch
from refsnn.snn.loss import loss_and_grad
from refsnn.snn.optim import AdamW
from refsnn.tuning import threads


class _NumpyCSNN:
    """Straightforward NumPy version of ``csnn`` (see the module docstring)."""

    def __init__(self, params: dict, T: int, tau=2.0, v_th=0.5, a=2.0):
        self.p = {k: v.copy() for k, v in params.items()}
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.k = 0
        self.T, self.tau, self.v_th, self.a = T, np.float32(tau), np.float32(v_th), np.float32(a)

    @staticmethod
    def conv_f(x, w):
        N, C, H, W = x.shape
        O, _, k, _ = w.shape
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        col = sliding_window_view(xp, (k, k), axis=(2, 3)).transpose(0, 2, 3, 1, 4, 5).reshape(N * H * W, C * k * k)
        y = (col @ w.reshape(O, -1).T).reshape(N, H, W, O).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(y), (col, xp.shape, x.shape)

    @staticmethod
    def conv_b(dy, w, cache, need_dx=True):
        col, xps, xs = cache
        N, O, H, W = dy.shape
        k = w.shape[2]
        dym = dy.transpose(0, 2, 3, 1).reshape(-1, O)
        dw = (dym.T @ col).reshape(w.shape)
        if not need_dx:
            return None, dw
        dcol = (dym @ w.reshape(O, -1)).reshape(N, H, W, xs[1], k, k)
        dxp = np.zeros(xps, dy.dtype)
        for i in range(k):
            for j in range(k):
                dxp[:, :, i:i + H, j:j + W] += dcol[..., i, j].transpose(0, 3, 1, 2)
        return dxp[:, :, 1:-1, 1:-1], dw

    @staticmethod
    def bn_f(x, g, b, eps=1e-5):
        mu = x.mean(axis=(0, 2, 3), keepdims=True)
        var = x.var(axis=(0, 2, 3), keepdims=True)
        inv = 1 / np.sqrt(var + np.float32(eps))
        xh = (x - mu) * inv
        return g[None, :, None, None] * xh + b[None, :, None, None], (xh, inv, g)

    @staticmethod
    def bn_b(dy, cache):
        xh, inv, g = cache
        n = dy.size // dy.shape[1]
        db = dy.sum(axis=(0, 2, 3))
        dg = (dy * xh).sum(axis=(0, 2, 3))
        dxh = dy * g[None, :, None, None]
        dx = inv / n * (n * dxh - dxh.sum(axis=(0, 2, 3), keepdims=True)
                        - xh * (dxh * xh).sum(axis=(0, 2, 3), keepdims=True))
        return dx, dg, db

    def lif_f(self, x):
        tau, vth = self.tau, self.v_th
        v = np.zeros(x.shape[1:], np.float32)
        S, Hs = np.empty_like(x), np.empty_like(x)
        for t in range(x.shape[0]):
            h = v + (x[t] - v) / tau
            s = (h - vth > 0).astype(np.float32)
            v = h * (1 - s)
            S[t], Hs[t] = s, h
        return S, (Hs, S)

    def lif_b(self, gs, cache):
        Hs, S = cache
        tau, vth, a = self.tau, self.v_th, self.a
        gx = np.empty_like(gs)
        gv = np.zeros(gs.shape[1:], np.float32)
        for t in range(gs.shape[0] - 1, -1, -1):
            sg = np.maximum(np.float32(0), a - a * a * np.abs(Hs[t] - vth))
            gh = gs[t] * sg + gv * (1 - S[t])       # detach_reset (the msenas preset)
            gx[t] = gh / tau
            gv = gh * (1 - 1 / tau)
        return gx

    @staticmethod
    def pool_f(x):
        N, C, H, W = x.shape
        return x.reshape(N, C, H // 2, 2, W // 2, 2).mean(axis=(3, 5))

    @staticmethod
    def pool_b(dy):
        return np.repeat(np.repeat(dy, 2, axis=2), 2, axis=3) / np.float32(4)

    def step(self, x, y, lr=1e-3, wd=0.01):
        p, T = self.p, self.T
        B = x.shape[1]
        xf = x.reshape((-1,) + x.shape[2:])
        c1, cc1 = self.conv_f(xf, p["conv1.w"])
        b1, cb1 = self.bn_f(c1, p["bn1.gamma"], p["bn1.beta"])
        s1, cl1 = self.lif_f(b1.reshape((T, B) + b1.shape[1:]))
        q1 = self.pool_f(s1.reshape((-1,) + s1.shape[2:]))
        c2, cc2 = self.conv_f(q1, p["conv2.w"])
        b2, cb2 = self.bn_f(c2, p["bn2.gamma"], p["bn2.beta"])
        s2, cl2 = self.lif_f(b2.reshape((T, B) + b2.shape[1:]))
        q2 = self.pool_f(s2.reshape((-1,) + s2.shape[2:]))
        f = q2.reshape(T * B, -1)
        z = (f @ p["fc.w"].T + p["fc.b"]).reshape(T, B, -1)
        o = z.mean(axis=0)
        e = np.exp(o - o.max(axis=1, keepdims=True))
        pr = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(pr[np.arange(B), y]).mean()
        do = pr.copy()
        do[np.arange(B), y] -= 1
        dz = np.broadcast_to(do / np.float32(B * T), z.shape).reshape(T * B, -1)
        g = {"fc.w": dz.T @ f, "fc.b": dz.sum(axis=0)}
        dq2 = (dz @ p["fc.w"]).reshape(q2.shape)
        ds2 = self.pool_b(dq2).reshape(s2.shape)
        db2 = self.lif_b(ds2, cl2).reshape(b2.shape)
        dc2, g["bn2.gamma"], g["bn2.beta"] = self.bn_b(db2, cb2)
        dq1, g["conv2.w"] = self.conv_b(dc2, p["conv2.w"], cc2)
        ds1 = self.pool_b(dq1).reshape(s1.shape)
        db1 = self.lif_b(ds1, cl1).reshape(b1.shape)
        dc1, g["bn1.gamma"], g["bn1.beta"] = self.bn_b(db1, cb1)
        _, g["conv1.w"] = self.conv_b(dc1, p["conv1.w"], cc1, need_dx=False)
        self.k += 1
        for k in p:   # AdamW
            p[k] *= np.float32(1 - lr * wd)
            self.m[k] = 0.9 * self.m[k] + np.float32(0.1) * g[k]
            self.v[k] = 0.999 * self.v[k] + np.float32(0.001) * g[k] * g[k]
            mh = self.m[k] / np.float32(1 - 0.9 ** self.k)
            vh = self.v[k] / np.float32(1 - 0.999 ** self.k)
            p[k] -= np.float32(lr) * mh / (np.sqrt(vh) + np.float32(1e-8))
        return float(loss), g


def bench_stbp_step() -> dict:
    """One STBP step of ``csnn``, T=4, batch 32, float32: refsnn vs the straightforward NumPy version."""

    T, B = 4, 32
    ds = load("mnist5k", timesteps=T)
    x, y = next(iterate_batches(ds, "train", B))
    xc = np.ascontiguousarray(x)
    rng = np.random.default_rng(np.random.SeedSequence(0))
    net = build_arch("csnn", input_shape=ds.input_shape, num_classes=10, timesteps=T, rng=rng)
    params = dict(net.parameters())
    base = _NumpyCSNN(params, T)

    # same loss and gradients from the same weights (before any update)
    loss_r, d, _ = loss_and_grad(net.forward(x), y)
    net.backward(d)
    loss_b, g_b = _NumpyCSNN(params, T).step(xc, y)
    if abs(loss_r - loss_b) > 1e-4 * max(1.0, abs(loss_r)):
        raise AssertionError(f"bench_stbp_step: losses differ ({loss_r} vs {loss_b})")
    for k, g in net.gradients():
        err = float(np.abs(g - g_b[k]).max())
        if err > 1e-3 * max(float(np.abs(g_b[k]).max()), 1e-6):
            raise AssertionError(f"bench_stbp_step: gradient {k} differs from the baseline by {err}")

    opt = AdamW(net.parameters())

    def candidate(inp=x):
        logits = net.forward(inp)
        _, dl, _ = loss_and_grad(logits, y)
        net.backward(dl)
        opt.step(net.gradients(), 1e-3)

    def baseline():
        base.step(xc, y)

    with threads(1):  # the trainer's default (refsnn train --threads 1), for both sides
        tb, tc = time_side_by_side(baseline, candidate, repeats=5)
        tb2, tf = time_side_by_side(baseline, lambda: candidate(xc), repeats=3)
    return {"stbp_step_speedup_vs_numpy": tb / tc,
            "stbp_step_speedup_vs_numpy_full_input": tb2 / tf,
            "stbp_step_ms": tc * 1e3, "stbp_step_numpy_ms": tb * 1e3}
