"""``refsnn nas``: MSE-NAS evolutionary search with the training-free BIE fitness, a finalist stage
decided by short trainings, then (optionally) STBP training of the winner (SPEC §6, §8).

CleanRL style: the options are the :class:`NASConfig` dataclass, then :func:`run`, one loop::

    refsnn nas --data mnist5k                       # search (80 generations) and finalists
    refsnn nas --data mnist5k --train-epochs 20     # ... then train the winner

From Python: ``summary = run(NASConfig(data="mnist5k", out="runs/nas"))``.

Search: :class:`refsnn.nas.search.EvolutionarySearch` (tournament 2, two-point crossover 0.9,
per-gene mutation 1/len, 2 elites, duplicates removed, fitness cached by canonical genotype) over
genotypes of ``--cells`` cells, asked for the genotypes to score each generation and told their
fitness :class:`refsnn.nas.fitness.NASFitness` (``--fitness bie-min``: the seed's minimisation of
BIE, ``bie-max``, ``logdet`` (NASWOT) or ``logdet-sa`` (SNASNet's sparsity-aware kernel)) of the
untrained network of width ``--channels`` on ``--fitness-batches`` fixed batches of
``--fitness-batch`` training images, ``--timesteps`` steps. The scores are computed through a
:mod:`refsnn.parallel` executor of ``--workers`` processes (0: in-process), which also trains the
finalists; results do not depend on the number of workers.

Finalists (``--finalists K``): the search's fitness only narrows the space. The K fittest distinct
genotypes (:class:`refsnn.nas.finalists.FinalistStage`) are each trained by
:func:`refsnn.commands.training.train` (the training run of ``refsnn train``) for ``--finalist-epochs``
epochs on the training images minus the last ``--val``, and the one most accurate on those held-out
images is kept (ties: the fitter); the test split is never used for the choice (``finalists.csv``,
``finalists/NN/``). ``--finalists 0`` keeps the fittest genotype (the paper's training-free choice).
``make_fitness`` is :func:`refsnn.nas.options.make_fitness` (importable from here for one release).

Training (``--train-epochs N > 0``): the winner is written to ``best_genotype.json`` and trained by
:func:`refsnn.commands.training.train` with ``arch = "genotype:OUT/best_genotype.json[@C]"``, the
trainer's defaults otherwise, into ``OUT/train`` (its own run directory).

Run directory (:class:`refsnn.runs.RunDir`, checkpoint ``search_state.json``): ``config.json``,
``environment.json``, ``search_state.json`` (the search state, written atomically after every
generation), ``timing.json``, ``metrics.csv`` (one row per generation), ``fitness.png`` (best /
mean / best-so-far fitness per generation), ``best_genotype.json`` (genotype JSON plus
``channels``, ``fitness``, ``fitness_kind``), ``best_graph.json`` (its graph description),
``summary.json`` (flat: ``best_genotype`` flat int list, ``best_fitness``, ``generations``,
``wall_seconds``, and ``test_accuracy`` when the winner was trained). A directory holding a search
is refused unless ``--resume`` (continue the search, the finalists' and the winner's trainings to
the same result as an uninterrupted run; wall-clock columns are the only difference; the run
directory may have been moved) or ``--overwrite`` (start again).

Defaults (2 shared CPU cores): 3 cells, 8 channels, population 20, 80 generations (SPEC), fitness
on 2 batches of 16 images at T = 4, training at T = 2 with learning rate 1e-2. Three defaults are
choices made from measurements on mnist5k (figures: docs/results.md, "What the fitnesses prefer"
and "Finalists"; reasons: docs/deviations.md):

* ``--fitness bie-max`` (the released code's direction), not the seed's ``bie-min``: BIE and logdet
  scores are dominated by network size; ``bie-min`` ranks genotypes inversely to their trained
  accuracy and converges to the all-empty network. ``--fitness bie-min`` runs the seed's direction.
* ``--max-neurons 30000``: a resource cap (LIF neurons per sample; ``0`` = none) so that the
  size-seeking fitness picks a network that trains within the time budget.
* ``--finalists 8``: the fitnesses of the top genotypes are close while their trained accuracies
  are not, so a short training decides among them.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from refsnn._checks import check_choice, check_float, check_int
from refsnn.commands.config import check_run_dir_options, option, to_dict
from refsnn.commands.memory import check_fits
from refsnn.commands.training import TrainConfig, train
from refsnn.io import read_json
from refsnn.nas.finalists import FinalistStage
from refsnn.nas.fitness import KINDS, fitness_batches
from refsnn.nas.genotype import G1_VALUES, G2_VALUES, MOTIF_VALUES, OP_VALUES, B, to_json
from refsnn.nas.graph import decode, ei_counts, graph_stats
from refsnn.nas.graph import to_json as graph_to_json
from refsnn.nas.options import make_fitness
from refsnn.nas.search import EvolutionarySearch, SearchConfig, evaluate
from refsnn.parallel import make_executor, shutdown
from refsnn.runs import RunDir, fmt_hms, stop_on_signals
from refsnn.tuning import set_threads

__all__ = ["NASConfig", "CONFIG", "run", "main", "demo_nas", "make_fitness", "search_config", "RUN_KEYS",
           "COLUMNS", "FINALIST_COLUMNS"]

_DATA_HELP = ("dataset: mnist5k | mnist5k-events | cifar10:DIR | cifar100:DIR | events:DIR, each optionally "
              "with [fold=K/N] (cross-validation fold K of N as the test split)")


@dataclass
class NASConfig:
    data: str = option("mnist5k", _DATA_HELP)
    generations: int = option(80, "generations after the random initial population (SPEC default 80)")
    population: int = option(20, "population size")
    cells: int = option(3, "number of cells l of the genotype")
    channels: int = option(8, "channels C per population at full resolution (doubled after each reduction)")
    fitness: str = option("bie-max", "bie-max (released code's path: maximise BIE), bie-min (seed: minimise BIE; "
                                     "converges to the empty network on mnist5k), logdet (NASWOT, plain Hamming "
                                     "kernel), logdet-sa (SNASNet's sparsity-aware kernel)", choices=KINDS)
    max_neurons: int | None = option(30000, "resource cap: genotypes with more LIF neurons per sample are invalid "
                                            "(0: no cap)")
    timesteps: int = option(4, "simulation steps T of the fitness (and of the training unless --train-timesteps)")
    fitness_batch: int = option(16, "j: images per fitness batch")
    fitness_batches: int = option(2, "s: fitness batches")
    elites: int = option(2, "individuals kept unchanged each generation")
    finalists: int = option(8, "after the search, train the K fittest genotypes for --finalist-epochs each and "
                               "keep the one most accurate on the last --val training images (0: keep the fittest)")
    finalist_epochs: int = option(4, "training epochs of each finalist")
    val: int = option(1000, "finalists are scored on the last N training images, which they do not train on")
    train_epochs: int = option(0, "train the winner for N epochs with refsnn train (0: no training)")
    train_timesteps: int | None = option(2, "simulation steps T of the trainings (none: --timesteps)")
    train_channels: int | None = option(None, "stage-0 channels C of the winner's training (none: --channels; "
                                              "the search stays at --channels)")
    train_lr: float = option(1e-2, "peak learning rate of the trainings (higher than refsnn train's 4e-3: deep "
                                   "E/I cells learn slowly at 4e-3)")
    train_batch_size: int = option(64, "training batch size")
    train_subset: int | None = option(None, "train on the first N training images only (quick runs)")
    workers: int = option(2, "worker processes that score the fitness and train the finalists (0: in-process); "
                             "results do not depend on it")
    threads: int | None = option(1, "BLAS/Numba threads per process (none: the libraries' defaults)")
    seed: int = option(0, "seed of the search, the fitness batches and the trainings")
    out: str = option("runs/nas", "output directory")
    resume: bool = option(False, "continue the search (and the trainings) in --out")
    overwrite: bool = option(False, "start again in an --out that holds a search")
    quiet: bool = option(False, "no progress lines")

    def __post_init__(self):
        try:   # the search's own checks (refsnn.nas.search.SearchConfig), named as this command's options
            search_config(self)
        except (TypeError, ValueError) as e:
            name, _, rest = str(e).partition(":")
            raise type(e)(f"{_SEARCH_OPTION.get(name, name)}:{rest}") from None
        check_int("channels", self.channels, lo=1)
        check_choice("fitness", self.fitness, KINDS)
        check_int("timesteps", self.timesteps, lo=1)
        check_int("fitness_batch", self.fitness_batch, lo=2)
        check_int("fitness_batches", self.fitness_batches, lo=1)
        check_int("train_epochs", self.train_epochs, lo=0)
        check_int("finalists", self.finalists, lo=0)
        check_int("finalist_epochs", self.finalist_epochs, lo=1)
        check_int("val", self.val, lo=1)
        check_float("train_lr", self.train_lr, lo=0.0, lo_open=True)
        check_int("train_batch_size", self.train_batch_size, lo=1)
        check_int("workers", self.workers, lo=0)
        if self.max_neurons is not None:
            check_int("max_neurons", self.max_neurons, lo=0)
        for k in ("train_timesteps", "train_subset", "train_channels", "threads"):
            if getattr(self, k) is not None:
                check_int(k, getattr(self, k), lo=1)
        self.out = check_run_dir_options(self.out, self.resume, self.overwrite)
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Refuse before any work a search that cannot fit in memory (:mod:`refsnn.commands.memory`):
        the fitness cache keeps every distinct genotype evaluated (``population + (population -
        elites) x generations`` at most, and no more than there are genotypes), each a tuple of
        ``9 cells + 2`` genes (8 bytes a gene, and about 3 more in the JSON text of
        ``search_state.json``), and each worker decodes one genotype at a time into a graph
        description of about 5 KB per cell. The option named is the one furthest above its default."""
        genes = 9 * self.cells + 2
        entries = self.population + (self.population - self.elites) * self.generations
        space = self.cells * math.log(len(MOTIF_VALUES) * len(OP_VALUES) ** B * len(G1_VALUES) * len(G2_VALUES))
        if space < math.log(entries):   # no more distinct genotypes than the space holds
            entries = int(math.exp(space))
        ratios = {"population": self.population / 20, "cells": self.cells / 3, "generations": self.generations / 80}
        check_fits(max(ratios, key=ratios.get), 11.0 * genes * entries,
                   f"the {entries} genotypes of {genes} genes a search evaluates (--population {self.population}, "
                   f"--cells {self.cells}, --generations {self.generations})")
        check_fits("cells", 5300.0 * self.cells * max(1, self.workers),
                   f"{max(1, self.workers)} graph descriptions of {self.cells} cells")


