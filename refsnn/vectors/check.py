"""Comparison behind ``refsnn check OUTPUT_DIR`` (:mod:`refsnn.commands.check`): compare another
backend's outputs with the reference vectors (SPEC §7).

``OUTPUT_DIR`` holds, per case, ``<case>.npz`` with that case's ``out.*`` arrays, computed by the
other backend from the case's ``in.*`` arrays and ``params`` (the reference ``.npz`` files and
``manifest.json`` in ``data/vectors``; ``in.*`` arrays in the output files are allowed and
ignored). Every output array must have the reference's dtype and shape and lie within the case's
tolerance (``exact``, ``allclose`` with ``rtol``/``atol``, or ``json``); see
``data/vectors/README.md``. The manifest is checked first (:func:`~refsnn.vectors.format.load_manifest`:
every tolerance the table's or stricter), and only the ``out.*`` members of either file are read.

Prints one row per (case, output): max abs error, max rel error, mismatching elements, status;
then one line per problem. Exit status 0 when everything compared passes, 1 on any failure
(a wrong value, a missing output, a wrong dtype or shape, an unreadable file) and on any missing
case unless ``--allow-missing`` (then missing cases are listed as ``MISSING`` but do not fail).
``--only GLOB`` restricts the comparison to matching case names (repeatable).

Callable as a function: :func:`check` returns ``(ok, rows)``.
"""
from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

from refsnn.vectors.cases import all_cases
from refsnn.vectors.format import default_dir, load_manifest, read_npz
from refsnn.vectors.tolerances import Comparison, compare_output, format_table

__all__ = ["check"]


def check(output_dir, *, ref_dir=None, allow_missing: bool = False, only=None,
          out=None) -> tuple[bool, list[Comparison]]:
    """Compare ``output_dir`` with the reference vectors in ``ref_dir``; print the table to ``out``."""
    out = sys.stdout if out is None else out
    out_dir = Path(output_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"OUTPUT_DIR: {out_dir} is not a directory")
    ref = Path(ref_dir) if ref_dir is not None else default_dir()
    doc = load_manifest(ref, registered={c.name: c for c in all_cases()})
    entries = doc["cases"]
    if only:
        entries = [e for e in entries if any(fnmatch.fnmatchcase(e["name"], p) for p in only)]
        if not entries:
            raise ValueError(f"--only: no reference case matches {only}")
    rows: list[Comparison] = []
    missing = []
    for e in entries:
        name = e["name"]
        f = out_dir / e["file"]
        if not f.exists():
            missing.append(name)
            rows.append(Comparison(name, "*", "MISSING",
                                   message=f"{name}: missing: no {e['file']} in {out_dir}"
                                           + ("" if allow_missing else " (use --allow-missing to permit)")))
            continue
        try:
            got = read_npz(f, keys=["out.*"])      # in.* members are never decompressed
        except (ValueError, OSError) as err:
            rows.append(Comparison(name, "*", "ERROR", message=f"{name}: unreadable: {err}"))
            continue
        try:
            exp = read_npz(ref / e["file"], keys=["out.*"])
        except (ValueError, OSError) as err:
            rows.append(Comparison(name, "*", "ERROR", message=f"{name}: reference file unreadable: {err}"))
            continue
        for key in sorted(e["outputs"]):
            spec = e["outputs"][key]
            if key not in exp or str(exp[key].dtype) != spec["dtype"]:
                rows.append(Comparison(name, key[len("out."):], "ERROR", message=f"{ref / e['file']}: {key} "
                                       f"missing or not of the manifest's dtype {spec['dtype']}"))
                continue
            rows.append(compare_output(name, key[len("out."):], exp[key], got.get(key), spec["tolerance"],
                                       source=str(f)))
        unknown = sorted(k for k in got if k.startswith("out.") and k not in e["outputs"])
        if unknown:
            rows.append(Comparison(name, "*", "FAIL", message=f"{name}: unexpected outputs {unknown} "
                                                             f"(expected {sorted(e['outputs'])})"))
    extra = sorted({p.stem for p in out_dir.glob("*.npz")} - {e["name"] for e in doc["cases"]})
    print(format_table(rows), file=out)
    for r in rows:
        if r.message:
            print("  " + r.message, file=out)
    if extra:
        print(f"  note: {len(extra)} files in {out_dir} match no reference case (ignored): "
              f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}", file=out)
    failed_cases = sorted({r.case for r in rows if r.failed})
    n_ok = len({r.case for r in rows}) - len(failed_cases) - len(missing)
    print(f"check: {len(entries)} reference cases: {n_ok} passed, {len(failed_cases)} failed, "
          f"{len(missing)} missing{' (allowed)' if allow_missing and missing else ''}", file=out)
    ok = not failed_cases and (allow_missing or not missing)
    return ok, rows
