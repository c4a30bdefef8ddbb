"""MSE-NAS's other claims, measured: noise robustness and energy of the searched winners against the
fixed network, on the trainings of ``examples/nas_crossval.py``.

The MSE-NAS abstract says the searched SNNs "show robustness against ... noise", and SNNs are argued
for by their energy efficiency. ``examples/nas_crossval.py`` trained, for each of 5 stratified folds
of mnist5k, the winner of ``refsnn nas`` (defaults, run on that fold's 4,000 training images only)
and ``refsnn train``'s fixed network ``csnn`` with the same recipe on the same images, so every one
of the 5,000 images is a test image exactly once. This script re-evaluates those ten final
checkpoints (nothing is trained or selected here) and reports, pooled over the 5,000 images:

1. **Accuracy under additive Gaussian input noise** (:func:`refsnn.snn.energy.noisy_hits`: noise
   ``sigma * N(0, 1)`` per pixel, pixels in ``[0, 1]``, no clipping, drawn once per image and
   direct-encoded; both networks of a fold see the *same* noisy images, noise seed = fold index) for
   every ``sigma`` of ``--sigmas`` (0.1, 0.2, 0.3, 0.5, 0.7, 1.0). Per sigma: both accuracies, the
   paired difference with its standard error over images and the exact McNemar p-value, and the
   **difference of the accuracy drops** ``(w_sigma - w_0) - (f_sigma - f_0)`` with its per-image
   standard error -- robustness proper: a winner that is as accurate on clean images but loses less
   under noise. The figure that decides the claim was fixed before the first run: the drop
   difference at ``sigma = 0.3`` (the README's ``--eval-noise`` example); the others describe the
   trend.
2. **Cost per sample** (:func:`refsnn.snn.energy.energy_report` on the fold's test images, BN in eval
   mode): spikes, synaptic operations (SOPs), multiply-accumulates (MACs) and the 45 nm energy
   estimate (0.9 pJ per SOP, 4.6 pJ per MAC), per fold and as the mean over folds, with the ratio
   winner / fixed.

**Control: is it the search or the search space?** ``--budget-dir DIR`` (the ``--out`` of
``examples/nas_budget_comparison.py`` run on the official split) adds the random genotypes trained
there (same recipe, same space as the search, not searched) to the noise evaluation, on the
official split's 1,000 test images with the noisy images of the last fold (which *is* the official
split; checked by a digest of the test images). Their median per sigma, and the median over those the
search could have picked (finite search fitness), stand beside that fold's winner and fixed network.

Writes ``OUT/noise_energy.json``, ``OUT/noise_energy.md`` (the two tables) and ``OUT/noise_energy.png``
(accuracy against sigma). Each network's evaluation is cached in ``OUT/evals/`` (``fold{K}_{winner|fixed}.npz``
plus ``.json``) and reused when the same checkpoint and sigmas are asked for again.

    python examples/nas_noise_energy.py --cv-dir runs/nas_cv --official-nas runs/nas_def \
        --budget-dir runs/nas_budget --workers 2

``--cv-dir`` is the ``--out`` of ``examples/nas_crossval.py``; ``--official-nas`` is the ``refsnn nas``
run that stood in for the last fold there (``--official-nas`` of that script), if one did.
"""

import hashlib
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn.commands.config import option, parse
from refsnn.stats import paired_mean_se, paired_stats

