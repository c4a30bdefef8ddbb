"""``refsnn play RUN_DIR``: run the deployed network of an ``refsnn ec`` run and report its return.

Loads ``RUN_DIR/deployed.npz`` (or ``best_deployed.npz`` with ``--best``; format in
:mod:`refsnn.ec.deploy`): for EC the 1-bit connectivity ``theta = rho > 0.5``, for ES-RSNN the float32
weights, plus the observation normaliser frozen at that generation. Runs ``--episodes`` episodes from
fresh states (episode seed and initial membrane of episode ``k`` from ``member_rng(--seed, 0, k)``)
with the same rollout code as training (:func:`refsnn.ec.rollout.evaluate_chunk`, in-process) and
prints the returns, episode lengths (a MuJoCo walker that falls ends early), the distance the body
moved forward and its mean speed, and the mean return.

``--replay`` instead reruns the run's own deterministic evaluation of the stored generation ``g``:
members ``P .. P+E-1`` of generation ``g - 1`` with the run's seed, i.e. the same episode seeds and
initial membranes as during training, so the mean return equals the ``det_return`` recorded in the
file (and in ``metrics.csv``) exactly -- a check that the deployed 1-bit network *is* the evaluated one.
A replay that differs from the record (another return, or a file whose ``det_return`` is not the
``metrics.csv`` row of its generation) prints one line naming the difference and exits with status 1.

Python API: ``run(PlayConfig("runs/ec", episodes=3))`` returns the returns and their mean.
"""
from __future__ import annotations

import csv
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn._checks import check_int
from refsnn.commands.config import option
from refsnn.ec.deploy import from_deployed_arrays
from refsnn.ec.rollout import Task, check_env, evaluate_chunk
from refsnn.io import load_npz

__all__ = ["PlayConfig", "CONFIG", "run", "main", "load_deployed", "replay_mismatch"]


@dataclass
class PlayConfig:
    """Options of ``refsnn play``."""
    run_dir: str = option(help="output directory of 'refsnn ec'", positional=True, metavar="RUN_DIR")
    episodes: int = option(5, "episodes to run")
    seed: int = option(0, "episode seed base")
    best: bool = option(False, "play best_deployed.npz instead of deployed.npz")
    max_steps: int | None = option(None, "episode cap (default: the run's)")
    replay: bool = option(False, "rerun the run's own deterministic evaluation of the stored generation (same "
                          "episode seeds); its mean equals the recorded deterministic return")

    def __post_init__(self):
        if isinstance(self.run_dir, os.PathLike):
            self.run_dir = os.fspath(self.run_dir)
        if not isinstance(self.run_dir, str) or not self.run_dir:
            raise ValueError(f"run_dir: expected the output directory of 'refsnn ec', got {self.run_dir!r}")
        check_int("episodes", self.episodes, lo=1)
        check_int("seed", self.seed, lo=0)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, lo=1)
            if self.replay:
                raise ValueError("max_steps: --replay uses the run's own episode cap")


CONFIG = PlayConfig


def load_deployed(path) -> tuple[dict, dict]:
    """``(config, params)`` of a ``deployed.npz`` (:func:`refsnn.ec.deploy.from_deployed_arrays`, which
    checks every stored size before allocating); ``ValueError``/``TypeError`` naming the file for one
    that is not a deployed network, is truncated or crafted."""
    z = load_npz(path)
    try:
        return from_deployed_arrays(z)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{path}: {e}") from None


