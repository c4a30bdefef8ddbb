"""Does the search beat the fixed network? Nested 5-fold cross-validation on mnist5k.

``examples/nas_budget_comparison.py`` compares the searched winner with ``refsnn train``'s fixed
network on mnist5k's official 1,000 test images, whose sampling alone gives a paired difference a
standard error of about 0.24 points -- larger than the gap it measures. This script uses all 5,000
images as test images once each: the dataset is re-split into 5 stratified folds
(``mnist5k[fold=K/5]``, :meth:`refsnn.datasets.Dataset.fold`; fold 4 *is* the official split), and
for each fold

1. the whole method runs on that fold's 4,000 training images only -- ``refsnn nas`` with its
   defaults (search, 8 finalists scored on the last 1,000 of those training images, the winner
   trained 20 epochs), i.e. the search sees neither the fold's test images nor their labels;
2. the fixed network (``csnn``) is trained with the same recipe (20 epochs, T = 2, batch 64,
   AdamW, lr 1e-2 -- ``refsnn nas --train-lr``'s default, chosen on validation -- warm-up + cosine,
   random crops, seed 0) on the same 4,000 images;
3. both final checkpoints are re-evaluated image by image on the fold's 1,000 test images (each
   re-evaluation must reproduce the accuracy its run reported).

It reports per fold the two accuracies and their difference, and over the 5,000 pooled test images
the two accuracies, the paired difference with its standard error over images
(``std(w_i - f_i) / sqrt(N)``, each image tested once) and over folds, and the discordant counts
(images only one of the two gets right). One learning rate, one seed: nothing is selected on a test
split. Plot: ``OUT/crossval.png``; results: ``OUT/crossval.json`` and ``OUT/crossval.md``.

    python examples/nas_crossval.py --out runs/nas_cv --workers 2 [--official-nas runs/nas_def]

``--official-nas DIR`` reuses a finished ``refsnn nas --data mnist5k --train-epochs 20`` run for
fold 4 (the same images in the same order, so the same run). Every step is resumable: finished
searches and trainings are reused, so re-running the command after an interruption continues.
Two jobs run at a time with ``--workers 2`` (one thread each, each search in-process).
"""

