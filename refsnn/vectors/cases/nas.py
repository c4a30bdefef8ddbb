"""Cases ``nas.*``: MSE-NAS (SPEC §6): the training-free BIE fitness and the logdet scores
(:mod:`refsnn.nas.bie`) and genotype decoding to a graph description (:mod:`refsnn.nas.graph`)."""
from __future__ import annotations

import numpy as np

from refsnn.nas.bie import (
    bie_score,
    hamming_kernel,
    logdet_score,
    manhattan_matrix,
    manhattan_matrix_ref,
    sparsity_aware_kernel,
    sparsity_aware_kernel_ref,
    spike_counts,
)
from refsnn.nas.graph import decode, to_json
from refsnn.vectors.case import Case
from refsnn.vectors.tolerances import EXACT, FLOAT_TOL, JSON

PREFIXES = ("nas.",)


def _bie_compute(params, inp):
    out = {}
    Ps = []
    for b in range(params["n_batches"]):
        pops = {p: inp[f"spikes.b{b}.{p}"] for p in params["populations"]}
        P = spike_counts(pops)
        out[f"P.b{b}"] = P
        out[f"D.b{b}"] = manhattan_matrix(P)
        Ps.append(P)
    out["score"] = np.array(bie_score(Ps), dtype=np.float64)
    return out


def _bie_oracle(params, inp):
    out = {}
    tot = 0.0
    for b in range(params["n_batches"]):
        cols = [inp[f"spikes.b{b}.{p}"] for p in params["populations"]]
        P = np.concatenate([c.reshape(c.shape[0], c.shape[1], -1).sum(axis=0).astype(np.int64) for c in cols], axis=1)
        D = manhattan_matrix_ref(P)
        out[f"P.b{b}"], out[f"D.b{b}"] = P, D
        tot += D.sum() / D.size
    out["score"] = np.array(tot / params["n_batches"])
    return out


def _logdet_compute(params, inp):
    pops = {p: inp[f"spikes.{p}"] for p in params["populations"]}
    return {"K": hamming_kernel(pops), "logdet": np.array(logdet_score(pops), dtype=np.float64)}


def _logdet_sa_compute(params, inp, kernel=sparsity_aware_kernel):
    pops = {p: inp[f"spikes.{p}"] for p in params["populations"]}
    K, m = kernel(pops, eps=params["eps"])
    sign, logabs = np.linalg.slogdet(K / m)
    return {"K": K, "m": np.array(m, dtype=np.int64),
            "logdet": np.array(logabs if sign != 0 else -np.inf, dtype=np.float64)}


def _logdet_sa_oracle(params, inp):
    return _logdet_sa_compute(params, inp, sparsity_aware_kernel_ref)


def _decode_compute(params, inp):
    g = decode([int(v) for v in inp["genotype"]], tuple(params["input_shape"]), params["channels"],
               params["n_classes"])
    return {"graph_json": np.frombuffer(to_json(g, indent=None).encode("utf-8"), dtype=np.uint8)}


