"""Pairwise Manhattan (L1) distances of integer count vectors: BIE's difference matrix (seed eq. 5;
SPEC §6.4).

For ``j`` count vectors ``P[a]`` of length ``n`` (``P`` int64 ``(j, n)``)::

    D[a, b] = sum_z |P[a, z] - P[b, z]|                                        (seed eq. 5)

``D`` is int64 ``(j, j)``, symmetric with a zero diagonal, and exact (integer arithmetic; the caller
keeps ``n * max |P| < 2**63``). The Numba kernel computes each pair ``a < b`` once and mirrors it;
:func:`pairwise_manhattan_ref` is the broadcast NumPy form, equal to it bit for bit. The algorithm
using it (spike counts, the mean over batches, fitness) is :mod:`refsnn.nas.bie`.
"""
from __future__ import annotations

import numba
import numpy as np

from refsnn._checks import check_array

__all__ = ["pairwise_manhattan", "pairwise_manhattan_ref"]

_INT64 = (np.dtype(np.int64),)


def pairwise_manhattan_ref(P: np.ndarray) -> np.ndarray:
    """Oracle of :func:`pairwise_manhattan`: ``|P[:, None] - P[None]|`` summed over the last axis
    (int64, exact; memory ``j * j * n``)."""
    P = check_array("P", P, ndim=2, dtypes=_INT64)
    return np.abs(P[:, None, :] - P[None, :, :]).sum(axis=2, dtype=np.int64)


@numba.njit(cache=True)
def _manhattan_kernel(P, D):  # pragma: no cover - compiled
    j, n = P.shape
    for a in range(j):
        D[a, a] = 0
        for b in range(a + 1, j):
            acc = 0
            for z in range(n):
                d = P[a, z] - P[b, z]
                acc += d if d >= 0 else -d
            D[a, b] = acc
            D[b, a] = acc


def pairwise_manhattan(P: np.ndarray) -> np.ndarray:
    """Seed eq. 5 (module docstring): ``D[a, b] = sum_z |P[a, z] - P[b, z]|``.

    Parameters
    ----------
    P : int64 ``(j, n)``

    Returns
    -------
    D : int64 ``(j, j)``, symmetric, zero diagonal, exact.
    """
    P = np.ascontiguousarray(check_array("P", P, ndim=2, dtypes=_INT64))
    D = np.empty((P.shape[0], P.shape[0]), dtype=np.int64)
    _manhattan_kernel(P, D)
    return D


def _warmup() -> None:
    """Compile (or load from cache) the kernel."""
    pairwise_manhattan(np.zeros((2, 3), dtype=np.int64))
