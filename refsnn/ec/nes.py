"""Evolving Connectivity's search distribution and update (SPEC §5.1, §5.2; seed 001 eqs. 9–14).

* Sampling, eq. 9: ``theta_ij = (u_ij < rho_ij)``, ``u ~ U[0, 1)`` from the member's own
  generator :func:`member_rng`, derived from ``(run seed, generation, member index)`` only — a worker
  that knows ``rho`` and three integers rebuilds any member ("seeds, not parameters, cross the
  wire"). Deployment (seed §4.3): ``theta = rho > 0.5`` (:func:`deterministic_connectivity`).
* Shaping: centered ranks ``w_i = rank_i / (P - 1) - 0.5`` over the ``P`` stochastic members
  (:func:`centered_ranks`). Ties (equal fitness) get their average rank by default
  (``ties="average"``: the update does not depend on the order of the members); ``ties="ordinal"``
  breaks them by position, the lower member index ranking lower — the reference code's double
  ``argsort`` (``ec.py``, ``_centered_rank_transform``). Both are identical when returns are distinct.
* Estimate, eqs. 13–14: ``g = (1/P) sum_i w_i (theta_i - rho)`` (:func:`nes_gradient`) — the
  *natural* gradient of ``E[R]`` for Bernoulli parameters (the Fisher information of ``B(rho)`` is
  ``1/(rho (1 - rho))``), which is what the reference code ascends. ``natural=False`` divides by
  ``rho (1 - rho)``, the plain gradient of the seed's eq. 13.
* Step: Adam (:class:`Adam`, ``beta1 0.9, beta2 0.999, eps 1e-8``, ``lr 0.15``; optax's
  ``scale_by_adam`` form ``m_hat / (sqrt(v_hat) + eps)``), ascending, then ``rho`` clipped to
  ``[eps, 1 - eps]`` with ``eps = 1e-3`` (:func:`clip_rho`). Initial ``rho = 0.5``.
* Optional trust region (not in the EC paper or its reference code; an option of ``refsnn ec``,
  ``--kl-max``): the step from ``rho_old`` to ``rho_new`` is shortened to ``rho_old + a (rho_new -
  rho_old)`` with the largest ``a`` in ``[0, 1]`` whose mean per-connection
  ``KL(B(rho_old) || B(rho_a))`` is at most ``kl_max`` nats (:func:`limit_kl`). The idea of bounding
  the Bernoulli distribution's change per generation by a KL divergence is SATR's (Li et al. 2026,
  arXiv 2601.21572); SATR scales its radius by an estimated signal energy, this is the plain
  fixed-radius form.

``rho`` and the optimiser state are float64 here (the reference code keeps them in float32): the
update is cheap on a CPU and float64 keeps long runs free of rounding drift. The uniforms ``u`` are
float64 from ``Generator.random``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy.stats import rankdata

from refsnn._checks import check_array, check_choice, check_float, check_int
from refsnn.ec.restore import restored_array, restored_int

__all__ = ["RANK_TIES", "ranks", "shifted_fitness", "member_rng", "sample_connectivity", "bernoulli_from_uniforms",
           "nes_step",
           "deterministic_connectivity", "centered_ranks", "nes_gradient", "Adam", "adam_update",
           "adam_state_arrays", "adam_load_state_arrays", "clip_rho", "bernoulli_entropy",
           "bernoulli_kl", "limit_kl"]

# Generator streams of one (seed, generation, index) triple (the 4th SeedSequence word):
STREAM_MEMBER = 0   # env seed, initial membrane, EC Bernoulli uniforms
STREAM_NOISE = 1    # ES-RSNN Gaussian perturbation of an antithetic pair
STREAM_INIT = 2     # ES-RSNN initial centre weights (generation 0, index 0)

#: How equal fitness values are ranked: averaged (refsnn's default) or by position (the reference code).
RANK_TIES = ("average", "ordinal")


def member_rng(seed: int, generation: int, index: int, stream: int = STREAM_MEMBER) -> np.random.Generator:
    """``Generator(PCG64(SeedSequence([seed, generation, index, stream])))`` — a function of its
    integers only, so any process can rebuild any member."""
    for name, v in (("seed", seed), ("generation", generation), ("index", index), ("stream", stream)):
        check_int(name, v, lo=0)
    ss = np.random.SeedSequence([int(seed), int(generation), int(index), int(stream)])
    return np.random.Generator(np.random.PCG64(ss))


def sample_connectivity(rho: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Eq. 9: ``theta[k] = rng.random(rho[k].shape) < rho[k]`` for each key in sorted order (bool)."""
    out = {}
    for k in sorted(rho):
        r = rho[k]
        out[k] = rng.random(r.shape) < r
    return out


