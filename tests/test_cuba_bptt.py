"""Surrogate-gradient BPTT through the CuBa-LIF RSNN (refsnn.kernels.cuba_bptt; SPEC §2.3, §4.1):
the Numba kernels = their NumPy oracles; spiking forward = the ES-RSNN oracle; backward = finite
differences of the relaxed network, with the reset detached or not; = PyTorch autograd when installed."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import central_diff, seeds

from refsnn.kernels import cuba, surrogate
from refsnn.kernels.cuba_bptt import (
    effective_recurrent,
    rsnn_backward,
    rsnn_backward_ref,
    rsnn_forward,
    rsnn_forward_ref,
)

SMALL = dict(n_neurons=6, dt=0.5, sim_time=2.0)      # K = 4 substeps


def _setup(seed, dale=True, N=6, d_in=2, B=3, T=3, dtype=np.float64, scale=1.0):
    cfg = cuba.CubaConfig(**{**SMALL, "n_neurons": N}, dale=dale)
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 1, (B, T, 2 * d_in)).astype(dtype)
    W_in = rng.normal(0, scale, (2 * d_in, N)).astype(dtype)
    W_h = rng.normal(0, scale, (N, N)).astype(dtype)
    state = (rng.uniform(0, 1, (B, N)).astype(dtype), rng.normal(0, 0.5, (B, N)).astype(dtype),
             rng.uniform(0, 0.1, (B, N)).astype(dtype), (rng.uniform(size=(B, N)) < 0.3).astype(dtype))
    return cfg, u, W_in, W_h, state, d_in


@settings(max_examples=20, deadline=None)
@given(seed=seeds, dale=st.booleans())
def test_spiking_forward_is_the_es_rsnn_step(seed, dale):
    """T environment steps of rsnn_forward == T calls of cuba.float_env_step_ref with the effective
    (Dale-signed) recurrent weights, state carried (float64; sums in another order)."""
    cfg, u, W_in, W_h, state, d_in = _setup(seed, dale, scale=3.0)
    rates, final, _ = rsnn_forward(cfg, u, W_in, W_h, state, d_in=d_in)
    B, T, _ = u.shape
    W = effective_recurrent(cfg, W_h)
    ref_cfg = cuba.CubaConfig(**SMALL, dale=False, sparsity=cfg.sparsity)   # constants do not depend on dale
    ref_state = tuple(a.copy() for a in state)
    W_out = np.zeros((B, cfg.n_neurons, 1))
    for t in range(T):
        # float_env_step_ref computes R_in from d_u; rescale the input so that both use R_in(d_in)
        scale = cfg.gains(d_in)[0] / ref_cfg.gains(2 * d_in)[0]
        ref_state, _, _ = cuba.float_env_step_ref(ref_cfg, u[:, t] * scale, np.broadcast_to(W_in, (B,) + W_in.shape),
                                                  np.broadcast_to(W, (B,) + W.shape), W_out, ref_state)
        np.testing.assert_allclose(rates[:, t], ref_state[2], rtol=1e-9, atol=1e-12)
    for a, b in zip(final, ref_state):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert rates.shape == (B, T, cfg.n_neurons) and final[3].max() <= 1


@settings(max_examples=40, deadline=None)
@given(seed=seeds, dale=st.booleans(), relaxed=st.booleans(), detach=st.booleans(),
       name=st.sampled_from(surrogate.NAMES), with_resets=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_kernels_match_the_numpy_oracles(seed, dale, relaxed, detach, name, with_resets, dtype):
    """rsnn_forward / rsnn_backward (Numba, event-driven sums) against rsnn_forward_ref /
    rsnn_backward_ref (NumPy, dense products): the same spikes, bit for bit, in spiking mode; rates,
    final state and gradients to the rounding of another summation order."""
    cfg, u, W_in, W_h, state, d_in = _setup(seed, dale, N=9, B=3, T=4, dtype=dtype, scale=2.0)
    B, T, N = u.shape[0], u.shape[1], cfg.n_neurons
    rng = np.random.default_rng(seed + 1)
    resets = None
    if with_resets:
        resets = (rng.uniform(size=(B, T)) < 0.3, rng.uniform(0, 1, (B, T, N)).astype(dtype))
    kw = dict(d_in=d_in, relaxed=relaxed, detach_reset=detach, surrogate_name=name, resets=resets)
    got = rsnn_forward(cfg, u, W_in, W_h, state, **kw)
    want = rsnn_forward_ref(cfg, u, W_in, W_h, state, **kw)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    if not relaxed:
        np.testing.assert_array_equal(got[2].s, want[2].s)
    np.testing.assert_allclose(got[0], want[0], **tol)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, **tol)
    G = rng.normal(size=(B, T, N)).astype(dtype)
    g, h = rsnn_backward(got[2], G), rsnn_backward_ref(want[2], G)
    for key in ("W_in", "W_h"):
        scale = max(1.0, float(np.abs(h[key]).max()))
        np.testing.assert_allclose(g[key], h[key], rtol=0, atol=tol["atol"] * scale * 10, err_msg=key)


def _loss_and_grads(cfg, u, W_in, W_h, state, d_in, G, **kw):
    rates, _, cache = rsnn_forward(cfg, u, W_in, W_h, state, d_in=d_in, relaxed=True, **kw)
    return float(np.sum(rates * G)), rsnn_backward(cache, G)


@pytest.mark.parametrize("name", surrogate.NAMES)
@pytest.mark.parametrize("dale", [True, False])
def test_backward_matches_finite_differences_of_the_relaxed_network(name, dale):
    """Relaxed mode, undetached reset: the network is smooth and the backward is its gradient."""
    cfg, u, W_in, W_h, state, d_in = _setup(7, dale)
    G = np.random.default_rng(1).normal(size=(u.shape[0], u.shape[1], cfg.n_neurons))
    kw = dict(surrogate_name=name, detach_reset=False, alpha=0.5 if name == "fast_sigmoid" else None)
    _, g = _loss_and_grads(cfg, u, W_in, W_h, state, d_in, G, **kw)
    for key, arr in (("W_in", W_in), ("W_h", W_h)):
        fd = central_diff(lambda: _loss_and_grads(cfg, u, W_in, W_h, state, d_in, G, **kw)[0], arr)
        np.testing.assert_allclose(g[key], fd, rtol=1e-5, atol=1e-7, err_msg=f"{name} {key}")


def _relaxed_frozen_reset(cfg, u, W_in, W_h, state, d_in, name, frozen):
    """The relaxed network written independently, with the reset's spike taken from ``frozen``
    (B, T, K, N) instead of the forward's own: its finite differences are the detached gradient."""
    r_in, r, _, a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = cfg.constants(d_in, u.dtype)
    v, i, rate, s = (a.copy() for a in state)
    W = effective_recurrent(cfg, W_h)
    out = []
    for t in range(u.shape[1]):
        current = r_in * (u[:, t] @ W_in)
        for k in range(cfg.n_substeps):
            i = a_syn * i + r * (s @ W)
            p = a_m * v + b_m * ((v_reset + i) + current)
            s = surrogate.primitive(name, p - v_th)
            v = p * (1 - frozen[:, t, k]) + v_reset * frozen[:, t, k]
            rate = a_out * rate + g_out * s
        out.append(rate)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("name", ["atan", "sigmoid", "triangle"])
