"""SPEC §3: conv2d im2col kernels vs direct-loop oracle, scipy.signal.correlate and finite differences."""
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import assert_same_at_numba_thread_counts, central_diff, conv_cases_bounded, dtypes, rng_from, seeds

from refsnn.kernels.conv import (
    EVENTS_MAX_DENSITY,
    Conv2dWorkspace,
    conv2d_backward,
    conv2d_backward_ref,
    conv2d_forward,
    conv2d_forward_ref,
)
from refsnn.vectors.tolerances import KERNEL_ATOL


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
@given(conv_cases_bounded(), dtypes, seeds, st.booleans())
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
@given(conv_cases_bounded(), seeds)
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
@given(conv_cases_bounded(), seeds)
def test_conv_backward_finite_differences(case, seed):
    x, w, b, stride, padding = _make(case, np.float64, seed)
    y, ctx = conv2d_forward(x, w, b, stride=stride, padding=padding)
    dy = rng_from(seed + 2).uniform(-1, 1, y.shape)
    loss = lambda: float((conv2d_forward(x, w, b, stride=stride, padding=padding)[0] * dy).sum())
    dx, dw, db = conv2d_backward(dy, ctx)
    for analytic, arr in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(analytic, central_diff(loss, arr), rtol=1e-6, atol=1e-7)


def _make_sparse(case, dt, seed, density, binary, bias=True):
    """Like :func:`_make`, with ``x`` nonzero at a fraction ``density`` (0/1 spikes if ``binary``)."""
    x, w, b, stride, padding = _make(case, dt, seed, bias)
    mask = rng_from(seed + 5).random(x.shape) < density
    x = mask.astype(dt) if binary else (x * mask).astype(dt)
    return x, w, b, stride, padding


@settings(max_examples=60, deadline=None)
@given(conv_cases_bounded(), dtypes, seeds, st.booleans(), st.floats(0.0, 1.0), st.booleans())
def test_conv_event_path_matches_oracle(case, dt, seed, bias, density, binary):
    """The event path (sums over the nonzeros of x only) against the direct-loop oracle, forward and
    backward, at any density; the backward follows the forward's path; ``auto`` picks by density."""
    x, w, b, stride, padding = _make_sparse(case, dt, seed, density, binary, bias)
    y, ctx = conv2d_forward(x, w, b, stride=stride, padding=padding, algorithm="events")
    assert ctx.colT is None and ctx.col_sparse is not None
    _close(y, conv2d_forward_ref(x, w, b, stride=stride, padding=padding), dt)
    dy = rng_from(seed + 1).uniform(-1, 1, y.shape).astype(dt)
    got = conv2d_backward(dy, ctx)
    want = conv2d_backward_ref(dy, x, w, stride=stride, padding=padding, has_bias=bias)
    for g, e in zip(got, want):
        assert (g is None) == (e is None)
        if g is not None:
            _close(g, e, dt)
    _, ctx_auto = conv2d_forward(x, w, b, stride=stride, padding=padding)
    assert (ctx_auto.col_sparse is not None) == (np.count_nonzero(x) <= EVENTS_MAX_DENSITY * x.size)


@settings(max_examples=10, deadline=None)
@given(conv_cases_bounded(), seeds, st.booleans())
def test_conv_event_path_finite_differences(case, seed, binary):
    x, w, b, stride, padding = _make_sparse(case, np.float64, seed, 0.3, binary)
    y, ctx = conv2d_forward(x, w, b, stride=stride, padding=padding, algorithm="events")
    dy = rng_from(seed + 2).uniform(-1, 1, y.shape)
    loss = lambda: float((conv2d_forward(x, w, b, stride=stride, padding=padding, algorithm="events")[0]
                          * dy).sum())
    dx, dw, db = conv2d_backward(dy, ctx)
    for analytic, arr in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(analytic, central_diff(loss, arr), rtol=1e-6, atol=1e-7)


