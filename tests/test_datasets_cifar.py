"""SPEC §4.3: CIFAR-10/100 python batches through the strict pickle parser."""
from __future__ import annotations

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

from refsnn.datasets import cifar, iterate_batches, load

REPO = Path(__file__).resolve().parents[1]



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