def run(cfg: PlayConfig) -> dict:
    """Evaluate the deployed network of ``cfg.run_dir``; returns ``{"returns": [...], "lengths": [...],
    "x_distance": [...] (metres the body moved forward, NaN if the env does not say), "x_speed": [...]
    (that distance over the episode's duration, m/s), "mean_return": ..., "env", "method", "generation",
    "recorded_det_return"}`` (with ``replay``: the run's own evaluation episodes; ``episodes`` and
    ``seed`` unused)."""
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir: {run_dir} is not a directory")
    name = "best_deployed.npz" if cfg.best else "deployed.npz"
    conf, params = load_deployed(run_dir / name)
    cap = int(conf["max_steps"] if cfg.max_steps is None else cfg.max_steps)
    env, obs_dim, act_dim = check_env(conf["env"], cap)
    env.close()
    # the readout's action count: RSNN "out" (N, A), RNN "w_out" (A, H), SG-PPO "W_out" (N, A)
    act = params["out"].shape[1] if "out" in params else (params["w_out"].shape[0] if "w_out" in params
                                                          else params["W_out"].shape[1])
    stored = (int(conf["norm_mean"].size), int(act))
    if stored != (obs_dim, act_dim):
        raise ValueError(f"run_dir: the network in {run_dir} has {stored[0]} observations and {stored[1]} actions, "
                         f"{conf['env']} has {obs_dim} and {act_dim}")
    net = (conf["method"], {"n_neurons": int(conf["neurons"])}, float(conf["sigma"]), conf["env"], cap, params,
           conf["norm_mean"], conf["norm_std"])
    if cfg.replay:
        # SG-PPO evaluates deterministic members 0..E-1 (its samples are PPO's own, not members)
        P = 0 if conf["method"] == "sg-ppo" else int(conf["population"])
        E, g = int(conf["eval_members"]), int(conf["generation"]) - 1
        if E < 1:
            raise ValueError(f"replay: the run in {run_dir} had no deterministic evaluation members")
        # generation g's evaluation: stochastic members 0..P-1 come first, the deterministic ones follow
        task = Task(*net, int(conf["seed"]), g, tuple(range(P, P + E)), P)
    else:
        task = Task(*net, cfg.seed, 0, tuple(range(cfg.episodes)), 0)
    r = evaluate_chunk(task)
    speed = r["x_distance"] / (r["lengths"] * r["env_dt"])
    out = {"returns": r["returns"].tolist(), "lengths": r["lengths"].tolist(),
           "x_distance": r["x_distance"].tolist(), "x_speed": speed.tolist(),
           "mean_return": float(np.mean(r["returns"])), "env": conf["env"], "method": conf["method"],
           "generation": int(conf["generation"]), "recorded_det_return": conf["det_return"]}
    if cfg.replay:
        out["mismatch"] = replay_mismatch(run_dir, out, name)
    return out


def replay_mismatch(run_dir: Path, r: dict, name: str) -> list[str]:
    """What a replay ``r`` (of :func:`run`) finds different from the run's record: the replayed mean
    return against the ``det_return`` stored in the deployed file ``name`` (equal to the last bit: the
    same network, episode seeds and initial membranes), and that stored return against the
    ``metrics.csv`` row of the same generation (6 significant digits, as written there) when the run
    directory has one. Empty when the replay agrees."""
    out = []
    rec, got, g = float(r["recorded_det_return"]), r["mean_return"], r["generation"]
    if not math.isclose(got, rec, rel_tol=1e-12, abs_tol=1e-9):
        out.append(f"the replayed return {got:.6g} of generation {g} is not the det_return {rec:.6g} recorded in "
                   f"{name}")
    row = _metrics_row(run_dir / "metrics.csv", g)
    if row is not None:
        try:
            csv_ret = float(row.get("det_return", "nan"))
        except ValueError:
            csv_ret = math.nan
        if not math.isclose(csv_ret, rec, rel_tol=2e-6, abs_tol=1e-9):
            out.append(f"{name} records det_return {rec:.6g} for generation {g}, metrics.csv {csv_ret:.6g}")
    return out


def _metrics_row(path: Path, generation: int) -> dict | None:
    """The ``metrics.csv`` row of ``generation`` (``None`` without the file or the row)."""
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("generation") == str(generation):
                return row
    return None


def main(cfg: PlayConfig) -> int:
    """``refsnn play``: :func:`run`, printed."""
    r = run(cfg)
    print(f"{r['method'].upper()}-RSNN on {r['env']}: returns "
          + " ".join(f"{x:.1f}" for x in r["returns"])
          + f" (lengths {' '.join(str(n) for n in r['lengths'])})")
    if np.isfinite(r["x_distance"]).all():
        print("forward distance (m) " + " ".join(f"{d:.2f}" for d in r["x_distance"]) + ", mean speed (m/s) "
              + " ".join(f"{v:.2f}" for v in r["x_speed"]))
    print(f"mean return {r['mean_return']:.1f} over {len(r['returns'])} episodes"
          + (f" (generation {r['generation']}'s evaluation episodes; recorded deterministic return "
             f"{r['recorded_det_return']:.1f})" if cfg.replay else ""))
    if r.get("mismatch"):   # the replay is a check: a difference from the record is a failure
        print(f"refsnn play: error: replay differs from the record: {'; '.join(r['mismatch'])}", file=sys.stderr)
        return 1
    return 0
