"""Cases ``ec.*``: Evolving Connectivity's sampling and natural-evolution-strategy update (SPEC
§5.1-5.2, :mod:`refsnn.ec.nes`): Bernoulli connectivity, counter-seeded member sampling,
centered ranks and one NES + Adam step (checked against the equations written out here)."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from refsnn.ec.nes import (
    Adam,
    bernoulli_from_uniforms,
    centered_ranks,
    member_rng,
    nes_gradient,
    nes_step,
    sample_connectivity,
)
from refsnn.vectors.case import Case

PREFIXES = ("ec.",)


def _bernoulli_compute(params, inp):
    return {"theta": bernoulli_from_uniforms(inp["u"], inp["rho"])}


def _bernoulli_oracle(params, inp):
    return {"theta": inp["u"] < inp["rho"]}


def _member_compute(params, inp):
    rho = {k[len("rho."):]: v for k, v in inp.items() if k.startswith("rho.")}
    rng = member_rng(params["seed"], params["generation"], params["index"], params["stream"])
    theta = sample_connectivity(rho, rng)
    out = {f"theta.{k}": v for k, v in theta.items()}
    rng = member_rng(params["seed"], params["generation"], params["index"], params["stream"])
    for k in sorted(rho):  # the uniforms behind theta, in the same order
        out[f"u.{k}"] = rng.random(rho[k].shape)
    return out


def _ranks_compute(params, inp):
    return {"w": centered_ranks(inp["f"])}


def _nes_opt(params, inp):
    a = params["adam"]
    opt = Adam({"rho": inp["rho"].shape}, lr=a["lr"], beta1=a["beta1"], beta2=a["beta2"], eps=a["eps"])
    opt.load_state_arrays({"opt.m.rho": inp["m"], "opt.v.rho": inp["v"],
                           "opt.t": np.array(params["t"], dtype=np.int64)})
    return opt


def _nes_compute(params, inp):
    opt = _nes_opt(params, inp)
    new = nes_step({"rho": inp["rho"]}, {"rho": inp["thetas"]}, inp["fitness"], opt,
                   eps=params["clip_eps"], natural=params["natural"])
    w = centered_ranks(inp["fitness"])
    g = nes_gradient(w, inp["thetas"], inp["rho"], natural=params["natural"])
    return {"w": w, "g": g, "m": opt.m["rho"], "v": opt.v["rho"], "rho": new["rho"]}


def _nes_oracle(params, inp):
    """The same update written out from the equations (no refsnn.ec.nes code)."""
    f, th, rho = inp["fitness"], inp["thetas"], inp["rho"]
    P = f.shape[0]
    w = (rankdata(f, method="average") - 1.0) / (P - 1) - 0.5
    g = np.zeros_like(rho)
    for i in range(P):
        g += w[i] * (th[i] - rho)
    g /= P
    if not params["natural"]:
        g = g / (rho * (1.0 - rho))
    a = params["adam"]
    t = params["t"] + 1
    m = a["beta1"] * inp["m"] + (1 - a["beta1"]) * g
    v = a["beta2"] * inp["v"] + (1 - a["beta2"]) * g * g
    new = rho + a["lr"] * ((m / (1 - a["beta1"] ** t)) / (np.sqrt(v / (1 - a["beta2"] ** t)) + a["eps"]))
    e = params["clip_eps"]
    return {"w": w, "g": g, "m": m, "v": v, "rho": np.clip(new, e, 1 - e)}


def cases() -> list[Case]:
    """The ``ec.*`` cases, in manifest order."""
    out = []

    def make_bern(rng):
        rho = rng.random((6, 9))
        u = rng.random((6, 9))
        rho[0, :3] = [0.0, 1.0, 0.5]
        u[0, :3] = [0.0, 0.999, 0.5]
        u[1, :4] = rho[1, :4]  # ties: u == rho -> theta = False (strict <)
        return {"rho": rho, "u": u}

    out.append(Case("ec.bernoulli", "5.1", "SPEC §5.1 / seed 001 eq. 9: theta_ij = (u_ij < rho_ij)",
                    "Bernoulli connectivity from given uniforms (float64), ties u == rho give False",
                    {}, make_bern, _bernoulli_compute, oracle=_bernoulli_oracle))

    def make_member(rng):
        return {"rho.C_in": rng.random((4, 6)), "rho.C_h": rng.random((6, 6)), "rho.C_out": rng.random((6, 2))}

    out.append(Case("ec.member_sampling", "5.1",
                    "SPEC §5.1: u from Generator(PCG64(SeedSequence([seed, generation, index, stream]))), "
                    "keys in sorted order, u = rng.random(shape) float64, theta = u < rho",
                    "member connectivity from counter seeds (NumPy PCG64 stream; backends without NumPy's "
                    "generator should check ec.bernoulli instead)",
                    {"seed": 7, "generation": 3, "index": 11, "stream": 0}, make_member, _member_compute))

    def make_f(rng):
        f = np.round(rng.normal(size=12), 1)
        f[3] = f[7] = f[9]  # a three-way tie
        f[0] = f[1] - 0.0  # another tie
        return {"f": f}

    out.append(Case("ec.centered_ranks", "5.2",
                    "SPEC §5.2: w_i = rank_i/(P-1) - 0.5, ranks 0..P-1 ascending, ties get their average rank",
                    "centered ranks of 12 fitness values with ties", {}, make_f, _ranks_compute))

    for natural in (True, False):
        def make_nes(rng):
            shape, P = (6, 5), 8
            rho = rng.uniform(0.05, 0.95, shape)
            rho[0, 0], rho[0, 1] = 0.0015, 0.9985  # near the clip bounds
            thetas = rng.random((P,) + shape) < rho
            thetas[:, 0, 0] = False
            thetas[:, 0, 1] = True
            return {"rho": rho, "thetas": thetas, "fitness": rng.normal(size=P) * 10,
                    "m": rng.normal(size=shape) * 0.05, "v": rng.random(shape) * 0.01}

        tag = "natural" if natural else "plain"
        out.append(Case(
            f"ec.nes_update.{tag}", "5.2",
            "SPEC §5.2 / seed 001 eqs. 10-14: w = centered_ranks(fitness); g = (1/P) sum_i w_i (theta_i - rho)"
            + ("" if natural else " / (rho (1 - rho))")
            + "; Adam ascent (t <- t+1; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; "
              "rho += lr (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)); clip rho to [clip_eps, 1 - clip_eps]",
            f"one NES update ({tag} gradient) of a (6, 5) rho with 8 members and Adam state after t=3 steps; "
            "outputs m, v are the new Adam moments, rho the clipped new parameters",
            {"natural": natural, "t": 3, "clip_eps": 1e-3,
             "adam": {"lr": 0.15, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}},
            make_nes, _nes_compute, oracle=_nes_oracle))
    return out