CONFIG = NASConfig

#: settings that define a run: a resumed run must match them (generations, finalist_* and train_* may change)
RUN_KEYS = ("data", "population", "cells", "channels", "fitness", "max_neurons", "timesteps", "fitness_batch",
            "fitness_batches", "elites", "seed")
COLUMNS = ("generation", "best_fitness", "mean_fitness", "best_so_far_fitness", "n_invalid", "n_unique",
           "n_evaluated", "n_cached", "frac_inhibitory", "best_genotype", "generation_seconds",
           "elapsed_seconds")
FINALIST_COLUMNS = ("rank", "genotype", "fitness", "n_params", "val_accuracy", "train_accuracy", "seconds")
STATE_FILE = "search_state.json"
#: the command's files and directories besides RunDir's own, removed by --overwrite
_OUTPUTS = ("timing.json", "fitness.png", "best_genotype.json", "best_graph.json", "finalists.csv", "finalists",
            "train")


# SearchConfig field -> NASConfig option
_SEARCH_OPTION = {"n_cells": "cells", "population_size": "population", "n_elites": "elites"}


def search_config(cfg: NASConfig) -> SearchConfig:
    """The search's hyperparameters (the others keep :class:`SearchConfig`'s defaults)."""
    return SearchConfig(n_cells=cfg.cells, population_size=cfg.population, generations=cfg.generations,
                        n_elites=cfg.elites, seed=cfg.seed)


