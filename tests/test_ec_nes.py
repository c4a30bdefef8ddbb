"""SPEC §5.1–5.2: Bernoulli sampling, centered ranks, NES estimate, Adam, clipping."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.ec import nes
from strategies import seeds


def test_member_rng_depends_only_on_integers():
    a = nes.member_rng(3, 5, 7).random(4)
    b = nes.member_rng(3, 5, 7).random(4)
    np.testing.assert_array_equal(a, b)
    for other in [(3, 5, 8), (3, 6, 7), (4, 5, 7)]:
        assert not np.array_equal(a, nes.member_rng(*other).random(4))
    assert not np.array_equal(a, nes.member_rng(3, 5, 7, nes.STREAM_NOISE).random(4))
    with pytest.raises(ValueError, match="generation"):
        nes.member_rng(0, -1, 0)


def test_sampling_frequency_and_deployment():
    rho = {"h": np.linspace(0.001, 0.999, 50)[None, :].repeat(4, 0)}
    tot = np.zeros_like(rho["h"])
    n = 400
    for i in range(n):
        tot += nes.sample_connectivity(rho, nes.member_rng(0, 0, i))["h"]
    assert np.abs(tot / n - rho["h"]).max() < 0.12
    det = nes.deterministic_connectivity({"a": np.array([0.2, 0.5, 0.51])})["a"]
    np.testing.assert_array_equal(det, [False, False, True])


@settings(max_examples=50, deadline=None)
@given(f=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=30))
def test_centered_ranks_properties(f):
    f = np.array(f)
    w = nes.centered_ranks(f)
    assert w.shape == f.shape
    assert abs(w.sum()) < 1e-9
    assert w.min() >= -0.5 and w.max() <= 0.5
    # invariant to strictly increasing transforms
    for g in (np.sign(f) * np.log1p(np.abs(f)), 2 * f + 1, f ** 3):
        if len(np.unique(g)) == len(np.unique(f)):  # the transform stayed strictly increasing in floats
            np.testing.assert_array_equal(nes.centered_ranks(g), w)
    # order preserving
    order = np.argsort(f, kind="stable")
    assert np.all(np.diff(w[order]) >= 0)


def test_centered_ranks_ties_and_edge_cases():
    np.testing.assert_array_equal(nes.centered_ranks(np.array([1.0, 3.0, 2.0])), [-0.5, 0.5, 0.0])
    # ties get the average rank: ranks (0, 1.5, 1.5, 3) / 3 - 0.5
    np.testing.assert_allclose(nes.centered_ranks(np.array([0.0, 5.0, 5.0, 9.0])), [-0.5, 0.0, 0.0, 0.5])
    np.testing.assert_array_equal(nes.centered_ranks(np.array([4.0, 4.0, 4.0])), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(nes.centered_ranks(np.array([1.0])), [0.0])
    with pytest.raises(ValueError, match="f"):
        nes.centered_ranks(np.array([1.0, np.nan]))


def test_nes_gradient_formula():
    rng = np.random.default_rng(0)
    rho = rng.uniform(0.1, 0.9, (3, 4))
    th = rng.random((5, 3, 4)) < rho
    w = nes.centered_ranks(rng.standard_normal(5))
    g = nes.nes_gradient(w, th, rho)
    np.testing.assert_allclose(g, np.mean(w[:, None, None] * (th - rho), axis=0), rtol=1e-12, atol=1e-15)
    gp = nes.nes_gradient(w, iter(list(th)), rho, natural=False)
    np.testing.assert_allclose(gp, g / (rho * (1 - rho)), rtol=1e-12)
    with pytest.raises(ValueError, match="thetas"):
        nes.nes_gradient(w, th[:4], rho)


@settings(max_examples=10, deadline=None)
@given(seed=seeds)
def test_estimator_points_uphill_on_separable_problem(seed):
    """f(theta) = sum(c * theta): the expected natural gradient is rho(1-rho)c-like in sign."""
    rng = np.random.default_rng(seed)
    d = 40
    c = rng.choice([-1.0, 1.0], size=d)
    rho = np.full(d, 0.5)
    P = 200
    th = np.stack([nes.sample_connectivity({"x": rho}, nes.member_rng(seed % 1000, 0, i))["x"] for i in range(P)])
    f = th.astype(float) @ c
    g = nes.nes_gradient(nes.centered_ranks(f), th, rho)
    assert np.mean(np.sign(g) == c) > 0.9


def test_adam_and_clip_learn_separable_problem():
    d = 30
    c = np.where(np.arange(d) % 2 == 0, 1.0, -1.0)
    rho = {"x": np.full(d, 0.5)}
    opt = nes.Adam({"x": (d,)}, lr=0.15)
    for gen in range(30):
        th = [nes.sample_connectivity(rho, nes.member_rng(1, gen, i))["x"] for i in range(32)]
        f = np.array([t.astype(float) @ c for t in th])
        g = nes.nes_gradient(nes.centered_ranks(f), th, rho["x"])
        rho = nes.clip_rho(opt.step(rho, {"x": g}))
        assert rho["x"].min() >= 1e-3 and rho["x"].max() <= 1 - 1e-3
    det = nes.deterministic_connectivity(rho)["x"]
    np.testing.assert_array_equal(det, c > 0)
    assert nes.bernoulli_entropy(rho) < 0.2


def test_adam_first_step_is_lr_sign():
    opt = nes.Adam({"x": (3,)}, lr=0.15)
    out = opt.step({"x": np.zeros(3)}, {"x": np.array([1e-3, -2.0, 0.0])})
    np.testing.assert_allclose(out["x"], [0.15, -0.15, 0.0], rtol=1e-4)
    st_ = opt.state_arrays()
    opt2 = nes.Adam({"x": (3,)})
    opt2.load_state_arrays(st_)
    assert opt2.t == 1
    np.testing.assert_array_equal(opt2.m["x"], opt.m["x"])


def test_adamw_decay():
    opt = nes.Adam({"x": (1,)}, lr=0.1, weight_decay=0.5)
    out = opt.step({"x": np.array([2.0])}, {"x": np.array([0.0])})
    np.testing.assert_allclose(out["x"], [2.0 - 0.1 * 0.5 * 2.0])


def test_nes_step_matches_pieces_and_uniforms():
    rng = np.random.default_rng(3)
    rho = {"a": rng.uniform(0.2, 0.8, (4, 5))}
    u = rng.random((6, 4, 5))
    th = {"a": np.stack([nes.bernoulli_from_uniforms(x, rho["a"]) for x in u])}
    np.testing.assert_array_equal(th["a"], u < rho["a"])
    f = rng.standard_normal(6)
    o1, o2 = nes.Adam({"a": (4, 5)}), nes.Adam({"a": (4, 5)})
    new = nes.nes_step(rho, th, f, o1)
    g = nes.nes_gradient(nes.centered_ranks(f), th["a"], rho["a"])
    np.testing.assert_array_equal(new["a"], nes.clip_rho(o2.step(rho, {"a": g}))["a"])
    with pytest.raises(ValueError, match="rho"):
        nes.bernoulli_from_uniforms(u[0], rho["a"][:2])


def test_shifted_fitness_changes_ranks_only_through_lengths():
    r, t = np.array([1000.0, 400.0, 950.0]), np.array([1000, 150, 1000])
    np.testing.assert_array_equal(nes.shifted_fitness(r, t, 0.0), r)          # reference: plain return
    np.testing.assert_array_equal(nes.shifted_fitness(r, t, 1.0), [0.0, 250.0, -50.0])
    # equal lengths: the shift is a constant and the ranks do not change
    np.testing.assert_array_equal(nes.centered_ranks(nes.shifted_fitness(r, [5, 5, 5], 1.0)),
                                  nes.centered_ranks(r))
    with pytest.raises(ValueError, match="lengths"):
        nes.shifted_fitness(r, t[:2], 1.0)
