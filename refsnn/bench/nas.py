"""MSE-NAS benchmark ``bie_speedup_vs_train_epoch``: how much cheaper the training-free fitness is
than one training epoch of the same architecture."""
from __future__ import annotations

import numpy as np

from refsnn.bench.timing import time_side_by_side
from refsnn.datasets import iterate_batches, load
from refsnn.nas.fitness import NASFitness
from refsnn.nas.network import build_genotype_network
from refsnn.snn.loss import loss_and_grad
from refsnn.snn.optim import make_optimizer

#: The architecture timed by :func:`bench_bie_speedup`: FE(5x5, 5x5) FI(5x5 x3) FE(3x3, 3x3),
#: g1 = 3 (all earlier cells), 1x1 cross convs -- a mid-sized 3-cell genotype.
BENCH_GENOTYPE = (1, 2, 2, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 3, 1)


def bench_bie_speedup(steps: int = 4) -> dict:
    """Benchmark ``bie_speedup_vs_train_epoch``: seconds of one STBP training epoch of
    :data:`BENCH_GENOTYPE` on mnist5k (C = 8, T = 4, batch 64, AdamW, augmentation: what
    ``refsnn nas --train-epochs`` runs) / seconds to score it with the default BIE fitness
    (:class:`NASFitness` defaults: decode, build with random weights, 2 x 32 images, spikes, BIE;
    ``refsnn nas`` uses 2 x 16, so its scores are cheaper still).

    The epoch is measured on ``steps`` training steps (forward, loss, STBP backward, optimiser
    update; best of 3 interleaved repeats with the fitness, :func:`refsnn.bench.time_side_by_side`)
    and scaled to the epoch's ``ceil(4000 / 64) = 63`` steps; the per-epoch test evaluation is not
    included (so the ratio is conservative)."""
    f = NASFitness()
    ds = load(f.data, timesteps=f.timesteps)
    net = build_genotype_network(BENCH_GENOTYPE, input_shape=ds.input_shape, num_classes=ds.num_classes,
                                 timesteps=f.timesteps, rng=np.random.default_rng(0), channels=f.channels)
    opt = make_optimizer("adamw", net.parameters())
    batches = list(iterate_batches(ds, "train", 64, rng=np.random.default_rng(0), shuffle=True, augment=True))
    steps_per_epoch = len(batches)

    def train_steps():
        for x, y in batches[:steps]:
            logits = net.forward(x)
            _, dlogits, _ = loss_and_grad(logits, y)
            net.backward(dlogits)
            opt.step(net.gradients(), 1e-3)

    def score():
        f(BENCH_GENOTYPE, 0)

    t_train, t_score = time_side_by_side(train_steps, score, repeats=3, min_seconds=0.0)
    epoch = t_train / steps * steps_per_epoch
    return {"bie_speedup_vs_train_epoch": epoch / t_score, "bie_score_seconds": t_score,
            "train_epoch_seconds_estimate": epoch}
