"""Surrogate-gradient BPTT through the CuBa-LIF RSNN of Evolving Connectivity (SPEC §2.3; the EC
paper's SG-RSNN baseline, trained by PPO in :mod:`refsnn.ec.ppo`).

The network is the one of :mod:`refsnn.kernels.cuba` with real-valued weights shared by the whole
batch (one policy, many sequences) instead of per-member connectivity: ``W_in (d_u, N)``,
``W_h (N, N)`` and, with Dale's law (``cfg.dale``), the effective recurrent weights
``W = sign_j |W_h|`` with ``sign_j = +1`` for presynaptic excitatory neurons ``j < n_exc`` and ``-1``
for inhibitory ones (:func:`effective_recurrent`). One environment step of ``K = cfg.n_substeps``
substeps, for the input ``u_t (B, d_u)`` held over the step (seed eqs. 3–6, substep ``k``)::

    I     = R_in (u_t @ W_in)
    i_k   = alpha_syn i_{k-1} + R (s_{k-1} @ W)              # eq. 3
    p_k   = alpha_m v_{k-1} + beta_m ((v_reset + i_k) + I)   # eq. 4 (membrane before the reset)
    s_k   = Heaviside(p_k - v_th)                            # eq. 5; relaxed: primitive(p_k - v_th)
    v_k   = p_k (1 - s_k) + v_reset s_k                      # eq. 6, hard reset
    r_k   = alpha_out r_{k-1} + g_out s_k                    # the readout's rate trace

and the step's output is the rate ``r_K (B, N)`` (the policy's features; the readouts are linear and
live with the algorithm). Spiking mode is the forward pass of
:func:`refsnn.kernels.cuba.float_env_step_ref` with ``W_h = W`` (tested).

Backward (:func:`rsnn_backward`): exact reverse-mode differentiation of the equations above with
``dS/dp = surrogate.grad(p - v_th)`` (:mod:`refsnn.kernels.surrogate`); with ``detach_reset`` (the
default, as the MSE-NAS and snnTorch conventions) the spike in eq. 6 is treated as a constant, so
``dv_k/dp_k = 1 - s_k``, otherwise ``(1 - s_k) + (v_reset - p_k) dS/dp``. Adjoints, substep ``k``
in reverse (``g*`` = gradient of the loss)::

    gs_k   = gs_k(from i_{k+1}) + g_out gr_k [+ (v_reset - p_k) gv_k  without detach_reset]
    gp_k   = (1 - s_k) gv_k + dS/dp_k gs_k
    gi_k  += beta_m gp_k;   gI += beta_m gp_k
    gW    += s_{k-1}^T (R gi_k);   gs_{k-1}(from i_k) = (R gi_k) @ W^T
    gv_{k-1} = alpha_m gp_k;  gi_{k-1} = alpha_syn gi_k;  gr_{k-1} = alpha_out gr_k (+ the output's)

then ``gW_in = sum_t u_t^T (R_in gI_t)`` and, with Dale's law, ``gW_h = gW sign_j sign(W_h)``. The
sequence starts from a given state that is not differentiated (truncated BPTT: the caller cuts the
sequence into windows and detaches the state between them). ``resets = (mask (B, T) bool, v0 (B, T, N))``
starts a new episode inside the window: before step ``t`` of sequence ``b`` with ``mask[b, t]`` the
state becomes ``(v0[b, t], 0, 0, 0)`` (the initial state of SPEC §2.3), and no gradient flows
through it to the earlier steps. In relaxed mode (``relaxed=True``,
spikes = the surrogate's primitive) the network is a smooth function and this backward is its exact
gradient (checked against central finite differences in float64, SPEC §4.1; and against PyTorch
autograd when it is installed).

Below, in this order: the NumPy oracles :func:`rsnn_forward_ref` / :func:`rsnn_backward_ref` (the
equations line by line), then the Numba kernels and :func:`rsnn_forward` / :func:`rsnn_backward`
(tests hold the two equal, spikes exactly). The forward kernel sums ``s @ W`` over the rows of the
neurons that spiked, and ``u @ W_in`` over the rows of ``W_in``, in ascending order; the backward
keeps ``gW += s_{k-1}^T (R gi_k)`` and ``gs_{k-1} = (R gi_k) @ W^T`` as BLAS GEMMs. Floats differ
from the oracles by summation order only. Performance notes (event-driven forward, GEMM backward,
timings): ``docs/performance.md``, "Evolving Connectivity RSNN".

Shapes: ``u (B, T, d_u)``; state ``(v, i_syn, rate, s)``, each ``(B, N)``; output rates
``(B, T, N)``. ``d_in`` sets the input gain ``R_in`` (:meth:`CubaConfig.gains`; for EC's
``u = [x, -x]`` it is the observation size, ``d_u / 2``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from refsnn._checks import check_array, check_choice, check_int
from refsnn.kernels import surrogate
from refsnn.kernels.cuba import CubaConfig, CubaConstants
from refsnn.kernels.surrogate import _grad_nb, _prim_nb

__all__ = ["effective_recurrent", "rsnn_forward", "rsnn_backward", "rsnn_forward_ref", "rsnn_backward_ref",
           "RSNNCache"]


def effective_recurrent(cfg: CubaConfig, W_h: np.ndarray) -> np.ndarray:
    """``W = sign_j |W_h|`` (rows = presynaptic ``j``: ``+1`` for ``j < n_exc``, ``-1`` after) with
    Dale's law, ``W_h`` itself without."""
    if not cfg.dale:
        return W_h
    return _dale_sign(cfg, W_h.dtype)[:, None] * np.abs(W_h)


