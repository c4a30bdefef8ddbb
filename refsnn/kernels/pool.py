"""Average pooling and global average pooling (SPEC §3), Numba kernels with NumPy oracles.

Equations and shapes (NCHW, time folded into the batch, ``N = T*B``)
-------------------------------------------------------------------
* ``avgpool2d_forward(x, k)``: ``x (N, C, H, W)`` -> ``y (N, C, H/k, W/k)``,
  ``y[n, c, p, q] = (1/k^2) sum_{i,j < k} x[n, c, p*k + i, q*k + j]`` (window ``k x k``, stride
  ``k``; ``H`` and ``W`` must be divisible by ``k``).
* ``avgpool2d_backward(dy, k)``: ``dx[n, c, p*k + i, q*k + j] = dy[n, c, p, q] / k^2``.
* ``global_avgpool_forward(x)``: ``y[n, c] = (1/(H W)) sum_{h,w} x[n, c, h, w]``, ``y (N, C)``.
* ``global_avgpool_backward(dy, hw)``: ``dx[n, c, h, w] = dy[n, c] / (H W)``, ``hw = (H, W)``.

Sums are accumulated in float64 in a fixed order and rounded once to the input dtype.
Below, in this order: the oracles ``*_ref`` (plain NumPy), then the Numba kernels and the public
functions. Performance notes (threads, determinism): ``docs/performance.md``, "BatchNorm, pooling,
rectifier".
float32 in -> float32 out, float64 -> float64; other dtypes raise ``TypeError`` naming the argument.
"""
from __future__ import annotations

import numba
import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array, check_int
from refsnn.kernels._args import check_bool

__all__ = [
    "avgpool2d_forward", "avgpool2d_backward", "global_avgpool_forward", "global_avgpool_backward",
    "avgpool2d_forward_ref", "avgpool2d_backward_ref", "global_avgpool_forward_ref",
    "global_avgpool_backward_ref",
]


def _check_k(k, H=None, W=None):
    k = check_int("k", k, lo=1)
    if H is not None and (H % k or W % k):
        raise ValueError(f"k: H and W ({H}, {W}) must be divisible by the pooling size k={k}")
    return k


def _check_hw(hw):
    if not isinstance(hw, (tuple, list)) or len(hw) != 2:
        raise ValueError(f"hw: expected an (H, W) pair, got {hw!r}")
    return check_int("hw[0]", hw[0], lo=1), check_int("hw[1]", hw[1], lo=1)


