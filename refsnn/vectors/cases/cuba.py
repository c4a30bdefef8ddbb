"""Cases ``cuba.*``: the CuBa-LIF recurrent network of Evolving Connectivity (SPEC §2.3,
:mod:`refsnn.kernels.cuba`): one environment step in dense and bit-packed form (§5.3), packing and
unpacking of connectivity and spikes, and the popcount matvec, checked against the NumPy forms."""
from __future__ import annotations

import numpy as np

from refsnn.kernels.cuba import (
    CubaConfig,
    cuba_env_step_packed,
    cuba_env_step_ref,
    initial_state,
    n_words,
    pack_hidden,
    pack_spikes,
    packed_matvec,
    packed_matvec_ref,
    popcount64_ref,
    unpack_hidden,
    unpack_spikes,
)
from refsnn.vectors.case import Case
from refsnn.vectors.tolerances import EXACT

PREFIXES = ("cuba.",)


_CUBA_N, _CUBA_DIN, _CUBA_DOUT, _CUBA_B = 70, 3, 2, 3


def _cuba_cfg(params):
    return CubaConfig(**params["config"])


def _cuba_inputs(dtype):
    def make(rng):
        cfg = CubaConfig(n_neurons=_CUBA_N)
        B, N = _CUBA_B, _CUBA_N
        C_in = rng.random((B, 2 * _CUBA_DIN, N)) < 0.5
        C_h = rng.random((B, N, N)) < 0.5
        C_out = rng.random((B, N, _CUBA_DOUT)) < 0.5
        x0 = 3.0 * rng.standard_normal((B, _CUBA_DIN))
        x = 3.0 * rng.standard_normal((B, _CUBA_DIN))
        state = initial_state(cfg, rng.random((B, N)), dtype)
        # one environment step from the fresh state, so the case starts with spikes in flight
        u0 = np.concatenate([x0, -x0], axis=1).astype(dtype)
        state, _, _ = cuba_env_step_ref(cfg, u0, C_in, C_h, C_out, state)
        v, i_syn, rate, s = state
        return {"u": np.concatenate([x, -x], axis=1).astype(dtype), "C_in": C_in, "C_h": C_h,
                "C_out": C_out, "v": v, "i_syn": i_syn, "rate": rate, "s": s}
    return make


def _cuba_dense(params, inp):
    cfg = _cuba_cfg(params)
    (v, i_syn, rate, s), act, nsp = cuba_env_step_ref(
        cfg, inp["u"], inp["C_in"], inp["C_h"], inp["C_out"],
        (inp["v"], inp["i_syn"], inp["rate"], inp["s"]))
    return {"v": v, "i_syn": i_syn, "rate": rate, "s": s, "action": act, "n_spikes": nsp}


def _cuba_packed_via_dense_inputs(params, inp):
    cfg = _cuba_cfg(params)
    st = (inp["v"].copy(), inp["i_syn"].copy(), inp["rate"].copy(), pack_spikes(inp["s"], cfg.n_exc))
    act, nsp = cuba_env_step_packed(cfg, inp["u"], inp["C_in"], pack_hidden(inp["C_h"], cfg.n_exc),
                                    inp["C_out"], st)
    s = unpack_spikes(st[3], cfg.n_neurons, cfg.n_exc, dtype=inp["v"].dtype)
    return {"v": st[0], "i_syn": st[1], "rate": st[2], "s": s, "action": act, "n_spikes": nsp}


def _cuba_packed(params, inp):
    cfg = _cuba_cfg(params)
    st = (inp["v"].copy(), inp["i_syn"].copy(), inp["rate"].copy(), inp["sbits"].copy())
    act, nsp = cuba_env_step_packed(cfg, inp["u"], inp["C_in"], inp["Chp"], inp["C_out"], st)
    return {"v": st[0], "i_syn": st[1], "rate": st[2], "sbits": st[3], "action": act, "n_spikes": nsp}


