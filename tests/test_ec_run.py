"""SPEC §5.4, §5.5, §8: rollouts, worker-count independence, resume, CLI, play, errors."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from refsnn.commands import ec as ec_cmd
from refsnn.commands import play as play_cmd
from refsnn.commands.config import build_parser, parse
from refsnn.commands.ec import COLUMNS, ECConfig, run
from refsnn.commands.play import PlayConfig, load_deployed
from refsnn.ec import nes
from refsnn.ec.deploy import FORMAT, deployed_arrays, from_deployed_arrays
from refsnn.ec.policy import ECFamily, ESFamily, es_gradient
from refsnn.ec.rollout import RunningNorm, Task, check_env, evaluate_chunk
from refsnn.io import atomic_savez, load_npz
from refsnn.kernels.cuba import CubaConfig

TIME_COLS = [COLUMNS.index(c) for c in ("steps_per_s", "policy_over_env", "elapsed_s")]
KEEP = [i for i in range(len(COLUMNS)) if i not in TIME_COLS]


def _tiny(tmp_path, name, **kw):
    base = dict(generations=3, population=8, eval_members=2, max_steps=50, neurons=64, workers=0,
                out=str(tmp_path / name))
    base.update(kw)
    return ECConfig(**base)


def train(cfg, **kw):
    return run(cfg, log=lambda *a: None, **kw)


def play(run_dir, **kw):
    return play_cmd.run(PlayConfig(str(run_dir), **kw))


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
    # --chunk-size bounds the members per task: 10 members in tasks of at most 3 -> 4 tasks
    calls = []

    class Counting(InlineExecutor):
        def submit(self, fn, *args, **kwargs):
            calls.append(len(args[0].indices))
            return super().submit(fn, *args, **kwargs)

    train(_tiny(tmp_path, "k3", generations=2, chunk_size=3), executor=Counting(), chunks=1)
    _same_run(tmp_path / "w0", tmp_path / "k3")
    assert calls == [3, 3, 2, 2] * 2
    # whole rounds over the workers: no task left to run alone
    from refsnn.ec.rollout import Evaluator
    ev = Evaluator(executor=InlineExecutor(), chunks=2, chunk_size=256)
    assert (ev.n_tasks(516), ev.n_tasks(132), ev.n_tasks(1)) == (4, 2, 1)
    assert Evaluator(executor=InlineExecutor(), chunks=3, chunk_size=2).n_tasks(5) == 3


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
    assert not (tmp_path / "r" / ".lock").exists()
    p = tmp_path / "r" / "checkpoint.npz"
    ck = load_npz(p)
    atomic_savez(p, {k: v for k, v in ck.items() if k != "param.h"})
    with pytest.raises(ValueError, match="checkpoint.npz: corrupt checkpoint .*param.h"):
        train(_tiny(tmp_path, "r", generations=2, resume=True))
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match="checkpoint.npz"):
        train(_tiny(tmp_path, "r", generations=2, resume=True))
    with pytest.raises(ValueError, match="^overwrite"):
        _tiny(tmp_path, "r", resume=True, overwrite=True)
    # --overwrite starts again: the same result as a run in a fresh directory
    train(_tiny(tmp_path, "r", generations=2, overwrite=True))
    train(_tiny(tmp_path, "fresh", generations=2))
    _same_run(tmp_path / "r", tmp_path / "fresh")


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
    with pytest.raises(ValueError, match="^population"):
        ECConfig(method="es", population=7)
    with pytest.raises(ValueError, match="^env"):
        train(ECConfig(env="CartPole-v1", out="unused"))


def test_command_line_ec_and_play(tmp_path, capsys):
    out = tmp_path / "cli"
    cfg = parse(ECConfig, ["--env", "Hopper-v5", "--generations", "2", "--population", "6", "--eval-members", "1",
                           "--max-steps", "40", "--neurons", "64", "--workers", "0", "--out", str(out)])
    assert ec_cmd.main(cfg) == 0
    text = capsys.readouterr().out
    assert "gen    2/2" in text and "ETA" in text and "steps/s" in text and "final deterministic return" in text
    assert json.loads((out / "config.json").read_text())["population"] == 6
    assert play_cmd.main(parse(PlayConfig, [str(out), "--episodes", "2"])) == 0
    text = capsys.readouterr().out
    assert "mean return" in text and "forward distance (m)" in text and "mean speed (m/s)" in text
    # the gait summary: distance moved along x (Hopper-v5 reports x_position; dt = 0.008 s)
    p = play(out, episodes=2)
    assert np.isfinite(p["x_distance"]).all()
    np.testing.assert_allclose(p["x_speed"], np.array(p["x_distance"]) / (np.array(p["lengths"]) * 0.008))
    # the deployed bits reproduce the deterministic network of rho
    conf, params = load_deployed(out / "deployed.npz")
    rho = {k: np.where(v > 0.5, 0.9, 0.1) for k, v in params.items()}
    task = Task("ec", {"n_neurons": 64}, 0.3, "Hopper-v5", 40, rho, conf["norm_mean"], conf["norm_std"],
                0, 0, (0, 1), 0)
    np.testing.assert_array_equal(evaluate_chunk(task)["returns"], play(out, episodes=2)["returns"])
    with pytest.raises(FileNotFoundError, match="^run_dir"):
        play_cmd.main(parse(PlayConfig, [str(tmp_path / "nope")]))
    # --replay reruns the last generation's deterministic evaluation: exactly the recorded return
    rep = play(out, replay=True)
    assert rep["generation"] == 2 and rep["mean_return"] == rep["recorded_det_return"]
    det = [float(r.split(",")[3]) for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert np.isclose(rep["mean_return"], det[-1], rtol=1e-5)
    assert play_cmd.main(parse(PlayConfig, [str(out), "--replay"])) == 0
    assert "recorded deterministic return" in capsys.readouterr().out
    best = play(out, best=True, replay=True)
    assert best["mean_return"] == best["recorded_det_return"] and np.isclose(best["mean_return"], max(det), rtol=1e-5)


def test_options_help_and_bad_input_name_the_argument(tmp_path):
    text = build_parser(ECConfig, prog="refsnn ec").format_help()
    for h in ("--fitness-shift auto|SHIFT", "alive bonus", "--overwrite", "--resume", "(default: 128)",
              "--executor {local,dask}"):
        assert h in text, h
    assert "RUN_DIR" in build_parser(PlayConfig, prog="refsnn play").format_help()
    assert parse(ECConfig, []) == ECConfig()
    assert parse(ECConfig, ["--fitness-shift", "auto"]).fitness_shift is None
    assert parse(ECConfig, ["--fitness-shift", "0.5"]).fitness_shift == 0.5
    with pytest.raises(SystemExit):
        parse(ECConfig, ["--fitness-shift", "alive"])      # argparse's usage error (exit status 2)
    with pytest.raises(SystemExit):
        parse(PlayConfig, [])                               # RUN_DIR is required
    for argv, name in ((["--population", "1"], "population"), (["--eps", "0.7"], "eps"),
                       (["--method", "es", "--population", "7"], "population"), (["--sigma", "0"], "sigma"),
                       (["--fitness-shift", "nan"], "fitness_shift"), (["--workers", "-1"], "workers"),
                       (["--executor", "dask"], "scheduler"), (["--resume", "--overwrite"], "overwrite"),
                       (["--out", ""], "out")):
        with pytest.raises(ValueError, match=f"^{name}"):
            parse(ECConfig, argv)
    for argv, name in ((["R", "--episodes", "0"], "episodes"), (["R", "--replay", "--max-steps", "5"], "max_steps"),
                       (["R", "--seed", "-1"], "seed")):
        with pytest.raises(ValueError, match=f"^{name}"):
            parse(PlayConfig, argv)


def test_resume_after_moving_the_run_directory(tmp_path):
    train(_tiny(tmp_path, "full"))
    train(_tiny(tmp_path, "a", generations=2))
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "a", tmp_path / "elsewhere" / "b")
    s = train(_tiny(tmp_path, "elsewhere/b", generations=3, resume=True))
    assert s["generations"] == 3
    _same_run(tmp_path / "full", tmp_path / "elsewhere" / "b")
    assert play(tmp_path / "elsewhere" / "b", replay=True)["mean_return"] == s["final_deterministic_return"]


@pytest.mark.parametrize("method", ["ec", "es"])
def test_old_run_directory_without_config_json_resumes(tmp_path, method):
    """Run directories written before config.json existed: the settings are checked against the
    checkpoint's config_json (options added since take their value of the time: fitness_shift 0)."""
    train(_tiny(tmp_path, "full", method=method, fitness_shift=0.0))
    old = tmp_path / "old"
    train(_tiny(tmp_path, "old", method=method, generations=2, fitness_shift=0.0))
    for name in ("config.json", "environment.json"):
        (old / name).unlink()
    ck = load_npz(old / "checkpoint.npz")
    conf = json.loads(str(ck["config_json"]))
    for k in ("fitness_shift", "overwrite", "executor", "scheduler"):   # not yet options then
        del conf[k]
    ck["config_json"] = np.array(json.dumps(conf, sort_keys=True))
    atomic_savez(old / "checkpoint.npz", ck)
    with pytest.raises(ValueError, match=r"different settings for \['fitness_shift'\]"):
        train(_tiny(tmp_path, "old", method=method, generations=3, resume=True))     # auto = 1 for Hopper
    assert not (old / "config.json").exists()
    s = train(_tiny(tmp_path, "old", method=method, generations=3, resume=True, fitness_shift=0.0))
    assert s["generations"] == 3 and (old / "config.json").is_file()
    _same_run(tmp_path / "full", old)
    # a checkpoint without config_json or config.json cannot be checked: refused
    ck = load_npz(old / "checkpoint.npz")
    atomic_savez(old / "checkpoint.npz", {k: v for k, v in ck.items() if k != "config_json"})
    (old / "config.json").unlink()
    with pytest.raises(ValueError, match="no config.json"):
        train(_tiny(tmp_path, "old", method=method, generations=4, resume=True, fitness_shift=0.0))


