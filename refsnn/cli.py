"""Command line: ``refsnn <command> ...`` (SPEC §8).

Each command lives in its own module of :mod:`refsnn.commands`, which exposes ``CONFIG`` (its config
dataclass: the options, their ``--help`` texts and their validation; :mod:`refsnn.commands.config`)
and ``main(config) -> int`` (the exit status). Only the invoked command's module is imported, so
``refsnn bench`` does not pay for importing gymnasium. To add a command, add one line to COMMANDS.
Every command is also callable as a function: ``refsnn.cli.main(["bench", "--json", "b.json"])``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from refsnn.commands.config import parse

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser().parse_args(argv[:1] or argv)
    modname, help_line = COMMANDS[top.command]
    mod = importlib.import_module(modname)
    try:
        cfg = parse(mod.CONFIG, argv[1:], prog=f"refsnn {top.command}", description=help_line)
        return int(mod.main(cfg) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        # Bad user input: one clear line, no traceback. REFSNN_DEBUG=1 shows the traceback.
        if os.environ.get("REFSNN_DEBUG"):
            raise
        print(f"refsnn {top.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