def _cuba_packed_oracle(params, inp):
    cfg = _cuba_cfg(params)
    C_h = unpack_hidden(inp["Chp"], cfg.n_neurons, cfg.n_exc)
    s = unpack_spikes(inp["sbits"], cfg.n_neurons, cfg.n_exc, dtype=inp["v"].dtype)
    (v, i_syn, rate, s), act, nsp = cuba_env_step_ref(
        cfg, inp["u"], inp["C_in"], C_h, inp["C_out"], (inp["v"], inp["i_syn"], inp["rate"], s))
    return {"v": v, "i_syn": i_syn, "rate": rate, "sbits": pack_spikes(s, cfg.n_exc), "action": act,
            "n_spikes": nsp}


_CUBA_EQ = ("SPEC §2.3 steps 1-3 (seed 001 eqs. 3-6, EC reference discretisation): i_in = R_in [x,-x] C_in; "
            "K = 33 substeps of i_syn = a_syn i_syn + R s C_h, v = a_m v + (1-a_m)((v_reset + i_syn) + i_in), "
            "spike = v > v_th, v[spike] = v_reset, s = +-spike (Dale), rate = a_out rate + (1-a_out) s/dt; "
            "action = clip(R_out rate C_out, -1, 1)")


def _cases_env_step() -> list[Case]:
    out = []
    cfgd = {"n_neurons": _CUBA_N}
    for dtype in ("float32", "float64"):
        desc = (f"one environment step of {_CUBA_B} members, N={_CUBA_N} (n_exc=35, not a multiple of 64), "
                f"d_in={_CUBA_DIN}, d_out={_CUBA_DOUT}, default constants; state (v, i_syn, rate, s) after one "
                "earlier step")
        params = {"config": cfgd, "d_in": _CUBA_DIN, "dtype": dtype,
                  "layout": "u (B, 2 d_in) = [x, -x]; C_in (B, 2 d_in, N), C_h (B, N, N) [pre, post], "
                            "C_out (B, N, d_out) bool; v, i_syn, rate, s (B, N), s signed spikes (+1 E, -1 I)"}
        out.append(Case(f"cuba.env_step.dense.{dtype}", "2.3", _CUBA_EQ, desc + " (dense form)",
                        params, _cuba_inputs(dtype), _cuba_dense, {"s": EXACT},
                        oracle=_cuba_packed_via_dense_inputs))

        def make_packed(rng, dtype=dtype):
            d = _cuba_inputs(dtype)(rng)
            n_exc = CubaConfig(n_neurons=_CUBA_N).n_exc
            d["Chp"] = pack_hidden(d.pop("C_h"), n_exc)
            d["sbits"] = pack_spikes(d.pop("s"), n_exc)
            return d

        pparams = dict(params, layout="as cuba.env_step.dense, but C_h packed: Chp (B, WE+WI, N) uint64 "
                       "(pack_hidden), spikes sbits (B, WE+WI) uint64 (pack_spikes); WE = ceil(n_exc/64), "
                       "WI = ceil((N-n_exc)/64); bit b of word w of a part = neuron part_start + 64 w + b")
        out.append(Case(f"cuba.env_step.packed.{dtype}", "2.3, 5.3", _CUBA_EQ + "; SPEC §5.3 packed form",
                        desc + " (bit-packed form, same network as the dense case)", pparams, make_packed,
                        _cuba_packed, oracle=_cuba_packed_oracle,
                        seed_name=f"cuba.env_step.dense.{dtype}"))
    return out


def _pack_compute(params, inp):
    return {"Chp": pack_hidden(inp["C_h"], params["n_exc"]), "sbits": pack_spikes(inp["s"], params["n_exc"])}


def _unpack_compute(params, inp):
    return {"C_h": unpack_hidden(inp["Chp"], params["n_neurons"], params["n_exc"]),
            "s": unpack_spikes(inp["sbits"], params["n_neurons"], params["n_exc"], dtype=np.float32)}