DEFAULT_SIGMAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
DECIDING_SIGMA = 0.3
COST_KEYS = ("spikes_per_sample", "sops_per_sample", "macs_per_sample", "energy_per_sample_nj")


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    cv_dir: str = option("runs/nas_cv", "the --out of examples/nas_crossval.py")
    official_nas: str | None = option(None, "the refsnn nas run used there for the last fold")
    budget_dir: str | None = option(None, "the --out of examples/nas_budget_comparison.py on the official split: "
                                          "random-genotype control")
    sigmas: str = option(",".join(str(s) for s in DEFAULT_SIGMAS), "comma-separated noise standard deviations, "
                         "increasing")
    workers: int = option(2, "evaluations at a time (0: in this process)")
    out: str | None = option(None, "output directory (none: CV_DIR/noise_energy)")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _evaluate(job: dict) -> dict:
    """One network's evaluation (in a worker process): per-image hits at sigma 0 and at every sigma,
    and its per-sample cost; cached in ``job['cache']`` (``.npz`` hits + ``.json`` the rest)."""
    from refsnn.io import atomic_savez, atomic_write_json, load_npz
    from refsnn.nas.trained import load_run
    from refsnn.snn.energy import energy_report, noisy_hits

    t0 = time.perf_counter()
    run, cache = Path(job["run"]), Path(job["cache"])
    digest = _file_digest(run / "checkpoint.npz")
    meta_path, hits_path = cache.with_suffix(".json"), cache.with_suffix(".npz")
    if meta_path.is_file() and hits_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("checkpoint_sha256") == digest and meta.get("sigmas") == job["sigmas"] \
                and meta.get("noise_seed") == job["seed"] and "test_sha256" in meta:
            h = load_npz(hits_path, required=("clean", "noisy"))
            return {**job, **meta, "clean": h["clean"], "noisy": h["noisy"], "reused": True, "seconds": 0.0}
    net, ds, cfg = load_run(run)
    bs = cfg.eval_batch_size
    clean = noisy_hits(net, ds, 0.0, batch_size=bs)
    want = json.loads((run / "summary.json").read_text())["test_accuracy"]
    if abs(clean.mean() - want) > 1e-9:
        raise RuntimeError(f"{run}: the checkpoint gives {clean.mean():.4f} on test, its summary {want:.4f}")
    noisy = np.stack([noisy_hits(net, ds, s, seed=job["seed"], batch_size=bs) for s in job["sigmas"]])
    test_digest = hashlib.sha256(np.ascontiguousarray(ds.x_test).tobytes()
                                 + np.ascontiguousarray(ds.y_test).tobytes()).hexdigest()
    meta = {"checkpoint_sha256": digest, "sigmas": job["sigmas"], "noise_seed": job["seed"], "test_sha256": test_digest,
            "n_params": int(net.n_params()),
            "cost": energy_report(net, ds, batch_size=bs)}
    atomic_savez(hits_path, {"clean": clean, "noisy": noisy})
    atomic_write_json(meta_path, meta)
    return {**job, **meta, "clean": clean, "noisy": noisy, "reused": False, "seconds": time.perf_counter() - t0}


def _random_runs(budget: Path) -> list[dict]:
    """The random-genotype trainings of an ``examples/nas_budget_comparison.py`` output directory
    (``results.csv`` rows of group ``random``), with their run directories."""
    import csv

    if not (budget / "results.csv").is_file():
        raise SystemExit(f"--budget-dir: no results.csv in {budget} (run examples/nas_budget_comparison.py first)")
    with open(budget / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["group"] == "random"]
    runs = []
    for r in rows:
        key = r["genotype"].replace(" ", "")
        run = budget / "runs" / f"random_{key}_lr{float(r['lr']):g}_s{int(r['seed'])}"
        if not (run / "summary.json").is_file():
            raise SystemExit(f"--budget-dir: no finished training {run} for random genotype {r['genotype_str']}")
        runs.append({"key": key, "run": str(run), "genotype": r["genotype_str"],
                     "search_fitness": float(r["search_fitness"])})
    if not runs:
        raise SystemExit(f"--budget-dir: {budget / 'results.csv'} lists no random genotypes")
    return runs


