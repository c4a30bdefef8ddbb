"""Does the MSE-NAS search pay off?  The searched winner against ``refsnn train``'s default fixed
network and against random genotypes, all trained with the same budget.

The three contestants, trained on mnist5k by :func:`refsnn.commands.training.train` with one recipe
(``--epochs`` epochs (20), T = ``--timesteps`` (2), batch 64, AdamW, one warm-up epoch then cosine decay,
random-crop augmentation); an accuracy is the test accuracy after the **last** epoch on mnist5k's
1,000 test images:

1. **winner**: the best genotype of ``refsnn nas --data mnist5k`` with its defaults (bie-max fitness,
   30,000-neuron cap, 80 generations of 20, then the most accurate of the 8 fittest on a
   validation split after 4 epochs each; seed 0). ``--nas-dir DIR`` reuses the search in DIR
   (``best_genotype.json``); without it the search is run first (about 10 minutes).
2. **fixed**: ``refsnn train``'s default network (``csnn`` = c32-p-c64-p, 50,282 parameters).

The winner and the fixed network are each trained with every training seed of ``--seeds`` (0,1,2)
at every peak learning rate of ``--lrs`` (4e-3, ``refsnn train``'s default, and 1e-2, ``refsnn
nas``'s); each one's figure is the mean over seeds of its better learning rate (the same selection
for both; the per-learning-rate means are printed and saved too).
3. **random**: ``--n-random`` (10) genotypes, trained once (``--seed``) at ``--lr`` (1e-2), drawn with
   :func:`refsnn.nas.genotype.random_genotype`
   from the space the search explores -- same cells and channels, same 30,000-neuron cap (rejection
   sampling), distinct canonical forms, the winner excluded -- seeded by ``--seed``; the comparison
   uses their median. Each is also scored with the search's own fitness (from ``NAS_DIR/config.json``;
   the winner's reproduces the search's best fitness exactly), and the median over those with a
   finite fitness -- the ones the search could have picked: not silent, within the cap -- is
   reported beside it.

``--train-channels C`` trains the winner and the random genotypes at stage-0 width C instead of the
search's ``--channels`` (the NAS practice of searching a narrow proxy and training it wider; the
genotype is unchanged); their result files get the suffix ``_cC`` (``--tag`` adds another).

Writes ``OUT/results.csv`` (one row per training), ``OUT/comparison.json`` (the three figures and the
binomial standard error of one accuracy on 1,000 images), ``OUT/comparison.png`` and ``OUT/comparison.md``
(the figures as a Markdown table). Every training
lives in its own ``OUT/runs`` directory with its checkpoint, named by what it trains (genotype digits,
width, seed; the fixed network's by architecture, learning rate and seed): rerunning the script
resumes unfinished runs and reuses finished ones (their summaries are read back), and comparisons in
the same ``--out`` share trainings (another search's winner is compared against the same random
genotypes and fixed-network runs without training those again).

    python examples/nas_budget_comparison.py --nas-dir runs/nas --out runs/nas_budget   # ~45 min, 2 cores

Caveat printed with the result: one accuracy on 1,000 test images has a binomial standard error of
about 0.4 percentage points at 98.5 %, so differences of a few tenths are within noise; ``--seeds
0,1,2`` trains the winner and the fixed network with several seeds to show the seed-to-seed spread.
The winner-minus-fixed difference is also reported paired by seed (both scored on the same test
images, each seed at its better learning rate; ties: the first of ``--lrs``) with two standard
errors: over the seeds, and over the test images (a bootstrap of the images, each finished
training's last checkpoint re-evaluated per image and checked against its summary).
"""

