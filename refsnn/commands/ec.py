"""``refsnn ec``: Evolving Connectivity (or the ES-RSNN baseline) on a Gymnasium task (SPEC §5, §8).

The command is a loop over generations of an ask/tell strategy (:mod:`refsnn.ec.strategy`, which
states the update's equations); one generation (seed eqs. 9–14, SPEC §5.2):

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

``--method es`` runs ES-RSNN instead (SPEC §5.5: antithetic pairs, sigma 0.3, AdamW lr 0.15 weight
decay 0.1, real weights, no Dale's law) with the same rollout code.

The reported *deterministic return* of generation ``g`` is the mean return of the ``E``
deterministic members of the parameters evaluated in ``g`` (before ``g``'s update);
``final_deterministic_return`` is that of the last generation (``null`` in ``summary.json``, ``None``
in the returned summary, with ``--eval-members 0``: strict JSON has no NaN), and ``deployed.npz`` holds exactly
those parameters (``best_deployed.npz`` those of the best generation; format in
:mod:`refsnn.ec.deploy`). Everything depends only on ``(seed, generation, member index)``, the
parameters, the optimiser state and the normaliser, all of which are checkpointed, so ``--resume``
continues to the bit-identical result of an uninterrupted run, and the number of workers does not
change any result.

The output directory ``--out`` is a :class:`refsnn.runs.RunDir`: ``config.json``,
``environment.json``, ``metrics.csv`` (:data:`COLUMNS`, one row per generation), ``summary.json``,
``learning_curve.png``, ``checkpoint.npz`` (atomic, every generation, no pickle), plus
``deployed.npz`` / ``best_deployed.npz`` for ``refsnn play``.

CPU defaults (the paper: 10,112 + 128 members on one GPU, 1,000 generations): population 128
stochastic + 4 deterministic members, 200 generations, 2 worker processes, episodes capped at 1000
steps, fitness shift "auto" (the only default that departs from the reference code: with 128
members the plain return stalls at Hopper's stand-still optimum; docs/ec.md).

Python API: ``run(ECConfig(generations=20, out="runs/x"))`` returns the summary dict.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from refsnn._checks import check_choice, check_float, check_int
from refsnn.commands.config import option, to_dict
from refsnn.commands.memory import check_fits
from refsnn.ec import ppo
from refsnn.ec.deploy import deployed_arrays
from refsnn.ec.nes import RANK_TIES
from refsnn.ec.policy import METHODS, RNN_GATES
from refsnn.ec.restore import restored_array, restored_float, restored_int
from refsnn.ec.rollout import EPISODE_PROTOCOLS, Evaluator, RunningNorm, check_env
from refsnn.ec.strategy import make_strategy
from refsnn.io import atomic_savez, load_npz, parse_json
from refsnn.kernels.surrogate import NAMES as SURROGATES
from refsnn.runs import RunDir, fmt_hms, stop_on_signals
from refsnn.snn.threads import threads

__all__ = ["ECConfig", "CONFIG", "RUN_KEYS", "COLUMNS", "run", "main", "resolve_fitness_shift",
           "parse_fitness_shift"]


def parse_fitness_shift(text: str) -> float | None:
    """``--fitness-shift``: ``auto`` (``None``) or a number."""
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None


@dataclass
class ECConfig:
    """Options of ``refsnn ec`` (CleanRL style: the defaults are the CPU defaults of the module docstring)."""
    env: str = option("Hopper-v5", "Gymnasium environment id (1-D Box observation and action)")
    method: str = option("ec", "ec: Evolving Connectivity; es: the ES-RSNN baseline; es-gru, es-lstm: the "
                         "deep-RNN baselines (OpenAI-ES on a GRU / LSTM policy); sg-ppo: the RSNN with real "
                         "weights trained by PPO through surrogate gradients (--generations = PPO iterations)",
                         choices=METHODS)
    generations: int = option(200, "generations to run (in total, counting those of a resumed run)")
    population: int = option(128, "stochastic members P per generation (paper: 10,112 on a GPU)")
    eval_members: int = option(4, "deterministic evaluation members E per generation (paper: 128)")
    max_steps: int = option(1000, "episode cap in environment steps")
    lr: float | None = option(None, "Adam learning rate (default: 0.15 for ec and es, the reference code's; 0.01 for "
                              "es-gru and es-lstm, es_dense.py's; 3e-4 for sg-ppo, CleanRL's)")
    eps: float = option(1e-3, "EC: clip rho to [eps, 1 - eps]")
    kl_max: float = option(0.0, "EC: trust region, mean KL(B(rho_old) || B(rho_new)) per connection <= KL_MAX "
                           "nats per generation (SATR's idea, fixed radius; 0 = off, the reference code)")
    gradient: str = option("natural", "EC: natural (reference code) or plain (divided by rho (1 - rho), "
                           "seed eq. 13) gradient", choices=("natural", "plain"))
    fitness_shift: float | None = option(
        None, "rank return - SHIFT x episode length; auto (= none) is the env's alive bonus per step "
        "(Hopper/Walker2d/Ant 1, Humanoid 5, else 0); 0 is the reference code's plain return",
        parse=parse_fitness_shift, metavar="auto|SHIFT")
    rank_ties: str = option("average", "how equal fitness values are ranked: average (their mean rank; the update "
                            "does not depend on member order) or ordinal (by member index, the reference code's "
                            "double argsort)", choices=RANK_TIES)
    episodes: str = option("one", "episode protocol: one (one episode per member from a fresh network state) or "
                           "fill (the reference code's: all members step in lock-step, auto-reset with the network "
                           "state kept, until the slowest member's first episode ends; fitness = mean over the "
                           "completed episodes)", choices=EPISODE_PROTOCOLS)
    reset_pool: int = option(0, "initial states: 0 = a fresh reset seed for every episode; N > 0 = a pool of N "
                             "reset seeds drawn once per run, member i always starts from entry i mod N (N >= "
                             "population + eval members: the reference code's env_reset_pool)")
    sigma: float | None = option(None, "ES: perturbation scale (default: 0.3 for es, 0.02 for es-gru and es-lstm)")
    weight_decay: float = option(0.1, "ES: AdamW decoupled weight decay")
    neurons: int | None = option(None, "RSNN neurons N (half excitatory) or RNN hidden units (default: 256; 128 for "
                                 "es-lstm, as the reference code)")
    seed: int = option(0, "run seed")
    workers: int = option(2, "local worker processes, 0 = in-process; results do not depend on it")
    chunk_size: int = option(256, "at most this many members per rollout task (bounds a worker's memory, "
                             "about 1.9 MB per Humanoid-v5 member at N=256, 0.7 GB per worker at 256); results do "
                             "not depend on it")
    max_env_steps: int = option(0, "stop after the generation that reaches this many env steps (0 = no limit; "
                                "not a run setting: a resumed run may change it)")
    max_minutes: float = option(0.0, "stop after the generation that reaches this much wall time (0 = no limit)")
    out: str = option("runs/ec", "output directory")
    resume: bool = option(False, "continue the run in --out from its checkpoint.npz")
    overwrite: bool = option(False, "start again in an --out that holds a run (its files are replaced)")
    executor: str = option("local", "local process pool, or a dask.distributed cluster (needs "
                           "refsnn[distributed])", choices=("local", "dask"))
    scheduler: str = option("", "dask scheduler address for --executor dask (e.g. tcp://host:8786)")
    # SG-PPO (refsnn.ec.ppo; CleanRL ppo_continuous_action defaults where they apply)
    ppo_envs: int = option(4, "sg-ppo: environments stepped in lock-step per iteration")
    ppo_steps: int = option(512, "sg-ppo: steps per environment per iteration (fresh episodes each iteration)")
    ppo_window: int = option(16, "sg-ppo: truncated-BPTT window in environment steps (divides --ppo-steps)")
    ppo_minibatch: int = option(32, "sg-ppo: windows per minibatch")
    ppo_epochs: int = option(4, "sg-ppo: passes over the rollout per iteration")
    ppo_gamma: float = option(0.99, "sg-ppo: discount")
    ppo_lambda: float = option(0.95, "sg-ppo: GAE lambda")
    ppo_clip: float = option(0.2, "sg-ppo: ratio and value clip")
    ppo_ent_coef: float = option(0.0, "sg-ppo: entropy bonus")
    ppo_vf_coef: float = option(0.5, "sg-ppo: value-loss weight")
    ppo_max_grad_norm: float = option(0.5, "sg-ppo: global gradient-norm clip")
    surrogate: str = option("atan", "sg-ppo: surrogate gradient of the spike (the paper's Figure 4 varies it)",
                            choices=SURROGATES)
    surrogate_alpha: float | None = option(None, "sg-ppo: surrogate scale alpha (default: the surrogate's, "
                                           "SPEC §2.2)")
    detach_reset: bool = option(False, "sg-ppo: no gradient through the reset's spike (detached, the BPTT through "
                                       "a 16-step window explodes: gradient norms 1e9 at the start, 1e25 later)")

    def __post_init__(self):
        check_choice("method", self.method, METHODS)
        rnn = self.method in RNN_GATES     # the reference code's per-method defaults
        if self.lr is None:
            self.lr = 3e-4 if self.method == "sg-ppo" else 0.01 if rnn else 0.15
        if self.sigma is None:
            self.sigma = 0.02 if rnn else 0.3
        if self.neurons is None:
            self.neurons = 128 if self.method == "es-lstm" else 256
        check_choice("gradient", self.gradient, ("natural", "plain"))
        check_choice("executor", self.executor, ("local", "dask"))
        check_int("generations", self.generations, lo=1)
        check_int("population", self.population, lo=2)
        check_int("eval_members", self.eval_members, lo=0)
        check_int("max_steps", self.max_steps, lo=1)
        check_int("neurons", self.neurons, lo=2)
        check_int("seed", self.seed, lo=0)
        check_int("workers", self.workers, lo=0)
        check_int("chunk_size", self.chunk_size, lo=1)
        check_int("max_env_steps", self.max_env_steps, lo=0)
        check_choice("rank_ties", self.rank_ties, RANK_TIES)
        check_choice("episodes", self.episodes, EPISODE_PROTOCOLS)
        check_int("reset_pool", self.reset_pool, lo=0)
        if self.method == "sg-ppo" and (self.episodes != "one" or self.reset_pool or self.rank_ties != "average"):
            raise ValueError("episodes: --episodes, --reset-pool and --rank-ties are options of the evolution "
                             "strategies (ec, es, es-gru, es-lstm), not of sg-ppo")
        check_float("max_minutes", self.max_minutes, lo=0.0)
        check_float("lr", self.lr, lo=0.0)
        check_float("eps", self.eps, lo=0.0, hi=0.5)
        check_float("kl_max", self.kl_max, lo=0.0)
        check_float("sigma", self.sigma, lo=0.0, lo_open=True)
        check_float("weight_decay", self.weight_decay, lo=0.0)
        if self.fitness_shift is not None:
            check_float("fitness_shift", self.fitness_shift)
        if self.method in ("es", *RNN_GATES) and self.population % 2:
            raise ValueError(f"population: ES uses antithetic pairs, expected an even number, got "
                             f"{self.population}")
        if isinstance(self.out, os.PathLike):
            self.out = os.fspath(self.out)
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"out: expected a directory path, got {self.out!r}")
        if self.resume and self.overwrite:
            raise ValueError("overwrite: cannot both resume a run (--resume) and start it again (--overwrite)")
        if self.method == "sg-ppo":
            try:
                ppo_settings(self)
            except ValueError as e:   # name the option, not PPOSettings' field
                name, _, rest = str(e).partition(":")
                raise ValueError(f"{_PPO_OPTION.get(name, name)}:{rest}") from None
        if self.executor == "dask" and not self.scheduler:
            raise ValueError("scheduler: --executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
        # sizes that cannot fit, refused before any work (refsnn.commands.memory): the parent keeps ~340
        # bytes per member and generation (return, length, spikes, observation statistics), and 6 float64
        # copies of the N x N recurrent weights (parameters, Adam's moments, the update, the gradient)
        members = (0 if self.method == "sg-ppo" else self.population) + self.eval_members
        check_fits("eval_members" if self.method == "sg-ppo" or self.eval_members > self.population else "population",
                   340.0 * members, f"the results of {members} members per generation (--population "
                   f"{self.population}, --eval-members {self.eval_members})")
        check_fits("neurons", 48.0 * self.neurons ** 2, f"the weights and optimiser state of {self.neurons} neurons")


CONFIG = ECConfig


# PPOSettings field -> ECConfig option
_PPO_OPTION = {"n_envs": "ppo_envs", "n_steps": "ppo_steps", "window": "ppo_window",
               "minibatch_windows": "ppo_minibatch", "epochs": "ppo_epochs", "gamma": "ppo_gamma",
               "gae_lambda": "ppo_lambda", "clip": "ppo_clip", "ent_coef": "ppo_ent_coef", "vf_coef": "ppo_vf_coef",
               "max_grad_norm": "ppo_max_grad_norm", "alpha": "surrogate_alpha"}


def ppo_settings(cfg: ECConfig) -> ppo.PPOSettings:
    """The :class:`refsnn.ec.ppo.PPOSettings` of an ``--method sg-ppo`` config."""
    return ppo.PPOSettings(n_envs=cfg.ppo_envs, n_steps=cfg.ppo_steps, window=cfg.ppo_window,
                           minibatch_windows=cfg.ppo_minibatch, epochs=cfg.ppo_epochs, lr=cfg.lr, gamma=cfg.ppo_gamma,
                           gae_lambda=cfg.ppo_lambda, clip=cfg.ppo_clip, ent_coef=cfg.ppo_ent_coef,
                           vf_coef=cfg.ppo_vf_coef, max_grad_norm=cfg.ppo_max_grad_norm, surrogate=cfg.surrogate,
                           alpha=cfg.surrogate_alpha, detach_reset=cfg.detach_reset)

# keys that define a run: a checkpoint is only resumed with the same values
RUN_KEYS = ("env", "method", "population", "eval_members", "max_steps", "lr", "eps", "gradient", "sigma",
            "weight_decay", "neurons", "seed", "fitness_shift", "kl_max", "ppo_envs", "ppo_steps", "ppo_window",
            "ppo_minibatch", "ppo_epochs", "ppo_gamma", "ppo_lambda", "ppo_clip", "ppo_ent_coef", "ppo_vf_coef",
            "ppo_max_grad_norm", "surrogate", "surrogate_alpha", "detach_reset", "rank_ties", "episodes",
            "reset_pool")
# run keys added after runs existed, with the value those runs had
_ADDED_KEYS = {"kl_max": 0.0, "ppo_envs": 4, "ppo_steps": 512, "ppo_window": 16, "ppo_minibatch": 32,
               "ppo_epochs": 4, "ppo_gamma": 0.99, "ppo_lambda": 0.95, "ppo_clip": 0.2, "ppo_ent_coef": 0.0,
               "ppo_vf_coef": 0.5, "ppo_max_grad_norm": 0.5, "surrogate": "atan", "surrogate_alpha": None,
               "detach_reset": True, "rank_ties": "average", "episodes": "one", "reset_pool": 0}

COLUMNS = ("generation", "mean_return", "max_return", "det_return", "rho_entropy", "firing_rate_hz",
           "env_steps", "steps_per_s", "policy_over_env", "elapsed_s")
_INT_COLUMNS = ("generation", "env_steps")
_CHECKPOINT_KEYS = ("config_json", "generation", "history", "opt.t", "norm.count", "norm.mean", "norm.m2",
                    "env_steps", "wall_seconds", "best_det")


def resolve_fitness_shift(cfg: ECConfig, env) -> float:
    """``cfg.fitness_shift``, or for ``None`` ("auto") the env's alive bonus per step
    (Gymnasium MuJoCo's ``healthy_reward``; 0 when the env has none)."""
    if cfg.fitness_shift is not None:
        return float(cfg.fitness_shift)
    return float(getattr(env.unwrapped, "_healthy_reward", 0.0) or 0.0)


@dataclass
class _Progress:
    """What the command keeps beside the strategy state and the normaliser (all checkpointed)."""
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, len(COLUMNS))))
    env_steps: int = 0
    wall_prev: float = 0.0
    best: float = -math.inf
    t_session: float = field(default_factory=time.perf_counter)
    gen_times: list = field(default_factory=list)

    def elapsed(self) -> float:
        return self.wall_prev + (time.perf_counter() - self.t_session)

    def restore(self, z: dict, generation: int, path) -> None:
        """History, env steps, wall time and best return from checkpoint ``z`` (at ``generation``), all
        checked before any is kept: ``history`` one row per generation numbered ``1..generation``
        (NaN only in the returns and the entropy, where the run writes it; rates, counts and times
        finite and >= 0), ``env_steps`` a whole number >= 0 equal to the last row's, ``wall_seconds``
        >= 0, ``best_det`` the best deterministic return of the history (``-inf`` before any).
        ``ValueError`` ``PATH: corrupt checkpoint (KEY: ...)``."""
        try:
            history = restored_array(z, "history", shape=(generation, len(COLUMNS)), allow_nan=True)
            col = {c: history[:, i] for i, c in enumerate(COLUMNS)}
            if not np.array_equal(col["generation"], np.arange(1, generation + 1)):
                raise ValueError(f"history: its generation column is not 1..{generation}")
            for c in ("firing_rate_hz", "env_steps", "steps_per_s", "policy_over_env", "elapsed_s"):
                restored_array({f"history {c}": col[c]}, f"history {c}", lo=0.0, integer=c == "env_steps")
            env_steps = restored_int(z, "env_steps", lo=0)
            if generation and env_steps != col["env_steps"][-1]:
                raise ValueError(f"env_steps: {env_steps}, the history's last row says {col['env_steps'][-1]:.0f}")
            wall = restored_float(z, "wall_seconds", lo=0.0)
            best = restored_float(z, "best_det", allow_neg_inf=True)
            det = col["det_return"][np.isfinite(col["det_return"])]
            if best != (det.max() if det.size else -math.inf):
                raise ValueError(f"best_det: {best:g} is not the best deterministic return of the history")
        except ValueError as e:
            raise ValueError(f"{path}: corrupt checkpoint ({e})") from None
        self.history, self.env_steps, self.wall_prev, self.best = history, env_steps, wall, best

    def eta(self, cfg: ECConfig, done: int) -> float:
        """Seconds left after ``done`` generations: the rest of ``cfg.generations`` at the pace of the
        last 10, or less when ``--max-minutes`` / ``--max-env-steps`` end the run first."""
        per_gen = float(np.mean(self.gen_times[-10:]))
        left = per_gen * (cfg.generations - done)
        if cfg.max_minutes:
            left = min(left, max(0.0, 60.0 * cfg.max_minutes - self.elapsed()))
        if cfg.max_env_steps and len(self.history):
            steps_per_gen = self.env_steps / len(self.history)
            left = min(left, per_gen * math.ceil(max(0, cfg.max_env_steps - self.env_steps) / steps_per_gen))
        return left


