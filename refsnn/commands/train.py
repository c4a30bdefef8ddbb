"""``refsnn train``: STBP training of a Conv-LIF network on real data (SPEC §4, §8).

One readable file, CleanRL style: the hyperparameters are the :class:`TrainConfig` dataclass
below (every field is a command-line flag), then the loop. Also callable from Python::

    from refsnn.commands.train import TrainConfig, train
    summary = train(TrainConfig(data="mnist5k", epochs=2, out="runs/quick"))

What one epoch does
-------------------
1. batches from ``iterate_batches(ds, "train", batch_size, rng=rng_e, shuffle=True, augment=...)``
   with ``rng_e = default_rng(SeedSequence(seed, spawn_key=(1, epoch)))``: each epoch's shuffling
   and augmentation depend only on ``(seed, epoch)``, so a resumed run needs no pickled RNG state;
2. per batch: forward over all T steps, loss (``ce`` of the mean over T, or ``tet``; optional label
   smoothing), STBP backward, optimiser step with the learning rate of a per-step cosine schedule
   with linear warm-up (:func:`refsnn.snn.optim.cosine_lr`);
3. evaluation on the test split (or, with ``--n-val N``, on the last N training samples held out as a validation split) (BN running statistics), one progress line, a row of
   ``metrics.csv``, the PNG learning curve ``curve.png``, and an atomic ``checkpoint.npz``
   (parameters, BN statistics, optimiser state, config, history, elapsed wall time).

``--resume`` reloads ``checkpoint.npz`` from ``--out`` and continues; the result is bit-identical to
an uninterrupted run (same process layout and BLAS), because every random choice derives from
``(seed, epoch)`` and the whole training state is in the checkpoint. The initial weights come from
``default_rng(SeedSequence(seed, spawn_key=(0,)))``.

Outputs in ``--out``: ``metrics.csv`` (epoch, loss, train_accuracy, test_accuracy,
spikes_per_sample, lr, epoch_seconds, elapsed_seconds), ``summary.json`` (flat: ``test_accuracy``
0-1, ``best_test_accuracy``, ``epochs``, ``wall_seconds``, ``spikes_per_sample``, ``train_accuracy``,
``loss``, ``data``, ``arch``, ``timesteps``, ``n_params``, ...), ``curve.png``, ``checkpoint.npz``,
``config.json``.

Defaults: chosen so that ``refsnn train`` (mnist5k) reaches >= 98 % test accuracy in a few minutes
on 2 CPU cores; see docs/stbp.md for measured runs.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ------------------------------------------------------------------------------------------------
# hyperparameters
# ------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    data: str = "mnist5k"          # mnist5k | mnist5k-events | cifar10:DIR | cifar100:DIR | events:DIR [+ "[fold=K/N]"]
    arch: str = "csnn"             # ARCHS name, spec string like "c32-p-c64-p", or "genotype:PATH[@C]"
    genotype: str | None = None    # MSE-NAS genotype JSON file: train that network (overrides arch)
    timesteps: int = 2             # T
    epochs: int = 15
    batch_size: int = 64
    lr: float = 4e-3               # peak learning rate
    optimizer: str = "adamw"       # sgd | adamw
    weight_decay: float | None = None  # None: 0.01 (adamw) / 5e-4 (sgd)
    momentum: float = 0.9          # sgd only
    warmup_epochs: float = 1.0     # linear warm-up length, in epochs
    min_lr: float = 0.0            # cosine floor
    loss: str = "ce"               # ce | tet
    label_smoothing: float = 0.0
    augment: bool = True           # random crop (and flip where the dataset allows it)
    neuron: str = "msenas"         # refsnn.kernels.lif.PRESETS name
    seed: int = 0
    eval_batch_size: int = 250
    n_train: int | None = None     # use only the first n training samples (quick runs, tests)
    n_test: int | None = None
    n_val: int | None = None       # hold out the last n training samples and evaluate on them, not on test
    dtype: str = "float32"
    threads: int | None = 1        # BLAS + Numba threads (None: the libraries' defaults)
    out: str = "runs/train"
    resume: bool = False
    stop_after: int | None = None  # run at most this many epochs in this invocation (resume later)
    quiet: bool = False
    eval_noise: float | None = None  # also report test accuracy under Gaussian input noise of this std


# ------------------------------------------------------------------------------------------------


def _check_config(cfg: TrainConfig) -> None:
    from refsnn._checks import check_choice, check_float, check_int
    from refsnn.kernels.lif import PRESETS
    from refsnn.snn.loss import LOSSES
    from refsnn.snn.optim import OPTIMIZERS

    check_int("timesteps", cfg.timesteps, lo=1)
    check_int("epochs", cfg.epochs, lo=1)
    check_int("batch_size", cfg.batch_size, lo=1)
    check_int("eval_batch_size", cfg.eval_batch_size, lo=1)
    check_int("seed", cfg.seed, lo=0)
    check_float("lr", cfg.lr, lo=0.0, lo_open=True)
    check_float("warmup_epochs", cfg.warmup_epochs, lo=0.0)
    check_float("min_lr", cfg.min_lr, lo=0.0)
    check_float("label_smoothing", cfg.label_smoothing, lo=0.0, hi=1.0, hi_open=True)
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("loss", cfg.loss, LOSSES)
    check_choice("neuron", cfg.neuron, tuple(PRESETS))
    check_choice("dtype", cfg.dtype, ("float32", "float64"))
    if cfg.weight_decay is not None:
        check_float("weight_decay", cfg.weight_decay, lo=0.0)
    if cfg.eval_noise is not None:
        check_float("eval_noise", cfg.eval_noise, lo=0.0)
    if cfg.genotype is not None and not Path(cfg.genotype).is_file():
        raise FileNotFoundError(f"genotype: no such file {cfg.genotype}")
    for k in ("n_train", "n_test", "n_val", "stop_after", "threads"):
        if getattr(cfg, k) is not None:
            check_int(k, getattr(cfg, k), lo=1)


def _dataset(cfg: TrainConfig):
    """The dataset a run trains and evaluates on: ``load(data)``, then ``take`` and ``holdout``."""
    from refsnn.datasets import load

    ds = load(cfg.data, timesteps=cfg.timesteps, seed=cfg.seed)
    if cfg.n_train is not None or cfg.n_test is not None:
        ds = ds.take(cfg.n_train, cfg.n_test)
    if cfg.n_val is not None:
        # model selection without touching the test set: every "test_accuracy" of this run is then
        # the accuracy on the held-out tail of the (possibly n_train-shortened) training split
        ds = ds.holdout(cfg.n_val)
    return ds


def _arch(cfg: TrainConfig) -> str:
    return f"genotype:{cfg.genotype}" if cfg.genotype is not None else cfg.arch


def _network(cfg: TrainConfig, ds):
    """The run's network with its initial weights, from ``default_rng(SeedSequence(seed, spawn_key=(0,)))``."""
    from refsnn.kernels.lif import PRESETS
    from refsnn.nas.network import ARCH_PREFIX, build_from_arch_string
    from refsnn.snn.archs import build_arch

    init_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(0,)))
    arch = _arch(cfg)
    build = build_from_arch_string if arch.startswith(ARCH_PREFIX) else build_arch  # genotype:PATH[@C]
    return build(arch, input_shape=ds.input_shape, num_classes=ds.num_classes, timesteps=cfg.timesteps,
                 rng=init_rng, neuron=PRESETS[cfg.neuron], dtype=np.dtype(cfg.dtype))


