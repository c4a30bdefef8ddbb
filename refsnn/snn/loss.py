"""Readout and losses over per-step logits (SPEC §4.1).

The network's final linear layer gives logits ``z[t, b, k]`` at every step ``t < T``; the output is
their mean over T, ``o[b, k] = (1/T) sum_t z[t, b, k]``, and the prediction ``argmax_k o[b, k]``.

Label smoothing ``eps`` (PyTorch's ``CrossEntropyLoss(label_smoothing=eps)``): target distribution
``q[b, k] = (1 - eps) [k = y_b] + eps / K``. With ``p = softmax``:

* ``ce`` (default):  ``L = (1/B) sum_b -sum_k q[b, k] log softmax(o[b])_k``;
  ``dL/dz[t, b] = (softmax(o[b]) - q[b]) / (B T)``.
* ``tet`` (Deng et al. 2022, temporal efficient training, without its optional MSE term):
  ``L = (1/T) sum_t (1/B) sum_b -sum_k q[b, k] log softmax(z[t, b])_k``;
  ``dL/dz[t, b] = (softmax(z[t, b]) - q[b]) / (B T)``.

Log-softmax is computed stably (max subtracted) in the logits' dtype.
"""
from __future__ import annotations

import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array, check_choice, check_float

__all__ = ["LOSSES", "loss_and_grad", "readout", "log_softmax"]

LOSSES = ("ce", "tet")


def log_softmax(z: np.ndarray) -> np.ndarray:
    """``log softmax`` over the last axis, stable."""
    m = z.max(axis=-1, keepdims=True)
    zs = z - m
    return zs - np.log(np.exp(zs).sum(axis=-1, keepdims=True))


def readout(logits: np.ndarray) -> np.ndarray:
    """Mean over T of per-step logits ``[T, B, K] -> [B, K]``."""
    logits = check_array("logits", logits, ndim=3)
    return logits.mean(axis=0)


def _targets(y, B, K, eps, dtype):
    q = np.full((B, K), eps / K, dtype=dtype)
    q[np.arange(B), y] += dtype.type(1.0 - eps)
    return q


def loss_and_grad(logits: np.ndarray, labels: np.ndarray, *, loss: str = "ce",
                  label_smoothing: float = 0.0) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, its gradient w.r.t. the per-step logits, and the readout (module docstring).

    Parameters
    ----------
    logits : ndarray ``[T, B, K]``, float32/float64
    labels : int ndarray ``(B,)`` in ``[0, K)``
    loss : ``"ce"`` (cross-entropy of the mean over T) or ``"tet"`` (mean over t of CE(z_t))
    label_smoothing : eps in ``[0, 1)``

    Returns
    -------
    loss : float
    dlogits : ndarray ``[T, B, K]``, dtype of ``logits``
    output : ndarray ``[B, K]``, the readout (mean over T)
    """
    logits = check_array("logits", logits, ndim=3, dtypes=FLOAT_DTYPES)
    check_choice("loss", loss, LOSSES)
    eps = check_float("label_smoothing", label_smoothing, lo=0.0, hi=1.0, hi_open=True)
    T, B, K = logits.shape
    labels = check_array("labels", labels, ndim=1, dtypes=None, shape=(B,))
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels: expected an integer array, got {labels.dtype}")
    if B and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"labels: expected values in [0, {K}), got range [{labels.min()}, {labels.max()}]")
    dt = logits.dtype
    q = _targets(labels, B, K, eps, dt)
    out = logits.mean(axis=0)
    if loss == "ce":
        lp = log_softmax(out)
        value = float(-(q * lp).sum(dtype=np.float64) / B)
        g = (np.exp(lp) - q) / dt.type(B * T)
        dlogits = np.broadcast_to(g, logits.shape).astype(dt)
    else:
        lp = log_softmax(logits)
        value = float(-(q * lp).sum(dtype=np.float64) / (B * T))
        dlogits = ((np.exp(lp) - q) / dt.type(B * T)).astype(dt, copy=False)
    return value, dlogits, out
