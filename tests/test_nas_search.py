"""SPEC §6.5 evolutionary search as ask/tell: improvement, caching, dedup, determinism across executors,
resume from a state, bit-identity with the pre-ask/tell search; the finalist stage's choice."""
from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from refsnn.nas.finalists import FinalistStage, choose
from refsnn.nas.genotype import Genotype, canonical, random_genotype, validate
from refsnn.nas.search import (
    Asked,
    EvolutionarySearch,
    SearchConfig,
    evaluate,
    genotype_seed,
    motif_count_fitness,
    run_search,
)
from refsnn.parallel import InlineExecutor

CFG = SearchConfig(n_cells=4, population_size=12, generations=12, seed=7)


def _strict(text):
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")
    return json.loads(text, parse_constant=bad)


class Counting:
    def __init__(self, fn=motif_count_fitness):
        self.fn, self.calls = fn, []

    def __call__(self, g, seed):
        self.calls.append((g, seed))
        return self.fn(g, seed)


def _drive(s: EvolutionarySearch, fitness, executor=None, *, until=None) -> EvolutionarySearch:
    """The caller's loop: ask, evaluate, tell."""
    while not s.done() and (until is None or s.generation < until):
        s.tell(evaluate(fitness, s.ask(), executor))
    return s


def _third_invalid(g, seed):
    return float("nan") if seed % 3 == 0 else motif_count_fitness(g, seed)


# sha256 of json.dumps(state_dict(), sort_keys=True) and top(3) of the search as it was before the
# ask/tell split (initialize() + step() with the executor inside), on two settings
REFERENCE = [
    (CFG, motif_count_fitness, "9aaf45dfabdc244746cb3c6e0bd0881c8863a2437111a91a3d5ece294bc1ed76",
     [3.0009799398194583, 3.000923771313942, 3.000922768304915]),
    (SearchConfig(n_cells=3, population_size=10, generations=8, seed=2, n_elites=1, tournament_size=3), _third_invalid,
     "75fe92d0079d746d99e694480b508fb7cdf4c63e6231fee2597d802fb65980b7",
     [1.000976930792377, 1.0009588766298896, 1.000913741223671]),
]


@pytest.mark.parametrize("case", range(len(REFERENCE)))
def test_ask_tell_equals_the_former_step_loop(case):
    cfg, fitness, digest, top3 = REFERENCE[case]
    s = _drive(EvolutionarySearch(cfg), fitness)
    assert hashlib.sha256(json.dumps(s.state_dict(), sort_keys=True).encode()).hexdigest() == digest
    assert [f for _, f in s.top(3)] == top3


def test_evolution_improves_synthetic_fitness():
    r = run_search(motif_count_fitness, SearchConfig(n_cells=5, population_size=16, generations=25, seed=3))
    h = r.history
    assert [x["generation"] for x in h] == list(range(26))
    assert h[-1]["mean_fitness"] > h[0]["mean_fitness"] + 1.0
    assert r.best_fitness >= 4.0  # at least 4 of 5 cells LI
    assert r.best_genotype == canonical(r.best_genotype)
    # elitism: the population's best never gets worse
    best = [x["best_fitness"] for x in h]
    assert all(b2 >= b1 for b1, b2 in zip(best, best[1:]))
    for x in h:
        assert x["n_unique"] == 16  # duplicates removed
        validate(x["best_genotype"])
        ei = x["ei"]
        assert ei["n_E_edges"] + ei["n_I_edges"] == sum(v["E"] + v["I"] for v in ei["per_motif"].values())


