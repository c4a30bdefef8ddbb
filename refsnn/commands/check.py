"""``refsnn check OUTPUT_DIR``: compare another backend's outputs with the reference vectors
(:func:`refsnn.vectors.check.check`; SPEC §7). Exit status 0 when everything compared passes, 1 on
any failure or (without ``--allow-missing``) a missing case."""
from __future__ import annotations

from dataclasses import dataclass

from refsnn.commands.config import option
from refsnn.vectors.check import check

__all__ = ["CheckConfig", "CONFIG", "main"]


@dataclass
class CheckConfig:
    output_dir: str = option(help="directory with one <case>.npz of out.* arrays per case (data/vectors/README.md)",
                             positional=True, metavar="OUTPUT_DIR")
    ref: str | None = option(None, "reference vector directory (default: the installed data/vectors)", metavar="DIR")
    allow_missing: bool = option(False, "report cases absent from OUTPUT_DIR but do not fail because of them")
    only: list[str] = option([], "compare only cases whose name matches (fnmatch; repeatable)", metavar="GLOB")


CONFIG = CheckConfig


def main(cfg: CheckConfig) -> int:
    ok, _ = check(cfg.output_dir, ref_dir=cfg.ref, allow_missing=cfg.allow_missing, only=cfg.only or None)
    return 0 if ok else 1
