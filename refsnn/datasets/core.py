"""The uniform dataset API: :func:`load`, :class:`Dataset`, :func:`iterate_batches` (SPEC §1, §4.2–4.3).

Specs accepted by :func:`load`
------------------------------
=====================  =====================================================================
``mnist5k``            embedded MNIST subset, 4,000 train / 1,000 test, (1, 28, 28), 10 classes
``mnist5k-events``     the same digits as simulated-saccade events (``saccades``), (2, 34, 34)
``cifar10:DIR``        CIFAR-10 python batches in DIR (``cifar``), (3, 32, 32), 10 classes
``cifar100:DIR``       CIFAR-100 python batches in DIR, fine labels, (3, 32, 32), 100 classes
``events:DIR``         per-sample event files in DIR (layout in ``events``), (2, H, W)
``SPEC[fold=K/N]``     any of the above re-split for N-fold cross-validation (:meth:`Dataset.fold`)
=====================  =====================================================================

Cross-validation folds (``[fold=K/N]``, ``0 <= K < N``): train and test are pooled in stored order
(all training samples, then all test samples); within each class the ``n_c`` samples, in that
order, are cut into N consecutive blocks, sample ``r`` of its class going to fold
``floor(r * N / n_c)``. Fold K is the test split, the other folds (in pooled order) the training
split. For a stratified official split whose test share is ``1/N`` of every class -- mnist5k's
400 + 100 per class with N = 5 -- fold ``N-1`` is exactly the official split (same samples, same
order), and folds ``0..N-2`` give N-1 further disjoint test sets of the same size and balance.

Arrays held by a :class:`Dataset`
---------------------------------
* static images: ``x_*`` float32 ``(N, C, H, W)``, computed as
  ``(uint8 / 255 - mean[c]) / std[c]`` in float32 with the per-channel constants below
  (fixed constants, not statistics of the files at hand, so every backend normalises alike):

  ============  ============================  ============================
  dataset       mean                          std
  ============  ============================  ============================
  mnist5k       (0,)                          (1,)   -> plain [0, 1] pixels
  cifar10       (0.4914, 0.4822, 0.4465)      (0.2470, 0.2435, 0.2616)
  cifar100      (0.5071, 0.4865, 0.4409)      (0.2673, 0.2564, 0.2762)
  ============  ============================  ============================

  (the CIFAR values are the training sets' per-channel pixel mean and standard deviation.)
* event data: ``x_*`` float32 ``(N, T, 2, H, W)`` event counts per time bin, channel 0 OFF, 1 ON
  (``events.events_to_frames`` with ``n_time_bins = timesteps``), not normalised.
* labels: ``y_*`` int64 ``(N,)`` in ``[0, num_classes)``.

Batches (:func:`iterate_batches`)
---------------------------------
``x_tb`` is time-major float32 ``[T, B, C, H, W]``. Static images are direct-encoded: the same
(augmented) image at each of the T steps, returned as a read-only ``np.broadcast_to`` view
(stride 0 along T, no copy; pass ``contiguous=True`` for a writable C-contiguous copy). Event
frames are transposed from ``(B, T, ...)`` to time-major C-contiguous arrays.

Augmentation (``augment=True``, train-time): per sample, a random crop of the image padded by
``ds.augment_pad`` pixels on each side (offsets ``oy, ox`` uniform in ``[0, 2*pad]``; padding is
raw-pixel zero, i.e. ``-mean/std`` after normalisation, and 0 counts for events; the same crop for
all T frames of an event sample), then, if ``ds.augment_flip``, a horizontal flip with probability
1/2. Defaults: pad 2 and no flip for the digits (``mnist5k``, ``mnist5k-events``), pad 4 and flip
for CIFAR, ``meta.json``'s ``augment_pad``/``augment_flip`` (default 0/false) for ``events:DIR``.

Randomness comes only from the ``rng`` passed in, consumed in a fixed order so a seed gives the same
batches everywhere: ``rng.permutation(N)`` once if ``shuffle``; then per batch, if ``augment``,
``rng.integers(0, 2*pad + 1, size=(B, 2))`` (if pad > 0) and ``rng.random(B) < 0.5`` (if flip).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from refsnn._checks import check_int
from refsnn.datasets.cifar import load_cifar_arrays
from refsnn.datasets.events import load_event_split, read_meta
from refsnn.datasets.mnist import load_mnist5k_arrays
from refsnn.datasets.saccades import SENSOR_SIZE, mnist5k_saccade_frames

NORMALISATION = {
    "mnist5k": ((0.0,), (1.0,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
SPEC_FORMS = ("mnist5k", "mnist5k-events", "cifar10:DIR", "cifar100:DIR", "events:DIR")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test dataset in memory (see the module docstring for array layouts).

    Attributes
    ----------
    name : str
        the spec it was loaded from, e.g. ``"mnist5k"`` or ``"cifar10:/data/cifar"``.
    x_train, x_test : float32 (N, C, H, W) for static images, (N, T, 2, H, W) for events.
    y_train, y_test : int64 (N,)
    num_classes : int
    input_shape : (C, H, W) of one time step.
    is_event : bool
    timesteps : int, T.
    mean, std : per-channel normalisation constants that were applied (events: 0 and 1).
    augment_pad : int, crop padding used by ``augment=True``.
    augment_flip : bool, horizontal flips used by ``augment=True``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, int, int]
    is_event: bool
    timesteps: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment_pad: int = 0
    augment_flip: bool = False

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of ``"train"`` or ``"test"``."""
        if split == "train":
            return self.x_train, self.y_train
        if split == "test":
            return self.x_test, self.y_test
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")

    def pad_value(self) -> np.ndarray:
        """float32 (C, 1, 1): the normalised value of a raw-zero pixel, used to pad crops."""
        if self.is_event:
            return np.zeros((self.input_shape[0], 1, 1), np.float32)
        m = np.asarray(self.mean, np.float32)
        s = np.asarray(self.std, np.float32)
        return (-m / s).reshape(-1, 1, 1)

    def take(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """A dataset of the first ``n_train``/``n_test`` samples (views, no copy); for quick runs.

        The embedded sets are stored in shuffled order, so prefixes are roughly class-balanced.
        """
        n_train = len(self.y_train) if n_train is None else check_int("n_train", n_train, lo=1)
        n_test = len(self.y_test) if n_test is None else check_int("n_test", n_test, lo=1)
        return dataclasses.replace(self, x_train=self.x_train[:n_train], y_train=self.y_train[:n_train],
                                   x_test=self.x_test[:n_test], y_test=self.y_test[:n_test])

    def holdout(self, n_val: int) -> "Dataset":
        """A dataset whose training split is all but the last ``n_val`` training samples and whose
        test split is those ``n_val`` samples (a validation split; the real test split is dropped,
        so nothing selected on the result has seen it).  Views, no copy; ``name`` gets ``[val=N]``.
        """
        n = len(self.y_train)
        n_val = check_int("n_val", n_val, lo=1)
        if n_val >= n:
            raise ValueError(f"n_val: must be less than the {n} training samples, got {n_val}")
        k = n - n_val
        return dataclasses.replace(self, name=f"{self.name}[val={n_val}]",
                                   x_train=self.x_train[:k], y_train=self.y_train[:k],
                                   x_test=self.x_train[k:], y_test=self.y_train[k:])

    def fold(self, k: int, n: int) -> "Dataset":
        """Fold ``k`` of ``n`` of the pooled samples as the test split, the rest as the training
        split (stratified, deterministic; the rule is in the module docstring). Copies; ``name``
        gets ``[fold=k/n]``."""
        n = check_int("n", n, lo=2)
        k = check_int("k", k, lo=0)
        if k >= n:
            raise ValueError(f"k: fold index must be in [0, {n}), got {k}")
        y = np.concatenate([self.y_train, self.y_test])
        fold_of = fold_assignment(y, n)
        if np.bincount(fold_of, minlength=n).min() == 0:
            raise ValueError(f"n: {n} folds leave a fold empty ({len(y)} samples)")
        x = np.concatenate([self.x_train, self.x_test])
        te = fold_of == k
        return dataclasses.replace(self, name=f"{self.name}[fold={k}/{n}]",
                                   x_train=x[~te], y_train=y[~te], x_test=x[te], y_test=y[te])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"classes={self.num_classes}, input_shape={self.input_shape}, T={self.timesteps}, "
                f"is_event={self.is_event})")


