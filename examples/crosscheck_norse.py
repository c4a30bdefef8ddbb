"""Cross-check Norse's ``LIF`` and ``LIFBox`` neurons against refsnn's reference vectors (SPEC §7).

Runs ``norse.torch.LIFCell`` (the step of ``norse.torch.LIF``) and ``norse.torch.LIFBoxCell`` step by
step on the ``in.x`` (and ``in.v0``, ``in.i0``) of every ``norse.*`` case it can express, writes a
conforming output directory and runs ``refsnn check`` on it. See docs/frameworks.md for the results.

    python examples/crosscheck_norse.py [--out DIR] [--ref data/vectors]

Mapping (``refsnn.kernels.norse_lif``; presets ``norse_lif`` and ``norse_lif_box``):
``LIFCell(LIFParameters(tau_syn_inv, tau_mem_inv, v_leak, v_th, v_reset, method="super"), dt=dt)``
and ``LIFBoxCell(LIFBoxParameters(tau_mem_inv, v_leak, v_th, v_reset, method="super"), dt=dt)``,
every parameter a 0-d tensor of the case's dtype (Norse's defaults are float32 tensors, which would
round a float64 run's constants to float32). Norse's SuperSpike backward is ``grad / (|x| + 1)^2``
whatever its ``alpha``: refsnn's ``fast_sigmoid`` with alpha 1. Not expressible (not run): other
surrogates, ``detach_reset=True`` (Norse's feed-forward reset is not detached), relaxed mode.

Outputs: ``s`` = the cell's spikes; ``v``, ``i`` = its states after each step (``state.v``,
``state.i``); ``h`` (the membrane before reset, ``v_decayed``, which Norse does not return) = Norse's
own update expression evaluated in torch on Norse's previous state: LIF
``v + dt * tau_mem_inv * ((v_leak - v) + (i + x))``, LIFBox ``v + dt * tau_mem_inv * (x + v_leak - v)``;
``grad_x``, ``grad_v0``, ``grad_i0`` = autograd gradients of ``sum(grad_s * s)`` with respect to the
input and the initial state (``v_leak`` and 0 when the case gives none: Norse's ``initial_state``).
"""

import sys
from dataclasses import dataclass
from pathlib import Path

from refsnn.commands.config import option, parse
from refsnn.vectors import default_dir, write_backend_outputs
from refsnn.vectors.check import check

try:
    import norse
    import norse.torch as nt
    import torch
except ImportError as e:  # pragma: no cover - optional
    print(f"Norse (and torch) are needed for this example: {e}")
    sys.exit(0)


def _why_not(params) -> str | None:
    p = params["neuron"]
    why = []
    if p["surrogate"] != "fast_sigmoid" or p["alpha_effective"] != 1.0:
        why.append(f"surrogate {p['surrogate']}({p['alpha_effective']:g}) (Norse's SuperSpike is fast_sigmoid(1))")
    if p["detach_reset"]:
        why.append("detach_reset=True (Norse's feed-forward reset is not detached)")
    if params.get("relaxed"):
        why.append("relaxed mode")
    return "; ".join(why) or None


def run_norse(params, inp):
    why = _why_not(params)
    if why:
        return None, "not expressible: " + why
    p = params["neuron"]
    box = params["model"] == "norse_lif_box"
    x = torch.tensor(inp["x"], requires_grad=True)
    dt = x.dtype

    def t(v):
        return torch.tensor(v, dtype=dt)

    v0 = torch.tensor(inp["v0"]) if "v0" in inp else torch.full_like(x[0], p["v_leak"])
    v0.requires_grad_(True)
    if box:
        cell = nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=t(p["tau_mem_inv"]), v_leak=t(p["v_leak"]),
                                                 v_th=t(p["v_th"]), v_reset=t(p["v_reset"]), method="super"),
                             dt=p["dt"])
        state = nt.LIFBoxFeedForwardState(v=v0)
        wrt = (x, v0)
    else:
        i0 = torch.tensor(inp["i0"]) if "i0" in inp else torch.zeros_like(x[0])
        i0.requires_grad_(True)
        cell = nt.LIFCell(nt.LIFParameters(tau_syn_inv=t(p["tau_syn_inv"]), tau_mem_inv=t(p["tau_mem_inv"]),
                                           v_leak=t(p["v_leak"]), v_th=t(p["v_th"]), v_reset=t(p["v_reset"]),
                                           method="super"), dt=p["dt"])
        state = nt.LIFFeedForwardState(v=v0, i=i0)
        wrt = (x, v0, i0)
    s, h, v, i = [], [], [], []
    km, vl = p["dt"] * t(p["tau_mem_inv"]), t(p["v_leak"])
    for k in range(x.shape[0]):
        # Norse's v_decayed from its previous state (the cell does not return it)
        if box:
            h.append(state.v + km * (x[k] + vl - state.v))
        else:
            h.append(state.v + km * ((vl - state.v) + (state.i + x[k])))
        z, state = cell(x[k], state)
        s.append(z)
        v.append(state.v)
        if not box:
            i.append(state.i)
    S = torch.stack(s)
    grads = torch.autograd.grad((S * torch.tensor(inp["grad_s"])).sum(), wrt)
    out = {"s": S.detach().numpy(), "h": torch.stack(h).detach().numpy(), "v": torch.stack(v).detach().numpy(),
           "grad_x": grads[0].numpy(), "grad_v0": grads[1].numpy()}
    if not box:
        out["i"] = torch.stack(i).detach().numpy()
        out["grad_i0"] = grads[2].numpy()
    return out, ""


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    out: str = option("crosscheck_out/norse", "output directory")
    ref: str | None = option(None, "reference vectors (none: data/vectors)")


def main(argv=None) -> int:
    args = parse(Options, argv, description=__doc__.splitlines()[0])
    ref = Path(args.ref) if args.ref else default_dir()
    out = Path(args.out)
    torch.set_num_threads(1)
    written, notes = write_backend_outputs(out, {"norse.": run_norse}, ref_dir=ref)
    print(f"Norse {norse.__version__}, torch {torch.__version__}: wrote {len(written)} cases to {out}")
    for n in notes:
        print("  " + n)
    ok, _ = check(out, ref_dir=ref, allow_missing=True, only=["norse.*"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