def test_run_directory_older_than_an_option_resumes_with_its_old_value(tmp_path):
    """A config.json written before --kl-max existed resumes as kl_max = 0 (the update it ran with)
    and refuses a different value, naming the key."""
    train(_tiny(tmp_path, "full"))
    old = tmp_path / "old"
    train(_tiny(tmp_path, "old", generations=2))
    conf = json.loads((old / "config.json").read_text())
    del conf["kl_max"]
    (old / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ValueError, match=r"different settings for \['kl_max'\]"):
        train(_tiny(tmp_path, "old", generations=3, resume=True, kl_max=0.01))
    assert train(_tiny(tmp_path, "old", generations=3, resume=True))["generations"] == 3
    _same_run(tmp_path / "full", old)


def test_deployed_format_round_trip():
    rng = np.random.default_rng(0)
    conf = dict(method="ec", env="Hopper-v5", neurons=5, max_steps=10, sigma=0.3, seed=1, population=4,
                eval_members=1)
    rho = {"in": rng.random((6, 5)), "h": rng.random((5, 5)), "out": rng.random((5, 3))}
    d = deployed_arrays(conf, rho, np.zeros(3), np.ones(3), generation=7, det_return=1.5)
    assert str(d["format"]) == FORMAT and d["bits.h"].dtype == np.uint8 and d["bits.h"].size == 4   # 25 bits
    back, params = from_deployed_arrays(d)
    assert back["generation"] == 7 and back["det_return"] == 1.5 and back["neurons"] == 5
    assert list(params) == ["h", "in", "out"]
    for k in rho:
        np.testing.assert_array_equal(params[k], (rho[k] > 0.5).astype(np.float64))
    w = {**rho, "in": rng.standard_normal((3, 5))}   # ES reads the observations once: (obs, N)
    d_es = deployed_arrays({**conf, "method": "es"}, w, np.zeros(3), np.ones(3), generation=1, det_return=0.0)
    assert d_es["w.h"].dtype == np.float32 and "bits.h" not in d_es
    np.testing.assert_array_equal(from_deployed_arrays(d_es)[1]["h"], rho["h"].astype(np.float32))
    with pytest.raises(ValueError, match="^format"):
        from_deployed_arrays({**d, "format": np.array("other")})
    with pytest.raises(ValueError, match="^shape.h"):
        from_deployed_arrays({k: v for k, v in d.items() if k != "shape.h"})
    with pytest.raises(ValueError, match="^config"):
        deployed_arrays({"method": "ec"}, rho, np.zeros(3), np.ones(3), generation=1, det_return=0.0)


