"""Where refsnn's embedded data files live (SPEC §4.2).

Search order of :func:`data_dir`:

1. the environment variable ``REFSNN_DATA``, if set (it then wins outright: a set but missing
   directory is an error, not a reason to look elsewhere);
2. the repository's top-level ``data/`` next to the ``refsnn`` package directory (source checkouts
   and editable installs), recognised by holding ``mnist5k.npz``;
3. ``<sys.prefix>/share/refsnn/data`` (where ``setup.cfg``'s ``data_files`` puts ``mnist5k.npz`` and
   ``README.md`` on a regular install), then the same under the user base (``pip install --user``).

Paper datasets (CIFAR, DVS) are never looked up here: they are passed as explicit directories.
"""
from __future__ import annotations

import os
import site
import sys
from pathlib import Path

ENV_VAR = "REFSNN_DATA"
MARKER = "mnist5k.npz"


def _candidates() -> list[Path]:
    repo = Path(__file__).resolve().parents[2] / "data"
    out = [repo, Path(sys.prefix) / "share" / "refsnn" / "data"]
    try:
        out.append(Path(site.getuserbase()) / "share" / "refsnn" / "data")
    except Exception:  # pragma: no cover - site may be stripped down in embedded interpreters
        pass
    return out


def data_dir() -> Path:
    """Return the directory holding refsnn's embedded data files (see the module docstring).

    Raises
    ------
    FileNotFoundError
        ``REFSNN_DATA`` names a missing directory, or none of the default places holds
        ``mnist5k.npz``; the message lists every place looked at.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={env!r}: no such directory (unset {ENV_VAR} to use "
                                    f"the data shipped with refsnn)")
        return p
    looked = _candidates()
    for p in looked:
        if (p / MARKER).is_file():
            return p
    raise FileNotFoundError(
        f"refsnn data directory not found: none of these holds {MARKER}: "
        + ", ".join(str(p) for p in looked)
        + f". Set {ENV_VAR} to the directory holding {MARKER}, or reinstall refsnn.")


def data_file(name: str) -> Path:
    """Return ``data_dir() / name``; ``FileNotFoundError`` naming the full path if it is missing."""
    d = data_dir()
    p = d / name
    if not p.is_file():
        where = f" ({ENV_VAR} is set)" if os.environ.get(ENV_VAR) else ""
        raise FileNotFoundError(f"{p}: no such file in the refsnn data directory {d}{where}")
    return p
