"""Reading a NIR graph file (HDF5, the layout ``nir.write`` produces) within the read budget of
:mod:`refsnn.io` (``h5py``, installed with the optional ``refsnn[nir]``).

``nir.read`` loads every dataset of the file, whatever its size: a small file holding a dataset with
a fill value (no bytes on disk) or a gzip-compressed one can make it allocate gigabytes.
:func:`read_nir` reads only what :func:`refsnn.nir.simulate.simulate` uses -- ``node/type``,
``node/edges``, the metadata keys of :func:`refsnn.nir.simulate.settings` and per node its ``type``
and the parameters of that type (:data:`refsnn.nir.graph.PARAMS`) -- and charges each dataset's
declared size to a :class:`refsnn.io.ReadBudget` *before* reading it: shape x itemsize from the HDF5
metadata, and for variable-length strings 16 bytes per element plus, once per file, the file's size
(HDF5 stores them unfiltered, so together they cannot exceed it). The result is NIR's dict form
(``NIRGraph.to_dict()`` layout, strings decoded), which the simulation checks value by value.
Every problem is a ``ValueError`` naming the file (and the dataset).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from refsnn.io import ReadBudget, declared_bytes
from refsnn.nir.graph import MAX_NODES, PARAMS, show

try:    # installed with the optional nir package (refsnn[nir]); refsnn.commands.nir says so when missing
    import h5py
except ImportError:     # pragma: no cover - without the extra
    h5py = None

__all__ = ["METADATA_KEYS", "read_nir"]

#: the metadata the simulation reads (:func:`refsnn.nir.simulate.settings`)
METADATA_KEYS = ("discretisation", "reset", "threshold", "dt")
#: bytes charged per element of a variable-length dataset (the pointer and length h5py allocates)
_VLEN_ELEMENT = 16


class _Reader:
    def __init__(self, h5py, path: Path, budget: ReadBudget):
        self.h5py, self.path, self.budget = h5py, path, budget
        self.vlen_charged = False

    def error(self, where: str, msg: str) -> ValueError:
        return ValueError(f"{self.path}: {where}: {msg}")

    def group(self, parent, key: str, where: str):
        item = parent.get(key)
        if not isinstance(item, self.h5py.Group):
            raise self.error(where, f"expected a group {key!r}" + ("" if item is None else ", got a dataset"))
        return item

    def dataset(self, parent, key: str, where: str):
        """The value of the dataset ``parent[key]`` (``None`` if absent), its size charged first."""
        item = parent.get(key)
        if item is None:
            return None
        if not isinstance(item, self.h5py.Dataset):
            raise self.error(f"{where}/{key}", "expected a dataset, got a group")
        shape = item.shape
        if shape is None:   # an empty (null) dataspace
            raise self.error(f"{where}/{key}", "holds no value (empty dataspace)")
        dt = item.dtype
        vlen = dt.kind == "O" or self.h5py.check_vlen_dtype(dt) is not None
        self.budget.charge(declared_bytes(shape, np.dtype((np.void, _VLEN_ELEMENT)) if vlen else dt),
                           f"dataset {where}/{key} (shape {shape}, {dt})")
        if vlen and not self.vlen_charged:
            self.budget.charge(self.path.stat().st_size, "its variable-length strings (at most the file's size)")
            self.vlen_charged = True
        value = item[()]
        if isinstance(value, bytes):
            return _decode(value, self.error, f"{where}/{key}")
        if isinstance(value, np.ndarray) and value.dtype.kind == "O":
            return np.array([_decode(v, self.error, f"{where}/{key}") if isinstance(v, bytes) else v
                             for v in value.ravel()], dtype=object).reshape(value.shape)
        return value

    def graph(self, f) -> dict:
        root = self.group(f, "node", "/")
        kind = self.dataset(root, "type", "node")
        if kind != "NIRGraph":
            raise self.error("node/type", f"expected 'NIRGraph', got {show(kind)}")
        nodes, group = {}, self.group(root, "nodes", "node")
        if len(group) > MAX_NODES:
            raise self.error("node/nodes", f"{len(group)} nodes, more than the {MAX_NODES} refsnn simulates")
        for name in group:
            where = f"node/nodes/{name}"
            g = self.group(root["nodes"], name, "node/nodes")
            t = self.dataset(g, "type", where)
            node = {"type": t}
            for key in PARAMS.get(t, ()) if isinstance(t, str) else ():
                v = self.dataset(g, key, where)
                if v is not None:
                    node[key] = v
            nodes[name] = node
        edges = self.dataset(root, "edges", "node")
        meta = {}
        if isinstance(root.get("metadata"), self.h5py.Group):
            for key in METADATA_KEYS:
                v = self.dataset(root["metadata"], key, "node/metadata")
                if v is not None:
                    meta[key] = v
        return {"type": "NIRGraph", "nodes": nodes, "edges": [] if edges is None else edges, "metadata": meta}


def _decode(b: bytes, error, where: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise error(where, "text is not UTF-8") from None


def read_nir(path, *, budget: ReadBudget | None = None) -> dict:
    """NIR's dict form of the graph in the HDF5 file ``path`` (module docstring); ``FileNotFoundError``
    if there is no such file, ``ValueError`` naming it for a file that is not a NIR graph or declares
    more than the read budget."""
    if h5py is None:
        raise ValueError("reading a NIR file needs h5py: pip install 'refsnn[nir]'")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    reader = _Reader(h5py, path, budget or ReadBudget(path))
    try:
        with h5py.File(path, "r") as f:
            return reader.graph(f)
    except (ValueError, TypeError) as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: not a readable NIR graph: {type(e).__name__}: {e}") from None
    except (OSError, KeyError, RuntimeError) as e:
        raise ValueError(f"{path}: not a readable NIR graph (HDF5) file: {type(e).__name__}: {e}") from None
