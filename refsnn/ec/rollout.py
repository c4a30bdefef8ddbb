"""Rollouts of a population on a Gymnasium environment (SPEC §5.4).

* Environments: any Gymnasium id with a 1-D ``Box`` observation and a 1-D ``Box`` action space
  (paper tasks ``Hopper-v5``, ``Walker2d-v5``, ``Humanoid-v5``). The reference code used Brax v1
  versions of these tasks, whose returns are not comparable one-to-one with Gymnasium MuJoCo's.
  The network's action in ``[-1, 1]`` is passed unchanged when the action space is ``[-1, 1]``
  (all three tasks) and otherwise mapped affinely onto finite ``[low, high]``.
* Episodes: an episode ends on ``terminated`` or ``truncated`` or after ``max_steps`` steps (default
  1000, through ``gymnasium.make(..., max_episode_steps=max_steps)``). Two protocols
  (``episodes``):

  - ``"one"`` (refsnn's default): one episode per member from a fresh network state. Each member
    returns its undiscounted return and its episode length (the trainer ranks ``return - shift *
    length``, SPEC §5.2 note in ``docs/ec.md``).
  - ``"fill"`` (the reference code's, ``ec.py`` ``_evaluate_step`` / ``_eval_stop_cond``): all
    ``P + E`` members step in lock-step; a member whose episode ends is reset at once and goes on
    with the same network state (not reset), until the step ``L`` at which the slowest member
    finishes its first episode; the episode in progress at ``L`` is discarded. Each member returns
    the sums of its completed episodes' returns and lengths and their number; the fitness is the
    mean over completed episodes, and ``L (P + E)`` env steps are spent.

  Initial states (``reset_pool``): ``0`` (default) resets every episode with a fresh seed of its
  own — the member's ``env_seed`` for its first episode, then seeds from its stream
  ``STREAM_EPISODE``; ``N > 0`` draws a pool of ``N`` reset seeds once per run (pool entry ``j`` from
  ``(seed, 0, j, STREAM_POOL)``) and every episode of member ``i`` starts from entry ``i mod N`` —
  with ``N >= P + E`` the reference code's ``env_reset_pool`` (member ``i`` always from state ``i``).
  Gymnasium's ``reset(seed=s)`` re-seeds the env, so the same seed gives the same initial state.

  Lock-step across the whole population is exact without any worker talking to another: a chunk
  first runs until all *its* members have finished an episode (step ``L_c``); the evaluator takes
  ``L = max L_c`` and evaluates the chunks with ``L_c < L`` again from the start with the horizon
  ``L`` (every member's trajectory depends only on its own seeds, so the rerun repeats the first
  ``L_c`` steps bit for bit). Results do not depend on the chunking; the rerun costs up to
  ``L_c`` extra steps per member of those chunks (none once every episode reaches ``max_steps``).
* Observation normalisation: ``(obs - mean) / std`` with the running statistics frozen for the
  whole generation. Every observation a member sees (from reset up to and including the last one)
  is accumulated with Welford's algorithm per member, and the per-member statistics are merged into
  the running statistics in member-index order after the generation (Chan et al.'s parallel
  formula), so the result does not depend on how members were split over workers.
  ``std = clip(sqrt(M2 / count), 1e-6, 1e6)``, and ``mean = 0, std = 1`` before any data (the
  reference code, Brax's ``running_statistics``, normalises the same way but updates from the
  population's *final* observations only, which it flags as biased).
* Parallelism: members are split into interleaved chunks (member ``i`` goes to chunk
  ``i mod n_chunks``) and each chunk is one task of a ``concurrent.futures.Executor`` — by default a
  local ``ProcessPoolExecutor`` with ``--workers`` processes (``workers = 0`` evaluates in-process).
  ``n_chunks = chunks * ceil(n / (chunk_size * chunks))`` (whole rounds over the ``chunks`` workers): a
  task holds at most ``chunk_size`` members,
  each with its own network and environment instance, which bounds a worker's memory whatever the
  population (the paper's 10,240 members on a cluster; figures in docs/ec.md).
  A task carries the search parameters (once per generation), the frozen normaliser and integers,
  nothing else. Inside a task all members of the chunk step in lock-step through the batched
  kernel, each with its own environment instance; finished members are masked. Members never
  interact, so results are identical for any number of workers or chunks.
"""
from __future__ import annotations

