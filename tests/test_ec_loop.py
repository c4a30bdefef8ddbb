"""``refsnn ec``'s one loop for the five methods (refsnn.ec.method): every method's step gives the same
info keys with the same meanings, every run writes the same metrics columns, measured the same way."""
from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest

from refsnn.commands.ec import COLUMNS, ECConfig, run
from refsnn.commands.ec_progress import Progress
from refsnn.ec import ppo
from refsnn.ec.method import INFO_KEYS, Evolution, PPOMethod, make_method
from refsnn.ec.rollout import Evaluator
from refsnn.ec.strategy import ECStrategy, RNNStrategy, make_strategy
from refsnn.io import load_npz

METHODS = ("ec", "es", "es-gru", "es-lstm", "sg-ppo")
TINY = dict(env="Hopper-v5", neurons=8, population=4, eval_members=2, max_steps=20, workers=0, ppo_envs=2,
            ppo_steps=16, ppo_window=8, ppo_minibatch=2, ppo_epochs=1)
SPIKING = {"ec": True, "es": True, "es-gru": False, "es-lstm": False, "sg-ppo": True}


def _metrics(path) -> tuple[list[str], dict[str, np.ndarray]]:
    with open(path / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], {c: np.array([float(r[i]) for r in rows[1:]]) for i, c in enumerate(rows[0])}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_the_same_columns_with_the_same_meanings(tmp_path, method):
    out = tmp_path / method
    summary = run(ECConfig(method=method, generations=2, out=str(out), **TINY), log=lambda *a: None)
    header, m = _metrics(out)
    assert header == list(COLUMNS)
    np.testing.assert_array_equal(m["generation"], [1, 2])
    # env_steps: the run's cumulative environment steps, the summary's and the checkpoint's
    ck = load_npz(out / "checkpoint.npz")
    assert m["env_steps"][-1] == summary["env_steps"] == int(ck["env_steps"]) and np.all(np.diff(m["env_steps"]) > 0)
    assert m["env_steps"][0] > 0
    # det_return: the deterministic episodes of the deployed parameters
    dep = load_npz(out / "deployed.npz")
    assert summary["final_deterministic_return"] == float(dep["det_return"])
    assert m["det_return"][-1] == pytest.approx(float(dep["det_return"]), rel=1e-5)   # csv: 6 digits
    assert int(dep["generation"]) == 2
    assert np.all(m["mean_return"][np.isfinite(m["mean_return"])] <= m["max_return"][np.isfinite(m["max_return"])])
    # the entropy of rho is EC's alone; a spiking policy fires, an RNN reports 0 Hz
    assert np.isfinite(m["rho_entropy"]).all() == (method == "ec") and np.isnan(m["rho_entropy"]).all() != (
        method == "ec")
    assert (m["firing_rate_hz"] >= 0).all() and (m["firing_rate_hz"] > 0).any() == SPIKING[method]
    for c in ("steps_per_s", "policy_over_env", "elapsed_s"):
        assert np.isfinite(m[c]).all() and (m[c] > 0).all(), c
    assert np.all(np.diff(m["elapsed_s"]) > 0)
    conf = json.loads((out / "summary.json").read_text())
    assert conf["generations"] == 2 and conf["method"] == method


def _evaluator():
    from refsnn.parallel import InlineExecutor
    return Evaluator(executor=InlineExecutor(), chunks=1)