def _set_threads(threads: int | None) -> None:
    """Worker initializer (and the parent's setting): BLAS + Numba threads per process."""
    if threads is not None:
        set_threads(threads)


def _fmt_f(f) -> str:
    if f is None:
        return "-"
    return f"{f:.6g}" if math.isfinite(f) else ("-inf" if f < 0 else str(f))


def _quiet(*_a) -> None:
    pass


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------


def run(cfg: NASConfig, *, log=print, executor=None) -> dict:
    """Run (or resume) the search, the finalists and the optional training (module docstring); returns
    the summary (also in ``summary.json``). ``log`` gets the progress lines (none with ``cfg.quiet``);
    ``executor`` (a ``concurrent.futures.Executor``) replaces the ``--workers`` pool."""
    say = _quiet if cfg.quiet else log
    _set_threads(cfg.threads)
    fitness = make_fitness(cfg)
    with RunDir(cfg.out, config=to_dict(cfg), resume_keys=RUN_KEYS, resume=cfg.resume, overwrite=cfg.overwrite,
                checkpoint=STATE_FILE, columns=COLUMNS, outputs=_OUTPUTS) as rd:
        s, timing = _open_search(rd, cfg, say)
        wall_before = max((v["elapsed_seconds"] for v in timing.values()), default=0.0)
        say(f"refsnn nas: {cfg.data}, {cfg.cells} cells x C={cfg.channels}, T={cfg.timesteps}, fitness {cfg.fitness} "
            f"on {cfg.fitness_batches}x{cfg.fitness_batch} images, max {cfg.max_neurons or 'any'} neurons, "
            f"population {cfg.population}, {cfg.generations} generations, workers {cfg.workers}, seed {cfg.seed}")
        pool = executor if executor is not None else make_executor(cfg.workers, initializer=_set_threads,
                                                                   initargs=(cfg.threads,))
        ok = False
        try:
            # -- the search: ask, evaluate, tell; one line per generation ------------------------
            t_start = t_last = time.perf_counter()
            first = s.generation + 1
            while not s.done():
                asked = s.ask()
                rec = s.tell(evaluate(fitness, asked, pool))
                rd.write_json(STATE_FILE, s.state_dict())
                now = time.perf_counter()
                g = rec["generation"]
                timing[str(g)] = {"generation_seconds": now - t_last, "elapsed_seconds": wall_before + now - t_start}
                t_last = now
                rd.write_json("timing.json", timing)
                _write_progress(rd, cfg, s.history, timing)
                eta = (now - t_start) / (g - first + 1) * (cfg.generations - g)
                fi = rec["ei"]["frac_inhibitory"]
                say(f"gen {g:3d}/{cfg.generations}  best {_fmt_f(rec['best_fitness'])}  "
                    f"mean {_fmt_f(rec['mean_fitness'])}  best-so-far {_fmt_f(rec['best_so_far_fitness'])}  "
                    f"unique {rec['n_unique']}  new {rec['n_evaluated']}  invalid {rec['n_invalid']}  "
                    f"I-edge frac {'-' if fi is None else f'{fi:.3f}'}  "
                    f"elapsed {fmt_hms(timing[str(g)]['elapsed_seconds'])}  eta {fmt_hms(eta)}")
            if s.history:
                _write_progress(rd, cfg, s.history, timing)
            search_wall = max((v["elapsed_seconds"] for v in timing.values()), default=0.0)
            result = s.result()
            best, best_fitness = result.best_genotype, result.best_fitness

            # -- the finalists: short trainings decide among the fittest --------------------------
            stage = FinalistStage.from_search(s, cfg.finalists) if cfg.finalists and s.top(1) else None
            finalists = None
            if stage is not None:
                t_fin = time.perf_counter()
                i, finalists = train_finalists(cfg, stage, rd, executor=pool, log=say)
                best, best_fitness = stage.genotypes[i], stage.fitnesses[i]
                finalist_wall = time.perf_counter() - t_fin
                say(f"finalists: kept rank {i + 1}, {best} (val acc {finalists[i]['val_accuracy']:.4f}), "
                    f"{fmt_hms(finalist_wall)}")
            ok = True
        finally:
            if executor is None:
                shutdown(pool, abort=not ok)

        # -- the winner: its files, then its training -------------------------------------------
        prior = _read_json(rd.file("best_genotype.json"))
        selected_by = (f"validation accuracy after {cfg.finalist_epochs} epochs among the {len(stage)} fittest"
                       if stage is not None else "fitness")
        gobj = {**json.loads(to_json(best)), "channels": cfg.channels, "fitness": _fmt_f(best_fitness),
                "fitness_kind": cfg.fitness, "timesteps": cfg.timesteps, "data": cfg.data, "selected_by": selected_by}
        rd.write_json("best_genotype.json", gobj)
        input_shape, n_classes, _, _ = fitness_batches(cfg.data, cfg.timesteps, cfg.fitness_batch,
                                                       cfg.fitness_batches, cfg.seed)
        graph = decode(best, input_shape, cfg.channels, n_classes)
        rd.write_text("best_graph.json", graph_to_json(graph) + "\n")
        st = graph_stats(graph)
        say(f"best genotype {best}  fitness {_fmt_f(best_fitness)}  ({st['n_params']} parameters, "
            f"{st['n_populations']} populations, {result.n_evaluations} architectures scored, "
            f"search {fmt_hms(search_wall)})")
        summary = {
            "best_genotype": list(best.flat),
            "best_genotype_str": str(best),
            "best_fitness": best_fitness if math.isfinite(best_fitness) else None,
            "fitness_kind": cfg.fitness,
            "selected_by": selected_by,
            "fittest_genotype_str": str(result.best_genotype),
            "generations": s.generation,
            "n_evaluations": result.n_evaluations,
            "search_seconds": search_wall,
            "wall_seconds": search_wall,
            "n_params": st["n_params"],
            "n_populations": st["n_populations"],
            "frac_inhibitory": ei_counts(best)["frac_inhibitory"],
            "cells": cfg.cells, "channels": cfg.channels, "timesteps": cfg.timesteps, "population": cfg.population,
            "max_neurons": cfg.max_neurons or 0, "data": cfg.data, "seed": cfg.seed,
        }
        if finalists:
            kept = finalists[i]
            summary.update(n_finalists=len(finalists), finalist_rank=kept["rank"],
                           finalist_val_accuracy=kept["val_accuracy"], finalist_seconds=finalist_wall,
                           finalist_epochs=cfg.finalist_epochs, val=cfg.val)  # every finalist: finalists.csv
            summary["wall_seconds"] = search_wall + finalist_wall
        if cfg.train_epochs > 0:
            tdir = rd.file("train")
            if prior and prior.get("flat") != gobj["flat"] and tdir.exists():
                # the training of an earlier winner of this search (e.g. before --resume with more generations)
                say(f"{tdir} trained another genotype; training the winner afresh")
                shutil.rmtree(tdir)
            width = f"@{cfg.train_channels}" if cfg.train_channels else ""
            say(f"training the winner for {cfg.train_epochs} epochs into {tdir}")
            ts = train(TrainConfig(data=cfg.data, arch=f"genotype:{rd.file('best_genotype.json')}{width}",
                                   timesteps=cfg.train_timesteps or cfg.timesteps, epochs=cfg.train_epochs,
                                   lr=cfg.train_lr, batch_size=cfg.train_batch_size, seed=cfg.seed,
                                   threads=cfg.threads, n_train=cfg.train_subset, out=str(tdir), resume=cfg.resume,
                                   quiet=cfg.quiet))
            summary.update(test_accuracy=ts["test_accuracy"], best_test_accuracy=ts["best_test_accuracy"],
                           train_epochs=ts["epochs"], train_seconds=ts["wall_seconds"],
                           train_channels=cfg.train_channels or cfg.channels, train_n_params=ts["n_params"],
                           spikes_per_sample=ts["spikes_per_sample"])
            summary["wall_seconds"] += ts["wall_seconds"]
        rd.write_summary(summary)
    say(f"wrote {cfg.out}" + (f"; test accuracy {summary['test_accuracy']:.4f}" if "test_accuracy" in summary else ""))
    return summary


