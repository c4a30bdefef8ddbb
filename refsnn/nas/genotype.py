"""MSE-NAS genotype ``[X, M, G]`` (seed eq. 2; SPEC §6.1) and its genetic operators (SPEC §6.5).

Flat form (what crosses process boundaries, what JSON files and fitness functions see)::

    [(m_1, x_1^1..x_1^b), ..., (m_l, x_l^1..x_l^b), g_1, g_2]     length l (1 + b) + 2,  b = 8

with the allowed values, by position (index ``i*(1+b) + j`` for cell ``i`` 0-based):

* ``j = 0``: ``m_i in {0..5}`` motif (0 empty, 1 FE, 2 FI, 3 FbI, 4 LI, 5 MI; :mod:`.motifs`),
* ``j = 1..8``: ``x_i^j in {0, 1, 2}`` micro-op of motif edge ``k = j - 1`` (0 none, 1 conv 3x3,
  2 conv 5x5),
* ``l (1+b)``: ``g_1 in {1, 2, 3}`` cross-cell wiring (chain / last two / all earlier + stem),
* ``l (1+b) + 1``: ``g_2 in {1, 2}`` cross-cell kernel (1x1 / 3x3).

The allowed set of a gene depends on its position only, so two-point crossover of two valid
vectors of equal length is always valid.

:class:`Genotype` is the frozen named view (``cells``: tuple of ``(motif, ops)``, ``g1``, ``g2``);
every function here accepts a :class:`Genotype` or a flat integer sequence and validates it.

Canonical form (:func:`canonical`; used by duplicate removal and the fitness cache of the search):
two genotypes have the same canonical form when they decode to the same network. It

* zeroes every micro-op gene that does not produce a live edge (genes past the motif's edge count,
  all ops of an empty cell, and genes of edges removed by pruning, :func:`.motifs.prune_cell`),
* sets ``m_i = 0`` for a cell that degenerates to the identity (no output population survives),
* sets ``g_1 = 1`` and ``g_2 = 1`` when ``l = 1`` (no cross-cell edge exists), and ``g_1 = 2``
  for ``g_1 = 3`` when ``l = 2`` (both mean: cell 2 reads cell 1 and the stem).

Choices where SPEC is silent: :func:`random_genotype` draws every gene uniformly from its allowed
set (so about a third of the edges are absent); :func:`mutate` may hit non-coding genes (they then
carry hidden variation that becomes coding when the motif changes; the search keeps the raw
genotype and uses the canonical one only as a key); crossover cut points are two distinct
positions drawn uniformly from ``0..len``, and the segment between them is swapped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from .._checks import check_float, check_int
from ..io import parse_json
from .motifs import MAX_EDGES, MOTIF_NAMES, MOTIFS, N_MOTIFS, prune_cell

__all__ = [
    "B", "GENES_PER_CELL", "G1_VALUES", "G2_VALUES", "OP_VALUES", "MOTIF_VALUES", "FORMAT",
    "Genotype", "genotype_length", "n_cells_of", "allowed_values", "validate", "as_genotype",
    "random_genotype", "crossover", "mutate", "canonical", "noncoding_mask", "to_json", "from_json",
]

B = MAX_EDGES  # 8, seed eq. 2's b
GENES_PER_CELL = 1 + B
MOTIF_VALUES = tuple(range(N_MOTIFS))
OP_VALUES = (0, 1, 2)
G1_VALUES = (1, 2, 3)
G2_VALUES = (1, 2)
FORMAT = "refsnn.msenas.genotype/1"


def genotype_length(n_cells: int) -> int:
    """``l (1 + b) + 2``."""
    n_cells = check_int("n_cells", n_cells, lo=1)
    return n_cells * GENES_PER_CELL + 2


def n_cells_of(length: int) -> int:
    """Number of cells ``l`` of a flat genotype of ``length`` genes (ValueError if impossible)."""
    if length < GENES_PER_CELL + 2 or (length - 2) % GENES_PER_CELL:
        raise ValueError(
            f"genotype: length must be l*{GENES_PER_CELL} + 2 for some l >= 1 "
            f"(11, 20, 29, ...), got {length}")
    return (length - 2) // GENES_PER_CELL


def allowed_values(index: int, length: int) -> tuple[int, ...]:
    """Allowed values of gene ``index`` in a flat genotype of ``length`` genes."""
    n = n_cells_of(length)
    if not 0 <= index < length:
        raise IndexError(f"index: expected 0..{length - 1}, got {index}")
    if index == n * GENES_PER_CELL:
        return G1_VALUES
    if index == n * GENES_PER_CELL + 1:
        return G2_VALUES
    return MOTIF_VALUES if index % GENES_PER_CELL == 0 else OP_VALUES


def _gene_name(index: int, length: int) -> str:
    n = n_cells_of(length)
    if index == n * GENES_PER_CELL:
        return "g_1 (cross-cell wiring)"
    if index == n * GENES_PER_CELL + 1:
        return "g_2 (cross-cell kernel)"
    i, j = divmod(index, GENES_PER_CELL)
    return f"m_{i + 1} (motif of cell {i + 1})" if j == 0 else f"x_{i + 1}^{j} (micro-op of cell {i + 1}, edge {j - 1})"


def validate(genotype) -> tuple[int, ...]:
    """Check a flat genotype and return it as a tuple of Python ints.

    Raises ``TypeError`` for a non-sequence or a non-integer gene and ``ValueError`` for a wrong
    length or an out-of-range gene; the message names the gene index, its meaning and the allowed
    values.
    """
    if isinstance(genotype, Genotype):
        genotype = genotype.flat
    if isinstance(genotype, np.ndarray):
        if genotype.ndim != 1:
            raise ValueError(f"genotype: expected a 1-D vector, got shape {genotype.shape}")
        if genotype.dtype.kind not in "iu":
            raise TypeError(f"genotype: expected an integer array, got dtype {genotype.dtype}")
        genotype = genotype.tolist()
    if isinstance(genotype, (str, bytes)) or not isinstance(genotype, Sequence):
        raise TypeError(f"genotype: expected a sequence of integers, got {type(genotype).__name__}")
    length = len(genotype)
    n_cells_of(length)
    out = []
    for i, g in enumerate(genotype):
        if isinstance(g, (bool, np.bool_)) or not isinstance(g, (int, np.integer)):
            raise TypeError(f"genotype[{i}] ({_gene_name(i, length)}): expected an integer, "
                            f"got {type(g).__name__} {g!r}")
        allowed = allowed_values(i, length)
        if int(g) not in allowed:
            raise ValueError(f"genotype[{i}] ({_gene_name(i, length)}): expected one of "
                             f"{allowed}, got {int(g)}")
        out.append(int(g))
    return tuple(out)


@dataclass(frozen=True)
class Genotype:
    """Named view of a flat genotype: ``cells[i] = (m_{i+1}, (x_{i+1}^1..x_{i+1}^b))``, ``g1``, ``g2``.

    Construct with :meth:`from_flat` (validates) or directly (validated in ``__post_init__``).
    """

    cells: tuple[tuple[int, tuple[int, ...]], ...]
    g1: int
    g2: int

    def __post_init__(self):
        if isinstance(self.cells, (str, bytes)) or not isinstance(self.cells, Sequence):
            raise TypeError(f"cells: expected a sequence of (motif, ops) pairs, got {type(self.cells).__name__}")
        if not self.cells:
            raise ValueError("cells: expected at least one cell")
        for i, cell in enumerate(self.cells):
            if isinstance(cell, (str, bytes)) or not isinstance(cell, Sequence) or len(cell) != 2:
                raise TypeError(f"cells[{i}]: expected a pair (motif, ops), got {cell!r:.60}")
            ops = cell[1]
            if isinstance(ops, (str, bytes)) or not isinstance(ops, (Sequence, np.ndarray)):
                raise TypeError(f"cells[{i}]: expected a sequence of {B} integer micro-op genes, got "
                                f"{type(ops).__name__}")
            if len(ops) != B:
                raise ValueError(f"cells[{i}]: expected {B} micro-op genes, got {len(ops)}")
        # validate() refuses non-integer genes (1.9, "3", True) before anything is converted
        flat = validate([g for m, ops in self.cells for g in (m, *ops)] + [self.g1, self.g2])
        n = len(self.cells)
        object.__setattr__(self, "cells", tuple((flat[i * GENES_PER_CELL],
                                                 flat[i * GENES_PER_CELL + 1:(i + 1) * GENES_PER_CELL])
                                                for i in range(n)))
        object.__setattr__(self, "g1", flat[-2])
        object.__setattr__(self, "g2", flat[-1])

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def flat(self) -> tuple[int, ...]:
        """The flat integer vector of seed eq. 2."""
        return tuple(g for m, ops in self.cells for g in (m, *ops)) + (self.g1, self.g2)

    @classmethod
    def from_flat(cls, flat) -> "Genotype":
        v = validate(flat)
        n = n_cells_of(len(v))
        cells = tuple((v[i * GENES_PER_CELL], v[i * GENES_PER_CELL + 1:(i + 1) * GENES_PER_CELL])
                      for i in range(n))
        return cls(cells, v[-2], v[-1])

    def __len__(self) -> int:
        return self.n_cells * GENES_PER_CELL + 2

    def __str__(self) -> str:
        cells = " ".join(f"{MOTIF_NAMES[m]}({''.join(map(str, ops[:MOTIFS[m].n_edges]))})"
                         for m, ops in self.cells)
        return f"[{cells} | g1={self.g1} g2={self.g2}]"


def as_genotype(genotype) -> Genotype:
    """A :class:`Genotype` from a Genotype or a flat sequence (validated)."""
    return genotype if isinstance(genotype, Genotype) else Genotype.from_flat(genotype)


def random_genotype(rng: np.random.Generator, n_cells: int) -> Genotype:
    """Every gene uniform over its allowed values, drawn from ``rng`` (one ``integers`` call per gene
    in flat order)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    length = genotype_length(n_cells)
    flat = []
    for i in range(length):
        allowed = allowed_values(i, length)
        flat.append(allowed[int(rng.integers(len(allowed)))])
    return Genotype.from_flat(flat)


