"""The run directory: what ``refsnn train``, ``refsnn nas`` and ``refsnn ec`` write, written one way.

A run directory ``OUT`` holds

* ``.lock`` -- held with ``flock`` by the process writing the run, and holding its pid; a second
  writer is refused (the check and the taking are one atomic step, so of writers racing for a
  directory exactly one wins); the kernel drops the lock of a process that dies, so a lock file
  left by a dead process is taken over;
* ``config.json`` -- the command's whole config (rewritten on ``--resume`` with the run's first new
  file, so a resume with nothing left to do writes nothing); on ``--resume`` the fields named as the run's
  *resume keys* must equal the stored ones (the others, e.g. the number of epochs or workers, may
  change). Resume keys never hold absolute paths, so a run directory can be moved and resumed;
* ``environment.json`` -- library versions, BLAS, threads, CPU and commit (:mod:`refsnn.provenance`);
* ``metrics.csv`` -- one row per iteration, columns in the order the command declares (the same
  after a resume, since the whole history is rewritten from the checkpoint);
* the checkpoint (``checkpoint.npz`` or the command's own name), the PNG of the run, ``summary.json``.

Progress lines (one per epoch or generation) give elapsed time and ETA as :func:`fmt_hms`.

Every file is written atomically (:mod:`refsnn.io`): an interrupted run (or a full disk) leaves the
previous complete version of each. Opening checks the directory first: an ``out`` that names a file,
lies under a file, or cannot be created or written is a ``ValueError`` naming ``out`` before any work.
A directory that already holds a run is refused unless ``resume`` (continue it) or ``overwrite``
(start again: the run's files are removed first).
"""
from __future__ import annotations

import csv
import fcntl
import io
import math
import os
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from refsnn.io import atomic_savez, atomic_write_json, atomic_write_text, load_npz, read_json
from refsnn.plot import line_plot_png
from refsnn.provenance import write_environment

__all__ = ["RunDir", "check_run_dir_options", "fmt_hms", "stop_on_signals"]