_SIGTERM_SCRIPT = """
import sys
from refsnn.commands.ec import ECConfig, main
sys.exit(main(ECConfig(generations=1000, population=4, eval_members=1, max_steps=20, neurons=16, workers=1,
                       out=sys.argv[1])))
"""


def test_sigterm_stops_workers_releases_the_lock_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_SCRIPT, str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=str(Path(__file__).parent.parent))
    try:
        deadline = time.monotonic() + 180
        while not (out / "checkpoint.npz").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode()
    assert rc == 128 + signal.SIGTERM, err
    assert "stopped by signal 15" in err and "--resume" in err
    assert not (out / ".lock").exists()
    g = int(load_npz(out / "checkpoint.npz")["generation"])
    assert g >= 1
    s = train(ECConfig(generations=g + 1, population=4, eval_members=1, max_steps=20, neurons=16, workers=0,
                       out=str(out), resume=True))
    assert s["generations"] == g + 1


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


@pytest.mark.distributed
def test_dask_executor_matches_local(tmp_path):
    """A short EC run on a dask LocalCluster (2 worker processes, tasks of at most 5 members) gives
    exactly the local run: results do not depend on the executor."""
    distributed = pytest.importorskip("distributed")
    train(_tiny(tmp_path, "local", generations=1))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        train(_tiny(tmp_path, "dask", generations=1, executor="dask", scheduler=cluster.scheduler_address,
                    chunk_size=5))
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
                                           for i in range(P)) / P, rtol=1e-12, atol=1e-15)
    assert np.all(g["h"][th0["h"]] >= -1e-12) and np.all(g["h"][~th0["h"]] <= 1e-12)   # ascent towards theta_0


