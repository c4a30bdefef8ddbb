"""Decode an MSE-NAS genotype into a graph description (SPEC §6.2 meso scale, §6.3 macro scale).

:func:`decode` turns a genotype (seed eq. 2), an input shape ``(C_in, H, W)``, a channel width ``C``
and a number of classes into a plain, JSON-serialisable ``dict``. It names every layer and lists
them in a topological order, so building a network (any backend) is one walk over ``nodes``:

``graph["nodes"]`` (topological order; every node has ``name``, ``op``, ``channels``, ``shape``,
``stage``):

* ``{"op": "input"}`` -- ``name = "input"``: the direct-encoded image ``[T, B, C_in, H, W]``.
* ``{"op": "lif", "cell", "role", "type", "in_edges"}`` -- one LIF population (``C_s`` channels,
  ``shape = [H_s, W_s]``). Its input current is the *sum* of its incoming edges, listed by name in
  ``in_edges`` (in the order they appear in ``graph["edges"]``). ``role`` is ``"in"`` or the motif
  population name (``"E1"``, ``"I1"``, ...), ``type`` is ``"E"``/``"I"`` (``in`` is ``"E"``).
  Names: ``"c{i}.{role}"`` with cells numbered ``1..l`` like the seed's ``m_1..m_l``. The neuron
  parameters are global, ``graph["neuron"]``.
* ``{"op": "concat", "inputs"}`` -- ``"c{i}.out"``: channel concatenation of a cell's surviving
  output populations, in table order; only present when a cell has two live outputs (otherwise the
  cell's output *is* that population, see ``graph["cells"][i]["output"]``).
* ``{"op": "global_avg_pool", "inputs"}`` -- ``"head.gap"`` over ``H, W`` of the last cell's output
  spikes, per step: ``[T, B, c]``.
* ``{"op": "linear", "inputs", "in_features", "out_features"}`` -- ``"head.fc"``: logits per step
  (``graph["output"]``); the readout (mean over T, loss) is the trainer's business (SPEC §4.1).

``graph["edges"]`` (grouped by destination, destinations in node order): each edge computes, from
the spikes ``S`` of ``src`` (``[T, B, c_in, h, w]``)::

    y = sign * act(BN(conv_kernel(avgpool2x2^pool(S))))      act = relu if edge["relu"] else identity

with keys ``name = "{src}->{dst}"``, ``kind`` (``"stem"``, ``"cross"``, ``"motif"``), ``src``,
``dst``, ``cell`` (the destination cell), ``k`` and ``gene`` (motif edges: edge index in gene
order and flat gene index; else ``null``), ``pool`` (number of successive 2x2/stride-2 average
pools, floor mode, applied to ``S`` first), ``kernel`` (1, 3 or 5), ``stride`` (1), ``padding``
(``kernel // 2``, zeros), ``in_channels``, ``out_channels``, ``bn`` (always true: BatchNorm2d after
every conv, SPEC §3), ``relu`` and ``sign``. Convolutions have no bias (BN follows).

* ``stem``: ``input -> c1.in``, conv 3x3 ``C_in -> C``, BN, no rectifier, sign +1 (SPEC §6.3).
* ``motif``: the live edges of each cell's motif (SPEC §6.2): conv 3x3 (gene 1) or 5x5 (gene 2),
  BN, relu, sign +1/-1 by the *presynaptic* population type (Dale's law).
* ``cross``: into ``c{i}.in`` from each predecessor (SPEC §6.3): ``pool`` 2x2 average pools (one
  per reduction between them), conv ``g2`` (1x1 for ``g_2 = 1``, 3x3 for ``g_2 = 2``), BN, no
  rectifier, sign +1 (the predecessors' outputs are excitatory populations).

``graph["cells"]``: per cell ``index``, ``motif`` (canonical motif name, ``"empty"`` for a
degenerate cell), ``motif_gene`` (the gene as given), ``stage``, ``channels`` (``C_s`` per
population), ``shape``, ``populations`` (live, topological), ``outputs``, ``output`` (node name of
the cell's output spikes), ``out_channels``, ``identity``, ``predecessors`` (node names),
``reduction_after``.

Other keys: ``format``, ``genotype`` (flat, as given), ``canonical_genotype``, ``input_shape``,
``channels``, ``n_classes``, ``g1``, ``g2``, ``cross_kernel`` (of the canonical genotype, so they
only differ from the genes as given where those have no effect, e.g. ``l = 1``), ``reductions`` (cell indices after
which a reduction happens), ``neuron``, ``output``.

Choices (SPEC §6.3 leaves them open):

* **Stem.** The stem is conv 3x3 + BN *without* its own LIF layer: its current drives ``c1.in``
  directly ("feeding cell 1's ``in``"). Wherever the stem is a predecessor (``g_1 = 2`` for cell 2,
  ``g_1 = 3`` for every cell), its spikes are those of ``c1.in`` -- the first spiking layer, i.e.
  the stem's LIF. The stem counts as "cell 0": ``g_1 = 2`` gives cell 2 the predecessors
  {stem, cell 1}. Cell 1 always reads only the stem, whatever ``g_1``.
* **Duplicate sources.** Predecessors are deduplicated by source node (an identity cell 1 has
  output ``c1.in``, the stem's spikes): one cross edge per distinct source, in order stem, cell 1,
  cell 2, ...
* **Reductions.** With ``l`` cells a reduction follows cell ``r_k = floor(k l / 3)`` for
  ``k = 1, 2``, keeping ``1 <= r_k < l`` (deduplicated): l=1 none; l=2 after 1; l=3,4 after 1, 2;
  l=5 after 1, 3; l=6,7 after 2, 4; l=8 after 2, 5; l=9 after 3, 6. Cells after ``s`` reductions
  are at stage ``s``: ``C_s = C * 2**s`` channels per population and spatial size halved (floor)
  ``s`` times. There is no separate reduction node: a reduction is the ``pool`` 2x2 average pools on
  the cross edges leaving a higher-resolution predecessor (applied to its output spikes) plus the
  channel change ``c_pred -> C_s`` of that edge's conv. ``H`` and ``W`` must survive the halvings
  (``>= 2**n_reductions``).
* **Cell outputs.** Pruning follows :mod:`.motifs` (forward pruning of silent populations,
  backward pruning of dead ends; a cell whose outputs are all pruned is the identity).
* **E/I statistics** count motif edges only (stem and cross edges are not E/I synapses between
  populations of a motif).
"""
from __future__ import annotations

