"""Run the Evolving Connectivity authors' own training loop (their ``ec.py``, unmodified) on a CPU.

    REFSNN_EC_REPO=/path/to/EvolvingConnectivity python examples/authors_ec.py --task hopper \
        --population 256 --max-minutes 2 --out runs/authors-hopper

The authors' code (Wang et al. 2023, Apache-2.0; ``ec.py``, ``networks/conn_snn.py``) is imported from
``--repo`` (default ``$REFSNN_EC_REPO``, else ``../shared/third_party/EvolvingConnectivity`` beside
this repository) and only wrapped, never edited or copied: it needs the era packages
(jax/jaxlib 0.4.13, flax 0.7.0, optax 0.1.5, Brax v1 = brax 0.1.2; ``.ci/original.sh`` builds that
environment). ``ec.py`` imports ``wandb``, ``optuna``, ``tqdm`` and ``omegaconf`` for its logging, sweeps
and command line only; where they are not installed, stand-ins that raise when called are put in
``sys.modules`` (nothing used here calls them).

Their ``main`` also starts wandb and pickles checkpoints, so the few lines of ``ec.py`` that build the
objects of a run are re-typed here, with the same values (line numbers of ``ec.py``):

* 311-314, 339-341: ``envs.get_environment(task)``, ``EpisodeWrapper(env, 1000, 1)``, ``VmapWrapper``;
* 333: ``ESConfig(**es_conf)`` with ``pop_size`` = ``--population`` and ``eval_size`` = ``--eval-size``
  (their defaults otherwise: ``lr`` 0.15, ``eps`` 1e-3, no weight decay or warm-up, float32);
* 344-349: ``ConnSNN(out_dims=env.action_size, neuron_dtype=network_dtype)`` (their defaults: 256
  neurons, half excitatory);
* 352-356: ``optax.chain(scale_by_adam(mu_dtype=p_dtype), identity(), scale(-lr))``;
* 360-364: ``es_conf.replace(network_cls=..., optim_cls=..., env_cls=...)``;
* 367-368: ``split(PRNGKey(seed))`` and their ``_runner_init``;
* 381-383: their ``_runnner_run`` once per generation, ``jax.device_get(metrics)``.

Env steps. Their ``_runnner_run`` steps the whole population in lock step (a ``while_loop`` over
``_evaluate_step``) until every member has ended an episode, resetting finished members from the
reset pool; every iteration steps all ``P`` environments. ``conf.env_cls`` (what ``_evaluate_step``
steps) is therefore given as :class:`CountingEnv`, a wrapper around the Brax env that delegates
``reset``/``step`` unchanged and reports each batched ``step`` call to the host
(``jax.debug.callback``); a generation's env steps are ``iterations * P`` (``summary.json`` also lists
the iterations of each generation).

Outputs in ``--out``: ``metrics.csv`` with ``refsnn ec``'s columns (:data:`refsnn.commands.ec_progress.
COLUMNS`) where they have a meaning here: ``generation``; ``mean_return`` = their ``fitness`` (mean of
the sampled members' first-episode returns); ``det_return`` = their ``eval_fitness`` (the ``rho > 0.5``
members); ``env_steps`` cumulative; ``steps_per_s`` of the generation; ``elapsed_s``; the others
(``max_return``, ``rho_entropy``, ``firing_rate_hz``, ``policy_over_env``) NaN. Also ``summary.json``
and ``learning_curve.png``; one progress line per generation with elapsed time and ETA. The run stops
after ``--generations`` or, checked before each generation, once ``--max-minutes`` have passed (the
first generation includes JIT compilation; ``summary.json`` reports the rate without it too).
"""

import csv
import importlib
import importlib.util
import json
import math
import os
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

from refsnn.commands.config import option, parse
from refsnn.commands.ec_progress import COLUMNS, INT_COLUMNS
from refsnn.plot import line_plot_png
from refsnn.runs import fmt_hms

#: Brax v1 task names of ``envs.get_environment``
TASKS = ("hopper", "walker2d", "humanoid")
#: ``ec.py``'s ``episode_conf`` (lines 311-314)
MAX_EPISODE_LENGTH, ACTION_REPEAT = 1000, 1