def load_run(run_dir) -> tuple:
    """``(net, ds, config)`` of a finished or interrupted ``refsnn train`` run: its ``config.json``
    as a :class:`TrainConfig`, the dataset it was evaluated on (same ``take``/``holdout``), and its
    network with the weights and BN statistics of ``checkpoint.npz`` (the last finished epoch), in
    eval mode. ``evaluate_per_sample(net, ds, "test", config.eval_batch_size)`` then reproduces the
    run's last ``test_accuracy`` image by image.
    """
    from refsnn.snn.checkpoint import load_checkpoint

    run = Path(run_dir)
    for f in ("config.json", "checkpoint.npz"):
        if not (run / f).is_file():
            raise FileNotFoundError(f"run_dir: no {f} in {run}")
    raw = json.loads((run / "config.json").read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"run_dir: {run / 'config.json'} has keys TrainConfig does not know: {unknown}")
    cfg = TrainConfig(**raw)
    _check_config(cfg)
    ds = _dataset(cfg)
    net = _network(cfg, ds)
    load_checkpoint(run / "checkpoint.npz", net)
    net.eval()
    return net, ds, cfg


def per_sample_hits(run_dir) -> np.ndarray:
    """bool ``[N_test]``: per test sample of a finished run (its :func:`load_run` dataset), whether the
    last checkpoint classifies it correctly; raises ``RuntimeError`` unless their mean is the
    ``test_accuracy`` of the run's ``summary.json`` (for paired per-sample statistics)."""
    run = Path(run_dir)
    net, ds, cfg = load_run(run)
    hits, _ = evaluate_per_sample(net, ds, "test", cfg.eval_batch_size)
    want = json.loads((run / "summary.json").read_text(encoding="utf-8"))["test_accuracy"]
    if abs(hits.mean() - want) > 1e-9:
        raise RuntimeError(f"{run}: the checkpoint gives {hits.mean():.4f} on test, the summary {want:.4f}")
    return hits


