"""refsnn's Evolving Connectivity against the EC authors' own JAX code (SPEC §2.3, §5; marker ``original``).

The authors' ``ec.py`` and ``networks/conn_snn.py`` run unmodified beside refsnn
(:mod:`original_support`; ``REFSNN_EC_REPO`` names their checkout, ``.ci/original.sh`` installs the
era packages). Both sides get the same connectivity, initial state, observations, population and
returns. Every comparison runs in float64 (x64 on) and float32 (x64 off, the authors' setting).

Tolerances, and why:

* RSNN step, float64: ``|refsnn - authors| <= 1e-12 * max(1, max|authors|)`` per array (``v``,
  ``i_syn``, ``rate``, the clipped action) and identical spikes. The two sides round differently —
  the input current's sum order, and ``lerp`` ``x + a (y - x)`` against refsnn's ``a y + (1 - a) x``
  — by a few ulps (seen: <= 1e-15 relative). Spikes are compared after each env step (the carry
  holds the last substep's); a missed or extra spike at an earlier substep moves ``rate`` by at
  least ``g_out alpha_out^(K-1)`` ~ 0.02, far above the tolerance.
* RSNN step, float32: ``1e-5 * max(1, max|authors|)`` (~100 ulps; seen <= 1.3e-6) and identical spikes
  until the first env step at which rounding chaos flips a spike; from there on the two runs are
  different trajectories. The test asserts that this step is not step 0 and that it really is a
  flip (a rate difference > 1e-3), not a drift past the tolerance.
* Update: ``rho``, Adam's ``m`` (optax's ``mu`` is ``-m``: the authors descend ``-g``) and ``v``.
  ``m``, ``v``: 1e-15 (float64) / 1e-7, 1e-10 (float32) absolute. ``rho``: 1e-12 (float64) / 2e-5
  (float32) absolute where the estimate ``|g|`` exceeds 1e-9 / 1e-4; where ``g`` is 0 up to
  rounding (every member drew the same bit), Adam's ``m_hat / (sqrt(v_hat) + eps)`` has slope
  ``1/eps = 1e8`` at ``g = 0`` and turns a rounding difference of ``g`` into up to
  ``lr 1e8 |dg|`` (float64: <= 1e-8 allowed; float32, where ``|dg|`` ~ 1e-8: not compared, and
  the test asserts that these entries are a minority).
* Normaliser: 1e-12 (float64) relative; float32 (Brax keeps float32 statistics, refsnn float64) 1e-5.

Known, documented differences tested as such: the authors' spikes and recurrent kernel are int8, so
128 excitatory spikes into one neuron count as -128 (refsnn counts exactly); ``ties="average"``
(refsnn's default) differs from the authors' positional ranks when returns tie; before two
observations Brax's std is ``1e-6``, refsnn's 1; and the authors update the normaliser from the
population's final observations only (refsnn: every observation of every member; ``rollout`` docstring)
— here both get the same batches and the arithmetic is compared.
"""
from __future__ import annotations

import functools

import numpy as np
import original_support as support
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.commands.play import PlayConfig
from refsnn.commands.play import run as play_run
from refsnn.ec import nes
from refsnn.ec.deploy import deployed_arrays, from_deployed_arrays
from refsnn.ec.policy import ECFamily
from refsnn.ec.rollout import RunningNorm
from refsnn.io import atomic_savez
from refsnn.kernels import cuba

pytestmark = pytest.mark.original

O = support.load()
DTYPES = (np.float64, np.float32)
TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
IMPLS = ("dense", "packed", "stepper")
B, D_OBS, D_ACT = 3, 5, 3

#: (N, excitatory ratio, dt, sim_time -> K = round(sim_time/dt), env steps, density of C_h)
RSNN_CASES = [
    (7, 0.5, 0.5, 16.6, 6, 0.5),      # K = 33, the paper's substeps
    (33, 0.8, 0.5, 2.5, 6, 0.2),      # N = 1 mod 4, K = 5
    (64, 0.5, 0.5, 0.5, 8, 0.5),      # one word, K = 1
    (127, 0.8, 1.0, 16.6, 5, 0.1),    # N = 3 mod 4, dt = 1, K = 17
    (256, 0.5, 0.5, 16.6, 4, 0.3),    # several words per part
]