def default_repo() -> str:
    return os.environ.get("REFSNN_EC_REPO") or str(
        (Path(__file__).resolve().parents[1] / ".." / "shared" / "third_party" / "EvolvingConnectivity").resolve())


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    repo: str = option(default_repo(), "the EC authors' checkout (ec.py, networks/conn_snn.py)")
    task: str = option("hopper", "the Brax v1 task", choices=TASKS)
    population: int = option(1024, "pop_size: members per generation, the eval members included")
    eval_size: int = option(128, "eval_size: deterministic (rho > 0.5) members, < --population")
    seed: int = option(0, "ec.py's seed")
    generations: int = option(1000, "generations at most")
    max_minutes: float | None = option(None, "wall-time budget, checked before each generation")
    out: str = option("authors_ec_run", "output directory (metrics.csv, summary.json, learning_curve.png)")


def check_options(a: Options) -> None:
    if a.population < 3:
        raise ValueError(f"population: must be >= 3, got {a.population}")
    if not 0 <= a.eval_size <= a.population - 2:
        raise ValueError(f"eval_size: must be >= 0 and < population - 1 (two sampled members at least for "
                         f"the centred ranks), got {a.eval_size} with population {a.population}")
    if a.generations < 1:
        raise ValueError(f"generations: must be >= 1, got {a.generations}")
    if a.max_minutes is not None and not (math.isfinite(a.max_minutes) and a.max_minutes > 0):
        raise ValueError(f"max_minutes: must be a finite number > 0, got {a.max_minutes}")


# -- importing the authors' code ----------------------------------------------------------------
def _stand_in(name: str, **attrs) -> types.ModuleType:
    """A module whose every other attribute is a function raising ``RuntimeError``."""
    def unused(attr):
        def fail(*args, **kwargs):
            raise RuntimeError(f"{name}.{attr}: a stand-in of examples/authors_ec.py ({name} is not installed)")
        return fail
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__getattr__ = unused
    return mod


def _install_stand_ins() -> list[str]:
    """Stand-ins for ``wandb``, ``optuna``, ``tqdm``, ``omegaconf`` where they cannot be imported."""
    made = {"wandb": lambda: _stand_in("wandb"),
            "optuna": lambda: _stand_in("optuna", Trial=type("Trial", (), {})),
            "tqdm": lambda: _stand_in("tqdm"),
            "omegaconf": lambda: _stand_in("omegaconf", OmegaConf=type("OmegaConf", (), {}))}
    installed = []
    for name, make in made.items():
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = make()
            installed.append(name)
    return installed


def load_authors(repo: str) -> types.SimpleNamespace:
    """Import ``ec`` and ``networks.conn_snn`` from ``repo`` (``ValueError`` naming what is missing)."""
    path = Path(repo).resolve()
    if not (path / "ec.py").is_file() or not (path / "networks" / "conn_snn.py").is_file():
        raise ValueError(f"repo: {repo}: no ec.py and networks/conn_snn.py there (the EC authors' checkout)")
    for name in ("jax", "flax", "optax", "chex", "brax"):
        if importlib.util.find_spec(name) is None:
            raise ValueError(f"{name} is not installed: the EC authors' code needs jax/flax/optax 0.4.13-era "
                             f"packages and Brax v1 (.ci/original.sh builds that environment)")
    for name in ("networks", "utils", "ec"):
        mod = sys.modules.get(name)
        if mod is not None and not str(getattr(mod, "__file__", "") or "").startswith(str(path)):
            raise ValueError(f"repo: a module {name!r} from {getattr(mod, '__file__', '?')} is already imported "
                             f"and would shadow the authors' {name}")
    sys.path.insert(0, str(path))
    stand_ins = _install_stand_ins()
    try:
        from brax import envs
        envs.wrappers.EpisodeWrapper  # noqa: B018  (Brax v1's wrappers: brax >= 0.9 moved them)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"brax: Brax v1 (e.g. brax 0.1.2) is needed, importing it failed: {e}") from None
    ec = importlib.import_module("ec")                 # sets jax_default_prng_impl = "unsafe_rbg"
    conn_snn = importlib.import_module("networks.conn_snn")
    import jax
    if jax.config.jax_enable_x64:
        raise ValueError("jax_enable_x64 is on (JAX_ENABLE_X64): the authors' runs are float32")
    return types.SimpleNamespace(ec=ec, ConnSNN=conn_snn.ConnSNN, envs=envs, jax=jax, path=path,
                                 stand_ins=stand_ins)