def evaluate_per_sample(net, ds, split: str, batch_size: int) -> tuple[np.ndarray, float]:
    """``(hits, spikes_per_sample)`` of ``net`` (eval mode) on a split: ``hits`` is bool ``[N]``, whether
    the arg-max of the logits averaged over T is the label of sample i (in split order)."""
    from refsnn.datasets import iterate_batches

    net.eval()
    hits, spikes = [], 0.0
    dt = net.dtype
    for x, y in iterate_batches(ds, split, batch_size):
        if x.dtype != dt:
            x = x.astype(dt)
        out = net.forward(x).mean(axis=0)
        hits.append(out.argmax(axis=1) == y)
        spikes += net.spikes_per_sample() * len(y)
    net.train()
    hits = np.concatenate(hits) if hits else np.zeros(0, bool)
    return hits, spikes / max(len(hits), 1)


def evaluate(net, ds, split: str, batch_size: int) -> tuple[float, float]:
    """``(accuracy, spikes_per_sample)`` of ``net`` (eval mode) on a split."""
    hits, spikes = evaluate_per_sample(net, ds, split, batch_size)
    return int(hits.sum()) / max(len(hits), 1), spikes


def _write_metrics(path: Path, history: list[dict]) -> None:
    from refsnn.io import atomic_write_text

    if not history:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())


def _plot(path: Path, history: list[dict], title: str) -> None:
    from refsnn.plot import line_plot_png

    ep = [h["epoch"] for h in history]
    line_plot_png(path, ep, {"train accuracy": [h["train_accuracy"] for h in history],
                             "test accuracy": [h["test_accuracy"] for h in history],
                             "loss": [min(h["loss"], 1.0) for h in history]},
                  title=title + "   (loss clipped at 1)", xlabel="epoch", ylabel="")