def _dtype_id(dtype) -> str:
    return np.dtype(dtype).name


def _x64(dtype):
    from jax.experimental import disable_x64, enable_x64
    return enable_x64() if np.dtype(dtype) == np.float64 else disable_x64()


# ---------------------------------------------------------------------------------------------
# comparison helpers (raise AssertionError; the self-checks at the end make them fail on purpose)
# ---------------------------------------------------------------------------------------------
def assert_values_close(name: str, got: np.ndarray, want: np.ndarray, tol: float) -> None:
    """``max|got - want| <= tol * max(1, max|want|)``."""
    err = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)), initial=0.0))
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    assert err <= tol * scale, f"{name}: max |refsnn - authors| = {err:.3g} > {tol:g} * {scale:.3g}"


def compare_step(dtype, mine, carry, out) -> tuple[bool, str, float]:
    """One env step: refsnn ``(v, i_syn, rate, signed spikes, action)`` against the authors' carry
    and raw output. Returns ``(spikes equal, first value failure or "", max rate difference)``."""
    v, i_syn, rate, s, act = mine
    tol = TOL[np.dtype(dtype)]
    spikes_equal = bool(np.array_equal(s, carry[3].astype(s.dtype)))
    problem = ""
    for name, a, b in (("v", v, carry[0]), ("i_syn", i_syn, carry[1]), ("rate", rate, carry[2]),
                       ("action", act, np.clip(out, -1, 1))):
        try:
            assert_values_close(name, a, b, tol)
        except AssertionError as e:
            problem = problem or str(e)
    return spikes_equal, problem, float(np.max(np.abs(rate - carry[2])))


def assert_trajectories_match(dtype, steps) -> int | None:
    """``steps``: per env step ``(spikes equal, value failure, max rate difference)``. float64: every
    step must match. float32: every step up to the first chaos flip must match; that step (returned,
    None if none) must not be step 0 and must show a flip-sized rate difference."""
    for t, (spikes_equal, problem, rate_diff) in enumerate(steps):
        if spikes_equal and not problem:
            continue
        where = f"env step {t}: " + ("spikes differ; " if not spikes_equal else "") + problem
        assert np.dtype(dtype) == np.float32, f"float64 {where}"
        assert t > 0, f"float32 diverges at the first env step ({where})"
        assert rate_diff > 1e-3, f"float32 {where} without a spike flip (rate differs by {rate_diff:.3g})"
        return t
    return None


# ---------------------------------------------------------------------------------------------
# the RSNN step: dense oracle, bit-packed kernel, PackedRSNN against ConnSNN
# ---------------------------------------------------------------------------------------------
def _case_inputs(case_index: int, dtype):
    N, exc, dt, sim_time, steps, p_h = RSNN_CASES[case_index]
    cfg = cuba.CubaConfig(n_neurons=N, exc_ratio=exc, dt=dt, sim_time=sim_time)
    rng = np.random.default_rng(1000 + case_index)
    C_in = rng.random((B, 2 * D_OBS, N)) < 0.5
    C_h = rng.random((B, N, N)) < p_h
    C_out = rng.random((B, N, D_ACT)) < 0.5
    v0 = rng.random((B, N))
    xs = (rng.standard_normal((steps, B, D_OBS)) * 1.5).astype(dtype)
    return cfg, C_in, C_h, C_out, v0, xs


@functools.lru_cache(maxsize=None)
def _authors_net(N, exc, sim_time, dt, obs_dim, act_dim, dtype_name):
    return support.AuthorsRSNN(O, n_neurons=N, exc_ratio=exc, sim_time=sim_time, dt=dt, obs_dim=obs_dim,
                               act_dim=act_dim, dtype=np.dtype(dtype_name))


