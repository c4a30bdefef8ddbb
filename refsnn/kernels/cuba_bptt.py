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

Shapes: ``u (B, T, d_u)``; state ``(v, i_syn, rate, s)``, each ``(B, N)``; output rates
``(B, T, N)``. ``d_in`` sets the input gain ``R_in`` (:meth:`CubaConfig.gains`; for EC's
``u = [x, -x]`` it is the observation size, ``d_u / 2``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refsnn._checks import check_array, check_choice, check_int
from refsnn.kernels import surrogate
from refsnn.kernels.cuba import CubaConfig

__all__ = ["effective_recurrent", "rsnn_forward", "rsnn_backward", "RSNNCache"]


def effective_recurrent(cfg: CubaConfig, W_h: np.ndarray) -> np.ndarray:
    """``W = sign_j |W_h|`` (rows = presynaptic ``j``: ``+1`` for ``j < n_exc``, ``-1`` after) with
    Dale's law, ``W_h`` itself without."""
    if not cfg.dale:
        return W_h
    sign = np.ones(cfg.n_neurons, dtype=W_h.dtype)
    sign[cfg.n_exc:] = -1
    return sign[:, None] * np.abs(W_h)


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
    consts: np.ndarray
    surrogate: str
    alpha: float | None
    detach_reset: bool


def rsnn_forward(cfg: CubaConfig, u: np.ndarray, W_in: np.ndarray, W_h: np.ndarray, state, *, d_in: int,
                 surrogate_name: str = "atan", alpha: float | None = None, detach_reset: bool = True,
                 relaxed: bool = False, resets=None) -> tuple[np.ndarray, tuple, RSNNCache]:
    """``T`` environment steps of ``B`` sequences (module docstring): returns ``(rates (B, T, N),
    final state (v, i_syn, rate, s), cache)``. The input state is not modified."""
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
    v, i_syn, rate, s = (check_array(f"state {n}", a, dtypes=(dtype,), shape=(B, N)).copy()
                         for n, a in zip(("v", "i_syn", "rate", "s"), state))
    c = cfg.constants(d_in, dtype)
    r_in, r, _, a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = c
    K = cfg.n_substeps
    W = effective_recurrent(cfg, W_h)
    mask = v0 = None
    if resets is not None:
        mask, v0 = resets
        mask = check_array("resets mask", mask, dtypes=(np.dtype(bool),), shape=(B, T))
        v0 = check_array("resets v0", v0, dtypes=(dtype,), shape=(B, T, N))
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


def rsnn_backward(cache: RSNNCache, grad_rates: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients ``{"W_in": (d_u, N), "W_h": (N, N)}`` of a loss whose gradient with respect to the
    forward's ``rates`` is ``grad_rates (B, T, N)`` (module docstring)."""
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
    gW_h = gW
    if cache.cfg.dale:
        sign = np.ones(N, dtype=dtype)
        sign[cache.cfg.n_exc:] = -1
        gW_h = gW * sign[:, None] * np.sign(cache.W_h)
    return {"W_in": gW_in, "W_h": gW_h}

