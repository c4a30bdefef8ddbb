"""SPEC §6.2 motifs, pruning and §6.3 macro skeleton: exact decoded graphs of hand-written genotypes."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from strategies import nas_flat_genotypes

from refsnn.nas import graph as GR
from refsnn.nas.genotype import Genotype, canonical
from refsnn.nas.motifs import MOTIFS, edge_sign, population_type, prune_cell

S = settings(max_examples=60, deadline=None)

# SPEC §6.2 table, verbatim.
TABLE = {
    0: ("empty", [], ["in"]),
    1: ("FE", ["in->E1", "E1->E2"], ["E2"]),
    2: ("FI", ["in->I1", "in->E1", "I1->E1"], ["E1"]),
    3: ("FbI", ["in->E1", "E1->I1", "E1->E2", "I1->E2"], ["E2"]),
    4: ("LI", ["in->E1", "in->E2", "E1->I1", "E2->I1", "E1->E3", "I1->E3", "E2->E4", "I1->E4"], ["E3", "E4"]),
    5: ("MI", ["in->E1", "in->E2", "E1->I1", "E2->I2", "E1->E3", "I2->E3", "E2->E4", "I1->E4"], ["E3", "E4"]),
}


def one_cell(m, ops, g1=1, g2=1):
    ops = tuple(ops) + (0,) * (8 - len(ops))
    return Genotype(((m, ops),), g1, g2)


def motif_edges(graph, cell=1):
    return [(e["src"].split(".")[1], e["dst"].split(".")[1], e["kernel"], e["sign"], e["gene"], e["relu"])
            for e in graph["edges"] if e["kind"] == "motif" and e["cell"] == cell]


def test_motif_table_exact():
    for m, (name, edges, outputs) in TABLE.items():
        mot = MOTIFS[m]
        assert mot.index == m and mot.name == name
        assert [f"{s}->{d}" for s, d in mot.edges] == edges
        assert list(mot.outputs) == outputs
        # populations are topologically ordered and cover every edge endpoint
        pos = {p: i for i, p in enumerate(mot.populations)}
        assert mot.populations[0] == "in"
        assert all(pos[s] < pos[d] for s, d in mot.edges)
        assert set(pos) == {"in"} | {p for e in mot.edges for p in e}
    assert population_type("in") == "E" and population_type("I2") == "I" and edge_sign("I1") == -1


@pytest.mark.parametrize("m", range(6))
@pytest.mark.parametrize("op", [1, 2])
def test_every_motif_full_graph(m, op):
    """All edges present with kernel 3 (op 1) or 5 (op 2): exact edges, signs, kernels, outputs."""
    name, edges, outputs = TABLE[m]
    gr = GR.decode(one_cell(m, [op] * 8), (3, 8, 8), 4, 10)
    GR.check_graph(gr)
    got = motif_edges(gr)
    want = []
    for k, e in enumerate(edges):
        s, d = e.split("->")
        want.append((s, d, 3 if op == 1 else 5, -1 if s.startswith("I") else 1, 1 + k, True))
    # edges are grouped by destination in topological order, gene order within a destination
    assert sorted(got, key=lambda t: t[4]) == want
    cell = gr["cells"][0]
    assert cell["motif"] == name and cell["outputs"] == [f"c1.{o}" for o in outputs]
    assert cell["identity"] == (m == 0)
    if len(outputs) == 2:
        assert cell["output"] == "c1.out" and cell["out_channels"] == 8
        node = next(n for n in gr["nodes"] if n["name"] == "c1.out")
        assert node["op"] == "concat" and node["inputs"] == ["c1.E3", "c1.E4"]
    else:
        assert cell["output"] == f"c1.{outputs[0]}" and cell["out_channels"] == 4
    lif = [n["name"] for n in gr["nodes"] if n["op"] == "lif"]
    assert lif == [f"c1.{p}" for p in MOTIFS[m].populations]
    for n in gr["nodes"]:
        if n["op"] == "lif":
            assert n["type"] == population_type(n["role"]) and n["channels"] == 4 and n["shape"] == [8, 8]
    for e in gr["edges"]:
        assert e["padding"] == e["kernel"] // 2 and e["stride"] == 1 and e["bn"] is True


def test_mixed_kernels_and_gene_indices():
    gr = GR.decode(Genotype(((1, (1,) * 8), (3, (2, 1, 2, 1, 0, 0, 0, 0))), 1, 1), (1, 8, 8), 2, 2)
    got = motif_edges(gr, cell=2)
    assert got == [("in", "E1", 5, 1, 10, True), ("E1", "I1", 3, 1, 11, True),
                   ("E1", "E2", 5, 1, 12, True), ("I1", "E2", 3, -1, 13, True)]


def test_pruning_rules():
    # FI without in->I1: I1 silent, its edge I1->E1 removed
    st = prune_cell(2, (0, 1, 1, 0, 0, 0, 0, 0))
    assert st.populations == ("in", "E1") and st.edges == (1,) and st.outputs == ("E1",)
    # FbI: E1->E2 absent, inhibition alone reaches E2 (E2 gets only -relu(...)): kept
    st = prune_cell(3, (1, 1, 0, 1))
    assert st.populations == ("in", "E1", "I1", "E2") and st.edges == (0, 1, 3)
    # LI without in->E1: E1 silent; I1 still driven by E2; E3 driven by I1 only
    st = prune_cell(4, (0, 1, 1, 1, 1, 1, 1, 1))
    assert "E1" not in st.populations and st.edges == (1, 3, 5, 6, 7) and st.outputs == ("E3", "E4")
    # LI: E3 unreachable (E1->E3, I1->E3 absent) -> single output E4
    st = prune_cell(4, (1, 1, 1, 1, 0, 0, 1, 1))
    assert st.outputs == ("E4",) and "E3" not in st.populations
    # backward pruning: MI I2 is a dead end when I2->E3 is absent and E3 otherwise live
    st = prune_cell(5, (1, 1, 1, 1, 1, 0, 1, 1))
    assert "I2" not in st.populations and 3 not in st.edges
    # iterative: in->E1 absent kills E1, then E2 (FE)
    st = prune_cell(1, (0, 1))
    assert st.identity and st.outputs == ("in",) and st.edges == ()


def test_all_outputs_pruned_cell_is_identity():
    g = Genotype(((4, (1, 1, 1, 1, 0, 0, 0, 0)), (1, (1, 1, 0, 0, 0, 0, 0, 0))), 1, 1)
    gr = GR.decode(g, (1, 8, 8), 2, 3)
    GR.check_graph(gr)
    c1 = gr["cells"][0]
    assert c1["identity"] and c1["motif"] == "empty" and c1["motif_gene"] == 4
    assert c1["output"] == "c1.in" and c1["populations"] == ["c1.in"]
    assert [e["name"] for e in gr["edges"] if e["cell"] == 1] == ["input->c1.in"]
    assert gr["cells"][1]["predecessors"] == ["c1.in"]
    assert gr["canonical_genotype"][:9] == [0] * 9


def test_stem_head_and_single_cell():
    gr = GR.decode(one_cell(1, [1, 2]), (3, 32, 32), 16, 10)
    GR.check_graph(gr)
    stem = gr["edges"][0]
    assert stem == {"name": "input->c1.in", "kind": "stem", "src": "input", "dst": "c1.in", "cell": 1,
                    "k": None, "gene": None, "pool": 0, "kernel": 3, "stride": 1, "padding": 1,
                    "in_channels": 3, "out_channels": 16, "bn": True, "relu": False, "sign": 1}
    names = [n["name"] for n in gr["nodes"]]
    assert names == ["input", "c1.in", "c1.E1", "c1.E2", "head.gap", "head.fc"]
    fc = gr["nodes"][-1]
    assert fc["op"] == "linear" and fc["in_features"] == 16 and fc["out_features"] == 10
    assert gr["nodes"][-2]["inputs"] == ["c1.E2"] and gr["output"] == "head.fc"
    assert gr["reductions"] == []
    assert gr["neuron"] == GR.DEFAULT_NEURON


@pytest.mark.parametrize("l,want", [(1, []), (2, [1]), (3, [1, 2]), (4, [1, 2]), (5, [1, 3]),
                                    (6, [2, 4]), (7, [2, 4]), (8, [2, 5]), (9, [3, 6])])
def test_reduction_positions(l, want):
    assert GR.reduction_cells(l) == want
    gr = GR.decode(Genotype(((1, (1,) * 8),) * l, 1, 1), (1, 16, 16), 4, 2)
    GR.check_graph(gr)
    stages = [c["stage"] for c in gr["cells"]]
    assert stages == [sum(r < i for r in want) for i in range(1, l + 1)]
    for c in gr["cells"]:
        assert c["channels"] == 4 * 2 ** c["stage"]
        assert c["shape"] == [16 >> c["stage"]] * 2
        assert c["reduction_after"] == (c["index"] in want)


def test_too_small_input_rejected():
    with pytest.raises(ValueError, match="input_shape"):
        GR.decode(Genotype(((1, (1,) * 8),) * 3, 1, 1), (1, 3, 3), 4, 2)
    with pytest.raises(ValueError, match="input_shape"):
        GR.decode(one_cell(1, [1, 1]), (1, 8), 4, 2)
    with pytest.raises(ValueError, match="channels"):
        GR.decode(one_cell(1, [1, 1]), (1, 8, 8), 0, 2)


def _cross(gr, cell):
    return [(e["src"], e["pool"], e["kernel"], e["in_channels"], e["out_channels"])
            for e in gr["edges"] if e["kind"] == "cross" and e["dst"] == f"c{cell}.in"]


# 4 cells: reductions after cells 1 and 2 -> stages 0, 1, 2, 2; C = 4.
# cell 1: FE (output c1.E2, 4 ch); cell 2: LI (c2.out, 2*8 ch); cell 3: FI (c3.E1, 16); cell 4: FE
FOUR = ((1, (1,) * 8), (4, (1,) * 8), (2, (1,) * 8), (1, (1,) * 8))


@pytest.mark.parametrize("g2,k", [(1, 1), (2, 3)])
def test_g1_chain(g2, k):
    gr = GR.decode(Genotype(FOUR, 1, g2), (1, 16, 16), 4, 2)
    GR.check_graph(gr)
    assert gr["cross_kernel"] == k
    assert _cross(gr, 1) == []
    assert _cross(gr, 2) == [("c1.E2", 1, k, 4, 8)]
    assert _cross(gr, 3) == [("c2.out", 1, k, 16, 16)]
    assert _cross(gr, 4) == [("c3.E1", 0, k, 16, 16)]


@pytest.mark.parametrize("g2,k", [(1, 1), (2, 3)])
def test_g1_last_two(g2, k):
    gr = GR.decode(Genotype(FOUR, 2, g2), (1, 16, 16), 4, 2)
    GR.check_graph(gr)
    assert _cross(gr, 2) == [("c1.in", 1, k, 4, 8), ("c1.E2", 1, k, 4, 8)]  # stem = cell 0
    assert _cross(gr, 3) == [("c1.E2", 2, k, 4, 16), ("c2.out", 1, k, 16, 16)]
    assert _cross(gr, 4) == [("c2.out", 1, k, 16, 16), ("c3.E1", 0, k, 16, 16)]
    assert gr["cells"][3]["predecessors"] == ["c2.out", "c3.E1"]


@pytest.mark.parametrize("g2,k", [(1, 1), (2, 3)])
def test_g1_all_earlier_and_stem(g2, k):
    gr = GR.decode(Genotype(FOUR, 3, g2), (1, 16, 16), 4, 2)
    GR.check_graph(gr)
    assert _cross(gr, 2) == [("c1.in", 1, k, 4, 8), ("c1.E2", 1, k, 4, 8)]
    assert _cross(gr, 3) == [("c1.in", 2, k, 4, 16), ("c1.E2", 2, k, 4, 16), ("c2.out", 1, k, 16, 16)]
    assert _cross(gr, 4) == [("c1.in", 2, k, 4, 16), ("c1.E2", 2, k, 4, 16), ("c2.out", 1, k, 16, 16),
                             ("c3.E1", 0, k, 16, 16)]
    for e in gr["edges"]:
        if e["kind"] == "cross":
            assert e["relu"] is False and e["sign"] == 1 and e["bn"] is True


def test_duplicate_sources_deduplicated():
    g = Genotype(((0, (0,) * 8), (1, (1,) * 8), (1, (1,) * 8)), 3, 1)
    gr = GR.decode(g, (1, 16, 16), 4, 2)
    GR.check_graph(gr)
    assert [s for s, *_ in _cross(gr, 2)] == ["c1.in"]  # stem and identity cell 1 are the same spikes
    assert [s for s, *_ in _cross(gr, 3)] == ["c1.in", "c2.E2"]


def test_stats_and_params():
    g = Genotype(((3, (1, 1, 1, 1, 0, 0, 0, 0)), (5, (1,) * 8), (2, (1, 1, 0, 0, 0, 0, 0, 0))), 1, 1)
    gr = GR.decode(g, (1, 16, 16), 4, 10)
    st = GR.graph_stats(gr)
    assert st == {**GR.ei_counts(g), **{k: st[k] for k in ("n_populations", "n_edges", "n_params",
                                                             "n_neurons_per_sample")}}
    pm = st["per_motif"]
    assert pm["FbI"] == {"cells": 1, "E": 3, "I": 1, "frac_inhibitory": 0.25}
    assert pm["MI"] == {"cells": 1, "E": 6, "I": 2, "frac_inhibitory": 0.25}
    assert pm["FI"] == {"cells": 1, "E": 1, "I": 0, "frac_inhibitory": 0.0}  # I1 dead end pruned
    assert pm["LI"]["frac_inhibitory"] is None
    assert st["n_E_edges"] == 10 and st["n_I_edges"] == 3
    assert st["n_populations"] == 4 + 7 + 2
    # params: stem 9*1*4 + 2*4; cell1 4 motif convs 9*16 + 8 each; ...; head 4*16*... computed by hand
    p = 9 * 1 * 4 + 8 + 4 * (9 * 16 + 8)
    p += (1 * 4 * 8 + 16) + 8 * (9 * 64 + 16)
    p += (1 * 16 * 16 + 32) + 1 * (9 * 256 + 32)
    p += 16 * 10 + 10
    assert st["n_params"] == p
    assert st["n_neurons_per_sample"] == 4 * 256 * 4 + 7 * 8 * 64 + 2 * 16 * 16


def test_to_json_deterministic_and_plain():
    g = Genotype(FOUR, 3, 2)
    a = GR.to_json(GR.decode(g, (1, 16, 16), 4, 2))
    b = GR.to_json(GR.decode(list(g.flat), [1, 16, 16], 4, 2))
    assert a == b
    obj = json.loads(a)
    assert obj["format"] == GR.FORMAT and obj["genotype"] == list(g.flat)
    assert GR.to_json(obj) == a


@S
@given(nas_flat_genotypes(1, 7))
def test_random_genotypes_decode_to_valid_graphs(flat):
    gr = GR.decode(flat, (2, 16, 12), 3, 5)
    GR.check_graph(gr)
    json.loads(GR.to_json(gr))
    lif = {n["name"] for n in gr["nodes"] if n["op"] == "lif"}
    # every non-input LIF node lies on a path to the head (backward pruning)
    needed = {gr["nodes"][-2]["inputs"][0]}
    for n in reversed(gr["nodes"]):
        if n["name"] in needed:
            needed.update(n.get("inputs", []))
            needed.update(e["src"] for e in gr["edges"] if e["dst"] == n["name"])
    assert lif <= needed
    assert GR.graph_stats(gr)["n_I_edges"] == GR.ei_counts(flat)["n_I_edges"]
    assert GR.decode(canonical(flat), (2, 16, 12), 3, 5)["nodes"] == gr["nodes"]


# ---------------------------------------------------------------------------------------------
# SPEC §2.1: the neuron of every genotype's graph and network
# ---------------------------------------------------------------------------------------------
def _effective(p):
    """LIFParams with the surrogate scale resolved (``alpha=None`` means the surrogate's default)."""
    from dataclasses import replace

    return replace(p, alpha=p.surrogate_alpha)


@S
@given(nas_flat_genotypes(max_cells=4))
def test_every_genotype_graph_and_network_uses_the_spec_neuron(flat):
    """Without an explicit neuron, the graph description (what other backends read) and the network
    built from it use SPEC §2.1's MSE-NAS neuron, ``PRESETS["msenas"]``: reset detached (BrainCog's
    ``mem * (1 - spike.detach())``), tau 2, threshold 0.5 with ``>``, triangle surrogate, alpha 2."""
    import numpy as np

    from refsnn.kernels.lif import PRESETS, LIFParams
    from refsnn.nas.network import build_genotype_network
    from refsnn.snn.archs import lif_params_from_dict
    from refsnn.snn.layers import LIF

    spec = _effective(PRESETS["msenas"])
    assert spec.detach_reset is True
    gr = GR.decode(flat, (1, 8, 8), 4, 10)
    assert gr["neuron"]["detach_reset"] is True
    assert _effective(lif_params_from_dict(gr["neuron"])) == spec
    # the JSON the graph is written as says the same
    assert json.loads(GR.to_json(gr))["neuron"] == gr["neuron"]
    net = build_genotype_network(flat, input_shape=(1, 8, 8), num_classes=10, timesteps=2,
                                 rng=np.random.default_rng(0), channels=4)
    lifs = [n.layer for n in net.nodes.values() if isinstance(n.layer, LIF)]
    assert lifs and all(isinstance(x.lif, LIFParams) and _effective(x.lif) == spec for x in lifs)
