"""GRU and LSTM cells for a batch of members with their own weights (the EC paper's ES-GRU / ES-LSTM
baselines; one cell step per environment step).

Weight layouts are PyTorch's ``nn.GRUCell`` / ``nn.LSTMCell`` (``weight_ih (G H, I)``, ``weight_hh
(G H, H)``, ``bias_ih (G H,)``, ``bias_hh (G H,)``, gate blocks stacked along the first axis), with a
leading member axis ``B``: every member of a population evaluates its own perturbed weights.

GRU (gates ``r, z, n``, PyTorch's equations; flax's ``GRUCell`` of the reference code computes the
same function)::

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

LSTM (gates ``i, f, g, o``; flax's ``OptimizedLSTMCell`` of the reference code is the same cell)::

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      f = sigmoid(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)         o = sigmoid(W_io x + b_io + W_ho h + b_ho)
    c' = f * c + i * g                               h' = o * tanh(c')

``sigmoid(a) = 1 / (1 + exp(-a))`` (an overflow of ``exp`` gives the correct limit 0). The batched
forms (:func:`gru_cell`, :func:`lstm_cell`) compute the matrix-vector products with ``np.matmul``
over the member axis; the oracles (:func:`gru_cell_ref`, :func:`lstm_cell_ref`, first below) state
the same equations one member and one gate at a time. No backward: these networks are only evolved.
"""
from __future__ import annotations

import numpy as np

from refsnn._checks import check_array

__all__ = ["gru_cell", "lstm_cell", "gru_cell_ref", "lstm_cell_ref", "sigmoid"]


def sigmoid(a: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-a))`` in ``a``'s dtype (``exp`` overflow -> 0, without a warning)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-a))


def _check(name: str, x, h, w_ih, w_hh, b_ih, b_hh, gates: int, c=None):
    """Types and shapes (one float dtype for all; finiteness is the caller's: the members' weights are
    checked once when they are built, not every step)."""
    x = check_array("x", x, ndim=2, finite=False)
    dt = (x.dtype,)
    B = x.shape[0]
    h = check_array("h", h, ndim=2, dtypes=dt, shape=(B, None), finite=False)
    I, H = x.shape[1], h.shape[1]
    for arg, a, shape in (("w_ih", w_ih, (B, gates * H, I)), ("w_hh", w_hh, (B, gates * H, H)),
                          ("b_ih", b_ih, (B, gates * H)), ("b_hh", b_hh, (B, gates * H))):
        check_array(arg, a, dtypes=dt, shape=shape, finite=False)
    if c is not None:
        check_array("c", c, dtypes=dt, shape=h.shape, finite=False)
    return B, I, H


def _gates(x, h, w_ih, w_hh, b_ih, b_hh):
    """``(W_ih x + b_ih, W_hh h + b_hh)`` per member: ``(B, G H)`` each."""
    gi = np.matmul(w_ih, x[:, :, None])[:, :, 0] + b_ih
    gh = np.matmul(w_hh, h[:, :, None])[:, :, 0] + b_hh
    return gi, gh


# -- oracles: the equations one member and one gate at a time ------------------------------------------
def _affine(w, b, v, gate, H):
    """``W[gate] v + b[gate]`` for one member (rows ``gate*H .. gate*H + H - 1``)."""
    rows = slice(gate * H, (gate + 1) * H)
    return w[rows] @ v + b[rows]


def gru_cell_ref(x, h, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
    """Oracle of :func:`gru_cell`."""
    out = np.empty_like(np.asarray(h))
    H = out.shape[1]
    for m in range(out.shape[0]):
        r = sigmoid(_affine(w_ih[m], b_ih[m], x[m], 0, H) + _affine(w_hh[m], b_hh[m], h[m], 0, H))
        z = sigmoid(_affine(w_ih[m], b_ih[m], x[m], 1, H) + _affine(w_hh[m], b_hh[m], h[m], 1, H))
        n = np.tanh(_affine(w_ih[m], b_ih[m], x[m], 2, H) + r * _affine(w_hh[m], b_hh[m], h[m], 2, H))
        out[m] = (1 - z) * n + z * h[m]
    return out


def lstm_cell_ref(x, h, c, w_ih, w_hh, b_ih, b_hh) -> tuple[np.ndarray, np.ndarray]:
    """Oracle of :func:`lstm_cell`."""
    h_out, c_out = np.empty_like(np.asarray(h)), np.empty_like(np.asarray(c))
    H = h_out.shape[1]
    for m in range(h_out.shape[0]):
        pre = [_affine(w_ih[m], b_ih[m], x[m], k, H) + _affine(w_hh[m], b_hh[m], h[m], k, H) for k in range(4)]
        i, f, g, o = sigmoid(pre[0]), sigmoid(pre[1]), np.tanh(pre[2]), sigmoid(pre[3])
        c_out[m] = f * c[m] + i * g
        h_out[m] = o * np.tanh(c_out[m])
    return h_out, c_out


# -- batched forms: np.matmul over the member axis --------------------------------------------------------
def gru_cell(x: np.ndarray, h: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray,
             b_hh: np.ndarray) -> np.ndarray:
    """One GRU step for ``B`` members: ``x (B, I)``, ``h (B, H)``, ``w_ih (B, 3H, I)``,
    ``w_hh (B, 3H, H)``, ``b_ih, b_hh (B, 3H)`` -> ``h' (B, H)`` (module docstring)."""
    _, _, H = _check("a GRU", x, h, w_ih, w_hh, b_ih, b_hh, 3)
    gi, gh = _gates(x, h, w_ih, w_hh, b_ih, b_hh)
    r = sigmoid(gi[:, :H] + gh[:, :H])
    z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h


def lstm_cell(x: np.ndarray, h: np.ndarray, c: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray,
              b_hh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM step for ``B`` members: ``x (B, I)``, ``h, c (B, H)``, ``w_ih (B, 4H, I)``,
    ``w_hh (B, 4H, H)``, ``b_ih, b_hh (B, 4H)`` -> ``(h', c')``, each ``(B, H)`` (module docstring)."""
    _, _, H = _check("an LSTM", x, h, w_ih, w_hh, b_ih, b_hh, 4, c=c)
    gi, gh = _gates(x, h, w_ih, w_hh, b_ih, b_hh)
    a = gi + gh
    i = sigmoid(a[:, :H])
    f = sigmoid(a[:, H:2 * H])
    g = np.tanh(a[:, 2 * H:3 * H])
    o = sigmoid(a[:, 3 * H:])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new
