"""SPEC §4.1: multi-step layers, the DAG container, losses, optimisers, checkpoints (STBP).

The central checks: a network containing every layer type, in relaxed mode and float64, has the
gradients of central finite differences (parameters and input, CE/TET/label smoothing); static
(broadcast) inputs give the same results as T explicit copies.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from refsnn.io import atomic_savez, load_npz
from refsnn.kernels.lif import LIFParams
from refsnn.snn import (
    LIF,
    SGD,
    AdamW,
    Add,
    AvgPool2d,
    BatchNorm2d,
    Concat,
    Conv2d,
    Flatten,
    GlobalAvgPool,
    Linear,
    Network,
    Rectify,
    cosine_lr,
    loss_and_grad,
)
from refsnn.snn.checkpoint import checkpoint_arrays, restore_checkpoint
from tests.strategies import rng_from, seeds, stbp_loss_settings


def every_layer_net(dtype=np.float64, *, T=3, seed=0, neuron=None, cin=2):
    """conv/BN/LIF, an E and an I edge (±relu) summed into a LIF population, concat, avg pool
    (odd size: floor), global pool and flatten branches into two linear heads summed."""
    rng = rng_from(seed)
    p = neuron or LIFParams(detach_reset=False)
    net = Network(timesteps=T, dtype=dtype)
    net.add("c1", Conv2d(cin, 3, 3, padding=1, bias=True, rng=rng, dtype=dtype), "input")
    net.add("b1", BatchNorm2d(3, dtype=dtype), "c1")
    net.add("l1", LIF(p, dtype=dtype), "b1")
    net.add("c2", Conv2d(3, 3, 3, padding=1, rng=rng, dtype=dtype), "l1")
    net.add("b2", BatchNorm2d(3, dtype=dtype), "c2")
    net.add("r2", Rectify(+1, dtype=dtype), "b2")
    net.add("c3", Conv2d(3, 3, 1, rng=rng, dtype=dtype), "l1")
    net.add("b3", BatchNorm2d(3, dtype=dtype), "c3")
    net.add("r3", Rectify(-1, dtype=dtype), "b3")
    net.add("sum", Add(dtype=dtype), ["r2", "r3"])
    net.add("l2", LIF(p, dtype=dtype), "sum")
    net.add("cat", Concat(dtype=dtype), ["l1", "l2"])
    net.add("pool", AvgPool2d(2, dtype=dtype), "cat")
    net.add("gap", GlobalAvgPool(dtype=dtype), "pool")
    net.add("flat", Flatten(dtype=dtype), "pool")
    net.add("fc1", Linear(6 * 3 * 3, 4, rng=rng, dtype=dtype), "flat")
    net.add("fc2", Linear(6, 4, bias=False, rng=rng, dtype=dtype), "gap")
    net.add("out", Add(dtype=dtype), ["fc1", "fc2"])
    return net


def _scale_up(net, factor=3.0):
    # BN outputs ~N(0, 1); spread the membrane over the surrogate's support and beyond
    for name in ("b1", "b2", "b3"):
        net[name].params["gamma"] *= factor
        net[name].params["beta"] += 0.3


def _loss(net, x, y, kind, ls):
    value, dlogits, _ = loss_and_grad(net.forward(x), y, loss=kind, label_smoothing=ls)
    return value, dlogits


@pytest.mark.parametrize("surrogate", ["triangle", "sigmoid"])
@pytest.mark.parametrize("kind,ls", [("ce", 0.0), ("tet", 0.0), ("ce", 0.1), ("tet", 0.2)])
def test_relaxed_network_gradients_match_finite_differences(surrogate, kind, ls):
    T, B = 3, 2
    net = every_layer_net(neuron=LIFParams(surrogate=surrogate, detach_reset=False), T=T)
    _scale_up(net)
    net.relaxed = True
    rng = rng_from(1)
    x = rng.normal(0.5, 1.0, size=(T, B, 2, 7, 7))
    y = np.array([1, 3])
    _, d = _loss(net, x, y, kind, ls)
    gx = net.backward(d, input_grad=True)
    grads = {k: g.copy() for k, g in net.gradients()}
    h = 1e-6

    def fd(arr, idx):
        old = arr[idx]
        arr[idx] = old + h
        lp, _ = _loss(net, x, y, kind, ls)
        arr[idx] = old - h
        lm, _ = _loss(net, x, y, kind, ls)
        arr[idx] = old
        return (lp - lm) / (2 * h)

    pick = rng_from(2)
    worst = 0.0
    for name, p in net.parameters():
        for flat in pick.choice(p.size, size=min(p.size, 5), replace=False):
            idx = np.unravel_index(flat, p.shape)
            num, ana = fd(p, idx), grads[name][idx]
            worst = max(worst, abs(num - ana))
            assert num == pytest.approx(ana, rel=1e-5, abs=1e-8), f"{name}{idx}"
    for flat in pick.choice(x.size, size=12, replace=False):
        idx = np.unravel_index(flat, x.shape)
        assert fd(x, idx) == pytest.approx(gx[idx], rel=1e-5, abs=1e-8), f"input{idx}"
    # the check is not vacuous: some gradients are clearly non-zero
    assert max(np.abs(g).max() for g in grads.values()) > 1e-3


def test_static_input_equals_explicit_copies():
    """A broadcast (stride-0) input computes the first stateless layers once; results equal T copies."""
    T, B = 4, 3
    img = rng_from(3).normal(0.5, 1, size=(B, 2, 7, 7))
    xs = np.broadcast_to(img, (T,) + img.shape)
    xc = np.ascontiguousarray(xs)
    y = np.array([0, 1, 2])
    res = []
    for x in (xs, xc):
        net = every_layer_net(T=T, seed=5)
        _scale_up(net)
        value, d = _loss(net, x, y, "ce", 0.0)
        gx = net.backward(d, input_grad=True)
        res.append((value, dict(net.gradients()), {k: v.copy() for k, v in net.buffers()}, gx))
    (v1, g1, b1, gx1), (v2, g2, b2, gx2) = res
    assert v1 == pytest.approx(v2, rel=1e-12)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-9, atol=1e-12, err_msg=k)
    for k in b1:
        np.testing.assert_allclose(b1[k], b2[k], rtol=1e-12, atol=1e-14, err_msg=k)
    assert gx1.shape == (1,) + img.shape and gx2.shape == xc.shape
    np.testing.assert_allclose(gx1[0], gx2.sum(axis=0), rtol=1e-9, atol=1e-12)


def test_float32_network_runs_and_matches_float64():
    T, B = 2, 2
    x = rng_from(4).normal(0.5, 1, size=(T, B, 2, 7, 7))
    y = np.array([0, 3])
    outs = {}
    for dt in (np.float32, np.float64):
        net = every_layer_net(dt, T=T, seed=1)
        _scale_up(net)
        net.relaxed = True
        value, d = _loss(net, x.astype(dt), y, "ce", 0.0)
        net.backward(d)
        outs[dt] = (value, dict(net.gradients()))
        for k, g in net.gradients():
            assert g.dtype == dt, k
    assert outs[np.float32][0] == pytest.approx(outs[np.float64][0], rel=1e-4)
    scale = max(np.abs(g).max() for g in outs[np.float64][1].values())
    for k, g in outs[np.float64][1].items():  # (c1.b is exactly 0 in exact arithmetic: BN follows)
        np.testing.assert_allclose(outs[np.float32][1][k], g, rtol=2e-3, atol=2e-4 * scale, err_msg=k)


# ---- losses -------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(stbp_loss_settings(), seeds)
def test_loss_gradient_matches_finite_differences(setting, seed):
    (T, B, K), kind, ls = setting
    rng = rng_from(seed)
    z = rng.normal(0, 2, size=(T, B, K))
    y = rng.integers(0, K, size=B)
    value, d, out = loss_and_grad(z, y, loss=kind, label_smoothing=ls)
    np.testing.assert_allclose(out, z.mean(axis=0))
    h = 1e-6
    num = np.empty_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        num[idx] = (loss_and_grad(zp, y, loss=kind, label_smoothing=ls)[0]
                    - loss_and_grad(zm, y, loss=kind, label_smoothing=ls)[0]) / (2 * h)
    np.testing.assert_allclose(d, num, rtol=1e-5, atol=1e-9)


def test_loss_values_against_formula():
    z = np.log(np.array([[[0.7, 0.2, 0.1]], [[0.7, 0.2, 0.1]]]))  # T=2, B=1, K=3, same each step
    y = np.array([0])
    assert loss_and_grad(z, y)[0] == pytest.approx(-math.log(0.7))
    assert loss_and_grad(z, y, loss="tet")[0] == pytest.approx(-math.log(0.7))
    q = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    assert loss_and_grad(z, y, label_smoothing=0.1)[0] == pytest.approx(-(q * np.log([0.7, 0.2, 0.1])).sum())


def test_loss_bad_input():
    z = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="labels"):
        loss_and_grad(z, np.array([0, 1, 4]))
    with pytest.raises(TypeError, match="labels"):
        loss_and_grad(z, np.array([0.0, 1, 2]))
    with pytest.raises(ValueError, match="loss"):
        loss_and_grad(z, np.array([0, 1, 2]), loss="mse")
    with pytest.raises(ValueError, match="label_smoothing"):
        loss_and_grad(z, np.array([0, 1, 2]), label_smoothing=1.0)
    with pytest.raises(ValueError, match="logits"):
        loss_and_grad(np.zeros((3, 4)), np.array([0, 1, 2]))


# ---- optimisers and schedule ---------------------------------------------------------------------

def _ref_adamw(p, gs, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.01):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for k, g in enumerate(gs, 1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** k)) / (np.sqrt(v / (1 - b2 ** k)) + eps)
    return p


def test_adamw_and_sgd_match_reference_formulas():
    rng = rng_from(7)
    p0 = rng.normal(size=(3, 4))
    gs = [rng.normal(size=(3, 4)) for _ in range(5)]
    p = p0.copy()
    opt = AdamW([("w", p)], weight_decay=0.01)
    for g in gs:
        opt.step([("w", g)], 1e-2)
    np.testing.assert_allclose(p, _ref_adamw(p0, gs, 1e-2), rtol=1e-12)
    p = p0.copy()
    opt = SGD([("w", p)], momentum=0.9, weight_decay=1e-3)
    buf, q = None, p0.copy()
    for g in gs:
        opt.step([g], 0.1)
        gg = g + 1e-3 * q
        buf = gg if buf is None else 0.9 * buf + gg
        q = q - 0.1 * buf
    np.testing.assert_allclose(p, q, rtol=1e-12)


def test_cosine_schedule():
    assert cosine_lr(0, base=1.0, total=10, warmup=2) == pytest.approx(0.5)
    assert cosine_lr(1, base=1.0, total=10, warmup=2) == pytest.approx(1.0)
    assert cosine_lr(2, base=1.0, total=10, warmup=2) == pytest.approx(1.0)
    assert cosine_lr(6, base=1.0, total=10, warmup=2) == pytest.approx(0.5)
    assert cosine_lr(10, base=1.0, total=10, warmup=2, min_lr=0.1) == pytest.approx(0.1)
    lrs = [cosine_lr(s, base=1.0, total=10, warmup=2) for s in range(2, 11)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


# ---- container -----------------------------------------------------------------------------------

def test_gradient_accumulation_over_consumers():
    """A node feeding three consumers gets the sum of their gradients."""
    T, B = 2, 3
    rng = rng_from(0)
    net = Network(timesteps=T, dtype=np.float64)
    net.add("fc", Linear(4, 5, rng=rng, dtype=np.float64), "input")
    net.add("a", Rectify(+1, relu=False, dtype=np.float64), "fc")
    net.add("b", Rectify(-1, dtype=np.float64), "fc")
    net.add("s", Add(dtype=np.float64), ["a", "b", "fc"])
    x = rng.normal(size=(T, B, 4))
    out = net.forward(x)
    z = x @ net["fc"].params["w"].T + net["fc"].params["b"]
    np.testing.assert_allclose(out, 2 * z - np.maximum(z, 0))
    dy = rng.normal(size=out.shape)
    gx = net.backward(dy, input_grad=True)
    dz = dy * (2 - (z > 0))
    np.testing.assert_allclose(gx, dz @ net["fc"].params["w"])
    np.testing.assert_allclose(net["fc"].grads["w"], dz.reshape(-1, 5).T @ x.reshape(-1, 4))


def test_network_construction_errors():
    rng = rng_from(0)
    net = Network(timesteps=2)
    with pytest.raises(ValueError, match="inputs"):
        net.add("a", Linear(3, 3, rng=rng), "nope")
    net.add("a", Linear(3, 3, rng=rng), "input")
    with pytest.raises(ValueError, match="name"):
        net.add("a", Linear(3, 3, rng=rng), "input")
    with pytest.raises(ValueError, match="name"):
        net.add("input", Linear(3, 3, rng=rng), "input")
    with pytest.raises(TypeError, match="layer"):
        net.add("b", Linear(3, 3, rng=rng, dtype=np.float64), "a")
    with pytest.raises(ValueError, match="inputs"):
        net.add("b", Linear(3, 3, rng=rng), ["a", "input"])
    with pytest.raises(ValueError, match="x"):
        net.forward(np.zeros((3, 2, 3), np.float32))
    with pytest.raises(TypeError, match="x"):
        net.forward(np.zeros((2, 2, 3), np.float64))
    with pytest.raises(ValueError, match="x"):
        net.forward(np.zeros((2, 2, 4), np.float32))
    with pytest.raises(TypeError, match="rng"):
        Conv2d(1, 2, 3, rng=0)
    with pytest.raises(ValueError, match="sign"):
        Rectify(0)


def test_eval_mode_uses_running_stats():
    net = every_layer_net(T=2, seed=3)
    x = rng_from(1).normal(size=(2, 2, 2, 7, 7))
    net.forward(x)
    rm = net["b1"].buffers["running_mean"].copy()
    assert np.abs(rm).max() > 0
    net.eval()
    y1 = net.forward(x).copy()
    np.testing.assert_array_equal(net["b1"].buffers["running_mean"], rm)
    y2 = net.forward(x[:, :1])  # eval is per sample: a sub-batch gives the same rows
    np.testing.assert_allclose(y2, y1[:, :1], rtol=1e-12)


# ---- checkpoints ---------------------------------------------------------------------------------

def test_checkpoint_round_trip_and_errors(tmp_path):
    net = every_layer_net(np.float32, T=2, seed=0)
    opt = AdamW(net.parameters())
    x = rng_from(1).normal(size=(2, 2, 2, 7, 7)).astype(np.float32)
    _, d = _loss(net, x, np.array([0, 1]), "ce", 0.0)
    net.backward(d)
    opt.step(net.gradients(), 1e-2)
    path = tmp_path / "ck.npz"
    atomic_savez(path, checkpoint_arrays(net, opt, {"epoch": 3}))  # what the trainer command writes
    net2 = every_layer_net(np.float32, T=2, seed=9)
    opt2 = AdamW(net2.parameters())
    assert restore_checkpoint(load_npz(path), net2, opt2, source=str(path)) == {"epoch": 3}
    for (k, a), (_, b) in zip(net.state_arrays().items(), net2.state_arrays().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert opt2.steps == 1
    np.testing.assert_array_equal(opt2.m[0], opt.m[0])
    # truncated: the loader names the file
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="trunc.npz"):
        load_npz(bad)
    # foreign arrays
    with pytest.raises(ValueError, match="foreign.npz: not an STBP checkpoint"):
        restore_checkpoint({"a": np.zeros(3)}, net2, source="foreign.npz")
    with pytest.raises(ValueError, match="format"):
        restore_checkpoint({**checkpoint_arrays(net), "format": np.array("other/1")}, net2)
    # other architecture
    other = Network(timesteps=2)
    other.add("fc", Linear(3, 2, rng=rng_from(0)), "input")
    with pytest.raises(ValueError, match="architecture|missing"):
        restore_checkpoint(checkpoint_arrays(net, opt), other)
    # SGD state into AdamW
    with pytest.raises(ValueError, match="sgd"):
        restore_checkpoint(checkpoint_arrays(net, SGD(net.parameters())), net2, opt2)