def _open_search(rd: RunDir, cfg: NASConfig, say) -> tuple[EvolutionarySearch, dict]:
    """A fresh search, or (``--resume`` of a run with a state) the stored one with ``--generations``,
    and the stored per-generation wall times of the completed generations."""
    config = search_config(cfg)
    if not rd.resuming:
        return EvolutionarySearch(config), {}
    state = _read_json(rd.checkpoint_path)
    if not state:
        raise ValueError(f"resume: {rd.checkpoint_path} is not a search state")
    try:
        s = EvolutionarySearch.from_state(state, generations=cfg.generations)
        _check_search_state(state, s, cfg)
    except ValueError as e:
        raise ValueError(f"{rd.checkpoint_path}: corrupt search state ({e})") from None
    if s.config != config:
        raise ValueError(f"resume: {rd.checkpoint_path} was written with a different search configuration")
    timing = _read_timing(rd.file("timing.json"), s.generation)
    say(f"resumed {rd.checkpoint_path} after generation {s.generation}")
    return s, timing


def _check_search_state(state: dict, s: EvolutionarySearch, cfg: NASConfig) -> None:
    """The values :meth:`EvolutionarySearch.from_state` converts without judging them: ``generation``
    an integer >= 0 with one ``history`` record per generation (``0..generation``, each numbered), a
    population of ``--population`` genotypes, and every fitness (population, cache, history) a real
    number or ``-inf`` (an invalid genotype), never NaN or ``+inf``; ``ValueError`` naming the key."""
    g = state.get("generation")
    if isinstance(g, bool) or not isinstance(g, int) or g < 0:
        raise ValueError(f"generation: expected an integer >= 0, got {g!r}")
    if len(s.population) != cfg.population:
        raise ValueError(f"population: {len(s.population)} genotypes, the search has {cfg.population}")
    if len(s.history) != g + 1 or any(not isinstance(r, dict) or r.get("generation") != i
                                      for i, r in enumerate(s.history)):
        raise ValueError(f"history: expected the records of generations 0..{g}")
    for key, values in (("fitness", s.fitnesses), ("cache", s.cache.values()),
                        ("history best_fitness", [r["best_fitness"] for r in s.history]),
                        ("history best_so_far_fitness", [r["best_so_far_fitness"] for r in s.history])):
        if any(math.isnan(f) or f == math.inf for f in values):
            raise ValueError(f"{key}: NaN or +inf (an invalid genotype's fitness is -inf)")
    for i, r in enumerate(s.history):
        m = r.get("mean_fitness")
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m)):
            raise ValueError(f"history[{i}] mean_fitness: expected a finite number or null, got {m!r}")