def _method_name(cfg: ECConfig) -> str:
    """The paper's name of the method: EC-RSNN, ES-RSNN, ES-GRU, ES-LSTM, SG-RSNN."""
    return {"ec": "EC-RSNN", "es": "ES-RSNN", "es-gru": "ES-GRU", "es-lstm": "ES-LSTM", "sg-ppo": "SG-RSNN"}[cfg.method]


def run(cfg: ECConfig, *, log=print, executor=None, chunks: int | None = None) -> dict:
    """Run (or with ``cfg.resume`` continue) an EC / ES-RSNN run in ``cfg.out``; returns the summary.

    ``executor``: any ``concurrent.futures.Executor`` to evaluate on instead of ``cfg.workers`` /
    ``cfg.executor``, split into ``chunks`` tasks per generation (default ``max(1, cfg.workers)``).
    """
    if cfg.method == "sg-ppo":
        return _run_sgppo(cfg, log=log, executor=executor, chunks=chunks)
    env, obs_dim, act_dim = check_env(cfg.env, cfg.max_steps)
    shift = resolve_fitness_shift(cfg, env)
    env.close()
    strategy = make_strategy(cfg.method, obs_dim, act_dim, neurons=cfg.neurons, population=cfg.population,
                             eval_members=cfg.eval_members, lr=cfg.lr, eps=cfg.eps, gradient=cfg.gradient,
                             sigma=cfg.sigma, weight_decay=cfg.weight_decay, fitness_shift=shift, seed=cfg.seed,
                             kl_max=cfg.kl_max, rank_ties=cfg.rank_ties)
    with RunDir(cfg.out, config=to_dict(cfg), resume_keys=RUN_KEYS, resume=cfg.resume, overwrite=cfg.overwrite,
                columns=COLUMNS, stored_config=_stored_config, added_keys=_ADDED_KEYS) as rd:
        state, norm, prog = _start(rd, cfg, strategy, obs_dim, log)
        summary = rd.read_summary()
        if rd.resuming and _budget_spent(cfg, prog, log, resumed=True):
            return summary
        log(f"refsnn ec: {_method_name(cfg)} on {cfg.env} (obs {obs_dim}, act {act_dim}), N={cfg.neurons}, "
            f"P={cfg.population}+{cfg.eval_members} deterministic, {cfg.generations} generations, fitness = "
            f"return - {shift:g} x length{_protocol_text(cfg)}, workers={cfg.workers}, seed={cfg.seed} -> {rd.path}")
        with _evaluator(cfg, executor, chunks) as evaluator:
            for g in range(state.generation, cfg.generations):
                t0 = time.perf_counter()
                pop = strategy.ask(state)
                norm_mean, norm_std = norm.frozen()
                res = evaluator.evaluate(env_id=cfg.env, max_steps=cfg.max_steps, norm=norm, episodes=cfg.episodes,
                                         reset_pool=cfg.reset_pool, **pop.evaluate_kwargs())
                state, info = strategy.tell(state, res["returns"], res["lengths"], map_fn=evaluator.map,
                                            n_chunks=evaluator.n_tasks(cfg.population),
                                            episodes=res["episodes"] if cfg.episodes == "fill" else None)
                for st in res["obs_stats"]:
                    norm.merge(*st)
                prog.env_steps += res["env_steps"]
                prog.gen_times.append(time.perf_counter() - t0)
                row = _metrics_row(info, res, prog)
                prog.history = np.vstack([prog.history, row[None]])
                improved = cfg.eval_members > 0 and info["det_return"] > prog.best
                prog.best = info["det_return"] if improved else prog.best
                log(_log_line(cfg, row, info, prog.eta(cfg, g + 1)))
                # outputs, every generation, each file atomically
                dep = deployed_arrays(to_dict(cfg), pop.params, norm_mean, norm_std,
                                      generation=info["generation"], det_return=info["det_return"])
                atomic_savez(rd.file("deployed.npz"), dep)
                if improved:
                    atomic_savez(rd.file("best_deployed.npz"), dep)
                rd.save_checkpoint(_checkpoint(cfg, state, norm, prog, row))
                _write_outputs(rd, cfg, prog)
                summary = _summary(cfg, info, row, prog, shift)
                rd.write_summary(summary)
                if _budget_spent(cfg, prog, log):
                    break
    return summary


