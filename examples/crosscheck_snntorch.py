"""Cross-check snnTorch's ``Leaky`` neuron and surrogates against refsnn's reference vectors (SPEC §7).

Runs ``snntorch.Leaky(beta, threshold, reset_mechanism="zero" or "subtract", spike_grad=...)`` step
by step on the ``in.x`` (and ``in.v0``) of every ``lif.*`` case it can express, its surrogate
functions on the ``surrogate.*`` cases, writes a conforming output directory and runs ``refsnn check``
on it. See docs/frameworks.md for the results and why some cases differ.

    python examples/crosscheck_snntorch.py [--out DIR] [--ref data/vectors]

Mapping (``lif_preset("snntorch_zero", beta=b)``): snnTorch's
``U[t] = beta (1 - R[t]) U[t-1] + I[t]``, ``R[t] = [U[t-1] > threshold]`` (detached), spike
``[U[t] > threshold]`` is refsnn's hard reset to 0 with ``decay_input=False``, ``">"``,
``tau = 1/(1 - beta)``, ``detach_reset=True``: snnTorch's ``mem`` is refsnn's ``H`` (the membrane
before reset; snnTorch applies the reset one step late, at the start of the next step), so
``out.h = mem``, ``out.s = spk``. A case is expressible only with ``decay_input=False``,
``v_reset=0`` (hard), ``">"``, ``detach_reset=True``, not relaxed, and a surrogate snnTorch has with
the same derivative: ``atan(alpha)``, ``sigmoid(slope=alpha)``, ``fast_sigmoid(slope=alpha)``.
``beta`` is passed as a tensor of the case's dtype (a Python float becomes a float32 tensor).

``reset_mechanism="subtract"`` (``lif_preset("snntorch_subtract", beta=b)``): snnTorch's
``U[t] = (beta U[t-1] + I[t]) - R[t] threshold``, ``R[t] = [U[t-1] > threshold]`` (detached) is
refsnn's soft reset with ``subtract_after_decay=True`` (same conditions otherwise, ``out.h = mem``).
Cases with an initial membrane (``in.v0``, ``lif.v0.*``) pass it as snnTorch's initial ``mem``: with
``subtract_after_decay`` refsnn's ``v0`` is exactly that (``R[0] = [v0 > threshold]`` is refsnn's
``S[-1]``); ``out.grad_v0`` is autograd's gradient with respect to it. For the hard-reset mapping a
``v0`` above the threshold would be reset by snnTorch at step 0 but not by refsnn, so those cases
are not run.

Surrogate cases: ``grad`` = autograd through snnTorch's spike function and ``heaviside_gt`` its
forward; snnTorch has no primitive and no ``>=`` step, so ``primitive`` and ``heaviside_ge`` are
computed from SPEC §2.2 in torch (not by snnTorch).
"""

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn.commands.config import option, parse
from refsnn.vectors import default_dir, write_backend_outputs
from refsnn.vectors.check import check

try:
    import snntorch
    import torch
    from snntorch import surrogate
except ImportError as e:  # pragma: no cover - optional
    print(f"snnTorch (and torch) are needed for this example: {e}")
    sys.exit(0)

SPIKE_GRAD = {"atan": lambda a: surrogate.atan(alpha=a), "sigmoid": lambda a: surrogate.sigmoid(slope=a),
              "fast_sigmoid": lambda a: surrogate.fast_sigmoid(slope=a)}


