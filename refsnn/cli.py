"""Command line: ``refsnn <command> ...`` (SPEC §8).

Each command lives in its own module of :mod:`refsnn.commands`, which exposes ``CONFIG`` (its config
dataclass: the options, their ``--help`` texts and their validation; :mod:`refsnn.commands.config`)
and ``main(config) -> int`` (the exit status). Only the invoked command's module is imported, so
``refsnn bench`` does not pay for importing gymnasium. To add a command, add one line to COMMANDS.
Every command is also callable as a function: ``refsnn.cli.main(["bench", "--json", "b.json"])``.

Errors are one line on stderr, ``refsnn COMMAND: error: ...``, and an exit status (no traceback;
``REFSNN_DEBUG=1`` shows it):

* **2, bad input** -- the command line or a file it names is wrong: argparse's usage errors,
  ``ValueError``, ``TypeError`` and ``FileNotFoundError`` (the library's validation names the option,
  the argument or the file);
* **1, failure** -- the input was fine but the run could not complete: any other ``OSError``
  (permission denied, disk full, read-only file system, ...), ``MemoryError``, ``RecursionError`` and a
  broken worker pool (``concurrent.futures.BrokenExecutor``: a worker was killed). The files of the
  run directory stay those of the last completed step (atomic writes), so the run can be resumed.

SIGINT (Ctrl-C) and SIGTERM stop any command with one line on stderr, ``refsnn COMMAND: stopped by
signal N (NAME)...``, and exit status 128 + N (130, 143), without a traceback from the parent or its
worker processes (which ignore SIGINT and are terminated by the parent,
:func:`refsnn.runs.stop_on_signals`, :mod:`refsnn.parallel`); ``train``, ``nas`` and ``ec`` keep their
last completed step for ``--resume``.

Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import errno
import importlib
import os
import sys

from refsnn.commands.config import parse
from refsnn.runs import stop_on_signals

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("refsnn.commands.demo", "small end-to-end run of every pipeline on the embedded data"),
    "bench": ("refsnn.commands.bench", "speed ratios against NumPy baselines measured side by side"),
    "ec": ("refsnn.commands.ec", "Evolving Connectivity (or --method es: ES-RSNN) on a Gymnasium task"),
    "play": ("refsnn.commands.play", "run the deployed 1-bit network of an 'refsnn ec' run, report its return"),
    "nas": ("refsnn.commands.nas",
            "MSE-NAS evolutionary search with the training-free BIE fitness, then optional training of the winner"),
    "train": ("refsnn.commands.train",
              "STBP training of a Conv-LIF network (surrogate-gradient BPTT) on mnist5k/events/CIFAR"),
    "vectors": ("refsnn.commands.vectors",
                "reference vectors: generate (deterministic) or verify against the current code"),
    "check": ("refsnn.commands.check",
              "compare another backend's outputs (a directory of .npz) with the reference vectors"),
    "nir": ("refsnn.commands.nir", "NIR exchange: export a train/ec run as a NIR graph, or simulate a NIR graph"),
}


def _top_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    epilog = "commands:\n" + "\n".join(f"  {n:<{width}}  {h}" for n, (_, h) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="refsnn",
        description="Reference implementation of MSE-NAS and Evolving Connectivity spiking networks.",
        epilog=epilog + "\n\n'refsnn COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


#: exceptions that mean the user's input was wrong (exit status 2)
BAD_INPUT = (ValueError, TypeError, FileNotFoundError)
#: exceptions that mean the run failed for reasons outside its input (exit status 1)
FAILURES = (OSError, MemoryError, RecursionError, concurrent.futures.BrokenExecutor)


def describe(e: BaseException) -> str:
    """One line for the exception ``e``: an ``OSError`` as ``FILE: reason`` (errno's text, not
    ``[Errno 13]``), the others by their message (by their kind when it is empty)."""
    if isinstance(e, OSError) and e.strerror and not isinstance(e, FileNotFoundError):
        files = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        text = f"{files}: {e.strerror}" if files else e.strerror
        if e.errno == errno.ENOSPC:
            text += " (the run's files are those of its last completed step; free space and --resume)"
    elif isinstance(e, MemoryError):
        text = f"out of memory{': ' + str(e) if str(e) else ''}"
    elif isinstance(e, RecursionError):
        text = f"input nested too deeply ({e})"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split("\n"))



def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser().parse_args(argv[:1] or argv)
    modname, help_line = COMMANDS[top.command]
    # SIGINT / SIGTERM: one line and 128 + the signal, no traceback (module docstring); train, nas and ec
    # say in their own line where the run stands
    with stop_on_signals(f"refsnn {top.command}"):
        mod = importlib.import_module(modname)
        try:
            cfg = parse(mod.CONFIG, argv[1:], prog=f"refsnn {top.command}", description=help_line)
            return int(mod.main(cfg) or 0)
        except BAD_INPUT + FAILURES as e:
            # one clear line, no traceback (module docstring); REFSNN_DEBUG=1 shows the traceback
            if os.environ.get("REFSNN_DEBUG"):
                raise
            print(f"refsnn {top.command}: error: {describe(e)}", file=sys.stderr)
            return 2 if isinstance(e, BAD_INPUT) else 1


if __name__ == "__main__":
    sys.exit(main())