_PPO_CHECKPOINT_KEYS = ("config_json", "generation", "history", "opt.t", "norm.count", "norm.mean", "norm.m2",
                        "rnorm.count", "rnorm.mean", "rnorm.m2", "env_steps", "wall_seconds", "best_det")


def _run_sgppo(cfg: ECConfig, *, log, executor, chunks) -> dict:
    """``--method sg-ppo``: PPO iterations (:func:`refsnn.ec.ppo.iterate`) in the same run directory,
    metrics, checkpoint and deployed files as EC. Per iteration: the deterministic policy's
    ``eval_members`` episodes through the executor (the ``det_return``; ``deployed.npz`` holds those
    parameters), then the iteration (rollout in-process, update, normalisers) on one BLAS thread, which
    also makes a run's result independent of the machine's core count."""
    env, obs_dim, act_dim = check_env(cfg.env, cfg.max_steps)
    env.close()
    s, net = ppo_settings(cfg), ppo.sg_config(cfg.neurons)
    with RunDir(cfg.out, config=to_dict(cfg), resume_keys=RUN_KEYS, resume=cfg.resume, overwrite=cfg.overwrite,
                columns=COLUMNS, stored_config=_stored_config, added_keys=_ADDED_KEYS) as rd:
        state, prog = _ppo_start(rd, cfg, net, obs_dim, act_dim, log)
        if rd.resuming and _budget_spent(cfg, prog, log, resumed=True):
            return rd.read_summary()
        log(f"refsnn ec: SG-RSNN trained by PPO on {cfg.env} (obs {obs_dim}, act {act_dim}), N={cfg.neurons}, "
            f"{s.n_envs} envs x {s.n_steps} steps per iteration, BPTT window {s.window}, surrogate {s.surrogate}"
            f"{'' if s.alpha is None else f'({s.alpha:g})'}, lr {s.lr:g}, {cfg.generations} iterations, "
            f"{cfg.eval_members} deterministic episodes per iteration, seed={cfg.seed} -> {rd.path}")
        envs = [check_env(cfg.env, cfg.max_steps)[0] for _ in range(s.n_envs)]
        summary = rd.read_summary()
        try:
            with _evaluator(cfg, executor, chunks) as evaluator:
                for it in range(state.iteration, cfg.generations):
                    t0 = time.perf_counter()
                    det = _ppo_deterministic(cfg, evaluator, state)
                    t1 = time.perf_counter()
                    try:
                        with threads(1):   # small GEMMs (batch 4 per step, 32 windows per minibatch): one BLAS
                            new, info = ppo.iterate(net, obs_dim, state, envs, s, cfg.seed)   # thread: 3-6x faster
                    except ppo.Diverged as e:
                        log(f"stopping: diverged at {e} (the last completed iteration stays in {rd.path})")
                        summary = {**summary, "diverged": True, "diverged_at_iteration": it + 1}
                        rd.write_summary(summary)
                        break
                    prog.gen_times.append(time.perf_counter() - t0)
                    prog.env_steps += info["steps"] + int(det["lengths"].sum())
                    row = _ppo_row(cfg, net, it, info, det, prog, t1 - t0)
                    prog.history = np.vstack([prog.history, row[None]])
                    improved = cfg.eval_members > 0 and row[3] > prog.best
                    prog.best = float(row[3]) if improved else prog.best
                    eta = prog.eta(cfg, it + 1)
                    st = info["stats"]
                    log(f"iter {it + 1:4d}/{cfg.generations}  episodes {len(info['episodes']):3d} return mean "
                        f"{row[1]:8.1f} max {row[2]:8.1f}  det {row[3]:8.1f}  kl {st['approx_kl']:.4f} clip "
                        f"{st['clip_frac']:.2f} std {float(np.exp(new.params['log_std']).mean()):.3f}  rate "
                        f"{row[5]:5.1f} Hz  {row[7]:6.0f} steps/s  elapsed {fmt_hms(row[9])}  ETA {fmt_hms(eta)}")
                    mean, std = state.obs_norm.frozen()   # the deployed network: the evaluated parameters
                    dep = deployed_arrays(to_dict(cfg), state.params, mean, std, generation=it + 1,
                                          det_return=float(row[3]))
                    atomic_savez(rd.file("deployed.npz"), dep)
                    if improved:
                        atomic_savez(rd.file("best_deployed.npz"), dep)
                    state = new
                    ck = state.state_arrays()
                    ck.update({"history": prog.history, "env_steps": np.array(prog.env_steps, np.int64),
                               "wall_seconds": np.array(row[9]), "best_det": np.array(prog.best),
                               "config_json": np.array(json.dumps(to_dict(cfg), sort_keys=True))})
                    rd.save_checkpoint(ck)
                    _write_outputs(rd, cfg, prog)
                    info_s = {"det_return": float(row[3]), "mean_return": _finite_or_none(float(row[1])),
                              "generation": it + 1}
                    summary = {**_summary(cfg, info_s, row, prog, 0.0), "fitness_shift": None,
                               "ppo": {k: float(val) for k, val in st.items()}}
                    rd.write_summary(summary)
                    if _budget_spent(cfg, prog, log):
                        break
        finally:
            for e in envs:
                e.close()
    return summary


