"""Norse's forward-Euler LIF neurons: current-based ``LIF`` and ``LIFBox`` (SPEC §2.1 presets).

Norse (``norse.torch``, version 1.1.0) integrates the continuous LIF equations with one forward-Euler
step of length ``dt`` per time step. Unlike :mod:`refsnn.kernels.lif` (a discrete leaky integrator
with the decay written as ``1/tau``), its constants are inverse time constants multiplied by ``dt``,
and ``LIF`` carries a second state, the synaptic current ``I``. Written with
``k_m = dt * tau_mem_inv`` and ``k_s = dt * tau_syn_inv`` (each product rounded once to the compute
dtype, as torch does with a Python ``dt`` and a 0-d parameter tensor), per step ``t`` over a
time-major input ``X[t]`` of shape ``[T, ...]``:

``LIF`` (``norse/torch/functional/lif.py``, ``lif_feed_forward_step``; module ``norse.torch.LIF`` /
``LIFCell``)::

    J[t] = I[t-1] + X[t]                                  (current jump first: i_new)
    H[t] = V[t-1] + k_m ((v_leak - V[t-1]) + J[t])        (membrane decay: v_decayed)
    I[t] = J[t] + (-k_s) J[t]                             (current decay: i_decayed)
    S[t] = Heaviside(H[t] - v_th), fire on ">"            (threshold)
    V[t] = (1 - S[t]) H[t] + S[t] v_reset                 (reset; not detached in Norse)
    V[-1] = v0 (default v_leak), I[-1] = i0 (default 0)

``LIFBox`` (``norse/torch/functional/lif_box.py``, ``lif_box_feed_forward_step`` with its default
``reset_value``; module ``norse.torch.LIFBoxCell``) has no current: the input drives the membrane
directly::

    H[t] = V[t-1] + k_m ((X[t] + v_leak) - V[t-1])
    S[t] = Heaviside(H[t] - v_th),  V[t] = (1 - S[t]) H[t] + S[t] v_reset,  V[-1] = v0 (default v_leak)

Spikes ``S[t]`` use the surrogate ``sg = surrogate'(H - v_th)`` in the backward. Norse's default
``method="super"`` is SuperSpike, whose backward in Norse 1.1.0 (``functional/superspike.py``) is
``grad / (|x| + 1)^2``: it does **not** use ``LIFParameters.alpha`` (default 100), so it is
refsnn's ``fast_sigmoid`` with ``alpha = 1`` whatever ``alpha`` Norse is given.

Backward (BPTT, ``L = sum(grad_s * S)``; ``gV[T-1] = gI[T-1] = 0``)::

    gH[t]   = (gS[t] + gV[t] (v_reset - H[t])) sg[t] + gV[t] (1 - S[t])
              (the gV[t] (v_reset - H[t]) term is dropped when detach_reset=True)
    LIF:     gJ[t] = gH[t] k_m + gI[t] (1 - k_s);  gX[t] = gJ[t]
             gV[t-1] = gH[t] (1 - k_m);  gI[t-1] = gJ[t]
    LIFBox:  gX[t] = gH[t] k_m;  gV[t-1] = gH[t] (1 - k_m)
    dL/dv0 = gV[-1],  dL/di0 = gI[-1]

The backward needs only ``H``: the initial state reaches it through ``H``. "Relaxed mode" replaces
the Heaviside by the surrogate's primitive, so the backward is the exact gradient (SPEC §4.1).

Below, in this order: the oracles ``*_ref`` (a NumPy loop over T, the equations as written), then
:func:`norse_lif_forward` / :func:`norse_lif_backward` and :func:`norse_lif_box_forward` /
:func:`norse_lif_box_backward` (Numba kernels; constants and branches reach them as the records
:class:`NorseConstants` and :class:`NorseFlags`). Kernel and oracle evaluate the same operations in
the same order as Norse, so spikes and membranes agree exactly with each other and with Norse
(float32 and float64) up to the surrogate's rounding in the gradients. Performance notes (blocking,
threads, determinism): ``docs/performance.md``, "LIF neurons".

Presets (:data:`PRESETS`, :func:`norse_preset`):

* ``norse_lif`` — ``norse.torch.LIF(LIFParameters())`` / ``LIFCell()`` with ``dt=1e-3``:
  ``dt=1e-3, tau_syn_inv=200, tau_mem_inv=100, v_leak=0, v_th=1, v_reset=0, fast_sigmoid(1),
  detach_reset=False``; initial state ``v0 = v_leak``, ``i0 = 0``.
* ``norse_lif_box`` — ``norse.torch.LIFBoxCell(LIFBoxParameters())`` with ``dt=1e-3``:
  ``dt=1e-3, tau_mem_inv=100, v_leak=0, v_th=1, v_reset=0, fast_sigmoid(1), detach_reset=False``;
  ``v0 = v_leak``.

refsnn requires ``0 < k_m <= 1`` and ``0 < k_s <= 1`` (a larger forward-Euler step overshoots the
rest value and oscillates; Norse accepts it) and ``v_reset < v_th``, like :class:`LIFParams`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numba
import numpy as np

from refsnn._checks import check_array, check_choice, check_float, check_same_dtype, check_same_shape
from refsnn.kernels import surrogate as sg
from refsnn.kernels._args import check_bool, initial_state

__all__ = [
    "NorseLIFParams", "NorseLIFBoxParams", "PRESETS", "norse_preset",
    "norse_lif_forward", "norse_lif_backward", "norse_lif_forward_ref", "norse_lif_backward_ref",
    "norse_lif_box_forward", "norse_lif_box_backward", "norse_lif_box_forward_ref",
    "norse_lif_box_backward_ref",
]


def _check_common(p) -> None:
    check_float("dt", p.dt, lo=0.0, lo_open=True)
    check_float("tau_mem_inv", p.tau_mem_inv, lo=0.0, lo_open=True)
    if p.dt * p.tau_mem_inv > 1.0:
        raise ValueError(f"tau_mem_inv: expected dt * tau_mem_inv <= 1 (a forward-Euler step past the rest "
                         f"value oscillates), got {p.dt} * {p.tau_mem_inv} = {p.dt * p.tau_mem_inv}")
    check_float("v_leak", p.v_leak)
    check_float("v_th", p.v_th)
    check_float("v_reset", p.v_reset)
    if p.v_reset >= p.v_th:
        raise ValueError(f"v_reset: expected a value below v_th={p.v_th}, got {p.v_reset}")
    check_choice("surrogate", p.surrogate, sg.NAMES)
    if p.alpha is not None:
        check_float("alpha", p.alpha, lo=0.0, lo_open=True)
    if not isinstance(p.detach_reset, (bool, np.bool_)):
        raise TypeError(f"detach_reset: expected a bool, got {type(p.detach_reset).__name__}")


@dataclass(frozen=True)
class NorseLIFParams:
    """Parameters of Norse's current-based ``LIF`` (module docstring). Defaults: Norse 1.1.0's
    ``LIFParameters()`` with ``dt=1e-3`` and its SuperSpike surrogate (= ``fast_sigmoid``, alpha 1).
    ``alpha=None`` takes the surrogate's default from SPEC §2.2."""

    dt: float = 1e-3
    tau_syn_inv: float = 200.0
    tau_mem_inv: float = 100.0
    v_leak: float = 0.0
    v_th: float = 1.0
    v_reset: float = 0.0
    surrogate: str = "fast_sigmoid"
    alpha: float | None = 1.0
    detach_reset: bool = False

    def __post_init__(self):
        _check_common(self)
        check_float("tau_syn_inv", self.tau_syn_inv, lo=0.0, lo_open=True)
        if self.dt * self.tau_syn_inv > 1.0:
            raise ValueError(f"tau_syn_inv: expected dt * tau_syn_inv <= 1, got {self.dt} * {self.tau_syn_inv} "
                             f"= {self.dt * self.tau_syn_inv}")

    @property
    def surrogate_alpha(self) -> float:
        return sg.DEFAULT_ALPHA[self.surrogate] if self.alpha is None else float(self.alpha)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NorseLIFBoxParams:
    """Parameters of Norse's ``LIFBox`` (no synaptic current; module docstring). Defaults: Norse
    1.1.0's ``LIFBoxParameters()`` with ``dt=1e-3`` and SuperSpike (= ``fast_sigmoid``, alpha 1)."""

    dt: float = 1e-3
    tau_mem_inv: float = 100.0
    v_leak: float = 0.0
    v_th: float = 1.0
    v_reset: float = 0.0
    surrogate: str = "fast_sigmoid"
    alpha: float | None = 1.0
    detach_reset: bool = False

    def __post_init__(self):
        _check_common(self)

    @property
    def surrogate_alpha(self) -> float:
        return sg.DEFAULT_ALPHA[self.surrogate] if self.alpha is None else float(self.alpha)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict = {
    "norse_lif": NorseLIFParams(),
    "norse_lif_box": NorseLIFBoxParams(),
}