class RunDir:
    """One run's output directory (module docstring); use as a context manager::

        with RunDir(out, config=asdict(cfg), resume_keys=("seed", "lr"), resume=cfg.resume) as run:
            if run.resuming:
                state = run.load_checkpoint()
            ...
            run.save_checkpoint(arrays); run.write_metrics(rows); run.write_summary(summary)

    Parameters
    ----------
    path : the directory (created if missing).
    config : the command's config as a JSON-ready dict (written to ``config.json``).
    resume_keys : the config keys a resumed run must share with the stored run.
    resume : continue the run in ``path`` if it has a checkpoint (else start from scratch).
    overwrite : start again in a directory that holds a run (its files are removed).
    checkpoint : the checkpoint's file name.
    columns : the ``metrics.csv`` columns, in order.
    outputs : the command's other files and directories (names inside ``path``), removed with the
        checkpoint, metrics, summary and config on ``overwrite``.
    stored_config : for directories written before ``config.json`` existed: a function of the
        checkpoint path returning the stored config (or ``None``).
    added_keys : resume keys added to the command after runs were written, with the value such a
        run had (a stored config without the key is compared as if it held that value).
    """

    def __init__(self, path, *, config: Mapping, resume_keys: Sequence[str], resume: bool = False,
                 overwrite: bool = False, checkpoint: str = "checkpoint.npz", columns: Sequence[str] = (),
                 outputs: Sequence[str] = (), stored_config=None, added_keys: Mapping | None = None):
        path = check_run_dir_options(path, resume, overwrite)
        self.path = Path(path)
        self.config = dict(config)
        missing = [k for k in resume_keys if k not in self.config]
        if missing:
            raise ValueError(f"resume_keys: not in the config: {missing}")
        self.resume_keys = tuple(resume_keys)
        self.resume, self.overwrite = bool(resume), bool(overwrite)
        self.checkpoint_path = self.path / checkpoint
        self.columns = tuple(columns)
        self.outputs = tuple(outputs)
        self._stored_config = stored_config
        self.added_keys = dict(added_keys or {})
        self._lock = self.path / ".lock"
        self._lock_fd: int | None = None
        self._pending_files = False   # config.json / environment.json not yet written (a resume)
        self.resuming = False

    # -- opening -------------------------------------------------------------------------------
    def __enter__(self) -> "RunDir":
        self._make_dir()
        self._acquire()
        try:
            self._open()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _open(self) -> None:
        has_run = self.checkpoint_path.exists()
        if has_run and not (self.resume or self.overwrite):
            raise ValueError(f"out: {self.path} already holds a run ({self.checkpoint_path.name}); pass --resume "
                             "to continue it, --overwrite to start again, or choose another --out")
        if self.overwrite:  # the previous run's files go, those this run may not write again too
            for name in (self.checkpoint_path.name, "metrics.csv", "summary.json", "config.json", *self.outputs):
                p = self.path / name
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
            has_run = False
        if self.resume and has_run:
            stored = self._read_stored_config()
            if stored is None:
                raise ValueError(f"resume: {self.path} has a checkpoint but no config.json to check the settings")
            stored = {**self.added_keys, **stored}
            diff = [k for k in self.resume_keys if stored.get(k) != self.config[k]]
            if diff:
                raise ValueError(f"resume: {self.path} was written with different settings for {diff}: "
                                 + ", ".join(f"{k}={stored.get(k)!r} (now {self.config[k]!r})" for k in diff))
            self.resuming = True
        self._pending_files = True
        if not self.resuming:
            self._write_run_files()

    def _write_run_files(self) -> None:
        """``config.json`` and ``environment.json``: at once for a new run, with the first file a
        resumed run writes (a resume with nothing left to do changes nothing)."""
        if self._pending_files:
            atomic_write_json(self.path / "config.json", self.config)
            write_environment(self.path)
            self._pending_files = False

    def _read_stored_config(self) -> dict | None:
        f = self.path / "config.json"
        if f.is_file():
            try:
                stored = read_json(f)
            except ValueError as e:
                raise ValueError(f"resume: {e}") from None
            if not isinstance(stored, dict):
                raise ValueError(f"resume: {f} does not hold a JSON object")
            return stored
        return self._stored_config(self.checkpoint_path) if self._stored_config else None

    def _make_dir(self) -> None:
        """Create the directory; ``ValueError`` naming ``out`` if it is a file or cannot be created."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out: {self.path} is a file, not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ValueError(f"out: {self.path} cannot be created (a file is in the way)") from None
        except OSError as e:
            raise ValueError(f"out: {self.path} cannot be created: {e.strerror or e}"
                             + (f" ({e.filename})" if e.filename and str(e.filename) != str(self.path) else "")
                             ) from None

    def _acquire(self) -> None:
        """Take the run's lock: an exclusive ``flock`` on ``.lock`` (atomic, and released by the kernel
        when the holder dies, however it dies), held until :meth:`_release`. A lock file that was
        unlinked (released) between our open and our lock is not the lock any more: open again. The
        file holds the holder's pid, for the message of the writer refused; a pid of another live
        process in an unlocked file (a writer that does not use ``flock``) is refused too."""
        for _ in range(100):
            try:
                fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:  # permission denied, read-only file system, ...: before any work
                raise ValueError(f"out: {self.path} is not writable: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:   # held by a live writer
                os.close(fd)
                pid = _read_pid(self._lock)
                raise ValueError(f"out: {self.path} is in use by another run (pid {pid or '?'}); wait for it "
                                 f"or remove {self._lock} if that process is gone") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self._lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:   # released (unlinked) by its holder meanwhile
                os.close(fd)
                continue
            pid = _read_pid(self._lock)
            if pid > 0 and pid != os.getpid() and _alive(pid):
                os.close(fd)
                raise ValueError(f"out: {self.path} is in use by another run (pid {pid}); wait for it "
                                 f"or remove {self._lock} if that process is gone")
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._lock_fd = fd
            return
        raise ValueError(f"out: cannot lock {self._lock}")

    def _release(self) -> None:
        """Unlink ``.lock`` while still holding it, then drop the lock (a writer waiting on the
        unlinked file notices and opens the path again)."""
        if self._lock_fd is not None:
            self._lock.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- files -----------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """The path of ``name`` inside the run directory."""
        return self.path / name

    def save_checkpoint(self, arrays: Mapping) -> None:
        """Write the checkpoint atomically (``.npz`` of plain arrays, no pickle)."""
        self._write_run_files()
        atomic_savez(self.checkpoint_path, dict(arrays))

    def load_checkpoint(self, *, required: Iterable[str] = ()) -> dict:
        """The checkpoint's arrays (``ValueError`` naming the file if unreadable or a key is missing)."""
        return load_npz(self.checkpoint_path, required=tuple(required))

    def write_metrics(self, rows: Sequence[Mapping]) -> None:
        """``metrics.csv``: one row per iteration, the declared columns in order (``ValueError`` for a
        row with other keys)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(self.columns), lineterminator="\n", extrasaction="raise")
        w.writeheader()
        for r in rows:
            if set(r) != set(self.columns):
                raise ValueError(f"rows: a metrics row has keys {sorted(r)}, expected {list(self.columns)}")
            w.writerow(r)
        self._write_run_files()
        atomic_write_text(self.path / "metrics.csv", buf.getvalue())

    def write_summary(self, summary: Mapping) -> None:
        """``summary.json`` (flat figures of the run)."""
        self._write_run_files()
        atomic_write_json(self.path / "summary.json", dict(summary))

    def read_summary(self) -> dict:
        """The ``summary.json`` of the run, or ``{}``."""
        f = self.path / "summary.json"
        return read_json(f) if f.is_file() else {}

    def write_json(self, name: str, obj) -> None:
        """Any other JSON file of the run, atomically."""
        self._write_run_files()
        atomic_write_json(self.path / name, obj)

    def write_text(self, name: str, text: str) -> None:
        """Any other text file of the run, atomically."""
        self._write_run_files()
        atomic_write_text(self.path / name, text)

    def plot(self, name: str, x, series: Mapping, *, title: str, xlabel: str, ylabel: str = "") -> None:
        """The run's PNG: ``series`` (label -> values) against ``x``."""
        self._write_run_files()
        line_plot_png(self.path / name, x, dict(series), title=title, xlabel=xlabel, ylabel=ylabel)


