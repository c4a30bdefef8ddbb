"""SPEC §6.4 BIE (seed eqs. 3-7) and the NASWOT/SNASNet logdet score."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.nas import bie
from strategies import nas_counts, rng_from, seeds

S = settings(max_examples=80, deadline=None)


def spikes(seed, T=3, B=4, shapes=((2, 3, 3), (5,)), p=0.3, dtype=np.float32):
    rng = rng_from(seed)
    return {f"pop{i}": (rng.random((T, B) + s) < p).astype(dtype) for i, s in enumerate(shapes)}


def test_spike_counts_eq3():
    s = spikes(0)
    P = bie.spike_counts(s)
    assert P.dtype == np.int64 and P.shape == (4, 2 * 9 + 5)
    want = np.concatenate([s["pop0"].sum(0).reshape(4, -1), s["pop1"].sum(0)], axis=1)
    np.testing.assert_array_equal(P, want.astype(np.int64))
    # order of the mapping is the concatenation order; a list works too
    np.testing.assert_array_equal(bie.spike_counts([s["pop0"], s["pop1"]]), P)
    for dt in (np.float64, np.bool_, np.uint8):
        np.testing.assert_array_equal(bie.spike_counts({k: v.astype(dt) for k, v in s.items()}), P)


def test_spike_counts_bad_input():
    s = spikes(0)
    with pytest.raises(ValueError, match="0 or 1"):
        bie.spike_counts({"a": s["pop0"] * 2})
    with pytest.raises(ValueError, match=r"\[T, B\]"):
        bie.spike_counts({"a": s["pop0"], "b": s["pop1"][:, :2]})
    with pytest.raises(TypeError, match="dtype"):
        bie.spike_counts({"a": s["pop0"].astype(np.float16)})
    with pytest.raises(ValueError, match="no population"):
        bie.spike_counts({})
    with pytest.raises(TypeError, match="spikes_by_population"):
        bie.spike_counts(3)


@S
@given(nas_counts)
def test_manhattan_matches_oracle_and_properties(P):
    D = bie.manhattan_matrix(P)
    assert D.dtype == np.int64 and D.shape == (P.shape[0],) * 2
    np.testing.assert_array_equal(D, bie.manhattan_matrix_ref(P))
    direct = np.abs(P[:, None, :] - P[None, :, :]).sum(-1)
    np.testing.assert_array_equal(D, direct)
    np.testing.assert_array_equal(D, D.T)
    assert np.all(np.diag(D) == 0) and np.all(D >= 0)
    # triangle inequality: D[a, b] <= D[a, c] + D[c, b] for all c
    assert np.all(D[:, None, :] <= D[:, :, None] + D[None, :, :])


@S
@given(nas_counts, seeds)
def test_manhattan_permutation_equivariance_invariance(P, seed):
    rng = rng_from(seed)
    D = bie.manhattan_matrix(P)
    pb = rng.permutation(P.shape[0])
    pn = rng.permutation(P.shape[1])
    np.testing.assert_array_equal(bie.manhattan_matrix(P[pb]), D[np.ix_(pb, pb)])
    np.testing.assert_array_equal(bie.manhattan_matrix(P[:, pn]), D)


def test_manhattan_dtypes_and_errors():
    P = np.array([[0, 3, 1], [2, 0, 1]], dtype=np.uint8)  # unsigned: no wrap-around
    np.testing.assert_array_equal(bie.manhattan_matrix(P), [[0, 5], [5, 0]])
    with pytest.raises(TypeError, match="integer"):
        bie.manhattan_matrix(P.astype(np.float64))
    with pytest.raises(ValueError, match="shape"):
        bie.manhattan_matrix(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=">= 0"):
        bie.manhattan_matrix(-np.ones((2, 2), dtype=np.int64))


def test_bie_score_eq7_by_hand():
    P1 = np.array([[0, 0], [1, 2]])  # D = [[0,3],[3,0]] -> mean 1.5
    P2 = np.array([[1, 1], [1, 1], [4, 1]])  # D off-diag: 0, 3, 3 (x2) -> sum 12 / 9
    assert bie.bie_score([P1]) == 1.5
    assert bie.bie_score(P1) == 1.5
    assert math.isclose(bie.bie_score([P1, P2]), (1.5 + 12 / 9) / 2)
    with pytest.raises(ValueError, match="at least one"):
        bie.bie_score([])


def test_activity_guard_and_fitness_direction():
    batches = [spikes(1), spikes(2)]
    score = bie.bie_score([bie.spike_counts(b) for b in batches])
    assert score > 0
    assert bie.bie_fitness(batches, ["pop1"]) == -score
    assert bie.bie_fitness(batches, ["pop1"], direction="max") == score
    with pytest.raises(ValueError, match="direction"):
        bie.bie_fitness(batches, direction="up")
    silent = [{k: np.zeros_like(v) for k, v in b.items()} for b in batches]
    assert bie.check_activity(silent)[0] is False
    assert bie.bie_fitness(silent) == bie.WORST_FITNESS == float("-inf")
    # active network, silent output population -> invalid
    quiet_out = [dict(b, pop1=np.zeros_like(b["pop1"])) for b in batches]
    ok, why = bie.check_activity(quiet_out, ["pop1"])
    assert not ok and "output" in why
    assert bie.bie_fitness(quiet_out, ["pop1"]) == bie.WORST_FITNESS
    assert bie.bie_fitness(quiet_out, ["pop0"]) > bie.WORST_FITNESS
    # rate just below / above the threshold
    T, B, n = 10, 2, 1000
    s = np.zeros((T, B, n), dtype=np.float32)
    s.reshape(-1)[:19] = 1  # rate 19/20000 < 1e-3
    assert not bie.check_activity({"a": s})[0]
    s.reshape(-1)[:20] = 1  # rate = 1e-3
    assert bie.check_activity({"a": s})[0]
    assert bie.firing_rate({"a": s}) == 1e-3
    with pytest.raises(ValueError, match="output_populations"):
        bie.check_activity(batches, ["nope"])


def test_minimisation_does_not_reward_silence():
    """Silent network (D = 0) would win argmin without the guard; with it, it is the worst."""
    active = [spikes(3)]
    silent = [{k: np.zeros_like(v) for k, v in active[0].items()}]
    assert bie.bie_score([bie.spike_counts(silent[0])]) == 0.0
    assert bie.bie_fitness(silent) < bie.bie_fitness(active)


@S
@given(seeds, st.integers(1, 4), st.integers(2, 6))
def test_hamming_kernel_matches_oracle(seed, T, B):
    s = spikes(seed, T=T, B=B, p=0.4)
    K = bie.hamming_kernel(s)
    np.testing.assert_array_equal(K, bie.hamming_kernel_ref(s))
    n_a = T * sum(v[0, 0].size for v in s.values())
    assert np.all(np.diag(K) == n_a) and np.array_equal(K, K.T)
    # direct definition on concatenated codes
    codes = np.concatenate([np.moveaxis(v.reshape(T, B, -1), 1, 0).reshape(B, -1) for v in s.values()], 1)
    ham = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    np.testing.assert_array_equal(K, n_a - ham)


def test_logdet_score():
    s = spikes(5, T=4, B=5, p=0.5)
    K = bie.hamming_kernel(s).astype(np.float64)
    assert math.isclose(bie.logdet_score(s), np.linalg.slogdet(K)[1], rel_tol=1e-12)
    assert bie.logdet_score(s) > 0
    dup = {k: np.concatenate([v[:, :1], v[:, :1], v[:, 2:]], axis=1) for k, v in s.items()}
    assert bie.logdet_score(dup) == float("-inf")  # two identical codes: singular K


def test_bie_on_populations_of_a_decoded_graph():
    """The spike dict a network builder hands to BIE: one entry per LIF node of the graph, in node
    order; P's length is graph_stats' n_neurons_per_sample; the guard reads the last cell's outputs."""
    from refsnn.nas.graph import decode, graph_stats

    gr = decode([4, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 2, 0, 0, 0, 0, 0, 3, 2], (1, 8, 8), 2, 10)
    rng = rng_from(11)
    T, B = 3, 4
    batch = {n["name"]: (rng.random((T, B, n["channels"], *n["shape"])) < 0.2).astype(np.float32)
             for n in gr["nodes"] if n["op"] == "lif"}
    P = bie.spike_counts(batch)
    assert P.shape == (B, graph_stats(gr)["n_neurons_per_sample"])
    outs = gr["cells"][-1]["outputs"]
    assert bie.bie_fitness([batch], outs) == -bie.bie_score([P])