def norse_preset(name: str, **overrides):
    """A preset from :data:`PRESETS` (``"norse_lif"`` or ``"norse_lif_box"``) with fields overridden,
    e.g. ``norse_preset("norse_lif", dt=5e-4, v_th=0.8)``."""
    check_choice("name", name, tuple(PRESETS))
    return replace(PRESETS[name], **overrides)


class NorseConstants(NamedTuple):
    """The equations' constants (module docstring), each rounded once to the compute dtype."""

    k_m: np.floating            # dt * tau_mem_inv
    neg_k_s: np.floating        # -(dt * tau_syn_inv): I[t] = J[t] + (-k_s) J[t]  (0 for LIFBox)
    v_leak: np.floating
    v_th: np.floating
    v_reset: np.floating
    alpha: np.floating          # surrogate alpha
    one_minus_k_m: np.floating  # gV[t-1] = gH[t] (1 - k_m)
    one_minus_k_s: np.floating  # gJ[t] = gH[t] k_m + gI[t] (1 - k_s)


def _constants(p, dtype) -> NorseConstants:
    d = np.dtype(dtype).type
    with np.errstate(over="ignore", under="ignore"):
        km = d(p.dt) * d(p.tau_mem_inv)
        ks = d(p.dt) * d(getattr(p, "tau_syn_inv", 0.0))
        prm = np.array([km, -ks, p.v_leak, p.v_th, p.v_reset, p.surrogate_alpha, d(1) - km, d(1) - ks],
                       dtype=dtype)
    k = NorseConstants(*prm)
    if not (np.isfinite(prm).all() and k.k_m > 0):
        raise ValueError(f"params: dt * tau_mem_inv, v_leak, v_th, v_reset and alpha must be finite (and "
                         f"dt * tau_mem_inv > 0) in {np.dtype(dtype)}, got {p}")
    return k