def _dale_sign(cfg: CubaConfig, dtype) -> np.ndarray:
    """``sign_j``: ``+1`` for presynaptic excitatory neurons ``j < n_exc``, ``-1`` after."""
    sign = np.ones(cfg.n_neurons, dtype=dtype)
    sign[cfg.n_exc:] = -1
    return sign


@dataclass
class RSNNCache:
    """What :func:`rsnn_backward` needs from the forward pass (float arrays of the compute dtype)."""
    cfg: CubaConfig
    u: np.ndarray           # (B, T, d_u)
    W_in: np.ndarray
    W_h: np.ndarray
    W: np.ndarray           # effective recurrent weights
    p: np.ndarray           # (B, T, K, N) membrane before the reset
    s: np.ndarray           # (B, T, K, N) spikes (or the primitive in relaxed mode)
    s_enter: np.ndarray     # (B, T, N) spikes entering step t (after a reset: 0)
    mask: np.ndarray | None  # (B, T) episode starts (resets), or None
    consts: CubaConstants
    surrogate: str
    alpha: float | None
    detach_reset: bool


def _forward_args(cfg, u, W_in, W_h, state, d_in, surrogate_name, resets):
    """The checked arguments of both forwards: ``(u, (v, i_syn, rate, s) copies, mask, v0)``."""
    u = check_array("u", u, ndim=3)
    dtype = u.dtype
    B, T, d_u = u.shape
    N = cfg.n_neurons
    check_array("W_in", W_in, dtypes=(dtype,), shape=(d_u, N))
    check_array("W_h", W_h, dtypes=(dtype,), shape=(N, N))
    check_choice("surrogate_name", surrogate_name, surrogate.NAMES)
    check_int("d_in", d_in, lo=1)
    if not isinstance(state, (tuple, list)) or len(state) != 4:
        raise TypeError("state: expected a tuple (v, i_syn, rate, s)")
    state = tuple(check_array(f"state {n}", a, dtypes=(dtype,), shape=(B, N)).copy()
                  for n, a in zip(("v", "i_syn", "rate", "s"), state))
    mask = v0 = None
    if resets is not None:
        mask, v0 = resets
        mask = check_array("resets mask", mask, dtypes=(np.dtype(bool),), shape=(B, T))
        v0 = check_array("resets v0", v0, dtypes=(dtype,), shape=(B, T, N))
    return u, state, mask, v0


