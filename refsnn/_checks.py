"""Argument validation shared by every public function (SPEC §1, "Bad input").

Each helper raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong shape, range or
NaN) with a message that starts with the argument's name, so a caller always learns *which*
argument was wrong and what was expected. The helpers return the validated object so they can be
used inline: ``x = check_array("x", x, ndim_min=2, dtypes=FLOAT_DTYPES)``.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_array(
    name: str,
    x,
    *,
    ndim: int | None = None,
    ndim_min: int | None = None,
    dtypes: Sequence[np.dtype] | None = FLOAT_DTYPES,
    shape: Sequence[int | None] | None = None,
    finite: bool = True,
) -> np.ndarray:
    """Return ``x`` as an ndarray after checking type, rank, dtype, shape and finiteness.

    ``shape`` entries that are ``None`` are not checked. No copy is made and the dtype is never
    silently converted: a float16 or int array passed where float32/float64 is expected is an error.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if dtypes is not None and x.dtype not in dtypes:
        allowed = ", ".join(str(d) for d in dtypes)
        raise TypeError(f"{name}: expected dtype in ({allowed}), got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {x.shape}")
    if ndim_min is not None and x.ndim < ndim_min:
        raise ValueError(f"{name}: expected at least {ndim_min} dimensions, got shape {x.shape}")
    if shape is not None:
        if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name}: expected shape {want}, got {x.shape}")
    if finite and x.dtype.kind == "f" and x.size and not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return x


def check_same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_b}: expected the shape of {name_a} {a.shape}, got {b.shape}")


def check_same_dtype(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{name_b}: expected the dtype of {name_a} ({a.dtype}), got {b.dtype}")


def check_float(name: str, v, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real scalar within ``[lo, hi]`` (open ends with ``lo_open``/``hi_open``)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name}: expected a value {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name}: expected a value {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def check_int(name: str, v, *, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (not bool) within ``[lo, hi]``."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(v).__name__}")
    v = int(v)
    if lo is not None and v < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}: expected an integer <= {hi}, got {v}")
    return v


def check_choice(name: str, v, choices: Iterable) -> object:
    choices = tuple(choices)
    if v not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {v!r}")
    return v
