"""Call every Numba kernel once on tiny inputs, in float32 and float64.

Used by ``refsnn bench`` to measure cold start (empty Numba cache: everything compiles) and warm
start (cache populated: everything loads), and handy to pre-compile after installing. Every kernel
module registers a ``_warmup()`` function in WARMUPS.
"""
from __future__ import annotations

import importlib

WARMUPS = [
    "refsnn.kernels.lif:_warmup",
    "refsnn.kernels.norse_lif:_warmup",
    "refsnn.kernels.conv:_warmup",
    "refsnn.kernels.conv_sparse:_warmup",
    "refsnn.kernels.pool:_warmup",
    "refsnn.kernels.batchnorm:_warmup",
    "refsnn.kernels.rectify:_warmup",
    "refsnn.kernels.cuba:_warmup",
    "refsnn.kernels.cuba_bptt:_warmup",
    "refsnn.nas.bie:_warmup",
    "refsnn.datasets.events:_warmup",
    "refsnn.datasets.saccades:_warmup",
]


def warmup() -> None:
    for target in WARMUPS:
        modname, fname = target.split(":")
        getattr(importlib.import_module(modname), fname)()


if __name__ == "__main__":
    warmup()
