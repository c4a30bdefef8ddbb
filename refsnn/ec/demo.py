"""EC part of ``refsnn demo``: a short Evolving Connectivity run on Hopper-v5 (about a minute on 2 cores).

:func:`demo_ec` trains for a few generations with a small population, then plays the deployed
1-bit network, and returns the figures the demo prints. The full-size command is in ``docs/ec.md``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_SETTINGS = dict(env="Hopper-v5", method="ec", generations=20, population=64, eval_members=2,
                     max_steps=400, neurons=256, seed=0)


def demo_ec(out_dir, *, workers: int = 2, log=print, **overrides) -> dict:
    """Run the EC demo into ``out_dir/ec``; returns a flat dict of numbers and paths."""
    from refsnn.ec.cli import COLUMNS, ECArgs, train
    from refsnn.ec.play import play
    from refsnn.io import load_npz

    out = Path(out_dir) / "ec"
    settings = dict(DEMO_SETTINGS)
    settings.update(overrides)
    a = ECArgs(workers=workers, out=str(out), **settings)
    summary = train(a, log=log, overwrite=True)
    hist = load_npz(out / "checkpoint.npz")["history"]
    c = {k: i for i, k in enumerate(COLUMNS)}
    played = play(out, episodes=2, max_steps=a.max_steps)
    return {
        "ec_env": a.env,
        "ec_generations": int(summary["generations"]),
        "ec_population": a.population,
        "ec_first_mean_return": float(hist[0, c["mean_return"]]),
        "ec_last_mean_return": float(hist[-1, c["mean_return"]]),
        "ec_final_deterministic_return": float(summary["final_deterministic_return"]),
        "ec_best_deterministic_return": float(summary["best_deterministic_return"]),
        "ec_played_mean_return": float(played["mean_return"]),
        "ec_env_steps": int(summary["env_steps"]),
        "ec_wall_seconds": float(summary["wall_seconds"]),
        "ec_mean_policy_over_env": float(np.mean(hist[:, c["policy_over_env"]])),
        "ec_out_dir": str(out),
    }
