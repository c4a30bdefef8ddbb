"""The EC paper's comparison on one task: EC-RSNN, ES-RSNN, ES-GRU, ES-LSTM and SG-RSNN (PPO), each
with the same wall-clock budget and the same env-step budget; and SG-RSNN's sensitivity to the
surrogate gradient (the paper's Figure 4).

    python examples/ec_paper_comparison.py --env Hopper-v5 --seeds 0 1 2 --minutes 20 \\
        --env-steps 2000000 --out runs/paper --png docs/img/ec_paper_comparison.png
    python examples/ec_paper_comparison.py --sweep --env Hopper-v5 --seeds 0 --minutes 20 \\
        --out runs/paper-sweep --png docs/img/sg_surrogate_sweep.png

Every run is a `refsnn ec` run directory `OUT/<method>-s<seed>` (SG sweep: `OUT/sg-<surrogate>-a<alpha>-s<seed>`),
run with the command's defaults for its method, until it has used both budgets: first until
`--minutes` of wall time, then (resumed, which is exact) until `--env-steps` env steps if it has not
reached them; an SG run whose BPTT diverges (a non-finite gradient) stops there. Existing run
directories are resumed, and finished ones left alone, so the script can be stopped and started
again; `--report` only reads them (e.g. after running the methods in separate invocations).
It then prints one Markdown table (per method, mean over seeds: the deterministic return at the
wall-clock cut and at the env-step cut, the best, env steps and minutes used) and the wall-time ratio
ES-RSNN / EC-RSNN of the median minutes to first reach a common return (the paper's claim (c)): 90 %
of the lower of the two methods' mean best returns, and 1000, 1500, 2000; a run that never reached
a return counts as slower than every run that did. It writes two PNGs: the mean deterministic return
against minutes and against env steps.
"""

import csv
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn.commands.config import option, parse
from refsnn.commands.ec import ECConfig, run
from refsnn.kernels.surrogate import DEFAULT_ALPHA
from refsnn.plot import line_plot_png

METHODS = ("ec", "es", "es-gru", "es-lstm", "sg-ppo")
SWEEP_SURROGATES = ("atan", "sigmoid", "triangle")
SWEEP_SCALES = (0.5, 2.0)       # times the surrogate's default alpha


def run_to_budgets(name: str, out: Path, minutes: float, env_steps: int, log, report: bool = False, **kw) -> Path:
    """Run (or resume) until both budgets are used; returns the run directory (``report``: only check it
    exists)."""
    d = out / name
    if report:
        if not (d / "metrics.csv").exists() and not (d / "summary.json").exists():
            raise SystemExit(f"--report: {d} has no metrics.csv; run without --report first")
        return d
    base = dict(env=kw.pop("env"), generations=10**6, out=str(d), **kw)
    done = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    if done.get("diverged") or (done.get("wall_seconds", 0) >= 60 * minutes and done.get("env_steps", 0) >= env_steps):
        return d                                     # finished (or diverged: resuming would diverge again)
    resume = (d / "checkpoint.npz").exists()
    s = run(ECConfig(**base, max_minutes=minutes, resume=resume), log=log)
    if s.get("env_steps", 0) < env_steps and not s.get("diverged"):
        run(ECConfig(**base, max_env_steps=env_steps, resume=True), log=log)
    return d


def read_metrics(d: Path) -> dict[str, np.ndarray]:
    """The run's metrics columns (empty for a run that diverged in its first iteration) and, under
    ``"diverged"``, the iteration at which it diverged (0: it did not)."""
    rows = list(csv.DictReader((d / "metrics.csv").open())) if (d / "metrics.csv").exists() else []
    m = {k: np.array([float(r[k]) for r in rows]) for k in ("generation", "det_return", "env_steps", "elapsed_s")}
    done = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    m["diverged"] = int(done.get("diverged_at_iteration", 0)) if done.get("diverged") else 0
    return m


def at_cut(m: dict, key: str, cut: float) -> tuple[float, float]:
    """(last deterministic return, best) among the rows with ``m[key] <= cut``."""
    sel = m[key] <= cut
    if not sel.any():
        return float("nan"), float("nan")
    det = m["det_return"][sel]
    return float(det[-1]), float(np.nanmax(det))


def time_to(m: dict, threshold: float) -> float:
    """Minutes until the deterministic return first reaches ``threshold`` (inf if never: a censored
    time, longer than the run, which the median counts as such instead of dropping)."""
    hit = np.flatnonzero(m["det_return"] >= threshold)
    return float(m["elapsed_s"][hit[0]] / 60.0) if hit.size else math.inf


def mean_curve(runs: list[dict], key: str, grid: np.ndarray, scale: float) -> np.ndarray:
    """Mean over runs of the deterministic return at each grid point (last value at or before it)."""
    ys = []
    for m in (m for m in runs if m["det_return"].size):   # (a run that diverged at once has no rows)
        x = m[key] / scale
        idx = np.searchsorted(x, grid, side="right") - 1
        ys.append(np.where(idx >= 0, m["det_return"][np.maximum(idx, 0)], np.nan))
    return np.nanmean(np.array(ys), axis=0) if ys else np.full(grid.shape, np.nan)


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    env: str = option("Hopper-v5", "Gymnasium environment id")
    seeds: list[int] = option([0, 1, 2], "run seeds", nargs="+")
    minutes: float = option(20.0, "wall-clock budget per run")
    env_steps: int = option(2_000_000, "env-step budget per run")
    methods: list[str] = option(list(METHODS), "methods compared", choices=METHODS, nargs="+")
    sweep: bool = option(False, "SG-RSNN surrogate sweep instead of the comparison")
    surrogates: list[str] = option(list(SWEEP_SURROGATES), "--sweep: only these surrogates (e.g. to split the "
                                   "sweep over processes)", choices=SWEEP_SURROGATES, nargs="+")
    workers: int = option(2, "worker processes of each run")
    out: str = option("runs/paper", "directory of the run directories")
    png: str = option("ec_paper_comparison.png", "stem of the PNGs written (_minutes.png, _env_steps.png)")
    quiet: bool = option(False, "no progress lines")
    report: bool = option(False, "only read the existing run directories and print the table and PNGs (no "
                                 "training)")


