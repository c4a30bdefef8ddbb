"""The STBP checkpoint format (SPEC §1: no pickle), as plain arrays; the trainer command writes them
into its run directory (atomically, :mod:`refsnn.runs`).

Layout (all plain arrays, read with ``allow_pickle=False``):

* ``format`` — the string ``"refsnn.stbp.checkpoint/1"``;
* ``meta_json`` — a string holding a JSON object (config, epoch, metrics history, ...);
* ``param/<node>.<name>``, ``buffer/<node>.<name>`` — :meth:`Network.state_arrays`;
* ``optim/kind``, ``optim/steps``, ``optim/<m|v|buf>/<node>.<name>`` — the optimiser state.

Foreign arrays or those of another architecture give a ``ValueError`` naming the source and what is
wrong.
"""
from __future__ import annotations

import json

import numpy as np

from refsnn.io import parse_json

__all__ = ["FORMAT", "checkpoint_arrays", "checkpoint_meta", "restore_checkpoint"]

FORMAT = "refsnn.stbp.checkpoint/1"


def checkpoint_arrays(net, optimizer=None, meta: dict | None = None) -> dict[str, np.ndarray]:
    """Network parameters + buffers, optimiser state and ``meta`` (JSON-able) as a dict of arrays."""
    arrays = {"format": np.array(FORMAT), "meta_json": np.array(json.dumps(meta or {}, sort_keys=True))}
    arrays.update(net.state_arrays())
    if optimizer is not None:
        arrays.update(optimizer.state_arrays())
    return arrays


def checkpoint_meta(arrays, *, source: str = "checkpoint") -> dict:
    """The ``meta`` of checkpoint arrays, after checking their format marker."""
    if "format" not in arrays or "meta_json" not in arrays:
        raise ValueError(f"{source}: not an STBP checkpoint (no format/meta_json)")
    fmt = str(arrays["format"])
    if fmt != FORMAT:
        raise ValueError(f"{source}: format {fmt!r} is not {FORMAT!r}; not an STBP checkpoint")
    return parse_json(str(arrays["meta_json"]), name=f"{source}: meta_json")


def restore_checkpoint(arrays, net, optimizer=None, *, source: str = "checkpoint") -> dict:
    """Restore ``net`` (and ``optimizer``) in place from checkpoint arrays; returns the stored ``meta``."""
    meta = checkpoint_meta(arrays, source=source)
    net.load_state_arrays(arrays, source=source)
    if optimizer is not None:
        optimizer.load_state_arrays(arrays, source=source)
    return meta
