"""SG-RSNN: the EC network with real-valued weights trained by PPO through surrogate-gradient BPTT
(the EC paper's SG baseline; ``refsnn ec --method sg-ppo``).

Network (SPEC §2.3, :mod:`refsnn.kernels.cuba_bptt`): ``CubaConfig(n_neurons=N, sparsity=1, dale=True)``
(dense real weights, gains without a sparsity factor as the reference ``DenseSNN``, Dale's law on
the recurrent weights ``W = sign_j |W_h|``), input ``u = x`` (the normalised observation), ``K = 33``
substeps per environment step. Heads on the readout rate ``r (N,)`` after each environment step:
policy mean ``mu = R_out (r @ W_out)`` (the EC readout without the clip), a state-independent
``log_std (A,)``, and a linear critic ``V = r @ w_v + b_v``. The action sent to the environment is
``clip(a, -1, 1)`` with ``a ~ N(mu, exp(log_std)^2)``; the deterministic policy is ``clip(mu, -1, 1)``,
exactly :func:`refsnn.kernels.cuba.float_env_step` with ``W_h = W`` (:class:`refsnn.ec.policy.SGFamily`).

PPO (Schulman et al. 2017, as CleanRL's ``ppo_continuous_action.py``: clipped surrogate objective,
clipped value loss, advantage normalisation per minibatch, Adam ``eps 1e-5``, global gradient-norm
clip, GAE (Schulman et al. 2016)), recurrent as CleanRL's ``ppo_atari_lstm.py``, with these choices:

* one *iteration* = ``n_envs`` environments stepped ``n_steps`` times from fresh episodes (episode
  seeds, initial membranes ``v ~ U[0, 1)``, action noise and minibatch order all from
  :func:`refsnn.ec.nes.member_rng` of ``(seed, iteration, index, stream)``, so that an iteration
  depends only on the parameters, the optimiser state and the normalisers: ``--resume`` is exact);
  an episode that ends is reset in place (a new episode seed and membrane); the rollout is
  bootstrapped with the critic at its end; ``terminated`` or ``truncated`` both end the episode
  without bootstrap (CleanRL);
* truncated BPTT: the rollout is cut into windows of ``window`` environment steps; each window starts
  from the network state recorded during the rollout (not differentiated) and contains the
  episode resets that happened inside it (:func:`refsnn.kernels.cuba_bptt.rsnn_forward` ``resets``);
  ``epochs`` passes over the windows in minibatches of ``minibatch_windows`` windows;
* observations are normalised by running statistics and rewards scaled by the running standard
  deviation of the discounted return (CleanRL's ``NormalizeObservation`` / ``NormalizeReward``),
  both frozen during an iteration and updated after it, in environment order.

The loss of a minibatch of ``M`` samples (per sample ``i``: ``ratio = exp(logp - logp_old)``,
``A`` the normalised advantage)::

    L = mean_i max(-A ratio, -A clip(ratio, 1 - c, 1 + c))
        + vf_coef mean_i 1/2 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)
        - ent_coef mean_i sum_a (log_std_a + 1/2 log(2 pi e))

and :func:`loss_and_grads` returns it with its exact gradient (hand-written; the RSNN part by
:func:`refsnn.kernels.cuba_bptt.rsnn_backward`), checked against central finite differences in
relaxed mode (float64).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from refsnn._checks import check_choice, check_float, check_int
from refsnn.ec import nes
from refsnn.ec.restore import restored_array, restored_int
from refsnn.ec.rollout import RunningNorm
from refsnn.kernels import surrogate
from refsnn.kernels.cuba import CubaConfig
from refsnn.kernels.cuba_bptt import rsnn_backward, rsnn_forward

__all__ = ["PPOSettings", "PPOState", "sg_config", "init_params", "init_state", "state_from_arrays", "iterate",
           "heads", "gae", "loss_and_grads", "collect", "make_windows", "update", "STREAM_ROLLOUT", "STREAM_SHUFFLE",
           "PARAM_KEYS"]

#: member_rng streams of an iteration (``(seed, iteration, env index, stream)``)
STREAM_ROLLOUT = 3   # env index e: episode seeds, initial membranes and action noise of environment e
STREAM_SHUFFLE = 4   # index 0: minibatch order of the iteration
PARAM_KEYS = ("W_h", "W_in", "W_out", "b_v", "log_std", "w_v")
_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


class Diverged(FloatingPointError):
    """The surrogate-gradient BPTT overflowed to a non-finite gradient: training cannot continue."""


@dataclass(frozen=True)
class PPOSettings:
    """PPO hyperparameters (CleanRL's ``ppo_continuous_action.py`` defaults where they apply: lr 3e-4,
    gamma 0.99, lambda 0.95, clip 0.2, ent 0, vf 0.5, max grad norm 0.5; the rollout and minibatch
    sizes are smaller, for a CPU). ``surrogate``/``alpha``/``detach_reset``: the spike's surrogate
    gradient (:mod:`refsnn.kernels.surrogate`), the EC paper's Figure 4 varies it. The reset is not
    detached by default: with a detached reset the BPTT through ``window`` steps of 33 substeps
    explodes (norm of the ``W_h`` gradient about 1e9 at initialisation on Hopper-v5 and 1e25 after 60
    iterations, against 4 undetached; 1 with a one-step window), and the global norm clip then scales
    the heads' gradients below Adam's ``eps``: nothing learns."""
    n_envs: int = 4
    n_steps: int = 512
    window: int = 16
    minibatch_windows: int = 32
    epochs: int = 4
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    surrogate: str = "atan"
    alpha: float | None = None
    detach_reset: bool = False

    def __post_init__(self):
        for name in ("n_envs", "n_steps", "window", "minibatch_windows", "epochs"):
            check_int(name, getattr(self, name), lo=1)
        if self.n_steps % self.window:
            raise ValueError(f"window: must divide n_steps ({self.n_steps}), got {self.window}")
        check_float("lr", self.lr, lo=0.0, lo_open=True)
        for name in ("gamma", "gae_lambda"):
            check_float(name, getattr(self, name), lo=0.0, hi=1.0)
        check_float("clip", self.clip, lo=0.0, lo_open=True)
        for name in ("ent_coef", "vf_coef"):
            check_float(name, getattr(self, name), lo=0.0)
        check_float("max_grad_norm", self.max_grad_norm, lo=0.0, lo_open=True)
        check_choice("surrogate", self.surrogate, surrogate.NAMES)
        if self.alpha is not None:
            check_float("alpha", self.alpha, lo=0.0, lo_open=True)


def sg_config(neurons: int) -> CubaConfig:
    """The SG-RSNN's network constants: SPEC §2.3 with dense real weights (``sparsity = 1``) and Dale's law."""
    return CubaConfig(n_neurons=neurons, sparsity=1.0, dale=True)


def init_params(cfg: CubaConfig, obs_dim: int, act_dim: int, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """``W_in (obs, N)``, ``W_h (N, N)``, ``W_out (N, A)`` ~ ``N(0, 1)`` (the ES-RSNN initialisation; the
    gains of SPEC §2.3 scale them), ``log_std = 0``, ``w_v = 0``, ``b_v = 0``; from stream
    ``STREAM_INIT`` of ``(seed, 0, 0)``."""
    rng = nes.member_rng(seed, 0, 0, nes.STREAM_INIT)
    N = cfg.n_neurons
    p = {"W_h": rng.standard_normal((N, N)), "W_in": rng.standard_normal((obs_dim, N)),
         "W_out": rng.standard_normal((N, act_dim)), "b_v": np.zeros(1), "log_std": np.zeros(act_dim),
         "w_v": np.zeros(N)}
    return {k: p[k].astype(dtype) for k in PARAM_KEYS}


def heads(cfg: CubaConfig, obs_dim: int, params, rates: np.ndarray):
    """``(mu, value)`` from readout rates ``(..., N)``: ``mu = R_out (rates @ W_out)``, ``value = rates @
    w_v + b_v``."""
    r_out = cfg.constants(obs_dim, rates.dtype)[2]
    return r_out * (rates @ params["W_out"]), rates @ params["w_v"] + params["b_v"][0]


def gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_value: np.ndarray, gamma: float,
        lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over ``(T, E)`` arrays; ``dones[t]`` ends the episode after step
    ``t`` (no bootstrap), ``last_value (E,)`` bootstraps after the last step. Returns
    ``(advantages, returns = advantages + values)``."""
    T = rewards.shape[0]
    adv = np.zeros_like(rewards)
    last = np.zeros_like(last_value)
    for t in range(T - 1, -1, -1):
        nxt = last_value if t == T - 1 else values[t + 1]
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * nxt * live - values[t]
        last = delta + gamma * lam * live * last
        adv[t] = last
    return adv, adv + values


