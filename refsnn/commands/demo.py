"""``refsnn demo``: a small end-to-end run of everything refsnn implements, on the embedded data.

Part 1 runs every hand-written kernel on real inputs (mnist5k digits, a random EC network) next to
its plain-NumPy oracle and prints what it computed (spike rates, spike mismatches, the largest float
difference). The later parts run each pipeline briefly: STBP training on mnist5k, a few EC
generations on Hopper-v5, and a 3-generation MSE-NAS search. Everything goes into ``--out`` (default
``runs/demo``) and a ``demo.json`` summary; the whole demo takes a few minutes on 2 cores.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn._checks import check_int
from refsnn.commands.config import option
from refsnn.commands.ec import COLUMNS, ECConfig
from refsnn.commands.ec import run as ec_run
from refsnn.commands.nas import demo_nas
from refsnn.commands.play import PlayConfig
from refsnn.commands.play import run as play
from refsnn.commands.train import demo_train
from refsnn.datasets import load
from refsnn.io import atomic_write_json, load_npz
from refsnn.kernels import conv, cuba, lif


def _line(name: str, text: str) -> None:
    print(f"  {name:<34} {text}", flush=True)


def demo_kernels(seed: int = 0) -> dict:
    """Run each kernel beside its oracle on real data; return the figures printed."""
    out: dict = {}
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    ds = load("mnist5k", timesteps=4)
    x = np.ascontiguousarray(ds.x_test[:32])                          # (32, 1, 28, 28) float32
    w = rng.normal(0, np.sqrt(2 / 9), size=(16, 1, 3, 3)).astype(np.float32)

    y, ctx = conv.conv2d_forward(x, w, padding=1)                     # (32, 16, 28, 28)
    y_ref = conv.conv2d_forward_ref(x, w, padding=1)
    d = float(np.abs(y - y_ref).max())
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx, dw, _ = conv.conv2d_backward(dy, ctx)
    dx_ref, dw_ref, _ = conv.conv2d_backward_ref(dy, x, w, padding=1, has_bias=False)
    db = max(float(np.abs(dx - dx_ref).max()), float(np.abs(dw - dw_ref).max() / max(1.0, np.abs(dw_ref).max())))
    _line("conv2d 3x3 on 32 digits", f"out {y.shape}, max |diff| vs oracle fwd {d:.1e}, bwd {db:.1e}")
    out.update(conv_fwd_max_diff=d, conv_bwd_max_diff=db)

    # direct encoding: the same conv output at each of T=4 steps, through each LIF preset
    xt = np.ascontiguousarray(np.broadcast_to(y, (4,) + y.shape))
    g = rng.normal(size=xt.shape).astype(np.float32)
    for name, p in lif.PRESETS.items():
        s, h = lif.lif_forward(xt, p)
        s_ref, h_ref = lif.lif_forward_ref(xt, p)
        gx = lif.lif_backward(g, h, p)
        gx_ref = lif.lif_backward_ref(g, h, p)
        mism = int((s != s_ref).sum())
        gd = float(np.abs(gx - gx_ref).max())
        rates = " ".join(f"{r:.3f}" for r in s.mean(axis=tuple(range(1, s.ndim))))
        _line(f"LIF preset {name}", f"rate per step [{rates}], spike mismatches {mism} of {s.size}, "
                                    f"BPTT max |diff| {gd:.1e}")
        out[f"lif_{name}_rate"] = float(s.mean())
        out[f"lif_{name}_spike_mismatches"] = mism
        out[f"lif_{name}_bptt_max_diff"] = gd

    # EC: one environment step of 8 members with their own Bernoulli(0.5) connectivity, packed vs dense
    cfg = cuba.CubaConfig()
    B, d_obs, d_out = 8, 11, 3                                         # Hopper-v5 sizes
    obs = rng.normal(size=(B, d_obs)).astype(np.float32)
    u = np.concatenate([obs, -obs], axis=1)
    C_in = rng.random((B, 2 * d_obs, cfg.n_neurons)) < 0.5
    C_h = rng.random((B, cfg.n_neurons, cfg.n_neurons)) < 0.5
    C_out = rng.random((B, cfg.n_neurons, d_out)) < 0.5
    v0 = rng.random((B, cfg.n_neurons))
    st_ref = cuba.initial_state(cfg, v0)
    st_pk = cuba.initial_state_packed(cfg, v0)
    Chp = cuba.pack_hidden(C_h, cfg.n_exc)
    mism = 0
    total = 0
    amax = 0.0
    for _ in range(5):
        st_ref, a_ref, n_ref = cuba.cuba_env_step_ref(cfg, u, C_in, C_h, C_out, st_ref)
        a_pk, n_pk = cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, st_pk)
        mism += int(np.abs(n_ref - n_pk).sum())
        total += int(n_ref.sum())
        amax = max(amax, float(np.abs(a_ref - a_pk).max()))
    rate = total / (5 * cfg.n_substeps * B * cfg.n_neurons)
    _line("EC RSNN packed vs dense (5 steps)", f"{total} spikes (rate {rate:.3f}/substep), "
                                               f"count mismatches {mism}, action max |diff| {amax:.1e}")
    out.update(ec_rsnn_spikes=total, ec_rsnn_count_mismatches=mism, ec_rsnn_action_max_diff=amax)
    return out


def _demo_train(out_dir: Path) -> dict:
    res = demo_train(out_dir / "train")
    keep = ("test_accuracy", "epochs", "wall_seconds", "spikes_per_sample")
    return {k: res[k] for k in keep if k in res}


def _demo_ec(out_dir: Path) -> dict:
    return demo_ec(out_dir, log=lambda line: print("  " + line, flush=True))


def _demo_nas(out_dir: Path) -> dict:
    return demo_nas(out_dir / "nas")


DEMO_SETTINGS = dict(env="Hopper-v5", method="ec", generations=20, population=64, eval_members=2,
                     max_steps=400, neurons=256, seed=0)


def demo_ec(out_dir, *, workers: int = 2, log=print, **overrides) -> dict:
    """A short Evolving Connectivity run on Hopper-v5 into ``out_dir/ec`` (about a minute on 2 cores),
    then the deployed 1-bit network played; returns a flat dict of numbers and paths."""
    out = Path(out_dir) / "ec"
    settings = dict(DEMO_SETTINGS)
    settings.update(overrides)
    a = ECConfig(workers=workers, out=str(out), overwrite=True, **settings)
    summary = ec_run(a, log=log)
    hist = load_npz(out / "checkpoint.npz")["history"]
    c = {k: i for i, k in enumerate(COLUMNS)}
    played = play(PlayConfig(str(out), episodes=2, max_steps=a.max_steps))
    return {
        "ec_env": a.env,
        "ec_generations": int(summary["generations"]),
        "ec_population": a.population,
        "ec_first_mean_return": float(hist[0, c["mean_return"]]),
        "ec_last_mean_return": float(hist[-1, c["mean_return"]]),
        "ec_final_deterministic_return": float(summary["final_deterministic_return"]),
        "ec_best_deterministic_return": float(summary["best_deterministic_return"]),
        "ec_played_mean_return": float(played["mean_return"]),
        "ec_env_steps": int(summary["env_steps"]),
        "ec_wall_seconds": float(summary["wall_seconds"]),
        "ec_mean_policy_over_env": float(np.mean(hist[:, c["policy_over_env"]])),
        "ec_out_dir": str(out),
    }


@dataclass
class DemoConfig:
    out: str = option("runs/demo", "output directory")
    seed: int = option(0, "seed of the kernel part's inputs")
    only: list[str] = option([], "run only these parts (repeatable; default: all)",
                             choices=("kernels", "train", "ec", "nas"))

    def __post_init__(self):
        check_int("seed", self.seed, lo=0)


CONFIG = DemoConfig


def main(cfg: DemoConfig) -> int:
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [
        ("kernels", "Kernels beside their NumPy oracles, on mnist5k digits and an EC network",
         lambda: demo_kernels(cfg.seed)),
        ("train", "STBP: a short training run of the default Conv-LIF network on mnist5k",
         lambda: _demo_train(out_dir)),
        ("ec", "Evolving Connectivity: a few generations on Hopper-v5, then the deployed 1-bit network",
         lambda: _demo_ec(out_dir)),
        ("nas", "MSE-NAS: a 3-generation search with the training-free BIE fitness on mnist5k",
         lambda: _demo_nas(out_dir)),
    ]
    summary: dict = {}
    t_all = time.perf_counter()
    for name, title, fn in parts:
        if cfg.only and name not in cfg.only:
            continue
        print(f"[{name}] {title}", flush=True)
        t0 = time.perf_counter()
        res = fn()
        res["seconds"] = time.perf_counter() - t0
        summary[name] = res
        print(f"  ({res['seconds']:.1f} s)", flush=True)
    summary["wall_seconds"] = time.perf_counter() - t_all
    atomic_write_json(out_dir / "demo.json", summary)
    print(f"demo finished in {summary['wall_seconds']:.1f} s; figures in {out_dir / 'demo.json'}")
    return 0
