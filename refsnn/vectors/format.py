"""The language-neutral file format of the reference vectors (``data/vectors/README.md``).

A vector directory holds ``manifest.json`` and one ``<case>.npz`` per case with the case's
``in.*`` (inputs) and ``out.*`` (expected outputs) arrays. The ``.npz`` files are written by
:func:`npz_bytes`: an uncompressed (``ZIP_STORED``) zip of ``.npy`` (format 1.0, little-endian,
C order) members in sorted name order, with a fixed timestamp (1980-01-01) and fixed attributes,
so generating twice gives byte-identical files and any zip + npy reader (NumPy, cnpy, npyz, ...)
can read them. ``manifest.json`` is written by :func:`manifest_text` with sorted keys. Nothing is
pickled; files are written atomically (:mod:`refsnn.io`).

Also here: :func:`default_dir` (where the committed vectors live) and
:func:`write_backend_outputs` (write another backend's conforming output directory for
``refsnn check``).
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from refsnn.datasets.paths import data_dir
from refsnn.io import atomic_write_bytes, load_npz
from refsnn.vectors.tolerances import FLOAT_TOL

__all__ = ["FORMAT", "default_dir", "npz_bytes", "read_npz", "load_manifest", "manifest_text", "case_entry",
           "jsonable", "split_arrays", "write_backend_outputs"]

FORMAT = "refsnn.vectors/1"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def default_dir() -> Path:
    """``data/vectors`` of the refsnn data directory (:func:`refsnn.datasets.paths.data_dir`), falling
    back to the repository's ``data/vectors``."""
    try:
        d = data_dir() / "vectors"
        if d.is_dir():
            return d
    except Exception:
        pass
    return Path(__file__).resolve().parents[2] / "data" / "vectors"


def npz_bytes(arrays: dict) -> bytes:
    """A reproducible ``.npz``: ZIP_STORED, members ``<name>.npy`` in sorted order, fixed timestamps,
    npy format 1.0 little-endian C order. Object arrays are refused."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            a = np.asarray(arrays[name])
            if a.dtype.hasobject:
                raise TypeError(f"arrays[{name!r}]: object arrays cannot be stored without pickle")
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))
            a = np.asarray(a, order="C")  # (ascontiguousarray would turn a 0-d array into 1-d)
            nb = io.BytesIO()
            np.lib.format.write_array(nb, a, version=(1, 0), allow_pickle=False)
            zi = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
            zi.compress_type = zipfile.ZIP_STORED
            zi.create_system = 3
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, nb.getvalue())
    return buf.getvalue()


def read_npz(path) -> dict:
    """Load an ``.npz`` without pickle (``ValueError`` naming the file when it is unreadable)."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # zip local header / empty zip
            raise ValueError(f"{path}: not an .npz file (no zip header; expected a zip of .npy members)")
    return load_npz(path)


def split_arrays(arrays: dict, prefix: str) -> dict:
    """The arrays whose name starts with ``prefix`` (``"in."`` or ``"out."``), without it."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _describe(a: np.ndarray) -> dict:
    return {"dtype": str(a.dtype), "shape": list(a.shape)}


def jsonable(obj):
    """``obj`` as it reads back from the manifest (JSON round trip, sorted keys, no NaN)."""
    return json.loads(json.dumps(obj, sort_keys=True, allow_nan=False))


def case_entry(case, inputs: dict, outputs: dict, data: bytes) -> dict:
    """The manifest entry of a :class:`~refsnn.vectors.case.Case` whose ``.npz`` bytes are ``data``."""
    return {
        "name": case.name,
        "file": f"{case.name}.npz",
        "section": case.section,
        "equation": case.equation,
        "description": case.description,
        "params": jsonable(case.params),
        "inputs": {f"in.{k}": _describe(v) for k, v in sorted(inputs.items())},
        "outputs": {f"out.{k}": dict(_describe(v), tolerance=case.tolerance(k, v))
                    for k, v in sorted(outputs.items())},
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def manifest_text(entries: list[dict]) -> str:
    """The bytes (as text) of ``manifest.json`` listing ``entries`` in order."""
    doc = {
        "format": FORMAT,
        "description": "refsnn reference vectors (SPEC §7); format: data/vectors/README.md",
        "float_tolerance": FLOAT_TOL,
        "cases": entries,
    }
    return json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n"


def load_manifest(directory) -> dict:
    """Read and check ``manifest.json`` of a vector directory."""
    d = Path(directory)
    p = d / "manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no manifest; run 'refsnn vectors generate' or pass the right directory")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not valid JSON: {e}") from None
    if doc.get("format") != FORMAT:
        raise ValueError(f"{p}: expected format {FORMAT!r}, got {doc.get('format')!r}")
    return doc


def write_backend_outputs(out_dir, runners: dict, *, ref_dir=None) -> tuple[list[str], list[str]]:
    """Write a conforming output directory for :func:`refsnn.vectors.check.check` from another backend.

    ``runners`` maps a case-name prefix (e.g. ``"lif."``) to ``fn(params, inputs) -> (outputs,
    note)``, where ``inputs`` holds the case's ``in.*`` arrays without the prefix and ``outputs``
    the backend's ``out.*`` arrays without it (``None``: the backend cannot express the case, and
    ``note`` says why). Existing ``.npz`` files in ``out_dir`` are removed first. Returns the names
    of the cases written and the notes (``"case: note"``).
    """
    ref = Path(ref_dir) if ref_dir is not None else default_dir()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*.npz"):
        f.unlink()
    written, notes = [], []
    for e in load_manifest(ref)["cases"]:
        name = e["name"]
        fn = next((f for prefix, f in runners.items() if name.startswith(prefix)), None)
        if fn is None:
            continue
        arrays = read_npz(ref / e["file"])
        res, note = fn(e["params"], split_arrays(arrays, "in."))
        if note:
            notes.append(f"{name}: {note}")
        if res is None:
            continue
        atomic_write_bytes(out / e["file"], npz_bytes({f"out.{k}": v for k, v in res.items()}))
        written.append(name)
    return written, notes
