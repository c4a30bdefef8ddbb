"""Network builders: fixed Conv-LIF architectures and MSE-NAS graph descriptions (SPEC §4.1, §6.3).

Fixed architectures (:func:`build_arch`) are given by a short spec string, tokens joined by ``-``:

=========  ===========================================================================
``c<N>``   conv 3x3 (padding 1, no bias) -> BN -> LIF, N output channels
``p``      2x2 average pooling
``f<N>``   flatten (if needed) -> linear N (with bias) -> LIF
=========  ===========================================================================

and always end with flatten -> linear(num_classes) giving the logits at every step. Named
architectures (:data:`ARCHS`): ``csnn`` = ``c32-p-c64-p`` (the default: two Conv-LIF blocks, 32 and
64 channels, like SpikingJelly's CSNN example without its hidden FC layer), ``csnn-small`` =
``c16-p-c32-p``, ``csnn-fc`` = ``c32-p-c64-p-f128``.

:func:`from_graph` builds a :class:`~refsnn.snn.network.Network` from an MSE-NAS graph description
(format ``refsnn.msenas.graph/1``, :mod:`refsnn.snn.graph`; produced by ``refsnn.nas.graph.decode``): for every edge
``e: src -> dst`` the nodes ``e.name/pool{i}`` (``pool`` 2x2 average pools), ``e.name/conv``,
``e.name/bn`` and ``e.name/act`` (:class:`Rectify` with the edge's ``sign`` and ``relu``; omitted
when ``relu`` is false and ``sign`` is +1); for every ``lif`` node ``<node>/sum`` (:class:`Add` of its
``in_edges``, omitted for a single edge) and ``<node>`` (:class:`LIF`); ``concat`` -> :class:`Concat`,
``global_avg_pool`` -> :class:`GlobalAvgPool`, ``linear`` -> :class:`Linear`. Node names are the
graph's, so ``net[name].last_spikes`` are the spikes of population ``name``.
"""
from __future__ import annotations

import re

import numpy as np

from refsnn._checks import check_int
from refsnn.kernels.lif import PRESETS, LIFParams
from refsnn.snn.graph import check_graph
from refsnn.snn.layers import LIF, Add, AvgPool2d, BatchNorm2d, Concat, Conv2d, Flatten, GlobalAvgPool, Linear, Rectify
from refsnn.snn.network import INPUT, Network

__all__ = ["ARCHS", "build_arch", "from_graph", "lif_params_from_dict"]

ARCHS = {
    "csnn": "c32-p-c64-p",
    "csnn-small": "c16-p-c32-p",
    "csnn-fc": "c32-p-c64-p-f128",
}
_TOKEN = re.compile(r"^(c|f)(\d+)$|^p$")


def build_arch(arch: str, *, input_shape, num_classes: int, timesteps: int, rng: np.random.Generator,
               neuron: LIFParams = PRESETS["msenas"], dtype=np.float32) -> Network:
    """A fixed Conv-LIF network from a name in :data:`ARCHS` or a spec string (module docstring).

    Parameters
    ----------
    arch : str, e.g. ``"csnn"`` or ``"c32-p-c64-p"`` (an MSE-NAS genotype is built by its graph
        description, :func:`from_graph`; ``refsnn train`` resolves ``genotype:PATH[@C]`` itself)
    input_shape : (C, H, W) of one step
    num_classes : int
    timesteps : int, T
    rng : numpy.random.Generator (initialisation, drawn in node order)
    neuron : LIFParams of every LIF layer
    """
    if not isinstance(arch, str):
        raise TypeError(f"arch: expected a string, got {type(arch).__name__}")
    spec = ARCHS.get(arch, arch)
    toks = [t for t in spec.split("-") if t]
    if not toks or any(not _TOKEN.match(t) for t in toks):
        raise ValueError(f"arch: expected one of {sorted(ARCHS)} or tokens c<N>, p, f<N> joined by '-', "
                         f"got {arch!r}")
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"input_shape: expected (C, H, W), got {input_shape!r}")
    C, H, W = (check_int(f"input_shape[{i}]", v, lo=1) for i, v in enumerate(input_shape))
    num_classes = check_int("num_classes", num_classes, lo=1)
    net = Network(timesteps=timesteps, dtype=dtype)
    prev, flat, feat = INPUT, False, None
    nc = np_ = nf = 0
    for t in toks:
        if t == "p":
            if flat:
                raise ValueError(f"arch: pooling after a linear layer in {arch!r}")
            if H < 2 or W < 2:
                raise ValueError(f"arch: {arch!r} pools a {H}x{W} map")
            np_ += 1
            prev = net.add(f"pool{np_}", AvgPool2d(2, dtype=dtype), prev)
            H, W = H // 2, W // 2
        elif t[0] == "c":
            if flat:
                raise ValueError(f"arch: convolution after a linear layer in {arch!r}")
            n = int(t[1:])
            nc += 1
            prev = net.add(f"conv{nc}", Conv2d(C, n, 3, padding=1, rng=rng, dtype=dtype), prev)
            prev = net.add(f"bn{nc}", BatchNorm2d(n, dtype=dtype), prev)
            prev = net.add(f"lif{nc}", LIF(neuron, dtype=dtype), prev)
            C = n
        else:
            n = int(t[1:])
            if not flat:
                prev = net.add("flatten", Flatten(dtype=dtype), prev)
                feat, flat = C * H * W, True
            nf += 1
            prev = net.add(f"fc{nf}", Linear(feat, n, rng=rng, dtype=dtype), prev)
            prev = net.add(f"lif_fc{nf}", LIF(neuron, dtype=dtype), prev)
            feat = n
    if not flat:
        prev = net.add("flatten", Flatten(dtype=dtype), prev)
        feat = C * H * W
    net.add("fc", Linear(feat, num_classes, rng=rng, dtype=dtype), prev)
    return net


