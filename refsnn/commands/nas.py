"""``refsnn nas``: MSE-NAS evolutionary search with the training-free BIE fitness, then (optionally)
STBP training of the winner (SPEC §6, §8).

One readable file: the hyperparameters are the :class:`NASArgs` dataclass below (every field is a
command-line flag), then the loop::

    refsnn nas --data mnist5k                       # search only (80 generations)
    refsnn nas --data mnist5k --train-epochs 20     # search, then train the best genotype
                                                    # (98.3 % on mnist5k, ~12 min on 2 cores)

Search: :class:`refsnn.nas.search.EvolutionarySearch` (tournament 2, two-point crossover 0.9,
per-gene mutation 1/len, 2 elites, duplicates removed, fitness cached by canonical genotype) over
genotypes of ``--cells`` cells, maximising :class:`refsnn.nas.fitness.NASFitness` (``--fitness
bie-min``: the seed's minimisation of BIE, ``bie-max``, ``logdet`` (NASWOT) or ``logdet-sa`` (SNASNet's
sparsity-aware kernel)) of the untrained network of
width ``--channels`` on ``--fitness-batches`` fixed batches of ``--fitness-batch`` training images,
``--timesteps`` steps. Evaluation goes through a ``concurrent.futures`` process pool of
``--workers`` processes (default 2, one per core of the reference machine; 0: in-process), which
also trains the finalists; results do not depend on the number of workers.

Finalists (``--finalists K``, default 8): the search's fitness only narrows the space. The K
fittest distinct genotypes are each trained for ``--finalist-epochs`` (4) epochs on the training
images minus the last ``--val`` (1,000) and the one most accurate on those held-out images is kept
(ties: the fitter); the test split is never used for the choice (:func:`select_finalist`,
``finalists.csv``). ``--finalists 0`` keeps the fittest genotype (the paper's training-free choice).

Training (``--train-epochs N > 0``): the best genotype is written to ``best_genotype.json`` and
trained by :func:`refsnn.commands.train.train` with ``arch = "genotype:OUT/best_genotype.json"``
(``build_arch`` hands it to :func:`refsnn.nas.network.build_from_arch_string`), the trainer's defaults otherwise, into
``OUT/train`` (its own metrics, curve, checkpoint and summary).

Outputs in ``--out``: ``search_state.json`` (the search checkpoint, written atomically after every
generation), ``metrics.csv`` (one row per generation), ``fitness.png`` (best / mean / best-so-far
fitness per generation), ``best_genotype.json`` (genotype JSON plus ``channels``, ``fitness``,
``fitness_kind``), ``best_graph.json`` (its graph description), ``summary.json`` (flat:
``best_genotype`` flat int list, ``best_fitness``, ``generations``, ``wall_seconds``, and
``test_accuracy`` when the winner was trained), ``config.json``. ``--resume`` continues from
``search_state.json`` (and ``train/checkpoint.npz``) to the same result as an uninterrupted run;
wall-clock columns are the only difference.

Defaults (2 shared CPU cores): 3 cells, 8 channels, population 20, 80 generations (SPEC), fitness
on 2 batches of 16 images at T = 4, training at T = 2 with learning rate 1e-2. Two defaults are
choices made from measurements on mnist5k (docs/msenas.md, "What the fitnesses prefer"):

* ``--fitness bie-max`` (the released code's direction), not the seed's ``bie-min``: BIE and logdet
  scores are dominated by network size, and ``bie-min`` converges to the all-empty network (1,154
  parameters, 49.8 % test accuracy after 20 epochs), while over 20 random genotypes Kendall's tau
  with short-training accuracy is -0.42 for ``bie-min``, +0.42 for ``bie-max``, +0.49 for
  ``logdet``, +0.17 for ``logdet-sa``. ``--fitness bie-min`` runs the seed's direction.
* ``--max-neurons 30000``: a resource cap (LIF neurons per sample; ``0`` = none) so that the
  size-seeking fitness picks a network that trains within the time budget.
* ``--finalists 8``: the bie-max fitnesses of the top genotypes differ by under 3 % while their
  trained accuracies do not (the fittest, a 2-cell network of 17,730 parameters, reaches 97.4 %
  on the validation split after 20 epochs; the finalist kept, a 3-cell one of 62,194, 98.2 %;
  ``refsnn train``'s fixed network 97.8 %), so a short training decides among them
  (docs/msenas.md, "Finalists").
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

from refsnn.cliutil import fmt_hms
from refsnn.parallel import make_executor, shutdown

# ------------------------------------------------------------------------------------------------
# hyperparameters
# ------------------------------------------------------------------------------------------------


@dataclass
class NASArgs:
    data: str = "mnist5k"          # dataset spec (refsnn.datasets.load)
    generations: int = 80         # SPEC §6.5
    population: int = 20
    cells: int = 3                 # l
    channels: int = 8              # C, stage-0 channels per population (search and training)
    fitness: str = "bie-max"       # bie-max (released code's path) | bie-min (seed) | logdet | logdet-sa; see docs
    max_neurons: int | None = 30000  # resource cap: larger networks get the worst fitness (0: none)
    timesteps: int = 4             # T, for the fitness and the training
    fitness_batch: int = 16        # j, samples per fitness batch
    fitness_batches: int = 2       # s, batches
    elites: int = 2
    finalists: int = 8             # > 0: train the K fittest genotypes briefly, keep the most accurate on validation
    finalist_epochs: int = 4       # epochs of each finalist's training
    val: int = 1000                # finalists are scored on the last N training images (never on test)
    train_epochs: int = 0          # > 0: train the best genotype for this many epochs
    train_timesteps: int | None = 2  # T of the training (None: --timesteps)
    train_channels: int | None = None  # C of the training (None: --channels): search narrow, train wide
    train_lr: float = 1e-2          # higher than refsnn train's 4e-3: deep E/I cells learn slowly at 4e-3
    train_batch_size: int = 64
    train_subset: int | None = None  # train on the first N training images only (quick runs, tests)
    workers: int = 2               # worker processes for the fitness and the finalists (0: in-process)
    threads: int | None = 1        # BLAS + Numba threads per process (None: library defaults)
    seed: int = 0
    out: str = "runs/nas"
    resume: bool = False
    quiet: bool = False


# keys that define a run (a resumed run must match them; generations and train_* may change)
RUN_KEYS = ("data", "population", "cells", "channels", "fitness", "max_neurons", "timesteps", "fitness_batch",
            "fitness_batches", "elites", "seed")
COLUMNS = ("generation", "best_fitness", "mean_fitness", "best_so_far_fitness", "n_invalid", "n_unique",
           "n_evaluated", "n_cached", "frac_inhibitory", "best_genotype", "generation_seconds",
           "elapsed_seconds")

# ------------------------------------------------------------------------------------------------


def _check(a: NASArgs) -> NASArgs:
    from refsnn._checks import check_choice, check_float, check_int
    from refsnn.nas.fitness import KINDS

    check_int("generations", a.generations, lo=0)
    check_int("population", a.population, lo=2)
    check_int("cells", a.cells, lo=1)
    check_int("channels", a.channels, lo=1)
    check_choice("fitness", a.fitness, KINDS)
    check_int("timesteps", a.timesteps, lo=1)
    check_int("fitness_batch", a.fitness_batch, lo=2)
    check_int("fitness_batches", a.fitness_batches, lo=1)
    check_int("elites", a.elites, lo=0, hi=a.population - 1)
    check_int("train_epochs", a.train_epochs, lo=0)
    check_int("finalists", a.finalists, lo=0)
    check_int("finalist_epochs", a.finalist_epochs, lo=1)
    check_int("val", a.val, lo=1)
    if a.max_neurons is not None:
        check_int("max_neurons", a.max_neurons, lo=0)
    if a.train_timesteps is not None:
        check_int("train_timesteps", a.train_timesteps, lo=1)
    check_float("train_lr", a.train_lr, lo=0.0, lo_open=True)
    check_int("train_batch_size", a.train_batch_size, lo=1)
    if a.train_subset is not None:
        check_int("train_subset", a.train_subset, lo=1)
    if a.train_channels is not None:
        check_int("train_channels", a.train_channels, lo=1)
    check_int("workers", a.workers, lo=0)
    check_int("seed", a.seed, lo=0)
    if a.threads is not None:
        check_int("threads", a.threads, lo=1)
    return a


def _fmt_f(f) -> str:
    if f is None:
        return "-"
    return f"{f:.6g}" if math.isfinite(f) else ("-inf" if f < 0 else str(f))


def make_fitness(a: NASArgs):
    from refsnn.nas.fitness import NASFitness

    return NASFitness(kind=a.fitness, data=a.data, channels=a.channels, timesteps=a.timesteps,
                      batch_size=a.fitness_batch, n_batches=a.fitness_batches, data_seed=a.seed,
                      max_neurons=a.max_neurons or None)


def _worker_init(threads):
    if threads is not None:
        from refsnn.snn.threads import set_threads
        set_threads(threads)


def _metrics_rows(history: list[dict], timing: dict) -> list[dict]:
    rows = []
    for r in history:
        g = r["generation"]
        t = timing.get(str(g), {})
        rows.append({
            "generation": g, "best_fitness": _fmt_f(r["best_fitness"]),
            "mean_fitness": _fmt_f(r["mean_fitness"]), "best_so_far_fitness": _fmt_f(r["best_so_far_fitness"]),
            "n_invalid": r["n_invalid"], "n_unique": r["n_unique"], "n_evaluated": r["n_evaluated"],
            "n_cached": r["n_cached"],
            "frac_inhibitory": "" if r["ei"]["frac_inhibitory"] is None else f"{r['ei']['frac_inhibitory']:.6g}",
            "best_genotype": " ".join(map(str, r["best_genotype"])),
            "generation_seconds": f"{t['generation_seconds']:.3f}" if "generation_seconds" in t else "",
            "elapsed_seconds": f"{t['elapsed_seconds']:.3f}" if "elapsed_seconds" in t else "",
        })
    return rows


def _write_outputs(out: Path, a: NASArgs, history: list[dict], timing: dict) -> None:
    from refsnn.plot import line_plot_png
    from refsnn.io import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(_metrics_rows(history, timing))
    atomic_write_text(out / "metrics.csv", buf.getvalue())
    fin = lambda v: v if v is not None and math.isfinite(v) else float("nan")  # noqa: E731
    line_plot_png(out / "fitness.png", [r["generation"] for r in history],
                  {"best": [fin(r["best_fitness"]) for r in history],
                   "mean": [fin(r["mean_fitness"]) for r in history],
                   "best so far": [fin(r["best_so_far_fitness"]) for r in history]},
                  title=f"refsnn nas {a.data} {a.fitness} (l={a.cells}, C={a.channels}, P={a.population}, seed {a.seed})",
                  xlabel="generation", ylabel="fitness (maximised)")


FINALIST_COLUMNS = ("rank", "genotype", "fitness", "n_params", "val_accuracy", "train_accuracy", "seconds")


def _train_finalist(job: dict) -> dict:
    """One finalist's short training (runs in a worker process or in-process); returns its row."""
    from refsnn.commands.train import TrainConfig, train

    tdir = Path(job["out"])
    s = json.loads((tdir / "summary.json").read_text()) if (tdir / "summary.json").is_file() else {}
    if not (s.get("complete") and s.get("epochs") == job["epochs"]):
        s = train(TrainConfig(**job, resume=(tdir / "checkpoint.npz").is_file(), quiet=True))
    return {"val_accuracy": s["test_accuracy"], "train_accuracy": s["train_accuracy"],
            "n_params": s["n_params"], "seconds": s["wall_seconds"]}