def _ppo_start(rd: RunDir, cfg: ECConfig, net, obs_dim: int, act_dim: int, log):
    """``(PPOState, progress)``: from the checkpoint when resuming, else iteration 0."""
    prog = _Progress()
    if not rd.resuming:
        rd.file("best_deployed.npz").unlink(missing_ok=True)
        return ppo.init_state(net, obs_dim, act_dim, cfg.seed), prog
    z = rd.load_checkpoint(required=_PPO_CHECKPOINT_KEYS)
    try:
        state = ppo.state_from_arrays(net, obs_dim, act_dim, z)
    except ValueError as e:
        raise ValueError(f"{rd.checkpoint_path}: corrupt checkpoint ({e})") from None
    prog.restore(z, state.iteration, rd.checkpoint_path)
    if not _budget_spent(cfg, prog, lambda *_: None, resumed=True):   # else the one line is the budget's
        log(f"resuming {rd.path} at iteration {state.iteration}")
    return state, prog


def _ppo_deterministic(cfg: ECConfig, evaluator, state) -> dict:
    """The deterministic policy's ``eval_members`` episodes (members ``0..E-1`` of the iteration)."""
    if not cfg.eval_members:
        return {"returns": np.zeros(0), "lengths": np.zeros(0, np.int64), "spikes": np.zeros(0, np.int64)}
    return evaluator.evaluate(method="sg-ppo", cfg_kwargs={"n_neurons": cfg.neurons}, sigma=1.0, env_id=cfg.env,
                              max_steps=cfg.max_steps, params=state.params, norm=state.obs_norm, seed=cfg.seed,
                              generation=state.iteration, n_stochastic=0, n_eval=cfg.eval_members)


