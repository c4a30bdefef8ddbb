"""The finalist stage of ``refsnn nas``: choose among the fittest genotypes by a short training
(SPEC §6.5 leaves the final choice open; the released MSE-NAS code trains every candidate).

The training-free fitness only narrows the space. The ``K`` fittest distinct genotypes of the search
(:meth:`refsnn.nas.search.EvolutionarySearch.top`, canonical, fittest first, ties in evaluation
order) are each trained briefly by the caller, scored by their accuracy on held-out *validation*
images (never the test split), and the most accurate one is kept; ties go to the fitter (the earlier
rank). As an ask/tell stage::

    stage = FinalistStage.from_search(search, k=8)
    genotypes = stage.ask()                    # train each of these (rank 1 = fittest first)
    index, rows = stage.tell(val_accuracies)   # one accuracy in [0, 1] per asked genotype

Nothing here trains, reads or writes files: the training is the trainer command's job (``refsnn nas``
runs the trainings through :mod:`refsnn.parallel` and writes ``finalists.csv``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .._checks import check_int
from .genotype import Genotype, canonical

__all__ = ["FinalistStage", "choose"]


def choose(val_accuracies: Sequence[float]) -> int:
    """Index of the highest validation accuracy; ties to the earliest (the fitter finalist)."""
    acc = [float(a) for a in val_accuracies]
    if not acc:
        raise ValueError("val_accuracies: no finalist to choose from")
    return max(range(len(acc)), key=lambda i: (acc[i], -i))


@dataclass(frozen=True)
class FinalistStage:
    """The finalists (canonical genotypes, fittest first) and their search fitnesses."""

    genotypes: tuple[Genotype, ...]
    fitnesses: tuple[float, ...]

    def __post_init__(self):
        if len(self.genotypes) != len(self.fitnesses):
            raise ValueError(f"fitnesses: expected {len(self.genotypes)} values, got {len(self.fitnesses)}")
        if not self.genotypes:
            raise ValueError("genotypes: at least one finalist is needed")
        keys = [canonical(g).flat for g in self.genotypes]
        if len(set(keys)) != len(keys):
            raise ValueError("genotypes: the finalists must be distinct networks")
        if any(not math.isfinite(f) for f in self.fitnesses):
            raise ValueError("fitnesses: a finalist needs a finite fitness")

    @classmethod
    def from_search(cls, search, k: int) -> "FinalistStage":
        """The ``k`` fittest distinct genotypes with a finite fitness of ``search`` (fewer if fewer
        were evaluated)."""
        k = check_int("k", k, lo=1)
        top = search.top(k)
        return cls(tuple(Genotype.from_flat(g) for g, _ in top), tuple(float(f) for _, f in top))

    def __len__(self) -> int:
        return len(self.genotypes)

    def ask(self) -> tuple[Genotype, ...]:
        """The genotypes to train, rank 1 (the fittest) first."""
        return self.genotypes

    def tell(self, val_accuracies: Sequence[float]) -> tuple[int, list[dict]]:
        """``(index of the kept finalist, rows)`` from one validation accuracy per asked genotype.
        ``rows[i]``: ``rank`` (1-based), ``genotype`` (its string form), ``fitness``, ``val_accuracy``."""
        acc = list(val_accuracies)
        if len(acc) != len(self):
            raise ValueError(f"val_accuracies: expected {len(self)} values (one per finalist), got {len(acc)}")
        for i, a in enumerate(acc):
            if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, float, np.integer, np.floating)) \
                    or not 0.0 <= float(a) <= 1.0:
                raise ValueError(f"val_accuracies: finalist {i + 1} has {a!r}, expected a number in [0, 1]")
        rows = [{"rank": i + 1, "genotype": str(g), "fitness": f, "val_accuracy": float(a)}
                for i, (g, f, a) in enumerate(zip(self.genotypes, self.fitnesses, acc))]
        return choose(acc), rows
