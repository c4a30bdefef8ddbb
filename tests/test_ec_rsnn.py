"""SPEC §2.3 / §5.3: CuBa-LIF RSNN, dense NumPy oracle vs bit-packed Numba kernel."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import connection_probs, dtypes, rng_from, rsnn_sizes, seeds

from refsnn.kernels import cuba
from refsnn.kernels.cuba import CubaConfig


def _cfg(n, n_exc, **kw):
    return CubaConfig(n_neurons=n, exc_ratio=n_exc / n, **kw)


def _random_net(rng, B, d, n, d_out, p_in, p_h, p_out):
    return (rng.random((B, 2 * d, n)) < p_in, rng.random((B, n, n)) < p_h, rng.random((B, n, d_out)) < p_out)


def test_defaults_match_spec():
    cfg = CubaConfig()
    assert cfg.n_substeps == 33 and cfg.n_exc == 128
    r_in, r, r_out = cfg.gains(11)
    assert r_in == pytest.approx(0.1 * 10 * math.sqrt(2 / (0.5 * 11)))
    assert r == pytest.approx(2 * math.sqrt(2 / 128))
    assert r_out == pytest.approx(5 * math.sqrt(1 / 128))
    c = cfg.constants(11, np.float64)
    assert c[3] == pytest.approx(math.exp(-0.1)) and c[4] == pytest.approx(math.exp(-0.05))


@settings(max_examples=40, deadline=None)
@given(size=rsnn_sizes, B=st.integers(1, 3), seed=seeds)
def test_pack_unpack_roundtrip(size, B, seed):
    n, n_exc = size
    rng = rng_from(seed)
    C = rng.random((B, n, n)) < rng.random()
    P = cuba.pack_hidden(C, n_exc)
    we, wi = cuba.n_words(n_exc, n)
    assert P.shape == (B, we + wi, n) and P.dtype == np.uint64
    np.testing.assert_array_equal(cuba.unpack_hidden(P, n, n_exc), C)
    s = (rng.random((B, n)) < 0.3).astype(np.float32)
    s[:, n_exc:] *= -1
    sb = cuba.pack_spikes(s, n_exc)
    np.testing.assert_array_equal(cuba.unpack_spikes(sb, n, n_exc, np.float32), s)


@settings(max_examples=25, deadline=None)
@given(size=rsnn_sizes, seed=seeds)
def test_packed_count_is_signed_matvec(size, seed):
    """popcount(row_E & s_E) - popcount(row_I & s_I) == s @ C_h (integer, exact)."""
    n, n_exc = size
    rng = rng_from(seed)
    C = rng.random((1, n, n)) < 0.5
    s = (rng.random((1, n)) < 0.5).astype(np.float64)
    s[:, n_exc:] *= -1
    P = cuba.pack_hidden(C, n_exc)[0].T
    sb = cuba.pack_spikes(s, n_exc)[0]
    we, _ = cuba.n_words(n_exc, n)
    pc = cuba.popcount64_ref(P & sb[None, :])
    cnt = pc[:, :we].sum(1) - pc[:, we:].sum(1)
    np.testing.assert_array_equal(cnt, (s @ C[0].astype(np.float64))[0])
    Pb = cuba.pack_hidden(C, n_exc)
    sbb = cuba.pack_spikes(s, n_exc)
    np.testing.assert_array_equal(cuba.packed_matvec(Pb, sbb, n_exc), cuba.packed_matvec_ref(s, C))
    np.testing.assert_array_equal(cuba.packed_matvec(Pb, sbb, n_exc)[0], cnt)


def test_popcount_ref():
    x = np.array([0, 1, 3, 2**63, 2**64 - 1, 0xF0F0], dtype=np.uint64)
    np.testing.assert_array_equal(cuba.popcount64_ref(x), [bin(int(v)).count("1") for v in x])


def _compare(cfg, dtype, seed, B, d, d_out, probs, steps=3, parallel=False, active_pattern=False):
    rng = rng_from(seed)
    n = cfg.n_neurons
    C_in, C_h, C_out = _random_net(rng, B, d, n, d_out, *probs)
    Chp = cuba.pack_hidden(C_h, cfg.n_exc)
    v0 = rng.random((B, n))
    dense = cuba.initial_state(cfg, v0, dtype)
    packed = cuba.initial_state_packed(cfg, v0, dtype)
    total = 0
    for _ in range(steps):
        x = rng.uniform(-3, 3, size=(B, d)).astype(dtype)
        u = np.concatenate([x, -x], axis=1)
        active = (rng.random(B) < 0.7) if active_pattern else None
        dense, act_d, ns_d = cuba.cuba_env_step_ref(cfg, u, C_in, C_h, C_out, dense, active=active)
        act_p, ns_p = cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, packed, active=active,
                                                parallel=parallel)
        np.testing.assert_array_equal(ns_p, ns_d)
        np.testing.assert_array_equal(cuba.unpack_spikes(packed[3], n, cfg.n_exc, dtype), dense[3])
        for a, b in zip(packed[:3], dense[:3]):
            assert a.dtype == dtype
            np.testing.assert_array_equal(a, b)  # identical arithmetic -> bit-identical floats
        np.testing.assert_array_equal(act_p, act_d)
        total += int(ns_d.sum())
    return total


@settings(max_examples=30, deadline=None)
@given(size=rsnn_sizes, dtype=dtypes, seed=seeds, B=st.integers(1, 3), d=st.integers(1, 4),
       probs=st.tuples(connection_probs, connection_probs, connection_probs), parallel=st.booleans(),
       active=st.booleans())
def test_packed_equals_dense(size, dtype, seed, B, d, probs, parallel, active):
    n, n_exc = size
    _compare(_cfg(n, n_exc), dtype, seed, B, d, 2, probs, parallel=parallel, active_pattern=active)


@pytest.mark.parametrize("p_h", [0.0, 1.0])
@pytest.mark.parametrize("n,n_exc", [(256, 128), (130, 65), (64, 64), (65, 0), (100, 37)])
def test_packed_equals_dense_extremes(n, n_exc, p_h):
    spikes = _compare(_cfg(n, n_exc), np.float32, 7, 2, 3, 3, (0.5, p_h, 0.5), steps=2)
    assert spikes > 0  # the comparison exercised spiking


def test_inactive_members_untouched():
    cfg = _cfg(70, 35)
    rng = np.random.default_rng(1)
    C_in, C_h, C_out = _random_net(rng, 3, 2, 70, 2, 0.5, 0.5, 0.5)
    st_ = cuba.initial_state_packed(cfg, rng.random((3, 70)), np.float64)
    before = [a.copy() for a in st_]
    u = np.ones((3, 4))
    act, ns = cuba.cuba_env_step_packed(cfg, u, C_in, cuba.pack_hidden(C_h, 35), C_out, st_,
                                        active=np.array([False, True, False]))
    for a, b in zip(st_, before):
        np.testing.assert_array_equal(a[[0, 2]], b[[0, 2]])
    assert (act[[0, 2]] == 0).all() and (ns[[0, 2]] == 0).all()


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 70), dtype=dtypes, seed=seeds, B=st.integers(1, 3), parallel=st.booleans())
def test_float_kernel_equals_oracle(n, dtype, seed, B, parallel):
    cfg = CubaConfig(n_neurons=n, dale=False, sparsity=1.0)
    rng = rng_from(seed)
    d, d_out = 3, 2
    W_in = rng.standard_normal((B, d, n)).astype(dtype)
    W_h = rng.standard_normal((B, n, n)).astype(dtype)
    W_out = rng.standard_normal((B, n, d_out)).astype(dtype)
    v0 = rng.random((B, n))
    a = cuba.initial_state(cfg, v0, dtype)
    b = cuba.initial_state(cfg, v0, dtype)
    for _ in range(3):
        u = rng.uniform(-3, 3, (B, d)).astype(dtype)
        a, act_a, ns_a = cuba.float_env_step_ref(cfg, u, W_in, W_h, W_out, a)
        act_b, ns_b = cuba.float_env_step(cfg, u, W_in, W_h, W_out, b, parallel=parallel)
        np.testing.assert_array_equal(ns_a, ns_b)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(act_a, act_b)


@settings(max_examples=25, deadline=None)
@given(size=rsnn_sizes, dtype=dtypes, seed=seeds, B=st.integers(1, 4), d=st.integers(1, 4),
       probs=st.tuples(connection_probs, connection_probs, connection_probs), parallel=st.booleans())
def test_prepared_stepper_equals_the_step_function(size, dtype, seed, B, d, probs, parallel):
    """PackedRSNN (checks once per episode) gives bit for bit what cuba_env_step_packed gives at every
    step, with members ending their episodes at random steps; it keeps no reference to ``u``."""
    n, n_exc = size
    cfg = _cfg(n, n_exc)
    rng = rng_from(seed)
    C_in, C_h, C_out = _random_net(rng, B, d, n, 2, *probs)
    Chp = cuba.pack_hidden(C_h, cfg.n_exc)
    v0 = rng.random((B, n))
    ref = cuba.initial_state_packed(cfg, v0, dtype)
    stepper = cuba.PackedRSNN(cfg, C_in, Chp, C_out, cuba.initial_state_packed(cfg, v0, dtype), parallel=parallel)
    active = np.ones(B, bool)
    for _ in range(4):
        x = rng.uniform(-3, 3, size=(B, d)).astype(dtype)
        u = np.concatenate([x, -x], axis=1)
        a1, n1 = cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, ref, active=active)
        a2, n2 = stepper(u, active)
        u[...] = np.nan   # the stepper copied its input
        np.testing.assert_array_equal(a2, a1)
        np.testing.assert_array_equal(n2, n1)
        for x1, x2 in zip(ref, stepper.state):
            np.testing.assert_array_equal(x2, x1)
        active &= rng.random(B) < 0.8


def test_prepared_stepper_errors_name_the_argument():
    cfg = _cfg(10, 5)
    st_ = cuba.initial_state_packed(cfg, np.zeros((2, 10)), np.float32)
    C_in, C_out = np.zeros((2, 4, 10), bool), np.zeros((2, 10, 1), bool)
    Chp = cuba.pack_hidden(np.zeros((2, 10, 10), bool), 5)
    with pytest.raises(ValueError, match="^Chp"):
        cuba.PackedRSNN(cfg, C_in, Chp[:, :, :9], C_out, st_)
    with pytest.raises(ValueError, match="^C_out"):
        cuba.PackedRSNN(cfg, C_in, Chp, np.zeros((3, 10, 1), bool), st_)
    C_out_f = np.zeros((2, 10, 1), np.float32)
    with pytest.raises(ValueError, match="^state v: shares memory with the input C_out"):
        cuba.PackedRSNN(cfg, C_in, Chp, C_out_f, (C_out_f[:, :, 0],) + st_[1:])
    stepper = cuba.PackedRSNN(cfg, C_in, Chp, C_out, st_)
    with pytest.raises(ValueError, match="^u"):
        stepper(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="^u"):
        stepper(np.zeros((2, 4), np.float64))
    with pytest.raises(ValueError, match="^active"):
        stepper(np.zeros((2, 4), np.float32), np.ones(3, bool))


def test_bad_input_errors():
    cfg = _cfg(10, 5)
    st_ = cuba.initial_state_packed(cfg, np.zeros((1, 10)), np.float32)
    C_in = np.zeros((1, 4, 10), bool)
    C_out = np.zeros((1, 10, 1), bool)
    Chp = cuba.pack_hidden(np.zeros((1, 10, 10), bool), 5)
    with pytest.raises(TypeError, match="dtype"):
        cuba.cuba_env_step_packed(cfg, np.zeros((1, 4), np.float64), C_in, Chp, C_out, st_)
    with pytest.raises(ValueError, match="C_in"):
        cuba.cuba_env_step_packed(cfg, np.zeros((1, 6), np.float32), C_in, Chp, C_out, st_)
    with pytest.raises(ValueError, match="Chp"):
        cuba.cuba_env_step_packed(cfg, np.zeros((1, 4), np.float32), C_in, Chp[:, :, :9], C_out, st_)
    with pytest.raises(ValueError, match="C_h"):
        cuba.pack_hidden(np.zeros((3, 4), bool), 1)
    with pytest.raises(ValueError, match="u"):
        cuba.cuba_env_step_packed(cfg, np.full((1, 4), np.nan, np.float32), C_in, Chp, C_out, st_)


def test_step_check_finite_switch_and_once_per_batch():
    """check_finite=False (what the rollout passes each step) skips only the NaN pass over the
    connectivity/weights and gives the same step; the families check those arrays once in build."""
    from refsnn.ec.policy import make_family

    for method in ("ec", "es"):
        fam = make_family(method, {"n_neurons": 16}, 3, 2)
        params = fam.init_params(0)
        x = rng_from(1).standard_normal((4, 3))
        a1, n1 = fam.step(fam.build(params, 0, 0, [0, 1, 2, 3], 4), x, np.ones(4, bool))
        b = fam.build(params, 0, 0, [0, 1, 2, 3], 4)
        big = b.arrays[0]
        if method == "ec":
            u = np.concatenate([x, -x], axis=1).astype(fam.dtype)
            a2, n2 = cuba.cuba_env_step_packed(fam.cfg, u, *b.arrays, b.state, d_in=3)   # checks on
        else:
            a2, n2 = cuba.float_env_step(fam.cfg, x.astype(fam.dtype), *b.arrays, b.state)
        assert np.array_equal(a1, a2) and np.array_equal(n1, n2)
        big[0, 0, 0] = np.nan
        step = cuba.cuba_env_step_packed if method == "ec" else cuba.float_env_step
        args = (np.concatenate([x, -x], axis=1).astype(fam.dtype) if method == "ec" else x.astype(fam.dtype),)
        with pytest.raises(ValueError, match=r"^(C_in|W_in)\b"):
            step(fam.cfg, *args, *b.arrays, b.state)
        step(fam.cfg, *args, *b.arrays, b.state, check_finite=False)   # no pass over the arrays
        if method == "ec":   # Bernoulli samples: 0/1 by construction; the probabilities are checked
            for arr in fam.build(params, 0, 0, [0, 1], 2).arrays[::2]:
                assert set(np.unique(arr)) <= {0.0, 1.0}
            for v in (np.nan, 1.5, -0.1):
                bad = {k: a.copy() for k, a in params.items()}
                bad["in"][0, 0] = v
                with pytest.raises(ValueError, match=r"^params\['in'\]"):
                    fam.build(bad, 0, 0, [0, 1], 2)
        else:                # real weights: a non-finite parameter is caught once, in build
            bad = {k: v.copy() for k, v in params.items()}
            bad["h"][0, 0] = np.inf
            with pytest.raises(ValueError, match=r"^W_h\b"):
                fam.build(bad, 0, 0, [0, 1], 2)
