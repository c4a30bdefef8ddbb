"""SPEC §4.3: event data: events_to_frames, the events:DIR loader, mnist5k-events (simulated saccades)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import event_streams

from refsnn.datasets import (
    EVENT_DTYPE,
    events_to_frames,
    events_to_frames_ref,
    iterate_batches,
    load,
    make_events,
    saccades,
    save_event_dir,
)
from refsnn.datasets.mnist import load_mnist5k_arrays

# ---- §4.3 events_to_frames ---------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(stream=event_streams(), T=st.integers(1, 7), seed=st.integers(0, 2**32 - 1))
def test_events_to_frames_matches_oracle(stream, T, seed):
    ev, size = stream
    got = events_to_frames(ev, size, T)
    want = events_to_frames_ref(ev, size, T)
    assert got.dtype == np.float32 and got.shape == (T, 2) + size
    np.testing.assert_array_equal(got, want)
    assert got.sum() == len(ev)  # every event counted once
    np.testing.assert_array_equal(got.sum(axis=(0, 1)).astype(np.int64),
                                  np.bincount(ev["y"].astype(np.int64) * size[1] + ev["x"],
                                              minlength=size[0] * size[1]).reshape(size))
    assert got[:, 1].sum() == (ev["p"] > 0).sum()
    perm = np.random.default_rng(seed).permutation(len(ev))  # order of events is irrelevant
    np.testing.assert_array_equal(events_to_frames(ev[perm], size, T), got)
    if len(ev):  # explicit range wider than the data: counts preserved, same oracle agreement
        rng_ = (int(ev["t"].min()) - 5, int(ev["t"].max()) + 5)
        a = events_to_frames(ev, size, T, t_range=rng_)
        np.testing.assert_array_equal(a, events_to_frames_ref(ev, size, T, t_range=rng_))
        assert a.sum() == len(ev)


def test_events_to_frames_edge_cases():
    empty = np.zeros(0, EVENT_DTYPE)
    assert not events_to_frames(empty, (3, 4), 5).any()
    assert events_to_frames(empty, (3, 4), 5).shape == (5, 2, 3, 4)
    same_t = make_events([0, 1, 1], [0, 2, 2], [42, 42, 42], [1, 0, 1])
    f = events_to_frames(same_t, (3, 4), 4)
    assert f[0].sum() == 3 and f[1:].sum() == 0 and f[0, 1, 2, 1] == 1 and f[0, 0, 2, 1] == 1
    # bins: t0 -> 0, t1 -> T-1 (closed last bin), equal half-open bins in between
    ev = make_events([0] * 6, [0] * 6, [100, 0, 9, 10, 99, 50], [1] * 6)
    f = events_to_frames(ev, (1, 1), 10)
    np.testing.assert_array_equal(f[:, 1, 0, 0], [2, 1, 0, 0, 0, 1, 0, 0, 0, 2])
    # t_range clips: events outside ignored
    f = events_to_frames(ev, (1, 1), 2, t_range=(10, 60))
    np.testing.assert_array_equal(f[:, 1, 0, 0], [1, 1])
    # polarity conventions agree
    a = events_to_frames(make_events([0, 1], [0, 0], [0, 1], [-1, 1]), (1, 2), 1)
    b = events_to_frames(make_events([0, 1], [0, 0], [0, 1], np.array([False, True])), (1, 2), 1)
    np.testing.assert_array_equal(a, b)
    assert a[0, 0, 0, 0] == 1 and a[0, 1, 0, 1] == 1


def test_events_to_frames_bad_input():
    ev = make_events([0, 5], [0, 0], [0, 1], [0, 1])
    with pytest.raises(ValueError, match=r"\['x'\].*W = 4"):
        events_to_frames(ev, (2, 4), 2)
    with pytest.raises(ValueError, match=r"\['y'\]"):
        events_to_frames(make_events([0], [3], [0], [0]), (2, 4), 2)
    fl = np.zeros(2, dtype=[("x", "i2"), ("y", "i2"), ("t", "f8"), ("p", "i1")])
    with pytest.raises(TypeError, match=r"\['t'\].*int64"):
        events_to_frames(fl, (2, 4), 2)
    with pytest.raises(TypeError, match="fields x, y, t, p"):
        events_to_frames(np.zeros((2, 4)), (2, 4), 2)
    with pytest.raises(TypeError, match="events"):
        events_to_frames([(0, 0, 0, 0)], (2, 4), 2)
    with pytest.raises(ValueError, match="n_time_bins"):
        events_to_frames(ev, (2, 8), 0)
    with pytest.raises(TypeError, match="sensor_size"):
        events_to_frames(ev, 8, 2)
    with pytest.raises(ValueError, match="sensor_size"):
        events_to_frames(ev, (0, 8), 2)
    with pytest.raises(ValueError, match="t_range"):
        events_to_frames(ev, (2, 8), 2, t_range=(5, 1))
    with pytest.raises(TypeError, match="^t:"):
        make_events([0], [0], [0.5], [1])
    with pytest.raises(ValueError, match="equal lengths"):
        make_events([0], [0, 1], [0], [1])


# ---- §4.3 events:DIR ---------------------------------------------------------------------------

def _random_stream(rng, n, H, W):
    return make_events(rng.integers(0, W, n), rng.integers(0, H, n), rng.integers(0, 10**6, n),
                       rng.integers(0, 2, n))


@pytest.mark.parametrize("fmt, classes", [("npy", None), ("npz", ["left", "right", "up"])])
def test_event_dir_roundtrip(tmp_path, fmt, classes):
    rng = np.random.default_rng(0)
    H, W, T = 5, 7, 4
    samples = {s: [(_random_stream(rng, int(rng.integers(1, 50)), H, W), int(rng.integers(0, 3)))
                   for _ in range(n)] for s, n in (("train", 9), ("test", 4))}
    save_event_dir(tmp_path, samples, (H, W), classes=classes, fmt=fmt, augment_pad=1)
    assert json.loads((tmp_path / "meta.json").read_text())["sensor_size"] == [H, W]
    ds = load(f"events:{tmp_path}", timesteps=T)
    assert ds.is_event and ds.input_shape == (2, H, W) and ds.timesteps == T and ds.augment_pad == 1
    assert ds.num_classes == (3 if classes else max(lbl for s in samples.values() for _, lbl in s) + 1)
    for split in ("train", "test"):
        x, y = ds.split(split)
        assert x.shape == (len(samples[split]), T, 2, H, W) and x.dtype == np.float32
        order = sorted(range(len(samples[split])), key=lambda i: (samples[split][i][1], i))
        for j, i in enumerate(order):  # stored order: (label, file name)
            ev, lbl = samples[split][i]
            assert y[j] == lbl
            np.testing.assert_array_equal(x[j], events_to_frames_ref(ev, (H, W), T))
    x_tb, y = next(iterate_batches(ds, "train", 4))
    assert x_tb.shape == (T, 4, 2, H, W) and x_tb.flags.c_contiguous
    np.testing.assert_array_equal(x_tb, ds.x_train[:4].transpose(1, 0, 2, 3, 4))


def test_event_dir_npz_columns_and_errors(tmp_path):
    (tmp_path / "train" / "0").mkdir(parents=True)
    (tmp_path / "test" / "1").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load(f"events:{tmp_path}", timesteps=2)
    (tmp_path / "meta.json").write_text(json.dumps({"sensor_size": [3, 3]}))
    np.savez(tmp_path / "train" / "0" / "a.npz", x=[0, 1], y=[2, 2], t=[0, 10], p=[1, 0])
    np.save(tmp_path / "test" / "1" / "b.npy", make_events([2], [0], [5], [1]))
    ds = load(f"events:{tmp_path}", timesteps=2)
    assert ds.num_classes == 2 and ds.x_train[0, 0, 1, 2, 0] == 1 and ds.x_train[0, 1, 0, 2, 1] == 1
    # an object (pickled) array is refused, not unpickled
    np.save(tmp_path / "test" / "1" / "c.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="c.npy"):
        load(f"events:{tmp_path}", timesteps=2)
    (tmp_path / "test" / "1" / "c.npy").unlink()
    np.save(tmp_path / "test" / "1" / "d.npy", make_events([5], [0], [5], [1]))
    with pytest.raises(ValueError, match=r"d.npy.*\['x'\]"):
        load(f"events:{tmp_path}", timesteps=2)
    (tmp_path / "test" / "1" / "d.npy").unlink()
    (tmp_path / "test" / "cat").mkdir()
    with pytest.raises(ValueError, match="cat.*integers"):
        load(f"events:{tmp_path}", timesteps=2)
    (tmp_path / "meta.json").write_text(json.dumps({"sensor_size": [3]}))
    with pytest.raises(ValueError, match="sensor_size"):
        load(f"events:{tmp_path}", timesteps=2)


# ---- §4.3 mnist5k-events (simulated saccades) --------------------------------------------------

def test_saccade_path():
    d = saccades.displacements()
    assert d.shape == (saccades.N_STEPS + 1, 2)
    for s, v in enumerate(saccades.PATH):
        np.testing.assert_array_equal(d[s * saccades.STEPS_PER_SACCADE], np.array(v) * 16)
    assert np.abs(d).max() <= saccades.OFFSET * 16  # the digit's box never leaves the sensor
    assert saccades.DURATION_US == 300_000 and saccades.THRESHOLD_INT == 13056


def test_saccade_kernel_matches_oracle():
    imgs = np.ascontiguousarray(load_mnist5k_arrays()["x_test"][:6])
    ev, off = saccades.saccade_events(imgs)
    d = saccades.displacements()
    for i in range(len(imgs)):
        np.testing.assert_array_equal(ev[off[i]:off[i + 1]], saccades.saccade_events_ref(imgs[i]))
        for k in (0, 13, 47):
            out = np.empty(saccades.SENSOR_SIZE, np.int64)
            saccades._render(imgs[i], d[k, 0], d[k, 1], out)
            np.testing.assert_array_equal(out, saccades.render_ref(imgs[i], *d[k]))
    assert ev["t"].min() > 0 and ev["t"].max() <= saccades.DURATION_US
    # forced buffer overflow takes the exact-size path and gives the same events
    old = saccades._CAPACITY
    try:
        saccades._CAPACITY = 100
        cols = saccades._saccade_columns(imgs)
    finally:
        saccades._CAPACITY = old
    np.testing.assert_array_equal(cols[4], off)
    np.testing.assert_array_equal(cols[2], ev["t"])
    with pytest.raises(TypeError, match="images"):
        saccades.saccade_events(imgs.astype(np.float32))


def test_mnist5k_events_dataset():
    T = 5
    ds = load("mnist5k-events", timesteps=T)
    raw = load_mnist5k_arrays()
    assert ds.is_event and ds.input_shape == (2, 34, 34) and ds.num_classes == 10
    assert ds.x_train.shape == (4000, T, 2, 34, 34) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (1000, T, 2, 34, 34)
    np.testing.assert_array_equal(ds.y_train, raw["y_train"])
    np.testing.assert_array_equal(ds.y_test, raw["y_test"])
    for x in (ds.x_train, ds.x_test):
        per = x.sum(axis=(1, 3, 4))  # (N, 2) events per polarity
        assert (per > 0).all()  # every sample has ON and OFF events
        assert (x.sum(axis=(2, 3, 4)) > 0).all()  # and events in every time bin
    # frames of the batched kernel equal the oracle binning of the events
    ev, off = saccades.saccade_events(np.ascontiguousarray(raw["x_test"][:3]))
    for i in range(3):
        np.testing.assert_array_equal(
            ds.x_test[i], events_to_frames_ref(ev[off[i]:off[i + 1]], (34, 34), T,
                                               t_range=(0, saccades.DURATION_US)))
    # a different T re-bins the same (cached) events: totals per sample are unchanged
    ds3 = load("mnist5k-events", timesteps=3)
    np.testing.assert_array_equal(ds3.x_test.sum(axis=1), ds.x_test.sum(axis=1))
    x_tb, y = next(iterate_batches(ds, "test", 8, rng=np.random.default_rng(0), augment=True))
    assert x_tb.shape == (T, 8, 2, 34, 34) and y.dtype == np.int64
