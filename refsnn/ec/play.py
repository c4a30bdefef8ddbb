"""``refsnn play RUN_DIR``: run the deployed network of an ``refsnn ec`` run and report its return.

Loads ``RUN_DIR/deployed.npz`` (or ``best_deployed.npz`` with ``--best``): for EC the 1-bit
connectivity ``theta = rho > 0.5`` stored bit-packed (``numpy.packbits``, little bit order, per matrix
``in``, ``h``, ``out`` with its shape), for ES-RSNN the float32 weights; plus the observation
normaliser frozen at that generation. Runs ``--episodes`` episodes from fresh states (episode seed
and initial membrane of episode ``k`` from ``member_rng(--seed, 0, k)``) with the same rollout code as
training (:func:`refsnn.ec.rollout.evaluate_chunk`, in-process) and prints the mean return.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from refsnn._checks import check_int
from refsnn.ec.rollout import Task, evaluate_chunk


def play(run_dir, *, episodes: int = 5, seed: int = 0, best: bool = False, max_steps: int | None = None) -> dict:
    """Evaluate the deployed network of ``run_dir``; returns ``{"returns": [...], "mean_return": ...}``."""
    from refsnn.ec.cli import load_deployed

    episodes = check_int("episodes", episodes, lo=1)
    seed = check_int("seed", seed, lo=0)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"RUN_DIR: {run_dir} is not a directory")
    path = run_dir / ("best_deployed.npz" if best else "deployed.npz")
    conf, params = load_deployed(path)
    cap = int(conf["max_steps"] if max_steps is None else check_int("max_steps", max_steps, lo=1))
    task = Task(conf["method"], {"n_neurons": int(conf["neurons"])}, float(conf["sigma"]), conf["env"], cap,
                params, conf["norm_mean"], conf["norm_std"], seed, 0, tuple(range(episodes)), 0)
    r = evaluate_chunk(task)
    return {"returns": r["returns"].tolist(), "lengths": r["lengths"].tolist(),
            "mean_return": float(np.mean(r["returns"])), "env": conf["env"], "method": conf["method"]}


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="output directory of 'refsnn ec'")
    p.add_argument("--episodes", type=int, default=5, help="episodes to run (default 5)")
    p.add_argument("--seed", type=int, default=0, help="episode seed base (default 0)")
    p.add_argument("--best", action="store_true", help="play best_deployed.npz instead of deployed.npz")
    p.add_argument("--max-steps", type=int, default=None, help="episode cap (default: the run's)")


def run(args) -> int:
    r = play(args.run_dir, episodes=args.episodes, seed=args.seed, best=args.best, max_steps=args.max_steps)
    print(f"{r['method'].upper()}-RSNN on {r['env']}: returns "
          + " ".join(f"{x:.1f}" for x in r["returns"])
          + f" (lengths {' '.join(str(n) for n in r['lengths'])})")
    print(f"mean return {r['mean_return']:.1f} over {len(r['returns'])} episodes")
    return 0