def _check_params(params, cls):
    if not isinstance(params, cls):
        raise TypeError(f"params: expected refsnn.kernels.norse_lif.{cls.__name__}, got {type(params).__name__}")
    return params


def _prepare(name, x, params, cls):
    params = _check_params(params, cls)
    x = check_array(name, x, ndim_min=1, finite=False)  # NaN/inf: detected inside the kernels
    if x.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one time step, got shape {x.shape}")
    return np.ascontiguousarray(x), params


def _prepare_backward(grad_s, h, params, cls):
    grad_s, params = _prepare("grad_s", grad_s, params, cls)
    h = check_array("h", h, finite=False)
    check_same_shape("grad_s", grad_s, "h", h)
    check_same_dtype("grad_s", grad_s, "h", h)
    return grad_s, np.ascontiguousarray(h), params


# ---------------------------------------------------------------------------------------------
# Oracles: a NumPy loop over T, the equations as written.
# ---------------------------------------------------------------------------------------------

def _consts(p, dtype):
    d = np.dtype(dtype).type
    _constants(p, dtype)  # the same range checks as the kernels
    km = d(p.dt) * d(p.tau_mem_inv)
    ks = d(p.dt) * d(getattr(p, "tau_syn_inv", 0.0))
    return km, ks, d(p.v_leak), d(p.v_th), d(p.v_reset), d(1)