def _logp(a, mu, log_std):
    z = (a - mu) * np.exp(-log_std)
    return np.sum(-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def loss_and_grads(cfg: CubaConfig, obs_dim: int, params, batch: dict, s: PPOSettings, *,
                   relaxed: bool = False) -> tuple[float, dict, dict]:
    """The PPO loss of a minibatch of windows and its gradient with respect to every parameter.

    ``batch``: ``obs (M, L, obs)``, ``state`` (4 arrays ``(M, N)``: the recorded state at each window's
    start), ``resets`` (``mask (M, L)``, ``v0 (M, L, N)``), ``actions (M, L, A)`` (unclipped samples),
    ``logp (M, L)``, ``adv (M, L)``, ``ret (M, L)``, ``value (M, L)`` (the rollout's). Returns
    ``(loss, grads, stats)``."""
    rates, _, cache = rsnn_forward(cfg, batch["obs"], params["W_in"], params["W_h"], batch["state"], d_in=obs_dim,
                                   surrogate_name=s.surrogate, alpha=s.alpha, detach_reset=s.detach_reset,
                                   relaxed=relaxed, resets=batch["resets"])
    mu, v = heads(cfg, obs_dim, params, rates)
    ls = params["log_std"]
    a = batch["actions"]
    n = a.shape[0] * a.shape[1]
    adv = batch["adv"]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    logp = _logp(a, mu, ls)
    ratio = np.exp(logp - batch["logp"])
    unclipped, clipped = -adv * ratio, -adv * np.clip(ratio, 1 - s.clip, 1 + s.clip)
    pg = np.maximum(unclipped, clipped)
    v_old, ret = batch["value"], batch["ret"]
    v_clip = v_old + np.clip(v - v_old, -s.clip, s.clip)
    e1, e2 = (v - ret) ** 2, (v_clip - ret) ** 2
    entropy = float(np.sum(ls) + ls.size * _LOG_2PI_E)
    loss = float(pg.mean() + s.vf_coef * 0.5 * np.maximum(e1, e2).mean() - s.ent_coef * entropy)
    # backward
    d_logp = np.where(unclipped >= clipped, -adv, 0.0) * ratio / n                     # (M, L)
    inv_var = np.exp(-2 * ls)
    d_mu = (d_logp[..., None] * (a - mu) * inv_var).astype(rates.dtype)               # dlogp/dmu
    d_ls = np.sum(d_logp[..., None] * ((a - mu) ** 2 * inv_var - 1), axis=(0, 1)) - s.ent_coef
    in_clip = np.abs(v - v_old) < s.clip
    d_v = (s.vf_coef / n) * np.where(e1 >= e2, v - ret, np.where(in_clip, v_clip - ret, 0.0))
    d_v = d_v.astype(rates.dtype)
    r_out = cfg.constants(obs_dim, rates.dtype)[2]
    flat_r = rates.reshape(-1, rates.shape[-1])
    g = {"W_out": r_out * (flat_r.T @ d_mu.reshape(-1, d_mu.shape[-1])), "w_v": flat_r.T @ d_v.ravel(),
         "b_v": np.array([d_v.sum()], dtype=rates.dtype), "log_std": d_ls.astype(rates.dtype)}
    d_rates = r_out * (d_mu @ params["W_out"].T) + d_v[..., None] * params["w_v"]
    g.update(rsnn_backward(cache, d_rates.astype(rates.dtype)))
    approx_kl = float(np.mean((ratio - 1) - (logp - batch["logp"])))
    stats = {"pg_loss": float(pg.mean()), "v_loss": float(0.5 * np.maximum(e1, e2).mean()), "entropy": entropy,
             "approx_kl": approx_kl, "clip_frac": float(np.mean(np.abs(ratio - 1) > s.clip))}
    return loss, {k: g[k] for k in PARAM_KEYS}, stats


def collect(cfg: CubaConfig, obs_dim: int, params, envs, norm_mean, norm_std, reward_std: float, seed: int,
            iteration: int, s: PPOSettings) -> dict:
    """One iteration's rollout (module docstring): ``n_envs`` environments (``envs``, Gymnasium, reset
    here) stepped ``n_steps`` times in lock-step with the stochastic policy. Returns per-step arrays
    ``(T, E, ...)`` (``obs`` normalised, ``raw_obs``, ``actions``, ``logp``, ``value``, ``reward``
    (scaled), ``raw_reward``, ``done``, ``state`` (the network state before each step), ``reset``
    (an episode starts at this step), ``v0``), ``last_value (E,)``, ``episodes`` (the returns and
    lengths of the episodes that ended) and ``env_s`` (seconds in the environments' ``reset`` / ``step``)."""
    E, T, N, A = s.n_envs, s.n_steps, cfg.n_neurons, params["W_out"].shape[1]
    dtype = params["W_in"].dtype
    rngs = [nes.member_rng(seed, iteration, e, STREAM_ROLLOUT) for e in range(E)]
    out = {"obs": np.empty((T, E, obs_dim), dtype), "raw_obs": np.empty((T, E, obs_dim)),
           "actions": np.empty((T, E, A), dtype), "logp": np.empty((T, E)), "value": np.empty((T, E)),
           "reward": np.empty((T, E)), "raw_reward": np.empty((T, E)), "done": np.zeros((T, E)),
           "state": tuple(np.empty((T, E, N), dtype) for _ in range(4)), "reset": np.zeros((T, E), bool),
           "v0": np.zeros((T, E, N), dtype)}
    state = tuple(np.zeros((E, N), dtype) for _ in range(4))
    x = np.empty((E, obs_dim))
    ep_ret, ep_len, episodes = np.zeros(E), np.zeros(E, np.int64), []
    t_env = 0.0

    def new_episode(e, t):
        nonlocal t_env
        seed = int(rngs[e].integers(0, 2**31 - 1))
        t0 = time.perf_counter()
        ob, _ = envs[e].reset(seed=seed)
        t_env += time.perf_counter() - t0
        x[e] = ob
        v0 = rngs[e].random(N).astype(dtype)
        state[0][e], state[1][e], state[2][e], state[3][e] = v0, 0, 0, 0
        out["reset"][t, e], out["v0"][t, e] = True, v0

    for e in range(E):
        new_episode(e, 0)
    std = np.exp(params["log_std"].astype(np.float64))
    for t in range(T):
        xn = ((x - norm_mean) / norm_std).astype(dtype)
        out["obs"][t], out["raw_obs"][t] = xn, x
        for i in range(4):
            out["state"][i][t] = state[i]
        rates, state, _ = rsnn_forward(cfg, xn[:, None], params["W_in"], params["W_h"], state, d_in=obs_dim,
                              surrogate_name=s.surrogate, alpha=s.alpha, detach_reset=s.detach_reset)
        mu, v = heads(cfg, obs_dim, params, rates[:, 0])
        noise = np.stack([rngs[e].standard_normal(A) for e in range(E)])
        a = (mu + std * noise).astype(dtype)
        out["actions"][t], out["value"][t] = a, v
        out["logp"][t] = _logp(a.astype(np.float64), mu.astype(np.float64), params["log_std"].astype(np.float64))
        for e in range(E):
            act = np.clip(a[e], -1, 1).astype(envs[e].action_space.dtype)
            t0 = time.perf_counter()
            ob, r, term, trunc, _ = envs[e].step(act)
            t_env += time.perf_counter() - t0
            out["raw_reward"][t, e] = r
            ep_ret[e] += r
            ep_len[e] += 1
            x[e] = ob
            if term or trunc:
                out["done"][t, e] = 1.0
                episodes.append((float(ep_ret[e]), int(ep_len[e])))
                ep_ret[e], ep_len[e] = 0.0, 0
                if t + 1 < T:
                    new_episode(e, t + 1)
    out["reward"] = out["raw_reward"] / reward_std
    xn = ((x - norm_mean) / norm_std).astype(dtype)
    rates, _, _ = rsnn_forward(cfg, xn[:, None], params["W_in"], params["W_h"], state, d_in=obs_dim,
                      surrogate_name=s.surrogate, alpha=s.alpha, detach_reset=s.detach_reset)
    out["last_value"] = heads(cfg, obs_dim, params, rates[:, 0])[1]
    out["episodes"] = episodes
    out["env_s"] = t_env
    return out


def make_windows(ro: dict, adv: np.ndarray, ret: np.ndarray, s: PPOSettings) -> dict:
    """The rollout cut into ``E * n_steps / window`` windows of ``window`` steps (window ``w`` of
    environment ``e`` is row ``e * (n_steps // window) + w``), as the arrays :func:`loss_and_grads`
    takes."""
    T, E = adv.shape
    L = s.window
    nw = T // L

    def cut(a):   # (T, E, ...) -> (E * nw, L, ...)
        a = np.swapaxes(a, 0, 1)
        return a.reshape((E * nw, L) + a.shape[2:])
    return {"obs": cut(ro["obs"]), "state": tuple(cut(a)[:, 0] for a in ro["state"]),
            "resets": (cut(ro["reset"]), cut(ro["v0"])), "actions": cut(ro["actions"]), "logp": cut(ro["logp"]),
            "adv": cut(adv), "ret": cut(ret), "value": cut(ro["value"])}


def update(cfg: CubaConfig, obs_dim: int, params, opt, windows: dict, s: PPOSettings, seed: int, iteration: int):
    """``epochs`` passes of minibatch PPO updates over the windows. ``opt = (m, v, t)`` Adam state.
    Returns ``(params, opt, stats)`` (stats averaged over the minibatches)."""
    n = windows["obs"].shape[0]
    rng = nes.member_rng(seed, iteration, 0, STREAM_SHUFFLE)
    m, v, t = opt
    acc: dict[str, float] = {}
    count = 0
    for _ in range(s.epochs):
        order = rng.permutation(n)
        for start in range(0, n, s.minibatch_windows):
            idx = np.sort(order[start:start + s.minibatch_windows])
            mb = {k: (tuple(a[idx] for a in val) if isinstance(val, tuple) else val[idx])
                  for k, val in windows.items()}
            _, g, st = loss_and_grads(cfg, obs_dim, params, mb, s)
            norm = math.sqrt(sum(float(np.sum(np.square(gk, dtype=np.float64))) for gk in g.values()))
            if not math.isfinite(norm):
                raise Diverged(f"iteration {iteration}: the gradient is not finite (norm {norm}); the BPTT "
                               f"exploded (surrogate {s.surrogate}, alpha {s.alpha})")
            scale = min(1.0, s.max_grad_norm / (norm + 1e-6))
            neg = {k: -scale * g[k].astype(np.float64) for k in PARAM_KEYS}    # adam_update ascends
            new, m, v, t = nes.adam_update({k: params[k].astype(np.float64) for k in PARAM_KEYS}, neg, m, v, t,
                                           lr=s.lr, eps=1e-5)
            params = {k: new[k].astype(params[k].dtype) for k in PARAM_KEYS}
            st["grad_norm"] = norm
            for k2, val in st.items():
                acc[k2] = acc.get(k2, 0.0) + val
            count += 1
    return params, (m, v, t), {k: val / count for k, val in acc.items()}


@dataclass(frozen=True)
class PPOState:
    """Everything an iteration depends on besides the settings and the seed (all checkpointed):
    the parameters, Adam's moments and step count, the iterations completed, and the observation and
    reward normalisers (:class:`refsnn.ec.rollout.RunningNorm`; ``reward_norm`` holds the discounted
    returns' statistics). Treat as immutable: :func:`iterate` returns a new one."""
    params: dict
    m: dict
    v: dict
    t: int
    iteration: int
    obs_norm: RunningNorm
    reward_norm: RunningNorm

    @property
    def generation(self) -> int:
        """Iterations completed (the name every method's state shares, :mod:`refsnn.ec.method`)."""
        return self.iteration

    def reward_std(self) -> float:
        """The reward scale: the running standard deviation of the discounted return (1 before data)."""
        return float(self.reward_norm.std()[0]) if self.reward_norm.count >= 2 else 1.0

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Checkpoint arrays: ``param.<k>``, ``opt.*``, ``generation`` (iterations completed),
        ``norm.*`` (observations), ``rnorm.*`` (discounted returns)."""
        d = {f"param.{k}": self.params[k] for k in PARAM_KEYS}
        d.update(nes.adam_state_arrays(self.m, self.v, self.t))
        d.update(self.obs_norm.state_arrays())
        d.update({"r" + k: a for k, a in self.reward_norm.state_arrays().items()})
        d["generation"] = np.array(self.iteration, np.int64)
        return d


def init_state(cfg: CubaConfig, obs_dim: int, act_dim: int, seed: int) -> PPOState:
    """Iteration 0: :func:`init_params`, zero Adam moments, empty normalisers."""
    p = init_params(cfg, obs_dim, act_dim, seed)
    m = {k: np.zeros(p[k].shape) for k in PARAM_KEYS}
    v = {k: np.zeros(p[k].shape) for k in PARAM_KEYS}
    return PPOState(p, m, v, 0, 0, RunningNorm(obs_dim), RunningNorm(1))


def state_from_arrays(cfg: CubaConfig, obs_dim: int, act_dim: int, d) -> PPOState:
    """A :class:`PPOState` from :meth:`PPOState.state_arrays` keys (a loaded checkpoint), every array
    checked before it is used (:mod:`refsnn.ec.restore`): ``ValueError`` naming the key of a missing,
    misshapen or invalid array -- not real numbers, NaN or infinite (also once cast to the parameters'
    float32), ``log_std`` outside ``[-80, 80]`` (``exp`` would leave float32), a negative Adam second
    moment or normaliser ``m2``, a count or ``opt.t`` / ``generation`` that is not a whole number >= 0."""
    template = init_state(cfg, obs_dim, act_dim, 0)
    params = {}
    for k in PARAM_KEYS:
        want = template.params[k]
        bound = 80.0 if k == "log_std" else None
        a = restored_array(d, f"param.{k}", shape=want.shape, lo=None if bound is None else -bound, hi=bound)
        with np.errstate(over="ignore"):
            params[k] = a.astype(want.dtype)
        if not np.isfinite(params[k]).all():
            raise ValueError(f"param.{k}: beyond the range of {want.dtype}")
    m, v, t = nes.adam_load_state_arrays(d, {k: params[k].shape for k in PARAM_KEYS})
    obs_norm, reward_norm = RunningNorm(obs_dim), RunningNorm(1)
    obs_norm.load_state_arrays(d)
    try:
        reward_norm.load_state_arrays({k[1:]: d[k] for k in ("rnorm.count", "rnorm.mean", "rnorm.m2") if k in d})
    except ValueError as e:   # name the checkpoint's key, rnorm.*
        raise ValueError(f"r{e}") from None
    return PPOState(params, m, v, t, restored_int(d, "generation", lo=0), obs_norm, reward_norm)


def iterate(cfg: CubaConfig, obs_dim: int, state: PPOState, envs, s: PPOSettings, seed: int) -> tuple[PPOState, dict]:
    """One PPO iteration: :func:`collect` with the frozen normalisers, :func:`gae`, :func:`update`, then
    the rollout's observations and discounted returns merged into the normalisers (environment order).
    Returns ``(new state, info)``: ``info`` holds the ``episodes`` that ended (return, length), the
    update's averaged ``stats``, the rollout's ``steps`` and its seconds in the environments ``env_s``."""
    mean, std = state.obs_norm.frozen()
    ro = collect(cfg, obs_dim, state.params, envs, mean, std, state.reward_std(), seed, state.iteration, s)
    adv, ret = gae(ro["reward"], ro["value"], ro["done"], ro["last_value"], s.gamma, s.gae_lambda)
    params, (m, v, t), stats = update(cfg, obs_dim, state.params, (state.m, state.v, state.t),
                                      make_windows(ro, adv, ret, s), s, seed, state.iteration)
    obs_norm, reward_norm = state.obs_norm.copy(), state.reward_norm.copy()
    T, E = ro["raw_reward"].shape
    for e in range(E):
        x = ro["raw_obs"][:, e]
        obs_norm.merge(T, x.mean(0), ((x - x.mean(0)) ** 2).sum(0))
        G, g = np.empty(T), 0.0
        for k in range(T):       # the discounted return, restarted at each episode start
            g = (0.0 if ro["reset"][k, e] else s.gamma * g) + ro["raw_reward"][k, e]
            G[k] = g
        reward_norm.merge(T, np.array([G.mean()]), np.array([((G - G.mean()) ** 2).sum()]))
    new = PPOState(params, m, v, t, state.iteration + 1, obs_norm, reward_norm)
    return new, {"episodes": ro["episodes"], "stats": stats, "steps": T * E, "env_s": ro["env_s"]}

