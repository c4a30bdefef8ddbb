"""An STBP training run in a run directory: what ``refsnn train`` runs, and what ``refsnn nas`` runs for
its finalists and its winner (SPEC §4, §8).

:class:`TrainConfig` holds the options of a training run (CleanRL style: the defaults are in the
class; they are ``refsnn train``'s command line, :mod:`refsnn.commands.train`) and :func:`train` runs
it. From Python::

    from refsnn.commands.training import TrainConfig, train
    summary = train(TrainConfig(data="mnist5k", epochs=2, out="runs/quick"))

What this module adds to the library's epoch loop (:func:`refsnn.snn.trainer.train_epoch`,
:func:`refsnn.snn.trainer.evaluate`) is the run directory: its lock, ``config.json`` and the resume
keys, the checkpoint written after every epoch and restored on ``--resume``, ``metrics.csv``,
``curve.png``, ``summary.json`` and the progress lines. Only commands write run directories (the
``algorithms-without-io`` contract of ``setup.cfg``), so this is a shared module of
:mod:`refsnn.commands`, not a library function. The network and the dataset of a run are the
library's (:mod:`refsnn.nas.trained`), which also reads finished runs back (``load_run``,
``per_sample_hits``).

One epoch: the batches of ``iterate_batches(ds, "train", batch_size, rng=rng_e, shuffle=True,
augment=...)`` with ``rng_e = default_rng(SeedSequence(seed, spawn_key=(1, epoch)))`` (so shuffling
and augmentation depend only on ``(seed, epoch)`` and a resumed run needs no pickled RNG state) go
through :func:`refsnn.snn.trainer.train_epoch` (forward over T steps, loss, STBP backward, optimiser
step at the learning rate of a per-step cosine schedule with linear warm-up,
:func:`refsnn.snn.optim.cosine_lr`); then :func:`refsnn.snn.trainer.evaluate` on the test split (or,
with ``--n-val N``, on the last N training samples held out as a validation split), one progress
line, a row of ``metrics.csv``, ``curve.png`` and an atomic ``checkpoint.npz``. The initial weights
come from ``default_rng(SeedSequence(seed, spawn_key=(0,)))``.

Run directory (:class:`refsnn.runs.RunDir`): ``config.json``, ``environment.json``, ``metrics.csv``
(epoch, loss, train_accuracy, test_accuracy, spikes_per_sample, lr, epoch_seconds,
elapsed_seconds), ``curve.png``, ``checkpoint.npz`` (:mod:`refsnn.snn.checkpoint`), ``summary.json``
(flat: ``test_accuracy`` 0-1, ``best_test_accuracy``, ``epochs``, ``wall_seconds``,
``spikes_per_sample``, operation counts and energy, ...). A directory holding a run is refused
unless ``--resume`` (continue to the bit-identical result of an uninterrupted run, same process
layout and BLAS) or ``--overwrite``. The network is recorded by content (``architecture``: the spec
string, or the genotype and its width), so a run whose genotype file moved can still be resumed
and rebuilt (:func:`refsnn.nas.trained.load_run`). ``--epochs`` may change on resume; the other
settings may not.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn._checks import check_choice, check_float, check_int
from refsnn.commands.config import check_run_dir_options, option
from refsnn.datasets import iterate_batches
from refsnn.ec.restore import restored_array, restored_int
from refsnn.io import load_npz
from refsnn.kernels.lif import PRESETS
from refsnn.nas import trained
from refsnn.nas.network import ARCH_PREFIX
from refsnn.runs import RunDir
from refsnn.snn.checkpoint import checkpoint_arrays, checkpoint_meta, restore_checkpoint
from refsnn.snn.energy import E_AC_PJ, E_MAC_PJ, energy_report, evaluate_with_noise
from refsnn.snn.loss import LOSSES
from refsnn.snn.optim import OPTIMIZERS, cosine_lr, make_optimizer
from refsnn.snn.trainer import evaluate, train_epoch
from refsnn.tuning import set_threads

__all__ = ["TrainConfig", "train", "check_checkpoint", "architecture", "build_network", "dataset", "COLUMNS"]

_DATA_HELP = ("dataset: mnist5k | mnist5k-events | cifar10:DIR | cifar100:DIR | events:DIR, each optionally "
              "with [fold=K/N] (cross-validation fold K of N as the test split)")


@dataclass
class TrainConfig:
    data: str = option("mnist5k", _DATA_HELP)
    arch: str = option("csnn", "network: csnn (c32-p-c64-p), csnn-small, csnn-fc, tokens c<N>/p/f<N> joined by '-', "
                               "or genotype:PATH[@C] (an MSE-NAS genotype JSON, channel width C)")
    genotype: str | None = option(None, "train the network of this MSE-NAS genotype JSON (best_genotype.json of "
                                        "refsnn nas) instead of --arch")
    timesteps: int = option(2, "simulation steps T")
    epochs: int = option(15, "training epochs")
    batch_size: int = option(64, "training batch size")
    lr: float = option(4e-3, "peak learning rate (cosine schedule with linear warm-up)")
    optimizer: str = option("adamw", "optimiser", choices=OPTIMIZERS)
    weight_decay: float | None = option(None, "weight decay (none: 0.01 for adamw, 5e-4 for sgd)")
    momentum: float = option(0.9, "SGD momentum")
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs")
    min_lr: float = option(0.0, "floor of the cosine schedule")
    loss: str = option("ce", "ce: cross-entropy of the mean over T; tet: mean over t of CE(logits_t)",
                       choices=LOSSES)
    label_smoothing: float = option(0.0, "label smoothing of the loss")
    augment: bool = option(True, "random crop (and flip where the dataset allows it)")
    neuron: str = option("msenas", "LIF preset (refsnn.kernels.lif.PRESETS)", choices=tuple(PRESETS))
    seed: int = option(0, "seed of the initial weights, shuffling and augmentation")
    eval_batch_size: int = option(250, "evaluation batch size")
    n_train: int | None = option(None, "use only the first N training samples")
    n_test: int | None = option(None, "use only the first N test samples")
    n_val: int | None = option(None, "hold out the last N training samples as a validation split and report "
                                     "accuracy on it instead of the test split (model selection)")
    dtype: str = option("float32", "floating-point type", choices=("float32", "float64"))
    threads: int | None = option(None, "threads for BLAS and Numba (default: every core; 1 is more robust "
                                       "on a machine busy with other jobs)")
    out: str = option("runs/train", "output directory")
    resume: bool = option(False, "continue the run in --out")
    overwrite: bool = option(False, "start again in an --out that holds a run")
    stop_after: int | None = option(None, "stop after N epochs of this invocation (continue later with --resume)")
    quiet: bool = option(False, "no progress lines")
    eval_noise: float | None = option(None, "also report test accuracy with additive Gaussian input noise of "
                                            "this standard deviation")

    def __post_init__(self):
        check_int("timesteps", self.timesteps, lo=1)
        check_int("epochs", self.epochs, lo=1)
        check_int("batch_size", self.batch_size, lo=1)
        check_int("eval_batch_size", self.eval_batch_size, lo=1)
        check_int("seed", self.seed, lo=0)
        check_float("lr", self.lr, lo=0.0, lo_open=True)
        check_float("warmup_epochs", self.warmup_epochs, lo=0.0)
        check_float("min_lr", self.min_lr, lo=0.0, hi=self.lr)  # a floor above the peak would climb
        check_float("label_smoothing", self.label_smoothing, lo=0.0, hi=1.0, hi_open=True)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("loss", self.loss, LOSSES)
        check_choice("neuron", self.neuron, tuple(PRESETS))
        check_choice("dtype", self.dtype, ("float32", "float64"))
        if self.weight_decay is not None:
            check_float("weight_decay", self.weight_decay, lo=0.0)
        if self.eval_noise is not None:
            check_float("eval_noise", self.eval_noise, lo=0.0)
        for k in ("n_train", "n_test", "n_val", "stop_after", "threads"):
            if getattr(self, k) is not None:
                check_int(k, getattr(self, k), lo=1)
        self.out = check_run_dir_options(self.out, self.resume, self.overwrite)


#: config fields that do not define the run (they may differ on --resume); ``arch``/``genotype`` are
#: compared by content, as ``architecture``
_NOT_RESUME_KEYS = ("epochs", "threads", "out", "resume", "overwrite", "stop_after", "quiet", "eval_noise",
                    "arch", "genotype")
COLUMNS = ("epoch", "loss", "train_accuracy", "test_accuracy", "spikes_per_sample", "lr", "epoch_seconds",
           "elapsed_seconds")


def architecture(cfg: TrainConfig) -> str:
    """The network of a config by content (:func:`refsnn.nas.trained.architecture`)."""
    return trained.architecture(cfg.arch, cfg.genotype)


def build_network(arch: str, cfg: TrainConfig, ds):
    """The network of :func:`architecture` string ``arch`` with its initial weights
    (:func:`refsnn.nas.trained.build_network`)."""
    return trained.build_network(arch, input_shape=ds.input_shape, num_classes=ds.num_classes,
                                 timesteps=cfg.timesteps, seed=cfg.seed, neuron=cfg.neuron, dtype=cfg.dtype)


def dataset(cfg: TrainConfig):
    """The dataset a run trains and evaluates on (:func:`refsnn.nas.trained.run_dataset`)."""
    return trained.run_dataset(cfg.data, timesteps=cfg.timesteps, seed=cfg.seed, n_train=cfg.n_train,
                               n_test=cfg.n_test, n_val=cfg.n_val)


def train(cfg: TrainConfig | None = None, **overrides) -> dict:
    """Run (or resume) STBP training (module docstring); returns the summary (also in summary.json)."""
    cfg = dataclasses.replace(cfg or TrainConfig(), **overrides)
    say = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, flush=True))
    set_threads(cfg.threads if cfg.threads is not None else os.cpu_count() or 1)
    arch = architecture(cfg)
    ds = dataset(cfg)
    net = build_network(arch, cfg, ds)
    opt = make_optimizer(cfg.optimizer, net.parameters(), weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    steps_per_epoch = math.ceil(len(ds.y_train) / cfg.batch_size)
    total, warmup = cfg.epochs * steps_per_epoch, int(round(cfg.warmup_epochs * steps_per_epoch))
    config = {**dataclasses.asdict(cfg), "architecture": arch}
    keys = [k for k in config if k not in _NOT_RESUME_KEYS]
    _check_resume_epochs(cfg)
    with RunDir(cfg.out, config=config, resume_keys=keys, resume=cfg.resume, overwrite=cfg.overwrite,
                columns=COLUMNS) as run:
        history, start, wall_before = [], 0, 0.0
        if run.resuming:
            arrays = run.load_checkpoint()
            check_checkpoint(arrays, str(run.checkpoint_path))
            meta = restore_checkpoint(arrays, net, opt, source=str(run.checkpoint_path))
            history, start, wall_before = list(meta["history"]), int(meta["epoch"]), float(meta["wall_seconds"])
            say(f"resumed from {run.checkpoint_path} after epoch {start}")
        say(f"refsnn train: {ds!r}, arch {arch}, {net.n_params()} parameters, T={cfg.timesteps}, "
            f"{cfg.epochs} epochs x {steps_per_epoch} steps, {cfg.optimizer} lr {cfg.lr:g}, loss {cfg.loss}")
        t_start = time.perf_counter()
        end = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start + cfg.stop_after)
        net.train()
        for epoch in range(start, end):
            t_ep = time.perf_counter()
            rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1, epoch)))
            batches = iterate_batches(ds, "train", cfg.batch_size, rng=rng, shuffle=True, augment=cfg.augment)
            ep = train_epoch(net, opt, batches, loss=cfg.loss, label_smoothing=cfg.label_smoothing,
                             lr_at=lambda step: cosine_lr(step, base=cfg.lr, total=total, warmup=warmup,
                                                          min_lr=cfg.min_lr))
            test_acc, spikes = evaluate(net, ds, "test", cfg.eval_batch_size)
            now = time.perf_counter()
            elapsed = wall_before + (now - t_start)
            history.append({"epoch": epoch + 1, "loss": ep["loss"], "train_accuracy": ep["train_accuracy"],
                            "test_accuracy": test_acc, "spikes_per_sample": spikes, "lr": ep["lr"],
                            "epoch_seconds": now - t_ep, "elapsed_seconds": elapsed})
            eta = (now - t_start) / (epoch + 1 - start) * (end - epoch - 1)
            say(f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {ep['loss']:.4f}  train_acc {ep['train_accuracy']:.4f}  "
                f"test_acc {test_acc:.4f}  spikes/sample {spikes:.0f}  lr {ep['lr']:.2e}  "
                f"elapsed {elapsed:.0f}s  eta {eta:.0f}s")
            run.write_metrics(history)
            run.plot("curve.png", [h["epoch"] for h in history],
                     {"train accuracy": [h["train_accuracy"] for h in history],
                      "test accuracy": [h["test_accuracy"] for h in history],
                      "loss": [min(h["loss"], 1.0) for h in history]},
                     title=f"refsnn train {cfg.data} {arch} T={cfg.timesteps}   (loss clipped at 1)", xlabel="epoch")
            run.save_checkpoint(checkpoint_arrays(net, opt, {"config": config, "epoch": epoch + 1,
                                                             "history": history, "wall_seconds": elapsed}))
        summary = _summary(cfg, arch, net, ds, history, say)
        run.write_summary(summary)
    say(f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs']} epochs, "
        f"{summary['wall_seconds']:.0f} s; wrote {cfg.out}")
    return summary


def check_checkpoint(arrays, source: str) -> dict:
    """Check the checkpoint arrays of a run before anything is restored or written; returns its meta.

    Every ``param/``, ``buffer/`` and ``optim/`` array holds finite real numbers (a second moment
    ``optim/v/*`` and a ``running_var`` none below 0), ``optim/steps`` is a whole number >= 0, the
    meta's ``epoch`` an integer >= 1, its ``history`` one row per epoch (numbered ``1..epoch``, the
    :data:`COLUMNS`, finite numbers) and ``wall_seconds`` a finite number >= 0. Otherwise a
    ``ValueError`` ``SOURCE: corrupt checkpoint (KEY: ...)``; shapes are checked against the network
    by :func:`refsnn.snn.checkpoint.restore_checkpoint`."""
    meta = checkpoint_meta(arrays, source=source)
    try:
        for k in arrays:
            if k.startswith(("param/", "buffer/", "optim/m/", "optim/v/", "optim/buf/")):
                nonneg = k.startswith("optim/v/") or k.endswith("running_var")
                restored_array(arrays, k, lo=0.0 if nonneg else None)
        if any(k.startswith("optim/") for k in arrays):
            restored_int(arrays, "optim/steps", lo=0)
        epoch = meta.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"meta_json epoch: expected an integer >= 1, got {epoch!r}")
        history = meta.get("history")
        if not isinstance(history, list) or len(history) != epoch:
            raise ValueError(f"meta_json history: expected {epoch} rows (one per epoch)")
        for i, row in enumerate(history):
            if not isinstance(row, dict) or set(row) != set(COLUMNS) or row["epoch"] != i + 1 or not all(
                    _finite_number(row[c]) for c in COLUMNS):
                raise ValueError(f"meta_json history[{i}]: expected epoch {i + 1} and finite {', '.join(COLUMNS)}")
        if not _finite_number(meta.get("wall_seconds")) or meta["wall_seconds"] < 0:
            raise ValueError(f"meta_json wall_seconds: expected a finite number >= 0, got {meta.get('wall_seconds')!r}")
    except ValueError as e:
        raise ValueError(f"{source}: corrupt checkpoint ({e})") from None
    return meta


def _finite_number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _check_resume_epochs(cfg: TrainConfig) -> None:
    """Refuse ``--resume --epochs E`` below the epochs the checkpoint has already run, before the run
    directory's ``config.json`` is rewritten (the run would otherwise claim fewer epochs than it has);
    a corrupt checkpoint is refused here too (:func:`check_checkpoint`), before any file is written."""
    ckpt = Path(cfg.out) / "checkpoint.npz"
    if cfg.resume and ckpt.is_file():
        done = check_checkpoint(load_npz(ckpt), str(ckpt))["epoch"]
        if done > cfg.epochs:
            raise ValueError(f"epochs: {cfg.out} has already run {done} epochs; --epochs {cfg.epochs} would "
                             f"describe a shorter run than its checkpoint (pass --epochs >= {done}, or --overwrite)")


def _summary(cfg: TrainConfig, arch: str, net, ds, history: list[dict], say) -> dict:
    """The run's flat summary: last and best accuracy, operation counts and energy on the test split
    (SOP = one accumulate per input spike per synapse; layers fed by real values count MACs)."""
    ops = energy_report(net, ds, split="test", batch_size=cfg.eval_batch_size)
    last = history[-1]
    summary = {
        "complete": last["epoch"] == cfg.epochs, "test_accuracy": last["test_accuracy"],
        "best_test_accuracy": max(h["test_accuracy"] for h in history), "train_accuracy": last["train_accuracy"],
        "loss": last["loss"], "epochs": last["epoch"], "wall_seconds": last["elapsed_seconds"],
        "spikes_per_sample": last["spikes_per_sample"], "sops_per_sample": ops["sops_per_sample"],
        "macs_per_sample": ops["macs_per_sample"], "energy_per_sample_nj": ops["energy_per_sample_nj"],
        "energy_pj_per_ac": E_AC_PJ, "energy_pj_per_mac": E_MAC_PJ, "n_params": net.n_params(),
        "n_train": len(ds.y_train), "n_test": len(ds.y_test),
        "evaluated_on": "test" if cfg.n_val is None else f"validation (last {cfg.n_val} training samples)",
        "data": cfg.data, "arch": f"{ARCH_PREFIX}{cfg.genotype}" if cfg.genotype is not None else cfg.arch,
        "architecture": arch, "timesteps": cfg.timesteps, "optimizer": cfg.optimizer, "loss_kind": cfg.loss,
        "lr": cfg.lr, "batch_size": cfg.batch_size, "seed": cfg.seed, "neuron": cfg.neuron,
    }
    if cfg.eval_noise is not None:
        summary["eval_noise_sigma"] = cfg.eval_noise
        summary["noisy_test_accuracy"] = evaluate_with_noise(net, ds, cfg.eval_noise, seed=cfg.seed,
                                                             batch_size=cfg.eval_batch_size)
        say(f"test accuracy under Gaussian input noise sigma={cfg.eval_noise:g}: {summary['noisy_test_accuracy']:.4f}")
    say(f"{ops['sops_per_sample']:.3g} SOPs + {ops['macs_per_sample']:.3g} MACs per sample -> "
        f"{ops['energy_per_sample_nj']:.3g} nJ ({E_AC_PJ} pJ/AC, {E_MAC_PJ} pJ/MAC, 45 nm)")
    return summary