import json
from collections import OrderedDict

from .._checks import check_int
from ..snn.graph import FORMAT, check_graph, n_params, to_json
from .genotype import GENES_PER_CELL, as_genotype, canonical
from .motifs import MOTIF_NAMES, MOTIFS, edge_sign, population_type, prune_cell

__all__ = ["FORMAT", "DEFAULT_NEURON", "reduction_cells", "decode", "to_json", "check_graph",
           "graph_stats", "ei_counts", "n_params"]

#: SPEC §2.1 defaults for MSE-NAS (the released code's neuron, ``PRESETS["msenas"]`` of
#: :mod:`refsnn.kernels.lif`: BrainCog's ``mem * (1 - spike.detach())``, so the reset is detached);
#: stored in ``graph["neuron"]`` and used by every network built from a graph without an explicit neuron.
DEFAULT_NEURON = {"model": "lif", "tau": 2.0, "v_th": 0.5, "v_reset": 0.0, "decay_input": True,
                  "threshold": ">", "surrogate": "triangle", "alpha": 2.0, "detach_reset": True}
_KERNEL_OF_OP = {1: 3, 2: 5}
_KERNEL_OF_G2 = {1: 1, 2: 3}


def reduction_cells(n_cells: int) -> list[int]:
    """Cells (1-based) after which a reduction happens: ``floor(k l / 3)``, k = 1, 2, kept if in
    ``[1, l)``."""
    n_cells = check_int("n_cells", n_cells, lo=1)
    out = []
    for k in (1, 2):
        r = (k * n_cells) // 3
        if 1 <= r < n_cells and r not in out:
            out.append(r)
    return out


def _predecessors(i: int, g1: int) -> list[int]:
    """Predecessor cell indices of cell i >= 2 (0 = stem), ascending."""
    if g1 == 1:
        return [i - 1]
    if g1 == 2:
        return [i - 2, i - 1]
    return list(range(i))