def main(argv=None) -> int:
    a = parse(Options, argv, description=__doc__.splitlines()[0])
    out, png = Path(a.out), Path(a.png)
    warnings.filterwarnings("ignore", "Mean of empty slice")   # a cut before a run's first row: NaN
    log = (lambda *x: None) if a.quiet else print
    groups: dict[str, list[Path]] = {}
    if a.sweep:
        for sur in a.surrogates:
            for k in SWEEP_SCALES:
                alpha = DEFAULT_ALPHA[sur] * k
                label = f"sg-ppo {sur}({alpha:g})"
                for seed in a.seeds:
                    groups.setdefault(label, []).append(run_to_budgets(
                        f"sg-{sur}-a{alpha:g}-s{seed}", out, a.minutes, a.env_steps, log, a.report, env=a.env,
                        method="sg-ppo", seed=seed, surrogate=sur, surrogate_alpha=alpha, workers=a.workers))
    else:
        for method in a.methods:
            for seed in a.seeds:
                groups.setdefault(method, []).append(run_to_budgets(
                    f"{method}-s{seed}", out, a.minutes, a.env_steps, log, a.report, env=a.env, method=method,
                    seed=seed, workers=a.workers))
    metrics = {g: [read_metrics(d) for d in ds] for g, ds in groups.items()}

    print(f"\n{a.env}: deterministic return, mean over seeds {a.seeds} (wall budget {a.minutes:g} min, env-step "
          f"budget {a.env_steps:,})\n")
    print("| method | at the wall cut | at the env-step cut | best | env steps used | minutes used |")
    print("|---|---|---|---|---|---|")
    for g, ms in metrics.items():
        div = [m["diverged"] for m in ms if m["diverged"]]
        note = f" (diverged at iteration {', '.join(map(str, div))})" if div else ""
        ms = [m for m in ms if m["det_return"].size]
        if not ms:
            print(f"| {g}{note} | - | - | - | - | - |")
            continue
        wall = [at_cut(m, "elapsed_s", 60 * a.minutes) for m in ms]
        steps = [at_cut(m, "env_steps", a.env_steps) for m in ms]
        best = [float(np.nanmax(m["det_return"])) for m in ms]
        print(f"| {g}{note} | {np.nanmean([w[0] for w in wall]):.0f} | {np.nanmean([s[0] for s in steps]):.0f} | "
              f"{np.mean(best):.0f} | {np.mean([m['env_steps'][-1] for m in ms]):,.0f} | "
              f"{np.mean([m['elapsed_s'][-1] / 60 for m in ms]):.1f} |")
    if not a.sweep and "ec" in metrics and "es" in metrics:
        # claim (c): wall time to a common return, the lower of the two methods' mean best returns x 0.9
        # (and the same at lower returns); a run that never reached a return counts as slower than all
        target = 0.9 * min(np.mean([np.nanmax(m["det_return"]) for m in metrics[g]]) for g in ("ec", "es"))
        print()
        for thr in sorted({1000.0, 1500.0, 2000.0, round(target)} if target > 1000 else {round(target)}):
            t = {g: np.median([time_to(m, thr) for m in metrics[g]]) for g in ("ec", "es")}
            never = {g: sum(time_to(m, thr) == math.inf for m in metrics[g]) for g in ("ec", "es")}
            ratio = t["es"] / t["ec"] if 0 < t["ec"] < math.inf else float("nan")
            note = "".join(f" ({never[g]} {g.upper()} run(s) never reached it)" for g in ("ec", "es") if never[g])
            print(f"claim (c): median minutes to a deterministic return of {thr:.0f}: EC {t['ec']:.1f}, ES-RSNN "
                  f"{t['es']:.1f}; ES-RSNN / EC = {ratio:.2f}{note}")
    gmin = np.linspace(0, a.minutes, 61)
    gsteps = np.linspace(0, a.env_steps / 1e6, 61)
    series = {}
    for g, ms in metrics.items():
        series[f"{g} (min)"] = (gmin, mean_curve(ms, "elapsed_s", gmin, 60.0))
    line_plot_png(png.with_name(png.stem + "_minutes.png"), None, series,
                  title=f"{a.env}: mean deterministic return, same wall-clock budget", xlabel="minutes",
                  ylabel="return")
    series = {f"{g}": (gsteps, mean_curve(ms, "env_steps", gsteps, 1e6)) for g, ms in metrics.items()}
    line_plot_png(png.with_name(png.stem + "_env_steps.png"), None, series,
                  title=f"{a.env}: mean deterministic return, same env-step budget", xlabel="million env steps",
                  ylabel="return")
    print(f"wrote {png.stem}_minutes.png and {png.stem}_env_steps.png in {png.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