@functools.lru_cache(maxsize=None)
def _authors_trajectory(case_index: int, dtype_name: str):
    dtype = np.dtype(dtype_name)
    cfg, C_in, C_h, C_out, v0, xs = _case_inputs(case_index, dtype)
    net = _authors_net(cfg.n_neurons, cfg.exc_ratio, cfg.sim_time, cfg.dt, D_OBS, D_ACT, dtype_name)
    v, i_syn, rate, s = cuba.initial_state(cfg, v0, dtype)
    carry = (v, i_syn, rate, s.astype(np.int8))
    out = []
    for x in xs:
        carry, y = net(C_in, C_h, C_out, carry, x)
        out.append((carry, y))
    return out


def _refsnn_trajectory(impl: str, case_index: int, dtype):
    """refsnn's ``(v, i_syn, rate, signed spikes, action)`` after each env step, and the spike count."""
    cfg, C_in, C_h, C_out, v0, xs = _case_inputs(case_index, dtype)
    n_exc = cfg.n_exc
    state = cuba.initial_state(cfg, v0, dtype)
    Chp = cuba.pack_hidden(C_h, n_exc)
    packed = (*state[:3], cuba.pack_spikes(state[3], n_exc))
    stepper = cuba.PackedRSNN(cfg, C_in, Chp, C_out, packed) if impl == "stepper" else None
    traj, spikes = [], 0
    for x in xs:
        u = np.concatenate([x, -x], axis=1)
        if impl == "dense":
            state, act, nsp = cuba.cuba_env_step_ref(cfg, u, C_in, C_h, C_out, state)
            v, i_syn, rate, s = state
        else:
            if impl == "packed":
                act, nsp = cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, packed)
            else:
                act, nsp = stepper(u)
            v, i_syn, rate, sbits = packed
            s = cuba.unpack_spikes(sbits, cfg.n_neurons, n_exc, dtype)
        traj.append(tuple(a.copy() for a in (v, i_syn, rate, s, act)))
        spikes += int(nsp.sum())
    return traj, spikes, cfg


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("case_index", range(len(RSNN_CASES)),
                         ids=[f"N{c[0]}-exc{c[1]}-K{round(c[3] / c[2])}" for c in RSNN_CASES])
