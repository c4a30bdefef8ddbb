"""Generate and verify the reference vectors.

:func:`generate` writes every case's ``.npz`` and ``manifest.json`` (deterministic: the same bytes
on every run). :func:`verify` recomputes every case from its *stored* inputs and params with the
current code (and, where a kernel has a NumPy oracle, with the oracle too) and compares with the
stored outputs under the stored tolerances; it also checks that the manifest lists exactly the
registered cases with the same params and that each file's sha256 matches the manifest.
Regenerated inputs that differ from the stored ones (a NumPy release changing a random stream)
are reported as a warning only: the stored inputs are the reference. The manifest is checked first
(:func:`~refsnn.vectors.format.load_manifest`: every tolerance the registered case's or stricter), and
``only`` patterns that match no registered case are a ``ValueError``, as in ``refsnn check``.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from refsnn.io import atomic_write_bytes, atomic_write_text
from refsnn.vectors.cases import all_cases
from refsnn.vectors.format import (
    case_entry,
    default_dir,
    jsonable,
    load_manifest,
    manifest_text,
    npz_bytes,
    read_npz,
    split_arrays,
)
from refsnn.vectors.tolerances import Comparison, compare_output, format_table

__all__ = ["generate", "verify"]


def _select(cases, only):
    if not only:
        return list(cases)
    return [c for c in cases if any(fnmatch.fnmatchcase(c.name, pat) for pat in only)]


def generate(directory=None, *, only=None, quiet=False) -> list[dict]:
    """Write every case's ``.npz`` and ``manifest.json`` into ``directory``; returns the entries.

    Deterministic: inputs come from fixed seeds, the npz and JSON bytes are reproducible. Files of
    cases no longer registered are removed (``*.npz`` only). With ``only`` (glob patterns) just
    those cases are rewritten and the other manifest entries are kept.
    """
    d = Path(directory) if directory is not None else default_dir()
    d.mkdir(parents=True, exist_ok=True)
    cases = all_cases()
    sel = _select(cases, only)
    old = {}
    if only and (d / "manifest.json").is_file():
        old = {e["name"]: e for e in json.loads((d / "manifest.json").read_text())["cases"]}
    entries = {}
    for c in sel:
        t0 = time.perf_counter()
        inp = c.inputs()
        out = c.outputs(inp)
        arrays = {f"in.{k}": v for k, v in inp.items()}
        arrays.update({f"out.{k}": v for k, v in out.items()})
        data = npz_bytes(arrays)
        atomic_write_bytes(d / f"{c.name}.npz", data)
        entries[c.name] = case_entry(c, inp, out, data)
        if not quiet:
            print(f"  {c.name:<44} {len(data):>8} bytes  {time.perf_counter() - t0:6.2f} s")
    final = []
    for c in cases:
        if c.name in entries:
            final.append(entries[c.name])
        elif c.name in old:
            final.append(old[c.name])
    atomic_write_text(d / "manifest.json", manifest_text(final))
    if not only:
        keep = {e["file"] for e in final}
        for f in d.glob("*.npz"):
            if f.name not in keep:
                f.unlink()
    return final



def verify(directory=None, *, only=None, out=None) -> tuple[bool, list[Comparison]]:
    """Recompute every case from its stored inputs and compare (see the module docstring). Returns
    ``(ok, rows)`` and prints the table and a summary to ``out``."""
    out = sys.stdout if out is None else out
    d = Path(directory) if directory is not None else default_dir()
    registered = all_cases()
    cases = _select(registered, only)
    if only and not cases:
        raise ValueError(f"--only: no reference case matches {list(only)}")
    doc = load_manifest(d, registered={c.name: c for c in registered})
    entries = {e["name"]: e for e in doc["cases"]}
    rows: list[Comparison] = []
    warnings = []
    for c in cases:
        e = entries.get(c.name)
        if e is None:
            rows.append(Comparison(c.name, "*", "FAIL", message=f"{c.name}: registered but not in the manifest; "
                                                               "run 'refsnn vectors generate'"))
            continue
        f = d / e["file"]
        try:
            data = f.read_bytes()
        except OSError as err:
            rows.append(Comparison(c.name, "*", "ERROR", message=f"{f}: {err}"))
            continue
        if hashlib.sha256(data).hexdigest() != e["sha256"]:
            rows.append(Comparison(c.name, "*", "FAIL", message=f"{f}: sha256 differs from the manifest"))
        if jsonable(c.params) != e["params"]:
            rows.append(Comparison(c.name, "*", "FAIL", message=f"{c.name}: params in the manifest differ from "
                                                               "the registered case; regenerate"))
        try:
            arrays = read_npz(f)
            inp = split_arrays(arrays, "in.")
            exp = split_arrays(arrays, "out.")
            got = c.outputs(inp)
            alt = c.oracle(c.params, inp) if c.oracle is not None else None
        except Exception as err:  # a crash in the current code is a verify failure, not a traceback
            rows.append(Comparison(c.name, "*", "ERROR", message=f"{c.name}: {type(err).__name__}: {err}"))
            continue
        regen = c.inputs()
        if set(regen) != set(inp) or any(regen[k].dtype != inp[k].dtype or regen[k].shape != inp[k].shape
                                         or not np.array_equal(regen[k], inp[k]) for k in regen):
            warnings.append(f"{c.name}: regenerated inputs differ from the stored ones (stored inputs used)")
        if set(got) != set(exp):
            rows.append(Comparison(c.name, "*", "FAIL", message=f"{c.name}: outputs {sorted(got)} vs stored "
                                                               f"{sorted(exp)}"))
        for k in sorted(exp):
            spec = e["outputs"].get(f"out.{k}")
            if spec is None or spec["dtype"] != str(exp[k].dtype):
                rows.append(Comparison(c.name, k, "FAIL", message=f"{f}: out.{k} is not in the manifest's outputs "
                                                                 "or not of its dtype"))
                continue
            tol = spec["tolerance"]
            rows.append(compare_output(c.name, k, exp[k], np.asarray(got[k]) if k in got else None, tol))
            if alt is not None and k in alt:
                r = compare_output(c.name, f"{k} (oracle)", exp[k], np.asarray(alt[k]), tol)
                rows.append(r)
    extra = sorted(set(entries) - {c.name for c in registered})
    if not only:
        for n in extra:
            rows.append(Comparison(n, "*", "FAIL", message=f"{n}: in the manifest but not registered"))
    print(format_table(rows), file=out)
    msgs = [r.message for r in rows if r.message]
    for m in msgs:
        print("  " + m, file=out)
    for w in warnings:
        print("  warning: " + w, file=out)
    nfail = sum(r.failed for r in rows)
    ncase = len({r.case for r in rows})
    bad_cases = len({r.case for r in rows if r.failed})
    print(f"verify: {ncase} cases, {len(rows)} comparisons, {bad_cases} cases failed ({nfail} comparisons)",
          file=out)
    return nfail == 0, rows
