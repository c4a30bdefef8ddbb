"""SPEC §5.4, §5.5, §8: rollouts, worker-count independence, resume, CLI, play, errors."""
from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest

from refsnn import cli
from refsnn.ec import nes
from refsnn.commands.ec import COLUMNS, ECArgs, train
from refsnn.ec.policy import ECFamily, ESFamily, es_gradient
from refsnn.ec.rollout import RunningNorm, Task, check_env, evaluate_chunk
from refsnn.io import load_npz
from refsnn.kernels.cuba import CubaConfig

TIME_COLS = [COLUMNS.index(c) for c in ("steps_per_s", "policy_over_env", "elapsed_s")]
KEEP = [i for i in range(len(COLUMNS)) if i not in TIME_COLS]


def _tiny(tmp_path, name, **kw):
    base = dict(generations=3, population=8, eval_members=2, max_steps=50, neurons=64, workers=0,
                out=str(tmp_path / name))
    base.update(kw)
    return ECArgs(**base)


def _same_run(d1, d2):
    a, b = load_npz(d1 / "checkpoint.npz"), load_npz(d2 / "checkpoint.npz")
    for k in a:
        if k in ("wall_seconds", "config_json"):
            continue
        if k == "history":
            np.testing.assert_array_equal(a[k][:, KEEP], b[k][:, KEEP])
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert set(a) == set(b)


def test_running_norm_matches_numpy():
    rng = np.random.default_rng(0)
    data = [rng.normal(3, 2, size=(n, 4)) for n in (5, 1, 17)]
    norm = RunningNorm(4)
    for x in data:
        norm.merge(len(x), x.mean(0), ((x - x.mean(0)) ** 2).sum(0))
    allx = np.concatenate(data)
    np.testing.assert_allclose(norm.mean, allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.std(), allx.std(0), rtol=1e-12)
    assert (RunningNorm(3).std() == 1).all()


def test_results_independent_of_workers_and_chunks(tmp_path):
    train(_tiny(tmp_path, "w0", generations=2))
    train(_tiny(tmp_path, "w2", generations=2, workers=2))       # spawned process pool
    _same_run(tmp_path / "w0", tmp_path / "w2")
    from refsnn.parallel import InlineExecutor
    train(_tiny(tmp_path, "c5", generations=2), executor=InlineExecutor(), chunks=5)
    _same_run(tmp_path / "w0", tmp_path / "c5")


@pytest.mark.parametrize("method", ["ec", "es"])
def test_resume_reproduces_uninterrupted_run(tmp_path, method):
    s3 = train(_tiny(tmp_path, "full", method=method))
    train(_tiny(tmp_path, "part", method=method, generations=2))
    s = train(_tiny(tmp_path, "part", method=method, generations=3, resume=True))
    _same_run(tmp_path / "full", tmp_path / "part")
    assert s["generations"] == 3 and s3["final_deterministic_return"] == s["final_deterministic_return"]
    lines = (tmp_path / "part" / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == list(COLUMNS) and len(lines) == 4
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    for k in ("final_deterministic_return", "best_deterministic_return", "generations", "env_steps", "wall_seconds"):
        assert k in summary
    env = json.loads((tmp_path / "part" / "environment.json").read_text())
    assert env["gymnasium"] == gym.__version__ and env["numpy"] == np.__version__
    from PIL import Image
    with Image.open(tmp_path / "part" / "learning_curve.png") as im:
        assert im.size[0] > 100


def test_corrupt_or_mismatched_checkpoint(tmp_path):
    a = _tiny(tmp_path, "r", generations=1)
    train(a)
    with pytest.raises(ValueError, match="population"):
        train(_tiny(tmp_path, "r", generations=2, population=10, resume=True))
    with pytest.raises(ValueError, match="--resume"):
        train(_tiny(tmp_path, "r", generations=2))
    (tmp_path / "r" / ".lock").write_text(str(os.getppid()))   # a live process holds the directory
    with pytest.raises(ValueError, match="in use by another run"):
        train(_tiny(tmp_path, "r", generations=2, resume=True))
    (tmp_path / "r" / ".lock").write_text("999999999")          # stale lock: ignored
    train(_tiny(tmp_path, "r", generations=1, resume=True))
    p = tmp_path / "r" / "checkpoint.npz"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match="checkpoint.npz"):
        train(_tiny(tmp_path, "r", generations=2, resume=True))


class _DictObsEnv(gym.Env):
    observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,))})
    action_space = gym.spaces.Box(-1, 1, (1,))


