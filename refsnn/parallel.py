"""Executors: the one place refsnn starts worker processes or runs work inline.

* :class:`InlineExecutor` -- a ``concurrent.futures.Executor`` that runs each call at once in the
  calling thread (``--workers 0``, tests, debugging); errors travel through the future, as from a pool.
* :func:`make_executor` -- ``workers = 0``: an :class:`InlineExecutor`; ``workers >= 1``: a
  ``ProcessPoolExecutor`` of that many *spawn*-started processes (forking a process that already runs
  OpenMP/BLAS threads is unsafe), with an optional initializer. Every worker dies with its parent
  (:func:`die_with_parent`), so a parent killed with ``kill -9`` leaves no orphans computing on: on
  Linux the kernel sends the worker SIGKILL (``prctl(PR_SET_PDEATHSIG)``), and everywhere a daemon
  thread of the worker exits it once ``os.getppid()`` is no longer the parent's pid (checked every
  :data:`PARENT_POLL_S` seconds). The multiprocessing resource tracker then exits by itself: it stops
  when the last process holding its pipe (the parent and the workers) is gone.
* Pool workers ignore SIGINT: a Ctrl-C in a terminal reaches the whole process group, and the
  parent, which handles it (:func:`refsnn.runs.stop_on_signals`), terminates them; they print nothing.
* :func:`shutdown` -- closes an executor; ``abort=True`` (after an error or a signal) terminates a
  process pool's workers instead of waiting for their current task.
* :func:`map_with_progress` -- ``fn(job)`` for every job, in job order, with one progress line per
  finished job (elapsed and ETA).

Nothing here depends on the algorithms: the population evaluations of ``refsnn ec`` and ``refsnn nas``
and the example scripts' job loops all go through these functions.
"""
from __future__ import annotations

import concurrent.futures as cf
import ctypes
import ctypes.util
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterable, Iterator

from refsnn._checks import check_int

__all__ = ["InlineExecutor", "make_executor", "shutdown", "map_with_progress", "die_with_parent"]

#: how often a worker's watchdog thread checks that its parent is alive (seconds)
PARENT_POLL_S = 0.5
_PR_SET_PDEATHSIG = 1


class InlineExecutor(cf.Executor):
    """Runs every submitted call immediately in the calling thread; :meth:`map` is lazy (each call
    runs when its result is asked for, so a progress line can follow each job as it finishes)."""

    def map(self, fn, *iterables, timeout=None, chunksize=1, **kwargs):
        return map(fn, *iterables)

    def submit(self, fn, /, *args, **kwargs):
        fut = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - delivered through the future, like a pool would
            fut.set_exception(e)
        return fut


def make_executor(workers: int, *, initializer: Callable | None = None, initargs: tuple = ()) -> cf.Executor:
    """An :class:`InlineExecutor` for ``workers = 0``, else a spawn-started process pool of ``workers``
    processes, each running ``initializer(*initargs)`` first (the inline executor runs it at once)."""
    workers = check_int("workers", workers, lo=0)
    if workers == 0:
        if initializer is not None:
            initializer(*initargs)
        return InlineExecutor()
    # PR_SET_PDEATHSIG fires when the *thread* that started the worker ends; only the main thread
    # lives as long as the process, so from other threads the watchdog thread alone is used
    kernel_signal = threading.current_thread() is threading.main_thread()
    return cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                  initargs=(os.getpid(), kernel_signal, initializer, initargs))


def _worker_init(parent_pid: int, kernel_signal: bool, initializer, initargs) -> None:
    """Initializer of every pool worker: ignore SIGINT (a Ctrl-C reaches the terminal's whole process
    group; the parent handles it and terminates its workers, so none prints a ``KeyboardInterrupt``
    traceback), die with the parent, then the caller's initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid, kernel_signal=kernel_signal)
    if initializer is not None:
        initializer(*initargs)


def die_with_parent(parent_pid: int, *, kernel_signal: bool = True) -> None:
    """Make this process exit when ``parent_pid`` (its parent) dies: ``prctl(PR_SET_PDEATHSIG,
    SIGKILL)`` on Linux (with ``kernel_signal``), and a daemon thread polling ``os.getppid()`` every
    :data:`PARENT_POLL_S` seconds that calls ``os._exit`` once the process has been re-parented."""
    if kernel_signal and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no usable libc: the watchdog thread alone
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="refsnn-parent-watchdog",
                     daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def shutdown(executor: cf.Executor, *, abort: bool = False) -> None:
    """Shut ``executor`` down; with ``abort`` a process pool's workers are terminated at once."""
    if abort and isinstance(executor, cf.ProcessPoolExecutor):
        procs = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for pr in procs:
            if pr.is_alive():
                pr.terminate()
        for pr in procs:
            pr.join(timeout=5)
    else:
        executor.shutdown(wait=True, cancel_futures=True)


def map_with_progress(fn: Callable, jobs: Iterable, *, workers: int,
                      line: Callable[[object], str] | None = None,
                      say: Callable[[str], None] | None = None) -> Iterator:
    """``fn(job)`` for every job, results yielded in job order, one progress line per result.

    ``workers = 0`` runs the jobs one after the other in this process; ``workers >= 1`` uses
    :func:`make_executor` (``fn`` and the jobs must be picklable: a module-level function and plain
    data). The line is ``[i/n] <line(result)>  elapsed Ns  eta Ns`` (ETA = mean time per finished job
    x jobs left; results arrive in job order, so a long job delays the lines of the shorter ones).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected an int >= 0, got {workers!r}")
    jobs = list(jobs)
    say = say or (lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    ex = make_executor(workers)
    ok = False
    try:
        for i, r in enumerate(ex.map(fn, jobs)):
            el = time.perf_counter() - t0
            eta = el / (i + 1) * (len(jobs) - i - 1)
            text = line(r) if line is not None else ""
            say(f"[{i + 1:2d}/{len(jobs)}] {text}  elapsed {el:.0f}s  eta {eta:.0f}s")
            yield r
        ok = True
    finally:
        shutdown(ex, abort=not ok)
