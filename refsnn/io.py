"""Files: atomic writes and pickle-free loads (SPEC §1).

Every checkpoint, result and vector file refsnn writes goes through :func:`atomic_write_bytes`
(write to a temporary file in the destination directory, ``fsync``, then ``os.replace``), so a
crash leaves either the old file or the new one, never a torn one. Every ``.npz`` is read through
:func:`load_npz`, which refuses pickled object arrays and turns a truncated, foreign or crafted file
(an array header claiming more data than the file holds) into a ``ValueError`` naming the file instead
of a traceback (or a ``MemoryError``) from inside NumPy; it loads only the members a reader asks for
(``keys``), so the others are never decompressed.

One read budget (:class:`ReadBudget`, :data:`MAX_FILE_BYTES` = 128 MiB per file unless
``$REFSNN_MAX_FILE_BYTES`` says otherwise) bounds what any file can make refsnn allocate: npz members
(npy header shape x itemsize), HDF5 datasets (:func:`refsnn.nir.reader.read_nir`: shape x itemsize from
the metadata) and JSON text (x :data:`JSON_EXPANSION`) are charged by their *declared* size before
they are read, and going over is a ``ValueError`` naming the file and the member.

JSON is strict both ways: :func:`atomic_write_json` writes standard JSON only (``NaN`` and
``Infinity`` are not JSON, and strict parsers reject them): a non-finite float is written as ``null``
(e.g. the deterministic return of an ``refsnn ec`` run without deterministic members).
:func:`parse_json` reads JSON text with a nesting limit, so a crafted file is a ``ValueError`` naming
it rather than a ``RecursionError``.
"""
from __future__ import annotations

import fnmatch
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


# ---------------------------------------------------------------------------------------------
# the read budget: what one file may make refsnn allocate
# ---------------------------------------------------------------------------------------------
#: bytes one file may make refsnn allocate, summed over everything read from it (npz members, HDF5
#: datasets, JSON text): the declared sizes are charged *before* anything is read
MAX_FILE_BYTES = 128 * 2**20
#: environment variable that overrides :data:`MAX_FILE_BYTES` (a positive number of bytes)
BUDGET_ENV = "REFSNN_MAX_FILE_BYTES"
#: bytes charged per byte of JSON text: the most that parsing it allocates (``[{},{},...]``: 3 bytes of
#: text -> a 64-byte dict and an 8-byte list slot each)
JSON_EXPANSION = 32


def file_budget() -> int:
    """The read budget per file in bytes: ``$REFSNN_MAX_FILE_BYTES`` if set, else :data:`MAX_FILE_BYTES`."""
    text = os.environ.get(BUDGET_ENV)
    if text is None:
        return MAX_FILE_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{BUDGET_ENV}: expected a positive number of bytes, got {text!r}")
    return value


class ReadBudget:
    """What reading one file may allocate (:func:`file_budget` bytes unless ``limit`` is given).

    Readers :meth:`charge` each member's *declared* size (npy header shape x itemsize, HDF5 dataset
    shape x itemsize, JSON text x :data:`JSON_EXPANSION`) before reading it; going over the budget is a
    ``ValueError`` naming the file and the member."""

    def __init__(self, name, limit: int | None = None):
        self.name = str(name)
        self.limit = file_budget() if limit is None else int(limit)
        self.used = 0

    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` for ``what`` (a member, with its shape and dtype); ``ValueError`` beyond the limit."""
        nbytes = int(nbytes)
        if nbytes < 0 or self.used + nbytes > self.limit:
            before = f" (after {self.used} bytes of other members)" if self.used else ""
            raise ValueError(f"{self.name}: {what} declares {nbytes} bytes{before}, over the budget of "
                             f"{self.limit} bytes per file (set {BUDGET_ENV} to read larger files)")
        self.used += nbytes


def declared_bytes(shape, dtype) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` (``-1`` for a negative dimension: over any budget)."""
    dims = [int(s) for s in shape]
    if any(d < 0 for d in dims):
        return -1
    return math.prod(dims) * np.dtype(dtype).itemsize


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------
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


def parse_json(text, *, name: str, max_depth: int = MAX_JSON_DEPTH, budget: ReadBudget | None = None,
               allow_nan: bool = True):
    """``json.loads(text)`` with a size budget (:class:`ReadBudget`, the text charged x
    :data:`JSON_EXPANSION`) and a nesting limit checked before parsing; ``ValueError`` naming ``name``
    (an argument or a file) for invalid JSON, too much of it, or nesting deeper than ``max_depth``;
    ``allow_nan=False`` also refuses ``NaN``/``Infinity`` (not standard JSON)."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise TypeError(f"{name}: expected JSON text, got {type(text).__name__}")
    (budget or ReadBudget(name)).charge(len(text) * JSON_EXPANSION, f"JSON text of {len(text)} characters")
    return _parse_json(text, name, max_depth, allow_nan)


