"""Event-driven 2-D convolution: a sparse im2col and the sparse products (SPEC §3).

The event path of :func:`refsnn.kernels.conv.conv2d_forward` / ``conv2d_backward`` (whose module
docstring defines ``x``, ``w``, the strides, paddings and the im2col matrix ``colT``); only the kernels and
their oracle live here, the public functions stay in :mod:`refsnn.kernels.conv`.

Equations
---------
A conv that follows a LIF layer reads spikes: 0/1 maps in which typically 2-20 % of the entries are
nonzero, so most of ``colT`` is zeros that the GEMMs multiply. ``conv2d_forward(...,
algorithm="events")`` stores only the nonzeros of ``colT``, as a CSR matrix (row ``(n, p, q)``, its
columns ``k = (i, j, c)`` ascending, their values)::

    colT[(n, p, q), (i, j, c)] = xpad[n, c, p*sh + i, q*sw + j]     # kept where != 0
    ptr[r] .. ptr[r+1]          = the entries of row r = (n*Ho + p)*Wo + q
    col[e] = (i*kw + j)*C + c,  val[e] = colT[r, col[e]]           # ascending col within a row

and evaluates the same two products over them:

* forward  ``Y.T[(n, p, q), :] = sum_{k in row (n, p, q)} colT[(n, p, q), k] * W_col.T[k, :]``
* backward ``dW.T[k, :] = sum_{(n, p, q) whose row holds k} colT[(n, p, q), k] * dY.T[(n, p, q), :]``

``dX`` has no such structure (``dY`` is dense) and goes through the GEMM and ``col2im`` of
:mod:`refsnn.kernels.conv`. Every sum runs in a fixed order (output position, then ``k``), so the
result is deterministic; it differs from the GEMM path by rounding only. ``algorithm="auto"`` (the
default, and what the network layers use) takes this path when at most :data:`EVENTS_MAX_DENSITY`
of ``x`` is nonzero; the choice depends only on ``x``, so it is deterministic too. One difference
with non-finite weights and ``check_finite=False``: a zero input times an infinite weight is NaN
through the GEMM, but is skipped (contributes 0) here.

Oracle: :func:`sparse_im2col_ref` builds the same CSR matrix from a dense im2col in plain NumPy
(equal entry for entry); the products' oracle is the dense product with that matrix, and end to end
:func:`refsnn.kernels.conv.conv2d_forward_ref` / ``conv2d_backward_ref``. Below, in this order: the
oracle, then the Numba kernels. Performance notes (work, threads, the density threshold's timing):
``docs/performance.md``, "Convolution".
"""
from __future__ import annotations

import numba
import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array, check_int

__all__ = ["EVENTS_MAX_DENSITY", "sparse_im2col_ref"]

#: ``algorithm="auto"`` takes the event path when at most this fraction of ``x`` is nonzero.
EVENTS_MAX_DENSITY = 0.2


# ---------------------------------------------------------------------------------------------
# oracle
# ---------------------------------------------------------------------------------------------
def _int_pair(name: str, v, *, lo: int) -> tuple[int, int]:
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise TypeError(f"{name}: expected an (h, w) pair of ints, got {v!r}")
    return check_int(f"{name}[0]", v[0], lo=lo), check_int(f"{name}[1]", v[1], lo=lo)