import math
import resource
import sys
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from refsnn._checks import check_choice, check_int
from refsnn.ec.nes import member_rng
from refsnn.ec.policy import make_family
from refsnn.ec.restore import restored_array
from refsnn.kernels import cuba
from refsnn.parallel import make_executor, shutdown
from refsnn.tuning import single_thread_worker

__all__ = ["EPISODE_PROTOCOLS", "check_env", "RunningNorm", "evaluate_chunk", "Evaluator", "pool_seed"]

#: ``one``: one episode per member (refsnn's default); ``fill``: the reference code's lock-step protocol.
EPISODE_PROTOCOLS = ("one", "fill")
# Generator streams of (seed, generation, index) beside refsnn.ec.nes's (0-2) and refsnn.ec.ppo's (3-4):
STREAM_EPISODE = 5   # the reset seeds of a member's episodes after its first ("fill" without a pool)
STREAM_POOL = 6      # reset-pool entry j: (seed, 0, j)


def pool_seed(seed: int, j: int) -> int:
    """The reset seed of entry ``j`` of a run's reset pool (a function of the run seed and ``j``)."""
    return int(member_rng(seed, 0, j, STREAM_POOL).integers(0, 2**31 - 1))


def _gym():
    import gymnasium
    return gymnasium


def check_env(env_id: str, max_steps: int = 1000):
    """Make ``env_id`` and check its spaces; returns ``(env, obs_dim, act_dim)``.

    Raises ``ValueError`` naming the environment for an unknown id, a non-``Box`` (or not 1-D)
    observation space, or a discrete / non-``Box`` action space."""
    gym = _gym()
    if not isinstance(env_id, str) or not env_id:
        raise TypeError(f"env: expected a Gymnasium environment id string, got {env_id!r}")
    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        raise ValueError(f"env: unknown Gymnasium environment id {env_id!r} ({e})") from None
    try:
        env = gym.make(env_id, max_episode_steps=int(max_steps))
    except gym.error.Error as e:
        raise ValueError(f"env: cannot create {env_id!r}: {e}") from None
    obs, act = env.observation_space, env.action_space
    if not isinstance(act, gym.spaces.Box):
        env.close()
        raise ValueError(f"env: {env_id!r} has a {type(act).__name__} action space; EC/ES-RSNN needs a "
                         "continuous Box action space")
    if not isinstance(obs, gym.spaces.Box):
        env.close()
        raise ValueError(f"env: {env_id!r} has a {type(obs).__name__} observation space; a Box is needed")
    if len(obs.shape) != 1 or len(act.shape) != 1:
        env.close()
        raise ValueError(f"env: {env_id!r}: observation and action spaces must be 1-D, got {obs.shape} "
                         f"and {act.shape}")
    return env, int(obs.shape[0]), int(act.shape[0])


