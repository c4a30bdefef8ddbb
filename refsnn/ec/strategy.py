"""Evolving Connectivity and ES-RSNN as ask/tell strategies (SPEC §5.1, §5.2, §5.5; seed eqs. 9–14).

Design (evosax's shape, without JAX): a *strategy* object holds only the hyperparameters and the
member family (:mod:`refsnn.ec.policy`); everything that changes from one generation to the next is
an immutable :class:`StrategyState` value (parameters, Adam moments, step count, generation index).

* ``state = strategy.init()`` — generation 0: ``rho = 0.5`` (EC) or ``N(0, 1)`` centre weights from
  stream ``STREAM_INIT`` of ``(seed, 0, 0)`` (ES).
* ``pop = strategy.ask(state)`` — a :class:`Population`: the parameters, the run seed, the generation
  index, ``n_stochastic = P`` and ``n_eval = E``. It names the members without materialising them:
  member ``i`` of generation ``g`` is rebuilt anywhere from ``(seed, g, i)`` and the parameters
  (``ECFamily.member`` / ``ESFamily.member``; eq. 9 for EC, antithetic pair ``i // 2`` for ES;
  indices ``P..P+E-1`` are the deterministic members ``theta = rho > 0.5`` / the centre weights).
  ``ask`` does not change the state, so asking twice gives the same population.
* ``state, info = strategy.tell(state, returns, lengths)`` — one episode return and length per
  member, ``P + E`` of each in member order (what :meth:`refsnn.ec.rollout.Evaluator.evaluate`
  returns). The update uses the ``P`` stochastic members only:

  1. fitness ``f_i = R_i - shift * T_i`` (:func:`refsnn.ec.nes.shifted_fitness`; ``shift = 0`` is the
     reference code's plain return);
  2. centered ranks ``w_i = rank_i / (P - 1) - 0.5`` (:func:`refsnn.ec.nes.centered_ranks`), ties
     averaged (``rank_ties="average"``) or by position (``"ordinal"``, the reference code's);
  3. EC (seed eqs. 13–14, SPEC §5.2): ``g = (1/P) sum_i w_i (theta_i - rho)``, the natural gradient
     (``gradient="plain"``: divided by ``rho (1 - rho)``, eq. 13), ``theta_i`` regenerated from seeds
     and summed as exact integers, so that chunks of members can be summed by the executor's workers
     (:func:`refsnn.ec.policy.ec_gradient`); ES (SPEC §5.5): ``g = (1/K) sum_k (w_{2k} - w_{2k+1})
     sigma eps_k`` over the ``K = P/2`` antithetic pairs (:func:`refsnn.ec.policy.es_gradient`);
  4. Adam ascent (``beta1 0.9, beta2 0.999, eps 1e-8``; :func:`refsnn.ec.nes.adam_update`), AdamW
     with decoupled weight decay for ES;
  5. EC only: ``rho <- clip(rho, eps, 1 - eps)`` (:func:`refsnn.ec.nes.clip_rho`);
  6. EC only, with ``kl_max > 0`` (off by default; not in the paper): the step is shortened so that
     the mean per-connection ``KL(B(rho_old) || B(rho_new))`` is at most ``kl_max`` nats
     (:func:`refsnn.ec.nes.limit_kl`, a fixed-radius form of SATR's trust region, arXiv 2601.21572).

  ``info`` holds the numbers of the generation just evaluated: ``mean_return`` / ``max_return`` of
  the ``P`` stochastic members (plain returns), ``det_return`` (mean over the ``E`` deterministic
  members, NaN for ``E = 0``), ``trust_scale`` (EC: the step fraction ``a`` kept by the trust
  region, 1 without it; NaN for ES), ``steps`` (sum of all ``P + E`` lengths), ``rho_entropy`` (mean
  Bernoulli entropy in bits of the new ``rho``; NaN for ES), ``param_rms`` (RMS of the new
  parameters), ``generation`` (generations completed, the metrics row's ``generation``) and
  ``fitness`` (the ``P`` ranked fitness values).

A state is a value: ``tell`` returns a new state and never modifies the arrays of the one it was
given, so ``pop.params`` stays the evaluated (pre-update) parameters — what a deployed file holds.
``state.state_arrays()`` flattens it to the keys of the ``refsnn ec`` checkpoint (``param.<k>``,
``opt.m.<k>``, ``opt.v.<k>``, ``opt.t`` as in :meth:`refsnn.ec.nes.Adam.state_arrays`, and
``generation``); ``strategy.from_state_arrays(d)`` reads them back, so existing checkpoints load.

The observation normaliser belongs to the rollouts, not to the strategy: the caller freezes it for
the evaluation and merges ``res["obs_stats"]`` into it after ``tell``. Nothing here reads or writes
files, prints, or looks at wall time. The numerics are exactly those of the generation loop of
``refsnn ec`` (same operations in the same order), so a run driven through ``ask``/``tell`` gives
bit-identical parameters and optimiser state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from refsnn._checks import check_choice, check_float, check_int
from refsnn.ec import nes
from refsnn.ec.policy import METHODS, RNN_GATES, ec_gradient, es_gradient, make_family
from refsnn.ec.restore import restored_array, restored_int

__all__ = ["StrategyState", "Population", "ECStrategy", "ESStrategy", "RNNStrategy", "make_strategy",
           "params_rms", "check_hyperparameters", "HYPERPARAMETER_CHECKS"]

#: The one check of each hyperparameter, named as ``refsnn ec`` names the option (``--population`` is
#: ``population``); the strategies and :class:`refsnn.commands.ec_config.ECConfig` both validate through
#: :func:`check_hyperparameters`, so a value has one rule and one message.
HYPERPARAMETER_CHECKS = {
    "neurons": lambda v: check_int("neurons", v, lo=2),
    "population": lambda v: check_int("population", v, lo=2),
    "eval_members": lambda v: check_int("eval_members", v, lo=0),
    "lr": lambda v: check_float("lr", v, lo=0.0),
    "fitness_shift": lambda v: check_float("fitness_shift", v),
    "seed": lambda v: check_int("seed", v, lo=0),
    "sigma": lambda v: check_float("sigma", v, lo=0.0, lo_open=True),
    "weight_decay": lambda v: check_float("weight_decay", v, lo=0.0),
    "eps": lambda v: check_float("eps", v, lo=0.0, hi=0.5),
    "kl_max": lambda v: check_float("kl_max", v, lo=0.0),
    "gradient": lambda v: check_choice("gradient", v, ("natural", "plain")),
    "rank_ties": lambda v: check_choice("rank_ties", v, nes.RANK_TIES),
}


def check_hyperparameters(method: str, **hparams) -> dict:
    """The given hyperparameters checked (:data:`HYPERPARAMETER_CHECKS`; ``ValueError``/``TypeError``
    naming the first bad one) and returned; for the ES methods (``es``, ``es-gru``, ``es-lstm``) a
    given ``population`` must also be even (antithetic pairs)."""
    unknown = sorted(set(hparams) - set(HYPERPARAMETER_CHECKS))
    if unknown:
        raise TypeError(f"hparams: unknown hyperparameters {unknown}")
    out = {k: HYPERPARAMETER_CHECKS[k](v) for k, v in hparams.items()}
    if method in ("es", *RNN_GATES) and "population" in out and out["population"] % 2:
        raise ValueError(f"population: ES uses antithetic pairs, expected an even number, got {out['population']}")
    return out


@dataclass(frozen=True)
class StrategyState:
    """Parameters and optimiser state after ``generation`` completed generations.

    ``params``: ``rho`` (EC) or the centre weights (ES), float64, keys in the family's ``shapes()``
    order; ``m``, ``v``: Adam moments per key; ``t``: Adam steps taken. Treat as immutable.
    """
    params: Mapping[str, np.ndarray]
    m: Mapping[str, np.ndarray]
    v: Mapping[str, np.ndarray]
    t: int
    generation: int

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays with the checkpoint keys ``param.<k>``, ``opt.m.<k>``, ``opt.v.<k>``, ``opt.t``,
        ``generation`` (int64)."""
        d = {f"param.{k}": a for k, a in self.params.items()}
        d.update(nes.adam_state_arrays(self.m, self.v, self.t))
        d["generation"] = np.array(self.generation, dtype=np.int64)
        return d


