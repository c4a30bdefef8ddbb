"""Cases ``norse.*``: Norse's forward-Euler neurons, current-based ``LIF`` and ``LIFBox``, forward and
BPTT (SPEC §2.1 presets, :mod:`refsnn.kernels.norse_lif`), from the default rest state and from a
given initial state, checked against the NumPy oracle too."""
from __future__ import annotations

from refsnn.kernels.norse_lif import (
    PRESETS,
    NorseLIFBoxParams,
    NorseLIFParams,
    norse_lif_backward,
    norse_lif_backward_ref,
    norse_lif_box_backward,
    norse_lif_box_backward_ref,
    norse_lif_box_forward,
    norse_lif_box_forward_ref,
    norse_lif_forward,
    norse_lif_forward_ref,
    norse_preset,
)
from refsnn.vectors.case import Case
from refsnn.vectors.tolerances import EXACT, FLOAT_TOL

PREFIXES = ("norse.",)
T_NORSE = 12
_CLS = {"norse_lif": NorseLIFParams, "norse_lif_box": NorseLIFBoxParams}


def _params_json(p) -> dict:
    d = p.to_dict()
    d["alpha_effective"] = p.surrogate_alpha
    return d


def _from_json(params):
    d = dict(params["neuron"])
    d.pop("alpha_effective")
    return _CLS[params["model"]](**d)


def _inputs(model, p, dtype, state):
    """x scaled so that about a quarter of the steps spike (the LIF input jumps the current, which
    then drives the membrane; the LIFBox input drives the membrane directly); grad_s ~ N(0, 1);
    with ``state``, an initial membrane v0 ~ U[v_reset - v_th/2, 1.2 v_th) (some neurons start
    above threshold) and, for LIF, a current i0 of the input's scale."""
    km = p.dt * p.tau_mem_inv
    scale = (p.v_th - p.v_leak) / km
    if model == "norse_lif":
        scale *= p.dt * p.tau_syn_inv

    def make(rng):
        shape = (T_NORSE, 2, 10)
        x = scale * (0.6 + 0.8 * rng.standard_normal(shape))
        g = rng.standard_normal(shape)
        d = {"x": x.astype(dtype), "grad_s": g.astype(dtype)}
        if state:
            v0 = rng.uniform(p.v_reset - 0.5 * p.v_th, 1.2 * p.v_th, size=shape[1:])
            d["v0"] = v0.astype(dtype)
            if model == "norse_lif":
                d["i0"] = (scale * (0.6 + 0.8 * rng.standard_normal(shape[1:]))).astype(dtype)
        return d
    return make


def _run(params, inp, fwd, bwd):
    p = _from_json(params)
    relaxed = bool(params["relaxed"])
    kw = {k: inp[k] for k in ("v0", "i0") if k in inp}
    dt = inp["x"].dtype.type
    if params["model"] == "norse_lif":
        s, h, i = fwd[0](inp["x"], p, relaxed=relaxed, **kw)
        gx, gv0, gi0 = bwd[0](inp["grad_s"], h, p, relaxed=relaxed)
        out = {"i": i, "grad_i0": gi0}
    else:
        s, h = fwd[1](inp["x"], p, relaxed=relaxed, **kw)
        gx, gv0 = bwd[1](inp["grad_s"], h, p, relaxed=relaxed)
        out = {}
    v = (dt(1) - s) * h + s * dt(p.v_reset)
    out.update({"s": s, "h": h, "v": v, "grad_x": gx, "grad_v0": gv0})
    return out


def _compute(params, inp):
    return _run(params, inp, (norse_lif_forward, norse_lif_box_forward),
                (norse_lif_backward, norse_lif_box_backward))


def _oracle(params, inp):
    return _run(params, inp, (norse_lif_forward_ref, norse_lif_box_forward_ref),
                (norse_lif_backward_ref, norse_lif_box_backward_ref))


_EQ = {
    "norse_lif": ("Norse 1.1 lif_feed_forward_step (forward Euler, k_m = dt tau_mem_inv, k_s = dt tau_syn_inv): "
                  "J = I[t-1] + X[t]; H = V[t-1] + k_m ((v_leak - V[t-1]) + J); I[t] = J + (-k_s) J; "
                  "S = [H - v_th > 0]; V[t] = (1 - S) H + S v_reset; BPTT with dS/dH = surrogate'(H - v_th)"),
    "norse_lif_box": ("Norse 1.1 lif_box_feed_forward_step (forward Euler, k_m = dt tau_mem_inv): "
                      "H = V[t-1] + k_m ((X[t] + v_leak) - V[t-1]); S = [H - v_th > 0]; "
                      "V[t] = (1 - S) H + S v_reset; BPTT with dS/dH = surrogate'(H - v_th)"),
}
_LAYOUT = {
    "norse_lif": "time-major [T, B, N]; outputs: s = spikes S[t], h = membrane before reset H[t] (Norse's "
                 "v_decayed), v = membrane after reset V[t] (Norse's state.v), i = synaptic current I[t] "
                 "(Norse's state.i), grad_x = dL/dX, grad_v0 = dL/dv0, grad_i0 = dL/di0 for L = "
                 "sum(grad_s * S)",
    "norse_lif_box": "time-major [T, B, N]; outputs: s = spikes S[t], h = membrane before reset H[t] (Norse's "
                     "v_decayed), v = membrane after reset V[t] (Norse's state.v), grad_x = dL/dX, grad_v0 = "
                     "dL/dv0 for L = sum(grad_s * S)",
}


def _case(model, tag, p, dtype, description, *, state, relaxed=False):
    params = {"model": model, "neuron": _params_json(p), "dtype": dtype, "relaxed": relaxed,
              "preset": model, "layout": _LAYOUT[model]}
    if state:
        params["initial_state"] = "inputs v0 [B, N]" + (" and i0 [B, N]" if model == "norse_lif" else "")
    else:
        params["initial_state"] = "v0 = v_leak" + (", i0 = 0" if model == "norse_lif" else "") + " (the defaults)"
    tol = {"s": FLOAT_TOL[dtype] if relaxed else EXACT}
    return Case(f"norse.{model}.{tag}.{dtype}", "2.1, 2.2", _EQ[model], description, params,
                _inputs(model, p, dtype, state), _compute, tol, oracle=_oracle)


def _variant(model):
    extra = {"tau_syn_inv": 300.0} if model == "norse_lif" else {}
    return norse_preset(model, dt=5e-4, tau_mem_inv=150.0, v_leak=-0.2, v_th=0.8, v_reset=-0.1, **extra)


def cases() -> list[Case]:
    """The ``norse.*`` cases, in manifest order."""
    out = []
    for model in PRESETS:
        for dtype in ("float32", "float64"):
            p = PRESETS[model]
            out.append(_case(model, "rest", p, dtype, f"Norse {model} preset from the default state", state=False))
            out.append(_case(model, "state", p, dtype, f"Norse {model} preset from a given initial state",
                             state=True))
            out.append(_case(model, "variant", _variant(model), dtype,
                             f"Norse {model} with dt, tau_*_inv, v_leak, v_th, v_reset changed, from a given "
                             "initial state", state=True))
        p = norse_preset(model, surrogate="sigmoid", alpha=None)
        out.append(_case(model, "relaxed", p, "float64",
                         f"Norse {model} in relaxed mode (Heaviside replaced by the sigmoid primitive; the "
                         "backward is the exact gradient), from a given initial state", state=True, relaxed=True))
    return out

