"""Tolerances and comparison: the one place that says how close is close enough.

* :data:`FLOAT_TOL`, :data:`EXACT`, :data:`JSON`: the tolerance kinds stored per output in
  ``data/vectors/manifest.json`` (another backend against the reference vectors);
  :func:`tol_for` picks the default one for an array.
* :data:`KERNEL_TOL` and :data:`KERNEL_ATOL`: what the unit tests allow between a compiled kernel
  and its NumPy oracle inside refsnn (the same equations, evaluated by the same code base).
* :func:`check_tolerance`: a tolerance read from a manifest must be typed, finite and equal to the
  one this table gives the output (the registered case's, else :func:`tol_for`) or stricter:
  ``exact`` is stricter than everything, ``json`` than nothing but ``exact``, ``allclose`` than
  ``allclose`` with a larger ``rtol`` or ``atol``.
* :func:`compare_output` applies one tolerance to one output array and returns a
  :class:`Comparison`; :func:`format_table` prints the rows (``refsnn vectors verify`` and
  ``refsnn check``).

Every table is a :class:`DtypeTable`: keyed by dtype name, and looked up with a name, a NumPy
scalar type or a dtype (``FLOAT_TOL["float32"] is FLOAT_TOL[np.float32]``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from refsnn.io import parse_json

__all__ = ["DtypeTable", "FLOAT_TOL", "EXACT", "JSON", "KERNEL_TOL", "KERNEL_ATOL", "tol_for", "check_tolerance",
           "Comparison", "compare_output", "format_table"]


class DtypeTable(dict):
    """A ``dict`` keyed by dtype name (``"float32"``) that also accepts ``np.float32`` or a
    ``np.dtype`` as key. A plain ``dict`` otherwise (JSON-serialisable as it is)."""

    def __missing__(self, key):
        try:
            name = None if key is None else np.dtype(key).name  # (np.dtype(None) is float64)
        except TypeError:
            name = None
        if name is None or (isinstance(key, str) and name == key):
            raise KeyError(key)
        return self[name]


#: Tolerances for float outputs of the reference vectors, by dtype: pass where
#: ``|actual - expected| <= atol + rtol |expected|`` (element-wise, like ``numpy.allclose``). Loose
#: enough for another backend that evaluates the same equations in a different order (BLAS, fused
#: kernels, autodiff), tight enough to catch a wrong equation, a wrong constant or a step-late reset.
FLOAT_TOL = DtypeTable({
    "float32": {"kind": "allclose", "rtol": 1e-4, "atol": 1e-5},
    "float64": {"kind": "allclose", "rtol": 1e-9, "atol": 1e-12},
})
EXACT = {"kind": "exact"}
JSON = {"kind": "json"}

#: An element-wise kernel against its NumPy oracle (same operations, at most an ulp apart in
#: ``exp``/``atan``): ``numpy.testing.assert_allclose`` keyword arguments, by dtype.
KERNEL_TOL = DtypeTable({
    "float32": {"rtol": 2e-5, "atol": 2e-6},
    "float64": {"rtol": 1e-12, "atol": 1e-13},
})

#: A summing kernel (conv, linear, pooling, batch norm) against its NumPy oracle, which adds the
#: same terms in another order: absolute tolerance per unit of output magnitude, by dtype; callers
#: multiply by ``max(1, max |expected|)`` and a small factor for the number of terms.
KERNEL_ATOL = DtypeTable({"float32": 1e-5, "float64": 1e-12})


def tol_for(a: np.ndarray) -> dict:
    """The default manifest tolerance of an output array: :data:`FLOAT_TOL` for floats, else exact."""
    if a.dtype.kind == "f":
        return dict(FLOAT_TOL[str(a.dtype)])
    return dict(EXACT)


def _number(where: str, tol: dict, key: str) -> float:
    v = tol.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{where}: tolerance {key} must be a JSON number, got {v!r}")
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{where}: tolerance {key} must be finite and >= 0, got {v!r}")
    return float(v)


def check_tolerance(tol, required: dict, where: str) -> dict:
    """``tol`` (a tolerance read from a manifest) if it is typed, finite and equal to ``required`` (the
    table's tolerance of this output) or stricter (module docstring); else a ``ValueError`` starting
    with ``where`` (the file, case and output)."""
    if not isinstance(tol, dict) or not isinstance(tol.get("kind"), str):
        raise ValueError(f"{where}: tolerance must be an object with a 'kind', got {tol!r}")
    kind, want = tol["kind"], required["kind"]
    keys = {"exact": {"kind"}, "json": {"kind"}, "allclose": {"kind", "rtol", "atol"}}.get(kind)
    if keys is None:
        raise ValueError(f"{where}: unknown tolerance kind {kind!r} (expected exact, allclose or json)")
    if set(tol) != keys:
        raise ValueError(f"{where}: a tolerance of kind {kind!r} has the keys {sorted(keys)}, got {sorted(tol)}")
    if kind == "allclose":
        rtol, atol = _number(where, tol, "rtol"), _number(where, tol, "atol")
    looser = f"{where}: tolerance {json.dumps(tol, sort_keys=True)} is looser than the table's " \
             f"{json.dumps(required, sort_keys=True)} (refsnn/vectors/tolerances.py)"
    if kind == "exact" or kind == want == "json":
        return tol
    if kind == "json" or want != "allclose":
        raise ValueError(looser)
    if rtol > float(required["rtol"]) or atol > float(required["atol"]):
        raise ValueError(looser)
    return tol


@dataclass
class Comparison:
    """One row of a verify/check report: one output of one case (``output == "*"``: the whole case)."""

    case: str
    output: str
    status: str  # "ok", "FAIL", "MISSING", "ERROR", "skipped"
    max_abs: float | None = None
    max_rel: float | None = None
    mismatches: int | None = None
    n: int | None = None
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("FAIL", "ERROR")


def _mismatches(bad: np.ndarray, expected: np.ndarray, actual: np.ndarray, head: str) -> tuple[int, str]:
    """``(number of bad elements, message)``: ``head`` (with ``{}`` for the count) and the first bad
    element's index, expected and actual value; an empty message when none is bad."""
    nbad = int(np.count_nonzero(bad))
    if not nbad:
        return 0, ""
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return nbad, f"{head.format(nbad)}; first at {list(idx)}: expected {expected[idx]!r}, got {actual[idx]!r}"


def compare_output(case: str, output: str, expected: np.ndarray, actual, tolerance: dict, *,
                   source: str = "") -> Comparison:
    """Compare one output array with its tolerance; never raises on bad ``actual`` (``source``: the
    file it came from, named in the message of an unreadable JSON document)."""
    if actual is None:
        return Comparison(case, output, "FAIL", message=f"{output}: missing from the output file")
    if not isinstance(actual, np.ndarray):
        return Comparison(case, output, "ERROR", message=f"{output}: not an array")
    if actual.dtype != expected.dtype:
        return Comparison(case, output, "FAIL", message=f"{output}: wrong dtype: expected {expected.dtype}, "
                                                        f"got {actual.dtype}")
    kind = tolerance.get("kind")
    if kind == "json":
        where = f" ({source})" if source else ""
        try:
            a = parse_json(actual.tobytes(), name=f"{output}{where}", allow_nan=False)
            e = parse_json(expected.tobytes(), name=f"{output} (reference)")
        except ValueError as err:
            return Comparison(case, output, "FAIL", message=str(err))
        ok = a == e
        return Comparison(case, output, "ok" if ok else "FAIL", mismatches=0 if ok else 1, n=1,
                          message="" if ok else f"{output}: JSON documents differ{_json_diff(e, a)}")
    if actual.shape != expected.shape:
        return Comparison(case, output, "FAIL", message=f"{output}: wrong shape: expected {list(expected.shape)}, "
                                                        f"got {list(actual.shape)}")
    n = int(expected.size)
    if expected.dtype.kind in "fiub":
        e64 = expected.astype(np.float64)
        a64 = actual.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(a64 - e64)
        nan_bad = np.isnan(a64) != np.isnan(e64)
        diff = np.where(np.isnan(a64) & np.isnan(e64), 0.0, diff)
        diff = np.where(nan_bad, np.inf, diff)
        max_abs = float(diff.max()) if n else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(np.abs(e64) > 0, diff / np.abs(e64), np.where(diff > 0, np.inf, 0.0))
        max_rel = float(rel.max()) if n else 0.0
    else:
        diff = (actual != expected).astype(np.float64)
        max_abs = max_rel = None
    if kind == "exact":
        bad = (actual != expected) if expected.dtype.kind not in "f" else ~((actual == expected) |
                                                                            (np.isnan(actual) & np.isnan(expected)))
        nbad, msg = _mismatches(bad, expected, actual, f"{output}: {{}} of {n} elements differ (exact comparison)")
        return Comparison(case, output, "FAIL" if nbad else "ok", max_abs, max_rel, nbad, n, msg)
    if kind == "allclose":
        rtol, atol = float(tolerance["rtol"]), float(tolerance["atol"])
        lim = atol + rtol * np.abs(expected.astype(np.float64))
        bad = ~(diff <= lim)
        nbad, msg = _mismatches(bad, expected, actual,
                                f"{output}: {{}} of {n} elements outside rtol={rtol:g}, atol={atol:g}")
        return Comparison(case, output, "FAIL" if nbad else "ok", max_abs, max_rel, nbad, n, msg)
    return Comparison(case, output, "ERROR", message=f"{output}: unknown tolerance kind {kind!r}")


def _json_diff(e, a, path="$") -> str:
    if type(e) is not type(a):
        return f" at {path}: expected {type(e).__name__}, got {type(a).__name__}"
    if isinstance(e, dict):
        for k in sorted(set(e) | set(a)):
            if k not in a:
                return f" at {path}: key {k!r} missing"
            if k not in e:
                return f" at {path}: unexpected key {k!r}"
            if e[k] != a[k]:
                return _json_diff(e[k], a[k], f"{path}.{k}")
    if isinstance(e, list):
        if len(e) != len(a):
            return f" at {path}: expected {len(e)} items, got {len(a)}"
        for i, (x, y) in enumerate(zip(e, a)):
            if x != y:
                return _json_diff(x, y, f"{path}[{i}]")
    return f" at {path}: expected {e!r}, got {a!r}"


def _fmt(v, spec=".2e"):
    if v is None:
        return "-"
    return format(v, spec)


def format_table(rows: list[Comparison]) -> str:
    """The per-case table printed by ``verify`` and ``check``."""
    head = ("case", "output", "max abs err", "max rel err", "mismatches", "status")
    body = []
    for r in rows:
        mm = "-" if r.mismatches is None else f"{r.mismatches}/{r.n}"
        body.append((r.case, r.output, _fmt(r.max_abs), _fmt(r.max_rel), mm, r.status))
    w = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w[i]) for i, h in enumerate(head)),
             "  ".join("-" * w[i] for i in range(len(head)))]
    for b in body:
        lines.append("  ".join(b[i].ljust(w[i]) if i < 2 or i == 5 else b[i].rjust(w[i]) for i in range(len(head))))
    return "\n".join(lines)

