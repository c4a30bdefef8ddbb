"""Does a training-free fitness rank MSE-NAS architectures like their accuracy after training?

Samples N random genotypes (seeded, distinct canonical forms), scores each untrained network with
every fitness of :mod:`refsnn.nas.fitness` (``bie-min`` = -BIE, the seed's direction; ``bie-max`` =
+BIE, its negation; ``logdet``, NASWOT's plain Hamming kernel; ``logdet-sa``, SNASNet's
sparsity-aware kernel) and, as naive baselines, the parameter and neuron counts; then trains each
genotype briefly on mnist5k with the same small budget (``refsnn.commands.training``,
``--epochs`` epochs (default 2) on the first ``--n-train`` (1,024) training images at learning rate
``--lr`` (2e-2, a quarter-epoch warm-up), evaluated on the first ``--n-test``
test images), and reports Kendall's tau (``scipy.stats.kendalltau``, tau-b) between each score and
the accuracy, over the genotypes whose fitnesses are all finite. Writes ``results.csv``,
``kendall.json`` and ``scatter.png`` (Pillow) into ``--out``.

Reruns are cheap: a genotype whose ``runs/g_*/summary.json`` says ``"complete": true`` and whose
``config.json`` equals the training configuration of this invocation is not trained again; its
``test_accuracy`` and ``wall_seconds`` are reused (the fitnesses are always recomputed).

    python examples/bie_vs_accuracy.py --out runs/bie_vs_accuracy          # ~10 min on 2 cores

A short training budget ranks architectures by how fast they learn, which is only a proxy for their
final accuracy; the table is a sanity check of the fitness on this task, not a replication of the
paper's claim.
"""

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn.commands.config import option, parse

FITNESSES = ("bie-min", "bie-max", "logdet", "logdet-sa")


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    n: int = option(20, "number of random genotypes")
    cells: int = option(3, "cells of each genotype")
    channels: int = option(8, "channels C of the fitness's and the training's networks")
    timesteps: int = option(4, "simulation steps T of the fitness and the training")
    fitness_batch: int = option(16, "images per fitness batch")
    fitness_batches: int = option(2, "fitness batches")
    epochs: int = option(2, "training epochs of each genotype")
    lr: float = option(2e-2, "peak learning rate (high: the budget is short)")
    n_train: int = option(1024, "train on the first N training images")
    n_test: int = option(500, "test on the first N test images")
    workers: int = option(2, "worker processes (0: in this process)")
    seed: int = option(0, "seed of the genotype draw, the fitness and the trainings")
    out: str = option("runs/bie_vs_accuracy", "output directory")


def _train_config_dict(cfg) -> dict:
    """What ``refsnn.commands.training.train`` writes to ``config.json`` for ``cfg``, as read back from JSON."""
    import dataclasses

    d = {k: v for k, v in dataclasses.asdict(cfg).items()
         if k not in ("resume", "quiet", "out", "stop_after", "threads", "eval_noise")}
    return json.loads(json.dumps(d))


def _reusable(run: Path, cfg) -> dict | None:
    """The summary of a finished training in ``run`` with the configuration ``cfg``, else ``None``.

    Finished: ``summary.json`` has ``"complete": true``. Same configuration: ``config.json`` (what
    ``train`` wrote) holds the same epochs, n_train, n_test, lr, arch (the genotype file's path and
    C), timesteps and seed, and every other field it holds equals ``cfg``'s; a field it lacks
    (added to ``TrainConfig`` after that run) must be at its default in ``cfg``."""
    from refsnn.commands.training import TrainConfig

    try:
        summary = json.loads((run / "summary.json").read_text())
        stored = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("complete") is not True or not isinstance(stored, dict):
        return None
    want = _train_config_dict(cfg)
    defaults = _train_config_dict(TrainConfig())
    if any(k not in stored for k in ("epochs", "n_train", "n_test", "lr", "arch", "timesteps", "seed")):
        return None
    if set(stored) - set(want):
        return None
    if any(stored.get(k, defaults[k]) != v for k, v in want.items()):
        return None
    return summary


def _one(job):
    """Score and train one genotype (runs in a worker process)."""
    flat, seed, a = job
    from refsnn.commands.training import TrainConfig, train
    from refsnn.nas.fitness import NASFitness
    from refsnn.nas.genotype import Genotype, to_json
    from refsnn.nas.graph import decode, graph_stats
    from refsnn.nas.search import genotype_seed
    from refsnn.tuning import set_threads

    set_threads(1)
    g = Genotype.from_flat(flat)
    row = {"genotype": " ".join(map(str, flat)), "genotype_str": str(g)}
    fseed = genotype_seed(g, seed)
    for kind in FITNESSES:
        d = NASFitness(kind=kind, channels=a["channels"], timesteps=a["timesteps"],
                       batch_size=a["fitness_batch"], n_batches=a["fitness_batches"]).details(flat, fseed)
        row[kind] = d["fitness"]
        row[f"{kind}_seconds"] = d["seconds"]
        row["firing_rate"] = d["firing_rate"]
    st = graph_stats(decode(g, (1, 28, 28), a["channels"], 10))
    row["n_params"] = st["n_params"]
    row["n_neurons"] = st["n_neurons_per_sample"]
    run = Path(a["out"]) / "runs" / ("g_" + "".join(map(str, flat)))
    run.mkdir(parents=True, exist_ok=True)
    (run / "genotype.json").write_text(to_json(g))
    cfg = TrainConfig(arch=f"genotype:{run / 'genotype.json'}@{a['channels']}", timesteps=a["timesteps"],
                      epochs=a["epochs"], n_train=a["n_train"], n_test=a["n_test"],
                      lr=a["lr"], warmup_epochs=0.25, seed=seed, out=str(run), quiet=True, threads=1)
    s = _reusable(run, cfg)
    if s is not None:
        row["accuracy"] = s["test_accuracy"]
        row["train_seconds"] = s["wall_seconds"]
        row["train_reused"] = True
        return row
    t0 = time.perf_counter()
    s = train(cfg)
    row["accuracy"] = s["test_accuracy"]
    row["train_seconds"] = time.perf_counter() - t0
    row["train_reused"] = False
    return row