import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn.commands.config import option, parse
from refsnn.stats import paired_stats


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`); the
    last eight are ``refsnn nas`` settings (its defaults unless given; for quick runs and tests)."""
    base: str = option("mnist5k", "dataset spec to re-split")
    folds: int = option(5, "cross-validation folds")
    which: str | None = option(None, "comma-separated folds to run (none: all)")
    epochs: int = option(20, "training epochs of the winner and of the fixed network")
    lr: float = option(1e-2, "peak learning rate of the trainings")
    fixed_arch: str = option("csnn", "the fixed network (refsnn train --arch)")
    official_nas: str | None = option(None, "a finished `refsnn nas --data BASE --train-epochs EPOCHS` run, used "
                                            "for the last fold")
    workers: int = option(2, "jobs at a time (one thread each; 0: in this process)")
    out: str = option("runs/nas_cv", "output directory")
    generations: int | None = option(None, "refsnn nas --generations (none: its default)")
    population: int | None = option(None, "refsnn nas --population (none: its default)")
    cells: int | None = option(None, "refsnn nas --cells (none: its default)")
    channels: int | None = option(None, "refsnn nas --channels (none: its default)")
    finalists: int | None = option(None, "refsnn nas --finalists (none: its default)")
    finalist_epochs: int | None = option(None, "refsnn nas --finalist-epochs (none: its default)")
    val: int | None = option(None, "refsnn nas --val (none: its default)")
    train_subset: int | None = option(None, "refsnn nas --train-subset (none: its default)")


def _nas_job(job: dict) -> dict:
    """One fold's ``refsnn nas`` run (in a worker process); returns its summary."""
    from refsnn.commands.nas import NASConfig
    from refsnn.commands.nas import run as search

    out = Path(job["out"])
    s = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    if s.get("train_epochs") == job["epochs"] and (out / "train" / "summary.json").is_file():
        return {"kind": "nas", "fold": job["fold"], "reused": True, **s}
    a = NASConfig(data=job["data"], train_epochs=job["epochs"], train_lr=job["lr"], workers=0, threads=1,
                  out=str(out), quiet=True, resume=(out / "search_state.json").is_file(), **job["nas"])
    return {"kind": "nas", "fold": job["fold"], "reused": False, **search(a, log=lambda *x: None)}


def _fixed_job(job: dict) -> dict:
    """One fold's fixed-network training (in a worker process); returns its summary."""
    from refsnn.commands.training import TrainConfig, train

    out = Path(job["out"])
    s = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    if s.get("complete") and s.get("epochs") == job["epochs"]:
        return {"kind": "fixed", "fold": job["fold"], "reused": True, **s}
    s = train(TrainConfig(data=job["data"], arch=job["arch"], epochs=job["epochs"], lr=job["lr"], timesteps=2,
                          batch_size=64, seed=0, threads=1, n_train=job["n_train"], out=str(out), quiet=True,
                          resume=(out / "checkpoint.npz").is_file()))
    return {"kind": "fixed", "fold": job["fold"], "reused": False, **s}


def _run(job: dict) -> dict:
    t0 = time.perf_counter()
    r = (_nas_job if job["kind"] == "nas" else _fixed_job)(job)
    return {**r, "this_call_seconds": time.perf_counter() - t0}


def _md_cell(text) -> str:
    """A genotype string as a Markdown table cell (its ``|`` escaped)."""
    return str(text).replace("|", "\\|")


def _plot(path: Path, folds: list[dict], pooled: dict) -> None:
    """Per fold, the two accuracies as a pair of bars (Pillow, like every refsnn plot)."""
    import io

    from PIL import Image, ImageDraw

    from refsnn.io import atomic_write_bytes

    W, H, pad_l, pad_b, top = 640, 360, 60, 50, 46
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    vals = [v for f in folds for v in (f["winner"], f["fixed"])]
    lo, hi = min(vals) - 0.01, min(1.0, max(vals) + 0.004)
    y = lambda a: top + (hi - a) / (hi - lo) * (H - top - pad_b)  # noqa: E731
    d.rectangle([pad_l, top, W - 10, H - pad_b], outline="black")
    d.text((pad_l, 6), f"{len(folds)}-fold nested cross-validation, same training budget: test accuracy per fold",
           fill="black")
    d.text((pad_l, 22), f"all {pooled['n']} images: winner {100 * pooled['winner']:.2f} %, fixed "
           f"{100 * pooled['fixed']:.2f} %, paired difference {100 * pooled['diff']:+.2f} +- "
           f"{100 * pooled['se_images']:.2f} points", fill="black")
    for k in range(5):
        a = lo + (hi - lo) * k / 4
        d.text((4, y(a) - 6), f"{100 * a:.2f}%", fill="black")
    colors = {"winner": (214, 39, 40), "fixed": (31, 119, 180)}
    col_w = (W - 10 - pad_l) / len(folds)
    for i, f in enumerate(folds):
        cx = pad_l + col_w * (i + 0.5)
        for j, key in enumerate(("winner", "fixed")):
            x0 = cx + (j - 1) * col_w * 0.3
            d.rectangle([x0, y(f[key]), x0 + col_w * 0.28, H - pad_b], fill=colors[key])
        d.text((cx - 20, H - pad_b + 6), f"fold {f['fold']}", fill="black")
        if f["official"]:
            d.text((cx - 24, H - pad_b + 20), "(official)", fill="black")
    d.text((W - 200, top + 6), "searched winner", fill=colors["winner"])
    d.text((W - 200, top + 20), "fixed network", fill=colors["fixed"])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _check_official(nas: Path, args, nas_over: dict) -> None:
    """``--official-nas`` stands in for the last fold only if it is that fold's run: the same images
    in the same order, and the settings this script would pass to ``refsnn nas``."""
    import dataclasses

    from refsnn.commands.nas import NASConfig
    from refsnn.datasets import load

    if not (nas / "train" / "summary.json").is_file():
        raise SystemExit(f"--official-nas: {nas} holds no trained winner (train/summary.json)")
    a = load(args.base, timesteps=1)
    b = a.fold(args.folds - 1, args.folds)
    if not all(np.array_equal(u, v) for u, v in ((a.x_train, b.x_train), (a.y_train, b.y_train),
                                                  (a.x_test, b.x_test), (a.y_test, b.y_test))):
        raise SystemExit(f"--official-nas: fold {args.folds - 1}/{args.folds} of {args.base} is not its official split")
    conf = json.loads((nas / "config.json").read_text())
    want = dataclasses.asdict(NASConfig(data=args.base, train_epochs=args.epochs, train_lr=args.lr, **nas_over))
    ignore = ("out", "quiet", "resume", "overwrite", "workers", "threads")
    diff = sorted(k for k in want if k not in ignore and conf.get(k) != want[k])
    if diff:
        raise SystemExit(f"--official-nas: {nas} was run with other settings: {diff}")


def main(argv=None) -> dict:
    from refsnn.io import atomic_write_json, atomic_write_text
    from refsnn.nas.trained import per_sample_hits
    from refsnn.parallel import map_with_progress

    args = parse(Options, argv, description=__doc__.split("\n\n")[0])
    if args.folds < 2:
        raise SystemExit(f"--folds: must be >= 2, got {args.folds}")
    if args.workers < 0:
        raise SystemExit(f"--workers: must be >= 0, got {args.workers}")
    which = list(range(args.folds)) if args.which is None else [int(v) for v in args.which.split(",")]
    if any(not 0 <= k < args.folds for k in which):
        raise SystemExit(f"--which: folds must lie in [0, {args.folds}), got {args.which}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    nas_over = {k: getattr(args, k) for k in ("generations", "population", "cells", "channels", "finalists",
                                              "finalist_epochs", "val", "train_subset") if getattr(args, k) is not None}
    nas_dir = {k: out / f"fold{k}" / "nas" for k in which}
    if args.official_nas is not None and args.folds - 1 in which:
        _check_official(Path(args.official_nas), args, nas_over)
        nas_dir[args.folds - 1] = Path(args.official_nas)
    jobs = []
    for k in which:  # the long searches first, the short fixed trainings fill the gaps
        jobs.append({"kind": "nas", "fold": k, "data": f"{args.base}[fold={k}/{args.folds}]", "epochs": args.epochs,
                     "lr": args.lr, "out": str(nas_dir[k]), "nas": nas_over})
    for k in which:
        jobs.append({"kind": "fixed", "fold": k, "data": f"{args.base}[fold={k}/{args.folds}]", "epochs": args.epochs,
                     "lr": args.lr, "arch": args.fixed_arch, "n_train": args.train_subset,
                     "out": str(out / f"fold{k}" / f"fixed_{args.fixed_arch}")})
    print(f"{len(jobs)} jobs on {args.workers} worker(s): refsnn nas + {args.fixed_arch} for folds {which}")
    t0 = time.perf_counter()

    def line(r):
        took = "(reused)" if r["reused"] else f"{r['this_call_seconds']:.0f}s"
        return (f"fold {r['fold']} {r['kind']:<5} acc {r['test_accuracy']:.4f}  {took}  "
                f"{r.get('best_genotype_str', r.get('arch', ''))}")
    for _ in map_with_progress(_run, jobs, workers=args.workers, line=line):
        pass

    folds, hits_w, hits_f = [], [], []
    for k in which:
        hw = per_sample_hits(nas_dir[k] / "train")
        hf = per_sample_hits(out / f"fold{k}" / f"fixed_{args.fixed_arch}")
        nas = json.loads((nas_dir[k] / "summary.json").read_text())
        folds.append({"fold": k, "official": k == args.folds - 1, "genotype": nas.get("best_genotype_str"),
                      "n_params": nas.get("train_n_params"), **paired_stats(hw, hf)})
        hits_w.append(hw)
        hits_f.append(hf)
    pooled = paired_stats(np.concatenate(hits_w), np.concatenate(hits_f))
    diffs = [f["diff"] for f in folds]
    pooled["se_folds"] = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    result = {"base": args.base, "n_folds": args.folds, "epochs": args.epochs, "lr": args.lr,
              "fixed_arch": args.fixed_arch, "folds": folds, "pooled": pooled,
              "wall_seconds_this_call": time.perf_counter() - t0}
    atomic_write_json(out / "crossval.json", result)
    lines = ["| fold | searched winner | parameters | winner | fixed | difference | only winner / only fixed |",
             "|---|---|---|---|---|---|---|"]
    for f in folds:
        lines.append(f"| {f['fold']}{' (official split)' if f['official'] else ''} | `{_md_cell(f['genotype'])}` | "
                     f"{f['n_params']:,} | {100 * f['winner']:.1f} % | {100 * f['fixed']:.1f} % | "
                     f"{100 * f['diff']:+.1f} | {f['only_winner']} / {f['only_fixed']} |")
    lines.append(f"| all {pooled['n']} images | | | {100 * pooled['winner']:.2f} % | {100 * pooled['fixed']:.2f} % | "
                 f"{100 * pooled['diff']:+.2f} +- {100 * pooled['se_images']:.2f} (images), "
                 f"+- {100 * pooled['se_folds']:.2f} (folds) | {pooled['only_winner']} / {pooled['only_fixed']} "
                 f"(McNemar p = {pooled['mcnemar_p']:.2g}) |")
    atomic_write_text(out / "crossval.md", "\n".join(lines) + "\n")
    _plot(out / "crossval.png", folds, pooled)
    print("\n".join(lines))
    print(f"wrote {out / 'crossval.json'}, {out / 'crossval.md'}, {out / 'crossval.png'}")
    return result


if __name__ == "__main__":
    main()
