"""SPEC §2.1 presets for the other mainstream neuron conventions: snnTorch's subtract reset
(``subtract_after_decay``), an initial membrane ``v0`` for the LIF, and Norse's forward-Euler
``LIF`` (with synaptic current) and ``LIFBox`` (:mod:`refsnn.kernels.norse_lif`).

Kernel == NumPy oracle (spikes and membranes exact, gradients to :data:`KERNEL_TOL`), every backward
against central finite differences in relaxed mode in float64 (SPEC §4.1), hand-computed sequences,
initial-state behaviour, bad input. The tests marked ``torch`` compare with the installed snnTorch /
Norse and are skipped without them; nothing else here needs torch.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.kernels import surrogate as sg
from refsnn.kernels.lif import (
    PRESETS,
    LIFParams,
    lif_backward,
    lif_backward_ref,
    lif_forward,
    lif_forward_ref,
    lif_preset,
)
from refsnn.kernels.norse_lif import PRESETS as NORSE_PRESETS
from refsnn.kernels.norse_lif import (
    NorseLIFBoxParams,
    NorseLIFParams,
    norse_lif_backward,
    norse_lif_backward_ref,
    norse_lif_box_backward,
    norse_lif_box_backward_ref,
    norse_lif_box_forward,
    norse_lif_box_forward_ref,
    norse_lif_forward,
    norse_lif_forward_ref,
    norse_preset,
)
from refsnn.vectors.tolerances import KERNEL_TOL
from tests.strategies import central_diff, dtypes, rng_from, seeds, time_major_shapes

# ---- strategies -----------------------------------------------------------------------------------

@st.composite
def lif_params_any(draw):
    """Any LIF configuration, the subtract-after-decay form included (it needs soft reset)."""
    after = draw(st.booleans())
    soft = after or draw(st.booleans())
    return LIFParams(
        tau=draw(st.sampled_from([1.0, 1.5, 2.0, 10.0])),
        v_th=draw(st.sampled_from([0.5, 1.0, 0.3])),
        v_reset=None if soft else draw(st.sampled_from([0.0, -0.2])),
        decay_input=draw(st.booleans()),
        threshold=draw(st.sampled_from([">", ">="])),
        surrogate=draw(st.sampled_from(sg.NAMES)),
        alpha=draw(st.sampled_from([None, 1.5])),
        detach_reset=draw(st.booleans()),
        subtract_after_decay=after,
    )


@st.composite
def norse_params(draw, box=False):
    kw = dict(
        dt=draw(st.sampled_from([1e-3, 5e-4, 2e-3])),
        tau_mem_inv=draw(st.sampled_from([100.0, 250.0, 37.0])),
        v_leak=draw(st.sampled_from([0.0, -0.3, 0.2])),
        v_th=draw(st.sampled_from([1.0, 0.5])),
        v_reset=draw(st.sampled_from([0.0, -0.4])),
        surrogate=draw(st.sampled_from(sg.NAMES)),
        alpha=draw(st.sampled_from([None, 1.0, 3.0])),
        detach_reset=draw(st.booleans()),
    )
    if box:
        return NorseLIFBoxParams(**kw)
    return NorseLIFParams(tau_syn_inv=draw(st.sampled_from([200.0, 120.0, 400.0])), **kw)


def _v0_for(draw_rng, shape, dtype, form):
    step = shape[1:]
    if form == "none":
        return None
    if form == "scalar":
        return float(draw_rng.uniform(-0.5, 1.2))
    if form == "row" and step:
        return draw_rng.uniform(-0.5, 1.2, size=step[-1:]).astype(dtype)  # broadcast over the rest
    return draw_rng.uniform(-0.5, 1.2, size=step).astype(dtype)


def _allclose_grad(a, b, dtype):
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=KERNEL_TOL[dtype]["rtol"] * 10,
                               atol=KERNEL_TOL[dtype]["atol"] * 10 * scale)


# ---- LIF with v0 and subtract_after_decay: kernel == oracle ----------------------------------------

@settings(max_examples=60, deadline=None)
@given(shape=time_major_shapes, dtype=dtypes, p=lif_params_any(), seed=seeds, relaxed=st.booleans(),
       v0_form=st.sampled_from(["none", "scalar", "row", "full"]))
def test_lif_v0_and_after_decay_kernel_matches_oracle(shape, dtype, p, seed, relaxed, v0_form):
    rng = rng_from(seed)
    x = rng.normal(0.4, 0.8, size=shape).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    v0 = _v0_for(rng, shape, dtype, v0_form)
    s, h = lif_forward(x, p, v0=v0, relaxed=relaxed)
    s_ref, h_ref = lif_forward_ref(x, p, v0=v0, relaxed=relaxed)
    assert s.dtype == h.dtype == dtype and s.shape == h.shape == x.shape
    if relaxed:
        np.testing.assert_allclose(s, s_ref, **KERNEL_TOL[dtype])
        np.testing.assert_allclose(h, h_ref, **KERNEL_TOL[dtype])
    else:
        assert np.array_equal(s, s_ref) and np.array_equal(h, h_ref)
    gx, gv0 = lif_backward(g, h, p, v0=v0, relaxed=relaxed, return_grad_v0=True)
    gx_ref, gv0_ref = lif_backward_ref(g, h, p, v0=v0, relaxed=relaxed, return_grad_v0=True)
    assert gv0.shape == gv0_ref.shape == x.shape[1:] and gv0.dtype == dtype
    _allclose_grad(gx, gx_ref, dtype)
    _allclose_grad(gv0, gv0_ref, dtype)
    # dL/dX does not depend on v0 given H, and return_grad_v0=False returns the same grad_x
    np.testing.assert_array_equal(lif_backward(g, h, p, relaxed=relaxed), gx)


def test_lif_after_decay_large_array_crosses_blocks():
    rng = np.random.default_rng(11)
    x = rng.normal(0.4, 0.8, size=(5, 3, 1777)).astype(np.float32)
    v0 = rng.uniform(-0.5, 1.5, size=(3, 1777)).astype(np.float32)
    for p in (lif_preset("snntorch_subtract", beta=0.8), lif_preset("snntorch_subtract", detach_reset=False)):
        s, h = lif_forward(x, p, v0=v0)
        s2, h2 = lif_forward_ref(x, p, v0=v0)
        assert np.array_equal(s, s2) and np.array_equal(h, h2)
        g = rng.normal(size=x.shape).astype(np.float32)
        for a, b in zip(lif_backward(g, h, p, v0=v0, return_grad_v0=True),
                        lif_backward_ref(g, h, p, v0=v0, return_grad_v0=True)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---- snnTorch subtract: by hand and against its update rule ----------------------------------------

def test_snntorch_subtract_by_hand():
    # beta 0.5, threshold 1: U[t] = 0.5 U[t-1] + I[t] - R[t], R[t] = [U[t-1] > 1], spike [U[t] > 1]
    x = np.array([1.5, 0.5, 0.0, 1.0, 1.0])[:, None]
    s, h = lif_forward(x, lif_preset("snntorch_subtract", beta=0.5))
    # U: 1.5 (spike) -> 0.75 + 0.5 - 1 = 0.25 -> 0.125 -> 0.0625 + 1 = 1.0625 (spike) -> 0.53125 + 1 - 1
    np.testing.assert_array_equal(h[:, 0], [1.5, 0.25, 0.125, 1.0625, 0.53125])
    assert s[:, 0].tolist() == [1, 0, 0, 1, 0]
    # the before-decay soft reset (SpikingJelly's) differs by (1 - beta) v_th per spike:
    _, h_soft = lif_forward(x, lif_preset("snntorch_subtract", beta=0.5, subtract_after_decay=False))
    np.testing.assert_array_equal(h_soft[:, 0], [1.5, 0.75, 0.375, 1.1875, 0.09375 + 1.0])
    assert h_soft[1, 0] - h[1, 0] == pytest.approx(0.5 * 1.0)


def _snntorch_leaky_subtract(x, beta, thr, mem0):
    # snnTorch 1.0 Leaky(reset_mechanism="subtract"), reset_delay=True, written from its source:
    # reset = [mem > thr] (detached); mem = beta * mem + x - reset * thr; spk = [mem > thr]
    mem = mem0.copy()
    spk, mems = [], []
    for t in range(x.shape[0]):
        r = (mem - thr > 0).astype(float)
        mem = beta * mem + x[t] - r * thr
        spk.append((mem - thr > 0).astype(float))
        mems.append(mem)
    return np.array(spk), np.array(mems)


def test_snntorch_subtract_matches_leaky_update_with_v0():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 0.7, size=(30, 200))
    mem0 = rng.uniform(-0.5, 1.8, size=200)  # some start above threshold: R[0] = 1 there
    for beta in (0.5, 0.8, 0.95):
        s, h = lif_forward(x, lif_preset("snntorch_subtract", beta=beta), v0=mem0)
        s_ref, mem = _snntorch_leaky_subtract(x, beta, 1.0, mem0)
        np.testing.assert_array_equal(s, s_ref)
        np.testing.assert_allclose(h, mem, rtol=1e-12, atol=1e-12)
        assert (s != lif_forward(x, lif_preset("snntorch_subtract", beta=beta))[0]).any()  # v0 matters


# ---- BPTT == finite differences (relaxed mode, float64), dL/dX and dL/dv0 --------------------------

@pytest.mark.parametrize("surrogate", ["sigmoid", "atan", "fast_sigmoid"])
@pytest.mark.parametrize("form", ["hard", "soft", "after"])
@pytest.mark.parametrize("decay_input", [False, True])
def test_lif_v0_backward_matches_finite_differences(surrogate, form, decay_input):
    rng = np.random.default_rng(4)
    p = LIFParams(tau=2.0, v_th=0.5, v_reset=0.0 if form == "hard" else None, decay_input=decay_input,
                  surrogate=surrogate, alpha=1.0 if surrogate != "fast_sigmoid" else 3.0,
                  detach_reset=False, subtract_after_decay=form == "after")
    x = rng.normal(0.4, 0.6, size=(6, 5))
    v0 = rng.uniform(-0.2, 0.9, size=5)
    w = rng.normal(size=x.shape)

    def loss():
        return float(np.sum(w * lif_forward(x, p, v0=v0, relaxed=True)[0]))

    _, h = lif_forward(x, p, v0=v0, relaxed=True)
    gx, gv0 = lif_backward(w, h, p, v0=v0, relaxed=True, return_grad_v0=True)
    np.testing.assert_allclose(gx, central_diff(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gv0, central_diff(loss, v0), rtol=1e-6, atol=1e-7)


def test_lif_after_decay_detach_changes_gradient_only_through_reset():
    rng = np.random.default_rng(5)
    x = rng.normal(0.6, 0.6, size=(6, 50))
    v0 = rng.uniform(0.0, 1.5, size=50)
    p_full = lif_preset("snntorch_subtract", detach_reset=False, surrogate="sigmoid", alpha=None)
    p_det = lif_preset("snntorch_subtract", detach_reset=True, surrogate="sigmoid", alpha=None)
    _, h = lif_forward(x, p_full, v0=v0)
    g = np.ones_like(x)
    full = lif_backward(g, h, p_full, v0=v0, return_grad_v0=True)
    det = lif_backward(g, h, p_det, v0=v0, return_grad_v0=True)
    assert not np.allclose(full[0], det[0]) and not np.allclose(full[1], det[1])
    # detached: dL/dv0 is dL/dH[0] (1 - 1/tau), which the last step's input gradient shows for T = 1
    gx1, gv1 = lif_backward(g[:1], h[:1], p_det, v0=v0, return_grad_v0=True)
    np.testing.assert_allclose(gv1, gx1[0] * 0.5)


# ---- v0 semantics -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_lif_v0_default_scalar_and_split_sequence(name):
    p = PRESETS[name]
    rng = np.random.default_rng(6)
    x = rng.normal(0.6, 0.8, size=(10, 3, 4)).astype(np.float32)
    s, h = lif_forward(x, p)
    default = 0.0 if p.v_reset is None else p.v_reset
    for v0 in (default, np.float32(default) * np.ones((3, 4), np.float32), np.zeros(4, np.float32) + default):
        s2, h2 = lif_forward(x, p, v0=v0)
        assert np.array_equal(s, s2) and np.array_equal(h, h2)
    s3, h3 = lif_forward(x, p, v0=0.3)
    np.testing.assert_array_equal(h3, lif_forward(x, p, v0=np.full((3, 4), 0.3, np.float32))[1])
    # running a sequence in two pieces, the second from the state the first ended in, is one run
    k = 4
    s_a, h_a = lif_forward(x[:k], p)
    if p.subtract_after_decay:
        v_end = h_a[-1]                     # the state is H; S[-1] = fire(v0 - v_th) is s_a[-1]
    elif p.v_reset is None:
        v_end = h_a[-1] - np.float32(p.v_th) * s_a[-1]
    else:
        v_end = h_a[-1] * (1 - s_a[-1]) + np.float32(p.v_reset) * s_a[-1]
    s_b, h_b = lif_forward(x[k:], p, v0=v_end)
    assert np.array_equal(np.concatenate([s_a, s_b]), s) and np.array_equal(np.concatenate([h_a, h_b]), h)


def test_lif_v0_is_not_modified_and_1d_input():
    x = np.array([0.3, 0.3, 0.3], np.float64)  # one neuron: x.shape[1:] == ()
    v0 = np.array(0.4)
    keep = v0.copy()
    s, h = lif_forward(x, PRESETS["seed"], v0=v0)
    assert np.array_equal(v0, keep)
    # H0 = 0.4 - 0.2 + 0.3 = 0.5 fires (>=), V = 0; H1 = 0.3; H2 = 0.15 + 0.3 = 0.45
    np.testing.assert_allclose(h, [0.5, 0.3, 0.45])
    assert s.tolist() == [1.0, 0.0, 0.0]
    gx, gv0 = lif_backward(np.ones(3), h, PRESETS["seed"], v0=v0, return_grad_v0=True)
    assert gv0.shape == ()


# ---- Norse LIF / LIFBox: kernel == oracle --------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(shape=time_major_shapes, dtype=dtypes, p=norse_params(), seed=seeds, relaxed=st.booleans(),
       v0_form=st.sampled_from(["none", "scalar", "row", "full"]), i0_form=st.sampled_from(["none", "full"]))
def test_norse_lif_kernel_matches_oracle(shape, dtype, p, seed, relaxed, v0_form, i0_form):
    rng = rng_from(seed)
    x = rng.normal(1.0, 4.0, size=shape).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    v0 = _v0_for(rng, shape, dtype, v0_form)
    i0 = _v0_for(rng, shape, dtype, i0_form)
    out = norse_lif_forward(x, p, v0=v0, i0=i0, relaxed=relaxed)
    ref = norse_lif_forward_ref(x, p, v0=v0, i0=i0, relaxed=relaxed)
    for a, b in zip(out, ref):
        assert a.dtype == dtype and a.shape == x.shape
        if relaxed:
            np.testing.assert_allclose(a, b, **KERNEL_TOL[dtype])
        else:
            assert np.array_equal(a, b)
    h = out[1]
    grads = norse_lif_backward(g, h, p, relaxed=relaxed)
    grads_ref = norse_lif_backward_ref(g, h, p, relaxed=relaxed)
    assert [a.shape for a in grads] == [x.shape, x.shape[1:], x.shape[1:]]
    for a, b in zip(grads, grads_ref):
        assert a.dtype == dtype
        _allclose_grad(a, b, dtype)
    np.testing.assert_array_equal(grads[2], grads[0][0])  # dL/di0 = dL/dX[0] (J[0] = i0 + X[0])


@settings(max_examples=50, deadline=None)
@given(shape=time_major_shapes, dtype=dtypes, p=norse_params(box=True), seed=seeds, relaxed=st.booleans(),
       v0_form=st.sampled_from(["none", "scalar", "row", "full"]))
def test_norse_lif_box_kernel_matches_oracle(shape, dtype, p, seed, relaxed, v0_form):
    rng = rng_from(seed)
    x = rng.normal(1.0, 6.0, size=shape).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    v0 = _v0_for(rng, shape, dtype, v0_form)
    out = norse_lif_box_forward(x, p, v0=v0, relaxed=relaxed)
    ref = norse_lif_box_forward_ref(x, p, v0=v0, relaxed=relaxed)
    for a, b in zip(out, ref):
        assert a.dtype == dtype and a.shape == x.shape
        if relaxed:
            np.testing.assert_allclose(a, b, **KERNEL_TOL[dtype])
        else:
            assert np.array_equal(a, b)
    grads = norse_lif_box_backward(g, out[1], p, relaxed=relaxed)
    grads_ref = norse_lif_box_backward_ref(g, out[1], p, relaxed=relaxed)
    for a, b in zip(grads, grads_ref):
        assert a.dtype == dtype
        _allclose_grad(a, b, dtype)


def test_norse_large_array_crosses_blocks():
    rng = np.random.default_rng(12)
    x = rng.normal(3.0, 6.0, size=(6, 2, 2111)).astype(np.float32)
    v0 = rng.uniform(-0.5, 1.2, size=(2, 2111)).astype(np.float32)
    a, b = norse_lif_forward(x, v0=v0, i0=x[0]), norse_lif_forward_ref(x, v0=v0, i0=x[0])
    assert all(np.array_equal(u, w) for u, w in zip(a, b))
    g = rng.normal(size=x.shape).astype(np.float32)
    for u, w in zip(norse_lif_backward(g, a[1]), norse_lif_backward_ref(g, a[1])):
        np.testing.assert_allclose(u, w, rtol=1e-5, atol=1e-6)
    a, b = norse_lif_box_forward(x, v0=v0), norse_lif_box_forward_ref(x, v0=v0)
    assert all(np.array_equal(u, w) for u, w in zip(a, b))


# ---- Norse: by hand ------------------------------------------------------------------------------

def test_norse_lif_by_hand():
    # defaults: k_m = 0.1, k_s = 0.2, v_leak 0, v_th 1, v_reset 0 (not exact in binary: rtol 1e-14)
    p = NORSE_PRESETS["norse_lif"]
    x = np.array([5.0, 5.0, 0.0, 0.0])[:, None]
    s, h, i = norse_lif_forward(x, p)
    # J0 = 5, H0 = 0 + 0.1 (0 + 5) = 0.5, I0 = 4; J1 = 9, H1 = 0.5 + 0.1 (-0.5 + 9) = 1.35 (spike),
    # I1 = 7.2; J2 = 7.2, H2 = 0 + 0.72 = 0.72, I2 = 5.76; J3 = 5.76, H3 = 0.72 + 0.1 (5.76 - 0.72) = 1.224
    np.testing.assert_allclose(h[:, 0], [0.5, 1.35, 0.72, 1.224], rtol=1e-14)
    np.testing.assert_allclose(i[:, 0], [4.0, 7.2, 5.76, 4.608], rtol=1e-14)
    assert s[:, 0].tolist() == [0, 1, 0, 1]
    # LIFBox: H = V + 0.1 ((X + v_leak) - V)
    s, h = norse_lif_box_forward(np.array([[20.0], [2.0], [0.0]]), NORSE_PRESETS["norse_lif_box"], v0=0.5)
    # H0 = 0.5 + 0.1 (20 - 0.5) = 2.45 (spike, V = 0); H1 = 0.2; H2 = 0.2 - 0.02 = 0.18
    np.testing.assert_allclose(h[:, 0], [2.45, 0.2, 0.18], rtol=1e-14)
    assert s[:, 0].tolist() == [1, 0, 0]


def test_norse_defaults_and_split_sequence():
    rng = np.random.default_rng(7)
    x = rng.normal(3.0, 5.0, size=(9, 2, 6))
    p = norse_preset("norse_lif", v_leak=-0.2, v_reset=-0.1)
    s, h, i = norse_lif_forward(x, p)
    s2, h2, i2 = norse_lif_forward(x, p, v0=-0.2, i0=0.0)
    assert np.array_equal(s, s2) and np.array_equal(h, h2) and np.array_equal(i, i2)
    k = 5
    sa, ha, ia = norse_lif_forward(x[:k], p)
    v_end = (1 - sa[-1]) * ha[-1] + sa[-1] * p.v_reset
    sb, hb, ib = norse_lif_forward(x[k:], p, v0=v_end, i0=ia[-1])
    assert np.array_equal(np.concatenate([sa, sb]), s) and np.array_equal(np.concatenate([ia, ib]), i)
    pb = norse_preset("norse_lif_box", v_leak=0.3)
    s, h = norse_lif_box_forward(x, pb)
    assert np.array_equal(h, norse_lif_box_forward(x, pb, v0=0.3)[1])
    sa, ha = norse_lif_box_forward(x[:k], pb)
    sb, hb = norse_lif_box_forward(x[k:], pb, v0=(1 - sa[-1]) * ha[-1])
    assert np.array_equal(np.concatenate([ha, hb]), h)


# ---- Norse: BPTT == finite differences (relaxed, float64) ----------------------------------------

@pytest.mark.parametrize("surrogate", ["sigmoid", "atan", "fast_sigmoid"])
@pytest.mark.parametrize("box", [False, True])
def test_norse_backward_matches_finite_differences(surrogate, box):
    rng = np.random.default_rng(8)
    common = dict(dt=1e-3, tau_mem_inv=150.0, v_leak=-0.1, v_th=0.6, v_reset=-0.2, surrogate=surrogate,
                  alpha=1.0 if surrogate != "fast_sigmoid" else 3.0, detach_reset=False)
    p = NorseLIFBoxParams(**common) if box else NorseLIFParams(tau_syn_inv=250.0, **common)
    x = rng.normal(2.0, 3.0, size=(7, 4)) * (1.0 if box else 0.3)
    v0 = rng.uniform(-0.3, 0.8, size=4)
    i0 = rng.normal(1.0, 1.0, size=4)
    w = rng.normal(size=x.shape)

    def loss():
        if box:
            return float(np.sum(w * norse_lif_box_forward(x, p, v0=v0, relaxed=True)[0]))
        return float(np.sum(w * norse_lif_forward(x, p, v0=v0, i0=i0, relaxed=True)[0]))

    if box:
        _, h = norse_lif_box_forward(x, p, v0=v0, relaxed=True)
        gx, gv0 = norse_lif_box_backward(w, h, p, relaxed=True)
    else:
        _, h, _ = norse_lif_forward(x, p, v0=v0, i0=i0, relaxed=True)
        gx, gv0, gi0 = norse_lif_backward(w, h, p, relaxed=True)
        np.testing.assert_allclose(gi0, central_diff(loss, i0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gx, central_diff(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gv0, central_diff(loss, v0), rtol=1e-6, atol=1e-7)


def test_norse_detach_reset_changes_gradient():
    rng = np.random.default_rng(9)
    x = rng.normal(3.0, 5.0, size=(8, 40))
    g = np.ones_like(x)
    _, h, _ = norse_lif_forward(x)
    full = norse_lif_backward(g, h)
    det = norse_lif_backward(g, h, norse_preset("norse_lif", detach_reset=True))
    assert not np.allclose(full[0], det[0])
    np.testing.assert_allclose(det[0], norse_lif_backward_ref(g, h, norse_preset("norse_lif", detach_reset=True))[0],
                               rtol=1e-12, atol=1e-13)


# ---- presets --------------------------------------------------------------------------------------

def test_new_presets_documented_values():
    st_sub = PRESETS["snntorch_subtract"]
    assert (st_sub.tau, st_sub.v_th, st_sub.v_reset, st_sub.decay_input, st_sub.threshold, st_sub.surrogate,
            st_sub.surrogate_alpha, st_sub.detach_reset, st_sub.subtract_after_decay) == \
        (2.0, 1.0, None, False, ">", "atan", 2.0, True, True)
    assert lif_preset("snntorch_subtract", beta=0.75).tau == pytest.approx(4.0)
    assert NORSE_PRESETS["norse_lif"] == NorseLIFParams(dt=1e-3, tau_syn_inv=200.0, tau_mem_inv=100.0, v_leak=0.0,
                                                        v_th=1.0, v_reset=0.0, surrogate="fast_sigmoid",
                                                        alpha=1.0, detach_reset=False)
    assert NORSE_PRESETS["norse_lif_box"] == NorseLIFBoxParams(dt=1e-3, tau_mem_inv=100.0, v_leak=0.0, v_th=1.0,
                                                               v_reset=0.0, surrogate="fast_sigmoid", alpha=1.0,
                                                               detach_reset=False)
    for p in PRESETS.values():  # the older presets keep the before-decay form
        assert p.subtract_after_decay == (p is st_sub)


# ---- bad input ------------------------------------------------------------------------------------

def test_lif_v0_and_after_decay_bad_input():
    x = np.zeros((3, 2, 4), np.float32)
    with pytest.raises(TypeError, match="v0: expected dtype"):
        lif_forward(x, v0=np.zeros((2, 4), np.float64))
    with pytest.raises(ValueError, match="v0: expected a shape that broadcasts"):
        lif_forward(x, v0=np.zeros((3, 2, 4), np.float32))
    with pytest.raises(ValueError, match="v0: expected a shape that broadcasts"):
        lif_forward(x, v0=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="v0: contains NaN"):
        lif_forward(x, v0=np.full(4, np.nan, np.float32))
    with pytest.raises(ValueError, match="v0: expected a finite number"):
        lif_forward(x, v0=float("inf"))
    with pytest.raises(ValueError, match="v0: expected a value finite in float32"):
        lif_forward(x, v0=1e300)
    with pytest.raises(TypeError, match="v0: expected None, a real number"):
        lif_forward(x, v0=[0.0, 1.0])
    with pytest.raises(TypeError, match="v0: expected None, a real number"):
        lif_forward(x, v0=True)
    with pytest.raises(TypeError, match="v0: expected dtype"):
        lif_backward(x, x, v0=np.zeros(4, np.float64), return_grad_v0=True)
    with pytest.raises(TypeError, match="return_grad_v0"):
        lif_backward(x, x, return_grad_v0=1)
    with pytest.raises(ValueError, match="subtract_after_decay: only defined for soft reset"):
        LIFParams(v_reset=0.0, subtract_after_decay=True)
    with pytest.raises(TypeError, match="subtract_after_decay"):
        LIFParams(v_reset=None, subtract_after_decay=1)
    with pytest.raises(ValueError, match="x: contains NaN"):
        lif_forward(np.array([[0.1], [np.nan]], np.float32), PRESETS["snntorch_subtract"])
    _, h = lif_forward(x, PRESETS["snntorch_subtract"])
    with pytest.raises(ValueError, match="grad_s"):
        lif_backward(np.full_like(x, np.inf), h, PRESETS["snntorch_subtract"])


def test_norse_bad_input():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="dt"):
        NorseLIFParams(dt=0.0)
    with pytest.raises(TypeError, match="dt"):
        NorseLIFParams(dt="1e-3")
    with pytest.raises(ValueError, match="tau_mem_inv"):
        NorseLIFParams(tau_mem_inv=-1.0)
    with pytest.raises(ValueError, match="tau_mem_inv: expected dt \\* tau_mem_inv <= 1"):
        NorseLIFParams(dt=1e-2, tau_mem_inv=200.0)
    with pytest.raises(ValueError, match="tau_syn_inv"):
        NorseLIFParams(tau_syn_inv=2000.0)
    with pytest.raises(ValueError, match="v_reset"):
        NorseLIFBoxParams(v_th=0.5, v_reset=0.5)
    with pytest.raises(ValueError, match="v_leak"):
        NorseLIFBoxParams(v_leak=float("nan"))
    with pytest.raises(ValueError, match="surrogate"):
        NorseLIFParams(surrogate="super")
    with pytest.raises(ValueError, match="alpha"):
        NorseLIFParams(alpha=0.0)
    with pytest.raises(TypeError, match="detach_reset"):
        NorseLIFParams(detach_reset=0)
    with pytest.raises(ValueError, match="name"):
        norse_preset("norse_adex")
    with pytest.raises(TypeError, match="params: expected refsnn.kernels.norse_lif.NorseLIFParams"):
        norse_lif_forward(x, NORSE_PRESETS["norse_lif_box"])
    with pytest.raises(TypeError, match="params: expected refsnn.kernels.norse_lif.NorseLIFBoxParams"):
        norse_lif_box_backward(x, x, NORSE_PRESETS["norse_lif"])
    with pytest.raises(TypeError, match="x: expected dtype"):
        norse_lif_forward(x.astype(np.int32))
    with pytest.raises(ValueError, match="x: expected at least 1 dimensions"):
        norse_lif_box_forward(np.ones((), np.float32))
    with pytest.raises(ValueError, match="x: contains NaN"):
        norse_lif_forward(np.array([[0.0], [np.nan], [0.0]], np.float32))
    with pytest.raises(ValueError, match="x: contains NaN"):
        norse_lif_forward(np.array([[0.0], [0.0], [np.inf]], np.float64))  # in the last step
    with pytest.raises(ValueError, match="x: contains NaN"):
        norse_lif_box_forward(np.array([[np.inf], [0.0]], np.float64))
    with pytest.raises(ValueError, match="i0: expected a shape that broadcasts"):
        norse_lif_forward(x, i0=np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="v0: expected dtype"):
        norse_lif_box_forward(x, v0=np.zeros(2, np.float64))
    with pytest.raises(ValueError, match="h: expected the shape of grad_s"):
        norse_lif_backward(x, np.zeros((3, 3), np.float32))
    with pytest.raises(TypeError, match="h: expected the dtype"):
        norse_lif_box_backward(x, np.zeros((3, 2), np.float64))
    with pytest.raises(ValueError, match="grad_s"):
        norse_lif_backward(np.array([[np.nan], [0.0]]), np.zeros((2, 1)))
    with pytest.raises(TypeError, match="relaxed"):
        norse_lif_forward(x, relaxed="yes")


# ---- against the installed frameworks (skipped without torch / snnTorch / Norse) ---------------------

@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_snntorch_subtract_matches_snntorch(dtype):
    torch = pytest.importorskip("torch")
    snntorch = pytest.importorskip("snntorch")
    rng = np.random.default_rng(13)
    x = rng.normal(0.4, 0.6, size=(20, 3, 30)).astype(dtype)
    v0 = rng.uniform(-0.5, 1.5, size=(3, 30)).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    for beta in (0.5, 0.9):
        p = lif_preset("snntorch_subtract", beta=beta)
        s, h = lif_forward(x, p, v0=v0)
        gx, gv0 = lif_backward(g, h, p, v0=v0, return_grad_v0=True)
        lif = snntorch.Leaky(beta=torch.tensor(beta, dtype=tdt), threshold=1.0, reset_mechanism="subtract")
        xt, mem = torch.tensor(x, requires_grad=True), torch.tensor(v0, requires_grad=True)
        m0, spk, mems = mem, [], []
        for t in range(x.shape[0]):
            z, mem = lif(xt[t], mem)
            spk.append(z.to(tdt))
            mems.append(mem)
        S, H = torch.stack(spk), torch.stack(mems)
        gxt, gvt = torch.autograd.grad((S * torch.tensor(g)).sum(), (xt, m0))
        assert np.array_equal(S.detach().numpy(), s)
        if beta == 0.5:  # 0.5 U and U - U/2 are both exact
            assert np.array_equal(H.detach().numpy(), h)
        np.testing.assert_allclose(H.detach().numpy(), h, rtol=1e-5, atol=1e-6)
        # snnTorch's spikes are float32 even in float64 runs: gradients agree to float32 rounding
        np.testing.assert_allclose(gxt.numpy(), gx, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gvt.numpy(), gv0, rtol=1e-4, atol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("box", [False, True])
def test_norse_matches_norse(dtype, box):
    torch = pytest.importorskip("torch")
    nt = pytest.importorskip("norse.torch")
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    rng = np.random.default_rng(14)
    x = rng.normal(2.0, 5.0, size=(25, 2, 30)).astype(dtype) * (3.0 if box else 1.0)
    v0 = rng.uniform(-0.5, 1.2, size=(2, 30)).astype(dtype)
    i0 = rng.normal(1.0, 3.0, size=(2, 30)).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)

    def t(v):
        return torch.tensor(v, dtype=tdt)

    p = norse_preset("norse_lif_box" if box else "norse_lif", dt=1e-3, v_leak=-0.1, v_reset=-0.2)
    xt, vt, it = (torch.tensor(a, requires_grad=True) for a in (x, v0, i0))
    if box:
        cell = nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=t(p.tau_mem_inv), v_leak=t(p.v_leak), v_th=t(p.v_th),
                                                 v_reset=t(p.v_reset)), dt=p.dt)
        state = nt.LIFBoxFeedForwardState(v=vt)
        s, h = norse_lif_box_forward(x, p, v0=v0)
        gx, gv0 = norse_lif_box_backward(g, h, p)
    else:
        cell = nt.LIFCell(nt.LIFParameters(tau_syn_inv=t(p.tau_syn_inv), tau_mem_inv=t(p.tau_mem_inv),
                                           v_leak=t(p.v_leak), v_th=t(p.v_th), v_reset=t(p.v_reset)), dt=p.dt)
        state = nt.LIFFeedForwardState(v=vt, i=it)
        s, h, i = norse_lif_forward(x, p, v0=v0, i0=i0)
        gx, gv0, gi0 = norse_lif_backward(g, h, p)
    zs, vs, iis = [], [], []
    for k in range(x.shape[0]):
        z, state = cell(xt[k], state)
        zs.append(z)
        vs.append(state.v)
        if not box:
            iis.append(state.i)
    S = torch.stack(zs)
    assert 0.05 < s.mean() < 0.9
    assert np.array_equal(S.detach().numpy(), s)
    v = (1 - s) * h + s * dtype(p.v_reset)
    assert np.array_equal(torch.stack(vs).detach().numpy(), v)
    wrt = (xt, vt) if box else (xt, vt, it)
    got = torch.autograd.grad((S * torch.tensor(g)).sum(), wrt)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(got[0].numpy(), gx, **tol)
    np.testing.assert_allclose(got[1].numpy(), gv0, **tol)
    if not box:
        assert np.array_equal(torch.stack(iis).detach().numpy(), i)
        np.testing.assert_allclose(got[2].numpy(), gi0, **tol)


# ---- SPEC §2.3 as corrected: n_exc = round(N * ratio), halves to even --------------------

def test_excitatory_count_rounds_half_to_even():
    from refsnn.kernels.cuba import CubaConfig

    got = {n: CubaConfig(n_neurons=n).n_exc for n in (2, 3, 4, 5, 7, 9, 11, 256)}
    assert got == {2: 1, 3: 2, 4: 2, 5: 2, 7: 4, 9: 4, 11: 6, 256: 128}
