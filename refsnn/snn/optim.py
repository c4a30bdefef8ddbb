"""Optimisers and the learning-rate schedule (SPEC §4.1), PyTorch semantics.

Both optimisers update parameter arrays **in place** from gradients aligned with them, and keep
their state in plain arrays (``state_arrays``/``load_state_arrays``), so a checkpoint is an ``.npz``.

SGD (``torch.optim.SGD``, dampening 0)::

    g <- g + wd * p;   buf <- mu * buf + g  (buf = g at the first step);
    p <- p - lr * (g + mu * buf if nesterov else buf)

AdamW (``torch.optim.AdamW``, decoupled weight decay, no amsgrad)::

    p <- p (1 - lr * wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    p <- p - lr * (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps)        (k = step count)

Weight decay applies to every parameter (PyTorch's default), BN affine and biases included.
State math is done in the parameters' dtype.

Schedule (:func:`cosine_lr`): linear warm-up from ``lr/warmup`` to ``lr`` over the first
``warmup`` steps, then cosine decay to ``min_lr`` at ``total`` steps::

    lr(s) = base (s + 1) / warmup                                          s < warmup
    lr(s) = min_lr + (base - min_lr) (1 + cos(pi (s - warmup) / (total - warmup))) / 2
"""
from __future__ import annotations

import math

import numpy as np

from refsnn._checks import check_choice, check_float, check_int

__all__ = ["SGD", "AdamW", "make_optimizer", "cosine_lr", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "adamw")


class _Optimizer:
    kind = ""

    def __init__(self, params):
        self.names = [n for n, _ in params]
        self.params = [p for _, p in params]
        if len(set(self.names)) != len(self.names):
            raise ValueError("params: duplicate parameter names")
        self.steps = 0

    def _grads(self, grads):
        gl = [g for _, g in grads] if grads and isinstance(grads[0], tuple) else list(grads)
        if len(gl) != len(self.params):
            raise ValueError(f"grads: expected {len(self.params)} gradients, got {len(gl)}")
        for n, p, g in zip(self.names, self.params, gl):
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(f"grads: {n} has shape {g.shape} {g.dtype}, parameter is {p.shape} {p.dtype}")
        return gl

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {"optim/steps": np.array(self.steps, np.int64), "optim/kind": np.array(self.kind)}
        for key, bufs in self._state().items():
            for n, b in zip(self.names, bufs):
                out[f"optim/{key}/{n}"] = b.copy()
        return out

    def load_state_arrays(self, arrays, *, source="arrays") -> None:
        kind = str(arrays.get("optim/kind", ""))
        if kind != self.kind:
            raise ValueError(f"{source}: optimiser state is for {kind or 'nothing'!r}, not {self.kind!r}")
        self.steps = int(arrays["optim/steps"])
        for key, bufs in self._state().items():
            for n, b in zip(self.names, bufs):
                k = f"optim/{key}/{n}"
                if k not in arrays:
                    raise ValueError(f"{source}: missing {k}")
                if arrays[k].shape != b.shape:
                    raise ValueError(f"{source}: {k} has shape {arrays[k].shape}, expected {b.shape}")
                b[...] = arrays[k]


class SGD(_Optimizer):
    """SGD with momentum, weight decay and optional Nesterov (module docstring)."""

    kind = "sgd"

    def __init__(self, params, *, momentum=0.9, weight_decay=0.0, nesterov=False):
        super().__init__(params)
        self.momentum = check_float("momentum", momentum, lo=0.0, hi=1.0, hi_open=True)
        self.weight_decay = check_float("weight_decay", weight_decay, lo=0.0)
        self.nesterov = bool(nesterov)
        self.buf = [np.zeros_like(p) for p in self.params]

    def _state(self):
        return {"buf": self.buf}

    def step(self, grads, lr: float) -> None:
        gl = self._grads(grads)
        lr = check_float("lr", lr, lo=0.0)
        mu, wd = self.momentum, self.weight_decay
        for p, g, b in zip(self.params, gl, self.buf):
            dt = p.dtype.type
            if wd:
                g = g + dt(wd) * p
            if mu:
                if self.steps == 0:
                    b[...] = g
                else:
                    b *= dt(mu)
                    b += g
                d = g + dt(mu) * b if self.nesterov else b
            else:
                d = g
            p -= dt(lr) * d
        self.steps += 1


class AdamW(_Optimizer):
    """AdamW (decoupled weight decay; module docstring)."""

    kind = "adamw"

    def __init__(self, params, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params)
        self.b1 = check_float("betas[0]", betas[0], lo=0.0, hi=1.0, hi_open=True)
        self.b2 = check_float("betas[1]", betas[1], lo=0.0, hi=1.0, hi_open=True)
        self.eps = check_float("eps", eps, lo=0.0, lo_open=True)
        self.weight_decay = check_float("weight_decay", weight_decay, lo=0.0)
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]

    def _state(self):
        return {"m": self.m, "v": self.v}

    def step(self, grads, lr: float) -> None:
        gl = self._grads(grads)
        lr = check_float("lr", lr, lo=0.0)
        self.steps += 1
        k = self.steps
        bc1 = 1.0 - self.b1 ** k
        bc2 = 1.0 - self.b2 ** k
        for p, g, m, v in zip(self.params, gl, self.m, self.v):
            dt = p.dtype.type
            if self.weight_decay:
                p *= dt(1.0 - lr * self.weight_decay)
            m *= dt(self.b1)
            m += dt(1.0 - self.b1) * g
            v *= dt(self.b2)
            v += dt(1.0 - self.b2) * (g * g)
            denom = np.sqrt(v / dt(bc2))
            denom += dt(self.eps)
            p -= dt(lr / bc1) * m / denom


def make_optimizer(name: str, params, *, weight_decay: float | None = None, momentum: float = 0.9):
    """``"sgd"`` (momentum 0.9, wd 5e-4 unless given) or ``"adamw"`` (wd 0.01 unless given)."""
    check_choice("optimizer", name, OPTIMIZERS)
    if name == "sgd":
        return SGD(params, momentum=momentum, weight_decay=5e-4 if weight_decay is None else weight_decay)
    return AdamW(params, weight_decay=0.01 if weight_decay is None else weight_decay)


def cosine_lr(step: int, *, base: float, total: int, warmup: int = 0, min_lr: float = 0.0) -> float:
    """Learning rate at optimiser step ``step`` (0-based; module docstring)."""
    step = check_int("step", step, lo=0)
    total = check_int("total", total, lo=1)
    warmup = check_int("warmup", warmup, lo=0)
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if total <= warmup:
        return base
    frac = min(1.0, (step - warmup) / (total - warmup))
    return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))
