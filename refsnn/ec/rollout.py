"""Rollouts of a population on a Gymnasium environment (SPEC §5.4).

* Environments: any Gymnasium id with a 1-D ``Box`` observation and a 1-D ``Box`` action space
  (paper tasks ``Hopper-v5``, ``Walker2d-v5``, ``Humanoid-v5``). The reference code used Brax v1
  versions of these tasks, whose returns are not comparable one-to-one with Gymnasium MuJoCo's.
  The network's action in ``[-1, 1]`` is passed unchanged when the action space is ``[-1, 1]``
  (all three tasks) and otherwise mapped affinely onto finite ``[low, high]``.
* One episode per member, from a fresh network state (the reference code keeps the state across
  Brax's auto-resets; refsnn does not), reset with the member's own episode seed; the episode ends
  on ``terminated`` or ``truncated`` or after ``max_steps`` steps (default 1000, through
  ``gymnasium.make(..., max_episode_steps=max_steps)``). Each member returns its undiscounted
  return and its episode length (the trainer ranks ``return - shift * length``, SPEC §5.2 note in
  ``docs/ec.md``).
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
import os
import resource
import sys
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import numba
import numpy as np

from refsnn.ec.policy import make_family
from refsnn.kernels import cuba
from refsnn.parallel import make_executor, shutdown

__all__ = ["check_env", "RunningNorm", "evaluate_chunk", "Evaluator"]


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
        if d["norm.mean"].shape != self.mean.shape:
            raise ValueError(f"checkpoint: normaliser has {d['norm.mean'].shape[0]} features, the env has "
                             f"{self.mean.shape[0]}")
        self.count = float(d["norm.count"])
        self.mean = d["norm.mean"].astype(np.float64)
        self.m2 = d["norm.m2"].astype(np.float64)


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


def evaluate_chunk(task: Task) -> dict:
    """Run one episode for each member of ``task.indices`` in lock-step; returns per-member arrays
    ``returns, lengths, spikes, obs_n, obs_mean, obs_m2`` (in ``task.indices`` order), the seconds
    spent in the policy, in ``env.step``/``reset`` and building the networks, the worker process's
    peak RSS so far (``peak_rss_mb``), and for ``refsnn play`` the distance each body moved along x
    (``x_distance``, from the env's ``info["x_position"]``, NaN when the env does not report it) and
    the env's time step ``env_dt`` in seconds."""
    t_start = time.perf_counter()
    idx = list(task.indices)
    B = len(idx)
    envs = _envs(task.env_id, task.max_steps, B)
    obs_dim, act_dim = envs[0].observation_space.shape[0], envs[0].action_space.shape[0]
    fam = make_family(task.method, task.cfg_kwargs, obs_dim, act_dim, task.sigma)
    batch = fam.build(task.params, task.seed, task.generation, idx, task.n_stochastic)
    amap = _action_map(envs[0].action_space)
    act_dtype = envs[0].action_space.dtype
    t_built = time.perf_counter()

    X = np.empty((B, obs_dim))
    x_start, x_end = np.full(B, np.nan), np.full(B, np.nan)   # the body's x position, if the env reports it
    for b in range(B):
        X[b], info = envs[b].reset(seed=int(batch.env_seeds[b]))
        x_start[b] = x_end[b] = info.get("x_position", np.nan)
    t_env = time.perf_counter() - t_built
    t_pol = 0.0
    # per-member Welford
    wn = np.ones(B)
    wmean = X.copy()
    wm2 = np.zeros((B, obs_dim))
    returns = np.zeros(B)
    lengths = np.zeros(B, dtype=np.int64)
    spikes = np.zeros(B, dtype=np.int64)
    active = np.ones(B, dtype=bool)
    inv_std = 1.0 / task.norm_std
    while active.any():
        t0 = time.perf_counter()
        xn = (X - task.norm_mean) * inv_std
        act, ns = fam.step(batch, xn, active)
        t1 = time.perf_counter()
        t_pol += t1 - t0
        spikes += ns
        stepped = np.flatnonzero(active)
        for b in stepped:
            a = act[b].astype(np.float64)
            if amap is not None:
                a = amap[0] + (a + 1.0) * 0.5 * (amap[1] - amap[0])
            obs, r, term, trunc, info = envs[b].step(a.astype(act_dtype))
            x_end[b] = info.get("x_position", np.nan)
            returns[b] += float(r)
            lengths[b] += 1
            X[b] = obs
            if term or trunc or lengths[b] >= task.max_steps:
                active[b] = False
        t_env += time.perf_counter() - t1
        # Welford update of the members that received an observation
        wn[stepped] += 1
        d = X[stepped] - wmean[stepped]
        wmean[stepped] += d / wn[stepped, None]
        wm2[stepped] += d * (X[stepped] - wmean[stepped])
    return {"indices": np.asarray(idx, dtype=np.int64), "returns": returns, "lengths": lengths,
            "spikes": spikes, "obs_n": wn, "obs_mean": wmean, "obs_m2": wm2, "x_distance": x_end - x_start,
            "env_dt": float(getattr(envs[0].unwrapped, "dt", np.nan)),
            "policy_s": t_pol, "env_s": t_env, "build_s": t_built - t_start, "peak_rss_mb": _peak_rss_mb(),
            "n_neurons": fam.cfg.n_neurons, "n_substeps": fam.cfg.n_substeps, "dt": fam.cfg.dt}


def _peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024.0 * 1024.0) if sys.platform == "darwin" else kb / 1024.0


def _init_worker() -> None:
    # one thread per worker process: parallelism comes from processes (mujoco is single-threaded)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    numba.set_num_threads(1)
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
                 seed, generation, n_stochastic, n_eval) -> dict:
        """One episode per member ``0 .. n_stochastic + n_eval - 1``; per-member ``returns``,
        ``lengths``, ``spikes`` and ``obs_stats`` in member order, summed ``policy_s`` / ``env_s`` /
        ``build_s``, the largest worker ``peak_rss_mb`` and ``n_tasks``."""
        n = n_stochastic + n_eval
        mean, std = norm.frozen()
        n_chunks = self.n_tasks(n)
        futs = []
        for c in range(n_chunks):
            idx = tuple(range(c, n, n_chunks))
            futs.append(self.executor.submit(evaluate_chunk, Task(
                method, dict(cfg_kwargs), float(sigma), env_id, int(max_steps), params, mean, std,
                int(seed), int(generation), idx, int(n_stochastic))))
        out = {"returns": np.zeros(n), "lengths": np.zeros(n, np.int64), "spikes": np.zeros(n, np.int64),
               "policy_s": 0.0, "env_s": 0.0, "build_s": 0.0, "peak_rss_mb": 0.0, "n_tasks": n_chunks}
        obs = [None] * n
        meta = None
        for f in futs:
            r = f.result()
            meta = r
            ii = r["indices"]
            for k in ("returns", "lengths", "spikes"):
                out[k][ii] = r[k]
            for k in ("policy_s", "env_s", "build_s"):
                out[k] += r[k]
            out["peak_rss_mb"] = max(out["peak_rss_mb"], r["peak_rss_mb"])
            for j, i in enumerate(ii):
                obs[i] = (r["obs_n"][j], r["obs_mean"][j], r["obs_m2"][j])
        out["obs_stats"] = obs  # member order
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