def sparse_im2col_ref(x, kh, kw, *, stride=(1, 1), padding=(0, 0)):
    """The event path's CSR ``colT`` of ``x`` (module docstring), from a dense im2col in plain NumPy.

    Parameters
    ----------
    x : ndarray, shape ``(N, C, H, W)``, float32 or float64
    kh, kw : int >= 1
        Kernel height and width.
    stride : (int, int), >= 1
    padding : (int, int), >= 0

    Returns
    -------
    ptr : ndarray, int64, shape ``(N*Ho*Wo + 1,)``
        Row pointers, row ``(n*Ho + p)*Wo + q``.
    col : ndarray, int32
        Column ``(i*kw + j)*C + c`` of each entry, ascending within a row.
    val : ndarray, dtype of ``x``
        ``xpad[n, c, p*sh + i, q*sw + j]`` of each entry; the zeros of ``x`` (and the padding) are
        not stored.
    """
    x = check_array("x", x, ndim=4, dtypes=FLOAT_DTYPES, finite=False)
    kh, kw = check_int("kh", kh, lo=1), check_int("kw", kw, lo=1)
    (sh, sw), (ph, pw) = _int_pair("stride", stride, lo=1), _int_pair("padding", padding, lo=0)
    N, C, H, W = x.shape
    if H + 2 * ph < kh or W + 2 * pw < kw:
        raise ValueError(f"kh: kernel ({kh}, {kw}) exceeds the padded input ({H + 2 * ph}, {W + 2 * pw})")
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    xp = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
    xp[:, ph:ph + H, pw:pw + W, :] = x.transpose(0, 2, 3, 1)
    dense = np.empty((N, Ho, Wo, kh, kw, C), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            dense[:, :, :, i, j, :] = xp[:, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw, :]
    dense = dense.reshape(N * Ho * Wo, kh * kw * C)
    rows, cols = np.nonzero(dense)                   # row-major: rows ascending, then columns
    ptr = np.zeros(N * Ho * Wo + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(rows, minlength=N * Ho * Wo))
    return ptr, cols.astype(np.int32), dense[rows, cols]


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------
@numba.njit(cache=True, parallel=True)
def _events_by_pixel(x, lo, hi, chan, val):
    """The nonzeros of ``x`` ``(N, C, H, W)`` grouped by pixel: those of pixel ``r = (n*H + a)*W + b``
    are ``lo[r]:hi[r]`` of ``chan`` (ascending channels ``c``) and ``val`` (``x[n, c, a, b]``). Images
    in parallel, one pass: image ``n`` writes from ``n*C*H*W`` on (its most), pixel by pixel (an image's
    channels stay in cache); ``chan`` and ``val`` have ``x.size`` elements."""
    N, C, H, W = x.shape
    for n in numba.prange(N):
        k = n * C * H * W
        for a in range(H):
            for b in range(W):
                r = (n * H + a) * W + b
                lo[r] = k
                for c in range(C):
                    v = x[n, c, a, b]
                    if v != 0:
                        chan[k] = c
                        val[k] = v
                        k += 1
                hi[r] = k


@numba.njit(cache=True, parallel=True)
def _sparse_im2col(lo, hi, chan, val, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, fill, cptr, ccol, cval):
    """The sparse ``colT`` from :func:`_events_by_pixel`'s ``lo, hi, chan, val``: row ``(n, p, q)``
    holds the events of the pixels of its receptive field. Without ``fill``: writes the row pointers
    ``cptr`` (``N*Ho*Wo + 1``; each row's count, then a running sum) and returns the number of
    entries (to size ``ccol`` and ``cval``, which may then be empty). With ``fill`` (``cptr`` from
    the counting call): writes the entries ``ccol = (i*kw + j)*C + c`` (ascending within a row) and
    ``cval = x[n, c, p*sh+i-ph, q*sw+j-pw]``. Images in parallel; each row is written by one thread."""
    N = lo.shape[0] // (H * W)
    for n in numba.prange(N):
        for p in range(Ho):
            for q in range(Wo):
                row = (n * Ho + p) * Wo + q
                k = cptr[row] if fill else 0          # filling: from the row's start; counting: from 0
                for i in range(kh):
                    a = p * sh + i - ph
                    if 0 <= a < H:
                        for j in range(kw):
                            b = q * sw + j - pw
                            if 0 <= b < W:
                                r = (n * H + a) * W + b
                                if fill:
                                    k0 = (i * kw + j) * C
                                    for e in range(lo[r], hi[r]):
                                        ccol[k] = k0 + chan[e]
                                        cval[k] = val[e]
                                        k += 1
                                else:
                                    k += hi[r] - lo[r]
                if not fill:
                    cptr[row + 1] = k
    if not fill:
        cptr[0] = 0
        for r in range(N * Ho * Wo):
            cptr[r + 1] += cptr[r]
    return cptr[N * Ho * Wo]


@numba.njit(cache=True, inline="always")
def _spmm_rows(cptr, ccol, cval, b, out, r0, r1, acc):
    """Rows ``r0:r1`` of ``out = A @ b``, each accumulated in ``acc`` (``(O,)``), entries in column order."""
    O = b.shape[1]  # noqa: E741 (O = output channels, as in the notes)
    for r in range(r0, r1):
        acc[:] = 0.0
        for e in range(cptr[r], cptr[r + 1]):
            v = cval[e]
            k = ccol[e]
            for o in range(O):
                acc[o] += v * b[k, o]
        for o in range(O):
            out[r, o] = acc[o]


@numba.njit(cache=True, parallel=True)
def _spmm(cptr, ccol, cval, b, out):
    """``out = A @ b`` for the CSR matrix ``A`` and a dense ``b`` (``(K, O)``); ``out`` is ``(rows, O)``.
    Blocks of rows on Numba's threads; every row is one serial sum (in a local buffer, entries in
    column order), so the result does not depend on the thread count."""
    R = out.shape[0]
    n_blocks = 64
    for blk in numba.prange(n_blocks):
        _spmm_rows(cptr, ccol, cval, b, out, blk * R // n_blocks, (blk + 1) * R // n_blocks,
                   np.empty(b.shape[1], out.dtype))
    return out


@numba.njit(cache=True, parallel=True)
def _spmm_t(cptr, ccol, cval, g, out, n_blocks):
    """``out = A.T @ g`` for the CSR matrix ``A`` (``(rows, K)``) and a dense ``g`` (``(rows, O)``);
    ``out`` is ``(K, O)``, each row accumulated in the order of ``A``'s rows. ``n_blocks`` blocks of
    ``k`` in parallel (one per Numba thread): every block scans all of ``A``'s rows and keeps the
    entries in its range (a row's columns ascend), so each ``out[k]`` is summed in the same order
    whatever the number of blocks."""
    O = g.shape[1]  # noqa: E741 (O = output channels, as in the notes)
    K = out.shape[0]
    for blk in numba.prange(n_blocks):
        k_lo = blk * K // n_blocks
        k_hi = (blk + 1) * K // n_blocks
        out[k_lo:k_hi] = 0.0
        grow = np.empty(O, g.dtype)
        for r in range(g.shape[0]):
            e0 = cptr[r]
            e1 = cptr[r + 1]
            if k_lo > 0:                   # the row's entries in [k_lo, k_hi): its columns ascend
                while e0 < e1 and ccol[e0] < k_lo:
                    e0 += 1
            if k_hi < K:
                stop = e0
                while stop < e1 and ccol[stop] < k_hi:
                    stop += 1
                e1 = stop
            if e0 == e1:
                continue
            for o in range(O):
                grow[o] = g[r, o]
            for e in range(e0, e1):
                v = cval[e]
                k = ccol[e]
                for o in range(O):
                    out[k, o] += v * grow[o]
    return out


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def _sparse_colT(x, kh, kw, sh, sw, ph, pw, Ho, Wo, work, work_capacity):
    """The CSR ``colT`` ``(ptr, col, val)`` of a C-contiguous ``x`` by the three kernel passes.

    ``work(role, shape, dtype)`` gives the work array of a fixed size for ``role``,
    ``work_capacity(role, n, dtype)`` a 1-D one of ``n`` elements (the entries, whose number is
    known only after the counting pass); :func:`refsnn.kernels.conv.conv2d_forward` passes its
    workspace's arrays, :func:`_fresh` gives new ones. Arguments are not checked.
    """
    N, C, H, W = x.shape
    lo, hi = work("lo", (N * H * W,), np.int64), work("hi", (N * H * W,), np.int64)
    chan, val = work("chan", (x.size,), np.int32), work("val", (x.size,), x.dtype)
    _events_by_pixel(x, lo, hi, chan, val)
    cptr = work("cptr", (N * Ho * Wo + 1,), np.int64)
    geom = (H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo)
    nnz = int(_sparse_im2col(lo, hi, chan, val, *geom, False, cptr, np.empty(0, np.int32), np.empty(0, x.dtype)))
    ccol, cval = work_capacity("ccol", nnz, np.int32), work_capacity("cval", nnz, x.dtype)
    _sparse_im2col(lo, hi, chan, val, *geom, True, cptr, ccol, cval)
    return cptr, ccol, cval


def _fresh(role: str, shape, dtype) -> np.ndarray:
    """A new array: the ``work`` and ``work_capacity`` of :func:`_sparse_colT` without a workspace."""
    return np.empty(shape, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# warm-up
# ---------------------------------------------------------------------------------------------
def _warmup() -> None:
    """Compile (or load from cache) every kernel of this module, float32 and float64."""
    for dt in FLOAT_DTYPES:
        x = np.zeros((1, 2, 4, 4), dtype=dt)
        x[0, 1, 2, 3] = 1
        cptr, ccol, cval = _sparse_colT(x, 3, 2, 1, 2, 1, 1, 4, 3, _fresh, _fresh)
        out = np.empty((12, 3), dtype=dt)
        _spmm(cptr, ccol, cval, np.ones((12, 3), dtype=dt), out)
        _spmm_t(cptr, ccol, cval, out, np.empty((12, 3), dtype=dt), 2)
