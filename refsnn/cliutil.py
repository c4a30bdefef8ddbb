"""Small helpers shared by the long-running commands (``train``, ``nas``, ``ec``).

* :func:`add_dataclass_arguments` turns a hyperparameter dataclass (CleanRL style: one field per
  option, defaults in the class) into argparse options, so each command states its options once.
* :func:`fmt_hms` formats elapsed/ETA seconds for the one-line-per-iteration progress output.
"""
from __future__ import annotations

import dataclasses
import math


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
