"""Files: atomic writes and pickle-free loads (SPEC §1).

Every checkpoint, result and vector file refsnn writes goes through :func:`atomic_write_bytes`
(write to a temporary file in the destination directory, ``fsync``, then ``os.replace``), so a
crash leaves either the old file or the new one, never a torn one. Every ``.npz`` is read through
:func:`load_npz`, which refuses pickled object arrays and turns a truncated, foreign or crafted file
(an array header claiming more data than the file holds) into a ``ValueError`` naming the file instead
of a traceback (or a ``MemoryError``) from inside NumPy.

JSON is strict both ways: :func:`atomic_write_json` writes standard JSON only (``NaN`` and
``Infinity`` are not JSON, and strict parsers reject them): a non-finite float is written as ``null``
(e.g. the deterministic return of an ``refsnn ec`` run without deterministic members).
:func:`parse_json` reads JSON text with a nesting limit, so a crafted file is a ``ValueError`` naming
it rather than a ``RecursionError``.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
import zipfile
import zlib
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


def json_safe(obj):
    """``obj`` with every non-finite float (NaN, +-infinity, also NumPy floats) replaced by ``None``, so
    that it serialises as standard JSON; containers are copied (dict, list, tuple -> list)."""
    if isinstance(obj, float) or (isinstance(obj, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path, obj) -> Path:
    """Write ``obj`` as standard JSON (sorted keys, indented) atomically; non-finite floats become
    ``null`` (:func:`json_safe`), so the file never holds ``NaN``/``Infinity``."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


#: deepest nesting of arrays/objects :func:`parse_json` accepts (refsnn's own files nest a few levels)
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(text) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text (strings skipped), without parsing it."""
    b = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    brackets = np.frombuffer(_JSON_STRING.sub(b"", b), np.uint8)
    step = np.zeros(brackets.shape, np.int64)
    step[(brackets == ord("[")) | (brackets == ord("{"))] = 1
    step[(brackets == ord("]")) | (brackets == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def parse_json(text, *, name: str, max_depth: int = MAX_JSON_DEPTH):
    """``json.loads(text)`` with a nesting limit checked before parsing; ``ValueError`` naming ``name``
    (an argument or a file) for invalid JSON or nesting deeper than ``max_depth``."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise TypeError(f"{name}: expected JSON text, got {type(text).__name__}")
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"{name}: JSON nested {depth} levels deep (at most {max_depth} accepted)")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{name}: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        raise ValueError(f"{name}: not valid JSON: {e}") from None


def read_json(path, *, max_depth: int = MAX_JSON_DEPTH):
    """The JSON value of the file ``path`` (:func:`parse_json`; ``FileNotFoundError`` if missing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return parse_json(path.read_bytes(), name=str(path), max_depth=max_depth)


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
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz file (truncated or foreign?): not a zip archive")
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".npy"):
                    with zf.open(info) as f:
                        check_npy_header(f, _npy_bytes_bound(info), name=f"{path}: {info.filename}")
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as e:
        raise ValueError(f"{path}: not a readable .npz file (truncated or foreign?): "
                         f"{type(e).__name__}: {e}") from None
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, SyntaxError, zlib.error, NotImplementedError,
            MemoryError) as e:
        raise ValueError(f"{path}: not a readable .npz file (truncated or foreign?): "
                         f"{type(e).__name__}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: cannot be read without pickle or is corrupt: {e}") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; is this a refsnn file of the right kind?")
    return out


def _npy_bytes_bound(info: zipfile.ZipInfo) -> int:
    """At most how many bytes a zip member can hold: its declared size, and no more than deflate's
    maximal ratio (~1032:1) of its compressed size."""
    bound = info.file_size
    if info.compress_type != zipfile.ZIP_STORED:
        bound = min(bound, 1032 * info.compress_size + 4096)
    return bound


def check_npy_header(f, n_bytes: int, *, name: str) -> None:
    """Read the header of the ``.npy`` stream ``f`` (``n_bytes`` long) and check that the array it
    declares fits in the data that follows, before NumPy allocates it (a crafted shape would otherwise
    be a ``MemoryError``). ``ValueError`` naming ``name``."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        else:
            shape, _, dtype = fmt.read_array_header_2_0(f)
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        raise ValueError(f"{name}: not a .npy array: {e}") from None
    if dtype.hasobject:
        return  # refused by the pickle-free load itself
    need = math.prod(int(s) for s in shape) * dtype.itemsize
    have = n_bytes - f.tell()
    if need > have:
        raise ValueError(f"{name}: the header declares shape {tuple(shape)} of {dtype} ({need} bytes) but "
                         f"only {max(have, 0)} bytes follow (truncated or crafted file)")
