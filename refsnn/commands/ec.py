"""``refsnn ec``: Evolving Connectivity and its baselines on a Gymnasium task (SPEC §5, §8).

One loop for the five methods (``--method``): EC-RSNN (``ec``), ES-RSNN (``es``; SPEC §5.5:
antithetic pairs, sigma 0.3, AdamW lr 0.15 weight decay 0.1, real weights, no Dale's law), the
deep-RNN baselines ES-GRU / ES-LSTM (``es-gru``, ``es-lstm``), and SG-RSNN trained by PPO through
surrogate gradients (``sg-ppo``; a generation is one PPO iteration). Each is a method object of
:mod:`refsnn.ec.method` (start or resume from checkpoint arrays, one ``step`` per generation with
the same ``info`` for all); the command does the rest once: the run directory, the metrics row,
the log line, the deployed files, the checkpoint, the summary and the budgets.

One generation of the evolution strategies (:mod:`refsnn.ec.strategy` states the update's
equations; seed eqs. 9–14, SPEC §5.2):

1. ``pop = strategy.ask(state)``: ``P`` stochastic members (EC: ``theta ~ B(rho)``, eq. 9) and ``E``
   deterministic members (``theta = rho > 0.5``), named by ``(seed, generation, index)``;
2. the members' episodes through the executor (:class:`refsnn.ec.rollout.Evaluator`), the
   observation normaliser frozen for the whole generation: one episode each (``--episodes one``) or
   the reference code's lock-step protocol (``--episodes fill``), from fresh reset seeds or a reset
   pool drawn once per run (``--reset-pool N``);
3. ``state, info = strategy.tell(state, returns, lengths)``: fitness ``return - shift x length``
   (``--fitness-shift auto`` = the env's alive bonus per step, 1 for Hopper-v5; ``0`` = the reference
   code's plain return; with ``fill`` the mean over completed episodes), centered ranks (ties
   averaged, or by position with ``--rank-ties ordinal`` as the reference code), the EC (eqs. 13–14)
   or ES gradient, Adam, clip;
4. the generation's observation statistics are merged into the normaliser, in member order.

SG-PPO's iteration: the deterministic policy's ``E`` episodes through the executor, then the PPO
rollout and update in-process (:mod:`refsnn.ec.ppo`).

The reported *deterministic return* of generation ``g`` is the mean return of the ``E``
deterministic members of the parameters evaluated in ``g`` (before ``g``'s update);
``final_deterministic_return`` is that of the last generation (``null`` in ``summary.json``, ``None``
in the returned summary, with ``--eval-members 0``: strict JSON has no NaN), and ``deployed.npz`` holds exactly
those parameters (``best_deployed.npz`` those of the best generation; format in
:mod:`refsnn.ec.deploy`). Everything depends only on ``(seed, generation, member index)``, the
parameters, the optimiser state and the normalisers, all of which are checkpointed, so ``--resume``
continues to the bit-identical result of an uninterrupted run, and the number of workers does not
change any result.

The output directory ``--out`` is a :class:`refsnn.runs.RunDir`: ``config.json``,
``environment.json``, ``metrics.csv`` (:data:`COLUMNS`, one row per generation, the same meaning for
every method: :mod:`refsnn.commands.ec_progress`), ``summary.json``, ``learning_curve.png``,
``checkpoint.npz`` (atomic, every generation, no pickle), plus ``deployed.npz`` /
``best_deployed.npz`` for ``refsnn play``. The options are :class:`ECConfig`
(:mod:`refsnn.commands.ec_config`).

CPU defaults (the paper: 10,112 + 128 members on one GPU, 1,000 generations): population 128
stochastic + 4 deterministic members, 200 generations, 2 worker processes, episodes capped at 1000
steps, fitness shift "auto" (the only default that departs from the reference code: with 128
members the plain return stalls at Hopper's stand-still optimum; docs/ec.md).

Python API: ``run(ECConfig(generations=20, out="runs/x"))`` returns the summary dict.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager

import numpy as np

from refsnn.commands.config import to_dict
from refsnn.commands.ec_config import ADDED_KEYS, RUN_KEYS, ECConfig, parse_fitness_shift, ppo_settings
from refsnn.commands.ec_progress import COLUMNS, INT_COLUMNS, Progress, budget_spent
from refsnn.ec.deploy import deployed_arrays
from refsnn.ec.method import Diverged, make_method
from refsnn.ec.rollout import Evaluator, check_env
from refsnn.io import atomic_savez, load_npz, parse_json
from refsnn.runs import RunDir, fmt_hms, stop_on_signals

__all__ = ["ECConfig", "CONFIG", "RUN_KEYS", "COLUMNS", "run", "main", "resolve_fitness_shift",
           "parse_fitness_shift"]

CONFIG = ECConfig
# the checkpoint's keys besides the method state's (refsnn.ec.method: checkpoint_keys)
_PROGRESS_KEYS = ("config_json", "history", "env_steps", "wall_seconds", "best_det")


def resolve_fitness_shift(cfg: ECConfig, env) -> float:
    """``cfg.fitness_shift``, or for ``None`` ("auto") the env's alive bonus per step
    (Gymnasium MuJoCo's ``healthy_reward``; 0 when the env has none)."""
    if cfg.fitness_shift is not None:
        return float(cfg.fitness_shift)
    return float(getattr(env.unwrapped, "_healthy_reward", 0.0) or 0.0)


def run(cfg: ECConfig, *, log=print, executor=None, chunks: int | None = None) -> dict:
    """Run (or with ``cfg.resume`` continue) a run of any of the five methods in ``cfg.out``; returns
    the summary.

    ``executor``: any ``concurrent.futures.Executor`` to evaluate on instead of ``cfg.workers`` /
    ``cfg.executor``, split into ``chunks`` tasks per generation (default ``max(1, cfg.workers)``).
    """
    env, obs_dim, act_dim = check_env(cfg.env, cfg.max_steps)
    shift = resolve_fitness_shift(cfg, env)
    env.close()
    with _method(cfg, obs_dim, act_dim, shift) as method, \
            RunDir(cfg.out, config=to_dict(cfg), resume_keys=RUN_KEYS, resume=cfg.resume, overwrite=cfg.overwrite,
                   columns=COLUMNS, stored_config=_stored_config, added_keys=ADDED_KEYS) as rd:
        state, prog = _start(rd, cfg, method, log)
        summary = rd.read_summary()
        if rd.resuming and budget_spent(cfg, prog, log, resumed=True):
            return summary
        log(f"refsnn ec: {method.name} on {cfg.env} (obs {obs_dim}, act {act_dim}), N={cfg.neurons}, "
            f"{method.setup_text()}, {cfg.generations} {method.unit}s, workers={cfg.workers}, seed={cfg.seed} "
            f"-> {rd.path}")
        with _evaluator(cfg, executor, chunks) as evaluator:
            for g in range(state.generation, cfg.generations):
                t0 = time.perf_counter()
                try:
                    new, info = method.step(state, evaluator)
                except Diverged as e:
                    log(f"stopping: diverged at {e} (the last completed {method.unit} stays in {rd.path})")
                    summary = {**summary, "diverged": True, f"diverged_at_{method.unit}": g + 1}
                    rd.write_summary(summary)
                    break
                prog.env_steps += info["env_steps"]
                prog.gen_times.append(time.perf_counter() - t0)
                row = _metrics_row(info, prog)
                prog.add_row(row)
                improved = cfg.eval_members > 0 and info["det_return"] > prog.best
                prog.best = info["det_return"] if improved else prog.best
                log(_log_line(cfg, method, row, info, prog.eta(cfg, g + 1)))
                # outputs, every generation, each file atomically
                dep = deployed_arrays(to_dict(cfg), *info["deployed"], generation=info["generation"],
                                      det_return=info["det_return"])
                atomic_savez(rd.file("deployed.npz"), dep)
                if improved:
                    atomic_savez(rd.file("best_deployed.npz"), dep)
                state = new
                rd.save_checkpoint(_checkpoint(cfg, state, prog, row))
                _write_outputs(rd, cfg, method, prog)
                summary = _summary(cfg, info, row, prog)
                rd.write_summary(summary)
                if budget_spent(cfg, prog, log):
                    break
    return summary


def main(cfg: ECConfig) -> int:
    """``refsnn ec``: :func:`run` with a closing line. SIGINT (Ctrl-C) and SIGTERM (a scheduler,
    ``timeout``) unwind the run (:func:`refsnn.runs.stop_on_signals`): the workers are stopped and the
    run lock released, the last completed generation's checkpoint stays valid for ``--resume``, one
    line goes to stderr and the exit status is 128 + the signal (130, 143) -- also when the worker
    pool, stopped under a task, raises on the way out (that error is named in the line)."""
    with stop_on_signals("refsnn ec", f"{cfg.out} holds the last completed generation: continue with --resume"):
        s = run(cfg)
    print(f"final deterministic return {_fmt_return(s.get('final_deterministic_return'))}, "
          f"best {_fmt_return(s.get('best_deterministic_return'))}, "
          f"{s.get('env_steps', 0)} env steps, {s.get('wall_seconds', 0):.0f} s -> {cfg.out}")
    return 0


def _fmt_return(v) -> str:
    """A return of the summary; ``-`` when there is none (``null``: no deterministic members)."""
    return "-" if v is None or not math.isfinite(v) else f"{v:.1f}"


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _method(cfg: ECConfig, obs_dim: int, act_dim: int, shift: float):
    """The method object of ``cfg`` (:func:`refsnn.ec.method.make_method`)."""
    return make_method(cfg.method, obs_dim, act_dim, env_id=cfg.env, max_steps=cfg.max_steps, episodes=cfg.episodes,
                       reset_pool=cfg.reset_pool, ppo_settings=ppo_settings(cfg) if cfg.method == "sg-ppo" else None,
                       neurons=cfg.neurons, population=cfg.population, eval_members=cfg.eval_members, lr=cfg.lr,
                       eps=cfg.eps, gradient=cfg.gradient, sigma=cfg.sigma, weight_decay=cfg.weight_decay,
                       fitness_shift=shift, seed=cfg.seed, kl_max=cfg.kl_max, rank_ties=cfg.rank_ties)


# -- the run's files ----------------------------------------------------------------------------------
def _stored_config(checkpoint_path) -> dict | None:
    """The config of a run directory written before ``config.json`` existed: the checkpoint's
    ``config_json``, with the defaults of the time for options added since (``fitness_shift`` was
    the plain return, 0)."""
    z = load_npz(checkpoint_path)
    if "config_json" not in z:
        return None
    old = parse_json(str(z["config_json"]), name=f"{checkpoint_path}: corrupt checkpoint: config_json")
    legacy = {"fitness_shift": 0.0, **ADDED_KEYS}
    return {k: old.get(k, legacy.get(k, v)) for k, v in to_dict(ECConfig()).items()}


def _start(rd: RunDir, cfg: ECConfig, method, log):
    """``(method state, progress)``: from the checkpoint when resuming (every array checked first),
    else generation 0."""
    prog = Progress()
    if not rd.resuming:
        if cfg.resume:
            log(f"--resume: no checkpoint in {rd.path}, starting from scratch")
        rd.file("best_deployed.npz").unlink(missing_ok=True)   # of an overwritten run
        return method.init(), prog
    ck = rd.checkpoint_path
    z = rd.load_checkpoint(required=(*_PROGRESS_KEYS, *method.checkpoint_keys))
    try:
        state = method.from_state_arrays(z)
    except ValueError as e:
        raise ValueError(f"{ck}: corrupt checkpoint ({e})") from None
    prog.restore(z, state.generation, ck)
    if not budget_spent(cfg, prog, lambda *_: None, resumed=True):   # else the one line is the budget's
        log(f"resuming {rd.path} at {method.unit} {state.generation}")
    return state, prog


def _metrics_row(info: dict, prog: Progress) -> dict:
    """The ``metrics.csv`` row of a generation, by column name (meanings: :mod:`refsnn.commands.ec_progress`)."""
    dt_gen = prog.gen_times[-1]
    return {"generation": info["generation"], "mean_return": info["mean_return"], "max_return": info["max_return"],
            "det_return": info["det_return"], "rho_entropy": info["rho_entropy"],
            "firing_rate_hz": info["firing_rate_hz"], "env_steps": prog.env_steps,
            "steps_per_s": info["env_steps"] / max(dt_gen, 1e-9),
            "policy_over_env": info["policy_s"] / max(info["env_s"], 1e-12), "elapsed_s": prog.elapsed()}


def _log_line(cfg: ECConfig, method, row: dict, info: dict, eta: float) -> str:
    unit = "iter" if method.unit == "iteration" else "gen"
    return (f"{unit} {info['generation']:4d}/{cfg.generations}  return mean {row['mean_return']:8.1f} max "
            f"{row['max_return']:8.1f}  det {row['det_return']:8.1f}  {info['progress']}  rate "
            f"{row['firing_rate_hz']:5.1f} Hz  {row['steps_per_s']:6.0f} steps/s  policy/env "
            f"{row['policy_over_env']:.2f}  elapsed {fmt_hms(row['elapsed_s'])}  ETA {fmt_hms(eta)}")


def _checkpoint(cfg: ECConfig, state, prog: Progress, row: dict) -> dict:
    """The checkpoint arrays: the method state's (``param.*``, ``opt.*``, ``generation``, ``norm.*``;
    PPO ``rnorm.*``), the history and counters, and the config (``config_json``)."""
    ck = state.state_arrays()
    ck.update({"history": prog.history, "env_steps": np.array(prog.env_steps, np.int64),
               "wall_seconds": np.array(row["elapsed_s"], np.float64), "best_det": np.array(prog.best),
               "config_json": np.array(json.dumps(to_dict(cfg), sort_keys=True))})
    return ck


def _write_outputs(rd: RunDir, cfg: ECConfig, method, prog: Progress) -> None:
    """``metrics.csv`` (the whole history) and ``learning_curve.png``."""
    rd.write_metrics([{c: (str(int(v)) if c in INT_COLUMNS else f"{v:.6g}") for c, v in r.items()}
                      for r in prog.rows()])
    rd.plot("learning_curve.png", prog.column("generation"),
            {"mean sampled return": prog.column("mean_return"), "max sampled return": prog.column("max_return"),
             "deterministic return": prog.column("det_return")},
            title=f"refsnn {method.name} on {cfg.env} (P={cfg.population}, seed {cfg.seed})",
            xlabel="generation", ylabel="return")


def _summary(cfg: ECConfig, info: dict, row: dict, prog: Progress) -> dict:
    # strict JSON (summary.json): no NaN; a run without deterministic members (--eval-members 0) has
    # no deterministic return, None (null)
    return {"method": cfg.method, "env": cfg.env, "final_deterministic_return": _finite_or_none(info["det_return"]),
            "best_deterministic_return": _finite_or_none(prog.best),
            "final_mean_return": _finite_or_none(info["mean_return"]), "generations": info["generation"],
            "env_steps": prog.env_steps, "wall_seconds": float(row["elapsed_s"]),
            "population": cfg.population, "eval_members": cfg.eval_members, "seed": cfg.seed,
            "neurons": cfg.neurons, **info["summary"]}



@contextmanager
def _evaluator(cfg: ECConfig, executor, chunks):
    """The rollout :class:`Evaluator`: on ``executor`` if given, on a dask cluster for
    ``--executor dask``, else on ``cfg.workers`` local processes. Closed on exit; after an error or a
    signal the local workers are terminated instead of awaited."""
    client = None
    if executor is not None:
        ev = Evaluator(executor=executor, chunks=chunks or max(1, cfg.workers), chunk_size=cfg.chunk_size)
    elif cfg.executor == "dask":
        try:
            from distributed import Client  # optional dependency: refsnn[distributed]
        except ImportError:
            raise ValueError("executor: --executor dask needs dask.distributed "
                             "(pip install refsnn[distributed])") from None
        client = Client(cfg.scheduler)
        n = max(1, len(client.scheduler_info().get("workers", {})))
        ev = Evaluator(executor=client.get_executor(pure=False), chunks=max(n, cfg.workers), chunk_size=cfg.chunk_size)
    else:
        ev = Evaluator(cfg.workers, chunk_size=cfg.chunk_size)
    ok = False
    try:
        yield ev
        ok = True
    finally:
        ev.close(abort=not ok)
        if client is not None:
            client.close()
