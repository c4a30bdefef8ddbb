"""Kernels of the event data (SPEC §4.3) and of BIE's difference matrix (SPEC §6.4, seed eq. 5):
each Numba kernel of refsnn.kernels.events and refsnn.kernels.manhattan equals its plain-NumPy
oracle exactly (integer outputs, exact float32 counts)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.kernels import events as ek
from refsnn.kernels.manhattan import pairwise_manhattan, pairwise_manhattan_ref

CAM = ek.Camera(height=9, width=11, offset=2, subpix=8, theta=700, dt=1000)


@settings(max_examples=30, deadline=None)
@given(j=st.integers(0, 9), n=st.integers(0, 12), hi=st.sampled_from([1, 3, 1000, 2**40]), seed=st.integers(0, 99))
def test_pairwise_manhattan_equals_oracle(j, n, hi, seed):
    P = np.random.default_rng(seed).integers(0, hi + 1, (j, n), dtype=np.int64)
    D = pairwise_manhattan(P)
    assert D.dtype == np.int64 and D.shape == (j, j)
    np.testing.assert_array_equal(D, pairwise_manhattan_ref(P))
    np.testing.assert_array_equal(D, D.T)
    assert not np.diagonal(D).any()


def test_pairwise_manhattan_refuses_other_dtypes_and_shapes():
    with pytest.raises(TypeError, match="^P: expected dtype"):
        pairwise_manhattan(np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="^P: expected 2 dimensions"):
        pairwise_manhattan(np.zeros(3, np.int64))


def _columns(rng, n, H, W, dtypes):
    return (rng.integers(0, W, n).astype(dtypes[0]), rng.integers(0, H, n).astype(dtypes[0]),
            rng.integers(-50, 2000, n).astype(dtypes[1]), rng.integers(-1, 2, n).astype(dtypes[2]))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300), T=st.integers(1, 6), span=st.sampled_from([None, (0, 0), (100, 1500), (-50, 5000)]),
       small=st.booleans(), seed=st.integers(0, 99))
def test_bin_events_equals_oracle(n, T, span, small, seed):
    rng = np.random.default_rng(seed)
    dtypes = (np.uint8, np.int32, np.int8) if small else (np.int64, np.int64, np.int64)
    x, y, t, p = _columns(rng, n, 5, 7, dtypes)
    t0, t1 = span if span is not None else ((int(t.min()), int(t.max())) if n else (0, 0))
    got = ek.bin_events(x, y, t, p, t0, t1, np.zeros((T, 2, 5, 7), np.float32))
    np.testing.assert_array_equal(got, ek.bin_events_ref(x, y, t, p, t0, t1, np.zeros((T, 2, 5, 7), np.float32)))
    assert got.sum() == np.count_nonzero((t >= t0) & (t <= t1))


@settings(max_examples=20, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=0, max_size=5), T=st.integers(1, 4), seed=st.integers(0, 99))
def test_bin_events_batched_bins_each_sample_like_the_oracle(counts, T, seed):
    rng = np.random.default_rng(seed)
    x, y, t, p = _columns(rng, sum(counts), 5, 7, (np.uint8, np.int32, np.int8))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    got = ek.bin_events_batched(x, y, t, p, offsets, 0, 1500, np.zeros((len(counts), T, 2, 5, 7), np.float32))
    for i in range(len(counts)):
        a, b = offsets[i], offsets[i + 1]
        want = ek.bin_events_ref(x[a:b], y[a:b], t[a:b], p[a:b], 0, 1500, np.zeros((T, 2, 5, 7), np.float32))
        np.testing.assert_array_equal(got[i], want)


def test_bin_events_refuses_bad_columns_and_spans():
    out = np.zeros((2, 2, 3, 3), np.float32)
    i = np.array([0, 1], np.int64)
    with pytest.raises(ValueError, match=r"^events\.x: expected 0 <= x < 3"):
        ek.bin_events(np.array([0, 3]), i, i, i, 0, 1, out)
    with pytest.raises(TypeError, match=r"^events\.t: expected an integer dtype"):
        ek.bin_events(i, i, i.astype(np.float64), i, 0, 1, out)
    with pytest.raises(ValueError, match="^t1: a span of"):
        ek.bin_events(i, i, i, i, 0, 2**62, out)
    with pytest.raises(TypeError, match="^out: expected dtype"):
        ek.bin_events(i, i, i, i, 0, 1, out.astype(np.float64))
    with pytest.raises(ValueError, match="^offsets: expected non-decreasing"):
        ek.bin_events_batched(i, i, i, i, np.array([0, 2, 1], np.int64), 0, 1, np.zeros((2, 1, 2, 3, 3), np.float32))


def _image(rng, h=5, w=6):
    img = rng.integers(0, 256, (h, w)).astype(np.uint8)
    img[rng.random((h, w)) < 0.3] = 0
    return img


@settings(max_examples=30, deadline=None)
@given(dy=st.integers(-40, 40), dx=st.integers(-40, 40), seed=st.integers(0, 99))
def test_render_equals_oracle(dy, dx, seed):
    img = _image(np.random.default_rng(seed))
    got = ek.render(img, dy, dx, CAM, np.empty((CAM.height, CAM.width), np.int64))
    np.testing.assert_array_equal(got, ek.render_ref(img, dy, dx, CAM))


@settings(max_examples=20, deadline=None)
@given(steps=st.integers(0, 6), seed=st.integers(0, 99))
def test_dvs_events_equal_oracle_in_order(steps, seed):
    rng = np.random.default_rng(seed)
    imgs = np.stack([_image(rng) for _ in range(3)])
    disp = rng.integers(-20, 21, (steps + 1, 2)).astype(np.int64)
    want = [ek.dvs_events_ref(img, disp, CAM) for img in imgs]
    bufs = tuple(np.zeros((3, 16), dt) for dt in (np.uint8, np.uint8, np.int32, np.int8))
    counts = ek.dvs_events_batched(imgs, disp, CAM, *bufs, np.empty(3, np.int64))
    for i, cols in enumerate(want):
        assert counts[i] == len(cols[0])
        m = min(int(counts[i]), 16)  # only the first `capacity` events are written, all are counted
        for buf, col in zip(bufs, cols):
            np.testing.assert_array_equal(buf[i, :m], col[:m])
        one = tuple(np.zeros(counts[i], dt) for dt in (np.uint8, np.uint8, np.int32, np.int8))
        assert ek.dvs_events(imgs[i], disp, CAM, *one) == counts[i]
        for buf, col in zip(one, cols):
            np.testing.assert_array_equal(buf, col)
        if len(cols[2]):  # every event lies inside the recording (0, steps * dt]
            assert cols[2].min() > 0 and cols[2].max() <= steps * CAM.dt


def test_camera_and_buffers_are_checked():
    img = np.zeros((4, 4), np.uint8)
    disp = np.zeros((2, 2), np.int64)
    bufs = tuple(np.zeros(4, dt) for dt in (np.uint8, np.uint8, np.int32, np.int8))
    with pytest.raises(ValueError, match=r"^cam\.theta: expected"):
        ek.dvs_events(img, disp, CAM._replace(theta=0), *bufs)
    with pytest.raises(TypeError, match="^cam: expected a refsnn.kernels.events.Camera"):
        ek.dvs_events(img, disp, tuple(CAM), *bufs)
    with pytest.raises(TypeError, match="^ts: expected dtype"):
        ek.dvs_events(img, disp, CAM, bufs[0], bufs[1], bufs[2].astype(np.int64), bufs[3])
    with pytest.raises(ValueError, match="^out: expected shape"):
        ek.render(img, 0, 0, CAM, np.empty((3, 3), np.int64))
