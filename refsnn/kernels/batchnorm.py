"""BatchNorm2d over ``(N, H, W)`` per channel (SPEC §3), Numba kernels with NumPy oracles.

The network folds time into the batch (``N = T*B``), so the statistics are over ``(T*B, H, W)``
(threshold-dependent BN style). With ``M = N*H*W`` values per channel ``c``:

* training: ``mu_c = (1/M) sum x``, ``var_c = (1/M) sum (x - mu_c)^2`` (biased, used to normalise);
  running statistics updated IN PLACE, PyTorch-style:
  ``running_mean = (1 - momentum) running_mean + momentum mu_c``,
  ``running_var = (1 - momentum) running_var + momentum var_c * M/(M - 1)`` (unbiased);
  ``M = 1`` in training is an error (as in PyTorch).
* eval: ``mu_c = running_mean``, ``var_c = running_var``; nothing is updated.
* ``xhat = (x - mu_c) / sqrt(var_c + eps)``, ``y = gamma_c xhat + beta_c``.

Backward with ``dy`` (``g = dy * gamma_c``):

* ``dgamma_c = sum dy * xhat``, ``dbeta_c = sum dy`` (both modes);
* training: ``dx = (1/sqrt(var_c + eps)) (g - mean(g) - xhat mean(g * xhat))`` (means over the M
  values of the channel), because ``mu_c`` and ``var_c`` depend on ``x``;
* eval: ``dx = g / sqrt(var_c + eps)`` (the running statistics are constants).

Shapes: ``x, y, dy, dx (N, C, H, W)``; ``gamma, beta, running_mean, running_var, dgamma, dbeta (C,)``.
All arrays share one dtype (float32 or float64); per-channel sums are accumulated in float64 in a
fixed order, one channel at a time, so results are deterministic.

Below, in this order: the oracles :func:`batchnorm2d_forward_ref` / :func:`batchnorm2d_backward_ref`
(plain NumPy), then the Numba kernels and :func:`batchnorm2d_forward` / :func:`batchnorm2d_backward`.
Performance notes (threads, determinism): ``docs/performance.md``, "BatchNorm, pooling, rectifier".
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array, check_float, check_same_dtype
from refsnn.kernels._args import check_bool, check_disjoint, check_out

__all__ = ["BatchNormContext", "batchnorm2d_forward", "batchnorm2d_backward",
           "batchnorm2d_forward_ref", "batchnorm2d_backward_ref"]


def _check_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                   check_finite=True, in_place_ok=True):
    check_finite = check_bool("check_finite", check_finite)
    x = check_array("x", x, ndim=4, dtypes=FLOAT_DTYPES, finite=check_finite)
    C = x.shape[1]
    arrs = {"gamma": gamma, "beta": beta, "running_mean": running_mean, "running_var": running_var}
    for name, a in arrs.items():
        check_array(name, a, ndim=1, dtypes=FLOAT_DTYPES, shape=(C,))
        check_same_dtype("x", x, name, a)
    training = check_bool("training", training)
    if training and in_place_ok:
        # updated in place: writeable, and neither may alias the other or an input read afterwards
        for name in ("running_mean", "running_var"):
            check_out(name, arrs[name], (C,), x.dtype)
        check_disjoint({"running_mean": running_mean, "running_var": running_var},
                       {"x": x, "gamma": gamma, "beta": beta})
    momentum = check_float("momentum", momentum, lo=0.0, hi=1.0)
    eps = check_float("eps", eps, lo=0.0, lo_open=True)
    if np.any(running_var < 0):
        raise ValueError("running_var: expected non-negative variances")
    M = x.shape[0] * x.shape[2] * x.shape[3]
    if training and M < 2:
        raise ValueError(f"x: training needs more than 1 value per channel (N*H*W = {M})")
    if M == 0:
        raise ValueError(f"x: expected a non-empty input, got shape {x.shape}")
    return x, bool(training), momentum, eps, M


# ---- oracles (plain NumPy) ----
def batchnorm2d_forward_ref(x, gamma, beta, running_mean, running_var, *, training, momentum=0.1,
                            eps=1e-5):
    """Oracle with ``np.mean``/``np.var``; returns ``(y, new_running_mean, new_running_var)``
    and does NOT modify its arguments."""
    x, training, momentum, eps, M = _check_forward(x, gamma, beta, running_mean, running_var,
                                                   training, momentum, eps, in_place_ok=False)
    x64 = x.astype(np.float64)
    if training:
        mean = x64.mean(axis=(0, 2, 3))
        var = x64.var(axis=(0, 2, 3))
        rm = ((1 - momentum) * running_mean + momentum * mean).astype(x.dtype)
        rv = ((1 - momentum) * running_var + momentum * var * M / (M - 1)).astype(x.dtype)
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
        rm, rv = running_mean.copy(), running_var.copy()
    sh = (1, -1, 1, 1)
    y = (x64 - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + eps) * gamma.reshape(sh) + beta.reshape(sh)
    return y.astype(x.dtype), rm, rv


def batchnorm2d_backward_ref(dy, x, gamma, running_mean, running_var, *, training, eps=1e-5):
    """Oracle: the textbook BN backward in float64 NumPy (statistics recomputed from ``x`` in
    training mode, running statistics in eval mode). Returns ``(dx, dgamma, dbeta)``."""
    x, training, _, eps, _ = _check_forward(x, gamma, gamma, running_mean, running_var, training, 0.1,
                                            eps, in_place_ok=False)
    dy = check_array("dy", dy, ndim=4, dtypes=FLOAT_DTYPES, shape=x.shape)
    check_same_dtype("x", x, "dy", dy)
    x64, dy64, g = x.astype(np.float64), dy.astype(np.float64), gamma.astype(np.float64)
    sh = (1, -1, 1, 1)
    if training:
        mean, var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x64 - mean.reshape(sh)) * inv.reshape(sh)
    dgamma = (dy64 * xhat).sum(axis=(0, 2, 3))
    dbeta = dy64.sum(axis=(0, 2, 3))
    gx = dy64 * g.reshape(sh)
    if training:
        dx = inv.reshape(sh) * (gx - gx.mean(axis=(0, 2, 3), keepdims=True)
                                - xhat * (gx * xhat).mean(axis=(0, 2, 3), keepdims=True))
    else:
        dx = gx * inv.reshape(sh)
    return dx.astype(x.dtype), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


# ---- fast path: Numba kernels and the public functions ----
@dataclass
class BatchNormContext:
    """What :func:`batchnorm2d_backward` needs (treat as opaque).

    ``xhat`` (N, C, H, W) normalised input, ``invstd`` (C,) float64 ``1/sqrt(var + eps)``,
    ``gamma`` (C,), ``training`` bool.
    """

    xhat: np.ndarray
    invstd: np.ndarray
    gamma: np.ndarray
    training: bool


@numba.njit(cache=True, parallel=True)
def _channel_stats(x, mean, var):
    """Per-channel mean and biased variance (two passes, float64, fixed order; channels in parallel)."""
    N, C, H, W = x.shape
    M = N * H * W
    for c in numba.prange(C):
        s = 0.0
        for n in range(N):
            for h in range(H):
                for w in range(W):
                    s += np.float64(x[n, c, h, w])
        mu = s / M
        s2 = 0.0
        for n in range(N):
            for h in range(H):
                for w in range(W):
                    d = np.float64(x[n, c, h, w]) - mu
                    s2 += d * d
        mean[c] = mu
        var[c] = s2 / M


@numba.njit(cache=True, parallel=True)
def _normalise(x, mean, invstd, gamma, beta, xhat, y):
    N, C, H, W = x.shape
    for n in numba.prange(N):
        for c in range(C):
            mu = mean[c]
            r = invstd[c]
            g = np.float64(gamma[c])
            b = np.float64(beta[c])
            for h in range(H):
                for w in range(W):
                    xh = (np.float64(x[n, c, h, w]) - mu) * r
                    xhat[n, c, h, w] = xh
                    y[n, c, h, w] = g * xh + b


@numba.njit(cache=True, parallel=True)
def _bn_backward(dy, xhat, invstd, gamma, training, dx, dgamma, dbeta):
    N, C, H, W = dy.shape
    M = N * H * W
    for c in numba.prange(C):
        sdy = 0.0
        sdyx = 0.0
        for n in range(N):
            for h in range(H):
                for w in range(W):
                    g = np.float64(dy[n, c, h, w])
                    sdy += g
                    sdyx += g * np.float64(xhat[n, c, h, w])
        dgamma[c] = sdyx
        dbeta[c] = sdy
        gm = np.float64(gamma[c])
        r = invstd[c]
        if training:
            m1 = sdy / M
            m2 = sdyx / M
            for n in range(N):
                for h in range(H):
                    for w in range(W):
                        dx[n, c, h, w] = gm * r * (np.float64(dy[n, c, h, w]) - m1
                                                   - np.float64(xhat[n, c, h, w]) * m2)
        else:
            for n in range(N):
                for h in range(H):
                    for w in range(W):
                        dx[n, c, h, w] = gm * r * np.float64(dy[n, c, h, w])


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, *, training, momentum=0.1,
                        eps=1e-5, check_finite=True):
    """BatchNorm2d forward (SPEC §3); see the module docstring for the equations.

    Parameters
    ----------
    x : ndarray ``(N, C, H, W)``, float32 or float64 (``N = T*B`` in the network)
    gamma, beta : ndarray ``(C,)``, same dtype
    running_mean, running_var : ndarray ``(C,)``, same dtype, finite (``running_var >= 0``);
        updated in place when ``training`` (then they must be C-contiguous, writeable and not share
        memory with each other or with ``x``, ``gamma``, ``beta``). Training refuses a batch whose
        statistics are NaN/inf (``ValueError`` naming ``x``) or whose update would overflow the
        dtype (naming ``running_mean``/``running_var``), leaving the running statistics unchanged:
        this costs nothing extra (``C`` values), and it is where the layers, which pass
        ``check_finite=False``, learn that a convolution's output overflowed.
    training : bool
    momentum : float in [0, 1], default 0.1 (``new = (1 - momentum) old + momentum batch``)
    eps : float > 0, default 1e-5
    check_finite : bool
        Reject NaN/inf in ``x`` (one extra pass; the network layers pass False, see
        :func:`refsnn.kernels.conv.conv2d_forward`). The per-channel arrays are always checked.

    Returns
    -------
    y : ndarray ``(N, C, H, W)``
    ctx : BatchNormContext, for :func:`batchnorm2d_backward`
    """
    x, training, momentum, eps, M = _check_forward(x, gamma, beta, running_mean, running_var,
                                                   training, momentum, eps, check_finite)
    C = x.shape[1]
    x = np.ascontiguousarray(x)
    if training:
        mean = np.empty(C)
        var = np.empty(C)
        _channel_stats(x, mean, var)
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            raise ValueError("x: the batch mean or variance is NaN or infinite (x contains NaN/inf "
                             "or values too large)")
        # new running statistics computed aside, checked, then stored: a failed call leaves them as
        # they were (same operations and order as an in-place update, so the same bits)
        with np.errstate(over="ignore"):
            rm = running_mean * (1.0 - momentum)
            rm += (momentum * mean).astype(x.dtype)
            rv = running_var * (1.0 - momentum)
            rv += (momentum * var * (M / (M - 1))).astype(x.dtype)
        for name, r in (("running_mean", rm), ("running_var", rv)):
            if not np.isfinite(r).all():
                raise ValueError(f"{name}: the updated running statistic overflows {x.dtype} "
                                 "(x too large for this dtype)")
        running_mean[...] = rm
        running_var[...] = rv
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = np.empty_like(x)
    y = np.empty_like(x)
    _normalise(x, mean, invstd, np.ascontiguousarray(gamma), np.ascontiguousarray(beta), xhat, y)
    return y, BatchNormContext(xhat=xhat, invstd=invstd, gamma=gamma.copy(), training=training)


def batchnorm2d_backward(dy, ctx, *, check_finite=True):
    """BatchNorm2d backward (SPEC §3): returns ``(dx, dgamma, dbeta)``; correct in both modes.
    ``check_finite=False`` skips the NaN/inf pass over ``dy``."""
    if not isinstance(ctx, BatchNormContext):
        raise TypeError(f"ctx: expected a BatchNormContext, got {type(ctx).__name__}")
    check_finite = check_bool("check_finite", check_finite)
    _check_context(ctx)
    dy = check_array("dy", dy, ndim=4, dtypes=FLOAT_DTYPES, shape=ctx.xhat.shape, finite=check_finite)
    check_same_dtype("x (forward input)", ctx.xhat, "dy", dy)
    C = dy.shape[1]
    dx = np.empty_like(ctx.xhat)
    dgamma = np.empty(C)
    dbeta = np.empty(C)
    _bn_backward(np.ascontiguousarray(dy), ctx.xhat, ctx.invstd, ctx.gamma, ctx.training, dx,
                 dgamma, dbeta)
    return dx, dgamma.astype(dy.dtype), dbeta.astype(dy.dtype)


def _check_context(ctx) -> None:
    """The (opaque) context's arrays agree with each other, so the kernel indexes within bounds."""
    xh, inv, g = ctx.xhat, ctx.invstd, ctx.gamma
    ok = (isinstance(xh, np.ndarray) and isinstance(inv, np.ndarray) and isinstance(g, np.ndarray)
          and xh.ndim == 4 and xh.dtype in FLOAT_DTYPES and xh.flags.c_contiguous
          and inv.shape == (xh.shape[1],) and inv.dtype == np.float64
          and g.shape == (xh.shape[1],) and g.dtype == xh.dtype
          and isinstance(ctx.training, (bool, np.bool_)))
    if not ok:
        raise ValueError("ctx: not a context made by batchnorm2d_forward (its arrays disagree)")


def _warmup() -> None:
    for dt in FLOAT_DTYPES:
        x = np.arange(16, dtype=dt).reshape(1, 2, 2, 4)
        c = np.ones(2, dtype=dt)
        for training in (True, False):
            y, ctx = batchnorm2d_forward(x, c, c * 0, c * 0, c.copy(), training=training)
            batchnorm2d_backward(np.ones_like(y), ctx)