def train(config: TrainConfig | None = None, **overrides) -> dict:
    """Run STBP training (module docstring); returns the summary dict (also in summary.json)."""
    from refsnn.datasets import iterate_batches
    from refsnn.io import atomic_write_json
    from refsnn.provenance import write_environment
    from refsnn.snn.checkpoint import load_checkpoint, save_checkpoint
    from refsnn.snn.loss import loss_and_grad
    from refsnn.snn.optim import cosine_lr, make_optimizer

    cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    _check_config(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, flush=True))
    dtype = np.dtype(cfg.dtype)

    ds = _dataset(cfg)
    arch = _arch(cfg)
    net = _network(cfg, ds)
    opt = make_optimizer(cfg.optimizer, net.parameters(), weight_decay=cfg.weight_decay,
                         momentum=cfg.momentum)
    n_train = len(ds.y_train)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    ckpt = out / "checkpoint.npz"
    if cfg.threads is not None:
        from refsnn.snn.threads import set_threads
        set_threads(cfg.threads)
    cfg_dict = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in ("resume", "quiet", "out", "stop_after", "threads", "eval_noise")}
    history: list[dict] = []
    start_epoch, wall_before = 0, 0.0
    if cfg.resume:
        if not ckpt.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        meta = load_checkpoint(ckpt, net, opt)
        if meta.get("config") != cfg_dict:
            diff = sorted(k for k in cfg_dict if meta.get("config", {}).get(k) != cfg_dict[k])
            if [k for k in diff if k != "epochs"]:
                raise ValueError(f"--resume: {ckpt} was written with different settings: {diff}")
        start_epoch = int(meta["epoch"])
        history = list(meta["history"])
        wall_before = float(meta["wall_seconds"])
        say(f"resumed from {ckpt} after epoch {start_epoch}")
    atomic_write_json(out / "config.json", cfg_dict)
    write_environment(out)  # library versions and CPU: trained figures differ across installs
    say(f"refsnn train: {ds!r}, arch {arch}, {net.n_params()} parameters, T={cfg.timesteps}, "
        f"{cfg.epochs} epochs x {steps_per_epoch} steps, {cfg.optimizer} lr {cfg.lr:g}, loss {cfg.loss}")

    t_start = time.perf_counter()
    net.train()
    end_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start_epoch + cfg.stop_after)
    for epoch in range(start_epoch, end_epoch):
        t_ep = time.perf_counter()
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1, epoch)))
        loss_sum, correct, seen = 0.0, 0, 0
        lr = cfg.lr
        for x, y in iterate_batches(ds, "train", cfg.batch_size, rng=rng, shuffle=True,
                                    augment=cfg.augment):
            if x.dtype != dtype:
                x = x.astype(dtype)
            lr = cosine_lr(opt.steps, base=cfg.lr, total=total_steps, warmup=warmup, min_lr=cfg.min_lr)
            logits = net.forward(x)
            loss, dlogits, o = loss_and_grad(logits, y, loss=cfg.loss, label_smoothing=cfg.label_smoothing)
            if not math.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1}: loss is {loss}; try a smaller --lr")
            net.backward(dlogits)
            opt.step(net.gradients(), lr)
            loss_sum += loss * len(y)
            correct += int((o.argmax(axis=1) == y).sum())
            seen += len(y)
        test_acc, spikes = evaluate(net, ds, "test", cfg.eval_batch_size)
        now = time.perf_counter()
        elapsed = wall_before + (now - t_start)
        row = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
               "test_accuracy": test_acc, "spikes_per_sample": spikes, "lr": lr,
               "epoch_seconds": now - t_ep, "elapsed_seconds": elapsed}
        history.append(row)
        done = epoch + 1 - start_epoch
        eta = (now - t_start) / done * (end_epoch - epoch - 1)
        say(f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {row['loss']:.4f}  train_acc {row['train_accuracy']:.4f}  "
            f"test_acc {test_acc:.4f}  spikes/sample {spikes:.0f}  lr {lr:.2e}  "
            f"elapsed {elapsed:.0f}s  eta {eta:.0f}s")
        _write_metrics(out / "metrics.csv", history)
        _plot(out / "curve.png", history, f"refsnn train {cfg.data} {arch} T={cfg.timesteps}")
        save_checkpoint(ckpt, net, opt, {"config": cfg_dict, "epoch": epoch + 1, "history": history,
                                         "wall_seconds": elapsed})

    from refsnn.snn.energy import E_AC_PJ, E_MAC_PJ, energy_report, evaluate_with_noise

    # synaptic operations and energy on the test split (SOP = one accumulate per input spike per
    # synapse; the first layer, fed by real-valued pixels, counts multiply-accumulates instead)
    ops = energy_report(net, ds, split="test", batch_size=cfg.eval_batch_size)
    last = history[-1]
    summary = {
        "complete": last["epoch"] == cfg.epochs,
        "test_accuracy": last["test_accuracy"],
        "best_test_accuracy": max(h["test_accuracy"] for h in history),
        "train_accuracy": last["train_accuracy"],
        "loss": last["loss"],
        "epochs": last["epoch"],
        "wall_seconds": last["elapsed_seconds"],
        "spikes_per_sample": last["spikes_per_sample"],
        "sops_per_sample": ops["sops_per_sample"],
        "macs_per_sample": ops["macs_per_sample"],
        "energy_per_sample_nj": ops["energy_per_sample_nj"],
        "energy_pj_per_ac": E_AC_PJ, "energy_pj_per_mac": E_MAC_PJ,
        "n_params": net.n_params(),
        "n_train": n_train,
        "n_test": len(ds.y_test),
        "evaluated_on": "test" if cfg.n_val is None else f"validation (last {cfg.n_val} training samples)",
        "data": cfg.data, "arch": arch, "timesteps": cfg.timesteps, "optimizer": cfg.optimizer,
        "loss_kind": cfg.loss, "lr": cfg.lr, "batch_size": cfg.batch_size, "seed": cfg.seed,
        "neuron": cfg.neuron,
    }
    if cfg.eval_noise is not None:
        summary["eval_noise_sigma"] = cfg.eval_noise
        summary["noisy_test_accuracy"] = evaluate_with_noise(net, ds, cfg.eval_noise, seed=cfg.seed,
                                                             batch_size=cfg.eval_batch_size)
        say(f"test accuracy under Gaussian input noise sigma={cfg.eval_noise:g}: "
            f"{summary['noisy_test_accuracy']:.4f}")
    say(f"{ops['sops_per_sample']:.3g} SOPs + {ops['macs_per_sample']:.3g} MACs per sample -> "
        f"{ops['energy_per_sample_nj']:.3g} nJ ({E_AC_PJ} pJ/AC, {E_MAC_PJ} pJ/MAC, 45 nm)")
    atomic_write_json(out / "summary.json", summary)
    say(f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs']} epochs, "
        f"{summary['wall_seconds']:.0f} s; wrote {out}")
    return summary


