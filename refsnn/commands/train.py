"""``refsnn train``: STBP training of a Conv-LIF network on real data (SPEC §4, §8).

The options are :class:`refsnn.commands.training.TrainConfig` and the run is
:func:`refsnn.commands.training.train` (the epoch loop, the run directory and its checkpoints; the
module docstring there describes them): a training run is shared with ``refsnn nas``, which trains
its finalists and its winner the same way, so it lives in :mod:`refsnn.commands.training` and this
module is only the command: :data:`CONFIG`, :func:`main` (signals) and :func:`demo_train`. From
Python::

    from refsnn.commands.training import TrainConfig, train
    summary = train(TrainConfig(data="mnist5k", epochs=2, out="runs/quick"))

Kept importable from here for one release (re-exports): ``TrainConfig``, ``train``,
``check_checkpoint``, ``check_out_dir`` (now :mod:`refsnn.commands.config`), ``load_run`` (returns a
``TrainConfig``; new code: :func:`refsnn.nas.trained.load_run`), ``per_sample_hits``
(:func:`refsnn.nas.trained.per_sample_hits`) and ``evaluate_per_sample``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from refsnn.commands.config import check_out_dir
from refsnn.commands.training import TrainConfig, check_checkpoint, train
from refsnn.nas import trained
from refsnn.nas.trained import per_sample_hits
from refsnn.runs import stop_on_signals
from refsnn.snn.trainer import evaluate_per_sample

__all__ = ["TrainConfig", "CONFIG", "train", "main", "load_run", "per_sample_hits", "demo_train", "check_checkpoint",
           "check_out_dir", "evaluate_per_sample"]

CONFIG = TrainConfig


def main(cfg: TrainConfig) -> int:
    """``refsnn train``: :func:`train`; SIGINT / SIGTERM stop it with one line and status 130 / 143, the
    checkpoint of the last completed epoch kept (:func:`refsnn.runs.stop_on_signals`)."""
    with stop_on_signals("refsnn train", f"{cfg.out} holds the last completed epoch: continue with --resume"):
        train(cfg)
    return 0


def demo_train(out_dir, *, quiet: bool = False) -> dict:
    """A short (~1 minute) mnist5k run for ``refsnn demo``: 3 epochs of the default network."""
    return train(TrainConfig(out=str(out_dir), epochs=3, quiet=quiet, overwrite=True))


def load_run(run_dir) -> tuple:
    """``(net, ds, config)`` of a run as :func:`refsnn.nas.trained.load_run` gives them, with the
    recorded settings as a :class:`TrainConfig` (``ValueError`` naming ``run_dir`` for keys it does
    not know). Kept for one release: new code calls :func:`refsnn.nas.trained.load_run`."""
    net, ds, settings = trained.load_run(run_dir)
    raw = {k: v for k, v in vars(settings).items() if k != "architecture"}
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ValueError(f"run_dir: {Path(run_dir) / 'config.json'} has keys TrainConfig does not know: {unknown}")
    return net, ds, TrainConfig(**raw)
