"""The MSE-NAS graph description, format ``refsnn.msenas.graph/1``: the one interface between the
search (:func:`refsnn.nas.graph.decode` produces it) and the engine (:func:`refsnn.snn.archs.from_graph`
builds a trainable network from it, knowing nothing of genotypes).

A graph description is a plain, JSON-serialisable ``dict`` (its full field list is in the docstring of
:mod:`refsnn.nas.graph`, SPEC §6.2-6.3):

* ``nodes`` in topological order, each with ``name``, ``op`` (``input``, ``lif``, ``concat``,
  ``global_avg_pool``, ``linear``), ``channels``, ``shape``; LIF nodes list their incoming edges in
  ``in_edges`` and carry their population ``type`` (``"E"``/``"I"``); other nodes list ``inputs``.
* ``edges``: ``y = sign * act(BN(conv_kernel(avgpool2x2^pool(S_src))))`` into a LIF node's input current,
  with ``kind`` (``stem``, ``cross``, ``motif``), ``src``, ``dst``, ``pool``, ``kernel``, ``stride``,
  ``padding``, ``in_channels``, ``out_channels``, ``bn``, ``relu``, ``sign``.
* ``neuron`` (the LIF parameters of every population) and ``output`` (the logits node).

This module holds what every consumer of the format needs: :data:`FORMAT`, :func:`check_graph` (the
structural invariants a builder relies on), :func:`to_json` (deterministic text) and :func:`n_params`.
"""
from __future__ import annotations

import json

__all__ = ["FORMAT", "check_graph", "to_json", "n_params"]

FORMAT = "refsnn.msenas.graph/1"


def to_json(graph: dict, *, indent: int | None = 1) -> str:
    """Deterministic JSON text of a graph description (sorted keys, no NaN)."""
    return json.dumps(graph, sort_keys=True, indent=indent, allow_nan=False)


def check_graph(graph: dict) -> None:
    """Check the structural invariants a builder relies on; raise ``ValueError`` naming the first
    violation. Topological order, unique names, edges feed LIF nodes listed in ``in_edges``, channel
    and spatial sizes agree (after ``pool`` floor halvings), every LIF node has an input."""
    if not isinstance(graph, dict):
        raise TypeError(f"graph: expected a graph description (dict), got {type(graph).__name__}")
    try:
        _check_invariants(graph)
    except (KeyError, TypeError, IndexError, AttributeError) as e:  # a missing key or a wrong type anywhere
        raise ValueError(f"graph: malformed graph description ({type(e).__name__}: {e})") from None


def _check_invariants(graph: dict) -> None:
    pos = {}
    for n, node in enumerate(graph["nodes"]):
        if node["name"] in pos:
            raise ValueError(f"graph: duplicate node name {node['name']!r}")
        pos[node["name"]] = n
    by_name = {node["name"]: node for node in graph["nodes"]}
    edge_names = set()
    for e in graph["edges"]:
        if e["name"] in edge_names:
            raise ValueError(f"graph: duplicate edge name {e['name']!r}")
        edge_names.add(e["name"])
        s, d = by_name.get(e["src"]), by_name.get(e["dst"])
        if s is None or d is None:
            raise ValueError(f"graph: edge {e['name']} refers to an unknown node")
        if pos[e["src"]] >= pos[e["dst"]]:
            raise ValueError(f"graph: edge {e['name']} is not in topological order")
        if d["op"] != "lif" or e["name"] not in d["in_edges"]:
            raise ValueError(f"graph: edge {e['name']} is not listed in its LIF destination's in_edges")
        if e["in_channels"] != s["channels"] or e["out_channels"] != d["channels"]:
            raise ValueError(f"graph: edge {e['name']} channels do not match its nodes")
        hh, ww = s["shape"]
        for _ in range(e["pool"]):
            hh, ww = hh // 2, ww // 2
        if [hh, ww] != d["shape"]:
            raise ValueError(f"graph: edge {e['name']} spatial size {[hh, ww]} != {d['shape']}")
        if e["kind"] == "motif" and e["sign"] != (1 if s["type"] == "E" else -1):
            raise ValueError(f"graph: edge {e['name']} violates Dale's law")
    for node in graph["nodes"]:
        if node["op"] == "lif":
            if not node["in_edges"]:
                raise ValueError(f"graph: LIF node {node['name']} has no input")
            if any(x not in edge_names for x in node["in_edges"]):
                raise ValueError(f"graph: LIF node {node['name']} lists an unknown edge")
        for x in node.get("inputs", []):
            if x not in pos or pos[x] >= pos[node["name"]]:
                raise ValueError(f"graph: node {node['name']} input {x!r} unknown or not earlier")
    if graph["output"] not in pos:
        raise ValueError("graph: unknown output node")


def n_params(graph: dict) -> int:
    """Trainable parameters: conv weights (no bias) + BN affine (2 per output channel) per edge,
    plus the linear head's weight and bias."""
    total = sum(e["kernel"] ** 2 * e["in_channels"] * e["out_channels"] + 2 * e["out_channels"]
                for e in graph["edges"])
    fc = next(n for n in graph["nodes"] if n["name"] == graph["output"])
    return total + fc["in_features"] * fc["out_features"] + fc["out_features"]
