"""The :class:`Case` record: one reference vector case (one call of one kernel or algorithm step on
small inputs drawn from a fixed seed), as built by the modules of :mod:`refsnn.vectors.cases`."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from refsnn.vectors.tolerances import tol_for

__all__ = ["ROOT_SEED", "Case"]

#: root of every case's seed: ``SeedSequence([ROOT_SEED, crc32(seed name)])``
ROOT_SEED = 20240607


@dataclass
class Case:
    """One reference vector case (see :mod:`refsnn.vectors`)."""

    name: str
    section: str
    equation: str
    description: str
    params: dict
    make_inputs: Callable[[np.random.Generator], dict]
    compute: Callable[[dict, dict], dict]
    #: output name -> tolerance; outputs not listed get :func:`tol_for` (exact for non-floats)
    tolerances: dict = field(default_factory=dict)
    #: optional second implementation (a NumPy oracle) that verify also compares
    oracle: Callable[[dict, dict], dict] | None = None
    #: name whose seed the inputs are drawn from (default: the case's own name); cases that share it
    #: describe the same data in different layouts
    seed_name: str | None = None

    def rng(self) -> np.random.Generator:
        key = (self.seed_name or self.name).encode()
        return np.random.default_rng(np.random.SeedSequence([ROOT_SEED, zlib.crc32(key)]))

    def inputs(self) -> dict:
        return {k: np.asarray(v, order="C") for k, v in self.make_inputs(self.rng()).items()}

    def outputs(self, inputs: dict) -> dict:
        return {k: np.asarray(v, order="C") for k, v in self.compute(self.params, inputs).items()}

    def tolerance(self, out_name: str, arr: np.ndarray) -> dict:
        return dict(self.tolerances.get(out_name) or tol_for(arr))