def test_conv_event_path_workspace_and_stale_context():
    """With a workspace the sparse im2col is reused call after call (bit for bit what fresh arrays
    give), a stale event context is refused, and a tampered one is rejected by name."""
    rng = rng_from(9)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    xs = [(rng.random((4, 3, 8, 7)) < 0.1).astype(np.float32) for _ in range(3)]
    dy = rng.standard_normal((4, 5, 8, 7)).astype(np.float32)
    ws = Conv2dWorkspace()
    ptrs = []
    for x in xs:
        y, ctx = conv2d_forward(x, w, padding=1, workspace=ws, algorithm="events")
        y0, ctx0 = conv2d_forward(x, w, padding=1, algorithm="events")
        _assert_same((y,) + conv2d_backward(dy, ctx, workspace=ws), (y0,) + conv2d_backward(dy, ctx0))
        ptrs.append(ctx.col_sparse[0])
    assert ptrs[0] is ptrs[1] is ptrs[2]
    _, c1 = conv2d_forward(xs[0], w, padding=1, workspace=ws, algorithm="events")
    conv2d_forward(xs[1], w, padding=1, workspace=ws, algorithm="events")
    with pytest.raises(RuntimeError, match=r"^ctx\b.*stale"):
        conv2d_backward(dy, c1, workspace=ws)
    _, c = conv2d_forward(xs[0], w, padding=1, algorithm="events")
    c.col_sparse[1][:] = 3 * 3 * 3                                      # a column that does not exist
    with pytest.raises(ValueError, match=r"^ctx\b"):
        conv2d_backward(dy, c)
    with pytest.raises(ValueError, match=r"^algorithm\b"):
        conv2d_forward(xs[0], w, algorithm="sparse")


@pytest.mark.parametrize("algorithm", ["gemm", "events"])
def test_conv_numba_threads_do_not_change_results(algorithm):
    """Every Numba loop of both paths (im2col, col2im, layouts, the sparse im2col and both sparse
    products) gives each image (or each row of dW) to one thread, so forward and backward are equal
    bit for bit at 1 thread and at Numba's maximum (the BLAS thread count is left alone)."""
    rng = rng_from(4)
    x = (rng.random((6, 5, 9, 9)) < 0.15).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    dy = rng.standard_normal((6, 7, 5, 9)).astype(np.float32)

    def run():
        y, ctx = conv2d_forward(x, w, b, stride=(2, 1), padding=1, algorithm=algorithm)
        return (y,) + conv2d_backward(dy, ctx)
    assert_same_at_numba_thread_counts(run)


def _fresh(x, w, b, stride, padding, dy, need_dx=True):
    """Forward + backward without a workspace (fresh arrays), copied out."""
    y, ctx = conv2d_forward(x, w, b, stride=stride, padding=padding)
    g = conv2d_backward(dy, ctx, need_dx=need_dx)
    return (y,) + g


def _assert_same(got, want):
    for a, e in zip(got, want):
        assert (a is None) == (e is None)
        if a is not None:
            assert a.dtype == e.dtype
            np.testing.assert_array_equal(a, e)