def _not_json(name: str):
    def reject(constant):
        raise ValueError(f"{name}: {constant} is not standard JSON")
    return reject


def _parse_json(text, name: str, max_depth: int, allow_nan: bool = True):
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"{name}: JSON nested {depth} levels deep (at most {max_depth} accepted)")
    try:
        return json.loads(text) if allow_nan else json.loads(text, parse_constant=_not_json(name))
    except RecursionError:
        raise ValueError(f"{name}: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        if str(e).startswith(f"{name}: "):
            raise
        raise ValueError(f"{name}: not valid JSON: {e}") from None


def read_json(path, *, max_depth: int = MAX_JSON_DEPTH, budget: ReadBudget | None = None,
              allow_nan: bool = True):
    """The JSON value of the file ``path`` (:func:`parse_json`; ``FileNotFoundError`` if missing). The
    file's size is charged to the budget before it is read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    budget = budget or ReadBudget(path)
    size = path.stat().st_size
    budget.charge(size * JSON_EXPANSION, f"JSON text of {size} bytes")
    return _parse_json(path.read_bytes(), str(path), max_depth, allow_nan)


# ---------------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------------
def atomic_savez(path, arrays: Mapping[str, np.ndarray], *, compressed: bool = True) -> Path:
    """Write ``arrays`` as an ``.npz`` atomically. Object arrays are refused (they would need pickle)."""
    for k, v in arrays.items():
        if np.asarray(v).dtype.hasobject:
            raise TypeError(f"arrays[{k!r}]: object arrays cannot be stored without pickle")
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


_NPZ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError, KeyError, SyntaxError)


def _selected(name: str, keys) -> bool:
    return keys is None or any(name == k or fnmatch.fnmatchcase(name, k) for k in keys)


def load_npz(path, *, required: tuple[str, ...] = (), keys=None,
             budget: ReadBudget | None = None) -> dict[str, np.ndarray]:
    """Load the arrays of an ``.npz`` into a dict, without pickle and within a read budget.

    ``keys``: the arrays to load (names or ``fnmatch`` patterns such as ``"out.*"``; ``None``: all);
    the others are never decompressed. ``required`` names arrays that must be present (they are loaded
    too). Every selected member's npy header is read first and its declared size (shape x itemsize)
    charged to ``budget`` (:class:`ReadBudget`, default :func:`file_budget` bytes for the file) before
    any array is read.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the file and member)
    for a file that is not a readable npz, holds pickled objects, declares more than the budget or
    than the file holds, or lacks one of ``required``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz file (truncated or foreign?): not a zip archive")
    budget = budget or ReadBudget(path)
    if isinstance(keys, str):
        keys = (keys,)
    keys = None if keys is None else tuple(keys) + tuple(required)
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = []
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if not _selected(key, keys) or info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"{path}: member {info.filename!r} is not an .npy array")
                with zf.open(info) as f:
                    shape, dtype = check_npy_header(f, _npy_bytes_bound(info), name=f"{path}: {info.filename}",
                                                    budget=budget, member=info.filename)
                if dtype.hasobject:
                    raise ValueError(f"{path}: {info.filename} holds Python objects, which cannot be read "
                                     "without pickle")
                members.append((key, info))
            for key, info in members:       # every declared size is within the budget: read them
                with zf.open(info) as f:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
    except _NPZ_ERRORS + (MemoryError,) as e:
        raise ValueError(f"{path}: not a readable .npz file (truncated or foreign?): "
                         f"{type(e).__name__}: {e}") from None
    except ValueError as e:
        msg = str(e)
        if msg.startswith(str(path)):
            raise
        raise ValueError(f"{path}: cannot be read without pickle or is corrupt: {msg}") from None
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


def check_npy_header(f, n_bytes: int, *, name: str, budget: ReadBudget | None = None, member: str | None = None):
    """Read the header of the ``.npy`` stream ``f`` (``n_bytes`` long) and check that the array it
    declares fits in the data that follows and in the read budget (``budget``, default a fresh
    :class:`ReadBudget` for ``name``; ``member`` names the array in its message), before NumPy
    allocates it (a crafted shape would otherwise be a ``MemoryError``). Returns ``(shape, dtype)``;
    ``ValueError`` naming ``name``."""
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
        return tuple(shape), dtype  # refused by the pickle-free load itself
    need = declared_bytes(shape, dtype)
    have = n_bytes - f.tell()
    if need < 0 or need > have:
        raise ValueError(f"{name}: the header declares shape {tuple(shape)} of {dtype} ({need} bytes) but "
                         f"only {max(have, 0)} bytes follow (truncated or crafted file)")
    (budget or ReadBudget(name)).charge(need, f"{member or 'the array'} (shape {tuple(shape)}, {dtype})")
    return tuple(shape), dtype
