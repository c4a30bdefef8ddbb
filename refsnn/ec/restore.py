"""Checks of the arrays a checkpoint restores (``refsnn ec``'s ``checkpoint.npz``, all methods).

A checkpoint is a file a user can edit, truncate or mix up with another run's, so every array read
back is checked before the run continues from it: present, a real number array (bool, complex,
strings and objects are refused), of the expected shape, finite (or, where the run itself stores
them, ``-inf``/NaN), within its range (a second moment or a count is never negative, a probability
lies in ``[0, 1]``) and integer-valued where it counts something. Anything else is a ``ValueError``
whose message starts with the checkpoint key, so the command can say ``FILE: corrupt checkpoint
(KEY: ...)`` instead of running a generation from NaN parameters.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["restored_array", "restored_int", "restored_float"]


def restored_array(d: Mapping, key: str, *, shape: tuple | None = None, lo: float | None = None,
                   hi: float | None = None, integer: bool = False, allow_nan: bool = False,
                   allow_neg_inf: bool = False) -> np.ndarray:
    """``d[key]`` as a float64 array after the checks of the module docstring.

    ``shape``: the expected shape (``None``: any); ``lo`` / ``hi``: inclusive bounds of every finite
    value; ``integer``: every value a whole number; ``allow_nan`` / ``allow_neg_inf``: NaN / ``-inf``
    entries pass (the run writes them, e.g. a return that was never measured)."""
    if key not in d or d[key] is None:
        raise ValueError(f"{key}: missing")
    a = np.asarray(d[key])
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{key}: expected real numbers, got dtype {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{key}: expected shape {tuple(shape)}, got {a.shape}")
    a = a.astype(np.float64)
    bad = np.isinf(a) & ~((a < 0) & allow_neg_inf)
    if not allow_nan:
        bad |= np.isnan(a)
    if bad.any():
        raise ValueError(f"{key}: contains {'infinity' if allow_nan else 'NaN or infinity'}")
    fin = a[np.isfinite(a)]
    if lo is not None and (fin < lo).any():
        raise ValueError(f"{key}: expected values >= {lo:g}, got {fin.min():g}")
    if hi is not None and (fin > hi).any():
        raise ValueError(f"{key}: expected values <= {hi:g}, got {fin.max():g}")
    if integer and (fin != np.round(fin)).any():
        raise ValueError(f"{key}: expected whole numbers, got {fin[fin != np.round(fin)][0]:g}")
    return a


def restored_int(d: Mapping, key: str, *, lo: int = 0, hi: int | None = None) -> int:
    """The scalar ``d[key]`` as an int in ``[lo, hi]`` (a whole number; below ``2**53`` when stored
    as a float)."""
    a = restored_array(d, key, shape=(), lo=lo, hi=hi, integer=True)
    raw = np.asarray(d[key])
    if raw.dtype.kind in "iu":
        return int(raw)
    if abs(float(a)) >= 2.0 ** 53:
        raise ValueError(f"{key}: {float(a):g} is beyond the integers a float holds exactly")
    return int(a)


def restored_float(d: Mapping, key: str, *, lo: float | None = None, hi: float | None = None,
                   allow_neg_inf: bool = False) -> float:
    """The scalar ``d[key]`` as a finite float in ``[lo, hi]`` (``-inf`` too with ``allow_neg_inf``)."""
    return float(restored_array(d, key, shape=(), lo=lo, hi=hi, allow_neg_inf=allow_neg_inf))