class RunningNorm:
    """Running mean/variance of observations (Welford/Chan), frozen copies via :meth:`frozen`."""

    def __init__(self, dim: int):
        self.count = 0.0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)

    def merge(self, n, mean, m2) -> None:
        """Merge a batch summarised by ``(n, mean, M2)`` (Chan et al.)."""
        n = float(n)
        if n <= 0:
            return
        tot = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / tot)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / tot)
        self.count = tot

    def std(self) -> np.ndarray:
        if self.count < 2:
            return np.ones_like(self.mean)
        return np.clip(np.sqrt(self.m2 / self.count), 1e-6, 1e6)

    def copy(self) -> "RunningNorm":
        """An independent copy (same statistics, own arrays)."""
        c = RunningNorm(self.mean.size)
        c.count, c.mean, c.m2 = self.count, self.mean.copy(), self.m2.copy()
        return c

    def frozen(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mean.copy(), self.std()

    def state_arrays(self) -> dict:
        return {"norm.count": np.array(self.count), "norm.mean": self.mean, "norm.m2": self.m2}

    def load_state_arrays(self, d) -> None:
        """Read :meth:`state_arrays` keys back, all checked before any is kept: ``norm.count`` a whole
        number >= 0, ``norm.mean`` finite and ``norm.m2`` finite and >= 0, both of this normaliser's
        length (``ValueError`` naming the key; :mod:`refsnn.ec.restore`)."""
        if "norm.mean" in d and np.shape(d["norm.mean"]) != self.mean.shape:
            raise ValueError(f"norm.mean: the normaliser has shape {np.shape(d['norm.mean'])}, the env "
                             f"{self.mean.shape[0]} features")
        count = float(restored_array(d, "norm.count", shape=(), lo=0.0, integer=True))
        mean = restored_array(d, "norm.mean", shape=self.mean.shape)
        m2 = restored_array(d, "norm.m2", shape=self.mean.shape, lo=0.0)
        self.count, self.mean, self.m2 = count, mean, m2


# ---------------------------------------------------------------------------------------------
# worker side
# ---------------------------------------------------------------------------------------------
_ENVS: dict = {}


def _envs(env_id: str, max_steps: int, n: int):
    key = (env_id, int(max_steps))
    lst = _ENVS.setdefault(key, [])
    while len(lst) < n:
        lst.append(check_env(env_id, max_steps)[0])
    return lst[:n]


def _action_map(space):
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    if np.all(low == -1) and np.all(high == 1):
        return None
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return None
    return low, high


@dataclass(frozen=True)
class Task:
    """Everything a worker needs: plain values, the parameters and the frozen normaliser."""
    method: str
    cfg_kwargs: dict
    sigma: float
    env_id: str
    max_steps: int
    params: dict
    norm_mean: np.ndarray
    norm_std: np.ndarray
    seed: int
    generation: int
    indices: tuple
    n_stochastic: int
    episodes: str = "one"
    reset_pool: int = 0
    #: ``"fill"`` only: run exactly this many steps (0: until every member of the chunk ended an episode)
    horizon: int = 0


def evaluate_chunk(task: Task) -> dict:
    """Run the members of ``task.indices`` in lock-step under ``task.episodes`` (module docstring);
    returns per-member arrays (in ``task.indices`` order) ``returns`` and ``lengths`` (sums over the
    member's completed episodes; with ``"one"`` its one episode), ``episodes`` (how many completed),
    ``spikes``, ``obs_n, obs_mean, obs_m2``; ``steps_run`` (the lock-step count the chunk ran: its
    ``L_c`` or the horizon; with ``"one"`` the longest episode) and ``env_steps`` (env steps taken);
    the seconds spent in the policy, in ``env.step``/``reset`` and building the networks, the worker
    process's peak RSS so far (``peak_rss_mb``), and for ``refsnn play`` the distance each body moved
    along x in its first episode (``x_distance``, from the env's ``info["x_position"]``, NaN when the
    env does not report it) and the env's time step ``env_dt`` in seconds."""
    t_start = time.perf_counter()
    fill = check_choice("episodes", task.episodes, EPISODE_PROTOCOLS) == "fill"
    pool = check_int("reset_pool", task.reset_pool, lo=0)
    horizon = check_int("horizon", task.horizon, lo=0)
    idx = list(task.indices)
    B = len(idx)
    envs = _envs(task.env_id, task.max_steps, B)
    obs_dim, act_dim = envs[0].observation_space.shape[0], envs[0].action_space.shape[0]
    fam = make_family(task.method, task.cfg_kwargs, obs_dim, act_dim, task.sigma)
    batch = fam.build(task.params, task.seed, task.generation, idx, task.n_stochastic)
    amap = _action_map(envs[0].action_space)
    act_dtype = envs[0].action_space.dtype
    t_built = time.perf_counter()

    if pool:   # every episode of member i from pool entry i mod N
        first_seeds = [pool_seed(task.seed, i % pool) for i in idx]
        later_seeds = [None] * B
    else:      # the member's own env seed, then (fill) fresh seeds from its episode stream
        first_seeds = [int(x) for x in batch.env_seeds]
        later_seeds = [member_rng(task.seed, task.generation, i, STREAM_EPISODE) if fill else None for i in idx]

    def reset(b: int, seed: int):
        obs, info = envs[b].reset(seed=int(seed))
        return obs, info.get("x_position", np.nan)

    X = np.empty((B, obs_dim))
    x_start, x_end = np.full(B, np.nan), np.full(B, np.nan)   # the body's x position, if the env reports it
    for b in range(B):
        X[b], x_start[b] = reset(b, first_seeds[b])
        x_end[b] = x_start[b]
    t_env = time.perf_counter() - t_built
    t_pol = 0.0
    # per-member Welford
    wn = np.ones(B)
    wmean = X.copy()
    wm2 = np.zeros((B, obs_dim))
    returns = np.zeros(B)                     # sums over completed episodes
    lengths = np.zeros(B, dtype=np.int64)
    episodes = np.zeros(B, dtype=np.int64)
    ep_ret, ep_len = np.zeros(B), np.zeros(B, dtype=np.int64)   # the episode in progress
    spikes = np.zeros(B, dtype=np.int64)
    active = np.ones(B, dtype=bool)
    inv_std = 1.0 / task.norm_std
    t = 0
    while active.any():
        t0 = time.perf_counter()
        xn = (X - task.norm_mean) * inv_std
        act, ns = fam.step(batch, xn, active)
        t1 = time.perf_counter()
        t_pol += t1 - t0
        spikes += ns
        stepped = np.flatnonzero(active)
        t += 1
        for b in stepped:
            a = act[b].astype(np.float64)
            if amap is not None:
                a = amap[0] + (a + 1.0) * 0.5 * (amap[1] - amap[0])
            obs, r, term, trunc, info = envs[b].step(a.astype(act_dtype))
            if episodes[b] == 0:
                x_end[b] = info.get("x_position", np.nan)
            ep_ret[b] += float(r)
            ep_len[b] += 1
            X[b] = obs
            if term or trunc or ep_len[b] >= task.max_steps:
                returns[b] += ep_ret[b]
                lengths[b] += ep_len[b]
                episodes[b] += 1
                ep_ret[b], ep_len[b] = 0.0, 0
                if not fill:
                    active[b] = False
                else:   # reset at once; the network state goes on
                    seed = first_seeds[b] if pool else later_seeds[b].integers(0, 2**31 - 1)
                    X[b] = reset(b, seed)[0]
        if fill and (t == horizon if horizon else episodes.min() >= 1):
            active[:] = False
        t_env += time.perf_counter() - t1
        # Welford update of the members that received an observation
        wn[stepped] += 1
        d = X[stepped] - wmean[stepped]
        wmean[stepped] += d / wn[stepped, None]
        wm2[stepped] += d * (X[stepped] - wmean[stepped])
    return {"indices": np.asarray(idx, dtype=np.int64), "returns": returns, "lengths": lengths,
            "episodes": episodes, "steps_run": t, "env_steps": int(wn.sum() - B),
            "spikes": spikes, "obs_n": wn, "obs_mean": wmean, "obs_m2": wm2, "x_distance": x_end - x_start,
            "env_dt": float(getattr(envs[0].unwrapped, "dt", np.nan)),
            "policy_s": t_pol, "env_s": t_env, "build_s": t_built - t_start, "peak_rss_mb": _peak_rss_mb(),
            "n_neurons": fam.cfg.n_neurons, "n_substeps": fam.cfg.n_substeps, "dt": fam.cfg.dt}


def _peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024.0 * 1024.0) if sys.platform == "darwin" else kb / 1024.0