def _random_control(res: dict, randoms: list[dict], fold: int, sigmas: list[float]) -> dict:
    """Per sigma: the official fold's winner and fixed network against the random genotypes' median."""
    ref = res[fold, "winner"]["test_sha256"]
    for i in range(len(randoms)):
        if res[fold, f"random{i:02d}"]["test_sha256"] != ref:
            raise SystemExit(f"--budget-dir: {randoms[i]['run']} was not tested on fold {fold}'s test images")
    valid = [i for i, r in enumerate(randoms) if math.isfinite(r["search_fitness"])]
    rows = []
    for j, s in enumerate([0.0] + list(sigmas)):
        def acc(kind, j=j):
            r = res[fold, kind]
            return float((r["clean"] if j == 0 else r["noisy"][j - 1]).mean())
        ra = [acc(f"random{i:02d}") for i in range(len(randoms))]
        rows.append({"sigma": s, "winner": acc("winner"), "fixed": acc("fixed"), "random": ra,
                     "random_median": statistics.median(ra),
                     "random_valid_median": statistics.median([ra[i] for i in valid]) if valid else float("nan"),
                     "random_min": min(ra), "random_max": max(ra)})
    return {"fold": fold, "n_test": len(res[fold, "winner"]["clean"]), "n_valid": len(valid),
            "genotypes": [r["genotype"] for r in randoms], "rows": rows}


def _plot(path: Path, sigmas: list[float], rows: list[dict], control: dict | None) -> None:
    from refsnn.plot import line_plot_png

    x = [0.0] + list(sigmas)
    series = {f"searched winners ({rows[0]['n']} images, 5 folds)": [100 * r["winner"] for r in rows],
              f"fixed network csnn ({rows[0]['n']} images)": [100 * r["fixed"] for r in rows]}
    if control is not None:
        series[f"median of {len(control['genotypes'])} random genotypes (official split, "
               f"{control['n_test']} images)"] = [100 * r["random_median"] for r in control["rows"]]
    line_plot_png(path, x, series, title="test accuracy under Gaussian input noise, same training budget",
                  xlabel="noise standard deviation sigma (pixels in [0, 1])", ylabel="accuracy %")