@dataclass(frozen=True)
class Population:
    """What the rollouts need to evaluate one generation: ``P + E`` members named by
    ``(seed, generation, index)`` and the parameters (see the module docstring)."""
    method: str
    cfg_kwargs: Mapping
    sigma: float
    params: Mapping[str, np.ndarray]
    seed: int
    generation: int
    n_stochastic: int
    n_eval: int

    @property
    def size(self) -> int:
        return self.n_stochastic + self.n_eval

    def evaluate_kwargs(self) -> dict:
        """Keyword arguments of :meth:`refsnn.ec.rollout.Evaluator.evaluate` other than the
        environment's (``env_id``, ``max_steps``) and the normaliser (``norm``)."""
        return {"method": self.method, "cfg_kwargs": dict(self.cfg_kwargs), "sigma": self.sigma,
                "params": self.params, "seed": self.seed, "generation": self.generation,
                "n_stochastic": self.n_stochastic, "n_eval": self.n_eval}


class _Strategy:
    """Common part of :class:`ECStrategy` and :class:`ESStrategy` (init, ask, tell, state arrays);
    subclasses supply ``_step(state, fitness) -> (params, m, v, t, trust_scale)``."""

    method = ""

    def __init__(self, obs_dim: int, act_dim: int, *, neurons: int, population: int, eval_members: int,
                 lr: float, fitness_shift: float, seed: int, sigma: float, weight_decay: float,
                 rank_ties: str = "average"):
        hp = check_hyperparameters(self.method, rank_ties=rank_ties, neurons=neurons, population=population,
                                   eval_members=eval_members, lr=lr, fitness_shift=fitness_shift, seed=seed,
                                   sigma=sigma, weight_decay=weight_decay)
        self.obs_dim = check_int("obs_dim", obs_dim, lo=1)
        self.act_dim = check_int("act_dim", act_dim, lo=1)
        for k, v in hp.items():
            setattr(self, k, v)
        self.family = make_family(self.method, self.cfg_kwargs, self.obs_dim, self.act_dim, self.sigma)

    @property
    def cfg_kwargs(self) -> dict:
        """``CubaConfig`` keyword arguments of the members (what a rollout worker receives)."""
        return {"n_neurons": self.neurons}

    def shapes(self) -> dict[str, tuple]:
        return self.family.shapes()

    def init(self) -> StrategyState:
        """Generation 0: initial parameters from the run seed, zero Adam moments."""
        shapes = self.shapes()
        p0 = self.family.init_params(self.seed)
        params = {k: p0[k] for k in shapes}
        return StrategyState(params, {k: np.zeros(s) for k, s in shapes.items()},
                             {k: np.zeros(s) for k, s in shapes.items()}, 0, 0)

    def ask(self, state: StrategyState) -> Population:
        """The population of generation ``state.generation`` (the state is not changed)."""
        self._check_state(state)
        return Population(self.method, self.cfg_kwargs, self.sigma, state.params, self.seed, state.generation,
                          self.population, self.eval_members)

    def tell(self, state: StrategyState, returns, lengths, *, map_fn=None, n_chunks: int = 1, episodes=None
             ) -> tuple[StrategyState, dict]:
        """Update from the ``P + E`` episode returns and lengths of ``ask(state)``'s members (member
        order); returns the state of the next generation and the generation's ``info`` (module
        docstring). ``ValueError`` naming ``returns`` / ``lengths`` for a wrong count, NaN or infinity.

        ``episodes``: when members ran several episodes (the reference code's ``"fill"`` protocol,
        :mod:`refsnn.ec.rollout`), the number each completed (integers >= 1); ``returns`` and
        ``lengths`` are then the sums over those episodes and every per-member figure is their mean:
        fitness ``(R - shift T) / n``, returns ``R / n`` (the reference code's
        ``fitness_sum / fitness_n``). ``None``: one episode each (nothing is divided).

        EC: the members' connectivity is regenerated for the estimate in ``n_chunks`` chunks through
        ``map_fn`` (e.g. the rollout executor's ``map``; default in-process); the estimate is exact
        integer arithmetic, so the result is bit-identical for any ``map_fn`` and ``n_chunks``
        (:func:`refsnn.ec.policy.ec_gradient`). ES ignores both. ``n_chunks`` must be an integer >= 1,
        ``map_fn`` a callable that returns one result per chunk (``ValueError`` otherwise: a ``map_fn``
        returning nothing would leave the parameters unchanged), ``lengths`` whole numbers in
        ``[0, 2**53 / (P + E)]`` (their sum stays exact)."""
        self._check_state(state)
        n_chunks = check_int("n_chunks", n_chunks, lo=1)
        if map_fn is not None:
            map_fn = _counted_map(map_fn)
        P, E = self.population, self.eval_members
        r = self._per_member("returns", returns)
        t = self._per_member("lengths", lengths, whole=True)
        if episodes is not None:   # means over each member's completed episodes
            n_ep = self._per_member("episodes", episodes, whole=True, lo=1)
            per = nes.shifted_fitness(r, t, self.fitness_shift) / n_ep
            r = r / n_ep
        else:
            per = nes.shifted_fitness(r, t, self.fitness_shift)
        fit = r[:P]
        fitness = per[:P]
        params, m, v, steps, scale = self._step(state, fitness, map_fn, n_chunks)
        new = StrategyState(params, m, v, steps, state.generation + 1)
        info = {"generation": new.generation, "mean_return": float(fit.mean()), "max_return": float(fit.max()),
                "det_return": float(r[P:].mean()) if E else float("nan"), "steps": int(t.sum()),
                "trust_scale": scale, "rho_entropy": self._entropy(params), "param_rms": params_rms(params),
                "fitness": fitness}
        return new, info

    def state_arrays(self, state: StrategyState) -> dict[str, np.ndarray]:
        """``state.state_arrays()`` (checkpoint keys)."""
        return state.state_arrays()

    def from_state_arrays(self, d: Mapping[str, np.ndarray]) -> StrategyState:
        """A state from :meth:`StrategyState.state_arrays` keys (e.g. a loaded checkpoint); other keys
        are ignored. ``ValueError`` naming the key of a missing, misshapen or invalid array: not real
        numbers, NaN or infinite, EC probabilities outside ``[0, 1]``, a negative Adam second moment,
        ``generation`` or ``opt.t`` not a whole number >= 0, or ``opt.t`` other than ``generation``
        (one Adam step per generation) -- checked before any of it is used
        (:mod:`refsnn.ec.restore`)."""
        shapes = self.shapes()
        params = {k: restored_array(d, f"param.{k}", shape=tuple(s)) for k, s in shapes.items()}
        self._check_params(params)
        m, v, t = nes.adam_load_state_arrays(d, shapes)
        generation = restored_int(d, "generation", lo=0)
        if t != generation:
            raise ValueError(f"opt.t: {t} Adam steps after {generation} generations (one step per generation)")
        return StrategyState(params, m, v, t, generation)

    # -- helpers -----------------------------------------------------------------------------------
    def _per_member(self, name: str, x, *, whole: bool = False, lo: int = 0) -> np.ndarray:
        """``x`` as one real number per member (``whole``: episode lengths or counts, whole numbers in
        ``[lo, 2**53 // (P + E)]``, as int64, so that their sum neither wraps nor rounds)."""
        a = np.asarray(x)
        n = self.population + self.eval_members
        if a.shape != (n,):
            raise ValueError(f"{name}: expected {n} values (P = {self.population} stochastic then "
                             f"E = {self.eval_members} deterministic members), got shape {a.shape}")
        if a.dtype.kind not in "iuf":
            raise TypeError(f"{name}: expected real numbers, got dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"{name}: contains NaN or infinity")
        if whole:
            hi = 2 ** 53 // n
            if (a < lo).any() or (a > hi).any():
                raise ValueError(f"{name}: expected values >= {lo} and at most {hi}")
            if a.dtype.kind == "f" and (a != np.rint(a)).any():
                raise ValueError(f"{name}: expected whole numbers, got {a[a != np.rint(a)][0]!r}")
            a = a.astype(np.int64)
        return a

    def _check_state(self, state: StrategyState) -> None:
        if not isinstance(state, StrategyState):
            raise TypeError(f"state: expected a StrategyState, got {type(state).__name__}")
        shapes = self.shapes()
        for part in ("params", "m", "v"):
            got = getattr(state, part)
            if set(got) != set(shapes) or any(np.shape(got[k]) != tuple(s) for k, s in shapes.items()):
                raise ValueError(f"state: {part} do not match this strategy's shapes {shapes}")

    def _check_params(self, params) -> None:
        pass

    def _entropy(self, params) -> float:
        return float("nan")

    def _step(self, state: StrategyState, fitness: np.ndarray, map_fn, n_chunks: int):
        raise NotImplementedError


class ECStrategy(_Strategy):
    """Evolving Connectivity (SPEC §5.2): Bernoulli connection probabilities ``rho``, natural (or
    plain) NES gradient, Adam, clip to ``[eps, 1 - eps]``, optionally a KL trust region of radius
    ``kl_max`` (0 = off, the reference code's update). Defaults: the ``refsnn ec`` CPU defaults
    (``fitness_shift`` must be given as a number; "auto" is resolved by the command from the env)."""

    method = "ec"

    def __init__(self, obs_dim: int, act_dim: int, *, neurons: int = 256, population: int = 128,
                 eval_members: int = 4, lr: float = 0.15, eps: float = 1e-3, gradient: str = "natural",
                 fitness_shift: float = 0.0, seed: int = 0, kl_max: float = 0.0, rank_ties: str = "average"):
        hp = check_hyperparameters(self.method, eps=eps, kl_max=kl_max, gradient=gradient)
        self.eps, self.kl_max, self.gradient = hp["eps"], hp["kl_max"], hp["gradient"]
        super().__init__(obs_dim, act_dim, neurons=neurons, population=population, eval_members=eval_members,
                         lr=lr, fitness_shift=fitness_shift, seed=seed, sigma=0.3, weight_decay=0.0,
                         rank_ties=rank_ties)

    def _step(self, state, fitness, map_fn=None, n_chunks=1):
        g = ec_gradient(self.family, state.params, fitness, self.seed, state.generation,
                        natural=(self.gradient == "natural"), map_fn=map_fn, n_chunks=n_chunks,
                        ties=self.rank_ties)
        params, m, v, t = nes.adam_update(state.params, g, state.m, state.v, state.t, lr=self.lr)
        params = nes.clip_rho(params, self.eps)
        if self.kl_max > 0.0:
            params, scale = nes.limit_kl(state.params, params, self.kl_max)
            return params, m, v, t, scale
        return params, m, v, t, 1.0

    def _entropy(self, params) -> float:
        return nes.bernoulli_entropy(params)

    def _check_params(self, params) -> None:
        for k, r in params.items():
            if not ((r >= 0.0) & (r <= 1.0)).all():
                raise ValueError(f"param.{k}: connection probabilities must be in [0, 1]")


class ESStrategy(_Strategy):
    """ES-RSNN (SPEC §5.5): real weights, antithetic Gaussian pairs of scale ``sigma``, centered ranks,
    AdamW with decoupled ``weight_decay``. ``population`` must be even (:func:`check_hyperparameters`)."""

    method = "es"

    def __init__(self, obs_dim: int, act_dim: int, *, neurons: int = 256, population: int = 128,
                 eval_members: int = 4, lr: float = 0.15, sigma: float = 0.3, weight_decay: float = 0.1,
                 fitness_shift: float = 0.0, seed: int = 0, rank_ties: str = "average"):
        super().__init__(obs_dim, act_dim, neurons=neurons, population=population, eval_members=eval_members,
                         lr=lr, fitness_shift=fitness_shift, seed=seed, sigma=sigma, weight_decay=weight_decay,
                         rank_ties=rank_ties)

    def _step(self, state, fitness, map_fn=None, n_chunks=1):
        g = es_gradient(self.family, state.params, fitness, self.seed, state.generation, ties=self.rank_ties)
        return (*nes.adam_update(state.params, g, state.m, state.v, state.t, lr=self.lr,
                                 weight_decay=self.weight_decay), float("nan"))


class RNNStrategy(ESStrategy):
    """The EC paper's deep-RNN baselines, ES-GRU (``method="es-gru"``) and ES-LSTM (``"es-lstm"``):
    ESStrategy's OpenAI-ES (antithetic pairs, centered ranks, AdamW) on the weights of a GRU / LSTM
    policy (:class:`refsnn.ec.policy.RNNFamily`). Defaults are the reference ``es_dense.py``'s:
    ``sigma 0.02``, ``lr 0.01``, ``weight_decay 0.1``; hidden units (``neurons``) 256 for the GRU and
    128 for the LSTM (``conf_experiment/rnn_brax.yaml``)."""

    HIDDEN = {"es-gru": 256, "es-lstm": 128}

    def __init__(self, method: str, obs_dim: int, act_dim: int, *, neurons: int | None = None,
                 population: int = 128, eval_members: int = 4, lr: float = 0.01, sigma: float = 0.02,
                 weight_decay: float = 0.1, fitness_shift: float = 0.0, seed: int = 0, rank_ties: str = "average"):
        self.method = check_choice("method", method, tuple(RNN_GATES))
        super().__init__(obs_dim, act_dim, neurons=self.HIDDEN[method] if neurons is None else neurons,
                         population=population, eval_members=eval_members, lr=lr, sigma=sigma,
                         weight_decay=weight_decay, fitness_shift=fitness_shift, seed=seed, rank_ties=rank_ties)


_EC_ONLY = ("eps", "gradient", "kl_max")
_ES_ONLY = ("sigma", "weight_decay")


def make_strategy(method: str, obs_dim: int, act_dim: int, **hparams) -> ECStrategy | ESStrategy:
    """``ECStrategy`` (``method="ec"``), ``ESStrategy`` (``"es"``) or ``RNNStrategy`` (``"es-gru"``,
    ``"es-lstm"``) from the union of the hyperparameter sets; those of the other family (EC: ``eps``,
    ``gradient``, ``kl_max``; ES: ``sigma``, ``weight_decay``) are ignored, as in ``refsnn ec``.
    ``"sg-ppo"`` is trained by PPO, not by an ask/tell strategy: ``ValueError`` pointing to
    :func:`refsnn.ec.method.make_method`, which builds every method of ``refsnn ec``."""
    check_choice("method", method, METHODS)
    if method == "sg-ppo":
        raise ValueError("method: sg-ppo is trained by PPO, not by an ask/tell strategy; "
                         "refsnn.ec.method.make_method builds it (refsnn.ec.method.PPOMethod)")
    drop = _ES_ONLY if method == "ec" else _EC_ONLY
    kw = {k: v for k, v in hparams.items() if k not in drop}
    if method in RNN_GATES:
        return RNNStrategy(method, obs_dim, act_dim, **kw)
    return (ECStrategy if method == "ec" else ESStrategy)(obs_dim, act_dim, **kw)


def _counted_map(map_fn):
    """``map_fn`` checked to be callable and to return one result per item (``ValueError`` naming
    ``map_fn`` otherwise: results left out would silently drop members from the estimate)."""
    if not callable(map_fn):
        raise TypeError(f"map_fn: expected a callable like map(fn, items), got {type(map_fn).__name__}")

    def checked(fn, items):
        items = list(items)
        out = map_fn(fn, items)
        if out is None:
            raise ValueError("map_fn: returned None, expected one result per chunk")
        out = list(out)
        if len(out) != len(items):
            raise ValueError(f"map_fn: returned {len(out)} results for {len(items)} chunks")
        return out
    return checked


def params_rms(params: Mapping[str, np.ndarray]) -> float:
    """Root mean square over all parameters (the ``|w|rms`` of the ES log line)."""
    tot = sum(float(np.sum(v * v)) for v in params.values())
    return float(math.sqrt(tot / sum(v.size for v in params.values())))
