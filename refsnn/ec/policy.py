"""Population members as batched RSNN policies (SPEC §5.1, §5.3, §5.5).

A *family* turns the search distribution's parameters plus ``(seed, generation, index)`` into a
batch of concrete networks, and steps that batch through the Numba kernels of
:mod:`refsnn.kernels.cuba`. Both families are rebuilt from integers, so only the parameters (once
per generation) and integers cross to worker processes.

Member layout of a generation with ``P`` stochastic members and ``E`` evaluation members:
indices ``0..P-1`` are sampled, ``P..P+E-1`` are deterministic (EC: ``theta = rho > 0.5``;
ES: the centre weights). Each member draws, from :func:`refsnn.ec.nes.member_rng`, first its
episode seed (an integer for ``env.reset(seed=...)``), then its initial membrane uniforms
``(N,)``, then (EC stochastic members only) the Bernoulli uniforms of ``C_in, C_h, C_out``
(keys ``"in", "h", "out"`` in sorted order: ``h, in, out``).

* :class:`ECFamily` — parameters ``rho = {"in": (2 d_in, N), "h": (N, N), "out": (N, d_out)}``,
  network input ``u = [x, -x]``, Dale's law, ``C_h`` bit-packed.
* :class:`ESFamily` — ES-RSNN (SPEC §5.5, reference ``es_dense.py`` + ``DenseSNN``): real weights
  ``{"in": (d_in, N), "h": (N, N), "out": (N, d_out)}`` initialised ``N(0, 1)``; member ``i < P``
  belongs to antithetic pair ``k = i // 2`` and uses ``centre + sign * sigma * eps_k`` with
  ``sign = +1`` for even ``i``, ``-1`` for odd; ``eps_k`` from stream ``STREAM_NOISE`` of
  ``(seed, generation, k)``. Both members of a pair share the episode seed and initial membrane
  (drawn from pair ``k``'s member stream) — common random numbers, which reduce the variance of the
  pair difference. No Dale's law, input ``u = x``, gains without the sparsity factor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refsnn._checks import check_array
from refsnn.ec import nes
from refsnn.kernels import cuba, cuba_bptt, rnn
from refsnn.kernels.cuba import CubaConfig

__all__ = ["ECFamily", "ESFamily", "RNNFamily", "SGFamily", "RNNConfig", "RNN_GATES", "METHODS", "rnn_shapes",
           "sg_shapes", "make_family", "ec_gradient", "ec_rank_sums", "ec_rank_sums_task",
           "es_gradient"]


@dataclass
class Batch:
    """Concrete networks of a chunk of members plus their episode seeds and state."""
    indices: np.ndarray
    env_seeds: np.ndarray
    arrays: tuple
    state: tuple
    #: the prepared per-step kernel call, when the family has one (:class:`refsnn.kernels.cuba.PackedRSNN`)
    stepper: object = None


class _Family:
    method = ""

    def __init__(self, cfg: CubaConfig, obs_dim: int, act_dim: int, dtype=np.float32):
        self.cfg = cfg
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.dtype = np.dtype(dtype)

    def _member_head(self, rng):
        env_seed = int(rng.integers(0, 2**31 - 1))
        v0 = rng.random(self.cfg.n_neurons)
        return env_seed, v0


class ECFamily(_Family):
    """Evolving Connectivity members (Bernoulli connectivity, bit-packed ``C_h``)."""

    method = "ec"

    def shapes(self) -> dict[str, tuple]:
        N = self.cfg.n_neurons
        return {"in": (2 * self.obs_dim, N), "h": (N, N), "out": (N, self.act_dim)}

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        return {k: np.full(s, 0.5) for k, s in self.shapes().items()}

    def member(self, params, seed, generation, index, n_stochastic):
        """``(env_seed, v0_uniforms, theta dict)`` of one member."""
        rng = nes.member_rng(seed, generation, index)
        env_seed, v0 = self._member_head(rng)
        if index < n_stochastic:
            theta = nes.sample_connectivity(params, rng)
        else:
            theta = nes.deterministic_connectivity(params)
        return env_seed, v0, theta

    def thetas(self, params, seed, generation, n_stochastic, key):
        """Yield ``theta[key]`` of stochastic members ``0..P-1`` in order (for the NES estimate)."""
        for i in range(n_stochastic):
            yield self.member(params, seed, generation, i, n_stochastic)[2][key]

    def build(self, params, seed, generation, indices, n_stochastic) -> Batch:
        # Checked once per batch: the samples are then 0/1 by construction, so each step passes
        # check_finite=False. (A NaN probability would otherwise sample as "never connected".)
        for k in sorted(params):
            r = np.asarray(params[k])
            if not ((r >= 0.0) & (r <= 1.0)).all():   # False for NaN too
                raise ValueError(f"params[{k!r}]: connection probabilities must be finite and in [0, 1]")
        B = len(indices)
        N, n_exc = self.cfg.n_neurons, self.cfg.n_exc
        we, wi = cuba.n_words(n_exc, N)
        C_in = np.empty((B, 2 * self.obs_dim, N), dtype=self.dtype)
        Chp = np.empty((B, we + wi, N), dtype=np.uint64)
        C_out = np.empty((B, N, self.act_dim), dtype=self.dtype)
        env_seeds = np.empty(B, dtype=np.int64)
        v0 = np.empty((B, N))
        for b, i in enumerate(indices):
            env_seeds[b], v0[b], th = self.member(params, seed, generation, int(i), n_stochastic)
            C_in[b] = th["in"]
            Chp[b] = cuba.pack_hidden(th["h"], n_exc)
            C_out[b] = th["out"]
        state = cuba.initial_state_packed(self.cfg, v0, self.dtype)
        # the per-episode checks once, here (check_finite=False: 0/1 samples, checked above)
        stepper = cuba.PackedRSNN(self.cfg, C_in, Chp, C_out, state, d_in=self.obs_dim, check_finite=False)
        return Batch(np.asarray(indices), env_seeds, (C_in, Chp, C_out), state, stepper)

    def step(self, batch: Batch, x: np.ndarray, active: np.ndarray):
        """One env step for the batch; ``x`` (B, d_in) normalised observations. Returns (action, spikes)."""
        xd = x.astype(self.dtype)
        return batch.stepper(np.concatenate([xd, -xd], axis=1), active)

    @staticmethod
    def deployed(params) -> dict[str, np.ndarray]:
        return nes.deterministic_connectivity(params)


class ESFamily(_Family):
    """ES-RSNN members (real-valued weights, antithetic Gaussian perturbations)."""

    method = "es"

    def __init__(self, cfg: CubaConfig, obs_dim: int, act_dim: int, dtype=np.float32, sigma: float = 0.3):
        super().__init__(cfg, obs_dim, act_dim, dtype)
        self.sigma = float(sigma)

    def shapes(self) -> dict[str, tuple]:
        N = self.cfg.n_neurons
        return {"in": (self.obs_dim, N), "h": (N, N), "out": (N, self.act_dim)}

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        rng = nes.member_rng(seed, 0, 0, nes.STREAM_INIT)
        return {k: rng.standard_normal(s) for k, s in sorted(self.shapes().items())}

    def noise(self, seed, generation, pair) -> dict[str, np.ndarray]:
        rng = nes.member_rng(seed, generation, pair, nes.STREAM_NOISE)
        return {k: rng.standard_normal(s) for k, s in sorted(self.shapes().items())}

    def member(self, params, seed, generation, index, n_stochastic):
        if index < n_stochastic:
            pair, sign = index // 2, (1.0 if index % 2 == 0 else -1.0)
            env_seed, v0 = self._member_head(nes.member_rng(seed, generation, pair))
            eps = self.noise(seed, generation, pair)
            w = {k: params[k] + sign * self.sigma * eps[k] for k in params}
        else:
            env_seed, v0 = self._member_head(nes.member_rng(seed, generation, index))
            w = params
        return env_seed, v0, w

    def build(self, params, seed, generation, indices, n_stochastic) -> Batch:
        B = len(indices)
        N = self.cfg.n_neurons
        W_in = np.empty((B, self.obs_dim, N), dtype=self.dtype)
        W_h = np.empty((B, N, N), dtype=self.dtype)
        W_out = np.empty((B, N, self.act_dim), dtype=self.dtype)
        env_seeds = np.empty(B, dtype=np.int64)
        v0 = np.empty((B, N))
        for b, i in enumerate(indices):
            env_seeds[b], v0[b], w = self.member(params, seed, generation, int(i), n_stochastic)
            W_in[b], W_h[b], W_out[b] = w["in"], w["h"], w["out"]
        state = cuba.initial_state(self.cfg, v0, self.dtype)
        for name, a in (("W_in", W_in), ("W_h", W_h), ("W_out", W_out)):
            check_array(name, a)   # NaN/inf once per batch; each step passes check_finite=False
        return Batch(np.asarray(indices), env_seeds, (W_in, W_h, W_out), state)

    def step(self, batch: Batch, x: np.ndarray, active: np.ndarray):
        W_in, W_h, W_out = batch.arrays
        return cuba.float_env_step(self.cfg, x.astype(self.dtype), W_in, W_h, W_out, batch.state, active=active,
                                   check_finite=False)  # checked in build

    @staticmethod
    def deployed(params) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float32) for k, v in params.items()}


#: gate blocks per recurrent cell of the deep-RNN baselines
RNN_GATES = {"es-gru": 3, "es-lstm": 4}
METHODS = ("ec", "es", *RNN_GATES, "sg-ppo")


def rnn_shapes(method: str, obs_dim: int, hidden: int, act_dim: int) -> dict[str, tuple]:
    """Parameter shapes of an ES-GRU / ES-LSTM member (PyTorch layouts: ``nn.GRUCell`` /
    ``nn.LSTMCell`` weights and biases, then an ``nn.Linear(hidden, act_dim)`` readout)."""
    G, H = RNN_GATES[method], int(hidden)
    return {"b_hh": (G * H,), "b_ih": (G * H,), "b_out": (int(act_dim),), "w_hh": (G * H, H),
            "w_ih": (G * H, int(obs_dim)), "w_out": (int(act_dim), H)}


def sg_shapes(obs_dim: int, neurons: int, act_dim: int) -> dict[str, tuple]:
    """Parameter shapes of the SG-PPO policy (:mod:`refsnn.ec.ppo`): the RSNN's ``W_in``, ``W_h``,
    ``W_out`` and the PPO heads ``log_std``, ``w_v``, ``b_v``."""
    N, A = int(neurons), int(act_dim)
    return {"W_h": (N, N), "W_in": (int(obs_dim), N), "W_out": (N, A), "b_v": (1,), "log_std": (A,), "w_v": (N,)}


@dataclass(frozen=True)
class RNNConfig:
    """What the rollout reads of a family's network config: ``n_neurons`` (here the hidden units),
    ``n_substeps`` and ``dt`` (one cell step per environment step; an RNN emits no spikes, so the
    reported firing rate is 0)."""
    n_neurons: int
    n_substeps: int = 1
    dt: float = 1.0


class RNNFamily(ESFamily):
    """ES-GRU / ES-LSTM members (the EC paper's deep-RNN baselines; reference ``es_dense.py`` with
    ``DenseGRU`` (hidden 256) / ``DenseLSTM`` (hidden 128)): the cell of
    :mod:`refsnn.kernels.rnn` on the normalised observation, then ``action = clip(w_out h + b_out,
    -1, 1)``; state ``h`` (and ``c``) zero at the start of every episode, as the reference
    ``initial_carry``. Perturbations, antithetic pairs and streams are ``ESFamily``'s (the member's
    stream still draws an initial membrane it does not use, so the env seeds match ES-RSNN's).

    Initial centre weights: PyTorch's default for these modules, every weight and bias
    ``U(-1/sqrt(H), 1/sqrt(H))`` (the readout's fan-in is ``H`` too), from stream ``STREAM_INIT`` in
    sorted key order. (The reference code uses flax's defaults: LeCun-normal input kernels,
    orthogonal recurrent kernels, zero biases; docs/deviations.md.)"""

    def __init__(self, method: str, hidden: int, obs_dim: int, act_dim: int, dtype=np.float32,
                 sigma: float = 0.02):
        if method not in RNN_GATES:
            raise ValueError(f"method: expected one of {tuple(RNN_GATES)}, got {method!r}")
        _Family.__init__(self, RNNConfig(int(hidden)), obs_dim, act_dim, dtype)
        self.method = method
        self.sigma = float(sigma)

    def shapes(self) -> dict[str, tuple]:
        return rnn_shapes(self.method, self.obs_dim, self.cfg.n_neurons, self.act_dim)

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        rng = nes.member_rng(seed, 0, 0, nes.STREAM_INIT)
        k = 1.0 / np.sqrt(self.cfg.n_neurons)
        return {key: rng.uniform(-k, k, s) for key, s in sorted(self.shapes().items())}

    def build(self, params, seed, generation, indices, n_stochastic) -> Batch:
        B, H = len(indices), self.cfg.n_neurons
        shapes = self.shapes()
        arrays = {k: np.empty((B, *s), dtype=self.dtype) for k, s in shapes.items()}
        env_seeds = np.empty(B, dtype=np.int64)
        for b, i in enumerate(indices):
            env_seeds[b], _, w = self.member(params, seed, generation, int(i), n_stochastic)
            for k in shapes:
                arrays[k][b] = w[k]
        for k, a in arrays.items():
            check_array(f"params[{k!r}]", a)   # NaN/inf once per batch; the steps do not check again
        state = tuple(np.zeros((B, H), self.dtype) for _ in range(2 if self.method == "es-lstm" else 1))
        return Batch(np.asarray(indices), env_seeds, arrays, state)

    def step(self, batch: Batch, x: np.ndarray, active: np.ndarray):
        """One cell step for every member (finished ones keep their state); ``(actions, spikes=0)``."""
        w = batch.arrays
        x = x.astype(self.dtype)
        cell = (w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        keep = ~np.asarray(active, dtype=bool)[:, None]
        if self.method == "es-gru":
            (h,) = batch.state
            h_new = rnn.gru_cell(x, h, *cell)
            h[...] = np.where(keep, h, h_new)
        else:
            h, c = batch.state
            h_new, c_new = rnn.lstm_cell(x, h, c, *cell)
            h[...] = np.where(keep, h, h_new)
            c[...] = np.where(keep, c, c_new)
        act = np.clip(np.matmul(w["w_out"], h[:, :, None])[:, :, 0] + w["b_out"], -1.0, 1.0)
        return act, np.zeros(len(h), dtype=np.int64)


class SGFamily(ESFamily):
    """The deterministic SG-RSNN policy (``refsnn ec --method sg-ppo``, :mod:`refsnn.ec.ppo`), for its
    evaluation episodes and ``refsnn play``: ``action = clip(R_out (rate @ W_out), -1, 1)`` of the
    CuBa-LIF RSNN with dense real weights and Dale's law, run by
    :func:`refsnn.kernels.cuba.float_env_step` with the effective recurrent weights
    ``sign_j |W_h|``. Parameters ``W_in (obs, N)``, ``W_h``, ``W_out`` (the PPO heads ``log_std``,
    ``w_v``, ``b_v`` are carried but unused). Only deterministic members (``index >= n_stochastic``):
    PPO samples its own actions."""

    method = "sg-ppo"

    def __init__(self, cfg: CubaConfig, obs_dim: int, act_dim: int, dtype=np.float32):
        super().__init__(cfg, obs_dim, act_dim, dtype, sigma=1.0)

    def shapes(self) -> dict[str, tuple]:
        return sg_shapes(self.obs_dim, self.cfg.n_neurons, self.act_dim)

    def member(self, params, seed, generation, index, n_stochastic):
        if index < n_stochastic:
            raise ValueError("index: an SG-PPO policy has only deterministic members")
        return super().member(params, seed, generation, index, n_stochastic)

    def build(self, params, seed, generation, indices, n_stochastic) -> Batch:
        eff = {"in": params["W_in"], "h": cuba_bptt.effective_recurrent(self.cfg, np.asarray(params["W_h"])),
               "out": params["W_out"]}
        return ESFamily.build(self, eff, seed, generation, indices, n_stochastic)


def make_family(method: str, cfg_kwargs: dict, obs_dim: int, act_dim: int, sigma: float = 0.3):
    """Family from plain values (what a worker receives); ``cfg_kwargs["n_neurons"]`` is the RSNN's
    neurons or the RNN's hidden units."""
    if method == "ec":
        return ECFamily(CubaConfig(**cfg_kwargs), obs_dim, act_dim)
    if method == "es":
        kw = dict(cfg_kwargs)
        kw.update(dale=False, sparsity=1.0)
        return ESFamily(CubaConfig(**kw), obs_dim, act_dim, sigma=sigma)
    if method in RNN_GATES:
        return RNNFamily(method, cfg_kwargs["n_neurons"], obs_dim, act_dim, sigma=sigma)
    if method == "sg-ppo":
        return SGFamily(CubaConfig(n_neurons=cfg_kwargs["n_neurons"], sparsity=1.0, dale=True), obs_dim, act_dim)
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")


def ec_gradient(family: ECFamily, params, fitness, seed, generation, *, natural=True, map_fn=None,
                n_chunks: int = 1, ties: str = "average"):
    """NES estimate (SPEC §5.2, eqs. 13–14) with ``theta_i`` regenerated from ``(seed, generation, i)``,
    computed exactly.

    With centered ranks ``w_i = r_i / (P - 1) - 0.5`` (``r_i`` the 0-based rank, ties averaged or
    by position as ``ties`` says, :func:`refsnn.ec.nes.ranks`; either way ``2 r_i`` is an integer)
    the weights sum to exactly 0, and
    ``g = (1/P) sum_i w_i (theta_i - rho) = (S - (P - 1) C) / (2 P (P - 1))`` with the integer sums
    ``S = sum_i 2 r_i theta_i`` and ``C = sum_i theta_i`` (:func:`ec_rank_sums`). The numerator and
    denominator are exact integers, so ``g`` is the correctly rounded float64 value of the estimate:
    it does not depend on the order in which members are summed. Members can therefore be summed in
    ``n_chunks`` interleaved chunks (member ``i`` in chunk ``i mod n_chunks``), anywhere: ``map_fn``
    (e.g. an executor's ``map``; default the built-in ``map``) is called once with
    :func:`ec_rank_sums_task` and the chunks' argument tuples, and the result is bit-identical for any
    ``n_chunks`` and any executor. ``natural=False`` divides by ``rho (1 - rho)`` (eq. 13).
    Equal to ``nes.nes_gradient(nes.centered_ranks(fitness, ties), thetas, rho)`` (float accumulation
    in member order) to rounding.
    """
    fitness = np.asarray(fitness, dtype=np.float64)
    P = len(fitness)
    if P < 2:   # centered ranks of one member are 0
        g = {k: np.zeros_like(v) for k, v in params.items()}
    else:
        r2 = np.rint(2.0 * nes.ranks(fitness, ties)).astype(np.int64)
        n_chunks = max(1, min(int(n_chunks), P))
        tasks = [(family, params, int(seed), int(generation), tuple(range(c, P, n_chunks)),
                  r2[c::n_chunks], P) for c in range(n_chunks)]
        S = {k: np.zeros(v.shape, np.int64) for k, v in params.items()}
        C = {k: np.zeros(v.shape, np.int64) for k, v in params.items()}
        for s_part, c_part in (map_fn or map)(ec_rank_sums_task, tasks):
            for k in S:
                S[k] += s_part[k]
                C[k] += c_part[k]
        den = float(2 * P * (P - 1))
        g = {k: (S[k] - (P - 1) * C[k]).astype(np.float64) / den for k in params}
    if not natural:
        g = {k: v / (params[k] * (1.0 - params[k])) for k, v in g.items()}
    return g


def ec_rank_sums(family: ECFamily, params, seed, generation, indices, twice_ranks, n_stochastic):
    """Integer sums over the stochastic members ``indices`` (each regenerated from
    ``(seed, generation, i)``): ``S[k] = sum_i twice_ranks_i theta_i[k]`` and ``C[k] = sum_i theta_i[k]``
    (int64, exact; see :func:`ec_gradient`)."""
    S = {k: np.zeros(v.shape, np.int64) for k, v in params.items()}
    C = {k: np.zeros(v.shape, np.int64) for k, v in params.items()}
    for i, r2 in zip(indices, twice_ranks):
        th = family.member(params, seed, generation, i, n_stochastic)[2]
        r2 = np.int64(r2)
        for k in S:
            S[k] += th[k] * r2
            C[k] += th[k]
    return S, C


def ec_rank_sums_task(args: tuple):
    """:func:`ec_rank_sums` of one argument tuple (a picklable task for an executor's ``map``)."""
    return ec_rank_sums(*args)


def es_gradient(family: ESFamily, params, fitness, seed, generation, *, ties: str = "average"):
    """OpenAI-ES estimate (SPEC §5.5): centered ranks over all ``P`` members, pair weight
    ``w_{2k} - w_{2k+1}``, ``g = (1/K) sum_k (w_{2k} - w_{2k+1}) sigma eps_k`` (``K = P/2``; the
    reference code omits the ``1/(2 sigma^2)`` factor, which Adam's scale invariance makes moot)."""
    P = len(fitness)
    if P % 2:
        raise ValueError(f"population: ES uses antithetic pairs, expected an even number, got {P}")
    w = nes.centered_ranks(np.asarray(fitness, dtype=np.float64), ties)
    K = P // 2
    acc = {k: np.zeros_like(v) for k, v in params.items()}
    for pair in range(K):
        eps = family.noise(seed, generation, pair)
        c = (w[2 * pair] - w[2 * pair + 1]) * family.sigma
        for k in acc:
            acc[k] += c * eps[k]
    return {k: a / K for k, a in acc.items()}
