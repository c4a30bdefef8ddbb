"""SPEC §3, event path of conv2d: the sparse im2col and the sparse products against their oracles."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import conv_cases, dtypes, rng_from, seeds

from refsnn.kernels.conv_sparse import _fresh, _sparse_colT, _spmm, _spmm_t, sparse_im2col_ref
from refsnn.vectors.tolerances import KERNEL_ATOL


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


@settings(max_examples=40, deadline=None)
@given(conv_cases(), dtypes, seeds, st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_sparse_im2col_and_products_match_the_oracle(case, dt, seed, density):
    """The kernels' CSR equals the oracle's entry for entry (rows, ascending columns, values);
    ``A @ b`` and ``A.T @ g`` over it equal the dense products up to rounding, and ``A.T @ g`` is
    the same bits for any number of blocks."""
    (N, C, H, W), (O, _, kh, kw), stride, padding = case
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    rng = rng_from(seed)
    x = rng.uniform(-1, 1, (N, C, H, W)).astype(dt)
    x[rng.random(x.shape) >= density] = 0
    x[rng.random(x.shape) < 0.05] = -0.0                     # a negative zero is no event either
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    ptr, col, val = _sparse_colT(x, kh, kw, sh, sw, ph, pw, Ho, Wo, _fresh, _fresh)
    rptr, rcol, rval = sparse_im2col_ref(x, kh, kw, stride=(sh, sw), padding=(ph, pw))
    assert (ptr.dtype, col.dtype, val.dtype) == (np.int64, np.int32, x.dtype)
    np.testing.assert_array_equal(ptr, rptr)
    np.testing.assert_array_equal(col, rcol)
    np.testing.assert_array_equal(val, rval)
    assert np.count_nonzero(val) == val.size
    P, K = N * Ho * Wo, kh * kw * C
    dense = np.zeros((P, K), dtype=dt)
    dense[np.repeat(np.arange(P), np.diff(rptr)), rcol] = rval
    b = rng.uniform(-1, 1, (K, O)).astype(dt)
    g = rng.uniform(-1, 1, (P, O)).astype(dt)
    atol = KERNEL_ATOL[dt] * K
    out = np.empty((P, O), dtype=dt)
    _spmm(ptr, col, val, b, out)
    np.testing.assert_allclose(out, dense @ b, rtol=0, atol=atol)
    outs = []
    for n_blocks in (1, 3):
        outs.append(np.empty((K, O), dtype=dt))
        _spmm_t(ptr, col, val, g, outs[-1], n_blocks)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], dense.T @ g, rtol=0, atol=atol)


def test_sparse_im2col_ref_layout_and_bad_arguments():
    x = np.zeros((1, 2, 3, 3), np.float32)
    x[0, 1, 0, 0] = 5.0                                       # channel 1, pixel (0, 0)
    ptr, col, val = sparse_im2col_ref(x, 2, 2, padding=(1, 1))
    # output (p, q) sees pixel (0, 0) at kernel offset (i, j) = (1 - p, 1 - q): column (i*2 + j)*2 + 1
    assert ptr.tolist() == [0, 1, 2, 2, 2, 3, 4] + [4] * 10
    assert col.tolist() == [7, 5, 3, 1] and val.tolist() == [5.0] * 4
    with pytest.raises(TypeError, match="^x: expected dtype"):
        sparse_im2col_ref(x.astype(np.int64), 2, 2)
    with pytest.raises(ValueError, match=r"^stride\[1\]"):
        sparse_im2col_ref(x, 2, 2, stride=(1, 0))
    with pytest.raises(TypeError, match="^padding"):
        sparse_im2col_ref(x, 2, 2, padding=1)
    with pytest.raises(ValueError, match="^kh: kernel"):
        sparse_im2col_ref(x, 4, 2)
