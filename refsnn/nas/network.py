"""Trainable networks from MSE-NAS genotypes, and read-only access to their populations' spikes.

* :func:`build_genotype_network` -- genotype -> :func:`refsnn.nas.graph.decode` ->
  :func:`refsnn.snn.archs.from_graph`: the STBP-trainable :class:`~refsnn.snn.network.Network` of a
  genotype (SPEC §6.2-6.3). Node names are the graph's, so ``net[name].last_spikes`` are the spikes
  of population ``name`` after a forward.
* :func:`parse_genotype_arch` / :func:`build_from_arch_string` -- the ``arch`` string
  ``"genotype:PATH[@C]"`` understood by ``refsnn train``, which resolves such strings here (see
  docs/msenas.md, "Training the winner"). ``PATH`` is a genotype JSON file
  (:func:`refsnn.nas.genotype.to_json`, or the ``best_genotype.json`` written by ``refsnn nas``,
  which also records the ``channels`` it was searched with); ``@C`` overrides the channel width.
* :func:`population_spikes` -- the last forward's spikes of named LIF populations (read-only views
  of the layers' output buffers; they are overwritten by the next forward, so copy or reduce them
  before running the network again).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._checks import check_int
from ..io import parse_json
from ..snn import archs
from ..snn.layers import LIF
from .genotype import MAX_JSON_DEPTH as GENOTYPE_JSON_DEPTH
from .genotype import as_genotype, from_json
from .graph import decode

__all__ = ["DEFAULT_CHANNELS", "build_genotype_network", "parse_genotype_arch", "build_from_arch_string",
           "population_spikes", "lif_population_names", "output_population_names", "ARCH_PREFIX"]

#: Channel width C of stage-0 populations used by ``refsnn nas`` unless told otherwise.
DEFAULT_CHANNELS = 8
ARCH_PREFIX = "genotype:"


def build_genotype_network(genotype, *, input_shape, num_classes: int, timesteps: int,
                           rng: np.random.Generator, channels: int = DEFAULT_CHANNELS, neuron=None,
                           dtype=np.float32):
    """The network of ``genotype`` (flat list or :class:`~refsnn.nas.genotype.Genotype`).

    Parameters
    ----------
    genotype : genotype of seed eq. 2 (validated).
    input_shape : ``(C_in, H, W)`` of one step.
    num_classes : outputs of the linear head.
    timesteps : T.
    rng : numpy.random.Generator for the initial weights (drawn in edge order, then the head).
    channels : C, channels per population at full resolution (doubled after each reduction).
    neuron : :class:`refsnn.kernels.lif.LIFParams` of every population (default: the graph's
        neuron, SPEC §2.1 MSE-NAS defaults).
    dtype : float32 or float64.

    Returns
    -------
    :class:`refsnn.snn.network.Network` with ``net.graph`` set to the decoded graph description.
    """
    graph = decode(as_genotype(genotype), tuple(input_shape), check_int("channels", channels, lo=1),
                   check_int("num_classes", num_classes, lo=1))
    net = archs.from_graph(graph, timesteps=timesteps, rng=rng, neuron=neuron, dtype=dtype)
    net.graph = graph
    return net


def parse_genotype_arch(arch: str) -> tuple[tuple[int, ...], int]:
    """``"genotype:PATH[@C]"`` -> ``(flat genotype, channels)``.

    ``PATH`` holds a genotype JSON (object with ``flat`` or ``cells``/``g1``/``g2``, or a bare flat
    list). ``channels`` is ``C`` from ``@C`` if given, else the file's ``"channels"`` key, else
    :data:`DEFAULT_CHANNELS`.
    """
    if not isinstance(arch, str) or not arch.startswith(ARCH_PREFIX):
        raise ValueError(f"arch: expected '{ARCH_PREFIX}PATH[@C]', got {arch!r}")
    rest = arch[len(ARCH_PREFIX):]
    channels = None
    if "@" in rest:
        head, tail = rest.rsplit("@", 1)
        if tail.isdigit():
            rest, channels = head, int(tail)
    path = Path(rest)
    if not path.is_file():
        raise FileNotFoundError(f"arch: genotype file {path} not found")
    try:
        obj = parse_json(path.read_bytes(), name=str(path), max_depth=GENOTYPE_JSON_DEPTH)
        g = from_json(obj)
    except (ValueError, TypeError) as e:
        raise type(e)(f"arch: {path} is not a genotype JSON file: {e}") from None
    if channels is None:
        channels = obj.get("channels", DEFAULT_CHANNELS) if isinstance(obj, dict) else DEFAULT_CHANNELS
    return g.flat, check_int(f"arch: {path}: channels", channels, lo=1)


def build_from_arch_string(arch: str, *, input_shape, num_classes: int, timesteps: int,
                           rng: np.random.Generator, neuron=None, dtype=np.float32):
    """:func:`build_genotype_network` for ``arch = "genotype:PATH[@C]"`` (the signature of
    :func:`refsnn.snn.archs.build_arch`, so the trainer calls either the same way)."""
    flat, channels = parse_genotype_arch(arch)
    return build_genotype_network(flat, input_shape=input_shape, num_classes=num_classes,
                                  timesteps=timesteps, rng=rng, channels=channels, neuron=neuron,
                                  dtype=dtype)


def lif_population_names(graph: dict) -> list[str]:
    """Names of every LIF population of a graph description, in node (topological) order."""
    return [n["name"] for n in graph["nodes"] if n["op"] == "lif"]


def output_population_names(graph: dict) -> list[str]:
    """The last cell's output populations (what the head reads; SPEC §6.4's "output populations")."""
    return list(graph["cells"][-1]["outputs"])


def population_spikes(net, names=None) -> dict[str, np.ndarray]:
    """``{name: spikes [T, B, C, H, W]}`` of the last forward, for LIF nodes ``names`` (default:
    every LIF node of ``net``, in node order). Read-only views of the layers' buffers (valid until
    the next forward). ``KeyError``/``ValueError`` for an unknown or non-LIF name or no forward yet."""
    names = net.lif_nodes() if names is None else list(names)
    out = {}
    for name in names:
        if name not in net.nodes:
            raise KeyError(f"names: {name!r} is not a node of the network")
        layer = net[name]
        if not isinstance(layer, LIF):
            raise ValueError(f"names: node {name!r} is a {type(layer).__name__}, not a LIF population")
        s = layer.last_spikes
        if s is None:
            raise ValueError(f"names: population {name!r} has no spikes yet; call net.forward first")
        v = s.view()
        v.flags.writeable = False
        out[name] = v
    return out