def _read_timing(path: Path, generation: int) -> dict:
    """The stored wall times of generations ``0..generation`` (``timing.json``; ``ValueError`` naming
    it for keys that are not generation numbers or times that are not finite numbers >= 0)."""
    timing, stored = {}, _read_json(path)
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: corrupt (expected a JSON object)")
    for k, v in stored.items():
        ok = k.isdigit() and isinstance(v, dict) and all(
            not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x) and x >= 0
            for x in v.values())
        if not ok:
            raise ValueError(f"{path}: corrupt ({k!r}: expected a generation and finite times >= 0)")
        if int(k) <= generation:
            timing[k] = v
    return timing


def _read_json(path: Path) -> dict:
    """The JSON value of ``path`` (:func:`refsnn.io.read_json`), or ``{}`` if there is no such file."""
    return read_json(path) if path.is_file() else {}


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


def _write_progress(rd: RunDir, cfg: NASConfig, history: list[dict], timing: dict) -> None:
    """``metrics.csv`` and ``fitness.png`` of the generations so far."""
    rd.write_metrics(_metrics_rows(history, timing))
    fin = lambda v: v if v is not None and math.isfinite(v) else float("nan")  # noqa: E731
    rd.plot("fitness.png", [r["generation"] for r in history],
            {"best": [fin(r["best_fitness"]) for r in history],
             "mean": [fin(r["mean_fitness"]) for r in history],
             "best so far": [fin(r["best_so_far_fitness"]) for r in history]},
            title=f"refsnn nas {cfg.data} {cfg.fitness} (l={cfg.cells}, C={cfg.channels}, P={cfg.population}, "
                  f"seed {cfg.seed})", xlabel="generation", ylabel="fitness (maximised)")