class CountingEnv:
    """The batched Brax env that ``ec.py`` steps, unchanged, plus a host-side count of its ``step`` calls.

    ``reset`` and ``step`` return exactly what the wrapped env returns; ``step`` also runs
    ``jax.debug.callback`` once per call (under ``jit`` and inside ``while_loop``: once per executed
    iteration, for the whole batch). :attr:`calls` is the running count."""

    def __init__(self, env):
        self.env = env
        self.calls = 0

    @property
    def observation_size(self):
        return self.env.observation_size

    @property
    def action_size(self):
        return self.env.action_size

    def reset(self, rng):
        return self.env.reset(rng)

    def _tick(self, done):
        self.calls += 1

    def step(self, state, action):
        new_state = self.env.step(state, action)
        import jax
        jax.debug.callback(self._tick, new_state.done)
        return new_state


def build(A: types.SimpleNamespace, a: Options):
    """``(es_conf, counting env)`` as ``ec.main`` builds them (lines listed in the module docstring)."""
    import optax
    ec = A.ec
    es_conf = ec.ESConfig(pop_size=a.population, eval_size=a.eval_size)                   # l. 333
    env = A.envs.get_environment(a.task)                                                   # l. 339
    env = A.envs.wrappers.EpisodeWrapper(env, MAX_EPISODE_LENGTH, ACTION_REPEAT)          # l. 340
    env = A.envs.wrappers.VmapWrapper(env)                                                 # l. 341
    counting = CountingEnv(env)
    network = A.ConnSNN(out_dims=env.action_size, neuron_dtype=es_conf.network_dtype)      # l. 345-349
    optim = optax.chain(                                                                   # l. 352-356
        optax.scale_by_adam(mu_dtype=es_conf.p_dtype),
        (optax.add_decayed_weights(es_conf.weight_decay) if es_conf.weight_decay > 0 else optax.identity()),
        optax.scale(-es_conf.lr))
    es_conf = es_conf.replace(network_cls=network, optim_cls=optim, env_cls=counting)     # l. 360-364
    return es_conf, counting


# -- the run ------------------------------------------------------------------------------------------
def _fmt(column: str, v: float) -> str:
    return str(int(v)) if column in INT_COLUMNS else f"{v:.6g}"


def _finite_or_none(v: float):
    return float(v) if math.isfinite(v) else None