def _fire_ref(z, p, relaxed):
    if relaxed:
        return sg.primitive(p.surrogate, z, p.surrogate_alpha)
    return sg.heaviside(z, ">")


def _forward_ref(x, p, v0, i0, relaxed, synaptic):
    relaxed = check_bool("relaxed", relaxed)
    v = initial_state("v0", v0, x, p.v_leak)  # flat [N], before x is viewed as [T, N]
    cur = initial_state("i0", i0, x, 0.0) if synaptic else None
    shape = x.shape
    x = x.reshape(shape[0], -1)
    km, ks, vl, vth, vr, one = _consts(p, x.dtype)
    s_all, h_all, i_all = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    for t in range(x.shape[0]):
        if synaptic:
            j = cur + x[t]
            h = v + km * ((vl - v) + j)
            cur = j + (-ks) * j
            i_all[t] = cur
        else:
            h = v + km * ((x[t] + vl) - v)
        s = _fire_ref(h - vth, p, relaxed)
        v = (one - s) * h + s * vr
        s_all[t], h_all[t] = s, h
    return s_all.reshape(shape), h_all.reshape(shape), i_all.reshape(shape)


def _backward_ref(grad_s, h, p, relaxed, synaptic):
    relaxed = check_bool("relaxed", relaxed)
    shape = grad_s.shape
    grad_s, h = grad_s.reshape(shape[0], -1), h.reshape(shape[0], -1)
    km, ks, _, vth, vr, one = _consts(p, grad_s.dtype)
    gx = np.empty_like(grad_s)
    gv = np.zeros(grad_s.shape[1:], grad_s.dtype)
    gi = np.zeros(grad_s.shape[1:], grad_s.dtype)
    for t in range(grad_s.shape[0] - 1, -1, -1):
        z = h[t] - vth
        d = sg.grad(p.surrogate, z, p.surrogate_alpha)
        s = _fire_ref(z, p, relaxed)
        if p.detach_reset:
            gh = grad_s[t] * d + gv * (one - s)
        else:
            gh = (grad_s[t] + gv * (vr - h[t])) * d + gv * (one - s)
        if synaptic:
            gi = gh * km + gi * (one - ks)
            gx[t] = gi
        else:
            gx[t] = gh * km
        gv = gh * (one - km)
    return gx.reshape(shape), gv.reshape(shape[1:]), gi.reshape(shape[1:])


def norse_lif_forward_ref(x, params: NorseLIFParams = PRESETS["norse_lif"], *, v0=None, i0=None,
                          relaxed: bool = False):
    """Oracle for :func:`norse_lif_forward` (same signature and results)."""
    x, p = _prepare("x", x, params, NorseLIFParams)
    return _forward_ref(x, p, v0, i0, relaxed, True)


def norse_lif_backward_ref(grad_s, h, params: NorseLIFParams = PRESETS["norse_lif"], *, relaxed: bool = False):
    """Oracle for :func:`norse_lif_backward` (same signature and results)."""
    grad_s, h, p = _prepare_backward(grad_s, h, params, NorseLIFParams)
    return _backward_ref(grad_s, h, p, relaxed, True)


def norse_lif_box_forward_ref(x, params: NorseLIFBoxParams = PRESETS["norse_lif_box"], *, v0=None,
                              relaxed: bool = False):
    """Oracle for :func:`norse_lif_box_forward` (same signature and results)."""
    x, p = _prepare("x", x, params, NorseLIFBoxParams)
    s, h, _ = _forward_ref(x, p, v0, None, relaxed, False)
    return s, h