def test_fitness_shift_auto_is_the_alive_bonus():
    from refsnn.commands.ec import parse_fitness_shift, resolve_fitness_shift
    assert ECConfig().fitness_shift is None and parse_fitness_shift("auto") is None
    assert parse_fitness_shift("0") == 0.0
    for env_id, bonus in (("Hopper-v5", 1.0), ("Walker2d-v5", 1.0), ("Humanoid-v5", 5.0), ("Pendulum-v1", 0.0)):
        env = gym.make(env_id)
        assert resolve_fitness_shift(ECConfig(), env) == bonus
        assert resolve_fitness_shift(ECConfig(fitness_shift=0.0), env) == 0.0   # reference: plain return
        env.close()
    with pytest.raises(ValueError, match="^fitness_shift"):
        ECConfig(fitness_shift=float("nan"))


def test_env_step_budget_stops_after_the_generation_that_reaches_it(tmp_path):
    """--max-env-steps ends the run after the generation that reaches it; the run is resumable with a
    larger budget (not a run setting) and continues exactly as the uninterrupted run."""
    full = train(_tiny(tmp_path, "full", generations=3))
    s = train(_tiny(tmp_path, "b", generations=3, max_env_steps=1))
    assert s["generations"] == 1
    s = train(_tiny(tmp_path, "b", generations=3, resume=True, max_env_steps=10**9, max_minutes=60.0))
    assert s["generations"] == 3 and s["final_deterministic_return"] == full["final_deterministic_return"]
    _same_run(tmp_path / "full", tmp_path / "b")