def _ppo_row(cfg: ECConfig, net, it: int, info: dict, det: dict, prog: _Progress, det_s: float) -> np.ndarray:
    """The ``metrics.csv`` row (:data:`COLUMNS`) of an iteration: the training episodes' returns, the
    deterministic return, the firing rate of the deterministic episodes, env steps (both kinds, as
    counted in ``prog.env_steps`` by the caller), steps/s, and in ``policy_over_env`` the ratio of
    rollout-and-update time to evaluation time."""
    steps = info["steps"] + int(det["lengths"].sum())
    ep = np.array([r for r, _ in info["episodes"]])
    det_ret = float(det["returns"].mean()) if det["returns"].size else float("nan")
    n_det = int(det["lengths"].sum())
    rate = float(det["spikes"].sum()) / max(1, n_det * cfg.neurons * net.n_substeps) / (net.dt * 1e-3)
    dt_gen = prog.gen_times[-1]
    row = np.array([it + 1, ep.mean() if ep.size else np.nan, ep.max() if ep.size else np.nan, det_ret, np.nan, rate,
                    prog.env_steps, steps / max(dt_gen, 1e-9), (dt_gen - det_s) / max(det_s, 1e-9), prog.elapsed()])
    return row


def _budget_spent(cfg: ECConfig, prog: _Progress, log, *, resumed: bool = False) -> bool:
    """``--max-env-steps`` / ``--max-minutes`` reached: checked after each completed generation, and
    (``resumed``) before the first generation of a resumed run, which then stops at once (one line,
    no generation run, no file written) instead of running one more generation each time."""
    what = "nothing to do" if resumed else "stopping"
    if cfg.max_env_steps and prog.env_steps >= cfg.max_env_steps:
        log(f"{what}: {prog.env_steps} env steps >= --max-env-steps {cfg.max_env_steps}")
        return True
    elapsed = prog.wall_prev if resumed else prog.elapsed()
    if cfg.max_minutes and elapsed >= 60.0 * cfg.max_minutes:
        log(f"{what}: {fmt_hms(elapsed)} >= --max-minutes {cfg.max_minutes:g}")
        return True
    return False


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



