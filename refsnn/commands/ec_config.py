"""The options of ``refsnn ec`` (:class:`ECConfig`, the command line and the Python API) and the keys
that define a run (:data:`RUN_KEYS`); the command is :mod:`refsnn.commands.ec`."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from refsnn._checks import check_choice, check_float, check_int
from refsnn.commands.config import check_run_dir_options, option
from refsnn.commands.memory import check_fits
from refsnn.ec import ppo
from refsnn.ec.nes import RANK_TIES
from refsnn.ec.policy import METHODS, RNN_GATES
from refsnn.ec.rollout import EPISODE_PROTOCOLS
from refsnn.ec.strategy import check_hyperparameters
from refsnn.kernels.surrogate import NAMES as SURROGATES

__all__ = ["ECConfig", "RUN_KEYS", "ADDED_KEYS", "parse_fitness_shift", "ppo_settings"]

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
    """Options of ``refsnn ec`` (CleanRL style: the defaults are the CPU defaults of :mod:`refsnn.commands.ec`)."""
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
        # the values the strategies take are checked by their one check (refsnn.ec.strategy), here
        # before any work; population even for the ES methods
        check_hyperparameters(self.method, gradient=self.gradient, population=self.population,
                              eval_members=self.eval_members, neurons=self.neurons, seed=self.seed,
                              rank_ties=self.rank_ties, lr=self.lr, eps=self.eps, kl_max=self.kl_max,
                              sigma=self.sigma, weight_decay=self.weight_decay,
                              **({} if self.fitness_shift is None else {"fitness_shift": self.fitness_shift}))
        check_choice("executor", self.executor, ("local", "dask"))
        check_int("generations", self.generations, lo=1)
        check_int("max_steps", self.max_steps, lo=1)
        check_int("workers", self.workers, lo=0)
        check_int("chunk_size", self.chunk_size, lo=1)
        check_int("max_env_steps", self.max_env_steps, lo=0)
        check_choice("episodes", self.episodes, EPISODE_PROTOCOLS)
        check_int("reset_pool", self.reset_pool, lo=0)
        if self.method == "sg-ppo" and (self.episodes != "one" or self.reset_pool or self.rank_ties != "average"):
            raise ValueError("episodes: --episodes, --reset-pool and --rank-ties are options of the evolution "
                             "strategies (ec, es, es-gru, es-lstm), not of sg-ppo")
        check_float("max_minutes", self.max_minutes, lo=0.0)
        self.out = check_run_dir_options(self.out, self.resume, self.overwrite)
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
ADDED_KEYS = {"kl_max": 0.0, "ppo_envs": 4, "ppo_steps": 512, "ppo_window": 16, "ppo_minibatch": 32,
              "ppo_epochs": 4, "ppo_gamma": 0.99, "ppo_lambda": 0.95, "ppo_clip": 0.2, "ppo_ent_coef": 0.0,
              "ppo_vf_coef": 0.5, "ppo_max_grad_norm": 0.5, "surrogate": "atan", "surrogate_alpha": None,
              "detach_reset": True, "rank_ties": "average", "episodes": "one", "reset_pool": 0}
