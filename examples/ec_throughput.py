"""EC rollout throughput (env steps/s) on a local process pool against a dask.distributed LocalCluster.

    python examples/ec_throughput.py --env Humanoid-v5 --population 512 --repeats 3 \
        --from-run runs/study/hum-A-default

Every executor evaluates exactly the same generation (the parameters and observation normaliser of
``--from-run``'s checkpoint, or generation 0's ``rho = 0.5``) ``--repeats`` timed times (after one
untimed warm-up) through ``refsnn.ec.rollout.Evaluator``, so the work is identical and only the
executor differs; the printed figure is the median env steps/s over the repeats, with the number
of tasks and the largest worker peak RSS. The returns of every executor are checked to be identical
(results never depend on the executor). Needs ``refsnn[distributed]`` for the dask rows (they are left out without it).
"""

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn.commands.config import option, parse
from refsnn.ec.rollout import Evaluator, RunningNorm, check_env
from refsnn.ec.strategy import make_strategy
from refsnn.io import load_npz


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    env: str = option("Humanoid-v5", "Gymnasium environment id")
    population: int = option(512, "stochastic members of the generation evaluated")
    neurons: int = option(256, "RSNN neurons")
    chunk_size: int = option(256, "at most this many members per rollout task")
    repeats: int = option(3, "timed evaluations per executor (after one untimed warm-up)")
    max_steps: int = option(1000, "episode cap in environment steps")
    from_run: str | None = option(None, "a refsnn ec run directory whose checkpoint supplies rho and the normaliser")
    workers: list[int] = option([1, 2], "worker counts, one row per executor each", nargs="+")


def main(argv=None) -> int:
    a = parse(Options, argv, description=__doc__.splitlines()[0])

    env, obs_dim, act_dim = check_env(a.env, a.max_steps)
    env.close()
    strategy = make_strategy("ec", obs_dim, act_dim, neurons=a.neurons, population=a.population, eval_members=0,
                             lr=0.15, eps=1e-3, gradient="natural", sigma=0.3, weight_decay=0.0, fitness_shift=0.0,
                             seed=0)
    state, norm = strategy.init(), RunningNorm(obs_dim)
    if a.from_run is not None:
        z = load_npz(Path(a.from_run) / "checkpoint.npz")
        state = strategy.from_state_arrays(z)
        norm.load_state_arrays(z)
    pop = strategy.ask(state)

    def measure(name: str, evaluator: Evaluator) -> dict:
        rates, res = [], None
        with evaluator:
            evaluator.evaluate(env_id=a.env, max_steps=a.max_steps, norm=norm, **pop.evaluate_kwargs())  # warm-up
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                res = evaluator.evaluate(env_id=a.env, max_steps=a.max_steps, norm=norm, **pop.evaluate_kwargs())
                rates.append(int(res["lengths"].sum()) / (time.perf_counter() - t0))
        row = {"executor": name, "steps_per_s": statistics.median(rates), "all": rates, "tasks": res["n_tasks"],
               "peak_rss_mb": res["peak_rss_mb"], "returns": res["returns"], "steps": int(res["lengths"].sum())}
        print(f"{name:28s} {row['steps_per_s']:8.0f} env steps/s (median of {a.repeats}: "
              f"{', '.join(f'{r:.0f}' for r in rates)}), {row['tasks']} tasks, {row['steps']} steps per "
              f"evaluation, worker peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
        return row

    rows = []
    for w in a.workers:   # each executor first evaluates once untimed (process start, JIT load, env creation)
        rows.append(measure(f"local pool, {w} worker(s)", Evaluator(w, chunk_size=a.chunk_size)))
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("dask.distributed is not installed (pip install refsnn[distributed]): no dask rows")
    else:
        for w in a.workers:
            with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None,
                              silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
                ev = Evaluator(executor=client.get_executor(pure=False), chunks=w, chunk_size=a.chunk_size)
                rows.append(measure(f"dask LocalCluster, {w} worker(s)", ev))
    for r in rows[1:]:
        if not np.array_equal(r["returns"], rows[0]["returns"]):
            raise SystemExit(f"{r['executor']}: returns differ from {rows[0]['executor']}")
    print(f"returns identical across the {len(rows)} executors")
    print("\n| executor | env steps/s (median) | tasks per generation | worker peak RSS (MB) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['executor']} | {r['steps_per_s']:.0f} | {r['tasks']} | {r['peak_rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