def rsnn_forward_ref(cfg: CubaConfig, u: np.ndarray, W_in: np.ndarray, W_h: np.ndarray, state, *, d_in: int,
                     surrogate_name: str = "atan", alpha: float | None = None, detach_reset: bool = True,
                     relaxed: bool = False, resets=None) -> tuple[np.ndarray, tuple, RSNNCache]:
    """NumPy oracle of :func:`rsnn_forward` (same arguments and results; dense products)."""
    u, (v, i_syn, rate, s), mask, v0 = _forward_args(cfg, u, W_in, W_h, state, d_in, surrogate_name, resets)
    dtype = u.dtype
    B, T, _ = u.shape
    N = cfg.n_neurons
    c = cfg.constants(d_in, dtype)
    r_in, r, _, a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = c
    K = cfg.n_substeps
    W = effective_recurrent(cfg, W_h)
    s_enter = np.empty((B, T, N), dtype)
    P = np.empty((B, T, K, N), dtype)
    S = np.empty((B, T, K, N), dtype)
    rates = np.empty((B, T, N), dtype)
    for t in range(T):
        if mask is not None and mask[:, t].any():
            m = mask[:, t]
            v[m], i_syn[m], rate[m], s[m] = v0[m, t], 0, 0, 0
        s_enter[:, t] = s
        I = r_in * (u[:, t] @ W_in)
        for k in range(K):
            i_syn = a_syn * i_syn + r * (s @ W)
            p = a_m * v + b_m * ((v_reset + i_syn) + I)
            x = p - v_th
            s = surrogate.primitive(surrogate_name, x, alpha) if relaxed else (x > 0).astype(dtype)
            v = p * (1 - s) + v_reset * s
            rate = a_out * rate + g_out * s
            P[:, t, k], S[:, t, k] = p, s
        rates[:, t] = rate
    cache = RSNNCache(cfg, u, W_in, W_h, W, P, S, s_enter, mask, c, surrogate_name, alpha, bool(detach_reset))
    return rates, (v, i_syn, rate, s), cache


def rsnn_backward_ref(cache: RSNNCache, grad_rates: np.ndarray) -> dict[str, np.ndarray]:
    """NumPy oracle of :func:`rsnn_backward` (same arguments and results; dense products)."""
    P, S = cache.p, cache.s
    B, T, K, N = P.shape
    dtype = P.dtype
    grad_rates = check_array("grad_rates", grad_rates, dtypes=(dtype,), shape=(B, T, N))
    r_in, r, _, a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = cache.consts
    W = cache.W
    gW = np.zeros_like(W)
    gW_in = np.zeros_like(cache.W_in)
    gv = np.zeros((B, N), dtype)
    gi = np.zeros((B, N), dtype)
    gr = np.zeros((B, N), dtype)
    gs_next = np.zeros((B, N), dtype)        # gradient reaching s_k through i_{k+1}
    for t in range(T - 1, -1, -1):
        gr = gr + grad_rates[:, t]
        gI = np.zeros((B, N), dtype)
        for k in range(K - 1, -1, -1):
            p, s = P[:, t, k], S[:, t, k]
            s_prev = S[:, t, k - 1] if k > 0 else cache.s_enter[:, t]
            gs = gs_next + g_out * gr
            if not cache.detach_reset:
                gs = gs + (v_reset - p) * gv
            gp = (1 - s) * gv + surrogate.grad(cache.surrogate, p - v_th, cache.alpha) * gs
            gi = gi + b_m * gp
            gI += b_m * gp
            ga = r * gi
            gW += s_prev.T @ ga
            gs_next = ga @ W.T
            gv = a_m * gp
            gi = a_syn * gi
            gr = a_out * gr
        gW_in += cache.u[:, t].T @ (r_in * gI)
        if cache.mask is not None:      # an episode started at step t: nothing flows to the one before
            m = cache.mask[:, t]
            gv[m], gi[m], gr[m], gs_next[m] = 0, 0, 0, 0
    return {"W_in": gW_in, "W_h": _dale_grad(cache, gW)}


def _dale_grad(cache: RSNNCache, gW: np.ndarray) -> np.ndarray:
    """``dL/dW_h`` from ``dL/dW`` of the effective weights: ``gW sign_j sign(W_h)`` with Dale's law."""
    if not cache.cfg.dale:
        return gW
    return gW * _dale_sign(cache.cfg, gW.dtype)[:, None] * np.sign(cache.W_h)


def _kernel_surrogate(name: str, alpha, dtype) -> tuple:
    """What the Numba kernels take for surrogate ``name``: ``(code, alpha in dtype, constants)``."""
    a = surrogate._args(name, np.zeros(1, dtype), alpha)[1]
    return surrogate.CODES[name], a, surrogate.constants(dtype)