# ---- oracles (plain NumPy) ----
def avgpool2d_forward_ref(x, k):
    """Oracle: reshape to ``(N, C, H/k, k, W/k, k)`` and average the window axes."""
    x = check_array("x", x, ndim=4, dtypes=FLOAT_DTYPES)
    N, C, H, W = x.shape
    k = _check_k(k, H, W)
    return x.reshape(N, C, H // k, k, W // k, k).mean(axis=(3, 5), dtype=np.float64).astype(x.dtype)


def avgpool2d_backward_ref(dy, k):
    """Oracle: ``np.repeat`` along both spatial axes, divided by ``k^2``."""
    dy = check_array("dy", dy, ndim=4, dtypes=FLOAT_DTYPES)
    k = _check_k(k)
    return (np.repeat(np.repeat(dy.astype(np.float64), k, axis=2), k, axis=3) / (k * k)).astype(dy.dtype)


def global_avgpool_forward_ref(x):
    """Oracle: ``x.mean(axis=(2, 3))``."""
    x = check_array("x", x, ndim=4, dtypes=FLOAT_DTYPES)
    return x.mean(axis=(2, 3), dtype=np.float64).astype(x.dtype)


def global_avgpool_backward_ref(dy, hw):
    """Oracle: broadcast ``dy / (H W)`` over ``(H, W)``."""
    dy = check_array("dy", dy, ndim=2, dtypes=FLOAT_DTYPES)
    H, W = _check_hw(hw)
    g = dy.astype(np.float64) / (H * W)
    return np.broadcast_to(g[:, :, None, None], dy.shape + (H, W)).astype(dy.dtype)


# ---- fast path: Numba kernels and the public functions ----
@numba.njit(cache=True, parallel=True)
def _avgpool_fwd(x, k, y):
    N, C, Ho, Wo = y.shape
    inv = 1.0 / (k * k)
    for n in numba.prange(N):
        for c in range(C):
            for p in range(Ho):
                for q in range(Wo):
                    acc = 0.0
                    for i in range(k):
                        for j in range(k):
                            acc += np.float64(x[n, c, p * k + i, q * k + j])
                    y[n, c, p, q] = acc * inv
    return y


@numba.njit(cache=True, parallel=True)
def _avgpool_bwd(dy, k, dx):
    N, C, Ho, Wo = dy.shape
    inv = 1.0 / (k * k)
    for n in numba.prange(N):
        for c in range(C):
            for p in range(Ho):
                for q in range(Wo):
                    g = np.float64(dy[n, c, p, q]) * inv
                    for i in range(k):
                        for j in range(k):
                            dx[n, c, p * k + i, q * k + j] = g
    return dx


@numba.njit(cache=True, parallel=True)
def _gap_fwd(x, y):
    N, C, H, W = x.shape
    inv = 1.0 / (H * W)
    for n in numba.prange(N):
        for c in range(C):
            acc = 0.0
            for h in range(H):
                for w in range(W):
                    acc += np.float64(x[n, c, h, w])
            y[n, c] = acc * inv
    return y


@numba.njit(cache=True, parallel=True)
def _gap_bwd(dy, dx):
    N, C, H, W = dx.shape
    inv = 1.0 / (H * W)
    for n in numba.prange(N):
        for c in range(C):
            g = np.float64(dy[n, c]) * inv
            for h in range(H):
                for w in range(W):
                    dx[n, c, h, w] = g
    return dx


def avgpool2d_forward(x, k, *, check_finite=True):
    """``k x k`` average pooling with stride ``k``: ``(N, C, H, W) -> (N, C, H/k, W/k)`` (SPEC §3)."""
    x = check_array("x", x, ndim=4, dtypes=FLOAT_DTYPES, finite=check_bool("check_finite", check_finite))
    N, C, H, W = x.shape
    k = _check_k(k, H, W)
    y = np.empty((N, C, H // k, W // k), dtype=x.dtype)
    return _avgpool_fwd(np.ascontiguousarray(x), k, y)


def avgpool2d_backward(dy, k, *, check_finite=True):
    """Gradient of :func:`avgpool2d_forward`: ``dx = repeat(dy, k, k) / k^2``, ``(N, C, Ho*k, Wo*k)``."""
    dy = check_array("dy", dy, ndim=4, dtypes=FLOAT_DTYPES, finite=check_bool("check_finite", check_finite))
    k = _check_k(k)
    N, C, Ho, Wo = dy.shape
    dx = np.empty((N, C, Ho * k, Wo * k), dtype=dy.dtype)
    return _avgpool_bwd(np.ascontiguousarray(dy), k, dx)


def global_avgpool_forward(x, *, check_finite=True):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)`` (SPEC §3)."""
    x = check_array("x", x, ndim=4, dtypes=FLOAT_DTYPES, finite=check_bool("check_finite", check_finite))
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"x: expected H, W >= 1, got shape {x.shape}")
    y = np.empty(x.shape[:2], dtype=x.dtype)
    return _gap_fwd(np.ascontiguousarray(x), y)


def global_avgpool_backward(dy, hw, *, check_finite=True):
    """Gradient of :func:`global_avgpool_forward`: ``dx[n, c, h, w] = dy[n, c] / (H W)``."""
    dy = check_array("dy", dy, ndim=2, dtypes=FLOAT_DTYPES, finite=check_bool("check_finite", check_finite))
    H, W = _check_hw(hw)
    dx = np.empty(dy.shape + (H, W), dtype=dy.dtype)
    return _gap_bwd(np.ascontiguousarray(dy), dx)


def _warmup() -> None:
    for dt in FLOAT_DTYPES:
        x = np.ones((1, 2, 4, 4), dtype=dt)
        avgpool2d_backward(avgpool2d_forward(x, 2), 2)
        global_avgpool_backward(global_avgpool_forward(x), (4, 4))
