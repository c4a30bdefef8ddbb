"""The six MSE-NAS motifs as data, and the pruning of one cell (SPEC §6.2; seed eq. 2, Table I).

A motif is a small DAG of neuron populations inside one cell. Every population is excitatory
(``E``) or inhibitory (``I``) and owns its own LIF layer. ``in`` is the cell's input population;
it is excitatory (its outgoing motif edges carry sign +1). An edge ``u -> v`` with micro-op gene
``x`` (0 = no edge, 1 = conv 3x3, 2 = conv 5x5) carries ``sign(u) * relu(BN(conv_k(S_u)))`` into
``v``'s input sum, ``sign = +1`` for E and ``-1`` for I (Dale's law by presynaptic type).

Edges are listed in gene order ``k = 0, 1, ...`` exactly as in the SPEC §6.2 table; gene
``x_i^{k+1}`` of the seed's eq. 2 (1-based there) is the micro-op of edge ``k`` here (0-based):

====  =====  =========================================================================  ========
m     name   edges (k: src -> dst)                                                      outputs
====  =====  =========================================================================  ========
0     empty  none: the cell is the identity                                             in
1     FE     0: in->E1, 1: E1->E2                                                       E2
2     FI     0: in->I1, 1: in->E1, 2: I1->E1                                            E1
3     FbI    0: in->E1, 1: E1->I1, 2: E1->E2, 3: I1->E2                                 E2
4     LI     0: in->E1, 1: in->E2, 2: E1->I1, 3: E2->I1, 4: E1->E3, 5: I1->E3,          E3, E4
             6: E2->E4, 7: I1->E4
5     MI     0: in->E1, 1: in->E2, 2: E1->I1, 3: E2->I2, 4: E1->E3, 5: I2->E3,          E3, E4
             6: E2->E4, 7: I1->E4
====  =====  =========================================================================  ========

Feedback inside a motif is unrolled within the time step (FbI's ``E2`` is "``E1`` after
inhibition"), so every motif is a DAG per step; ``Motif.populations`` lists the populations in a
topological order of the edges (tested).

Pruning (:func:`prune_cell`), applied in this order:

1. *forward*: an edge whose gene is 0 is absent. A population other than ``in`` with no incoming
   edge from a live population is silent and is removed with its outgoing edges, iteratively
   (SPEC §6.2).
2. *backward* (refsnn's choice, SPEC is silent): a live population from which no live path leads
   to one of the cell's live output populations cannot influence the logits; it is removed with
   its edges too. Such a dead end would only add spikes to the BIE count (seed eq. 3) and
   parameters with zero gradient to training, and keeping it would make two genotypes with the
   same input-output function score differently.
3. If none of the cell's output populations survives, the cell *degenerates to the identity*: it
   keeps only ``in`` and its output is ``in`` (exactly an empty cell, ``m = 0``). The genotype is
   not declared invalid: every genotype in the search space decodes to a working network, and
   :func:`refsnn.nas.genotype.canonical` maps such a cell to ``m = 0``.
4. Otherwise the cell's output is the channel concatenation of its surviving output populations,
   in table order (so an LI cell whose ``E3`` was pruned outputs ``E4`` alone, C channels).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Motif", "MOTIFS", "MOTIF_NAMES", "N_MOTIFS", "MAX_EDGES", "CellStructure",
    "population_type", "edge_sign", "prune_cell",
]


@dataclass(frozen=True)
class Motif:
    """One motif: ``index`` (the gene value m), short ``name``, ``long_name``,
    ``populations`` (names in topological order, ``"in"`` first), ``edges`` ((src, dst) in gene
    order) and ``outputs`` (population names whose spikes form the cell output)."""

    index: int
    name: str
    long_name: str
    populations: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...]

    @property
    def n_edges(self) -> int:
        return len(self.edges)


def population_type(name: str) -> str:
    """``"E"`` or ``"I"``: the first letter of the population name; ``"in"`` is excitatory."""
    if name == "in":
        return "E"
    if name[:1] in ("E", "I"):
        return name[0]
    raise ValueError(f"name: not a motif population name: {name!r}")


def edge_sign(src: str) -> int:
    """Dale's law: +1 for an excitatory presynaptic population, -1 for an inhibitory one."""
    return 1 if population_type(src) == "E" else -1


