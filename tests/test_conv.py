"""SPEC §3: conv2d im2col kernels vs direct-loop oracle, scipy.signal.correlate and finite differences."""
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.kernels.conv import (conv2d_backward, conv2d_backward_ref, conv2d_forward,
                                 conv2d_forward_ref, clear_buffer_pool)
from refsnn.vectors.tolerances import KERNEL_ATOL
from strategies import central_diff, conv_cases, dtypes, rng_from, seeds


def _close(a, b, dt):
    scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
    assert a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=0, atol=KERNEL_ATOL[dt] * scale * 10)


def _make(case, dt, seed, bias=True):
    xs, ws, stride, padding = case
    rng = rng_from(seed)
    x = rng.uniform(-1, 1, xs).astype(dt)
    w = rng.uniform(-1, 1, ws).astype(dt)
    b = rng.uniform(-1, 1, ws[0]).astype(dt) if bias else None
    return x, w, b, stride, padding


@settings(max_examples=60, deadline=None)
@given(conv_cases(), dtypes, seeds, st.booleans())
def test_conv_matches_oracle(case, dt, seed, bias):
    x, w, b, stride, padding = _make(case, dt, seed, bias)
    y, ctx = conv2d_forward(x, w, b, stride=stride, padding=padding)
    yr = conv2d_forward_ref(x, w, b, stride=stride, padding=padding)
    assert y.shape == yr.shape and y.dtype == dt
    _close(y, yr, dt)
    dy = rng_from(seed + 1).uniform(-1, 1, y.shape).astype(dt)
    dx, dw, db = conv2d_backward(dy, ctx)
    dxr, dwr, dbr = conv2d_backward_ref(dy, x, w, stride=stride, padding=padding, has_bias=bias)
    _close(dx, dxr, dt)
    _close(dw, dwr, dt)
    assert (db is None) == (not bias)
    if bias:
        _close(db, dbr, dt)
    dx2, dw2, _ = conv2d_backward(dy, ctx, need_dx=False)
    assert dx2 is None
    np.testing.assert_array_equal(dw2, dw)


@settings(max_examples=30, deadline=None)
@given(conv_cases(), seeds)
def test_conv_matches_scipy_correlate(case, seed):
    x, w, b, stride, padding = _make(case, np.float64, seed)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    y, _ = conv2d_forward(x, w, b, stride=stride, padding=padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            full = scipy.signal.correlate(xp[n], w[o], mode="valid")[0]   # (Hp-kh+1, Wp-kw+1)
            ref = full[::sh, ::sw] + b[o]
            np.testing.assert_allclose(y[n, o], ref, rtol=1e-12, atol=1e-12)




@settings(max_examples=10, deadline=None)
@given(conv_cases(), seeds)
def test_conv_backward_finite_differences(case, seed):
    x, w, b, stride, padding = _make(case, np.float64, seed)
    y, ctx = conv2d_forward(x, w, b, stride=stride, padding=padding)
    dy = rng_from(seed + 2).uniform(-1, 1, y.shape)
    loss = lambda: float((conv2d_forward(x, w, b, stride=stride, padding=padding)[0] * dy).sum())
    dx, dw, db = conv2d_backward(dy, ctx)
    for analytic, arr in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(analytic, central_diff(loss, arr), rtol=1e-6, atol=1e-7)


def test_conv_float32_bench_shape_and_buffer_reuse():
    rng = rng_from(7)
    x = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    y1, ctx1 = conv2d_forward(x, w, padding=1)
    y1c = y1.copy()
    y2, ctx2 = conv2d_forward(x * 2, w, padding=1)   # must not overwrite y1 / ctx1 (still alive)
    np.testing.assert_array_equal(y1, y1c)
    dy = np.ones_like(y1)
    d1 = conv2d_backward(dy, ctx1)
    d2 = conv2d_backward(dy, ctx2)
    np.testing.assert_allclose(d2[1], 2 * d1[1], rtol=1e-5)
    ref = conv2d_forward_ref(x, w, padding=1)
    np.testing.assert_allclose(y1, ref, rtol=1e-5, atol=1e-4)
    del y1, ctx1
    y3, _ = conv2d_forward(x, w, padding=1)
    np.testing.assert_allclose(y3, ref, rtol=1e-5, atol=1e-4)
    clear_buffer_pool()


def test_conv_deterministic():
    rng = rng_from(3)
    x = rng.standard_normal((3, 4, 9, 7)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 2)).astype(np.float32)
    out = []
    for _ in range(2):
        y, ctx = conv2d_forward(x, w, stride=(2, 1), padding=(1, 0))
        out.append((y.copy(),) + tuple(a.copy() for a in conv2d_backward(np.ones_like(y), ctx) if a is not None))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


X = np.zeros((1, 2, 5, 5))
Wt = np.zeros((3, 2, 3, 3))


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(x=X.astype(np.float32), w=Wt), TypeError, "w"),
    (dict(x=X.astype(np.int64), w=Wt), TypeError, "x"),
    (dict(x=X, w=Wt, b=np.zeros(3, np.float32)), TypeError, "b"),
    (dict(x=X[0], w=Wt), ValueError, "x"),
    (dict(x=X, w=Wt[:, :1]), ValueError, "w"),
    (dict(x=X, w=Wt, b=np.zeros(4)), ValueError, "b"),
    (dict(x=np.full_like(X, np.nan), w=Wt), ValueError, "x"),
    (dict(x=X, w=Wt, stride=0), ValueError, "stride"),
    (dict(x=X, w=Wt, stride=(1, 2, 3)), ValueError, "stride"),
    (dict(x=X, w=Wt, stride=1.5), TypeError, "stride"),
    (dict(x=X, w=Wt, padding=-1), ValueError, "padding"),
    (dict(x=X, w=np.zeros((3, 2, 9, 3))), ValueError, "w"),
    (dict(x=[[1.0]], w=Wt), TypeError, "x"),
])
def test_conv_bad_input(kwargs, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        conv2d_forward(**kwargs)


def test_conv_backward_bad_input():
    y, ctx = conv2d_forward(X, Wt, padding=1)
    with pytest.raises(ValueError, match=r"^dy\b"):
        conv2d_backward(np.zeros((1, 3, 4, 5)), ctx)
    with pytest.raises(TypeError, match=r"^dy\b"):
        conv2d_backward(y.astype(np.float32), ctx)
    with pytest.raises(TypeError, match=r"^ctx\b"):
        conv2d_backward(y, None)