def select_finalist(a: NASArgs, ranked: list, out: Path, *, log=print, executor=None) -> tuple[int, list[dict]]:
    """Train each of ``ranked`` (``[(Genotype, fitness), ...]``, fittest first) for ``--finalist-epochs``
    epochs on the training images minus the last ``--val``, score it by its accuracy on those held-out
    images, and return ``(index of the most accurate (ties: the fitter), rows)``.

    The training-free fitness only narrows the space here; the choice among the finalists is made
    by trained accuracy, as the released MSE-NAS code does for its whole search (it trains every
    candidate for 10 epochs). The test split is never used. Each finalist trains in
    ``OUT/finalists/NN`` (rank NN), resumable; ``OUT/finalists.csv`` has one row per finalist.
    """
    import shutil

    from refsnn.io import atomic_write_json, atomic_write_text
    from refsnn.nas.genotype import to_json

    jobs = []
    for rank, (g, _) in enumerate(ranked, 1):
        gdir = out / "finalists" / f"{rank:02d}"
        gpath = gdir / "genotype.json"
        gobj = {**json.loads(to_json(g)), "channels": a.channels}
        if gpath.is_file() and json.loads(gpath.read_text()) != gobj:
            # a finalist of an earlier state of this search (e.g. before --resume with more generations)
            log(f"finalist {rank}: {gdir} held another genotype; training it afresh")
            shutil.rmtree(gdir)
        gdir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(gpath, gobj)
        jobs.append(dict(data=a.data, arch=f"genotype:{gpath.resolve()}", timesteps=a.train_timesteps or a.timesteps,
                         epochs=a.finalist_epochs, lr=a.train_lr, batch_size=a.train_batch_size, seed=a.seed,
                         threads=a.threads, n_train=a.train_subset, n_val=a.val, out=str(gdir / "train")))
    log(f"finalists: training the {len(jobs)} fittest genotypes for {a.finalist_epochs} epochs each, "
        f"scored on the last {a.val} training images")
    t0 = time.perf_counter()
    results = map(_train_finalist, jobs) if executor is None else executor.map(_train_finalist, jobs)
    rows = []
    for rank, ((g, f), r) in enumerate(zip(ranked, results), 1):
        rows.append({"rank": rank, "genotype": str(g), "fitness": f, **r})
        el = time.perf_counter() - t0
        log(f"finalist {rank}/{len(jobs)}  {g}  fitness {_fmt_f(f)}  {r['n_params']} parameters  "
            f"val acc {r['val_accuracy']:.4f}  ({r['seconds']:.0f} s)  elapsed {fmt_hms(el)}  "
            f"eta {fmt_hms(el / rank * (len(jobs) - rank))}")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(FINALIST_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows({**r, "fitness": _fmt_f(r["fitness"]), "val_accuracy": f"{r['val_accuracy']:.4f}",
                 "train_accuracy": f"{r['train_accuracy']:.4f}", "seconds": f"{r['seconds']:.1f}"} for r in rows)
    atomic_write_text(out / "finalists.csv", buf.getvalue())
    best = max(range(len(rows)), key=lambda i: rows[i]["val_accuracy"])  # first maximum: the fitter
    return best, rows


def search(a: NASArgs, *, log=print, executor=None) -> dict:
    """Run (or resume) the search and the optional training (module docstring); returns the summary."""
    from refsnn.io import atomic_write_json, atomic_write_text
    from refsnn.nas.genotype import Genotype, to_json
    from refsnn.nas.graph import decode, ei_counts, graph_stats
    from refsnn.nas.graph import to_json as graph_to_json
    from refsnn.nas.search import EvolutionarySearch, SearchConfig

    _check(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "search_state.json"
    timing_path = out / "timing.json"
    cfg_path = out / "config.json"
    if state_path.exists() and not a.resume:
        raise ValueError(f"out: {out} already holds a search (search_state.json); pass --resume to continue "
                         "it or choose another --out")
    if a.resume and cfg_path.exists():
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        diff = [k for k in RUN_KEYS if old.get(k) != getattr(a, k)]
        if diff:
            raise ValueError(f"--resume: {out} was written with different settings: {diff}")
    atomic_write_json(cfg_path, dataclasses.asdict(a))
    _worker_init(a.threads)
    from refsnn.provenance import write_environment
    write_environment(out)
    fitness = make_fitness(a)
    config = SearchConfig(n_cells=a.cells, population_size=a.population, generations=a.generations,
                          n_elites=a.elites, seed=a.seed)
    own_pool = None
    if executor is None and a.workers > 0:
        own_pool = executor = make_executor(a.workers, initializer=_worker_init, initargs=(a.threads,))
    timing: dict = {}
    wall_before = 0.0
    try:
        if a.resume and state_path.exists():
            s = EvolutionarySearch.load(state_path, fitness, executor, generations=a.generations)
            from dataclasses import replace
            if replace(s.config, generations=a.generations) != config:
                raise ValueError(f"--resume: {state_path} was written with a different search configuration")
            if timing_path.exists():
                timing = json.loads(timing_path.read_text(encoding="utf-8"))
            done = [v for k, v in timing.items() if int(k) <= s.generation]
            wall_before = max((v["elapsed_seconds"] for v in done), default=0.0)
            log(f"resumed {state_path} after generation {s.generation}")
        else:
            s = EvolutionarySearch(fitness, config, executor)
        log(f"refsnn nas: {a.data}, {a.cells} cells x C={a.channels}, T={a.timesteps}, fitness {a.fitness} on "
            f"{a.fitness_batches}x{a.fitness_batch} images, max {a.max_neurons or 'any'} neurons, population {a.population}, {a.generations} generations, "
            f"workers {a.workers}, seed {a.seed}")
        t_start = time.perf_counter()
        t_last = [t_start]
        first_gen = s.generation + 1

        def on_generation(rec):
            now = time.perf_counter()
            g = rec["generation"]
            elapsed = wall_before + (now - t_start)
            timing[str(g)] = {"generation_seconds": now - t_last[0], "elapsed_seconds": elapsed}
            t_last[0] = now
            atomic_write_json(timing_path, timing)
            n_done = g - first_gen + 1
            eta = (now - t_start) / max(n_done, 1) * (a.generations - g)
            fi = rec["ei"]["frac_inhibitory"]
            log(f"gen {g:3d}/{a.generations}  best {_fmt_f(rec['best_fitness'])}  "
                f"mean {_fmt_f(rec['mean_fitness'])}  best-so-far {_fmt_f(rec['best_so_far_fitness'])}  "
                f"unique {rec['n_unique']}  new {rec['n_evaluated']}  invalid {rec['n_invalid']}  "
                f"I-edge frac {'-' if fi is None else f'{fi:.3f}'}  "
                f"elapsed {fmt_hms(elapsed)}  eta {fmt_hms(eta)}")
            _write_outputs(out, a, s.history, timing)

        result = s.run(on_generation=on_generation, checkpoint=state_path)
        if s.history:
            _write_outputs(out, a, s.history, timing)
        search_wall = max((v["elapsed_seconds"] for v in timing.values()), default=0.0)
        best, best_fitness, finalists = result.best_genotype, result.best_fitness, None
        ranked = [(Genotype.from_flat(k), f) for k, f in s.top(a.finalists)] if a.finalists else []
        if ranked:
            t_fin = time.perf_counter()
            i, finalists = select_finalist(a, ranked, out, log=log, executor=executor)
            best, best_fitness = ranked[i]
            finalist_wall = time.perf_counter() - t_fin
            log(f"finalists: kept rank {i + 1}, {best} (val acc {finalists[i]['val_accuracy']:.4f}), "
                f"{fmt_hms(finalist_wall)}")
    finally:
        if own_pool is not None:
            shutdown(own_pool)
    gobj = json.loads(to_json(best))
    gobj.update(channels=a.channels, fitness=_fmt_f(best_fitness), fitness_kind=a.fitness,
                timesteps=a.timesteps, data=a.data,
                selected_by=(f"validation accuracy after {a.finalist_epochs} epochs among the {len(ranked)} fittest"
                             if ranked else "fitness"))
    atomic_write_json(out / "best_genotype.json", gobj)
    from refsnn.nas.fitness import fitness_batches
    input_shape, n_classes, _, _ = fitness_batches(a.data, a.timesteps, a.fitness_batch, a.fitness_batches, a.seed)
    graph = decode(best, input_shape, a.channels, n_classes)
    atomic_write_text(out / "best_graph.json", graph_to_json(graph) + "\n")
    st = graph_stats(graph)
    ei = ei_counts(best)
    log(f"best genotype {best}  fitness {_fmt_f(best_fitness)}  ({st['n_params']} parameters, "
        f"{st['n_populations']} populations, {result.n_evaluations} architectures scored, "
        f"search {fmt_hms(search_wall)})")
    summary = {
        "best_genotype": list(best.flat),
        "best_genotype_str": str(best),
        "best_fitness": best_fitness if math.isfinite(best_fitness) else None,
        "fitness_kind": a.fitness,
        "selected_by": gobj["selected_by"],
        "fittest_genotype_str": str(result.best_genotype),
        "generations": s.generation,
        "n_evaluations": result.n_evaluations,
        "search_seconds": search_wall,
        "wall_seconds": search_wall,
        "n_params": st["n_params"],
        "n_populations": st["n_populations"],
        "frac_inhibitory": ei["frac_inhibitory"],
        "cells": a.cells, "channels": a.channels, "timesteps": a.timesteps, "population": a.population,
        "max_neurons": a.max_neurons or 0, "data": a.data, "seed": a.seed,
    }
    if finalists:
        kept = next(r for r in finalists if r["genotype"] == str(best))
        summary.update(n_finalists=len(finalists), finalist_rank=kept["rank"],
                       finalist_val_accuracy=kept["val_accuracy"], finalist_seconds=finalist_wall,
                       finalist_epochs=a.finalist_epochs, val=a.val)  # every finalist: finalists.csv
        summary["wall_seconds"] = search_wall + finalist_wall
    if a.train_epochs > 0:
        from refsnn.commands.train import TrainConfig, train

        tdir = out / "train"
        width = f"@{a.train_channels}" if a.train_channels else ""
        tcfg = TrainConfig(data=a.data, arch=f"genotype:{(out / 'best_genotype.json').resolve()}{width}",
                           timesteps=a.train_timesteps or a.timesteps, epochs=a.train_epochs, lr=a.train_lr,
                           batch_size=a.train_batch_size, seed=a.seed, threads=a.threads,
                           n_train=a.train_subset,
                           out=str(tdir), resume=bool(a.resume and (tdir / "checkpoint.npz").exists()),
                           quiet=a.quiet)
        log(f"training the best genotype for {a.train_epochs} epochs into {tdir}")
        ts = train(tcfg)
        summary.update(test_accuracy=ts["test_accuracy"], best_test_accuracy=ts["best_test_accuracy"],
                       train_epochs=ts["epochs"], train_seconds=ts["wall_seconds"],
                       train_channels=a.train_channels or a.channels, train_n_params=ts["n_params"],
                       spikes_per_sample=ts["spikes_per_sample"])
        summary["wall_seconds"] += ts["wall_seconds"]
    atomic_write_json(out / "summary.json", summary)
    log(f"wrote {out}" + (f"; test accuracy {summary['test_accuracy']:.4f}" if "test_accuracy" in summary else ""))
    return summary


def demo_nas(out_dir, *, quiet: bool = False, seed: int = 0) -> dict:
    """A 3-generation search for ``refsnn demo`` (population 6, 2 cells of 4 channels, BIE on one
    batch of 16 images): well under a minute. Returns the summary dict."""
    a = NASArgs(generations=3, population=6, cells=2, channels=4, fitness_batch=16, fitness_batches=1, finalists=0,
                workers=0, out=str(out_dir), seed=seed, quiet=quiet, resume=(Path(out_dir) / "search_state.json").exists())
    say = (lambda *x: None) if quiet else (lambda *x: print(*x, flush=True))
    return search(a, log=say)


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------

_HELP = {
    "data": "dataset: mnist5k | mnist5k-events | cifar10:DIR | cifar100:DIR | events:DIR, each optionally "
            "with [fold=K/N] (cross-validation fold K of N as the test split)",
    "generations": "generations after the random initial population (SPEC default 80)",
    "population": "population size",
    "cells": "number of cells l of the genotype",
    "channels": "channels C per population at full resolution (doubled after each reduction)",
    "fitness": "bie-max (released code's path: maximise BIE), bie-min (seed: minimise BIE; converges to the "
               "empty network on mnist5k), logdet (NASWOT, plain Hamming kernel), logdet-sa "
               "(SNASNet's sparsity-aware kernel)",
    "timesteps": "simulation steps T of the fitness",
    "train_timesteps": "simulation steps T of the training",
    "max_neurons": "resource cap: genotypes with more LIF neurons per sample are invalid (0: no cap)",
    "fitness_batch": "j: images per fitness batch",
    "fitness_batches": "s: fitness batches",
    "elites": "individuals kept unchanged each generation",
    "finalists": "after the search, train the K fittest genotypes for --finalist-epochs each and keep the "
                 "one most accurate on the last --val training images (0: keep the fittest)",
    "finalist_epochs": "training epochs of each finalist",
    "val": "finalists are scored on the last N training images, which they do not train on",
    "train_epochs": "train the best genotype for N epochs with refsnn train (0: search only)",
    "train_lr": "peak learning rate of the training",
    "train_batch_size": "training batch size",
    "train_subset": "train on the first N training images only (quick runs)",
    "train_channels": "stage-0 channels C of the training (default: --channels; the search stays at --channels)",
    "workers": "worker processes that score the fitness and train the finalists (0: in-process); "
               "results do not depend on it",
    "threads": "BLAS/Numba threads per process",
    "out": "output directory",
    "resume": "continue the search (and training) in --out",
    "quiet": "no progress lines",
}


def add_arguments(p) -> None:
    from refsnn.cliutil import add_dataclass_arguments

    add_dataclass_arguments(p, NASArgs, help=_HELP,
                            types={"threads": int, "train_subset": int, "max_neurons": int,
                                   "train_timesteps": int, "train_channels": int},
                            choices={"fitness": ["bie-min", "bie-max", "logdet", "logdet-sa"]})


def run(args) -> int:
    from refsnn.cliutil import dataclass_from_args

    a = dataclass_from_args(NASArgs, args)
    say = (lambda *x: None) if a.quiet else (lambda *x: print(*x, flush=True))
    search(a, log=say)
    return 0