def main(argv=None) -> dict:
    from refsnn.io import atomic_write_json, atomic_write_text
    from refsnn.parallel import map_with_progress

    args = parse(Options, argv, description=__doc__.split("\n\n")[0])
    try:
        sigmas = [float(v) for v in args.sigmas.split(",")]
    except ValueError:
        raise SystemExit(f"--sigmas: comma-separated numbers expected, got {args.sigmas!r}") from None
    if not sigmas or any(not (math.isfinite(s) and s > 0) for s in sigmas) or sorted(set(sigmas)) != sigmas:
        raise SystemExit(f"--sigmas: distinct positive numbers in increasing order expected, got {args.sigmas!r}")
    if args.workers < 0:
        raise SystemExit(f"--workers: must be >= 0, got {args.workers}")
    cv = Path(args.cv_dir)
    if not (cv / "crossval.json").is_file():
        raise SystemExit(f"--cv-dir: no crossval.json in {cv} (run examples/nas_crossval.py first)")
    crossval = json.loads((cv / "crossval.json").read_text())
    n_folds, fixed_arch = crossval["n_folds"], crossval["fixed_arch"]
    out = Path(args.out) if args.out else cv / "noise_energy"
    (out / "evals").mkdir(parents=True, exist_ok=True)

    jobs = []
    for f in crossval["folds"]:
        k = f["fold"]
        nas = Path(args.official_nas) if (args.official_nas and k == n_folds - 1) else cv / f"fold{k}" / "nas"
        for kind, run in (("winner", nas / "train"), ("fixed", cv / f"fold{k}" / f"fixed_{fixed_arch}")):
            if not (run / "summary.json").is_file():
                raise SystemExit(f"fold {k}: no finished {kind} training in {run}"
                                 + (" (pass --official-nas?)" if k == n_folds - 1 and kind == "winner" else ""))
            jobs.append({"fold": k, "kind": kind, "run": str(run), "sigmas": sigmas, "seed": k,
                         "cache": str(out / "evals" / f"fold{k}_{kind}")})
    randoms = _random_runs(Path(args.budget_dir)) if args.budget_dir else []
    for i, rr in enumerate(randoms):
        jobs.append({"fold": n_folds - 1, "kind": f"random{i:02d}", "run": rr["run"], "sigmas": sigmas,
                     "seed": n_folds - 1, "cache": str(out / "evals" / f"random_{rr['key']}"),
                     "genotype": rr["genotype"], "search_fitness": rr["search_fitness"]})
    print(f"{len(jobs)} evaluations on {args.workers} worker(s): folds {[f['fold'] for f in crossval['folds']]}, "
          f"sigmas {sigmas}")
    t0 = time.perf_counter()

    def line(r):
        took = "(reused)" if r["reused"] else f"{r['seconds']:.0f}s"
        accs = " ".join(f"{100 * a:.1f}" for a in r["noisy"].mean(axis=1))
        return (f"fold {r['fold']} {r['kind']:<8} clean {100 * r['clean'].mean():.1f} %  noisy {accs} %  "
                f"{r['cost']['energy_per_sample_nj']:.0f} nJ  {took}")
    res = {(r["fold"], r["kind"]): r for r in map_with_progress(_evaluate, jobs, workers=args.workers, line=line)}
    for f in crossval["folds"]:  # the re-evaluation must be the one nas_crossval.py paired
        k = f["fold"]
        if (abs(res[k, "winner"]["clean"].mean() - f["winner"]) > 1e-9
                or abs(res[k, "fixed"]["clean"].mean() - f["fixed"]) > 1e-9):
            raise SystemExit(f"fold {k}: the checkpoints in {args.cv_dir} are not the ones crossval.json reports")

    folds = [f["fold"] for f in crossval["folds"]]
    cw = np.concatenate([res[k, "winner"]["clean"] for k in folds])
    cf = np.concatenate([res[k, "fixed"]["clean"] for k in folds])
    rows = [{"sigma": 0.0, **paired_stats(cw, cf), "drop_diff": 0.0, "drop_diff_se": 0.0}]
    for j, s in enumerate(sigmas):
        nw = np.concatenate([res[k, "winner"]["noisy"][j] for k in folds])
        nf = np.concatenate([res[k, "fixed"]["noisy"][j] for k in folds])
        # per image: (w_s - w_0) - (f_s - f_0), the winner's accuracy drop minus the fixed network's
        dd, dd_se = paired_mean_se((nw.astype(float) - cw) - (nf.astype(float) - cf))
        rows.append({"sigma": s, **paired_stats(nw, nf), "drop_diff": dd, "drop_diff_se": dd_se})
    cost = []
    for k in folds:
        w, f = res[k, "winner"]["cost"], res[k, "fixed"]["cost"]
        cost.append({"fold": k, "winner": w, "fixed": f,
                     "ratio": {c: w[c] / f[c] if f[c] else float("nan") for c in COST_KEYS}})
    mean_cost = {who: {c: statistics.fmean(r[who][c] for r in cost) for c in COST_KEYS} for who in ("winner", "fixed")}
    mean_cost["ratio"] = {c: mean_cost["winner"][c] / mean_cost["fixed"][c] if mean_cost["fixed"][c] else float("nan")
                          for c in COST_KEYS}
    genotypes = {f["fold"]: f.get("genotype") for f in crossval["folds"]}
    deciding = next((r for r in rows if r["sigma"] == DECIDING_SIGMA), None)
    result = {"cv_dir": str(cv), "fixed_arch": fixed_arch, "sigmas": sigmas, "noise_seed": "fold index",
              "deciding_sigma": DECIDING_SIGMA, "noise": rows, "cost_per_fold": cost, "cost_mean": mean_cost,
              "genotypes": genotypes, "wall_seconds_this_call": time.perf_counter() - t0}
    if deciding is not None:
        z = deciding["drop_diff"] / deciding["drop_diff_se"] if deciding["drop_diff_se"] else float("nan")
        result["deciding"] = {"sigma": DECIDING_SIGMA, "drop_diff": deciding["drop_diff"],
                              "drop_diff_se": deciding["drop_diff_se"], "z": z}
    if randoms:
        result["random_control"] = _random_control(res, randoms, n_folds - 1, sigmas)
    atomic_write_json(out / "noise_energy.json", result)

    n = rows[0]["n"]
    md = [f"Accuracy under Gaussian input noise, {n} test images (each fold's winner and `{fixed_arch}` on that "
          f"fold's test images, same noisy images for both):", "",
          "| sigma | searched winners | fixed network | difference | only winner / only fixed (McNemar p) "
          "| drop difference (winner - fixed) |", "|---|---|---|---|---|---|"]
    for r in rows:
        drop = "" if r["sigma"] == 0 else f"{100 * r['drop_diff']:+.2f} +- {100 * r['drop_diff_se']:.2f}"
        md.append(f"| {r['sigma']:g} | {100 * r['winner']:.2f} % | {100 * r['fixed']:.2f} % | "
                  f"{100 * r['diff']:+.2f} +- {100 * r['se_images']:.2f} | {r['only_winner']} / {r['only_fixed']} "
                  f"({r['mcnemar_p']:.2g}) | {drop} |")
    md += ["", "Cost per sample (fold's test images, BN in eval mode; energy at 45 nm: 0.9 pJ/SOP, 4.6 pJ/MAC):", "",
           "| fold | spikes winner / fixed | SOPs winner / fixed | MACs winner / fixed | energy nJ winner / fixed "
           "| energy ratio |", "|---|---|---|---|---|---|"]
    for r in cost + [{"fold": "mean", **mean_cost}]:
        w, f = r["winner"], r["fixed"]
        md.append(f"| {r['fold']} | {w['spikes_per_sample']:,.0f} / {f['spikes_per_sample']:,.0f} | "
                  f"{w['sops_per_sample']:.3g} / {f['sops_per_sample']:.3g} | "
                  f"{w['macs_per_sample']:.3g} / {f['macs_per_sample']:.3g} | "
                  f"{w['energy_per_sample_nj']:,.0f} / {f['energy_per_sample_nj']:,.0f} | "
                  f"{r['ratio']['energy_per_sample_nj']:.2f} |")
    if randoms:
        rc = result["random_control"]
        md += ["", f"Control on the official split (fold {n_folds - 1}, {rc['n_test']} test images, "
               f"same noisy images): "
               f"{len(randoms)} random genotypes of the search space trained with the same recipe "
               f"({rc['n_valid']} of them with a finite search fitness):", "",
               "| sigma | searched winner | fixed network | random median | random median (could pick) "
               "| random range |",
               "|---|---|---|---|---|---|"]
        for r in rc["rows"]:
            md.append(f"| {r['sigma']:g} | {100 * r['winner']:.1f} % | {100 * r['fixed']:.1f} % | "
                      f"{100 * r['random_median']:.1f} % | {100 * r['random_valid_median']:.1f} % | "
                      f"{100 * r['random_min']:.1f}-{100 * r['random_max']:.1f} % |")
    atomic_write_text(out / "noise_energy.md", "\n".join(md) + "\n")
    _plot(out / "noise_energy.png", sigmas, rows, result.get("random_control"))
    print("\n".join(md))
    if "deciding" in result:
        d = result["deciding"]
        print(f"deciding figure: drop difference at sigma {d['sigma']:g} = {100 * d['drop_diff']:+.2f} "
              f"+- {100 * d['drop_diff_se']:.2f} points (z = {d['z']:.2f})")
    print(f"wrote {out / 'noise_energy.json'}, {out / 'noise_energy.md'}, {out / 'noise_energy.png'}")
    return result


if __name__ == "__main__":
    main()