import csv
import io
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn.commands.config import option, parse


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    data: str = option("mnist5k", "dataset")
    nas_dir: str | None = option(None, "a finished refsnn nas run (none: search into OUT/nas)")
    n_random: int = option(10, "random genotypes trained")
    cells: int = option(3, "cells of the genotypes")
    channels: int = option(8, "channels C the winner was searched at")
    max_neurons: int = option(30000, "the search's cap, applied to random genotypes")
    train_channels: int | None = option(None, "train the winner and the random genotypes at this width (none: "
                                              "--channels)")
    epochs: int = option(20, "training epochs of every contestant")
    timesteps: int = option(2, "simulation steps T of the trainings")
    lr: float = option(1e-2, "peak learning rate of the random genotypes")
    fixed_arch: str = option("csnn", "the fixed network (refsnn train --arch)")
    lrs: str = option("4e-3,1e-2", "comma-separated peak learning rates for the winner and the fixed network")
    batch_size: int = option(64, "training batch size")
    seeds: str = option("0,1,2", "comma-separated training seeds for winner and fixed network")
    seed: int = option(0, "seed of the random-genotype draw (and their training)")
    workers: int = option(2, "parallel trainings (1 thread each; 0: in this process)")
    n_train: int | None = option(None, "train on the first N images only (quick runs, tests)")
    n_test: int | None = option(None, "test on the first N images only (quick runs, tests)")
    out: str = option("runs/nas_budget", "output directory")
    tag: str = option("", "suffix of the result files (several comparisons in one --out)")


def _train_one(job: dict) -> dict:
    """Train one contestant (runs in a worker process); returns its row."""
    from refsnn.commands.training import TrainConfig, train

    run = Path(job["run"])
    if (run / "config.json").is_file():
        # a training from an earlier call: it must be this job's, else resuming would mix two runs
        cfg = json.loads((run / "config.json").read_text())
        arch = cfg.get("arch") if cfg.get("genotype") is None else f"genotype:{cfg['genotype']}"
        want = {k: job[k] for k in ("data", "arch", "timesteps", "lr", "batch_size", "seed", "n_train", "n_test")}
        have = {**{k: cfg.get(k) for k in want}, "arch": arch}
        if have != want:
            diff = sorted(k for k in want if have[k] != want[k])
            raise ValueError(f"--out: {run} holds a different training (differs in {diff}); use another --out")
        s = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
        if s.get("complete") and s.get("epochs") == job["epochs"]:
            return {**job["row"], **_fields(s), "reused": True}
    t0 = time.perf_counter()
    s = train(TrainConfig(data=job["data"], arch=job["arch"], timesteps=job["timesteps"], epochs=job["epochs"],
                          lr=job["lr"], batch_size=job["batch_size"], seed=job["seed"], threads=1,
                          n_train=job["n_train"], n_test=job["n_test"],
                          out=str(run), quiet=True, resume=(run / "checkpoint.npz").is_file()))
    return {**job["row"], **_fields(s), "reused": False, "this_call_seconds": time.perf_counter() - t0}


def _paired_image_bootstrap(win_hits: list, fixed_hits: list, n_boot: int = 10000, seed: int = 0) -> float:
    """Standard error of mean_s(acc(winner_s) - acc(fixed_s)) from resampling the test images
    (the same resample for every seed and both networks): the test set's own sampling error of the
    paired difference, which the seed-to-seed standard error does not contain."""
    d = np.mean([w.astype(np.float64) - f for w, f in zip(win_hits, fixed_hits)], axis=0)  # per image
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(11,)))
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    return float(d[idx].mean(axis=1).std(ddof=1))


def _fields(s: dict) -> dict:
    return {k: s[k] for k in ("test_accuracy", "best_test_accuracy", "train_accuracy", "n_params", "n_test",
                              "spikes_per_sample", "sops_per_sample", "wall_seconds")}


