"""Up-front memory estimates of a command's options: refuse what cannot fit before any work.

A size option (``--population``, ``--cells``, ``--eval-members``, ``--neurons``, ...) typed with a few
zeros too many would otherwise run silently for minutes and end in the kernel's OOM killer (or a
``SIGABRT`` under ``ulimit -v``). Each command's config estimates, from its options alone, the bytes
its largest structures need (a lower estimate: only what certainly grows with the option) and calls
:func:`check_fits`, which compares them with the machine's memory: the physical memory
(``os.sysconf`` pages), or the address-space limit (``RLIMIT_AS``) when one is set and smaller.
"""
from __future__ import annotations

import os
import resource

__all__ = ["machine_memory", "check_fits", "fmt_bytes"]


def machine_memory() -> int:
    """Bytes this process may use at most: physical memory (``SC_PAGE_SIZE x SC_PHYS_PAGES``), or
    the soft ``RLIMIT_AS`` when set and smaller; ``0`` when neither is known."""
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        phys = 0
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError):
        soft = resource.RLIM_INFINITY
    if soft != resource.RLIM_INFINITY and soft > 0:
        return min(phys, soft) if phys > 0 else soft
    return max(phys, 0)


def fmt_bytes(n: float) -> str:
    """``n`` bytes as ``12.3 GB`` (powers of 1024, the largest unit that keeps the figure >= 1)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    return f"{n:.3g} EB"  # unreachable: PB returns above


def check_fits(option: str, need: float, what: str, *, memory: int | None = None) -> None:
    """``ValueError`` naming ``option`` when ``need`` bytes (for ``what``, e.g. "the returns of
    10^9 members") exceed the machine's memory (:func:`machine_memory`, or ``memory``)."""
    have = machine_memory() if memory is None else memory
    if have > 0 and need > have:
        raise ValueError(f"{option}: {what} need about {fmt_bytes(need)}, more than this machine's "
                         f"{fmt_bytes(have)} of memory")
