"""SPEC §3: average/global pooling, linear and BatchNorm2d kernels vs oracles and finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import assert_same_at_numba_thread_counts, central_diff, dtypes, nchw_shapes, rng_from, seeds

from refsnn.kernels.batchnorm import (
    batchnorm2d_backward,
    batchnorm2d_backward_ref,
    batchnorm2d_forward,
    batchnorm2d_forward_ref,
)
from refsnn.kernels.linear import linear_backward, linear_backward_ref, linear_forward, linear_forward_ref
from refsnn.kernels.pool import (
    avgpool2d_backward,
    avgpool2d_backward_ref,
    avgpool2d_forward,
    avgpool2d_forward_ref,
    global_avgpool_backward,
    global_avgpool_backward_ref,
    global_avgpool_forward,
    global_avgpool_forward_ref,
)
from refsnn.vectors.tolerances import KERNEL_ATOL


def _close(a, b, dt, k=10):
    assert a.dtype == np.dtype(dt) and a.shape == b.shape
    scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
    np.testing.assert_allclose(a, b, rtol=0, atol=KERNEL_ATOL[dt] * scale * k)




# ---- pooling ----
@settings(max_examples=40, deadline=None)
@given(nchw_shapes, st.integers(1, 3), dtypes, seeds)
def test_avgpool_matches_oracle(shape, k, dt, seed):
    N, C, H, W = shape
    x = rng_from(seed).uniform(-2, 2, (N, C, H * k, W * k)).astype(dt)
    y = avgpool2d_forward(x, k)
    _close(y, avgpool2d_forward_ref(x, k), dt)
    dy = rng_from(seed + 1).uniform(-2, 2, y.shape).astype(dt)
    _close(avgpool2d_backward(dy, k), avgpool2d_backward_ref(dy, k), dt)
    g = global_avgpool_forward(x)
    _close(g, global_avgpool_forward_ref(x), dt)
    dg = rng_from(seed + 2).uniform(-2, 2, g.shape).astype(dt)
    _close(global_avgpool_backward(dg, x.shape[2:]), global_avgpool_backward_ref(dg, x.shape[2:]), dt)


def test_pool_backward_finite_differences():
    rng = rng_from(11)
    x = rng.uniform(-1, 1, (2, 2, 4, 6))
    dy = rng.uniform(-1, 1, (2, 2, 2, 3))
    np.testing.assert_allclose(avgpool2d_backward(dy, 2),
                               central_diff(lambda: float((avgpool2d_forward(x, 2) * dy).sum()), x), atol=1e-8)
    dg = rng.uniform(-1, 1, (2, 2))
    np.testing.assert_allclose(global_avgpool_backward(dg, (4, 6)),
                               central_diff(lambda: float((global_avgpool_forward(x) * dg).sum()), x), atol=1e-8)


def test_pool_bad_input():
    x = np.zeros((1, 2, 4, 6), np.float32)
    with pytest.raises(ValueError, match=r"^k\b"):
        avgpool2d_forward(x, 4)
    with pytest.raises(ValueError, match=r"^k\b"):
        avgpool2d_forward(x, 0)
    with pytest.raises(TypeError, match=r"^x\b"):
        avgpool2d_forward(x.astype(np.float16), 2)
    with pytest.raises(ValueError, match=r"^x\b"):
        global_avgpool_forward(x[0])
    with pytest.raises(ValueError, match=r"^hw"):
        global_avgpool_backward(np.zeros((1, 2), np.float32), (4,))
    with pytest.raises(ValueError, match=r"^x\b"):
        avgpool2d_forward(np.full((1, 1, 2, 2), np.nan), 2)


# ---- linear ----
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6), dtypes, seeds, st.booleans())
def test_linear_matches_oracle(n, fin, fout, dt, seed, bias):
    rng = rng_from(seed)
    x = rng.uniform(-1, 1, (n, fin)).astype(dt)
    w = rng.uniform(-1, 1, (fout, fin)).astype(dt)
    b = rng.uniform(-1, 1, fout).astype(dt) if bias else None
    _close(linear_forward(x, w, b), linear_forward_ref(x, w, b), dt)
    dy = rng.uniform(-1, 1, (n, fout)).astype(dt)
    got, ref = linear_backward(dy, x, w, bias), linear_backward_ref(dy, x, w, bias)
    for a, r in zip(got, ref):
        assert (a is None) == (r is None)
        if a is not None:
            _close(a, r, dt)
    no_dx = linear_backward(dy, x, w, bias, need_dx=False)
    assert no_dx[0] is None
    for a, r in zip(no_dx[1:], got[1:]):
        assert (a is None) == (r is None)
        if a is not None:
            np.testing.assert_array_equal(a, r)


def test_linear_finite_differences():
    rng = rng_from(5)
    x, w, b = rng.uniform(-1, 1, (3, 4)), rng.uniform(-1, 1, (2, 4)), rng.uniform(-1, 1, 2)
    dy = rng.uniform(-1, 1, (3, 2))
    loss = lambda: float((linear_forward(x, w, b) * dy).sum())
    for g, a in zip(linear_backward(dy, x, w, True), (x, w, b)):
        np.testing.assert_allclose(g, central_diff(loss, a), atol=1e-8)


def test_linear_bad_input():
    x, w = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"^w\b"):
        linear_forward(x, np.zeros((4, 5)))
    with pytest.raises(TypeError, match=r"^w\b"):
        linear_forward(x, w.astype(np.float32))
    with pytest.raises(ValueError, match=r"^b\b"):
        linear_forward(x, w, np.zeros(3))
    with pytest.raises(ValueError, match=r"^dy\b"):
        linear_backward(np.zeros((2, 3)), x, w, True)
    with pytest.raises(TypeError, match=r"^need_dx\b"):
        linear_backward(np.zeros((2, 4)), x, w, True, need_dx="no")


# ---- BatchNorm ----
def _bn_inputs(shape, dt, seed):
    rng = rng_from(seed)
    C = shape[1]
    x = rng.uniform(-2, 2, shape).astype(dt)
    gamma = rng.uniform(0.5, 1.5, C).astype(dt)
    beta = rng.uniform(-1, 1, C).astype(dt)
    rm = rng.uniform(-0.5, 0.5, C).astype(dt)
    rv = rng.uniform(0.5, 2, C).astype(dt)
    return x, gamma, beta, rm, rv


@settings(max_examples=40, deadline=None)
@given(nchw_shapes, dtypes, seeds, st.booleans())
def test_bn_matches_oracle(shape, dt, seed, training):
    if training and shape[0] * shape[2] * shape[3] < 2:
        shape = (2,) + shape[1:]
    x, gamma, beta, rm, rv = _bn_inputs(shape, dt, seed)
    yr, rmr, rvr = batchnorm2d_forward_ref(x, gamma, beta, rm, rv, training=training)
    rm0, rv0 = rm.copy(), rv.copy()
    y, ctx = batchnorm2d_forward(x, gamma, beta, rm, rv, training=training)
    _close(y, yr, dt, k=100)
    _close(rm, rmr, dt)
    _close(rv, rvr, dt)
    if not training:
        np.testing.assert_array_equal(rm, rm0)
        np.testing.assert_array_equal(rv, rv0)
    dy = rng_from(seed + 1).uniform(-1, 1, shape).astype(dt)
    got = batchnorm2d_backward(dy, ctx)
    ref = batchnorm2d_backward_ref(dy, x, gamma, rm0, rv0, training=training)
    for a, r in zip(got, ref):
        _close(a, r, dt, k=1000)


def test_bn_and_pooling_numba_threads_do_not_change_results():
    """The BN and pooling kernels give each channel (statistics, backward) or image (normalise,
    pooling) to one thread: results at 1 thread and at Numba's maximum are equal bit for bit."""
    x, gamma, beta, rm, rv = _bn_inputs((6, 5, 8, 8), np.float32, 3)
    dy = rng_from(4).uniform(-1, 1, x.shape).astype(np.float32)

    def run():
        y, ctx = batchnorm2d_forward(x, gamma, beta, rm.copy(), rv.copy(), training=True)
        p = avgpool2d_forward(y, 2)
        g = global_avgpool_forward(y)
        return (y, p, g, avgpool2d_backward(p, 2), global_avgpool_backward(g, (8, 8))) + batchnorm2d_backward(dy, ctx)
    assert_same_at_numba_thread_counts(run)


