"""Thread counts of the two thread pools a training step uses: BLAS (GEMMs) and Numba (LIF).

On a small shared machine, a multithreaded OpenBLAS GEMM whose threads get descheduled by other
processes can be many times slower than a single-threaded one (its threads wait for each other),
so ``refsnn train --threads N`` sets both pools explicitly. Setting the BLAS thread count at run time
has no portable API; :func:`set_blas_threads` looks for the ``*set_num_threads*`` entry points of
the OpenBLAS library NumPy loaded (NumPy wheels bundle ``scipy_openblas``) and returns False when it
finds none (the environment variable ``OPENBLAS_NUM_THREADS``, set before Python starts, always
works). What holds for results: the Numba kernels do not reduce across threads, so their results do
not depend on the Numba thread count; OpenBLAS's GEMM may split its sums differently for a different
BLAS thread count, so a training run is bit-identical for a given ``--threads`` (and BLAS build),
not across thread counts (SPEC §1).
"""
from __future__ import annotations

import ctypes
import glob
import os

import numba
import numpy as np

from refsnn._checks import check_int

__all__ = ["set_threads", "set_blas_threads", "get_blas_threads", "threads"]

_SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET_SYMBOLS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                "openblas_get_num_threads64_", "openblas_get_num_threads")


def _blas_libs():
    here = os.path.dirname(np.__file__)
    pats = [os.path.join(here, "..", "numpy.libs", "*openblas*"), os.path.join(here, ".libs", "*openblas*"),
            os.path.join(here, "..", "scipy_openblas*", "lib", "*openblas*")]
    for pat in pats:
        for path in sorted(glob.glob(pat)):
            if ".so" in path or path.endswith((".dylib", ".dll")):
                yield path


def _blas_fn(symbols):
    for path in _blas_libs():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in symbols:
            fn = getattr(lib, sym, None)
            if fn is not None:
                return fn
    return None


def set_blas_threads(n: int) -> bool:
    """Set OpenBLAS's thread count in this process; True if an entry point was found."""
    n = check_int("threads", n, lo=1)
    fn = _blas_fn(_SYMBOLS)
    if fn is None:
        return False
    fn(ctypes.c_int(n))
    return True


def get_blas_threads() -> int | None:
    """OpenBLAS's current thread count, or None if it cannot be queried."""
    fn = _blas_fn(_GET_SYMBOLS)
    if fn is None:
        return None
    fn.restype = ctypes.c_int
    return int(fn())


def set_threads(n: int) -> bool:
    """Use ``n`` threads for BLAS and for Numba's parallel kernels (``n`` capped at Numba's maximum)."""
    n = check_int("threads", n, lo=1)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return set_blas_threads(n)


class threads:
    """Context manager: ``with threads(1): ...`` runs with ``n`` BLAS + Numba threads, then restores."""

    def __init__(self, n: int):
        self.n = check_int("threads", n, lo=1)

    def __enter__(self):
        self._numba = numba.get_num_threads()
        self._blas = get_blas_threads()
        set_threads(self.n)
        return self

    def __exit__(self, *exc):
        numba.set_num_threads(self._numba)
        if self._blas is not None:
            set_blas_threads(self._blas)
        return False
