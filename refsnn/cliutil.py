"""Small helpers shared by the long-running commands (``train``, ``nas``, ``ec``).

* :func:`add_dataclass_arguments` turns a hyperparameter dataclass (CleanRL style: one field per
  option, defaults in the class) into argparse options, so each command states its options once.
* :func:`fmt_hms` formats elapsed/ETA seconds for the one-line-per-iteration progress output.
* :func:`map_with_progress` runs independent jobs (trainings, searches) in a spawn-started process
  pool or in this process, in order, with one progress line per finished job (the examples'
  comparison loops).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Callable, Iterable, Iterator


def fmt_hms(seconds: float) -> str:
    """``H:MM:SS`` for a number of seconds (``?`` when not finite, e.g. an ETA before any step)."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def add_dataclass_arguments(p, cls, *, help: dict[str, str] | None = None,
                            types: dict[str, type] | None = None,
                            choices: dict[str, list] | None = None,
                            skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` option per field of dataclass ``cls``, defaulting to the class default.

    ``bool`` fields become flags (``--name`` for a False default, ``--no-name`` for a True one);
    ``types`` gives the parser type of fields whose default is ``None`` (or to override the
    default's type); ``choices`` restricts values; fields in ``skip`` get no option.
    """
    help, types, choices = help or {}, types or {}, choices or {}
    d = cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(d, f.name)
        h = help.get(f.name, "")
        if isinstance(default, bool):
            if default:
                p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                               help=h or f"disable {f.name.replace('_', ' ')}")
            else:
                p.add_argument(flag, dest=f.name, action="store_true", help=h or None)
            continue
        kind = types.get(f.name, type(default))
        if kind is type(None):
            raise TypeError(f"{cls.__name__}.{f.name}: default None needs an entry in types")
        kw = {"choices": choices[f.name]} if f.name in choices else {}
        p.add_argument(flag, dest=f.name, type=kind, default=default,
                       help=f"{h} (default: {default})".strip(), **kw)


def dataclass_from_args(cls, args):
    """The dataclass ``cls`` built from the parsed options of :func:`add_dataclass_arguments`."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def map_with_progress(fn: Callable, jobs: Iterable, *, workers: int,
                      line: Callable[[object], str] | None = None,
                      say: Callable[[str], None] | None = None) -> Iterator:
    """``fn(job)`` for every job, results yielded in job order, one progress line per result.

    ``workers = 0`` runs the jobs one after the other in this process; ``workers >= 1`` uses a
    ``ProcessPoolExecutor`` of that many spawn-started processes (``fn`` and the jobs must be
    picklable: a module-level function and plain data). The line is
    ``[i/n] <line(result)>  elapsed Ns  eta Ns`` (ETA = mean time per finished job x jobs left;
    results arrive in job order, so a long job delays the lines of the shorter ones after it).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected an int >= 0, got {workers!r}")
    jobs = list(jobs)
    say = say or (lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    if workers:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    else:
        pool = contextlib.nullcontext()
    with pool as ex:
        results = ex.map(fn, jobs) if workers else map(fn, jobs)
        for i, r in enumerate(results):
            el = time.perf_counter() - t0
            eta = el / (i + 1) * (len(jobs) - i - 1)
            text = line(r) if line is not None else ""
            say(f"[{i + 1:2d}/{len(jobs)}] {text}  elapsed {el:.0f}s  eta {eta:.0f}s")
            yield r
