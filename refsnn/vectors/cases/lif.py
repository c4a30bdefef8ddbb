"""Cases ``lif.*``: the multi-step LIF neuron, forward and BPTT (SPEC §2.1-2.2,
:mod:`refsnn.kernels.lif`), for every preset, surrogate, reset/threshold variant and relaxed mode,
checked against the NumPy oracle too."""
from __future__ import annotations

from refsnn.kernels.lif import (
    PRESETS,
    LIFParams,
    lif_backward,
    lif_backward_ref,
    lif_forward,
    lif_forward_ref,
    lif_preset,
)
from refsnn.kernels.surrogate import NAMES
from refsnn.vectors.case import Case
from refsnn.vectors.tolerances import EXACT, FLOAT_TOL

PREFIXES = ("lif.",)
T_LIF = 8


#: LIFParams fields added after the first manifest, with their defaults: stored only when they
#: differ, so the params of the older cases (and their manifest entries) stay as they were
_LATER_FIELDS = {"subtract_after_decay": False}


def lif_params_json(p) -> dict:
    """A :class:`LIFParams` as stored in a case's params (plus ``alpha_effective``)."""
    d = p.to_dict()
    for k, default in _LATER_FIELDS.items():
        if d[k] == default:
            del d[k]
    d["alpha_effective"] = p.surrogate_alpha
    return d


def _lif_from_json(d: dict):
    keys = ("tau", "v_th", "v_reset", "decay_input", "threshold", "surrogate", "alpha", "detach_reset")
    kw = {k: d["lif"][k] for k in keys}
    kw.update({k: d["lif"].get(k, default) for k, default in _LATER_FIELDS.items()})
    return LIFParams(**kw)


def _lif_inputs(p, dtype, shape=(2, 10), loc=0.6, scale=0.8):
    """x: currents that make roughly a third of the steps spike; column 0 of every sample is a
    constant current that puts H[0] *exactly* on the threshold (dyadic values, exact in float32
    and float64), so ``>`` and ``>=`` give different spike trains; grad_s ~ N(0, 1)."""
    def make(rng):
        vr = 0.0 if p.v_reset is None else p.v_reset
        # drive of the order of the distance to threshold (decay_input scales X by 1/tau, but the
        # membrane then also integrates towards X, so the same scale works for both forms)
        drive = (p.v_th - vr) * (1.0 if p.decay_input else max(1.0 / p.tau, 0.4))
        x = drive * (loc + scale * rng.standard_normal((T_LIF,) + shape)) * 2.0
        # exact-threshold neuron (v_reset = 0 presets): H[0] = v_th exactly for
        # x = tau v_th (decay_input) or x = v_th (not), both exact in binary floating point
        if vr == 0.0:
            x[:, :, 0] = (p.tau * p.v_th) if p.decay_input else p.v_th
        g = rng.standard_normal((T_LIF,) + shape)
        return {"x": x.astype(dtype), "grad_s": g.astype(dtype)}
    return make


def _lif_compute(params, inp, relaxed_key="relaxed"):
    p = _lif_from_json(params)
    relaxed = bool(params.get(relaxed_key, False))
    if "v0" not in inp:
        s, h = lif_forward(inp["x"], p, relaxed=relaxed)
        gx = lif_backward(inp["grad_s"], h, p, relaxed=relaxed)
        return {"s": s, "h": h, "grad_x": gx}
    s, h = lif_forward(inp["x"], p, v0=inp["v0"], relaxed=relaxed)
    gx, gv0 = lif_backward(inp["grad_s"], h, p, v0=inp["v0"], relaxed=relaxed, return_grad_v0=True)
    return {"s": s, "h": h, "grad_x": gx, "grad_v0": gv0}


def _lif_oracle(params, inp):
    p = _lif_from_json(params)
    relaxed = bool(params.get("relaxed", False))
    if "v0" not in inp:
        s, h = lif_forward_ref(inp["x"], p, relaxed=relaxed)
        return {"s": s, "h": h, "grad_x": lif_backward_ref(inp["grad_s"], h, p, relaxed=relaxed)}
    s, h = lif_forward_ref(inp["x"], p, v0=inp["v0"], relaxed=relaxed)
    gx, gv0 = lif_backward_ref(inp["grad_s"], h, p, v0=inp["v0"], relaxed=relaxed, return_grad_v0=True)
    return {"s": s, "h": h, "grad_x": gx, "grad_v0": gv0}


def _with_v0(make, p, dtype):
    """Inputs of ``make`` plus an initial membrane ``v0`` of one time step's shape: uniform in
    ``[v_reset - v_th/2, 1.5 v_th)`` (so some neurons start above threshold), the last column
    exactly ``v_th`` (dyadic: exact in float32 and float64)."""
    def make_v0(rng):
        d = make(rng)
        vr = 0.0 if p.v_reset is None else p.v_reset
        v0 = rng.uniform(vr - 0.5 * p.v_th, 1.5 * p.v_th, size=d["x"].shape[1:])
        v0[..., -1] = p.v_th
        d["v0"] = v0.astype(dtype)
        return d
    return make_v0


_LIF_EQ = ("SPEC §2.1 charge (decay_input True/False), fire (Heaviside with '>' or '>='), reset "
           "(hard/soft), V[-1] = v_reset; backward: BPTT through the membrane with dS/dH = "
           "surrogate'(H - v_th), reset path detached or not (seed 000, Conv-LIF dynamics)")


