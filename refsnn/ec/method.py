"""The five methods of ``refsnn ec`` behind one interface, so that the command's generation loop is
written once: EC-RSNN, ES-RSNN, ES-GRU, ES-LSTM (the ask/tell strategies of
:mod:`refsnn.ec.strategy` with their rollouts: :class:`Evolution`) and SG-RSNN trained by PPO
(:mod:`refsnn.ec.ppo`: :class:`PPOMethod`). :func:`make_method` builds either.

A *method* object holds the settings; everything that changes from one generation (PPO: one
iteration) to the next is its *state*, an immutable value with ``generation`` (generations
completed) and ``state_arrays()`` (the checkpoint's keys, those of the runs written before this
interface: ``param.<k>``, ``opt.*``, ``generation``, ``norm.*``, and for PPO ``rnorm.*``). The
command needs only:

* ``method.init()`` -- generation 0; ``method.from_state_arrays(d)`` -- the state of a loaded
  checkpoint, every array checked before it is used (:mod:`refsnn.ec.restore`, ``ValueError``
  naming the key); ``method.checkpoint_keys`` -- the keys it reads; ``method.state_arrays(state)``
  -- the keys it writes;
* ``state, info = method.step(state, evaluator)`` -- one generation, its episodes through a
  :class:`refsnn.ec.rollout.Evaluator` (``ask``, evaluate, ``tell`` and the normaliser's merge for
  the strategies; the deterministic episodes, then :func:`refsnn.ec.ppo.iterate` for PPO);
* ``method.name``, ``method.unit``, ``method.setup_text()`` -- the words of the command's start line;
* ``method.close()`` (or ``with``) -- closes the environments it opened.

``info`` has the same keys for every method (:data:`INFO_KEYS`), and each figure means the same
thing for all five:

* ``generation``: generations completed (the metrics row's); ``mean_return`` / ``max_return``: the
  plain returns of the generation's exploratory episodes (the ``P`` stochastic members; PPO: the
  episodes its stochastic policy completed in the iteration's rollout, NaN when none did);
  ``det_return``: mean return of the ``E`` deterministic episodes of the evaluated parameters (NaN
  for ``E = 0``); ``steps``: the summed episode lengths the update used (members, PPO: rollout plus
  deterministic); ``env_steps``: every environment step the generation took; ``fitness``: the ``P``
  ranked fitness values (none for PPO); ``trust_scale``, ``rho_entropy``: EC's step fraction and
  mean Bernoulli entropy of ``rho`` (NaN for the others); ``param_rms``: RMS of the new parameters;
* ``firing_rate_hz``: mean spike rate per neuron over the episodes evaluated through the executor
  (all members; PPO: the deterministic ones), 0 for the RNN policies, which do not spike;
* ``policy_s``: seconds spent in the policy -- forward passes, backward passes and the update,
  everything of the generation but the environments; ``env_s``: seconds in ``env.step`` /
  ``env.reset``. Their ratio is the metrics' ``policy_over_env`` for every method;
* ``deployed``: ``(params, obs_mean, obs_std)`` of the deterministic episodes (the parameters before
  the update and the frozen normaliser: what ``deployed.npz`` holds);
* ``progress``: the method's own figures as words for the log line; ``summary``: the method's
  entries of ``summary.json`` (``fitness_shift``; PPO also ``ppo``, the update's averaged statistics).

Numerics: exactly the operations, in the same order, of the loops that preceded this interface, so
runs and checkpoints are bit-identical to theirs and old checkpoints resume.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from refsnn._checks import check_choice, check_int
from refsnn.ec import ppo
from refsnn.ec.policy import METHODS
from refsnn.ec.ppo import Diverged, PPOSettings, PPOState
from refsnn.ec.rollout import EPISODE_PROTOCOLS, RunningNorm, check_env
from refsnn.ec.strategy import StrategyState, make_strategy, params_rms
from refsnn.tuning import threads

__all__ = ["INFO_KEYS", "NAMES", "EvolutionState", "Evolution", "PPOMethod", "make_method", "Diverged",
           "firing_rate_hz"]

#: the keys of every method's ``step`` info (module docstring)
INFO_KEYS = ("generation", "mean_return", "max_return", "det_return", "steps", "env_steps", "fitness",
             "trust_scale", "rho_entropy", "param_rms", "firing_rate_hz", "policy_s", "env_s", "deployed",
             "progress", "summary")
#: the papers' names of the methods
NAMES = {"ec": "EC-RSNN", "es": "ES-RSNN", "es-gru": "ES-GRU", "es-lstm": "ES-LSTM", "sg-ppo": "SG-RSNN"}


def firing_rate_hz(spikes: float, steps: int, n_neurons: int, n_substeps: int, dt_ms: float) -> float:
    """Mean spike rate per neuron in Hz: ``spikes / (steps * n_neurons * n_substeps)`` per substep of
    ``dt_ms`` milliseconds (0 without steps)."""
    return float(spikes) / max(1, steps * n_neurons * n_substeps) / (dt_ms * 1e-3)


# -- the evolution strategies -----------------------------------------------------------------------
@dataclass(frozen=True)
class EvolutionState:
    """A strategy's state (:class:`refsnn.ec.strategy.StrategyState`) and the observation normaliser of
    its rollouts (:class:`refsnn.ec.rollout.RunningNorm`, not modified once in a state)."""
    strategy: StrategyState
    norm: RunningNorm

    @property
    def generation(self) -> int:
        return self.strategy.generation

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The strategy's arrays (``param.<k>``, ``opt.*``, ``generation``) and ``norm.*``."""
        d = self.strategy.state_arrays()
        d.update(self.norm.state_arrays())
        return d


