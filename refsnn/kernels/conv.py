"""2-D convolution through hand-written Numba ``im2col`` / ``col2im`` (SPEC §3, conventions §1).

Equations and shapes
--------------------
Input ``x`` has shape ``(N, C, H, W)`` (NCHW; the network folds time into the batch, so
``N = T*B``), weight ``w`` has shape ``(O, C, kh, kw)`` (PyTorch layout, rectangular kernels
allowed), bias ``b`` has shape ``(O,)`` or is absent. With stride ``(sh, sw)`` and zero padding
``(ph, pw)`` the output is ``y`` of shape ``(N, O, Ho, Wo)``, ``Ho = (H + 2 ph - kh) // sh + 1``,
``Wo = (W + 2 pw - kw) // sw + 1``, and (cross-correlation, PyTorch ``conv2d`` semantics)::

    y[n, o, p, q] = b[o] + sum_{c, i, j} w[o, c, i, j] * xpad[n, c, p*sh + i, q*sw + j]

where ``xpad`` is ``x`` zero-padded by ``ph`` rows and ``pw`` columns on each side.

im2col form (SPEC §3): with ``K = C*kh*kw`` and ``P = N*Ho*Wo``, the column matrix ``col`` of
shape ``(K, P)`` holds one receptive field per column, ``W_col`` is the weight as an ``(O, K)``
matrix with the same ordering of ``K``, and

* forward  ``Y = W_col @ col``            (``(O, P)``, then laid out as ``(N, O, Ho, Wo)``, plus ``b``)
* backward ``dW = dY @ col.T``            (``dY`` is ``dy`` laid out as ``(O, P)``)
* backward ``db[o] = sum_{n, p, q} dy[n, o, p, q]``
* backward ``dX = col2im(W_col.T @ dY)``  (``col2im`` scatter-adds each column entry back to the
  input pixel it was copied from; padding entries are dropped)

refsnn orders ``K`` as ``(i, j, c)`` (kernel row, kernel column, input channel), i.e.
``W_col = w.transpose(0, 2, 3, 1).reshape(O, K)``, and stores ``colT = col.T`` (one row per output
position, ``(P, K)``); the products are evaluated transposed (``Y.T = colT @ W_col.T``,
``dW = dY @ colT``, ``dcol.T = dY.T @ W_col``) with ``np.dot``. The bias gradient is summed in
float64. Event-driven path for sparse inputs (``algorithm="events"``, or ``"auto"`` when at most
``EVENTS_MAX_DENSITY`` of ``x`` is nonzero): the same products over the nonzeros of ``colT`` only;
equations, kernels and oracle in :mod:`refsnn.kernels.conv_sparse` (``EVENTS_MAX_DENSITY`` is
re-exported here).

Below, in this order: the oracles :func:`conv2d_forward_ref` / :func:`conv2d_backward_ref` (direct
loops over the kernel offsets in plain NumPy; the tests also compare with
``scipy.signal.correlate``), then the work arrays (:class:`Conv2dWorkspace`), the Numba kernels and
:func:`conv2d_forward` / :func:`conv2d_backward`. Performance notes (memory layout, BLAS, thread
determinism, chunking, workspaces and their generation stamps): ``docs/performance.md``,
"Convolution".

Dtypes: float32 in -> float32 out, float64 in -> float64 out; ``x``, ``w``, ``b`` (and ``dy``)
must share the dtype (``TypeError`` naming the argument otherwise).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import numba
import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array, check_choice, check_int, check_same_dtype
from refsnn.kernels._args import check_bool
from refsnn.kernels.conv_sparse import EVENTS_MAX_DENSITY, _sparse_colT, _spmm, _spmm_t

__all__ = [
    "Conv2dContext",
    "Conv2dWorkspace",
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_forward_ref",
    "conv2d_backward_ref",
    "EVENTS_MAX_DENSITY",
    "ALGORITHMS",
]

#: the values of ``conv2d_forward``'s ``algorithm`` argument
ALGORITHMS = ("auto", "gemm", "events")


# ---------------------------------------------------------------------------------------------
# argument handling
# ---------------------------------------------------------------------------------------------
def _pair(name: str, v, *, lo: int) -> tuple[int, int]:
    """``v`` as an ``(h, w)`` pair of ints >= ``lo`` (an int means the same for both)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name}: expected an int or an (h, w) pair, got {v!r}")
        return (check_int(f"{name}[0]", v[0], lo=lo), check_int(f"{name}[1]", v[1], lo=lo))
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int or an (h, w) pair of ints, got {type(v).__name__}")
    v = check_int(name, v, lo=lo)
    return (v, v)