def test_ask_is_repeatable_and_tell_completes_the_generation():
    s = EvolutionarySearch(CFG)
    a = s.ask()
    assert isinstance(a, Asked) and a.generation == 0 and s.generation == -1 and s.ask() == a
    assert len(a) == len(set(a.genotypes)) <= CFG.population_size
    assert all(canonical(g).flat == g for g in a.genotypes)
    assert list(a.seeds) == [genotype_seed(g, CFG.seed) for g in a.genotypes]
    rec = s.tell(evaluate(motif_count_fitness, a))
    assert rec["generation"] == s.generation == 0 and s.history == [rec] and rec["n_evaluated"] == len(a)
    assert len(s.population) == CFG.population_size and len(s.cache) == len(a)
    a1 = s.ask()
    assert a1.generation == 1 and not set(a1.genotypes) & set(s.cache)  # cached genotypes are not asked again
    with pytest.raises(RuntimeError, match="ask"):
        EvolutionarySearch(CFG).tell([])


def test_cache_and_seeds():
    f = Counting()
    s = EvolutionarySearch(CFG)
    r = s.run(f)
    keys = [g for g, _ in f.calls]
    assert len(keys) == len(set(keys)) == len(s.cache) == r.n_evaluations
    for g, seed in f.calls:
        assert isinstance(g, tuple) and all(type(x) is int for x in g)
        assert canonical(g).flat == g  # fitness sees canonical genotypes
        assert seed == genotype_seed(g, CFG.seed) and 0 <= seed < 2**63
    assert sum(x["n_evaluated"] for x in r.history) == len(keys)
    assert genotype_seed(keys[0], 1) != genotype_seed(keys[0], 2)


def test_deterministic_across_executors():
    ref = _drive(EvolutionarySearch(CFG), motif_count_fitness)
    with ProcessPoolExecutor(max_workers=2) as ex:
        par = _drive(EvolutionarySearch(CFG), motif_count_fitness, ex)
    with ThreadPoolExecutor(max_workers=2) as ex:
        thr = EvolutionarySearch(CFG)
        thr.run(motif_count_fitness, executor=ex)
    inl = _drive(EvolutionarySearch(CFG), motif_count_fitness, InlineExecutor())
    assert par.state_dict() == ref.state_dict() == thr.state_dict() == inl.state_dict()
    assert par.top(5) == ref.top(5)
    other = _drive(EvolutionarySearch(SearchConfig(**{**CFG.__dict__, "seed": 8})), motif_count_fitness)
    assert other.state_dict()["population"] != ref.state_dict()["population"]


def test_resume_from_state_equals_uninterrupted():
    ref = _drive(EvolutionarySearch(CFG), motif_count_fitness)
    part = _drive(EvolutionarySearch(CFG), motif_count_fitness, until=5)
    part.ask()  # a generation asked but not told is not in the state
    state = _strict(json.dumps(part.state_dict()))
    loaded = EvolutionarySearch.from_state(state)
    assert loaded.generation == 5
    got = loaded.run(motif_count_fitness)
    assert loaded.state_dict() == ref.state_dict() and loaded.top(4) == ref.top(4)
    assert got.best_genotype == ref.result().best_genotype and got.history == ref.history
    # extending a finished run == running longer from the start
    short = _drive(EvolutionarySearch(SearchConfig(**{**CFG.__dict__, "generations": 6})), motif_count_fitness)
    longer = EvolutionarySearch.from_state(short.state_dict(), generations=CFG.generations)
    assert longer.config == CFG and longer.run(motif_count_fitness).history == ref.history


def test_invalid_fitness_values_and_strict_json():
    def half_invalid(g, seed):
        return float("nan") if seed % 2 else float(sum(g))

    s = EvolutionarySearch(SearchConfig(n_cells=2, population_size=8, generations=2, seed=1))
    r = s.run(half_invalid)
    assert any(math.isinf(f) and f < 0 for f in s.cache.values())
    assert all(not math.isnan(f) for f in s.cache.values())
    assert r.history[0]["n_invalid"] > 0
    state = _strict(json.dumps(s.state_dict()))
    assert "-inf" in state["fitness"] or any(c[1] == "-inf" for c in state["cache"])
    assert EvolutionarySearch.from_state(state).state_dict() == s.state_dict()


