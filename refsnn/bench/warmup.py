"""Whole-package warm-up: import refsnn's data sets and algorithms and compile (or load from the Numba
cache) every kernel they run, then call their kernel-backed entry points once on tiny inputs.

``refsnn bench`` times this in a fresh interpreter for its cold start (empty Numba cache: everything
compiles) and warm start (cache populated: everything loads), :func:`refsnn.bench.timing.startup_seconds`.
Its imports are ordinary import statements, so the import contract (``lint-imports``) sees what it
depends on; the kernels alone are warmed by :func:`refsnn.kernels.warmup.warmup`.
"""
from __future__ import annotations

import numpy as np

from refsnn.datasets import events_to_frames, make_events
from refsnn.datasets.saccades import saccade_events
from refsnn.kernels.warmup import warmup as warmup_kernels
from refsnn.nas.bie import manhattan_matrix

__all__ = ["warmup"]


def warmup() -> None:
    """:func:`refsnn.kernels.warmup.warmup`, then the data-set and NAS entry points over those kernels."""
    warmup_kernels()
    manhattan_matrix(np.zeros((2, 3), dtype=np.int64))
    events_to_frames(make_events([0, 1], [0, 1], [0, 5], [0, 1]), (2, 2), 2)
    img = np.zeros((2, 28, 28), np.uint8)
    img[:, 10:18, 12:16] = 255
    img.flags.writeable = False  # as mnist5k's cached images
    saccade_events(img)


if __name__ == "__main__":
    warmup()
