"""``refsnn vectors generate|verify|list``: the reference vectors of :mod:`refsnn.vectors` (SPEC §7):
``generate`` rewrites ``data/vectors`` deterministically, ``verify`` recomputes every case with the
current code and compares (exit status 1 on a failure), ``list`` names the registered cases."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from refsnn.commands.config import option
from refsnn.vectors.cases import all_cases
from refsnn.vectors.format import default_dir
from refsnn.vectors.runner import generate, verify

__all__ = ["VectorsConfig", "CONFIG", "main"]


@dataclass
class VectorsConfig:
    action: str = option(help="generate: (re)write the vectors; verify: recompute and compare; list: the cases",
                         positional=True, choices=("generate", "verify", "list"), metavar="ACTION")
    dir: str | None = option(None, "vector directory (default: the installed data/vectors)")
    only: list[str] = option([], "only these cases (fnmatch pattern; repeatable); generate keeps the other "
                                 "manifest entries", metavar="GLOB")


CONFIG = VectorsConfig


def main(cfg: VectorsConfig) -> int:
    only = cfg.only or None
    if cfg.action == "generate":
        t0 = time.perf_counter()
        d = Path(cfg.dir) if cfg.dir else default_dir()
        entries = generate(d, only=only)
        total = sum((d / e["file"]).stat().st_size for e in entries)
        print(f"wrote {len(entries)} cases + manifest.json to {d} ({total / 1e6:.2f} MB) "
              f"in {time.perf_counter() - t0:.1f} s")
        return 0
    if cfg.action == "verify":
        ok, _ = verify(cfg.dir, only=only)
        return 0 if ok else 1
    for c in all_cases():
        print(f"{c.name:<46} §{c.section:<12} {c.description}")
    return 0