def fold_assignment(y: np.ndarray, n: int) -> np.ndarray:
    """int64 (N,): the fold of each sample of label vector ``y`` (in its order) for ``n`` stratified
    folds -- sample ``r`` of its class, counted in order, goes to fold ``floor(r * n / n_c)``."""
    y = np.asarray(y)
    out = np.empty(len(y), np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        out[idx] = np.arange(len(idx)) * n // len(idx)
    return out


_FOLD = re.compile(r"^(?P<base>.+)\[fold=(?P<k>\d+)/(?P<n>\d+)\]$")


def _normalise(x_u8: np.ndarray, mean, std) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 ``(x/255 - mean[c]) / std[c]`` (computed in float32)."""
    x = x_u8.astype(np.float32)
    x /= np.float32(255.0)
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    if np.any(m != 0):
        x -= m
    if np.any(s != 1):
        x /= s
    return x


def load(spec: str, *, timesteps: int, seed: int = 0) -> Dataset:
    """Load a dataset by its spec string (module docstring lists the forms).

    Parameters
    ----------
    spec : ``"mnist5k"``, ``"mnist5k-events"``, ``"cifar10:DIR"``, ``"cifar100:DIR"`` or
        ``"events:DIR"``, optionally followed by ``[fold=K/N]`` (cross-validation fold K of N).
    timesteps : T >= 1; for event data the number of time bins per sample, for static images the
        number of steps ``iterate_batches`` repeats each image.
    seed : accepted so every dataset has the same signature; all datasets refsnn builds are
        deterministic and currently ignore it (the mnist5k split is fixed in the file; batch order
        and augmentation come from the ``rng`` given to :func:`iterate_batches`).

    Raises
    ------
    ValueError for an unknown or malformed spec, FileNotFoundError for a missing directory/file.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a string such as 'mnist5k', got {type(spec).__name__}")
    T = check_int("timesteps", timesteps, lo=1)
    check_int("seed", seed, lo=0)
    m = _FOLD.match(spec)
    if m:
        return load(m["base"], timesteps=T, seed=seed).fold(int(m["k"]), int(m["n"]))
    if "[" in spec and spec.split("[", 1)[0] in ("mnist5k", "mnist5k-events"):
        raise ValueError(f"spec: malformed suffix in {spec!r}; the only one is '[fold=K/N]'")
    kind, sep, arg = spec.partition(":")
    if kind in ("mnist5k", "mnist5k-events") and sep:
        raise ValueError(f"spec: {kind!r} takes no directory, got {spec!r}")
    if kind in ("cifar10", "cifar100", "events") and not arg:
        raise ValueError(f"spec: {kind!r} needs a directory, e.g. '{kind}:/path/to/dir', got {spec!r}")

    if kind == "mnist5k":
        a = load_mnist5k_arrays()
        mean, std = NORMALISATION["mnist5k"]
        return Dataset(spec, _normalise(a["x_train"][:, None], mean, std), a["y_train"].astype(np.int64),
                       _normalise(a["x_test"][:, None], mean, std), a["y_test"].astype(np.int64),
                       10, (1, 28, 28), False, T, mean, std, augment_pad=2, augment_flip=False)
    if kind == "mnist5k-events":
        xtr, ytr = mnist5k_saccade_frames("train", T)
        xte, yte = mnist5k_saccade_frames("test", T)
        return Dataset(spec, xtr, ytr, xte, yte, 10, (2,) + SENSOR_SIZE, True, T, (0.0, 0.0),
                       (1.0, 1.0), augment_pad=2, augment_flip=False)
    if kind in ("cifar10", "cifar100"):
        a = load_cifar_arrays(kind, Path(arg))
        mean, std = NORMALISATION[kind]
        return Dataset(spec, _normalise(a["x_train"], mean, std), a["y_train"],
                       _normalise(a["x_test"], mean, std), a["y_test"],
                       10 if kind == "cifar10" else 100, (3, 32, 32), False, T, mean, std,
                       augment_pad=4, augment_flip=True)
    if kind == "events":
        root = Path(arg)
        if not root.is_dir():
            raise FileNotFoundError(f"events:{root}: no such directory")
        meta = read_meta(root)
        xtr, ytr = load_event_split(root, "train", T, meta)
        xte, yte = load_event_split(root, "test", T, meta)
        k = len(meta["classes"]) if meta["classes"] else int(max(ytr.max(), yte.max())) + 1
        return Dataset(spec, xtr, ytr, xte, yte, k, (2,) + tuple(meta["sensor_size"]), True, T,
                       (0.0, 0.0), (1.0, 1.0), augment_pad=meta["augment_pad"],
                       augment_flip=meta["augment_flip"])
    raise ValueError(f"spec: unknown dataset {spec!r}; expected one of {', '.join(SPEC_FORMS)}")


def augment_batch(xb: np.ndarray, pad: int, flip: bool, pad_value: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Random crop (padding ``pad``) and optional horizontal flip of a batch (module docstring).

    ``xb`` is (B, C, H, W) or (B, T, C, H, W); ``pad_value`` broadcasts against (C, H, W).
    Returns a new array of the same shape and dtype; ``xb`` is not modified.
    """
    B = xb.shape[0]
    H, W = xb.shape[-2:]
    out = xb
    if pad > 0:
        offs = rng.integers(0, 2 * pad + 1, size=(B, 2))
        padded = np.empty(xb.shape[:-2] + (H + 2 * pad, W + 2 * pad), dtype=xb.dtype)
        padded[...] = pad_value.astype(xb.dtype)
        padded[..., pad:pad + H, pad:pad + W] = xb
        out = np.empty_like(xb)
        for i in range(B):
            oy, ox = offs[i]
            out[i] = padded[i, ..., oy:oy + H, ox:ox + W]
    if flip:
        f = rng.random(B) < 0.5
        if out is xb:
            out = xb.copy()
        out[f] = out[f][..., ::-1]
    return out


def iterate_batches(ds: Dataset, split: str, batch_size: int, *,
                    rng: np.random.Generator | None = None, shuffle: bool = False,
                    augment: bool = False, drop_last: bool = False,
                    contiguous: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x_tb, y)`` mini-batches of ``ds``'s ``split`` (module docstring).

    Parameters
    ----------
    ds : Dataset
    split : ``"train"`` or ``"test"``
    batch_size : B >= 1; the last batch is smaller unless ``drop_last``.
    rng : numpy.random.Generator, required when ``shuffle`` or ``augment``.
    shuffle : visit samples in ``rng.permutation(N)`` order (else in stored order).
    augment : random crop / flip per ``ds.augment_pad`` and ``ds.augment_flip``.
    drop_last : skip a final partial batch.
    contiguous : static images only: return a writable C-contiguous copy instead of the read-only
        broadcast view.

    Yields
    ------
    x_tb : float32 (T, B, C, H, W), time-major
    y : int64 (B,)
    """
    if not isinstance(ds, Dataset):
        raise TypeError(f"ds: expected a refsnn.datasets.Dataset, got {type(ds).__name__}")
    x, y = ds.split(split)
    B = check_int("batch_size", batch_size, lo=1)
    for name, v in (("shuffle", shuffle), ("augment", augment), ("drop_last", drop_last),
                    ("contiguous", contiguous)):
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
    if (shuffle or augment) and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator when shuffle or augment is set, "
                        f"got {type(rng).__name__}")
    return _batches(ds, x, y, B, rng, bool(shuffle), bool(augment), bool(drop_last), bool(contiguous))


def _batches(ds, x, y, B, rng, shuffle, augment, drop_last, contiguous):
    n = len(y)
    order = rng.permutation(n) if shuffle else None
    pad_value = ds.pad_value()
    T = ds.timesteps
    stop = n - (n % B) if drop_last else n
    for start in range(0, stop, B):
        sel = order[start:start + B] if shuffle else slice(start, min(start + B, n))
        xb = x[sel]
        yb = np.ascontiguousarray(y[sel], dtype=np.int64)
        if augment and (ds.augment_pad > 0 or ds.augment_flip):
            xb = augment_batch(xb, ds.augment_pad, ds.augment_flip, pad_value, rng)
        if ds.is_event:
            x_tb = np.ascontiguousarray(xb.transpose(1, 0, 2, 3, 4))
        else:
            x_tb = np.broadcast_to(xb, (T,) + xb.shape)
            if contiguous:
                x_tb = np.ascontiguousarray(x_tb)
        yield x_tb, yb