@pytest.mark.parametrize("method", METHODS)
def test_step_info_keys_and_timings_mean_the_same_for_every_method(method):
    """``step`` gives the same keys for all five; ``policy_s`` and ``env_s`` are disjoint parts of the
    step's wall time (policy: everything but the environments), ``env_steps`` counts its env steps."""
    cfg = ECConfig(method=method, **TINY)
    settings = ppo.PPOSettings(n_envs=2, n_steps=16, window=8, minibatch_windows=2, epochs=1)
    with make_method(method, 11, 3, env_id="Hopper-v5", max_steps=20, ppo_settings=settings, neurons=8,
                     population=4, eval_members=2, lr=cfg.lr, eps=cfg.eps, gradient="natural", sigma=cfg.sigma,
                     weight_decay=0.1, fitness_shift=1.0, seed=0, kl_max=0.0) as m, _evaluator() as ev:
        state = m.init()
        t0 = time.perf_counter()
        new, info = m.step(state, ev)
        wall = time.perf_counter() - t0
    assert set(info) == set(INFO_KEYS)
    assert new.generation == info["generation"] == state.generation + 1 == 1
    assert 0 < info["policy_s"] and 0 < info["env_s"] and info["policy_s"] + info["env_s"] <= wall
    params, mean, std = info["deployed"]
    assert mean.shape == std.shape == (11,)
    assert set(params) == {k[len("param."):] for k in state.state_arrays() if k.startswith("param.")}
    if method == "sg-ppo":   # the rollout's 2 x 16 steps and the deterministic episodes
        assert info["env_steps"] == info["steps"] > 32 and info["fitness"].size == 0
        assert isinstance(info["summary"]["ppo"]["approx_kl"], float) and info["summary"]["fitness_shift"] is None
    else:                    # one episode per member: the protocol's steps are the members' lengths
        assert info["env_steps"] == info["steps"] and info["fitness"].shape == (4,)
        assert info["summary"] == {"fitness_shift": 1.0}
    assert math.isfinite(info["param_rms"]) and isinstance(info["progress"], str)


def test_make_strategy_never_returns_a_wrong_strategy_for_sg_ppo():
    with pytest.raises(ValueError, match="^method: sg-ppo is trained by PPO"):
        make_strategy("sg-ppo", 3, 2, neurons=4, population=4, eval_members=1, lr=3e-4, seed=0, fitness_shift=0.0)
    m = make_method("sg-ppo", 3, 2, env_id="Hopper-v5", max_steps=10, neurons=4, eval_members=1, seed=0,
                    population=4, sigma=0.3)
    assert isinstance(m, PPOMethod) and m.method == "sg-ppo" and m.settings == ppo.PPOSettings()
    ec = make_method("ec", 3, 2, env_id="Hopper-v5", max_steps=10, neurons=4, population=4, eval_members=1, lr=0.1,
                     seed=0, fitness_shift=0.0, sigma=0.3)
    assert isinstance(ec, Evolution) and isinstance(ec.strategy, ECStrategy)
    gru = make_method("es-gru", 3, 2, env_id="Hopper-v5", max_steps=10, neurons=4, population=4, eval_members=1,
                      lr=0.1, seed=0, fitness_shift=0.0)
    assert isinstance(gru.strategy, RNNStrategy) and gru.name == "ES-GRU"
    with pytest.raises(ValueError, match="^episodes"):
        make_method("sg-ppo", 3, 2, env_id="Hopper-v5", max_steps=10, episodes="fill")


def test_state_round_trips_through_the_checkpoint_arrays():
    for method in ("ec", "sg-ppo"):
        m = make_method(method, 3, 2, env_id="Hopper-v5", max_steps=10, neurons=4, population=4, eval_members=1,
                        lr=0.1, seed=0, fitness_shift=0.0)
        arrays = m.state_arrays(m.init())
        assert set(m.checkpoint_keys) <= set(arrays)
        back = m.from_state_arrays(arrays).state_arrays()
        assert list(back) == list(arrays)
        for k in arrays:
            np.testing.assert_array_equal(back[k], arrays[k], err_msg=f"{method} {k}")


def test_metrics_rows_are_named():
    prog = Progress()
    row = {c: float(i) for i, c in enumerate(COLUMNS)}
    prog.add_row(row)
    assert prog.rows() == [row] and prog.column("env_steps")[0] == COLUMNS.index("env_steps")
    with pytest.raises(ValueError, match="^row"):
        prog.add_row({k: v for k, v in row.items() if k != "det_return"})
