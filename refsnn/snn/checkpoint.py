"""Checkpoints of an STBP run as one ``.npz`` (SPEC §1: atomic, no pickle).

Layout (all plain arrays, read with ``allow_pickle=False``):

* ``format`` — the string ``"refsnn.stbp.checkpoint/1"``;
* ``meta_json`` — a string holding a JSON object (config, epoch, metrics history, ...);
* ``param/<node>.<name>``, ``buffer/<node>.<name>`` — :meth:`Network.state_arrays`;
* ``optim/kind``, ``optim/steps``, ``optim/<m|v|buf>/<node>.<name>`` — the optimiser state.

A truncated file, a foreign ``.npz`` or one of another architecture gives a ``ValueError`` naming
the file and what is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from refsnn.io import atomic_savez, load_npz

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "read_checkpoint"]

FORMAT = "refsnn.stbp.checkpoint/1"


def save_checkpoint(path, net, optimizer=None, meta: dict | None = None, *, compressed: bool = False) -> Path:
    """Write network parameters + buffers, optimiser state and ``meta`` (JSON-able) atomically."""
    arrays = {"format": np.array(FORMAT), "meta_json": np.array(json.dumps(meta or {}, sort_keys=True))}
    arrays.update(net.state_arrays())
    if optimizer is not None:
        arrays.update(optimizer.state_arrays())
    return atomic_savez(path, arrays, compressed=compressed)


def read_checkpoint(path) -> tuple[dict, dict]:
    """``(arrays, meta)`` of a checkpoint file, after checking its format marker."""
    arrays = load_npz(path, required=("format", "meta_json"))
    fmt = str(arrays["format"])
    if fmt != FORMAT:
        raise ValueError(f"{path}: format {fmt!r} is not {FORMAT!r}; not an STBP checkpoint")
    try:
        meta = json.loads(str(arrays["meta_json"]))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: meta_json is not valid JSON: {e}") from None
    return arrays, meta


def load_checkpoint(path, net, optimizer=None) -> dict:
    """Restore ``net`` (and ``optimizer``) in place from ``path``; returns the stored ``meta``."""
    arrays, meta = read_checkpoint(path)
    net.load_state_arrays(arrays, source=str(path))
    if optimizer is not None:
        optimizer.load_state_arrays(arrays, source=str(path))
    return meta
