"""What ``refsnn ec`` keeps of a run beside the method's state: the metrics history (:data:`COLUMNS`),
the env-step and wall-time counters, the best deterministic return, and the budgets
(``--max-env-steps``, ``--max-minutes``); all of it is checkpointed and checked when restored.

``metrics.csv`` has one row per generation (SG-PPO: per iteration) and the same columns, with the same
meaning, for every method (:mod:`refsnn.ec.method` states how each figure is measured):

* ``generation``: generations completed; ``mean_return``, ``max_return``: plain returns of the
  generation's exploratory episodes (the stochastic members; PPO: the episodes of its rollout, NaN
  when none ended); ``det_return``: mean return of the deterministic episodes (NaN without any);
* ``rho_entropy``: EC's mean Bernoulli entropy of ``rho`` in bits (NaN for the other methods);
* ``firing_rate_hz``: mean spike rate per neuron of the episodes run through the executor (0 for
  the RNN policies);
* ``env_steps``: environment steps of the run so far (every episode, all kinds);
  ``steps_per_s``: the generation's environment steps over its wall time;
* ``policy_over_env``: seconds in the policy (forward passes, backward passes, update) over seconds
  in ``env.step`` / ``env.reset``; ``elapsed_s``: wall time of the run so far (all sessions).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from refsnn.ec.restore import restored_array, restored_float, restored_int
from refsnn.runs import fmt_hms

__all__ = ["COLUMNS", "INT_COLUMNS", "Progress", "budget_spent"]

COLUMNS = ("generation", "mean_return", "max_return", "det_return", "rho_entropy", "firing_rate_hz",
           "env_steps", "steps_per_s", "policy_over_env", "elapsed_s")
INT_COLUMNS = ("generation", "env_steps")


@dataclass
class Progress:
    """What the command keeps beside the method's state (all checkpointed)."""
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, len(COLUMNS))))
    env_steps: int = 0
    wall_prev: float = 0.0
    best: float = -math.inf
    t_session: float = field(default_factory=time.perf_counter)
    gen_times: list = field(default_factory=list)

    def elapsed(self) -> float:
        return self.wall_prev + (time.perf_counter() - self.t_session)

    def add_row(self, row: dict) -> None:
        """Append a metrics row given by name: one value for each of :data:`COLUMNS` (``ValueError``
        for missing or other keys)."""
        if set(row) != set(COLUMNS):
            raise ValueError(f"row: expected the columns {list(COLUMNS)}, got {sorted(row)}")
        self.history = np.vstack([self.history, np.array([[row[c] for c in COLUMNS]], dtype=np.float64)])

    def rows(self) -> list[dict]:
        """The history as one dict per row, keyed by :data:`COLUMNS`."""
        return [dict(zip(COLUMNS, r)) for r in self.history]

    def column(self, name: str) -> np.ndarray:
        return self.history[:, COLUMNS.index(name)]

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

    def eta(self, cfg, done: int) -> float:
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


def budget_spent(cfg, prog: Progress, log, *, resumed: bool = False) -> bool:
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
