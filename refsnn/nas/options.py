"""The MSE-NAS objects a search's options describe (the options of ``refsnn nas``, :mod:`refsnn.commands.nas`).

:func:`make_fitness` maps the option names of a search (``fitness``, ``data``, ``channels``,
``timesteps``, ``fitness_batch``, ``fitness_batches``, ``seed``, ``max_neurons``) to the
:class:`refsnn.nas.fitness.NASFitness` the search scores genotypes with, so that the command and the
examples that re-score genotypes (e.g. ``examples/nas_budget_comparison.py``) build the same fitness
from the same options. Any object with those attributes will do (``NASConfig``, an example's config).
"""
from __future__ import annotations

from refsnn.nas.fitness import NASFitness

__all__ = ["make_fitness"]


def make_fitness(options) -> NASFitness:
    """The search's fitness (picklable, so process pools can score it): ``kind = options.fitness``, j =
    ``options.fitness_batch`` images in s = ``options.fitness_batches`` batches of ``options.data``
    drawn with ``options.seed``, the untrained network of width ``options.channels`` over
    ``options.timesteps`` steps, and the resource cap ``options.max_neurons`` (0 or ``None``: none)."""
    return NASFitness(kind=options.fitness, data=options.data, channels=options.channels,
                      timesteps=options.timesteps, batch_size=options.fitness_batch,
                      n_batches=options.fitness_batches, data_seed=options.seed,
                      max_neurons=options.max_neurons or None)
