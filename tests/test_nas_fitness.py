"""SPEC §6.4 on real data: the training-free fitness of a genotype (refsnn.nas.fitness)."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from refsnn.nas.bie import WORST_FITNESS
from refsnn.nas.fitness import NASFitness, fitness_batches
from refsnn.nas.genotype import Genotype
from refsnn.nas.graph import decode
from refsnn.nas.network import (
    build_genotype_network,
    lif_population_names,
    output_population_names,
    parse_genotype_arch,
    population_spikes,
)

# FI(112) FE(21), g1=2, g2=1 (the docs' example)
G = (2, 1, 1, 2, 0, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 2, 1)
SMALL = dict(channels=4, batch_size=8, n_batches=2)


def test_deterministic_for_a_seed():
    f = NASFitness(**SMALL)
    a, b = f(G, 123), f(G, 123)
    assert math.isfinite(a) and a < 0  # bie-min: -score
    assert a == b
    assert f(G, 124) != a  # other initial weights
    # a fresh object (as in a worker process) gives the same value
    g = pickle.loads(pickle.dumps(f))
    assert g == f and g(G, 123) == a


def test_kinds_and_details():
    d_min = NASFitness(kind="bie-min", **SMALL).details(G, 5)
    d_max = NASFitness(kind="bie-max", **SMALL).details(G, 5)
    d_ld = NASFitness(kind="logdet", **SMALL).details(G, 5)
    d_sa = NASFitness(kind="logdet-sa", **SMALL).details(G, 5)
    assert d_min["valid"] and d_max["valid"] and d_ld["valid"] and d_sa["valid"]
    assert d_min["fitness"] == -d_max["fitness"] == -d_min["score"]
    assert d_min["score"] == d_max["score"] > 0
    for d in (d_ld, d_sa):
        assert math.isfinite(d["fitness"]) and d["fitness"] == d["score"]
    assert d_sa["score"] != d_ld["score"]
    # same network and spikes for every kind
    assert d_min["firing_rate"] == d_ld["firing_rate"] == d_sa["firing_rate"]
    graph = decode(G, (1, 28, 28), 4, 10)
    n = sum(nd["channels"] * nd["shape"][0] * nd["shape"][1] for nd in graph["nodes"] if nd["op"] == "lif")
    assert d_min["n_neurons"] == n
    assert 1e-3 < d_min["firing_rate"] < 1


def test_logdet_sa_is_the_mean_over_batches(monkeypatch):
    import refsnn.nas.fitness as fitness
    from refsnn.nas.bie import logdet_sa_score

    seen = []

    def record(batch):
        seen.append(logdet_sa_score(batch))
        return seen[-1]

    monkeypatch.setattr(fitness, "logdet_sa_score", record)
    d = NASFitness(kind="logdet-sa", **SMALL).details(G, 5)
    assert len(seen) == SMALL["n_batches"]
    assert d["score"] == float(np.mean(seen)) == d["fitness"]


def test_silent_network_gets_worst_fitness():
    # a rate floor no network reaches: every kind reports the worst fitness
    for kind in ("bie-min", "bie-max", "logdet", "logdet-sa"):
        d = NASFitness(kind=kind, min_rate=0.99, **SMALL).details(G, 5)
        assert d["fitness"] == WORST_FITNESS and not d["valid"] and "rate" in d["reason"]


def test_silent_outputs_get_worst_fitness(monkeypatch):
    # silence the last cell's output population by making its LIF layer unable to fire
    import refsnn.snn.archs as archs
    from refsnn.kernels.lif import LIFParams

    orig = archs.from_graph

    def silent_out(graph, **kw):
        net = orig(graph, **kw)
        for name in output_population_names(graph):
            net[name].lif = LIFParams(v_th=1e9)
        return net

    monkeypatch.setattr(archs, "from_graph", silent_out)
    d = NASFitness(**SMALL).details(G, 5)
    assert d["fitness"] == WORST_FITNESS and d["reason"] == "output populations are silent"


def test_same_batches_for_every_genotype():
    a = fitness_batches("mnist5k", 4, 8, 2, 0)
    b = fitness_batches("mnist5k", 4, 8, 2, 0)
    assert a is b  # cached
    c = fitness_batches("mnist5k", 4, 8, 2, 1)
    assert not np.array_equal(a[3][0], c[3][0])
    with pytest.raises(ValueError, match="batch_size"):
        fitness_batches("mnist5k", 4, 4000, 2, 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        NASFitness(kind="bie")
    with pytest.raises(ValueError, match="batch_size"):
        NASFitness(batch_size=1)
    with pytest.raises(ValueError, match="genotype"):
        NASFitness(**SMALL)((1, 2, 3), 0)


def test_network_and_population_spikes(tmp_path):
    net = build_genotype_network(G, input_shape=(1, 8, 8), num_classes=10, timesteps=2,
                                 rng=np.random.default_rng(0), channels=4)
    names = lif_population_names(net.graph)
    assert names == net.lif_nodes()
    with pytest.raises(ValueError, match="no spikes"):
        population_spikes(net)
    x = np.ones((2, 3, 1, 8, 8), np.float32)
    net.forward(x)
    sp = population_spikes(net)
    assert list(sp) == names
    assert sp["c1.in"].shape == (2, 3, 4, 8, 8) and not sp["c1.in"].flags.writeable
    with pytest.raises(ValueError, match="not a LIF"):
        population_spikes(net, ["head.fc"])
    p = tmp_path / "g.json"
    p.write_text('{"flat": %s, "channels": 6}' % list(G))
    assert parse_genotype_arch(f"genotype:{p}") == (G, 6)
    assert parse_genotype_arch(f"genotype:{p}@12") == (G, 12)
    with pytest.raises(FileNotFoundError):
        parse_genotype_arch(f"genotype:{tmp_path / 'missing.json'}")
    assert Genotype.from_flat(G).flat == G


def test_neuron_cap():
    graph = decode(G, (1, 28, 28), 4, 10)
    n = sum(nd["channels"] * nd["shape"][0] * nd["shape"][1] for nd in graph["nodes"] if nd["op"] == "lif")
    d = NASFitness(max_neurons=n - 1, **SMALL).details(G, 5)
    assert d["fitness"] == WORST_FITNESS and "max_neurons" in d["reason"] and d["n_neurons"] == n
    assert NASFitness(max_neurons=n, **SMALL)(G, 5) == NASFitness(**SMALL)(G, 5)


def test_the_shared_scoring_workspace_changes_no_score():
    """Scored networks share one conv workspace (fitness._SCORING_WORKSPACE); a score does not depend
    on what was scored before it, or on whether the work arrays were reused at all."""
    import refsnn.nas.fitness as fitness_module

    f = NASFitness(kind="logdet", **SMALL)
    other = (1, 2, 2, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 0, 1, 1)
    first = f(G, 7)
    f(other, 3)
    again = f(G, 7)
    fitness_module._SCORING_WORKSPACE.clear()
    fresh = f(G, 7)
    assert first == again == fresh and math.isfinite(first)
    assert fitness_module._SCORING_WORKSPACE.nbytes > 0