MOTIFS: tuple[Motif, ...] = (
    Motif(0, "empty", "empty cell (identity)", ("in",), (), ("in",)),
    Motif(1, "FE", "feedforward excitation", ("in", "E1", "E2"),
          (("in", "E1"), ("E1", "E2")), ("E2",)),
    Motif(2, "FI", "feedforward inhibition", ("in", "I1", "E1"),
          (("in", "I1"), ("in", "E1"), ("I1", "E1")), ("E1",)),
    Motif(3, "FbI", "feedback inhibition", ("in", "E1", "I1", "E2"),
          (("in", "E1"), ("E1", "I1"), ("E1", "E2"), ("I1", "E2")), ("E2",)),
    Motif(4, "LI", "lateral inhibition", ("in", "E1", "E2", "I1", "E3", "E4"),
          (("in", "E1"), ("in", "E2"), ("E1", "I1"), ("E2", "I1"),
           ("E1", "E3"), ("I1", "E3"), ("E2", "E4"), ("I1", "E4")), ("E3", "E4")),
    Motif(5, "MI", "mutual inhibition", ("in", "E1", "E2", "I1", "I2", "E3", "E4"),
          (("in", "E1"), ("in", "E2"), ("E1", "I1"), ("E2", "I2"),
           ("E1", "E3"), ("I2", "E3"), ("E2", "E4"), ("I1", "E4")), ("E3", "E4")),
)
MOTIF_NAMES: tuple[str, ...] = tuple(m.name for m in MOTIFS)
N_MOTIFS = len(MOTIFS)
#: b of seed eq. 2: the largest motif's edge count (genes past a motif's edges are non-coding).
MAX_EDGES = max(m.n_edges for m in MOTIFS)


@dataclass(frozen=True)
class CellStructure:
    """What survives of one cell after pruning.

    ``edges``: gene indices k (0-based, within the cell) of the live edges, ascending;
    ``populations``: live population names in topological order (always starts with ``"in"``);
    ``outputs``: live output populations (``("in",)`` for an identity cell);
    ``identity``: True when only ``in`` is left (empty or degenerate cell).
    """

    motif: int
    edges: tuple[int, ...]
    populations: tuple[str, ...]
    outputs: tuple[str, ...]
    identity: bool


def prune_cell(motif: int, ops) -> CellStructure:
    """Prune one cell (see the module docstring for the rules).

    Parameters
    ----------
    motif : int in 0..5, the gene ``m_i``.
    ops : sequence of ints in {0, 1, 2}, the genes ``x_i^1..x_i^b``; only the first
        ``MOTIFS[motif].n_edges`` are read (the rest are non-coding).
    """
    if isinstance(motif, bool) or not isinstance(motif, int) or not 0 <= motif < N_MOTIFS:
        raise ValueError(f"motif: expected an integer in 0..{N_MOTIFS - 1}, got {motif!r}")
    mot = MOTIFS[motif]
    ops = tuple(ops)
    if len(ops) < mot.n_edges:
        raise ValueError(f"ops: motif {mot.name} needs {mot.n_edges} genes, got {len(ops)}")
    present = [k for k in range(mot.n_edges) if ops[k] != 0]
    # 1. forward: reachable from "in" through present edges (populations are topologically ordered)
    alive = {"in"}
    for p in mot.populations[1:]:
        if any(mot.edges[k][1] == p and mot.edges[k][0] in alive for k in present):
            alive.add(p)
    outputs = tuple(o for o in mot.outputs if o in alive)
    if not outputs:
        return CellStructure(motif, (), ("in",), ("in",), True)
    # 2. backward: can reach a live output through present edges between live populations
    useful = set(outputs)
    for p in reversed(mot.populations):
        if p in alive and any(mot.edges[k][0] == p and mot.edges[k][1] in useful for k in present):
            useful.add(p)
    keep = alive & useful
    keep.add("in")
    edges = tuple(k for k in present if mot.edges[k][0] in keep and mot.edges[k][1] in keep)
    pops = tuple(p for p in mot.populations if p in keep)
    identity = pops == ("in",)
    return CellStructure(motif, edges, pops, outputs, identity)