def _out_size(size: int, k: int, s: int, p: int, axis: str) -> int:
    if size + 2 * p < k:
        raise ValueError(
            f"w: kernel {axis} {k} exceeds the padded input {axis} {size} + 2*{p} = {size + 2 * p}")
    return (size + 2 * p - k) // s + 1


def _check_forward_args(x, w, b, stride, padding, check_finite=True):
    x = check_array("x", x, ndim=4, dtypes=FLOAT_DTYPES, finite=check_finite)
    w = check_array("w", w, ndim=4, dtypes=FLOAT_DTYPES, finite=check_finite)
    check_same_dtype("x", x, "w", w)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w: expected {x.shape[1]} input channels (w.shape[1], from x.shape[1]), "
                         f"got shape {w.shape}")
    if min(w.shape) < 1:
        raise ValueError(f"w: expected all dimensions >= 1, got shape {w.shape}")
    if b is not None:
        b = check_array("b", b, ndim=1, dtypes=FLOAT_DTYPES, shape=(w.shape[0],), finite=check_finite)
        check_same_dtype("x", x, "b", b)
    sh, sw = _pair("stride", stride, lo=1)
    ph, pw = _pair("padding", padding, lo=0)
    kh, kw = w.shape[2:]
    if ph >= kh or pw >= kw:
        raise ValueError(f"padding: expected padding < kernel size per axis (so that every output sees "
                         f"at least one input pixel), got padding ({ph}, {pw}) for kernel ({kh}, {kw})")
    return x, w, b, (sh, sw), (ph, pw)


# ---------------------------------------------------------------------------------------------
# oracles
# ---------------------------------------------------------------------------------------------
def conv2d_forward_ref(x, w, b=None, *, stride=1, padding=0):
    """Direct convolution: a plain NumPy loop over the kernel offsets ``(i, j)`` (oracle).

    ``y[n, o, p, q] = b[o] + sum_{i,j} sum_c w[o, c, i, j] xpad[n, c, p*sh + i, q*sw + j]``.
    Same arguments, validation and dtype rules as :func:`conv2d_forward`; returns ``y`` only.
    """
    x, w, b, (sh, sw), (ph, pw) = _check_forward_args(x, w, b, stride, padding)
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape  # noqa: E741 (O = output channels, as in the notes)
    Ho = _out_size(H, kh, sh, ph, "height")
    Wo = _out_size(W, kw, sw, pw, "width")
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    y = np.zeros((N, O, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]  # (N,C,Ho,Wo)
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_backward_ref(dy, x, w, *, stride=1, padding=0, has_bias=True):
    """Gradients of the direct convolution by the same loop over kernel offsets (oracle).

    ``dw[o, c, i, j] = sum_{n,p,q} dy[n, o, p, q] xpad[n, c, p*sh + i, q*sw + j]``,
    ``dxpad[n, c, p*sh + i, q*sw + j] += sum_o dy[n, o, p, q] w[o, c, i, j]``,
    ``db[o] = sum_{n,p,q} dy[n, o, p, q]``. Returns ``(dx, dw, db)``, ``db`` None if not ``has_bias``.
    """
    x, w, _, (sh, sw), (ph, pw) = _check_forward_args(x, w, None, stride, padding)
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape  # noqa: E741 (O = output channels, as in the notes)
    Ho = _out_size(H, kh, sh, ph, "height")
    Wo = _out_size(W, kw, sw, pw, "width")
    dy = check_array("dy", dy, ndim=4, dtypes=FLOAT_DTYPES, shape=(N, O, Ho, Wo))
    check_same_dtype("x", x, "dy", dy)
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            sl = (slice(None), slice(None),
                  slice(i, i + sh * (Ho - 1) + 1, sh), slice(j, j + sw * (Wo - 1) + 1, sw))
            dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dy, xp[sl])
            dxp[sl] += np.einsum("nohw,oc->nchw", dy, w[:, :, i, j])
    dx = dxp[:, :, ph:ph + H, pw:pw + W].copy()
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


# ---------------------------------------------------------------------------------------------
# work arrays of the fast path (docs/performance.md, "Convolution")
# ---------------------------------------------------------------------------------------------
class _Arrays:
    """The work arrays of one geometry in a :class:`Conv2dWorkspace` (one array per role)."""

    __slots__ = ("arrays", "generation")

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self.generation = 0      # bumped by every forward that writes this set's im2col matrix

    def get(self, role: str, shape, dtype) -> np.ndarray:
        a = self.arrays.get(role)
        if a is None:
            a = self.arrays[role] = np.empty(shape, dtype=dtype)
        return a