@pytest.mark.parametrize("impl", IMPLS)
def test_rsnn_step_matches_connsnn(impl, case_index, dtype):
    theirs = _authors_trajectory(case_index, np.dtype(dtype).name)
    mine, spikes, cfg = _refsnn_trajectory(impl, case_index, dtype)
    possible = B * cfg.n_neurons * cfg.n_substeps * len(mine)
    assert 0 < spikes < possible, f"degenerate case: {spikes} of {possible} possible spikes"
    assert_trajectories_match(dtype, [compare_step(dtype, m, c, y) for m, (c, y) in zip(mine, theirs)])


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_long_run_differs_only_by_rounding_chaos(dtype):
    """60 env steps of 8 members (N = 127, 80 % excitatory) through :class:`PackedRSNN`: float64 matches
    throughout; float32 matches until rounding chaos first flips a spike (with these seeds and the
    pinned versions: env step 27), never at step 0, and then by a flip, not by drift."""
    N, members, steps = 127, 8, 60
    cfg = cuba.CubaConfig(n_neurons=N, exc_ratio=0.8)
    rng = np.random.default_rng(2)
    C_in = rng.random((members, 2 * D_OBS, N)) < 0.5
    C_h = rng.random((members, N, N)) < 0.1
    C_out = rng.random((members, N, D_ACT)) < 0.5
    state = cuba.initial_state(cfg, rng.random((members, N)), dtype)
    carry = (state[0].copy(), state[1].copy(), state[2].copy(), state[3].astype(np.int8))
    packed = (*state[:3], cuba.pack_spikes(state[3], cfg.n_exc))
    stepper = cuba.PackedRSNN(cfg, C_in, cuba.pack_hidden(C_h, cfg.n_exc), C_out, packed)
    net = _authors_net(N, 0.8, cfg.sim_time, cfg.dt, D_OBS, D_ACT, np.dtype(dtype).name)
    results = []
    for _ in range(steps):
        x = (rng.standard_normal((members, D_OBS)) * 1.5).astype(dtype)
        act, _ = stepper(np.concatenate([x, -x], axis=1))
        carry, y = net(C_in, C_h, C_out, carry, x)
        v, i_syn, rate, sbits = packed
        mine = (v, i_syn, rate, cuba.unpack_spikes(sbits, N, cfg.n_exc, dtype), act)
        results.append(compare_step(dtype, mine, carry, y))
        if not results[-1][0] or results[-1][1]:
            break
    assert_trajectories_match(dtype, results)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_int8_recurrent_count_wraps_in_the_authors_code(dtype):
    """Documented difference: 128 excitatory spikes into one neuron. ConnSNN's int8 ``spike @ kernel_h``
    wraps to -128; refsnn counts +128. 127 spikes agree, and so does every other neuron."""
    N, K = 256, 2
    cfg = cuba.CubaConfig(n_neurons=N, sim_time=K * 0.5)          # n_exc = 128
    target, control = 200, 201                                     # inhibitory, silent themselves
    C_in = np.zeros((1, 2 * D_OBS, N), bool)
    C_in[0, 0, :128] = True                                        # a strong input into every E neuron
    C_h = np.zeros((1, N, N), bool)
    C_h[0, :128, target] = True                                    # 128 E -> target
    C_h[0, :127, control] = True                                   # 127 E -> control
    C_out = np.zeros((1, N, D_ACT), bool)
    v0 = np.zeros((1, N))
    v0[0, :128] = 0.99
    x = np.zeros((1, D_OBS), dtype)
    x[0, 0] = 3.0
    state, _, nsp = cuba.cuba_env_step_ref(cfg, np.concatenate([x, -x], 1), C_in, C_h, C_out,
                                           cuba.initial_state(cfg, v0, dtype))
    net = _authors_net(N, 0.5, cfg.sim_time, cfg.dt, D_OBS, D_ACT, np.dtype(dtype).name)
    v, i_syn, rate, s = cuba.initial_state(cfg, v0, dtype)
    carry, _ = net(C_in, C_h, C_out, (v, i_syn, rate, s.astype(np.int8)), x)
    r = cfg.gains(D_OBS)[1]
    tol = TOL[np.dtype(dtype)]
    assert nsp[0] >= 128                                           # all E neurons spiked in substep 1
    assert state[1][0, target] == pytest.approx(128 * r, rel=tol)  # refsnn: +128 R
    assert carry[1][0, target] == pytest.approx(-128 * r, rel=tol)  # authors: int8 wrap, -128 R
    assert state[1][0, control] == pytest.approx(127 * r, rel=tol)     # 127: no wrap, both agree
    assert carry[1][0, control] == pytest.approx(127 * r, rel=tol)
    others = np.arange(N) != target
    assert_values_close("i_syn (other neurons)", state[1][:, others], carry[1][:, others], tol)
    assert_values_close("v (other neurons)", state[0][:, others], carry[0][:, others], tol)


# ---------------------------------------------------------------------------------------------
# the deployed network: refsnn's deployed file played against the authors' deterministic member
# ---------------------------------------------------------------------------------------------
def _deployed_setup(N: int, seed: int):
    rng = np.random.default_rng(seed)
    rho = {"in": rng.random((2 * D_OBS, N)), "h": rng.random((N, N)), "out": rng.random((N, D_ACT))}
    for r in rho.values():
        r[rng.random(r.shape) < 0.1] = 0.5                        # rho = 0.5 deploys as "no connection"
        r[...] = r.astype(np.float32)                              # representable in the authors' p_dtype
    with _x64(np.float32):
        rs = O.running_statistics
        norm = rs.init_state(O.ec.specs.Array((D_OBS,), O.jnp.float32))
        for _ in range(2):
            norm = rs.update(norm, O.jnp.asarray((rng.standard_normal((8, D_OBS)) * 3 + 1).astype(np.float32)))
    mean, std = np.asarray(norm.mean, np.float64), np.asarray(norm.std, np.float64)
    return rho, norm, mean, std


def _authors_deterministic(rho, dtype):
    """The authors' deterministic member: ``ec._deterministic_bernoulli_parameter`` (rho > 0.5)."""
    with _x64(dtype):
        p = {f"kernel_{k}": O.jnp.asarray(rho[k], O.jnp.dtype(dtype)) for k in rho}
        th = O.ec._deterministic_bernoulli_parameter(p, (1,))
        return tuple(np.asarray(th[f"kernel_{k}"]) for k in ("in", "h", "out"))