def _winner(args, out: Path) -> tuple[list[int], Path]:
    """The winner's flat genotype and JSON path: from --nas-dir, or from a fresh default search."""
    from refsnn.commands.nas import NASConfig
    from refsnn.commands.nas import run as search

    nas_dir = Path(args.nas_dir) if args.nas_dir else out / "nas"
    path = nas_dir / "best_genotype.json"
    if not path.is_file():
        if args.nas_dir:
            raise FileNotFoundError(f"--nas-dir: no best_genotype.json in {nas_dir} (run refsnn nas --out {nas_dir})")
        print(f"no search given: running refsnn nas --data {args.data} (defaults, search only) into {nas_dir}")
        search(NASConfig(data=args.data, out=str(nas_dir), resume=(nas_dir / "search_state.json").is_file(),
                         quiet=False, cells=args.cells, channels=args.channels, max_neurons=args.max_neurons))
    meta = json.loads(path.read_text())
    if meta.get("channels") != args.channels:
        raise ValueError(f"--channels: the winner in {path} was searched at {meta.get('channels')} channels, not "
                         f"{args.channels}")
    return [int(v) for v in meta["flat"]], path


def _random_genotypes(args, winner_flat, input_shape, n_classes) -> list:
    """--n-random distinct canonical genotypes within the search's neuron cap, the winner excluded."""
    from refsnn.nas.genotype import canonical, random_genotype
    from refsnn.nas.graph import decode, graph_stats

    rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(7,)))
    seen = {tuple(canonical(winner_flat).flat)}
    picked, drawn = [], 0
    while len(picked) < args.n_random:
        drawn += 1
        if drawn > 1000 * args.n_random:
            raise RuntimeError("could not draw enough distinct genotypes within --max-neurons")
        g = canonical(random_genotype(rng, args.cells))
        key = tuple(g.flat)
        if key in seen:
            continue
        n = graph_stats(decode(g, input_shape, args.channels, n_classes))["n_neurons_per_sample"]
        if args.max_neurons and n > args.max_neurons:
            continue
        seen.add(key)
        picked.append(g)
    return picked


def _search_fitness(nas_dir: Path):
    """``genotype -> fitness`` exactly as the search in ``nas_dir`` scored it (its config.json: kind,
    width, batches, cap, seed); ``-inf`` marks a genotype the search could never pick (silent network
    or over the neuron cap)."""
    from refsnn.commands.nas import NASConfig
    from refsnn.nas.options import make_fitness
    from refsnn.nas.search import genotype_seed

    conf = json.loads((nas_dir / "config.json").read_text())
    a = NASConfig(**{k: v for k, v in conf.items() if k in NASConfig.__dataclass_fields__})
    fit = make_fitness(a)
    return lambda g: float(fit(g, genotype_seed(g, a.seed)))


def _plot(path: Path, rows: list[dict], figures: dict) -> None:
    """Dot plot: one column per contestant group, one dot per training, a bar at the compared figure."""
    from PIL import Image, ImageDraw

    from refsnn.io import atomic_write_bytes

    groups = ["winner", "fixed", "random"]
    W, H, pad_l, pad_b, top = 560, 370, 60, 44, 30
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    accs = [r["test_accuracy"] for r in rows]
    # the axis spans the compared figures and the winner's and fixed network's runs; random genotypes
    # that failed to train fall below it and are drawn on the bottom edge with their value
    core = [a for r, a in zip(rows, accs) if r["group"] != "random"] + [v for v in figures.values() if v is not None]
    lo, hi = max(min(accs), min(core) - 0.01) - 0.002, max(accs) + 0.002
    y = lambda a: top + (hi - a) / (hi - lo) * (H - top - pad_b)  # noqa: E731
    d.rectangle([pad_l, top, W - 10, H - pad_b], outline="black")
    d.text((pad_l, 8), "test accuracy after the same training budget (mnist5k)", fill="black")
    for k in range(5):
        a = lo + (hi - lo) * k / 4
        d.text((4, y(a) - 6), f"{100 * a:.2f}%", fill="black")
    colors = {"winner": (214, 39, 40), "fixed": (31, 119, 180), "random": (127, 127, 127)}
    col_w = (W - 10 - pad_l) / len(groups)
    for i, gname in enumerate(groups):
        cx = pad_l + col_w * (i + 0.5)
        d.text((cx - 20, H - pad_b + 8), gname, fill="black")
        pts = [r["test_accuracy"] for r in rows if r["group"] == gname]
        below = []
        for j, a in enumerate(pts):
            px = cx + (j - (len(pts) - 1) / 2) * 7
            if a < lo:
                d.polygon([(px - 4, H - pad_b - 7), (px + 4, H - pad_b - 7), (px, H - pad_b - 1)], fill=colors[gname])
                below.append(a)
            else:
                d.ellipse([px - 3, y(a) - 3, px + 3, y(a) + 3], fill=colors[gname])
        if below:  # their values under the column's name, clear of the plotted bars
            txt = "below: " + " ".join(f"{100 * a:.0f}" for a in sorted(below)) + " %"
            d.text((cx - 3 * len(txt), H - pad_b + 22), txt, fill=colors[gname])
        if figures.get(gname) is not None:
            d.line([cx - col_w * 0.35, y(figures[gname]), cx + col_w * 0.35, y(figures[gname])],
                   fill=colors[gname], width=2)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _pp(v) -> str:
    """A fraction as percentage points with two decimals; ``-`` for ``None`` (one seed: no spread)."""
    return "-" if v is None else f"{100 * v:.2f}"