def _work(arrays: _Arrays | None, role: str, shape, dtype) -> np.ndarray:
    """The work array ``role`` of ``arrays``, or a fresh array without a workspace."""
    if arrays is None:
        return np.empty(shape, dtype=dtype)
    return arrays.get(role, shape, dtype)


def _work_capacity(arrays: _Arrays | None, role: str, n: int, dtype) -> np.ndarray:
    """A 1-D work array of ``n`` elements whose size varies from call to call (the sparse im2col's
    entries): a view of the first ``n`` of ``arrays``' array ``role``, grown by a quarter when it is
    too small; a fresh array without a workspace."""
    if arrays is None:
        return np.empty(n, dtype=dtype)
    a = arrays.arrays.get(role)
    if a is None or a.size < n:
        a = arrays.arrays[role] = np.empty(n + n // 4, dtype=dtype)
    return a[:n]


class Conv2dWorkspace:
    """Work arrays of :func:`conv2d_forward` / :func:`conv2d_backward`, reused by their one owner.

    Pass the same workspace to every call of one owner (e.g. one conv layer); never share it
    between owners or threads. It keeps one set of arrays per geometry; the im2col matrix of a set is
    rewritten by the next :func:`conv2d_forward` with this workspace and that geometry, so a
    :class:`Conv2dContext` is valid until then (:func:`conv2d_backward` raises ``RuntimeError`` for a
    stale one; each forward stamps the set with a new generation number). Returned arrays are always
    fresh. Why and how: ``docs/performance.md``, "Convolution".

    Memory held: one set of arrays per geometry (``x`` shape ``(N, C, H, W)``, ``w`` shape
    ``(O, C, kh, kw)``, stride, padding, dtype) for the ``max_geometries`` geometries used most
    recently (a training batch shape, an evaluation batch shape and the last, smaller batch of
    each). With ``K = C*kh*kw``, ``P = N*Ho*Wo`` and ``s`` the item size, one set holds, in bytes,

    * after a forward pass: the im2col matrix ``P*K*s`` (by far the largest: ``kh*kw`` times the
      input for stride 1), the padded input ``N*(H+2ph)*(W+2pw)*C*s`` and the GEMM output ``P*O*s``;
    * after a backward pass in addition: ``dY.T`` (``P*O*s``), the padded input gradient (like the
      padded input, only if ``dx`` was requested) and one chunk of ``dcol.T`` (at most about 8 MiB,
      or one image's ``Ho*Wo*K*s`` if that is larger).

    Within one training step the im2col matrix is alive from the forward to the backward pass
    anyway (the context holds it); what the workspace adds is that every kept set stays allocated
    between passes, e.g. a layer's evaluation-shaped set while it trains. That is the point (an
    evaluation pass then does not fault its im2col matrices in afresh every epoch), and its cost:
    the memory of a layer is the sum over its kept sets. :meth:`clear` releases everything (arrays
    still held by a live :class:`Conv2dContext` stay valid and are freed with it); :attr:`nbytes`
    reports the total.
    """

    def __init__(self, max_geometries: int = 4):
        self.max_geometries = check_int("max_geometries", max_geometries, lo=1)
        self._sets: OrderedDict[tuple, _Arrays] = OrderedDict()

    def _arrays(self, key: tuple) -> _Arrays:
        arrays = self._sets.get(key)
        if arrays is None:
            arrays = self._sets[key] = _Arrays()
            while len(self._sets) > self.max_geometries:
                self._sets.popitem(last=False)               # least recently used geometry
        else:
            self._sets.move_to_end(key)
        return arrays

    @property
    def nbytes(self) -> int:
        """Total bytes of the work arrays the workspace holds."""
        return sum(a.nbytes for arrays in self._sets.values() for a in arrays.arrays.values())

    def clear(self) -> None:
        """Release all work arrays."""
        self._sets.clear()

    def __repr__(self):
        return f"Conv2dWorkspace({len(self._sets)} geometries, {self.nbytes} bytes)"


def _geometry(x_shape, w_shape, stride, padding, dtype) -> tuple:
    return (tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding), np.dtype(dtype))


def _check_workspace(workspace):
    if workspace is not None and not isinstance(workspace, Conv2dWorkspace):
        raise TypeError(f"workspace: expected a Conv2dWorkspace or None, got {type(workspace).__name__}")
    return workspace


