"""Brain-inspired indirect evaluation (BIE, seed eqs. 3-7; SPEC §6.4) and the SNASNet/NASWOT
``logdet`` scores (plain and sparsity-aware).

One untrained network (random initial weights) is run on ``s`` batches of ``j`` samples; for each
batch the spikes of every population are collected (time-major ``[T, B, ...]``, B = j).

* eq. 3, :func:`spike_counts`: ``P[a, z] = sum_t S_z[t, a]`` -- the spike count of neuron ``z`` of
  sample ``a`` over the T steps, neurons of all populations concatenated (in the order given) into
  one vector of length ``n_neurons``. Integer counts (int64).
* eq. 5, :func:`manhattan_matrix`: ``D[a, b] = ||P[a] - P[b]||_1`` (int64, exact), the Numba
  kernel :func:`refsnn.kernels.manhattan.pairwise_manhattan`; :func:`manhattan_matrix_ref` is an
  independent oracle (``scipy.spatial.distance.cdist``, ``"cityblock"``, float64, exact for counts
  below 2**53).
* eq. 7, :func:`bie_score`: ``(1/s) sum_batches mean_{a,b} D[a, b]``. "Mean of D's entries" means
  all ``j*j`` entries, the zero diagonal included (so the score is ``(j-1)/j`` times the mean over
  pairs ``a != b``).
* :func:`bie_fitness`: the search in :mod:`.search` *maximises* fitness, so ``direction="min"``
  (the seed's ``argmin``, default) gives ``fitness = -score`` and ``direction="max"`` (the
  released code's disabled path) gives ``fitness = +score``. The silent-network guard
  (:func:`check_activity`) returns :data:`WORST_FITNESS` (``-inf``) for a network whose overall
  firing rate (spikes / (T * j * n_neurons), over all batches) is below ``min_rate = 1e-3`` or whose
  output populations emit no spike at all in any batch -- otherwise a silent network (D = 0) would
  trivially win the minimisation.

``logdet`` (NASWOT, Mellor et al. 2021, on spikes; plain Hamming distance): sample ``a``'s binary code
``c_a`` is the spike of every neuron of every population at every step (length
``N_A = T * n_neurons``); ``K[a, b] = N_A - Hamming(c_a, c_b) = c_a.c_b + (1-c_a).(1-c_b)``; the
score is ``slogdet(K)`` (log |det|; ``-inf`` when K is singular, e.g. two samples with identical
codes). Higher is better (fitness = score). K is accumulated population by population with a
float64 GEMM, exact because every entry is an integer below 2**53.

``logdet-sa`` (SNASNet's sparsity-aware kernel, Kim et al., ECCV 2022; the definition is the one of
the authors' released code, ``model_snn.py``, ``find_best_neuroncell``, whose forward hook fires on
every LIF layer at every time step). Here one such firing is one (population, step) pair: ``x`` =
that population's spikes at that step, ``(B, N)`` 0/1 with ``N`` its neurons per sample. With
``n_a = sum_i x[a, i]`` and the firing rate ``r_a = n_a / N``, two independent Bernoulli codes of
rates ``r_a`` and ``r_b`` disagree on a fraction ``norm[a, b] = r_a (1 - r_b) + (1 - r_a) r_b`` of
their bits in expectation. The Hamming distance ``d[a, b] = x_a.(1 - x_b) + (1 - x_a).x_b`` is
weighted by ``0.5 / norm[a, b]``, so a pair whose distance equals its expectation ``N * norm``
contributes ``N / 2`` however sparse the layer is (with the plain kernel, two sparse codes look
similar merely because both are mostly 0):

    K = sum over (population, step) of  N - 0.5 / (norm[a, b] + eps) * d[a, b],   eps = 1e-3,

(:func:`sparsity_aware_kernel`; ``d = n_a + n_b - 2 x x^T`` with one GEMM per population for all
steps; :func:`sparsity_aware_kernel_ref` is the loop oracle). With ``m`` the number of (population,
step) pairs, :func:`logdet_sa_score` is ``log|det(K / m)|`` from ``numpy.linalg.slogdet``. K is
symmetric with diagonal ``T * n_neurons`` (``d = 0``) but not necessarily positive
definite; like the released code the score ignores the sign of the determinant (``-inf`` only when
K is singular, e.g. two samples with identical spikes). The released code averages the score over
2 batches of 256 images; :class:`refsnn.nas.fitness.NASFitness` averages over its ``s`` batches of
``j``.

Spikes may be float32/float64 (0.0/1.0), bool or an integer dtype holding 0/1; anything else is a
``ValueError``. Counts ``P`` must have an integer dtype (they are converted losslessly to int64).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from refsnn._checks import check_array, check_choice, check_float
from refsnn.kernels.manhattan import pairwise_manhattan

__all__ = ["WORST_FITNESS", "spike_counts", "manhattan_matrix", "manhattan_matrix_ref", "bie_score",
           "firing_rate", "check_activity", "bie_fitness", "hamming_kernel", "hamming_kernel_ref",
           "logdet_score", "sparsity_aware_kernel", "sparsity_aware_kernel_ref", "logdet_sa_score"]

#: Fitness of an invalid (silent) network; the search maximises fitness.
WORST_FITNESS = float("-inf")

_SPIKE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.bool_),
                 np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int32), np.dtype(np.int64))


def _as_items(spikes_by_population, name="spikes_by_population") -> list[tuple[str, np.ndarray]]:
    if isinstance(spikes_by_population, Mapping):
        items = [(str(k), v) for k, v in spikes_by_population.items()]
    elif isinstance(spikes_by_population, Sequence) and not isinstance(spikes_by_population, (str, bytes)):
        items = [(str(i), v) for i, v in enumerate(spikes_by_population)]
    else:
        raise TypeError(f"{name}: expected a mapping name -> spikes or a sequence of spike arrays, "
                        f"got {type(spikes_by_population).__name__}")
    if not items:
        raise ValueError(f"{name}: no population given")
    tb = None
    for k, s in items:
        arg = f"{name}[{k!r}]"
        check_array(arg, s, ndim_min=2, dtypes=_SPIKE_DTYPES)
        if tb is None:
            tb = s.shape[:2]
        elif s.shape[:2] != tb:
            raise ValueError(f"{arg}: expected leading [T, B] = {list(tb)} like the first population, "
                             f"got shape {s.shape}")
        if s.size and not np.all((s == 0) | (s == 1)):
            raise ValueError(f"{arg}: spikes must be 0 or 1")
    return items


def spike_counts(spikes_by_population) -> np.ndarray:
    """Firing-pattern vectors, seed eq. 3.

    Parameters
    ----------
    spikes_by_population : mapping name -> array ``[T, B, ...]`` (or a sequence of such arrays),
        spikes 0/1 of each population; concatenated in the mapping's (insertion) order, each
        population's neurons flattened in C order.

    Returns
    -------
    P : int64 ``(B, n_neurons)``, ``P[a, z] = sum_t S_z[t, a]``.
    """
    items = _as_items(spikes_by_population)
    cols = []
    for _, s in items:
        T, B = s.shape[:2]
        cols.append(s.reshape(T, B, -1).sum(axis=0, dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(cols, axis=1))


def _check_counts(P, name="P") -> np.ndarray:
    if not isinstance(P, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(P).__name__}")
    if P.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer dtype (spike counts), got {P.dtype}")
    if P.ndim != 2:
        raise ValueError(f"{name}: expected shape (j, n_neurons), got {P.shape}")
    if P.size and P.min() < 0:
        raise ValueError(f"{name}: spike counts must be >= 0")
    if P.dtype.kind == "u" and P.size and int(P.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: counts too large for int64")
    return np.ascontiguousarray(P, dtype=np.int64)


def manhattan_matrix(P: np.ndarray) -> np.ndarray:
    """Difference matrix, seed eq. 5: ``D[a, b] = sum_z |P[a, z] - P[b, z]|``.

    ``P``: integer ``(j, n_neurons)`` counts. Returns int64 ``(j, j)``, symmetric, zero diagonal,
    exact (integer arithmetic; the caller must keep ``n_neurons * max count < 2**63``).
    """
    return pairwise_manhattan(_check_counts(P))


def manhattan_matrix_ref(P: np.ndarray) -> np.ndarray:
    """Oracle for :func:`manhattan_matrix` via ``scipy.spatial.distance.cdist(P, P, "cityblock")``."""
    from scipy.spatial.distance import cdist

    P = _check_counts(P)
    if P.shape[0] == 0:
        return np.zeros((0, 0), dtype=np.int64)
    return np.rint(cdist(P.astype(np.float64), P.astype(np.float64), "cityblock")).astype(np.int64)


def bie_score(P_batches) -> float:
    """Seed eq. 7: ``(1/s) sum_{batches} mean(D)`` over the ``s`` count matrices in ``P_batches``
    (each ``(j, n_neurons)``; j and n_neurons may differ between batches only in j)."""
    if isinstance(P_batches, np.ndarray):
        P_batches = [P_batches]
    P_batches = list(P_batches)
    if not P_batches:
        raise ValueError("P_batches: expected at least one batch")
    total = 0.0
    for i, P in enumerate(P_batches):
        P = _check_counts(P, f"P_batches[{i}]")
        if P.shape[0] < 1:
            raise ValueError(f"P_batches[{i}]: expected at least one sample, got shape {P.shape}")
        D = manhattan_matrix(P)
        total += float(D.sum()) / D.size
    return total / len(P_batches)


def firing_rate(spikes_by_population) -> float:
    """Overall firing rate: total spikes / (T * B * total neurons)."""
    items = _as_items(spikes_by_population)
    spikes = sum(float(np.count_nonzero(s)) for _, s in items)
    return spikes / sum(s.size for _, s in items)


def check_activity(spike_batches, output_populations: Sequence[str] = (), *,
                   min_rate: float = 1e-3) -> tuple[bool, str]:
    """Silent-network guard (SPEC §6.4). ``spike_batches``: a list of mappings name -> spikes, one
    per batch. Invalid when the overall firing rate over all batches is ``< min_rate``, or when the
    populations named in ``output_populations`` (the last cell's outputs) emit no spike at all.
    Returns ``(ok, reason)``."""
    min_rate = check_float("min_rate", min_rate, lo=0.0)
    if isinstance(spike_batches, Mapping):
        spike_batches = [spike_batches]
    n_spk = n_tot = out_spk = 0.0
    for i, batch in enumerate(spike_batches):
        items = dict(_as_items(batch, f"spike_batches[{i}]"))
        for name in output_populations:
            if name not in items:
                raise ValueError(f"output_populations: {name!r} is not a population of batch {i}")
            out_spk += float(np.count_nonzero(items[name]))
        n_spk += sum(float(np.count_nonzero(s)) for s in items.values())
        n_tot += sum(s.size for s in items.values())
    if n_tot == 0:
        raise ValueError("spike_batches: expected at least one batch with neurons")
    rate = n_spk / n_tot
    if rate < min_rate:
        return False, f"overall firing rate {rate:.3g} < {min_rate:g}"
    if output_populations and out_spk == 0:
        return False, "output populations are silent"
    return True, ""


def bie_fitness(spike_batches, output_populations: Sequence[str] = (), *, direction: str = "min",
                min_rate: float = 1e-3) -> float:
    """BIE fitness for the (maximising) search: ``-bie_score`` for ``direction="min"`` (seed eq. 7,
    default), ``+bie_score`` for ``"max"``; :data:`WORST_FITNESS` when :func:`check_activity`
    fails. ``spike_batches``: list (one per batch) of mappings population name -> ``[T, j, ...]``."""
    check_choice("direction", direction, ("min", "max"))
    if isinstance(spike_batches, Mapping):
        spike_batches = [spike_batches]
    ok, _ = check_activity(spike_batches, output_populations, min_rate=min_rate)
    if not ok:
        return WORST_FITNESS
    score = bie_score([spike_counts(b) for b in spike_batches])
    return -score if direction == "min" else score


def _codes(spikes_by_population):
    """Per population: float64 codes ``(B, T * n)`` (sample-major), each 0/1."""
    for _, s in _as_items(spikes_by_population):
        T, B = s.shape[:2]
        yield np.ascontiguousarray(np.moveaxis(s.reshape(T, B, -1), 1, 0).reshape(B, -1), dtype=np.float64)


def hamming_kernel(spikes_by_population) -> np.ndarray:
    """NASWOT kernel ``K[a, b] = N_A - Hamming(c_a, c_b)`` (int64 ``(B, B)``), ``c_a`` = all spikes
    of sample a at every step of every population (``N_A = T * n_neurons``)."""
    K = None
    for C in _codes(spikes_by_population):
        Cc = 1.0 - C
        k = C @ C.T + Cc @ Cc.T
        K = k if K is None else K + k
    return np.rint(K).astype(np.int64)


def hamming_kernel_ref(spikes_by_population) -> np.ndarray:
    """Oracle for :func:`hamming_kernel` via ``cdist(..., "hamming")`` on the concatenated codes."""
    from scipy.spatial.distance import cdist

    C = np.concatenate(list(_codes(spikes_by_population)), axis=1)
    n_a = C.shape[1]
    return n_a - np.rint(cdist(C, C, "hamming") * n_a).astype(np.int64)


def logdet_score(spikes_by_population) -> float:
    """SNASNet/NASWOT score ``log|det K|`` (``numpy.linalg.slogdet`` of the float64 kernel);
    ``-inf`` when K is singular (sign 0). Higher is better."""
    K = hamming_kernel(spikes_by_population).astype(np.float64)
    sign, logabs = np.linalg.slogdet(K)
    return float(logabs) if sign != 0 else float("-inf")


def _layer_steps(spikes_by_population):
    """Per population: ``(arg name, float64 spikes (T, B, N))``; checks ``T >= 1`` and ``N >= 1``
    (a firing rate needs at least one neuron and the kernel at least one step)."""
    out = []
    for k, s in _as_items(spikes_by_population):
        arg = f"spikes_by_population[{k!r}]"
        T, B = s.shape[:2]
        if T < 1:
            raise ValueError(f"{arg}: expected at least one time step, got shape {s.shape}")
        N = int(np.prod(s.shape[2:], dtype=np.int64))
        if N < 1:
            raise ValueError(f"{arg}: expected at least one neuron per sample, got shape {s.shape}")
        out.append((arg, np.ascontiguousarray(s.reshape(T, B, N), dtype=np.float64)))
    return out


def sparsity_aware_kernel(spikes_by_population, eps: float = 1e-3) -> tuple[np.ndarray, int]:
    """SNASNet's sparsity-aware Hamming kernel (module docstring), summed over every (population,
    step) pair.

    Parameters
    ----------
    spikes_by_population : mapping name -> array ``[T, B, ...]`` (or a sequence of such arrays),
        spikes 0/1; each population needs ``T >= 1`` and at least one neuron.
    eps : the released code's ``1e-3`` added to the expected distance ``norm`` (must be > 0).

    Returns
    -------
    K : float64 ``(B, B)``, ``sum_(pop, t) N - 0.5 / (norm + eps) * d``; symmetric, diagonal
        ``sum_pop T * N``.
    m : int, the number of (population, step) pairs (``n_populations * T``).
    """
    eps = check_float("eps", eps, lo=0.0, lo_open=True)
    layers = _layer_steps(spikes_by_population)
    B = layers[0][1].shape[1]
    K = np.zeros((B, B), dtype=np.float64)
    m = 0
    for _, X in layers:
        T, _, N = X.shape
        n = X.sum(axis=2)                                  # (T, B) spike counts, exact
        G = np.matmul(X, X.transpose(0, 2, 1))             # (T, B, B) x_a.x_b, exact integers
        d = n[:, :, None] + n[:, None, :] - 2.0 * G        # Hamming distances
        r = n / N
        norm = r[:, :, None] * (1.0 - r[:, None, :]) + (1.0 - r[:, :, None]) * r[:, None, :]
        for t in range(T):  # accumulate step by step, in the oracle's order
            K += N - (0.5 / (norm[t] + eps)) * d[t]
        m += T
    return K, m


def sparsity_aware_kernel_ref(spikes_by_population, eps: float = 1e-3) -> tuple[np.ndarray, int]:
    """Oracle for :func:`sparsity_aware_kernel`: explicit loops over populations, steps and pairs
    ``(a, b)``, each term computed from its definition."""
    eps = check_float("eps", eps, lo=0.0, lo_open=True)
    layers = _layer_steps(spikes_by_population)
    B = layers[0][1].shape[1]
    K = np.zeros((B, B), dtype=np.float64)
    m = 0
    for _, X in layers:
        T, _, N = X.shape
        for t in range(T):
            x = X[t]
            m += 1
            for a in range(B):
                for b in range(B):
                    r_a = float(np.sum(x[a])) / N
                    r_b = float(np.sum(x[b])) / N
                    norm = r_a * (1.0 - r_b) + (1.0 - r_a) * r_b
                    d = float(np.sum(x[a] * (1.0 - x[b]) + (1.0 - x[a]) * x[b]))
                    K[a, b] += N - (0.5 / (norm + eps)) * d
    return K, m


def logdet_sa_score(spikes_by_population) -> float:
    """SNASNet's score ``log|det(K / m)|`` with the sparsity-aware kernel (module docstring;
    ``numpy.linalg.slogdet``, the sign ignored as in the released code); ``-inf`` when K is
    singular. Higher is better."""
    K, m = sparsity_aware_kernel(spikes_by_population)
    sign, logabs = np.linalg.slogdet(K / m)
    return float(logabs) if sign != 0 else float("-inf")