# -- the run's files ----------------------------------------------------------------------------------
def _stored_config(checkpoint_path) -> dict | None:
    """The config of a run directory written before ``config.json`` existed: the checkpoint's
    ``config_json``, with the defaults of the time for options added since (``fitness_shift`` was
    the plain return, 0)."""
    z = load_npz(checkpoint_path)
    if "config_json" not in z:
        return None
    old = parse_json(str(z["config_json"]), name=f"{checkpoint_path}: corrupt checkpoint: config_json")
    legacy = {"fitness_shift": 0.0, **_ADDED_KEYS}
    return {k: old.get(k, legacy.get(k, v)) for k, v in to_dict(ECConfig()).items()}


def _start(rd: RunDir, cfg: ECConfig, strategy, obs_dim: int, log):
    """``(strategy state, normaliser, progress)``: from the checkpoint when resuming, else generation 0."""
    norm, prog = RunningNorm(obs_dim), _Progress()
    if not rd.resuming:
        if cfg.resume:
            log(f"--resume: no checkpoint in {rd.path}, starting from scratch")
        rd.file("best_deployed.npz").unlink(missing_ok=True)   # of an overwritten run
        return strategy.init(), norm, prog
    ck = rd.checkpoint_path
    z = rd.load_checkpoint(required=_CHECKPOINT_KEYS)
    try:
        state = strategy.from_state_arrays(z)
        norm.load_state_arrays(z)
    except ValueError as e:
        raise ValueError(f"{ck}: corrupt checkpoint ({e})") from None
    prog.restore(z, state.generation, ck)
    if not _budget_spent(cfg, prog, lambda *_: None, resumed=True):   # else the one line is the budget's
        log(f"resuming {rd.path} at generation {state.generation}")
    return state, norm, prog


