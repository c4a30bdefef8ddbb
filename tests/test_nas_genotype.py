"""SPEC §6.1 genotype (seed eq. 2) and the §6.5 genetic operators."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import nas_flat_genotypes, rng_from, seeds

from refsnn.nas import genotype as G
from refsnn.nas.graph import decode
from refsnn.nas.graph import to_json as graph_json
from refsnn.nas.motifs import MOTIFS

S = settings(max_examples=60, deadline=None)


def _strip(graph):
    """Graph without the fields that record the genotype as given (``genotype``, cells'
    ``motif_gene``), which legitimately differ between equivalent genotypes."""
    graph = dict(graph)
    graph.pop("genotype")
    graph["cells"] = [{k: v for k, v in c.items() if k != "motif_gene"} for c in graph["cells"]]
    return graph_json(graph)


def test_lengths_and_allowed_values():
    assert G.B == 8 and G.GENES_PER_CELL == 9
    assert [G.genotype_length(n) for n in (1, 2, 3)] == [11, 20, 29]
    assert G.n_cells_of(29) == 3
    for bad in (0, 10, 12, 28):
        with pytest.raises(ValueError, match="length"):
            G.n_cells_of(bad)
    L = G.genotype_length(2)
    assert G.allowed_values(0, L) == (0, 1, 2, 3, 4, 5)
    assert G.allowed_values(9, L) == (0, 1, 2, 3, 4, 5)
    assert G.allowed_values(1, L) == (0, 1, 2) and G.allowed_values(17, L) == (0, 1, 2)
    assert G.allowed_values(18, L) == (1, 2, 3)
    assert G.allowed_values(19, L) == (1, 2)


def test_validate_errors_name_the_gene():
    good = [1, 1, 2] + [0] * 6 + [2, 1]
    assert G.validate(good) == tuple(good)
    assert G.validate(np.array(good, dtype=np.int64)) == tuple(good)
    with pytest.raises(ValueError, match=r"genotype\[0\] \(m_1.*expected one of \(0, 1, 2, 3, 4, 5\), got 6"):
        G.validate([6] + good[1:])
    with pytest.raises(ValueError, match=r"genotype\[2\] \(x_1\^2.*\(0, 1, 2\), got 3"):
        G.validate(good[:2] + [3] + good[3:])
    with pytest.raises(ValueError, match=r"genotype\[9\] \(g_1.*\(1, 2, 3\), got 0"):
        G.validate(good[:9] + [0, 1])
    with pytest.raises(ValueError, match=r"genotype\[10\] \(g_2.*\(1, 2\), got 3"):
        G.validate(good[:10] + [3])
    with pytest.raises(ValueError, match="length"):
        G.validate(good[:-1])
    with pytest.raises(TypeError, match=r"genotype\[1\]"):
        G.validate([1, 1.0] + good[2:])
    with pytest.raises(TypeError, match=r"genotype\[1\]"):
        G.validate([1, True] + good[2:])
    with pytest.raises(TypeError, match="genotype"):
        G.validate("12345678901")
    with pytest.raises(TypeError, match="integer array"):
        G.validate(np.array(good, dtype=float))
    with pytest.raises(ValueError, match=r"cells\[0\]"):
        G.Genotype(((1, (1, 1)),), 1, 1)


@S
@given(nas_flat_genotypes())
def test_flat_and_json_round_trip(flat):
    g = G.Genotype.from_flat(flat)
    assert g.flat == flat and len(g) == len(flat) and g.n_cells == G.n_cells_of(len(flat))
    assert G.from_json(G.to_json(g)) == g
    assert G.from_json(json.dumps(list(flat))) == g
    obj = json.loads(G.to_json(g))
    del obj["flat"]
    assert G.from_json(obj) == g
    assert G.to_json(g) == G.to_json(G.Genotype.from_flat(list(flat)))  # deterministic
    assert G.Genotype(g.cells, g.g1, g.g2) == g


def test_from_json_rejects_inconsistent_and_foreign():
    g = G.Genotype.from_flat([1, 1, 2] + [0] * 6 + [2, 1])
    obj = json.loads(G.to_json(g))
    obj["g1"] = 3
    with pytest.raises(ValueError, match="different"):
        G.from_json(obj)
    obj = json.loads(G.to_json(g))
    obj["format"] = "something/9"
    with pytest.raises(ValueError, match="format"):
        G.from_json(obj)
    with pytest.raises(ValueError, match="m_1"):
        G.from_json("[7, 1, 2, 0, 0, 0, 0, 0, 0, 2, 1]")


@S
@given(seeds, st.integers(1, 6))
def test_random_genotype_is_valid_and_seeded(seed, n):
    a = G.random_genotype(rng_from(seed), n)
    b = G.random_genotype(rng_from(seed), n)
    assert a == b and a.n_cells == n
    G.validate(a.flat)


def test_random_genotype_covers_all_values():
    rng = rng_from(3)
    flats = np.array([G.random_genotype(rng, 2).flat for _ in range(300)])
    L = flats.shape[1]
    for i in range(L):
        assert set(flats[:, i].tolist()) == set(G.allowed_values(i, L))


@S
@given(nas_flat_genotypes(), seeds, st.floats(0, 1))
def test_crossover_two_point(flat_a, seed, rate):
    rng = rng_from(seed)
    flat_b = G.random_genotype(rng, G.n_cells_of(len(flat_a))).flat
    ca, cb = G.crossover(flat_a, flat_b, rng, rate=rate)
    a, b, x, y = map(np.array, (flat_a, flat_b, ca.flat, cb.flat))
    # each position: the children hold the parents' two genes, swapped or not
    assert np.all(((x == a) & (y == b)) | ((x == b) & (y == a)))
    # swapped positions (where parents differ) form one contiguous segment
    swapped = np.flatnonzero((a != b) & (x == b))
    if swapped.size:
        lo, hi = swapped.min(), swapped.max()
        seg = np.arange(lo, hi + 1)
        assert np.all((x[seg] == b[seg]))
    G.validate(ca.flat)
    G.validate(cb.flat)


def test_crossover_rate_zero_copies_and_rate_one_swaps():
    rng = rng_from(0)
    a = G.random_genotype(rng, 3)
    b = G.random_genotype(rng, 3)
    assert G.crossover(a, b, rng, rate=0.0) == (a, b)
    changed = 0
    for _ in range(50):
        ca, cb = G.crossover(a, b, rng, rate=1.0)
        changed += ca != a
        assert {ca.flat, cb.flat} != set() and sorted(ca.flat + cb.flat) == sorted(a.flat + b.flat)
    assert changed > 30
    with pytest.raises(ValueError, match="b: expected a genotype of length"):
        G.crossover(a, G.random_genotype(rng, 2), rng)
    with pytest.raises(ValueError, match="rate"):
        G.crossover(a, b, rng, rate=1.5)


@S
@given(nas_flat_genotypes(), seeds)
def test_mutation_stays_valid_and_changes_value(flat, seed):
    rng = rng_from(seed)
    m = G.mutate(flat, rng, rate=1.0)  # every gene mutated to a *different* valid value
    G.validate(m.flat)
    assert all(x != y for x, y in zip(m.flat, flat))
    assert G.mutate(flat, rng, rate=0.0).flat == flat
    d = G.mutate(flat, rng)  # default 1/len
    G.validate(d.flat)


def test_mutation_default_rate_is_one_over_length():
    rng = rng_from(1)
    g = G.random_genotype(rng, 4)
    diffs = [sum(x != y for x, y in zip(g.flat, G.mutate(g, rng).flat)) for _ in range(3000)]
    assert abs(np.mean(diffs) - 1.0) < 0.08


def test_mutation_value_distribution_uniform_over_others():
    rng = rng_from(2)
    g = G.Genotype.from_flat([0] * 9 + [1, 1])
    vals = [G.mutate(g, rng, rate=1.0).flat[0] for _ in range(2500)]
    counts = np.bincount(vals, minlength=6)
    assert counts[0] == 0 and np.all(np.abs(counts[1:] / 2500 - 0.2) < 0.03)


@S
@given(nas_flat_genotypes(), seeds)
def test_noncoding_genes_do_not_change_graph(flat, seed):
    """Randomising the narrow non-coding genes (SPEC §6.1) changes neither the canonical form nor
    the decoded graph; canonical form decodes to the same graph and is idempotent."""
    rng = rng_from(seed)
    mask = G.noncoding_mask(flat)
    L = len(flat)
    other = tuple(int(rng.choice(G.allowed_values(i, L))) if mask[i] else v for i, v in enumerate(flat))
    c = G.canonical(flat)
    assert G.canonical(other) == c
    assert G.canonical(c) == c
    gr = decode(flat, (2, 8, 8), 4, 3)
    assert _strip(gr) == _strip(decode(other, (2, 8, 8), 4, 3))
    assert _strip(gr) == _strip(decode(c, (2, 8, 8), 4, 3))
    # canonical zeroes all non-coding genes
    assert all(c.flat[i] == 0 for i in range(L) if G.noncoding_mask(c)[i])


def test_canonical_rules():
    # FE with edge 0 absent: E1 silent -> E2 silent -> identity cell -> m = 0, ops zero
    g = G.Genotype(((1, (0, 2, 1, 1, 1, 1, 1, 1)), (2, (1, 2, 1, 2, 2, 2, 2, 2))), 3, 2)
    c = G.canonical(g)
    assert c.cells[0] == (0, (0,) * 8)
    assert c.cells[1] == (2, (1, 2, 1, 0, 0, 0, 0, 0))
    assert c.g1 == 2 and c.g2 == 2  # g1 = 3 equals g1 = 2 for two cells
    one = G.Genotype(((3, (1, 1, 1, 1, 0, 0, 0, 0)),), 3, 2)
    assert G.canonical(one).g1 == 1 and G.canonical(one).g2 == 1
    three = G.Genotype(((1, (1, 1, 0, 0, 0, 0, 0, 0)),) * 3, 3, 2)
    assert G.canonical(three).g1 == 3 and G.canonical(three).g2 == 2
    # FbI with dead-end inhibition: E1->I1 present but I1->E2 absent -> edge 1 zeroed
    f = G.Genotype(((3, (1, 2, 1, 0, 0, 0, 0, 0)),), 1, 1)
    assert G.canonical(f).cells[0] == (3, (1, 0, 1, 0, 0, 0, 0, 0))


def test_genotype_str_and_motif_table_consistency():
    g = G.Genotype(((4, (1,) * 8), (0, (0,) * 8)), 1, 2)
    assert str(g) == "[LI(11111111) empty() | g1=1 g2=2]"
    assert G.B == max(m.n_edges for m in MOTIFS)