def bernoulli_from_uniforms(u: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Eq. 9 given the uniforms: ``theta = u < rho`` (bool; for cross-checking other backends)."""
    u = check_array("u", u)
    rho = check_array("rho", rho, shape=u.shape)
    return u < rho


def deterministic_connectivity(rho: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Deployment: ``theta = rho > 0.5`` (bool)."""
    return {k: rho[k] > 0.5 for k in sorted(rho)}


def shifted_fitness(returns, lengths, shift: float) -> np.ndarray:
    """Fitness that enters the ranks: ``f_i = R_i - shift * T_i`` (return minus ``shift`` per step).

    ``shift = 0`` is the reference code's fitness (the episode return). ``shift = 1`` removes the
    per-step "alive" bonus of Hopper/Walker2d/Humanoid (ARS, Mania et al. 2018, ``--shift 1``), so that
    standing still scores ~0 instead of ~1000 and moving forward is what is ranked. Only the ranks
    (hence the update) change; reported returns are the plain returns ``R_i``.
    """
    r = np.asarray(returns, dtype=np.float64)
    t = np.asarray(lengths, dtype=np.float64)
    if r.shape != t.shape:
        raise ValueError(f"lengths: expected shape {r.shape} (one per return), got {t.shape}")
    return r - float(shift) * t


def ranks(f, ties: str = "average") -> np.ndarray:
    """0-based ascending ranks of ``f`` (float64). ``ties="average"``: equal values share their mean
    rank (``scipy.stats.rankdata(method="average") - 1``, so ``2 rank`` is an integer);
    ``ties="ordinal"``: equal values are ranked by position, the lower index lower — the reference
    code's ``argsort(argsort(f))`` with a stable sort. NaN is an error."""
    check_choice("ties", ties, RANK_TIES)
    f = check_array("f", np.asarray(f, dtype=np.float64), ndim=1)
    return rankdata(f, method=ties) - 1.0


def centered_ranks(f: np.ndarray, ties: str = "average") -> np.ndarray:
    """``w_i = rank_i / (P - 1) - 0.5`` with ranks ``0..P-1`` ascending in ``f`` (:func:`ranks`: ties
    averaged, or by position with ``ties="ordinal"``).

    ``w`` lies in ``[-0.5, 0.5]`` and sums to 0; ``P = 1`` gives ``[0.0]``. Invariant to any strictly
    increasing transform of ``f``. NaN fitness is an error.
    """
    r = ranks(f, ties)
    P = r.shape[0]
    if P == 0:
        raise ValueError("f: expected at least one fitness value")
    if P == 1:
        return np.zeros(1)
    return r / (P - 1) - 0.5


def nes_gradient(w: np.ndarray, thetas, rho: np.ndarray, *, natural: bool = True) -> np.ndarray:
    """Eq. 13–14 estimate ``g = (1/P) sum_i w_i (theta_i - rho)`` (natural gradient; ascend it).

    ``thetas``: a bool array ``(P, *rho.shape)`` or an iterable of ``P`` bool arrays of ``rho``'s shape
    (so members can be regenerated one at a time). Summed in member order ``i = 0, 1, ...`` in
    float64. ``natural=False`` returns ``g / (rho (1 - rho))`` (the seed's eq. 13).
    """
    w = check_array("w", np.asarray(w, dtype=np.float64), ndim=1)
    rho = check_array("rho", rho, dtypes=(np.dtype(np.float64),))
    if rho.size and (rho.min() <= 0 or rho.max() >= 1) and not natural:
        raise ValueError("rho: the plain gradient needs 0 < rho < 1")
    acc = np.zeros_like(rho)
    n = 0
    for i, th in enumerate(thetas):
        if i >= w.shape[0]:
            raise ValueError(f"thetas: more members than weights ({w.shape[0]})")
        th = np.asarray(th)
        if th.shape != rho.shape:
            raise ValueError(f"thetas[{i}]: expected shape {rho.shape}, got {th.shape}")
        acc += w[i] * (th - rho)
        n += 1
    if n != w.shape[0]:
        raise ValueError(f"thetas: expected {w.shape[0]} members, got {n}")
    g = acc / n
    return g if natural else g / (rho * (1.0 - rho))


def adam_update(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], m: Mapping[str, np.ndarray],
                v: Mapping[str, np.ndarray], t: int, *, lr: float, beta1: float = 0.9, beta2: float = 0.999,
                eps: float = 1e-8, weight_decay: float = 0.0):
    """One Adam *ascent* step as a pure function: returns ``(new params, new m, new v, t + 1)``.

    ``m_k <- b1 m_k + (1 - b1) g``, ``v_k <- b2 v_k + (1 - b2) g^2``, ``x <- x + lr (m_hat / (sqrt(v_hat) +
    eps) - wd x)`` with ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)`` (optax ``scale_by_adam``;
    the ``- wd x`` term only for ``weight_decay > 0``, AdamW). The keys are those of ``m`` in its order;
    no input is modified. :class:`Adam` is the stateful wrapper; hyperparameters are not re-checked here.
    """
    t = int(t) + 1
    b1, b2 = beta1, beta2
    c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    out, m_new, v_new = {}, {}, {}
    for k in m:
        g = grads[k]
        m_new[k] = b1 * m[k] + (1.0 - b1) * g
        v_new[k] = b2 * v[k] + (1.0 - b2) * g * g
        upd = (m_new[k] / c1) / (np.sqrt(v_new[k] / c2) + eps)
        if weight_decay:
            upd = upd - weight_decay * params[k]
        out[k] = params[k] + lr * upd
    return out, m_new, v_new, t


