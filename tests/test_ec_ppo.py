"""SG-RSNN trained by PPO (refsnn.ec.ppo): GAE, the PPO loss's hand-written gradient against finite
differences (relaxed mode, float64), the rollout and windows, one update, the deterministic policy."""
from __future__ import annotations

import numpy as np
import pytest
from strategies import central_diff

from refsnn.ec import ppo
from refsnn.ec.policy import make_family
from refsnn.ec.rollout import check_env
from refsnn.kernels import cuba
from refsnn.kernels.cuba_bptt import effective_recurrent


def test_gae_by_hand():
    r = np.array([[1.0], [2.0], [3.0]])
    v = np.array([[0.5], [1.0], [1.5]])
    d = np.array([[0.0], [1.0], [0.0]])       # the episode ends after step 1; step 2 starts another
    adv, ret = ppo.gae(r, v, d, np.array([2.0]), gamma=0.9, lam=0.8)
    d2 = 3.0 + 0.9 * 2.0 - 1.5
    d1 = 2.0 - 1.0                            # no bootstrap after a done
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    np.testing.assert_allclose(adv[:, 0], [d0 + 0.9 * 0.8 * d1, d1, d2])
    np.testing.assert_allclose(ret, adv + v)


def _mb(seed=0, M=3, L=4, obs=3, N=6, A=2, dtype=np.float64):
    cfg = cuba.CubaConfig(n_neurons=N, dt=0.5, sim_time=2.0, sparsity=1.0, dale=True)
    rng = np.random.default_rng(seed)
    params = ppo.init_params(cfg, obs, A, seed, dtype=dtype)
    params["w_v"] = rng.normal(0, 1, N)
    params["b_v"] = np.array([0.3])
    params["log_std"] = rng.normal(0, 0.3, A)
    mask = np.zeros((M, L), bool)
    mask[1, 2] = True
    batch = {"obs": rng.normal(0, 1, (M, L, obs)),
             "state": (rng.uniform(0, 1, (M, N)), np.zeros((M, N)), np.zeros((M, N)), np.zeros((M, N))),
             "resets": (mask, rng.uniform(0, 1, (M, L, N))), "actions": rng.normal(0, 1, (M, L, A)),
             "logp": rng.normal(-2, 0.5, (M, L)), "adv": rng.normal(0, 1, (M, L)), "ret": rng.normal(0, 1, (M, L)),
             "value": rng.normal(0, 1, (M, L))}
    return cfg, obs, params, batch


@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
def test_ppo_loss_gradient_matches_finite_differences(ent_coef):
    """Relaxed mode (spikes = the surrogate's primitive), undetached reset, float64: the PPO loss is
    a smooth function away from the clip kinks and its hand-written gradient (heads + BPTT) is exact."""
    cfg, obs, params, batch = _mb()
    s = ppo.PPOSettings(window=4, n_steps=4, ent_coef=ent_coef, clip=0.2, detach_reset=False)
    loss, g, st = ppo.loss_and_grads(cfg, obs, params, batch, s, relaxed=True)
    assert np.isfinite(loss) and 0 <= st["clip_frac"] <= 1
    for k in ppo.PARAM_KEYS:
        fd = central_diff(lambda: ppo.loss_and_grads(cfg, obs, params, batch, s, relaxed=True)[0], params[k])
        np.testing.assert_allclose(g[k], fd, rtol=1e-5, atol=1e-8, err_msg=k)


def test_settings_errors_name_the_field():
    with pytest.raises(ValueError, match="^window"):
        ppo.PPOSettings(n_steps=100, window=16)
    with pytest.raises(ValueError, match="^surrogate"):
        ppo.PPOSettings(surrogate="relu")
    with pytest.raises(ValueError, match="^gamma"):
        ppo.PPOSettings(gamma=1.5)