def _authors_episode(rho, N, v_init, obs_norm, dtype):
    """Actions of the authors' deterministic member over one episode (``clip`` as in ``_evaluate_step``)."""
    C_in, C_h, C_out = _authors_deterministic(rho, dtype)
    net = _authors_net(N, 0.5, 16.6, 0.5, D_OBS, D_ACT, np.dtype(dtype).name)
    carry = (v_init.astype(dtype), np.zeros_like(v_init, dtype), np.zeros_like(v_init, dtype),
             np.zeros(v_init.shape, np.int8))
    acts = []
    for x in obs_norm:
        carry, y = net(C_in, C_h, C_out, carry, x[None].astype(dtype))
        acts.append(np.clip(y[0], -1, 1))
    return np.array(acts)


def _action_divergence(dtype, mine, theirs) -> int | None:
    """As :func:`assert_trajectories_match` on actions alone (no spikes visible from outside)."""
    tol = TOL[np.dtype(dtype)]
    steps = []
    for a, b in zip(mine, theirs):
        try:
            assert_values_close("action", a, b, tol)
            steps.append((True, "", 0.0))
        except AssertionError as e:
            steps.append((False, str(e), float(np.max(np.abs(a - b)))))
    return assert_trajectories_match(dtype, steps)


@pytest.mark.parametrize("N", [7, 64, 127])
def test_play_of_deployed_file_matches_authors_deterministic_member(tmp_path, N):
    """float32 end to end: ``deployed_arrays`` -> ``deployed.npz`` -> ``refsnn play`` (its rollout on a
    Gymnasium stand-in that records the actions) against the authors' member fed the same
    observations, normalised by Brax's ``running_statistics.normalize``, and the same membrane."""
    T, episodes = 6, 2
    env_id = support.register_play_env(D_OBS, D_ACT, T)
    rho, norm, mean, std = _deployed_setup(N, seed=N)
    conf = {"method": "ec", "env": env_id, "neurons": N, "max_steps": T, "sigma": 0.3, "seed": 0,
            "population": 8, "eval_members": 2}
    atomic_savez(tmp_path / "deployed.npz", deployed_arrays(conf, rho, mean, std, generation=1, det_return=0.0))
    res = play_run(PlayConfig(str(tmp_path), episodes=episodes, seed=5))
    fam = ECFamily(cuba.CubaConfig(n_neurons=N), D_OBS, D_ACT)
    for k in range(episodes):
        env_seed, v0, _ = fam.member(rho, 5, 0, k, 0)      # the member play evaluates as episode k
        obs = support.play_observations(env_seed, D_OBS, T)[:T]
        with _x64(np.float32):
            xn = np.asarray(O.running_statistics.normalize(O.jnp.asarray(obs), norm))
        v_init = cuba.initial_state(fam.cfg, v0[None], np.float32)[0]
        theirs = _authors_episode(rho, N, v_init, xn, np.float32)
        mine = np.array(support.PLAY_ACTIONS[int(env_seed)])
        assert mine.shape == theirs.shape
        assert (np.abs(theirs) < 1).any(), "degenerate case: every action saturated"
        t = _action_divergence(np.float32, mine, theirs)
        if t is None:
            assert res["returns"][k] == pytest.approx(float(theirs.sum()), abs=1e-4 * T * D_ACT)