def test_bad_arguments():
    with pytest.raises(ValueError, match="population_size"):
        SearchConfig(population_size=1)
    with pytest.raises(ValueError, match="n_elites"):
        SearchConfig(population_size=4, n_elites=4)
    with pytest.raises(ValueError, match="crossover_rate"):
        SearchConfig(crossover_rate=2.0)
    with pytest.raises(TypeError, match="config"):
        EvolutionarySearch(motif_count_fitness)
    s = EvolutionarySearch(CFG)
    with pytest.raises(TypeError, match="fitness"):
        evaluate(3, s.ask())
    with pytest.raises(TypeError, match="executor"):
        evaluate(motif_count_fitness, s.ask(), object())
    with pytest.raises(ValueError, match="state"):
        EvolutionarySearch.from_state({"format": "x"})
    with pytest.raises(TypeError, match="real number"):
        s.tell(["good"] * len(s.ask()))
    with pytest.raises(ValueError, match="fitnesses: expected"):
        s.tell([1.0])
    assert s.generation == -1 and not s.cache  # a refused tell changes nothing
    with pytest.raises(TypeError, match="real number"):
        EvolutionarySearch(CFG).run(lambda g, seed: "good")


def test_evaluation_errors_propagate():
    def boom(g, seed):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        EvolutionarySearch(CFG).run(boom, executor=InlineExecutor())


def test_tiny_search_space_does_not_hang():
    r = run_search(motif_count_fitness, SearchConfig(n_cells=1, population_size=60, generations=2, seed=0))
    assert len(r.history) == 3


def test_search_top_is_fitness_order_without_invalid():
    s = EvolutionarySearch(CFG)
    s.cache = {(1,): 2.0, (2,): float("-inf"), (3,): 5.0, (4,): 2.0, (5,): 1.0}
    assert s.top(3) == [((3,), 5.0), ((1,), 2.0), ((4,), 2.0)]
    assert s.top(10)[-1] == ((5,), 1.0) and len(s.top(10)) == 4


def test_finalist_stage_ask_tell_and_tie_rule():
    s = _drive(EvolutionarySearch(CFG), motif_count_fitness)
    stage = FinalistStage.from_search(s, 4)
    asked = stage.ask()
    assert [g.flat for g in asked] == [g for g, _ in s.top(4)] and list(stage.fitnesses) == [f for _, f in s.top(4)]
    assert all(isinstance(g, Genotype) for g in asked)
    i, rows = stage.tell([0.5, 0.75, 0.75, 0.25])
    assert i == 1  # ties: the fitter (earlier rank)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4] and rows[1]["val_accuracy"] == 0.75
    assert rows[0]["genotype"] == str(asked[0]) and rows[2]["fitness"] == stage.fitnesses[2]
    assert stage.tell([0.1, 0.1, 0.1, 0.1])[0] == 0 and stage.tell([0, 0, 0, 1.0])[0] == 3
    assert choose([0.2, 0.9, 0.9]) == 1
    with pytest.raises(ValueError, match="val_accuracies: expected 4"):
        stage.tell([0.5])
    with pytest.raises(ValueError, match=r"finalist 2 .*\[0, 1\]"):
        stage.tell([0.5, float("nan"), 0.1, 0.1])
    # fewer genotypes evaluated than asked for: all of them; invalid ones never
    rng = np.random.default_rng(0)
    g, h = (canonical(random_genotype(rng, 4)) for _ in range(2))
    few = EvolutionarySearch(CFG)
    few.cache = {g.flat: 2.0, h.flat: float("-inf")}
    assert FinalistStage.from_search(few, 8).ask() == (g,)
    with pytest.raises(ValueError, match="distinct"):
        FinalistStage((g, g), (1.0, 0.5))
    with pytest.raises(ValueError, match="finite"):
        FinalistStage((g,), (float("-inf"),))