def test_env_errors():
    with pytest.raises(ValueError, match="unknown Gymnasium environment id 'NoSuchEnv-v0'"):
        check_env("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="Discrete action space"):
        check_env("CartPole-v1")
    gym.register(id="RefsnnDictObs-v0", entry_point=_DictObsEnv)
    with pytest.raises(ValueError, match="Dict observation space"):
        check_env("RefsnnDictObs-v0")
    with pytest.raises(ValueError, match="population"):
        ECArgs(method="es", population=7).validate()


def test_cli_ec_and_play(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli.main(["ec", "--env", "Hopper-v5", "--generations", "2", "--population", "6", "--eval-members", "1",
                   "--max-steps", "40", "--neurons", "64", "--workers", "0", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "gen    2/2" in text and "ETA" in text and "steps/s" in text
    assert cli.main(["play", str(out), "--episodes", "2"]) == 0
    assert "mean return" in capsys.readouterr().out
    # the deployed bits reproduce the deterministic network of rho
    from refsnn.commands.play import play
    from refsnn.commands.ec import load_deployed
    conf, params = load_deployed(out / "deployed.npz")
    rho = {k: np.where(v > 0.5, 0.9, 0.1) for k, v in params.items()}
    task = Task("ec", {"n_neurons": 64}, 0.3, "Hopper-v5", 40, rho, conf["norm_mean"], conf["norm_std"],
                0, 0, (0, 1), 0)
    np.testing.assert_array_equal(evaluate_chunk(task)["returns"], play(out, episodes=2)["returns"])
    assert cli.main(["play", str(tmp_path / "nope")]) == 2
    # --replay reruns the last generation's deterministic evaluation: exactly the recorded return
    rep = play(out, replay=True)
    assert rep["generation"] == 2 and rep["mean_return"] == rep["recorded_det_return"]
    det = [float(r.split(",")[3]) for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert np.isclose(rep["mean_return"], det[-1], rtol=1e-5)
    assert cli.main(["play", str(out), "--replay"]) == 0
    assert "recorded deterministic return" in capsys.readouterr().out


def test_ec_member_rebuild_is_deterministic():
    fam = ECFamily(CubaConfig(n_neurons=64), 3, 2)
    rho = {k: np.full(s, 0.3) for k, s in fam.shapes().items()}
    b1 = fam.build(rho, 5, 2, [0, 3, 9], 8)
    b2 = fam.build(rho, 5, 2, [3], 8)
    np.testing.assert_array_equal(b1.arrays[1][1], b2.arrays[1][0])
    np.testing.assert_array_equal(b1.state[0][1], b2.state[0][0])
    assert b1.env_seeds[1] == b2.env_seeds[0]
    # deterministic member (index >= P) uses rho > 0.5 -> all zero at rho 0.3
    assert not b1.arrays[1][2].any()


def test_es_pairs_and_gradient():
    fam = ESFamily(CubaConfig(n_neurons=8, dale=False, sparsity=1.0), 2, 1, sigma=0.3)
    c = fam.init_params(0)
    e0, v0, w0 = fam.member(c, 0, 1, 0, 4)
    e1, v1, w1 = fam.member(c, 0, 1, 1, 4)
    assert e0 == e1 and np.array_equal(v0, v1)
    np.testing.assert_allclose(w0["h"] + w1["h"], 2 * c["h"])
    # fitness = +1 for the '+' member of pair 0 only -> gradient along +eps_0
    g = es_gradient(fam, c, np.array([1.0, 0.0, 0.0, 0.0]), 0, 1)
    eps0 = fam.noise(0, 1, 0)
    assert np.sum(g["h"] * eps0["h"]) > 0


def test_dask_executor_matches_local(tmp_path):
    distributed = pytest.importorskip("distributed")
    train(_tiny(tmp_path, "local", generations=1))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        train(_tiny(tmp_path, "dask", generations=1, executor="dask", scheduler=cluster.scheduler_address))
    _same_run(tmp_path / "local", tmp_path / "dask")


@pytest.mark.slow
def test_demo_ec(tmp_path):
    from refsnn.commands.demo import demo_ec
    r = demo_ec(tmp_path, generations=2, population=8, max_steps=100, log=lambda *a: None)
    assert r["ec_generations"] == 2 and r["ec_env_steps"] > 0
    assert (tmp_path / "ec" / "learning_curve.png").exists()


def test_evaluated_connectivity_is_the_one_in_the_update():
    """The workers' networks (ECFamily.build) hold exactly the theta_i that ec_gradient regenerates
    from (seed, generation, i), for stochastic and deterministic members."""
    from refsnn.ec.policy import ec_gradient
    from refsnn.kernels.cuba import unpack_hidden
    fam = ECFamily(CubaConfig(n_neurons=70), 3, 2)
    rng = np.random.default_rng(0)
    rho = {k: rng.uniform(0.05, 0.95, s) for k, s in fam.shapes().items()}
    P = 5
    b = fam.build(rho, 7, 3, list(range(P + 2)), P)
    C_in, Chp, C_out = b.arrays
    for i in range(P + 2):
        th = fam.member(rho, 7, 3, i, P)[2]
        np.testing.assert_array_equal(C_in[i], th["in"])
        np.testing.assert_array_equal(unpack_hidden(Chp[i], 70, fam.cfg.n_exc), th["h"])
        np.testing.assert_array_equal(C_out[i], th["out"])
    # member 0 best, the rest tied: the estimate points from rho towards theta_0
    f = np.array([1.0] + [0.0] * (P - 1))
    g = ec_gradient(fam, rho, f, 7, 3)
    th0 = fam.member(rho, 7, 3, 0, P)[2]
    w = nes.centered_ranks(f)
    np.testing.assert_allclose(g["h"], sum(w[i] * (fam.member(rho, 7, 3, i, P)[2]["h"] - rho["h"])
                                           for i in range(P)) / P)
    assert np.all(g["h"][th0["h"]] >= -1e-12) and np.all(g["h"][~th0["h"]] <= 1e-12)   # ascent towards theta_0


def test_fitness_shift_auto_is_the_alive_bonus():
    from refsnn.commands.ec import resolve_fitness_shift, _shift_arg
    assert ECArgs().fitness_shift is None and _shift_arg("auto") is None and _shift_arg("0") == 0.0
    for env_id, bonus in (("Hopper-v5", 1.0), ("Walker2d-v5", 1.0), ("Humanoid-v5", 5.0), ("Pendulum-v1", 0.0)):
        env = gym.make(env_id)
        assert resolve_fitness_shift(ECArgs(), env) == bonus
        assert resolve_fitness_shift(ECArgs(fitness_shift=0.0), env) == 0.0   # reference: plain return
        env.close()
    with pytest.raises(ValueError, match="fitness_shift"):
        ECArgs(fitness_shift=float("nan")).validate()
