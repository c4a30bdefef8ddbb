"""Current-based LIF recurrent SNN of Evolving Connectivity (SPEC §2.3, §5.3; seed 001 eqs. 3–6).

One *environment step* of the RSNN, batched over ``B`` population members that each have their own
connectivity, with the reference code's discretisation (``networks/conn_snn.py`` of EC):

1. input current, held for all ``K`` substeps (``u = [x, -x]`` for EC, ``u = x`` for ES-RSNN)::

       i_in = R_in * (u @ C_in)                                   # (B, N)

2. ``K = round(sim_time/dt) = 33`` substeps, in this order (seed eqs. 3–6)::

       i_syn = alpha_syn * i_syn + R * (s @ C_h)                 # eq. 3 (count of signed spikes)
       v     = alpha_m * v + beta_m * ((v_reset + i_syn) + i_in) # eq. 4, beta_m = 1 - alpha_m
       spike = v > v_th                                          # eq. 5
       v[spike] = v_reset                                        # eq. 6
       s     = +spike (excitatory, j < n_exc) / -spike (inhibitory)   # Dale's law
       rate  = alpha_out * rate + g_out * s                      # g_out = (1 - alpha_out)/dt

3. readout ``action = clip(R_out * (rate @ C_out), -1, 1)``.

Mapping onto the seed: eq. 3's ``d_c`` is ``alpha_syn``, eq. 4's ``d_v`` is ``alpha_m`` and its ``R c``
is ``beta_m (i_syn + i_in)`` (the reference code's ``lerp``); ``I_ext`` enters the membrane rather
than the synaptic current, as in the reference code. Constants and gains: :class:`CubaConfig`.

Floating point: the constants ``beta_m = 1 - alpha_m`` and ``g_out = (1 - alpha_out)/dt`` are
computed in float64 and rounded once to the compute dtype; every product/sum is evaluated in the
compute dtype in exactly the order written above (the reference code's ``lerp`` form
``x + alpha (y - x)`` is the same function but rounds differently: cross-checks against it need a
float tolerance, not bit equality). ``u @ C_in`` and ``rate @ C_out`` are accumulated in ascending
row order (``r = 0, 1, ...``) starting from 0, in both the Numba kernels and the NumPy oracles, so the
two are **bit-identical**; ``s @ C_h`` is an integer count (exact in any order).

Two implementations of the same step:

* :func:`cuba_env_step_ref` — the plain-NumPy oracle, dense: boolean connectivity cast to the
  compute dtype and multiplied (what the reference code does on a GPU), spikes as signed floats.
* :func:`cuba_env_step_packed` — Numba, bit-packed (SPEC §5.3). ``C_h`` is stored *transposed* and
  split at the E/I boundary: for member ``m`` and postsynaptic neuron ``j``, ``Chp[m, :WE, j]``
  holds the bits of presynaptic excitatory neurons ``0..n_exc-1`` and ``Chp[m, WE:, j]`` those of
  the inhibitory neurons ``n_exc..N-1`` (bit ``b`` of word ``w`` of a part = neuron
  ``part_start + 64 w + b``; packing and unpacking: :mod:`refsnn.kernels.cuba_pack`). Spikes are kept
  as words of the same layout, so
  ``(s @ C_h)[j] = sum_w popcount(Chp[w, j] & sbits[w]) (w < WE) - sum_w popcount(...) (w >= WE)``,
  integer arithmetic with Dale's sign for free. The words are stored word-major ``(W, N)``
  (postsynaptic axis innermost). Members are independent: running the batch loop in parallel does
  not change any result.

And the real-valued variant used by the ES-RSNN baseline (SPEC §5.5, no Dale's law, spikes 0/1):
:func:`float_env_step` (Numba) and :func:`float_env_step_ref` (NumPy). Its recurrent sum
``s @ W_h`` is accumulated over presynaptic neurons in ascending order in both.

State per member: ``v, i_syn, rate`` of shape ``(B, N)`` in the compute dtype, and the spikes of the
last substep — ``s`` float ``(B, N)`` in the dense form, ``sbits`` uint64 ``(B, WE + WI)`` in the
packed form (:func:`pack_spikes` / :func:`unpack_spikes` convert). Initial state (SPEC §2.3):
``v ~ U[v_reset, v_th)`` from the member's generator, everything else zero (:func:`initial_state`).

Argument checks (SPEC §1): every array a kernel indexes is checked before the kernel runs — shape,
dtype, finiteness of the state and input (of the connectivity only with ``check_finite``); arrays
written in place (state, ``out``) must be C-contiguous, writeable and not overlap one another or an
input (:mod:`refsnn.kernels._args`). :class:`CubaConfig` validates its fields on construction.

Below, in this order: the configuration and its constants, the initial state, the NumPy oracles
(``*_ref``), then the Numba kernels and the public functions that call them. Performance notes
(vectorisation, silent words, serial vs parallel members, timings): ``docs/performance.md``,
"Evolving Connectivity RSNN".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from refsnn._checks import FLOAT_DTYPES, check_array, check_float, check_int
from refsnn.kernels._args import check_bool, check_disjoint, check_out
from refsnn.kernels.cuba_pack import (
    _check_dtype,
    _check_spike_padding,
    n_words,
    pack_hidden,
    pack_spikes,
    unpack_hidden,
    unpack_spikes,
)

__all__ = [
    "CubaConfig", "n_words", "pack_hidden", "unpack_hidden", "pack_spikes", "unpack_spikes",
    "initial_state", "initial_state_packed", "input_current_ref", "readout_ref",
    "cuba_env_step_ref", "cuba_env_step_packed", "PackedRSNN", "float_env_step_ref", "float_env_step",
    "popcount64_ref", "packed_matvec", "packed_matvec_ref",
]


# ---------------------------------------------------------------------------------------------
# constants
# ---------------------------------------------------------------------------------------------
#: Upper bound of ``K = round(sim_time/dt)`` (the default is 33): a typo such as ``dt=1e-9`` would
#: otherwise make one environment step run for hours.
MAX_SUBSTEPS = 100_000


class CubaConstants(NamedTuple):
    """The step's constants (module docstring), each rounded once from float64 to the compute dtype;
    made by :meth:`CubaConfig.constants` and passed as one record to the Numba kernels."""

    r_in: np.floating       # R_in: i_in = R_in * (u @ C_in)
    r: np.floating          # R: i_syn += R * (s @ C_h)
    r_out: np.floating      # R_out: action = clip(R_out * (rate @ C_out), -1, 1)
    alpha_syn: np.floating  # exp(-dt/tau_syn)
    alpha_m: np.floating    # exp(-dt/tau_m)
    beta_m: np.floating     # 1 - alpha_m
    alpha_out: np.floating  # exp(-dt/tau_out)
    g_out: np.floating      # (1 - alpha_out)/dt
    v_th: np.floating
    v_reset: np.floating


@dataclass(frozen=True)
class CubaConfig:
    """Constants of the CuBa-LIF RSNN (SPEC §2.3 defaults = EC reference code ``ConnSNN``).

    ``R_in = k_in v_th tau_m sqrt(2/(p d_in))``, ``R = k_h v_th (tau_m/tau_syn) sqrt(2/(p N))``,
    ``R_out = k_out sqrt(1/(p N))`` with ``p = sparsity``; ``alpha_x = exp(-dt/tau_x)``;
    ``K = round(sim_time/dt)`` substeps per environment step. ``dale=False`` and ``sparsity=1``
    give the ES-RSNN baseline's network (reference ``DenseSNN``). Times in ms.
    """

    n_neurons: int = 256
    exc_ratio: float = 0.5
    dt: float = 0.5
    sim_time: float = 16.6
    tau_syn: float = 5.0
    tau_m: float = 10.0
    tau_out: float = 10.0
    v_th: float = 1.0
    v_reset: float = 0.0
    k_in: float = 0.1
    k_h: float = 1.0
    k_out: float = 5.0
    sparsity: float = 0.5
    dale: bool = True

    def __post_init__(self):
        check_int("n_neurons", self.n_neurons, lo=1)
        check_float("exc_ratio", self.exc_ratio, lo=0.0, hi=1.0)
        for name in ("dt", "sim_time", "tau_syn", "tau_m", "tau_out"):
            check_float(name, getattr(self, name), lo=0.0, lo_open=True)
        check_float("sparsity", self.sparsity, lo=0.0, hi=1.0, lo_open=True)
        check_float("v_th", self.v_th)
        check_float("v_reset", self.v_reset, hi=self.v_th, hi_open=True)
        for name in ("k_in", "k_h", "k_out"):
            check_float(name, getattr(self, name), lo=0.0)
        check_bool("dale", self.dale)
        if self.n_substeps < 1:
            raise ValueError(f"sim_time: expected sim_time/dt to round to >= 1 substep, got {self.sim_time}/{self.dt}")
        if self.n_substeps > MAX_SUBSTEPS:
            raise ValueError(f"sim_time: expected sim_time/dt to round to <= {MAX_SUBSTEPS} substeps, "
                             f"got {self.sim_time}/{self.dt} = {self.n_substeps}")

    @property
    def n_exc(self) -> int:
        """Excitatory neurons ``[0, n_exc)``; the rest are inhibitory (all excitatory if not ``dale``)."""
        return int(round(self.n_neurons * self.exc_ratio)) if self.dale else self.n_neurons

    @property
    def n_substeps(self) -> int:
        return int(round(self.sim_time / self.dt))

    def gains(self, d_in: int) -> tuple[float, float, float]:
        """``(R_in, R, R_out)`` in float64 for an input of ``d_in`` features (before ``[x, -x]``)."""
        d_in = check_int("d_in", d_in, lo=1)
        p, n = self.sparsity, self.n_neurons
        r_in = self.k_in * self.v_th * self.tau_m * math.sqrt(2.0 / (p * d_in))
        r = self.k_h * self.v_th * self.tau_m / self.tau_syn * math.sqrt(2.0 / (p * n))
        r_out = self.k_out * math.sqrt(1.0 / (p * n))
        return r_in, r, r_out

    def constants(self, d_in: int, dtype) -> CubaConstants:
        """The 10 constants of the step, rounded once to ``dtype`` (:class:`CubaConstants`, a tuple
        ``(R_in, R, R_out, alpha_syn, alpha_m, beta_m, alpha_out, g_out, v_th, v_reset)``)."""
        r_in, r, r_out = self.gains(d_in)
        a_syn = math.exp(-self.dt / self.tau_syn)
        a_m = math.exp(-self.dt / self.tau_m)
        a_out = math.exp(-self.dt / self.tau_out)
        vals = [r_in, r, r_out, a_syn, a_m, 1.0 - a_m, a_out, (1.0 - a_out) / self.dt, self.v_th, self.v_reset]
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
        with np.errstate(over="ignore"):
            c = np.array(vals, dtype=np.float64).astype(dtype)
        if not np.isfinite(c).all():
            names = ["k_in (R_in)", "k_h (R)", "k_out (R_out)", "tau_syn", "tau_m", "tau_m", "tau_out",
                     "dt (g_out)", "v_th", "v_reset"]
            bad = ", ".join(n for n, ok in zip(names, np.isfinite(c)) if not ok)
            raise ValueError(f"{bad}: the constant overflows {dtype} (gains {vals[:3]})")
        return CubaConstants(*c)


# ---------------------------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------------------------
def _check_cfg(cfg) -> CubaConfig:
    if not isinstance(cfg, CubaConfig):
        raise TypeError(f"cfg: expected a refsnn.kernels.cuba.CubaConfig, got {type(cfg).__name__}")
    return cfg


def initial_state(cfg: CubaConfig, v0_uniform: np.ndarray, dtype=np.float32):
    """Dense state ``(v, i_syn, rate, s)`` from uniforms ``v0_uniform`` in ``[0, 1)`` of shape ``(B, N)``:
    ``v = v_reset + (v_th - v_reset) u`` (SPEC §2.3: ``v ~ U[0, 1)`` with the defaults)."""
    cfg = _check_cfg(cfg)
    u = check_array("v0_uniform", v0_uniform, ndim=2, shape=(None, cfg.n_neurons))
    dtype = _check_dtype(dtype)
    v = (cfg.v_reset + (cfg.v_th - cfg.v_reset) * u.astype(np.float64)).astype(dtype)
    z = np.zeros_like(v)
    return v, z.copy(), z.copy(), z.copy()


def initial_state_packed(cfg: CubaConfig, v0_uniform: np.ndarray, dtype=np.float32):
    """Packed state ``(v, i_syn, rate, sbits)``; same floats as :func:`initial_state`."""
    v, i_syn, rate, s = initial_state(cfg, v0_uniform, dtype)
    we, wi = n_words(cfg.n_exc, cfg.n_neurons)
    return v, i_syn, rate, np.zeros((v.shape[0], we + wi), dtype=np.uint64)


# ---------------------------------------------------------------------------------------------
# NumPy oracles (dense)
# ---------------------------------------------------------------------------------------------
def input_current_ref(u: np.ndarray, C_in: np.ndarray, r_in) -> np.ndarray:
    """``i_in = R_in * (u @ C_in)``, accumulated over rows ``r = 0, 1, ...`` (u ``(B, d)``, C_in ``(B, d, N)``)."""
    u = check_array("u", u, ndim=2)
    check_array("C_in", C_in, ndim=3, shape=u.shape + (None,), dtypes=(u.dtype, np.dtype(bool)))
    acc = np.zeros((u.shape[0], C_in.shape[2]), dtype=u.dtype)
    for r in range(u.shape[1]):
        acc += u[:, r, None] * C_in[:, r, :]
    return r_in * acc


def readout_ref(rate: np.ndarray, C_out: np.ndarray, r_out) -> np.ndarray:
    """``clip(R_out * (rate @ C_out), -1, 1)``, accumulated over neurons in ascending order."""
    rate = check_array("rate", rate, ndim=2)
    check_array("C_out", C_out, ndim=3, shape=rate.shape + (None,), dtypes=(rate.dtype, np.dtype(bool)))
    acc = np.zeros((rate.shape[0], C_out.shape[2]), dtype=rate.dtype)
    for n in range(rate.shape[1]):
        acc += rate[:, n, None] * C_out[:, n, :]
    return np.clip(r_out * acc, -1, 1)


def _check_state(state, names) -> tuple:
    if not isinstance(state, (tuple, list)) or len(state) != 4:
        raise TypeError(f"state: expected a tuple {names}, got {type(state).__name__}"
                        + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else ""))
    return tuple(state)


def _check_step_inputs(cfg, u, C_in, C_out, v, i_syn, rate, active, check_finite=True, *, in_place=False):
    """Shapes and dtypes of one step's arguments; NaN/inf in the (small) input and state always,
    in the (large, constant over an episode) connectivity/weight arrays only if ``check_finite``.
    ``in_place``: the state arrays are written, so they must also be C-contiguous and writeable."""
    _check_cfg(cfg)
    if not isinstance(check_finite, (bool, np.bool_)):
        raise TypeError(f"check_finite: expected a bool, got {type(check_finite).__name__}")
    u = check_array("u", u, ndim=2)
    dtype = u.dtype
    B, d = u.shape
    N = cfg.n_neurons
    for name, a in (("v", v), ("i_syn", i_syn), ("rate", rate)):
        if in_place:
            check_out(f"state {name}", a, (B, N), dtype, finite=True)
        else:
            check_array(f"state {name}", a, shape=(B, N), dtypes=(dtype,))
    check_array("C_in", C_in, shape=(B, d, N), dtypes=(dtype, np.dtype(bool)), finite=check_finite)
    check_array("C_out", C_out, ndim=3, shape=(B, N, None), dtypes=(dtype, np.dtype(bool)),
                finite=check_finite)
    if active is None:
        active = np.ones(B, dtype=bool)
    check_array("active", active, shape=(B,), dtypes=(np.dtype(bool),))
    return dtype, B, d, active


def _check_d_in(d_in, d, dale):
    if d_in is None:
        return d // 2 if dale else d
    return check_int("d_in", d_in, lo=1)


def cuba_env_step_ref(cfg: CubaConfig, u, C_in, C_h, C_out, state, *, d_in=None, active=None):
    """Dense NumPy oracle of one environment step (module docstring, steps 1–3).

    Parameters
    ----------
    u : (B, d_u) float32/float64 — network input (``[x, -x]`` for EC).
    C_in : (B, d_u, N), C_h : (B, N, N), C_out : (B, N, d_out) — bool (or 0/1 in the dtype).
    state : ``(v, i_syn, rate, s)``, each (B, N) in the dtype; ``s`` signed spikes.
    d_in : observation size used in ``R_in`` (default ``d_u // 2`` if ``cfg.dale`` else ``d_u``).
    active : (B,) bool — members that step; inactive members keep their state, action 0.

    Returns ``(new_state, action (B, d_out), n_spikes (B,) int64)``.
    """
    v, i_syn, rate, s = _check_state(state, "(v, i_syn, rate, s)")
    dtype, B, d, active = _check_step_inputs(cfg, u, C_in, C_out, v, i_syn, rate, active)
    check_array("C_h", C_h, shape=(B, cfg.n_neurons, cfg.n_neurons), dtypes=(dtype, np.dtype(bool)))
    check_array("state s", s, shape=(B, cfg.n_neurons), dtypes=(dtype,))
    d_in = _check_d_in(d_in, d, cfg.dale)
    r_in, r, r_out, a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = cfg.constants(d_in, dtype)
    Cin, Ch, Cout = C_in.astype(dtype), C_h.astype(dtype), C_out.astype(dtype)
    sign = np.ones(cfg.n_neurons, dtype=dtype)
    sign[cfg.n_exc:] = -1
    v, i_syn, rate, s = v.copy(), i_syn.copy(), rate.copy(), s.copy()
    nsp = np.zeros(B, dtype=np.int64)
    a = active
    i_in = input_current_ref(u[a], Cin[a], r_in)
    va, ia, ra, sa = v[a], i_syn[a], rate[a], s[a]
    Cha = Ch[a]
    for _ in range(cfg.n_substeps):
        cnt = np.matmul(sa[:, None, :], Cha)[:, 0, :]         # exact integers
        ia = a_syn * ia + r * cnt
        va = a_m * va + b_m * ((v_reset + ia) + i_in)
        spk = va > v_th
        va = np.where(spk, v_reset, va).astype(dtype)
        sa = spk.astype(dtype) * sign
        ra = a_out * ra + g_out * sa
        nsp[a] += spk.sum(axis=1)
    v[a], i_syn[a], rate[a], s[a] = va, ia, ra, sa
    act = np.zeros((B, C_out.shape[2]), dtype=dtype)
    act[a] = readout_ref(ra, Cout[a], r_out)
    return (v, i_syn, rate, s), act, nsp


def float_env_step_ref(cfg: CubaConfig, u, W_in, W_h, W_out, state, *, active=None):
    """Dense NumPy oracle of the ES-RSNN step (real weights, spikes 0/1, no Dale's law).

    ``i_in = R_in (u @ W_in)``; substeps as in the module docstring with ``s @ W_h`` summed over
    presynaptic neurons in ascending order; ``action = clip(R_out (rate @ W_out), -1, 1)``.
    ``d_in = d_u``. Returns ``(new_state, action, n_spikes)``.
    """
    v, i_syn, rate, s = _check_state(state, "(v, i_syn, rate, s)")
    dtype, B, d, active = _check_step_inputs(cfg, u, W_in, W_out, v, i_syn, rate, active)
    check_array("W_h", W_h, shape=(B, cfg.n_neurons, cfg.n_neurons), dtypes=(dtype,))
    check_array("state s", s, shape=(B, cfg.n_neurons), dtypes=(dtype,))
    r_in, r, r_out, a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = cfg.constants(d, dtype)
    v, i_syn, rate, s = v.copy(), i_syn.copy(), rate.copy(), s.copy()
    nsp = np.zeros(B, dtype=np.int64)
    a = active
    i_in = input_current_ref(u[a], W_in[a], r_in)
    va, ia, ra, sa = v[a], i_syn[a], rate[a], s[a]
    Wh = W_h[a]
    for _ in range(cfg.n_substeps):
        acc = np.zeros_like(va)
        for i in range(cfg.n_neurons):
            acc += sa[:, i, None] * Wh[:, i, :]
        ia = a_syn * ia + r * acc
        va = a_m * va + b_m * ((v_reset + ia) + i_in)
        spk = va > v_th
        va = np.where(spk, v_reset, va).astype(dtype)
        sa = spk.astype(dtype)
        ra = a_out * ra + g_out * sa
        nsp[a] += spk.sum(axis=1)
    v[a], i_syn[a], rate[a], s[a] = va, ia, ra, sa
    act = np.zeros((B, W_out.shape[2]), dtype=dtype)
    act[a] = readout_ref(ra, W_out[a], r_out)
    return (v, i_syn, rate, s), act, nsp


def popcount64_ref(x: np.ndarray) -> np.ndarray:
    """Oracle popcount of uint64 words (SWAR bit tricks in NumPy), returned as int64."""
    x = check_array("x", x, dtypes=(np.dtype(np.uint64),))
    m1, m2, m4 = np.uint64(0x5555555555555555), np.uint64(0x3333333333333333), np.uint64(0x0F0F0F0F0F0F0F0F)
    h01 = np.uint64(0x0101010101010101)
    x = x - ((x >> np.uint64(1)) & m1)
    x = (x & m2) + ((x >> np.uint64(2)) & m2)
    x = (x + (x >> np.uint64(4))) & m4
    return ((x * h01) >> np.uint64(56)).astype(np.int64)


def packed_matvec_ref(s: np.ndarray, C_h: np.ndarray) -> np.ndarray:
    """Oracle of :func:`packed_matvec`: signed spikes ``s`` (B, N) times bool ``C_h`` (B, N, N), int64."""
    s = check_array("s", s, ndim=2)
    B, N = s.shape
    check_array("C_h", C_h, shape=(B, N, N), dtypes=(np.dtype(bool),))
    return np.einsum("bi,bij->bj", np.sign(s).astype(np.int64), C_h.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Fast path: Numba kernels (docs/performance.md, "Evolving Connectivity RSNN")
# ---------------------------------------------------------------------------------------------
# popcount and the packed matvec (the packing itself: refsnn.kernels.cuba_pack)
# ---------------------------------------------------------------------------------------------
@intrinsic
def _popcount64(typingctx, x):
    """LLVM ``ctpop`` on a uint64 (one POPCNT instruction on x86-64 with SSE4.2)."""
    if x != types.uint64:
        return None
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.zext(builder.ctpop(args[0]), context.get_value_type(types.int64))

    return sig, codegen


@numba.njit(cache=True)
def _counts_kernel(Chp, sbits, we, out):
    for m in range(Chp.shape[0]):
        for j in range(Chp.shape[2]):
            out[m, j] = 0
        for w in range(Chp.shape[1]):
            sw = sbits[m, w]
            if sw == 0:
                continue
            if w < we:
                for j in range(Chp.shape[2]):
                    out[m, j] += _popcount64(Chp[m, w, j] & sw)
            else:
                for j in range(Chp.shape[2]):
                    out[m, j] -= _popcount64(Chp[m, w, j] & sw)


def packed_matvec(Chp: np.ndarray, sbits: np.ndarray, n_exc: int) -> np.ndarray:
    """``s @ C_h`` from packed operands (SPEC §5.3): int64 ``(B, N)`` counts
    ``sum_{w<WE} popcount(Chp[:, w, j] & sbits[:, w]) - sum_{w>=WE} popcount(...)``."""
    Chp = check_array("Chp", Chp, ndim=3, dtypes=(np.dtype(np.uint64),))
    B, W, N = Chp.shape
    n_exc = check_int("n_exc", n_exc, lo=0, hi=N)
    we, wi = n_words(n_exc, N)
    if W != we + wi:
        raise ValueError(f"Chp: expected {we + wi} words for N={N}, n_exc={n_exc}, got shape {Chp.shape}")
    check_array("sbits", sbits, shape=(B, W), dtypes=(np.dtype(np.uint64),))
    _check_spike_padding("sbits", sbits, n_exc, N)
    out = np.empty((B, N), dtype=np.int64)
    _counts_kernel(np.ascontiguousarray(Chp), np.ascontiguousarray(sbits), we, out)
    return out


# ---------------------------------------------------------------------------------------------
# the environment step
# ---------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _readout_nb(rate, Wout, r_out, zero, act):
    """``act = clip(r_out * (rate @ Wout), -1, 1)``, accumulated over neurons in ascending order
    (the order :func:`readout_ref` uses, so packed, float and oracle agree bit for bit)."""
    d_out = act.shape[0]
    for o in range(d_out):
        act[o] = zero
    for n in range(rate.shape[0]):
        rn = rate[n]
        for o in range(d_out):
            act[o] += rn * Wout[n, o]
    for o in range(d_out):
        x = r_out * act[o]
        act[o] = min(max(x, -1.0), 1.0)


@numba.njit(cache=True)
def _packed_member(u, Cin, Chp, Cout, v, isyn, rate, sbits, c, n_exc, we, K, act, scratch, icnt, spk):
    """One environment step of one member (packed). ``scratch`` (3, N) dtype, ``icnt`` (N,) int64,
    ``spk`` (N,) uint8 are work arrays. ``Chp`` is (W, N): word-major, postsynaptic axis innermost,
    so the count loop runs over contiguous postsynaptic neurons and vectorises. Returns #spikes."""
    N = v.shape[0]
    W = Chp.shape[0]
    i_in = scratch[0]
    cnt = scratch[1]
    sg = scratch[2]
    r_in, r, r_out = c.r_in, c.r, c.r_out
    a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = (c.alpha_syn, c.alpha_m, c.beta_m, c.alpha_out, c.g_out,
                                                    c.v_th, c.v_reset)
    zero = g_out - g_out
    for j in range(N):  # Dale's sign times g_out: the rate increment of a spike of neuron j
        sg[j] = g_out if j < n_exc else -g_out
    # 1. input current: rows in ascending order, from 0
    for j in range(N):
        i_in[j] = zero
    for rr in range(u.shape[0]):
        ur = u[rr]
        for j in range(N):
            i_in[j] += ur * Cin[rr, j]
    for j in range(N):
        i_in[j] = r_in * i_in[j]
    nsp = 0
    n_inh = N - n_exc
    for _k in range(K):
        # integer counts (s @ C_h) from the previous substep's spike words; silent words skipped
        for j in range(N):
            icnt[j] = 0
        for w in range(W):
            sw = sbits[w]
            if sw == 0:
                continue
            if w < we:
                for j in range(N):
                    icnt[j] += _popcount64(Chp[w, j] & sw)
            else:
                for j in range(N):
                    icnt[j] -= _popcount64(Chp[w, j] & sw)
        for j in range(N):
            cnt[j] = icnt[j]  # exact conversion to the compute dtype
        # 2. membrane update, branch-free so it vectorises
        for j in range(N):
            isyn[j] = a_syn * isyn[j] + r * cnt[j]
            vj = a_m * v[j] + b_m * ((v_reset + isyn[j]) + i_in[j])
            f = vj > v_th
            spk[j] = f
            v[j] = v_reset if f else vj
            rate[j] = a_out * rate[j] + (sg[j] if f else zero)
        # spikes -> words (E part then I part)
        for w in range(W):
            if w < we:
                base = 64 * w
                top = min(64, n_exc - base)
            else:
                base = n_exc + 64 * (w - we)
                top = min(64, n_inh - 64 * (w - we))
            word = np.uint64(0)
            if top == 64:  # a full word: a fixed trip count, which LLVM vectorises fully (2x faster)
                full = spk[base:base + 64]
                for b in range(64):
                    word |= np.uint64(full[b]) << np.uint64(b)
            else:
                for b in range(top):
                    word |= np.uint64(spk[base + b]) << np.uint64(b)
            sbits[w] = word
            nsp += _popcount64(word)
    # 3. readout: neurons in ascending order, from 0
    _readout_nb(rate, Cout, r_out, zero, act)
    return nsp


@numba.njit(cache=True)
def _packed_batch_serial(u, Cin, Chp, Cout, v, isyn, rate, sbits, active, c, n_exc, we, K, act, nsp):
    N = v.shape[1]
    scratch = np.empty((3, N), dtype=v.dtype)
    icnt = np.empty(N, dtype=np.int64)
    spk = np.empty(N, dtype=np.uint8)
    for m in range(u.shape[0]):
        if active[m]:
            nsp[m] += _packed_member(u[m], Cin[m], Chp[m], Cout[m], v[m], isyn[m], rate[m], sbits[m],
                                     c, n_exc, we, K, act[m], scratch, icnt, spk)


@numba.njit(cache=True, parallel=True)
def _packed_batch_parallel(u, Cin, Chp, Cout, v, isyn, rate, sbits, active, c, n_exc, we, K, act, nsp):
    N = v.shape[1]
    for m in prange(u.shape[0]):
        if active[m]:
            scratch = np.empty((3, N), dtype=v.dtype)
            icnt = np.empty(N, dtype=np.int64)
            spk = np.empty(N, dtype=np.uint8)
            nsp[m] += _packed_member(u[m], Cin[m], Chp[m], Cout[m], v[m], isyn[m], rate[m], sbits[m],
                                     c, n_exc, we, K, act[m], scratch, icnt, spk)


def cuba_env_step_packed(cfg: CubaConfig, u, C_in, Chp, C_out, state, *, d_in=None, active=None,
                         parallel: bool = False, out=None, check_finite: bool = True):
    """Bit-packed Numba environment step; **updates ``state`` in place**.

    Parameters as :func:`cuba_env_step_ref`, except ``Chp`` (B, WE+WI, N) uint64 from
    :func:`pack_hidden`, ``state = (v, i_syn, rate, sbits)`` with ``sbits`` (B, WE+WI) uint64, and
    ``C_in``/``C_out`` in the compute dtype (0/1; bool is converted). ``parallel=True`` runs members on
    Numba threads (results identical). ``out``: optional (B, d_out) action buffer of exactly that
    shape and the compute dtype, C-contiguous and writeable (``ValueError``/``TypeError`` naming
    ``out`` otherwise: a wider buffer used to read past ``C_out``, a narrower or int one truncated).
    The state arrays are updated in place, so they too must be C-contiguous and writeable, and no
    state array or ``out`` may share memory with another one or with an input.
    ``check_finite=False`` skips the NaN/inf pass over ``C_in`` and ``C_out`` (shapes and dtypes are
    still checked): the rollout's arrays are 0/1 samples of probabilities checked once per batch
    (:meth:`refsnn.ec.policy.ECFamily.build`), so the pass need not be repeated at every step.
    Returns ``(action (B, d_out), n_spikes (B,) int64)``; inactive members get action 0, 0 spikes.
    """
    v, i_syn, rate, sbits = _check_state(state, "(v, i_syn, rate, sbits)")
    dtype, B, d, active = _check_step_inputs(cfg, u, C_in, C_out, v, i_syn, rate, active, check_finite,
                                             in_place=True)
    k = _packed_kernel_args(cfg, dtype, B, d, Chp, state, d_in, parallel)
    act = _action_out(out, (B, C_out.shape[2]), dtype)
    state_arrays = {"state v": v, "state i_syn": i_syn, "state rate": rate, "state sbits": sbits}
    if out is not None:
        state_arrays["out"] = act
    check_disjoint(state_arrays, {"u": u, "C_in": C_in, "Chp": Chp, "C_out": C_out, "active": active})
    C_in = C_in.astype(dtype) if C_in.dtype == bool else np.ascontiguousarray(C_in)
    C_out = C_out.astype(dtype) if C_out.dtype == bool else np.ascontiguousarray(C_out)
    act[...] = 0
    nsp = np.zeros(B, dtype=np.int64)
    k.fn(np.ascontiguousarray(u), C_in, k.Chp, C_out, v, i_syn, rate, sbits, np.ascontiguousarray(active), k.c,
         cfg.n_exc, k.we, cfg.n_substeps, act, nsp)
    return act, nsp


class _PackedArgs(NamedTuple):
    fn: object
    Chp: np.ndarray
    c: CubaConstants
    we: int


def _packed_kernel_args(cfg, dtype, B, d, Chp, state, d_in, parallel) -> _PackedArgs:
    """The checks of ``Chp``, the spike words and the options, and the kernel's derived arguments."""
    sbits = state[3]
    we, wi = n_words(cfg.n_exc, cfg.n_neurons)
    check_array("Chp", Chp, shape=(B, we + wi, cfg.n_neurons), dtypes=(np.dtype(np.uint64),))
    check_out("state sbits", sbits, (B, we + wi), np.uint64)
    _check_spike_padding("state sbits", sbits, cfg.n_exc, cfg.n_neurons)
    fn = _packed_batch_parallel if check_bool("parallel", parallel) else _packed_batch_serial
    c = cfg.constants(_check_d_in(d_in, d, cfg.dale), dtype)
    return _PackedArgs(fn, np.ascontiguousarray(Chp), c, we)


class PackedRSNN:
    """A batch of bit-packed EC networks stepped once per environment step, for a whole episode:
    :func:`cuba_env_step_packed` with everything that stays fixed over the episode — the
    connectivity, the state buffers (updated in place, as there), the constants — checked and
    prepared once, here; each call then checks only its input ``u`` and mask ``active``. Same kernel,
    so results are bit-identical to :func:`cuba_env_step_packed` (tested); the rollout uses it
    because those per-step checks cost more than the kernel itself once most members have ended
    their episodes.

    ``u`` is copied into a buffer of the object's own (so it cannot alias the state it updates), and
    ``active`` likewise. The connectivity arrays are kept by reference: do not change them between
    calls. ``state`` is the same 4-tuple as for :func:`cuba_env_step_packed` and stays readable as
    ``self.state``.
    """

    def __init__(self, cfg: CubaConfig, C_in, Chp, C_out, state, *, d_in=None, parallel: bool = False,
                 check_finite: bool = True):
        v, i_syn, rate, sbits = _check_state(state, "(v, i_syn, rate, sbits)")
        C_in = check_array("C_in", C_in, ndim=3, dtypes=None, finite=False)   # the full checks follow
        v = check_array("state v", v, ndim=2, dtypes=None, finite=False)
        B, d = C_in.shape[0], C_in.shape[1]
        self._u = np.zeros((B, d), dtype=v.dtype)
        self._active = np.ones(B, dtype=bool)
        dtype, _, _, _ = _check_step_inputs(cfg, self._u, C_in, C_out, v, i_syn, rate, self._active,
                                            check_finite, in_place=True)
        self._k = _packed_kernel_args(cfg, dtype, B, d, Chp, state, d_in, parallel)
        check_disjoint({"state v": v, "state i_syn": i_syn, "state rate": rate, "state sbits": sbits},
                       {"C_in": C_in, "Chp": Chp, "C_out": C_out})
        self.cfg, self.dtype, self.state = cfg, dtype, (v, i_syn, rate, sbits)
        self._C_in = C_in.astype(dtype) if C_in.dtype == bool else np.ascontiguousarray(C_in)
        self._C_out = C_out.astype(dtype) if C_out.dtype == bool else np.ascontiguousarray(C_out)

    def __call__(self, u, active=None) -> tuple[np.ndarray, np.ndarray]:
        """One environment step: ``u`` (B, d_u) in the state's dtype, ``active`` (B,) bool or
        ``None`` (all). Returns ``(action (B, d_out), n_spikes (B,) int64)`` like
        :func:`cuba_env_step_packed`."""
        check_array("u", u, shape=self._u.shape, dtypes=(self.dtype,))
        np.copyto(self._u, u)
        if active is None:
            self._active[:] = True
        else:
            check_array("active", active, shape=self._active.shape, dtypes=(np.dtype(bool),))
            np.copyto(self._active, active)
        B = self._u.shape[0]
        act = np.zeros((B, self._C_out.shape[2]), dtype=self.dtype)
        nsp = np.zeros(B, dtype=np.int64)
        v, i_syn, rate, sbits = self.state
        k = self._k
        k.fn(self._u, self._C_in, k.Chp, self._C_out, v, i_syn, rate, sbits, self._active, k.c, self.cfg.n_exc,
             k.we, self.cfg.n_substeps, act, nsp)
        return act, nsp


def _action_out(out, shape, dtype) -> np.ndarray:
    """The action buffer: ``out`` checked (exact shape and dtype, C-contiguous, writeable), or new."""
    if out is None:
        return np.zeros(shape, dtype=dtype)
    return check_out("out", out, shape, dtype)


@numba.njit(cache=True)
def _float_member(u, Win, Wh, Wout, v, isyn, rate, s, c, K, act, scratch):
    N = v.shape[0]
    i_in = scratch[0]
    acc = scratch[1]
    r_in, r, r_out = c.r_in, c.r, c.r_out
    a_syn, a_m, b_m, a_out, g_out, v_th, v_reset = (c.alpha_syn, c.alpha_m, c.beta_m, c.alpha_out, c.g_out,
                                                    c.v_th, c.v_reset)
    zero = g_out - g_out
    one = zero + 1
    for j in range(N):
        i_in[j] = zero
    for rr in range(u.shape[0]):
        ur = u[rr]
        for j in range(N):
            i_in[j] += ur * Win[rr, j]
    for j in range(N):
        i_in[j] = r_in * i_in[j]
    nsp = 0
    for _k in range(K):
        for j in range(N):
            acc[j] = zero
        for i in range(N):
            si = s[i]
            if si != zero:  # s is 0/1: s*W = W exactly, and adding 0*W leaves the value unchanged
                for j in range(N):
                    acc[j] += Wh[i, j]
        for j in range(N):
            isyn[j] = a_syn * isyn[j] + r * acc[j]
            vj = a_m * v[j] + b_m * ((v_reset + isyn[j]) + i_in[j])
            if vj > v_th:
                vj = v_reset
                nsp += 1
                s[j] = one
                rate[j] = a_out * rate[j] + g_out
            else:
                s[j] = zero
                rate[j] = a_out * rate[j] + g_out * zero
            v[j] = vj
    _readout_nb(rate, Wout, r_out, zero, act)
    return nsp


@numba.njit(cache=True)
def _float_batch_serial(u, Win, Wh, Wout, v, isyn, rate, s, active, c, K, act, nsp):
    N = v.shape[1]
    scratch = np.empty((2, N), dtype=v.dtype)
    for m in range(u.shape[0]):
        if active[m]:
            nsp[m] += _float_member(u[m], Win[m], Wh[m], Wout[m], v[m], isyn[m], rate[m], s[m], c, K,
                                    act[m], scratch)


@numba.njit(cache=True, parallel=True)
def _float_batch_parallel(u, Win, Wh, Wout, v, isyn, rate, s, active, c, K, act, nsp):
    N = v.shape[1]
    for m in prange(u.shape[0]):
        if active[m]:
            scratch = np.empty((2, N), dtype=v.dtype)
            nsp[m] += _float_member(u[m], Win[m], Wh[m], Wout[m], v[m], isyn[m], rate[m], s[m], c, K,
                                    act[m], scratch)


def float_env_step(cfg: CubaConfig, u, W_in, W_h, W_out, state, *, active=None, parallel=False, out=None,
                   check_finite=True):
    """Numba ES-RSNN step (see :func:`float_env_step_ref`); **updates ``state`` in place**.
    ``state = (v, i_syn, rate, s)`` with ``s`` 0/1 floats. Returns ``(action, n_spikes)``.
    ``check_finite=False`` skips the NaN/inf pass over ``W_in``, ``W_h``, ``W_out`` (the rollout
    checks them once per batch, :meth:`refsnn.ec.policy.ESFamily.build`). ``out`` and the state
    arrays are checked as in :func:`cuba_env_step_packed`; the weights must be in the dtype of ``u``."""
    v, i_syn, rate, s = _check_state(state, "(v, i_syn, rate, s)")
    dtype, B, d, active = _check_step_inputs(cfg, u, W_in, W_out, v, i_syn, rate, active, check_finite,
                                             in_place=True)
    for name, a in (("W_in", W_in), ("W_out", W_out)):
        if a.dtype != dtype:
            raise TypeError(f"{name}: expected dtype {dtype} (real weights, the dtype of u), got {a.dtype}")
    check_array("W_h", W_h, shape=(B, cfg.n_neurons, cfg.n_neurons), dtypes=(dtype,), finite=check_finite)
    check_out("state s", s, (B, cfg.n_neurons), dtype, finite=True)
    parallel = check_bool("parallel", parallel)
    c = cfg.constants(d, dtype)
    act = _action_out(out, (B, W_out.shape[2]), dtype)
    state_arrays = {"state v": v, "state i_syn": i_syn, "state rate": rate, "state s": s}
    if out is not None:
        state_arrays["out"] = act
    check_disjoint(state_arrays, {"u": u, "W_in": W_in, "W_h": W_h, "W_out": W_out, "active": active})
    act[...] = 0
    nsp = np.zeros(B, dtype=np.int64)
    fn = _float_batch_parallel if parallel else _float_batch_serial
    fn(np.ascontiguousarray(u), np.ascontiguousarray(W_in), np.ascontiguousarray(W_h),
       np.ascontiguousarray(W_out), v, i_syn, rate, s, np.ascontiguousarray(active), c, cfg.n_substeps,
       act, nsp)
    return act, nsp


def _warmup() -> None:
    """Compile every kernel of this module once, float32 and float64 (serial and parallel)."""
    cfg = CubaConfig(n_neurons=8)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for parallel in (False, True):
            B, d = 2, 3
            u = rng.standard_normal((B, 2 * d)).astype(dtype)
            C_in = rng.random((B, 2 * d, 8)) < 0.5
            C_h = rng.random((B, 8, 8)) < 0.5
            C_out = rng.random((B, 8, 2)) < 0.5
            st = initial_state_packed(cfg, rng.random((B, 8)), dtype)
            cuba_env_step_packed(cfg, u, C_in, pack_hidden(C_h, cfg.n_exc), C_out, st, parallel=parallel)
            packed_matvec(pack_hidden(C_h, cfg.n_exc), st[3], cfg.n_exc)
            fcfg = CubaConfig(n_neurons=8, dale=False, sparsity=1.0)
            fs = initial_state(fcfg, rng.random((B, 8)), dtype)
            float_env_step(fcfg, u[:, :d], rng.standard_normal((B, d, 8)).astype(dtype),
                           rng.standard_normal((B, 8, 8)).astype(dtype),
                           rng.standard_normal((B, 8, 2)).astype(dtype), fs, parallel=parallel)