def lif_params_from_dict(d: dict) -> LIFParams:
    """LIFParams from a graph description's ``neuron`` dict (``model`` must be ``"lif"``)."""
    d = dict(d)
    model = d.pop("model", "lif")
    if model != "lif":
        raise ValueError(f"neuron: only model 'lif' is supported, got {model!r}")
    try:
        return LIFParams(**d)
    except TypeError as e:
        raise ValueError(f"neuron: {e}") from None


def from_graph(graph: dict, *, timesteps: int, rng: np.random.Generator, neuron: LIFParams | None = None,
               dtype=np.float32) -> Network:
    """Build the network of an MSE-NAS graph description (module docstring; SPEC §6.2–6.3).

    ``neuron`` overrides ``graph["neuron"]``. Parameters are drawn from ``rng`` in edge order, then
    the linear head.
    """
    check_graph(graph)
    p = neuron if neuron is not None else lif_params_from_dict(graph["neuron"])
    edges = {e["name"]: e for e in graph["edges"]}
    net = Network(timesteps=timesteps, dtype=dtype)
    for node in graph["nodes"]:
        op, name = node["op"], node["name"]
        if op == "input":
            if name != INPUT:
                raise ValueError(f"graph: the input node must be named {INPUT!r}, got {name!r}")
            continue
        if op == "lif":
            terms = []
            for en in node["in_edges"]:
                e = edges[en]
                prev = e["src"]
                for i in range(e["pool"]):
                    prev = net.add(f"{en}/pool{i}", AvgPool2d(2, dtype=dtype), prev)
                prev = net.add(f"{en}/conv", Conv2d(e["in_channels"], e["out_channels"], e["kernel"],
                                                    stride=e["stride"], padding=e["padding"], rng=rng,
                                                    dtype=dtype), prev)
                if e.get("bn", True):
                    prev = net.add(f"{en}/bn", BatchNorm2d(e["out_channels"], dtype=dtype), prev)
                if e["relu"] or e["sign"] != 1:
                    prev = net.add(f"{en}/act", Rectify(e["sign"], relu=e["relu"], dtype=dtype), prev)
                terms.append(prev)
            src = terms[0] if len(terms) == 1 else net.add(f"{name}/sum", Add(dtype=dtype), terms)
            net.add(name, LIF(p, dtype=dtype), src)
        elif op == "concat":
            net.add(name, Concat(dtype=dtype), node["inputs"])
        elif op == "global_avg_pool":
            net.add(name, GlobalAvgPool(dtype=dtype), node["inputs"])
        elif op == "linear":
            net.add(name, Linear(node["in_features"], node["out_features"], rng=rng, dtype=dtype),
                    node["inputs"])
        else:
            raise ValueError(f"graph: unknown op {op!r} of node {name!r}")
    net.set_output(graph["output"])
    return net