def decode(genotype, input_shape, channels: int, n_classes: int, *, neuron: dict | None = None) -> dict:
    """Genotype -> graph description (see the module docstring for the format and the choices).

    Parameters
    ----------
    genotype : :class:`~refsnn.nas.genotype.Genotype` or flat int sequence (seed eq. 2).
    input_shape : ``(C_in, H, W)`` of one time step of one sample.
    channels : ``C``, channels of every population at full resolution (stage 0).
    n_classes : outputs of the final linear layer.
    neuron : JSON-serialisable neuron parameters stored in ``graph["neuron"]`` (default
        :data:`DEFAULT_NEURON`, SPEC §2.1).
    """
    g = as_genotype(genotype)
    cg = canonical(g)
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"input_shape: expected (C_in, H, W), got {input_shape!r}")
    c_in, h, w = (check_int(f"input_shape[{k}]", v, lo=1) for k, v in enumerate(input_shape))
    C = check_int("channels", channels, lo=1)
    n_classes = check_int("n_classes", n_classes, lo=1)
    neuron = dict(DEFAULT_NEURON if neuron is None else neuron)
    try:
        json.dumps(neuron)
    except TypeError as e:
        raise TypeError(f"neuron: expected a JSON-serialisable dict: {e}") from None
    l = g.n_cells
    reds = reduction_cells(l)
    shapes = [(h, w)]
    for _ in reds:
        hh, ww = shapes[-1][0] // 2, shapes[-1][1] // 2
        if hh < 1 or ww < 1:
            raise ValueError(f"input_shape: H={h}, W={w} too small for {len(reds)} reductions "
                             f"(need H, W >= {2 ** len(reds)})")
        shapes.append((hh, ww))

    nodes: "OrderedDict[str, dict]" = OrderedDict()
    edges: list[dict] = []

    def add_edge(kind, src, dst, cell, *, k=None, gene=None, kernel, relu, sign):
        s, d = nodes[src], nodes[dst]
        pool = d["stage"] - s["stage"]
        assert pool >= 0
        e = {"name": f"{src}->{dst}", "kind": kind, "src": src, "dst": dst, "cell": cell,
             "k": k, "gene": gene, "pool": pool, "kernel": kernel, "stride": 1,
             "padding": kernel // 2, "in_channels": s["channels"], "out_channels": d["channels"],
             "bn": True, "relu": relu, "sign": sign}
        edges.append(e)
        d["in_edges"].append(e["name"])

    nodes["input"] = {"name": "input", "op": "input", "channels": c_in, "shape": [h, w], "stage": 0}
    cells = []
    stage = 0
    for i in range(1, l + 1):
        m_gene = g.cells[i - 1][0]
        m, ops = cg.cells[i - 1]
        st = prune_cell(m, ops)
        mot = MOTIFS[m]
        Cs = C * 2 ** stage
        shape = list(shapes[stage])

        def pop(role, _i=i, _stage=stage, _Cs=Cs, _shape=shape):
            name = f"c{_i}.{role}"
            nodes[name] = {"name": name, "op": "lif", "cell": _i, "role": role,
                           "type": population_type(role), "channels": _Cs, "shape": list(_shape),
                           "stage": _stage, "in_edges": []}
            return name

        in_name = pop("in")
        if i == 1:
            preds = ["input"]
            add_edge("stem", "input", in_name, i, kernel=3, relu=False, sign=1)
        else:
            preds = []
            for j in _predecessors(i, cg.g1):
                src = "c1.in" if j == 0 else cells[j - 1]["output"]
                if src not in preds:
                    preds.append(src)
            for src in preds:
                add_edge("cross", src, in_name, i, kernel=_KERNEL_OF_G2[cg.g2], relu=False, sign=1)
        for role in st.populations[1:]:
            name = pop(role)
            for k in st.edges:
                src_role, dst_role = mot.edges[k]
                if dst_role == role:
                    add_edge("motif", f"c{i}.{src_role}", name, i, k=k,
                             gene=(i - 1) * GENES_PER_CELL + 1 + k,
                             kernel=_KERNEL_OF_OP[ops[k]], relu=True, sign=edge_sign(src_role))
        out_pops = [f"c{i}.{o}" for o in st.outputs]
        if len(out_pops) == 1:
            output = out_pops[0]
        else:
            output = f"c{i}.out"
            nodes[output] = {"name": output, "op": "concat", "cell": i, "inputs": out_pops,
                             "channels": Cs * len(out_pops), "shape": list(shape), "stage": stage}
        cells.append({
            "index": i, "motif": MOTIF_NAMES[m], "motif_gene": m_gene, "stage": stage,
            "channels": Cs, "shape": list(shape), "populations": [f"c{i}.{p}" for p in st.populations],
            "outputs": out_pops, "output": output, "out_channels": nodes[output]["channels"],
            "identity": st.identity, "predecessors": preds, "reduction_after": i in reds,
        })
        if i in reds:
            stage += 1
    last = nodes[cells[-1]["output"]]
    nodes["head.gap"] = {"name": "head.gap", "op": "global_avg_pool", "inputs": [last["name"]],
                         "channels": last["channels"], "shape": [], "stage": last["stage"]}
    nodes["head.fc"] = {"name": "head.fc", "op": "linear", "inputs": ["head.gap"],
                        "in_features": last["channels"], "out_features": n_classes,
                        "channels": n_classes, "shape": [], "stage": last["stage"]}
    return {
        "format": FORMAT,
        "genotype": list(g.flat),
        "canonical_genotype": list(cg.flat),
        "input_shape": [c_in, h, w],
        "channels": C,
        "n_classes": n_classes,
        "g1": cg.g1,
        "g2": cg.g2,
        "cross_kernel": _KERNEL_OF_G2[cg.g2],
        "reductions": reds,
        "neuron": neuron,
        "nodes": list(nodes.values()),
        "edges": edges,
        "cells": cells,
        "output": "head.fc",
    }


