"""The one way to declare a command's options: a config dataclass.

Each command module defines a dataclass whose fields are its options (CleanRL style: the defaults
are in the class) and whose per-field ``help`` is the ``--help`` text::

    @dataclass
    class TrainConfig:
        epochs: int = option(15, "training epochs")
        arch: str = option("csnn", "network: csnn, c32-p-c64-p, ...")
        def __post_init__(self):            # validation, naming the field
            check_int("epochs", self.epochs, lo=1)

:func:`build_parser` turns such a class into an ``argparse`` parser (``--field-name`` per field,
``bool`` fields as ``--name``/``--no-name`` flags, ``X | None`` fields taking an ``X``, ``list[str]``
fields repeatable (``nargs="+"``: one option taking several values), ``positional=True`` fields as
positional arguments) and :func:`parse` returns the validated instance. The same class is the Python
API: ``train(TrainConfig(epochs=2))``. The examples declare their options the same way.

The options every command with a run directory shares (``--out``, ``--resume``, ``--overwrite``)
are checked by one function, :func:`check_run_dir_options`, which the configs call.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable

from refsnn.runs import check_run_dir_options

__all__ = ["option", "build_parser", "parse", "to_dict", "check_out_dir", "check_run_dir_options"]

_NO_DEFAULT = dataclasses.MISSING


def option(default: Any = _NO_DEFAULT, help: str = "", *, choices=None, positional: bool = False,
           parse: Callable[[str], Any] | None = None, metavar: str | None = None, nargs: str | None = None) -> Any:
    """A dataclass field of a command config: its default, its ``--help`` text and how the command
    line spells it (``choices``; ``positional``; ``parse``: a function from the option's text to the
    value, for values like ``auto|1.5``; ``metavar``; ``nargs="+"`` or ``"*"``: a ``list`` field given
    as one option with several values, ``--seeds 0 1 2``, instead of a repeated option). A ``list``
    default is copied per instance."""
    meta = {"help": help, "choices": choices, "positional": positional, "parse": parse, "metavar": metavar,
            "nargs": nargs}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _kind(annotation) -> tuple[type, bool, bool]:
    """``(scalar type, optional, is_list)`` of a field annotation such as ``int``, ``float | None``,
    ``list[str]``."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            raise TypeError(f"config fields take one type (optionally | None), got {annotation}")
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return item, optional, True
    return annotation, optional, False


def build_parser(cls, *, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """An ``argparse`` parser with one option per field of the config dataclass ``cls``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        m = f.metadata
        kind, optional, is_list = _kind(hints[f.name])
        default = (f.default if f.default is not _NO_DEFAULT
                   else f.default_factory() if f.default_factory is not _NO_DEFAULT else None)
        h = m.get("help", "")
        kw: dict = {"help": h}
        if m.get("choices"):
            kw["choices"] = list(m["choices"])
        if m.get("metavar"):
            kw["metavar"] = m["metavar"]
        if m.get("positional"):
            if m.get("nargs"):
                kw.update(nargs=m["nargs"], default=default)
            elif f.default is not _NO_DEFAULT:
                kw.update(nargs="?", default=f.default)
            p.add_argument(f.name, type=m.get("parse") or kind, **kw)
            continue
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            if default:
                p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                               help=h or f"disable {f.name.replace('_', ' ')}")
            else:
                p.add_argument(flag, dest=f.name, action="store_true", **kw)
            continue
        if is_list and m.get("nargs"):
            p.add_argument(flag, dest=f.name, type=m.get("parse") or kind, nargs=m["nargs"], default=None,
                           **{**kw, "help": f"{h} (default: {' '.join(map(str, default))})".strip()})
            continue
        if is_list:
            p.add_argument(flag, dest=f.name, type=m.get("parse") or kind, action="append", default=None, **kw)
            continue
        if default is not None:
            kw["help"] = f"{h} (default: {default})".strip()
        elif optional:
            kw["help"] = f"{h} (default: none)".strip()
        p.add_argument(flag, dest=f.name, type=m.get("parse") or kind, default=default, **kw)
    return p


def parse(cls, argv: list[str], *, prog: str | None = None, description: str | None = None):
    """The validated config ``cls(**options)`` of a command line (``__post_init__`` validates; its
    ``ValueError`` names the field). Repeatable options given no time keep the field's default."""
    ns = build_parser(cls, prog=prog, description=description).parse_args(argv)
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init or not hasattr(ns, f.name):
            continue
        v = getattr(ns, f.name)
        if v is None and f.default_factory is not _NO_DEFAULT:
            continue
        values[f.name] = v
    return cls(**values)


def to_dict(config) -> dict:
    """The config as a plain JSON-ready dict (field order)."""
    return dataclasses.asdict(config)


def check_out_dir(out) -> str:
    """``--out`` as a non-empty path string (:func:`refsnn.runs.check_run_dir_options`)."""
    return check_run_dir_options(out, False, False)
