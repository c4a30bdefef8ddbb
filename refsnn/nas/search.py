"""Evolutionary search over MSE-NAS genotypes as an ask/tell strategy (SPEC §6.5; the seed's
"tournament selection, crossover, mutation, 80 generations" with the BIE fitness of eqs. 3-7
supplied by the caller).

The strategy (evosax's shape) never evaluates anything and reads or writes no file; the caller
scores what it asks for::

    s = EvolutionarySearch(SearchConfig(n_cells=6, generations=80, seed=1))
    while not s.done():
        asked = s.ask()                                   # the genotypes that need a fitness
        record = s.tell(evaluate(fitness, asked, executor))  # completes the generation
    state = s.state_dict()                                # JSON-ready; from_state(state) resumes

The search **maximises** a fitness ``fitness(genotype, seed) -> float``: ``genotype`` is the
*canonical* flat tuple of ints (:func:`refsnn.nas.genotype.canonical`; equal networks get equal
calls), ``seed`` a non-negative int (< 2**63) derived from the canonical genotype and the run seed
(:func:`genotype_seed`), so a stochastic fitness (random initial weights, random batches) is a
deterministic function of its arguments. For the seed's BIE minimisation use
``refsnn.nas.bie.bie_fitness(..., direction="min")``, which returns ``-score``. A NaN fitness is
treated as invalid and stored as ``-inf`` (the worst value).

Algorithm (generation 0 = random initial population; generations 1..G):

1. *Initial population*: genotypes from :func:`~refsnn.nas.genotype.random_genotype`, rejecting a
   genotype whose canonical form is already present (at most ``max_attempts * population_size``
   draws; after that duplicates are accepted -- only possible in tiny search spaces).
2. *Each generation*: rank the population by fitness (descending; ties keep the earlier position);
   the ``n_elites`` best survive unchanged (elitism) and come first. Offspring are produced in
   pairs until the population is full: two parents by tournament selection (``tournament_size``
   distinct individuals drawn uniformly, the fittest wins, ties to the earlier position), two-point
   crossover with probability ``crossover_rate`` (0.9), then per-gene mutation of both children
   (rate ``mutation_rate``, default ``1/len``). A child whose canonical form is already in the new
   population is discarded (duplicate removal), again up to ``max_attempts * population_size``
   children per generation. The population keeps the raw genotypes (their non-coding genes carry
   hidden variation); canonical forms are used as keys only.
3. *Evaluation*: the fitness of each canonical genotype is computed once per run (cache keyed by
   the canonical genotype, kept in the state). :meth:`EvolutionarySearch.ask` returns an
   :class:`Asked`: the new population's canonical genotypes not yet cached, in order of first
   appearance, with their seeds; :meth:`EvolutionarySearch.tell` takes one fitness per asked
   genotype, in that order. :func:`evaluate` computes them as ``executor.map(fitness, genotypes,
   seeds)`` (in-process without an executor; a process pool needs a picklable, module-level
   ``fitness``).

Determinism: all randomness is drawn in :meth:`~EvolutionarySearch.ask` from
``default_rng(SeedSequence(seed, spawn_key=(generation,)))``, a fresh generator per generation
(asking twice gives the same population), and fitnesses are matched to genotypes by position, so
the run is bit-identical however the caller evaluates (any executor or worker count), and a search
rebuilt by :meth:`~EvolutionarySearch.from_state` from a saved :meth:`~EvolutionarySearch.state_dict`
reproduces the uninterrupted run exactly (tested), including its history.

Per-generation record (returned by ``tell`` and appended to ``history``; printed by a command as one
progress line): ``generation``, ``best_fitness``, ``mean_fitness`` (over the finite fitnesses;
``None`` if there is none), ``n_invalid`` (non-finite fitnesses), ``best_genotype`` (flat list, this
generation's best), ``best_so_far_fitness``, ``best_so_far_genotype`` (canonical, over all
evaluations), ``n_unique`` (distinct canonical genotypes in the population), ``n_evaluated`` (new
fitness calls), ``n_cached`` (cache size), ``ei`` (E/I edge counts over the population's motif
edges, :func:`refsnn.nas.graph.ei_counts` summed: ``n_E_edges``, ``n_I_edges``,
``frac_inhibitory``, ``per_motif`` {name: {cells, E, I, frac_inhibitory}}). Non-finite fitness
values are written as the strings ``"inf"``/``"-inf"`` in the state.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from .._checks import check_float, check_int
from .genotype import Genotype, as_genotype, canonical, crossover, genotype_length, mutate, random_genotype
from .graph import ei_counts, finish_ei_table
from .motifs import MOTIF_NAMES

__all__ = ["SearchConfig", "SearchResult", "Asked", "EvolutionarySearch", "evaluate", "run_search",
           "genotype_seed", "motif_count_fitness", "STATE_FORMAT"]

STATE_FORMAT = "refsnn.msenas.search/1"


@dataclass(frozen=True)
class SearchConfig:
    """Hyperparameters (SPEC §6.5 defaults where given; population 20 and 2 elites are refsnn's CPU
    defaults -- the released code used NSGA-II with a population of 50)."""

    n_cells: int = 6
    population_size: int = 20
    generations: int = 80
    tournament_size: int = 2
    crossover_rate: float = 0.9
    mutation_rate: float | None = None  # None: 1 / genotype length
    n_elites: int = 2
    seed: int = 0
    max_attempts: int = 20

    def __post_init__(self):
        check_int("n_cells", self.n_cells, lo=1)
        check_int("population_size", self.population_size, lo=2)
        check_int("generations", self.generations, lo=0)
        check_int("tournament_size", self.tournament_size, lo=1, hi=self.population_size)
        check_float("crossover_rate", self.crossover_rate, lo=0.0, hi=1.0)
        if self.mutation_rate is not None:
            check_float("mutation_rate", self.mutation_rate, lo=0.0, hi=1.0)
        check_int("n_elites", self.n_elites, lo=0, hi=self.population_size - 1)
        check_int("seed", self.seed, lo=0)
        check_int("max_attempts", self.max_attempts, lo=1)


@dataclass
class SearchResult:
    best_genotype: Genotype  # canonical
    best_fitness: float
    history: list = field(default_factory=list)
    n_evaluations: int = 0


@dataclass(frozen=True)
class Asked:
    """What one generation needs scored: the canonical genotypes of the new population that have no
    cached fitness (order of first appearance, no repeats) and their :func:`genotype_seed` seeds."""

    generation: int
    genotypes: tuple[tuple[int, ...], ...]
    seeds: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.genotypes)


def genotype_seed(genotype, run_seed: int) -> int:
    """Integer seed in ``[0, 2**63)`` for evaluating ``genotype`` in run ``run_seed``: the first
    8 bytes of SHA-256 of ``"refsnn-nas|{run_seed}|{g_1},{g_2},..."`` over the canonical flat vector
    (stable across processes, platforms and Python versions)."""
    flat = canonical(genotype).flat
    run_seed = check_int("run_seed", run_seed, lo=0)
    msg = f"refsnn-nas|{run_seed}|" + ",".join(map(str, flat))
    return int.from_bytes(hashlib.sha256(msg.encode()).digest()[:8], "little") & (2**63 - 1)


def motif_count_fitness(genotype, seed: int, motif: int = 4) -> float:
    """Cheap synthetic fitness for tests and demos: the number of cells whose canonical motif is
    ``motif`` (default LI), plus a tiny seed-dependent tie-breaker ``1e-3 * (seed % 997) / 997``."""
    cg = canonical(genotype)
    return float(sum(1 for m, _ in cg.cells if m == motif)) + 1e-3 * (seed % 997) / 997


def evaluate(fitness: Callable[[tuple, int], float], asked: Asked, executor: cf.Executor | None = None) -> list:
    """``[fitness(g, seed) for g, seed in asked]``, through ``executor.map`` if given (results in the
    asked order whatever the executor, so the search does not depend on it)."""
    if not callable(fitness):
        raise TypeError(f"fitness: expected a callable fitness(genotype, seed), got {type(fitness).__name__}")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(f"executor: expected a concurrent.futures.Executor, got {type(executor).__name__}")
    if executor is None:
        return [fitness(g, s) for g, s in zip(asked.genotypes, asked.seeds)]
    return list(executor.map(fitness, asked.genotypes, asked.seeds))


def _enc(f: float):
    return f if math.isfinite(f) else ("nan" if math.isnan(f) else ("inf" if f > 0 else "-inf"))


def _dec(v) -> float:
    return float(v)  # float("inf"), float("-inf") parse the strings written by _enc


class EvolutionarySearch:
    """The search as an ask/tell strategy (module docstring): ``ask()`` the genotypes to score,
    ``tell(fitnesses)`` to complete the generation. Holds the population, the fitness cache and the
    history; no fitness function, no executor, no files."""

    def __init__(self, config: SearchConfig = SearchConfig()):
        if not isinstance(config, SearchConfig):
            raise TypeError(f"config: expected a SearchConfig, got {type(config).__name__}")
        self.config = config
        self.generation = -1  # last completed generation
        self.population: list[tuple[int, ...]] = []
        self.fitnesses: list[float] = []
        self.cache: dict[tuple[int, ...], float] = {}
        self.history: list[dict] = []
        self._pending: tuple[list[tuple[int, ...]], Asked] | None = None  # (new population, asked)

    # -- randomness -------------------------------------------------------------------------
    def _rng(self, generation: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.config.seed, spawn_key=(generation,)))

    @property
    def _mutation_rate(self) -> float:
        c = self.config
        return 1.0 / genotype_length(c.n_cells) if c.mutation_rate is None else c.mutation_rate

    # -- ask ----------------------------------------------------------------------------------
    def ask(self) -> Asked:
        """The next generation's genotypes that need a fitness (generation 0: the random initial
        population; then elitism, tournaments, crossover, mutation, dedup). Does not complete the
        generation; asking again before :meth:`tell` returns the same :class:`Asked`."""
        if self._pending is None:
            gen = self.generation + 1
            pop = self._initial_population() if gen == 0 else self._offspring(gen)
            todo: list[tuple[int, ...]] = []
            seen = set()
            for g in pop:
                k = canonical(g).flat
                if k not in self.cache and k not in seen:
                    seen.add(k)
                    todo.append(k)
            seeds = tuple(genotype_seed(k, self.config.seed) for k in todo)
            self._pending = (pop, Asked(gen, tuple(todo), seeds))
        return self._pending[1]

    def _initial_population(self) -> list[tuple[int, ...]]:
        c = self.config
        rng = self._rng(0)
        pop, keys = [], set()
        attempts = 0
        while len(pop) < c.population_size:
            g = random_genotype(rng, c.n_cells)
            attempts += 1
            k = canonical(g).flat
            if k in keys and attempts <= c.max_attempts * c.population_size:
                continue
            keys.add(k)
            pop.append(g.flat)
        return pop

    def _tournament(self, rng: np.random.Generator) -> int:
        idx = sorted(int(i) for i in rng.choice(len(self.population), size=self.config.tournament_size,
                                                replace=False))
        best = idx[0]
        for i in idx[1:]:
            if self.fitnesses[i] > self.fitnesses[best]:
                best = i
        return best

    def _offspring(self, gen: int) -> list[tuple[int, ...]]:
        c = self.config
        rng = self._rng(gen)
        n = len(self.population)
        order = sorted(range(n), key=lambda i: (-self.fitnesses[i], i))
        new = [self.population[i] for i in order[:c.n_elites]]
        keys = {canonical(g).flat for g in new}
        attempts = 0
        mrate = self._mutation_rate
        while len(new) < c.population_size:
            p1, p2 = self._tournament(rng), self._tournament(rng)
            kids = crossover(self.population[p1], self.population[p2], rng, c.crossover_rate)
            kids = [mutate(kid, rng, mrate) for kid in kids]
            for kid in kids:
                if len(new) >= c.population_size:
                    break
                attempts += 1
                k = canonical(kid).flat
                if k in keys and attempts <= c.max_attempts * c.population_size:
                    continue
                keys.add(k)
                new.append(kid.flat)
        return new

    # -- tell ---------------------------------------------------------------------------------
    def tell(self, fitnesses: Sequence) -> dict:
        """Complete the asked generation with one fitness per asked genotype (in :class:`Asked`
        order; NaN is stored as ``-inf``); returns the generation's record (also appended to
        ``history``)."""
        if self._pending is None:
            raise RuntimeError("tell: call ask() first")
        pop, asked = self._pending
        fitnesses = list(fitnesses)
        if len(fitnesses) != len(asked):
            raise ValueError(f"fitnesses: expected {len(asked)} values (one per asked genotype), got {len(fitnesses)}")
        values = []
        for k, f in zip(asked.genotypes, fitnesses):
            if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, float, np.integer, np.floating)):
                raise TypeError(f"fitness: expected a real number for genotype {list(k)}, got {type(f).__name__}")
            f = float(f)
            values.append(float("-inf") if math.isnan(f) else f)
        self.cache.update(zip(asked.genotypes, values))
        self.population = pop
        self.fitnesses = [self.cache[canonical(g).flat] for g in pop]
        self.generation = asked.generation
        self._pending = None
        rec = self._record(len(asked))
        self.history.append(rec)
        return rec

    def _record(self, n_evaluated: int) -> dict:
        fit = self.fitnesses
        finite = [f for f in fit if math.isfinite(f)]
        ib = max(range(len(fit)), key=lambda i: (fit[i], -i))
        best_k, best_f = self.best()
        ei = _sum_ei([ei_counts(g) for g in self.population])
        return {
            "generation": self.generation,
            "best_fitness": fit[ib],
            "mean_fitness": (math.fsum(finite) / len(finite)) if finite else None,
            "n_invalid": len(fit) - len(finite),
            "best_genotype": list(self.population[ib]),
            "best_so_far_fitness": best_f,
            "best_so_far_genotype": list(best_k),
            "n_unique": len({canonical(g).flat for g in self.population}),
            "n_evaluated": n_evaluated,
            "n_cached": len(self.cache),
            "ei": ei,
        }

    # -- results ------------------------------------------------------------------------------
    def best(self) -> tuple[tuple[int, ...], float]:
        """Best canonical genotype over every evaluation so far (ties: first evaluated) and its fitness."""
        if not self.cache:
            raise RuntimeError("best: nothing evaluated yet")
        best_k, best_f = None, None
        for k, f in self.cache.items():
            if best_f is None or f > best_f:
                best_k, best_f = k, f
        return best_k, best_f

    def top(self, k: int) -> list[tuple[tuple[int, ...], float]]:
        """The ``k`` fittest canonical genotypes with a finite fitness, best first (ties: first
        evaluated, as :meth:`best`), with their fitnesses; fewer if fewer were evaluated."""
        finite = [(key, f) for key, f in self.cache.items() if math.isfinite(f)]
        return sorted(finite, key=lambda kf: -kf[1])[:k]  # stable: evaluation order breaks ties

    def done(self) -> bool:
        """Whether ``config.generations`` generations (after generation 0) are complete."""
        return self.generation >= self.config.generations

    def result(self) -> SearchResult:
        """The best genotype over every evaluation, its fitness, the history and the number of
        fitness calls."""
        k, f = self.best()
        return SearchResult(Genotype.from_flat(k), f, list(self.history), len(self.cache))

    def run(self, fitness: Callable[[tuple, int], float], *, executor: cf.Executor | None = None,
            on_generation: Callable[[dict], None] | None = None) -> SearchResult:
        """Convenience loop: ask, :func:`evaluate`, tell until :meth:`done` (continuing a search
        rebuilt from a state), calling ``on_generation(record)`` after each generation."""
        while not self.done():
            rec = self.tell(evaluate(fitness, self.ask(), executor))
            if on_generation is not None:
                on_generation(rec)
        return self.result()

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-serialisable state of the completed generations (strict JSON: non-finite fitness
        values as strings). A generation asked but not told is not part of it."""
        hist = []
        for r in self.history:
            r = dict(r)
            r["best_fitness"] = _enc(r["best_fitness"])
            r["best_so_far_fitness"] = _enc(r["best_so_far_fitness"])
            hist.append(r)
        return {
            "format": STATE_FORMAT,
            "config": asdict(self.config),
            "generation": self.generation,
            "population": [list(g) for g in self.population],
            "fitness": [_enc(f) for f in self.fitnesses],
            "cache": [[list(k), _enc(f)] for k, f in self.cache.items()],
            "history": hist,
        }

    @classmethod
    def from_state(cls, state: dict, *, generations: int | None = None) -> "EvolutionarySearch":
        """Rebuild a search from :meth:`state_dict`; ``generations`` may extend (or shorten) the
        run; every other setting comes from the state."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"state: expected a search state of format {STATE_FORMAT!r}")
        try:
            config = SearchConfig(**state["config"])
            if generations is not None:
                config = replace(config, generations=generations)
            s = cls(config)
            s.generation = int(state["generation"])
            s.population = [tuple(as_genotype(g).flat) for g in state["population"]]
            s.fitnesses = [_dec(f) for f in state["fitness"]]
            s.cache = {tuple(as_genotype(k).flat): _dec(f) for k, f in state["cache"]}
            hist = []
            for r in state["history"]:
                r = dict(r)
                r["best_fitness"] = _dec(r["best_fitness"])
                r["best_so_far_fitness"] = _dec(r["best_so_far_fitness"])
                hist.append(r)
            s.history = hist
        except (KeyError, TypeError) as e:
            raise ValueError(f"state: malformed search state ({type(e).__name__}: {e})") from None
        if len(s.population) != len(s.fitnesses):
            raise ValueError("state: population and fitness lengths differ")
        return s


def _sum_ei(tables: list[dict]) -> dict:
    per = {name: {"cells": 0, "E": 0, "I": 0, "frac_inhibitory": None} for name in MOTIF_NAMES}
    for t in tables:
        for name, row in t["per_motif"].items():
            for key in ("cells", "E", "I"):
                per[name][key] += row[key]
    return finish_ei_table(per)


def run_search(fitness, config: SearchConfig = SearchConfig(), *, executor: cf.Executor | None = None,
               on_generation=None) -> SearchResult:
    """Convenience: a fresh search run to completion (:meth:`EvolutionarySearch.run`)."""
    return EvolutionarySearch(config).run(fitness, executor=executor, on_generation=on_generation)