def _protocol_text(cfg: ECConfig) -> str:
    """The start line's words for the options that reproduce the reference code's choices (if set)."""
    parts = [f"rank ties {cfg.rank_ties}"] if cfg.rank_ties != "average" else []
    if cfg.episodes != "one":
        parts.append(f"episodes {cfg.episodes}")
    if cfg.reset_pool:
        parts.append(f"reset pool {cfg.reset_pool}")
    return "".join(", " + p for p in parts)


def _metrics_row(info: dict, res: dict, prog: _Progress) -> np.ndarray:
    """The ``metrics.csv`` row (:data:`COLUMNS`) of a generation (``steps``: env steps of the protocol)."""
    steps, dt_gen = res["env_steps"], prog.gen_times[-1]
    rate_hz = (float(res["spikes"].sum()) / max(1, steps * res["n_neurons"] * res["n_substeps"])
               / (res["dt"] * 1e-3))
    pol = res["policy_s"] / max(res["env_s"], 1e-12)
    return np.array([info["generation"], info["mean_return"], info["max_return"], info["det_return"],
                     info["rho_entropy"], rate_hz, prog.env_steps, steps / max(dt_gen, 1e-9), pol, prog.elapsed()],
                    dtype=np.float64)


def _log_line(cfg: ECConfig, row: np.ndarray, info: dict, eta: float) -> str:
    c = dict(zip(COLUMNS, row))
    ent = (f"H(rho) {info['rho_entropy']:.3f}" if math.isfinite(info["rho_entropy"])
           else f"|w|rms {info['param_rms']:.3f}")
    if cfg.method == "ec" and cfg.kl_max > 0:
        ent += f" step {info['trust_scale']:.2f}"
    return (f"gen {info['generation']:4d}/{cfg.generations}  return mean {c['mean_return']:8.1f} max "
            f"{c['max_return']:8.1f}  det {c['det_return']:8.1f}  {ent}  rate {c['firing_rate_hz']:5.1f} Hz  "
            f"{c['steps_per_s']:6.0f} steps/s  policy/env {c['policy_over_env']:.2f}  "
            f"elapsed {fmt_hms(c['elapsed_s'])}  ETA {fmt_hms(eta)}")