def _ei_table(pairs) -> dict:
    per = {name: {"cells": 0, "E": 0, "I": 0, "frac_inhibitory": None} for name in MOTIF_NAMES}
    for motif_name, signs in pairs:
        row = per[motif_name]
        row["cells"] += 1
        row["E"] += sum(1 for s in signs if s > 0)
        row["I"] += sum(1 for s in signs if s < 0)
    return finish_ei_table(per)


def finish_ei_table(per: dict) -> dict:
    """Complete per-motif E/I edge counts ``{motif: {"cells", "E", "I", ...}}`` (modified in place)
    with each motif's inhibitory fraction, and return them with the totals:
    ``{"n_E_edges", "n_I_edges", "frac_inhibitory", "per_motif"}`` (fractions None without edges)."""
    for row in per.values():
        if row["E"] + row["I"]:
            row["frac_inhibitory"] = row["I"] / (row["E"] + row["I"])
    n_e = sum(r["E"] for r in per.values())
    n_i = sum(r["I"] for r in per.values())
    return {"n_E_edges": n_e, "n_I_edges": n_i,
            "frac_inhibitory": n_i / (n_e + n_i) if n_e + n_i else None, "per_motif": per}


def ei_counts(genotype) -> dict:
    """E/I statistics of a genotype without decoding shapes (motif edges of the canonical form):
    ``{"n_E_edges", "n_I_edges", "frac_inhibitory", "per_motif": {name: {"cells", "E", "I",
    "frac_inhibitory"}}}``; a fraction is ``None`` when there is no edge. Cells are counted under
    their canonical motif (a degenerate cell counts as ``empty``)."""
    cg = canonical(genotype)
    pairs = []
    for m, ops in cg.cells:
        st = prune_cell(m, ops)
        pairs.append((MOTIF_NAMES[m], [edge_sign(MOTIFS[m].edges[k][0]) for k in st.edges]))
    return _ei_table(pairs)


def graph_stats(graph: dict) -> dict:
    """:func:`ei_counts` computed from a decoded graph, plus ``n_populations`` (LIF nodes),
    ``n_edges``, ``n_params`` and ``n_neurons_per_sample`` (sum over LIF nodes of channels*H*W, the
    length of one BIE firing-pattern vector P, seed eq. 3)."""
    pairs = []
    for cell in graph["cells"]:
        signs = [e["sign"] for e in graph["edges"] if e["kind"] == "motif" and e["cell"] == cell["index"]]
        pairs.append((cell["motif"], signs))
    out = _ei_table(pairs)
    lifs = [n for n in graph["nodes"] if n["op"] == "lif"]
    out["n_populations"] = len(lifs)
    out["n_edges"] = len(graph["edges"])
    out["n_params"] = n_params(graph)
    out["n_neurons_per_sample"] = sum(n["channels"] * n["shape"][0] * n["shape"][1] for n in lifs)
    return out
