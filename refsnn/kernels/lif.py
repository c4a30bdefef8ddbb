"""Multi-step LIF neuron for deep SNNs: forward and BPTT backward (SPEC §2.1).

Equations (seed 000, "Conv-LIF Dynamics"; SpikingJelly's charge-fire-reset form), per step t over a
time-major input ``X[t]`` of shape ``[T, ...]``::

    charge, decay_input=True :  H[t] = V[t-1] + (X[t] - (V[t-1] - v_r)) / tau
    charge, decay_input=False:  H[t] = V[t-1] - (V[t-1] - v_r) / tau + X[t]
                                (with v_r = 0 this is the seed's V[t] = (1 - 1/tau) V[t-1] + I[t])
    fire                     :  S[t] = Heaviside(H[t] - v_th), ">" or ">=" as configured
    reset, hard (v_reset=v_r):  V[t] = H[t] (1 - S[t]) + v_r S[t]
    reset, soft (v_reset=None): V[t] = H[t] - v_th S[t]          (and v_r = 0 inside charge)
    V[-1] = v0                  (the argument ``v0``; default v_r, 0 for soft reset)

Soft reset after the decay (``subtract_after_decay=True``, snnTorch's ``reset_mechanism="subtract"``;
soft reset only): the threshold is subtracted from the *charged* membrane one step later instead of
from ``V`` before the decay, so no separate ``V`` exists (the state is ``H``)::

    H[t] = charge(H[t-1]) - v_th S[t-1]      (charge as above with v_r = 0, the subtraction last)
    S[t] = Heaviside(H[t] - v_th)
    H[-1] = v0 (default 0),  S[-1] = Heaviside(v0 - v_th)

It differs from the soft reset above by ``(1 - 1/tau) v_th`` per spike (the subtracted threshold is
not decayed).

Backward (BPTT through the membrane; ``sg`` is the surrogate derivative at ``H[t] - v_th``)::

    dV[t]/dH[t]|_S = 1 - S[t] (hard)  or 1 (soft)
    dV[t]/dS[t]    = v_r - H[t] (hard) or -v_th (soft); 0 when detach_reset=True
    gH[t]   = (gS[t] + gV[t] dV/dS) sg[t] + gV[t] dV/dH|_S
    gX[t]   = gH[t] / tau (decay_input=True)  or gH[t] (decay_input=False)
    gV[t-1] = gH[t] (1 - 1/tau),  gV[T-1] = 0
    dL/dv0  = gV[-1] = gH[0] (1 - 1/tau)

and with ``subtract_after_decay`` (``gH[T] = 0``)::

    gH[t]   = gS[t] sg[t] + gH[t+1] (1 - 1/tau) - gH[t+1] v_th sg[t]  (last term 0 if detach_reset)
    gX[t]   = gH[t] / tau or gH[t]
    dL/dv0  = gH[0] (1 - 1/tau) - gH[0] v_th sg(v0 - v_th)           (last term 0 if detach_reset)

The backward needs only ``H`` (and ``v0`` for ``dL/dv0`` in the last form): ``v0`` enters the
gradient with respect to ``X`` only through ``H``.

"Relaxed mode" replaces the Heaviside by the surrogate's primitive in the forward pass, so the
layer is a smooth function and the same backward is its exact gradient (SPEC §4.1).

Below, in this order: the oracles :func:`lif_forward_ref` / :func:`lif_backward_ref` (a vectorised
NumPy loop over T, written as the equations read), then :func:`lif_forward` / :func:`lif_backward`
(fused Numba kernels; the equations' branches reach them as the records :class:`LIFFlags` and
:class:`LIFConstants`). Both compute in the input dtype (float32 or float64) with the operations in
the order written above, so spikes agree exactly and floats to rounding of ``exp``/``atan``.
Performance notes (blocking, threads, determinism): ``docs/performance.md``, "LIF neurons".

Argument checks (SPEC §1): ``x``/``grad_s``/``h`` must be float32/float64 arrays of the same shape
and dtype (non-contiguous ones are copied); ``out`` arrays exactly that shape and dtype,
C-contiguous, writeable and not sharing memory with each other or an input (except the documented
``lif_backward(..., out=grad_s)``); the parameters must be finite in the compute dtype. NaN/inf in
``x``, ``grad_s`` or ``h`` is detected inside the kernels (no extra pass): ``ValueError``.

Presets (:data:`PRESETS`, :func:`lif_preset`) map other frameworks' neurons onto these equations:

* ``msenas`` — BrainCog ``LIFNode`` as used by the released MSE-NAS code: ``mem += (x - mem)/tau``,
  tau 2, spike when ``mem - 0.5 > 0``, ``mem *= (1 - spike.detach())``, QGateGrad(alpha 2):
  ``tau=2, v_th=0.5, v_reset=0, decay_input=True, ">", triangle(2), detach_reset=True``.
  (SPEC §2.1 lists the same values; the reset detach is BrainCog's ``spike.detach()``.)
* ``seed`` — the seed's equations: ``V[t] = (1 - 1/tau) V[t-1] + I[t]``, fire on ``V >= 0.5``, hard
  reset to 0: ``decay_input=False, ">=", v_th=0.5, tau=2`` (the seed gives no tau; 2 as in MSE-NAS).
* ``spikingjelly`` — ``spikingjelly.activation_based.neuron.LIFNode()`` defaults: ``tau=2, v_th=1,
  v_reset=0, decay_input=True, ">=", sigmoid(4), detach_reset=False``.
* ``snntorch_zero`` — ``snntorch.Leaky(beta, threshold=1, reset_mechanism="zero")``, whose update is
  ``U[t] = beta (1 - R[t]) U[t-1] + I[t]`` with ``R[t] = [U[t-1] > threshold]`` (the reset is applied
  one step late, from the previous membrane, and detached) and spike ``[U[t] > threshold]``. With
  ``H[t] = U[t]`` and ``V[t] = (1 - S[t]) H[t]`` this is exactly the hard-reset form above with
  ``decay_input=False, v_reset=0, ">", tau = 1/(1 - beta), detach_reset=True``, surrogate
  ``atan(2)`` (snnTorch's default). In floating point ``V - V/tau`` and ``beta V`` round
  differently, so a cross-check agrees to about one ulp per step, not bit for bit.
* ``snntorch_subtract`` — ``snntorch.Leaky(beta, threshold=1, reset_mechanism="subtract")`` (snnTorch
  1.0 ``_base_sub``: ``U[t] = (beta U[t-1] + I[t]) - R[t] threshold``, ``R[t] = [U[t-1] > threshold]``
  detached, spike ``[U[t] > threshold]``, ``reset_delay=True``): ``H[t] = U[t]`` with
  ``subtract_after_decay=True, v_reset=None, decay_input=False, ">", tau = 1/(1 - beta),
  detach_reset=True``, atan(2); ``v0`` is snnTorch's initial ``mem`` (its ``R[0] = [mem0 > threshold]``
  is the ``S[-1]`` above). Same rounding remark as ``snntorch_zero`` (bit-identical for beta 0.5).

Norse's neurons (current-based ``LIF``, ``LIFBox``) are in :mod:`refsnn.kernels.norse_lif`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numba
import numpy as np

from refsnn._checks import check_array, check_choice, check_float, check_same_dtype, check_same_shape
from refsnn.kernels import surrogate as sg
from refsnn.kernels._args import check_bool, check_disjoint, check_out, initial_state

__all__ = [
    "LIFParams", "PRESETS", "lif_preset", "lif_forward", "lif_backward",
    "lif_forward_ref", "lif_backward_ref",
]


@dataclass(frozen=True)
class LIFParams:
    """Parameters of the multi-step LIF neuron (SPEC §2.1). Defaults: the MSE-NAS neuron.

    ``v_reset=None`` selects soft reset (subtract ``v_th``). ``alpha=None`` takes the surrogate's
    default from SPEC §2.2. ``subtract_after_decay=True`` (soft reset only) subtracts the threshold
    after the next step's decay, as snnTorch's ``reset_mechanism="subtract"`` (module docstring).
    """

    tau: float = 2.0
    v_th: float = 0.5
    v_reset: float | None = 0.0
    decay_input: bool = True
    threshold: str = ">"
    surrogate: str = "triangle"
    alpha: float | None = None
    detach_reset: bool = True
    subtract_after_decay: bool = False

    def __post_init__(self):
        # tau > 1 keeps the leak factor 1 - 1/tau in (0, 1); tau == 1 is allowed (no memory).
        check_float("tau", self.tau, lo=1.0)
        check_float("v_th", self.v_th)
        if self.v_reset is not None:
            check_float("v_reset", self.v_reset)
            if self.v_reset >= self.v_th:
                raise ValueError(f"v_reset: expected a value below v_th={self.v_th}, got {self.v_reset}")
        if not isinstance(self.decay_input, (bool, np.bool_)):
            raise TypeError(f"decay_input: expected a bool, got {type(self.decay_input).__name__}")
        if not isinstance(self.detach_reset, (bool, np.bool_)):
            raise TypeError(f"detach_reset: expected a bool, got {type(self.detach_reset).__name__}")
        if not isinstance(self.subtract_after_decay, (bool, np.bool_)):
            raise TypeError(f"subtract_after_decay: expected a bool, got {type(self.subtract_after_decay).__name__}")
        if self.subtract_after_decay and self.v_reset is not None:
            raise ValueError("subtract_after_decay: only defined for soft reset (v_reset=None), "
                             f"got v_reset={self.v_reset}")
        check_choice("threshold", self.threshold, (">", ">="))
        check_choice("surrogate", self.surrogate, sg.NAMES)
        if self.alpha is not None:
            check_float("alpha", self.alpha, lo=0.0, lo_open=True)

    @property
    def surrogate_alpha(self) -> float:
        return sg.DEFAULT_ALPHA[self.surrogate] if self.alpha is None else float(self.alpha)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, LIFParams] = {
    "msenas": LIFParams(),
    "seed": LIFParams(tau=2.0, v_th=0.5, v_reset=0.0, decay_input=False, threshold=">=",
                      surrogate="triangle", detach_reset=True),
    "spikingjelly": LIFParams(tau=2.0, v_th=1.0, v_reset=0.0, decay_input=True, threshold=">=",
                              surrogate="sigmoid", alpha=4.0, detach_reset=False),
    "snntorch_zero": LIFParams(tau=2.0, v_th=1.0, v_reset=0.0, decay_input=False, threshold=">",
                               surrogate="atan", alpha=2.0, detach_reset=True),
    "snntorch_subtract": LIFParams(tau=2.0, v_th=1.0, v_reset=None, decay_input=False, threshold=">",
                                   surrogate="atan", alpha=2.0, detach_reset=True,
                                   subtract_after_decay=True),
}


def lif_preset(name: str, *, beta: float | None = None, **overrides) -> LIFParams:
    """A preset from :data:`PRESETS` with fields overridden.

    ``beta`` (snnTorch's decay factor, ``0 <= beta < 1``) sets ``tau = 1/(1 - beta)``; it is how
    ``snntorch.Leaky(beta=..., reset_mechanism="zero")`` maps: ``lif_preset("snntorch_zero", beta=0.9)``
    (and ``reset_mechanism="subtract"``: ``lif_preset("snntorch_subtract", beta=0.9)``).
    """
    check_choice("name", name, tuple(PRESETS))
    if beta is not None:
        b = check_float("beta", beta, lo=0.0, hi=1.0, hi_open=True)
        if "tau" in overrides:
            raise ValueError("beta: give either beta or tau, not both")
        overrides["tau"] = 1.0 / (1.0 - b)
    return replace(PRESETS[name], **overrides)


def _check_params(params) -> LIFParams:
    if not isinstance(params, LIFParams):
        raise TypeError(f"params: expected refsnn.kernels.lif.LIFParams, got {type(params).__name__}")
    return params


def _prepare(name: str, x, params):
    params = _check_params(params)
    # finiteness is checked inside the kernels (see _any_nonfinite), not by an extra pass here
    x = check_array(name, x, ndim_min=1, finite=False)
    if x.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one time step, got shape {x.shape}")
    return np.ascontiguousarray(x), params


def _v0_default(p: LIFParams) -> float:
    return 0.0 if p.v_reset is None else p.v_reset


# ---------------------------------------------------------------------------------------------
# Oracles: a vectorised NumPy loop over T, the equations as written. Also the bench baseline.
# ---------------------------------------------------------------------------------------------

def _fire_ref(z, p: LIFParams, relaxed: bool):
    if relaxed:
        return sg.primitive(p.surrogate, z, p.surrogate_alpha)
    return sg.heaviside(z, p.threshold)


def lif_forward_ref(x: np.ndarray, params: LIFParams = PRESETS["msenas"], *, v0=None,
                    relaxed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Oracle for :func:`lif_forward` (same signature and results)."""
    x, p = _prepare("x", x, params)
    v_init = initial_state("v0", v0, x, _v0_default(p))
    shape = x.shape
    x = x.reshape(shape[0], -1)   # [T, N]: a 1-D x (one neuron) keeps its steps arrays, not scalars
    dt = x.dtype.type
    tau, vth = dt(p.tau), dt(p.v_th)
    vr = dt(0.0 if p.v_reset is None else p.v_reset)
    one = dt(1)
    s_all = np.empty_like(x)
    h_all = np.empty_like(x)
    v = v_init.copy()
    if p.subtract_after_decay:  # H[t] = charge(H[t-1]) - v_th S[t-1], S[-1] = fire(v0 - v_th)
        s = _fire_ref(v - vth, p, relaxed)
        for t in range(x.shape[0]):
            if p.decay_input:
                h = v + (x[t] - (v - vr)) / tau - vth * s
            else:
                h = v - (v - vr) / tau + x[t] - vth * s
            s = _fire_ref(h - vth, p, relaxed)
            v = h
            s_all[t] = s
            h_all[t] = h
        return s_all.reshape(shape), h_all.reshape(shape)
    for t in range(x.shape[0]):
        if p.decay_input:
            h = v + (x[t] - (v - vr)) / tau
        else:
            h = v - (v - vr) / tau + x[t]
        s = _fire_ref(h - vth, p, relaxed)
        v = h * (one - s) + vr * s if p.v_reset is not None else h - vth * s
        s_all[t] = s
        h_all[t] = h
    return s_all.reshape(shape), h_all.reshape(shape)


def lif_backward_ref(grad_s: np.ndarray, h: np.ndarray, params: LIFParams = PRESETS["msenas"], *,
                     v0=None, relaxed: bool = False, return_grad_v0: bool = False):
    """Oracle for :func:`lif_backward` (same signature and results)."""
    grad_s, p = _prepare("grad_s", grad_s, params)
    h = check_array("h", h)
    check_same_shape("grad_s", grad_s, "h", h)
    check_same_dtype("grad_s", grad_s, "h", h)
    v_init = initial_state("v0", v0, grad_s, _v0_default(p))
    shape = grad_s.shape
    grad_s, h = grad_s.reshape(shape[0], -1), h.reshape(shape[0], -1)
    dt = grad_s.dtype.type
    tau, vth = dt(p.tau), dt(p.v_th)
    vr = dt(0.0 if p.v_reset is None else p.v_reset)
    one = dt(1)
    leak = one - one / tau
    kx = one / tau if p.decay_input else one
    a = p.surrogate_alpha
    gx = np.empty_like(grad_s)
    gv = np.zeros(grad_s.shape[1:], dtype=grad_s.dtype)
    if p.subtract_after_decay:  # gv = dL/dH[t+1]
        for t in range(grad_s.shape[0] - 1, -1, -1):
            d = sg.grad(p.surrogate, h[t] - vth, a)
            if p.detach_reset:
                gh = grad_s[t] * d + gv * leak
            else:
                gh = (grad_s[t] - gv * vth) * d + gv * leak
            gx[t] = gh * kx
            gv = gh
        if p.detach_reset:  # dL/dv0 through charge(v0) (and S[-1] = fire(v0 - v_th))
            gv = gv * leak
        else:
            gv = gv * leak - gv * vth * sg.grad(p.surrogate, v_init - vth, a)
        return (gx.reshape(shape), gv.reshape(shape[1:])) if return_grad_v0 else gx.reshape(shape)
    for t in range(grad_s.shape[0] - 1, -1, -1):
        z = h[t] - vth
        d = sg.grad(p.surrogate, z, a)
        s = _fire_ref(z, p, relaxed)
        if p.v_reset is not None:
            dv_dh, dv_ds = one - s, vr - h[t]
        else:
            dv_dh, dv_ds = one, -vth
        if p.detach_reset:
            gh = grad_s[t] * d + gv * dv_dh
        else:
            gh = (grad_s[t] + gv * dv_ds) * d + gv * dv_dh
        gx[t] = gh * kx
        gv = gh * leak
    return (gx.reshape(shape), gv.reshape(shape[1:])) if return_grad_v0 else gx.reshape(shape)


# ---------------------------------------------------------------------------------------------
# Fast path: Numba kernels over the data viewed as [T, N] (N = product of the non-time axes),
# neurons in blocks of _BLOCK. How and why: docs/performance.md, "LIF neurons".
# ---------------------------------------------------------------------------------------------
class LIFFlags(NamedTuple):
    """Which form of the equations (module docstring) a kernel call evaluates; ints for Numba."""

    hard: int                  # 1: hard reset V = H (1 - S) + v_r S;  0: soft reset V = H - v_th S
    ge: int                    # 1: fire on H - v_th >= 0;  0: on H - v_th > 0
    decay_input: int           # 1: H = V + (X - (V - v_r))/tau;  0: H = V - (V - v_r)/tau + X
    detach_reset: int          # 1: dV/dS = 0 in the backward
    relaxed: int               # 1: S = surrogate primitive instead of the Heaviside
    surrogate: int             # surrogate code, refsnn.kernels.surrogate.CODES
    subtract_after_decay: int  # 1: H[t] = charge(H[t-1]) - v_th S[t-1] (the state is H)


class LIFConstants(NamedTuple):
    """The equations' constants, each rounded once to the compute dtype (float32 stays float32)."""

    tau: np.floating
    v_th: np.floating
    v_r: np.floating           # v_reset, 0 for soft reset
    alpha: np.floating         # surrogate alpha
    leak: np.floating          # 1 - 1/tau: gV[t-1] = gH[t] leak
    kx: np.floating            # dH/dX: 1/tau (decay_input) or 1


def _constants(p: LIFParams, dtype) -> LIFConstants:
    dt = np.dtype(dtype).type
    vr = 0.0 if p.v_reset is None else p.v_reset
    tau = dt(p.tau)
    leak = dt(1) - dt(1) / tau
    kx = dt(1) / tau if p.decay_input else dt(1)
    with np.errstate(over="ignore"):
        prm = np.array([tau, p.v_th, vr, p.surrogate_alpha, leak, kx], dtype=dtype)
    if not np.isfinite(prm).all():
        raise ValueError(f"params: tau, v_th, v_reset and alpha must be finite in {np.dtype(dtype)}, got {p}")
    return LIFConstants(*prm)


def _flags(p: LIFParams, relaxed: bool) -> LIFFlags:
    return LIFFlags(hard=int(p.v_reset is not None), ge=int(p.threshold == ">="),
                    decay_input=int(p.decay_input), detach_reset=int(p.detach_reset), relaxed=int(relaxed),
                    surrogate=sg.CODES[p.surrogate], subtract_after_decay=int(p.subtract_after_decay))


_BLOCK = 2048


def _nblocks(n: int) -> int:
    return (n + _BLOCK - 1) // _BLOCK


def _check_out(name, o, like):
    return check_out(name, o, like.shape, like.dtype)


@numba.njit(cache=True, inline="always")
def _any_nonfinite(v):
    # NaN or +-inf anywhere in an input leaves the final state of that neuron non-finite (a NaN
    # propagates through +, *, and the reset; inf * 0 = NaN), so checking the final state of each
    # block detects bad input without an extra pass over the (large) input arrays.
    for i in range(v.size):
        if not np.isfinite(v[i]):
            return 1
    return 0


@numba.njit(cache=True, inline="always")
def _spike(z, ge, one, zero):
    if ge:
        return one if z >= zero else zero
    return one if z > zero else zero


@numba.njit(cache=True, parallel=True)
def _lif_forward_nb(x, v0, s_out, h_out, k, f, c, bad):
    T, N = x.shape
    tau, vth, vr, a = k.tau, k.v_th, k.v_r, k.alpha
    hard, ge, decay, relaxed, code, after = (f.hard, f.ge, f.decay_input, f.relaxed, f.surrogate,
                                             f.subtract_after_decay)
    one, zero = c.one, c.zero
    nblk = (N + _BLOCK - 1) // _BLOCK
    for b in numba.prange(nblk):
        i0 = b * _BLOCK
        n = min(N, i0 + _BLOCK) - i0
        v = np.empty(n, dtype=x.dtype)
        v[:] = v0[i0:i0 + n]
        if after:
            # soft reset after the decay: the state is H, the threshold is subtracted one step late
            sp = np.empty(n, dtype=x.dtype)  # S[t-1]; S[-1] = fire(v0 - v_th)
            for i in range(n):
                sp[i] = sg._prim_nb(code, v[i] - vth, a, c) if relaxed else _spike(v[i] - vth, ge, one, zero)
            for t in range(T):
                xt = x[t, i0:i0 + n]
                ho = h_out[t, i0:i0 + n]
                so = s_out[t, i0:i0 + n]
                for i in range(n):
                    vi = v[i]
                    if decay:
                        h = vi + (xt[i] - (vi - vr)) / tau - vth * sp[i]
                    else:
                        h = vi - (vi - vr) / tau + xt[i] - vth * sp[i]
                    s = sg._prim_nb(code, h - vth, a, c) if relaxed else _spike(h - vth, ge, one, zero)
                    v[i] = h
                    sp[i] = s
                    ho[i] = h
                    so[i] = s
            bad[b] = _any_nonfinite(v)
            continue
        for t in range(T):
            xt = x[t, i0:i0 + n]
            ho = h_out[t, i0:i0 + n]
            so = s_out[t, i0:i0 + n]
            if relaxed:
                for i in range(n):
                    vi = v[i]
                    h = vi + (xt[i] - (vi - vr)) / tau if decay else vi - (vi - vr) / tau + xt[i]
                    s = sg._prim_nb(code, h - vth, a, c)
                    v[i] = h * (one - s) + vr * s if hard else h - vth * s
                    ho[i] = h
                    so[i] = s
            else:
                for i in range(n):
                    vi = v[i]
                    if decay:  # charge
                        h = vi + (xt[i] - (vi - vr)) / tau
                    else:
                        h = vi - (vi - vr) / tau + xt[i]
                    s = _spike(h - vth, ge, one, zero)  # fire
                    if hard:  # reset
                        v[i] = h * (one - s) + vr * s
                    else:
                        v[i] = h - vth * s
                    ho[i] = h
                    so[i] = s
        bad[b] = _any_nonfinite(v)


@numba.njit(cache=True, parallel=True)
def _lif_backward_nb(gs, h_in, gx_out, gv_out, k, f, c, bad):
    T, N = gs.shape
    vth, vr, a, leak, kx = k.v_th, k.v_r, k.alpha, k.leak, k.kx
    hard, ge, detach, relaxed, code, after = (f.hard, f.ge, f.detach_reset, f.relaxed, f.surrogate,
                                              f.subtract_after_decay)
    one, zero = c.one, c.zero
    aa = a * a
    nblk = (N + _BLOCK - 1) // _BLOCK
    for b in numba.prange(nblk):
        i0 = b * _BLOCK
        n = min(N, i0 + _BLOCK) - i0
        gv = np.zeros(n, dtype=gs.dtype)  # dL/dV[t] (dL/dH[t+1] after the decay), backwards in time
        hk = np.zeros(n, dtype=gs.dtype)  # sum of H - H: NaN iff some H[t] was NaN or infinite
        d = np.empty(n, dtype=gs.dtype)   # surrogate derivative at H[t] - v_th
        s = np.empty(n, dtype=gs.dtype)   # S[t], recomputed from H[t]
        if after:
            # subtract after the decay: H[t+1] = charge(H[t]) - v_th S[t]; gv holds dL/dH[t+1]
            for t in range(T - 1, -1, -1):
                ht = h_in[t, i0:i0 + n]
                gst = gs[t, i0:i0 + n]
                gxt = gx_out[t, i0:i0 + n]
                for i in range(n):
                    h = ht[i]
                    hk[i] += h - h
                    di = sg._grad_nb(code, h - vth, a, c)
                    g = gv[i]
                    if detach:
                        gh = gst[i] * di + g * leak
                    else:
                        gh = (gst[i] - g * vth) * di + g * leak
                    gxt[i] = gh * kx
                    gv[i] = gh
            gv_out[i0:i0 + n] = gv
            bad[b] = _any_nonfinite(gv) | _any_nonfinite(hk)
            continue
        for t in range(T - 1, -1, -1):
            ht = h_in[t, i0:i0 + n]
            gst = gs[t, i0:i0 + n]
            gxt = gx_out[t, i0:i0 + n]
            if code == 3 and not relaxed:
                # fast path (the MSE-NAS default): triangle surrogate, one fused loop
                for i in range(n):
                    h = ht[i]
                    hk[i] += h - h
                    z = h - vth
                    di = max(zero, a - aa * abs(z))
                    si = _spike(z, ge, one, zero)
                    g = gv[i]
                    if hard:
                        dv_dh = one - si
                        dv_ds = vr - h
                    else:
                        dv_dh = one
                        dv_ds = -vth
                    if detach:
                        gh = gst[i] * di + g * dv_dh
                    else:
                        gh = (gst[i] + g * dv_ds) * di + g * dv_dh
                    gxt[i] = gh * kx
                    gv[i] = gh * leak
                continue
            # general path, pass 1: surrogate derivative and spikes (choice outside the loops)
            if code == 3:
                for i in range(n):
                    hk[i] += ht[i] - ht[i]
                    d[i] = max(zero, a - aa * abs(ht[i] - vth))
            else:
                for i in range(n):
                    hk[i] += ht[i] - ht[i]
                    d[i] = sg._grad_nb(code, ht[i] - vth, a, c)
            if relaxed:
                for i in range(n):
                    s[i] = sg._prim_nb(code, ht[i] - vth, a, c)
            else:
                for i in range(n):
                    s[i] = _spike(ht[i] - vth, ge, one, zero)
            # pass 2: BPTT through reset and leak
            for i in range(n):
                g = gv[i]
                if hard:
                    dv_dh = one - s[i]
                    dv_ds = vr - ht[i]
                else:
                    dv_dh = one
                    dv_ds = -vth
                if detach:
                    gh = gst[i] * d[i] + g * dv_dh
                else:
                    gh = (gst[i] + g * dv_ds) * d[i] + g * dv_dh
                gxt[i] = gh * kx
                gv[i] = gh * leak
        gv_out[i0:i0 + n] = gv
        bad[b] = _any_nonfinite(gv) | _any_nonfinite(hk)


def lif_forward(x: np.ndarray, params: LIFParams = PRESETS["msenas"], *, v0=None,
                relaxed: bool = False, out: tuple[np.ndarray, np.ndarray] | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Run the LIF neuron over a time-major input.

    Parameters
    ----------
    x : ndarray, float32 or float64, shape ``[T, ...]``
        Input current ``X[t]`` (e.g. a convolution's output, time-major).
    params : LIFParams
    v0 : None, real number, or ndarray of ``x``'s dtype broadcastable to ``x.shape[1:]``
        Initial membrane ``V[-1]`` (``H[-1]`` with ``subtract_after_decay``, which also fires
        ``S[-1] = Heaviside(v0 - v_th)``). Default (``None``): ``v_reset``, 0 for soft reset.
    relaxed : bool
        Use the surrogate's primitive instead of the Heaviside (gradient checks).
    out : (s, h), optional
        Preallocated C-contiguous writeable outputs of exactly ``x``'s shape and dtype (a training
        loop reuses them to avoid allocating, and page-faulting, large arrays every step); they
        must not share memory with each other or with ``x``.

    Returns
    -------
    s : ndarray, same shape and dtype as ``x``
        Spikes ``S[t]`` (0.0/1.0; in relaxed mode values in the primitive's range).
    h : ndarray, same shape and dtype as ``x``
        Membrane before reset ``H[t]``: what :func:`lif_backward` needs.
    """
    x_in = x
    x, params = _prepare("x", x, params)
    relaxed = check_bool("relaxed", relaxed)
    v0 = initial_state("v0", v0, x, _v0_default(params))
    if out is None:
        s, h = np.empty_like(x), np.empty_like(x)
    else:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(f"out: expected a pair (s, h) of arrays, got {type(out).__name__}")
        s, h = (_check_out(f"out[{k}]", o, x) for k, o in enumerate(out))
        check_disjoint({"out[0]": s, "out[1]": h}, {"x": x_in})
    n = x.size // x.shape[0]
    bad = np.zeros(_nblocks(n), np.int64)
    _lif_forward_nb(x.reshape(x.shape[0], n), v0, s.reshape(x.shape[0], n), h.reshape(x.shape[0], n),
                    _constants(params, x.dtype), _flags(params, relaxed), sg.constants(x.dtype),
                    bad)
    if bad.any():
        raise ValueError("x: contains NaN or infinity (or values so large the membrane overflowed)")
    return s, h


def lif_backward(grad_s: np.ndarray, h: np.ndarray, params: LIFParams = PRESETS["msenas"], *,
                 v0=None, relaxed: bool = False, out: np.ndarray | None = None,
                 return_grad_v0: bool = False):
    """BPTT through the LIF neuron: ``dL/dX`` from ``dL/dS`` (equations in the module docstring).

    Parameters
    ----------
    grad_s : ndarray ``[T, ...]``, float32 or float64
        Gradient of the loss with respect to the spikes ``S``.
    h : ndarray, same shape and dtype
        Membrane before reset, as returned by :func:`lif_forward` with the same params and mode.
    v0 : as for :func:`lif_forward`
        The initial membrane the forward used. Only ``dL/dv0`` with ``subtract_after_decay`` and
        ``detach_reset=False`` depends on it (through ``S[-1]``); ``dL/dX`` never does (``v0``
        reaches it through ``h``).
    out : ndarray, optional
        Preallocated C-contiguous writeable output of ``grad_s``'s shape and dtype. It may be
        ``grad_s`` itself (the update is in place-safe) but must not otherwise share memory with
        ``grad_s`` or ``h``.
    return_grad_v0 : bool
        Also return ``dL/dv0``.

    Returns
    -------
    grad_x : ndarray, same shape and dtype as ``grad_s``
    grad_v0 : ndarray ``grad_s.shape[1:]``, same dtype (only with ``return_grad_v0=True``)
        Per neuron, not reduced to ``v0``'s shape (sum over the axes ``v0`` was broadcast along).
    """
    grad_in = grad_s
    grad_s, params = _prepare("grad_s", grad_s, params)
    relaxed = check_bool("relaxed", relaxed)
    return_grad_v0 = check_bool("return_grad_v0", return_grad_v0)
    h = check_array("h", h, finite=False)
    check_same_shape("grad_s", grad_s, "h", h)
    check_same_dtype("grad_s", grad_s, "h", h)
    if v0 is not None or (return_grad_v0 and params.subtract_after_decay and not params.detach_reset):
        v0 = initial_state("v0", v0, grad_s, _v0_default(params))  # checked; used only for dL/dv0
    h = np.ascontiguousarray(h)
    if out is None:
        gx = np.empty_like(grad_s)
    else:
        gx = _check_out("out", out, grad_s)
        check_disjoint({"out": gx}, {"grad_s": grad_in, "h": h}, same_ok=(("out", "grad_s"),))
    T = grad_s.shape[0]
    n = grad_s.size // T
    bad = np.zeros(_nblocks(n), np.int64)
    gv = np.empty(n, dtype=grad_s.dtype)
    k = _constants(params, grad_s.dtype)
    _lif_backward_nb(grad_s.reshape(T, n), h.reshape(T, n), gx.reshape(T, n), gv, k,
                     _flags(params, relaxed), sg.constants(grad_s.dtype), bad)
    if bad.any():
        raise ValueError("grad_s: grad_s or h contains NaN or infinity (or the gradient overflowed)")
    if not return_grad_v0:
        return gx
    if params.subtract_after_decay:
        # gv = dL/dH[0]; H[0] = charge(v0) - v_th S[-1], S[-1] = fire(v0 - v_th)
        vth, leak = k.v_th, k.leak
        if params.detach_reset:
            gv = gv * leak
        else:
            gv = gv * leak - gv * vth * sg.grad(params.surrogate, v0 - vth, params.surrogate_alpha)
    return gx, gv.reshape(grad_s.shape[1:])


# ---------------------------------------------------------------------------------------------

def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        x = np.linspace(-1, 2, 24, dtype=dtype).reshape(3, 2, 4)
        for relaxed in (False, True):
            s, h = lif_forward(x, relaxed=relaxed)
            lif_backward(np.ones_like(s), h, relaxed=relaxed)
        for name in sg.NAMES:
            sg.grad_nb(name, x)
            sg.primitive_nb(name, x)