def test_rollout_windows_update_and_deterministic_policy():
    """A short Hopper rollout: shapes, resets recorded, the windows' recomputed rates give ratio 1 and
    the rollout's values at the first epoch; one update changes the parameters; the deterministic
    SGFamily policy is clip(mu) of the same network."""
    env_id = "Hopper-v5"
    envs = [check_env(env_id, 30)[0] for _ in range(2)]
    obs, act = envs[0].observation_space.shape[0], envs[0].action_space.shape[0]
    cfg = ppo.sg_config(16)
    s = ppo.PPOSettings(n_envs=2, n_steps=40, window=8, minibatch_windows=4, epochs=2)
    params = ppo.init_params(cfg, obs, act, 0)
    ro = ppo.collect(cfg, obs, params, envs, np.zeros(obs), np.ones(obs), 1.0, 0, 0, s)
    assert ro["obs"].shape == (40, 2, obs) and ro["actions"].shape == (40, 2, act)
    assert ro["reset"][0].all() and (ro["done"].sum(0) >= 1).all()     # 30-step cap: every env resets
    ends = np.argwhere(ro["done"][:-1] > 0)
    assert all(ro["reset"][t + 1, e] for t, e in ends)
    adv, ret = ppo.gae(ro["reward"], ro["value"], ro["done"], ro["last_value"], s.gamma, s.gae_lambda)
    w = ppo.make_windows(ro, adv, ret, s)
    assert w["obs"].shape == (2 * 5, 8, obs)
    # recomputing the windows from their recorded start states reproduces the rollout's network
    loss, g, st = ppo.loss_and_grads(cfg, obs, params, w, s)
    assert abs(st["approx_kl"]) < 1e-6 and st["clip_frac"] == 0.0
    new, opt, stats = ppo.update(cfg, obs, params, ({k: np.zeros(v.shape) for k, v in params.items()},
                                                    {k: np.zeros(v.shape) for k, v in params.items()}, 0), w, s, 0, 0)
    assert opt[2] == 2 * 3 and stats["grad_norm"] > 0          # 10 windows / 4 per minibatch = 3, 2 epochs
    assert not np.array_equal(new["W_h"], params["W_h"])
    # the deterministic policy: float_env_step with the effective weights = clip(mu)
    fam = make_family("sg-ppo", {"n_neurons": 16}, obs, act)
    b = fam.build(params, 0, 0, [0], 0)
    x = np.random.default_rng(0).normal(size=(1, obs))
    state0 = tuple(a.copy() for a in b.state)
    a_det, _ = fam.step(b, x, np.array([True]))
    from refsnn.kernels.cuba_bptt import rsnn_forward
    rates, _, _ = rsnn_forward(cfg, x[:, None].astype(np.float32), params["W_in"], params["W_h"], state0, d_in=obs)
    mu, _ = ppo.heads(cfg, obs, params, rates[:, 0])
    np.testing.assert_allclose(a_det, np.clip(mu, -1, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(b.arrays[1][0], effective_recurrent(cfg, params["W_h"]))
    with pytest.raises(ValueError, match="^index"):
        fam.build(params, 0, 0, [0], 1)
    for e in envs:
        e.close()


def _tiny(tmp_path, name, **kw):
    from refsnn.commands.ec import ECConfig
    base = dict(method="sg-ppo", neurons=16, generations=3, ppo_envs=2, ppo_steps=32, ppo_window=8,
                ppo_minibatch=4, ppo_epochs=2, eval_members=2, max_steps=60, workers=0, out=str(tmp_path / name))
    base.update(kw)
    return ECConfig(**base)


def _train(cfg, **kw):
    from refsnn.commands.ec import run
    return run(cfg, log=lambda *a: None, **kw)


def test_sgppo_command_resumes_exactly_plays_and_ignores_workers(tmp_path):
    import json

    from refsnn.commands import play as play_cmd
    from refsnn.commands.play import PlayConfig
    from refsnn.io import load_npz
    full = _train(_tiny(tmp_path, "full"))
    _train(_tiny(tmp_path, "part", generations=1))
    part = _train(_tiny(tmp_path, "part", resume=True))
    _train(_tiny(tmp_path, "w2", workers=2))            # the deterministic episodes on a process pool
    a = load_npz(tmp_path / "full" / "checkpoint.npz")
    for other in ("part", "w2"):
        b = load_npz(tmp_path / other / "checkpoint.npz")
        for k in a:
            if k.startswith(("param.", "opt.", "norm.", "rnorm.")):
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{other} {k}")
    assert full["final_deterministic_return"] == part["final_deterministic_return"]
    assert full["generations"] == 3 and full["env_steps"] > 3 * 2 * 32
    rep = play_cmd.run(PlayConfig(str(tmp_path / "full"), replay=True))
    assert rep["mean_return"] == rep["recorded_det_return"] == full["final_deterministic_return"]
    conf = json.loads((tmp_path / "full" / "config.json").read_text())
    assert (conf["lr"], conf["surrogate"], conf["detach_reset"]) == (3e-4, "atan", False)
    with pytest.raises(ValueError, match=r"different settings for \['surrogate'\]"):
        _train(_tiny(tmp_path, "full", generations=4, resume=True, surrogate="sigmoid"))


def test_sgppo_stops_cleanly_when_the_bptt_diverges(tmp_path, monkeypatch):
    """A non-finite gradient stops the run after the last completed iteration (checkpoint, metrics and
    summary intact, ``diverged`` recorded) instead of failing later on NaN weights."""
    import json

    from refsnn.ec import ppo

    real = ppo.iterate

    def iterate(cfg, obs_dim, state, envs, s, seed):
        if state.iteration == 2:
            raise ppo.Diverged("iteration 2: the gradient is not finite (norm inf)")
        return real(cfg, obs_dim, state, envs, s, seed)
    monkeypatch.setattr(ppo, "iterate", iterate)
    lines = []
    from refsnn.commands.ec import run
    summary = run(_tiny(tmp_path, "d", generations=5), log=lines.append)
    assert summary["diverged"] and summary["diverged_at_iteration"] == 3 and summary["generations"] == 2
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["diverged"]
    assert any(line.startswith("stopping: diverged at iteration 2") for line in lines)
    assert len((tmp_path / "d" / "metrics.csv").read_text().strip().splitlines()) == 1 + 2


def test_sgppo_options_errors_name_the_option():
    from refsnn.commands.ec import ECConfig
    with pytest.raises(ValueError, match="^ppo_window"):
        ECConfig(method="sg-ppo", ppo_steps=100, ppo_window=16)
    with pytest.raises(ValueError, match="^ppo_gamma"):
        ECConfig(method="sg-ppo", ppo_gamma=2.0)
    with pytest.raises(ValueError, match="^surrogate_alpha"):
        ECConfig(method="sg-ppo", surrogate_alpha=-1.0)
    assert ECConfig(method="sg-ppo").lr == 3e-4 and ECConfig(method="sg-ppo", population=7).population == 7


def test_ppo_state_round_trip_and_iterate_does_not_modify_its_input():
    env_id = "Hopper-v5"
    envs = [check_env(env_id, 20)[0] for _ in range(2)]
    obs, act = envs[0].observation_space.shape[0], envs[0].action_space.shape[0]
    cfg = ppo.sg_config(8)
    s = ppo.PPOSettings(n_envs=2, n_steps=16, window=8, minibatch_windows=2, epochs=1)
    st0 = ppo.init_state(cfg, obs, act, 3)
    before = {k: v.copy() for k, v in st0.state_arrays().items()}
    st1, info = ppo.iterate(cfg, obs, st0, envs, s, 3)
    for k, v in st0.state_arrays().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)     # a state is a value
    assert st1.iteration == 1 and st1.t == 2 and info["steps"] == 32 and st1.obs_norm.count == 32
    assert st1.reward_std() > 0 and st1.reward_norm.count == 32
    back = ppo.state_from_arrays(cfg, obs, act, st1.state_arrays())
    for k, v in st1.state_arrays().items():
        np.testing.assert_array_equal(back.state_arrays()[k], v, err_msg=k)
    bad = st1.state_arrays()
    del bad["rnorm.m2"]
    with pytest.raises(ValueError, match=r"^rnorm\.m2"):
        ppo.state_from_arrays(cfg, obs, act, bad)
    bad = st1.state_arrays()
    bad["param.W_h"] = bad["param.W_h"][:2]
    with pytest.raises(ValueError, match=r"^param\.W_h"):
        ppo.state_from_arrays(cfg, obs, act, bad)
    for e in envs:
        e.close()
