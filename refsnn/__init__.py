"""refsnn: reference NumPy/Numba implementation of two spiking-network papers.

* MSE-NAS (Pan et al., arXiv 2304.10749): multi-scale evolutionary architecture search for deep
  SNNs with the training-free BIE fitness, then STBP training.
* Evolving Connectivity (Wang et al., arXiv 2305.17650): recurrent SNNs whose 1-bit connections are
  Bernoulli samples of a probability matrix trained by natural evolution strategies.

The normative description is SPEC.md; every public function states its equation, shapes and dtypes.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenBLAS's idle worker threads spin for about 2^28 cycles (~0.1 s) after every BLAS call before
# they sleep, so with 2 threads on 2 cores they took the second core from the Numba kernels that run
# between the GEMMs: a csnn epoch at --threads 2 took 6.3 s, and 4.2 s with a timeout of 2^4 cycles
# (2026-12-05, refsnn.snn.threads). OpenBLAS reads this variable once, when NumPy (or SciPy) loads it,
# so it only acts if refsnn is imported first (as its command line is); a value already set is kept.
# refsnn.snn.threads.set_threads(n > 1) warns when NumPy came first without it.
_OPENBLAS_TIMEOUT_TOO_LATE = "numpy" in _sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in _os.environ
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