def norse_lif_box_backward_ref(grad_s, h, params: NorseLIFBoxParams = PRESETS["norse_lif_box"], *,
                               relaxed: bool = False):
    """Oracle for :func:`norse_lif_box_backward` (same signature and results)."""
    grad_s, h, p = _prepare_backward(grad_s, h, params, NorseLIFBoxParams)
    gx, gv, _ = _backward_ref(grad_s, h, p, relaxed, False)
    return gx, gv


# ---------------------------------------------------------------------------------------------
# Fast path: Numba kernels over [T, N] (N = product of the non-time axes), neurons in parallel
# blocks (docs/performance.md, "LIF neurons").
# ---------------------------------------------------------------------------------------------
class NorseFlags(NamedTuple):
    """Which form of the equations a kernel call evaluates; ints for Numba."""

    detach_reset: int  # 1: drop the gV[t] (v_reset - H[t]) term of gH[t]
    relaxed: int       # 1: S = surrogate primitive instead of the Heaviside
    surrogate: int     # surrogate code, refsnn.kernels.surrogate.CODES


def _flags(p, relaxed: bool) -> NorseFlags:
    return NorseFlags(detach_reset=int(p.detach_reset), relaxed=int(relaxed), surrogate=sg.CODES[p.surrogate])


_BLOCK = 2048


@numba.njit(cache=True, inline="always")
def _nonfinite(v):
    for i in range(v.size):
        if not np.isfinite(v[i]):
            return 1
    return 0


@numba.njit(cache=True, inline="always")
def _fire(z, relaxed, code, a, c):
    if relaxed:
        return sg._prim_nb(code, z, a, c)
    return c.one if z > c.zero else c.zero


@numba.njit(cache=True, parallel=True)
def _lif_forward_nb(x, v0, i0, s_out, h_out, i_out, kc, f, c, bad, synaptic):
    T, N = x.shape
    km, nks, vl, vth, vr, a = kc.k_m, kc.neg_k_s, kc.v_leak, kc.v_th, kc.v_reset, kc.alpha
    relaxed, code = f.relaxed, f.surrogate
    one = c.one
    nblk = (N + _BLOCK - 1) // _BLOCK
    for b in numba.prange(nblk):
        j0 = b * _BLOCK
        n = min(N, j0 + _BLOCK) - j0
        v = np.empty(n, dtype=x.dtype)
        cur = np.empty(n, dtype=x.dtype)
        v[:] = v0[j0:j0 + n]
        cur[:] = i0[j0:j0 + n]
        for t in range(T):
            xt = x[t, j0:j0 + n]
            ho = h_out[t, j0:j0 + n]
            so = s_out[t, j0:j0 + n]
            if synaptic:
                io = i_out[t, j0:j0 + n]
                for k in range(n):
                    vk = v[k]
                    j = cur[k] + xt[k]                    # current jump
                    h = vk + km * ((vl - vk) + j)         # membrane decay
                    cur[k] = j + nks * j                  # current decay
                    s = _fire(h - vth, relaxed, code, a, c)
                    v[k] = (one - s) * h + s * vr         # reset
                    ho[k] = h
                    so[k] = s
                    io[k] = cur[k]
            else:
                for k in range(n):
                    vk = v[k]
                    h = vk + km * ((xt[k] + vl) - vk)
                    s = _fire(h - vth, relaxed, code, a, c)
                    v[k] = (one - s) * h + s * vr
                    ho[k] = h
                    so[k] = s
        bad[b] = _nonfinite(v) | _nonfinite(cur)


