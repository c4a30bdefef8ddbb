"""EC benchmarks for ``refsnn bench`` (registered in ``refsnn.bench.BENCHES``).

* ``rsnn_packed_speedup_vs_dense``: one environment step (K = 33 substeps) of the N = 256 RSNN for
  64 members, each with its own connectivity: the NumPy baseline is the reference code's
  formulation (connectivity as float32 matrices, a batched ``matmul`` per substep, vectorised state
  update); refsnn is :func:`refsnn.kernels.cuba.cuba_env_step_packed` (bit-packed, serial Numba).
  Ratio = baseline seconds / refsnn seconds (target >= 10).
* ``ec_policy_overhead``: seconds spent in the RSNN policy divided by seconds spent in
  ``env.step``/``reset`` during one Hopper-v5 generation (128 + 4 members, in-process, one env per
  member, episodes capped at 1000 steps) at the initial ``rho = 0.5``. Lower is better (target
  <= 0.25); it is the fraction of extra time the spiking policy costs on top of the simulator.
"""
from __future__ import annotations

import math

import numpy as np

from refsnn.bench.timing import time_side_by_side
from refsnn.ec.policy import make_family
from refsnn.ec.rollout import Task, check_env, evaluate_chunk
from refsnn.kernels import cuba


def _dense_numpy_step(c, u, Cin, Chf, Coutf, sign, v, isyn, rate, s, K):
    r_in, r, r_out, a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = c
    i_in = r_in * np.matmul(u[:, None, :], Cin)[:, 0, :]
    for _ in range(K):
        isyn = a_syn * isyn + r * np.matmul(s[:, None, :], Chf)[:, 0, :]
        v = a_m * v + b_m * ((v_reset + isyn) + i_in)
        spk = v > v_th
        v = np.where(spk, v_reset, v)
        s = spk.astype(np.float32) * sign
        rate = a_out * rate + g_out * s
    act = np.clip(r_out * np.matmul(rate[:, None, :], Coutf)[:, 0, :], -1, 1)
    return act, v, isyn, rate, s


def bench_rsnn_packed(B: int = 64, N: int = 256, d_in: int = 11, d_out: int = 3) -> dict:
    cfg = cuba.CubaConfig(n_neurons=N)
    rng = np.random.default_rng(0)
    C_in = (rng.random((B, 2 * d_in, N)) < 0.5).astype(np.float32)
    C_h = rng.random((B, N, N)) < 0.5
    C_out = (rng.random((B, N, d_out)) < 0.5).astype(np.float32)
    Chf = C_h.astype(np.float32)
    Chp = cuba.pack_hidden(C_h, cfg.n_exc)
    v0 = rng.random((B, N))
    x = rng.standard_normal((B, d_in)).astype(np.float32)
    u = np.concatenate([x, -x], axis=1)
    c = cfg.constants(d_in, np.float32)
    sign = np.ones(N, np.float32)
    sign[cfg.n_exc:] = -1
    # run both from a state that is already spiking (the steady regime of a rollout)
    st = cuba.initial_state_packed(cfg, v0, np.float32)
    for _ in range(3):
        cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, st)
    s_dense = cuba.unpack_spikes(st[3], N, cfg.n_exc, np.float32)
    frozen = tuple(a.copy() for a in st)

    def baseline():
        return _dense_numpy_step(c, u, C_in, Chf, C_out, sign, frozen[0], frozen[1], frozen[2], s_dense,
                                 cfg.n_substeps)

    def candidate():
        state = tuple(a.copy() for a in frozen)
        return cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, state)

    tb, tc = time_side_by_side(baseline, candidate, repeats=5)
    return {"rsnn_packed_speedup_vs_dense": tb / tc, "rsnn_packed_us_per_member_step": tc / B * 1e6}


def bench_policy_overhead(population: int = 128, eval_members: int = 4, max_steps: int = 1000) -> dict:

    env, obs_dim, act_dim = check_env("Hopper-v5", max_steps)
    env.close()
    fam = make_family("ec", {"n_neurons": 256}, obs_dim, act_dim)
    params = fam.init_params(0)
    task = Task("ec", {"n_neurons": 256}, 0.3, "Hopper-v5", max_steps, params, np.zeros(obs_dim),
                np.ones(obs_dim), 0, 0, tuple(range(population + eval_members)), population)
    evaluate_chunk(Task(*[getattr(task, f) if f != "indices" else (0, 1) for f in task.__dataclass_fields__]))
    r = evaluate_chunk(task)
    ratio = r["policy_s"] / r["env_s"] if r["env_s"] > 0 else math.inf
    return {"ec_policy_overhead": ratio, "ec_policy_overhead_env_steps": int(r["lengths"].sum())}
