"""Reference vectors (SPEC §7): ``refsnn vectors generate|verify`` and ``refsnn check``.

``data/vectors/`` holds ``manifest.json`` and one ``<case>.npz`` per case. A case is one call of one
kernel or algorithm step on small inputs drawn from a fixed seed; it records

* ``name`` (also the file name, ``<name>.npz``), ``section`` and ``equation`` of SPEC.md (and the
  seed) it exercises, a one-line ``description``;
* ``params``: everything besides the arrays that the computation needs, as JSON;
* ``in.*`` arrays (inputs) and ``out.*`` arrays (expected outputs) in the ``.npz``;
* a tolerance per output: ``{"kind": "exact"}`` (spikes, bit words, integer counts, booleans),
  ``{"kind": "allclose", "rtol", "atol"}`` for floats (per dtype, :data:`FLOAT_TOL`), or
  ``{"kind": "json"}`` for a UTF-8 JSON document stored as ``uint8`` bytes (compared as parsed
  JSON values, so key order and whitespace do not matter).

Modules:

* :mod:`.format`: the language-neutral file format (deterministic ``.npz``, ``manifest.json``);
  see ``data/vectors/README.md`` for it from a non-Python backend's point of view;
* :mod:`.tolerances`: the tolerance tables (also used by the unit tests) and the comparison;
* :mod:`.case`: the :class:`Case` record; :mod:`.cases`: the registry, one module per kernel
  or algorithm family (``cases.lif``, ``cases.conv``, ``cases.cuba``, ``cases.ec``, ``cases.nas``, ...);
* :mod:`.runner`: :func:`generate` and :func:`verify`;
* :mod:`.check`: the comparison of another backend's outputs with the vectors. The commands
  ``refsnn vectors`` and ``refsnn check`` are :mod:`refsnn.commands.vectors` and :mod:`refsnn.commands.check`.

Adding a case: add it to the ``cases()`` of its family's module in :mod:`refsnn.vectors.cases`; run
``refsnn vectors generate``; commit the new files.
"""
from __future__ import annotations

from refsnn.vectors.case import Case
from refsnn.vectors.cases import all_cases
from refsnn.vectors.format import (
    FORMAT,
    default_dir,
    load_manifest,
    manifest_text,
    npz_bytes,
    read_npz,
    write_backend_outputs,
)
from refsnn.vectors.runner import generate, verify
from refsnn.vectors.tolerances import EXACT, FLOAT_TOL, JSON, Comparison, compare_output, format_table

__all__ = ["FORMAT", "FLOAT_TOL", "EXACT", "JSON", "Case", "all_cases", "default_dir", "npz_bytes",
           "read_npz", "generate", "verify", "compare_output", "manifest_text", "Comparison", "format_table",
           "load_manifest", "write_backend_outputs"]
