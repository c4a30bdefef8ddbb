"""Command line ``refsnn vectors generate|verify|list`` (registered in :mod:`refsnn.cli`)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from refsnn.vectors.cases import all_cases
from refsnn.vectors.format import default_dir
from refsnn.vectors.runner import generate, verify

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    g = sub.add_parser("generate", help="(re)write data/vectors deterministically")
    g.add_argument("--dir", default=None, help="output directory (default: the repository's data/vectors)")
    g.add_argument("--only", action="append", default=None, metavar="GLOB",
                   help="only these cases (fnmatch pattern; repeatable); other manifest entries are kept")
    v = sub.add_parser("verify", help="recompute every case with the current code and compare; exit 1 on failure")
    v.add_argument("--dir", default=None, help="vector directory (default: the repository's data/vectors)")
    v.add_argument("--only", action="append", default=None, metavar="GLOB", help="only these cases")
    sub.add_parser("list", help="list the registered cases")


def run(args) -> int:
    if args.action == "generate":
        t0 = time.perf_counter()
        d = Path(args.dir) if args.dir else default_dir()
        entries = generate(d, only=args.only)
        total = sum((d / e["file"]).stat().st_size for e in entries)
        print(f"wrote {len(entries)} cases + manifest.json to {d} ({total / 1e6:.2f} MB) "
              f"in {time.perf_counter() - t0:.1f} s")
        return 0
    if args.action == "verify":
        ok, _ = verify(args.dir, only=args.only)
        return 0 if ok else 1
    for c in all_cases():
        print(f"{c.name:<46} §{c.section:<12} {c.description}")
    return 0