def cases() -> list[Case]:
    """The ``nas.*`` cases, in manifest order."""
    out = []
    pops = {"E1": (3, 2, 2), "I1": (6,), "E2": (2, 3)}

    def make_bie(rng):
        d = {}
        for b in range(2):
            for p, shp in pops.items():
                rate = {"E1": 0.3, "I1": 0.15, "E2": 0.5}[p]
                d[f"spikes.b{b}.{p}"] = (rng.random((4, 5) + shp) < rate).astype(np.float32)
        return d

    out.append(Case("nas.bie", "6.4",
                    "seed 000 eqs. 3-7 / SPEC §6.4: P[a, z] = sum_t S_z[t, a] (populations concatenated in "
                    "order, each flattened in C order); D[a, b] = ||P[a] - P[b]||_1; "
                    "score = (1/s) sum_batches mean(D) (all j*j entries, diagonal included)",
                    "BIE over s=2 batches of j=5 samples, T=4, three populations",
                    {"populations": list(pops), "n_batches": 2,
                     "layout": "spikes.b{batch}.{population} [T, j, ...] float32 0/1"},
                    make_bie, _bie_compute, {"score": FLOAT_TOL["float64"]}, oracle=_bie_oracle))

    def make_logdet(rng):
        return {f"spikes.{p}": (rng.random((4, 6) + shp) < 0.4).astype(np.float32) for p, shp in pops.items()}

    out.append(Case("nas.logdet", "6.4",
                    "NASWOT/SNASNet kernel: code c_a = spikes of every neuron at every step; "
                    "K[a, b] = c_a.c_b + (1-c_a).(1-c_b); score = slogdet(K) (log |det|)",
                    "logdet training-free score of 6 samples, T=4, three populations",
                    {"populations": list(pops), "layout": "spikes.{population} [T, j, ...] float32 0/1"},
                    make_logdet, _logdet_compute, {"K": EXACT, "logdet": FLOAT_TOL["float64"]}))

    out.append(Case("nas.logdet_sa", "6.4",
                    "SNASNet's sparsity-aware kernel (released find_best_neuroncell): for every population p "
                    "and step t, x = S_p[t] as (j, n) 0/1, r_a = mean_i x[a, i], "
                    "norm[a, b] = r_a (1 - r_b) + (1 - r_a) r_b, d = Hamming(x_a, x_b), "
                    "K += n - 0.5 / (norm + 1e-3) * d; m = n_populations * T; score = log|det(K / m)|",
                    "sparsity-aware logdet score (fitness kind logdet-sa) of 6 samples, T=4, three populations",
                    {"populations": list(pops), "eps": 1e-3, "layout": "spikes.{population} [T, j, ...] float32 0/1"},
                    make_logdet, _logdet_sa_compute, {"K": FLOAT_TOL["float64"], "logdet": FLOAT_TOL["float64"]},
                    oracle=_logdet_sa_oracle, seed_name="nas.logdet"))

    genotypes = {
        # FE, FI, FbI; chain wiring, 1x1 cross kernels
        "fe_fi_fbi_g1_1": [1, 1, 2, 0, 0, 0, 0, 0, 0,
                           2, 1, 1, 2, 0, 0, 0, 0, 0,
                           3, 1, 2, 1, 1, 0, 0, 0, 0, 1, 1],
        # LI, MI, empty; all-earlier wiring, 3x3 cross kernels
        "li_mi_empty_g1_3": [4, 1, 1, 2, 1, 1, 2, 1, 1,
                             5, 2, 1, 1, 1, 1, 1, 1, 1,
                             0, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2],
        # two cells, last-two wiring; FI with its inhibitory edge missing, FbI pruned to identity
        "pruned_g1_2": [2, 1, 1, 0, 1, 1, 1, 1, 1,
                        3, 0, 1, 1, 1, 0, 0, 0, 0, 2, 1],
        # one LI cell (non-coding genes set), g1/g2 without effect
        "single_li": [4, 2, 2, 1, 1, 1, 1, 1, 1, 3, 2],
    }
    for gname, flat in genotypes.items():
        out.append(Case(
            f"nas.decode.{gname}", "6.1, 6.2, 6.3",
            "seed 000 eq. 2 genotype [X, M, G] -> graph description (SPEC §6.2 motif table, §6.3 macro "
            "wiring; format in refsnn/nas/graph.py and docs/msenas.md)",
            f"genotype decode {gname!r} for input (1, 8, 8), C = 4, 10 classes; graph_json is UTF-8 JSON "
            "(compared as parsed JSON)",
            {"genotype": flat, "input_shape": [1, 8, 8], "channels": 4, "n_classes": 10},
            (lambda rng, flat=flat: {"genotype": np.array(flat, dtype=np.int64)}),
            _decode_compute, {"graph_json": JSON}))
    return out