def test_conv_without_workspace_allocates_fresh_arrays():
    rng = rng_from(7)
    x = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    y1, ctx1 = conv2d_forward(x, w, padding=1)
    y1c = y1.copy()
    y2, ctx2 = conv2d_forward(x * 2, w, padding=1)   # same shapes: nothing of call 1 is reused
    assert ctx1.arrays is None and ctx2.arrays is None
    assert not np.shares_memory(y1, y2) and not np.shares_memory(ctx1.colT, ctx2.colT)
    np.testing.assert_array_equal(y1, y1c)
    dy = np.ones_like(y1)
    d1 = conv2d_backward(dy, ctx1)
    d2 = conv2d_backward(dy, ctx2)
    for a, b in zip(d1, d2):
        if a is not None:
            assert not np.shares_memory(a, b)
    np.testing.assert_allclose(d2[1], 2 * d1[1], rtol=1e-5)
    ref = conv2d_forward_ref(x, w, padding=1)
    np.testing.assert_allclose(y1, ref, rtol=1e-5, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(conv_cases_bounded(), dtypes, seeds, st.booleans())
def test_conv_workspace_reuse_equals_fresh_arrays(case, dt, seed, bias):
    """Reusing one workspace call after call gives bit for bit what fresh arrays give, reuses its
    im2col matrix, and never hands out a work array as a result."""
    ws = Conv2dWorkspace()
    cols = []
    for rep in range(3):
        x, w, b, stride, padding = _make(case, dt, seed + rep, bias)
        y, ctx = conv2d_forward(x, w, b, stride=stride, padding=padding, workspace=ws)
        dy = rng_from(seed + 10 + rep).uniform(-1, 1, y.shape).astype(dt)
        got = (y,) + conv2d_backward(dy, ctx, need_dx=rep != 1, workspace=ws)
        _assert_same(got, _fresh(x, w, b, stride, padding, dy, need_dx=rep != 1))
        cols.append(ctx.colT)
        work = [a for arrays in ws._sets.values() for a in arrays.arrays.values()]
        assert all(not np.shares_memory(r, a) for r in got if r is not None for a in work)
    assert cols[0] is cols[1] is cols[2]
    assert ws.nbytes > 0
    ws.clear()
    assert ws.nbytes == 0


def test_conv_workspace_keeps_geometries_apart():
    """Forward A, forward B (other batch shape, e.g. train then eval), backward A, backward B with
    one workspace gives what fresh arrays give; an evicted geometry stays valid for its context."""
    rng = rng_from(11)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    xs = [rng.standard_normal((n, 3, 9, 8)).astype(np.float32) for n in (4, 10, 4, 6)]
    dys = [rng.standard_normal((n, 5, 9, 8)).astype(np.float32) for n in (4, 10, 4, 6)]
    want = [_fresh(x, w, None, 1, 1, dy) for x, dy in zip(xs, dys)]
    ws = Conv2dWorkspace(max_geometries=2)
    ya, ca = conv2d_forward(xs[0], w, padding=1, workspace=ws)
    yb, cb = conv2d_forward(xs[1], w, padding=1, workspace=ws)
    assert not np.shares_memory(ca.colT, cb.colT)
    _assert_same((ya,) + conv2d_backward(dys[0], ca, workspace=ws), want[0])
    _assert_same((yb,) + conv2d_backward(dys[1], cb, workspace=ws), want[1])
    ya, ca = conv2d_forward(xs[2], w, padding=1, workspace=ws)       # shape A again: reused
    yc, cc = conv2d_forward(xs[3], w, padding=1, workspace=ws)       # a third shape evicts B
    assert len(ws._sets) == 2
    _assert_same((yc,) + conv2d_backward(dys[3], cc, workspace=ws), want[3])
    _assert_same((ya,) + conv2d_backward(dys[2], ca, workspace=ws), want[2])
    yb, cb2 = conv2d_forward(xs[1], w, padding=1, workspace=ws)      # B comes back with new arrays
    assert not np.shares_memory(cb.colT, cb2.colT)
    _assert_same((yb,) + conv2d_backward(dys[1], cb2, workspace=ws), want[1])
    _assert_same(conv2d_backward(dys[1], cb, workspace=ws), want[1][1:])   # evicted: still valid


def test_conv_stale_context_raises():
    """A context whose im2col matrix a later forward (same workspace, same shapes) has rewritten is
    refused instead of giving gradients of the wrong input; a second workspace keeps both valid."""
    rng = rng_from(5)
    x1, x2 = rng.standard_normal((2, 2, 3, 6, 6)).astype(np.float64)
    w = rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((2, 4, 4, 4))
    ws = Conv2dWorkspace()
    _, c1 = conv2d_forward(x1, w, workspace=ws)
    _, c2 = conv2d_forward(x2, w, workspace=ws)
    with pytest.raises(RuntimeError, match=r"^ctx\b.*stale"):
        conv2d_backward(dy, c1, workspace=ws)
    _assert_same(conv2d_backward(dy, c2, workspace=ws), _fresh(x2, w, None, 1, 0, dy)[1:])
    ws1, ws2 = Conv2dWorkspace(), Conv2dWorkspace()
    _, c1 = conv2d_forward(x1, w, workspace=ws1)
    _, c2 = conv2d_forward(x2, w, workspace=ws2)
    _assert_same(conv2d_backward(dy, c1, workspace=ws1), _fresh(x1, w, None, 1, 0, dy)[1:])
    _assert_same(conv2d_backward(dy, c2, workspace=ws2), _fresh(x2, w, None, 1, 0, dy)[1:])


def test_conv_workspace_bad_argument():
    with pytest.raises(TypeError, match=r"^workspace\b"):
        conv2d_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), workspace={})
    y, ctx = conv2d_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)))
    with pytest.raises(TypeError, match=r"^workspace\b"):
        conv2d_backward(y, ctx, workspace=object())
    with pytest.raises(ValueError, match=r"^max_geometries\b"):
        Conv2dWorkspace(max_geometries=0)


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
