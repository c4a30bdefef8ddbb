"""The full ``refsnn train`` default run against the same recipe in SpikingJelly 2.0.

Both sides train ``csnn`` (conv3x3(32, no bias)-BN-LIF-avgpool2-conv3x3(64)-BN-LIF-avgpool2-
linear(10); the ``msenas`` neuron = SpikingJelly's ``LIFNode(tau=2, v_threshold=0.5,
detach_reset=True, PiecewiseQuadratic(2))``) on mnist5k with T = 2 (the image at every step), batch
64, the same batches in the same order (refsnn's ``iterate_batches`` with random crops, seeded per
epoch as ``refsnn train`` seeds them), cross-entropy of the mean logits, AdamW (weight decay 0.01)
at refsnn's per-step cosine schedule with one warm-up epoch (peak 4e-3), 15 epochs, and evaluate
the test split after every epoch. refsnn's time is ``refsnn train``'s own wall time (which also
writes its metrics, checkpoint and PNG every epoch); SpikingJelly's is its training and evaluation
loop. The initial weights differ (each framework's own initialisation). Prints both accuracies,
both times and the ratio SpikingJelly / refsnn (above 1: refsnn is faster).

    python examples/stbp_vs_spikingjelly.py --threads 2        # both sides on the whole machine
    python examples/stbp_vs_spikingjelly.py --threads 1 --epochs 3

Needs ``pip install refsnn[bench]`` (torch, spikingjelly).
"""

import math
import time
from dataclasses import dataclass

import numpy as np

from refsnn.bench.peers import _sj_csnn, threads
from refsnn.commands.config import option, parse
from refsnn.commands.training import TrainConfig, train
from refsnn.datasets import iterate_batches, load
from refsnn.snn.optim import cosine_lr


def spikingjelly_run(epochs: int, n_threads: int, log) -> tuple[float, float]:
    """``(test accuracy after the last epoch, seconds)`` of the recipe in SpikingJelly."""
    import torch
    from spikingjelly.activation_based import functional

    cfg = TrainConfig()
    T, B = cfg.timesteps, cfg.batch_size
    ds = load(cfg.data, timesteps=T, seed=cfg.seed)
    steps_per_epoch = math.ceil(len(ds.y_train) / B)
    total, warmup = epochs * steps_per_epoch, int(round(cfg.warmup_epochs * steps_per_epoch))
    torch.manual_seed(cfg.seed)
    with threads(n_threads, torch):
        net = _sj_csnn(torch, T)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.01)
        step, acc = 0, float("nan")
        t0 = time.perf_counter()
        for epoch in range(epochs):
            net.train()
            rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1, epoch)))
            for x, y in iterate_batches(ds, "train", B, rng=rng, shuffle=True, augment=cfg.augment):
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(step, base=cfg.lr, total=total, warmup=warmup)
                xt = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(x, (T,) + x.shape[1:])))
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(net(xt).mean(0), torch.from_numpy(y).long())
                loss.backward()
                opt.step()
                functional.reset_net(net)
                step += 1
            net.eval()
            hits = 0
            with torch.no_grad():
                for x, y in iterate_batches(ds, "test", cfg.eval_batch_size):
                    xt = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(x, (T,) + x.shape[1:])))
                    hits += int((net(xt).mean(0).argmax(1).numpy() == y).sum())
                    functional.reset_net(net)
            acc = hits / len(ds.y_test)
            log(f"spikingjelly epoch {epoch + 1:3d}/{epochs}  test_acc {acc:.4f}  elapsed "
                f"{time.perf_counter() - t0:.0f}s")
        return acc, time.perf_counter() - t0


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    threads: int = option(2, "threads of each side (BLAS, Numba, torch)")
    epochs: int = option(TrainConfig().epochs, "training epochs of each side (refsnn train's default)")
    out: str = option("runs/stbp_vs_spikingjelly", "refsnn's run directory")


def main(argv=None) -> int:
    a = parse(Options, argv, description=__doc__.splitlines()[0])
    s = train(TrainConfig(epochs=a.epochs, threads=a.threads, out=a.out, overwrite=True))
    r_acc, r_s = s["test_accuracy"], s["wall_seconds"]
    sj_acc, sj_s = spikingjelly_run(a.epochs, a.threads, print)
    print(f"\n{a.epochs} epochs, {a.threads} thread(s) each: refsnn {r_acc:.2%} in {r_s:.1f} s, SpikingJelly "
          f"{sj_acc:.2%} in {sj_s:.1f} s; SpikingJelly / refsnn = {sj_s / r_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