def _scatter_png(path, rows, keys):
    from PIL import Image, ImageDraw

    from refsnn.io import atomic_write_bytes

    W, H, pad = 330, 300, 45
    img = Image.new("RGB", (W * len(keys), H), "white")
    d = ImageDraw.Draw(img)
    acc = np.array([r["accuracy"] for r in rows])
    for p, key in enumerate(keys):
        x = np.array([r[key] for r in rows], dtype=float)
        ok = np.isfinite(x)
        ox = p * W
        d.rectangle([ox + pad, 20, ox + W - 10, H - pad], outline="black")
        d.text((ox + pad, 5), f"{key} vs accuracy", fill="black")
        d.text((ox + pad, H - 20), key, fill="black")
        if ok.sum() < 2:
            continue
        x0, x1 = x[ok].min(), x[ok].max()
        y0, y1 = acc.min(), acc.max()
        x1 = x1 if x1 > x0 else x0 + 1
        y1 = y1 if y1 > y0 else y0 + 0.01
        d.text((ox + pad, H - pad + 3), f"{x0:.4g}", fill="black")
        d.text((ox + W - 70, H - pad + 3), f"{x1:.4g}", fill="black")
        d.text((ox + 2, 22), f"{y1:.3f}", fill="black")
        d.text((ox + 2, H - pad - 12), f"{y0:.3f}", fill="black")
        for xv, yv in zip(x[ok], acc[ok]):
            px = ox + pad + 5 + (xv - x0) / (x1 - x0) * (W - pad - 25)
            py = H - pad - 5 - (yv - y0) / (y1 - y0) * (H - pad - 35)
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(31, 119, 180))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> dict:
    from scipy.stats import kendalltau

    from refsnn.io import atomic_write_json, atomic_write_text
    from refsnn.nas.genotype import canonical, random_genotype
    from refsnn.parallel import map_with_progress

    args = parse(Options, argv, description=__doc__.split("\n\n")[0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence(args.seed))
    flats, keys = [], set()
    while len(flats) < args.n:
        g = canonical(random_genotype(rng, args.cells))
        if g.flat not in keys:
            keys.add(g.flat)
            flats.append(g.flat)
    a = {k: getattr(args, k) for k in ("channels", "timesteps", "fitness_batch", "fitness_batches", "epochs",
                                       "n_train", "n_test", "lr")}
    a["out"] = str(out)
    t0 = time.perf_counter()
    jobs = [(f, args.seed, a) for f in flats]
    line = (lambda r: f"{r['genotype_str']:<48} acc {r['accuracy']:.3f}  bie-min {r['bie-min']:.6g}  "
                      f"logdet {r['logdet']:.6g}  logdet-sa {r['logdet-sa']:.6g}  "
                      f"train {r['train_seconds']:.0f}s{' (reused)' if r['train_reused'] else ''}")
    rows = list(map_with_progress(_one, jobs, workers=args.workers, line=line))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    score_keys = list(FITNESSES) + ["n_params", "n_neurons", "firing_rate"]
    finite = [r for r in rows if all(math.isfinite(r[k]) for k in FITNESSES)]
    table = {"n_genotypes": len(rows), "n_finite": len(finite), "wall_seconds": time.perf_counter() - t0}
    print(f"\nKendall's tau between score and accuracy ({len(finite)} of {len(rows)} genotypes with finite "
          f"fitness; {args.epochs} epoch(s) on {args.n_train} images, test on {args.n_test}):")
    print(f"  {'score':<12} {'tau':>7} {'p-value':>9}")
    for k in score_keys:
        res = kendalltau([r[k] for r in finite], [r["accuracy"] for r in finite])
        tau, pv = float(res.statistic if hasattr(res, "statistic") else res[0]), float(res.pvalue)
        table[f"tau_{k}"], table[f"p_{k}"] = tau, pv
        print(f"  {k:<12} {tau:7.3f} {pv:9.3g}")
    accs = [r["accuracy"] for r in rows]
    table["accuracy_min"], table["accuracy_max"] = min(accs), max(accs)
    atomic_write_json(out / "kendall.json", table)
    _scatter_png(out / "scatter.png", finite, ["bie-min", "logdet", "logdet-sa", "n_params"])
    print(f"wrote {out / 'results.csv'}, {out / 'kendall.json'}, {out / 'scatter.png'} "
          f"({table['wall_seconds']:.0f} s)")
    return table


if __name__ == "__main__":
    main()