@numba.njit(cache=True, parallel=True)
def _lif_backward_nb(gs, h_in, gx_out, gv_out, gi_out, kc, f, c, bad, synaptic):
    T, N = gs.shape
    km, vth, vr, a, mkm, mks = kc.k_m, kc.v_th, kc.v_reset, kc.alpha, kc.one_minus_k_m, kc.one_minus_k_s
    detach, relaxed, code = f.detach_reset, f.relaxed, f.surrogate
    one = c.one
    nblk = (N + _BLOCK - 1) // _BLOCK
    for b in numba.prange(nblk):
        j0 = b * _BLOCK
        n = min(N, j0 + _BLOCK) - j0
        gv = np.zeros(n, dtype=gs.dtype)   # dL/dV[t]
        gi = np.zeros(n, dtype=gs.dtype)   # dL/dI[t]
        hk = np.zeros(n, dtype=gs.dtype)   # sum of H - H: NaN iff some H[t] was not finite
        for t in range(T - 1, -1, -1):
            ht = h_in[t, j0:j0 + n]
            gst = gs[t, j0:j0 + n]
            gxt = gx_out[t, j0:j0 + n]
            for k in range(n):
                h = ht[k]
                hk[k] += h - h
                z = h - vth
                d = sg._grad_nb(code, z, a, c)
                s = _fire(z, relaxed, code, a, c)
                g = gv[k]
                if detach:
                    gh = gst[k] * d + g * (one - s)
                else:
                    gh = (gst[k] + g * (vr - h)) * d + g * (one - s)
                if synaptic:
                    gj = gh * km + gi[k] * mks
                    gxt[k] = gj
                    gi[k] = gj
                else:
                    gxt[k] = gh * km
                gv[k] = gh * mkm
        gv_out[j0:j0 + n] = gv
        gi_out[j0:j0 + n] = gi
        bad[b] = _nonfinite(gv) | _nonfinite(gi) | _nonfinite(hk)


