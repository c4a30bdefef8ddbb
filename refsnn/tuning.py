"""Runtime tuning of the process: the thread counts of the two thread pools a training step uses,
BLAS (GEMMs) and Numba (every other kernel: LIF, the sparse convolution, im2col/col2im, BN, pooling,
each over images or channels), how their idle threads wait, and the one-thread setting of worker
processes (:func:`single_thread_worker`). Every command, benchmark and algorithm that tunes the
runtime imports it from here (a utility below every other layer).

On a small shared machine, a multithreaded OpenBLAS GEMM whose threads get descheduled by other
processes can be many times slower than a single-threaded one (its threads wait for each other),
so ``refsnn train --threads N`` sets both pools explicitly (by default to every core). Setting the
BLAS thread count at run time has no portable API; :func:`set_blas_threads` looks for the
``*set_num_threads*`` entry points of the OpenBLAS library NumPy loaded (NumPy wheels bundle
``scipy_openblas``) and returns False when it finds none (the environment variable
``OPENBLAS_NUM_THREADS``, set before Python starts, always works).

The two pools alternate many times per training step, and each library's idle threads spin for a
while before they sleep, on the very cores the other library's threads need next. With more than
one thread :func:`set_threads` shortens both spins (:func:`prefer_sleeping_blas_threads`,
:func:`prefer_sleeping_numba_threads`); together they took a csnn training epoch at 2 threads from
6.3 s to 3.0-3.4 s on 2 cores (2026-12-05; one thread: 5.5 s).

What holds for results: the Numba kernels never split a sum between threads, so their results do
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
from numba.np.ufunc import parallel as _numba_parallel

from refsnn._checks import check_int

__all__ = ["set_threads", "set_blas_threads", "get_blas_threads", "threads", "prefer_sleeping_numba_threads",
           "prefer_sleeping_blas_threads", "prefer_sleeping_threads", "blas_thread_timeouts", "BLAS_THREAD_TIMEOUT",
           "GOMP_SPIN_COUNT", "single_thread_worker"]

_SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET_SYMBOLS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                "openblas_get_num_threads64_", "openblas_get_num_threads")


def _blas_libs():
    """NumPy's OpenBLAS first, then SciPy's (a second copy: Numba's ``np.dot`` calls BLAS through
    SciPy, so a kernel's GEMM runs on SciPy's OpenBLAS and its own thread pool)."""
    here = os.path.dirname(np.__file__)
    pats = [os.path.join(here, "..", "numpy.libs", "*openblas*"), os.path.join(here, ".libs", "*openblas*"),
            os.path.join(here, "..", "scipy_openblas*", "lib", "*openblas*"),
            os.path.join(here, "..", "scipy.libs", "*openblas*"),
            os.path.join(here, "..", "scipy", ".libs", "*openblas*")]
    for pat in pats:
        for path in sorted(glob.glob(pat)):
            if ".so" in path or path.endswith((".dylib", ".dll")):
                yield path


def _cdll(path: str):
    """The loaded library at ``path`` (already loaded: the same handle), or None if it cannot be loaded."""
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


def _blas_fns(symbols):
    """The first of ``symbols`` in each OpenBLAS library found (NumPy's first)."""
    fns = []
    for path in _blas_libs():
        lib = _cdll(path)
        fn = next((getattr(lib, sym) for sym in symbols if getattr(lib, sym, None) is not None), None)
        if fn is not None:
            fns.append(fn)
    return fns


def set_blas_threads(n: int) -> bool:
    """Set the thread count of every OpenBLAS in this process (NumPy's and SciPy's); True if an
    entry point was found."""
    n = check_int("threads", n, lo=1)
    fns = _blas_fns(_SYMBOLS)
    for fn in fns:
        fn(ctypes.c_int(n))
    return bool(fns)


def get_blas_threads() -> int | None:
    """NumPy's OpenBLAS's current thread count, or None if it cannot be queried."""
    fns = _blas_fns(_GET_SYMBOLS)
    if not fns:
        return None
    fns[0].restype = ctypes.c_int
    return int(fns[0]())


#: ``GOMP_SPINCOUNT`` that :func:`prefer_sleeping_numba_threads` sets (spin iterations before sleeping)
GOMP_SPIN_COUNT = 1000


def prefer_sleeping_numba_threads() -> None:
    """Make Numba's idle OpenMP threads sleep after a few microseconds of spinning instead of GNU
    OpenMP's default (``GOMP_SPINCOUNT`` 300,000 iterations, far longer): spinning, they took the cores
    from OpenBLAS's threads in the GEMM that follows each parallel kernel. Sets ``GOMP_SPINCOUNT`` to
    :data:`GOMP_SPIN_COUNT` unless the user set it, before Numba starts its threads (OpenMP reads it
    then; left alone if Numba has already started them). A csnn training epoch at 2 threads, with the
    BLAS fix of :func:`prefer_sleeping_blas_threads` (2026-12-05, 2 cores, idle): 4.1 s with OpenMP's
    default spinning, 4.4 s with Numba's ``workqueue`` layer (its threads sleep, but each parallel
    launch costs ~80 us against ~1.5 us, and an epoch launches thousands), 3.3-3.4 s with this (1.5 us
    per launch). Numba's layer itself is not changed (``NUMBA_THREADING_LAYER`` decides)."""
    if not _numba_parallel._is_initialized:
        os.environ.setdefault("GOMP_SPINCOUNT", str(GOMP_SPIN_COUNT))


#: ``OPENBLAS_THREAD_TIMEOUT`` that :func:`prefer_sleeping_blas_threads` sets (2^4 cycles of spinning)
BLAS_THREAD_TIMEOUT = 4


def blas_thread_timeouts() -> list[int]:
    """The ``OPENBLAS_THREAD_TIMEOUT`` each OpenBLAS of the process has read (0: unset, the build's
    default of 2^28 cycles), NumPy's first; empty if none exposes it."""
    out = []
    for path in _blas_libs():
        fn = getattr(_cdll(path), "openblas_thread_timeout", None)
        if fn is not None:
            fn.restype = ctypes.c_uint
            out.append(int(fn()))
    return out


def prefer_sleeping_blas_threads() -> bool:
    """Make OpenBLAS's idle threads sleep almost at once instead of spinning for about 2^28 cycles
    (~0.1 s) after every BLAS call. With 2 threads on 2 cores the spinning thread took the second core
    from the Numba kernels that run between the GEMMs: a csnn training epoch at 2 threads took 6.3 s,
    and 4.2 s without the spinning (2026-12-05). OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` (log2 of
    the spin cycles) when it loads; this sets it to :data:`BLAS_THREAD_TIMEOUT` unless the user set
    it, and makes every OpenBLAS already loaded re-read it (``openblas_read_env``) and stop its threads
    (``blas_thread_shutdown_``, as OpenBLAS does before a ``fork``); its next multithreaded call
    starts them again with the new timeout. Returns True if every OpenBLAS found now uses the value
    in the environment. Results are unchanged (only idle threads are affected)."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", str(BLAS_THREAD_TIMEOUT))
    try:
        want = int(os.environ["OPENBLAS_THREAD_TIMEOUT"])
    except ValueError:
        return False
    ok = True
    for path in _blas_libs():
        lib = _cdll(path)
        get, read, stop = (getattr(lib, name, None) for name in
                           ("openblas_thread_timeout", "openblas_read_env", "blas_thread_shutdown_"))
        if get is None or read is None or stop is None:
            ok = False
            continue
        get.restype = ctypes.c_uint
        if get() != want:
            read()
            stop()
        ok = ok and get() == want
    return ok


def prefer_sleeping_threads() -> None:
    """Both: :func:`prefer_sleeping_numba_threads` and :func:`prefer_sleeping_blas_threads` (what every
    run with more than one thread wants)."""
    prefer_sleeping_numba_threads()
    prefer_sleeping_blas_threads()


def set_threads(n: int) -> bool:
    """Use ``n`` threads for BLAS and for Numba's parallel kernels (``n`` capped at Numba's maximum);
    for ``n > 1`` both kinds of idle threads sleep between kernels instead of spinning on the cores
    the other pool needs (:func:`prefer_sleeping_threads`)."""
    n = check_int("threads", n, lo=1)
    if n > 1:
        prefer_sleeping_threads()
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


def single_thread_worker() -> None:
    """One thread per worker process, for pools whose parallelism comes from processes (EC's
    rollout workers; mujoco is single-threaded): ``OMP_NUM_THREADS=1`` unless the user set it (read by
    OpenMP libraries loaded after this call) and one Numba thread."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    numba.set_num_threads(1)