@dataclass
class Conv2dContext:
    """What :func:`conv2d_backward` needs from the forward pass (treat as opaque).

    Attributes
    ----------
    colT : ndarray, shape ``(N*Ho*Wo, C*kh*kw)``, or None
        The transpose of the im2col matrix ``col`` of the forward input (module docstring);
        None after the event path.
    col_sparse : tuple ``(ptr, col, val)`` or None
        The event path's ``colT`` as a CSR matrix: row pointers ``ptr`` (int64, ``N*Ho*Wo + 1``),
        column indices ``col`` (int32, ``(i, j, c)`` order) and values ``val`` (dtype of ``x``), each
        of ``ptr[-1]`` entries; None after the GEMM path.
    w_col : ndarray, shape ``(O, C*kh*kw)``
        The weight as a matrix (a view of the forward ``w``, not a copy).
    x_shape, w_shape : tuple
        Shapes of ``x`` and ``w``.
    out_hw : tuple ``(Ho, Wo)``
    stride, padding : tuple ``(h, w)``
    has_bias : bool
        Whether forward received a bias (otherwise ``db`` is None).
    arrays, generation
        The workspace's array set that holds ``colT`` and the generation it was written in
        (``None``, 0 without a workspace); :func:`conv2d_backward` checks that ``colT`` has not been
        rewritten since.
    """

    colT: np.ndarray | None
    w_col: np.ndarray
    x_shape: tuple
    w_shape: tuple
    out_hw: tuple
    stride: tuple
    padding: tuple
    has_bias: bool
    arrays: _Arrays | None = None
    generation: int = 0
    col_sparse: tuple | None = None


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------
@numba.njit(cache=True, parallel=True)
def _pad_to_nhwc(x, ph, pw, xp):
    """``xp[n, ph + a, pw + b, c] = x[n, c, a, b]``, zero elsewhere; ``xp`` is ``(N, H+2ph, W+2pw, C)``."""
    N, C, H, W = x.shape
    for n in numba.prange(N):
        xp[n] = 0.0
        for a in range(H):
            for b in range(W):
                row = xp[n, ph + a, pw + b]
                for c in range(C):
                    row[c] = x[n, c, a, b]
    return xp


@numba.njit(cache=True, parallel=True)
def _im2col(xp, kh, kw, sh, sw, Ho, Wo, colT):
    """``colT[(n, p, q), (i, j, c)] = xp[n, p*sh + i, q*sw + j, c]`` (``xp`` padded NHWC)."""
    N = xp.shape[0]
    C = xp.shape[3]
    for n in numba.prange(N):
        for p in range(Ho):
            for q in range(Wo):
                dst = colT[(n * Ho + p) * Wo + q]
                for i in range(kh):
                    for j in range(kw):
                        src = xp[n, p * sh + i, q * sw + j]
                        k0 = (i * kw + j) * C
                        for c in range(C):
                            dst[k0 + c] = src[c]
    return colT


@numba.njit(cache=True)
def _col2im(dcolT, n0, kh, kw, sh, sw, Ho, Wo, dxp, m0, m1):
    """``dxp[n0 + m]`` (padded NHWC) = scatter-add of the rows ``(m, p, q)`` of ``dcolT``, for the images
    ``m0 <= m < m1`` of the chunk.

    Within an image each element of ``dxp`` is accumulated in the fixed order ``(p, q)`` outer,
    ``(i, j)`` inner, so the result does not depend on how the images are split between threads.
    """
    C = dxp.shape[3]
    for m in range(m0, m1):
        n = n0 + m
        dxp[n] = 0.0
        for p in range(Ho):
            for q in range(Wo):
                src = dcolT[(m * Ho + p) * Wo + q]
                for i in range(kh):
                    for j in range(kw):
                        dst = dxp[n, p * sh + i, q * sw + j]
                        k0 = (i * kw + j) * C
                        for c in range(C):
                            dst[c] += src[k0 + c]


