"""Surrogate gradients of the spike function (SPEC §2.2).

The spike is ``S = Heaviside(x)`` with ``x = H - v_th`` (the membrane above threshold). Its true
derivative is zero almost everywhere, so STBP replaces ``dS/dx`` by a smooth ``grad(x)``. Each
surrogate also has a ``primitive(x)`` whose derivative is exactly ``grad``: replacing the Heaviside
by the primitive in the forward pass ("relaxed mode") turns the network into an ordinary smooth
function, whose gradient the unchanged hand-written backward must reproduce (checked against
finite differences). With ``a = alpha``:

=============  ====================================  ==============================================  =====
name           grad(x)                               primitive(x)                                    alpha
=============  ====================================  ==============================================  =====
sigmoid        ``a sig(a x) (1 - sig(a x))``         ``sig(a x)``                                    4
atan           ``(a/2) / (1 + (pi a x / 2)^2)``      ``1/2 + atan(pi a x / 2) / pi``                 2
rect           ``a [|x| < 1/(2a)]``                  ``clip(a x + 1/2, 0, 1)``                       1
triangle       ``max(0, a - a^2 |x|)``               ``(a x + 1)^2 / 2`` on ``[-1/a, 0]``,           2
                                                     ``1 - (1 - a x)^2 / 2`` on ``[0, 1/a]``,
                                                     0 below, 1 above
fast_sigmoid   ``1 / (1 + a |x|)^2``                 ``x / (1 + a |x|)`` (range ``(-1/a, 1/a)``)     25
=============  ====================================  ==============================================  =====

Correspondences (see docs/frameworks.md for the cross-checks): ``sigmoid`` is SpikingJelly's
``surrogate.Sigmoid``; ``atan`` is SpikingJelly's ``ATan`` and snnTorch's ``atan`` (default
alpha 2); ``triangle`` is SpikingJelly's ``PiecewiseQuadratic`` and BrainCog's ``QGateGrad`` (the
MSE-NAS neuron's, alpha 2); ``fast_sigmoid`` is snnTorch's ``fast_sigmoid(slope=25)``, whose
primitive is not a (0, 1) step approximation — only its derivative is used in spiking mode, so
this matters only in relaxed mode; ``rect`` is the rectangular window of STBP (Wu et al. 2018).

Two implementations live here, in this order: NumPy functions over arrays (the oracles
:func:`heaviside`, :func:`grad`, :func:`primitive`, and what users call), then scalar Numba functions
``_grad_nb(code, x, a, c)`` / ``_prim_nb(code, x, a, c)`` that the fused LIF kernels inline (``code``:
:data:`CODES`; ``c``: the :class:`Literals` in the compute dtype). ``x`` and ``a`` must share a dtype
in the Numba versions (float32 stays float32). Performance notes: ``docs/performance.md``, "LIF
neurons".
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array, check_choice, check_float

#: name -> integer code used inside Numba kernels
CODES = {"sigmoid": 0, "atan": 1, "rect": 2, "triangle": 3, "fast_sigmoid": 4}
#: name -> default alpha (SPEC §2.2)
DEFAULT_ALPHA = {"sigmoid": 4.0, "atan": 2.0, "rect": 1.0, "triangle": 2.0, "fast_sigmoid": 25.0}
NAMES = tuple(CODES)


def _args(name, x, alpha):
    check_choice("name", name, NAMES)
    x = check_array("x", x)
    a = DEFAULT_ALPHA[name] if alpha is None else check_float("alpha", alpha, lo=0.0, lo_open=True)
    with np.errstate(over="ignore", under="ignore"):
        at = x.dtype.type(a)
    if not (np.isfinite(at) and at > 0):
        raise ValueError(f"alpha: expected a positive value representable in {x.dtype}, got {a}")
    return x, at


def heaviside(x: np.ndarray, threshold: str = ">") -> np.ndarray:
    """Spike function: ``1`` where ``x > 0`` (``threshold=">"``) or ``x >= 0`` (``">="``), else 0.

    Returns an array of ``x``'s dtype. SpikingJelly fires on ``>=``; snnTorch, Norse, NIR on ``>``.
    """
    check_choice("threshold", threshold, (">", ">="))
    x = check_array("x", x)
    return ((x > 0) if threshold == ">" else (x >= 0)).astype(x.dtype)


def grad(name: str, x: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """Surrogate derivative ``dS/dx`` of surrogate ``name`` at ``x`` (same shape and dtype)."""
    x, a = _args(name, x, alpha)
    one, half = x.dtype.type(1), x.dtype.type(0.5)
    if name == "sigmoid":
        sg = one / (one + np.exp(-a * x))
        return a * sg * (one - sg)
    if name == "atan":
        u = x.dtype.type(math.pi / 2) * a * x
        return (a * half) / (one + u * u)
    if name == "rect":
        return np.where(np.abs(x) < half / a, a, x.dtype.type(0)).astype(x.dtype)
    if name == "triangle":
        return np.maximum(x.dtype.type(0), a - a * a * np.abs(x))
    # fast_sigmoid
    d = one + a * np.abs(x)
    return one / (d * d)


def primitive(name: str, x: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """Smooth stand-in for the Heaviside whose derivative is :func:`grad` (relaxed mode)."""
    x, a = _args(name, x, alpha)
    one, half, zero = x.dtype.type(1), x.dtype.type(0.5), x.dtype.type(0)
    if name == "sigmoid":
        return one / (one + np.exp(-a * x))
    if name == "atan":
        return half + np.arctan(x.dtype.type(math.pi / 2) * a * x) / x.dtype.type(math.pi)
    if name == "rect":
        return np.clip(a * x + half, zero, one)
    if name == "triangle":
        lo = a * x + one
        hi = one - a * x
        return np.where(x <= -one / a, zero,
                        np.where(x <= zero, half * lo * lo,
                                 np.where(x < one / a, one - half * hi * hi, one))).astype(x.dtype)
    return x / (one + a * np.abs(x))


# ---- fast path: scalar Numba versions, inlined by the fused LIF kernels -------------------------
class Literals(NamedTuple):
    """The literals of the table above in the compute dtype (:func:`constants`), so that float32
    arithmetic inside Numba never promotes to float64 (a float64 literal would)."""

    zero: np.floating
    one: np.floating
    half: np.floating
    half_pi: np.floating
    pi: np.floating


def constants(dtype) -> Literals:
    """``Literals(0, 1, 1/2, pi/2, pi)`` in ``dtype``: the literals the Numba surrogates need."""
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {np.dtype(dtype)}")
    return Literals(*np.array([0.0, 1.0, 0.5, math.pi / 2, math.pi], dtype=dtype))


@numba.njit(cache=True, inline="always")
def _grad_nb(code, x, a, c):
    if code == 0:  # sigmoid
        sg = c.one / (c.one + math.exp(-a * x))
        return a * sg * (c.one - sg)
    elif code == 1:  # atan
        u = c.half_pi * a * x
        return (a * c.half) / (c.one + u * u)
    elif code == 2:  # rect
        return a if abs(x) < c.half / a else c.zero
    elif code == 3:  # triangle
        return max(c.zero, a - a * a * abs(x))
    else:  # fast_sigmoid
        d = c.one + a * abs(x)
        return c.one / (d * d)


@numba.njit(cache=True, inline="always")
def _prim_nb(code, x, a, c):
    one, half, zero = c.one, c.half, c.zero
    if code == 0:
        return one / (one + math.exp(-a * x))
    elif code == 1:
        return half + math.atan(c.half_pi * a * x) / c.pi
    elif code == 2:
        return min(one, max(zero, a * x + half))
    elif code == 3:
        if x <= -one / a:
            return zero
        elif x <= zero:
            lo = a * x + one
            return half * lo * lo
        elif x < one / a:
            hi = one - a * x
            return one - half * hi * hi
        return one
    else:
        return x / (one + a * abs(x))


@numba.njit(cache=True)
def _apply_nb(code, x, a, c, out, want_grad):
    xf = x.ravel()
    of = out.ravel()
    for i in range(xf.size):
        of[i] = _grad_nb(code, xf[i], a, c) if want_grad else _prim_nb(code, xf[i], a, c)


def grad_nb(name: str, x: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """:func:`grad` computed by the scalar Numba code the LIF kernels inline (tested against it)."""
    x, a = _args(name, x, alpha)
    out = np.empty(x.shape, x.dtype)
    _apply_nb(CODES[name], np.ascontiguousarray(x).reshape(-1), a, constants(x.dtype), out.reshape(-1), True)
    return out


def primitive_nb(name: str, x: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """:func:`primitive` computed by the scalar Numba code the LIF kernels inline."""
    x, a = _args(name, x, alpha)
    out = np.empty(x.shape, x.dtype)
    _apply_nb(CODES[name], np.ascontiguousarray(x).reshape(-1), a, constants(x.dtype), out.reshape(-1), False)
    return out