class Evolution:
    """EC, ES-RSNN, ES-GRU or ES-LSTM: an ask/tell ``strategy`` (:mod:`refsnn.ec.strategy`) whose
    members run ``episodes`` (``"one"`` / ``"fill"``) of ``env_id`` capped at ``max_steps`` from the
    reset pool ``reset_pool`` (:mod:`refsnn.ec.rollout`)."""

    unit = "generation"
    checkpoint_keys = ("generation", "opt.t", "norm.count", "norm.mean", "norm.m2")

    def __init__(self, strategy, *, env_id: str, max_steps: int, episodes: str = "one", reset_pool: int = 0):
        self.strategy = strategy
        self.method, self.name = strategy.method, NAMES[strategy.method]
        self.env_id, self.max_steps = env_id, check_int("max_steps", max_steps, lo=1)
        self.episodes = check_choice("episodes", episodes, EPISODE_PROTOCOLS)
        self.reset_pool = check_int("reset_pool", reset_pool, lo=0)

    def init(self) -> EvolutionState:
        return EvolutionState(self.strategy.init(), RunningNorm(self.strategy.obs_dim))

    def state_arrays(self, state: EvolutionState) -> dict[str, np.ndarray]:
        """``state.state_arrays()`` (checkpoint keys)."""
        return state.state_arrays()

    def from_state_arrays(self, d) -> EvolutionState:
        state = self.strategy.from_state_arrays(d)
        norm = RunningNorm(self.strategy.obs_dim)
        norm.load_state_arrays(d)
        return EvolutionState(state, norm)

    def step(self, state: EvolutionState, evaluator) -> tuple[EvolutionState, dict]:
        """``ask``, the members' episodes (normaliser frozen), ``tell``, then the generation's
        observation statistics merged into a copy of the normaliser in member order."""
        s = self.strategy
        pop = s.ask(state.strategy)
        mean, std = state.norm.frozen()
        res = evaluator.evaluate(env_id=self.env_id, max_steps=self.max_steps, norm=state.norm,
                                 episodes=self.episodes, reset_pool=self.reset_pool, **pop.evaluate_kwargs())
        t0 = time.perf_counter()
        new, info = s.tell(state.strategy, res["returns"], res["lengths"], map_fn=evaluator.map,
                           n_chunks=evaluator.n_tasks(s.population),
                           episodes=res["episodes"] if self.episodes == "fill" else None)
        norm = state.norm.copy()
        for st in res["obs_stats"]:
            norm.merge(*st)
        info.update(env_steps=res["env_steps"], policy_s=res["policy_s"] + (time.perf_counter() - t0),
                    env_s=res["env_s"], deployed=(pop.params, mean, std),
                    firing_rate_hz=firing_rate_hz(res["spikes"].sum(), res["env_steps"], res["n_neurons"],
                                                  res["n_substeps"], res["dt"]),
                    summary={"fitness_shift": s.fitness_shift})
        if math.isfinite(info["rho_entropy"]):
            info["progress"] = f"H(rho) {info['rho_entropy']:.3f}"
            if getattr(s, "kl_max", 0.0) > 0:
                info["progress"] += f" step {info['trust_scale']:.2f}"
        else:
            info["progress"] = f"|w|rms {info['param_rms']:.3f}"
        return EvolutionState(new, norm), info

    def setup_text(self) -> str:
        """The start line's words for the population, the fitness and the episode protocol."""
        s = self.strategy
        parts = [f"P={s.population}+{s.eval_members} deterministic",
                 f"fitness = return - {s.fitness_shift:g} x length"]
        if s.rank_ties != "average":
            parts.append(f"rank ties {s.rank_ties}")
        if self.episodes != "one":
            parts.append(f"episodes {self.episodes}")
        if self.reset_pool:
            parts.append(f"reset pool {self.reset_pool}")
        return ", ".join(parts)

    def close(self) -> None:
        """Nothing to close: the members' environments live in the rollout tasks."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- PPO ----------------------------------------------------------------------------------------------
class PPOMethod:
    """SG-RSNN trained by PPO (:mod:`refsnn.ec.ppo`) on ``env_id`` capped at ``max_steps``. One step =
    one iteration: the deterministic policy's ``eval_members`` episodes through the evaluator (members
    ``0..E-1`` of the iteration; the ``det_return``), then :func:`refsnn.ec.ppo.iterate` (rollout on
    ``settings.n_envs`` environments in this process, update, normalisers) on one BLAS thread, which
    also makes the result independent of the machine's core count. A non-finite gradient raises
    :class:`refsnn.ec.ppo.Diverged` (the state given stays valid)."""

    method, name, unit = "sg-ppo", NAMES["sg-ppo"], "iteration"
    checkpoint_keys = ("generation", "opt.t", "norm.count", "norm.mean", "norm.m2", "rnorm.count", "rnorm.mean",
                       "rnorm.m2")

    def __init__(self, obs_dim: int, act_dim: int, *, env_id: str, max_steps: int, neurons: int = 256,
                 eval_members: int = 4, seed: int = 0, settings: PPOSettings | None = None):
        self.obs_dim, self.act_dim = check_int("obs_dim", obs_dim, lo=1), check_int("act_dim", act_dim, lo=1)
        self.env_id, self.max_steps = env_id, check_int("max_steps", max_steps, lo=1)
        self.neurons = check_int("neurons", neurons, lo=2)
        self.eval_members = check_int("eval_members", eval_members, lo=0)
        self.seed = check_int("seed", seed, lo=0)
        self.settings = PPOSettings() if settings is None else settings
        if not isinstance(self.settings, PPOSettings):
            raise TypeError(f"settings: expected a PPOSettings, got {type(self.settings).__name__}")
        self.net = ppo.sg_config(self.neurons)
        self._envs: list = []

    def init(self) -> PPOState:
        return ppo.init_state(self.net, self.obs_dim, self.act_dim, self.seed)

    def state_arrays(self, state: PPOState) -> dict[str, np.ndarray]:
        """``state.state_arrays()`` (checkpoint keys)."""
        return state.state_arrays()

    def from_state_arrays(self, d) -> PPOState:
        return ppo.state_from_arrays(self.net, self.obs_dim, self.act_dim, d)

    def step(self, state: PPOState, evaluator) -> tuple[PPOState, dict]:
        det = self._deterministic(state, evaluator)
        mean, std = state.obs_norm.frozen()
        if not self._envs:
            self._envs = [check_env(self.env_id, self.max_steps)[0] for _ in range(self.settings.n_envs)]
        t0 = time.perf_counter()
        with threads(1):   # small GEMMs (batch 4 per step, 32 windows per minibatch): one BLAS thread, 3-6x faster
            new, it = ppo.iterate(self.net, self.obs_dim, state, self._envs, self.settings, self.seed)
        t_iter = time.perf_counter() - t0
        ep = np.array([r for r, _ in it["episodes"]])
        n_det = int(det["lengths"].sum())
        st = it["stats"]
        info = {"generation": new.iteration, "mean_return": float(ep.mean()) if ep.size else float("nan"),
                "max_return": float(ep.max()) if ep.size else float("nan"),
                "det_return": float(det["returns"].mean()) if det["returns"].size else float("nan"),
                "steps": it["steps"] + n_det, "env_steps": it["steps"] + n_det, "fitness": np.zeros(0),
                "trust_scale": float("nan"), "rho_entropy": float("nan"), "param_rms": params_rms(new.params),
                "firing_rate_hz": firing_rate_hz(det["spikes"].sum(), n_det, self.neurons, self.net.n_substeps,
                                                 self.net.dt),
                "policy_s": det["policy_s"] + max(0.0, t_iter - it["env_s"]), "env_s": det["env_s"] + it["env_s"],
                "deployed": (state.params, mean, std),
                "progress": f"episodes {len(it['episodes']):3d}  kl {st['approx_kl']:.4f} clip {st['clip_frac']:.2f} "
                            f"std {float(np.exp(new.params['log_std']).mean()):.3f}",
                "summary": {"fitness_shift": None, "ppo": {k: float(v) for k, v in st.items()}}}
        return new, info

    def _deterministic(self, state: PPOState, evaluator) -> dict:
        """The deterministic policy's ``eval_members`` episodes (members ``0..E-1`` of the iteration)."""
        if not self.eval_members:
            return {"returns": np.zeros(0), "lengths": np.zeros(0, np.int64), "spikes": np.zeros(0, np.int64),
                    "policy_s": 0.0, "env_s": 0.0}
        return evaluator.evaluate(method="sg-ppo", cfg_kwargs={"n_neurons": self.neurons}, sigma=1.0,
                                  env_id=self.env_id, max_steps=self.max_steps, params=state.params,
                                  norm=state.obs_norm, seed=self.seed, generation=state.iteration, n_stochastic=0,
                                  n_eval=self.eval_members)

    def setup_text(self) -> str:
        s = self.settings
        return (f"trained by PPO, {s.n_envs} envs x {s.n_steps} steps per iteration, BPTT window {s.window}, "
                f"surrogate {s.surrogate}{'' if s.alpha is None else f'({s.alpha:g})'}, lr {s.lr:g}, "
                f"{self.eval_members} deterministic episodes per iteration")

    def close(self) -> None:
        """Close the rollout's environments (opened at the first step)."""
        envs, self._envs = self._envs, []
        for e in envs:
            e.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_method(method: str, obs_dim: int, act_dim: int, *, env_id: str, max_steps: int, episodes: str = "one",
                reset_pool: int = 0, ppo_settings: PPOSettings | None = None, **hparams) -> Evolution | PPOMethod:
    """The method object of ``method`` (one of :data:`refsnn.ec.policy.METHODS`).

    ``"sg-ppo"``: a :class:`PPOMethod` from ``ppo_settings`` (its ``lr`` is PPO's) and the
    ``neurons``, ``eval_members`` and ``seed`` of ``hparams`` (the evolution strategies' other
    hyperparameters are ignored, as in ``refsnn ec``; ``episodes`` / ``reset_pool`` other than the
    defaults are refused). Else an :class:`Evolution` of :func:`refsnn.ec.strategy.make_strategy`
    ``(method, obs_dim, act_dim, **hparams)``."""
    check_choice("method", method, METHODS)
    if method != "sg-ppo":
        return Evolution(make_strategy(method, obs_dim, act_dim, **hparams), env_id=env_id, max_steps=max_steps,
                         episodes=episodes, reset_pool=reset_pool)
    if episodes != "one" or reset_pool:
        raise ValueError("episodes: the episode protocol (episodes, reset_pool) is an option of the evolution "
                         "strategies, not of sg-ppo")
    kw = {k: hparams[k] for k in ("neurons", "eval_members", "seed") if k in hparams}
    return PPOMethod(obs_dim, act_dim, env_id=env_id, max_steps=max_steps, settings=ppo_settings, **kw)
