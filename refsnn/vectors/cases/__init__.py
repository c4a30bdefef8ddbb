"""The registry of reference vector cases, one module per kernel or algorithm family.

Each module exposes ``PREFIXES`` (the case-name prefixes it owns) and ``cases()`` (its
:class:`~refsnn.vectors.case.Case` objects in manifest order); :data:`MODULES` lists the modules
in manifest order and :func:`all_cases` concatenates them.

Adding a case: add it to the ``cases()`` of the module of its kernel (or a new module listed in
:data:`MODULES`); run ``refsnn vectors generate``; commit the new files.
"""
from __future__ import annotations

from refsnn.vectors.case import Case
from refsnn.vectors.cases import conv, cuba, ec, ec_baselines, layers, lif, nas, network, norse_lif, surrogate

__all__ = ["MODULES", "all_cases"]

#: the case modules, in manifest order
MODULES = (lif, surrogate, conv, layers, network, cuba, ec, nas, norse_lif, ec_baselines)


def all_cases() -> list[Case]:
    """Every registered case, in a fixed order (the manifest's)."""
    out = []
    for m in MODULES:
        out.extend(m.cases())
    names = [c.name for c in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RuntimeError(f"duplicate vector case names: {sorted(dup)}")
    return out
