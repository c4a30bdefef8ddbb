"""Compare `refsnn ec` runs (e.g. EC vs ES-RSNN with the same budget): one PNG, one Markdown table.

    python examples/compare_ec_runs.py runs/ec-hopper runs/es-hopper --generations 100 \
        --out docs/img/ec_vs_es_hopper.png

Each RUN_DIR is the `--out` of a `refsnn ec` run (its metrics.csv and summary.json). Curves are the
deterministic (`rho > 0.5` / centre-weight) return against `--x`: the generation (same budget when
the populations are equal), the env steps or the wall-clock minutes (runs with different
populations, e.g. a study of Humanoid-v5 settings). `--generations` / `--minutes` cut every run at
that point. The table reports, per run, the return at the cut, the best return up to it, the first
generation reaching `--threshold`, the env steps and the wall time to the cut.

    python examples/compare_ec_runs.py runs/study/hum-* --x minutes --minutes 30 --threshold 5000 \
        --out docs/img/ec_humanoid_study.png
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from refsnn.commands.config import option, parse
from refsnn.plot import line_plot_png


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    runs: list[str] = option(help="run directories of 'refsnn ec'", positional=True, nargs="+", metavar="RUN_DIR")
    generations: int | None = option(None, "cut every run at this generation")
    minutes: float | None = option(None, "cut every run at this wall-clock time")
    x: str = option("generation", "the curves' x axis", choices=("generation", "env_steps", "minutes"))
    threshold: float = option(2500.0, "the return whose first generation the table reports")
    out: str = option("ec_comparison.png", "the PNG written")


def read_run(run: Path, generations: int | None, minutes: float | None = None) -> dict:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    if generations is not None:
        rows = [r for r in rows if int(r["generation"]) <= generations]
    if minutes is not None:
        rows = [r for r in rows if float(r["elapsed_s"]) <= 60.0 * minutes]
    if not rows:
        raise ValueError(f"{run}: no generations in metrics.csv")
    summary = json.loads((run / "summary.json").read_text())
    return {"name": f"{summary.get('method', '?').upper()} ({run.name})", "summary": summary,
            "gen": [int(r["generation"]) for r in rows], "det": [float(r["det_return"]) for r in rows],
            "env_steps": [int(r["env_steps"]) for r in rows],
            "minutes": [float(r["elapsed_s"]) / 60.0 for r in rows],
            "steps": int(rows[-1]["env_steps"]), "wall": float(rows[-1]["elapsed_s"])}


def main(argv=None) -> int:
    a = parse(Options, argv, description=__doc__.splitlines()[0])
    runs = [read_run(Path(r), a.generations, a.minutes) for r in a.runs]
    key = {"generation": "gen"}.get(a.x, a.x)
    series = {r["name"]: (r[key], r["det"]) for r in runs}
    env = runs[0]["summary"].get("env", "")
    line_plot_png(a.out, None, series, title=f"deterministic return on {env}",
                  xlabel={"env_steps": "env steps"}.get(a.x, a.x), ylabel="return")
    print(f"wrote {a.out}")
    print(f"| run | generations | env steps | wall (min) | final det. return | best det. return | "
          f"first gen >= {a.threshold:g} |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        first = next((g for g, v in zip(r["gen"], r["det"]) if v >= a.threshold), None)
        print(f"| {r['name']} | {r['gen'][-1]} | {r['steps']:,} | {r['wall'] / 60:.1f} | {r['det'][-1]:.0f} | "
              f"{max(r['det']):.0f} | {first if first is not None else 'not reached'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