def _markdown(result: dict, random_rows: list[dict]) -> str:
    """The three compared figures as a Markdown table (what the README shows), from ``result``."""
    rp = [r["n_params"] for r in random_rows]
    pct = lambda a: f"{100 * a:.2f} %"  # noqa: E731
    params = lambda g: ", ".join(f"{n:,}" for n in result["n_params"][g])  # noqa: E731
    lines = [f"| contestant (same budget: {result['epochs']} epochs, T = {result['timesteps']}, "
             f"width C = {result['train_channels']}) | parameters | test accuracy |", "|---|---|---|",
             f"| searched winner (mean over seeds {result['seeds']}, better lr of {result['lrs']} per seed) | "
             f"{params('winner')} | {pct(result['winner_accuracy'])} |",
             f"| fixed network (same selection) | {params('fixed')} | "
             f"{pct(result['fixed_accuracy'])} |",
             f"| median of {len(random_rows)} random genotypes (lr {result['random_lr']:g}) | "
             f"{min(rp):,}-{max(rp):,} | {pct(result['random_median_accuracy'])} "
             f"({pct(result['random_valid_median_accuracy'])} over the {result['n_random_valid']} the search "
             f"could pick) |",
             "", f"One accuracy's binomial standard error on {result['n_test']} test images: "
             f"{100 * result['binomial_standard_error']:.2f} percentage points. Winner minus fixed network, "
             f"paired by seed: {100 * result['paired_difference_mean']:+.2f} points "
             f"(standard error over {len(result['seeds'])} seeds "
             f"{_pp(result['paired_difference_se'])}, over the test images (bootstrap) "
             f"{_pp(result['paired_difference_image_se'])}; per seed "
             + ", ".join(f"{100 * d:+.1f}" for d in result["paired_differences"]) + ")."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    from refsnn.datasets import load
    from refsnn.io import atomic_write_json, atomic_write_text
    from refsnn.nas.genotype import Genotype, to_json
    from refsnn.nas.trained import per_sample_hits
    from refsnn.parallel import map_with_progress

    args = parse(Options, argv, description=__doc__.split("\n\n")[0])
    if args.train_channels is not None and args.train_channels < 1:
        raise SystemExit(f"--train-channels: must be >= 1, got {args.train_channels}")
    for name in ("n_random", "epochs", "timesteps", "batch_size", "workers", "channels", "cells"):
        lo = 0 if name == "workers" else 1
        if getattr(args, name) < lo:
            raise SystemExit(f"--{name.replace('_', '-')}: must be >= {lo}, got {getattr(args, name)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    lrs = [float(v) for v in args.lrs.split(",")]
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)

    winner_flat, _ = _winner(args, out)
    ds = load(args.data, timesteps=args.timesteps, seed=0)
    randoms = _random_genotypes(args, winner_flat, ds.input_shape, ds.num_classes)
    fitness_of = _search_fitness(Path(args.nas_dir) if args.nas_dir else out / "nas")
    common = {"data": args.data, "timesteps": args.timesteps, "epochs": args.epochs, "batch_size": args.batch_size,
              "n_train": args.n_train, "n_test": args.n_test}
    C = args.train_channels or args.channels
    wtag = f"_c{args.train_channels}" if args.train_channels else ""

    def genotype_job(kind, g, seed, lr, name):
        # runs are addressed by the genotype's digits: a run directory can only ever hold one genotype's
        # training, so trainings are shared between comparisons in the same --out (e.g. another search's
        # winner against the same random genotypes and fixed network)
        key = "".join(map(str, g.flat))
        gpath = out / "runs" / f"{kind}_{key}.json"
        atomic_write_text(gpath, to_json(g))
        return {**common, "arch": f"genotype:{gpath.resolve()}@{C}", "lr": lr, "seed": seed,
                "run": str(out / "runs" / f"{kind}_{key}{wtag}_lr{lr:g}_s{seed}"),
                "row": {"group": kind, "name": name, "genotype": " ".join(map(str, g.flat)), "genotype_str": str(g),
                        "lr": lr, "seed": seed, "search_fitness": fitness_of(g)}}

    jobs = []
    for s in seeds:
        for lr in lrs:
            jobs.append(genotype_job("winner", Genotype.from_flat(winner_flat), s, lr, f"winner{wtag}_lr{lr:g}_s{s}"))
        for lr in lrs:
            jobs.append({**common, "arch": args.fixed_arch, "lr": lr, "seed": s,
                         "run": str(out / "runs" / f"fixed_{args.fixed_arch}_lr{lr:g}_s{s}"),
                         "row": {"group": "fixed", "name": f"fixed_lr{lr:g}_s{s}", "genotype": args.fixed_arch,
                                 "lr": lr, "seed": s}})
    for i, g in enumerate(randoms):
        jobs.append(genotype_job("random", g, args.seed, args.lr, f"random{i:02d}{wtag}"))
    print(f"{len(jobs)} trainings ({args.epochs} epochs, T={args.timesteps}) on {args.workers} worker(s); "
          f"winner {winner_flat}")
    t0 = time.perf_counter()

    def line(r):
        return (f"{r['name']:<18} acc {r['test_accuracy']:.4f}  params {r['n_params']:>7}  "
                f"train {r['wall_seconds']:5.0f}s{' (reused)' if r['reused'] else ''}  "
                f"{r.get('genotype_str', r['genotype'])}")
    rows = list(map_with_progress(_train_one, jobs, workers=args.workers, line=line))

    def group(name, seed=None):
        return [r for r in rows if r["group"] == name and (seed is None or r["seed"] == seed)]

    # per seed the better learning rate (ties: the first of --lrs), then the mean over seeds -- the
    # same for winner and fixed
    run_of = {r["name"]: Path(j["run"]) for j, r in zip(jobs, rows)}
    best = {k: [max(group(k, s), key=lambda r: r["test_accuracy"]) for s in seeds] for k in ("winner", "fixed")}
    win, fixed = (statistics.mean(r["test_accuracy"] for r in best[k]) for k in ("winner", "fixed"))
    # paired by seed (both networks scored on the same test images): the mean difference and its
    # standard error over seeds -- the seed-to-seed spread the binomial figure above does not show --
    # and over the test images (bootstrap of the per-image re-evaluations)
    diffs = [w["test_accuracy"] - f["test_accuracy"] for w, f in zip(best["winner"], best["fixed"])]
    diff_se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None  # one seed: none
    diff_image_se = _paired_image_bootstrap(*([per_sample_hits(run_of[r["name"]]) for r in best[k]]
                                              for k in ("winner", "fixed")))
    per_lr = {k: {f"{lr:g}": statistics.mean(r["test_accuracy"] for r in group(k) if r["lr"] == lr) for lr in lrs}
              for k in ("winner", "fixed")}
    rand = statistics.median(r["test_accuracy"] for r in group("random"))
    # the random genotypes the search could have picked at all (finite fitness: not silent, under the cap)
    valid = [r["test_accuracy"] for r in group("random") if math.isfinite(r["search_fitness"])]
    rand_valid = statistics.median(valid) if valid else float("nan")
    n_test = rows[0]["n_test"]
    se = math.sqrt(win * (1 - win) / n_test)
    figures = {"winner": win, "fixed": fixed, "random": rand}
    result = {"winner_accuracy": win, "fixed_accuracy": fixed, "random_median_accuracy": rand,
              "random_accuracies": [r["test_accuracy"] for r in group("random")],
              "random_valid_median_accuracy": rand_valid, "n_random_valid": len(valid),
              "winner_beats_random_valid_median": win > rand_valid,
              "winner_beats_fixed": win > fixed, "winner_beats_random_median": win > rand,
              "binomial_standard_error": se, "n_test": n_test,
              "paired_differences": diffs, "paired_difference_mean": statistics.mean(diffs),
              "paired_difference_se": diff_se, "paired_difference_image_se": diff_image_se,
              "seeds": seeds, "epochs": args.epochs,
              "timesteps": args.timesteps, "random_lr": args.lr, "lrs": lrs, "mean_accuracy_per_lr": per_lr,
              "train_channels": args.train_channels or args.channels,
              "n_params": {g: sorted({r["n_params"] for r in group(g)}) for g in ("winner", "fixed")},
              "winner_genotype": winner_flat, "wall_seconds": time.perf_counter() - t0}
    buf = io.StringIO()
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in rows[0], k))
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    sfx = wtag + (f"_{args.tag}" if args.tag else "")
    files = [out / f"results{sfx}.csv", out / f"comparison{sfx}.json", out / f"comparison{sfx}.png",
             out / f"comparison{sfx}.md"]
    atomic_write_text(files[0], buf.getvalue())
    atomic_write_json(files[1], result)
    _plot(files[2], rows, figures)
    atomic_write_text(files[3], _markdown(result, group("random")))
    print(f"\nsame budget ({args.epochs} epochs, T={args.timesteps}, seeds {seeds}); test accuracy on {n_test} images:")
    print(f"  {'peak lr':<44} {'winner':>7} {'fixed':>7}")
    for lr in lrs:
        print(f"  {lr:<44g} {100 * per_lr['winner'][f'{lr:g}']:6.2f}% {100 * per_lr['fixed'][f'{lr:g}']:6.2f}%")
    print(f"  {'better lr per seed (the compared figures)':<44} {100 * win:6.2f}% {100 * fixed:6.2f}%")
    print(f"  median of {len(randoms)} random genotypes (lr {args.lr:g})       {100 * rand:6.2f} %  "
          f"(range {100 * min(result['random_accuracies']):.1f}-{100 * max(result['random_accuracies']):.1f})")
    print(f"  median of the {len(valid)} random genotypes the search could pick  {100 * rand_valid:6.2f} %  "
          f"(finite search fitness: not silent, within the neuron cap)")
    print(f"  one accuracy's binomial standard error: {100 * se:.2f} percentage points")
    print(f"  winner - fixed, paired by seed: {100 * result['paired_difference_mean']:+.2f} points "
          f"(SE over seeds {_pp(diff_se)}, over test images {_pp(diff_image_se)}; "
          f"per seed {', '.join(f'{100 * d:+.1f}' for d in diffs)})")
    print("wrote " + ", ".join(map(str, files)))
    return result


if __name__ == "__main__":
    main()