def _why_not(params, inputs) -> str | None:
    p = params["lif"]
    why = []
    if p["decay_input"]:
        why.append("decay_input=True (Leaky adds I[t] undecayed)")
    after = p.get("subtract_after_decay", False)
    if p["v_reset"] is None and not after:
        why.append("soft reset before the decay (Leaky 'subtract' subtracts the threshold after the decay: "
                   "differs by (1 - beta) threshold per spike)")
    elif p["v_reset"] is not None and p["v_reset"] != 0:
        why.append("v_reset != 0")
    if "v0" in inputs and not after:
        why.append("v0 with the hard-reset mapping (snnTorch resets an initial mem above threshold at step 0)")
    if p["threshold"] != ">":
        why.append("'>=' (Leaky fires on U > threshold)")
    if not p["detach_reset"]:
        why.append("detach_reset=False (Leaky's reset is detached)")
    if params.get("relaxed"):
        why.append("relaxed mode")
    if p["surrogate"] not in SPIKE_GRAD:
        why.append(f"surrogate {p['surrogate']!r} (no snnTorch surrogate with that derivative)")
    return "; ".join(why) or None


def run_lif(params, inp):
    why = _why_not(params, inp)
    if why:
        return None, "not expressible: " + why
    p = params["lif"]
    x_np = inp["x"]
    dt = torch.float64 if x_np.dtype == np.float64 else torch.float32
    beta = params.get("beta", 1.0 - 1.0 / p["tau"])
    mechanism = "subtract" if p.get("subtract_after_decay", False) else "zero"
    lif = snntorch.Leaky(beta=torch.tensor(beta, dtype=dt), threshold=p["v_th"], reset_mechanism=mechanism,
                         spike_grad=SPIKE_GRAD[p["surrogate"]](p["alpha_effective"]))
    x = torch.tensor(x_np, requires_grad=True)
    mem0 = torch.tensor(inp["v0"], requires_grad=True) if "v0" in inp else torch.zeros_like(x[0])
    mem = mem0
    spks, mems = [], []
    for t in range(x.shape[0]):
        spk, mem = lif(x[t], mem)
        spks.append(spk.to(dt))  # snnTorch's spike functions return float32 whatever the input
        mems.append(mem)
    s, h = torch.stack(spks), torch.stack(mems)
    loss = (s * torch.tensor(inp["grad_s"])).sum()
    out = {"s": s.detach().numpy(), "h": h.detach().numpy()}
    if "v0" in inp:
        gx, gv0 = torch.autograd.grad(loss, (x, mem0))
        out["grad_v0"] = gv0.numpy()
    else:
        (gx,) = torch.autograd.grad(loss, x)
    out["grad_x"] = gx.numpy()
    return out, ""


def run_surrogate(params, inp):
    name, a = params["surrogate"], params["alpha"]
    if name not in SPIKE_GRAD:
        return None, f"no snnTorch surrogate with the derivative of {name!r}"
    x = torch.tensor(inp["x"], requires_grad=True)
    y = SPIKE_GRAD[name](a)(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    xd = x.detach()
    prim = {"atan": lambda: 0.5 + torch.atan(math.pi / 2 * a * xd) / math.pi,
            "sigmoid": lambda: torch.sigmoid(a * xd),
            "fast_sigmoid": lambda: xd / (1 + a * xd.abs())}[name]()
    return {"grad": g.to(x.dtype).numpy(), "heaviside_gt": y.detach().to(x.dtype).numpy(),
            "primitive": prim.numpy(), "heaviside_ge": (xd >= 0).to(x.dtype).numpy()}, \
        "primitive and heaviside_ge from SPEC §2.2 in torch, not snnTorch"


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    out: str = option("crosscheck_out/snntorch", "output directory")
    ref: str | None = option(None, "reference vectors (none: data/vectors)")


def main(argv=None) -> int:
    args = parse(Options, argv, description=__doc__.splitlines()[0])
    ref = Path(args.ref) if args.ref else default_dir()
    out = Path(args.out)
    torch.set_num_threads(1)
    written, notes = write_backend_outputs(out, {"lif.": run_lif, "surrogate.": run_surrogate}, ref_dir=ref)
    print(f"snnTorch {snntorch.__version__}, torch {torch.__version__}: wrote {len(written)} cases to {out}")
    for n in notes:
        print("  " + n)
    ok, _ = check(out, ref_dir=ref, allow_missing=True, only=["lif.*", "surrogate.*"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