@numba.njit(cache=True, parallel=True)
def _col2im_parallel(dcolT, n0, kh, kw, sh, sw, Ho, Wo, dxp, n_blocks):
    """:func:`_col2im` of all the chunk's images, ``n_blocks`` blocks of images on Numba's threads."""
    nb = dcolT.shape[0] // (Ho * Wo)
    for blk in numba.prange(n_blocks):
        _col2im(dcolT, n0, kh, kw, sh, sw, Ho, Wo, dxp, blk * nb // n_blocks, (blk + 1) * nb // n_blocks)


@numba.njit(cache=True)
def _unpad_from_nhwc(dxp, ph, pw, dx, check, n0, n1):
    """``dx[n, c, a, b] = dxp[n, ph + a, pw + b, c]`` for ``n0 <= n < n1`` (drops the padding entries).
    Returns the number of non-finite values written if ``check`` (else 0)."""
    N, C, H, W = dx.shape
    bad = 0
    for n in range(n0, n1):
        for c in range(C):
            for a in range(H):
                for b in range(W):
                    v = dxp[n, ph + a, pw + b, c]
                    dx[n, c, a, b] = v
                    if check and not np.isfinite(v):
                        bad += 1
    return bad


@numba.njit(cache=True, parallel=True)
def _unpad_parallel(dxp, ph, pw, dx, check, n_blocks):
    """:func:`_unpad_from_nhwc` of all images, ``n_blocks`` blocks of images on Numba's threads."""
    N = dx.shape[0]
    bad = np.zeros(n_blocks, np.int64)
    for blk in numba.prange(n_blocks):
        bad[blk] = _unpad_from_nhwc(dxp, ph, pw, dx, check, blk * N // n_blocks, (blk + 1) * N // n_blocks)
    return bad.sum()


@numba.njit(cache=True, parallel=True)
def _nhwc_to_nchw(yt, b, has_bias, y, check):
    """``y[n, o, s] = yt[n, s, o] (+ b[o])``; ``yt`` is ``(N, Ho*Wo, O)``, ``y`` is ``(N, O, Ho*Wo)``.
    Returns the number of non-finite outputs if ``check`` (else 0), counted in the bias pass."""
    N, S, O = yt.shape  # noqa: E741 (O = output channels, as in the notes)
    bad = np.zeros(N, np.int64)                  # per image (a scalar += in a prange body was lost)
    for n in numba.prange(N):
        for s in range(S):
            for o in range(O):
                y[n, o, s] = yt[n, s, o]
        if has_bias:
            for o in range(O):
                bo = b[o]
                for s in range(S):
                    y[n, o, s] += bo
        if check:
            m = 0
            for o in range(O):
                for s in range(S):
                    if not np.isfinite(y[n, o, s]):
                        m += 1
            bad[n] = m
    return bad.sum()


@numba.njit(cache=True, parallel=True)
def _nchw_to_nhwc(dy, dyt, db):
    """``dyt[n, s, o] = dy[n, o, s]`` and ``db[o] = sum_n (sum_s dy[n, o, s])`` (float64; each image's
    sum in ``s`` order, then the images in ``n`` order, whatever the thread count)."""
    N, O, S = dy.shape  # noqa: E741 (O = output channels, as in the notes)
    part = np.empty((N, O), np.float64)
    for n in numba.prange(N):
        for o in range(O):
            acc = 0.0
            for s in range(S):
                v = dy[n, o, s]
                dyt[n, s, o] = v
                acc += np.float64(v)
            part[n, o] = acc
    for o in range(O):
        db[o] = 0.0
    for n in range(N):
        for o in range(O):
            db[o] += part[n, o]
    return dyt


# Target size (bytes) of one chunk of W_col.T @ dY in the backward pass (docs/performance.md).
_DX_CHUNK_BYTES = 8 << 20


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def conv2d_forward(x, w, b=None, *, stride=1, padding=0, check_finite=True, workspace=None, algorithm="auto"):
    """2-D cross-correlation with zero padding, PyTorch ``conv2d`` semantics (SPEC §3).

    ``y[n, o, p, q] = b[o] + sum_{c,i,j} w[o, c, i, j] * xpad[n, c, p*sh + i, q*sw + j]``,
    computed as ``Y = W_col @ im2col(x)``.

    Parameters
    ----------
    x : ndarray, shape ``(N, C, H, W)``, float32 or float64
    w : ndarray, shape ``(O, C, kh, kw)``, same dtype as ``x``
    b : ndarray, shape ``(O,)``, same dtype, or None
    stride : int or (int, int), >= 1
    padding : int or (int, int), >= 0 and < the kernel size on that axis (zero padding on both
        sides). PyTorch accepts any padding; a padding >= the kernel size only adds outputs that
        see no input pixel (just the bias) and lets a typo allocate gigabytes, so refsnn refuses it.
    check_finite : bool
        Reject NaN/inf in ``x``, ``w``, ``b`` (one extra pass over each) and an output that
        overflowed to infinity (one pass over ``y``). The network layers pass
        False: their input is checked once at ``Network.forward`` and every LIF kernel detects a
        non-finite input current itself.
    workspace : Conv2dWorkspace or None
        Work arrays to reuse, owned by the caller (:class:`Conv2dWorkspace`). The returned context
        is valid until the next call with this workspace and the same shapes. None (default): fresh
        arrays.
    algorithm : {"auto", "gemm", "events"}
        ``"gemm"``: im2col and a GEMM; ``"events"``: a sparse im2col, sums over the nonzeros of ``x``
        only (:mod:`refsnn.kernels.conv_sparse`); ``"auto"`` (default): ``"events"`` when at most
        :data:`EVENTS_MAX_DENSITY` of ``x`` is nonzero. The backward pass follows the forward's choice.

    Returns
    -------
    y : ndarray, shape ``(N, O, Ho, Wo)``, dtype of ``x``
        ``Ho = (H + 2 ph - kh) // sh + 1``, ``Wo = (W + 2 pw - kw) // sw + 1``.
    ctx : Conv2dContext
        Opaque; pass to :func:`conv2d_backward`. Holds the im2col matrix (as ``colT``, ``N*Ho*Wo x C*kh*kw``)
        or its sparse form (arrays of ``workspace`` if one was given).

    Raises
    ------
    TypeError
        Non-float dtype or dtypes that differ, or ``workspace`` not a :class:`Conv2dWorkspace`
        (names the argument).
    ValueError
        Wrong rank, channel mismatch, NaN/inf, bad stride/padding, kernel larger than the padded
        input, unknown algorithm (names the argument).
    """
    check_finite = check_bool("check_finite", check_finite)
    algorithm = check_choice("algorithm", algorithm, ALGORITHMS)
    x, w, b, (sh, sw), (ph, pw) = _check_forward_args(x, w, b, stride, padding, check_finite)
    workspace = _check_workspace(workspace)
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape  # noqa: E741 (O = output channels, as in the notes)
    Ho = _out_size(H, kh, sh, ph, "height")
    Wo = _out_size(W, kw, sw, pw, "width")
    x = np.ascontiguousarray(x)
    w_col = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(O, kh * kw * C)  # K = (i, j, c)
    arrays = None
    if workspace is not None:
        arrays = workspace._arrays(_geometry(x.shape, w.shape, (sh, sw), (ph, pw), x.dtype))
        arrays.generation += 1             # before colT is rewritten: older contexts become stale
    if algorithm == "auto":
        algorithm = "events" if np.count_nonzero(x) <= EVENTS_MAX_DENSITY * x.size else "gemm"
    yt = _work(arrays, "yt", (N * Ho * Wo, O), x.dtype)
    colT = col_sparse = None
    if algorithm == "gemm":
        xp = _work(arrays, "xp", (N, H + 2 * ph, W + 2 * pw, C), x.dtype)
        _pad_to_nhwc(x, ph, pw, xp)
        colT = _work(arrays, "colT", (N * Ho * Wo, C * kh * kw), x.dtype)
        _im2col(xp, kh, kw, sh, sw, Ho, Wo, colT)
        del xp
        np.dot(colT, w_col.T, out=yt)                        # Y.T, (N*Ho*Wo, O): NHWC output
    else:
        col_sparse = _sparse_colT(x, kh, kw, sh, sw, ph, pw, Ho, Wo,
                                  partial(_work, arrays), partial(_work_capacity, arrays))
        cptr, ccol, cval = col_sparse
        wt = np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(kh * kw * C, O)   # W_col.T, rows (i, j, c)
        _spmm(cptr, ccol, cval, wt, yt)                      # Y.T = colT @ W_col.T
    y = np.empty((N, O, Ho * Wo), x.dtype)                   # the caller's: never a work array
    bb = b if b is not None else np.zeros(1, dtype=x.dtype)
    bad = _nhwc_to_nchw(yt.reshape(N, Ho * Wo, O), np.ascontiguousarray(bb), b is not None, y, check_finite)
    ctx = Conv2dContext(colT=colT, w_col=w_col, x_shape=x.shape, w_shape=w.shape, out_hw=(Ho, Wo),
                        stride=(sh, sw), padding=(ph, pw), has_bias=b is not None, arrays=arrays,
                        generation=0 if arrays is None else arrays.generation, col_sparse=col_sparse)
    if bad:
        raise ValueError(f"x: the convolution overflowed {x.dtype} (x, w or b too large)")
    return y.reshape(N, O, Ho, Wo), ctx


def _check_result(name: str, what: str, *arrays) -> None:
    """With ``check_finite``: the results are finite too (a sum that overflowed the dtype is refused)."""
    for a in arrays:
        if a is not None and a.size and not np.isfinite(a).all():
            raise ValueError(f"{name}: {what} overflowed {a.dtype} (inputs too large)")


def _check_context(ctx) -> None:
    """The context's arrays agree with its shapes (it is opaque, but a hand-made or edited one must
    not make the kernels index out of bounds)."""
    try:
        N, C, H, W = (check_int("ctx.x_shape", int(v), lo=0) for v in ctx.x_shape)
        O, C2, kh, kw = (check_int("ctx.w_shape", int(v), lo=1) for v in ctx.w_shape)  # noqa: E741
        sh, sw = (check_int("ctx.stride", int(v), lo=1) for v in ctx.stride)
        ph, pw = (check_int("ctx.padding", int(v), lo=0) for v in ctx.padding)
        Ho, Wo = (int(v) for v in ctx.out_hw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"ctx: not a context made by conv2d_forward ({e})") from None
    ok = (C2 == C and ph < kh and pw < kw and H + 2 * ph >= kh and W + 2 * pw >= kw
          and (Ho, Wo) == ((H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)
          and isinstance(ctx.w_col, np.ndarray) and ctx.w_col.dtype in FLOAT_DTYPES
          and ctx.w_col.shape == (O, C * kh * kw) and isinstance(ctx.has_bias, (bool, np.bool_))
          and (ctx.colT is None) != (ctx.col_sparse is None))
    if ok and ctx.colT is not None:
        ok = (isinstance(ctx.colT, np.ndarray) and ctx.w_col.dtype == ctx.colT.dtype
              and ctx.colT.shape == (N * Ho * Wo, C * kh * kw) and ctx.colT.flags.c_contiguous)
    elif ok:
        cs = ctx.col_sparse
        ptr, col, val = cs if isinstance(cs, tuple) and len(cs) == 3 else (None,) * 3
        ok = (all(isinstance(a, np.ndarray) and a.ndim == 1 for a in (ptr, col, val))
              and ptr.dtype == np.int64 and col.dtype == np.int32 and val.dtype == ctx.w_col.dtype
              and ptr.shape == (N * Ho * Wo + 1,) and ptr[0] == 0 and bool(np.all(np.diff(ptr) >= 0))
              and col.size == ptr[-1] == val.size
              and (col.size == 0 or (0 <= col.min() and col.max() < C * kh * kw)))
    if not ok:
        raise ValueError("ctx: not a context made by conv2d_forward (its arrays and shapes disagree)")


def conv2d_backward(dy, ctx, *, need_dx=True, check_finite=True, workspace=None):
    """Gradients of :func:`conv2d_forward` (SPEC §3).

    ``dW = dY @ col.T``, ``db[o] = sum_{n,p,q} dy[n, o, p, q]``, ``dX = col2im(W_col.T @ dY)``.

    Parameters
    ----------
    dy : ndarray, shape ``(N, O, Ho, Wo)``, dtype of the forward input
        Gradient of the loss with respect to ``y``.
    ctx : Conv2dContext
        From :func:`conv2d_forward`.
    need_dx : bool
        If False, ``dx`` is not computed (e.g. the first layer) and None is returned for it.
    check_finite : bool
        Reject NaN/inf in ``dy`` and gradients that overflowed (see :func:`conv2d_forward`).
    workspace : Conv2dWorkspace or None
        Work arrays to reuse, owned by the caller (normally the one given to the forward pass).
        None (default): fresh arrays.

    Returns
    -------
    dx : ndarray ``(N, C, H, W)`` or None
    dw : ndarray ``(O, C, kh, kw)``
    db : ndarray ``(O,)`` or None (None when forward had no bias)
        All freshly allocated (never work arrays).

    Raises
    ------
    RuntimeError
        ``ctx`` is stale: a later :func:`conv2d_forward` with the same workspace and the same shapes
        has rewritten its im2col matrix.
    """
    if not isinstance(ctx, Conv2dContext):
        raise TypeError(f"ctx: expected a Conv2dContext from conv2d_forward, got {type(ctx).__name__}")
    workspace = _check_workspace(workspace)
    need_dx = check_bool("need_dx", need_dx)
    check_finite = check_bool("check_finite", check_finite)
    if isinstance(ctx.arrays, _Arrays) and ctx.arrays.generation != ctx.generation:
        raise RuntimeError("ctx: stale Conv2dContext: a later conv2d_forward with the same workspace and "
                           "the same shapes has rewritten its im2col matrix; run backward before the next "
                           "forward, or give each pending forward its own workspace")
    _check_context(ctx)
    N, C, H, W = ctx.x_shape
    O, _, kh, kw = ctx.w_shape  # noqa: E741 (O = output channels, as in the notes)
    Ho, Wo = ctx.out_hw
    dy = check_array("dy", dy, ndim=4, dtypes=FLOAT_DTYPES, shape=(N, O, Ho, Wo), finite=check_finite)
    check_same_dtype("x (forward input)", ctx.w_col, "dy", dy)
    sh, sw = ctx.stride
    ph, pw = ctx.padding
    HoWo = Ho * Wo
    arrays = None
    if workspace is not None:
        arrays = workspace._arrays(_geometry(ctx.x_shape, ctx.w_shape, ctx.stride, ctx.padding, dy.dtype))
    threads = numba.get_num_threads()   # at 1, col2im and unpadding run their serial functions (a prange
                                        # body compiled slower for these), dW one block
    dyt = _work(arrays, "dyt", (N * HoWo, O), dy.dtype)     # dY.T, (N*Ho*Wo, O)
    db64 = np.empty(O, dtype=np.float64)
    _nchw_to_nhwc(np.ascontiguousarray(dy).reshape(N, O, HoWo), dyt.reshape(N, HoWo, O), db64)
    if ctx.colT is not None:
        dw = np.dot(dyt.T, ctx.colT)                         # dW = dY @ col.T, K = (i, j, c)
        dw = np.ascontiguousarray(dw.reshape(O, kh, kw, C).transpose(0, 3, 1, 2))
    else:
        dwt = np.empty((kh * kw * C, O), dy.dtype)
        _spmm_t(*ctx.col_sparse, dyt, dwt, threads)                           # dW.T = colT.T @ dY.T
        dw = np.ascontiguousarray(dwt.reshape(kh, kw, C, O).transpose(3, 2, 0, 1))
    db = db64.astype(dy.dtype) if ctx.has_bias else None
    dx = None
    if need_dx:
        dxp = _work(arrays, "dxp", (N, H + 2 * ph, W + 2 * pw, C), dy.dtype)
        K = C * kh * kw
        per_image = K * HoWo * dy.itemsize
        nb = max(1, min(N, _DX_CHUNK_BYTES // max(per_image, 1)))
        n_chunks = max(1, -(-N // nb))                       # (N = 0: one empty chunk)
        nb = max(1, -(-N // n_chunks))                       # even chunks, no tiny last one
        buf = _work(arrays, "dcolT", (nb * HoWo, K), dy.dtype)
        dcolT = buf                                          # (bound even when N = 0)
        for n0 in range(0, N, nb):
            m = min(nb, N - n0)
            dcolT = buf[: m * HoWo]
            np.dot(dyt[n0 * HoWo:(n0 + m) * HoWo], ctx.w_col, out=dcolT)   # (W_col.T @ dY).T
            if threads > 1:
                _col2im_parallel(dcolT, n0, kh, kw, sh, sw, Ho, Wo, dxp, threads)
            else:
                _col2im(dcolT, n0, kh, kw, sh, sw, Ho, Wo, dxp, 0, m)
        del dcolT, buf
        dx = np.empty((N, C, H, W), dy.dtype)
        bad = (_unpad_parallel(dxp, ph, pw, dx, check_finite, threads) if threads > 1
               else _unpad_from_nhwc(dxp, ph, pw, dx, check_finite, 0, N))
        if bad:
            raise ValueError(f"dy: the input gradient dx overflowed {dy.dtype} (dy or w too large)")
    if check_finite:
        _check_result("dy", "the weight or bias gradient", dw, db)
    return dx, dw, db


# ---------------------------------------------------------------------------------------------
# warm-up
# ---------------------------------------------------------------------------------------------
def _warmup() -> None:
    """Compile (or load from cache) every kernel of this module, float32 and float64."""
    for dt in FLOAT_DTYPES:
        x = np.ones((1, 2, 4, 4), dtype=dt)
        w = np.ones((3, 2, 3, 2), dtype=dt)
        b = np.zeros(3, dtype=dt)
        y, ctx = conv2d_forward(x, w, b, stride=(1, 2), padding=1)
        conv2d_backward(np.ones_like(y), ctx)
        y, ctx = conv2d_forward(x, w)
        conv2d_backward(np.ones_like(y), ctx, need_dx=False)
        y, ctx = conv2d_forward(x, w, b, stride=(1, 2), padding=1, algorithm="events")
        conv2d_backward(np.ones_like(y), ctx)
