"""Paired statistics for comparing two classifiers on the same test images.

Used by the MSE-NAS comparisons (``examples/nas_crossval.py``, ``examples/nas_noise_energy.py``):
with 0/1 hit vectors ``w`` and ``f`` over the same ``N`` images (``w[i]`` = network A classifies
image ``i`` correctly), the paired difference ``d = w - f`` has mean ``acc_A - acc_B`` and, each image
tested once, standard error ``std(d, ddof=1) / sqrt(N)``; the exact McNemar test is the two-sided
sign test on the discordant images (those only one of the two networks gets right).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["paired_stats", "paired_mean_se"]


def _hit_vector(name: str, v) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim != 1 or a.dtype.kind not in "biu" or (a.size and (a.min() < 0 or a.max() > 1)):
        raise ValueError(f"{name}: a 1-D vector of 0/1 hits expected, got shape {a.shape} dtype {a.dtype}")
    return a.astype(np.float64)


def paired_stats(win, fixed) -> dict:
    """Paired comparison of two 0/1 hit vectors over the same images: ``n``, the accuracies
    ``winner`` and ``fixed``, the mean difference ``diff``, its standard error ``se_images``, the
    discordant counts ``only_winner`` / ``only_fixed`` and the exact two-sided McNemar p-value."""
    from scipy.stats import binomtest

    win, fixed = _hit_vector("win", win), _hit_vector("fixed", fixed)
    if win.shape != fixed.shape or len(win) < 2:
        raise ValueError("win, fixed: two 1-D hit vectors of the same length >= 2 expected")
    d = win - fixed
    only_w, only_f = int((d > 0).sum()), int((d < 0).sum())
    p = binomtest(only_w, only_w + only_f, 0.5).pvalue if only_w + only_f else 1.0
    return {"n": len(d), "winner": float(win.mean()), "fixed": float(fixed.mean()), "diff": float(d.mean()),
            "se_images": float(d.std(ddof=1) / math.sqrt(len(d))), "only_winner": only_w, "only_fixed": only_f,
            "mcnemar_p": float(p)}


def paired_mean_se(d) -> tuple[float, float]:
    """``(mean, std(d, ddof=1) / sqrt(n))`` of per-image paired values ``d`` (at least two)."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2 or not np.isfinite(d).all():
        raise ValueError(f"d: a finite 1-D vector of at least 2 values expected, got shape {d.shape}")
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
