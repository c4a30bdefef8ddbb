"""Provenance: which software and machine produced a run's figures.

Trained accuracies repeat exactly within one install but not necessarily across installs of the
same refsnn revision (docs/results.md, "Reproducibility across installs"). So every run directory
(:mod:`refsnn.runs`) holds ``environment.json`` beside its ``config.json``/``summary.json``:
refsnn's version and git commit (when run from a checkout), Python, NumPy, Numba, llvmlite, SciPy,
Pillow, Gymnasium and MuJoCo (when installed), NumPy's BLAS, Numba's threads, the OS and the CPU model.
A user whose GPU backend disagrees with a reference figure can diff two of these files first.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import numba
import numpy as np

from refsnn import __version__
from refsnn.io import atomic_write_json

FORMAT = "refsnn.environment/1"
_LIBS = ("numpy", "numba", "llvmlite", "scipy", "pillow", "gymnasium", "mujoco")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """The checkout's commit (``+dirty`` if it has local changes); ``None`` outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _blas() -> str | None:
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]
        b = deps["blas"]
        return f"{b.get('name')} {b.get('version')}".strip()
    except Exception:  # older NumPy: no dict mode; the field is informational only
        return None


def blas_runtime() -> dict:
    """NumPy's BLAS as loaded in this process (threadpoolctl, when installed): ``blas_library``
    (e.g. ``openblas``), ``blas_version``, ``blas_kernel`` (the CPU kernel OpenBLAS chose, e.g.
    ``Haswell`` or ``SkylakeX``), ``blas_threads``, ``blas_threading_layer``; and the environment
    variables that steer it (``OPENBLAS_CORETYPE``, ``OPENBLAS_L2_SIZE``, ``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS``, ``OPENBLAS_THREAD_TIMEOUT``) when set. Empty of the threadpoolctl keys
    without threadpoolctl."""
    out: dict = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                                            "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT") if k in os.environ}
    try:
        import threadpoolctl  # optional (the test and bench extras have it)
    except ImportError:
        return out
    infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    mine = [i for i in infos if "numpy" in str(i.get("filepath", ""))] or infos
    if mine:
        i = mine[0]
        out.update({"blas_library": i.get("internal_api"), "blas_version": i.get("version"),
                    "blas_kernel": i.get("architecture"), "blas_threads": i.get("num_threads"),
                    "blas_threading_layer": i.get("threading_layer")})
    return out


def environment() -> dict:
    """A flat JSON-ready dict describing this process's software and machine."""
    env = {"format": FORMAT, "refsnn": __version__, "git_commit": _git_commit(),
           "python": platform.python_version(), "implementation": platform.python_implementation(),
           "os": platform.platform(), "machine": platform.machine(), "cpu": _cpu_model(),
           "cpu_count": os.cpu_count(), "blas": _blas()}
    for dist in _LIBS:
        # installed distribution metadata: nothing is imported (gymnasium/mujoco stay unloaded)
        try:
            env[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    env.update(blas_runtime())
    env["numba_threads"] = numba.get_num_threads()
    env["numba_threading_layer"] = str(numba.config.THREADING_LAYER)
    return env


def write_environment(out_dir) -> Path:
    """Write :func:`environment` to ``out_dir/environment.json`` (atomically); returns the path."""
    path = Path(out_dir) / "environment.json"
    atomic_write_json(path, environment())
    return path
