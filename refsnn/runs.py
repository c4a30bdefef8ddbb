"""The run directory: what ``refsnn train``, ``refsnn nas`` and ``refsnn ec`` write, written one way.

A run directory ``OUT`` holds

* ``.lock`` -- the pid of the process writing it; a second writer is refused (a lock left by a dead
  process is taken over);
* ``config.json`` -- the command's whole config; on ``--resume`` the fields named as the run's
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
import io
import math
import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from refsnn.io import atomic_savez, atomic_write_json, atomic_write_text, load_npz, read_json
from refsnn.plot import line_plot_png
from refsnn.provenance import write_environment

__all__ = ["RunDir", "fmt_hms"]


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
        self.path = Path(path)
        self.config = dict(config)
        missing = [k for k in resume_keys if k not in self.config]
        if missing:
            raise ValueError(f"resume_keys: not in the config: {missing}")
        self.resume_keys = tuple(resume_keys)
        self.resume, self.overwrite = bool(resume), bool(overwrite)
        if self.resume and self.overwrite:
            raise ValueError("overwrite: cannot both resume a run and overwrite it")
        self.checkpoint_path = self.path / checkpoint
        self.columns = tuple(columns)
        self.outputs = tuple(outputs)
        self._stored_config = stored_config
        self.added_keys = dict(added_keys or {})
        self._lock = self.path / ".lock"
        self._locked = False
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
        atomic_write_json(self.path / "config.json", self.config)
        write_environment(self.path)

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
        for _ in range(2):
            try:
                fd = os.open(self._lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self._lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid > 0 and _alive(pid):
                    raise ValueError(f"out: {self.path} is in use by another run (pid {pid}); wait for it "
                                     f"or remove {self._lock} if that process is gone") from None
                self._lock.unlink(missing_ok=True)  # a stale lock of a dead process
                continue
            except OSError as e:  # permission denied, read-only file system, ...: before any work
                raise ValueError(f"out: {self.path} is not writable: {e.strerror or e}") from None
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self._locked = True
            return
        raise ValueError(f"out: cannot lock {self._lock}")

    def _release(self) -> None:
        if self._locked:
            self._lock.unlink(missing_ok=True)
            self._locked = False

    # -- files -----------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """The path of ``name`` inside the run directory."""
        return self.path / name

    def save_checkpoint(self, arrays: Mapping) -> None:
        """Write the checkpoint atomically (``.npz`` of plain arrays, no pickle)."""
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
        atomic_write_text(self.path / "metrics.csv", buf.getvalue())

    def write_summary(self, summary: Mapping) -> None:
        """``summary.json`` (flat figures of the run)."""
        atomic_write_json(self.path / "summary.json", dict(summary))

    def read_summary(self) -> dict:
        """The ``summary.json`` of the run, or ``{}``."""
        f = self.path / "summary.json"
        return read_json(f) if f.is_file() else {}

    def write_json(self, name: str, obj) -> None:
        """Any other JSON file of the run, atomically."""
        atomic_write_json(self.path / name, obj)

    def write_text(self, name: str, text: str) -> None:
        """Any other text file of the run, atomically."""
        atomic_write_text(self.path / name, text)

    def plot(self, name: str, x, series: Mapping, *, title: str, xlabel: str, ylabel: str = "") -> None:
        """The run's PNG: ``series`` (label -> values) against ``x``."""
        line_plot_png(self.path / name, x, dict(series), title=title, xlabel=xlabel, ylabel=ylabel)


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