def crossover(a, b, rng: np.random.Generator, rate: float = 0.9) -> tuple[Genotype, Genotype]:
    """Two-point crossover over the flat vectors (SPEC §6.5).

    With probability ``rate`` two distinct cut points ``0 <= c1 < c2 <= len`` are drawn uniformly
    and the genes ``[c1, c2)`` are swapped between the parents; otherwise the children are copies.
    Exactly one ``rng.random()`` draw, plus one ``rng.choice`` draw when crossing over.
    """
    a, b = as_genotype(a).flat, as_genotype(b).flat
    if len(a) != len(b):
        raise ValueError(f"b: expected a genotype of length {len(a)} (like a), got {len(b)}")
    rate = check_float("rate", rate, lo=0.0, hi=1.0)
    if rng.random() >= rate:
        return Genotype.from_flat(a), Genotype.from_flat(b)
    c1, c2 = sorted(int(c) for c in rng.choice(len(a) + 1, size=2, replace=False))
    ca = a[:c1] + b[c1:c2] + a[c2:]
    cb = b[:c1] + a[c1:c2] + b[c2:]
    return Genotype.from_flat(ca), Genotype.from_flat(cb)


def mutate(genotype, rng: np.random.Generator, rate: float | None = None) -> Genotype:
    """Per-gene mutation (SPEC §6.5): each gene, with probability ``rate`` (default ``1/len``), is
    replaced by a value drawn uniformly from its allowed values *other than the current one*.

    Draws ``rng.random(len)`` once, then one ``rng.integers`` per mutated gene, in flat order.
    """
    flat = list(as_genotype(genotype).flat)
    n = len(flat)
    rate = 1.0 / n if rate is None else check_float("rate", rate, lo=0.0, hi=1.0)
    hit = rng.random(n) < rate
    for i in np.flatnonzero(hit):
        allowed = [v for v in allowed_values(int(i), n) if v != flat[i]]
        flat[i] = allowed[int(rng.integers(len(allowed)))]
    return Genotype.from_flat(flat)


