"""``refsnn ec``: Evolving Connectivity (or the ES-RSNN baseline) on a Gymnasium task (SPEC §5, §8).

One generation (seed eqs. 9–14, SPEC §5.2; the reference code's ``ec.py``):

1. freeze the observation normaliser; evaluate ``P`` stochastic members (``theta ~ B(rho)``) and
   ``E`` deterministic members (``theta = rho > 0.5``), one episode each, through the Executor
   (:mod:`refsnn.ec.rollout`);
2. ``w = centered_ranks(f)`` over the P members with ``f_i = return_i - shift * length_i``
   (:func:`refsnn.ec.nes.shifted_fitness`; ``--fitness-shift auto`` = the env's alive bonus per step,
   1 for Hopper-v5; ``0`` = the reference code's plain return); ``g = (1/P) sum_i w_i (theta_i - rho)``
   (natural; ``--gradient plain`` divides by ``rho (1 - rho)``), ``theta_i`` regenerated from seeds;
3. Adam ascent with ``lr`` then ``rho <- clip(rho, eps, 1 - eps)``; merge the generation's
   observation statistics into the normaliser.

``--method es`` runs ES-RSNN instead (SPEC §5.5: antithetic pairs, centered ranks, sigma 0.3,
AdamW lr 0.15 weight decay 0.1, real weights, no Dale's law) with the same rollout code.

The reported *deterministic return* of generation ``g`` is the mean return of the ``E``
deterministic members of the parameters evaluated in ``g`` (before ``g``'s update);
``final_deterministic_return`` is that of the last generation, and ``deployed.npz`` holds exactly
those parameters (``best_deployed.npz`` those of the best generation). Everything depends only on
``(seed, generation, member index)``, the parameters, the optimiser state and the normaliser, all of
which are checkpointed, so ``--resume`` continues to the bit-identical result of an uninterrupted
run (and the number of workers does not change any result).

Output directory ``--out``: ``metrics.csv`` (one row per generation), ``summary.json``,
``learning_curve.png``, ``checkpoint.npz`` (atomic, every generation, no pickle),
``deployed.npz`` / ``best_deployed.npz`` (bit-packed 1-bit connectivity for EC; float32 weights for
ES) for ``refsnn play``.

CPU defaults (the paper: 10,112 + 128 members on one GPU, 1,000 generations): population 128
stochastic + 4 deterministic members, 200 generations, 2 worker processes, episodes capped at 1000
steps, fitness shift "auto" (the only default that departs from the reference code: with 128
members the plain return stalls at Hopper's stand-still optimum; docs/ec.md). With these, Hopper-v5
learns to hop within tens of minutes on 2 cores.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from refsnn._checks import check_choice, check_float, check_int
from refsnn.cliutil import fmt_hms
from refsnn.ec import nes
from refsnn.ec.policy import ECFamily, ESFamily, ec_gradient, es_gradient, make_family
from refsnn.ec.rollout import Evaluator, RunningNorm, check_env
from refsnn.io import atomic_savez, atomic_write_json, atomic_write_text, load_npz


@dataclass
class ECArgs:
    """Hyperparameters (CleanRL style). Defaults are the CPU defaults stated in the module docstring."""
    env: str = "Hopper-v5"          # Gymnasium id (Box observation and action)
    method: str = "ec"              # "ec" (Evolving Connectivity) or "es" (ES-RSNN baseline)
    generations: int = 200
    population: int = 128           # stochastic members P (paper: 10,112)
    eval_members: int = 4           # deterministic members E (paper: 128)
    max_steps: int = 1000           # episode cap
    lr: float = 0.15                # Adam learning rate (EC and ES)
    eps: float = 1e-3               # EC: rho clipped to [eps, 1 - eps]
    gradient: str = "natural"       # EC: "natural" (reference code) or "plain" (seed eq. 13)
    # Ranked fitness = return - fitness_shift * episode length (refsnn.ec.nes.shifted_fitness).
    # None = "auto": the env's per-step alive bonus (Hopper/Walker2d/Ant-v5 1, Humanoid-v5 5; 0 for
    # envs without one). Changed from the reference code's plain return (= 0.0): with P = 128 the
    # plain return stalls at Hopper's "stand still" optimum (~1000); see docs/ec.md.
    fitness_shift: float | None = None
    sigma: float = 0.3              # ES: perturbation scale
    weight_decay: float = 0.1       # ES: AdamW decoupled weight decay
    neurons: int = 256              # RSNN size N (half excitatory)
    seed: int = 0
    workers: int = 2                # local worker processes (0 = in-process)
    out: str = "runs/ec"
    resume: bool = False
    executor: str = "local"         # "local" process pool or "dask" (needs refsnn[distributed])
    scheduler: str = ""             # dask scheduler address for --executor dask

    def validate(self) -> "ECArgs":
        check_choice("method", self.method, ("ec", "es"))
        check_choice("gradient", self.gradient, ("natural", "plain"))
        check_choice("executor", self.executor, ("local", "dask"))
        check_int("generations", self.generations, lo=1)
        check_int("population", self.population, lo=2)
        check_int("eval_members", self.eval_members, lo=0)
        check_int("max_steps", self.max_steps, lo=1)
        check_int("neurons", self.neurons, lo=2)
        check_int("seed", self.seed, lo=0)
        check_int("workers", self.workers, lo=0)
        check_float("lr", self.lr, lo=0.0)
        check_float("eps", self.eps, lo=0.0, hi=0.5)
        check_float("sigma", self.sigma, lo=0.0, lo_open=True)
        check_float("weight_decay", self.weight_decay, lo=0.0)
        if self.fitness_shift is not None:
            check_float("fitness_shift", self.fitness_shift)
        if self.method == "es" and self.population % 2:
            raise ValueError(f"population: ES-RSNN uses antithetic pairs, expected an even number, got "
                             f"{self.population}")
        if self.executor == "dask" and not self.scheduler:
            raise ValueError("scheduler: --executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
        return self


# keys that define a run: a checkpoint is only resumed with the same values
RUN_KEYS = ("env", "method", "population", "eval_members", "max_steps", "lr", "eps", "gradient", "sigma",
            "weight_decay", "neurons", "seed", "fitness_shift")

COLUMNS = ("generation", "mean_return", "max_return", "det_return", "rho_entropy", "firing_rate_hz",
           "env_steps", "steps_per_s", "policy_over_env", "elapsed_s")


def _rms(params) -> float:
    return float(np.sqrt(sum(float(np.sum(v * v)) for v in params.values()) / sum(v.size for v in params.values())))


def resolve_fitness_shift(a: ECArgs, env) -> float:
    """``a.fitness_shift``, or for ``None`` ("auto") the env's alive bonus per step
    (Gymnasium MuJoCo's ``healthy_reward``; 0 when the env has none)."""
    if a.fitness_shift is not None:
        return float(a.fitness_shift)
    return float(getattr(env.unwrapped, "_healthy_reward", 0.0) or 0.0)


def _cfg_kwargs(a: ECArgs) -> dict:
    return {"n_neurons": a.neurons}


def _deployed_arrays(a: ECArgs, params, norm_mean, norm_std, generation, det_return) -> dict:
    d = {"format": np.array("refsnn-ec-deployed-v1"), "method": np.array(a.method), "env": np.array(a.env),
         "config_json": np.array(json.dumps(asdict(a), sort_keys=True)),
         "norm.mean": norm_mean, "norm.std": norm_std, "generation": np.array(generation, np.int64),
         "det_return": np.array(det_return)}
    if a.method == "ec":
        for k, th in nes.deterministic_connectivity(params).items():
            d[f"bits.{k}"] = np.packbits(th.ravel(), bitorder="little")   # 1-bit connectivity
            d[f"shape.{k}"] = np.array(th.shape, np.int64)
    else:
        for k, w in params.items():
            d[f"w.{k}"] = w.astype(np.float32)
    return d


def load_deployed(path) -> tuple[dict, dict]:
    """Read a ``deployed.npz``: returns ``(config dict, params)`` where EC params are the 0/1
    connectivity as float64 (so ``rho > 0.5`` reproduces it) and ES params the float weights."""
    z = load_npz(path, required=("format", "method", "config_json", "norm.mean", "norm.std"))
    if str(z["format"]) != "refsnn-ec-deployed-v1":
        raise ValueError(f"{path}: not a refsnn EC deployed-network file (format {z['format']})")
    conf = json.loads(str(z["config_json"]))
    params = {}
    for key in ("h", "in", "out"):
        if conf["method"] == "ec":
            shape = tuple(int(s) for s in z[f"shape.{key}"])
            bits = np.unpackbits(z[f"bits.{key}"], count=int(np.prod(shape)), bitorder="little")
            params[key] = bits.reshape(shape).astype(np.float64)
        else:
            params[key] = z[f"w.{key}"].astype(np.float64)
    conf["norm_mean"], conf["norm_std"] = z["norm.mean"], z["norm.std"]
    if "generation" in z:
        conf["generation"], conf["det_return"] = int(z["generation"]), float(z["det_return"])
    return conf, params


def _write_metrics(out: Path, hist: np.ndarray) -> None:
    lines = [",".join(COLUMNS)]
    for row in hist:
        vals = []
        for c, v in zip(COLUMNS, row):
            vals.append(str(int(v)) if c in ("generation", "env_steps") else f"{v:.6g}")
        lines.append(",".join(vals))
    atomic_write_text(out / "metrics.csv", "\n".join(lines) + "\n")


def _plot(out: Path, a: ECArgs, hist: np.ndarray) -> None:
    from refsnn.plot import line_plot_png
    c = {k: i for i, k in enumerate(COLUMNS)}
    line_plot_png(out / "learning_curve.png", hist[:, c["generation"]],
                  {"mean sampled return": hist[:, c["mean_return"]], "max sampled return": hist[:, c["max_return"]],
                   "deterministic return": hist[:, c["det_return"]]},
                  title=f"refsnn {a.method.upper()}-RSNN on {a.env} (P={a.population}, seed {a.seed})",
                  xlabel="generation", ylabel="return")


def _make_executor(a: ECArgs):
    if a.executor == "dask":
        try:
            from distributed import Client
        except ImportError:
            raise ValueError("executor: --executor dask needs dask.distributed (pip install refsnn[distributed])") from None
        client = Client(a.scheduler)
        n = max(1, len(client.scheduler_info().get("workers", {})))
        return Evaluator(executor=client.get_executor(), chunks=max(n, a.workers)), client
    return Evaluator(a.workers), None


class _RunLock:
    """``OUT/.lock`` holding the pid, so two runs never write the same directory at once."""

    def __init__(self, out: Path):
        self.path = out / ".lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                alive = pid > 0 and pid != os.getpid()
                if alive:
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        alive = False
                    except PermissionError:
                        pass
                if alive:
                    raise ValueError(f"out: {self.path.parent} is in use by another run (pid {pid}); "
                                     f"wait for it or remove {self.path} if that process is gone") from None
                self.path.unlink(missing_ok=True)  # stale lock of a dead process
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise ValueError(f"out: cannot lock {self.path}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def train(a: ECArgs, *, log=print, executor=None, chunks: int | None = None, overwrite: bool = False) -> dict:
    """Run (or resume) an EC / ES-RSNN run as configured by ``a``; returns the summary dict.

    ``executor``: optional ``concurrent.futures.Executor`` overriding ``a.workers``/``a.executor``.
    An output directory that already holds a checkpoint is an error unless ``a.resume`` (continue)
    or ``overwrite=True`` (start again).
    """
    a.validate()
    out = Path(a.out)
    with _RunLock(out):
        return _train_locked(a, out, log=log, executor=executor, chunks=chunks, overwrite=overwrite)


def _train_locked(a: ECArgs, out: Path, *, log, executor, chunks, overwrite) -> dict:
    env, obs_dim, act_dim = check_env(a.env, a.max_steps)
    shift = resolve_fitness_shift(a, env)
    env.close()
    fam = make_family(a.method, _cfg_kwargs(a), obs_dim, act_dim, a.sigma)
    P, E = a.population, a.eval_members
    ckpt_path = out / "checkpoint.npz"
    params = fam.init_params(a.seed)
    opt = nes.Adam(fam.shapes(), lr=a.lr, weight_decay=(a.weight_decay if a.method == "es" else 0.0))
    norm = RunningNorm(obs_dim)
    hist = np.zeros((0, len(COLUMNS)))
    start_gen, env_steps, wall_prev, best = 0, 0, 0.0, -math.inf
    if a.resume and ckpt_path.exists():
        z = load_npz(ckpt_path, required=("config_json", "generation", "history", "opt.t", "norm.mean"))
        try:
            old = json.loads(str(z["config_json"]))
        except ValueError:
            raise ValueError(f"{ckpt_path}: corrupt checkpoint (config_json unreadable)") from None
        dflt = ECArgs()
        legacy = {"fitness_shift": 0.0}   # checkpoints written before the option existed
        old = {k: old.get(k, legacy.get(k, getattr(dflt, k))) for k in RUN_KEYS}
        diff = [k for k in RUN_KEYS if old[k] != getattr(a, k)]
        if diff:
            raise ValueError(f"resume: {ckpt_path} was written with different settings for {diff}: "
                             + ", ".join(f"{k}={old.get(k)!r} (now {getattr(a, k)!r})" for k in diff))
        for k, s in fam.shapes().items():
            p = z.get(f"param.{k}")
            if p is None or p.shape != s:
                raise ValueError(f"{ckpt_path}: corrupt checkpoint (param.{k} missing or wrong shape)")
            params[k] = p.astype(np.float64)
        opt.load_state_arrays(z)
        norm.load_state_arrays(z)
        start_gen = int(z["generation"])
        hist = z["history"].astype(np.float64).reshape(-1, len(COLUMNS))
        env_steps, wall_prev, best = int(z["env_steps"]), float(z["wall_seconds"]), float(z["best_det"])
        if hist.shape[0] != start_gen:
            raise ValueError(f"{ckpt_path}: corrupt checkpoint (history has {hist.shape[0]} rows, generation {start_gen})")
        log(f"resuming {out} at generation {start_gen}")
    elif a.resume:
        log(f"--resume: no checkpoint in {out}, starting from scratch")
    elif ckpt_path.exists() and not overwrite:
        raise ValueError(f"out: {out} already holds a run (checkpoint.npz); pass --resume to continue it "
                         "or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    from refsnn.provenance import write_environment
    write_environment(out)

    client = None
    if executor is not None:
        evaluator = Evaluator(executor=executor, chunks=chunks or max(1, a.workers))
    else:
        evaluator, client = _make_executor(a)
    t_session = time.perf_counter()
    gen_times = []
    log(f"refsnn ec: {a.method.upper()}-RSNN on {a.env} (obs {obs_dim}, act {act_dim}), N={a.neurons}, "
        f"P={P}+{E} deterministic, {a.generations} generations, fitness = return - {shift:g} x length, "
        f"workers={a.workers}, seed={a.seed} -> {out}")
    summary = {}
    ok = False
    try:
        for g in range(start_gen, a.generations):
            t0 = time.perf_counter()
            res = evaluator.evaluate(method=a.method, cfg_kwargs=_cfg_kwargs(a), sigma=a.sigma, env_id=a.env,
                                     max_steps=a.max_steps, params=params, norm=norm, seed=a.seed,
                                     generation=g, n_stochastic=P, n_eval=E)
            fit, det = res["returns"][:P], res["returns"][P:]
            # ranks use the (optionally shifted) fitness; reported returns are the plain returns
            shaped = nes.shifted_fitness(fit, res["lengths"][:P], shift)
            params_eval = params
            norm_mean, norm_std = norm.frozen()
            if a.method == "ec":
                grads = ec_gradient(fam, params, shaped, a.seed, g, natural=(a.gradient == "natural"))
                params = nes.clip_rho(opt.step(params, grads), a.eps)
                entropy = nes.bernoulli_entropy(params)
            else:
                grads = es_gradient(fam, params, shaped, a.seed, g)
                params = opt.step(params, grads)
                entropy = float("nan")
            for st in res["obs_stats"]:
                norm.merge(*st)
            steps = int(res["lengths"].sum())
            env_steps += steps
            dt_gen = time.perf_counter() - t0
            gen_times.append(dt_gen)
            elapsed = wall_prev + (time.perf_counter() - t_session)
            det_ret = float(det.mean()) if E else float("nan")
            rate_hz = float(res["spikes"].sum()) / max(1, steps * res["n_neurons"] * res["n_substeps"]) / (res["dt"] * 1e-3)
            pol = res["policy_s"] / max(res["env_s"], 1e-12)
            row = [g + 1, float(fit.mean()), float(fit.max()), det_ret, entropy, rate_hz, env_steps,
                   steps / max(dt_gen, 1e-9), pol, elapsed]
            hist = np.vstack([hist, np.array(row, dtype=np.float64)[None]])
            improved = E and det_ret > best
            if improved:
                best = det_ret
            eta = float(np.mean(gen_times[-10:])) * (a.generations - g - 1)
            ent = f"H(rho) {entropy:.3f}" if math.isfinite(entropy) else f"|w|rms {_rms(params):.3f}"
            log(f"gen {g + 1:4d}/{a.generations}  return mean {row[1]:8.1f} max {row[2]:8.1f}  det {det_ret:8.1f}  "
                f"{ent}  rate {rate_hz:5.1f} Hz  {row[7]:6.0f} steps/s  policy/env {pol:.2f}  "
                f"elapsed {fmt_hms(elapsed)}  ETA {fmt_hms(eta)}")
            # outputs (every generation, atomically)
            dep = _deployed_arrays(a, params_eval, norm_mean, norm_std, g + 1, det_ret)
            atomic_savez(out / "deployed.npz", dep)
            if improved:
                atomic_savez(out / "best_deployed.npz", dep)
            ck = {f"param.{k}": v for k, v in params.items()}
            ck.update(opt.state_arrays())
            ck.update(norm.state_arrays())
            ck.update({"generation": np.array(g + 1, np.int64), "history": hist,
                       "env_steps": np.array(env_steps, np.int64), "wall_seconds": np.array(elapsed),
                       "best_det": np.array(best), "config_json": np.array(json.dumps(asdict(a), sort_keys=True))})
            atomic_savez(ckpt_path, ck)
            _write_metrics(out, hist)
            _plot(out, a, hist)
            summary = {"method": a.method, "env": a.env, "final_deterministic_return": det_ret,
                       "best_deterministic_return": best if math.isfinite(best) else float("nan"),
                       "final_mean_return": row[1], "generations": g + 1, "env_steps": env_steps,
                       "wall_seconds": elapsed, "population": P, "eval_members": E, "seed": a.seed,
                       "neurons": a.neurons, "fitness_shift": shift}
            atomic_write_json(out / "summary.json", summary)
        ok = True
    finally:
        evaluator.close(abort=not ok)
        if client is not None:
            client.close()
    if not summary and (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
    return summary


def add_arguments(p) -> None:
    d = ECArgs()
    p.add_argument("--env", default=d.env, help=f"Gymnasium environment id (default {d.env})")
    p.add_argument("--method", choices=("ec", "es"), default=d.method,
                   help="ec: Evolving Connectivity; es: ES-RSNN baseline (default ec)")
    p.add_argument("--generations", type=int, default=d.generations, help=f"(default {d.generations})")
    p.add_argument("--population", type=int, default=d.population,
                   help=f"stochastic members per generation (default {d.population}; paper 10,112 on a GPU)")
    p.add_argument("--eval-members", type=int, default=d.eval_members,
                   help=f"deterministic evaluation members (default {d.eval_members})")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help=f"episode cap (default {d.max_steps})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--eps", type=float, default=d.eps, help=f"EC: clip rho to [eps, 1-eps] (default {d.eps})")
    p.add_argument("--gradient", choices=("natural", "plain"), default=d.gradient,
                   help="EC: natural (reference code) or plain (/rho(1-rho), seed eq. 13) gradient")
    p.add_argument("--fitness-shift", type=_shift_arg, default=d.fitness_shift, metavar="auto|SHIFT",
                   help="rank return - SHIFT x episode length; auto (default) = the env's alive bonus "
                        "per step (Hopper 1, Humanoid 5, else 0); 0 = the reference code's plain return")
    p.add_argument("--sigma", type=float, default=d.sigma, help=f"ES: noise scale (default {d.sigma})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help=f"ES: AdamW weight decay (default {d.weight_decay})")
    p.add_argument("--neurons", type=int, default=d.neurons, help=f"RSNN neurons N (default {d.neurons})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"run seed (default {d.seed})")
    p.add_argument("--workers", type=int, default=d.workers,
                   help=f"worker processes, 0 = in-process (default {d.workers}); results do not depend on it")
    p.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--executor", choices=("local", "dask"), default=d.executor,
                   help="local process pool (default) or a dask.distributed cluster")
    p.add_argument("--scheduler", default=d.scheduler, help="dask scheduler address for --executor dask")


def _shift_arg(v: str):
    if v == "auto":
        return None
    try:
        return float(v)
    except ValueError:
        import argparse
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {v!r}") from None


def args_from_namespace(ns) -> ECArgs:
    return ECArgs(**{f.name: getattr(ns, f.name) for f in fields(ECArgs) if hasattr(ns, f.name)})


def _sigterm_to_exit(signum, frame):
    raise SystemExit(128 + signum)


def run(ns) -> int:
    # SIGTERM (e.g. from a scheduler or `timeout`) unwinds like Ctrl-C: the worker processes are
    # stopped and the run lock released; the last completed generation's checkpoint stays valid.
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_to_exit)
    summary = train(args_from_namespace(ns))
    print(f"final deterministic return {summary.get('final_deterministic_return', float('nan')):.1f}, "
          f"best {summary.get('best_deterministic_return', float('nan')):.1f}, "
          f"{summary.get('env_steps', 0)} env steps, {summary.get('wall_seconds', 0):.0f} s -> {ns.out}")
    return 0
