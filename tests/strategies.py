"""Hypothesis strategies shared by every test module (array-api-tests style).

Keep strategies small-shaped: the whole suite must run in minutes on 2 cores. Add new strategies in
the section of the spec they serve.
"""
from __future__ import annotations

import numba
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

FLOAT_DTYPES = [np.float32, np.float64]

dtypes = st.sampled_from(FLOAT_DTYPES)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def rng_from(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed))


def assert_same_at_numba_thread_counts(run) -> None:
    """``run()`` returns a tuple of arrays; they are equal bit for bit at 1 Numba thread and at Numba's
    maximum (the kernels must never split a sum between threads)."""
    before = numba.get_num_threads()
    try:
        results = []
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            results.append(run())
    finally:
        numba.set_num_threads(before)
    for got in results[1:]:
        for a, e in zip(got, results[0], strict=True):
            np.testing.assert_array_equal(a, e)


def central_diff(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar ``f()`` with respect to every element of ``a``
    (perturbed in place and restored), for the gradient checks."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        fp = f()
        a[i] = old - eps
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@st.composite
def float_arrays(draw, shape, dtype=None, lo=-2.0, hi=2.0):
    """Finite floats of ``shape`` in ``[lo, hi]`` drawn via a seeded generator (fast for big arrays)."""
    dtype = draw(dtypes) if dtype is None else dtype
    rng = rng_from(draw(seeds))
    return rng.uniform(lo, hi, size=shape).astype(dtype)


# ---- §2.1 LIF ---------------------------------------------------------------------------------
# time-major shapes [T, B, ...] with small sizes
time_major_shapes = st.tuples(st.integers(1, 6), st.integers(1, 3)).flatmap(
    lambda tb: hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5).map(lambda s: tb + s)
)


# ---- §2.3 / §5.3 CuBa-LIF RSNN (EC) ----------------------------------------------------------
# (n_neurons, n_exc): sizes around the 64-bit word boundary, odd E/I splits included
rsnn_sizes = st.integers(1, 140).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n)))
connection_probs = st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])


# ---- §6.1-6.5 MSE-NAS (genotype, graph, BIE, search) -----------------------------------------
# Flat genotypes drawn gene by gene from their allowed sets (refsnn.nas.genotype.allowed_values).
def nas_flat_genotypes(min_cells: int = 1, max_cells: int = 5):
    from refsnn.nas.genotype import allowed_values, genotype_length

    def for_cells(n):
        length = genotype_length(n)
        return st.tuples(*[st.sampled_from(allowed_values(i, length)) for i in range(length)])

    return st.integers(min_cells, max_cells).flatmap(for_cells)


# Spike-count matrices P (j, n_neurons), small non-negative integers.
nas_counts = st.tuples(st.integers(1, 7), st.integers(0, 12), st.integers(0, 9), seeds).map(
    lambda a: rng_from(a[3]).integers(0, a[2] + 1, size=(a[0], a[1])).astype(np.int64))


# ---- §4.3 event streams (datasets) -------------------------------------------------------------
# (events, (H, W)): unsorted integer timestamps with spans from 0 (one timestamp) to 1e9 us,
# polarity coded as {0, 1}, {-1, +1}, {0, 2} or {-1, 0} (ON is p > 0), 0..max_events events.
@st.composite
def event_streams(draw, max_events: int = 200, max_side: int = 6):
    from refsnn.datasets.events import EVENT_DTYPE

    H, W = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    n = draw(st.integers(0, max_events))
    rng = rng_from(draw(seeds))
    t0 = draw(st.integers(-10**6, 10**9))
    span = draw(st.sampled_from([0, 1, 2, 7, 1000, 300_000, 10**9]))
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["x"] = rng.integers(0, W, n)
    ev["y"] = rng.integers(0, H, n)
    ev["t"] = t0 + rng.integers(0, span + 1, n)
    ev["p"] = rng.integers(0, 2, n) * (2 if draw(st.booleans()) else 1) - (1 if draw(st.booleans()) else 0)
    return ev, (H, W)


# ---- §3 convolution, pooling, linear, BatchNorm ------------------------------------------------
@st.composite
def conv_cases(draw):
    """(x_shape, w_shape, stride, padding) with rectangular kernels and valid output sizes."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    H = draw(st.integers(max(1, kh - 2 * ph), 8))
    W = draw(st.integers(max(1, kw - 2 * pw), 8))
    N, C, O = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    stride = draw(st.sampled_from([(sh, sw), sh]))
    padding = draw(st.sampled_from([(ph, pw), ph]))
    if isinstance(stride, int):
        sh = sw = stride
    if isinstance(padding, int):
        ph = pw = padding
        H, W = max(H, kh - 2 * ph), max(W, kw - 2 * pw)
    return (N, C, H, W), (O, C, kh, kw), stride, padding


nchw_shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))


# ---- §4.1 STBP (losses over per-step logits) ---------------------------------------------------
# ((T, B, K), loss kind, label smoothing)
def stbp_loss_settings():
    return st.tuples(st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(2, 5)),
                     st.sampled_from(["ce", "tet"]), st.sampled_from([0.0, 0.1, 0.3]))


# ---- §1 argument checks of every kernel entry point (tests/test_kernel_fuzz.py) ------------------
@st.composite
def conv_cases_bounded(draw):
    """:func:`conv_cases` restricted to what ``conv2d_forward`` accepts: padding
    below the kernel size on each axis (every output sees at least one input pixel)."""
    (N, C, H, W), (O, _, kh, kw), stride, padding = draw(conv_cases())
    if isinstance(padding, int):
        padding = min(padding, kh - 1, kw - 1)
        ph = pw = padding
    else:
        ph, pw = min(padding[0], kh - 1), min(padding[1], kw - 1)
        padding = (ph, pw)
    H, W = max(H, kh - 2 * ph), max(W, kw - 2 * pw)
    return (N, C, H, W), (O, C, kh, kw), stride, padding

#: one non-finite value to plant
nonfinite_values = st.sampled_from([np.nan, np.inf, -np.inf])