def test_bn_running_stats_by_hand():
    x = np.arange(2 * 1 * 1 * 3, dtype=np.float64).reshape(2, 1, 1, 3)   # values 0..5
    rm, rv = np.array([1.0]), np.array([2.0])
    batchnorm2d_forward(x, np.ones(1), np.zeros(1), rm, rv, training=True, momentum=0.1)
    # mean 2.5; unbiased variance of 0..5 = 17.5/5 = 3.5
    np.testing.assert_allclose(rm, [0.9 * 1.0 + 0.1 * 2.5], rtol=1e-15)
    np.testing.assert_allclose(rv, [0.9 * 2.0 + 0.1 * 3.5], rtol=1e-15)


@pytest.mark.parametrize("training", [True, False])
def test_bn_finite_differences(training):
    x, gamma, beta, rm, rv = _bn_inputs((3, 2, 2, 3), np.float64, 17)
    dy = rng_from(18).uniform(-1, 1, x.shape)

    def loss():
        y, _ = batchnorm2d_forward(x, gamma, beta, rm.copy(), rv.copy(), training=training)
        return float((y * dy).sum())

    _, ctx = batchnorm2d_forward(x, gamma, beta, rm.copy(), rv.copy(), training=training)
    dx, dg, db = batchnorm2d_backward(dy, ctx)
    np.testing.assert_allclose(dx, central_diff(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dg, central_diff(loss, gamma), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(db, central_diff(loss, beta), rtol=1e-5, atol=1e-7)


def test_bn_bad_input():
    x, gamma, beta, rm, rv = _bn_inputs((2, 3, 2, 2), np.float32, 1)
    with pytest.raises(ValueError, match=r"^gamma\b"):
        batchnorm2d_forward(x, gamma[:2], beta, rm, rv, training=True)
    with pytest.raises(TypeError, match=r"^running_var\b"):
        batchnorm2d_forward(x, gamma, beta, rm, rv.astype(np.float64), training=True)
    with pytest.raises(ValueError, match=r"^momentum\b"):
        batchnorm2d_forward(x, gamma, beta, rm, rv, training=True, momentum=1.5)
    with pytest.raises(ValueError, match=r"^eps\b"):
        batchnorm2d_forward(x, gamma, beta, rm, rv, training=True, eps=0.0)
    with pytest.raises(ValueError, match=r"^x\b"):
        batchnorm2d_forward(x[:1, :, :1, :1], gamma, beta, rm, rv, training=True)
    with pytest.raises(ValueError, match=r"^x\b"):
        batchnorm2d_forward(x[0], gamma, beta, rm, rv, training=False)
    with pytest.raises(TypeError, match=r"^training\b"):
        batchnorm2d_forward(x, gamma, beta, rm, rv, training="yes")


# ---- E/I rectifier (SPEC §6.2) ----
from refsnn.kernels.rectify import rectify_backward, rectify_backward_ref, rectify_forward, rectify_forward_ref  # noqa: E402


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), "bit patterns differ (sign of zero?)"


@settings(max_examples=60, deadline=None)
@given(nchw_shapes, dtypes, seeds, st.sampled_from([1, -1]), st.booleans())
def test_rectify_matches_oracle_bitwise(shape, dt, seed, sign, zeros):
    rng = rng_from(seed)
    x = rng.standard_normal(shape).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    if zeros:  # exact zeros and negative zeros: the sign of the output zero must match too
        x[rng.random(shape) < 0.3] = 0.0
        x[rng.random(shape) < 0.3] = -0.0
    y, m = rectify_forward(x, sign)
    y_ref, m_ref = rectify_forward_ref(x, sign)
    _same_bits(y, y_ref)
    assert np.array_equal(m, m_ref)
    _same_bits(rectify_backward(dy, m, sign), rectify_backward_ref(dy, m_ref, sign))
    # non-contiguous input gives the same result
    xt = np.asarray(x.transpose(3, 2, 1, 0))
    _same_bits(rectify_forward(xt, sign)[0], rectify_forward_ref(xt, sign)[0])


def test_rectify_by_hand_and_bad_input():
    x = np.array([-2.0, -0.0, 0.0, 3.0], np.float32)
    y, m = rectify_forward(x, -1)
    assert y.tolist() == [0.0, 0.0, 0.0, -3.0] and np.signbit(y).tolist() == [True] * 4
    assert m.tolist() == [False, False, False, True]
    assert rectify_backward(np.ones(4, np.float32), m, 1).tolist() == [0, 0, 0, 1]
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match=r"^x\b"):
            rectify_forward(np.array([1.0, bad]), 1)
    with pytest.raises(ValueError, match=r"^sign\b"):
        rectify_forward(x, 0)
    with pytest.raises(ValueError, match=r"^sign\b"):
        rectify_forward(x, True)
    with pytest.raises(ValueError, match=r"^mask\b"):
        rectify_backward(np.ones(4, np.float32), m[:3], 1)
    with pytest.raises(TypeError, match=r"^x\b"):
        rectify_forward(x.astype(np.float16), 1)


