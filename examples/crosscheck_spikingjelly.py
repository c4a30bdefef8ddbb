"""Cross-check SpikingJelly's LIF neuron and surrogates against refsnn's reference vectors (SPEC §7).

Runs ``spikingjelly.activation_based.neuron.LIFNode`` (multi-step mode) on the ``in.x`` of every
``lif.*`` case and its surrogate functions on the ``in.x`` of every ``surrogate.*`` case, writes a
conforming output directory (``<case>.npz`` with the case's ``out.*`` arrays) and runs
``refsnn check`` on it. See docs/frameworks.md for the results and why some cases differ.

    python examples/crosscheck_spikingjelly.py [--out DIR] [--ref data/vectors]

Mapping (refsnn's LIFParams -> LIFNode):
``LIFNode(tau=tau, decay_input=decay_input, v_threshold=v_th, v_reset=v_reset (None = soft),
detach_reset=detach_reset, surrogate_function=S(alpha, spiking=not relaxed), step_mode="m",
store_v_seq=True)`` with S = Sigmoid / ATan / PiecewiseQuadratic (= triangle) / Rect. SpikingJelly
has no ``threshold`` option: it always fires on ``H - v_th >= 0``. It has no fast_sigmoid (its
SoftSign has derivative ``alpha / (2 (1 + alpha |x|)^2)``), so fast_sigmoid cases are not written.

Outputs: ``s`` = the node's spikes; ``h`` (membrane before reset, which LIFNode does not expose) =
SpikingJelly's own ``functional.lif_charge(x[t], v_seq[t-1], ...)`` applied to its own stored
membrane sequence ``v_seq`` (``V[-1] = v_reset``, or 0 for soft reset); ``grad_x`` = autograd
gradient of ``sum(grad_s * s)``. Cases with an initial membrane (``in.v0``, ``lif.v0.*``) set the
node's memory ``node.v = v0`` before the call (``V[-1] = v0``) and write autograd's ``grad_v0``.
SpikingJelly subtracts the soft-reset threshold before the decay, so the ``subtract_after_decay``
cases (snnTorch's subtract form) are not run. For surrogate cases: ``grad`` = autograd through the spiking
surrogate, ``primitive`` = the surrogate with ``spiking=False``, ``heaviside_ge`` = its spiking
forward; ``heaviside_gt`` is not a SpikingJelly function and is computed as ``(x > 0)`` in torch.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

from refsnn.commands.config import option, parse
from refsnn.vectors import default_dir, write_backend_outputs
from refsnn.vectors.check import check

try:
    import torch
    from spikingjelly.activation_based import functional, neuron, surrogate
except ImportError as e:  # pragma: no cover - optional
    print(f"SpikingJelly (and torch) are needed for this example: {e}")
    sys.exit(0)

SURROGATES = {"sigmoid": surrogate.Sigmoid, "atan": surrogate.ATan, "triangle": surrogate.PiecewiseQuadratic,
              "rect": surrogate.Rect}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}


def run_lif(params, inp):
    p = params["lif"]
    if p["surrogate"] not in SURROGATES:
        return None, f"no SpikingJelly surrogate equals {p['surrogate']!r}"
    if p.get("subtract_after_decay", False):
        return None, "not expressible: subtract_after_decay (LIFNode subtracts v_th before the decay)"
    relaxed = bool(params.get("relaxed"))
    sg = SURROGATES[p["surrogate"]](alpha=p["alpha_effective"], spiking=not relaxed)
    node = neuron.LIFNode(tau=p["tau"], decay_input=p["decay_input"], v_threshold=p["v_th"],
                          v_reset=p["v_reset"], detach_reset=p["detach_reset"], surrogate_function=sg,
                          step_mode="m", store_v_seq=True)
    x = torch.tensor(inp["x"], requires_grad=True)
    if "v0" in inp:
        v0 = torch.tensor(inp["v0"], requires_grad=True)
        node.v = v0
    else:
        v0 = torch.full_like(x[0], 0.0 if p["v_reset"] is None else p["v_reset"])
    s = node(x)
    v_seq = node.v_seq
    v_prev = torch.cat([v0[None], v_seq[:-1]], dim=0)
    h = torch.stack([functional.lif_charge(x[t], v_prev[t], p["tau"], p["decay_input"], p["v_reset"])
                     for t in range(x.shape[0])])
    loss = (s * torch.tensor(inp["grad_s"])).sum()
    out = {"s": s.detach().numpy(), "h": h.detach().numpy()}
    if "v0" in inp:
        gx, gv0 = torch.autograd.grad(loss, (x, v0))
        out["grad_v0"] = gv0.numpy()
    else:
        (gx,) = torch.autograd.grad(loss, x)
    out["grad_x"] = gx.numpy()
    note = "" if p["threshold"] == ">=" else "runs with SpikingJelly's '>=' (case uses '>')"
    return out, note


def run_surrogate(params, inp):
    name = params["surrogate"]
    if name not in SURROGATES:
        return None, f"no SpikingJelly surrogate equals {name!r}"
    x = torch.tensor(inp["x"], requires_grad=True)
    y = SURROGATES[name](alpha=params["alpha"], spiking=True)(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    prim = SURROGATES[name](alpha=params["alpha"], spiking=False)(x.detach())
    return {"grad": g.numpy(), "primitive": prim.numpy(), "heaviside_ge": y.detach().numpy(),
            "heaviside_gt": (x.detach() > 0).to(x.dtype).numpy()}, "heaviside_gt from torch, not SpikingJelly"


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    out: str = option("crosscheck_out/spikingjelly", "output directory")
    ref: str | None = option(None, "reference vectors (none: data/vectors)")


def main(argv=None) -> int:
    args = parse(Options, argv, description=__doc__.splitlines()[0])
    ref = Path(args.ref) if args.ref else default_dir()
    out = Path(args.out)
    torch.set_num_threads(1)
    written, notes = write_backend_outputs(out, {"lif.": run_lif, "surrogate.": run_surrogate}, ref_dir=ref)
    import spikingjelly

    print(f"SpikingJelly {getattr(spikingjelly, '__version__', '?')}, torch {torch.__version__}: "
          f"wrote {len(written)} cases to {out}")
    for n in notes:
        print("  " + n)
    ok, _ = check(out, ref_dir=ref, allow_missing=True, only=["lif.*", "surrogate.*"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
