"""SPEC §6.5 evolutionary search: improvement, caching, dedup, determinism across executors, resume."""
from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from refsnn.nas.genotype import canonical, validate
from refsnn.parallel import InlineExecutor
from refsnn.nas.search import (EvolutionarySearch, SearchConfig, genotype_seed,
                               motif_count_fitness, run_search)

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


def test_cache_and_seeds():
    f = Counting()
    s = EvolutionarySearch(f, CFG)
    r = s.run()
    keys = [g for g, _ in f.calls]
    assert len(keys) == len(set(keys)) == len(s.cache) == r.n_evaluations
    for g, seed in f.calls:
        assert isinstance(g, tuple) and all(type(x) is int for x in g)
        assert canonical(g).flat == g  # fitness sees canonical genotypes
        assert seed == genotype_seed(g, CFG.seed) and 0 <= seed < 2**63
    assert sum(x["n_evaluated"] for x in r.history) == len(keys)
    assert genotype_seed(keys[0], 1) != genotype_seed(keys[0], 2)


def test_deterministic_across_executors():
    ref = EvolutionarySearch(motif_count_fitness, CFG)
    ref.run()
    with ProcessPoolExecutor(max_workers=2) as ex:
        par = EvolutionarySearch(motif_count_fitness, CFG, executor=ex)
        par.run()
    with ThreadPoolExecutor(max_workers=2) as ex:
        thr = EvolutionarySearch(motif_count_fitness, CFG, executor=ex)
        thr.run()
    assert par.state_dict() == ref.state_dict() == thr.state_dict()
    other = EvolutionarySearch(motif_count_fitness, SearchConfig(**{**CFG.__dict__, "seed": 8}))
    other.run()
    assert other.state_dict()["population"] != ref.state_dict()["population"]


def test_resume_equals_uninterrupted(tmp_path):
    ref = EvolutionarySearch(motif_count_fitness, CFG)
    ref_result = ref.run()

    ck = tmp_path / "state.json"

    class Stop(Exception):
        pass

    def stop_at_5(rec):
        if rec["generation"] == 5:
            raise Stop

    s = EvolutionarySearch(motif_count_fitness, CFG)
    with pytest.raises(Stop):
        s.run(on_generation=stop_at_5, checkpoint=ck)
    loaded = EvolutionarySearch.load(ck, motif_count_fitness)
    assert loaded.generation == 5
    got = loaded.run(checkpoint=ck)
    assert loaded.state_dict() == ref.state_dict()
    assert got.best_genotype == ref_result.best_genotype and got.best_fitness == ref_result.best_fitness
    assert _strict(ck.read_text()) == ref.state_dict()
    # extending a finished run == running longer from the start
    short = EvolutionarySearch(motif_count_fitness, SearchConfig(**{**CFG.__dict__, "generations": 6}))
    short.run(checkpoint=ck)
    r2 = run_search(motif_count_fitness, CFG, resume=ck)
    assert r2.history == ref_result.history
    with pytest.raises(ValueError, match="config"):
        run_search(motif_count_fitness, SearchConfig(**{**CFG.__dict__, "seed": 99}), resume=ck)


def test_invalid_fitness_values_and_strict_json(tmp_path):
    def half_invalid(g, seed):
        return float("nan") if seed % 2 else float(sum(g))

    s = EvolutionarySearch(half_invalid, SearchConfig(n_cells=2, population_size=8, generations=2, seed=1))
    r = s.run(checkpoint=tmp_path / "s.json")
    assert any(math.isinf(f) and f < 0 for f in s.cache.values())
    assert all(not math.isnan(f) for f in s.cache.values())
    assert r.history[0]["n_invalid"] > 0
    state = _strict((tmp_path / "s.json").read_text())
    assert "-inf" in state["fitness"] or any(c[1] == "-inf" for c in state["cache"])
    again = EvolutionarySearch.from_state(state, half_invalid)
    assert again.state_dict() == s.state_dict()


def test_bad_arguments():
    with pytest.raises(ValueError, match="population_size"):
        SearchConfig(population_size=1)
    with pytest.raises(ValueError, match="n_elites"):
        SearchConfig(population_size=4, n_elites=4)
    with pytest.raises(ValueError, match="crossover_rate"):
        SearchConfig(crossover_rate=2.0)
    with pytest.raises(TypeError, match="fitness"):
        EvolutionarySearch(3, CFG)
    with pytest.raises(TypeError, match="executor"):
        EvolutionarySearch(motif_count_fitness, CFG, executor=object())
    with pytest.raises(ValueError, match="state"):
        EvolutionarySearch.from_state({"format": "x"}, motif_count_fitness)
    s = EvolutionarySearch(lambda g, seed: "good", CFG)
    with pytest.raises(TypeError, match="real number"):
        s.run()
    with pytest.raises(RuntimeError, match="initialize"):
        EvolutionarySearch(motif_count_fitness, CFG).step()


def test_inline_executor_propagates_errors():
    def boom(g, seed):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        EvolutionarySearch(boom, CFG, executor=InlineExecutor()).run()


def test_tiny_search_space_does_not_hang():
    r = run_search(motif_count_fitness, SearchConfig(n_cells=1, population_size=60, generations=2, seed=0))
    assert len(r.history) == 3
