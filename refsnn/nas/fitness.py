"""Training-free fitness of a genotype on real data (SPEC §6.4; seed eqs. 3-7), for the search.

:class:`NASFitness` is a small frozen dataclass whose ``__call__(genotype, seed) -> float`` is the
``fitness`` that :func:`refsnn.nas.search.evaluate` calls for the genotypes the search asks for
(maximised; picklable, so it works with process pools). One call:

1. ``graph = decode(genotype, input_shape, channels, n_classes)``;
   ``net = from_graph(graph, timesteps=T, rng=default_rng(SeedSequence(seed)))`` -- random initial
   weights (PyTorch's default init, BN ``gamma = 1, beta = 0``) from the seed the search derives
   from the canonical genotype and the run seed, so the fitness is a deterministic function of
   ``(genotype, seed)`` (and of the fields of the dataclass);
2. ``s`` forward passes, no training, each over a batch of ``j`` training images, direct-encoded for
   T steps. The batches are the same for every genotype: ``s*j`` distinct training-set indices drawn
   by ``default_rng(SeedSequence(data_seed)).choice(N_train, s*j, replace=False)``, in that order
   (so every architecture is compared on the same images);
3. the spikes of **every** LIF population of the graph (``in``, E and I populations of every cell;
   pruned populations do not exist) are read from the network's nodes
   (:func:`refsnn.nas.network.population_spikes`) and handed to
   :func:`refsnn.nas.bie.bie_fitness` (``"bie-min"``: seed eq. 7, ``fitness = -score``;
   ``"bie-max"``: the released code's disabled path, ``+score``) or to
   :func:`refsnn.nas.bie.logdet_score` (``"logdet"``, NASWOT's plain Hamming kernel) or to
   :func:`refsnn.nas.bie.logdet_sa_score` (``"logdet-sa"``, SNASNet's sparsity-aware kernel as in
   its released code), each the mean over the ``s`` batches.
   The silent-network guard (:func:`refsnn.nas.bie.check_activity`: overall firing rate over all
   batches below ``min_rate``, or the last cell's output populations silent) gives
   :data:`~refsnn.nas.bie.WORST_FITNESS` (``-inf``) for every kind.

BatchNorm in **train mode** (statistics of the batch itself), a choice SPEC leaves open: at
initialisation the running statistics are ``mean 0, var 1``, so eval-mode BN would be the identity
and every population's input current would be a raw sum of PyTorch-initialised conv outputs, whose
scale (about ``1/sqrt(3)`` of the input's) shrinks layer by layer -- deep populations would be
silent for reasons of initial scale, not architecture. Train-mode BN normalises every edge's current
per channel exactly as the first training step sees it, which is the network whose firing patterns
the seed's eq. 3 describes ("the network at initialisation"). Consequence: a sample's spikes depend
on the other samples of its batch (through the batch statistics), as during training; the batches
are fixed, so this is deterministic. The running statistics the forward updates are discarded with
the network.

Defaults (chosen for speed; ``bie_speedup_vs_train_epoch`` in ``refsnn bench`` checks the ratio):
``j = 32`` samples, ``s = 2`` batches, ``T = 4``, ``C = 8`` channels (``refsnn nas``'s default
width), float32. Scoring one 3-cell architecture then takes a fraction of a second, against tens
of seconds for one training epoch on mnist5k's 4,000 images.

The loaded batches are cached per process (module-level dict keyed by the data fields), so a worker
process loads the dataset once.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from .._checks import check_choice, check_float, check_int
from ..datasets import load
from ..kernels.conv import Conv2dWorkspace
from ..snn import archs
from ..snn.layers import Conv2d
from .bie import WORST_FITNESS, bie_fitness, check_activity, firing_rate, logdet_sa_score, logdet_score
from .graph import decode
from .network import DEFAULT_CHANNELS, lif_population_names, output_population_names, population_spikes

__all__ = ["KINDS", "NASFitness", "fitness_batches", "score_details"]

KINDS = ("bie-min", "bie-max", "logdet", "logdet-sa")
_BATCH_CACHE: dict = {}
#: The conv work arrays of every network this process scores (its owner: :meth:`NASFitness.details`,
#: one network at a time, forward passes only, so no context is ever read after another conv layer
#: reused its arrays). A network scored and thrown away would otherwise fault in fresh im2col
#: matrices for every genotype; the geometries of a search space are few.
_SCORING_WORKSPACE = Conv2dWorkspace(max_geometries=32)


def fitness_batches(data: str, timesteps: int, batch_size: int, n_batches: int, data_seed: int):
    """The fixed fitness batches: ``(input_shape, n_classes, [x_k float32 (j, C, H, W), ...])``
    (module docstring, step 2). Cached per process."""
    key = (data, timesteps, batch_size, n_batches, data_seed)
    hit = _BATCH_CACHE.get(key)
    if hit is not None:
        return hit

    ds = load(data, timesteps=timesteps)
    n = len(ds.y_train)
    need = batch_size * n_batches
    if need > n:
        raise ValueError(f"batch_size*n_batches: {need} exceeds the {n} training samples of {data}")
    idx = np.random.default_rng(np.random.SeedSequence(data_seed)).choice(n, size=need, replace=False)
    xs = [np.ascontiguousarray(ds.x_train[idx[k * batch_size:(k + 1) * batch_size]])
          for k in range(n_batches)]
    out = (tuple(ds.input_shape), int(ds.num_classes), bool(ds.is_event), xs)
    _BATCH_CACHE[key] = out
    return out


@dataclass(frozen=True)
class NASFitness:
    """``fitness(genotype, seed) -> float`` on real data (module docstring).

    Fields: ``kind`` (``"bie-min"`` | ``"bie-max"`` | ``"logdet"`` | ``"logdet-sa"``), ``data``
    (dataset spec), ``channels`` (C), ``timesteps`` (T), ``batch_size`` (j), ``n_batches`` (s), ``data_seed``
    (which training images), ``min_rate`` (silent guard), ``dtype``, ``max_neurons`` (a resource
    cap: a genotype whose network has more LIF neurons per sample -- ``graph_stats``'s
    ``n_neurons_per_sample`` -- gets the worst fitness without being run; ``None``: no cap).
    """

    kind: str = "bie-min"
    data: str = "mnist5k"
    channels: int = DEFAULT_CHANNELS
    timesteps: int = 4
    batch_size: int = 32
    n_batches: int = 2
    data_seed: int = 0
    min_rate: float = 1e-3
    dtype: str = "float32"
    max_neurons: int | None = None

    def __post_init__(self):
        check_choice("kind", self.kind, KINDS)
        check_int("channels", self.channels, lo=1)
        check_int("timesteps", self.timesteps, lo=1)
        check_int("batch_size", self.batch_size, lo=2)
        check_int("n_batches", self.n_batches, lo=1)
        check_int("data_seed", self.data_seed, lo=0)
        check_float("min_rate", self.min_rate, lo=0.0)
        check_choice("dtype", self.dtype, ("float32", "float64"))
        if self.max_neurons is not None:
            check_int("max_neurons", self.max_neurons, lo=1)

    def __call__(self, genotype, seed: int) -> float:
        return self.details(genotype, seed)["fitness"]

    def details(self, genotype, seed: int) -> dict:
        """The fitness and what it was computed from: ``fitness``, ``score`` (BIE score or the logdet
        score of ``kind``, ``nan`` when invalid), ``valid``, ``reason``, ``firing_rate``,
        ``n_neurons``, ``seconds``."""
        seed = check_int("seed", seed, lo=0)
        t0 = time.perf_counter()
        input_shape, n_classes, is_event, xs = fitness_batches(
            self.data, self.timesteps, self.batch_size, self.n_batches, self.data_seed)
        graph = decode(genotype, input_shape, self.channels, n_classes)
        n_neurons = sum(n["channels"] * n["shape"][0] * n["shape"][1] for n in graph["nodes"] if n["op"] == "lif")
        if self.max_neurons is not None and n_neurons > self.max_neurons:
            return {"fitness": WORST_FITNESS, "score": float("nan"), "valid": False,
                    "reason": f"{n_neurons} neurons > max_neurons {self.max_neurons}", "firing_rate": float("nan"),
                    "n_neurons": n_neurons, "seconds": time.perf_counter() - t0}
        dt = np.dtype(self.dtype)
        net = archs.from_graph(graph, timesteps=self.timesteps,
                               rng=np.random.default_rng(np.random.SeedSequence(seed)), dtype=dt)
        net.train()  # BN with batch statistics (module docstring)
        for node in net.nodes.values():  # forward passes only: the scoring workspace serves every conv
            if isinstance(node.layer, Conv2d):
                node.layer.workspace = _SCORING_WORKSPACE
        names = lif_population_names(graph)
        outputs = output_population_names(graph)
        T = self.timesteps
        spike_batches = []
        for xb in xs:
            xb = xb.astype(dt, copy=False)
            x = (np.ascontiguousarray(xb.transpose(1, 0, 2, 3, 4)) if is_event
                 else np.broadcast_to(xb, (T,) + xb.shape))
            net.forward(x)
            # copy as bool: the LIF buffers are overwritten by the next forward
            spike_batches.append({k: v.astype(np.bool_) for k, v in population_spikes(net, names).items()})
        ok, reason = check_activity(spike_batches, outputs, min_rate=self.min_rate)
        rate = math.fsum(firing_rate(b) * sum(s.size for s in b.values()) for b in spike_batches) / \
            sum(s.size for b in spike_batches for s in b.values())
        if not ok:
            fit, score = WORST_FITNESS, float("nan")
        elif self.kind in ("logdet", "logdet-sa"):
            one = logdet_score if self.kind == "logdet" else logdet_sa_score
            score = float(np.mean([one(b) for b in spike_batches]))
            fit = score
        else:
            fit = bie_fitness(spike_batches, outputs, direction=self.kind[4:], min_rate=self.min_rate)
            score = -fit if self.kind == "bie-min" else fit
        return {"fitness": float(fit), "score": float(score), "valid": ok, "reason": reason,
                "firing_rate": rate, "n_neurons": n_neurons, "seconds": time.perf_counter() - t0}

    def to_dict(self) -> dict:
        return asdict(self)


def score_details(genotype, seed: int, **fields) -> dict:
    """``NASFitness(**fields).details(genotype, seed)`` (convenience for scripts)."""
    return NASFitness(**fields).details(genotype, seed)