def write_outputs(out: Path, a: Options, rows: list[dict], summary: dict) -> None:
    with (out / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows({c: _fmt(c, r[c]) for c in COLUMNS} for r in rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    gens = [r["generation"] for r in rows]
    line_plot_png(out / "learning_curve.png", gens,
                  {"mean sampled return (fitness)": [r["mean_return"] for r in rows],
                   "deterministic return (eval_fitness)": [r["det_return"] for r in rows]},
                  title=f"EC authors' ec.py on Brax v1 {a.task} (P={a.population}, seed {a.seed})",
                  xlabel="generation", ylabel="return")


def run(a: Options, log=print) -> dict:
    """Train with the authors' code; returns the summary (also written to ``--out``)."""
    check_options(a)
    A = load_authors(a.repo)
    jax, ec = A.jax, A.ec
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    es_conf, counting = build(A, a)
    t0 = time.perf_counter()
    key_run, key_network_init = jax.random.split(jax.random.PRNGKey(a.seed))               # l. 367
    runner = ec._runner_init(key_run, key_network_init, es_conf)                          # l. 368
    jax.block_until_ready(runner)
    init_s = time.perf_counter() - t0
    if counting.calls:
        raise RuntimeError(f"the step counter saw {counting.calls} steps during _runner_init (expected none)")
    log(f"authors' ec.py from {A.path} on Brax v1 {a.task}: P={a.population} (eval {a.eval_size}), seed {a.seed}; "
        f"init {init_s:.1f} s" + (f"; stand-ins for {', '.join(A.stand_ins)}" if A.stand_ins else ""))

    rows, iterations, gen_times = [], [], []
    env_steps, best = 0, -math.inf
    budget = None if a.max_minutes is None else 60.0 * a.max_minutes
    stop = "generations"
    for gen in range(1, a.generations + 1):
        elapsed = time.perf_counter() - t0
        if gen > 1 and budget is not None and elapsed >= budget:
            stop = "max_minutes"
            break
        before = counting.calls
        tg = time.perf_counter()
        runner, metrics = ec._runnner_run(runner, es_conf)                                 # l. 381
        metrics = jax.device_get(metrics)                                                  # l. 383
        jax.effects_barrier()
        dt = time.perf_counter() - tg
        its = counting.calls - before
        if not 1 <= its <= MAX_EPISODE_LENGTH * ACTION_REPEAT:
            raise RuntimeError(f"generation {gen}: counted {its} lock-step iterations, outside 1.."
                               f"{MAX_EPISODE_LENGTH} (every episode ends within max_episode_length)")
        iterations.append(its)
        gen_times.append(dt)
        env_steps += its * a.population
        fitness, det = float(metrics["fitness"]), float(metrics["eval_fitness"])
        if math.isfinite(det):
            best = max(best, det)
        elapsed = time.perf_counter() - t0
        rows.append({"generation": gen, "mean_return": fitness, "max_return": math.nan, "det_return": det,
                     "rho_entropy": math.nan, "firing_rate_hz": math.nan, "env_steps": env_steps,
                     "steps_per_s": its * a.population / max(dt, 1e-9), "policy_over_env": math.nan,
                     "elapsed_s": elapsed})
        per_gen = sum(gen_times[1:]) / (len(gen_times) - 1) if len(gen_times) > 1 else dt
        eta = (a.generations - gen) * per_gen
        if budget is not None:
            eta = min(eta, max(0.0, budget - elapsed))
        log(f"gen {gen:4d}/{a.generations}  fitness {fitness:8.1f}  eval_fitness {det:8.1f}  iterations {its:4d}  "
            f"env steps {env_steps:,}  {rows[-1]['steps_per_s']:7.0f} steps/s  elapsed {fmt_hms(elapsed)}  "
            f"ETA {fmt_hms(eta)}")
    wall = time.perf_counter() - t0
    later_steps = sum(iterations[1:]) * a.population
    summary = {"method": "ec-authors", "env": f"brax-v1:{a.task}", "code": str(A.path),
               "final_deterministic_return": _finite_or_none(rows[-1]["det_return"]) if rows else None,
               "best_deterministic_return": _finite_or_none(best),
               "final_mean_return": _finite_or_none(rows[-1]["mean_return"]) if rows else None,
               "generations": len(rows), "stopped_by": stop, "env_steps": env_steps, "wall_seconds": wall,
               "init_seconds": init_s, "first_generation_seconds": gen_times[0] if gen_times else None,
               "steps_per_s": env_steps / max(wall, 1e-9),
               "steps_per_s_after_first_generation": (later_steps / sum(gen_times[1:])
                                                      if len(gen_times) > 1 else None),
               "iterations_per_generation": iterations, "population": a.population,
               "eval_members": a.eval_size, "seed": a.seed, "neurons": int(es_conf.network_cls.num_neurons),
               "max_episode_length": MAX_EPISODE_LENGTH,
               "versions": {m: getattr(sys.modules.get(m), "__version__", None)
                            for m in ("jax", "jaxlib", "flax", "optax", "brax")}}
    write_outputs(out, a, rows, summary)
    log(f"{len(rows)} generations, {env_steps:,} env steps in {fmt_hms(wall)} "
        f"({summary['steps_per_s']:.0f} steps/s; after the first generation "
        f"{summary['steps_per_s_after_first_generation'] or float('nan'):.0f}); wrote {out}")
    return summary


def main(argv=None) -> int:
    a = parse(Options, argv, description=__doc__.splitlines()[0])
    try:
        run(a)
    except ValueError as e:
        print(f"authors_ec.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