def canonical(genotype) -> Genotype:
    """The canonical representative of the genotype's decoded network (module docstring)."""
    return _canonical(as_genotype(genotype))


@lru_cache(maxsize=65536)
def _canonical(g: Genotype) -> Genotype:
    cells = []
    for m, ops in g.cells:
        st = prune_cell(m, ops)
        if st.identity:
            cells.append((0, (0,) * B))
        else:
            cells.append((m, tuple(ops[k] if k in st.edges else 0 for k in range(B))))
    g1, g2 = g.g1, g.g2
    if g.n_cells == 1:
        g1, g2 = 1, 1
    elif g.n_cells == 2 and g1 == 3:
        g1 = 2
    return Genotype(tuple(cells), g1, g2)


def noncoding_mask(genotype) -> tuple[bool, ...]:
    """Per flat gene: True when the gene is non-coding *by position* (past the motif's edge count,
    or any op of an empty cell), i.e. the narrow sense of SPEC §6.1. (Genes of pruned edges are
    also without effect; :func:`canonical` zeroes those too.)"""
    g = as_genotype(genotype)
    mask = []
    for m, _ in g.cells:
        mask.append(False)
        mask.extend(k >= MOTIFS[m].n_edges for k in range(B))
    return tuple(mask) + (False, False)