# ------------------------------------------------------------------------------------------------
# finalists
# ------------------------------------------------------------------------------------------------


def _train_finalist(job: dict) -> dict:
    """One finalist's short training by ``refsnn train`` (in a worker process or in-process; a finished
    training is reused); returns its figures."""
    s = _read_json(Path(job["out"]) / "summary.json")
    if not (s.get("complete") and s.get("epochs") == job["epochs"]):
        s = train(TrainConfig(**job, resume=True, quiet=True))
    return {"val_accuracy": s["test_accuracy"], "train_accuracy": s["train_accuracy"],
            "n_params": s["n_params"], "seconds": s["wall_seconds"]}


def train_finalists(cfg: NASConfig, stage: FinalistStage, rd: RunDir, *, executor, log=print) -> tuple[int, list[dict]]:
    """Train each finalist of ``stage`` for ``--finalist-epochs`` epochs on the training images minus
    the last ``--val`` (in ``OUT/finalists/NN/train``, rank NN, resumable) through ``executor``, tell
    the stage their accuracies on those held-out images and write ``finalists.csv``; returns
    ``(index of the finalist kept, rows)``."""
    jobs = []
    for rank, g in enumerate(stage.ask(), 1):
        gdir = rd.file(f"finalists/{rank:02d}")
        gobj = {**json.loads(to_json(g)), "channels": cfg.channels}
        if _read_json(gdir / "genotype.json") not in ({}, gobj):
            # a finalist of an earlier state of this search (e.g. before --resume with more generations)
            log(f"finalist {rank}: {gdir} held another genotype; training it afresh")
            shutil.rmtree(gdir)
        gdir.mkdir(parents=True, exist_ok=True)
        rd.write_json(f"finalists/{rank:02d}/genotype.json", gobj)
        jobs.append(dict(data=cfg.data, arch=f"genotype:{gdir / 'genotype.json'}",
                         timesteps=cfg.train_timesteps or cfg.timesteps, epochs=cfg.finalist_epochs, lr=cfg.train_lr,
                         batch_size=cfg.train_batch_size, seed=cfg.seed, threads=cfg.threads,
                         n_train=cfg.train_subset, n_val=cfg.val, out=str(gdir / "train")))
    log(f"finalists: training the {len(jobs)} fittest genotypes for {cfg.finalist_epochs} epochs each, "
        f"scored on the last {cfg.val} training images")
    t0 = time.perf_counter()
    results = executor.map(_train_finalist, jobs)  # in-process: lazily, one line as each finalist is trained
    trained = []
    for rank, (g, f, r) in enumerate(zip(stage.genotypes, stage.fitnesses, results), 1):
        trained.append(r)
        el = time.perf_counter() - t0
        log(f"finalist {rank}/{len(jobs)}  {g}  fitness {_fmt_f(f)}  {r['n_params']} parameters  "
            f"val acc {r['val_accuracy']:.4f}  ({r['seconds']:.0f} s)  elapsed {fmt_hms(el)}  "
            f"eta {fmt_hms(el / rank * (len(jobs) - rank))}")
    best, rows = stage.tell([r["val_accuracy"] for r in trained])
    rows = [{**row, **r} for row, r in zip(rows, trained)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(FINALIST_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows({**r, "fitness": _fmt_f(r["fitness"]), "val_accuracy": f"{r['val_accuracy']:.4f}",
                 "train_accuracy": f"{r['train_accuracy']:.4f}", "seconds": f"{r['seconds']:.1f}"} for r in rows)
    rd.write_text("finalists.csv", buf.getvalue())
    return best, rows


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------


def main(cfg: NASConfig) -> int:
    """``refsnn nas``: :func:`run`; SIGINT / SIGTERM stop it with one line and status 130 / 143, the
    search state of the last completed generation kept (:func:`refsnn.runs.stop_on_signals`)."""
    with stop_on_signals("refsnn nas", f"{cfg.out} holds the last completed step: continue with --resume"):
        run(cfg, log=lambda *x: print(*x, flush=True))
    return 0


def demo_nas(out_dir, *, quiet: bool = False, seed: int = 0) -> dict:
    """A 3-generation search for ``refsnn demo`` (population 6, 2 cells of 4 channels, BIE on one
    batch of 16 images, no finalists), started afresh in ``out_dir``. Returns the summary dict."""
    cfg = NASConfig(generations=3, population=6, cells=2, channels=4, fitness_batch=16, fitness_batches=1,
                    finalists=0, workers=0, out=str(out_dir), seed=seed, quiet=quiet, overwrite=True)
    return run(cfg, log=lambda *x: print(*x, flush=True))
