"""Call every Numba kernel of :mod:`refsnn.kernels` once on tiny inputs, in float32 and float64.

Handy to pre-compile after installing (``python -m refsnn.kernels.warmup``). Every kernel module
has a ``_warmup()`` function; :data:`WARMUPS` lists them all (every Numba kernel of refsnn lives in
this package). ``refsnn bench`` measures cold and warm start with the whole-package warm-up
:func:`refsnn.bench.warmup.warmup`, which calls this one.
"""
from __future__ import annotations

from refsnn.kernels import (
    batchnorm,
    conv,
    conv_sparse,
    cuba,
    cuba_bptt,
    events,
    lif,
    manhattan,
    norse_lif,
    pool,
    rectify,
)

__all__ = ["WARMUPS", "warmup"]

WARMUPS = [lif._warmup, norse_lif._warmup, conv._warmup, conv_sparse._warmup, pool._warmup, batchnorm._warmup,
           rectify._warmup, cuba._warmup, cuba_bptt._warmup, manhattan._warmup, events._warmup]


def warmup() -> None:
    """Compile (or load from the Numba cache) every kernel of :mod:`refsnn.kernels`."""
    for fn in WARMUPS:
        fn()


if __name__ == "__main__":
    warmup()