def adam_state_arrays(m: Mapping[str, np.ndarray], v: Mapping[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    """Flat checkpoint arrays of an Adam state: ``opt.m.<k>``, ``opt.v.<k>``, ``opt.t`` (int64)."""
    d = {f"opt.m.{k}": a for k, a in m.items()}
    d.update({f"opt.v.{k}": a for k, a in v.items()})
    d["opt.t"] = np.array(t, dtype=np.int64)
    return d


def adam_load_state_arrays(d: Mapping[str, np.ndarray], shapes: Mapping[str, tuple]):
    """Inverse of :func:`adam_state_arrays` for parameters of ``shapes``: ``(m, v, t)`` as float64 /
    int. A missing, misshapen or invalid array (not real numbers, NaN or infinite, a negative second
    moment ``v``, a step count ``t`` that is not a whole number >= 0) is a ``ValueError`` naming its key
    (:mod:`refsnn.ec.restore`)."""
    m, v = {}, {}
    for k, s in shapes.items():
        m[k] = restored_array(d, f"opt.m.{k}", shape=tuple(s))
        v[k] = restored_array(d, f"opt.v.{k}", shape=tuple(s), lo=0.0)
    return m, v, restored_int(d, "opt.t", lo=0)


class Adam:
    """Adam for *ascent*: ``x <- x + lr * m_hat / (sqrt(v_hat) + eps)`` (optax ``scale_by_adam``),
    optionally with decoupled weight decay (AdamW, SPEC §5.5): ``x <- x - lr * wd * x``.

    A stateful wrapper of :func:`adam_update`. State (``m``, ``v`` per key, step count ``t``) is
    exposed by :meth:`state_arrays` / :meth:`load_state_arrays` for checkpoints.
    """

    def __init__(self, shapes: Mapping[str, tuple], *, lr: float = 0.15, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0):
        self.lr = check_float("lr", lr, lo=0.0)
        self.beta1 = check_float("beta1", beta1, lo=0.0, hi=1.0, hi_open=True)
        self.beta2 = check_float("beta2", beta2, lo=0.0, hi=1.0, hi_open=True)
        self.eps = check_float("eps", eps, lo=0.0)
        self.weight_decay = check_float("weight_decay", weight_decay, lo=0.0)
        self.m = {k: np.zeros(s) for k, s in shapes.items()}
        self.v = {k: np.zeros(s) for k, s in shapes.items()}
        self.t = 0

    def step(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Return the new parameters (inputs are not modified)."""
        out, self.m, self.v, self.t = adam_update(params, grads, self.m, self.v, self.t, lr=self.lr,
                                                  beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                                                  weight_decay=self.weight_decay)
        return out

    def state_arrays(self) -> dict[str, np.ndarray]:
        return adam_state_arrays(self.m, self.v, self.t)

    def load_state_arrays(self, d: Mapping[str, np.ndarray]) -> None:
        self.m, self.v, self.t = adam_load_state_arrays(d, {k: a.shape for k, a in self.m.items()})


def nes_step(rho: Mapping[str, np.ndarray], thetas: Mapping[str, np.ndarray], fitness: np.ndarray,
             opt: "Adam", *, eps: float = 1e-3, natural: bool = True, ties: str = "average") -> dict[str, np.ndarray]:
    """One EC update (SPEC §5.2): ranks -> estimate -> Adam ascent -> clip. ``thetas[k]`` is the
    ``(P, *rho[k].shape)`` bool stack of the stochastic members; ``opt`` is advanced in place;
    ``ties`` as in :func:`centered_ranks`."""
    w = centered_ranks(fitness, ties)
    g = {k: nes_gradient(w, thetas[k], rho[k], natural=natural) for k in rho}
    return clip_rho(opt.step(rho, g), eps)


def clip_rho(rho: Mapping[str, np.ndarray], eps: float = 1e-3) -> dict[str, np.ndarray]:
    """Clip every probability to ``[eps, 1 - eps]`` (keeps exploration alive, seed §4.2)."""
    eps = check_float("eps", eps, lo=0.0, hi=0.5)
    return {k: np.clip(v, eps, 1.0 - eps) for k, v in rho.items()}


def bernoulli_entropy(rho: Mapping[str, np.ndarray]) -> float:
    """Mean entropy in bits of the Bernoulli variables (1 at ``rho = 0.5``, 0 when deterministic)."""
    tot = 0.0
    n = 0
    for v in rho.values():
        p = np.clip(v, 1e-12, 1 - 1e-12)
        tot += float(np.sum(-p * np.log2(p) - (1 - p) * np.log2(1 - p)))
        n += v.size
    return tot / max(n, 1)


def bernoulli_kl(p: Mapping[str, np.ndarray], q: Mapping[str, np.ndarray]) -> float:
    """Mean over all variables of ``KL(B(p) || B(q)) = p ln(p/q) + (1-p) ln((1-p)/(1-q))`` in nats
    (keys of ``p``; probabilities clipped to ``[1e-12, 1 - 1e-12]``)."""
    tot = 0.0
    n = 0
    for k, a in p.items():
        x = np.clip(a, 1e-12, 1 - 1e-12)
        y = np.clip(q[k], 1e-12, 1 - 1e-12)
        tot += float(np.sum(x * np.log(x / y) + (1 - x) * np.log((1 - x) / (1 - y))))
        n += a.size
    return tot / max(n, 1)


def limit_kl(old: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray], kl_max: float,
             iters: int = 50) -> tuple[dict[str, np.ndarray], float]:
    """The step ``old -> new`` shortened to ``old + a (new - old)`` with the largest ``a`` in ``[0, 1]``
    (bisection, ``iters`` halvings) such that ``bernoulli_kl(old, .) <= kl_max``; returns
    ``(params, a)``. ``kl_max = 0`` switches the limit off (``new`` unchanged, ``a = 1``). The KL is
    convex in ``a`` and 0 at ``a = 0``, so it increases along the segment and bisection finds the
    boundary; the segment stays inside ``[eps, 1 - eps]`` when both ends do."""
    kl_max = check_float("kl_max", kl_max, lo=0.0)
    if kl_max == 0.0 or bernoulli_kl(old, new) <= kl_max:
        return dict(new), 1.0

    def at(a: float) -> dict[str, np.ndarray]:
        return {k: old[k] + a * (new[k] - old[k]) for k in new}

    lo, hi = 0.0, 1.0
    for _ in range(int(iters)):
        mid = 0.5 * (lo + hi)
        if bernoulli_kl(old, at(mid)) <= kl_max:
            lo = mid
        else:
            hi = mid
    return at(lo), lo