def demo_train(out_dir, *, quiet: bool = False) -> dict:
    """A short (~1 minute) mnist5k run for ``refsnn demo``: 3 epochs of the default network."""
    return train(TrainConfig(out=str(out_dir), epochs=3, quiet=quiet))


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------

_HELP = {
    "data": "dataset: mnist5k | mnist5k-events | cifar10:DIR | cifar100:DIR | events:DIR, each optionally "
            "with [fold=K/N] (cross-validation fold K of N as the test split)",
    "arch": "network: csnn (default, c32-p-c64-p), csnn-small, csnn-fc, tokens c<N>/p/f<N> joined by '-', "
            "or genotype:PATH[@C] (an MSE-NAS genotype JSON)",
    "timesteps": "simulation steps T",
    "lr": "peak learning rate (cosine schedule with linear warm-up)",
    "weight_decay": "default 0.01 for adamw, 5e-4 for sgd",
    "warmup_epochs": "linear warm-up length in epochs",
    "loss": "ce: cross-entropy of the mean over T; tet: mean over t of CE(logits_t)",
    "neuron": "LIF preset (refsnn.kernels.lif.PRESETS)",
    "n_train": "use only the first N training samples",
    "n_test": "use only the first N test samples",
    "n_val": "hold out the last N training samples as a validation split and report accuracy on it "
             "instead of the test split (for model selection; the test split is not used)",
    "out": "output directory",
    "genotype": "train the network of this MSE-NAS genotype JSON (best_genotype.json of refsnn nas) instead of --arch",
    "eval_noise": "also report test accuracy with additive Gaussian input noise of this standard deviation",
    "threads": "threads for BLAS and Numba (default 1: robust on a busy 2-core machine)",
    "resume": "continue from OUT/checkpoint.npz",
    "stop_after": "stop after N epochs of this invocation (continue later with --resume)",
}


def add_arguments(p) -> None:
    from refsnn.cliutil import add_dataclass_arguments
    from refsnn.kernels.lif import PRESETS

    add_dataclass_arguments(
        p, TrainConfig, help=_HELP,
        types={"weight_decay": float, "n_train": int, "n_test": int, "n_val": int, "stop_after": int,
               "threads": int, "eval_noise": float, "genotype": str},
        choices={"optimizer": ["sgd", "adamw"], "loss": ["ce", "tet"], "neuron": sorted(PRESETS),
                 "dtype": ["float32", "float64"]})


def run(args) -> int:
    from refsnn.cliutil import dataclass_from_args

    train(dataclass_from_args(TrainConfig, args))
    return 0