def test_detached_reset_backward_matches_finite_differences(name):
    """detach_reset=True: the reset's spike is a constant; finite differences of an independent
    forward with those spikes frozen give the same gradient."""
    cfg, u, W_in, W_h, state, d_in = _setup(3, True, scale=2.0)
    G = np.random.default_rng(2).normal(size=(u.shape[0], u.shape[1], cfg.n_neurons))
    rates, _, cache = rsnn_forward(cfg, u, W_in, W_h, state, d_in=d_in, relaxed=True, surrogate_name=name)
    frozen = cache.s.copy()
    np.testing.assert_allclose(_relaxed_frozen_reset(cfg, u, W_in, W_h, state, d_in, name, frozen), rates,
                               rtol=1e-12, atol=1e-14)
    g = rsnn_backward(cache, G)
    for key, arr in (("W_in", W_in), ("W_h", W_h)):
        fd = central_diff(lambda: float(np.sum(G * _relaxed_frozen_reset(cfg, u, W_in, W_h, state, d_in, name,
                                                                          frozen))), arr)
        np.testing.assert_allclose(g[key], fd, rtol=1e-5, atol=1e-7, err_msg=f"{name} {key}")


def test_bad_input_names_the_argument():
    cfg, u, W_in, W_h, state, d_in = _setup(0)
    with pytest.raises(ValueError, match="^W_h"):
        rsnn_forward(cfg, u, W_in, W_h[:, :3], state, d_in=d_in)
    with pytest.raises(TypeError, match="^W_in"):
        rsnn_forward(cfg, u, W_in.astype(np.float32), W_h, state, d_in=d_in)
    with pytest.raises(ValueError, match="^surrogate_name"):
        rsnn_forward(cfg, u, W_in, W_h, state, d_in=d_in, surrogate_name="relu")
    with pytest.raises(ValueError, match="^state v"):
        rsnn_forward(cfg, u, W_in, W_h, (state[0][:1],) + state[1:], d_in=d_in)
    _, _, cache = rsnn_forward(cfg, u, W_in, W_h, state, d_in=d_in)
    with pytest.raises(ValueError, match="^grad_rates"):
        rsnn_backward(cache, np.zeros((1, 1, 1)))


