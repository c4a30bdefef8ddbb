"""Cases ``network.*``: a whole Conv-LIF network in training mode, forward and STBP gradients
(SPEC §4.1, :mod:`refsnn.snn`)."""
from __future__ import annotations

import numpy as np

from refsnn.kernels.lif import PRESETS
from refsnn.snn.layers import LIF, AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear
from refsnn.snn.network import Network
from refsnn.vectors.case import Case
from refsnn.vectors.cases.lif import lif_params_json
from refsnn.vectors.tolerances import EXACT

PREFIXES = ("network.",)


_NET_LAYERS = ("conv1 = Conv2d(1, 4, 3, padding=1, no bias); bn1 = BatchNorm2d(4); lif1 = LIF(msenas); "
               "pool1 = AvgPool2d(2); conv2 = Conv2d(4, 4, 3, padding=1, no bias); bn2 = BatchNorm2d(4); "
               "lif2 = LIF(msenas); flat = Flatten; fc = Linear(64, 5, bias)")


def _build_net(dtype, T):
    rng = np.random.default_rng(0)
    net = Network(timesteps=T, dtype=dtype)
    net.add("conv1", Conv2d(1, 4, 3, padding=1, rng=rng, dtype=dtype), "input")
    net.add("bn1", BatchNorm2d(4, dtype=dtype), "conv1")
    net.add("lif1", LIF(PRESETS["msenas"], dtype=dtype), "bn1")
    net.add("pool1", AvgPool2d(2, dtype=dtype), "lif1")
    net.add("conv2", Conv2d(4, 4, 3, padding=1, rng=rng, dtype=dtype), "pool1")
    net.add("bn2", BatchNorm2d(4, dtype=dtype), "conv2")
    net.add("lif2", LIF(PRESETS["msenas"], dtype=dtype), "bn2")
    net.add("flat", Flatten(dtype=dtype), "lif2")
    net.add("fc", Linear(64, 5, rng=rng, dtype=dtype), "flat")
    return net


def _net_compute(params, inp):
    dtype = inp["x"].dtype
    net = _build_net(dtype, params["T"])
    for name, arr in net.parameters():
        arr[...] = inp[f"param.{name}"]
    net.train()
    logits = np.array(net.forward(inp["x"]))
    spikes = {n: np.array(net[n].last_spikes) for n in ("lif1", "lif2")}
    dx = net.backward(inp["dlogits"], input_grad=True)
    out = {"logits": logits, "dx": dx}
    out.update({f"spikes.{k}": v for k, v in spikes.items()})
    out.update({f"grad.{k}": np.array(v) for k, v in net.gradients()})
    out.update({f"buffer.{k}": np.array(v) for k, v in net.buffers()})
    return out


def cases() -> list[Case]:
    """The ``network.*`` cases, in manifest order."""
    out = []
    T, B = 4, 2
    for dtype in ("float32", "float64"):
        def make(rng, dtype=dtype):
            net = _build_net(dtype, T)
            d = {"x": rng.uniform(0, 1, (T, B, 1, 8, 8)).astype(dtype),
                 "dlogits": (rng.standard_normal((T, B, 5)) / T).astype(dtype)}
            for name, arr in net.parameters():
                if name.endswith(".gamma"):
                    v = rng.uniform(0.8, 1.6, arr.shape)
                elif name.endswith(".beta"):
                    v = rng.normal(0.3, 0.2, arr.shape)
                else:
                    v = arr.astype(np.float64)  # PyTorch-style init from the fixed build seed
                d[f"param.{name}"] = np.asarray(v, dtype=dtype)
            return d

        out.append(Case(
            f"network.convlif.{dtype}", "4.1",
            "SPEC §4.1 STBP: layer-by-layer forward over [T, B, ...] (stateless layers fold T into the batch, "
            "LIF layers run the time loop), backward = spatial backprop across layers + BPTT inside each LIF",
            f"a small Conv-LIF network in training mode (BN batch statistics): {_NET_LAYERS}; input "
            f"x [T={T}, B={B}, 1, 8, 8] varying over time; dlogits = dL/dlogits [T, B, 5]; outputs: logits per "
            "step, spikes of both LIF layers, dx, every parameter gradient (grad.<node>.<param>) and the BN "
            "running statistics after the forward (buffer.<node>.<name>)",
            {"T": T, "B": B, "dtype": dtype, "layers": _NET_LAYERS, "lif": lif_params_json(PRESETS["msenas"]),
             "layout": "param.conv*.w (O, C, 3, 3), param.bn*.gamma/beta (4,), param.fc.w (5, 64), "
                       "param.fc.b (5,); flatten is C order over (C, H, W) of each step"},
            make, _net_compute, {"spikes.lif1": EXACT, "spikes.lif2": EXACT}))
    return out
