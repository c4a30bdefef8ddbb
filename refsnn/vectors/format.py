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
from refsnn.io import atomic_write_bytes, load_npz, read_json
from refsnn.vectors.tolerances import FLOAT_TOL, JSON, check_tolerance, tol_for

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


def read_npz(path, keys=None) -> dict:
    """Load an ``.npz`` without pickle (``ValueError`` naming the file when it is unreadable); ``keys``:
    only these arrays (names or patterns such as ``"out.*"``; :func:`refsnn.io.load_npz`)."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # zip local header / empty zip
            raise ValueError(f"{path}: not an .npz file (no zip header; expected a zip of .npy members)")
    return load_npz(path, keys=keys)


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


_ENTRY_KEYS = {"name": str, "file": str, "sha256": str, "params": dict, "outputs": dict}


def load_manifest(directory, *, registered: dict | None = None) -> dict:
    """Read and check ``manifest.json`` of a vector directory (``data/vectors/README.md``).

    Strict standard JSON (no ``NaN``/``Infinity``), within the read budget of :mod:`refsnn.io`; every
    case entry has ``name``, a plain ``file`` name ``*.npz``, a hex ``sha256``, ``params`` and
    ``outputs`` (``out.*`` -> ``dtype`` and ``tolerance``), names are unique, and every tolerance is
    typed, finite and the table's or stricter (:func:`~refsnn.vectors.tolerances.check_tolerance`):
    the registered case's tolerance when ``registered`` (name -> :class:`~refsnn.vectors.case.Case`)
    holds the case, else the default for the declared dtype (``json`` allowed for ``uint8``).
    ``ValueError`` naming the file, the case and the output."""
    d = Path(directory)
    p = d / "manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no manifest; run 'refsnn vectors generate' or pass the right directory")
    doc = read_json(p, allow_nan=False)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{p}: expected format {FORMAT!r}, got {got!r}")
    if not isinstance(doc.get("cases"), list):
        raise ValueError(f"{p}: 'cases' must be a list of case entries")
    seen = set()
    for i, e in enumerate(doc["cases"]):
        name = e.get("name") if isinstance(e, dict) else None
        _check_entry(p, i, e, (registered or {}).get(name) if isinstance(name, str) else None)
        if e["name"] in seen:
            raise ValueError(f"{p}: case {e['name']!r} listed twice")
        seen.add(e["name"])
    return doc


def _check_entry(p: Path, i: int, e, case) -> None:
    if not isinstance(e, dict):
        raise ValueError(f"{p}: cases[{i}] must be an object, got {type(e).__name__}")
    where = f"{p}: case {e['name']!r}" if isinstance(e.get("name"), str) else f"{p}: cases[{i}]"
    for key, typ in _ENTRY_KEYS.items():
        if not isinstance(e.get(key), typ):
            raise ValueError(f"{where}: {key!r} missing or not a {typ.__name__} (got {e.get(key)!r})")
    f = e["file"]
    if not f.endswith(".npz") or f.startswith(".") or "/" in f or "\\" in f or f != Path(f).name:
        raise ValueError(f"{where}: 'file' must be a plain file name <case>.npz, got {f!r}")
    if len(e["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in e["sha256"]):
        raise ValueError(f"{where}: 'sha256' must be 64 lower-case hex digits, got {e['sha256']!r}")
    for key, spec in e["outputs"].items():
        w = f"{where}: output {key!r}"
        if not key.startswith("out.") or not isinstance(spec, dict):
            raise ValueError(f"{w}: outputs are 'out.<name>' -> {{dtype, shape, tolerance}}")
        try:
            dtype = np.dtype(spec.get("dtype")) if isinstance(spec.get("dtype"), str) else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.hasobject:
            raise ValueError(f"{w}: 'dtype' missing or not a NumPy dtype name (got {spec.get('dtype')!r})")
        if "tolerance" not in spec:
            raise ValueError(f"{w}: 'tolerance' missing")
        name = key[len("out."):]
        required = case.tolerance(name, np.empty(0, dtype)) if case is not None else \
            JSON if dtype == np.uint8 else tol_for(np.empty(0, dtype))   # (uint8: a JSON document or bytes)
        check_tolerance(spec["tolerance"], required, w)


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