def _run_forward(x, params, v0, i0, relaxed, synaptic):
    relaxed = check_bool("relaxed", relaxed)
    T = x.shape[0]
    n = x.size // T
    v0 = initial_state("v0", v0, x, params.v_leak)
    i0 = initial_state("i0", i0, x, 0.0) if synaptic else np.zeros(n, x.dtype)
    s, h = np.empty_like(x), np.empty_like(x)
    i = np.empty_like(x) if synaptic else np.empty((1, n), x.dtype)
    bad = np.zeros((n + _BLOCK - 1) // _BLOCK, np.int64)
    _lif_forward_nb(x.reshape(T, n), v0, i0, s.reshape(T, n), h.reshape(T, n), i.reshape(-1, n),
                    _constants(params, x.dtype), _flags(params, relaxed), sg.constants(x.dtype), bad,
                    synaptic)
    if bad.any():
        raise ValueError("x: contains NaN or infinity (or values so large the state overflowed)")
    return s, h, i


def _run_backward(grad_s, h, params, relaxed, synaptic):
    relaxed = check_bool("relaxed", relaxed)
    T = grad_s.shape[0]
    n = grad_s.size // T
    gx = np.empty_like(grad_s)
    gv, gi = np.empty(n, grad_s.dtype), np.empty(n, grad_s.dtype)
    bad = np.zeros((n + _BLOCK - 1) // _BLOCK, np.int64)
    _lif_backward_nb(grad_s.reshape(T, n), h.reshape(T, n), gx.reshape(T, n), gv, gi,
                     _constants(params, grad_s.dtype), _flags(params, relaxed),
                     sg.constants(grad_s.dtype), bad, synaptic)
    if bad.any():
        raise ValueError("grad_s: grad_s or h contains NaN or infinity (or the gradient overflowed)")
    step = grad_s.shape[1:]
    return gx, gv.reshape(step), gi.reshape(step)


def norse_lif_forward(x: np.ndarray, params: NorseLIFParams = PRESETS["norse_lif"], *, v0=None, i0=None,
                      relaxed: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run Norse's current-based LIF over a time-major input (equations in the module docstring).

    Parameters
    ----------
    x : ndarray, float32 or float64, shape ``[T, ...]``
        Input current ``X[t]`` added to the synaptic current at step ``t`` (Norse's ``input_tensor``).
    params : NorseLIFParams
    v0, i0 : None, real number, or ndarray of ``x``'s dtype broadcastable to ``x.shape[1:]``
        Initial membrane ``V[-1]`` (default ``v_leak``) and synaptic current ``I[-1]`` (default 0).
    relaxed : bool
        Use the surrogate's primitive instead of the Heaviside (gradient checks).

    Returns
    -------
    s : ndarray ``[T, ...]``, x's dtype
        Spikes ``S[t]``.
    h : ndarray ``[T, ...]``
        Membrane before reset ``H[t]`` (Norse's ``v_decayed``): what :func:`norse_lif_backward` needs.
    i : ndarray ``[T, ...]``
        Synaptic current after step ``t``, ``I[t]`` (Norse's ``state.i``). The membrane after
        reset (Norse's ``state.v``) is ``(1 - s) h + s v_reset``.
    """
    x, params = _prepare("x", x, params, NorseLIFParams)
    return _run_forward(x, params, v0, i0, relaxed, True)


def norse_lif_backward(grad_s: np.ndarray, h: np.ndarray, params: NorseLIFParams = PRESETS["norse_lif"], *,
                       relaxed: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BPTT through Norse's current-based LIF (equations in the module docstring).

    Parameters
    ----------
    grad_s : ndarray ``[T, ...]``, float32 or float64
        ``dL/dS``.
    h : ndarray, same shape and dtype
        ``H`` from :func:`norse_lif_forward` with the same params and mode.

    Returns
    -------
    grad_x : ndarray ``[T, ...]``
        ``dL/dX`` (``X[t]`` reaches ``H[t]`` in its own step: the current jumps before the decay).
    grad_v0, grad_i0 : ndarray ``grad_s.shape[1:]``
        ``dL/dv0`` and ``dL/di0``, per neuron (sum over the axes ``v0``/``i0`` were broadcast along).
    """
    grad_s, h, params = _prepare_backward(grad_s, h, params, NorseLIFParams)
    return _run_backward(grad_s, h, params, relaxed, True)


def norse_lif_box_forward(x: np.ndarray, params: NorseLIFBoxParams = PRESETS["norse_lif_box"], *, v0=None,
                          relaxed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run Norse's ``LIFBox`` (no synaptic current) over a time-major input.

    Parameters
    ----------
    x : ndarray, float32 or float64, shape ``[T, ...]``
        Input ``X[t]`` (Norse's ``input_tensor``), driving the membrane directly.
    params : NorseLIFBoxParams
    v0 : None, real number, or ndarray of ``x``'s dtype broadcastable to ``x.shape[1:]``
        Initial membrane ``V[-1]`` (default ``v_leak``).
    relaxed : bool

    Returns
    -------
    s, h : ndarray ``[T, ...]``, x's dtype
        Spikes ``S[t]`` and the membrane before reset ``H[t]``.
    """
    x, params = _prepare("x", x, params, NorseLIFBoxParams)
    s, h, _ = _run_forward(x, params, v0, None, relaxed, False)
    return s, h


def norse_lif_box_backward(grad_s: np.ndarray, h: np.ndarray, params: NorseLIFBoxParams = PRESETS["norse_lif_box"],
                           *, relaxed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """BPTT through Norse's ``LIFBox``: ``(dL/dX [T, ...], dL/dv0 grad_s.shape[1:])``."""
    grad_s, h, params = _prepare_backward(grad_s, h, params, NorseLIFBoxParams)
    gx, gv, _ = _run_backward(grad_s, h, params, relaxed, False)
    return gx, gv


# ---------------------------------------------------------------------------------------------

def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        x = np.linspace(-1, 40, 24, dtype=dtype).reshape(3, 2, 4)
        for relaxed in (False, True):
            s, h, _ = norse_lif_forward(x, relaxed=relaxed)
            norse_lif_backward(np.ones_like(s), h, relaxed=relaxed)
            s, h = norse_lif_box_forward(x, relaxed=relaxed)
            norse_lif_box_backward(np.ones_like(s), h, relaxed=relaxed)
