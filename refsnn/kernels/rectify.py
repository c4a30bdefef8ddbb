"""E/I rectifier of an MSE-NAS motif edge (SPEC §6.2, seed eq. 1): Numba kernels with NumPy oracles.

An edge ``u -> v`` carries ``sign(u) * relu(BN(conv(S_u)))``; ``sign = -1`` iff the presynaptic
population ``u`` is inhibitory (Dale's law). This module is the ``sign * relu`` part:

* forward  ``y = sign * relu(x) = sign * (x if x > 0 else 0)``, ``mask = x > 0``
* backward ``dx = sign * (dy if mask else 0)``

Shapes: any; ``x``, ``y``, ``dy``, ``dx`` share one shape and one float dtype, ``mask`` is bool of
that shape. Both passes are exact (no rounding: a selection and a sign change), so the kernels equal
their oracles bit for bit, including the sign of zero (``-0.0`` where ``sign = -1`` and the input
is not positive). A NaN or infinite input is an error (``ValueError`` naming ``x``), detected in the
same pass: ``relu`` would turn a NaN into a silent 0. This is the check that the network layers skip
in conv and BN (``check_finite=False``, see :func:`refsnn.kernels.conv.conv2d_forward`): every
path from a conv to a LIF population ends in this rectifier or directly in the LIF kernel, which
checks its input current itself. The oracles, like NumPy, give 0 for NaN.

Below, in this order: the oracles :func:`rectify_forward_ref` / :func:`rectify_backward_ref`, then
the Numba kernels and :func:`rectify_forward` / :func:`rectify_backward`. Performance notes:
``docs/performance.md``, "BatchNorm, pooling, rectifier".
"""
from __future__ import annotations

import numba
import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array

__all__ = ["rectify_forward", "rectify_backward", "rectify_forward_ref", "rectify_backward_ref"]


def _check_sign(sign):
    if not isinstance(sign, (int, float, np.integer, np.floating)):
        raise TypeError(f"sign: expected +1 (excitatory) or -1 (inhibitory), got {type(sign).__name__}")
    if isinstance(sign, (bool, np.bool_)) or sign not in (1, -1):
        raise ValueError(f"sign: expected +1 (excitatory) or -1 (inhibitory), got {sign!r}")
    return int(sign)


# ---- oracles (plain NumPy) ----
def rectify_forward_ref(x, sign=1):
    """Oracle: ``mask = x > 0``, ``y = where(mask, x, 0)``, negated in place when ``sign = -1``."""
    x = check_array("x", x, dtypes=FLOAT_DTYPES, finite=False)
    sign = _check_sign(sign)
    mask = x > 0
    y = np.where(mask, x, 0).astype(x.dtype, copy=False)
    if sign < 0:
        np.negative(y, out=y)
    return y, mask


def rectify_backward_ref(dy, mask, sign=1):
    """Oracle: ``where(mask, dy, 0)``, negated when ``sign = -1``."""
    dy = check_array("dy", dy, dtypes=FLOAT_DTYPES, finite=False)
    check_array("mask", mask, dtypes=(np.dtype(np.bool_),), shape=dy.shape, finite=False)
    sign = _check_sign(sign)
    dx = np.where(mask, dy, 0).astype(dy.dtype, copy=False)
    if sign < 0:
        np.negative(dx, out=dx)
    return dx


# ---- fast path: Numba kernels and the public functions ----
@numba.njit(cache=True)
def _rectify_fwd(x, negate, y, mask):
    """Flat arrays: ``mask = x > 0``; ``y = (-1 if negate else 1) * where(mask, x, 0)``.
    Returns the number of non-finite entries of ``x`` (counted in the same pass)."""
    bad = 0
    for i in range(x.size):
        v = x[i]
        if not np.isfinite(v):
            bad += 1
        m = v > 0
        mask[i] = m
        if m:
            y[i] = -v if negate else v
        else:
            y[i] = -0.0 if negate else 0.0
    return bad


@numba.njit(cache=True)
def _rectify_bwd(dy, mask, negate, dx):
    """Flat arrays: ``dx = (-1 if negate else 1) * where(mask, dy, 0)``."""
    for i in range(dy.size):
        if mask[i]:
            g = dy[i]
            dx[i] = -g if negate else g
        else:
            dx[i] = -0.0 if negate else 0.0


def rectify_forward(x, sign=1):
    """``(y, mask)`` with ``y = sign * relu(x)``, ``mask = x > 0`` (bool, for the backward pass).

    ``x``: float32/float64 array of any shape (finite: ``ValueError`` otherwise); ``sign``: +1 or -1.
    """
    x = check_array("x", x, dtypes=FLOAT_DTYPES, finite=False)
    sign = _check_sign(sign)
    xc = np.ascontiguousarray(x)
    y = np.empty(x.shape, x.dtype)
    mask = np.empty(x.shape, np.bool_)
    if _rectify_fwd(xc.reshape(-1), sign < 0, y.reshape(-1), mask.reshape(-1)):
        raise ValueError("x: contains NaN or infinity")
    return y, mask


def rectify_backward(dy, mask, sign=1):
    """``dx = sign * where(mask, dy, 0)``: gradient of :func:`rectify_forward` (``mask`` from it)."""
    dy = check_array("dy", dy, dtypes=FLOAT_DTYPES, finite=False)
    mask = check_array("mask", mask, dtypes=(np.dtype(np.bool_),), shape=dy.shape, finite=False)
    sign = _check_sign(sign)
    dx = np.empty(dy.shape, dy.dtype)
    _rectify_bwd(np.ascontiguousarray(dy).reshape(-1), np.ascontiguousarray(mask).reshape(-1),
                 sign < 0, dx.reshape(-1))
    return dx


def _warmup() -> None:
    for dt in FLOAT_DTYPES:
        x = np.array([[-1.0, 0.0, 2.0]], dtype=dt)
        for sign in (1, -1):
            y, m = rectify_forward(x, sign)
            rectify_backward(y, m, sign)
