"""Files: atomic writes and pickle-free loads (SPEC §1).

Every checkpoint, result and vector file refsnn writes goes through :func:`atomic_write_bytes`
(write to a temporary file in the destination directory, ``fsync``, then ``os.replace``), so a
crash leaves either the old file or the new one, never a torn one. Every ``.npz`` is read through
:func:`load_npz`, which refuses pickled object arrays and turns a truncated or foreign file into a
``ValueError`` naming the file instead of a traceback from inside NumPy.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, then
    ``os.replace``). The file gets the usual permissions (``0o666`` minus the umask), not the
    private ``0o600`` of a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_savez(path, arrays: Mapping[str, np.ndarray], *, compressed: bool = True) -> Path:
    """Write ``arrays`` as an ``.npz`` atomically. Object arrays are refused (they would need pickle)."""
    for k, v in arrays.items():
        if np.asarray(v).dtype.hasobject:
            raise TypeError(f"arrays[{k!r}]: object arrays cannot be stored without pickle")
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


def load_npz(path, *, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` into a dict, without pickle.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the file) for a file
    that is not a readable npz, holds pickled objects, or lacks one of ``required``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise ValueError(f"{path}: not a readable .npz file (truncated or foreign?): {e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: cannot be read without pickle or is corrupt: {e}") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; is this a refsnn file of the right kind?")
    return out