# ---------------------------------------------------------------------------------------------
# Fast path: Numba kernels (docs/performance.md, "Evolving Connectivity RSNN")
# ---------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _forward_nb(u, W_in, W, v, i_syn, rate, s, c, K, mask, v0, relaxed, code, alpha, sc, P, S, s_enter, rates):
    """The forward of :func:`rsnn_forward_ref`, one sequence ``b`` at a time; ``v, i_syn, rate, s``
    ``(B, N)`` are updated in place (the final state); ``mask`` ``(B, T)`` and ``v0`` may be empty
    (``mask.shape[1] == 0``: no resets)."""
    B, T, d_u = u.shape
    N = W.shape[0]
    r_in, r, a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = (c.r_in, c.r, c.alpha_syn, c.alpha_m, c.beta_m,
                                                             c.alpha_out, c.g_out, c.v_th, c.v_reset)
    zero = sc.zero
    one = sc.one
    cur = np.empty(N, u.dtype)
    rec = np.empty(N, u.dtype)
    for b in range(B):
        for t in range(T):
            if mask.shape[1] > 0 and mask[b, t]:
                for j in range(N):
                    v[b, j] = v0[b, t, j]
                    i_syn[b, j] = zero
                    rate[b, j] = zero
                    s[b, j] = zero
            for j in range(N):
                s_enter[b, t, j] = s[b, j]
                cur[j] = zero
            for q in range(d_u):                      # I = R_in (u_t @ W_in), rows in ascending order
                uq = u[b, t, q]
                for j in range(N):
                    cur[j] += uq * W_in[q, j]
            for j in range(N):
                cur[j] = r_in * cur[j]
            for k in range(K):
                for j in range(N):
                    rec[j] = zero
                for i in range(N):                    # s @ W: the rows of the neurons that spiked
                    si = s[b, i]
                    if si != zero:
                        for j in range(N):
                            rec[j] += si * W[i, j]
                for j in range(N):
                    isj = a_syn * i_syn[b, j] + r * rec[j]
                    p = a_m * v[b, j] + b_m * ((v_reset + isj) + cur[j])
                    x = p - v_th
                    if relaxed:
                        sj = _prim_nb(code, x, alpha, sc)
                    else:
                        sj = one if x > zero else zero
                    i_syn[b, j] = isj
                    v[b, j] = p * (one - sj) + v_reset * sj
                    rate[b, j] = a_out * rate[b, j] + g_out * sj
                    s[b, j] = sj
                    P[b, t, k, j] = p
                    S[b, t, k, j] = sj
            for j in range(N):
                rates[b, t, j] = rate[b, j]


@numba.njit(cache=True)
def _backward_nb(P, S, s_enter, u, W, WT, grad_rates, c, mask, detach_reset, code, alpha, sc, gW, gW_in):
    """The backward of :func:`rsnn_backward_ref` into ``gW (N, N)`` and ``gW_in (d_u, N)`` (zeroed
    here). Per substep: the elementwise adjoints of the batch, then the two products of the batch in
    BLAS, ``gW += s_prev^T ga`` and ``gs_next = ga @ W^T`` (``WT`` = ``W.T`` contiguous)."""
    B, T, K, N = P.shape
    d_u = u.shape[2]
    r_in, r, a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = (c.r_in, c.r, c.alpha_syn, c.alpha_m, c.beta_m,
                                                             c.alpha_out, c.g_out, c.v_th, c.v_reset)
    zero = sc.zero
    one = sc.one
    gv = np.zeros((B, N), P.dtype)
    gi = np.zeros((B, N), P.dtype)
    gr = np.zeros((B, N), P.dtype)
    gI = np.empty((B, N), P.dtype)
    ga = np.empty((B, N), P.dtype)
    gs_next = np.zeros((B, N), P.dtype)
    sT = np.empty((N, B), P.dtype)
    gW[:] = zero
    gW_in[:] = zero
    for t in range(T - 1, -1, -1):
        for b in range(B):
            for j in range(N):
                gr[b, j] += grad_rates[b, t, j]
                gI[b, j] = zero
        for k in range(K - 1, -1, -1):
            for b in range(B):
                for j in range(N):
                    p = P[b, t, k, j]
                    gs = gs_next[b, j] + g_out * gr[b, j]
                    if not detach_reset:
                        gs = gs + (v_reset - p) * gv[b, j]
                    gp = (one - S[b, t, k, j]) * gv[b, j] + _grad_nb(code, p - v_th, alpha, sc) * gs
                    gi[b, j] = gi[b, j] + b_m * gp
                    gI[b, j] += b_m * gp
                    ga[b, j] = r * gi[b, j]
                    gv[b, j] = a_m * gp
            for b in range(B):                      # s_prev^T, (N, B)
                for i in range(N):
                    sT[i, b] = S[b, t, k - 1, i] if k > 0 else s_enter[b, t, i]
            gW += np.dot(sT, ga)                    # gW += s_prev^T ga
            gs_next[:] = np.dot(ga, WT)             # gs_{k-1} = ga @ W^T
            for b in range(B):
                for j in range(N):
                    gi[b, j] = a_syn * gi[b, j]
                    gr[b, j] = a_out * gr[b, j]
        for b in range(B):                          # gW_in += u_t^T (R_in gI)
            for q in range(d_u):
                uq = u[b, t, q]
                for j in range(N):
                    gW_in[q, j] += uq * (r_in * gI[b, j])
            if mask.shape[1] > 0 and mask[b, t]:    # an episode started at step t
                for j in range(N):
                    gv[b, j] = zero
                    gi[b, j] = zero
                    gr[b, j] = zero
                    gs_next[b, j] = zero