def test_deployed_network_float64_matches_authors_deterministic_member():
    """float64: the deployed file read back (``from_deployed_arrays``) and built/stepped by the policy
    family that ``refsnn play`` uses, in float64, against the authors' member in float64; both get
    Brax's normalised observations."""
    N, T = 33, 6
    rho, _, mean, std = _deployed_setup(N, seed=11)
    conf = {"method": "ec", "env": "Stand-in-v0", "neurons": N, "max_steps": T, "sigma": 0.3, "seed": 0,
            "population": 8, "eval_members": 2}
    rconf, params = from_deployed_arrays(deployed_arrays(conf, rho, mean, std, generation=1, det_return=0.0))
    fam = ECFamily(cuba.CubaConfig(n_neurons=int(rconf["neurons"])), D_OBS, D_ACT, dtype=np.float64)
    batch = fam.build(params, 3, 0, [0], 0)
    with _x64(np.float64):
        state = O.running_statistics.init_state(O.ec.specs.Array((D_OBS,), O.jnp.float64)).replace(
            mean=O.jnp.asarray(rconf["norm_mean"]), std=O.jnp.asarray(rconf["norm_std"]))
        obs = support.play_observations(77, D_OBS, T)[:T]
        xn = np.asarray(O.running_statistics.normalize(O.jnp.asarray(obs.astype(np.float64)), state))
    mine = np.array([fam.step(batch, x[None], np.ones(1, bool))[0][0] for x in xn])
    v_init = cuba.initial_state(fam.cfg, fam.member(params, 3, 0, 0, 0)[1][None], np.float64)[0]
    theirs = _authors_episode(rho, N, v_init, xn, np.float64)
    assert np.abs(theirs).max() > 0, "degenerate case: the deployed network never acts"
    assert _action_divergence(np.float64, mine, theirs) is None