def _lif_case(name, p, dtype, description, *, preset=None, relaxed=False, extra=None, v0=False, **kw):
    params = {"lif": lif_params_json(p), "dtype": dtype, "relaxed": relaxed, "preset": preset,
              "layout": "time-major [T, B, N]; outputs: s = spikes S[t], h = membrane before reset "
                        "H[t], grad_x = dL/dX for L = sum(grad_s * S)"}
    make = _lif_inputs(p, dtype, **kw)
    if v0:
        params["layout"] += ("; input v0 [B, N] = the initial membrane V[-1] (H[-1] with "
                             "subtract_after_decay); output grad_v0 [B, N] = dL/dv0")
        make = _with_v0(make, p, dtype)
    if extra:
        params.update(extra)
    # spikes are exact; relaxed "spikes" are the surrogate primitive: floats
    tol = {"s": FLOAT_TOL[dtype] if relaxed else EXACT}
    eq = _LIF_EQ + ("; V[-1] = v0 (H[-1] = v0, S[-1] = fire(v0 - v_th) with subtract_after_decay)"
                    if v0 else "")
    return Case(name, "2.1, 2.2", eq, description, params, make, _lif_compute, tol, oracle=_lif_oracle)


def cases() -> list[Case]:
    """The ``lif.*`` cases, in manifest order."""
    out = []
    for dtype in ("float32", "float64"):
        for preset in PRESETS:
            out.append(_lif_case(f"lif.preset.{preset}.{dtype}", PRESETS[preset], dtype,
                                 f"LIF forward + BPTT, preset {preset!r} (refsnn.kernels.lif.PRESETS)",
                                 preset=preset))
        # snnTorch Leaky(beta=0.9): tau = 1/(1 - beta) is not a power of two, so the beta form and
        # V - V/tau round differently (docs/frameworks.md)
        p = lif_preset("snntorch_zero", beta=0.9)
        out.append(_lif_case(f"lif.preset.snntorch_zero_beta0.9.{dtype}", p, dtype,
                             "LIF, snnTorch Leaky(beta=0.9, reset_mechanism='zero') mapping: "
                             "lif_preset('snntorch_zero', beta=0.9)",
                             preset="snntorch_zero", extra={"beta": 0.9}))
        p = lif_preset("snntorch_subtract", beta=0.9)
        out.append(_lif_case(f"lif.preset.snntorch_subtract_beta0.9.{dtype}", p, dtype,
                             "LIF, snnTorch Leaky(beta=0.9, reset_mechanism='subtract') mapping: "
                             "lif_preset('snntorch_subtract', beta=0.9) (threshold subtracted after the decay)",
                             preset="snntorch_subtract", extra={"beta": 0.9}))
        for sname in NAMES:
            p = lif_preset("msenas", surrogate=sname, alpha=None)
            out.append(_lif_case(f"lif.surrogate.{sname}.{dtype}", p, dtype,
                                 f"LIF (msenas neuron) with surrogate {sname!r}, default alpha",
                                 preset="msenas"))
        variants = {
            "soft_reset": dict(v_reset=None),
            "soft_reset_nodetach": dict(v_reset=None, detach_reset=False),
            "hard_nodetach": dict(detach_reset=False),
            "threshold_ge": dict(threshold=">="),
            "threshold_gt_seed": None,  # the seed preset with '>' instead of '>='
            "v_reset_negative": dict(v_reset=-0.25, decay_input=False),
        }
        for vname, ov in variants.items():
            if ov is None:
                p = lif_preset("seed", threshold=">")
                base = "seed"
            else:
                p = lif_preset("msenas", **ov)
                base = "msenas"
            out.append(_lif_case(f"lif.variant.{vname}.{dtype}", p, dtype,
                                 f"LIF variant {vname!r} of preset {base!r}", preset=base))
    for sname in NAMES:
        p = lif_preset("msenas", surrogate=sname, alpha=None, detach_reset=False)
        out.append(_lif_case(f"lif.relaxed.{sname}.float64", p, "float64",
                             f"LIF in relaxed mode (Heaviside replaced by the {sname!r} primitive; the "
                             "backward is the exact gradient), reset not detached", preset="msenas",
                             relaxed=True))
    # initial membrane v0 (a non-zero initial state; some neurons start above threshold)
    for dtype in ("float32", "float64"):
        for preset in ("spikingjelly", "snntorch_subtract"):
            out.append(_lif_case(f"lif.v0.{preset}.{dtype}", PRESETS[preset], dtype,
                                 f"LIF, preset {preset!r}, from a non-zero initial membrane v0 (forward, "
                                 "BPTT and dL/dv0)", preset=preset, v0=True))
        p = lif_preset("snntorch_subtract", detach_reset=False)
        out.append(_lif_case(f"lif.v0.snntorch_subtract_nodetach.{dtype}", p, dtype,
                             "LIF, preset 'snntorch_subtract' with detach_reset=False, from a non-zero v0 "
                             "(dL/dv0 includes the path through S[-1] = fire(v0 - v_th))",
                             preset="snntorch_subtract", v0=True))
    p = lif_preset("snntorch_subtract", surrogate="sigmoid", alpha=None, detach_reset=False)
    out.append(_lif_case("lif.relaxed.subtract_after_decay.float64", p, "float64",
                         "LIF with the threshold subtracted after the decay, relaxed mode, reset not "
                         "detached, from a non-zero v0", preset="snntorch_subtract", relaxed=True, v0=True))
    return out