def test_check_finite_switch():
    """The kernels reject NaN by default; check_finite=False (what the network layers pass) skips
    only that pass and computes the same thing."""
    from refsnn.kernels.conv import conv2d_backward, conv2d_forward
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    xn = x.copy()
    xn[0, 0, 1, 1] = np.nan
    g, b, rm, rv = (np.ones(2, np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
                    np.ones(2, np.float32))
    calls = [
        lambda a, **k: conv2d_forward(a, w, padding=1, **k),
        lambda a, **k: batchnorm2d_forward(a, g, b, rm.copy(), rv.copy(), training=False, **k),
        lambda a, **k: avgpool2d_forward(a, 2, **k),
        lambda a, **k: global_avgpool_forward(a, **k),
    ]
    for f in calls:
        with pytest.raises(ValueError, match=r"^x\b"):
            f(xn)
        assert np.isnan(f(xn, check_finite=False)[0]).any()
        r1, r2 = f(x), f(x, check_finite=False)
        a1, a2 = (r1[0], r2[0]) if isinstance(r1, tuple) else (r1, r2)
        assert np.array_equal(a1, a2)
    # BN training: the batch statistics (computed anyway) reveal the NaN even with check_finite=False,
    # and the running statistics are left as they were
    rm2, rv2 = rm.copy(), rv.copy()
    for k in ({}, {"check_finite": False}):
        with pytest.raises(ValueError, match=r"^x\b"):
            batchnorm2d_forward(xn, g, b, rm2, rv2, training=True, **k)
    assert np.array_equal(rm2, rm) and np.array_equal(rv2, rv)
    r1 = batchnorm2d_forward(x, g, b, rm.copy(), rv.copy(), training=True)
    r2 = batchnorm2d_forward(x, g, b, rm.copy(), rv.copy(), training=True, check_finite=False)
    assert np.array_equal(r1[0], r2[0])
    y, ctx = conv2d_forward(x, w, padding=1)
    dyn = np.ones_like(y)
    dyn[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"^dy\b"):
        conv2d_backward(dyn, ctx)
    with np.errstate(invalid="ignore"):
        assert np.isinf(conv2d_backward(dyn, ctx, check_finite=False)[1]).any()
    with pytest.raises(ValueError, match=r"^dy\b"):
        avgpool2d_backward(dyn, 2)
    with pytest.raises(ValueError, match=r"^dy\b"):
        batchnorm2d_backward(dyn[:, :2], batchnorm2d_forward(x, g, b, rm.copy(), rv.copy(),
                                                             training=True)[1])


# ---- Conv2d layers own their conv workspaces ----
def _conv_fresh(layer, x, dy, need_dx=True):
    """What layer.forward/backward compute, by the kernels with fresh arrays (no workspace)."""
    from refsnn.kernels.conv import conv2d_backward, conv2d_forward
    xf = x.reshape((-1,) + x.shape[2:])
    y, ctx = conv2d_forward(xf, layer.params["w"], layer.params.get("b"), stride=layer.stride,
                            padding=layer.padding)
    dx, dw, db = conv2d_backward(dy.reshape((-1,) + dy.shape[2:]), ctx, need_dx=need_dx)
    return y.reshape(x.shape[:2] + y.shape[1:]), (None if dx is None else dx.reshape(x.shape)), dw, db


def _conv_layer_step(layer, x, dy, need_dx=True):
    y = layer.forward(x, T=x.shape[0])
    (dx,) = layer.backward(dy, (need_dx,))
    return y, dx, layer.grads["w"], layer.grads.get("b")


def _assert_equal_results(got, want):
    for a, e in zip(got, want):
        assert (a is None) == (e is None)
        if a is not None:
            assert a.dtype == e.dtype
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_conv_layers_never_share_work_arrays(dt):
    """Two Conv2d layers of the same shapes, interleaved (forward A, forward B, backward A,
    backward B), give bit for bit what fresh arrays give: neither hands out a buffer of the other."""
    from refsnn.snn.layers import Conv2d
    rng = rng_from(21)
    la = Conv2d(3, 6, 3, padding=1, bias=True, rng=rng_from(1), dtype=dt)
    lb = Conv2d(3, 6, 3, padding=1, bias=True, rng=rng_from(2), dtype=dt)
    assert la.workspace is not lb.workspace
    for _ in range(3):
        xa, xb = rng.standard_normal((2, 2, 4, 3, 7, 6)).astype(dt)
        dya, dyb = rng.standard_normal((2, 2, 4, 6, 7, 6)).astype(dt)
        want_a, want_b = _conv_fresh(la, xa, dya), _conv_fresh(lb, xb, dyb)
        ya = la.forward(xa, T=2)
        yb = lb.forward(xb, T=2)
        assert not np.shares_memory(la._c_ctx.colT, lb._c_ctx.colT)
        assert not np.shares_memory(ya, yb)
        (dxa,) = la.backward(dya, (True,))
        ga = (ya, dxa, la.grads["w"], la.grads["b"])
        (dxb,) = lb.backward(dyb, (True,))
        _assert_equal_results(ga, want_a)
        _assert_equal_results((yb, dxb, lb.grads["w"], lb.grads["b"]), want_b)


def test_conv_layer_train_and_eval_shapes_alternating():
    """One layer alternating a training batch shape, an evaluation batch shape (forward only) and a
    static input gives fresh-array results every time; its workspace keeps each shape's arrays and
    the outputs it returned earlier are never overwritten."""
    from refsnn.snn.layers import Conv2d
    rng = rng_from(22)
    layer = Conv2d(2, 4, 3, stride=2, padding=1, rng=rng_from(3))
    kept = []
    for i, (T, B, backward) in enumerate([(3, 4, True), (3, 9, False), (1, 4, True), (3, 4, True),
                                          (3, 9, False), (3, 4, True), (3, 9, True)]):
        x = rng.standard_normal((T, B, 2, 9, 9)).astype(np.float32)
        dy = rng.standard_normal((T, B, 4, 5, 5)).astype(np.float32)
        want = _conv_fresh(layer, x, dy, need_dx=i % 2 == 0)
        if backward:
            got = _conv_layer_step(layer, x, dy, need_dx=i % 2 == 0)
            _assert_equal_results(got, want)
        else:
            got = (layer.forward(x, T=T),)
            _assert_equal_results(got, want[:1])
        kept.append((got[0], want[0]))
    for y, want_y in kept:
        np.testing.assert_array_equal(y, want_y)
    assert len(layer.workspace._sets) == 3          # (3*4), (3*9) and the static (1*4) batch
    layer.workspace.clear()
    assert layer.workspace.nbytes == 0
    _assert_equal_results(_conv_layer_step(layer, x, dy), _conv_fresh(layer, x, dy))