# ---------------------------------------------------------------------------------------------
# the observation normaliser
# ---------------------------------------------------------------------------------------------
def _norm_batches(dtype):
    rng = np.random.default_rng(4)
    return [(rng.standard_normal((n, D_OBS)) * rng.uniform(0.1, 10, D_OBS) + rng.uniform(-5, 5, D_OBS))
            .astype(np.float32).astype(dtype) for n in (1, 7, 16, 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("merge", ["batch", "per_row"])
def test_running_norm_matches_brax_running_statistics(dtype, merge):
    """Same batches on both sides (the authors feed the population's final observations, refsnn
    every observation: the protocol differs, the arithmetic is compared). ``batch``: each batch merged
    as one ``(n, mean, M2)``; ``per_row``: every observation merged alone (how the EC trainer merges
    per-member statistics). Counts, means and stds agree (the normalisation itself, refsnn's rollout
    against Brax's ``normalize``, is part of the play test)."""
    if not support.HAVE_REAL_BRAX:
        support.require_or_skip("brax (v1) is not installed: the stand-in running statistics are not the authors'")
    rs = O.running_statistics
    tol = 1e-12 if np.dtype(dtype) == np.float64 else 1e-5
    norm = RunningNorm(D_OBS)
    with _x64(dtype):
        state = rs.init_state(O.ec.specs.Array((D_OBS,), O.jnp.float32))
        for X in _norm_batches(dtype):
            state = rs.update(state, O.jnp.asarray(X))
            if merge == "batch":
                norm.merge(X.shape[0], X.mean(0, dtype=np.float64), ((X - X.mean(0, dtype=np.float64)) ** 2).sum(0))
            else:
                for row in X.astype(np.float64):
                    norm.merge(1, row, np.zeros(D_OBS))
            mean, std = norm.frozen()
            assert float(state.count) == norm.count
            assert_values_close("mean", mean, np.asarray(state.mean), tol)
            if norm.count >= 2:
                assert_values_close("std", std, np.asarray(state.std), tol)
            else:   # documented difference: one observation -> refsnn std 1, Brax clip(0, 1e-6)
                assert np.all(std == 1.0) and np.allclose(np.asarray(state.std), 1e-6)


# ---------------------------------------------------------------------------------------------
# the update: centered ranks, NES estimate, Adam, clip
# ---------------------------------------------------------------------------------------------
KEYS = {"in": "kernel_in", "h": "kernel_h", "out": "kernel_out"}
RETURNS_DISTINCT = (np.random.default_rng(5).permutation(18) * 1.5 - 3.0).astype(np.float32)
RETURNS_TIED = np.array([1, 2, 2, 0, 1, 2, 0, 0, 1, 2, 1, 1, 0, 2, 2, 1, 5, 5], np.float32)
P_STOCH, E_EVAL = 16, 2


def _authors_generations(dtype, returns, generations: int, N: int = 7, seed: int = 3):
    """The authors' runner (``ec._runner_init`` + ``ec._runnner_run``, optimiser built as ``ec.main``
    builds it with ``weight_decay = 0``) on the stand-ins of :func:`original_support.make_runner_standins`.
    Returns the initial parameters and, per generation, ``(sampled population {key: (P+E, ...) bool},
    params after the update, Adam state with ``m = -mu``)``."""
    jax, jnp, ec, optax = O.jax, O.jnp, O.ec, O.optax
    with _x64(dtype):
        env, factory = support.make_runner_standins(O, obs_dim=3, act_dim=2, returns=returns)
        jd = jnp.dtype(dtype)
        optim = optax.chain(optax.scale_by_adam(mu_dtype=jd), optax.identity(), optax.scale(-0.15))
        conf = ec.ESConfig(network_cls=factory(N, jd), optim_cls=optim, env_cls=env, pop_size=len(returns),
                           lr=0.15, eps=1e-3, eval_size=E_EVAL, p_dtype=jd, network_dtype=jd)
        key_run, key_init = jax.random.split(jax.random.PRNGKey(seed))
        runner = ec._runner_init(key_run, key_init, conf)
        initial = {k: np.asarray(runner.params[v]) for k, v in KEYS.items()}
        out = []
        for _ in range(generations):
            runner, metrics = ec._runnner_run(runner, conf)
            adam = runner.opt_state[0]
            out.append(({k: np.asarray(metrics[f"population.{v}"]) for k, v in KEYS.items()},
                        {k: np.asarray(runner.params[v]) for k, v in KEYS.items()},
                        {"m": {k: -np.asarray(adam.mu[v]) for k, v in KEYS.items()},
                         "v": {k: np.asarray(adam.nu[v]) for k, v in KEYS.items()}, "t": int(adam.count)}))
    return initial, out


def check_update_against_authors(dtype, returns, generations: int, ties: str, *, lr: float = 0.15,
                                 N: int = 7) -> None:
    """Run refsnn's ``nes_step`` on the authors' sampled populations and the same returns, generation
    after generation, and compare parameters and Adam state (tolerances: module docstring)."""
    f64 = np.dtype(dtype) == np.float64
    initial, gens = _authors_generations(dtype, returns, generations, N)
    rho = {k: np.asarray(a, np.float64) for k, a in initial.items()}
    assert all(np.all(r == 0.5) for r in rho.values())
    opt = nes.Adam({k: r.shape for k, r in rho.items()}, lr=lr)
    fitness = np.asarray(returns[:P_STOCH], np.float64)
    g_tiny, rho_tol, m_tol, v_tol = (1e-9, 1e-12, 1e-15, 1e-15) if f64 else (1e-4, 2e-5, 1e-7, 1e-10)
    sensitive = {k: np.zeros(r.shape, bool) for k, r in rho.items()}
    theirs = initial
    for gen, (population, params, adam) in enumerate(gens):
        det = nes.deterministic_connectivity(theirs)   # on the authors' rho: entries at 0.5 +- rounding
        theirs = params
        thetas = {}
        for k in rho:
            assert np.array_equal(population[k][P_STOCH:], np.broadcast_to(det[k], population[k][P_STOCH:].shape)), \
                f"generation {gen}: the authors' deterministic members are not rho > 0.5 ({k})"
            thetas[k] = population[k][:P_STOCH]
            g = nes.nes_gradient(nes.centered_ranks(fitness, ties=ties), thetas[k], rho[k])
            sensitive[k] |= np.abs(g) <= g_tiny
        rho = nes.nes_step(rho, thetas, fitness, opt, eps=1e-3, ties=ties)
        assert opt.t == adam["t"] == gen + 1
        for k in rho:
            where = f"generation {gen}, {k}"
            assert_values_close(f"{where}: Adam m", opt.m[k], adam["m"][k], m_tol)
            assert_values_close(f"{where}: Adam v", opt.v[k], adam["v"][k], v_tol)
            ok = ~sensitive[k]
            assert_values_close(f"{where}: rho", rho[k][ok], params[k][ok], rho_tol)
            if f64:
                assert_values_close(f"{where}: rho (estimate 0 up to rounding)", rho[k][~ok], params[k][~ok], 1e-8)
            else:
                assert ok.mean() > 0.5, f"{where}: too few entries with a clear estimate to compare"


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("generations, N", [(1, 7), (3, 33)])
def test_update_distinct_returns_matches_authors(dtype, generations, N):
    for ties in nes.RANK_TIES:   # identical when the returns are distinct
        check_update_against_authors(dtype, RETURNS_DISTINCT, generations, ties, N=N)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_update_tied_returns_ordinal_matches_authors(dtype):
    check_update_against_authors(dtype, RETURNS_TIED, 2, "ordinal")


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_update_tied_returns_average_differs_from_authors(dtype):
    """Documented difference: averaged ties (refsnn's default) are not the authors' positional ranks."""
    with pytest.raises(AssertionError, match="refsnn - authors"):
        check_update_against_authors(dtype, RETURNS_TIED, 1, "average")
    _, [(population, params, _)] = _authors_generations(dtype, RETURNS_TIED, 1)
    fitness = np.asarray(RETURNS_TIED[:P_STOCH], np.float64)
    thetas = {k: population[k][:P_STOCH] for k in KEYS}
    rho = nes.nes_step({k: np.full(a.shape, 0.5) for k, a in params.items()}, thetas, fitness,
                       nes.Adam({k: a.shape for k, a in params.items()}), ties="average")
    assert max(float(np.abs(rho[k] - params[k]).max()) for k in KEYS) > 0.1   # a real difference


def _authors_centered_ranks(f, dtype):
    with _x64(dtype):
        return np.asarray(O.ec._centered_rank_transform(O.jnp.asarray(f, O.jnp.dtype(dtype))))


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_centered_ranks_match_authors(dtype):
    rng = np.random.default_rng(6)
    distinct = rng.standard_normal(33)
    tied = rng.integers(0, 4, 33).astype(np.float64)
    tol = 0.0 if np.dtype(dtype) == np.float64 else 1e-7   # authors: int ranks / (P-1) in the dtype
    for ties in nes.RANK_TIES:
        assert_values_close(f"ranks ({ties}, distinct)", nes.centered_ranks(distinct, ties=ties),
                            _authors_centered_ranks(distinct, dtype), tol)
    assert_values_close("ranks (ordinal, tied)", nes.centered_ranks(tied, ties="ordinal"),
                        _authors_centered_ranks(tied, dtype), tol)
    assert np.abs(nes.centered_ranks(tied, ties="average") - _authors_centered_ranks(tied, dtype)).max() > 0.01


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=2, max_size=12))
def test_ordinal_ranks_equal_authors_bit_for_bit(values):
    f = np.array(values, dtype=np.float64)
    assert np.array_equal(nes.centered_ranks(f, ties="ordinal"), _authors_centered_ranks(f, np.float64))