def to_json(genotype, *, indent: int | None = None) -> str:
    """Deterministic JSON (sorted keys): ``{"format", "flat", "cells": [{"motif", "motif_name",
    "ops"}], "g1", "g2", "n_cells"}``. ``flat`` is authoritative; the rest is for humans."""
    g = as_genotype(genotype)
    obj = {
        "format": FORMAT,
        "flat": list(g.flat),
        "n_cells": g.n_cells,
        "cells": [{"motif": m, "motif_name": MOTIF_NAMES[m], "ops": list(ops)} for m, ops in g.cells],
        "g1": g.g1,
        "g2": g.g2,
    }
    return json.dumps(obj, sort_keys=True, indent=indent)


#: deepest JSON nesting accepted in a genotype file: ``{"cells": [{"ops": [...]}]}`` is 4 levels, the
#: rest is room for metadata beside the genotype
MAX_JSON_DEPTH = 8


def from_json(text) -> Genotype:
    """Inverse of :func:`to_json`. Also accepts a bare flat list (``"[1, 2, ...]"``), or an object
    with only ``cells``/``g1``/``g2``. When both ``flat`` and ``cells`` are present they must agree.

    ``text`` is JSON text or its parsed value. Deeper nesting than a genotype has (checked before
    parsing), a wrong structure (``cells`` not a list of objects with ``motif`` and a list ``ops``) and
    non-integer genes (``1.9``, ``"3"``, ``true``) are a ``ValueError``/``TypeError`` naming ``text``."""
    if isinstance(text, (str, bytes, bytearray)):
        obj = parse_json(text, name="text", max_depth=MAX_JSON_DEPTH)
    else:
        obj = text
    if isinstance(obj, list):
        return Genotype.from_flat(obj)
    if not isinstance(obj, dict):
        raise TypeError(f"text: expected a JSON object or list, got {type(obj).__name__}")
    fmt = obj.get("format", FORMAT)
    if fmt != FORMAT:
        raise ValueError(f"text: expected format {FORMAT!r}, got {fmt!r:.80}")
    g_flat = Genotype.from_flat(obj["flat"]) if "flat" in obj else None
    g_cells = None
    if "cells" in obj:
        cells_obj = obj["cells"]
        if not isinstance(cells_obj, list) or not all(isinstance(c, dict) for c in cells_obj):
            raise TypeError("text: 'cells' must be a list of objects {\"motif\": m, \"ops\": [...]}")
        try:
            cells = tuple((c["motif"], c["ops"]) for c in cells_obj)
            g1, g2 = obj["g1"], obj["g2"]
        except KeyError as e:
            raise ValueError(f"text: missing key {e} in the genotype object") from None
        for i, (_, ops) in enumerate(cells):
            if not isinstance(ops, list):
                raise TypeError(f"text: cells[{i}]['ops'] must be a list of {B} integers, got "
                                f"{type(ops).__name__}")
        g_cells = Genotype(cells, g1, g2)
    if g_flat is None and g_cells is None:
        raise ValueError("text: a genotype object needs 'flat' or 'cells'/'g1'/'g2'")
    if g_flat is not None and g_cells is not None and g_flat != g_cells:
        raise ValueError("text: 'flat' and 'cells'/'g1'/'g2' describe different genotypes")
    return g_flat if g_flat is not None else g_cells