def rsnn_forward(cfg: CubaConfig, u: np.ndarray, W_in: np.ndarray, W_h: np.ndarray, state, *, d_in: int,
                 surrogate_name: str = "atan", alpha: float | None = None, detach_reset: bool = True,
                 relaxed: bool = False, resets=None) -> tuple[np.ndarray, tuple, RSNNCache]:
    """``T`` environment steps of ``B`` sequences (module docstring): returns ``(rates (B, T, N),
    final state (v, i_syn, rate, s), cache)``. The input state is not modified. ``relaxed``: spikes
    are the surrogate's primitive (for finite-difference checks); ``resets = (mask (B, T) bool,
    v0 (B, T, N))``: episode starts inside the window."""
    u, (v, i_syn, rate, s), mask, v0 = _forward_args(cfg, u, W_in, W_h, state, d_in, surrogate_name, resets)
    dtype = u.dtype
    B, T, _ = u.shape
    N, K = cfg.n_neurons, cfg.n_substeps
    c = cfg.constants(d_in, dtype)
    W = np.ascontiguousarray(effective_recurrent(cfg, W_h))
    P = np.empty((B, T, K, N), dtype)
    S = np.empty((B, T, K, N), dtype)
    s_enter = np.empty((B, T, N), dtype)
    rates = np.empty((B, T, N), dtype)
    m = mask if mask is not None else np.zeros((B, 0), bool)
    v0a = v0 if v0 is not None else np.zeros((B, 0, N), dtype)
    _forward_nb(np.ascontiguousarray(u), np.ascontiguousarray(W_in), W, v, i_syn, rate, s, c, K, m, v0a,
                bool(relaxed), *_kernel_surrogate(surrogate_name, alpha, dtype), P, S, s_enter, rates)
    cache = RSNNCache(cfg, u, W_in, W_h, W, P, S, s_enter, mask, c, surrogate_name, alpha, bool(detach_reset))
    return rates, (v, i_syn, rate, s), cache


def rsnn_backward(cache: RSNNCache, grad_rates: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients ``{"W_in": (d_u, N), "W_h": (N, N)}`` of a loss whose gradient with respect to the
    forward's ``rates`` is ``grad_rates (B, T, N)`` (module docstring)."""
    P = cache.p
    B, T, K, N = P.shape
    dtype = P.dtype
    grad_rates = check_array("grad_rates", grad_rates, dtypes=(dtype,), shape=(B, T, N))
    W = np.ascontiguousarray(cache.W)
    gW = np.empty_like(W)
    gW_in = np.empty(cache.W_in.shape, dtype)
    mask = cache.mask if cache.mask is not None else np.zeros((B, 0), bool)
    _backward_nb(P, cache.s, cache.s_enter, np.ascontiguousarray(cache.u), W, np.ascontiguousarray(W.T),
                 np.ascontiguousarray(grad_rates), cache.consts, mask, cache.detach_reset,
                 *_kernel_surrogate(cache.surrogate, cache.alpha, dtype), gW, gW_in)
    return {"W_in": gW_in, "W_h": _dale_grad(cache, gW)}


def _warmup() -> None:
    """Compile (or load from cache) both kernels, float32 and float64, spiking and relaxed, with and
    without resets."""
    cfg = CubaConfig(n_neurons=4, dt=0.5, sim_time=1.0)
    for dt in (np.float32, np.float64):
        state = tuple(np.zeros((1, 4), dt) for _ in range(4))
        u, W_in, W_h = np.ones((1, 2, 2), dt), np.ones((2, 4), dt), np.ones((4, 4), dt)
        resets = (np.array([[False, True]]), np.zeros((1, 2, 4), dt))
        for relaxed in (False, True):
            for rs in (None, resets):
                rates, _, cache = rsnn_forward(cfg, u, W_in, W_h, state, d_in=1, relaxed=relaxed, resets=rs)
                rsnn_backward(cache, np.ones_like(rates))
