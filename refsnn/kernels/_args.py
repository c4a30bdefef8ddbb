"""Checks of the arrays the kernels hand to Numba (SPEC §1 "Bad input").

A Numba kernel does no bounds checking: an output wider than the loop bounds it was sized from
reads past the end of an input (a segfault), a narrower one or one of another dtype silently
truncates, a read-only array cannot be written, and an output that overlaps an input it is read
after corrupts the result. So every public kernel function checks, before it calls Numba,

* every input: ndarray, dtype, shape (:func:`refsnn._checks.check_array`); inputs that are not
  C-contiguous are copied (``np.ascontiguousarray``), never rejected;
* every output, work array or state array it writes (:func:`check_out`): ndarray, exact dtype and
  shape, C-contiguous and writeable (never copied: the caller wants the values in *that* array);
* that what it writes does not overlap what it reads (:func:`check_disjoint`), except where a
  function documents an in-place form (e.g. ``lif_backward(..., out=grad_s)``).

Messages start with the argument's name, like those of :mod:`refsnn._checks`.
"""
from __future__ import annotations

import numpy as np

from refsnn._checks import check_array, check_float

_MAX_OVERLAP_WORK = 1 << 16


def check_bool(name: str, v) -> bool:
    """A Python or NumPy bool (not an int, not an array)."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
    return bool(v)


def check_out(name: str, a, shape, dtype, *, finite: bool = False) -> np.ndarray:
    """An array the kernel writes: exactly ``shape`` and ``dtype``, C-contiguous, writeable."""
    dtype = np.dtype(dtype)
    check_array(name, a, dtypes=(dtype,), shape=tuple(shape), finite=finite)
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array (it is written in place), "
                         f"got strides {a.strides}")
    if not a.flags.writeable:
        raise ValueError(f"{name}: expected a writeable array (it is written in place), got a read-only one")
    return a


def overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` share memory (exactly for the usual cases; "yes" when undecidable)."""
    if a.size == 0 or b.size == 0 or not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=_MAX_OVERLAP_WORK))
    except np.exceptions.TooHardError:
        return True


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """``a`` and ``b`` are the same memory with the same layout (an allowed in-place form)."""
    return (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def check_disjoint(written: dict, read: dict, *, same_ok: tuple = ()) -> None:
    """No array of ``written`` (name -> array) overlaps another written one or any of ``read``.

    ``same_ok`` lists ``(written_name, read_name)`` pairs that may be the very same array (an
    in-place form the kernel supports); a partial overlap is refused for them too.
    """
    wn = list(written)
    for i, n in enumerate(wn):
        a = written[n]
        for m in wn[i + 1:]:
            if overlaps(a, written[m]):
                raise ValueError(f"{n}: shares memory with {m} (both are outputs); pass separate arrays")
        for m, b in read.items():
            if b is None or not overlaps(a, b):
                continue
            if (n, m) in same_ok and same_array(a, b):
                continue
            raise ValueError(f"{n}: shares memory with the input {m}; pass a separate output array")


def initial_state(name: str, v, x: np.ndarray, default: float) -> np.ndarray:
    """An initial state (``v0``, ``i0``) for a time-major ``x`` of shape ``[T, ...]``, as the flat
    C-contiguous ``[N]`` array (``N`` = product of ``x.shape[1:]``, in ``x``'s dtype) the kernels read.

    ``v`` may be ``None`` (every neuron at ``default``), a Python real number, or an array of ``x``'s
    dtype whose shape broadcasts to one time step ``x.shape[1:]``; it must be finite in that dtype.
    """
    step = x.shape[1:]
    n = int(np.prod(step, dtype=np.int64))
    dt = x.dtype.type
    if v is None or isinstance(v, (int, float)) and not isinstance(v, (bool, np.bool_)):
        val = default if v is None else v
        if v is not None:
            check_float(name, val)
        with np.errstate(over="ignore"):
            out = np.full(n, dt(val), dtype=x.dtype)
        if n and not np.isfinite(out[0]):
            raise ValueError(f"{name}: expected a value finite in {x.dtype}, got {val}")
        return out
    if not isinstance(v, np.ndarray):
        raise TypeError(f"{name}: expected None, a real number or a numpy.ndarray, got {type(v).__name__}")
    check_array(name, v, dtypes=(x.dtype,), finite=True)
    try:
        b = np.broadcast_to(v, step)
    except ValueError:
        raise ValueError(f"{name}: expected a shape that broadcasts to one time step {step}, "
                         f"got {v.shape}") from None
    return np.ascontiguousarray(b).reshape(n)
