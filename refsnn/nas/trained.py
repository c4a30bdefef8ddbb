"""The networks of ``refsnn train`` runs, rebuilt and read back (SPEC §4, §8).

* :func:`architecture` -- the network of a run by content: the spec string of a fixed architecture
  (``c32-p-c64-p``) or ``genotype[<flat genes>]@<C>`` for an MSE-NAS genotype (whose file is read
  here), so a run whose genotype file moved can still be rebuilt.
* :func:`build_network` -- that string's network with its initial weights, drawn from
  ``default_rng(SeedSequence(seed, spawn_key=(0,)))``.
* :func:`run_dataset` -- the dataset a run trains and evaluates on: ``load(data)``, then ``take`` and
  ``holdout`` (``n_val``: the last N training samples as the test split).
* :func:`load_run` -- ``(net, ds, settings)`` of a finished or interrupted run directory: its recorded
  settings (``config.json``), its dataset and its last checkpoint's network, in eval mode.
* :func:`per_sample_hits` -- per test sample of a finished run, whether its last checkpoint classifies
  it correctly (for paired per-sample statistics).

These functions only read files (:mod:`refsnn.io`); the run directories are written by the commands
(:mod:`refsnn.commands.training`). They live in the ``nas`` layer because it is the lowest one that
can rebuild every network a run records: a genotype network needs :mod:`refsnn.nas.network`.
"""
from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np

from refsnn._checks import check_choice, check_int
from refsnn.datasets import load
from refsnn.io import load_npz, read_json
from refsnn.kernels.lif import PRESETS
from refsnn.nas.network import ARCH_PREFIX, build_genotype_network, parse_genotype_arch
from refsnn.snn.archs import ARCHS, build_arch
from refsnn.snn.checkpoint import restore_checkpoint
from refsnn.snn.trainer import evaluate_per_sample

__all__ = ["architecture", "build_network", "run_dataset", "load_run", "per_sample_hits", "DTYPES"]

DTYPES = ("float32", "float64")
_GENOTYPE_ARCH = re.compile(r"^genotype\[([0-9 ]+)\]@([0-9]+)$")
#: settings of ``config.json`` that :func:`load_run` needs, and those that may be absent (``None``)
_REQUIRED = ("data", "timesteps", "seed", "neuron", "dtype", "eval_batch_size")
_OPTIONAL = ("n_train", "n_test", "n_val", "genotype")


def architecture(arch: str, genotype: str | None = None) -> str:
    """The network of ``--arch`` (or of ``--genotype``, a genotype JSON path, when given) by content:
    the spec string of a fixed architecture or ``genotype[<flat genes>]@<C>``."""
    arch = f"{ARCH_PREFIX}{genotype}" if genotype is not None else arch
    if arch.startswith(ARCH_PREFIX):
        flat, channels = parse_genotype_arch(arch)
        return f"genotype[{' '.join(map(str, flat))}]@{channels}"
    return ARCHS.get(arch, arch)


def build_network(arch: str, *, input_shape, num_classes: int, timesteps: int, seed: int, neuron: str,
                  dtype: str):
    """The network of :func:`architecture` string ``arch`` with its initial weights (stream
    ``SeedSequence(seed, spawn_key=(0,))``); ``neuron`` a :data:`refsnn.kernels.lif.PRESETS` name."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    kw = dict(input_shape=input_shape, num_classes=num_classes, timesteps=timesteps, rng=rng,
              neuron=PRESETS[neuron], dtype=np.dtype(dtype))
    m = _GENOTYPE_ARCH.match(arch)
    if m:
        return build_genotype_network(tuple(int(g) for g in m[1].split()), channels=int(m[2]), **kw)
    return build_arch(arch, **kw)


def run_dataset(data: str, *, timesteps: int, seed: int, n_train: int | None = None, n_test: int | None = None,
                n_val: int | None = None):
    """The dataset a run trains and evaluates on: ``load(data)``, then ``take(n_train, n_test)`` and
    ``holdout(n_val)`` (every ``test`` split is then the held-out tail of the training split)."""
    ds = load(data, timesteps=timesteps, seed=seed)
    if n_train is not None or n_test is not None:
        ds = ds.take(n_train, n_test)
    if n_val is not None:
        ds = ds.holdout(n_val)
    return ds


def _settings(path: Path) -> types.SimpleNamespace:
    """The recorded settings of ``config.json`` with the values :func:`load_run` uses checked
    (``ValueError``/``TypeError`` naming the file and the key)."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing or ("architecture" not in raw and "arch" not in raw):
        raise ValueError(f"{path}: no {missing or ['architecture']} (not a 'refsnn train' run)")
    try:
        for k in ("timesteps", "eval_batch_size"):
            check_int(k, raw[k], lo=1)
        check_int("seed", raw["seed"], lo=0)
        check_choice("neuron", raw["neuron"], tuple(PRESETS))
        check_choice("dtype", raw["dtype"], DTYPES)
        for k in ("n_train", "n_test", "n_val"):
            if raw.get(k) is not None:
                check_int(k, raw[k], lo=1)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{path}: {e}") from None
    return types.SimpleNamespace(**{**dict.fromkeys(_OPTIONAL), **raw})


def load_run(run_dir) -> tuple:
    """``(net, ds, settings)`` of a finished or interrupted ``refsnn train`` run: its ``config.json``
    (``settings``, attribute access: ``settings.eval_batch_size``, ``settings.arch``, ...), the dataset
    it was evaluated on (same ``take``/``holdout``), and its network (built from the recorded
    ``architecture``, so the genotype file need not exist any more) with the weights and BN
    statistics of ``checkpoint.npz`` (the last finished epoch), in eval mode.
    ``evaluate_per_sample(net, ds, "test", settings.eval_batch_size)`` reproduces the run's last
    ``test_accuracy`` image by image. ``FileNotFoundError`` naming ``run_dir`` without those files."""
    run = Path(run_dir)
    for f in ("config.json", "checkpoint.npz"):
        if not (run / f).is_file():
            raise FileNotFoundError(f"run_dir: no {f} in {run}")
    s = _settings(run / "config.json")
    ds = run_dataset(s.data, timesteps=s.timesteps, seed=s.seed, n_train=s.n_train, n_test=s.n_test, n_val=s.n_val)
    arch = getattr(s, "architecture", None) or architecture(s.arch, s.genotype)
    net = build_network(arch, input_shape=ds.input_shape, num_classes=ds.num_classes, timesteps=s.timesteps,
                        seed=s.seed, neuron=s.neuron, dtype=s.dtype)
    restore_checkpoint(load_npz(run / "checkpoint.npz"), net, source=str(run / "checkpoint.npz"))
    net.eval()
    return net, ds, s


def per_sample_hits(run_dir) -> np.ndarray:
    """bool ``[N_test]``: per test sample of a finished run (its :func:`load_run` dataset), whether the
    last checkpoint classifies it correctly; ``RuntimeError`` unless their mean is the
    ``test_accuracy`` of the run's ``summary.json`` (for paired per-sample statistics)."""
    run = Path(run_dir)
    net, ds, s = load_run(run)
    hits, _ = evaluate_per_sample(net, ds, "test", s.eval_batch_size)
    want = read_json(run / "summary.json")["test_accuracy"]
    if abs(hits.mean() - want) > 1e-9:
        raise RuntimeError(f"{run}: the checkpoint gives {hits.mean():.4f} on test, the summary {want:.4f}")
    return hits
