"""``refsnn play RUN_DIR``: run the deployed network of an ``refsnn ec`` run and report its return.

Loads ``RUN_DIR/deployed.npz`` (or ``best_deployed.npz`` with ``--best``): for EC the 1-bit
connectivity ``theta = rho > 0.5`` stored bit-packed (``numpy.packbits``, little bit order, per matrix
``in``, ``h``, ``out`` with its shape), for ES-RSNN the float32 weights; plus the observation
normaliser frozen at that generation. Runs ``--episodes`` episodes from fresh states (episode seed
and initial membrane of episode ``k`` from ``member_rng(--seed, 0, k)``) with the same rollout code as
training (:func:`refsnn.ec.rollout.evaluate_chunk`, in-process) and prints the mean return.

``--replay`` instead reruns the run's own deterministic evaluation of the stored generation ``g``:
members ``P .. P+E-1`` of generation ``g - 1`` with the run's seed, i.e. the same episode seeds and
initial membranes as during training, so the mean return equals the ``det_return`` recorded in the
file (and in ``metrics.csv``) exactly -- a check that the deployed 1-bit network *is* the evaluated one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from refsnn._checks import check_int
from refsnn.ec.rollout import Task, evaluate_chunk


def play(run_dir, *, episodes: int = 5, seed: int = 0, best: bool = False, max_steps: int | None = None,
         replay: bool = False) -> dict:
    """Evaluate the deployed network of ``run_dir``; returns ``{"returns": [...], "mean_return": ...}``
    (with ``replay``: the run's own evaluation episodes; ``episodes``/``seed``/``max_steps`` unused)."""
    from refsnn.commands.ec import load_deployed

    episodes = check_int("episodes", episodes, lo=1)
    seed = check_int("seed", seed, lo=0)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"RUN_DIR: {run_dir} is not a directory")
    path = run_dir / ("best_deployed.npz" if best else "deployed.npz")
    conf, params = load_deployed(path)
    cap = int(conf["max_steps"] if max_steps is None else check_int("max_steps", max_steps, lo=1))
    if replay:
        if max_steps is not None:
            raise ValueError("max_steps: --replay uses the run's own episode cap")
        P, E, g = int(conf["population"]), int(conf["eval_members"]), int(conf["generation"]) - 1
        if E < 1:
            raise ValueError(f"replay: the run in {run_dir} had no deterministic evaluation members")
        # generation g's evaluation: stochastic members 0..P-1 come first, the deterministic ones follow
        task = Task(conf["method"], {"n_neurons": int(conf["neurons"])}, float(conf["sigma"]), conf["env"], cap,
                    params, conf["norm_mean"], conf["norm_std"], int(conf["seed"]), g, tuple(range(P, P + E)), P)
    else:
        task = Task(conf["method"], {"n_neurons": int(conf["neurons"])}, float(conf["sigma"]), conf["env"], cap,
                    params, conf["norm_mean"], conf["norm_std"], seed, 0, tuple(range(episodes)), 0)
    r = evaluate_chunk(task)
    return {"returns": r["returns"].tolist(), "lengths": r["lengths"].tolist(),
            "mean_return": float(np.mean(r["returns"])), "env": conf["env"], "method": conf["method"],
            "generation": int(conf["generation"]), "recorded_det_return": conf["det_return"]}


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="output directory of 'refsnn ec'")
    p.add_argument("--episodes", type=int, default=5, help="episodes to run (default 5)")
    p.add_argument("--seed", type=int, default=0, help="episode seed base (default 0)")
    p.add_argument("--best", action="store_true", help="play best_deployed.npz instead of deployed.npz")
    p.add_argument("--max-steps", type=int, default=None, help="episode cap (default: the run's)")
    p.add_argument("--replay", action="store_true",
                   help="rerun the run's own deterministic evaluation of the stored generation (same episode "
                        "seeds); its mean equals the recorded deterministic return")


def run(args) -> int:
    r = play(args.run_dir, episodes=args.episodes, seed=args.seed, best=args.best, max_steps=args.max_steps,
             replay=args.replay)
    print(f"{r['method'].upper()}-RSNN on {r['env']}: returns "
          + " ".join(f"{x:.1f}" for x in r["returns"])
          + f" (lengths {' '.join(str(n) for n in r['lengths'])})")
    print(f"mean return {r['mean_return']:.1f} over {len(r['returns'])} episodes"
          + (f" (generation {r['generation']}'s evaluation episodes; recorded deterministic return "
             f"{r['recorded_det_return']:.1f})" if args.replay else ""))
    return 0
