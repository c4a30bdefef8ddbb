"""Linear (fully connected) layer, ``y = x @ W.T + b`` (SPEC §1, §3), plain NumPy + BLAS.

Shapes: ``x (N, in)``, ``w (out, in)`` (PyTorch layout), ``b (out,)`` or None, ``y (N, out)``.
Backward, with ``dy (N, out)``: ``dx = dy @ W`` ``(N, in)``, ``dW = dy.T @ x`` ``(out, in)``,
``db = sum_n dy[n]`` ``(out,)`` (None without bias). These are single GEMMs, so there is no Numba
kernel here: BLAS is the fast path, and the oracles (first below) are explicit ``einsum``
contractions.
float32 in -> float32 out, float64 -> float64; mixed dtypes raise ``TypeError`` naming the argument.
Inputs must be finite, and so must the results: a product that overflows the dtype (e.g. float32
values near 1e20 times 1e20) raises ``ValueError`` naming the inputs instead of returning inf (one
pass over the output, small next to the GEMM).
"""
from __future__ import annotations

import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array, check_same_dtype
from refsnn.kernels._args import check_bool

__all__ = ["linear_forward", "linear_backward", "linear_forward_ref", "linear_backward_ref"]


def _check(x, w, b):
    x = check_array("x", x, ndim=2, dtypes=FLOAT_DTYPES)
    w = check_array("w", w, ndim=2, dtypes=FLOAT_DTYPES)
    check_same_dtype("x", x, "w", w)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w: expected {x.shape[1]} input features (w.shape[1], from x.shape[1]), "
                         f"got shape {w.shape}")
    if b is not None:
        b = check_array("b", b, ndim=1, dtypes=FLOAT_DTYPES, shape=(w.shape[0],))
        check_same_dtype("x", x, "b", b)
    return x, w, b


# ---- oracles: explicit einsum contractions ----
def linear_forward_ref(x, w, b=None):
    """Oracle: ``einsum('ni,oi->no')`` plus bias."""
    x, w, b = _check(x, w, b)
    y = np.einsum("ni,oi->no", x, w)
    return y + b if b is not None else y


def linear_backward_ref(dy, x, w, has_bias):
    """Oracle: the three contractions written with ``einsum``."""
    x, w, _ = _check(x, w, None)
    dy = check_array("dy", dy, ndim=2, dtypes=FLOAT_DTYPES, shape=(x.shape[0], w.shape[0]))
    check_same_dtype("x", x, "dy", dy)
    has_bias = check_bool("has_bias", has_bias)
    return (np.einsum("no,oi->ni", dy, w), np.einsum("no,ni->oi", dy, x),
            np.einsum("no->o", dy) if has_bias else None)


# ---- fast path: BLAS through NumPy's matmul ----
def linear_forward(x, w, b=None):
    """``y = x @ w.T + b``; ``x (N, in)``, ``w (out, in)``, ``b (out,)`` or None -> ``y (N, out)``."""
    x, w, b = _check(x, w, b)
    y = x @ w.T
    if b is not None:
        y += b
    _check_result("x", "y = x @ w.T + b", y)
    return y


def _check_result(name: str, what: str, *arrays) -> None:
    for a in arrays:
        if a is not None and a.size and not np.isfinite(a).all():
            raise ValueError(f"{name}: {what} overflowed {a.dtype} (inputs too large)")


def linear_backward(dy, x, w, has_bias, need_dx=True):
    """Gradients of :func:`linear_forward`: ``(dx, dw, db)`` = ``(dy @ w, dy.T @ x, dy.sum(0))``.

    ``db`` is None when ``has_bias`` is False, ``dx`` when ``need_dx`` is False (an input that needs
    no gradient: one GEMM fewer).
    """
    x, w, _ = _check(x, w, None)
    dy = check_array("dy", dy, ndim=2, dtypes=FLOAT_DTYPES, shape=(x.shape[0], w.shape[0]))
    check_same_dtype("x", x, "dy", dy)
    has_bias = check_bool("has_bias", has_bias)
    need_dx = check_bool("need_dx", need_dx)
    dx = dy @ w if need_dx else None
    dw = dy.T @ x
    with np.errstate(over="ignore"):
        db = dy.sum(axis=0, dtype=np.float64).astype(dy.dtype) if has_bias else None
    _check_result("dy", "a gradient (dy @ w, dy.T @ x or the sum of dy)", dx, dw, db)
    return dx, dw, db