class _Stopped(BaseException):
    """Raised in the main thread by the handler of :func:`stop_on_signals` (not an ``Exception``, so
    that no ``except Exception`` of the run swallows it)."""


@contextmanager
def stop_on_signals(command: str, note: str = ""):
    """SIGINT (Ctrl-C) and SIGTERM (a scheduler, ``timeout``, ``kill``) stop what runs inside: the
    exception unwinds the run like any error (the worker pool is terminated, the run lock released;
    every file is written atomically, so the run directory holds its last completed step), then one
    line ``COMMAND: stopped by signal N (SIGINT); NOTE`` goes to stderr, no traceback, and
    ``SystemExit(128 + N)`` (130 for SIGINT, 143 for SIGTERM) leaves. Further signals are ignored
    while the run unwinds. Outside the main thread no handler can be installed: a
    ``KeyboardInterrupt`` is still reported as SIGINT."""
    sigs = (signal.SIGINT, signal.SIGTERM)
    stopped: list[int] = []

    def handler(signum, frame):
        if not stopped:
            stopped.append(signum)
            for sg in sigs:   # a second Ctrl-C must not interrupt the clean-up of the first
                signal.signal(sg, signal.SIG_IGN)
            raise _Stopped(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sg: signal.signal(sg, handler) for sg in sigs}
    try:
        yield
    except BaseException as e:
        if not stopped and not isinstance(e, KeyboardInterrupt):
            raise
        signum = stopped[0] if stopped else int(signal.SIGINT)
        # the stop itself, or an error that only wraps it (a signal raised while a Numba kernel
        # returned becomes "SystemError: ... returned a result with an exception set", caused by it)
        extra = "" if _caused_by_stop(e) else f" (while stopping: {type(e).__name__}: {e})"
        print(f"{command}: stopped by signal {signum} ({signal.Signals(signum).name}){extra}"
              + (f"; {note}" if note else ""), file=sys.stderr, flush=True)
        raise SystemExit(128 + signum) from None
    finally:
        for sg, h in previous.items():
            signal.signal(sg, signal.SIG_DFL if h is None else h)


def check_run_dir_options(out, resume: bool, overwrite: bool) -> str:
    """The one rule of the run-directory options (``refsnn train``, ``nas``, ``ec`` and
    :class:`RunDir`): ``out`` a non-empty path (an empty one would write the run into the current
    directory; ``--out .`` says so explicitly), returned as a string; ``resume`` and ``overwrite``
    not both. ``ValueError`` naming ``out`` / ``overwrite``. Whether the directory already holds a
    run is :class:`RunDir`'s check, when the run starts."""
    if isinstance(out, os.PathLike):
        out = os.fspath(out)
    if not isinstance(out, str) or not out.strip():
        raise ValueError(f"out: expected a directory path, got {out!r} (an empty --out would write the run "
                         "into the current directory; pass --out . for that)")
    if resume and overwrite:
        raise ValueError("overwrite: --resume and --overwrite exclude each other")
    return out


def _caused_by_stop(e: BaseException) -> bool:
    """Whether ``e`` is the signal's own exception or was raised by it (its cause/context chain)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (_Stopped, KeyboardInterrupt)):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _read_pid(lock: Path) -> int:
    """The pid written in a lock file (0 if none can be read)."""
    try:
        return max(0, int(lock.read_text().strip() or 0))
    except (OSError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fmt_hms(seconds: float) -> str:
    """``H:MM:SS`` for a number of seconds (``?`` when not finite, e.g. an ETA before any step)."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