def _checkpoint(cfg: ECConfig, state, norm: RunningNorm, prog: _Progress, row: np.ndarray) -> dict:
    """The checkpoint arrays: the strategy state (``param.*``, ``opt.*``, ``generation``), the
    normaliser (``norm.*``), the history and counters, and the config (``config_json``)."""
    ck = state.state_arrays()
    ck.update(norm.state_arrays())
    ck.update({"history": prog.history, "env_steps": np.array(prog.env_steps, np.int64),
               "wall_seconds": np.array(row[COLUMNS.index("elapsed_s")]), "best_det": np.array(prog.best),
               "config_json": np.array(json.dumps(to_dict(cfg), sort_keys=True))})
    return ck


def _write_outputs(rd: RunDir, cfg: ECConfig, prog: _Progress) -> None:
    """``metrics.csv`` (the whole history) and ``learning_curve.png``."""
    rd.write_metrics([{c: (str(int(v)) if c in _INT_COLUMNS else f"{v:.6g}") for c, v in zip(COLUMNS, row)}
                      for row in prog.history])
    h = {c: prog.history[:, i] for i, c in enumerate(COLUMNS)}
    rd.plot("learning_curve.png", h["generation"],
            {"mean sampled return": h["mean_return"], "max sampled return": h["max_return"],
             "deterministic return": h["det_return"]},
            title=f"refsnn {_method_name(cfg)} on {cfg.env} (P={cfg.population}, seed {cfg.seed})",
            xlabel="generation", ylabel="return")


def _summary(cfg: ECConfig, info: dict, row: np.ndarray, prog: _Progress, shift: float) -> dict:
    # strict JSON (summary.json): no NaN; a run without deterministic members (--eval-members 0) has
    # no deterministic return, None (null)
    return {"method": cfg.method, "env": cfg.env, "final_deterministic_return": _finite_or_none(info["det_return"]),
            "best_deterministic_return": _finite_or_none(prog.best),
            "final_mean_return": info["mean_return"], "generations": info["generation"],
            "env_steps": prog.env_steps, "wall_seconds": float(row[COLUMNS.index("elapsed_s")]),
            "population": cfg.population, "eval_members": cfg.eval_members, "seed": cfg.seed,
            "neurons": cfg.neurons, "fitness_shift": shift}


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
