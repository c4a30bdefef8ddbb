"""The STBP epoch loop and evaluation (SPEC §4.1): library code, no files, no printing.

One training step on a batch ``(x [T, B, ...], y [B])``: forward over all T steps, the loss of the
logits (``ce``: cross-entropy of the mean over T; ``tet``: mean over t of CE(logits_t); optional
label smoothing; :func:`refsnn.snn.loss.loss_and_grad`), the STBP backward through time
(surrogate gradients), then one optimiser step with the learning rate ``lr_at(opt.steps)``
(the caller's schedule, e.g. :func:`refsnn.snn.optim.cosine_lr`).

Evaluation: eval mode (BN running statistics), the class is the arg-max of the logits averaged
over T.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from refsnn.datasets import iterate_batches
from refsnn.snn.loss import loss_and_grad

__all__ = ["train_epoch", "evaluate_per_sample", "evaluate"]


def train_epoch(net, opt, batches: Iterable, *, lr_at: Callable[[int], float], loss: str = "ce",
                label_smoothing: float = 0.0) -> dict:
    """One pass of STBP training over ``batches``; returns ``{"loss", "train_accuracy", "lr",
    "samples"}`` (mean loss and accuracy over the samples seen, the last learning rate).

    ``net`` is a :class:`~refsnn.snn.network.Network` in train mode, ``opt`` an optimiser of
    :mod:`refsnn.snn.optim` over ``net.parameters()``; each batch ``x`` is cast to the network's
    dtype. ``FloatingPointError`` if the loss becomes non-finite.
    """
    loss_sum, correct, seen = 0.0, 0, 0
    lr = float("nan")
    for x, y in batches:
        if x.dtype != net.dtype:
            x = x.astype(net.dtype)
        lr = lr_at(opt.steps)
        logits = net.forward(x)
        value, dlogits, mean_logits = loss_and_grad(logits, y, loss=loss, label_smoothing=label_smoothing)
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value}; try a smaller learning rate")
        net.backward(dlogits)
        opt.step(net.gradients(), lr)
        loss_sum += value * len(y)
        correct += int((mean_logits.argmax(axis=1) == y).sum())
        seen += len(y)
    return {"loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1), "lr": lr, "samples": seen}


def evaluate_per_sample(net, ds, split: str, batch_size: int) -> tuple[np.ndarray, float]:
    """``(hits, spikes_per_sample)`` of ``net`` (eval mode) on a split: ``hits`` is bool ``[N]``, whether
    the arg-max of the logits averaged over T is the label of sample i (in split order). The network
    is left in train mode."""
    net.eval()
    hits, spikes = [], 0.0
    for x, y in iterate_batches(ds, split, batch_size):
        if x.dtype != net.dtype:
            x = x.astype(net.dtype)
        out = net.forward(x).mean(axis=0)
        hits.append(out.argmax(axis=1) == y)
        spikes += net.spikes_per_sample() * len(y)
    net.train()
    hits = np.concatenate(hits) if hits else np.zeros(0, bool)
    return hits, spikes / max(len(hits), 1)


def evaluate(net, ds, split: str, batch_size: int) -> tuple[float, float]:
    """``(accuracy, spikes_per_sample)`` of ``net`` (eval mode) on a split."""
    hits, spikes = evaluate_per_sample(net, ds, split, batch_size)
    return int(hits.sum()) / max(len(hits), 1), spikes