# ---------------------------------------------------------------------------------------------
# the suite can fail: the same comparisons against a perturbed refsnn
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_comparison_catches_a_perturbed_network(monkeypatch, dtype):
    """R_in off by 1e-9 (float64) / 1e-4 (float32) relative makes the RSNN comparison fail."""
    rel = 1e-9 if np.dtype(dtype) == np.float64 else 1e-4
    real = cuba.CubaConfig.constants

    def perturbed(self, d_in, dtype_):
        c = real(self, d_in, dtype_)
        return c._replace(r_in=c.r_in * c.r_in.dtype.type(1 + rel))

    monkeypatch.setattr(cuba.CubaConfig, "constants", perturbed)
    theirs = _authors_trajectory(1, np.dtype(dtype).name)
    mine, _, _ = _refsnn_trajectory("dense", 1, dtype)
    with pytest.raises(AssertionError, match="refsnn - authors|diverges|without a spike flip"):
        assert_trajectories_match(dtype, [compare_step(dtype, m, c, y) for m, (c, y) in zip(mine, theirs)])


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_comparison_catches_a_perturbed_update(dtype):
    """A learning rate off by 1e-6 (float64) / 1e-3 (float32) relative makes the update comparison fail."""
    rel = 1e-6 if np.dtype(dtype) == np.float64 else 1e-3
    with pytest.raises(AssertionError, match="rho"):
        check_update_against_authors(dtype, RETURNS_DISTINCT, 1, "ordinal", lr=0.15 * (1 + rel))

