"""CIFAR-10/100 "python version" batches through a restricted unpickler (SPEC §1, §4.3).

The official files (https://www.cs.toronto.edu/~kriz/cifar.html, "CIFAR-10 python version",
"CIFAR-100 python version") are Python-2 pickles (protocol 2) of dicts:

* CIFAR-10 ``data_batch_1`` .. ``data_batch_5``, ``test_batch``: ``{b"batch_label": bytes,
  b"labels": list[int] (n,), b"data": uint8 ndarray (n, 3072), b"filenames": list[bytes]}``
* CIFAR-100 ``train``, ``test``: the same with ``b"fine_labels"`` (0..99) and ``b"coarse_labels"``
  (0..19) instead of ``b"labels"``.

Each row of ``data`` is a 32x32 colour image stored channel-planar (1024 red, 1024 green, 1024
blue values, each plane row-major), so ``data.reshape(n, 3, 32, 32)`` is NCHW.

Unpickling executes whatever callables a pickle names, so these files are read by
:class:`RestrictedUnpickler`, whose ``find_class`` resolves only the globals the files need —
numpy's array reconstruction (``numpy.core.multiarray._reconstruct``, or ``numpy._core...`` as
written by NumPy 2), ``numpy.ndarray``, ``numpy.dtype`` and builtins containers — plus
``_codecs.encode`` restricted to latin-1 (how Python 3 writes ``bytes`` at protocol 2). Any other
global raises :class:`RefusedPickleError` (a ``ValueError``) naming the file and the global,
*before* anything is called. The loaded objects are then checked for the layout above.
"""
from __future__ import annotations

import builtins
import codecs
import io
import pickle
from pathlib import Path

import numpy as np

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
CIFAR100_TRAIN = ("train",)
CIFAR100_TEST = ("test",)
SUBDIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


class RefusedPickleError(pickle.UnpicklingError, ValueError):
    """A pickle named a global outside the CIFAR allow-list; nothing was executed."""


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as Python 3 uses it for ``bytes`` at protocol 2, and nothing else."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is only allowed as encode(str, 'latin1')")
    return codecs.latin_1_encode(obj)[0]


_BUILTINS = {n: getattr(builtins, n) for n in ("list", "dict", "tuple", "set", "frozenset", "bytearray")}

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    **{(mod, n): f for n, f in _BUILTINS.items() for mod in ("builtins", "__builtin__")},
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` (``encoding="bytes"``).

    ``source`` is used in error messages (the file name).
    """

    def __init__(self, file, *, source: str = "<pickle>"):
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module, name):  # noqa: D102 - see class docstring
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise RefusedPickleError(
                f"{self.source}: refused to unpickle global {module}.{name}: a CIFAR python batch "
                f"only references numpy array reconstruction (numpy.core.multiarray._reconstruct, "
                f"numpy.ndarray, numpy.dtype); this file is not a CIFAR batch or is malicious"
            ) from None

    def persistent_load(self, pid):  # noqa: D102
        raise RefusedPickleError(f"{self.source}: refused persistent id {pid!r}")


def restricted_load(path) -> object:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; ``ValueError`` naming it on any failure."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=str(path)).load()
    except RefusedPickleError:
        raise
    except Exception as e:  # truncated/foreign files: one clear line instead of a pickle traceback
        raise ValueError(f"{path}: not a readable CIFAR python batch: {type(e).__name__}: {e}") from None


def read_batch(path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images uint8 (n, 3, 32, 32), labels int64 (n,)."""
    obj = restricted_load(path)
    if not isinstance(obj, dict) or b"data" not in obj or label_key not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path}: expected a dict with keys b'data' and {label_key!r}, got {keys}")
    data, labels = obj[b"data"], obj[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        raise ValueError(f"{path}: b'data' should be a uint8 array (n, 3072), got "
                         f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if not isinstance(labels, (list, tuple, np.ndarray)) or len(labels) != len(data):
        raise ValueError(f"{path}: {label_key!r} should be a list of {len(data)} integers")
    y = np.asarray(labels)
    if y.size and y.dtype.kind not in "iu":
        raise ValueError(f"{path}: {label_key!r} should hold integers, got dtype {y.dtype}")
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), y.astype(np.int64)


def _resolve_dir(root: Path, kind: str, names: tuple[str, ...]) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"{kind}:{root}: no such directory")
    for d in (root, root / SUBDIRS[kind]):
        if all((d / n).is_file() for n in names):
            return d
    raise FileNotFoundError(
        f"{kind}:{root}: expected the files {', '.join(names)} of the '{kind}' python version in "
        f"{root} or {root / SUBDIRS[kind]}; refsnn never downloads them (get them from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html)")


def load_cifar_arrays(kind: str, root) -> dict[str, np.ndarray]:
    """``x_train``/``x_test`` uint8 (N, 3, 32, 32), ``y_train``/``y_test`` int64 of a CIFAR dir.

    ``kind`` is ``"cifar10"`` or ``"cifar100"`` (fine labels); ``root`` holds the batch files
    directly or in the archive's own subdirectory (``cifar-10-batches-py``/``cifar-100-python``).
    """
    if kind == "cifar10":
        train, test, key, k = CIFAR10_TRAIN, CIFAR10_TEST, b"labels", 10
    elif kind == "cifar100":
        train, test, key, k = CIFAR100_TRAIN, CIFAR100_TEST, b"fine_labels", 100
    else:
        raise ValueError(f"kind: expected 'cifar10' or 'cifar100', got {kind!r}")
    d = _resolve_dir(Path(root), kind, train + test)
    out = {}
    for split, names in (("train", train), ("test", test)):
        parts = [read_batch(d / n, key) for n in names]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"{d}: {split} labels outside 0..{k - 1}")
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out