@pytest.mark.torch
@pytest.mark.parametrize("detach", [True, False])
def test_backward_matches_pytorch_autograd_in_spiking_mode(detach):
    """Spiking mode, float64: the same network in PyTorch with the atan surrogate as a custom
    autograd function; autograd's gradients equal the hand-written backward."""
    torch = pytest.importorskip("torch")

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * torch.from_numpy(surrogate.grad("atan", x.detach().numpy()))

    cfg, u, W_in, W_h, state, d_in = _setup(11, True, scale=3.0)
    G = np.random.default_rng(4).normal(size=(u.shape[0], u.shape[1], cfg.n_neurons))
    rates, _, cache = rsnn_forward(cfg, u, W_in, W_h, state, d_in=d_in, detach_reset=detach)
    g = rsnn_backward(cache, G)
    r_in, r, _, a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = (float(c) for c in cfg.constants(d_in, np.float64))
    tw_in = torch.tensor(W_in, requires_grad=True)
    tw_h = torch.tensor(W_h, requires_grad=True)
    sign = torch.ones(cfg.n_neurons, dtype=torch.float64)
    sign[cfg.n_exc:] = -1
    W = sign[:, None] * tw_h.abs()
    v, i, rate, s = (torch.tensor(a) for a in state)
    out = []
    for t in range(u.shape[1]):
        current = r_in * (torch.tensor(u[:, t]) @ tw_in)
        for _ in range(cfg.n_substeps):
            i = a_syn * i + r * (s @ W)
            p = a_m * v + b_m * ((v_reset + i) + current)
            s = Spike.apply(p - v_th)
            sr = s.detach() if detach else s
            v = p * (1 - sr) + v_reset * sr
            rate = a_out * rate + g_out * s
        out.append(rate)
    tr = torch.stack(out, dim=1)
    np.testing.assert_allclose(tr.detach().numpy(), rates, rtol=1e-12, atol=1e-14)
    (tr * torch.tensor(G)).sum().backward()
    np.testing.assert_allclose(g["W_in"], tw_in.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g["W_h"], tw_h.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_episode_resets_inside_a_window():
    """resets: the state becomes (v0, 0, 0, 0) before the marked step; the outputs after it equal a
    fresh sequence from that state, and the backward (relaxed, undetached) matches finite
    differences with no gradient crossing the reset."""
    cfg, u, W_in, W_h, state, d_in = _setup(5, True, T=4)
    B, T, N = u.shape[0], u.shape[1], cfg.n_neurons
    mask = np.zeros((B, T), bool)
    mask[0, 2] = mask[2, 1] = True
    v0 = np.random.default_rng(9).uniform(0, 1, (B, T, N))
    rates, _, _ = rsnn_forward(cfg, u, W_in, W_h, state, d_in=d_in, resets=(mask, v0))
    fresh = (v0[0, 2][None], np.zeros((1, N)), np.zeros((1, N)), np.zeros((1, N)))
    r2, _, _ = rsnn_forward(cfg, u[:1, 2:], W_in, W_h, fresh, d_in=d_in)
    np.testing.assert_array_equal(rates[0, 2:], r2[0])
    r_plain, _, _ = rsnn_forward(cfg, u, W_in, W_h, state, d_in=d_in)
    np.testing.assert_array_equal(rates[1], r_plain[1])             # an unmarked sequence is unchanged
    G = np.random.default_rng(3).normal(size=(B, T, N))
    kw = dict(relaxed=True, detach_reset=False, resets=(mask, v0))

    def loss():
        return float(np.sum(G * rsnn_forward(cfg, u, W_in, W_h, state, d_in=d_in, **kw)[0]))
    g = rsnn_backward(rsnn_forward(cfg, u, W_in, W_h, state, d_in=d_in, **kw)[2], G)
    for key, arr in (("W_in", W_in), ("W_h", W_h)):
        np.testing.assert_allclose(g[key], central_diff(loss, arr), rtol=1e-5, atol=1e-7, err_msg=key)
