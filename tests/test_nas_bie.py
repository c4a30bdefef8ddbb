"""SPEC §6.4 BIE (seed eqs. 3-7), the NASWOT logdet score and SNASNet's sparsity-aware one."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import nas_counts, rng_from, seeds

from refsnn.nas import bie

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


# ---- SNASNet's sparsity-aware kernel (logdet-sa) -------------------------------------------------
@st.composite
def sa_populations(draw):
    """Several populations of different shapes sharing [T, B] (T >= 1, B >= 2), sparse to dense,
    in the spike dtypes the fitness hands over."""
    T, B = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    n_pops = draw(st.integers(1, 3))
    rng = rng_from(draw(seeds))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.bool_, np.uint8]))
    pops = {}
    for i in range(n_pops):
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
        p = draw(st.sampled_from([0.0, 0.05, 0.3, 0.5, 0.9, 1.0]))
        pops[f"pop{i}"] = (rng.random((T, B) + shape) < p).astype(dtype)
    return pops


def _sa_atol(pops):
    # every term is N - 0.5/(norm + eps) * d with 0 <= d <= N and 0.5/(norm + eps) <= 500
    return 1e-13 * sum(v.shape[0] * v[0, 0].size * 501 for v in pops.values())


@S
@given(sa_populations())
def test_sparsity_aware_kernel_matches_oracle_and_properties(pops):
    K, m = bie.sparsity_aware_kernel(pops)
    Kr, mr = bie.sparsity_aware_kernel_ref(pops)
    T, B = next(iter(pops.values())).shape[:2]
    assert K.dtype == np.float64 and K.shape == (B, B)
    assert m == mr == T * len(pops) and isinstance(m, int)
    np.testing.assert_allclose(K, Kr, rtol=1e-12, atol=_sa_atol(pops))
    np.testing.assert_array_equal(K, K.T)
    # d = 0 on the diagonal: every (population, step) pair contributes its N
    assert np.all(np.diag(K) == T * sum(v[0, 0].size for v in pops.values()))
    assert np.all(np.isfinite(K))
    # a direct (vectorised over pairs, not GEMM) evaluation of the definition
    want = np.zeros((B, B))
    for v in pops.values():
        x = v.reshape(T, B, -1).astype(np.float64)
        N = x.shape[2]
        for t in range(T):
            r = x[t].mean(axis=1)
            norm = np.outer(r, 1 - r) + np.outer(1 - r, r)
            d = (x[t][:, None, :] != x[t][None, :, :]).sum(-1)
            want += N - 0.5 / (norm + 1e-3) * d
    np.testing.assert_allclose(K, want, rtol=1e-12, atol=_sa_atol(pops))


@S
@given(sa_populations(), seeds)
def test_sparsity_aware_kernel_permutations(pops, seed):
    rng = rng_from(seed)
    K, m = bie.sparsity_aware_kernel(pops)
    T, B = next(iter(pops.values())).shape[:2]
    # neurons permuted within each population (flattened): K unchanged
    perm_n = {k: v.reshape(T, B, -1)[:, :, rng.permutation(v[0, 0].size)] for k, v in pops.items()}
    K2, m2 = bie.sparsity_aware_kernel(perm_n)
    assert m2 == m
    np.testing.assert_array_equal(K2, K)
    # batch permuted: K permuted the same way
    pb = rng.permutation(B)
    K3, _ = bie.sparsity_aware_kernel({k: v[:, pb] for k, v in pops.items()})
    np.testing.assert_array_equal(K3, K[np.ix_(pb, pb)])


def test_sparsity_aware_kernel_by_hand():
    # One population, B = 2, N = 4, T = 2.
    # t = 0: x_0 = 1100, x_1 = 1000 -> n = (2, 1), r = (1/2, 1/4),
    #        norm_01 = 1/2*3/4 + 1/2*1/4 = 1/2, d_01 = 1 -> 4 - 0.5/0.501 * 1 = 4 - 500/501 = 1504/501
    # t = 1: x_0 = 0000, x_1 = 1111 -> r = (0, 1), norm_01 = 0*0 + 1*1 = 1, d_01 = 4
    #        -> 4 - 0.5/1.001 * 4 = 4 - 2000/1001 = 2004/1001
    # K_01 = 1504/501 + 2004/1001 = 2509508/501501 = 5.003994009982034..., K_00 = K_11 = 2 * 4 = 8,
    # m = 2: K/m = [[4, h], [h, 4]], h = K_01/2; det = 16 - h^2 = 2449644447500/251503253001
    # = 9.740010987015982..., log det = 2.276242245684196...
    s = np.zeros((2, 2, 4), dtype=np.float32)
    s[0, 0, :2] = 1
    s[0, 1, 0] = 1
    s[1, 1, :] = 1
    K, m = bie.sparsity_aware_kernel({"a": s})
    assert m == 2
    k01 = 2509508 / 501501
    np.testing.assert_allclose(K, [[8.0, k01], [k01, 8.0]], rtol=1e-15, atol=0)
    np.testing.assert_array_equal(K, bie.sparsity_aware_kernel_ref([s])[0])
    assert math.isclose(bie.logdet_sa_score({"a": s}), 2.276242245684196, rel_tol=1e-14)
    # step 0 alone: K = [[4, 1504/501], [1504/501, 4]], m = 1
    K1, m1 = bie.sparsity_aware_kernel({"a": s[:1]})
    assert m1 == 1
    np.testing.assert_allclose(K1, [[4.0, 1504 / 501], [1504 / 501, 4.0]], rtol=1e-15, atol=0)
    # eps is a parameter (the released code's 1e-3 by default); eps = 0.5 at t = 0:
    # 4 - 0.5/(0.5 + 0.5) * 1 = 3.5
    assert bie.sparsity_aware_kernel({"a": s[:1]}, eps=0.5)[0][0, 1] == 3.5


def test_logdet_sa_score():
    s = spikes(5, T=4, B=5, p=0.3)
    K, m = bie.sparsity_aware_kernel(s)
    assert math.isfinite(bie.logdet_sa_score(s))
    assert bie.logdet_sa_score(s) == float(np.linalg.slogdet(K / m)[1])
    # the same population twice: K and m double, K/m and the score stay (up to rounding)
    twice = {"a": s["pop0"], "b": s["pop0"]}
    assert math.isclose(bie.logdet_sa_score(twice), bie.logdet_sa_score({"a": s["pop0"]}), rel_tol=1e-12)
    # two samples with identical spikes at every step of every population: equal rows -> singular
    dup = {k: np.concatenate([v[:, :1], v[:, :1], v[:, 2:]], axis=1) for k, v in s.items()}
    Kd, _ = bie.sparsity_aware_kernel(dup)
    np.testing.assert_array_equal(Kd[0], Kd[1])
    assert Kd[0, 1] == Kd[0, 0]
    assert bie.logdet_sa_score(dup) == float("-inf")
    # a silent network: every d = 0, K = m*N everywhere (rank 1)
    silent = {k: np.zeros_like(v) for k, v in s.items()}
    assert bie.logdet_sa_score(silent) == float("-inf")


def test_sparsity_aware_kernel_bad_input():
    s = spikes(0)
    for f in (bie.sparsity_aware_kernel, bie.sparsity_aware_kernel_ref):
        with pytest.raises(ValueError, match="eps"):
            f(s, eps=0.0)
        with pytest.raises(TypeError, match="eps"):
            f(s, eps="1e-3")
        with pytest.raises(ValueError, match=r"spikes_by_population\['a'\].*time step"):
            f({"a": np.zeros((0, 2, 3), np.float32)})
        with pytest.raises(ValueError, match=r"spikes_by_population\['b'\].*neuron"):
            f({"a": s["pop1"], "b": np.zeros((3, 4, 0), np.float32)})
        with pytest.raises(ValueError, match="0 or 1"):
            f({"a": s["pop0"] * 2})
        with pytest.raises(ValueError, match="no population"):
            f({})
    with pytest.raises(ValueError, match="0 or 1"):
        bie.logdet_sa_score({"a": s["pop0"] * 2})


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