def _matvec_compute(params, inp):
    """Packed matvec: ``count[b, j] = sum_{w < WE} popcount(Chp[b, w, j] & sbits[b, w])
    - sum_{w >= WE} popcount(Chp[b, w, j] & sbits[b, w])``."""
    return {"count": packed_matvec(inp["Chp"], inp["sbits"], params["n_exc"])}


def _matvec_oracle(params, inp):
    C_h = unpack_hidden(inp["Chp"], params["n_neurons"], params["n_exc"])
    s = unpack_spikes(inp["sbits"], params["n_neurons"], params["n_exc"], dtype=np.float64)
    dense = packed_matvec_ref(s, C_h)
    we, _ = n_words(params["n_exc"], params["n_neurons"])
    pc = popcount64_ref(inp["Chp"] & inp["sbits"][:, :, None])  # (B, W, N), the formula in NumPy
    if not np.array_equal(dense, pc[:, :we].sum(axis=1) - pc[:, we:].sum(axis=1)):
        raise AssertionError("packed_matvec_ref and the popcount formula disagree")
    return {"count": dense}


def _cases_packing() -> list[Case]:
    out = []
    for N, n_exc in ((70, 35), (130, 100)):
        tag = f"n{N}_e{n_exc}"

        def make_dense(rng, N=N, n_exc=n_exc):
            C_h = rng.random((N, N)) < 0.3
            spk = rng.random((4, N)) < 0.4
            sign = np.where(np.arange(N) < n_exc, 1.0, -1.0)
            return {"C_h": C_h, "s": (spk * sign).astype(np.float32)}

        def make_packed(rng, N=N, n_exc=n_exc, make_dense=make_dense):
            d = make_dense(rng)
            return {"Chp": pack_hidden(d["C_h"], n_exc), "sbits": pack_spikes(d["s"], n_exc)}

        def make_matvec(rng, N=N, n_exc=n_exc):
            B = 3
            C_h = rng.random((B, N, N)) < 0.5
            spk = rng.random((B, N)) < 0.3
            spk[0] = True  # every neuron spiking, incl. the padding-adjacent bits
            sign = np.where(np.arange(N) < n_exc, 1.0, -1.0)
            return {"Chp": pack_hidden(C_h, n_exc), "sbits": pack_spikes((spk * sign).astype(np.float32), n_exc)}

        p = {"n_neurons": N, "n_exc": n_exc}
        out.append(Case(f"cuba.pack.{tag}", "5.3", "SPEC §5.3 packing: C_h column j -> words Chp[:, j], split at n_exc",
                        f"pack_hidden (C_h (N, N) bool -> (WE+WI, N) uint64) and pack_spikes ((B, N) signed "
                        f"float -> (B, WE+WI) uint64), N={N}, n_exc={n_exc}", dict(p), make_dense,
                        _pack_compute))
        out.append(Case(f"cuba.unpack.{tag}", "5.3", "SPEC §5.3 unpacking (inverse of cuba.pack)",
                        f"unpack_hidden and unpack_spikes (float32, +1 E / -1 I), N={N}, n_exc={n_exc}",
                        dict(p), make_packed, _unpack_compute, {"s": EXACT}))
        out.append(Case(f"cuba.packed_matvec.{tag}", "5.3",
                        "SPEC §5.3: (s @ C_h)[j] = sum_{w<WE} popcount(Chp[w,j] & sbits[w]) - "
                        "sum_{w>=WE} popcount(Chp[w,j] & sbits[w])",
                        f"packed recurrent matvec of 3 members as int64 counts, N={N}, n_exc={n_exc}",
                        dict(p), make_matvec, _matvec_compute, oracle=_matvec_oracle))
    return out


def cases() -> list[Case]:
    """The ``cuba.*`` cases, in manifest order: environment steps, then packing."""
    return _cases_env_step() + _cases_packing()