def _init_worker() -> None:
    single_thread_worker()  # parallelism comes from processes (mujoco is single-threaded)
    _load_kernels()


def _load_kernels() -> None:
    """Load (or compile) the float32 serial kernels once, so that JIT time is not counted as policy time."""
    cfg = cuba.CubaConfig(n_neurons=8)
    st = cuba.initial_state_packed(cfg, np.zeros((1, 8)), np.float32)
    cuba.cuba_env_step_packed(cfg, np.zeros((1, 2), np.float32), np.zeros((1, 2, 8), bool),
                              cuba.pack_hidden(np.zeros((1, 8, 8), bool), cfg.n_exc), np.zeros((1, 8, 1), bool), st)
    fcfg = cuba.CubaConfig(n_neurons=8, dale=False, sparsity=1.0)
    cuba.float_env_step(fcfg, np.zeros((1, 1), np.float32), np.zeros((1, 1, 8), np.float32),
                        np.zeros((1, 8, 8), np.float32), np.zeros((1, 8, 1), np.float32),
                        cuba.initial_state(fcfg, np.zeros((1, 8)), np.float32))


class Evaluator:
    """Evaluates a generation's members through a ``concurrent.futures.Executor``.

    ``workers = 0``: in-process; ``workers >= 1``: a local process pool (spawned processes).
    Pass ``executor=`` to use any other Executor (e.g. a ``dask.distributed`` client's
    ``get_executor()``); ``chunks`` then sets how many tasks a generation is split into (at least).
    ``chunk_size``: at most this many members per task (more tasks when the population needs them).
    """

    def __init__(self, workers: int = 2, *, executor: Executor | None = None, chunks: int | None = None,
                 chunk_size: int = 256):
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
        self.chunk_size = int(chunk_size)
        self._own = executor is None
        if executor is not None:
            self.executor = executor
        else:  # in-process: compile the kernels now, so JIT time is not counted as policy time
            self.executor = make_executor(workers, initializer=_init_worker if workers else _load_kernels)
        self.chunks = max(1, chunks if chunks is not None else workers)

    def evaluate(self, *, method, cfg_kwargs, sigma, env_id, max_steps, params, norm: RunningNorm,
                 seed, generation, n_stochastic, n_eval, episodes: str = "one", reset_pool: int = 0) -> dict:
        """Members ``0 .. n_stochastic + n_eval - 1`` under the episode protocol ``episodes`` with the
        reset pool ``reset_pool`` (module docstring); per-member ``returns``, ``lengths`` (sums over
        completed episodes), ``episodes`` (their number), ``spikes`` and ``obs_stats`` in member order;
        ``env_steps`` (env steps of the protocol: the sum of the lengths for ``"one"``, ``L (P + E)``
        for ``"fill"``), ``rerun_steps`` (env steps of the chunks evaluated again for ``"fill"``),
        summed ``policy_s`` / ``env_s`` / ``build_s``, the largest worker ``peak_rss_mb`` and
        ``n_tasks``."""
        n = n_stochastic + n_eval
        check_choice("episodes", episodes, EPISODE_PROTOCOLS)
        check_int("reset_pool", reset_pool, lo=0)
        mean, std = norm.frozen()
        n_chunks = self.n_tasks(n)

        def submit(c: int, horizon: int = 0):
            return self.executor.submit(evaluate_chunk, Task(
                method, dict(cfg_kwargs), float(sigma), env_id, int(max_steps), params, mean, std,
                int(seed), int(generation), tuple(range(c, n, n_chunks)), int(n_stochastic), episodes,
                int(reset_pool), horizon))

        results = [f.result() for f in [submit(c) for c in range(n_chunks)]]
        rerun_steps = 0
        if episodes == "fill":   # lock-step over the whole population: rerun the chunks that stopped early
            L = max(r["steps_run"] for r in results)
            again = {c: submit(c, L) for c, r in enumerate(results) if r["steps_run"] < L}
            for c, f in again.items():
                rerun_steps += results[c]["env_steps"]
                first, results[c] = results[c], f.result()
                for k in ("policy_s", "env_s", "build_s"):   # the time of both runs is spent
                    results[c][k] += first[k]
        out = {"returns": np.zeros(n), "lengths": np.zeros(n, np.int64), "episodes": np.zeros(n, np.int64),
               "spikes": np.zeros(n, np.int64), "env_steps": 0, "rerun_steps": rerun_steps,
               "policy_s": 0.0, "env_s": 0.0, "build_s": 0.0, "peak_rss_mb": 0.0, "n_tasks": n_chunks}
        obs = [None] * n
        for r in results:
            ii = r["indices"]
            for k in ("returns", "lengths", "episodes", "spikes"):
                out[k][ii] = r[k]
            for k in ("policy_s", "env_s", "build_s"):
                out[k] += r[k]
            out["env_steps"] += r["env_steps"]
            out["peak_rss_mb"] = max(out["peak_rss_mb"], r["peak_rss_mb"])
            for j, i in enumerate(ii):
                obs[i] = (r["obs_n"][j], r["obs_mean"][j], r["obs_m2"][j])
        out["obs_stats"] = obs  # member order
        meta = results[-1]
        out["n_neurons"], out["n_substeps"], out["dt"] = meta["n_neurons"], meta["n_substeps"], meta["dt"]
        return out

    def n_tasks(self, n: int) -> int:
        """How many tasks ``n`` members are split into: ``chunks`` (the workers), or when a task would
        hold more than ``chunk_size`` members, the next multiple of ``chunks`` that keeps them within
        it (whole rounds over the workers: 516 members, 2 workers, chunk size 256 -> 4 tasks of 129, not
        3 tasks of 172 of which the last runs alone); never more than ``n``."""
        rounds = math.ceil(n / (self.chunk_size * self.chunks))
        return max(1, min(self.chunks * rounds, n))

    def map(self, fn, iterable) -> list:
        """``fn`` over ``iterable`` on this evaluator's executor, results in order (e.g. the chunks of
        :func:`refsnn.ec.policy.ec_gradient`)."""
        return list(self.executor.map(fn, iterable))

    def close(self, *, abort: bool = False) -> None:
        """Shut down an executor this object created. ``abort=True`` (after an error or a signal)
        terminates the local worker processes instead of waiting for their current task."""
        if self._own:
            shutdown(self.executor, abort=abort)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(abort=exc_type is not None)
